//! Orphan cleanup: delete the files under a table's location that no metadata references —
//! left by writers that died before their commit (an outside engine's, a killed compaction's),
//! by deletes that failed, or copied in by hand — once they are older than a safety window.
//!
//! ```text
//! 1  listed     = every regular file below the table location (with its modification time)
//! 2  in flight  = ids of the open attempts of any floe sink or maintenance step on this table
//! 3  referenced = walk(every snapshot of the metadata loaded *after* 1 and 2, strict)
//!               + that metadata file and its metadata log
//! 4  delete     listed − referenced, modified before now − older_than,
//!               and not named after an attempt in flight
//! ```
//!
//! Before that, the maintenance attempts killed runs left behind are cleaned
//! ([`super::clean_attempts`]). The order is what makes it safe. A file listed in 1 was written before 1; if the commit that
//! references it landed before 3, the walk in 3 sees it; if it has not landed, its writer is
//! either a floe attempt (open in 2 — recorded before its first file was written — or already
//! failed and cleaned) or an outside writer that began before the listing, which the window
//! (default one day) protects. The walk is strict: a manifest it cannot read stops the cleanup
//! before anything is deleted. `version-hint.text` (a Hadoop-catalog pointer other engines may
//! write) is never deleted.

use std::collections::BTreeSet;
use std::time::Instant;

use floe_catalog::FloeCatalog;
use floe_catalog::reachable::{Mode, metadata_files, walk};
use iceberg::TableIdent;

use super::Progress;
use crate::error::Result;

/// Default safety window: one day.
pub const DEFAULT_OLDER_THAN_MS: i64 = 24 * 3600 * 1000;

/// What orphan cleanup does.
#[derive(Debug, Clone)]
pub struct OrphanOptions {
    /// Only files last modified longer ago than this many milliseconds are deleted.
    pub older_than_ms: i64,
    /// Plan and report only.
    pub dry_run: bool,
}

impl Default for OrphanOptions {
    fn default() -> Self {
        Self {
            older_than_ms: DEFAULT_OLDER_THAN_MS,
            dry_run: false,
        }
    }
}

/// What orphan cleanup found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OrphanReport {
    /// Files below the table location.
    pub files_listed: usize,
    /// Their bytes.
    pub bytes_listed: u64,
    /// Files referenced by the table's metadata.
    pub files_referenced: usize,
    /// Unreferenced files younger than the window (kept).
    pub kept_young: usize,
    /// Unreferenced files of an attempt in flight (kept).
    pub kept_in_flight: usize,
    /// Orphans deleted (in a dry run: that would be).
    pub files_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Orphans that could not be deleted.
    pub delete_failures: usize,
    /// The locations deleted (in a dry run: that would be), at most the first 1,000.
    pub deleted: Vec<String>,
    /// Seconds spent.
    pub seconds: f64,
}

/// The most deleted locations a report lists.
const REPORT_LOCATIONS: usize = 1000;

/// Removes the orphan files of table `ident` (see the module docs).
pub async fn remove_orphans(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    options: &OrphanOptions,
    progress: &dyn Progress,
) -> Result<OrphanReport> {
    let started = Instant::now();
    if !options.dry_run {
        super::clean_attempts(catalog, ident).await?;
    }
    let storage = catalog.storage().clone();
    let (_, first) = catalog.load_metadata(ident).await?;
    let dir = catalog.warehouse_rule().check("table location", first.location())?;
    let listed = storage.list(&dir).await?;
    let in_flight: Vec<String> = catalog
        .pending_attempts_at(first.location())
        .await?
        .into_iter()
        .map(|a| a.to_string())
        .collect();
    let (location, metadata) = catalog.load_metadata(ident).await?;
    let mut referenced: BTreeSet<String> = walk(storage.as_ref(), &dir, &metadata, |_| true, Mode::Strict)
        .await?
        .all();
    referenced.extend(metadata_files(storage.as_ref(), &dir, &location, &metadata));
    let cutoff = chrono::Utc::now().timestamp_millis() - options.older_than_ms;
    let mut report = OrphanReport {
        files_listed: listed.len(),
        bytes_listed: listed.iter().map(|f| f.size).sum(),
        ..Default::default()
    };
    let mut doomed = Vec::new();
    for f in &listed {
        if referenced.contains(&f.location) {
            report.files_referenced += 1;
            continue;
        }
        let name = f.location.rsplit_once('/').map_or(f.location.as_str(), |(_, n)| n);
        if name == "version-hint.text" {
            report.files_referenced += 1;
        } else if in_flight.iter().any(|a| name.contains(a.as_str())) {
            report.kept_in_flight += 1;
        } else if f.modified_ms.is_none_or(|m| m > cutoff) {
            report.kept_young += 1;
        } else {
            doomed.push(f);
        }
    }
    progress.start("remove-orphans", doomed.len() as u64);
    for f in doomed {
        let deleted = if options.dry_run {
            true
        } else {
            match storage.delete(&f.location).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(file = %f.location, error = %e, "could not delete an orphan file");
                    report.delete_failures += 1;
                    false
                }
            }
        };
        if deleted {
            report.files_deleted += 1;
            report.bytes_deleted += f.size;
            if report.deleted.len() < REPORT_LOCATIONS {
                report.deleted.push(f.location.clone());
            }
        }
        progress.advance(1);
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
