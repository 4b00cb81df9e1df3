//! Commits with sink positions: a fast append carrying `position_summary` swaps the metadata
//! pointer and moves `floe_sink_positions` together; a stale `from` is refused (not retryable)
//! and leaves pointer, position and metadata directory as they were; `advance_position` moves a
//! position without a snapshot under the same check; a malformed position summary is rejected.

use std::collections::HashMap;

use floe_catalog::{PROP_PIPELINE, PROP_POSITION_FROM, PROP_POSITION_TO, PROP_SINK};
use iceberg::{Catalog, ErrorKind};

use crate::common::{
    CATALOG, Env, TestResult, create_table, files_in, ident, local_path, moves, pointer, scan_ids, table_row,
    write_and_append, write_files,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_move_pointer_and_position_together() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let raw = env.raw().await;
    let t0 = create_table(cat, "ns.t", false).await;
    assert_eq!(cat.sink_position("p", "s").await?, None);

    let t1 = write_and_append(cat, &t0, 0..10, moves("p", "s", 0, 10)).await?;
    let row = table_row(&raw, CATALOG, "ns", "t").await.expect("row");
    assert_eq!(row.metadata_location.as_deref(), Some(pointer(&t1).as_str()));
    assert_eq!(row.previous_metadata_location.as_deref(), Some(pointer(&t0).as_str()));
    assert!(pointer(&t1).contains("/metadata/00001-"), "{}", pointer(&t1));
    let snapshot = t1.metadata().current_snapshot().expect("a snapshot").clone();
    let summary = &snapshot.summary().additional_properties;
    assert_eq!(summary.get(PROP_POSITION_FROM).map(String::as_str), Some("0"));
    assert_eq!(summary.get(PROP_POSITION_TO).map(String::as_str), Some("10"));

    let pos = cat.sink_position("p", "s").await?.expect("position recorded");
    assert_eq!(pos.position, 10);
    assert_eq!(pos.snapshot_id, snapshot.snapshot_id());
    assert_eq!(pos.table, "ns.t");
    assert_eq!(pos.table_uuid, t1.metadata().uuid().to_string());
    assert_eq!((pos.pipeline.as_str(), pos.sink.as_str()), ("p", "s"));

    let t2 = write_and_append(cat, &t1, 10..20, moves("p", "s", 10, 20)).await?;
    let row = table_row(&raw, CATALOG, "ns", "t").await.expect("row");
    assert_eq!(row.metadata_location.as_deref(), Some(pointer(&t2).as_str()));
    assert_eq!(row.previous_metadata_location.as_deref(), Some(pointer(&t1).as_str()));
    let pos = cat.sink_position("p", "s").await?.expect("position");
    assert_eq!(pos.position, 20);
    assert_eq!(pos.snapshot_id, t2.metadata().current_snapshot_id().expect("snapshot"));
    assert_eq!(cat.sink_positions().await?, vec![pos]);
    assert_eq!(scan_ids(&t2).await?, (0..20).collect::<Vec<_>>());
    // A loaded table agrees with what the commit returned.
    assert_eq!(pointer(&cat.load_table(&ident("ns.t")).await?), pointer(&t2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_from_is_refused_and_changes_nothing() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let raw = env.raw().await;
    let t = create_table(cat, "ns.t", false).await;
    let t = write_and_append(cat, &t, 0..10, moves("p", "s", 0, 10)).await?;
    let t = write_and_append(cat, &t, 10..20, moves("p", "s", 10, 20)).await?;
    let row_before = table_row(&raw, CATALOG, "ns", "t").await;
    let position_before = cat.sink_position("p", "s").await?;
    let metadata_before = files_in(&t, "metadata", ".metadata.json");

    // Another instance still believes the position is 0 (and then 10): both are refused.
    for from in [0, 10] {
        let files = write_files(&t, 100..105).await?;
        let paths: Vec<String> = files.iter().map(|f| f.file_path().to_string()).collect();
        let err = crate::common::append(cat, &t, files, moves("p", "s", from, 30))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
        assert!(!err.retryable(), "a fenced commit must not be retried: {err}");

        assert_eq!(table_row(&raw, CATALOG, "ns", "t").await, row_before);
        assert_eq!(cat.sink_position("p", "s").await?, position_before);
        assert_eq!(
            files_in(&t, "metadata", ".metadata.json"),
            metadata_before,
            "the metadata file of the refused commit is deleted"
        );
        let loaded = cat.load_table(&ident("ns.t")).await?;
        assert_eq!(pointer(&loaded), pointer(&t));
        assert_eq!(scan_ids(&loaded).await?, (0..20).collect::<Vec<_>>());
        // The refused files were never referenced (the caller deletes them).
        for p in paths {
            assert!(local_path(&p).is_file());
        }
    }

    // The right `from` still works afterwards.
    let t = write_and_append(cat, &t, 20..25, moves("p", "s", 20, 25)).await?;
    assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(25));
    assert_eq!(scan_ids(&t).await?, (0..25).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advance_position_moves_without_a_snapshot_under_the_same_check() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let raw = env.raw().await;
    let t = create_table(cat, "ns.t", false).await;
    let id = ident("ns.t");

    // The first move of a pair, on a table without snapshots.
    cat.advance_position("p", "s", &id, 0, 5).await?;
    let pos = cat.sink_position("p", "s").await?.expect("position");
    assert_eq!((pos.position, pos.snapshot_id), (5, -1));
    assert_eq!(pos.table_uuid, t.metadata().uuid().to_string());

    let t = write_and_append(cat, &t, 0..3, moves("p", "s", 5, 8)).await?;
    let row_before = table_row(&raw, CATALOG, "ns", "t").await;
    cat.advance_position("p", "s", &id, 8, 12).await?;
    let pos = cat.sink_position("p", "s").await?.expect("position");
    assert_eq!(pos.position, 12);
    assert_eq!(pos.snapshot_id, t.metadata().current_snapshot_id().expect("snapshot"));
    assert_eq!(table_row(&raw, CATALOG, "ns", "t").await, row_before, "no new metadata");
    let loaded = cat.load_table(&id).await?;
    assert_eq!(loaded.metadata().snapshots().count(), 1);

    for stale in [0, 5, 8] {
        let err = cat.advance_position("p", "s", &id, stale, 20).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
        assert!(!err.retryable());
        assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(12));
    }
    // A commit with the old `from` is refused after an advance, too.
    let err = write_and_append(cat, &t, 3..4, moves("p", "s", 8, 13))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    write_and_append(cat, &t, 3..4, moves("p", "s", 12, 13)).await?;
    assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(13));

    // Pairs are independent; a missing table is TableNotFound.
    cat.advance_position("p", "other", &id, 0, 1).await?;
    assert_eq!(cat.sink_positions().await?.len(), 2);
    let err = cat
        .advance_position("p", "s", &ident("ns.missing"), 13, 14)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableNotFound, "{err}");
    assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(13));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_position_summary_is_rejected() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    let before = pointer(&t);
    let metadata_before = files_in(&t, "metadata", ".metadata.json");
    let bad = HashMap::from([
        (PROP_PIPELINE.to_string(), "p".to_string()),
        (PROP_SINK.to_string(), "s".to_string()),
        (PROP_POSITION_FROM.to_string(), "zero".to_string()),
        (PROP_POSITION_TO.to_string(), "10".to_string()),
    ]);
    let err = write_and_append(cat, &t, 0..3, bad).await.map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataInvalid, "{err}");
    assert_eq!(pointer(&cat.load_table(&ident("ns.t")).await?), before);
    assert_eq!(files_in(&t, "metadata", ".metadata.json"), metadata_before);
    assert_eq!(cat.sink_position("p", "s").await?, None);

    // A commit without floe's keys (another engine) moves no position.
    write_and_append(cat, &t, 0..3, HashMap::new()).await?;
    assert!(cat.sink_positions().await?.is_empty());
    Ok(())
}
