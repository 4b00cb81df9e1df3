//! The [`StreamLog`]: recovery, the group-commit writer thread, reads and truncation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::record_batch::RecordBatch;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::codec;
use crate::error::{Error, Result};
use crate::format::{
    self, DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_BYTES, IndexEntry, LOCK_FILE_NAME, LOG_ID_FILE_NAME,
    MAX_GROUP_BYTES, MAX_INFLIGHT_BYTES, MAX_PAYLOAD_BYTES, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN,
    ScanStop,
};

/// Tuning knobs of a [`StreamLog`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Roll to a new segment when the active one has reached this many bytes. Rolling happens
    /// between commit groups, so a segment may exceed it by up to one group
    /// ([`MAX_GROUP_BYTES`]). Default [`DEFAULT_SEGMENT_BYTES`] (64 MiB).
    pub segment_bytes: u64,
    /// Largest accepted record payload (encoded Arrow IPC bytes); a bigger batch is refused with
    /// [`Error::RecordTooLarge`]. Default [`DEFAULT_MAX_RECORD_BYTES`] (64 MiB); values above
    /// [`MAX_PAYLOAD_BYTES`] are clamped to it.
    pub max_record_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// Offsets assigned to an appended batch: its rows are `first_offset..next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// Offset of the batch's first row.
    pub first_offset: u64,
    /// Offset following the batch's last row (the log's end offset right after this append).
    pub next_offset: u64,
}

/// One record returned by [`StreamLog::read`].
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Offset of the first row of `batch` (after slicing, if the read started mid-record).
    pub offset: u64,
    /// The rows; never empty.
    pub batch: RecordBatch,
    /// Wall-clock time (ms since the Unix epoch) at which the record was committed.
    pub appended_at_ms: i64,
}

impl LogRecord {
    /// Offset following the record's last row: `offset + batch.num_rows()`.
    pub fn end(&self) -> u64 {
        self.offset + self.batch.num_rows() as u64
    }
}

/// One segment file as known in memory. Only durable records are in `index`.
struct Segment {
    base: u64,
    path: Arc<Path>,
    file: Arc<File>,
    index: Vec<IndexEntry>,
    /// Durable length of the file (header included).
    bytes: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.index.last().map_or(self.base, IndexEntry::end)
    }
}

/// State shared by readers, truncation and the writer thread.
struct Inner {
    /// Never empty; the last one is the writer's active segment.
    segments: Vec<Segment>,
    /// Durable end offset.
    end: u64,
}

/// Which I/O step a test wants to fail (fault injection, compiled in for unit tests only).
#[derive(Debug, Clone, Copy)]
enum Fault {
    Write,
    Sync,
    Rollback,
}

#[cfg(test)]
#[derive(Default)]
struct Faults {
    write: std::sync::atomic::AtomicU32,
    sync: std::sync::atomic::AtomicU32,
    rollback: std::sync::atomic::AtomicU32,
}

struct Shared {
    dir: PathBuf,
    inner: RwLock<Inner>,
    end: AtomicU64,
    disk_bytes: AtomicU64,
    fsyncs: AtomicU64,
    watch: watch::Sender<u64>,
    failed: OnceLock<String>,
    closed: AtomicBool,
    #[cfg(test)]
    faults: Faults,
    /// Test hook: the writer takes this lock after receiving a record and before draining the
    /// queue, so a test holding it can make a group of a known size.
    #[cfg(test)]
    gate: Mutex<()>,
    /// Test hook: number of records handed to the writer.
    #[cfg(test)]
    queued: AtomicU64,
}

impl Shared {
    fn read_inner(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_inner(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn count_fsync(&self) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn inject(&self, fault: Fault) -> io::Result<()> {
        let counter = match fault {
            Fault::Write => &self.faults.write,
            Fault::Sync => &self.faults.sync,
            Fault::Rollback => &self.faults.rollback,
        };
        let armed = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if armed {
            Err(io::Error::other(format!("injected {fault:?} failure")))
        } else {
            Ok(())
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn inject(&self, _fault: Fault) -> io::Result<()> {
        Ok(())
    }
}

/// An encoded record waiting for the writer thread.
struct Pending {
    /// [`RECORD_HEADER_LEN`] bytes of header space followed by the IPC payload.
    frame: Vec<u8>,
    rows: u32,
    reply: oneshot::Sender<Result<AppendAck>>,
}

/// A durable, ordered, append-only log of Arrow record batches stored in segment files in one
/// directory. See the crate documentation for the format and guarantees.
///
/// `StreamLog` is `Send + Sync` and meant to be shared as `Arc<StreamLog>`.
pub struct StreamLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    inflight: Semaphore,
    max_record_bytes: usize,
    /// The log's identity (see [`StreamLog::log_id`]).
    log_id: String,
    /// Exclusive flock on the directory's lock file; released when the log is dropped.
    _lock: File,
}

impl std::fmt::Debug for StreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog")
            .field("dir", &self.shared.dir)
            .field("start_offset", &self.start_offset())
            .field("end_offset", &self.end_offset())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Creates (or overwrites) a segment file holding just its header, synced to disk.
fn create_segment_file(path: &Path, base: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all_at(&format::encode_segment_header(base), 0)?;
    file.sync_all()?;
    Ok(file)
}

/// The log's id from [`LOG_ID_FILE_NAME`]; a new random one (written durably) when the file is
/// missing: a new log, or one created before logs had ids.
fn read_or_create_log_id(dir: &Path) -> Result<String> {
    let path = dir.join(LOG_ID_FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    // 128 random bits from the std hasher's per-process random keys, mixed with time and pid.
    use std::hash::{BuildHasher, Hasher};
    let mut id = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.write_u32(std::process::id());
        id.push_str(&format!("{:016x}", h.finish()));
    }
    let tmp = dir.join(format!("{LOG_ID_FILE_NAME}.tmp"));
    (|| -> io::Result<()> {
        let f = File::create(&tmp)?;
        f.write_all_at(format!("{id}\n").as_bytes(), 0)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })()
    .map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok(id)
}

/// Lists the base offsets of the segment files in `dir`, sorted.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        match name.to_str().and_then(format::parse_segment_file_name) {
            Some(base) => bases.push(base),
            None if name == LOCK_FILE_NAME || name == LOG_ID_FILE_NAME => {}
            None => {
                warn!(file = %entry.path().display(), "ignoring unexpected file in stream log directory");
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens and verifies one segment. `last` selects torn-tail repair instead of failing.
fn recover_segment(dir: &Path, base: u64, last: bool) -> Result<Segment> {
    let path: Arc<Path> = dir.join(format::segment_file_name(base)).into();
    let io_err = |e| Error::io(&*path, e);
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();

    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let header_len = file_len.min(SEGMENT_HEADER_LEN as u64) as usize;
    file.read_exact_at(&mut header[..header_len], 0).map_err(io_err)?;
    if let Err(reason) = format::check_segment_header(&header[..header_len], base) {
        if last && file_len <= SEGMENT_HEADER_LEN as u64 {
            // A crash while rolling: the new file's header never became durable, and no record
            // can have been written after it. Re-initialise the empty segment.
            warn!(path = %path.display(), %reason, "rewriting torn header of empty last segment");
            file.write_all_at(&format::encode_segment_header(base), 0)
                .and_then(|()| file.set_len(SEGMENT_HEADER_LEN as u64))
                .and_then(|()| file.sync_all())
                .map_err(io_err)?;
            return Ok(Segment {
                base,
                path,
                file: Arc::new(file),
                index: Vec::new(),
                bytes: SEGMENT_HEADER_LEN as u64,
            });
        }
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason,
        });
    }

    let mut reader_file = &file;
    reader_file
        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN as u64))
        .map_err(io_err)?;
    let reader = BufReader::with_capacity(256 * 1024, reader_file);
    let scan = format::scan_records(reader, SEGMENT_HEADER_LEN as u64, file_len, base).map_err(io_err)?;
    match scan.stop {
        None => {}
        Some(ScanStop::Torn { position, reason }) if last => {
            warn!(
                path = %path.display(),
                position,
                %reason,
                cut_bytes = file_len - scan.valid_len,
                "cutting torn tail of the last segment (unacknowledged writes)"
            );
            file.set_len(scan.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(io_err)?;
        }
        Some(ScanStop::Torn { position, reason } | ScanStop::Invalid { position, reason }) => {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                position,
                reason,
            });
        }
    }
    Ok(Segment {
        base,
        path,
        file: Arc::new(file),
        index: scan.entries,
        bytes: scan.valid_len,
    })
}

impl StreamLog {
    /// Opens the log in `dir` (creating the directory if needed) and recovers it.
    ///
    /// Every segment is scanned and every record checksum verified. A torn or corrupt tail in
    /// the last segment (an interrupted, hence unacknowledged, write) is cut off: the file is
    /// truncated to the last good record and a warning is logged; it is never returned. A bad
    /// record in any other segment, a checksum-valid record with an unexpected offset, or a gap
    /// between segments fails with [`Error::Corrupt`]. A directory already open (in this or
    /// another process) fails with an [`Error::Io`] of kind `WouldBlock`.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<Arc<StreamLog>> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        lock.try_lock().map_err(|e| {
            let source = match e {
                fs::TryLockError::WouldBlock => {
                    io::Error::new(io::ErrorKind::WouldBlock, "stream log directory is already open")
                }
                fs::TryLockError::Error(e) => e,
            };
            Error::io(&lock_path, source)
        })?;

        let bases = list_segments(dir)?;
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let segment = recover_segment(dir, base, i + 1 == bases.len())?;
            if let Some(prev) = segments.last()
                && prev.end() != base
            {
                return Err(Error::Corrupt {
                    path: segment.path.to_path_buf(),
                    position: 0,
                    reason: format!(
                        "segment starts at offset {base} but the previous segment ends at {}",
                        prev.end()
                    ),
                });
            }
            segments.push(segment);
        }
        if segments.is_empty() {
            let path: Arc<Path> = dir.join(format::segment_file_name(0)).into();
            let file = create_segment_file(&path, 0).map_err(|e| Error::io(&*path, e))?;
            sync_dir(dir)?;
            segments.push(Segment {
                base: 0,
                path,
                file: Arc::new(file),
                index: Vec::new(),
                bytes: SEGMENT_HEADER_LEN as u64,
            });
        }

        let log_id = read_or_create_log_id(dir)?;
        let start = segments[0].base;
        let end = segments.last().map_or(0, Segment::end);
        let disk_bytes = segments.iter().map(|s| s.bytes).sum();
        info!(
            dir = %dir.display(),
            segments = segments.len(),
            start_offset = start,
            end_offset = end,
            disk_bytes,
            "opened stream log"
        );
        let active = segments.last().expect("at least one segment");
        let writer_state = Writer {
            active_path: active.path.clone(),
            active_file: active.file.clone(),
            active_len: active.bytes,
            active_records: active.index.len(),
            next_offset: end,
            segment_bytes: opts.segment_bytes,
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                inner: RwLock::new(Inner { segments, end }),
                end: AtomicU64::new(end),
                disk_bytes: AtomicU64::new(disk_bytes),
                fsyncs: AtomicU64::new(0),
                watch: watch::Sender::new(end),
                failed: OnceLock::new(),
                closed: AtomicBool::new(false),
                #[cfg(test)]
                faults: Faults::default(),
                #[cfg(test)]
                gate: Mutex::new(()),
                #[cfg(test)]
                queued: AtomicU64::new(0),
            }),
            entries: Vec::new(),
        };
        let shared = writer_state.shared.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let thread_name = format!(
            "floe-log-{}",
            dir.file_name().map_or_else(|| "log".into(), |n| n.to_string_lossy())
        );
        let handle = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || writer_state.run(rx))
            .map_err(|e| Error::io(dir, e))?;
        Ok(Arc::new(StreamLog {
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            inflight: Semaphore::new(MAX_INFLIGHT_BYTES),
            max_record_bytes: opts.max_record_bytes.min(MAX_PAYLOAD_BYTES),
            log_id,
            _lock: lock,
        }))
    }

    /// The log's identity: a random id made when the log was created, kept in
    /// [`LOG_ID_FILE_NAME`]. A folder replaced by another log has another id, even when that log
    /// is longer; a copy of this log keeps it.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// Appends one batch and returns once it is durable (fsynced), with the offsets of its rows.
    ///
    /// The batch is encoded to Arrow IPC in the calling task; the writer thread then commits
    /// everything queued in one write burst and one `fdatasync` (group commit). On an error no
    /// part of the batch is acknowledged or will ever become visible. A batch without rows is
    /// not written: the result is an empty range at the current end offset.
    ///
    /// If the future is dropped after the batch was handed to the writer, the batch may still
    /// be committed.
    pub async fn append(&self, batch: RecordBatch) -> Result<AppendAck> {
        self.check_writable()?;
        let rows = batch.num_rows();
        if rows == 0 {
            let end = self.end_offset();
            return Ok(AppendAck {
                first_offset: end,
                next_offset: end,
            });
        }
        let limit = self.max_record_bytes;
        let rows = u32::try_from(rows).map_err(|_| Error::RecordTooLarge {
            size: batch.get_array_memory_size(),
            limit,
        })?;
        let frame = codec::encode_frame(&batch, limit)?;
        drop(batch);
        let payload_len = frame.len() - RECORD_HEADER_LEN;
        if payload_len > limit {
            return Err(Error::RecordTooLarge {
                size: payload_len,
                limit,
            });
        }

        // Back-pressure: bound the bytes queued for the writer. The permit is held until the
        // writer answered, i.e. until the frame has been freed.
        let permits = frame.len().min(MAX_INFLIGHT_BYTES) as u32;
        let _permit = self.inflight.acquire_many(permits).await.map_err(|_| Error::Closed)?;

        let (reply, answer) = oneshot::channel();
        {
            let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
            let tx = tx.as_ref().ok_or(Error::Closed)?;
            tx.send(Pending { frame, rows, reply }).map_err(|_| Error::Closed)?;
        }
        #[cfg(test)]
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        answer.await.map_err(|_| Error::Closed)?
    }

    fn check_writable(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(reason) = self.shared.failed.get() {
            return Err(Error::Failed { reason: reason.clone() });
        }
        Ok(())
    }

    /// First offset still stored (everything below was removed by [`truncate_before`]).
    ///
    /// [`truncate_before`]: StreamLog::truncate_before
    pub fn start_offset(&self) -> u64 {
        self.shared.read_inner().segments[0].base
    }

    /// Next offset to be assigned, which is also the durable end: only durable rows are visible.
    pub fn end_offset(&self) -> u64 {
        self.shared.end.load(Ordering::Acquire)
    }

    /// A receiver of the durable end offset, updated after each successful fsync.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.watch.subscribe()
    }

    /// Reads durable records starting at row offset `offset`.
    ///
    /// If `offset` falls inside a record, that record's batch is sliced so that the first
    /// returned row is `offset`. Records are returned in order until about `max_bytes` of
    /// payload have been read (at least one record if any is available); the result is empty
    /// when `offset == end_offset()`. Fails with [`Error::OffsetOutOfRange`] if `offset` is
    /// below [`start_offset`](StreamLog::start_offset) or above
    /// [`end_offset`](StreamLog::end_offset). Every record's checksum is verified.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<LogRecord>> {
        // Plan under the lock (a few binary searches and copies), do the I/O without it.
        let mut files: Vec<(Arc<Path>, Arc<File>)> = Vec::new();
        let mut plan: Vec<(usize, IndexEntry)> = Vec::new();
        {
            let inner = self.shared.read_inner();
            let start = inner.segments[0].base;
            if offset < start || offset > inner.end {
                return Err(Error::OffsetOutOfRange {
                    offset,
                    start,
                    end: inner.end,
                });
            }
            if offset == inner.end {
                return Ok(Vec::new());
            }
            let first = inner.segments.partition_point(|s| s.base <= offset) - 1;
            let mut budget = 0usize;
            'segments: for seg in &inner.segments[first..] {
                let from = seg.index.partition_point(|e| e.end() <= offset);
                if from == seg.index.len() {
                    continue;
                }
                files.push((seg.path.clone(), seg.file.clone()));
                for e in &seg.index[from..] {
                    plan.push((files.len() - 1, *e));
                    budget = budget.saturating_add(e.len as usize);
                    if budget >= max_bytes {
                        break 'segments;
                    }
                }
            }
        }

        let mut records = Vec::with_capacity(plan.len());
        for (file_idx, entry) in plan {
            let (path, file) = &files[file_idx];
            let (appended_at_ms, mut batch) = read_record(path, file, &entry)?;
            let mut record_offset = entry.offset;
            if offset > entry.offset {
                let skip = (offset - entry.offset) as usize;
                batch = batch.slice(skip, batch.num_rows() - skip);
                record_offset = offset;
            }
            records.push(LogRecord {
                offset: record_offset,
                batch,
                appended_at_ms,
            });
        }
        Ok(records)
    }

    /// Deletes the oldest segments whose every row is below `offset`; the active (last) segment
    /// is never deleted, so [`start_offset`](StreamLog::start_offset) may stay below `offset`.
    /// Returns the number of bytes freed.
    pub fn truncate_before(&self, offset: u64) -> Result<u64> {
        let mut inner = self.shared.write_inner();
        let mut removed = 0usize;
        let mut freed = 0u64;
        let mut result = Ok(());
        // A segment's rows all lie below the next segment's base.
        while removed + 1 < inner.segments.len() && inner.segments[removed + 1].base <= offset {
            let seg = &inner.segments[removed];
            if let Err(e) = fs::remove_file(&seg.path)
                && e.kind() != io::ErrorKind::NotFound
            {
                result = Err(Error::io(&*seg.path, e));
                break;
            }
            freed += seg.bytes;
            removed += 1;
        }
        inner.segments.drain(..removed);
        let start = inner.segments[0].base;
        drop(inner);
        if removed > 0 {
            self.shared.disk_bytes.fetch_sub(freed, Ordering::Relaxed);
            info!(
                dir = %self.shared.dir.display(),
                segments = removed,
                freed,
                start_offset = start,
                "truncated stream log"
            );
            sync_dir(&self.shared.dir)?;
        }
        result.map(|()| freed)
    }

    /// Total size in bytes of the segment files (durable contents).
    pub fn disk_bytes(&self) -> u64 {
        self.shared.disk_bytes.load(Ordering::Relaxed)
    }

    /// Number of fsync calls (data, new segment files and directory) made since open: with group
    /// commit this stays below the number of appends under concurrent load.
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// Stops the writer thread after it has committed everything already queued; later appends
    /// fail with [`Error::Closed`]. Reads keep working. Idempotent; also done on drop.
    ///
    /// Blocks the calling thread until the writer has finished its last commit.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        drop(self.tx.lock().unwrap_or_else(PoisonError::into_inner).take());
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            error!(dir = %self.shared.dir.display(), "stream log writer thread panicked");
        }
    }

    /// Test hook: make the next `n` record writes, data syncs or rollbacks fail.
    #[cfg(test)]
    fn inject_failures(&self, writes: u32, syncs: u32, rollbacks: u32) {
        let f = &self.shared.faults;
        f.write.store(writes, Ordering::SeqCst);
        f.sync.store(syncs, Ordering::SeqCst);
        f.rollback.store(rollbacks, Ordering::SeqCst);
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads one record with pread, verifying the header against the index and the checksum.
fn read_record(path: &Path, file: &File, entry: &IndexEntry) -> Result<(i64, RecordBatch)> {
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_path_buf(),
        position: entry.pos,
        reason: reason.to_string(),
    };
    let mut hb = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut hb, entry.pos).map_err(|e| Error::io(path, e))?;
    let h = RecordHeader::decode(&hb);
    if h.len != entry.len || h.offset != entry.offset || h.rows != entry.rows {
        return Err(corrupt("record header does not match the index"));
    }
    let mut payload = codec::payload_buffer(entry.len as usize);
    file.read_exact_at(payload.as_slice_mut(), entry.pos + RECORD_HEADER_LEN as u64)
        .map_err(|e| Error::io(path, e))?;
    if format::record_crc(&hb, payload.as_slice()) != h.crc {
        return Err(corrupt("record checksum mismatch on read"));
    }
    let batch = codec::decode_payload(payload)?;
    if batch.num_rows() != entry.rows as usize {
        return Err(corrupt("decoded batch row count differs from the record header"));
    }
    Ok((h.appended_at_ms, batch))
}

/// State owned by the writer thread.
struct Writer {
    shared: Arc<Shared>,
    active_path: Arc<Path>,
    active_file: Arc<File>,
    /// Durable length of the active segment file.
    active_len: u64,
    active_records: usize,
    next_offset: u64,
    segment_bytes: u64,
    /// Reused buffer of the index entries of the group being committed.
    entries: Vec<IndexEntry>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let mut group: Vec<Pending> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            #[cfg(test)]
            drop(self.shared.gate.lock().unwrap_or_else(PoisonError::into_inner));
            let mut bytes = first.frame.len();
            group.push(first);
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.frame.len();
                        group.push(p);
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
            debug_assert!(group.is_empty());
        }
        debug!(dir = %self.shared.dir.display(), "stream log writer stopped");
    }

    fn fail_all(group: &mut Vec<Pending>, make: impl Fn() -> Error) {
        for p in group.drain(..) {
            let _ = p.reply.send(Err(make()));
        }
    }

    /// Writes, syncs and publishes one group, then answers every waiter in it.
    fn commit(&mut self, group: &mut Vec<Pending>) {
        if let Some(reason) = self.shared.failed.get() {
            Self::fail_all(group, || Error::Failed { reason: reason.clone() });
            return;
        }
        if self.active_records > 0
            && self.active_len >= self.segment_bytes
            && let Err(e) = self.roll()
        {
            error!(error = %e, "rolling to a new segment failed; failing the commit group");
            let (path, kind, msg) = match &e {
                Error::Io { path, source } => (path.clone(), source.kind(), source.to_string()),
                other => (self.shared.dir.clone(), io::ErrorKind::Other, other.to_string()),
            };
            Self::fail_all(group, || Error::Io {
                path: path.clone(),
                source: io::Error::new(kind, msg.clone()),
            });
            return;
        }

        let appended_at_ms = now_ms();
        let mut pos = self.active_len;
        let mut offset = self.next_offset;
        self.entries.clear();
        let mut outcome = Ok(());
        for p in group.iter_mut() {
            format::fill_record_header(&mut p.frame, offset, p.rows, appended_at_ms);
            if let Err(e) = self
                .shared
                .inject(Fault::Write)
                .and_then(|()| self.active_file.write_all_at(&p.frame, pos))
            {
                outcome = Err(("write", e));
                break;
            }
            self.entries.push(IndexEntry {
                offset,
                pos,
                len: (p.frame.len() - RECORD_HEADER_LEN) as u32,
                rows: p.rows,
            });
            pos += p.frame.len() as u64;
            offset += u64::from(p.rows);
        }
        if outcome.is_ok() {
            outcome = self
                .shared
                .inject(Fault::Sync)
                .and_then(|()| self.active_file.sync_data())
                .map_err(|e| ("fsync", e));
            self.shared.count_fsync();
        }
        if let Err((step, e)) = outcome {
            self.abort(group, step, e);
            return;
        }

        // Durable: publish to readers, then acknowledge.
        let first_offset = self.next_offset;
        {
            let mut inner = self.shared.write_inner();
            let seg = inner.segments.last_mut().expect("active segment");
            seg.index.extend_from_slice(&self.entries);
            seg.bytes = pos;
            inner.end = offset;
        }
        self.shared
            .disk_bytes
            .fetch_add(pos - self.active_len, Ordering::Relaxed);
        self.shared.end.store(offset, Ordering::Release);
        self.shared.watch.send_replace(offset);
        self.active_len = pos;
        self.active_records += group.len();
        self.next_offset = offset;

        let mut next = first_offset;
        for p in group.drain(..) {
            let first = next;
            next += u64::from(p.rows);
            let _ = p.reply.send(Ok(AppendAck {
                first_offset: first,
                next_offset: next,
            }));
        }
    }

    /// A write or fsync failed: cut the file back to its durable length so those bytes can never
    /// be exposed (not now, not after a crash), and fail every waiter of the group. If even that
    /// fails, the log is marked failed.
    fn abort(&mut self, group: &mut Vec<Pending>, step: &str, e: io::Error) {
        error!(
            path = %self.active_path.display(),
            step,
            error = %e,
            records = group.len(),
            "stream log commit failed; rolling the group back"
        );
        let rollback = self
            .shared
            .inject(Fault::Rollback)
            .and_then(|()| self.active_file.set_len(self.active_len))
            .and_then(|()| self.active_file.sync_all());
        self.shared.count_fsync();
        if let Err(e2) = rollback {
            let reason = format!(
                "{step} of {} failed ({e}) and rolling back to byte {} failed too ({e2})",
                self.active_path.display(),
                self.active_len
            );
            error!(%reason, "marking stream log failed");
            let _ = self.shared.failed.set(reason);
        }
        let (kind, msg, path) = (e.kind(), e.to_string(), self.active_path.clone());
        Self::fail_all(group, || Error::Io {
            path: path.to_path_buf(),
            source: io::Error::new(kind, format!("{step} failed: {msg}")),
        });
    }

    /// Starts a new segment at the next offset: create, write the header, fsync the file and
    /// the directory, then make it the active segment.
    fn roll(&mut self) -> Result<()> {
        let base = self.next_offset;
        let path: Arc<Path> = self.shared.dir.join(format::segment_file_name(base)).into();
        let file = match create_segment_file(&path, base) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(Error::io(&*path, e));
            }
        };
        self.shared.count_fsync();
        if let Err(e) = sync_dir(&self.shared.dir) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.shared.count_fsync();
        let file = Arc::new(file);
        {
            let mut inner = self.shared.write_inner();
            inner.segments.push(Segment {
                base,
                path: path.clone(),
                file: file.clone(),
                index: Vec::new(),
                bytes: SEGMENT_HEADER_LEN as u64,
            });
        }
        self.shared
            .disk_bytes
            .fetch_add(SEGMENT_HEADER_LEN as u64, Ordering::Relaxed);
        debug!(path = %path.display(), base, "rolled to a new segment");
        self.active_path = path;
        self.active_file = file;
        self.active_len = SEGMENT_HEADER_LEN as u64;
        self.active_records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let col: ArrayRef = Arc::new(Int64Array::from_iter_values(values));
        RecordBatch::try_from_iter([("v", col)]).unwrap()
    }

    fn values(records: &[LogRecord]) -> Vec<i64> {
        records
            .iter()
            .flat_map(|r| {
                r.batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn failed_write_or_sync_is_rolled_back_and_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
        rt.block_on(async {
            log.append(batch(0..3)).await.unwrap();
            let durable_bytes = log.disk_bytes();

            log.inject_failures(1, 0, 0);
            let err = log.append(batch(100..105)).await.unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert!(err.is_retryable());
            assert_eq!(log.end_offset(), 3);
            assert_eq!(log.disk_bytes(), durable_bytes);

            log.inject_failures(0, 1, 0);
            let err = log.append(batch(200..204)).await.unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert_eq!(log.end_offset(), 3);
            assert_eq!(*log.subscribe().borrow(), 3);

            // The log continues at the same offset, and the failed bytes are gone.
            let ack = log.append(batch(3..5)).await.unwrap();
            assert_eq!((ack.first_offset, ack.next_offset), (3, 5));
            assert_eq!(values(&log.read(0, usize::MAX).unwrap()), vec![0, 1, 2, 3, 4]);
        });
        drop(log);
        let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(log.end_offset(), 5);
        assert_eq!(values(&log.read(0, usize::MAX).unwrap()), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn failed_rollback_marks_the_log_failed() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
        rt.block_on(async {
            log.append(batch(0..2)).await.unwrap();
            log.inject_failures(0, 1, 1);
            assert!(matches!(log.append(batch(2..4)).await.unwrap_err(), Error::Io { .. }));
            let err = log.append(batch(2..4)).await.unwrap_err();
            assert!(matches!(err, Error::Failed { .. }), "{err}");
            assert!(!err.is_retryable());
            // Reads of acknowledged data still work.
            assert_eq!(values(&log.read(0, 0).unwrap()), vec![0, 1]);
        });
        drop(log);
        // Recovery: the unacknowledged record is still in the file (the rollback "failed"), and
        // it is a valid record, so it becomes visible: the same as a crash after the write
        // reached the disk but before the acknowledgement. Appends work again.
        let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
        let end = log.end_offset();
        assert!(end == 2 || end == 4);
        rt.block_on(async {
            let ack = log.append(batch(9..10)).await.unwrap();
            assert_eq!(ack.first_offset, end);
        });
    }

    /// Queues `n` appends while the writer is held at its gate, so they form one group.
    // Holding the std mutex across `yield_now` is the point: it blocks the writer thread (not
    // a task) until every append is queued.
    #[allow(clippy::await_holding_lock)]
    async fn append_as_one_group(log: &Arc<StreamLog>, n: i64) -> Vec<Result<AppendAck>> {
        let gate = log.shared.gate.lock().unwrap();
        let queued_before = log.shared.queued.load(Ordering::SeqCst);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let log = log.clone();
            tasks.spawn(async move { log.append(batch(i * 10..i * 10 + 2)).await });
        }
        while log.shared.queued.load(Ordering::SeqCst) < queued_before + n as u64 {
            tokio::task::yield_now().await;
        }
        drop(gate);
        tasks.join_all().await
    }

    #[test]
    fn one_group_shares_one_fsync_and_fails_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
        let rt = rt();
        rt.block_on(async {
            // A failed fsync fails every waiter of the group, and nothing becomes visible.
            log.inject_failures(0, 1, 0);
            let results = append_as_one_group(&log, 6).await;
            assert!(results.iter().all(|r| matches!(r, Err(Error::Io { .. }))));
            assert_eq!(log.end_offset(), 0);
            assert!(log.read(0, 0).unwrap().is_empty());

            // A successful group: one data fsync for six appends, contiguous offsets.
            let fsyncs = log.fsync_count();
            let results = append_as_one_group(&log, 6).await;
            assert_eq!(log.fsync_count(), fsyncs + 1);
            let mut acks: Vec<AppendAck> = results.into_iter().map(|r| r.unwrap()).collect();
            acks.sort_by_key(|a| a.first_offset);
            let mut next = 0;
            for a in &acks {
                assert_eq!((a.first_offset, a.next_offset), (next, next + 2));
                next = a.next_offset;
            }
            assert_eq!(log.end_offset(), 12);
            assert_eq!(log.read(0, usize::MAX).unwrap().len(), 6);
        });
        drop(log);
        let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(log.end_offset(), 12);
    }

    #[test]
    fn empty_batch_is_a_no_op_and_closed_log_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
        let rt = rt();
        rt.block_on(async {
            let ack = log.append(batch(0..0)).await.unwrap();
            assert_eq!((ack.first_offset, ack.next_offset), (0, 0));
            log.append(batch(0..1)).await.unwrap();
            log.close();
            log.close();
            assert!(matches!(log.append(batch(1..2)).await.unwrap_err(), Error::Closed));
            assert_eq!(values(&log.read(0, 0).unwrap()), vec![0]);
        });
    }

    #[test]
    fn second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
        match StreamLog::open(dir.path(), LogOptions::default()) {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::WouldBlock)
            }
            other => panic!("expected a lock error, got {other:?}"),
        }
        drop(log);
        StreamLog::open(dir.path(), LogOptions::default()).unwrap();
    }

    #[test]
    fn record_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            max_record_bytes: 1000,
            ..LogOptions::default()
        };
        let log = StreamLog::open(dir.path(), opts).unwrap();
        rt().block_on(async {
            match log.append(batch(0..1000)).await {
                Err(Error::RecordTooLarge { size, limit }) => {
                    assert!(size > 1000);
                    assert_eq!(limit, 1000);
                }
                other => panic!("expected RecordTooLarge, got {other:?}"),
            }
            log.append(batch(0..10)).await.unwrap();
        });
        assert_eq!(log.end_offset(), 10);
    }

    #[test]
    fn stream_log_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<StreamLog>();
        check::<Arc<StreamLog>>();
    }
}
