//! The files sink (`floe::sink::files::FilesSink`) across crashes: a commit that landed in the
//! catalog but was not published is published exactly once by the next open; staged files of
//! attempts that never landed (registered or not) are removed; a commit refused because another
//! instance committed the range leaves nothing visible. Every test reads the final files back
//! and checks that each row is there exactly once and that nothing outside `_floe/` has a
//! non-final name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use floe::config::{FileFormat, FileNaming, Rolling, SinkConfig, SinkType};
use floe::sink::Sink;
use floe::sink::files::FilesSink;
use floe_catalog::{FloeCatalog, LocalStorage, Storage, Warehouse};
use tempfile::TempDir;

use crate::common::{PIPELINE, SINK, TestResult, files_under};

/// 2026-01-31T23:59:00Z: rows `i` are at this time plus `i` seconds, so they cross midnight.
const T0_MICROS: i64 = 1_769_903_940_000_000;

struct Env {
    _dir: TempDir,
    /// The sink's folder.
    out: PathBuf,
    catalog: FloeCatalog,
}

impl Env {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let warehouse = format!("file://{}", dir.path().join("warehouse").display());
        let catalog = FloeCatalog::open(&dir.path().join("catalog.db"), "floe", &warehouse)
            .await
            .expect("catalog");
        Env {
            out: dir.path().join("out"),
            _dir: dir,
            catalog,
        }
    }

    fn uri(&self) -> String {
        format!("file://{}", self.out.display())
    }

    async fn open(&self, cfg: &SinkConfig) -> FilesSink {
        FilesSink::open(self.catalog.clone(), cfg, PIPELINE, &schema())
            .await
            .expect("open files sink")
    }

    async fn position(&self) -> u64 {
        self.catalog
            .sink_position(PIPELINE, SINK)
            .await
            .expect("position")
            .map_or(0, |p| p.position)
    }

    fn staging(&self) -> PathBuf {
        self.out.join("_floe").join("staging").join(PIPELINE).join(SINK)
    }

    /// The published files: every file outside `_floe/`, relative to the sink's folder.
    fn published(&self) -> BTreeSet<String> {
        let root = format!("file://{}/", self.out.display());
        files_under(&self.out)
            .into_iter()
            .map(|f| f.strip_prefix(&root).expect("inside").to_string())
            .filter(|f| !f.starts_with("_floe/"))
            .collect()
    }

    /// The ids in every published file (sorted, duplicates kept).
    fn published_ids(&self) -> Vec<i64> {
        let mut ids = Vec::new();
        for f in self.published() {
            ids.extend(read_ids(&self.out.join(&f)));
        }
        ids.sort_unstable();
        ids
    }
}

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ])
}

/// Rows for stream offsets `ids`: `ts` = T0 + id seconds.
fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
    let id: Vec<i64> = ids.collect();
    RecordBatch::try_new(
        Arc::new(schema()),
        vec![
            Arc::new(Int64Array::from(id.clone())),
            Arc::new(StringArray::from(
                id.iter().map(|i| format!("row-{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(id.iter().map(|i| T0_MICROS + i * 1_000_000).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
        ],
    )
    .expect("batch")
}

fn files_sink(env: &Env) -> SinkConfig {
    SinkConfig {
        name: SINK.to_string(),
        ty: SinkType::Files,
        path: Some(env.uri()),
        time_column: Some("ts".into()),
        rolling: Rolling {
            interval_seconds: 3600,
            size_mb: 1024,
            inactivity_seconds: None,
            ..Rolling::default()
        },
        ..SinkConfig::default()
    }
}

fn read_ids(path: &Path) -> Vec<i64> {
    let bytes = std::fs::read(path).expect("read");
    let name = path.to_string_lossy();
    if bytes.starts_with(b"PAR1") {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .expect("parquet")
            .build()
            .expect("reader");
        let mut ids = Vec::new();
        for b in reader {
            let b = b.expect("batch");
            let col = b.column_by_name("id").expect("id");
            ids.extend(col.as_any().downcast_ref::<Int64Array>().expect("int64").values());
        }
        return ids;
    }
    let text = if name.ends_with(".gz") {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut t).expect("gunzip");
        t
    } else {
        String::from_utf8(bytes).expect("utf-8")
    };
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON object per line");
            v["id"].as_i64().expect("id")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_publish_is_published_once_at_reopen() -> TestResult {
    let env = Env::new().await;
    let cfg = SinkConfig {
        file_naming: Some(FileNaming::Sequence),
        file_prefix: Some("ev-".into()),
        compression: Some(floe::config::Compression::Uncompressed),
        ..files_sink(&env)
    };
    let mut sink = env.open(&cfg).await;
    sink.write(&rows(0..40), 40).await?;
    sink.write(&rows(40..100), 100).await?;
    sink.stop_before_publish();
    assert!(sink.commit().await.is_err(), "the hook stops after the catalog commit");
    drop(sink); // the crash
    assert_eq!(env.position().await, 100, "the commit landed");
    assert!(
        env.published().is_empty(),
        "nothing published yet: {:?}",
        env.published()
    );
    assert_eq!(files_under(&env.staging()).len(), 2, "one staged file per day");

    // Leftovers of attempts that never landed: one the catalog knows, one it does not.
    let storage = LocalStorage::new(Warehouse::new(&env.uri())?);
    let registered = uuid::Uuid::now_v7();
    let dir = format!("{}/{registered}", env.staging().display());
    env.catalog
        .begin_attempt(PIPELINE, SINK, registered, &format!("file://{dir}"))
        .await?;
    storage
        .put(
            &format!("file://{dir}/00000.json"),
            Bytes::from_static(b"{\"id\": -1}\n"),
        )
        .await?;
    let stray = format!("file://{}/{}/00000.json", env.staging().display(), uuid::Uuid::now_v7());
    storage.put(&stray, Bytes::from_static(b"{\"id\": -2}\n")).await?;

    let sink = env.open(&cfg).await;
    assert_eq!(sink.committed(), 100);
    assert_eq!(
        env.published(),
        BTreeSet::from([
            "year=2026/month=01/day=31/ev-00000000000000000000.json".to_string(),
            "year=2026/month=02/day=01/ev-00000000000000000001.json".to_string(),
        ])
    );
    assert_eq!(env.published_ids(), (0..100).collect::<Vec<_>>());
    assert!(
        files_under(&env.staging()).is_empty(),
        "staged files left: {:?}",
        files_under(&env.staging())
    );
    assert!(env.catalog.pending_attempts(PIPELINE, SINK).await?.is_empty());
    assert!(env.catalog.pending_file_commits(PIPELINE, SINK).await?.is_empty());

    // A second reopen publishes nothing twice; the next commit continues the sequence.
    drop(sink);
    let mut sink = env.open(&cfg).await;
    sink.write(&rows(100..130), 130).await?;
    let stats = sink.commit().await?;
    assert_eq!((stats.rows, stats.files, stats.from, stats.to), (30, 1, 100, 130));
    assert!(
        env.published()
            .contains("year=2026/month=02/day=01/ev-00000000000000000002.json"),
        "{:?}",
        env.published()
    );
    assert_eq!(env.published_ids(), (0..130).collect::<Vec<_>>());
    assert_eq!(env.position().await, 130);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_another_instance_committed_is_refused_and_its_staged_files_go() -> TestResult {
    let env = Env::new().await;
    let cfg = files_sink(&env);
    let mut a = env.open(&cfg).await;
    a.write(&rows(0..10), 10).await?;
    // Another instance of the same (pipeline, sink) commits the same range first.
    let mut b = env.open(&cfg).await;
    b.write(&rows(0..10), 10).await?;
    b.commit().await?;
    let err = a.commit().await.expect_err("the position moved");
    assert!(err.to_string().contains("another writer committed this range"), "{err}");
    assert!(
        a.write(&rows(10..11), 11).await.is_err(),
        "a failed sink must be reopened"
    );
    assert_eq!(env.published_ids(), (0..10).collect::<Vec<_>>());
    assert!(
        !files_under(&env.staging()).is_empty(),
        "a's staged files wait for the next open"
    );
    let reopened = env.open(&cfg).await;
    assert_eq!(reopened.committed(), 10);
    assert!(files_under(&env.staging()).is_empty());
    assert!(
        env.published().iter().all(|f| f.ends_with(".json.gz")),
        "{:?}",
        env.published()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_follow_the_pattern_naming_and_target_size() -> TestResult {
    let env = Env::new().await;
    let cfg = SinkConfig {
        format: Some(FileFormat::Parquet),
        partitioning: Some("dt=%Y-%m-%d/hour=%H".into()),
        file_naming: Some(FileNaming::Ulid),
        file_prefix: Some("p-".into()),
        file_suffix: Some(".pq".into()),
        target_file_size_mb: 1,
        sort_by: vec!["id DESC".into()],
        ..files_sink(&env)
    };
    let mut sink = env.open(&cfg).await;
    // Enough rows in one hour for a few 1 MiB files (random names do not compress).
    let n = 120_000;
    let batch = {
        let ids: Vec<i64> = (0..n).collect();
        RecordBatch::try_new(
            Arc::new(schema()),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from(
                    ids.iter().map(|_| uuid::Uuid::new_v4().to_string()).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampMicrosecondArray::from(vec![T0_MICROS; n as usize]).with_timezone("UTC")),
            ],
        )?
    };
    sink.write(&batch, n as u64).await?;
    let stats = sink.commit().await?;
    let published = env.published();
    assert!(
        stats.files > 1 && stats.files == published.len(),
        "{stats:?} {published:?}"
    );
    for f in &published {
        let (folder, name) = f.rsplit_once('/').expect("a folder");
        assert_eq!(folder, "dt=2026-01-31/hour=23");
        let middle = name.strip_prefix("p-").and_then(|n| n.strip_suffix(".pq")).expect(name);
        assert_eq!(middle.len(), 26, "a ULID: {name}");
        let ids = read_ids(&env.out.join(f));
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "sorted by id DESC within a file");
    }
    assert_eq!(env.published_ids(), (0..n).collect::<Vec<_>>());
    // Processing time, no folders: a commit of rows with a null-free time column elsewhere.
    let flat = SinkConfig {
        name: "flat".into(),
        path: Some(format!("{}/flat", env.uri())),
        partitioning: Some(String::new()),
        time_column: None,
        file_naming: Some(FileNaming::Uuid),
        ..files_sink(&env)
    };
    let mut sink = FilesSink::open(env.catalog.clone(), &flat, PIPELINE, &schema()).await?;
    sink.write(&rows(0..5), 5).await?;
    sink.write(&rows(0..0), 9).await?;
    let stats = sink.commit().await?;
    assert_eq!((stats.rows, stats.files, stats.to), (5, 1, 9));
    let names: Vec<String> = std::fs::read_dir(env.out.join("flat"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    let file = names
        .iter()
        .find(|n| n.ends_with(".json.gz"))
        .expect("a file directly in the folder");
    assert!(
        uuid::Uuid::parse_str(file.strip_suffix(".json.gz").expect("suffix")).is_ok(),
        "{file}"
    );
    // Rows that all filter away move the position with no file.
    sink.write(&rows(0..0), 12).await?;
    let stats = sink.commit().await?;
    assert_eq!((stats.files, stats.to), (0, 12));
    assert_eq!(
        env.catalog.sink_position(PIPELINE, "flat").await?.map(|p| p.position),
        Some(12)
    );
    Ok(())
}
