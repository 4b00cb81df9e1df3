//! The sink's configured commit limits: `limits.commit_retries` bounds how often a commit that
//! loses the catalog's compare-and-swap to another writer is tried again before it fails,
//! `rolling.inactivity_seconds` makes a sink whose input went still commit before its interval,
//! and `rolling.memory_mb` closes open data files early without changing what a commit holds.
//! A partitioned sink gathers small batches before it splits them by partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use floe::error::Error;
use floe::sink::Sink;
use floe::sink::iceberg::IcebergSink;
use floe_catalog::FloeCatalog;
use futures::future::BoxFuture;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind};

use crate::common::{
    Env, PIPELINE, TestResult, files_under, output_schema, referenced_data_files, rows, scan_ids, sink_config,
    table_ident, uuids_in, write_range,
};
use crate::faulty_storage::{Hook, Op};

/// A rival writer: before each of the sink catalog's next `times` metadata writes (one per
/// commit attempt, between loading the table and swapping its pointer), `other` commits a
/// property change to the table, so that attempt loses the compare-and-swap.
fn rival(other: FloeCatalog, times: usize) -> (Hook, Arc<AtomicUsize>) {
    let commits = Arc::new(AtomicUsize::new(0));
    let counter = commits.clone();
    let hook: Hook = Arc::new(move || -> BoxFuture<'static, ()> {
        let other = other.clone();
        let counter = counter.clone();
        Box::pin(async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if n > times {
                return;
            }
            let table = other.load_table(&table_ident()).await.expect("rival load");
            let tx = Transaction::new(&table);
            let tx = tx
                .update_table_properties()
                .set("rival.commit".to_string(), n.to_string())
                .apply(tx)
                .expect("rival apply");
            tx.commit(&other).await.expect("rival commit");
        })
    });
    (hook, commits)
}

/// Metadata files the sink's catalog wrote since write operation `mark`: one per commit attempt.
fn attempts_since(env: &Env, mark: usize) -> usize {
    env.faults
        .log_since(mark)
        .iter()
        .filter(|l| l.op == Op::WriteAll && l.path.ends_with(".metadata.json"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_always_loses_the_race_fails_after_commit_retries() -> TestResult {
    let env = Env::new().await;
    for retries in [2, 0] {
        let mut sink = env.open_sink(&[]).await.with_commit_retries(retries);
        write_range(&mut sink, 0..10).await?;
        let (hook, _) = rival(env.other_instance().await, usize::MAX);
        env.faults.before_metadata_write(Some(hook));
        let mark = env.faults.writes();
        let err = sink.commit().await.unwrap_err();
        env.faults.before_metadata_write(None);
        assert_eq!(
            attempts_since(&env, mark),
            retries as usize + 1,
            "commit_retries = {retries}: one attempt plus {retries} retries"
        );
        match &err {
            Error::Iceberg(e) => assert_eq!(e.kind(), ErrorKind::CatalogCommitConflicts, "{e}"),
            other => panic!("expected a commit conflict, got {other}"),
        }
        assert_eq!(env.position().await, 0, "nothing committed");
        assert!(env.table().await.metadata().current_snapshot_id().is_none());
    }
    // Every failed attempt's files are gone; with the rival quiet, the reopened sink commits.
    let parquet = files_under(&env.table_dir())
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .count();
    assert_eq!(parquet, 0);
    let mut sink = env.open_sink(&[]).await.with_commit_retries(2);
    write_range(&mut sink, 0..10).await?;
    sink.commit().await?;
    assert_eq!(scan_ids(&env.table().await).await?, (0..10).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_loses_fewer_races_than_commit_retries_lands() -> TestResult {
    let env = Env::new().await;
    let mut sink = env.open_sink(&[]).await.with_commit_retries(2);
    write_range(&mut sink, 0..10).await?;
    let (hook, rivals) = rival(env.other_instance().await, 2);
    env.faults.before_metadata_write(Some(hook));
    let mark = env.faults.writes();
    let stats = sink.commit().await?;
    env.faults.before_metadata_write(None);
    assert_eq!(attempts_since(&env, mark), 3, "two lost races, then the commit");
    assert_eq!(rivals.load(Ordering::SeqCst), 3);
    assert_eq!((stats.from, stats.to, stats.rows), (0, 10, 10));
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..10).collect::<Vec<_>>());
    assert_eq!(
        table.metadata().properties().get("rival.commit").map(String::as_str),
        Some("2")
    );
    assert!(
        !table.metadata().properties().contains_key("commit.retry.num-retries"),
        "the retry budget is never written to the table"
    );
    assert_eq!(env.position().await, 10);
    let referenced = referenced_data_files(&table).await?;
    assert!(
        files_under(&env.table_dir())
            .iter()
            .filter(|f| f.ends_with(".parquet"))
            .all(|f| referenced.contains(f))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_whose_input_went_still_rolls_after_inactivity_seconds() -> TestResult {
    let env = Env::new().await;
    let mut cfg = sink_config(&[]);
    cfg.rolling.interval_seconds = 3600;
    cfg.rolling.inactivity_seconds = Some(2);
    let mut sink = IcebergSink::open(env.catalog.clone(), &cfg, PIPELINE, &output_schema()).await?;
    assert_eq!(sink.roll_deadline(), None, "nothing pending");

    let started = Instant::now();
    write_range(&mut sink, 0..10).await?;
    let deadline = sink.roll_deadline().expect("rows pending");
    assert!(
        deadline <= Instant::now() + Duration::from_secs(2),
        "idle roll, not the hour"
    );
    assert!(!sink.should_roll());

    // More input pushes the idle roll back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    write_range(&mut sink, 10..20).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !sink.should_roll(),
        "the input moved 1.2 s ago, less than inactivity_seconds"
    );
    assert!(sink.roll_deadline().expect("pending") > deadline);

    // Still for 2 s: due, long before the interval.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(sink.should_roll());
    assert!(started.elapsed() < Duration::from_secs(60));
    sink.commit().await?;
    assert_eq!(sink.roll_deadline(), None);
    assert!(!sink.should_roll());
    assert_eq!(scan_ids(&env.table().await).await?, (0..20).collect::<Vec<_>>());
    Ok(())
}

/// A sink on `partition_by` whose open data files may hold `memory_mb` MB.
/// A sink with `rolling.memory_mb = memory_mb` that splits every batch by partition as it comes
/// (not gathered first), so its writers see the budget at once.
async fn budget_sink(env: &Env, partition_by: &[&str], memory_mb: u64) -> IcebergSink {
    let mut cfg = sink_config(partition_by);
    cfg.rolling.memory_mb = memory_mb;
    IcebergSink::open(env.catalog.clone(), &cfg, PIPELINE, &output_schema())
        .await
        .expect("open sink")
        .with_split_rows(1)
}

/// The Parquet files under the table's directory.
fn parquet_on_disk(env: &Env) -> std::collections::BTreeSet<String> {
    files_under(&env.table_dir())
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_sink_gathers_small_batches_before_it_splits_them() -> TestResult {
    // 100 batches of 500 rows into 4 partitions: the rows are split once SPLIT_ROWS have come
    // (mid-way), and the commit splits the rest; every row lands once, one file per partition.
    let env = Env::new().await;
    let mut sink = env.open_sink(&["bucket"]).await;
    const { assert!(floe::sink::iceberg::SPLIT_ROWS < 50_000) };
    for i in 0..100u64 {
        sink.write(&rows(i * 500..(i + 1) * 500), (i + 1) * 500).await?;
    }
    let stats = sink.commit().await?;
    assert_eq!((stats.rows, stats.files), (50_000, 4));
    // And a commit with fewer rows than SPLIT_ROWS, all still gathered when it starts.
    write_range(&mut sink, 50_000..50_100).await?;
    let stats = sink.commit().await?;
    assert_eq!((stats.rows, stats.files), (100, 4));
    let table = env.table().await;
    assert_eq!(table.metadata().snapshots().count(), 2);
    assert_eq!(scan_ids(&table).await?, (0..50_100).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_per_row_over_a_small_budget_lands_once_in_one_commit() -> TestResult {
    // `name` is distinct per row: 1,000 partitions, 1 MB holds only a few open files at a time.
    let env = Env::new().await;
    let mut sink = budget_sink(&env, &["name"], 1).await;
    write_range(&mut sink, 0..1000).await?;
    let early = parquet_on_disk(&env).len();
    assert!(early > 900, "most files were closed before the commit: {early}");
    let stats = sink.commit().await?;
    assert_eq!((stats.rows, stats.files), (1000, 1000));
    let table = env.table().await;
    assert_eq!(table.metadata().snapshots().count(), 1);
    assert_eq!(scan_ids(&table).await?, (0..1000).collect::<Vec<_>>());
    let referenced = referenced_data_files(&table).await?;
    assert_eq!(
        referenced,
        parquet_on_disk(&env),
        "every file written is committed, none is left over"
    );
    // One attempt named them all (what a failed commit's clean-up looks for).
    let attempts: std::collections::BTreeSet<uuid::Uuid> = referenced.iter().flat_map(|f| uuids_in(f)).collect();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_closed_for_the_budget_continues_in_a_new_file() -> TestResult {
    // 4 partitions (`bucket`), 40 batches of 2,500 rows: the writers outgrow 1 MB and are closed
    // and reopened several times within the one commit.
    let env = Env::new().await;
    let mut sink = budget_sink(&env, &["bucket"], 1).await;
    for i in 0..40u64 {
        sink.write(&rows(i * 2500..(i + 1) * 2500), (i + 1) * 2500).await?;
    }
    let stats = sink.commit().await?;
    assert_eq!(stats.rows, 100_000);
    assert!(stats.files > 8, "the budget closed files early: {} files", stats.files);
    let table = env.table().await;
    assert_eq!(table.metadata().snapshots().count(), 1);
    assert_eq!(scan_ids(&table).await?, (0..100_000).collect::<Vec<_>>());
    assert_eq!(referenced_data_files(&table).await?.len(), stats.files);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_removes_the_files_the_budget_closed_early() -> TestResult {
    let env = Env::new().await;
    let mut sink = budget_sink(&env, &["name"], 1).await.with_commit_retries(0);
    write_range(&mut sink, 0..300).await?;
    assert!(!parquet_on_disk(&env).is_empty(), "files closed before the commit");
    let (hook, _) = rival(env.other_instance().await, usize::MAX);
    env.faults.before_metadata_write(Some(hook));
    sink.commit().await.unwrap_err();
    env.faults.before_metadata_write(None);
    assert_eq!(
        parquet_on_disk(&env),
        Default::default(),
        "the failed attempt's files are gone"
    );
    assert_eq!(env.position().await, 0);
    let mut sink = budget_sink(&env, &["name"], 1).await;
    write_range(&mut sink, 0..300).await?;
    sink.commit().await?;
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..300).collect::<Vec<_>>());
    assert_eq!(referenced_data_files(&table).await?, parquet_on_disk(&env));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_rows_over_the_budget_are_written_as_sorted_runs() -> TestResult {
    let env = Env::new().await;
    let mut cfg = sink_config(&["bucket"]);
    cfg.rolling.memory_mb = 1;
    cfg.sort_by = vec!["id DESC".to_string()];
    let mut sink = IcebergSink::open(env.catalog.clone(), &cfg, PIPELINE, &output_schema()).await?;
    for i in 0..20u64 {
        sink.write(&rows(i * 5000..(i + 1) * 5000), (i + 1) * 5000).await?;
    }
    let stats = sink.commit().await?;
    assert!(stats.files > 4, "more than one sorted run: {} files", stats.files);
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..100_000).collect::<Vec<_>>());
    // Every file is sorted by id descending.
    for f in referenced_data_files(&table).await? {
        let path = f.strip_prefix("file://").unwrap_or(&f);
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?
                .build()?;
        let mut ids = Vec::new();
        for batch in reader {
            let batch = batch?;
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .expect("ids");
            ids.extend(col.values().iter().copied());
        }
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{f} is not sorted by id DESC");
    }
    Ok(())
}
