//! Manifest rewrite: merge the one-manifest-per-commit pile of a streaming table into few
//! manifests clustered by partition, without touching a data file or a row.
//!
//! ```text
//! current snapshot: M1 M2 … M400 (data, each < target)   BIG (≥ target)   D (delete manifest)
//!                    └──── merged, ordered by partition ──┘
//! replace snapshot:  N1 N2 (each ≈ commit.manifest.target-size-bytes)   BIG   D
//! ```
//!
//! The candidates are the current snapshot's data manifests below the table's target manifest
//! size ([`floe_catalog::rewrite::manifest_target_bytes`]); at most [`MAX_BYTES_PER_COMMIT`] of
//! them are merged per commit (bounding memory), and a run commits again until fewer than
//! `min_input_manifests` candidates are left. Each commit goes through
//! [`floe_catalog::rewrite::commit_rewrite`] with every candidate named and no file moved, so
//! its conflict rule is the one of every rewrite: an append landing meanwhile is carried over,
//! a manifest that another commit replaced meanwhile abandons the rewrite (nothing lost; the
//! next run plans again). The new manifests are named after the rewrite's id and recorded as a
//! maintenance attempt while they are written, like compaction's files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use floe_catalog::FloeCatalog;
use floe_catalog::rewrite::{PROP_MAINTENANCE, Rewrite, commit_rewrite, manifest_target_bytes, read_manifest_list};
use iceberg::spec::{FormatVersion, ManifestContentType, Operation};
use iceberg::{Catalog, TableIdent};

use super::{Progress, begin_attempt, clean_attempts, end_attempt, renew_while};
use crate::error::{Error, Result};

/// At most this many bytes of manifests are merged by one commit.
pub const MAX_BYTES_PER_COMMIT: u64 = 32 * 1024 * 1024;
/// Default `min_input_manifests` of the CLI (the background runner's is in the config).
pub const DEFAULT_MIN_INPUT_MANIFESTS: usize = 2;
/// A run stops after this many commits, whatever is left (the next run goes on).
const MAX_COMMITS: usize = 64;
/// Compare-and-swap retries of one commit (each a rebase onto the appends that landed).
const COMMIT_RETRIES: u32 = 8;

/// What a manifest rewrite does.
#[derive(Debug, Clone)]
pub struct ManifestOptions {
    /// Rewrite only when at least this many data manifests are below the target size (≥ 2).
    pub min_input_manifests: usize,
    /// Plan and report only.
    pub dry_run: bool,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            min_input_manifests: DEFAULT_MIN_INPUT_MANIFESTS,
            dry_run: false,
        }
    }
}

/// What a manifest rewrite did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ManifestReport {
    /// Data manifests of the current snapshot before.
    pub manifests_before: usize,
    /// Data manifests of the current snapshot after.
    pub manifests_after: usize,
    /// Manifests merged away.
    pub manifests_rewritten: usize,
    /// Manifests written (in a dry run: the estimate at the target size).
    pub manifests_written: usize,
    /// Bytes of the manifests merged away.
    pub bytes_rewritten: u64,
    /// Snapshots committed.
    pub commits: usize,
    /// Commits rebased onto appends that landed meanwhile.
    pub rebased: u32,
    /// Rewrites abandoned (a manifest they merged was replaced by another commit).
    pub abandoned: usize,
    /// Why nothing was rewritten, when nothing was.
    pub skipped: Option<String>,
    /// Seconds spent.
    pub seconds: f64,
}

/// Rewrites the manifests of table `ident` (see the module docs).
pub async fn rewrite_manifests(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    options: &ManifestOptions,
    progress: &dyn Progress,
) -> Result<ManifestReport> {
    let started = Instant::now();
    let min_input = options.min_input_manifests.max(2);
    if !options.dry_run {
        clean_attempts(catalog, ident).await?;
    }
    let mut report = ManifestReport::default();
    let mut ours: BTreeSet<String> = BTreeSet::new();
    let mut first = true;
    // Set after the run's last commit: one more pass counts the manifests it left.
    let mut last = false;
    loop {
        let table = catalog.load_table(ident).await?;
        let metadata = table.metadata();
        let Some(snapshot) = metadata.current_snapshot() else {
            report.skipped = Some("the table has no snapshot".into());
            break;
        };
        if metadata.format_version() != FormatVersion::V2 {
            report.skipped = Some(format!(
                "format version {} (floe rewrites format version 2 tables only)",
                metadata.format_version()
            ));
            break;
        }
        let target = manifest_target_bytes(metadata);
        let list = read_manifest_list(catalog, metadata, snapshot.manifest_list()).await?;
        let data: Vec<_> = list
            .entries()
            .iter()
            .filter(|m| m.content == ManifestContentType::Data)
            .collect();
        report.manifests_after = data.len();
        if first {
            report.manifests_before = data.len();
        }
        if last {
            break;
        }
        // Smallest first; the manifests this run wrote are left for the next run.
        let mut candidates: Vec<_> = data
            .iter()
            .filter(|m| (m.manifest_length.max(0) as u64) < target)
            .filter(|m| !ours.iter().any(|id| m.manifest_path.contains(id.as_str())))
            .collect();
        candidates.sort_by_key(|m| m.manifest_length);
        let mut take = 0;
        let mut bytes = 0u64;
        for m in &candidates {
            if take >= 2 && bytes + m.manifest_length.max(0) as u64 > MAX_BYTES_PER_COMMIT {
                break;
            }
            bytes += m.manifest_length.max(0) as u64;
            take += 1;
        }
        let capped = take < candidates.len();
        candidates.truncate(take);
        if candidates.len() < min_input {
            if first {
                report.skipped = Some(format!(
                    "{} data manifest(s) below the target size of {} KiB; at least {min_input} make a rewrite",
                    candidates.len(),
                    target / 1024
                ));
            }
            break;
        }
        if first {
            progress.start("rewrite-manifests", bytes);
        }
        first = false;
        if options.dry_run {
            let mut by_spec: BTreeMap<i32, u64> = BTreeMap::new();
            for m in &candidates {
                *by_spec.entry(m.partition_spec_id).or_default() += m.manifest_length.max(0) as u64;
            }
            let written: usize = by_spec.values().map(|b| b.div_ceil(target) as usize).sum();
            report.manifests_rewritten += candidates.len();
            report.manifests_written += written;
            report.bytes_rewritten += bytes;
            report.manifests_after = data.len() - candidates.len() + written;
            progress.advance(bytes);
            break;
        }
        let id = uuid::Uuid::new_v4();
        let rewrite = Rewrite {
            base_snapshot_id: snapshot.snapshot_id(),
            removed: candidates
                .iter()
                .map(|m| (m.manifest_path.clone(), BTreeSet::new()))
                .collect(),
            added: vec![],
            operation: Operation::Replace,
            properties: HashMap::from([(PROP_MAINTENANCE.to_string(), "rewrite-manifests".to_string())]),
            id,
        };
        let location = metadata.location().to_string();
        begin_attempt(catalog, ident, id, &location).await?;
        let work = async { commit_rewrite(catalog, ident, &rewrite, COMMIT_RETRIES).await };
        match renew_while(catalog, ident, id, &location, work).await {
            Ok(committed) => {
                end_attempt(catalog, ident, id).await?;
                ours.insert(id.to_string());
                let summary = committed
                    .table
                    .metadata
                    .snapshot_by_id(committed.snapshot_id)
                    .map(|s| s.summary().additional_properties.clone())
                    .unwrap_or_default();
                let created = summary
                    .get("manifests-created")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or_default();
                report.commits += 1;
                report.rebased += committed.rebased;
                report.manifests_rewritten += candidates.len();
                report.manifests_written += created;
                report.bytes_rewritten += bytes;
                progress.advance(bytes);
            }
            Err(e) if floe_catalog::commit_state_unknown(&e) => return Err(Error::Iceberg(e)),
            Err(e) => {
                // commit_rewrite deleted what it wrote; forget the attempt.
                if let Err(forget) = end_attempt(catalog, ident, id).await {
                    tracing::warn!(%id, error = %forget, "could not forget a failed manifest rewrite; its next run cleans it");
                }
                if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts {
                    tracing::info!(table = %ident, error = %e, "manifest rewrite abandoned; it is planned again on its next run");
                    report.abandoned += 1;
                    break;
                }
                return Err(Error::Iceberg(e));
            }
        }
        last = !capped || report.commits >= MAX_COMMITS;
    }
    if !first {
        progress.finish();
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
