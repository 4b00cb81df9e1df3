//! The sink next to other writers of the same table: a commit by another pipeline between the
//! sink's open and its commit is absorbed (iceberg retries on the fresh metadata); a second floe
//! instance that already committed the range fences the sink (refused, not retried; the reopened
//! sink resumes at the new position); and an instance opening while another has an attempt in
//! flight must not leave the table referencing deleted files.

use floe::error::Error;
use floe::sink::Sink;
use iceberg::{Catalog, ErrorKind};

use crate::common::{
    Env, PIPELINE, SINK, TestResult, files_under, open_sink, referenced_data_files, rows, scan_ids, write_range,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_pipelines_commit_in_between_is_absorbed() -> TestResult {
    let env = Env::new().await;
    let mut sink = env.open_sink(&[]).await;
    write_range(&mut sink, 0..10).await?;

    // Another pipeline appends to the same table meanwhile (ids 1000.., its own position).
    let cfg = crate::common::sink_config(&[]);
    let mut other = floe::sink::iceberg::IcebergSink::open(
        env.other_instance().await,
        &cfg,
        "other",
        &crate::common::output_schema(),
    )
    .await?;
    other.write(&rows(1000..1005), 5).await?;
    other.commit().await?;

    let stats = sink.commit().await?;
    assert_eq!((stats.from, stats.to, stats.rows), (0, 10, 10));
    let table = env.table().await;
    assert_eq!(table.metadata().snapshots().count(), 2);
    let mut expected: Vec<u64> = (0..10).chain(1000..1005).collect();
    expected.sort_unstable();
    assert_eq!(scan_ids(&table).await?, expected);
    assert_eq!(env.position().await, 10);
    let theirs = env.catalog.sink_position("other", SINK).await?.expect("other position");
    assert_eq!(theirs.position, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_committed_by_another_instance_fences_the_sink() -> TestResult {
    let env = Env::new().await;
    let mut a = env.open_sink(&[]).await;
    let other = env.other_instance().await;
    let mut b = open_sink(&other, &[]).await;
    assert_eq!((a.committed(), b.committed()), (0, 0));
    write_range(&mut b, 0..10).await?;
    b.commit().await?;

    write_range(&mut a, 0..12).await?;
    let err = a.commit().await.unwrap_err();
    match &err {
        Error::Iceberg(e) => {
            assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{e}");
            assert!(!e.retryable());
        }
        other => panic!("expected the position fence, got {other}"),
    }
    assert_eq!(a.committed(), 0, "a refused commit does not move the sink");
    assert_eq!(env.position().await, 10);
    // The refused attempt's files are gone; every data file on disk is B's.
    let table = env.table().await;
    let referenced = referenced_data_files(&table).await?;
    let data_on_disk: Vec<String> = files_under(&env.table_dir())
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(data_on_disk.iter().all(|f| referenced.contains(f)), "{data_on_disk:?}");

    // The runner reopens: the sink resumes where B left off.
    drop(a);
    let mut a = env.open_sink(&[]).await;
    assert_eq!(a.committed(), 10);
    write_range(&mut a, 10..20).await?;
    a.commit().await?;
    assert_eq!(scan_ids(&env.table().await).await?, (0..20).collect::<Vec<_>>());
    assert_eq!(env.position().await, 20);
    Ok(())
}

/// Two floe instances on one catalog (the design's "another floe committed" case): B opens while
/// A is between writing its Parquet files and committing them. B's open treats A's attempt as
/// abandoned and deletes its files; A's commit must then not land a snapshot that references
/// those deleted files (it should be refused, and A resume from the catalog's position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_by_another_instance_must_not_break_an_attempt_in_flight() -> TestResult {
    let env = Env::new().await;
    let mut a = env.open_sink(&[]).await;
    write_range(&mut a, 0..10).await?;
    let pending = env.catalog.pending_attempts(PIPELINE, SINK).await?;
    assert_eq!(pending.len(), 1, "A's attempt is recorded before its first file");

    let other = env.other_instance().await;
    let _b = open_sink(&other, &[]).await;

    let landed = a.commit().await;
    let table = env.table().await;
    let on_disk = files_under(&env.table_dir());
    for f in referenced_data_files(&table).await? {
        assert!(
            on_disk.contains(&f),
            "A's commit landed ({:?}) but references {f}, which B's open deleted: the table is unreadable",
            landed.as_ref().map(|s| (s.from, s.to))
        );
    }
    if landed.is_err() {
        drop(a);
        let mut a = env.open_sink(&[]).await;
        let from = a.committed();
        write_range(&mut a, from..10).await?;
        a.commit().await?;
    }
    assert_eq!(scan_ids(&env.table().await).await?, (0..10).collect::<Vec<_>>());
    Ok(())
}

/// An outside engine adds an optional column (as PyIceberg's `update_schema().add_column` or
/// Spark's `ALTER TABLE ADD COLUMN` do) while the sink is open: the sink's next commits keep
/// landing with the new column null, without a reopen, and after one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_add_column_keeps_the_sink_writing() -> TestResult {
    use iceberg::spec::{PrimitiveType, Type};
    use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};

    let env = Env::new().await;
    let mut sink = env.open_sink(&["bucket"]).await;
    write_range(&mut sink, 0..10).await?;
    sink.commit().await?;

    let other = env.other_instance().await;
    let table = other.load_table(&crate::common::table_ident()).await?;
    let tx = Transaction::new(&table);
    let tx = tx
        .update_schema()
        .add_column(AddColumn::optional("extra", Type::Primitive(PrimitiveType::String)))
        .apply(tx)?;
    tx.commit(&other).await?;

    // The open sink's writer was made before the change; its commit lands on the new schema.
    write_range(&mut sink, 10..20).await?;
    sink.commit().await?;
    // And the writer made after it writes the new schema's layout.
    write_range(&mut sink, 20..30).await?;
    sink.commit().await?;
    drop(sink);
    let mut sink = env.open_sink(&["bucket"]).await;
    assert_eq!(sink.committed(), 30);
    write_range(&mut sink, 30..40).await?;
    sink.commit().await?;

    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..40).collect::<Vec<_>>());
    assert!(table.metadata().current_schema().field_by_name("extra").is_some());
    let batches: Vec<arrow::array::RecordBatch> =
        futures::TryStreamExt::try_collect(table.scan().select(["extra"]).build()?.to_arrow().await?).await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let nulls: usize = batches.iter().map(|b| b.column(0).null_count()).sum();
    assert_eq!(
        (rows, nulls),
        (40, 40),
        "the column the pipeline does not write is null"
    );
    Ok(())
}

/// An outside change the pipeline's rows cannot follow — a required column the pipeline does not
/// write — fails the sink with a message naming the column, at the next commit and at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_outside_change_fails_the_sink_visibly() -> TestResult {
    use iceberg::spec::{Literal, PrimitiveType, Type};
    use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};

    let env = Env::new().await;
    let mut sink = env.open_sink(&[]).await;
    write_range(&mut sink, 0..10).await?;
    sink.commit().await?;

    let other = env.other_instance().await;
    let table = other.load_table(&crate::common::table_ident()).await?;
    let tx = Transaction::new(&table);
    let tx = tx
        .update_schema()
        .add_column(AddColumn::required(
            "must",
            Type::Primitive(PrimitiveType::Int),
            Literal::int(0),
        ))
        .apply(tx)?;
    if tx.commit(&other).await.is_err() {
        // This iceberg version cannot add a required column to a v2 table: nothing to test.
        return Ok(());
    }
    write_range(&mut sink, 10..20).await?;
    let err = sink.commit().await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("\"must\" is required"), "{err}");
    drop(sink);
    let cfg = crate::common::sink_config(&[]);
    let err =
        floe::sink::iceberg::IcebergSink::open(env.catalog.clone(), &cfg, PIPELINE, &crate::common::output_schema())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
    assert!(err.contains("\"must\" is required"), "{err}");
    Ok(())
}

/// An outside engine sets table properties iceberg-rust cannot parse (`"big"` for a size,
/// Java's `"TRUE"` for a boolean) and retry waits of an hour: iceberg's `Transaction` refuses
/// to commit on such a table, but the sink keeps committing — past a rival commit that makes
/// it retry, and after a reopen — and the properties stay as the other engine set them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_iceberg_cannot_read_do_not_stop_the_sink() -> TestResult {
    use iceberg::transaction::{ApplyTransactionAction, Transaction};

    let env = Env::new().await;
    let mut sink = env.open_sink(&["bucket"]).await;
    write_range(&mut sink, 0..10).await?;
    sink.commit().await?;

    let hostile = [
        ("write.target-file-size-bytes", "big"),
        ("gc.enabled", "TRUE"),
        ("history.expire.min-snapshots-to-keep", "-1"),
        ("commit.retry.min-wait-ms", "3600000"),
        ("commit.retry.max-wait-ms", "3600000"),
    ];
    let other = env.other_instance().await;
    let table = other.load_table(&crate::common::table_ident()).await?;
    let tx = Transaction::new(&table);
    let mut action = tx.update_table_properties();
    for (k, v) in hostile {
        action = action.set(k.to_string(), v.to_string());
    }
    let tx = action.apply(tx)?;
    tx.commit(&other).await?;
    let table = env.table().await;
    assert!(
        table.metadata().table_properties().is_err(),
        "iceberg cannot read the table's properties now"
    );

    // A rival pipeline's commit lands first, so the sink's commit is retried (after at most 1 s).
    let cfg = crate::common::sink_config(&["bucket"]);
    let mut rival =
        floe::sink::iceberg::IcebergSink::open(other, &cfg, "rival", &crate::common::output_schema()).await?;
    write_range(&mut sink, 10..20).await?;
    rival.write(&rows(1000..1005), 5).await?;
    rival.commit().await?;
    // A guard against the hour the table asks for, not a measurement.
    tokio::time::timeout(std::time::Duration::from_secs(300), sink.commit())
        .await
        .map_err(|_| "the sink's retry waited as long as the table's properties ask")??;
    drop(sink);
    let mut sink = env.open_sink(&["bucket"]).await;
    assert_eq!(sink.committed(), 20);
    write_range(&mut sink, 20..30).await?;
    sink.commit().await?;

    let table = env.table().await;
    let mut expected: Vec<u64> = (0..30).collect();
    expected.extend(1000..1005);
    assert_eq!(scan_ids(&table).await?, expected);
    for (k, v) in hostile {
        assert_eq!(table.metadata().properties().get(k).map(String::as_str), Some(v), "{k}");
    }
    Ok(())
}
