//! The files sink (`type = "files"`): pipeline output → NDJSON (optionally gzip) or Parquet files
//! under Hive-style folders of a local folder or an `s3://` prefix, **exactly once**.
//!
//! ```text
//!  write(batch, through)  ──► folder of each row: `partitioning` (strftime, UTC) of its
//!                              `time_column` value, or of the commit time ──► pending rows
//!                              per folder, in memory (bounded by rolling.size_mb)
//!  commit()
//!   1. encode each folder's rows (sorted by sort_by) into files of ≤ target_file_size_mb
//!   2. floe_sink_attempts row (pipeline, sink, attempt) -> its staging folder
//!   3. put every file, atomically and durably, under a staging name
//!        <path>/_floe/staging/<pipeline>/<sink>/<attempt>/<n><suffix>
//!   4. ONE catalog transaction (FloeCatalog::commit_files): the attempt row goes, sequence
//!      numbers are reserved (file_naming = "sequence"), the final names are recorded in
//!      floe_file_commits and the position moves from -> to (compare-and-swap)
//!   5. publish: each staged file is renamed to its final name
//!        <path>/<folder>/<file_prefix><uuid | ulid | sequence><file_suffix>
//!      (Storage::rename: atomic and durable), then the floe_file_commits row goes
//!  open()  (recovery, before the position is read)
//!   a. every floe_file_commits row of (pipeline, sink): publish it again (idempotent: a file
//!      already at its final name is skipped), then drop the row
//!   b. every floe_sink_attempts row: delete its staged files, drop the row
//!   c. every other staged file under <path>/_floe/staging/<pipeline>/<sink>/ whose attempt is
//!      in neither table: deleted
//! ```
//!
//! Why exactly once: the position moves only in the transaction of step 4, together with the
//! list of final names. A crash before it replays the log from the old position, and its staged
//! files are removed at the next open (b, c); a crash after it publishes the recorded files at the
//! next open (a). A final name only ever appears through an atomic rename (or put) of a complete,
//! durable file, so readers never see a partial file, and nothing outside `_floe/` carries any
//! other name. An attempt fenced by another instance (its row deleted by that instance's open)
//! cannot commit: step 4 refuses it.
//!
//! Readers (DuckDB `read_json_auto` / `read_parquet` with `hive_partitioning`, Spark, pyarrow)
//! skip `_floe/`: folders starting with `_` are hidden by convention, and `partitioning` and
//! `file_prefix` are refused when they would make such names. Time folders are rendered in
//! UTC; a row whose `time_column` is null goes to the folder of the commit time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Schema as ArrowSchema, SchemaRef, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use floe_catalog::{CommittedFile, FilesCommit, FloeCatalog, Storage, Warehouse};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::parquet::{target_file_size, writer_properties};
use super::rolling::RollState;
use super::sort::{SortKey, sort_batches, sort_keys};
use super::{CommitStats, Sink};
use crate::config::{FileFormat, FileNaming, SinkConfig};
use crate::error::{Error, Result};
use crate::layout::FolderPattern;

/// The folder, below a files sink's `path`, of floe's own files (readers skip it).
pub const FLOE_DIR: &str = "_floe";
/// Rows encoded at a time: a file is closed once it reaches `target_file_size_mb` after a chunk.
const CHUNK_ROWS: usize = 8192;

/// The storage of a files sink's folder. The one place that picks it, so that a new kind of
/// storage (S3) needs one change here.
fn storage_of(root: &str, s3: &floe_catalog::S3Options) -> Result<Arc<dyn Storage>> {
    let warehouse = Warehouse::new(root)?;
    Ok(floe_catalog::storage_for(&warehouse, s3)?)
}

/// One file encoded at commit, not yet named.
struct Encoded {
    /// Its folder below the sink's path (`""`: none).
    folder: String,
    bytes: Bytes,
}

/// One (pipeline, sink) writer of files with its committed position.
pub struct FilesSink {
    pipeline: String,
    name: String,
    catalog: FloeCatalog,
    storage: Arc<dyn Storage>,
    /// The sink's folder URI, without a trailing `/`.
    root: String,
    cfg: SinkConfig,
    output: SchemaRef,
    folders: FolderPattern,
    /// The index of `time_column` in the output.
    time_column: Option<usize>,
    sort: Vec<SortKey>,
    /// Parquet writer settings (`format = "parquet"` only).
    props: Option<WriterProperties>,
    /// Pending rows by folder; `None`: the folder of the commit time.
    pending: HashMap<Option<String>, Vec<RecordBatch>>,
    rolling: RollState,
    attempt: uuid::Uuid,
    /// Test hook: the next commit stops right after its catalog transaction, as a crash there.
    stop_before_publish: bool,
    /// Set by a failed write or commit: the sink must be reopened.
    broken: bool,
}

/// Checks sink `cfg` (a files sink) against the pipeline's output `schema`: `time_column` must be
/// a timestamp column, `sort_by` and `bloom_filter_columns` must name columns (sort keys of a
/// non-nested type). Returns the index of `time_column`. Errors name the sink and the key.
pub fn check_output(cfg: &SinkConfig, schema: &ArrowSchema) -> Result<Option<usize>> {
    let bad = |key: &str, what: String| Error::Config(format!("sink {:?}: {key} {what}", cfg.name));
    let time = match &cfg.time_column {
        None => None,
        Some(c) => {
            let i = schema.index_of(c).map_err(|_| {
                bad(
                    "time_column",
                    format!("names {c:?}, which is not a column of the pipeline's output"),
                )
            })?;
            if !matches!(schema.field(i).data_type(), DataType::Timestamp(..)) {
                return Err(bad(
                    "time_column",
                    format!("{c:?} is a {}, not a timestamp", schema.field(i).data_type()),
                ));
            }
            Some(i)
        }
    };
    for k in sort_keys(&cfg.sort_by)? {
        match schema.field_with_name(&k.column) {
            Err(_) => {
                return Err(bad(
                    "sort_by",
                    format!("names {:?}, which is not a column of the pipeline's output", k.column),
                ));
            }
            Ok(f) if f.data_type().is_nested() => {
                return Err(bad(
                    "sort_by",
                    format!(
                        "column {:?} is nested ({}); only plain columns can be sorted by",
                        k.column,
                        f.data_type()
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
    for c in &cfg.bloom_filter_columns {
        if schema.field_with_name(c).is_err() {
            return Err(bad(
                "bloom_filter_columns",
                format!("names {c:?}, which is not a column of the pipeline's output"),
            ));
        }
    }
    Ok(time)
}

impl FilesSink {
    /// Opens the sink: checks its settings against `output`, finishes what an earlier run left
    /// (publishes commits that landed, removes staged files of attempts that did not; see the
    /// module docs), and reads the committed position (0 when it never committed).
    pub async fn open(catalog: FloeCatalog, cfg: &SinkConfig, pipeline: &str, output: &ArrowSchema) -> Result<Self> {
        let root = cfg
            .path
            .as_deref()
            .filter(|p| p.contains("://"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "sink {:?}: a files sink needs its path as a URI (Config::files_location)",
                    cfg.name
                ))
            })?
            .trim_end_matches('/')
            .to_string();
        let storage = storage_of(&root, catalog.s3_options())?;
        let output: SchemaRef = Arc::new(output.clone());
        let time_column = check_output(cfg, &output)?;
        let folders = FolderPattern::parse(cfg.partitioning())
            .map_err(|e| Error::Config(format!("sink {:?}: partitioning {e}", cfg.name)))?;
        let props = match cfg.file_format() {
            FileFormat::Parquet => Some(writer_properties(cfg, &output)?),
            FileFormat::Json => None,
        };
        let sink = FilesSink {
            pipeline: pipeline.to_string(),
            name: cfg.name.clone(),
            catalog,
            storage,
            root,
            cfg: cfg.clone(),
            output,
            folders,
            time_column,
            sort: sort_keys(&cfg.sort_by)?,
            props,
            pending: HashMap::new(),
            rolling: RollState::new(&cfg.rolling, 0),
            attempt: uuid::Uuid::now_v7(),
            stop_before_publish: false,
            broken: false,
        };
        sink.recover().await?;
        let committed = sink
            .catalog
            .sink_position(pipeline, &cfg.name)
            .await?
            .map(|p| p.position)
            .unwrap_or(0);
        Ok(FilesSink {
            rolling: RollState::new(&cfg.rolling, committed),
            ..sink
        })
    }

    /// Test hook: makes the next [`commit`](Sink::commit) return an error right after its catalog
    /// transaction landed, before any file is published, as a crash at that point would leave
    /// things (the sink must then be dropped and reopened).
    #[doc(hidden)]
    pub fn stop_before_publish(&mut self) {
        self.stop_before_publish = true;
    }

    /// The sink's folder URI.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<path>/_floe/staging/<pipeline>/<sink>`: where this (pipeline, sink) stages its files.
    fn staging_dir(&self) -> String {
        format!("{}/{FLOE_DIR}/staging/{}/{}", self.root, self.pipeline, self.name)
    }

    fn attempt_dir(&self, attempt: uuid::Uuid) -> String {
        format!("{}/{attempt}", self.staging_dir())
    }

    /// Finishes an earlier run's commits (see the module docs: open, a–c).
    async fn recover(&self) -> Result<()> {
        let (pipeline, sink) = (self.pipeline.as_str(), self.name.as_str());
        for c in self.catalog.pending_file_commits(pipeline, sink).await? {
            let published = self.publish(&c.files).await?;
            self.catalog.finish_file_commit(pipeline, sink, c.attempt).await?;
            self.storage.remove_empty_dir(&self.attempt_dir(c.attempt)).await?;
            tracing::info!(pipeline, sink, attempt = %c.attempt, files = c.files.len(), published, from = c.from, to = c.to, "published the files of a commit that landed before a restart");
        }
        for (attempt, location) in self.catalog.pending_attempts(pipeline, sink).await? {
            let mut removed = 0;
            for f in self.storage.list(&location).await? {
                self.storage.delete(&f.location).await?;
                removed += 1;
            }
            self.storage.remove_empty_dir(&location).await?;
            self.catalog.forget_attempt(pipeline, sink, attempt).await?;
            tracing::info!(pipeline, sink, %attempt, removed, "removed the staged files of a commit attempt that never landed");
        }
        // Staged files no row names (written after another instance forgot their attempt). The
        // rows are read after the listing: an attempt begun since cannot be among the files.
        let staging = self.staging_dir();
        let staged = self.storage.list(&staging).await?;
        if staged.is_empty() {
            return Ok(());
        }
        let mut live: HashSet<String> = self
            .catalog
            .pending_attempts(pipeline, sink)
            .await?
            .into_iter()
            .map(|(a, _)| a.to_string())
            .collect();
        live.extend(
            self.catalog
                .pending_file_commits(pipeline, sink)
                .await?
                .into_iter()
                .map(|c| c.attempt.to_string()),
        );
        let mut dirs = HashSet::new();
        for f in staged {
            let Some(rest) = f.location.strip_prefix(&staging).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            let attempt = rest.split('/').next().unwrap_or_default();
            if live.contains(attempt) {
                continue;
            }
            self.storage.delete(&f.location).await?;
            dirs.insert(format!("{staging}/{attempt}"));
        }
        for d in dirs {
            self.storage.remove_empty_dir(&d).await?;
        }
        Ok(())
    }

    /// Moves each staged file of a landed commit to its final name; a file no longer staged but
    /// at its final name was published before. Returns how many were moved now.
    async fn publish(&self, files: &[CommittedFile]) -> Result<usize> {
        let mut moved = 0;
        for f in files {
            if self.storage.size(&f.staged).await.is_err() {
                match self.storage.size(&f.location).await {
                    Ok(_) => continue,
                    Err(e) => {
                        return Err(Error::Internal(format!(
                            "sink {:?}: committed file {} is neither staged ({}) nor published: {e}",
                            self.name, f.location, f.staged
                        )));
                    }
                }
            }
            self.storage.rename(&f.staged, &f.location).await?;
            moved += 1;
        }
        Ok(moved)
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Internal(format!(
                "sink {:?} of pipeline {:?} failed earlier; it must be reopened from its committed position",
                self.name, self.pipeline
            )));
        }
        Ok(())
    }

    fn write_inner(&mut self, batch: &RecordBatch, through: u64) -> Result<()> {
        self.rolling.input(through);
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = super::schema::conform(batch, &self.output)?;
        self.rolling
            .wrote(batch.num_rows() as u64, batch.get_array_memory_size());
        match self.time_column {
            None => self.pending.entry(None).or_default().push(batch),
            Some(i) => {
                for (folder, part) in split_by_folder(&batch, i, &self.folders)? {
                    self.pending.entry(folder).or_default().push(part);
                }
            }
        }
        Ok(())
    }

    async fn commit_inner(&mut self) -> Result<CommitStats> {
        let from = self.rolling.committed();
        let to = self.rolling.through();
        let started = Instant::now();
        let rows = self.rolling.pending_rows();
        let pending = std::mem::take(&mut self.pending);
        let (cfg, folders, sort, props, schema) = (
            self.cfg.clone(),
            self.folders.clone(),
            self.sort.clone(),
            self.props.clone(),
            self.output.clone(),
        );
        let now = Utc::now();
        // Sorting, JSON and compression are CPU work: off the async runtime.
        let encoded = tokio::task::spawn_blocking(move || encode(pending, now, &cfg, &folders, &sort, props, &schema))
            .await
            .map_err(|e| Error::Internal(format!("encoding files failed: {e}")))??;
        let commit = FilesCommit {
            pipeline: &self.pipeline,
            sink: &self.name,
            target: &self.root,
            from,
            to,
            attempt: (!encoded.is_empty()).then_some(self.attempt),
        };
        if encoded.is_empty() {
            // Every row was filtered out: the position moves alone.
            self.catalog.commit_files(&commit, 0, |_| vec![]).await?;
            return Ok(CommitStats {
                rows: 0,
                files: 0,
                bytes: 0,
                from,
                to,
                elapsed: started.elapsed(),
                closed_for_memory: 0,
            });
        }
        let suffix = self.cfg.file_suffix();
        let staging = self.attempt_dir(self.attempt);
        self.catalog
            .begin_attempt(&self.pipeline, &self.name, self.attempt, &staging)
            .await?;
        let mut staged = Vec::with_capacity(encoded.len());
        for (n, file) in encoded.iter().enumerate() {
            let location = format!("{staging}/{n:05}{suffix}");
            self.storage.put(&location, file.bytes.clone()).await?;
            staged.push(location);
        }
        let naming = self.cfg.file_naming();
        let middles: Vec<String> = match naming {
            FileNaming::Uuid => encoded.iter().map(|_| uuid::Uuid::new_v4().to_string()).collect(),
            FileNaming::Ulid => encoded.iter().map(|_| ulid(Utc::now())).collect(),
            FileNaming::Sequence => vec![],
        };
        let prefix = self.cfg.file_prefix.clone().unwrap_or_default();
        let root = self.root.clone();
        let name_files = |first: u64| -> Vec<CommittedFile> {
            encoded
                .iter()
                .zip(&staged)
                .enumerate()
                .map(|(n, (file, staged))| {
                    let middle = match naming {
                        FileNaming::Sequence => sequence_name(first + n as u64),
                        _ => middles[n].clone(),
                    };
                    CommittedFile {
                        staged: staged.clone(),
                        location: final_location(&root, &file.folder, &format!("{prefix}{middle}{suffix}")),
                    }
                })
                .collect()
        };
        let numbers = if naming == FileNaming::Sequence {
            encoded.len() as u64
        } else {
            0
        };
        let files = self.catalog.commit_files(&commit, numbers, name_files).await?;
        // Committed: from here on the files are the next open's to publish, should this fail.
        if self.stop_before_publish {
            return Err(Error::Internal(format!(
                "sink {:?}: stopped before publishing (test hook)",
                self.name
            )));
        }
        self.publish(&files).await?;
        self.catalog
            .finish_file_commit(&self.pipeline, &self.name, self.attempt)
            .await?;
        self.storage.remove_empty_dir(&staging).await?;
        Ok(CommitStats {
            rows,
            files: files.len(),
            bytes: encoded.iter().map(|f| f.bytes.len() as u64).sum(),
            from,
            to,
            elapsed: started.elapsed(),
            closed_for_memory: 0,
        })
    }
}

#[async_trait::async_trait]
impl Sink for FilesSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> String {
        self.root.clone()
    }

    fn rolling(&self) -> &RollState {
        &self.rolling
    }

    async fn write(&mut self, batch: &RecordBatch, through: u64) -> Result<()> {
        self.usable()?;
        let result = self.write_inner(batch, through);
        self.broken = result.is_err();
        result
    }

    /// On error the sink must be reopened: its open publishes the commit if it landed, and
    /// removes the attempt's staged files if it did not.
    async fn commit(&mut self) -> Result<CommitStats> {
        self.usable()?;
        let result = self.commit_inner().await;
        let landed = result.is_ok();
        self.rolling.finish_commit(landed);
        self.attempt = uuid::Uuid::now_v7();
        self.broken = !landed;
        result
    }
}

/// `<root>/<folder>/<name>`, or `<root>/<name>` without a folder.
fn final_location(root: &str, folder: &str, name: &str) -> String {
    if folder.is_empty() {
        format!("{root}/{name}")
    } else {
        format!("{root}/{folder}/{name}")
    }
}

/// The name part of file number `n` of `file_naming = "sequence"`: 20 digits, so names sort by
/// number.
pub fn sequence_name(n: u64) -> String {
    format!("{n:020}")
}

/// Crockford's base32 alphabet (ULIDs).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID for time `t`: 48 bits of Unix milliseconds, then 80 random bits, as 26 characters of
/// Crockford base32 (so ULIDs sort by their millisecond).
pub fn ulid(t: DateTime<Utc>) -> String {
    let ms = (t.timestamp_millis().max(0) as u128) & ((1u128 << 48) - 1);
    // A v4 UUID's random bits: all of bytes 0-5 and 10-15 (6 and 8 carry version and variant).
    let r = *uuid::Uuid::new_v4().as_bytes();
    let mut random = 0u128;
    for b in r[0..6].iter().chain(&r[10..14]) {
        random = (random << 8) | u128::from(*b);
    }
    let value = (ms << 80) | random;
    (0..26)
        .map(|i| CROCKFORD[((value >> (125 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// The rows of `batch` grouped by the folder of their time in column `column`; `None`: the time
/// is null (the commit time's folder).
fn split_by_folder(
    batch: &RecordBatch,
    column: usize,
    folders: &FolderPattern,
) -> Result<Vec<(Option<String>, RecordBatch)>> {
    let micros = arrow::compute::cast(batch.column(column), &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = micros
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| Error::Internal("time column did not cast to microseconds".into()))?;
    let mut groups: Vec<(Option<String>, Vec<u32>)> = Vec::new();
    let mut by_folder: HashMap<Option<String>, usize> = HashMap::new();
    // Folders rarely change within a second: render each second once.
    let mut by_second: HashMap<i64, usize> = HashMap::new();
    for row in 0..micros.len() {
        let g = if micros.is_null(row) {
            *by_folder.entry(None).or_insert_with(|| {
                groups.push((None, Vec::new()));
                groups.len() - 1
            })
        } else {
            let v = micros.value(row);
            let second = v.div_euclid(1_000_000);
            match by_second.get(&second) {
                Some(g) if !folders.sub_second() => *g,
                _ => {
                    let t = DateTime::from_timestamp_micros(v)
                        .ok_or_else(|| Error::Internal(format!("timestamp {v} µs is out of range")))?;
                    let folder = Some(folders.render(t));
                    let g = *by_folder.entry(folder.clone()).or_insert_with(|| {
                        groups.push((folder, Vec::new()));
                        groups.len() - 1
                    });
                    by_second.insert(second, g);
                    g
                }
            }
        };
        groups[g].1.push(row as u32);
    }
    if groups.len() == 1 {
        let (folder, _) = groups.pop().expect("one");
        return Ok(vec![(folder, batch.clone())]);
    }
    groups
        .into_iter()
        .map(|(folder, rows)| Ok((folder, take_record_batch(batch, &UInt32Array::from(rows))?)))
        .collect()
}

/// Encodes the pending rows into files (see the module docs, commit step 1): rows of the commit
/// time (`None`) go to the folder of `now`.
fn encode(
    pending: HashMap<Option<String>, Vec<RecordBatch>>,
    now: DateTime<Utc>,
    cfg: &SinkConfig,
    folders: &FolderPattern,
    sort: &[SortKey],
    props: Option<WriterProperties>,
    schema: &SchemaRef,
) -> Result<Vec<Encoded>> {
    let mut by_folder: HashMap<String, Vec<RecordBatch>> = HashMap::new();
    for (folder, batches) in pending {
        let folder = folder.unwrap_or_else(|| folders.render(now));
        by_folder.entry(folder).or_default().extend(batches);
    }
    let mut order: Vec<String> = by_folder.keys().cloned().collect();
    order.sort();
    let target = target_file_size(cfg).max(1);
    let mut out = Vec::new();
    for folder in order {
        let batches = by_folder.remove(&folder).unwrap_or_default();
        let batches = if sort.is_empty() {
            batches
        } else {
            sort_batches(&batches, sort)?.into_iter().collect()
        };
        let mut file = FileEncoder::new(cfg, props.clone(), schema)?;
        for batch in &batches {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = CHUNK_ROWS.min(batch.num_rows() - offset);
                file.write(&batch.slice(offset, len))?;
                offset += len;
                if file.size() >= target {
                    let full = std::mem::replace(&mut file, FileEncoder::new(cfg, props.clone(), schema)?);
                    out.push(Encoded {
                        folder: folder.clone(),
                        bytes: full.finish()?,
                    });
                }
            }
        }
        if file.rows > 0 {
            out.push(Encoded {
                folder: folder.clone(),
                bytes: file.finish()?,
            });
        }
    }
    Ok(out)
}

/// One file being encoded.
struct FileEncoder {
    kind: EncoderKind,
    rows: usize,
}

enum EncoderKind {
    Json(Vec<u8>),
    JsonGzip(Box<flate2::write::GzEncoder<Vec<u8>>>),
    Parquet(Box<ArrowWriter<Vec<u8>>>),
}

impl FileEncoder {
    fn new(cfg: &SinkConfig, props: Option<WriterProperties>, schema: &SchemaRef) -> Result<Self> {
        let kind = match cfg.file_format() {
            FileFormat::Parquet => EncoderKind::Parquet(Box::new(
                ArrowWriter::try_new(Vec::new(), schema.clone(), props).map_err(parquet_err)?,
            )),
            FileFormat::Json => match cfg.json_gzip() {
                Some(level) => EncoderKind::JsonGzip(Box::new(flate2::write::GzEncoder::new(
                    Vec::new(),
                    flate2::Compression::new(level),
                ))),
                None => EncoderKind::Json(Vec::new()),
            },
        };
        Ok(FileEncoder { kind, rows: 0 })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        match &mut self.kind {
            EncoderKind::Parquet(w) => w.write(batch).map_err(parquet_err)?,
            EncoderKind::Json(out) => ndjson(batch, out)?,
            EncoderKind::JsonGzip(gz) => {
                let mut text = Vec::new();
                ndjson(batch, &mut text)?;
                std::io::Write::write_all(gz.as_mut(), &text).map_err(|e| Error::Internal(format!("gzip: {e}")))?;
            }
        }
        Ok(())
    }

    /// Bytes encoded so far (compressed, roughly, for gzip and Parquet).
    fn size(&self) -> usize {
        match &self.kind {
            EncoderKind::Parquet(w) => w.bytes_written() + w.in_progress_size(),
            EncoderKind::Json(out) => out.len(),
            EncoderKind::JsonGzip(gz) => gz.get_ref().len(),
        }
    }

    fn finish(self) -> Result<Bytes> {
        Ok(Bytes::from(match self.kind {
            EncoderKind::Parquet(w) => w.into_inner().map_err(parquet_err)?,
            EncoderKind::Json(out) => out,
            EncoderKind::JsonGzip(gz) => gz.finish().map_err(|e| Error::Internal(format!("gzip: {e}")))?,
        }))
    }
}

fn parquet_err(e: parquet::errors::ParquetError) -> Error {
    Error::Internal(format!("parquet: {e}"))
}

/// Appends `batch` to `out` as NDJSON: one object per row, with every column (null as `null`).
fn ndjson(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let mut w = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(out);
    w.write(batch)?;
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn ulids_are_crockford_and_sort_by_millisecond() {
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).single().unwrap();
        let a = ulid(t);
        let b = ulid(t + chrono::Duration::milliseconds(1));
        assert_eq!(a.len(), 26);
        assert!(a.bytes().all(|c| CROCKFORD.contains(&c)), "{a}");
        assert!(a.as_bytes()[0] <= b'7', "the first character holds 3 bits: {a}");
        assert!(a < b, "{a} < {b}");
        assert_eq!(&a[..10], &ulid(t)[..10], "the first 10 characters are the time");
        assert_ne!(&a[10..], &ulid(t)[10..], "the rest is random");
        // 2026-11-26T10:00:00Z = 1795687200000 ms.
        let decoded = a[..10].bytes().fold(0u64, |acc, c| {
            (acc << 5) | CROCKFORD.iter().position(|x| *x == c).unwrap() as u64
        });
        assert_eq!(decoded, 1_795_687_200_000);
    }

    #[test]
    fn sequence_names_sort_by_number() {
        assert_eq!(sequence_name(42), "00000000000000000042");
        assert!(sequence_name(9) < sequence_name(10));
        assert_eq!(sequence_name(u64::MAX).len(), 20);
    }

    #[test]
    fn rows_split_by_their_time_folder_and_null_goes_to_the_commit() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let day = 86_400_000_000i64;
        let t0 = Utc
            .with_ymd_and_hms(2026, 1, 31, 23, 59, 59)
            .single()
            .unwrap()
            .timestamp_micros();
        let ts = TimestampMicrosecondArray::from(vec![
            Some(t0),
            Some(t0 + 1_000_000),
            None,
            Some(t0 + 500),
            Some(t0 + day),
        ])
        .with_timezone("UTC");
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4])), Arc::new(ts)],
        )
        .unwrap();
        let folders = FolderPattern::parse(crate::layout::DEFAULT_FILES_PARTITIONING).unwrap();
        let parts = split_by_folder(&batch, 1, &folders).unwrap();
        let ids = |b: &RecordBatch| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        let got: Vec<(Option<String>, Vec<i64>)> = parts.iter().map(|(f, b)| (f.clone(), ids(b))).collect();
        assert_eq!(
            got,
            vec![
                (Some("year=2026/month=01/day=31".into()), vec![0, 3]),
                (Some("year=2026/month=02/day=01".into()), vec![1, 4]),
                (None, vec![2]),
            ]
        );
    }

    #[test]
    fn ndjson_has_every_column_and_gzip_and_parquet_encode() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        ndjson(&batch, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":1,\"name\":\"a\"}\n{\"id\":2,\"name\":null}\n"
        );
        let mut cfg = SinkConfig {
            ty: crate::config::SinkType::Files,
            ..SinkConfig::default()
        };
        let mut gz = FileEncoder::new(&cfg, None, &schema).unwrap();
        gz.write(&batch).unwrap();
        let bytes = gz.finish().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text).unwrap();
        assert_eq!(text.lines().count(), 2);
        cfg.format = Some(FileFormat::Parquet);
        let props = writer_properties(&cfg, &schema).unwrap();
        let mut pq = FileEncoder::new(&cfg, Some(props), &schema).unwrap();
        pq.write(&batch).unwrap();
        let bytes = pq.finish().unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
    }
}
