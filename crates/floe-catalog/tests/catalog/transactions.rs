//! `FloeCatalog::commit_changes`, the one commit path behind the sinks, REST table commits and
//! REST multi-table transactions: all or nothing across tables (a failed requirement or a lost
//! swap on one table leaves every table and every metadata folder as it was), staged creates
//! (`assert-create`), plus namespace property updates and register-with-overwrite.

use std::collections::HashMap;

use floe_catalog::TableChange;
use iceberg::spec::{FormatVersion, TableMetadataBuilder};
use iceberg::{Catalog, ErrorKind, TableRequirement, TableUpdate};

use crate::common::{
    CATALOG, Env, TestResult, create_table, creation, files_in, ident, namespace_rows, ns, pointer, scan_ids, schema,
    table_row, write_and_append,
};

fn set_props(table: &str, uuid: uuid::Uuid, key: &str, value: &str) -> TableChange {
    TableChange {
        ident: ident(table),
        requirements: vec![TableRequirement::UuidMatch { uuid }],
        updates: vec![TableUpdate::SetProperties {
            updates: HashMap::from([(key.to_string(), value.to_string())]),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_table_commit_is_all_or_nothing() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let a = create_table(cat, "tx.a", false).await;
    let b = create_table(cat, "tx.b", false).await;
    let (ua, ub) = (a.metadata().uuid(), b.metadata().uuid());
    let before = (files_in(&a, "metadata", ".json"), files_in(&b, "metadata", ".json"));

    // The second change's requirement fails: nothing lands, no metadata file is left behind.
    let err = cat
        .commit_changes(vec![
            set_props("tx.a", ua, "k", "1"),
            set_props("tx.b", uuid::Uuid::nil(), "k", "1"),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CatalogCommitConflicts, "{err}");
    assert_eq!(pointer(&cat.load_table(&ident("tx.a")).await?), pointer(&a));
    assert_eq!(pointer(&cat.load_table(&ident("tx.b")).await?), pointer(&b));
    assert_eq!(
        (files_in(&a, "metadata", ".json"), files_in(&b, "metadata", ".json")),
        before
    );

    // The second table's swap loses (another writer moved it after the change was built): the
    // first table's swap, already done in the same SQLite transaction, is rolled back too.
    let other = env.open(CATALOG).await;
    let stale_b = cat.load_table(&ident("tx.b")).await?;
    let moved = write_and_append(&other, &stale_b, 0..3, HashMap::new()).await?;
    let err = cat
        .commit_changes(vec![
            set_props("tx.a", ua, "k", "2"),
            TableChange {
                ident: ident("tx.b"),
                requirements: vec![TableRequirement::RefSnapshotIdMatch {
                    r#ref: "main".to_string(),
                    snapshot_id: None,
                }],
                updates: vec![],
            },
        ])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CatalogCommitConflicts, "{err}");
    assert_eq!(pointer(&cat.load_table(&ident("tx.a")).await?), pointer(&a));
    assert_eq!(pointer(&cat.load_table(&ident("tx.b")).await?), pointer(&moved));

    // A missing table fails the whole call too.
    let err = cat
        .commit_changes(vec![set_props("tx.a", ua, "k", "3"), set_props("tx.zz", ub, "k", "3")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableNotFound, "{err}");
    assert_eq!(pointer(&cat.load_table(&ident("tx.a")).await?), pointer(&a));

    // The same table twice is refused before anything is written.
    let err = cat
        .commit_changes(vec![set_props("tx.a", ua, "k", "4"), set_props("tx.a", ua, "k", "5")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataInvalid, "{err}");

    // Both valid: both land, in one transaction, each with the previous pointer recorded.
    let done = cat
        .commit_changes(vec![
            set_props("tx.a", ua, "k", "ok-a"),
            set_props("tx.b", ub, "k", "ok-b"),
        ])
        .await?;
    assert_eq!(done.len(), 2);
    let (na, nb) = (
        cat.load_table(&ident("tx.a")).await?,
        cat.load_table(&ident("tx.b")).await?,
    );
    assert_eq!(na.metadata().properties()["k"], "ok-a");
    assert_eq!(nb.metadata().properties()["k"], "ok-b");
    assert_eq!(pointer(&na), done[0].metadata_location);
    assert_eq!(scan_ids(&nb).await?, vec![0, 1, 2]);
    let row = table_row(&env.raw().await, CATALOG, "tx", "a").await.expect("row");
    assert_eq!(row.previous_metadata_location, Some(pointer(&a)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_create_lands_with_assert_create() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    cat.create_namespace(&ns("st"), HashMap::new()).await?;
    let staged = cat.stage_table(&ns("st"), creation("t", true)).await?;
    assert!(!cat.table_exists(&ident("st.t")).await?, "staging registers nothing");
    assert_eq!(staged.location(), format!("{}/st/t", env.warehouse));

    // What a REST client sends to create it: the staged metadata as updates.
    let updates = vec![
        TableUpdate::AssignUuid { uuid: staged.uuid() },
        TableUpdate::UpgradeFormatVersion {
            format_version: FormatVersion::V2,
        },
        TableUpdate::AddSchema {
            schema: staged.current_schema().as_ref().clone(),
        },
        TableUpdate::SetCurrentSchema {
            schema_id: TableMetadataBuilder::LAST_ADDED,
        },
        TableUpdate::AddSpec {
            spec: staged.default_partition_spec().as_ref().clone().into_unbound(),
        },
        TableUpdate::SetDefaultSpec {
            spec_id: TableMetadataBuilder::LAST_ADDED,
        },
        TableUpdate::SetLocation {
            location: staged.location().to_string(),
        },
        TableUpdate::SetProperties {
            updates: HashMap::from([("owner".to_string(), "rest".to_string())]),
        },
    ];
    let create = TableChange {
        ident: ident("st.t"),
        requirements: vec![TableRequirement::NotExist],
        updates: updates.clone(),
    };
    let done = cat.commit_changes(vec![create.clone()]).await?;
    let t = cat.load_table(&ident("st.t")).await?;
    assert_eq!(pointer(&t), done[0].metadata_location);
    assert_eq!(t.metadata().uuid(), staged.uuid());
    assert_eq!(t.metadata().current_schema().as_struct(), schema().as_struct());
    assert!(!t.metadata().default_partition_spec().is_unpartitioned());
    assert_eq!(t.metadata().properties()["owner"], "rest");
    write_and_append(cat, &t, 0..4, HashMap::new()).await?;
    assert_eq!(
        scan_ids(&cat.load_table(&ident("st.t")).await?).await?,
        vec![0, 1, 2, 3]
    );

    // Creating it again is a conflict; without assert-create a missing table is not created.
    let err = cat.commit_changes(vec![create]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CatalogCommitConflicts, "{err}");
    let err = cat
        .commit_changes(vec![TableChange {
            ident: ident("st.u"),
            requirements: vec![],
            updates,
        }])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableNotFound, "{err}");
    // In a missing namespace: not found.
    let err = cat
        .commit_changes(vec![TableChange {
            ident: ident("nope.t"),
            requirements: vec![TableRequirement::NotExist],
            updates: vec![],
        }])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NamespaceNotFound, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_properties_update_and_remove() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    cat.create_namespace(&ns("p"), HashMap::from([("a".to_string(), "1".to_string())]))
        .await?;
    let (removed, missing) = cat
        .update_namespace_properties(
            &ns("p"),
            &["a".to_string(), "zz".to_string()],
            &HashMap::from([("b".to_string(), "2".to_string())]),
        )
        .await?;
    assert_eq!((removed, missing), (vec!["a".to_string()], vec!["zz".to_string()]));
    assert_eq!(
        cat.get_namespace(&ns("p")).await?.properties(),
        &HashMap::from([("b".to_string(), "2".to_string())])
    );
    let rows = namespace_rows(&env.raw().await, CATALOG, "p").await;
    assert_eq!(rows.get("exists"), Some(&Some("true".to_string())), "the marker stays");
    for (removals, updates) in [
        (vec!["exists".to_string()], HashMap::new()),
        (
            vec!["b".to_string()],
            HashMap::from([("b".to_string(), "3".to_string())]),
        ),
    ] {
        let err = cat
            .update_namespace_properties(&ns("p"), &removals, &updates)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataInvalid, "{err}");
    }
    let err = cat
        .update_namespace_properties(&ns("nope"), &[], &HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NamespaceNotFound);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_overwrite_replaces_the_pointer() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "r.t", false).await;
    let first = pointer(&t);
    let t2 = write_and_append(cat, &t, 0..2, HashMap::new()).await?;
    let err = cat.register_table_at(&ident("r.t"), &first, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableAlreadyExists);
    let back = cat.register_table_at(&ident("r.t"), &first, true).await?;
    assert_eq!(pointer(&back), first);
    assert!(scan_ids(&cat.load_table(&ident("r.t")).await?).await?.is_empty());
    let row = table_row(&env.raw().await, CATALOG, "r", "t").await.expect("row");
    assert_eq!(row.previous_metadata_location, Some(pointer(&t2)));
    Ok(())
}
