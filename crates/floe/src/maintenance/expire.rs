//! Snapshot expiry: drop the snapshots older than `older_than` beyond the newest `retain_last`
//! of each branch (iceberg's `ExpireSnapshotsAction` picks them: branch and tag heads and their
//! retained ancestry stay), commit that through the catalog's compare-and-swap, then delete the
//! files only the dropped snapshots referenced.
//!
//! ```text
//! before = walk(all snapshots of the metadata the expiry was applied to)     manifest lists,
//! after  = walk(all snapshots of the metadata the commit produced)           manifests, data
//! delete   before.all − after.live − after.manifests − after.manifest_lists  and delete files
//!        + metadata files dropped from metadata-log by this commit
//! ```
//!
//! A file still listed as `DELETED` by a retained manifest (removed by a compaction whose
//! parent expired) is deleted: no retained snapshot reads it. Both walks are strict (an
//! unreadable manifest stops the expiry before anything is deleted) and only files below the
//! table location are ever deleted. Commits that land between the two walks only add
//! snapshots on top of retained ones, so `after` is a superset of what they reference.
//!
//! floe's exactly-once record is a row of the catalog database, not a snapshot, so expiring
//! the snapshot of a sink's last commit does not move or lose its position.

use std::collections::BTreeSet;
use std::time::Instant;

use floe_catalog::FloeCatalog;
use floe_catalog::reachable::{Mode, metadata_files, walk};
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};

use super::Progress;
use crate::error::Result;

/// Default `older_than`: 7 days.
pub const DEFAULT_OLDER_THAN_MS: i64 = 7 * 24 * 3600 * 1000;
/// Default `retain_last`.
pub const DEFAULT_RETAIN_LAST: usize = 10;

/// What expiry does.
#[derive(Debug, Clone)]
pub struct ExpireOptions {
    /// Snapshots older than this many milliseconds are expired (beyond `retain_last`).
    pub older_than_ms: i64,
    /// The newest snapshots of each branch kept whatever their age (≥ 1).
    pub retain_last: usize,
    /// Plan and report only.
    pub dry_run: bool,
}

impl Default for ExpireOptions {
    fn default() -> Self {
        Self {
            older_than_ms: DEFAULT_OLDER_THAN_MS,
            retain_last: DEFAULT_RETAIN_LAST,
            dry_run: false,
        }
    }
}

/// What an expiry did (or would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExpireReport {
    /// Snapshots before.
    pub snapshots_before: usize,
    /// Snapshots after.
    pub snapshots_after: usize,
    /// Files deleted (in a dry run: that would be).
    pub files_deleted: usize,
    /// Files that could not be deleted (left for orphan cleanup).
    pub delete_failures: usize,
    /// Seconds spent.
    pub seconds: f64,
}

/// Expires snapshots of table `ident` (see the module docs).
pub async fn expire(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    options: &ExpireOptions,
    progress: &dyn Progress,
) -> Result<ExpireReport> {
    let started = Instant::now();
    let table = catalog.load_table(ident).await?;
    let mut report = ExpireReport {
        snapshots_before: table.metadata().snapshots().count(),
        ..Default::default()
    };
    let cutoff = chrono::Utc::now().timestamp_millis() - options.older_than_ms;
    // A property iceberg cannot read would fail the transaction (see `commit_base`).
    let (base, _) = crate::sink::iceberg::commit_base(&table, None)?;
    let action = || {
        Transaction::new(&base)
            .expire_snapshots()
            .expire_older_than_ms(cutoff)
            .retain_last(options.retain_last.max(1))
    };
    let storage = catalog.storage().clone();
    let dir = catalog
        .warehouse_rule()
        .check("table location", table.metadata().location())?;
    let (before_location, before) = (
        table.metadata_location().unwrap_or_default().to_string(),
        table.metadata().clone(),
    );
    // The same transaction against a catalog view that commits nothing: what would go.
    let preview: Table = action()
        .apply(Transaction::new(&base))?
        .commit(&floe_catalog::Preview(catalog))
        .await?;
    let kept: BTreeSet<i64> = preview.metadata().snapshots().map(|s| s.snapshot_id()).collect();
    report.snapshots_after = kept.len();
    if kept.len() == report.snapshots_before {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report); // nothing to expire: no commit
    }
    if options.dry_run {
        let doomed = walk(storage.as_ref(), &dir, &before, |id| !kept.contains(&id), Mode::Strict).await?;
        let retained = walk(storage.as_ref(), &dir, &before, |id| kept.contains(&id), Mode::Strict).await?;
        report.files_deleted = deletable(&doomed.all(), &retained).len();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let committed: Table = action().apply(Transaction::new(&base))?.commit(catalog).await?;
    let (after_location, after): (String, TableMetadata) = (
        committed.metadata_location().unwrap_or_default().to_string(),
        committed.metadata().clone(),
    );
    report.snapshots_after = after.snapshots().count();
    let old = walk(storage.as_ref(), &dir, &before, |_| true, Mode::Strict).await?;
    let new = walk(storage.as_ref(), &dir, &after, |_| true, Mode::Strict).await?;
    let mut doomed = deletable(&old.all(), &new);
    let old_meta = metadata_files(storage.as_ref(), &dir, &before_location, &before);
    let new_meta = metadata_files(storage.as_ref(), &dir, &after_location, &after);
    doomed.extend(old_meta.difference(&new_meta).cloned());
    progress.start("expire-snapshots", doomed.len() as u64);
    for location in &doomed {
        match storage.delete(location).await {
            Ok(_) => report.files_deleted += 1,
            Err(e) => {
                tracing::warn!(file = %location, error = %e, "expiry could not delete a file; orphan cleanup will");
                report.delete_failures += 1;
            }
        }
        progress.advance(1);
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Files referenced before that nothing retained still needs.
fn deletable(before: &BTreeSet<String>, kept: &floe_catalog::reachable::Reachable) -> BTreeSet<String> {
    before
        .iter()
        .filter(|f| !kept.live.contains(*f) && !kept.manifests.contains(*f) && !kept.manifest_lists.contains(*f))
        .cloned()
        .collect()
}
