//! Purge (`drop_table` with `purgeRequested`): delete **only** the files the table's own
//! metadata references, and only those under the table's location inside the warehouse.
//!
//! The files are: the current metadata file and every one in its `metadata-log`; each snapshot's
//! manifest list, the manifests it lists and the data and delete files those manifests list;
//! statistics and partition-statistics files. A referenced file outside the table location (a
//! path an outside engine put into a manifest, `../` tricks, a link out) is neither read nor
//! deleted; manifest lists and manifests are read like metadata — regular files only, at most
//! [`MAX_MANIFEST_BYTES`]. Nothing is ever deleted by prefix or as a directory tree: afterwards,
//! directories below the table location left empty are removed one by one (`rmdir`, which
//! refuses a non-empty directory), and so is the table location itself when empty.
//!
//! A table whose location is not inside the warehouse is not purged at all (the caller drops it
//! without purge).

use std::collections::BTreeSet;

use iceberg::spec::TableMetadata;
use iceberg::{Error, ErrorKind, Result};

use crate::location::Warehouse;
use crate::reachable::{Mode, metadata_files_split, walk};
use crate::storage::{Deleted, Storage};

/// The largest manifest list or manifest file a purge reads.
pub use crate::reachable::MAX_MANIFEST_BYTES;

/// What a purge did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Files deleted.
    pub deleted: usize,
    /// Referenced files left alone: outside the table location, not regular files, or unreadable.
    pub skipped: usize,
    /// Empty directories removed.
    pub dirs_removed: usize,
}

/// The table folder (a normalised location) a purge of `metadata` may delete under; an error
/// when the table location is not inside the warehouse.
pub(crate) fn table_dir(warehouse: &Warehouse, metadata: &TableMetadata) -> Result<String> {
    warehouse.check("table location", metadata.location()).map_err(|e| {
        Error::new(
            ErrorKind::DataInvalid,
            format!("purge refused, nothing was dropped or deleted: {}", e.message()),
        )
    })
}

/// The folder part of a location (`…/a/b.parquet` → `…/a`).
fn parent(location: &str) -> Option<&str> {
    location.rsplit_once('/').map(|(d, _)| d)
}

/// Deletes the files of a dropped table (see the module docs), through the warehouse storage.
pub(crate) async fn purge_files(
    storage: &dyn Storage,
    table_dir: String,
    metadata_location: String,
    metadata: TableMetadata,
) -> Result<PurgeReport> {
    let table_dir = table_dir.as_str();
    let mut report = PurgeReport::default();
    let reachable = walk(storage, table_dir, &metadata, |_| true, Mode::Lenient).await?;
    let (meta_files, meta_outside) = metadata_files_split(storage, table_dir, &metadata_location, &metadata);
    report.skipped += reachable.outside.len() + meta_outside.len() + reachable.unreadable;
    for file in reachable.outside.iter().chain(&meta_outside) {
        tracing::warn!(file = %file, "purge: referenced file outside the table location left alone");
    }
    let mut files = reachable.all();
    files.extend(meta_files);

    let mut parents: BTreeSet<String> = BTreeSet::new();
    for location in &files {
        // Only regular files: a link, FIFO or directory under the table location stays.
        match storage.delete(location).await {
            Ok(Deleted::Deleted) => {
                report.deleted += 1;
                if let Some(p) = parent(location) {
                    parents.insert(p.to_string());
                }
            }
            Ok(Deleted::Missing) => {} // already gone
            Ok(Deleted::NotAFile) => report.skipped += 1,
            Err(e) => {
                tracing::warn!(file = %location, error = %e, "purge: could not delete");
                report.skipped += 1;
            }
        }
    }
    // Deepest first, so a parent is tried after its children.
    let below_table = format!("{table_dir}/");
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for p in parents {
        let mut dir = p.as_str();
        while dir.starts_with(&below_table) {
            dirs.insert(dir.to_string());
            match parent(dir) {
                Some(up) => dir = up,
                None => break,
            }
        }
    }
    let mut dirs: Vec<String> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    dirs.push(table_dir.to_string());
    for dir in dirs {
        if storage.remove_empty_dir(&dir).await.unwrap_or(false) {
            report.dirs_removed += 1;
        }
    }
    Ok(report)
}
