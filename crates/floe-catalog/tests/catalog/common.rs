//! Shared fixtures: a catalog in a temporary directory, a small schema, real Parquet data files
//! written with iceberg's writers, fast appends, scans, and raw reads of the SQLite rows.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use floe_catalog::{Backend, Store};
use floe_catalog::{FloeCatalog, position_summary};
use futures::TryStreamExt;
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::spec::{
    DataFile, DataFileFormat, NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use parquet::file::properties::WriterProperties;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use tempfile::TempDir;

/// What every test returns.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The catalog name most tests use.
pub const CATALOG: &str = "floe";

/// Environment variable naming a PostgreSQL server (`postgres://user@127.0.0.1:port/db`) to run
/// these tests against instead of SQLite; `scripts/test.sh` starts one and sets it. Each test then
/// gets a database of its own on that server.
pub const POSTGRES_ENV: &str = "FLOE_TEST_POSTGRES";

/// A catalog database and warehouse in a temporary directory (or a fresh PostgreSQL database).
pub struct Env {
    /// Keeps the directory alive.
    pub _dir: TempDir,
    /// The catalog database's URI.
    pub uri: String,
    /// Which backend the tests run on.
    pub backend: Backend,
    /// `file:///…/warehouse`.
    pub warehouse: String,
    /// A catalog named [`CATALOG`].
    pub catalog: FloeCatalog,
}

impl Env {
    /// A fresh catalog.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = match std::env::var(POSTGRES_ENV) {
            Ok(server) if !server.is_empty() => fresh_postgres_database(&server).await,
            _ => Store::sqlite_uri(&dir.path().join("catalog").join("catalog.db")),
        };
        let warehouse = format!("file://{}", dir.path().join("warehouse").display());
        let catalog = FloeCatalog::connect(&uri, CATALOG, &warehouse)
            .await
            .expect("open catalog");
        Self {
            _dir: dir,
            backend: catalog.store().backend(),
            uri,
            warehouse,
            catalog,
        }
    }

    /// Another catalog instance (its own connection pool) on the same database.
    pub async fn open(&self, name: &str) -> FloeCatalog {
        FloeCatalog::connect(&self.uri, name, &self.warehouse)
            .await
            .expect("open catalog")
    }

    /// A plain sqlx pool on the catalog database, to check the JDBC-layout rows directly.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.uri)
            .await
            .expect("raw pool")
    }
}

/// Creates a database of its own for one test on the PostgreSQL server at `server` and answers
/// its URI.
async fn fresh_postgres_database(server: &str) -> String {
    sqlx::any::install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(server)
        .await
        .expect("connect to the test PostgreSQL server");
    let name = format!("floe_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let (base, _) = server.rsplit_once('/').expect("a postgres URI names a database");
    format!("{base}/{name}")
}

/// One `iceberg_tables` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    pub catalog_name: String,
    pub table_namespace: String,
    pub table_name: String,
    pub metadata_location: Option<String>,
    pub previous_metadata_location: Option<String>,
    pub iceberg_type: Option<String>,
}

/// Every `iceberg_tables` row, ordered by (catalog, namespace, name).
pub async fn table_rows(pool: &AnyPool) -> Vec<TableRow> {
    sqlx::query(
        "SELECT catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location,
                iceberg_type
         FROM iceberg_tables ORDER BY catalog_name, table_namespace, table_name",
    )
    .fetch_all(pool)
    .await
    .expect("read iceberg_tables")
    .into_iter()
    .map(|r| TableRow {
        catalog_name: r.get(0),
        table_namespace: r.get(1),
        table_name: r.get(2),
        metadata_location: r.get(3),
        previous_metadata_location: r.get(4),
        iceberg_type: r.get(5),
    })
    .collect()
}

/// The `iceberg_tables` row of one table.
pub async fn table_row(pool: &AnyPool, catalog: &str, namespace: &str, name: &str) -> Option<TableRow> {
    table_rows(pool)
        .await
        .into_iter()
        .find(|r| r.catalog_name == catalog && r.table_namespace == namespace && r.table_name == name)
}

/// The `iceberg_namespace_properties` of one namespace, marker included.
pub async fn namespace_rows(pool: &AnyPool, catalog: &str, namespace: &str) -> HashMap<String, Option<String>> {
    sqlx::query(
        "SELECT property_key, property_value FROM iceberg_namespace_properties
         WHERE catalog_name = $1 AND namespace = $2",
    )
    .bind(catalog)
    .bind(namespace)
    .fetch_all(pool)
    .await
    .expect("read iceberg_namespace_properties")
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Snapshot properties moving `(pipeline, sink)` from `from` to `to`, under a fresh attempt id.
pub fn moves(pipeline: &str, sink: &str, from: u64, to: u64) -> HashMap<String, String> {
    // Without an attempt id: the attempt registry is exercised in attempts.rs.
    let mut props = position_summary(pipeline, sink, from, to, uuid::Uuid::nil());
    props.remove(floe_catalog::PROP_ATTEMPT);
    props
}

/// `a.b.c` → the namespace ident.
pub fn ns(dotted: &str) -> NamespaceIdent {
    NamespaceIdent::from_strs(dotted.split('.')).expect("namespace")
}

/// `ns.table` → the table ident (last part is the table).
pub fn ident(dotted: &str) -> TableIdent {
    let (namespace, name) = dotted.rsplit_once('.').expect("ns.table");
    TableIdent::new(ns(namespace), name.to_string())
}

/// `id long required, name string, bucket int required`.
pub fn schema() -> Schema {
    Schema::builder()
        .with_schema_id(0)
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::required(3, "bucket", Type::Primitive(PrimitiveType::Int)).into(),
        ])
        .build()
        .expect("schema")
}

/// Table properties that keep iceberg's commit retries quick in tests (the library's own
/// back-off; the tests themselves never sleep).
pub fn fast_retry_properties() -> HashMap<String, String> {
    HashMap::from([
        ("commit.retry.min-wait-ms".to_string(), "1".to_string()),
        ("commit.retry.max-wait-ms".to_string(), "20".to_string()),
        ("commit.retry.num-retries".to_string(), "10".to_string()),
    ])
}

/// A creation for [`schema`], unpartitioned or identity-partitioned by `bucket`.
pub fn creation(name: &str, partitioned: bool) -> TableCreation {
    let spec = if partitioned {
        UnboundPartitionSpec::builder()
            .with_spec_id(0)
            .add_partition_field(3, "bucket", Transform::Identity)
            .expect("partition field")
            .build()
    } else {
        UnboundPartitionSpec::builder().with_spec_id(0).build()
    };
    TableCreation::builder()
        .name(name.to_string())
        .schema(schema())
        .partition_spec(spec)
        .properties(fast_retry_properties())
        .build()
}

/// Creates the namespace when missing, then the table.
pub async fn create_table(catalog: &FloeCatalog, dotted: &str, partitioned: bool) -> Table {
    let ident = ident(dotted);
    if !catalog
        .namespace_exists(ident.namespace())
        .await
        .expect("namespace_exists")
    {
        catalog
            .create_namespace(ident.namespace(), HashMap::new())
            .await
            .expect("create namespace");
    }
    catalog
        .create_table(ident.namespace(), creation(ident.name(), partitioned))
        .await
        .expect("create table")
}

/// Rows `ids` in the table's Arrow schema: `name = "row-<id>"`, `bucket = id % 4`.
pub fn batch(table: &Table, ids: Range<i64>) -> RecordBatch {
    let arrow_schema = Arc::new(schema_to_arrow_schema(table.metadata().current_schema()).expect("arrow schema"));
    let id: Vec<i64> = ids.collect();
    let name: Vec<String> = id.iter().map(|i| format!("row-{i}")).collect();
    let bucket: Vec<i32> = id.iter().map(|i| (i % 4) as i32).collect();
    RecordBatch::try_new(
        arrow_schema,
        vec![
            Arc::new(Int64Array::from(id)),
            Arc::new(StringArray::from(name)),
            Arc::new(Int32Array::from(bucket)),
        ],
    )
    .expect("batch")
}

/// Writes `ids` as Parquet data files of `table` (one per partition) with iceberg's writers,
/// through the table's own `FileIO`.
pub async fn write_files(table: &Table, ids: Range<i64>) -> iceberg::Result<Vec<DataFile>> {
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();
    let rolling = RollingFileWriterBuilder::new(
        ParquetWriterBuilder::new(WriterProperties::builder().build(), schema.clone()),
        256 * 1024 * 1024,
        table.file_io().clone(),
        DefaultLocationGenerator::new(metadata)?,
        DefaultFileNameGenerator::new(format!("test-{}", uuid::Uuid::now_v7()), None, DataFileFormat::Parquet),
    );
    let builder = DataFileWriterBuilder::new(rolling);
    let rows = batch(table, ids);
    let mut files = Vec::new();
    if spec.is_unpartitioned() {
        let mut writer = builder.build(None).await?;
        writer.write(rows).await?;
        files.extend(writer.close().await?);
    } else {
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)?;
        for (key, part) in splitter.split(&rows)? {
            let mut writer = builder.build(Some(key)).await?;
            writer.write(part).await?;
            files.extend(writer.close().await?);
        }
    }
    Ok(files)
}

/// One fast append of `files`, with `properties` in the snapshot summary.
pub async fn append(
    catalog: &dyn Catalog,
    table: &Table,
    files: Vec<DataFile>,
    properties: HashMap<String, String>,
) -> iceberg::Result<Table> {
    let tx = Transaction::new(table);
    let tx = tx
        .fast_append()
        .add_data_files(files)
        .set_snapshot_properties(properties)
        .apply(tx)?;
    tx.commit(catalog).await
}

/// Writes `ids` and appends them with `properties`.
pub async fn write_and_append(
    catalog: &dyn Catalog,
    table: &Table,
    ids: Range<i64>,
    properties: HashMap<String, String>,
) -> iceberg::Result<Table> {
    let files = write_files(table, ids).await?;
    append(catalog, table, files, properties).await
}

/// Every `id` a full scan of the table's current snapshot returns, sorted.
pub async fn scan_ids(table: &Table) -> iceberg::Result<Vec<i64>> {
    let batches: Vec<RecordBatch> = table.scan().build()?.to_arrow().await?.try_collect().await?;
    let mut ids = Vec::new();
    for b in &batches {
        let col = b.column_by_name("id").expect("id column");
        let col = col.as_any().downcast_ref::<Int64Array>().expect("long ids");
        ids.extend(col.iter().map(|v| v.expect("id is required")));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// A `file://` URI (or plain path) as a local path.
pub fn local_path(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri))
}

/// Names of the files in `<table location>/<sub>` whose name ends with `suffix`.
pub fn files_in(table: &Table, sub: &str, suffix: &str) -> BTreeSet<String> {
    list_dir(&local_path(table.metadata().location()).join(sub), suffix)
}

/// Names of the files in `dir` whose name ends with `suffix` (empty when `dir` is missing).
pub fn list_dir(dir: &Path, suffix: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

/// The table's metadata pointer, as the catalog has it now.
pub fn pointer(table: &Table) -> String {
    table.metadata_location().expect("metadata location").to_string()
}
