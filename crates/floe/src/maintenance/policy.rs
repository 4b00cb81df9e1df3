//! The background runner's round on one table: what `[sinks.maintenance]` (or, for a table no
//! sink writes, its `floe.maintenance.*` table properties) asks for, in order — retention (at
//! most hourly, when set), compaction and manifest rewrite (every round), snapshot expiry (at
//! most hourly), orphan cleanup (at most daily) —
//! with its outcome recorded in the table's [`TableMetrics`] (`/metrics`) and a failure shown in
//! `/healthz` until a later round succeeds.
//!
//! ```text
//!   hourly:        retention delete (retention, retention_column)         when set
//! every interval:  compact (min_input_files, the sink's target size, max_mb_per_second)
//! every interval:  rewrite-manifests (min_input_manifests)                 unless off
//!   hourly:        expire-snapshots (expire_older_than, retain_last)      unless "off"
//!   daily:         remove-orphans (orphan_older_than)                      unless "off"
//! ```
//!
//! A round works on a table that exists; one not created yet (no commit so far) is skipped
//! without error. Compaction paces itself to `max_mb_per_second` of Parquet read, the named
//! share of the machine maintenance may take from ingest.

use std::sync::atomic::Ordering;

use floe_catalog::FloeCatalog;
use iceberg::{Catalog, TableIdent};

use super::Quiet;
use super::compact::{CompactOptions, compact};
use super::delete::{Condition, delete_rows};
use super::expire::{ExpireOptions, expire};
use super::manifests::{ManifestOptions, rewrite_manifests};
use super::orphans::{OrphanOptions, remove_orphans};
use crate::config::Maintenance;
use crate::error::Result;
use crate::metrics::TableMetrics;

/// Expiry runs at most this often.
pub const EXPIRE_EVERY_MS: i64 = 3_600_000;
/// Orphan cleanup runs at most this often.
pub const ORPHANS_EVERY_MS: i64 = 24 * 3_600_000;

/// When a table's steps last ran (kept by the runner between rounds).
#[derive(Debug, Default, Clone)]
pub struct Schedule {
    /// The last round.
    pub last_round_ms: Option<i64>,
    /// The last expiry.
    pub last_expire_ms: Option<i64>,
    /// The last orphan cleanup.
    pub last_orphans_ms: Option<i64>,
    /// The last retention delete.
    pub last_retention_ms: Option<i64>,
}

impl Schedule {
    /// Whether a round of `policy` is due at `now_ms`. The first is due one interval after the
    /// runner first saw the table (not at start: a restart loop does not compact in a loop).
    pub fn due(&mut self, policy: &Maintenance, now_ms: i64) -> bool {
        match self.last_round_ms {
            None => {
                self.last_round_ms = Some(now_ms);
                false
            }
            Some(last) => now_ms - last >= policy.interval_ms(),
        }
    }
}

/// Runs one round of `policy` on `ident` (files packed to `target_file_bytes`), records it in
/// `metrics`, and answers the error of the step that failed.
pub async fn round(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    policy: &Maintenance,
    target_file_bytes: u64,
    schedule: &mut Schedule,
    metrics: &TableMetrics,
) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    schedule.last_round_ms = Some(now);
    let result = steps(catalog, ident, policy, target_file_bytes, schedule, metrics, now).await;
    record(metrics, result.as_ref().map(|_| ()).map_err(ToString::to_string));
    result
}

/// Records the outcome of a round (or of reading a table's policy) in `metrics`: a failure
/// shows in `/healthz` until a later round succeeds.
pub fn record(metrics: &TableMetrics, outcome: std::result::Result<(), String>) {
    metrics.runs.fetch_add(1, Ordering::Relaxed);
    metrics
        .last_run_ms
        .store(chrono::Utc::now().timestamp_millis().max(0) as u64, Ordering::Relaxed);
    let mut last_error = metrics.last_error.lock().unwrap_or_else(|p| p.into_inner());
    match outcome {
        Ok(()) => {
            metrics.last_run_ok.store(1, Ordering::Relaxed);
            *last_error = None;
        }
        Err(e) => {
            metrics.failures.fetch_add(1, Ordering::Relaxed);
            metrics.last_run_ok.store(0, Ordering::Relaxed);
            *last_error = Some(e);
        }
    }
}

async fn steps(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    policy: &Maintenance,
    target_file_bytes: u64,
    schedule: &mut Schedule,
    metrics: &TableMetrics,
    now: i64,
) -> Result<()> {
    if !catalog.table_exists(ident).await? {
        return Ok(());
    }
    if let Some((retention_ms, column)) = policy.retention_ms()
        && schedule.last_retention_ms.is_none_or(|t| now - t >= EXPIRE_EVERY_MS)
    {
        let condition = Condition::Before {
            column: column.to_string(),
            cutoff_ms: now - retention_ms,
        };
        let report = delete_rows(catalog, ident, &condition, false, &Quiet).await?;
        schedule.last_retention_ms = Some(now);
        if report.rows_deleted > 0 {
            tracing::info!(table = %ident, rows = report.rows_deleted, files_dropped = report.files_dropped,
                files_rewritten = report.files_rewritten, "retention dropped expired rows");
        }
    }
    let mut options = CompactOptions::with_target(target_file_bytes);
    options.min_input_files = policy.min_input_files;
    options.max_bytes_per_second = Some(policy.max_mb_per_second.saturating_mul(1024 * 1024));
    if !policy.compact {
        options.dry_run = true; // plan only: the file counts for the metrics
    }
    let report = compact(catalog, ident, &options, &Quiet).await?;
    if report.commits > 0 {
        tracing::info!(table = %ident, files_before = report.files_before, files_after = report.files_after,
            commits = report.commits, seconds = report.seconds, "compacted");
    }
    metrics.files_compacted.fetch_add(
        report.files_rewritten as u64 * u64::from(policy.compact),
        Ordering::Relaxed,
    );
    let (files, bytes, small) = if policy.compact {
        (report.files_after, report.bytes_after, report.small_files_after)
    } else {
        (report.files_before, report.bytes_before, report.small_files_before)
    };
    metrics.data_files.store(files as u64, Ordering::Relaxed);
    if policy.rewrite_manifests {
        let options = ManifestOptions {
            min_input_manifests: policy.min_input_manifests,
            dry_run: false,
        };
        let report = rewrite_manifests(catalog, ident, &options, &Quiet).await?;
        if report.commits > 0 {
            tracing::info!(table = %ident, manifests_before = report.manifests_before,
                manifests_after = report.manifests_after, "rewrote manifests");
        }
    }
    metrics.data_bytes.store(bytes, Ordering::Relaxed);
    metrics.small_files.store(small as u64, Ordering::Relaxed);

    if let Some(older_than_ms) = policy.expire_older_than_ms()
        && schedule.last_expire_ms.is_none_or(|t| now - t >= EXPIRE_EVERY_MS)
    {
        let options = ExpireOptions {
            older_than_ms,
            retain_last: policy.retain_last,
            dry_run: false,
        };
        let report = expire(catalog, ident, &options, &Quiet).await?;
        schedule.last_expire_ms = Some(now);
        metrics
            .files_deleted
            .fetch_add(report.files_deleted as u64, Ordering::Relaxed);
    }
    if let Some(older_than_ms) = policy.orphan_older_than_ms()
        && schedule.last_orphans_ms.is_none_or(|t| now - t >= ORPHANS_EVERY_MS)
    {
        let options = OrphanOptions {
            older_than_ms,
            dry_run: false,
        };
        let report = remove_orphans(catalog, ident, &options, &Quiet).await?;
        schedule.last_orphans_ms = Some(now);
        metrics
            .files_deleted
            .fetch_add(report.files_deleted as u64, Ordering::Relaxed);
    }
    let table = catalog.load_table(ident).await?;
    metrics
        .snapshots
        .store(table.metadata().snapshots().count() as u64, Ordering::Relaxed);
    Ok(())
}

/// At most this many tables are looked at by one [`table_policies`] scan.
pub const MAX_SCANNED_TABLES: usize = 10_000;

/// A table no sink writes that opted in to maintenance through its properties.
#[derive(Debug, Clone)]
pub struct TablePolicy {
    /// The table.
    pub ident: TableIdent,
    /// `namespace.table`, as the metrics name it.
    pub name: String,
    /// Its policy and the size files are packed to
    /// ([`super::compact::table_target_file_bytes`]), or why its properties were refused.
    pub policy: std::result::Result<(Maintenance, u64), String>,
}

/// The tables of the catalog (namespaces walked from the root, at most [`MAX_SCANNED_TABLES`])
/// whose properties set `floe.maintenance.enabled = true`, other than those in `skip`
/// (`namespace.table`: the sinks' tables, which follow `[sinks.maintenance]`). A table whose
/// `floe.maintenance.*` properties do not validate is answered with the error, to be shown
/// in `/healthz`; one that cannot be loaded is skipped with a warning.
pub async fn table_policies(
    catalog: &FloeCatalog,
    skip: &std::collections::HashSet<String>,
) -> Result<Vec<TablePolicy>> {
    let mut out = Vec::new();
    let mut scanned = 0;
    let mut namespaces = catalog.list_namespaces(None).await?;
    let mut i = 0;
    while i < namespaces.len() && scanned < MAX_SCANNED_TABLES {
        let ns = namespaces[i].clone();
        i += 1;
        if namespaces.len() < MAX_SCANNED_TABLES {
            namespaces.extend(catalog.list_namespaces(Some(&ns)).await.unwrap_or_default());
        }
        for ident in catalog.list_tables(&ns).await? {
            scanned += 1;
            if scanned > MAX_SCANNED_TABLES {
                break;
            }
            let name = ident.to_string();
            if skip.contains(&name) {
                continue;
            }
            let table = match catalog.load_table(&ident).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "cannot read a table's maintenance properties");
                    continue;
                }
            };
            let props = table.metadata().properties();
            let policy = match Maintenance::from_table_properties(props) {
                Ok(None) => continue,
                Ok(Some(policy)) => super::compact::table_target_file_bytes(props).map(|target| (policy, target)),
                Err(e) => Err(e.to_string()),
            };
            out.push(TablePolicy { ident, name, policy });
        }
    }
    Ok(out)
}
