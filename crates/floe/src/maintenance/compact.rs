//! Compaction: bin-pack a table's small data files, within each partition, into files near the
//! target size, and commit them as one `replace` snapshot per group of bins through
//! [`floe_catalog::rewrite`] (which rebases onto appends that landed meanwhile and abandons the
//! rewrite when a file it read was rewritten or deleted).
//!
//! ```text
//! current snapshot ─► live data files of the default spec, smaller than small_file_bytes
//!   ─► grouped by partition ─► first-fit bins of ≤ target_file_bytes (≥ min_input_files each)
//!   ─► read in commit order (Iceberg Arrow reader, the table's current schema; small files
//!      read ahead in parallel) ─► sort (table sort order)
//!   ─► Parquet writer (`floe-compact-<rewrite id>-…`) ─► commit_rewrite (replace)
//! ```
//!
//! Skipped, with the reason in the report: tables with delete files (their rows would need the
//! deletes applied first), tables not in format version 2, files of an older partition spec.
//! A bin of a sorted table is sorted in memory, so its input is capped at
//! [`SORTED_BIN_BYTES`]; unsorted bins stream through the writer.
//!
//! Each commit group is an attempt ([`super::begin_attempt`]); the files of a rewrite that
//! fails or is abandoned are deleted at once; a process killed before its commit leaves them
//! unreferenced, and the next compaction of the table deletes them ([`super::clean_attempts`]). The table is never left pointing at a missing file: old files stay referenced by the
//! older snapshots until snapshot expiry removes those.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use floe_catalog::rewrite::{PROP_MAINTENANCE, Rewrite, commit_rewrite, read_manifest, read_manifest_list};
use floe_catalog::{FloeCatalog, commit_state_unknown};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::scan::FileScanTask;
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, ManifestContentType, Operation, PartitionKey, SortDirection, Struct,
    Transform,
};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, TableIdent};
use parquet::file::properties::WriterProperties;

use super::{Progress, begin_attempt, clean_attempts, end_attempt, renew_while, table_writer_properties};
use crate::error::{Error, Result};
use crate::layout::SortKey;
use crate::sink::sort::sort_batches;

/// The most compressed input bytes one bin of a sorted table takes (it is sorted in memory).
pub const SORTED_BIN_BYTES: u64 = 64 * 1024 * 1024;
/// Commit after this many input bytes: a long compaction lands in parts (each a snapshot), so
/// a conflict or a crash loses little work.
pub const COMMIT_BYTES: u64 = 1024 * 1024 * 1024;
/// Retries of a compaction commit that lost the compare-and-swap to an append.
pub const COMMIT_RETRIES: u32 = 10;
/// The smallest target file size compaction packs to: below it a table would be rewritten into
/// ever more files.
pub const MIN_TARGET_FILE_BYTES: u64 = 1024 * 1024;
/// The largest: above it a "small" file could be any file, and every round would rewrite whole
/// partitions again.
pub const MAX_TARGET_FILE_BYTES: u64 = crate::config::MAX_TARGET_FILE_SIZE_MB * 1024 * 1024;
/// The table property that names the size data files are written to (Iceberg's own).
pub const TARGET_FILE_SIZE_PROPERTY: &str = "write.target-file-size-bytes";

/// Checks a target file size against [`MIN_TARGET_FILE_BYTES`]..=[`MAX_TARGET_FILE_BYTES`].
pub fn check_target_file_bytes(bytes: u64) -> std::result::Result<u64, String> {
    if (MIN_TARGET_FILE_BYTES..=MAX_TARGET_FILE_BYTES).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "a target file size of {bytes} bytes is outside {MIN_TARGET_FILE_BYTES}..={MAX_TARGET_FILE_BYTES} (1 MiB to 16 GiB)"
        ))
    }
}

/// The size a table's data files are packed to: its `write.target-file-size-bytes` when set,
/// else floe's default (128 MiB). Any engine can set the property, so a value that is not a
/// whole number of bytes in [`MIN_TARGET_FILE_BYTES`]..=[`MAX_TARGET_FILE_BYTES`] is refused,
/// naming the property.
pub fn table_target_file_bytes(props: &HashMap<String, String>) -> std::result::Result<u64, String> {
    match props.get(TARGET_FILE_SIZE_PROPERTY) {
        None => Ok(crate::config::DEFAULT_TARGET_FILE_SIZE_MB * 1024 * 1024),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{v:?} is not a number of bytes"))
            .and_then(check_target_file_bytes)
            .map_err(|e| format!("table property {TARGET_FILE_SIZE_PROPERTY}: {e}")),
    }
}

/// What compaction does.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// The size files are packed to.
    pub target_file_bytes: u64,
    /// Files below this size are compacted.
    pub small_file_bytes: u64,
    /// A partition (a bin) with fewer small files than this is left alone.
    pub min_input_files: usize,
    /// Plan and report only.
    pub dry_run: bool,
    /// Read at most this many Parquet bytes per second (the background runner's share of the
    /// machine); `None`: as fast as it goes.
    pub max_bytes_per_second: Option<u64>,
}

impl CompactOptions {
    /// The defaults for a target size: files below three quarters of it are small, and two
    /// of them make a bin.
    pub fn with_target(target_file_bytes: u64) -> Self {
        Self {
            target_file_bytes,
            small_file_bytes: target_file_bytes / 4 * 3,
            min_input_files: 2,
            dry_run: false,
            max_bytes_per_second: None,
        }
    }
}

/// What a compaction run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompactReport {
    /// Live data files before.
    pub files_before: usize,
    /// Live data files after.
    pub files_after: usize,
    /// Bytes of live data files before.
    pub bytes_before: u64,
    /// Bytes of live data files after.
    pub bytes_after: u64,
    /// Live data files below the small-file threshold, before.
    pub small_files_before: usize,
    /// Live data files below the small-file threshold, after.
    pub small_files_after: usize,
    /// Files read and replaced.
    pub files_rewritten: usize,
    /// Bytes read and replaced (Parquet, compressed).
    pub bytes_rewritten: u64,
    /// Files written.
    pub files_written: usize,
    /// Snapshots committed.
    pub commits: usize,
    /// Commits rebased onto appends that landed meanwhile.
    pub rebased: u32,
    /// Rewrites abandoned (a file they read was rewritten or deleted by another commit).
    pub abandoned: usize,
    /// Why nothing was compacted, when nothing was.
    pub skipped: Option<String>,
    /// Seconds spent.
    pub seconds: f64,
}

/// One live data file of the current snapshot.
#[derive(Debug, Clone)]
struct Live {
    manifest: String,
    file: DataFile,
    /// The data sequence number: the order the file's rows were committed in.
    sequence: i64,
}

/// Compacts table `ident` (see the module docs).
pub async fn compact(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    options: &CompactOptions,
    progress: &dyn Progress,
) -> Result<CompactReport> {
    let started = Instant::now();
    // The bounds of `check_target_file_bytes` are applied where a target comes in (the CLI,
    // table properties, the config); here only a size a writer can roll at.
    if options.target_file_bytes == 0 {
        return Err(Error::BadRequest {
            code: "invalid_target",
            message: "the target file size must be at least 1 byte".into(),
        });
    }
    if !options.dry_run {
        clean_attempts(catalog, ident).await?;
    }
    let table = catalog.load_table(ident).await?;
    let mut report = CompactReport::default();
    let plan = plan(catalog, &table, options, &mut report).await?;
    report.files_after = report.files_before;
    report.bytes_after = report.bytes_before;
    report.small_files_after = report.small_files_before;
    if plan.is_empty() {
        report
            .skipped
            .get_or_insert_with(|| "no partition has enough small files".to_string());
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let total: u64 = plan.iter().flatten().map(|l| l.file.file_size_in_bytes()).sum();
    progress.start("compact", total);
    let base = table.metadata().current_snapshot_id().expect("planned on a snapshot");
    let props = table_writer_properties(&table)?;
    let sort = sort_keys(&table);
    let out = Output {
        props: &props,
        sort: sort.as_deref(),
        target_file_bytes: options.target_file_bytes,
    };
    let mut pending: Vec<Vec<Live>> = Vec::new();
    let mut pending_bytes = 0;
    // After a commit, the next group is planned again on the table it left: that commit
    // rewrote manifests that may also list the next group's files.
    let mut current: Option<(Table, i64)> = None;
    let mut bins = plan.into_iter().peekable();
    while let Some(bin) = bins.next() {
        pending_bytes += bin.iter().map(|l| l.file.file_size_in_bytes()).sum::<u64>();
        pending.push(bin);
        if pending_bytes < COMMIT_BYTES && bins.peek().is_some() {
            continue;
        }
        let mut group = std::mem::take(&mut pending);
        pending_bytes = 0;
        if options.dry_run {
            for bin in &group {
                report.files_rewritten += bin.len();
                report.bytes_rewritten += bin.iter().map(|l| l.file.file_size_in_bytes()).sum::<u64>();
                report.files_after = report.files_after + 1 - bin.len();
                report.small_files_after -= bin.len();
                progress.advance(bin.iter().map(|l| l.file.file_size_in_bytes()).sum());
            }
            continue;
        }
        let pace = options
            .max_bytes_per_second
            .map(|rate| (started, rate, report.bytes_rewritten));
        let (table_now, base_now) = match current.take() {
            None => (table.clone(), base),
            Some(_) => match remap(catalog, ident, &mut group).await {
                Ok(fresh) => fresh,
                Err(e) if is_abandoned(&e) => {
                    tracing::info!(table = %ident, error = %e, "compaction stopped; it is planned again on its next run");
                    report.abandoned += 1;
                    break;
                }
                Err(e) => return Err(e),
            },
        };
        match rewrite_group(
            catalog,
            &table_now,
            base_now,
            &group,
            &out,
            progress,
            pace,
            options.small_file_bytes,
        )
        .await
        {
            Ok(done) => {
                current = Some((table_now, base_now));
                report.commits += 1;
                report.rebased += done.rebased;
                report.files_rewritten += done.read_files;
                report.bytes_rewritten += done.read_bytes;
                report.files_written += done.written_files;
                report.files_after = report.files_after + done.written_files - done.read_files;
                report.small_files_after = report.small_files_after + done.written_small - done.read_files;
                report.bytes_after = (report.bytes_after + done.written_bytes).saturating_sub(done.read_bytes);
            }
            Err(e) if is_abandoned(&e) => {
                tracing::info!(table = %ident, error = %e, "compaction abandoned; it is planned again on its next run");
                report.abandoned += 1;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The table as it is now and its current snapshot, with each file of `group` mapped to the
/// manifest that lists it live now; abandoned when one is no longer live.
async fn remap(catalog: &FloeCatalog, ident: &TableIdent, group: &mut [Vec<Live>]) -> Result<(Table, i64)> {
    let table = catalog.load_table(ident).await?;
    let metadata = table.metadata();
    let snapshot = metadata
        .current_snapshot()
        .ok_or_else(|| Error::Internal(format!("table {ident} lost its snapshots during compaction")))?;
    let wanted: BTreeSet<&str> = group.iter().flatten().map(|l| l.file.file_path()).collect();
    let mut found: HashMap<String, String> = HashMap::new();
    let list = read_manifest_list(catalog, metadata, snapshot.manifest_list()).await?;
    for m in list.entries() {
        if m.content != ManifestContentType::Data || !(m.has_added_files() || m.has_existing_files()) {
            continue;
        }
        let manifest = read_manifest(catalog, m).await?;
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            if wanted.contains(e.file_path()) {
                found.insert(e.file_path().to_string(), m.manifest_path.clone());
            }
        }
    }
    for live in group.iter_mut().flatten() {
        match found.get(live.file.file_path()) {
            Some(m) => live.manifest = m.clone(),
            None => {
                return Err(Error::Iceberg(iceberg::Error::new(
                    iceberg::ErrorKind::CatalogCommitConflicts,
                    format!(
                        "the data file {} was rewritten or deleted by another commit",
                        live.file.file_path()
                    ),
                )));
            }
        }
    }
    let id = snapshot.snapshot_id();
    Ok((table, id))
}

/// Whether `e` is a rewrite abandoned under the conflict rule (nothing lost, retry later).
fn is_abandoned(e: &Error) -> bool {
    matches!(e, Error::Iceberg(i) if i.kind() == iceberg::ErrorKind::CatalogCommitConflicts)
}

/// The bins to compact, largest partition first; fills the "before" part of `report`.
async fn plan(
    catalog: &FloeCatalog,
    table: &Table,
    options: &CompactOptions,
    report: &mut CompactReport,
) -> Result<Vec<Vec<Live>>> {
    let metadata = table.metadata();
    let Some(snapshot) = metadata.current_snapshot() else {
        report.skipped = Some("the table has no snapshot".into());
        return Ok(vec![]);
    };
    if metadata.format_version() != iceberg::spec::FormatVersion::V2 {
        report.skipped = Some(format!(
            "format version {} (floe rewrites format version 2 tables only)",
            metadata.format_version()
        ));
        return Ok(vec![]);
    }
    let list = read_manifest_list(catalog, metadata, snapshot.manifest_list()).await?;
    let default_spec = metadata.default_partition_spec_id();
    let mut by_partition: HashMap<Struct, Vec<Live>> = HashMap::new();
    let mut has_deletes = false;
    for m in list.entries() {
        let manifest = read_manifest(catalog, m).await?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            if m.content == ManifestContentType::Deletes || entry.content_type() != DataContentType::Data {
                has_deletes = true;
                continue;
            }
            report.files_before += 1;
            report.bytes_before += entry.file_size_in_bytes();
            if entry.file_size_in_bytes() < options.small_file_bytes {
                report.small_files_before += 1;
            }
            let file = entry.data_file();
            if m.partition_spec_id != default_spec
                || entry.file_format() != DataFileFormat::Parquet
                || entry.file_size_in_bytes() >= options.small_file_bytes
            {
                continue;
            }
            by_partition.entry(file.partition().clone()).or_default().push(Live {
                manifest: m.manifest_path.clone(),
                file: file.clone(),
                sequence: entry.sequence_number().unwrap_or(m.sequence_number),
            });
        }
    }
    if has_deletes {
        report.skipped = Some("the table has delete files (they are not applied by compaction yet)".into());
        return Ok(vec![]);
    }
    let cap = if sort_keys(table).is_some() {
        options.target_file_bytes.min(SORTED_BIN_BYTES)
    } else {
        options.target_file_bytes
    };
    let mut bins: Vec<Vec<Live>> = Vec::new();
    let mut partitions: Vec<Vec<Live>> = by_partition.into_values().collect();
    partitions.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for mut files in partitions {
        if files.len() < options.min_input_files {
            continue;
        }
        // First-fit decreasing: biggest files first, each into the first bin it fits.
        files.sort_by_key(|l| std::cmp::Reverse(l.file.file_size_in_bytes()));
        let mut open: Vec<(u64, Vec<Live>)> = Vec::new();
        for live in files {
            let size = live.file.file_size_in_bytes();
            match open.iter_mut().find(|(used, _)| used + size <= cap) {
                Some((used, bin)) => {
                    *used += size;
                    bin.push(live);
                }
                None => open.push((size, vec![live])),
            }
        }
        // Each bin is then read in commit order (`read_in_order`), so the new file's rows keep
        // the order they arrived in: values that grow with time (ids, timestamps) stay
        // clustered, and page statistics still prune a point lookup to a few pages.
        bins.extend(
            open.into_iter()
                .map(|(_, mut b)| {
                    b.sort_by(|x, y| (x.sequence, x.file.file_path()).cmp(&(y.sequence, y.file.file_path())));
                    b
                })
                .filter(|b| b.len() >= options.min_input_files.max(2)),
        );
    }
    Ok(bins)
}

/// One committed group of bins.
struct Done {
    read_files: usize,
    read_bytes: u64,
    written_files: usize,
    written_small: usize,
    written_bytes: u64,
    rebased: u32,
}

/// Rewrites the bins of `group` and commits them as one `replace` snapshot; on any failure the
/// files written are deleted again (unless the commit's outcome is unknown). `pace` = (when the
/// run started, bytes per second, bytes read before this group): after each bin it sleeps
/// until the run is back within its rate.
#[allow(clippy::too_many_arguments)]
async fn rewrite_group(
    catalog: &FloeCatalog,
    table: &Table,
    base: i64,
    group: &[Vec<Live>],
    out: &Output<'_>,
    progress: &dyn Progress,
    pace: Option<(Instant, u64, u64)>,
    small_file_bytes: u64,
) -> Result<Done> {
    let id = uuid::Uuid::now_v7();
    begin_attempt(catalog, table.identifier(), id, table.metadata().location()).await?;
    let mut added: Vec<DataFile> = Vec::new();
    let location = table.metadata().location().to_string();
    let work = async {
        let mut read = 0u64;
        for (n, bin) in group.iter().enumerate() {
            added.extend(rewrite_bin(table, id, n, bin, out).await?);
            let bytes = bin.iter().map(|l| l.file.file_size_in_bytes()).sum::<u64>();
            progress.advance(bytes);
            read += bytes;
            if let Some((started, rate, before)) = pace {
                let due = started + std::time::Duration::from_secs_f64((before + read) as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(due.into()).await;
            }
        }
        // The new files' folders must survive a crash before the table points at them.
        crate::sink::iceberg::sync_folders(catalog.storage().as_ref(), &added).await?;
        let mut removed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for live in group.iter().flatten() {
            removed
                .entry(live.manifest.clone())
                .or_default()
                .insert(live.file.file_path().to_string());
        }
        let rewrite = Rewrite {
            base_snapshot_id: base,
            removed,
            added: added.clone(),
            operation: Operation::Replace,
            properties: HashMap::from([(PROP_MAINTENANCE.to_string(), "compact".to_string())]),
            id,
        };
        Ok::<_, Error>(commit_rewrite(catalog, table.identifier(), &rewrite, COMMIT_RETRIES).await?)
    };
    let result = renew_while(catalog, table.identifier(), id, &location, work).await;
    match result {
        Ok(committed) => {
            end_attempt(catalog, table.identifier(), id).await?;
            Ok(Done {
                read_files: group.iter().map(Vec::len).sum(),
                read_bytes: group.iter().flatten().map(|l| l.file.file_size_in_bytes()).sum(),
                written_files: added.len(),
                written_small: added
                    .iter()
                    .filter(|f| f.file_size_in_bytes() < small_file_bytes)
                    .count(),
                written_bytes: added.iter().map(DataFile::file_size_in_bytes).sum(),
                rebased: committed.rebased,
            })
        }
        // The attempt stays recorded: its next run keeps what the table references.
        Err(Error::Iceberg(e)) if commit_state_unknown(&e) => Err(Error::Iceberg(e)),
        Err(e) => {
            // Every file named after the attempt, also one whose write failed half-way; the
            // attempt stays recorded (for its next run to clean) when that fails.
            match crate::sink::iceberg::remove_attempt_files(catalog.storage().as_ref(), &location, id).await {
                Ok(_) => {
                    if let Err(forget) = end_attempt(catalog, table.identifier(), id).await {
                        tracing::warn!(%id, error = %forget, "could not forget a failed compaction attempt; its next run cleans it");
                    }
                }
                Err(del) => {
                    tracing::warn!(%id, error = %del, "could not delete the files of a failed compaction; its next run cleans them");
                }
            }
            Err(e)
        }
    }
}

/// Reads the files of one bin (in the table's current schema) and writes them anew, named
/// `floe-compact-<id>-<n>-…` (`n`: the bin's number in its group).
async fn rewrite_bin(table: &Table, id: uuid::Uuid, n: usize, bin: &[Live], out: &Output<'_>) -> Result<Vec<DataFile>> {
    let files: Vec<&DataFile> = bin.iter().map(|l| &l.file).collect();
    let spec = table.metadata().default_partition_spec_id();
    rewrite_files(table, &format!("floe-compact-{id}-{n}"), &files, spec, out, None).await
}

/// How a rewrite writes its files.
pub(super) struct Output<'a> {
    /// The Parquet writer's settings ([`table_writer_properties`]).
    pub props: &'a WriterProperties,
    /// Sort each file's rows by these keys (the table's sort order), when given.
    pub sort: Option<&'a [SortKey]>,
    /// Roll to a new file at this size.
    pub target_file_bytes: u64,
}

/// A row filter applied while rewriting: answers the rows to keep of a batch.
pub(super) type KeepRows<'a> = &'a (dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync);

/// Reads `files` — data files of one partition of partition spec `spec_id` — in the table's
/// current schema.
pub(super) fn read_files(
    table: &Table,
    files: &[&DataFile],
    spec_id: i32,
) -> Result<iceberg::scan::ArrowRecordBatchStream> {
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let field_ids: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
    let tasks: Vec<iceberg::Result<FileScanTask>> = files
        .iter()
        .map(|f| {
            Ok(FileScanTask::builder()
                .with_file_size_in_bytes(f.file_size_in_bytes())
                .with_start(0)
                .with_length(f.file_size_in_bytes())
                .with_record_count(Some(f.record_count()))
                .with_data_file_path(f.file_path().to_string())
                .with_data_file_format(DataFileFormat::Parquet)
                .with_schema(schema.clone())
                .with_project_field_ids(field_ids.clone())
                .with_partition(Some(f.partition().clone()))
                .with_partition_spec(metadata.partition_spec_by_id(spec_id).cloned())
                .with_case_sensitive(true)
                .build())
        })
        .collect();
    Ok(table
        .reader_builder()
        .with_row_group_filtering_enabled(false)
        .build()
        .read(Box::pin(futures::stream::iter(tasks)))?
        .stream())
}

/// Input files at most this large are read ahead: each decoded whole in a task of its own, up
/// to [`READ_AHEAD`] at a time, while the writer encodes the rows read before. A compaction's
/// inputs are mostly files this small; one decodes to some tens of MiB of Arrow at most (JSON
/// events compress ~18:1 into zstd Parquet).
pub const READ_AHEAD_FILE_BYTES: u64 = 1024 * 1024;
/// How many input files are read ahead at most.
pub const READ_AHEAD: usize = 4;

/// Reads `files` (as [`read_files`]) one after the other, in the order given: small files
/// ahead of time in parallel ([`READ_AHEAD_FILE_BYTES`]), larger ones streamed when their turn
/// comes.
fn read_in_order(table: &Table, files: &[&DataFile], spec_id: i32) -> BoxStream<'static, Result<RecordBatch>> {
    let table = table.clone();
    let files: Vec<DataFile> = files.iter().map(|f| (*f).clone()).collect();
    futures::stream::iter(files)
        .map(move |file| {
            let table = table.clone();
            async move {
                let stream = read_files(&table, &[&file], spec_id)?;
                if file.file_size_in_bytes() > READ_AHEAD_FILE_BYTES {
                    return Ok(stream.map_err(Error::from).boxed());
                }
                let batches = tokio::spawn(stream.try_collect::<Vec<RecordBatch>>())
                    .await
                    .map_err(|e| Error::Internal(format!("a compaction read task failed: {e}")))??;
                Ok::<_, Error>(futures::stream::iter(batches.into_iter().map(Ok)).boxed())
            }
        })
        .buffered(READ_AHEAD)
        .try_flatten()
        .boxed()
}

/// Reads `files` (one partition of spec `spec_id`, which must be the table's default spec),
/// keeps the rows `keep` answers (all when `None`), and writes them as `out` says, as new
/// data files named `<name>-<k>.parquet` (none when no row is kept); `name` carries the
/// attempt's id and is unique per call.
pub(super) async fn rewrite_files(
    table: &Table,
    name: &str,
    files: &[&DataFile],
    spec_id: i32,
    out: &Output<'_>,
    keep: Option<KeepRows<'_>>,
) -> Result<Vec<DataFile>> {
    let Some(first) = files.first() else {
        return Ok(vec![]);
    };
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let mut stream = read_in_order(table, files, spec_id);
    let arrow_schema = Arc::new(schema_to_arrow_schema(&schema)?);
    let location = DefaultLocationGenerator::new(metadata)?;
    let names = DefaultFileNameGenerator::new(name.to_string(), None, DataFileFormat::Parquet);
    let parquet = ParquetWriterBuilder::new(out.props.clone(), schema.clone());
    let target = usize::try_from(out.target_file_bytes.max(1)).unwrap_or(usize::MAX);
    let rolling = RollingFileWriterBuilder::new(parquet, target, table.file_io().clone(), location, names);
    let spec = metadata.default_partition_spec();
    let key = (!spec.is_unpartitioned())
        .then(|| PartitionKey::new(spec.as_ref().clone(), schema.clone(), first.partition().clone()));
    let mut writer = DataFileWriterBuilder::new(rolling).build(key).await?;
    let conform = |b: RecordBatch| -> Result<Option<RecordBatch>> {
        let b = crate::sink::schema::conform(&b, &arrow_schema)?;
        let b = match keep {
            Some(keep) => keep(b)?,
            None => b,
        };
        Ok((b.num_rows() > 0).then_some(b))
    };
    let mut rows = 0usize;
    match out.sort {
        None => {
            while let Some(batch) = stream.try_next().await? {
                if let Some(b) = conform(batch)? {
                    rows += b.num_rows();
                    writer.write(b).await?;
                }
            }
        }
        Some(keys) => {
            let mut batches = Vec::new();
            while let Some(batch) = stream.try_next().await? {
                batches.extend(conform(batch)?);
            }
            if let Some(sorted) = sort_batches(&batches, keys)? {
                rows += sorted.num_rows();
                writer.write(sorted).await?;
            }
        }
    }
    let written = writer.close().await?;
    if rows == 0 {
        // Nothing kept: no file is wanted (a writer may still have opened one).
        for f in &written {
            let _ = table.file_io().delete(f.file_path()).await;
        }
        return Ok(vec![]);
    }
    Ok(written)
}

/// The table's sort order as sort keys, when it has one that floe can apply (identity
/// transforms on top-level columns); `None` otherwise (rows keep their order).
pub(super) fn sort_keys(table: &Table) -> Option<Vec<SortKey>> {
    let metadata = table.metadata();
    let order = metadata.default_sort_order();
    if order.fields.is_empty() {
        return None;
    }
    let schema = metadata.current_schema();
    order
        .fields
        .iter()
        .map(|f| {
            if f.transform != Transform::Identity {
                return None;
            }
            let field = schema.as_struct().field_by_id(f.source_id)?;
            Some(SortKey {
                column: field.name.clone(),
                descending: f.direction == SortDirection::Descending,
                nulls_first: f.null_order == iceberg::spec::NullOrder::First,
            })
        })
        .collect()
}
