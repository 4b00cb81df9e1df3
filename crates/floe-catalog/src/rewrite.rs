//! The rewrite commit: replace a set of data files by another in one snapshot — what compaction
//! (`replace`) and a copy-on-write delete (`delete` / `overwrite`) commit. iceberg-rust 0.10 can
//! only fast-append, so this builds the snapshot itself from the crate's public spec types
//! (manifest and manifest-list writers, [`TableUpdate`], [`TableRequirement`]) and lands it
//! through [`FloeCatalog::commit_changes`], the same compare-and-swap every commit goes through.
//!
//! # The snapshot
//!
//! ```text
//! current snapshot's manifest list            new manifest list (operation replace|delete|overwrite)
//!   M1, M3 (list files read) ── merged ─────►   M'…  per partition spec: EXISTING entries kept
//!                                                    (ids, sequence numbers), DELETED entries for
//!                                                    the files read; clustered by partition, a
//!                                                    new manifest every ~target size
//!   M2 (untouched)           ── carried ────►   M2
//!   M4 (no live file left)   ── dropped
//!                                               A    ADDED: the files written (new sequence number)
//! ```
//!
//! Merging the manifests it touches keeps the one-manifest-per-append pile of a streaming
//! table from growing with every compaction; a manifest an earlier removal left with no live
//! file is dropped (the snapshot that removed its files still lists it). The merged entries
//! are ordered by partition and cut into manifests near the table's
//! `commit.manifest.target-size-bytes` (default 8 MiB; estimated from the bytes per entry of
//! the manifests read), so a reader's partition filter skips most of them.
//!
//! A *manifest rewrite* is the same commit with no file read or written: `removed` names the
//! manifests to merge, each with an empty set of files. It changes no row and no data file —
//! only how the live entries are grouped into manifests (a `replace` snapshot with the
//! summary's `manifests-created` / `manifests-replaced` / `manifests-kept`).
//!
//! # The conflict rule (rebase)
//!
//! A rewrite is planned on one snapshot (its *base*) and lands on whatever snapshot is current
//! when it commits, provided that
//!
//! 1. every manifest that listed a file it read is still listed, unchanged, by the current
//!    snapshot — so each of those files is still live, exactly as read; and
//! 2. no delete file (position or equality delete) arrived after the base — it could apply to
//!    the rows the rewrite moved into new files (a manifest rewrite moves no rows: sequence
//!    numbers are kept, so it does not mind).
//!
//! So appends never conflict with a rewrite (a fast-append carries every manifest as it is); a
//! rewrite or delete of the same files by anyone — another compaction, an outside engine —
//! does, and the rewrite is abandoned with [`ErrorKind::CatalogCommitConflicts`] and the
//! message *the rewrite was abandoned*; the caller deletes the files it wrote and plans again
//! later. A compare-and-swap lost to a commit that keeps the rule is retried on the new
//! snapshot (up to `retries` times). The manifests and manifest list of an abandoned attempt are
//! deleted here; when the outcome of the final `COMMIT` is unknown they are kept (the table
//! may point at them) and orphan cleanup removes them later if it does not.
//!
//! Every file a rewrite writes is named after its id — manifests `<id>-m<N>.avro`, the
//! manifest list `snap-<snapshot>-<n>-<id>.avro`, and the metadata file
//! `<version>-<id>.metadata.json` (the snapshot summary carries it as `floe.attempt`) — so the
//! files of a failed rewrite can all be found by its id.
//!
//! Only format-version 2 tables are rewritten (v1 has no sequence numbers to keep; v3's row
//! lineage is not carried yet): others are refused with a message that says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, Manifest, ManifestContentType, ManifestFile, ManifestList,
    ManifestListWriter, ManifestStatus, ManifestWriterBuilder, Operation, Snapshot, SnapshotReference,
    SnapshotRetention, Summary, TableMetadata,
};
use iceberg::{Error, ErrorKind, Result, TableIdent, TableRequirement, TableUpdate};

use crate::catalog::{CommittedTable, FloeCatalog, TableChange};
use crate::outcome::commit_state_unknown;
use crate::reachable::MAX_MANIFEST_BYTES;

/// Snapshot summary key naming the floe operation that committed a rewrite
/// (`compact`, `delete`, `retention`).
pub const PROP_MAINTENANCE: &str = "floe.maintenance";

/// One rewrite: which files go, which come.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The snapshot the rewrite was planned on (and its files read from).
    pub base_snapshot_id: i64,
    /// The data files read and replaced, by the manifest that lists them live in the base
    /// snapshot (locations as the manifest spells them).
    pub removed: BTreeMap<String, BTreeSet<String>>,
    /// The data files written, in the table's default partition spec.
    pub added: Vec<DataFile>,
    /// The snapshot's operation: `replace` (same rows, other files), `delete` or `overwrite`.
    pub operation: Operation,
    /// Extra snapshot summary properties (e.g. [`PROP_MAINTENANCE`]).
    pub properties: HashMap<String, String>,
    /// Names this rewrite's manifest files (`<id>-m<N>.avro`, `snap-<snapshot>-<n>-<id>.avro`).
    pub id: uuid::Uuid,
}

/// A rewrite that landed.
#[derive(Debug, Clone)]
pub struct RewriteCommitted {
    /// The table as the commit left it.
    pub table: CommittedTable,
    /// The new snapshot.
    pub snapshot_id: i64,
    /// How many times it was rebased onto a newer snapshot (a lost compare-and-swap).
    pub rebased: u32,
}

/// Commits `rewrite` to table `ident` (see the module docs for the rule); on an abandoned or
/// failed rewrite nothing of it is left in the table and the error says why.
pub async fn commit_rewrite(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    rewrite: &Rewrite,
    retries: u32,
) -> Result<RewriteCommitted> {
    let mut rebased = 0;
    loop {
        let (_, metadata) = catalog.load_metadata(ident).await?;
        let mut written = Vec::new();
        let change = match prepare(catalog, ident, &metadata, rewrite, rebased, &mut written).await {
            Ok(change) => change,
            Err(e) => {
                delete_files(catalog, &written).await;
                return Err(e);
            }
        };
        let snapshot_id = change.1;
        match catalog.commit_changes(vec![change.0]).await {
            Ok(mut committed) => {
                return Ok(RewriteCommitted {
                    table: committed.remove(0),
                    snapshot_id,
                    rebased,
                });
            }
            Err(e) if commit_state_unknown(&e) => return Err(e),
            Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts && rebased < retries => {
                delete_files(catalog, &written).await;
                rebased += 1;
            }
            Err(e) => {
                delete_files(catalog, &written).await;
                return Err(e);
            }
        }
    }
}

fn abandoned(why: String) -> Error {
    Error::new(
        ErrorKind::CatalogCommitConflicts,
        format!("{why}; the rewrite was abandoned (nothing of it is in the table)"),
    )
}

/// Builds the change (and writes its manifests and manifest list, noting each in `written`)
/// onto the current snapshot of `metadata`.
async fn prepare(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    metadata: &TableMetadata,
    rewrite: &Rewrite,
    attempt: u32,
    written: &mut Vec<String>,
) -> Result<(TableChange, i64)> {
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::new(
            ErrorKind::FeatureUnsupported,
            format!(
                "table {ident} is format version {}; floe rewrites format version 2 tables only",
                metadata.format_version()
            ),
        ));
    }
    let current = metadata
        .current_snapshot()
        .ok_or_else(|| abandoned(format!("table {ident} has no current snapshot any more")))?;
    let base = metadata.snapshot_by_id(rewrite.base_snapshot_id).ok_or_else(|| {
        abandoned(format!(
            "the snapshot {} the rewrite was planned on is gone",
            rewrite.base_snapshot_id
        ))
    })?;
    let list = read_manifest_list(catalog, metadata, current.manifest_list()).await?;
    let listed: HashMap<&str, &ManifestFile> = list.entries().iter().map(|m| (m.manifest_path.as_str(), m)).collect();
    for manifest in rewrite.removed.keys() {
        if !listed.contains_key(manifest.as_str()) {
            return Err(abandoned(format!(
                "the files this rewrite read were rewritten or deleted by snapshot {} (their manifest {manifest} is no longer listed)",
                current.snapshot_id()
            )));
        }
    }
    let moves_rows = !rewrite.added.is_empty() || rewrite.removed.values().any(|f| !f.is_empty());
    if moves_rows
        && let Some(m) = list
            .entries()
            .iter()
            .find(|m| m.content == ManifestContentType::Deletes && m.sequence_number > base.sequence_number())
    {
        return Err(abandoned(format!(
            "delete files arrived after the rewrite was planned (manifest {})",
            m.manifest_path
        )));
    }

    let snapshot_id = new_snapshot_id(metadata);
    let sequence_number = metadata.next_sequence_number();
    let dir = format!("{}/metadata", metadata.location().trim_end_matches('/'));
    let file_io = catalog.file_io();
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut n = 0;
    let mut removed_files = 0u64;
    let mut removed_rows = 0u64;
    let mut removed_bytes = 0u64;
    // The manifests that listed a file read, merged per partition spec: their other entries
    // carried as EXISTING (ids and sequence numbers kept), the files read as DELETED —
    // clustered by partition and cut at the target manifest size.
    let mut by_spec: BTreeMap<i32, Vec<(&String, &BTreeSet<String>)>> = BTreeMap::new();
    for (path, files) in &rewrite.removed {
        by_spec
            .entry(listed[path.as_str()].partition_spec_id)
            .or_default()
            .push((path, files));
    }
    let target = manifest_target_bytes(metadata);
    let mut replaced_manifests = 0u64;
    let mut processed = 0u64;
    for group in by_spec.values() {
        let mut kept: Vec<Kept> = Vec::new();
        let mut source_bytes = 0u64;
        let mut source_entries = 0u64;
        let mut first: Option<Manifest> = None;
        for (path, files) in group {
            let original = listed[path.as_str()];
            let manifest = read_manifest(catalog, original).await?;
            replaced_manifests += 1;
            source_bytes += original.manifest_length.max(0) as u64;
            source_entries += manifest.entries().len() as u64;
            let mut found = BTreeSet::new();
            for entry in manifest.entries() {
                if entry.status() == ManifestStatus::Deleted {
                    continue; // the removal an earlier snapshot recorded; not carried
                }
                processed += 1;
                let (seq, file_seq, added_by) = inherited(entry, original);
                let data_file = entry.data_file().clone();
                let deleted = files.contains(entry.file_path());
                if deleted {
                    found.insert(entry.file_path().to_string());
                    removed_files += 1;
                    removed_rows += data_file.record_count();
                    removed_bytes += data_file.file_size_in_bytes();
                }
                kept.push(Kept {
                    data_file,
                    deleted,
                    seq,
                    file_seq,
                    added_by,
                });
            }
            if let Some(missing) = files.iter().find(|f| !found.contains(*f)) {
                return Err(abandoned(format!(
                    "the data file {missing} is no longer live in manifest {path}"
                )));
            }
            if first.is_none() {
                first = Some(manifest);
            }
        }
        let Some(first) = first else { continue };
        // Clustered by partition (in a stable order), cut where the estimated size of a
        // manifest reaches the target.
        let per_entry = (source_bytes / source_entries.max(1)).max(1);
        let per_manifest = (target / per_entry).max(1) as usize;
        let mut clusters: HashMap<&iceberg::spec::Struct, Vec<&Kept>> = HashMap::new();
        for k in &kept {
            clusters.entry(k.data_file.partition()).or_default().push(k);
        }
        let mut clusters: Vec<(String, Vec<&Kept>)> =
            clusters.into_iter().map(|(p, ks)| (format!("{p:?}"), ks)).collect();
        clusters.sort_by(|a, b| a.0.cmp(&b.0));
        let ordered: Vec<&Kept> = clusters.into_iter().flat_map(|(_, ks)| ks).collect();
        for chunk in ordered.chunks(per_manifest) {
            let location = format!("{dir}/{}-m{n}.avro", rewrite.id);
            n += 1;
            let mut writer = ManifestWriterBuilder::new(
                file_io.new_output(&location)?,
                Some(snapshot_id),
                first.metadata().schema().clone(),
                first.metadata().partition_spec().clone(),
            )
            .build_v2_data();
            for k in chunk {
                if k.deleted {
                    writer.add_delete_file(k.data_file.clone(), k.seq, Some(k.file_seq))?;
                } else {
                    writer.add_existing_file(k.data_file.clone(), k.added_by, k.seq, Some(k.file_seq))?;
                }
            }
            written.push(location);
            manifests.push(writer.write_manifest_file().await?);
        }
    }
    let added_rows: u64 = rewrite.added.iter().map(DataFile::record_count).sum();
    let added_bytes: u64 = rewrite.added.iter().map(DataFile::file_size_in_bytes).sum();
    if !rewrite.added.is_empty() {
        let location = format!("{dir}/{}-m{n}.avro", rewrite.id);
        let mut writer = ManifestWriterBuilder::new(
            file_io.new_output(&location)?,
            Some(snapshot_id),
            metadata.current_schema().clone(),
            metadata.default_partition_spec().as_ref().clone(),
        )
        .build_v2_data();
        for file in &rewrite.added {
            writer.add_file(file.clone(), sequence_number)?;
        }
        written.push(location);
        manifests.push(writer.write_manifest_file().await?);
    }
    // The new manifests first, then every untouched one as it is — except those left with
    // no live file by an earlier removal (they only recorded it; that snapshot keeps them).
    let carried = list
        .entries()
        .iter()
        .filter(|m| !rewrite.removed.contains_key(&m.manifest_path))
        .filter(|m| m.has_added_files() || m.has_existing_files())
        .cloned();
    let list_location = format!("{dir}/snap-{snapshot_id}-{attempt}-{}.avro", rewrite.id);
    let mut list_writer = ManifestListWriter::v2(
        file_io.new_output(&list_location)?.writer().await?,
        snapshot_id,
        Some(current.snapshot_id()),
        sequence_number,
    );
    let created = manifests.len() as u64;
    let carried: Vec<ManifestFile> = carried.collect();
    let kept_manifests = carried.len() as u64;
    list_writer.add_manifests(manifests.into_iter().chain(carried))?;
    written.push(list_location.clone());
    list_writer.close().await?;

    let mut props = rewrite.properties.clone();
    // Names the commit's metadata file after the rewrite, like its manifests.
    props.insert(crate::positions::PROP_ATTEMPT.to_string(), rewrite.id.to_string());
    let counts = [
        ("added-data-files", rewrite.added.len() as u64),
        ("added-records", added_rows),
        ("added-files-size", added_bytes),
        ("deleted-data-files", removed_files),
        ("deleted-records", removed_rows),
        ("removed-files-size", removed_bytes),
        ("manifests-created", created),
        ("manifests-replaced", replaced_manifests),
        ("manifests-kept", kept_manifests),
        ("entries-processed", processed),
    ];
    for (k, v) in counts {
        props.insert(k.to_string(), v.to_string());
    }
    let totals = [
        ("total-data-files", rewrite.added.len() as u64, removed_files),
        ("total-records", added_rows, removed_rows),
        ("total-files-size", added_bytes, removed_bytes),
    ];
    let before = &current.summary().additional_properties;
    for (k, add, remove) in totals {
        if let Some(v) = before.get(k).and_then(|v| v.parse::<u64>().ok()) {
            props.insert(k.to_string(), (v + add).saturating_sub(remove).to_string());
        }
    }
    for k in ["total-delete-files", "total-position-deletes", "total-equality-deletes"] {
        if let Some(v) = before.get(k) {
            props.insert(k.to_string(), v.clone());
        }
    }
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(current.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis().max(metadata.last_updated_ms()))
        .with_manifest_list(list_location)
        .with_summary(Summary {
            operation: rewrite.operation.clone(),
            additional_properties: props,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    let change = TableChange {
        ident: ident.clone(),
        requirements: vec![
            TableRequirement::UuidMatch { uuid: metadata.uuid() },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_string(),
                snapshot_id: Some(current.snapshot_id()),
            },
        ],
        updates: vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: MAIN_BRANCH.to_string(),
                reference: SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None)),
            },
        ],
    };
    Ok((change, snapshot_id))
}

/// One live entry of a merged manifest, carried as EXISTING or recorded as DELETED.
struct Kept {
    data_file: DataFile,
    deleted: bool,
    seq: i64,
    file_seq: i64,
    added_by: i64,
}

/// Iceberg's `commit.manifest.target-size-bytes` (default 8 MiB): merged manifests are cut
/// near this size.
pub const PROP_MANIFEST_TARGET: &str = "commit.manifest.target-size-bytes";
/// The default of [`PROP_MANIFEST_TARGET`].
pub const DEFAULT_MANIFEST_TARGET_BYTES: u64 = 8 * 1024 * 1024;

/// The table's target manifest size ([`PROP_MANIFEST_TARGET`], at least 4 KiB).
pub fn manifest_target_bytes(metadata: &TableMetadata) -> u64 {
    metadata
        .properties()
        .get(PROP_MANIFEST_TARGET)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_MANIFEST_TARGET_BYTES)
        .max(4096)
}

/// An entry's data sequence number, file sequence number and adding snapshot, with the
/// manifest's values filled in where the entry inherits them (an `ADDED` entry written with
/// nulls).
fn inherited(entry: &iceberg::spec::ManifestEntry, manifest: &ManifestFile) -> (i64, i64, i64) {
    let seq = entry.sequence_number.unwrap_or(manifest.sequence_number);
    let file_seq = entry.file_sequence_number.unwrap_or(manifest.sequence_number);
    let added_by = entry.snapshot_id.unwrap_or(manifest.added_snapshot_id);
    (seq, file_seq, added_by)
}

/// A fresh positive snapshot id not used by the table.
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let id = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
        if id > 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// A snapshot's manifest list, read through the warehouse storage (bounded).
pub async fn read_manifest_list(
    catalog: &FloeCatalog,
    metadata: &TableMetadata,
    location: &str,
) -> Result<ManifestList> {
    let location = catalog.warehouse_rule().check("manifest list", location)?;
    let bytes = catalog
        .storage()
        .read(&location, MAX_MANIFEST_BYTES, "manifest list")
        .await?;
    ManifestList::parse_with_version(&bytes, metadata.format_version())
}

/// A manifest, read through the warehouse storage (bounded).
pub async fn read_manifest(catalog: &FloeCatalog, manifest: &ManifestFile) -> Result<Manifest> {
    let location = catalog.warehouse_rule().check("manifest", &manifest.manifest_path)?;
    let bytes = catalog
        .storage()
        .read(&location, MAX_MANIFEST_BYTES, "manifest")
        .await?;
    Manifest::parse_avro(&bytes)
}

async fn delete_files(catalog: &FloeCatalog, locations: &[String]) {
    for location in locations {
        if let Err(e) = catalog.storage().delete(location).await {
            tracing::warn!(file = %location, error = %e, "could not delete a file of an abandoned rewrite");
        }
    }
}
