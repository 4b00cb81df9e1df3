//! Recovery without storage faults: a crash between writing Parquet files and committing them
//! (the sink is dropped) leaves an attempt whose files the next open deletes before resuming at
//! the committed position; output that filters to nothing still moves the position, without a
//! snapshot; and a sink reopened after commits resumes exactly where the catalog says.

use crate::common::{
    Env, PIPELINE, SINK, TestResult, files_under, referenced_data_files, rows, scan_ids, uuids_in, write_range,
};
use floe::sink::Sink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_an_attempt_that_never_committed_are_removed_at_open() -> TestResult {
    let env = Env::new().await;
    // Rows split as they come, so the writes below reach Parquet files before any commit.
    let mut sink = env.open_sink(&["bucket"]).await.with_split_rows(1);
    write_range(&mut sink, 0..10).await?;
    sink.commit().await?;

    let mark = env.faults.writes();
    write_range(&mut sink, 10..30).await?;
    let crashed: Vec<uuid::Uuid> = env
        .faults
        .log_since(mark)
        .iter()
        .flat_map(|l| uuids_in(&l.path))
        .collect();
    assert!(!crashed.is_empty(), "the attempt opened its Parquet files");
    let orphans = |env: &Env| {
        files_under(&env.table_dir())
            .into_iter()
            .filter(|f| uuids_in(f).iter().any(|u| crashed.contains(u)))
            .count()
    };
    assert!(orphans(&env) > 0);
    assert_eq!(env.catalog.pending_attempts(PIPELINE, SINK).await?.len(), 1);
    drop(sink); // the process dies here

    let mut sink = env.open_sink(&["bucket"]).await;
    assert_eq!(orphans(&env), 0, "the next open deletes the abandoned attempt's files");
    assert!(env.catalog.pending_attempts(PIPELINE, SINK).await?.is_empty());
    assert_eq!(sink.committed(), 10);
    write_range(&mut sink, 10..30).await?;
    sink.commit().await?;
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..30).collect::<Vec<_>>());
    let referenced = referenced_data_files(&table).await?;
    let data: Vec<String> = files_under(&env.table_dir())
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(data.iter().all(|f| referenced.contains(f)), "{data:?}");
    assert!(env.catalog.pending_attempts(PIPELINE, SINK).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_output_moves_the_position_without_a_snapshot() -> TestResult {
    let env = Env::new().await;
    let mut sink = env.open_sink(&[]).await;
    write_range(&mut sink, 0..5).await?;
    sink.commit().await?;
    let snapshot = env.table().await.metadata().current_snapshot_id();

    // Offsets 5..40 produced no output rows.
    sink.write(&rows(0..0), 20).await?;
    sink.write(&rows(0..0), 40).await?;
    assert!(sink.through() > sink.committed());
    let stats = sink.commit().await?;
    assert_eq!((stats.files, stats.rows, stats.from, stats.to), (0, 0, 5, 40));
    assert_eq!(env.position().await, 40);
    let table = env.table().await;
    assert_eq!(
        table.metadata().current_snapshot_id(),
        snapshot,
        "no snapshot for no rows"
    );
    assert_eq!(scan_ids(&table).await?, (0..5).collect::<Vec<_>>());

    drop(sink);
    let mut sink = env.open_sink(&[]).await;
    assert_eq!(sink.committed(), 40);
    write_range(&mut sink, 40..44).await?;
    sink.commit().await?;
    let mut expected: Vec<u64> = (0..5).collect();
    expected.extend(40..44);
    assert_eq!(scan_ids(&env.table().await).await?, expected);
    Ok(())
}
