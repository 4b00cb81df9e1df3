//! The control plane's rows (`floe_objects`, `floe_pipeline_versions`): a create refuses a name
//! taken, a change swaps on the version it read, objects and versions are per catalog name, and
//! a pipeline's version start is recorded once with the older versions closed at the same
//! offsets — also when the switch is recorded by a later process.

use floe_catalog::{ObjectKind, ObjectRefused, VersionBody};

use crate::common::{Env, TestResult};

fn v<'a>(sql: &'a str, body: &'a str) -> Option<VersionBody<'a>> {
    Some(VersionBody { sql, body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_created_once_changed_by_version_and_kept_per_catalog() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let other = env.open("other").await;
    let created = cat
        .create_object(ObjectKind::Stream, "events", r#"{"name":"events"}"#, None)
        .await?
        .expect("created");
    assert_eq!(created.version, 1);
    assert_eq!(
        cat.create_object(ObjectKind::Stream, "events", "{}", None).await?,
        Err(ObjectRefused::Exists)
    );
    // Another kind may use the name; another catalog name sees none of them.
    cat.create_object(
        ObjectKind::Sink,
        "events",
        r#"{"name":"events","type":"iceberg"}"#,
        None,
    )
    .await?
    .expect("a sink of the same name");
    assert!(other.objects().await?.is_empty());

    let changed = cat
        .update_object(ObjectKind::Stream, "events", 1, r#"{"name":"events","x":1}"#, None)
        .await?
        .expect("changed");
    assert_eq!(
        (changed.version, changed.body.as_str()),
        (2, r#"{"name":"events","x":1}"#)
    );
    // A change that read version 1 lost the race: nothing changes.
    assert_eq!(
        cat.update_object(ObjectKind::Stream, "events", 1, "{}", None).await?,
        Err(ObjectRefused::Moved { now: 2 })
    );
    assert_eq!(
        cat.update_object(ObjectKind::Stream, "nope", 1, "{}", None).await?,
        Err(ObjectRefused::Missing)
    );
    let all = cat.objects().await?;
    let names: Vec<(ObjectKind, &str, i64)> = all.iter().map(|o| (o.kind, o.name.as_str(), o.version)).collect();
    assert_eq!(
        names,
        vec![(ObjectKind::Sink, "events", 1), (ObjectKind::Stream, "events", 2)]
    );
    assert_eq!(
        cat.object(ObjectKind::Stream, "events").await?.map(|o| o.body),
        Some(r#"{"name":"events","x":1}"#.to_string())
    );

    assert!(cat.delete_object(ObjectKind::Stream, "events").await?);
    assert!(!cat.delete_object(ObjectKind::Stream, "events").await?);
    assert!(cat.object(ObjectKind::Stream, "events").await?.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_versions_record_each_switch_once_at_the_committed_offsets() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    cat.create_object(ObjectKind::Pipeline, "p", "{1}", v("SELECT 1", "{1}"))
        .await?
        .expect("created");
    let started = cat.start_pipeline_version("p", r#"{"t":0}"#).await?.expect("a version");
    assert_eq!(
        (started.version, started.start_offsets.as_deref()),
        (1, Some(r#"{"t":0}"#))
    );
    // A restart starts the same version again: its start stays where it was.
    let again = cat
        .start_pipeline_version("p", r#"{"t":70}"#)
        .await?
        .expect("a version");
    assert_eq!(
        (again.started_at_ms, again.start_offsets),
        (started.started_at_ms, started.start_offsets)
    );

    // Version 2 is stored, and the process dies before starting it; a change that read version
    // 1 of the object after that is refused and records no version.
    cat.update_object(ObjectKind::Pipeline, "p", 1, "{2}", v("SELECT 2", "{2}"))
        .await?
        .expect("changed");
    assert_eq!(
        cat.update_object(ObjectKind::Pipeline, "p", 1, "{x}", v("SELECT x", "{x}"))
            .await?,
        Err(ObjectRefused::Moved { now: 2 })
    );
    let versions = cat.pipeline_versions("p").await?;
    assert_eq!(versions.len(), 2);
    assert!(versions[1].started_at_ms.is_none() && versions[0].ended_at_ms.is_none());

    // The next process starts version 2: version 1 ends where version 2 starts.
    cat.start_pipeline_version("p", r#"{"t":120}"#).await?;
    let versions = cat.pipeline_versions("p").await?;
    assert_eq!(versions[0].end_offsets.as_deref(), Some(r#"{"t":120}"#));
    assert_eq!(versions[1].start_offsets.as_deref(), Some(r#"{"t":120}"#));
    assert_eq!(versions[0].ended_at_ms, versions[1].started_at_ms);
    assert_eq!((versions[1].sql.as_str(), versions[1].ended_at_ms), ("SELECT 2", None));

    // A declarative pipeline: a new version only when the SQL differs from the newest one.
    assert_eq!(
        cat.ensure_pipeline_version(
            "p",
            VersionBody {
                sql: "SELECT 2",
                body: "{}"
            }
        )
        .await?
        .version,
        2
    );
    assert_eq!(
        cat.ensure_pipeline_version(
            "p",
            VersionBody {
                sql: "SELECT 3",
                body: "{}"
            }
        )
        .await?
        .version,
        3
    );
    // Deleting the object keeps the history.
    assert!(cat.delete_object(ObjectKind::Pipeline, "p").await?);
    assert_eq!(cat.pipeline_versions("p").await?.len(), 3);
    assert!(cat.start_pipeline_version("never", "{}").await?.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_hashed_listed_and_revoked_per_catalog() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let other = env.open("other").await;
    let token = floe_catalog::StoredToken {
        id: "t1".into(),
        secret_sha256: "ab".repeat(32),
        scopes: r#"["send:events"]"#.into(),
        description: "the web app".into(),
        created_at_ms: 1,
        revoked_at_ms: None,
    };
    cat.create_token(&token).await?;
    assert!(cat.create_token(&token).await.is_err(), "an id is used once");
    assert_eq!(cat.tokens().await?, vec![token.clone()]);
    assert!(other.tokens().await?.is_empty());
    assert!(!other.revoke_token("t1").await?);
    assert!(cat.revoke_token("t1").await?);
    assert!(!cat.revoke_token("t1").await?, "revoked once");
    let listed = cat.tokens().await?;
    assert!(listed[0].revoked_at_ms.is_some());
    Ok(())
}
