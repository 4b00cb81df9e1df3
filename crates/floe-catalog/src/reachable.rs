//! The files a table's metadata references, walked from its snapshots: what purge deletes, what
//! snapshot expiry may delete (referenced before, not after) and what orphan cleanup must keep.
//!
//! ```text
//! metadata ─► snapshot ─► manifest list ─► manifest ─► entry (ADDED | EXISTING | DELETED) ─► data / delete file
//! ```
//!
//! Manifest lists and manifests are read through the warehouse [`Storage`] like metadata: only
//! regular files below the table location, at most [`MAX_MANIFEST_BYTES`] each. Every location
//! is answered in its normalised form (what [`Storage::list`] answers), so sets of them compare;
//! a referenced location outside the table folder is counted in [`Reachable::outside`] and never
//! acted on.
//!
//! Two modes: [`Mode::Lenient`] (purge: a table being dropped, delete what can be found) skips a
//! manifest it cannot read with a warning; [`Mode::Strict`] (expiry, orphan cleanup: they delete
//! what is *not* referenced, so a reference they failed to see would lose data) fails the walk.

use std::collections::BTreeSet;

use iceberg::spec::{Manifest, ManifestList, ManifestStatus, TableMetadata};
use iceberg::{Error, ErrorKind, Result};

use crate::storage::Storage;

/// The largest manifest list or manifest file read.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

/// What a walk does with a manifest list or manifest it cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Skip it with a warning.
    Lenient,
    /// Fail the walk.
    Strict,
}

/// The files referenced from a set of snapshots (normalised locations below the table folder).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reachable {
    /// The snapshots' manifest lists.
    pub manifest_lists: BTreeSet<String>,
    /// The manifests those list.
    pub manifests: BTreeSet<String>,
    /// Data and delete files some manifest lists as `ADDED` or `EXISTING`: what a reader of one
    /// of the snapshots opens.
    pub live: BTreeSet<String>,
    /// Files a manifest lists only as `DELETED` (removed by the snapshot that wrote it).
    pub removed: BTreeSet<String>,
    /// Referenced locations outside the table folder (left alone by every caller).
    pub outside: BTreeSet<String>,
    /// Manifest lists or manifests skipped as unreadable ([`Mode::Lenient`] only).
    pub unreadable: usize,
}

impl Reachable {
    /// Every file referenced: manifest lists, manifests, live and removed content files.
    pub fn all(&self) -> BTreeSet<String> {
        let mut all = self.manifest_lists.clone();
        all.extend(self.manifests.iter().cloned());
        all.extend(self.live.iter().cloned());
        all.extend(self.removed.iter().cloned());
        all
    }
}

/// Walks the snapshots of `metadata` that `keep` selects (by snapshot id), below `table_dir`
/// (a checked, normalised table location).
pub async fn walk(
    storage: &dyn Storage,
    table_dir: &str,
    metadata: &TableMetadata,
    keep: impl Fn(i64) -> bool,
    mode: Mode,
) -> Result<Reachable> {
    let warehouse = storage.warehouse().clone();
    let mut out = Reachable::default();
    let note = |location: &str, out: &mut Reachable| -> Option<String> {
        match warehouse.below(table_dir, location) {
            Some(l) => Some(l),
            None => {
                out.outside.insert(location.to_string());
                None
            }
        }
    };
    for snapshot in metadata.snapshots().filter(|s| keep(s.snapshot_id())) {
        let Some(list) = note(snapshot.manifest_list(), &mut out) else {
            if mode == Mode::Strict {
                return Err(outside("manifest list", snapshot.manifest_list()));
            }
            continue;
        };
        out.manifest_lists.insert(list.clone());
        let Some(bytes) = read(storage, &list, mode, &mut out.unreadable).await? else {
            continue;
        };
        match ManifestList::parse_with_version(&bytes, metadata.format_version()) {
            Ok(l) => {
                for m in l.entries() {
                    match note(&m.manifest_path, &mut out) {
                        Some(path) => {
                            out.manifests.insert(path);
                        }
                        None if mode == Mode::Strict => return Err(outside("manifest", &m.manifest_path)),
                        None => {}
                    }
                }
            }
            Err(e) => unreadable(mode, "manifest list", &list, &e.to_string(), &mut out.unreadable)?,
        }
    }
    let manifests: Vec<String> = out.manifests.iter().cloned().collect();
    for manifest in manifests {
        let Some(bytes) = read(storage, &manifest, mode, &mut out.unreadable).await? else {
            continue;
        };
        match Manifest::parse_avro(&bytes) {
            Ok(m) => {
                for entry in m.entries() {
                    // A file outside the table folder is noted, never read or deleted.
                    let Some(path) = note(entry.file_path(), &mut out) else {
                        continue;
                    };
                    if entry.status() == ManifestStatus::Deleted {
                        out.removed.insert(path);
                    } else {
                        out.live.insert(path);
                    }
                }
            }
            Err(e) => unreadable(mode, "manifest", &manifest, &e.to_string(), &mut out.unreadable)?,
        }
    }
    // A file live in one manifest and listed as removed in another is live.
    let live = out.live.clone();
    out.removed.retain(|f| !live.contains(f));
    Ok(out)
}

/// The metadata files `metadata` (read from `metadata_location`) references: itself, its
/// `metadata-log`, statistics and partition statistics — normalised, below `table_dir`.
pub fn metadata_files(
    storage: &dyn Storage,
    table_dir: &str,
    metadata_location: &str,
    metadata: &TableMetadata,
) -> BTreeSet<String> {
    metadata_files_split(storage, table_dir, metadata_location, metadata).0
}

/// [`metadata_files`], and the referenced locations that lie outside `table_dir` (as written).
pub fn metadata_files_split(
    storage: &dyn Storage,
    table_dir: &str,
    metadata_location: &str,
    metadata: &TableMetadata,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let warehouse = storage.warehouse();
    let (mut inside, mut outside) = (BTreeSet::new(), BTreeSet::new());
    let all = std::iter::once(metadata_location.to_string())
        .chain(metadata.metadata_log().iter().map(|l| l.metadata_file.clone()))
        .chain(metadata.statistics_iter().map(|s| s.statistics_path.clone()))
        .chain(metadata.partition_statistics_iter().map(|s| s.statistics_path.clone()));
    for l in all {
        match warehouse.below(table_dir, &l) {
            Some(n) => {
                inside.insert(n);
            }
            None => {
                outside.insert(l);
            }
        }
    }
    (inside, outside)
}

fn outside(what: &str, location: &str) -> Error {
    let shown: String = location.chars().take(300).collect();
    Error::new(
        ErrorKind::DataInvalid,
        format!("{what} {shown:?} is outside the table location; nothing is deleted"),
    )
}

fn unreadable(mode: Mode, what: &str, location: &str, why: &str, count: &mut usize) -> Result<()> {
    match mode {
        Mode::Strict => Err(Error::new(
            ErrorKind::DataInvalid,
            format!("{what} {location} cannot be read ({why}); nothing is deleted"),
        )),
        Mode::Lenient => {
            tracing::warn!(file = %location, reason = %why, "{what} not read");
            *count += 1;
            Ok(())
        }
    }
}

async fn read(storage: &dyn Storage, location: &str, mode: Mode, count: &mut usize) -> Result<Option<bytes::Bytes>> {
    match storage.read(location, MAX_MANIFEST_BYTES, "manifest").await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) => {
            unreadable(mode, "manifest file", location, e.message(), count)?;
            Ok(None)
        }
    }
}
