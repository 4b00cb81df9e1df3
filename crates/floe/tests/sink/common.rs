//! Shared fixtures: a catalog whose `FileIO` injects faults, the sink's configuration, the
//! pipeline output's rows (stream offset = row id), and checks on the table's contents and files.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use floe::config::{Rolling, SinkConfig};
use floe::sink::Sink;
use floe::sink::iceberg::IcebergSink;
use floe_catalog::FloeCatalog;
use futures::TryStreamExt;
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};
use tempfile::TempDir;

use crate::faulty_storage::{Faults, faulty_file_io};

/// What every test returns.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The pipeline name every sink here uses.
pub const PIPELINE: &str = "pipe";
/// The sink name.
pub const SINK: &str = "out";
/// The sink's table.
pub const TABLE: &str = "ns.events";

/// A catalog (with a fault-injecting `FileIO`) in a temporary directory.
pub struct Env {
    /// Keeps the directory alive.
    pub dir: TempDir,
    /// The SQLite file.
    pub db: PathBuf,
    /// `file:///…/warehouse`.
    pub warehouse: String,
    /// Controls the faults of `catalog`'s storage.
    pub faults: Arc<Faults>,
    /// The catalog, as the server would open it (but with the faulty `FileIO`).
    pub catalog: FloeCatalog,
}

impl Env {
    /// A fresh catalog named `floe`.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("catalog.db");
        let warehouse = format!("file://{}", dir.path().join("warehouse").display());
        let faults = Arc::new(Faults::default());
        let catalog = FloeCatalog::open_with_file_io(&db, "floe", &warehouse, faulty_file_io(faults.clone()))
            .await
            .expect("open catalog");
        Self {
            dir,
            db,
            warehouse,
            faults,
            catalog,
        }
    }

    /// A second, independent catalog instance (its own pool and plain local `FileIO`) on the same
    /// file: another floe process.
    pub async fn other_instance(&self) -> FloeCatalog {
        FloeCatalog::open(&self.db, "floe", &self.warehouse)
            .await
            .expect("open catalog")
    }

    /// Opens the sink, as the pipeline runner does (again after every failure).
    pub async fn open_sink(&self, partition_by: &[&str]) -> IcebergSink {
        open_sink(&self.catalog, partition_by).await
    }

    /// The table as the catalog has it now.
    pub async fn table(&self) -> Table {
        self.catalog.load_table(&table_ident()).await.expect("load table")
    }

    /// The committed position of the sink (0 before the first commit).
    pub async fn position(&self) -> u64 {
        self.catalog
            .sink_position(PIPELINE, SINK)
            .await
            .expect("position")
            .map(|p| p.position)
            .unwrap_or(0)
    }

    /// The table's directory.
    pub fn table_dir(&self) -> PathBuf {
        self.dir.path().join("warehouse").join("ns").join("events")
    }
}

/// Opens the sink on `catalog`.
pub async fn open_sink(catalog: &FloeCatalog, partition_by: &[&str]) -> IcebergSink {
    IcebergSink::open(catalog.clone(), &sink_config(partition_by), PIPELINE, &output_schema())
        .await
        .expect("open sink")
}

/// `ns.events`.
pub fn table_ident() -> TableIdent {
    TableIdent::from_strs(TABLE.split('.')).expect("ident")
}

/// An iceberg sink on [`TABLE`]; rolling never triggers by itself (tests commit explicitly).
pub fn sink_config(partition_by: &[&str]) -> SinkConfig {
    SinkConfig {
        name: SINK.to_string(),
        table: Some(TABLE.to_string()),
        partition_by: partition_by.iter().map(|s| s.to_string()).collect(),
        rolling: Rolling {
            interval_seconds: 3600,
            size_mb: 1024,
            inactivity_seconds: None,
            ..Rolling::default()
        },
        bloom_filter_columns: vec![],
        ..SinkConfig::default()
    }
}

/// The pipeline's output: `id bigint not null, name string, bucket int not null`.
pub fn output_schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("bucket", DataType::Int32, false),
    ])
}

/// Output rows for stream offsets `ids` (one row per offset): `name = "row-<id>"`, `bucket = id % 4`.
pub fn rows(ids: Range<u64>) -> RecordBatch {
    let id: Vec<i64> = ids.map(|i| i as i64).collect();
    RecordBatch::try_new(
        Arc::new(output_schema()),
        vec![
            Arc::new(Int64Array::from(id.clone())),
            Arc::new(StringArray::from(
                id.iter().map(|i| format!("row-{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(id.iter().map(|i| (i % 4) as i32).collect::<Vec<_>>())),
        ],
    )
    .expect("batch")
}

/// Hands the rows of offsets `range` to the sink in two batches, as two micro-batches would.
pub async fn write_range(sink: &mut IcebergSink, range: Range<u64>) -> floe::error::Result<()> {
    let mid = range.start + (range.end - range.start) / 2;
    sink.write(&rows(range.start..mid), mid).await?;
    sink.write(&rows(mid..range.end), range.end).await
}

/// Every `id` the table's current snapshot returns (sorted, duplicates kept).
pub async fn scan_ids(table: &Table) -> iceberg::Result<Vec<u64>> {
    let batches: Vec<RecordBatch> = table.scan().build()?.to_arrow().await?.try_collect().await?;
    let mut ids = Vec::new();
    for b in &batches {
        let col = b.column_by_name("id").expect("id column");
        let col = col.as_any().downcast_ref::<Int64Array>().expect("long ids");
        ids.extend(col.iter().map(|v| v.expect("required") as u64));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The data files the table's current snapshot references (paths as in the manifests).
pub async fn referenced_data_files(table: &Table) -> iceberg::Result<BTreeSet<String>> {
    let tasks: Vec<_> = table.scan().build()?.plan_files().await?.try_collect().await?;
    Ok(tasks.into_iter().map(|t| t.data_file_path).collect())
}

/// Every file (recursively) under `dir`, as `file://` URIs.
pub fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_dir() {
                dirs.push(e.path());
            } else {
                out.insert(format!("file://{}", e.path().display()));
            }
        }
    }
    out
}

/// The UUIDs in a file name (attempt ids: `floe-…-<uuid>-00000.parquet`, `<uuid>-m0.avro`,
/// `snap-…-<uuid>.avro`, `<version>-<uuid>.metadata.json`).
pub fn uuids_in(path: &str) -> Vec<uuid::Uuid> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let bytes = name.as_bytes();
    (0..bytes.len().saturating_sub(35))
        .filter_map(|i| name.get(i..i + 36).and_then(|s| uuid::Uuid::parse_str(s).ok()))
        .collect()
}
