//! The tables SQL sees: every catalog table as `namespace.table` (iceberg-datafusion's provider:
//! projection and filter pushdown into the Iceberg scan), plus names with a `$` suffix for
//! metadata tables and time travel (docs/query.md):
//!
//! | name | rows |
//! |---|---|
//! | `ns."t$snapshots"`, `ns."t$manifests"` | iceberg-rust's inspect tables (materialized) |
//! | `ns."t$files"` | live data files of the current snapshot |
//! | `ns."t$partitions"` | per partition: rows, files, bytes of the current snapshot |
//! | `ns."t$history"` | the snapshot log: when each snapshot became current |
//! | `ns."t$snapshot_<id>"` | the table as of snapshot `<id>` |
//! | `ns."t$as_of_<time>"` | the table as of `<time>` (RFC 3339 or epoch ms): the last snapshot committed at or before it |

use std::any::Any;
use std::sync::Arc;

use arrow::array::{BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::{DataFusionError, Result as DFResult};
use floe_catalog::FloeCatalog;
use futures::TryStreamExt;
use iceberg::spec::{DataContentType, Literal};
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableIdent};
use iceberg_datafusion::IcebergStaticTableProvider;

/// Wraps iceberg-datafusion's catalog provider; every schema gains the `$` tables.
#[derive(Debug)]
pub struct FloeCatalogProvider {
    inner: Arc<dyn CatalogProvider>,
    catalog: FloeCatalog,
}

impl FloeCatalogProvider {
    /// Wraps `inner` (an `IcebergCatalogProvider` over `catalog`).
    pub fn new(inner: Arc<dyn CatalogProvider>, catalog: FloeCatalog) -> Self {
        Self { inner, catalog }
    }
}

impl CatalogProvider for FloeCatalogProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        Some(Arc::new(FloeSchemaProvider {
            inner,
            catalog: self.catalog.clone(),
            namespace: NamespaceIdent::from_strs(name.split('.')).ok()?,
        }))
    }
}

#[derive(Debug)]
struct FloeSchemaProvider {
    inner: Arc<dyn SchemaProvider>,
    catalog: FloeCatalog,
    namespace: NamespaceIdent,
}

/// What a `$` suffix asks for.
enum Special {
    Snapshots,
    Manifests,
    Files,
    Partitions,
    History,
    Snapshot(i64),
    AsOf(i64),
}

fn special(suffix: &str) -> Option<Special> {
    match suffix {
        "snapshots" => Some(Special::Snapshots),
        "manifests" => Some(Special::Manifests),
        "files" => Some(Special::Files),
        "partitions" => Some(Special::Partitions),
        "history" => Some(Special::History),
        s => {
            if let Some(id) = s.strip_prefix("snapshot_") {
                id.parse().ok().map(Special::Snapshot)
            } else {
                s.strip_prefix("as_of_").and_then(parse_as_of).map(Special::AsOf)
            }
        }
    }
}

fn plan_err(m: String) -> DataFusionError {
    DataFusionError::Plan(m)
}

/// One of iceberg's inspect tables (`snapshots()`, `manifests()`), materialized in memory:
/// iceberg-datafusion's own providers for these ignore the projection (`count(*)` fails), and
/// they are small.
macro_rules! inspected {
    ($t:expr, $ext:expr) => {{
        let batches: Vec<RecordBatch> = $t.scan().await.map_err($ext)?.try_collect().await.map_err($ext)?;
        let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&$t.schema()).map_err($ext)?);
        Arc::new(MemTable::try_new(schema, vec![batches])?)
    }};
}

#[async_trait]
impl SchemaProvider for FloeSchemaProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        let base: Vec<String> = self
            .inner
            .table_names()
            .into_iter()
            .filter(|n| !n.contains('$'))
            .collect();
        let mut names = base.clone();
        for t in base {
            for s in ["snapshots", "manifests", "files", "partitions", "history"] {
                names.push(format!("{t}${s}"));
            }
        }
        names
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let Some((base, suffix)) = name.split_once('$') else {
            return Ok(self
                .inner
                .table(name)
                .await?
                .map(|t| Arc::new(super::scan::ParallelTable::new(t)) as Arc<dyn TableProvider>));
        };
        let Some(kind) = special(suffix) else {
            return match self.inner.table(name).await {
                Ok(t) => Ok(t),
                Err(_) => Err(plan_err(format!(
                    "{name:?}: unknown table suffix ${suffix}; use $snapshots, $manifests, $files, $partitions, \
                     $history, $snapshot_<id> or $as_of_<RFC 3339 time or epoch ms>"
                ))),
            };
        };
        let ident = TableIdent::new(self.namespace.clone(), base.to_string());
        let table = match self.catalog.load_table(&ident).await {
            Ok(t) => t,
            Err(e) if e.kind() == iceberg::ErrorKind::TableNotFound => return Ok(None),
            Err(e) => return Err(DataFusionError::External(Box::new(e))),
        };
        let ext = |e: iceberg::Error| DataFusionError::External(Box::new(e));
        let provider: Arc<dyn TableProvider> = match kind {
            Special::Snapshot(id) => Arc::new(super::scan::ParallelTable::new(Arc::new(
                IcebergStaticTableProvider::try_new_from_table_snapshot(table, id)
                    .await
                    .map_err(|e| plan_err(format!("{name:?}: {e}")))?,
            ))),
            Special::AsOf(ms) => {
                let id = snapshot_as_of(&table, ms)
                    .ok_or_else(|| plan_err(format!("{name:?}: no snapshot was committed at or before {ms} ms")))?;
                Arc::new(super::scan::ParallelTable::new(Arc::new(
                    IcebergStaticTableProvider::try_new_from_table_snapshot(table, id)
                        .await
                        .map_err(ext)?,
                )))
            }
            Special::Snapshots => inspected!(table.inspect().snapshots(), ext),
            Special::Manifests => inspected!(table.inspect().manifests(), ext),
            Special::Files => mem(files_batch(&table).await.map_err(ext)?)?,
            Special::Partitions => mem(partitions_batch(&table).await.map_err(ext)?)?,
            Special::History => mem(history_batch(&table)?)?,
        };
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        match name.split_once('$') {
            Some((base, suffix)) if special(suffix).is_some() => self.inner.table_exist(base),
            _ => self.inner.table_exist(name),
        }
    }
}

fn mem(batch: RecordBatch) -> DFResult<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?))
}

/// Partition values as JSON text (`{"ns": "acme.com"}`), by partition field name.
fn partition_json(table: &Table, spec_id: i32, values: &iceberg::spec::Struct) -> String {
    let mut obj = serde_json::Map::new();
    if let Some(spec) = table.metadata().partition_spec_by_id(spec_id) {
        for (field, value) in spec.fields().iter().zip(values.iter()) {
            let v = match value {
                None => serde_json::Value::Null,
                Some(Literal::Primitive(p)) => primitive_json(p),
                Some(other) => serde_json::Value::String(format!("{other:?}")),
            };
            obj.insert(field.name.clone(), v);
        }
    }
    serde_json::Value::Object(obj).to_string()
}

fn primitive_json(p: &iceberg::spec::PrimitiveLiteral) -> serde_json::Value {
    use iceberg::spec::PrimitiveLiteral as P;
    match p {
        P::Boolean(b) => (*b).into(),
        P::Int(i) => (*i).into(),
        P::Long(i) => (*i).into(),
        P::Float(f) => f.0.into(),
        P::Double(f) => f.0.into(),
        P::String(s) => s.clone().into(),
        other => format!("{other:?}").into(),
    }
}

/// `(spec_id, data file)` of every live data file of the current snapshot.
async fn live_files(table: &Table) -> iceberg::Result<Vec<(i32, iceberg::spec::DataFile)>> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(vec![]);
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    let mut out = Vec::new();
    for m in list.entries() {
        let manifest = m.load_manifest(table.file_io()).await?;
        for e in manifest.entries() {
            if e.is_alive() {
                out.push((m.partition_spec_id, e.data_file().clone()));
            }
        }
    }
    Ok(out)
}

async fn files_batch(table: &Table) -> iceberg::Result<RecordBatch> {
    let files = live_files(table).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("content", DataType::Int32, false),
        Field::new("file_path", DataType::Utf8, false),
        Field::new("file_format", DataType::Utf8, false),
        Field::new("spec_id", DataType::Int32, false),
        Field::new("partition", DataType::Utf8, false),
        Field::new("record_count", DataType::Int64, false),
        Field::new("file_size_in_bytes", DataType::Int64, false),
    ]));
    let content = |c: DataContentType| match c {
        DataContentType::Data => 0,
        DataContentType::PositionDeletes => 1,
        DataContentType::EqualityDeletes => 2,
    };
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from_iter_values(
                files.iter().map(|(_, f)| content(f.content_type())),
            )),
            Arc::new(StringArray::from_iter_values(files.iter().map(|(_, f)| f.file_path()))),
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|(_, f)| f.file_format().to_string().to_uppercase()),
            )),
            Arc::new(Int32Array::from_iter_values(files.iter().map(|(s, _)| *s))),
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|(s, f)| partition_json(table, *s, f.partition())),
            )),
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|(_, f)| f.record_count() as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|(_, f)| f.file_size_in_bytes() as i64),
            )),
        ],
    )?;
    Ok(batch)
}

async fn partitions_batch(table: &Table) -> iceberg::Result<RecordBatch> {
    let files = live_files(table).await?;
    let mut parts: std::collections::BTreeMap<(i32, String), (i64, i64, i64)> = Default::default();
    for (spec, f) in files.iter().filter(|(_, f)| f.content_type() == DataContentType::Data) {
        let e = parts
            .entry((*spec, partition_json(table, *spec, f.partition())))
            .or_default();
        e.0 += f.record_count() as i64;
        e.1 += 1;
        e.2 += f.file_size_in_bytes() as i64;
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Utf8, false),
        Field::new("spec_id", DataType::Int32, false),
        Field::new("record_count", DataType::Int64, false),
        Field::new("file_count", DataType::Int64, false),
        Field::new("total_data_file_size_in_bytes", DataType::Int64, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(parts.keys().map(|k| k.1.clone()))),
            Arc::new(Int32Array::from_iter_values(parts.keys().map(|k| k.0))),
            Arc::new(Int64Array::from_iter_values(parts.values().map(|v| v.0))),
            Arc::new(Int64Array::from_iter_values(parts.values().map(|v| v.1))),
            Arc::new(Int64Array::from_iter_values(parts.values().map(|v| v.2))),
        ],
    )?)
}

fn history_batch(table: &Table) -> DFResult<RecordBatch> {
    let md = table.metadata();
    let mut ancestors = std::collections::HashSet::new();
    let mut cur = md.current_snapshot().cloned();
    while let Some(s) = cur {
        ancestors.insert(s.snapshot_id());
        cur = s.parent_snapshot_id().and_then(|p| md.snapshot_by_id(p).cloned());
    }
    let log = md.history();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "made_current_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            false,
        ),
        Field::new("snapshot_id", DataType::Int64, false),
        Field::new("parent_id", DataType::Int64, true),
        Field::new("is_current_ancestor", DataType::Boolean, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(
                TimestampMillisecondArray::from_iter_values(log.iter().map(|l| l.timestamp_ms)).with_timezone("+00:00"),
            ),
            Arc::new(Int64Array::from_iter_values(log.iter().map(|l| l.snapshot_id))),
            Arc::new(Int64Array::from_iter(log.iter().map(|l| {
                md.snapshot_by_id(l.snapshot_id).and_then(|s| s.parent_snapshot_id())
            }))),
            Arc::new(BooleanArray::from_iter(
                log.iter().map(|l| Some(ancestors.contains(&l.snapshot_id))),
            )),
        ],
    )?)
}

/// The snapshot current at `ms` (epoch milliseconds), from the table's snapshot log.
pub fn snapshot_as_of(table: &Table, ms: i64) -> Option<i64> {
    table
        .metadata()
        .history()
        .iter()
        .filter(|l| l.timestamp_ms <= ms)
        .max_by_key(|l| l.timestamp_ms)
        .map(|l| l.snapshot_id)
}

/// Parses an `as_of` value: RFC 3339 (`2026-11-26T04:00:00Z`) or epoch milliseconds.
pub fn parse_as_of(v: &str) -> Option<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|d| d.timestamp_millis())
}
