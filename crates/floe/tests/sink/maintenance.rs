//! Table maintenance against the sink's own table: compaction between sink commits (the sink's
//! next commit lands on top of the `replace` snapshot, every row exactly once), a compaction
//! whose writes fail at every possible step (nothing referenced missing, nothing of it left
//! behind), and the cleanup of a cut-off maintenance attempt that keeps the files its landed
//! commit uses. Also expiry and orphan cleanup deleting exactly the unreferenced files, and
//! copy-on-write deletes.

use std::collections::BTreeSet;

use floe::maintenance::compact::{CompactOptions, compact};
use floe::maintenance::delete::{Condition, delete_rows};
use floe::maintenance::expire::{ExpireOptions, expire};
use floe::maintenance::manifests::{ManifestOptions, rewrite_manifests};
use floe::maintenance::orphans::{OrphanOptions, remove_orphans};
use floe::maintenance::{ATTEMPTS, Quiet, clean_attempts};
use floe::sink::Sink;

use crate::common::{Env, TestResult, files_under, referenced_data_files, scan_ids, table_ident, write_range};

const EIO: i32 = 5;

fn options() -> CompactOptions {
    CompactOptions::with_target(64 * 1024 * 1024)
}

/// Ten sink commits of 20 rows each into a table partitioned by bucket (4 partitions).
async fn ten_commits(env: &Env) -> floe::sink::iceberg::IcebergSink {
    let mut sink = env.open_sink(&["bucket"]).await;
    for k in 0..10u64 {
        write_range(&mut sink, k * 20..(k + 1) * 20).await.expect("write");
        sink.commit().await.expect("commit");
    }
    sink
}

/// Whether no maintenance attempt of the table is recorded.
async fn no_open_attempts(env: &Env) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    Ok(env
        .catalog
        .pending_attempts(ATTEMPTS, &table_ident().to_string())
        .await?
        .is_empty())
}

/// Every data file under the table folder.
fn parquet_on_disk(env: &Env) -> BTreeSet<String> {
    files_under(&env.table_dir())
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_between_sink_commits_keeps_every_row_once() -> TestResult {
    let env = Env::new().await;
    let mut sink = ten_commits(&env).await;
    let before = env.table().await;
    assert_eq!(
        referenced_data_files(&before).await?.len(),
        40,
        "one file per partition per commit"
    );

    let report = compact(&env.catalog, &table_ident(), &options(), &Quiet).await?;
    assert_eq!((report.files_before, report.files_rewritten), (40, 40), "{report:?}");
    assert_eq!(
        (report.files_written, report.files_after, report.commits),
        (4, 4, 1),
        "{report:?}"
    );
    let table = env.table().await;
    assert_eq!(referenced_data_files(&table).await?.len(), 4);
    assert_eq!(scan_ids(&table).await?, (0..200).collect::<Vec<_>>());

    // The sink's next commit lands on top of the replace snapshot (its position is its own
    // row in the catalog database, untouched by compaction).
    write_range(&mut sink, 200..240).await?;
    sink.commit().await?;
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..240).collect::<Vec<_>>());
    assert_eq!(env.position().await, 240);
    assert!(no_open_attempts(&env).await?);

    // Twice more: the compacted files are small too, so they are packed with the new ones.
    let again = compact(&env.catalog, &table_ident(), &options(), &Quiet).await?;
    assert_eq!((again.files_before, again.files_after), (8, 4), "{again:?}");
    assert_eq!(scan_ids(&env.table().await).await?, (0..240).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_whose_writes_fail_leaves_the_table_and_its_folder_as_they_were() -> TestResult {
    let env = Env::new().await;
    let _sink = ten_commits(&env).await;
    let files_before = files_under(&env.table_dir());
    let pointer = env.table().await.metadata_location().map(str::to_string);
    // Fail the k-th write of the compaction, for every k until one succeeds whole.
    let mut k = 1;
    loop {
        env.faults.fail_write_in(k, EIO);
        let result = compact(&env.catalog, &table_ident(), &options(), &Quiet).await;
        env.faults.disarm();
        match result {
            Ok(report) => {
                assert_eq!(report.commits, 1, "{report:?}");
                break;
            }
            Err(e) => {
                assert!(e.to_string().contains("injected fault"), "k = {k}: {e}");
                let table = env.table().await;
                assert_eq!(
                    table.metadata_location().map(str::to_string),
                    pointer,
                    "k = {k}: nothing committed"
                );
                assert_eq!(
                    files_under(&env.table_dir()),
                    files_before,
                    "k = {k}: nothing left behind"
                );
                assert_eq!(scan_ids(&table).await?, (0..200).collect::<Vec<_>>());
                assert!(no_open_attempts(&env).await?, "k = {k}: the attempt is forgotten");
            }
        }
        k += 1;
        assert!(k < 100, "a compaction of 40 files does fewer than 100 writes");
    }
    assert!(
        k > 3,
        "the data files, manifests and manifest list were each failed once"
    );
    assert_eq!(scan_ids(&env.table().await).await?, (0..200).collect::<Vec<_>>());
    Ok(())
}

/// Sets the renewal time of every maintenance attempt to long ago (a process killed long ago).
async fn age_attempts(env: &Env) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&floe_catalog::Store::sqlite_uri(&env.db))
        .await
        .expect("raw pool");
    sqlx::query("UPDATE floe_sink_attempts SET started_at_ms = 0 WHERE pipeline = $1")
        .bind(ATTEMPTS)
        .execute(&pool)
        .await
        .expect("age attempts");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_attempt_is_cleaned_without_touching_what_its_landed_commit_uses() -> TestResult {
    let env = Env::new().await;
    let _sink = ten_commits(&env).await;
    compact(&env.catalog, &table_ident(), &options(), &Quiet).await?;
    let table = env.table().await;
    let live = referenced_data_files(&table).await?;
    let landed: uuid::Uuid = live
        .iter()
        .find_map(|f| f.split("floe-compact-").nth(1)?.get(..36)?.parse().ok())
        .expect("compacted files carry their attempt id");
    // The process was killed after its commit landed, before it forgot the attempt; and
    // another run was killed after writing a file (named after its attempt) it never committed.
    let table_location = table.metadata().location().to_string();
    let ident = table_ident().to_string();
    env.catalog
        .begin_attempt(ATTEMPTS, &ident, landed, &table_location)
        .await?;
    let cut = uuid::Uuid::now_v7();
    env.catalog
        .begin_attempt(ATTEMPTS, &ident, cut, &table_location)
        .await?;
    let stray = env
        .table_dir()
        .join("data")
        .join(format!("floe-compact-{cut}-0-00000.parquet"));
    std::fs::write(&stray, b"half a file")?;

    // Not yet stale: a live run's attempt is never cleaned.
    assert_eq!(clean_attempts(&env.catalog, &table_ident()).await?, 0);
    assert!(stray.exists());
    age_attempts(&env).await;
    assert_eq!(
        clean_attempts(&env.catalog, &table_ident()).await?,
        1,
        "only the stray file"
    );
    assert!(!stray.exists());
    assert!(env.catalog.pending_attempts(ATTEMPTS, &ident).await?.is_empty());
    let table = env.table().await;
    assert_eq!(referenced_data_files(&table).await?, live);
    assert_eq!(scan_ids(&table).await?, (0..200).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_orphan_cleanup_delete_exactly_the_unreferenced_files() -> TestResult {
    let env = Env::new().await;
    let mut sink = ten_commits(&env).await;
    compact(&env.catalog, &table_ident(), &options(), &Quiet).await?;
    write_range(&mut sink, 200..220).await?;
    sink.commit().await?;
    let live = referenced_data_files(&env.table().await).await?;
    assert_eq!(
        parquet_on_disk(&env).len(),
        40 + 4 + 4,
        "old files stay for time travel"
    );

    let keep_all = ExpireOptions {
        older_than_ms: 0,
        retain_last: 100,
        dry_run: false,
    };
    let report = expire(&env.catalog, &table_ident(), &keep_all, &Quiet).await?;
    assert_eq!(
        (report.snapshots_before, report.snapshots_after, report.files_deleted),
        (12, 12, 0)
    );

    let keep_two = ExpireOptions {
        older_than_ms: 0,
        retain_last: 2,
        dry_run: false,
    };
    let report = expire(&env.catalog, &table_ident(), &keep_two, &Quiet).await?;
    assert_eq!((report.snapshots_before, report.snapshots_after), (12, 2), "{report:?}");
    assert_eq!(report.delete_failures, 0);
    // The replace snapshot and the append on top stay; the 40 files only older snapshots read go.
    assert_eq!(parquet_on_disk(&env), live, "exactly the live data files are left");
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..220).collect::<Vec<_>>());
    assert_eq!(env.position().await, 220, "the exactly-once record survives expiry");

    // An old stray file goes; with the default window a fresh one stays.
    let stray = env.table_dir().join("data").join("stray.parquet");
    std::fs::write(&stray, b"x")?;
    let report = remove_orphans(&env.catalog, &table_ident(), &OrphanOptions::default(), &Quiet).await?;
    assert_eq!(
        (report.files_deleted, report.kept_young),
        (0, report.kept_young.max(1)),
        "{report:?}"
    );
    assert!(stray.exists());
    let no_window = OrphanOptions {
        older_than_ms: -60_000, // "older than a minute in the future": every unreferenced file
        dry_run: false,
    };
    let report = remove_orphans(&env.catalog, &table_ident(), &no_window, &Quiet).await?;
    assert!(
        report.files_deleted >= 1 && report.deleted.iter().any(|d| d.ends_with("/stray.parquet")),
        "{report:?}"
    );
    assert!(!stray.exists());
    assert_eq!(parquet_on_disk(&env), live);
    // Every metadata file left is the current one or in its log; every avro is referenced.
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..220).collect::<Vec<_>>());
    write_range(&mut sink, 220..230).await?;
    sink.commit().await?;
    assert_eq!(scan_ids(&env.table().await).await?, (0..230).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_where_removes_exactly_the_matching_rows() -> TestResult {
    let env = Env::new().await;
    let mut sink = ten_commits(&env).await;
    let cond = |s: &str| Condition::Sql(s.to_string());
    for bad in ["nope = 1", "id", "id IN (SELECT 1)"] {
        assert!(
            delete_rows(&env.catalog, &table_ident(), &cond(bad), false, &Quiet)
                .await
                .is_err(),
            "{bad}"
        );
    }
    let report = delete_rows(&env.catalog, &table_ident(), &cond("bucket = 2"), false, &Quiet).await?;
    assert_eq!(
        (report.files_dropped, report.files_rewritten, report.rows_deleted),
        (10, 0, 50),
        "{report:?}"
    );
    let report = delete_rows(
        &env.catalog,
        &table_ident(),
        &cond("id % 7 = 0 OR name = 'row-1'"),
        false,
        &Quiet,
    )
    .await?;
    assert!(report.files_rewritten > 0 && report.commits == 1, "{report:?}");
    let want: Vec<u64> = (0..200).filter(|i| i % 4 != 2 && i % 7 != 0 && *i != 1).collect();
    assert_eq!(scan_ids(&env.table().await).await?, want);
    // The sink goes on on top of the delete.
    write_range(&mut sink, 200..210).await?;
    sink.commit().await?;
    let mut want = want;
    want.extend(200..210);
    assert_eq!(scan_ids(&env.table().await).await?, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_bins_per_partition_of_a_sorted_table_keep_rows_and_order() -> TestResult {
    let env = Env::new().await;
    let mut cfg = crate::common::sink_config(&["bucket"]);
    cfg.sort_by = vec!["id DESC".to_string()];
    let mut sink =
        floe::sink::iceberg::IcebergSink::open(env.catalog.clone(), &cfg, "pipe", &crate::common::output_schema())
            .await?;
    for k in 0..12u64 {
        write_range(&mut sink, k * 20..(k + 1) * 20).await?;
        sink.commit().await?;
    }
    let before = referenced_data_files(&env.table().await).await?;
    let size = std::fs::metadata(before.iter().next().expect("a file").trim_start_matches("file://"))?.len();
    // Bins of about three files: several bins per partition, in one commit.
    let mut small = CompactOptions::with_target(size * 3 + size / 2);
    small.small_file_bytes = size * 2;
    let report = compact(&env.catalog, &table_ident(), &small, &Quiet).await?;
    assert_eq!(report.commits, 1, "{report:?}");
    assert!(report.files_written > 4, "more than one bin per partition: {report:?}");
    let table = env.table().await;
    assert_eq!(
        scan_ids(&table).await?,
        (0..240).collect::<Vec<_>>(),
        "no file overwrote another"
    );
    for f in referenced_data_files(&table).await? {
        if !f.contains("floe-compact-") {
            continue;
        }
        let ids = ids_in_file(&f)?;
        assert!(
            ids.windows(2).all(|w| w[0] >= w[1]),
            "{f} is sorted by id DESC: {ids:?}"
        );
    }
    Ok(())
}

/// Data manifests of the current snapshot.
async fn data_manifests(env: &Env) -> usize {
    let table = env.table().await;
    let metadata = table.metadata();
    let snapshot = metadata.current_snapshot().expect("a snapshot");
    floe_catalog::rewrite::read_manifest_list(&env.catalog, metadata, snapshot.manifest_list())
        .await
        .expect("manifest list")
        .entries()
        .iter()
        .filter(|m| m.content == iceberg::spec::ManifestContentType::Data)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_rewrites_between_sink_commits_keep_every_file_and_row() -> TestResult {
    let env = Env::new().await;
    let mut sink = ten_commits(&env).await;
    assert_eq!(data_manifests(&env).await, 10, "one manifest per commit");
    let files = referenced_data_files(&env.table().await).await?;

    let options = ManifestOptions::default();
    let report = rewrite_manifests(&env.catalog, &table_ident(), &options, &Quiet).await?;
    assert_eq!(
        (
            report.manifests_before,
            report.manifests_rewritten,
            report.manifests_written
        ),
        (10, 10, 1),
        "{report:?}"
    );
    assert_eq!((report.manifests_after, report.commits), (1, 1), "{report:?}");
    let table = env.table().await;
    assert_eq!(referenced_data_files(&table).await?, files, "no data file moved");
    assert_eq!(scan_ids(&table).await?, (0..200).collect::<Vec<_>>());
    assert!(no_open_attempts(&env).await?, "the attempt is forgotten");

    // The sink goes on on top of it; the next rewrite merges its manifests with the merged one.
    for k in 10..13u64 {
        write_range(&mut sink, k * 20..(k + 1) * 20).await?;
        sink.commit().await?;
    }
    assert_eq!(data_manifests(&env).await, 4);
    let again = rewrite_manifests(&env.catalog, &table_ident(), &options, &Quiet).await?;
    assert_eq!((again.manifests_before, again.manifests_after), (4, 1), "{again:?}");
    assert_eq!(scan_ids(&env.table().await).await?, (0..260).collect::<Vec<_>>());
    assert_eq!(env.position().await, 260);

    // Below min_input_manifests: nothing to do, said so.
    let high = ManifestOptions {
        min_input_manifests: 5,
        ..ManifestOptions::default()
    };
    write_range(&mut sink, 260..280).await?;
    sink.commit().await?;
    let skipped = rewrite_manifests(&env.catalog, &table_ident(), &high, &Quiet).await?;
    assert_eq!(skipped.commits, 0, "{skipped:?}");
    assert!(skipped.skipped.is_some(), "{skipped:?}");
    assert_eq!(data_manifests(&env).await, 2);
    Ok(())
}

/// Whether every row group of the Parquet file at `location` has a bloom filter on `column`.
fn has_bloom(location: &str, column: &str) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let file = std::fs::File::open(location.trim_start_matches("file://"))?;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file)?;
    let meta = parquet::file::reader::FileReader::metadata(&reader);
    let leaf = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == column)
        .ok_or("no such column")?;
    Ok(meta
        .row_groups()
        .iter()
        .all(|rg| rg.column(leaf).bloom_filter_offset().is_some()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_files_keep_the_bloom_filters_the_sink_writes() -> TestResult {
    let env = Env::new().await;
    // The table is made by a sink without bloom filters; the sink opened later with
    // `bloom_filter_columns = ["id"]` records them in the table's properties.
    let mut sink = env.open_sink(&["bucket"]).await;
    write_range(&mut sink, 0..20).await?;
    sink.commit().await?;
    drop(sink);
    let mut cfg = crate::common::sink_config(&["bucket"]);
    cfg.bloom_filter_columns = vec!["id".to_string()];
    let mut sink =
        floe::sink::iceberg::IcebergSink::open(env.catalog.clone(), &cfg, "pipe", &crate::common::output_schema())
            .await?;
    let props = env.table().await.metadata().properties().clone();
    assert_eq!(
        props
            .get("write.parquet.bloom-filter-enabled.column.id")
            .map(String::as_str),
        Some("true")
    );
    for k in 1..8u64 {
        write_range(&mut sink, k * 20..(k + 1) * 20).await?;
        sink.commit().await?;
    }
    let report = compact(&env.catalog, &table_ident(), &options(), &Quiet).await?;
    assert_eq!(report.files_after, 4, "{report:?}");
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..160).collect::<Vec<_>>());
    for f in referenced_data_files(&table).await? {
        assert!(f.contains("floe-compact-"), "{f}");
        assert!(has_bloom(&f, "id")?, "{f} has a bloom filter on id");
        assert!(!has_bloom(&f, "bucket")?, "{f} has none on bucket");
    }
    Ok(())
}

/// The `id` column of the Parquet file at `location`, in file order.
fn ids_in_file(location: &str) -> Result<Vec<i64>, Box<dyn std::error::Error + Send + Sync>> {
    let file = std::fs::File::open(location.trim_start_matches("file://"))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = batch
            .column_by_name("id")
            .ok_or("no id column")?
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .ok_or("id is not int64")?;
        ids.extend(col.values().iter().copied());
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_files_keep_the_rows_in_commit_order() -> TestResult {
    let env = Env::new().await;
    // 30 commits of increasing ids: each bin has more files than are read ahead at once.
    let mut sink = env.open_sink(&["bucket"]).await;
    for k in 0..30u64 {
        write_range(&mut sink, k * 20..(k + 1) * 20).await?;
        sink.commit().await?;
    }
    let report = compact(&env.catalog, &table_ident(), &options(), &Quiet).await?;
    assert_eq!((report.files_before, report.files_after), (120, 4), "{report:?}");
    let table = env.table().await;
    let mut all = Vec::new();
    for f in referenced_data_files(&table).await? {
        let ids = ids_in_file(&f)?;
        assert_eq!(ids.len(), 150, "{f}");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{f} is not in commit order: {ids:?}"
        );
        all.extend(ids);
    }
    all.sort_unstable();
    assert_eq!(all, (0..600).collect::<Vec<i64>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_file_size_out_of_bounds_is_refused_before_anything_is_written() -> TestResult {
    use floe::maintenance::compact::{TARGET_FILE_SIZE_PROPERTY, check_target_file_bytes, table_target_file_bytes};
    use iceberg::transaction::{ApplyTransactionAction, Transaction};
    let env = Env::new().await;
    let _sink = ten_commits(&env).await;
    let files = parquet_on_disk(&env);
    // Another engine sets Iceberg's target property to a size that would split every file.
    for hostile in ["1", "0", "-5", "many", "99999999999999999999"] {
        // (Through floe's copy of the table: iceberg refuses to commit on the one before.)
        let (table, _) = floe::sink::iceberg::commit_base(&env.table().await, None)?;
        let tx = Transaction::new(&table);
        let tx = tx
            .update_table_properties()
            .set(TARGET_FILE_SIZE_PROPERTY.to_string(), hostile.to_string())
            .set("floe.maintenance.enabled".to_string(), "true".to_string())
            .apply(tx)?;
        tx.commit(&env.catalog).await?;
        let props = env.table().await.metadata().properties().clone();
        let err = table_target_file_bytes(&props).expect_err(hostile);
        assert!(err.contains(TARGET_FILE_SIZE_PROPERTY), "{hostile}: {err}");
        // The background runner's view of the table: its policy is refused with that error.
        let found = floe::maintenance::policy::table_policies(&env.catalog, &Default::default()).await?;
        let [policy] = found.as_slice() else {
            panic!("{hostile}: one table opted in, found {found:?}");
        };
        assert_eq!(policy.policy.as_ref().map(|_| ()).expect_err(hostile), &err);
    }
    // The bounds a target given at the command line is held to.
    for bytes in [0, 1, 1024 * 1024 - 1, 16 * 1024 * 1024 * 1024 + 1] {
        assert!(check_target_file_bytes(bytes).is_err(), "{bytes}");
    }
    assert!(check_target_file_bytes(128 * 1024 * 1024).is_ok());
    // And compaction itself refuses a target no writer can roll at, as the caller's error.
    let err = compact(&env.catalog, &table_ident(), &CompactOptions::with_target(0), &Quiet)
        .await
        .expect_err("refused");
    assert!(matches!(err, floe::error::Error::BadRequest { .. }), "{err}");
    assert_eq!(parquet_on_disk(&env), files, "nothing was written");
    assert_eq!(referenced_data_files(&env.table().await).await?.len(), 40);
    Ok(())
}
