//! Point lookups: `GET /v1/tables/{namespace.table}/rows?col=value…` and `floe get`.
//!
//! A lookup is a conjunction of equality predicates on top-level primitive columns, each value
//! parsed by the column's Iceberg type. It is answered without DataFusion, straight from the
//! table's metadata and Parquet files, pruning at every level (docs/query.md):
//!
//! 1. **Which snapshot.** One SQLite query reads the catalog row's `metadata_location`; when it
//!    equals the cached table's, nothing is read from storage. Any commit — floe's own sinks,
//!    PyIceberg, Spark through the catalog — changes the location, so the cache is never stale.
//!    `snapshot_id` or `as_of` pick an older snapshot of the same table.
//! 2. **Which files.** The snapshot's manifest list is read once per snapshot; each manifest once
//!    ever (manifests are immutable, cached by path). A file is skipped when its partition value
//!    (the predicate value run through the partition transform) differs, or when the value lies
//!    outside the file's lower/upper bounds.
//! 3. **Which row groups and pages** ([`parquet`]): footers with their page indexes are cached by
//!    path; row groups are skipped by their min/max statistics and by bloom filters (sinks'
//!    `bloom_filter_columns`); within a row group only the pages whose min/max can hold the value
//!    are selected, and a Parquet `RowFilter` decodes the other columns only for matching rows.
//!
//! Every lookup reports what it skipped ([`LookupStats`]); the engine keeps cumulative counters
//! of what it loaded ([`CacheCounters`]) so tests can see the caches work.

pub mod parquet;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use floe_catalog::FloeCatalog;
use futures::StreamExt;
use iceberg::spec::{
    DataContentType, DataFile, Datum, Literal, ManifestContentType, PrimitiveLiteral, PrimitiveType, Type,
};
use iceberg::table::Table;
use iceberg::transform::create_transform_function;
use iceberg::{Catalog, TableIdent};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::query::tables::{parse_as_of, snapshot_as_of};

/// Rows a lookup returns when the request names no `limit`.
pub const DEFAULT_LOOKUP_LIMIT: usize = 100;
/// Files of one lookup read at the same time.
const FILE_CONCURRENCY: usize = 8;
/// Cached manifests (by path) before the cache is emptied and refilled.
const MAX_CACHED_MANIFESTS: usize = 20_000;
/// Query parameters that are not column predicates.
pub const RESERVED_PARAMS: [&str; 3] = ["limit", "snapshot_id", "as_of"];

/// One equality predicate, bound to a column of the table's schema.
#[derive(Debug, Clone)]
pub struct Predicate {
    /// Column name.
    pub column: String,
    /// Iceberg field id.
    pub field_id: i32,
    /// The value, typed by the column.
    pub value: Datum,
    /// The value as a one-element Arrow array (cast to the file's column type when read).
    pub scalar: ArrayRef,
}

/// Which snapshot a lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSelector {
    /// The table's current snapshot.
    Current,
    /// A snapshot by id.
    Id(i64),
    /// The snapshot current at this time (epoch milliseconds): the last one in the table's
    /// history committed at or before it.
    AsOf(i64),
}

/// A parsed lookup request.
#[derive(Debug, Clone)]
pub struct LookupRequest {
    /// `column = value`, all of which must hold.
    pub predicates: Vec<Predicate>,
    /// Most rows returned.
    pub limit: usize,
    /// Which snapshot.
    pub snapshot: SnapshotSelector,
}

/// What one lookup read and skipped.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LookupStats {
    /// Data files in the snapshot.
    pub files_total: u64,
    /// Files skipped by partition values.
    pub files_pruned_by_partition: u64,
    /// Files skipped by the manifests' lower/upper bounds.
    pub files_pruned_by_bounds: u64,
    /// Files opened.
    pub files_read: u64,
    /// Row groups in the files opened.
    pub row_groups_total: u64,
    /// Row groups skipped by their min/max statistics.
    pub row_groups_pruned_by_stats: u64,
    /// Row groups skipped by bloom filters.
    pub row_groups_pruned_by_bloom: u64,
    /// Row groups read.
    pub row_groups_read: u64,
    /// Rows selected by the page index in the row groups read (decoded for the predicate).
    pub rows_selected_by_page_index: u64,
    /// Rows in the row groups read.
    pub rows_in_row_groups_read: u64,
}

impl LookupStats {
    fn add(&mut self, o: &LookupStats) {
        self.files_total += o.files_total;
        self.files_pruned_by_partition += o.files_pruned_by_partition;
        self.files_pruned_by_bounds += o.files_pruned_by_bounds;
        self.files_read += o.files_read;
        self.row_groups_total += o.row_groups_total;
        self.row_groups_pruned_by_stats += o.row_groups_pruned_by_stats;
        self.row_groups_pruned_by_bloom += o.row_groups_pruned_by_bloom;
        self.row_groups_read += o.row_groups_read;
        self.rows_selected_by_page_index += o.rows_selected_by_page_index;
        self.rows_in_row_groups_read += o.rows_in_row_groups_read;
    }
}

/// The answer to a lookup.
#[derive(Debug, Clone)]
pub struct LookupResult {
    /// The snapshot read (`None`: the table has no snapshot yet).
    pub snapshot_id: Option<i64>,
    /// Matching rows, at most `limit`.
    pub batches: Vec<RecordBatch>,
    /// What was read and skipped.
    pub stats: LookupStats,
}

impl LookupResult {
    /// Number of rows returned.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Cumulative counts of what the caches had to load (storage reads), since start.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Lookups answered.
    pub lookups: AtomicU64,
    /// Table metadata files read (a commit happened since the last lookup, or first use).
    pub table_loads: AtomicU64,
    /// Manifest lists read.
    pub manifest_list_loads: AtomicU64,
    /// Manifests read.
    pub manifest_loads: AtomicU64,
    /// Parquet footers (with page index) read.
    pub footer_loads: AtomicU64,
    /// Bloom filters read.
    pub bloom_loads: AtomicU64,
}

/// One live data file of a snapshot, as the manifests describe it.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// The file's manifest entry.
    pub file: DataFile,
    /// The partition spec its partition values follow.
    pub spec_id: i32,
}

struct CachedTable {
    metadata_location: String,
    table: Table,
    files: Mutex<HashMap<i64, Arc<Vec<Arc<FileEntry>>>>>,
}

/// The lookup engine: caches of tables, manifests, Parquet footers and bloom filters, shared by
/// every request of a server (or one CLI process).
pub struct LookupEngine {
    catalog: FloeCatalog,
    tables: Mutex<HashMap<TableIdent, Arc<CachedTable>>>,
    manifests: Mutex<HashMap<String, Arc<Vec<Arc<FileEntry>>>>>,
    files: parquet::FileCache,
    /// What the caches loaded.
    pub counters: Arc<CacheCounters>,
}

impl LookupEngine {
    /// An engine over `catalog`'s tables; caches start empty.
    pub fn new(catalog: FloeCatalog) -> Self {
        let counters = Arc::new(CacheCounters::default());
        let files = parquet::FileCache::new(counters.clone(), catalog.storage().clone());
        Self {
            catalog,
            tables: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            files,
            counters,
        }
    }

    /// Drops the cached metadata of `ident` (the next lookup reloads it). Not needed for
    /// correctness — every lookup compares the catalog's metadata location — but lets a writer
    /// in this process release memory early.
    pub fn invalidate(&self, ident: &TableIdent) {
        self.tables.lock().expect("tables lock").remove(ident);
    }

    /// The table as the catalog has it now: cached unless its metadata location moved.
    pub async fn table(&self, ident: &TableIdent) -> Result<Table> {
        Ok(self.cached_table(ident).await?.table.clone())
    }

    async fn cached_table(&self, ident: &TableIdent) -> Result<Arc<CachedTable>> {
        let location = self
            .catalog
            .current_metadata_location(ident)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "table",
                name: ident.to_string(),
            })?;
        if let Some(t) = self.tables.lock().expect("tables lock").get(ident)
            && t.metadata_location == location
        {
            return Ok(t.clone());
        }
        let table = match self.catalog.load_table(ident).await {
            Ok(t) => t,
            Err(e) if e.kind() == iceberg::ErrorKind::TableNotFound => {
                return Err(Error::NotFound {
                    what: "table",
                    name: ident.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.counters.table_loads.fetch_add(1, Ordering::Relaxed);
        let cached = Arc::new(CachedTable {
            metadata_location: table.metadata_location().unwrap_or(&location).to_string(),
            table,
            files: Mutex::new(HashMap::new()),
        });
        self.tables
            .lock()
            .expect("tables lock")
            .insert(ident.clone(), cached.clone());
        Ok(cached)
    }

    /// Parses query parameters (`column=value`, `limit`, `snapshot_id`, `as_of`) against the
    /// table's current schema.
    pub async fn parse_request(
        &self,
        ident: &TableIdent,
        params: &[(String, String)],
        max_rows: usize,
    ) -> Result<LookupRequest> {
        let table = self.table(ident).await?;
        parse_request(&table, params, max_rows)
    }

    /// Runs a lookup.
    pub async fn lookup(&self, ident: &TableIdent, req: &LookupRequest) -> Result<LookupResult> {
        let cached = self.cached_table(ident).await?;
        self.lookup_in(ident, &cached, req).await
    }

    /// Parses `params` and runs the lookup with one catalog query (the HTTP path).
    pub async fn lookup_params(
        &self,
        ident: &TableIdent,
        params: &[(String, String)],
        max_rows: usize,
    ) -> Result<LookupResult> {
        let cached = self.cached_table(ident).await?;
        let req = parse_request(&cached.table, params, max_rows)?;
        self.lookup_in(ident, &cached, &req).await
    }

    async fn lookup_in(&self, ident: &TableIdent, cached: &CachedTable, req: &LookupRequest) -> Result<LookupResult> {
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let metadata = cached.table.metadata();
        let snapshot = match req.snapshot {
            SnapshotSelector::Current => metadata.current_snapshot().cloned(),
            SnapshotSelector::Id(id) => {
                Some(metadata.snapshot_by_id(id).cloned().ok_or_else(|| Error::BadRequest {
                    code: "unknown_snapshot",
                    message: format!("table {ident} has no snapshot_id {id}"),
                })?)
            }
            SnapshotSelector::AsOf(ms) => {
                let id = snapshot_as_of(&cached.table, ms).ok_or_else(|| Error::BadRequest {
                    code: "unknown_snapshot",
                    message: format!(
                        "table {ident} has no snapshot committed at or before as_of {}",
                        chrono::DateTime::from_timestamp_millis(ms)
                            .map(|d| d.to_rfc3339())
                            .unwrap_or_else(|| ms.to_string())
                    ),
                })?;
                metadata.snapshot_by_id(id).cloned()
            }
        };
        let Some(snapshot) = snapshot else {
            return Ok(LookupResult {
                snapshot_id: None,
                batches: vec![],
                stats: LookupStats::default(),
            });
        };
        let files = self.snapshot_files(cached, &snapshot).await?;
        let mut stats = LookupStats {
            files_total: files.len() as u64,
            ..Default::default()
        };
        let mut candidates = Vec::new();
        for f in files.iter() {
            match prune_file(&cached.table, f, &req.predicates)? {
                Pruned::Partition => stats.files_pruned_by_partition += 1,
                Pruned::Bounds => stats.files_pruned_by_bounds += 1,
                Pruned::No => candidates.push(f.clone()),
            }
        }
        let limit = req.limit;
        let mut reads = futures::stream::iter(candidates.into_iter().map(|f| {
            let preds = &req.predicates;
            async move { self.files.read(&f.file, preds, limit).await }
        }))
        .buffered(FILE_CONCURRENCY);
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(r) = reads.next().await {
            let (file_batches, file_stats) = r?;
            stats.add(&file_stats);
            for b in file_batches {
                if rows >= limit {
                    break;
                }
                let take = b.num_rows().min(limit - rows);
                rows += take;
                batches.push(b.slice(0, take));
            }
            if rows >= limit {
                break;
            }
        }
        Ok(LookupResult {
            snapshot_id: Some(snapshot.snapshot_id()),
            batches,
            stats,
        })
    }

    async fn snapshot_files(
        &self,
        cached: &CachedTable,
        snapshot: &iceberg::spec::SnapshotRef,
    ) -> Result<Arc<Vec<Arc<FileEntry>>>> {
        let id = snapshot.snapshot_id();
        if let Some(f) = cached.files.lock().expect("files lock").get(&id) {
            return Ok(f.clone());
        }
        let table = &cached.table;
        let list = table.manifest_list_reader(snapshot).load().await?;
        self.counters.manifest_list_loads.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        for m in list.entries() {
            if m.content == ManifestContentType::Deletes {
                if m.has_added_files() || m.has_existing_files() {
                    return Err(Error::BadRequest {
                        code: "unsupported_table",
                        message: format!(
                            "table {} has delete files (row-level deletes); lookups read append-only tables, use SQL",
                            table.identifier()
                        ),
                    });
                }
                continue;
            }
            let cached_manifest = self
                .manifests
                .lock()
                .expect("manifests lock")
                .get(&m.manifest_path)
                .cloned();
            let entries = match cached_manifest {
                Some(e) => e,
                None => {
                    let manifest = m.load_manifest(table.file_io()).await?;
                    self.counters.manifest_loads.fetch_add(1, Ordering::Relaxed);
                    let entries: Vec<Arc<FileEntry>> = manifest
                        .entries()
                        .iter()
                        .filter(|e| e.is_alive() && e.content_type() == DataContentType::Data)
                        .map(|e| {
                            Arc::new(FileEntry {
                                file: e.data_file().clone(),
                                spec_id: m.partition_spec_id,
                            })
                        })
                        .collect();
                    let entries = Arc::new(entries);
                    let mut cache = self.manifests.lock().expect("manifests lock");
                    if cache.len() >= MAX_CACHED_MANIFESTS {
                        cache.clear();
                    }
                    cache.insert(m.manifest_path.clone(), entries.clone());
                    entries
                }
            };
            out.extend(entries.iter().cloned());
        }
        let out = Arc::new(out);
        cached.files.lock().expect("files lock").insert(id, out.clone());
        Ok(out)
    }
}

enum Pruned {
    No,
    Partition,
    Bounds,
}

fn prune_file(table: &Table, f: &FileEntry, preds: &[Predicate]) -> Result<Pruned> {
    if let Some(spec) = table.metadata().partition_spec_by_id(f.spec_id) {
        let values = f.file.partition().fields();
        for (i, field) in spec.fields().iter().enumerate() {
            for p in preds.iter().filter(|p| p.field_id == field.source_id) {
                let transformed = create_transform_function(&field.transform)?.transform_literal(&p.value)?;
                let Some(want) = transformed else { continue };
                match values.get(i) {
                    Some(Some(Literal::Primitive(have))) if have == want.literal() => {}
                    Some(Some(Literal::Primitive(_))) | Some(None) => return Ok(Pruned::Partition),
                    _ => {}
                }
            }
        }
    }
    for p in preds {
        if let Some(lower) = f.file.lower_bounds().get(&p.field_id)
            && p.value.partial_cmp(lower) == Some(std::cmp::Ordering::Less)
        {
            return Ok(Pruned::Bounds);
        }
        if let Some(upper) = f.file.upper_bounds().get(&p.field_id)
            && p.value.partial_cmp(upper) == Some(std::cmp::Ordering::Greater)
        {
            return Ok(Pruned::Bounds);
        }
    }
    Ok(Pruned::No)
}

/// Parses `params` against `table`'s current schema. Unknown columns and values that do not
/// parse as the column's type are 400s naming the column.
pub fn parse_request(table: &Table, params: &[(String, String)], max_rows: usize) -> Result<LookupRequest> {
    let schema = table.metadata().current_schema();
    let mut req = LookupRequest {
        predicates: vec![],
        limit: DEFAULT_LOOKUP_LIMIT.min(max_rows),
        snapshot: SnapshotSelector::Current,
    };
    let bad = |code: &'static str, message: String| Error::BadRequest { code, message };
    for (k, v) in params {
        match k.as_str() {
            "limit" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad("bad_value", format!("limit must be a positive integer, not {v:?}")))?;
                if n > max_rows {
                    return Err(Error::Limit {
                        limit: "limits.query_max_rows",
                        message: format!("limit {n} is over the most rows a lookup returns, {max_rows}"),
                        status: axum::http::StatusCode::BAD_REQUEST,
                    });
                }
                req.limit = n;
            }
            "snapshot_id" => {
                let id = v
                    .parse()
                    .map_err(|_| bad("bad_value", format!("snapshot_id must be an integer, not {v:?}")))?;
                req.snapshot = SnapshotSelector::Id(id);
            }
            "as_of" => {
                let ms = parse_as_of(v).ok_or_else(|| {
                    bad(
                        "bad_value",
                        format!("as_of must be an RFC 3339 timestamp or epoch milliseconds, not {v:?}"),
                    )
                })?;
                req.snapshot = SnapshotSelector::AsOf(ms);
            }
            column => {
                let field = schema.as_struct().field_by_name(column).ok_or_else(|| {
                    let names: Vec<&str> = schema.as_struct().fields().iter().map(|f| f.name.as_str()).collect();
                    bad(
                        "unknown_column",
                        format!(
                            "table {} has no column {column:?} (columns: {})",
                            table.identifier(),
                            names.join(", ")
                        ),
                    )
                })?;
                let Type::Primitive(ty) = field.field_type.as_ref() else {
                    return Err(bad(
                        "bad_column",
                        format!(
                            "column {column:?} is {}, lookups compare primitive columns only",
                            field.field_type
                        ),
                    ));
                };
                let value = parse_value(ty, v).map_err(|why| {
                    bad(
                        "bad_value",
                        format!("column {column:?} is {ty}: {v:?} is not a valid value ({why})"),
                    )
                })?;
                let scalar = scalar_array(&value).ok_or_else(|| {
                    bad(
                        "bad_column",
                        format!("column {column:?} is {ty}, which lookups do not compare yet"),
                    )
                })?;
                req.predicates.push(Predicate {
                    column: column.to_string(),
                    field_id: field.id,
                    value,
                    scalar,
                });
            }
        }
    }
    Ok(req)
}

/// Parses a query-string value as a value of Iceberg type `ty`.
pub fn parse_value(ty: &PrimitiveType, v: &str) -> std::result::Result<Datum, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    Ok(match ty {
        PrimitiveType::Boolean => match v {
            "true" => Datum::bool(true),
            "false" => Datum::bool(false),
            _ => return Err("expected true or false".into()),
        },
        PrimitiveType::Int => Datum::int(v.parse::<i32>().map_err(|x| e(&x))?),
        PrimitiveType::Long => Datum::long(v.parse::<i64>().map_err(|x| e(&x))?),
        PrimitiveType::Float => Datum::float(v.parse::<f32>().map_err(|x| e(&x))?),
        PrimitiveType::Double => Datum::double(v.parse::<f64>().map_err(|x| e(&x))?),
        PrimitiveType::String => Datum::string(v),
        PrimitiveType::Date => Datum::date_from_str(v).map_err(|x| e(&x))?,
        PrimitiveType::Timestamp | PrimitiveType::Timestamptz => {
            let micros = match v.parse::<i64>() {
                Ok(ms) => ms
                    .checked_mul(1000)
                    .ok_or_else(|| "epoch milliseconds out of range".to_string())?,
                Err(_) => chrono::DateTime::parse_from_rfc3339(v)
                    .map_err(|x| format!("expected RFC 3339 or epoch milliseconds: {x}"))?
                    .timestamp_micros(),
            };
            if *ty == PrimitiveType::Timestamp {
                Datum::timestamp_micros(micros)
            } else {
                Datum::timestamptz_micros(micros)
            }
        }
        PrimitiveType::Binary => {
            use base64::Engine;
            Datum::binary(
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|x| format!("expected base64: {x}"))?,
            )
        }
        other => return Err(format!("lookups do not compare {other} columns yet")),
    })
}

/// The value as a one-element Arrow array of the type Iceberg maps the column to.
fn scalar_array(d: &Datum) -> Option<ArrayRef> {
    Some(match (d.data_type(), d.literal()) {
        (PrimitiveType::Boolean, PrimitiveLiteral::Boolean(b)) => Arc::new(BooleanArray::from(vec![*b])),
        (PrimitiveType::Int, PrimitiveLiteral::Int(i)) => Arc::new(Int32Array::from(vec![*i])),
        (PrimitiveType::Date, PrimitiveLiteral::Int(i)) => Arc::new(Date32Array::from(vec![*i])),
        (PrimitiveType::Long, PrimitiveLiteral::Long(i)) => Arc::new(Int64Array::from(vec![*i])),
        (PrimitiveType::Float, PrimitiveLiteral::Float(f)) => Arc::new(Float32Array::from(vec![f.0])),
        (PrimitiveType::Double, PrimitiveLiteral::Double(f)) => Arc::new(Float64Array::from(vec![f.0])),
        (PrimitiveType::String, PrimitiveLiteral::String(s)) => Arc::new(StringArray::from(vec![s.as_str()])),
        (PrimitiveType::Binary, PrimitiveLiteral::Binary(b)) => Arc::new(BinaryArray::from(vec![b.as_slice()])),
        (PrimitiveType::Timestamp, PrimitiveLiteral::Long(t)) => Arc::new(TimestampMicrosecondArray::from(vec![*t])),
        (PrimitiveType::Timestamptz, PrimitiveLiteral::Long(t)) => {
            Arc::new(TimestampMicrosecondArray::from(vec![*t]).with_timezone("+00:00"))
        }
        _ => return None,
    })
}

/// Parses `namespace.table` (the last dot separates the table name).
pub fn parse_table_ident(s: &str) -> Result<TableIdent> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::BadRequest {
            code: "bad_table",
            message: format!("{s:?} is not namespace.table"),
        });
    }
    TableIdent::from_strs(parts).map_err(Error::from)
}

/// Parses and runs a lookup under the `[limits]` time limit.
pub async fn lookup_with_limits(
    engine: &LookupEngine,
    ident: &TableIdent,
    params: &[(String, String)],
    limits: &crate::config::Limits,
) -> Result<LookupResult> {
    let timeout = Duration::from_secs_f64(limits.query_timeout_seconds);
    match tokio::time::timeout(timeout, engine.lookup_params(ident, params, limits.query_max_rows)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Limit {
            limit: "limits.query_timeout_seconds",
            message: format!(
                "the lookup ran longer than {} s and was cancelled",
                timeout.as_secs_f64()
            ),
            status: axum::http::StatusCode::BAD_REQUEST,
        }),
    }
}

/// What `GET /v1/tables/{table}/rows` needs of the node.
#[derive(Clone)]
pub struct LookupState {
    /// The lookup engine (its caches are shared by every request).
    pub engine: Arc<LookupEngine>,
    /// `[limits]` (the lookup's time limit).
    pub limits: crate::config::Limits,
    /// `[auth]`.
    pub auth: crate::config::AuthConfig,
}

/// `GET /v1/tables/{table}/rows?col=value…` → `{"table", "snapshot_id", "rows", "stats"}`.
pub async fn get_rows(
    State(app): State<LookupState>,
    Path(table): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let result = async {
        crate::auth::require(&app.auth, &headers, "read")?;
        let ident = parse_table_ident(&table)?;
        let res = lookup_with_limits(&app.engine, &ident, &params, &app.limits).await?;
        let rows = crate::query::to_json(&res.batches)?;
        let mut out = Vec::with_capacity(rows.len() + 512);
        out.extend_from_slice(b"{\"table\":");
        out.extend_from_slice(&serde_json::to_vec(&ident.to_string()).expect("string"));
        out.extend_from_slice(b",\"snapshot_id\":");
        out.extend_from_slice(&serde_json::to_vec(&res.snapshot_id).expect("option"));
        out.extend_from_slice(b",\"count\":");
        out.extend_from_slice(res.num_rows().to_string().as_bytes());
        out.extend_from_slice(b",\"rows\":");
        out.extend_from_slice(&rows);
        out.extend_from_slice(b",\"stats\":");
        out.extend_from_slice(&serde_json::to_vec(&res.stats).expect("stats"));
        out.push(b'}');
        Ok::<_, Error>(out)
    }
    .await;
    match result {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}
