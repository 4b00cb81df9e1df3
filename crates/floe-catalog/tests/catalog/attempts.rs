//! Commit attempts (`floe_sink_attempts`): recorded, listed and forgotten per catalog name; a
//! commit carrying an attempt names its metadata file after the attempt and deletes the attempt
//! row in the same transaction as the pointer swap; a refused commit keeps the row (so the next
//! open cleans up) and deletes its metadata file.

use floe_catalog::{PROP_ATTEMPT, position_summary};
use iceberg::{Catalog, ErrorKind};
use uuid::Uuid;

use crate::common::{Env, TestResult, create_table, files_in, ident, pointer, write_and_append};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_recorded_listed_and_forgotten_per_catalog() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let other = env.open("other").await;
    let (a1, a2) = (Uuid::now_v7(), Uuid::now_v7());
    cat.begin_attempt("p", "s", a1, "file:///w/ns/t").await?;
    cat.begin_attempt("p", "s", a2, "file:///w/ns/t").await?;
    cat.begin_attempt("p", "other-sink", Uuid::now_v7(), "file:///w/ns/t")
        .await?;
    let pending = cat.pending_attempts("p", "s").await?;
    let ids: Vec<Uuid> = pending.iter().map(|(a, _)| *a).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a1) && ids.contains(&a2), "{ids:?}");
    assert!(pending.iter().all(|(_, loc)| loc == "file:///w/ns/t"));
    assert!(other.pending_attempts("p", "s").await?.is_empty());

    cat.forget_attempt("p", "s", a1).await?;
    assert_eq!(
        cat.pending_attempts("p", "s").await?,
        vec![(a2, "file:///w/ns/t".to_string())]
    );
    // Forgetting twice, or an unknown attempt, is harmless.
    cat.forget_attempt("p", "s", a1).await?;
    assert_eq!(cat.pending_attempts("p", "s").await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_closes_its_attempt_atomically() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    let attempt = Uuid::now_v7();
    cat.begin_attempt("p", "s", attempt, t.metadata().location()).await?;

    let t = write_and_append(cat, &t, 0..5, position_summary("p", "s", 0, 5, attempt)).await?;
    assert!(
        pointer(&t).ends_with(&format!("/metadata/00001-{attempt}.metadata.json")),
        "{}",
        pointer(&t)
    );
    assert!(cat.pending_attempts("p", "s").await?.is_empty());
    let summary = &t
        .metadata()
        .current_snapshot()
        .expect("snapshot")
        .summary()
        .additional_properties;
    assert_eq!(summary.get(PROP_ATTEMPT), Some(&attempt.to_string()));
    assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_keeps_its_attempt_and_deletes_its_metadata() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    let first = Uuid::now_v7();
    cat.begin_attempt("p", "s", first, t.metadata().location()).await?;
    let t = write_and_append(cat, &t, 0..5, position_summary("p", "s", 0, 5, first)).await?;
    let metadata_before = files_in(&t, "metadata", ".metadata.json");

    let stale = Uuid::now_v7();
    cat.begin_attempt("p", "s", stale, t.metadata().location()).await?;
    let err = write_and_append(cat, &t, 100..105, position_summary("p", "s", 0, 5, stale))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    assert_eq!(
        cat.pending_attempts("p", "s")
            .await?
            .iter()
            .map(|(a, _)| *a)
            .collect::<Vec<_>>(),
        vec![stale],
        "the attempt row is rolled back with the commit"
    );
    assert_eq!(
        files_in(&t, "metadata", ".metadata.json"),
        metadata_before,
        "the refused commit's {stale}.metadata.json is deleted"
    );
    assert_eq!(pointer(&cat.load_table(&ident("ns.t")).await?), pointer(&t));
    Ok(())
}
