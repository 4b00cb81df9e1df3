//! Row deletes by copy-on-write: `floe table delete NS.TABLE --where "…"` and time-based
//! retention (`[sinks.maintenance] retention`), committed through the same rewrite path as
//! compaction ([`floe_catalog::rewrite`]) as one `delete` (or `overwrite`) snapshot:
//!
//! ```text
//! every live data file of the current snapshot
//!   no row matches    ─► kept as it is
//!   every row matches ─► removed from the table (metadata only: the file is not rewritten)
//!   some rows match   ─► rewritten without them (the table's sort order kept), the old one removed
//! ```
//!
//! For retention (`column < now − retention`) the file's column statistics decide without
//! reading it where they can: upper bound below the cutoff — every row is expired; lower bound
//! at or past it — none is. Only the files that straddle the cutoff are read.
//!
//! The condition is one SQL boolean expression over the table's columns (DataFusion's dialect,
//! e.g. `ns = 'tenant-7' AND ts < TIMESTAMP '2026-01-01T00:00:00Z'`); subqueries are refused.
//! A row where it is NULL is kept, as in SQL's `DELETE … WHERE`. The whole delete is one
//! snapshot: all of it lands or none. A delete that loses to another rewrite of the same files
//! (a compaction meanwhile) is planned and run again, up to [`REPLANS`] times.
//!
//! Refused: tables with delete files, tables not in format version 2, and rewriting a file of an
//! older partition spec (dropping such a file whole works).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use floe_catalog::FloeCatalog;
use floe_catalog::rewrite::{PROP_MAINTENANCE, Rewrite, commit_rewrite, read_manifest, read_manifest_list};
use futures::TryStreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{DataContentType, DataFile, Datum, ManifestContentType, Operation, PrimitiveLiteral};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};

use super::compact::{Output, read_files, rewrite_files, sort_keys, table_target_file_bytes};
use super::{Progress, begin_attempt, clean_attempts, end_attempt, renew_while, table_writer_properties};
use crate::error::{Error, Result};

/// How many times a delete that lost to a concurrent rewrite is planned again.
pub const REPLANS: u32 = 3;

/// Which rows go.
#[derive(Debug, Clone)]
pub enum Condition {
    /// A SQL boolean expression over the table's columns.
    Sql(String),
    /// Retention: rows whose timestamp or date `column` is before `cutoff_ms` (Unix millis).
    Before {
        /// The column (top level, `timestamp`, `timestamptz` or `date`).
        column: String,
        /// The cutoff.
        cutoff_ms: i64,
    },
}

impl Condition {
    fn label(&self) -> &'static str {
        match self {
            Condition::Sql(_) => "delete",
            Condition::Before { .. } => "retention",
        }
    }
}

/// What a delete did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeleteReport {
    /// Live data files looked at.
    pub files_scanned: usize,
    /// Files read to evaluate the condition (the others were decided by their statistics).
    pub files_read: usize,
    /// Files removed whole (every row matched).
    pub files_dropped: usize,
    /// Files rewritten without their matching rows.
    pub files_rewritten: usize,
    /// Files written by those rewrites.
    pub files_written: usize,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// Rows before.
    pub rows_before: u64,
    /// Snapshots committed (0 or 1).
    pub commits: usize,
    /// Times it was planned again after losing to another rewrite.
    pub replanned: u32,
    /// Seconds spent.
    pub seconds: f64,
}

/// What one file's rows do under the condition.
enum Verdict {
    Keep,
    Drop,
    Rewrite,
}

/// Deletes the rows of `ident` that `condition` selects (see the module docs).
pub async fn delete_rows(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    condition: &Condition,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<DeleteReport> {
    let started = Instant::now();
    if !dry_run {
        clean_attempts(catalog, ident).await?;
    }
    let mut replanned = 0;
    loop {
        let table = catalog.load_table(ident).await?;
        match attempt(catalog, &table, condition, dry_run, progress).await {
            Err(e) if is_abandoned(&e) && replanned < REPLANS => {
                tracing::info!(table = %ident, error = %e, "delete lost to another rewrite; planning again");
                replanned += 1;
            }
            Ok(mut report) => {
                report.replanned = replanned;
                report.seconds = started.elapsed().as_secs_f64();
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_abandoned(e: &Error) -> bool {
    matches!(e, Error::Iceberg(i) if i.kind() == iceberg::ErrorKind::CatalogCommitConflicts)
}

/// The condition as a physical expression over batches of the table's current schema.
fn predicate(table: &Table, condition: &Condition) -> Result<Arc<dyn PhysicalExpr>> {
    let schema = Arc::new(schema_to_arrow_schema(table.metadata().current_schema())?);
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let ctx = SessionContext::new();
    let expr = match condition {
        Condition::Sql(sql) => {
            let expr = ctx
                .parse_sql_expr(sql, &df_schema)
                .map_err(|e| Error::Config(format!("--where {sql:?}: {e}")))?;
            let subquery = expr.exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
                ))
            })?;
            if subquery {
                return Err(Error::Config(format!("--where {sql:?}: subqueries are not allowed")));
            }
            expr
        }
        Condition::Before { column, cutoff_ms } => {
            let field = schema.field_with_name(column).map_err(|_| {
                Error::Config(format!(
                    "retention column {column:?} is not a top-level column of {}",
                    table.identifier()
                ))
            })?;
            let cutoff = match field.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                    ScalarValue::TimestampMicrosecond(Some(cutoff_ms.saturating_mul(1000)), tz.clone())
                }
                DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                    ScalarValue::TimestampNanosecond(Some(cutoff_ms.saturating_mul(1_000_000)), tz.clone())
                }
                DataType::Date32 => ScalarValue::Date32(Some(cutoff_ms.div_euclid(86_400_000) as i32)),
                other => {
                    return Err(Error::Config(format!(
                        "retention column {column:?} is {other}, not a timestamp or date"
                    )));
                }
            };
            datafusion::prelude::col(datafusion::common::Column::from_name(column.clone()))
                .lt(datafusion::prelude::lit(cutoff))
        }
    };
    let physical = ctx
        .create_physical_expr(expr, &df_schema)
        .map_err(|e| Error::Config(format!("the delete condition: {e}")))?;
    let ty = physical.data_type(&schema)?;
    if ty != DataType::Boolean {
        return Err(Error::Config(format!("the delete condition is {ty}, not a boolean")));
    }
    Ok(physical)
}

/// Rows of `batch` the condition selects (true; NULL counts as not selected).
fn selected(predicate: &dyn PhysicalExpr, batch: &RecordBatch) -> Result<BooleanArray> {
    let value = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    let mask = value
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| Error::Config("the delete condition did not answer booleans".into()))?;
    Ok(if mask.null_count() == 0 {
        mask.clone()
    } else {
        arrow::compute::prep_null_mask_filter(mask)
    })
}

/// The verdict of `column < cutoff` from a file's statistics, when they decide it.
fn by_stats(table: &Table, file: &DataFile, column: &str, cutoff_ms: i64) -> Option<Verdict> {
    let field = table.metadata().current_schema().field_by_name(column)?;
    // Each bound in the column's own unit, against the cutoff in that unit (as `predicate`
    // spells it).
    let value = |d: &Datum| -> Option<(i64, i64)> {
        use iceberg::spec::PrimitiveType as P;
        match (d.data_type(), d.literal()) {
            (P::Timestamp | P::Timestamptz, PrimitiveLiteral::Long(v)) => Some((*v, cutoff_ms.saturating_mul(1000))),
            (P::TimestampNs | P::TimestamptzNs, PrimitiveLiteral::Long(v)) => {
                Some((*v, cutoff_ms.saturating_mul(1_000_000)))
            }
            (P::Date, PrimitiveLiteral::Int(v)) => Some((i64::from(*v), cutoff_ms.div_euclid(86_400_000))),
            _ => None,
        }
    };
    let nulls = file.null_value_counts().get(&field.id).copied().unwrap_or(0);
    if let Some((upper, cutoff)) = file.upper_bounds().get(&field.id).and_then(value)
        && upper < cutoff
        && nulls == 0
    {
        // Bounds may be truncated, never for these types: upper is the max.
        return Some(Verdict::Drop);
    }
    if let Some((lower, cutoff)) = file.lower_bounds().get(&field.id).and_then(value)
        && lower >= cutoff
    {
        return Some(Verdict::Keep);
    }
    None
}

async fn attempt(
    catalog: &FloeCatalog,
    table: &Table,
    condition: &Condition,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<DeleteReport> {
    let ident = table.identifier();
    let metadata = table.metadata();
    let mut report = DeleteReport::default();
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok(report);
    };
    if metadata.format_version() != iceberg::spec::FormatVersion::V2 {
        return Err(Error::Config(format!(
            "{ident} is format version {}; floe deletes rows of format version 2 tables only",
            metadata.format_version()
        )));
    }
    let predicate = predicate(table, condition)?;
    let arrow_schema = Arc::new(schema_to_arrow_schema(metadata.current_schema())?);
    let list = read_manifest_list(catalog, metadata, snapshot.manifest_list()).await?;
    // (manifest, its partition spec, file)
    let mut live: Vec<(String, i32, DataFile)> = Vec::new();
    for m in list.entries() {
        let manifest = read_manifest(catalog, m).await?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            if m.content == ManifestContentType::Deletes || entry.content_type() != DataContentType::Data {
                return Err(Error::Config(format!(
                    "{ident} has delete files; floe does not delete rows of such tables yet"
                )));
            }
            live.push((m.manifest_path.clone(), m.partition_spec_id, entry.data_file().clone()));
        }
    }
    report.files_scanned = live.len();
    report.rows_before = live.iter().map(|(_, _, f)| f.record_count()).sum();
    progress.start(condition.label(), live.len() as u64);
    let mut dropped: Vec<(String, DataFile)> = Vec::new();
    let mut rewrite: Vec<(String, DataFile)> = Vec::new();
    for (manifest, spec_id, file) in live {
        let stats = match condition {
            Condition::Before { column, cutoff_ms } => by_stats(table, &file, column, *cutoff_ms),
            Condition::Sql(_) => None,
        };
        let verdict = match stats {
            Some(v) => v,
            None => {
                report.files_read += 1;
                let mut stream = read_files(table, &[&file], spec_id)?;
                let (mut matched, mut total) = (0u64, 0u64);
                while let Some(batch) = stream.try_next().await? {
                    let batch = crate::sink::schema::conform(&batch, &arrow_schema)?;
                    total += batch.num_rows() as u64;
                    matched += selected(predicate.as_ref(), &batch)?.true_count() as u64;
                }
                if matched == 0 {
                    Verdict::Keep
                } else if matched == total {
                    Verdict::Drop
                } else {
                    report.rows_deleted += matched;
                    Verdict::Rewrite
                }
            }
        };
        match verdict {
            Verdict::Keep => {}
            Verdict::Drop => {
                report.rows_deleted += file.record_count();
                dropped.push((manifest, file));
            }
            Verdict::Rewrite => {
                if spec_id != metadata.default_partition_spec_id() {
                    return Err(Error::Config(format!(
                        "{ident}: the data file {} is of an older partition spec and only some of its rows match; floe does not rewrite such files yet",
                        file.file_path()
                    )));
                }
                rewrite.push((manifest, file));
            }
        }
        progress.advance(1);
    }
    progress.finish();
    report.files_dropped = dropped.len();
    report.files_rewritten = rewrite.len();
    if dry_run || (dropped.is_empty() && rewrite.is_empty()) {
        return Ok(report);
    }

    let id = uuid::Uuid::now_v7();
    let location = metadata.location().to_string();
    begin_attempt(catalog, ident, id, &location).await?;
    let mut added: Vec<DataFile> = Vec::new();
    let work = async {
        let props = table_writer_properties(table)?;
        let sort = sort_keys(table);
        // Each file is rewritten alone and only loses rows, so the target is no more than a cap;
        // a property out of bounds falls back to floe's default.
        let out = Output {
            props: &props,
            sort: sort.as_deref(),
            target_file_bytes: table_target_file_bytes(metadata.properties())
                .unwrap_or(crate::config::DEFAULT_TARGET_FILE_SIZE_MB * 1024 * 1024),
        };
        let keep = |batch: RecordBatch| -> Result<RecordBatch> {
            let gone = selected(predicate.as_ref(), &batch)?;
            let kept = arrow::compute::not(&gone)?;
            Ok(arrow::compute::filter_record_batch(&batch, &kept)?)
        };
        for (n, (_, file)) in rewrite.iter().enumerate() {
            let spec = metadata.default_partition_spec_id();
            let name = format!("floe-delete-{id}-{n}");
            added.extend(rewrite_files(table, &name, &[file], spec, &out, Some(&keep)).await?);
        }
        crate::sink::iceberg::sync_folders(catalog.storage().as_ref(), &added).await?;
        let mut removed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (manifest, file) in dropped.iter().chain(&rewrite) {
            removed
                .entry(manifest.clone())
                .or_default()
                .insert(file.file_path().to_string());
        }
        let commit = Rewrite {
            base_snapshot_id: snapshot.snapshot_id(),
            removed,
            added: added.clone(),
            operation: if added.is_empty() {
                Operation::Delete
            } else {
                Operation::Overwrite
            },
            properties: HashMap::from([(PROP_MAINTENANCE.to_string(), condition.label().to_string())]),
            id,
        };
        Ok::<_, Error>(commit_rewrite(catalog, ident, &commit, super::compact::COMMIT_RETRIES).await?)
    };
    let result = renew_while(catalog, ident, id, &location, work).await;
    match result {
        Ok(_) => {
            end_attempt(catalog, ident, id).await?;
            report.files_written = added.len();
            report.commits = 1;
            Ok(report)
        }
        Err(Error::Iceberg(e)) if floe_catalog::commit_state_unknown(&e) => Err(Error::Iceberg(e)),
        Err(e) => {
            // Every file named after the attempt, also one whose write failed half-way; the
            // attempt stays recorded (for its next run to clean) when that fails.
            match crate::sink::iceberg::remove_attempt_files(catalog.storage().as_ref(), &location, id).await {
                Ok(_) => {
                    if let Err(forget) = end_attempt(catalog, ident, id).await {
                        tracing::warn!(%id, error = %forget, "could not forget a failed delete attempt; its next run cleans it");
                    }
                }
                Err(del) => {
                    tracing::warn!(%id, error = %del, "could not delete the files of a failed delete; its next run cleans them");
                }
            }
            Err(e)
        }
    }
}
