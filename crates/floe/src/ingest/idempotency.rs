//! `Idempotency-Key`: a retried request gets the first answer back and stores nothing new.
//!
//! The key travels **inside the log record** (as metadata of the batch's Arrow schema), so it
//! becomes durable in the same fsync as the rows: there is no moment where the rows are stored
//! but the key is not, or the reverse. The answer of a request is a pure function of its record
//! (`accepted` = rows, `first_offset`, `next_offset`), so it can be rebuilt from the record.
//!
//! ```text
//!  keys file  <stream dir>/idempotency.jsonl   one JSON line per acknowledged key, written
//!                                              before the 200, fsynced before log truncation
//!  recovery   keys file (within the window)  ∪  keys found in the records still in the log
//! ```
//!
//! Rules (docs/design.md, "Idempotency keys"):
//! - A key must never vanish while its window is open. The line is written to the keys file
//!   before the request is answered; if that write fails the request answers 503 (retryable)
//!   although its rows are durable: the key is in their log record, the slot stays in memory
//!   and log truncation stops until the line is written ([`IdempotencyStore::sync`] fails), so
//!   the client's retry with the same key gets the first answer once the file is writable —
//!   never a second copy of the rows.
//! - The store is bounded: `limits.idempotency_max_keys` entries and
//!   `limits.idempotency_max_bytes` of live lines. A new key beyond either is a 429 naming the
//!   limit (keys inside the window are never dropped to make room). The keys file's bytes count
//!   in the stream's `limits.stream_max_disk_bytes` budget.
//! - Compaction runs on the truncation timer ([`IdempotencyStore::expire`]) and at start: the
//!   file is rewritten with the live entries only (temp file, fsync, rename, directory fsync)
//!   when it holds more than twice the live bytes.
//! - A request's slot is freed when its [`Guard`] is dropped without an answer (the client went
//!   away, the handler future was dropped): a retry with the key is processed, never stuck.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::http::StatusCode;
use floe_stream::StreamLog;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::Error;
use crate::ingest::record;

/// Longest accepted `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 200;
/// Log bytes read per step when rebuilding keys from the log at start-up.
const RECOVERY_READ_BYTES: usize = 64 * 1024 * 1024;
/// The keys file is compacted once it is over twice its live bytes and at least this big (a
/// small file is not worth rewriting every two seconds).
const COMPACT_MIN_BYTES: u64 = 64 * 1024;
/// Bytes a key's line takes besides the key (JSON of the answer, room for large numbers).
const LINE_OVERHEAD: u64 = 160;

/// The remembered answer of an acknowledged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Rows accepted.
    pub accepted: u64,
    /// First offset of the rows.
    pub first_offset: u64,
    /// Offset after the rows.
    pub next_offset: u64,
    /// When it was acknowledged (Unix millis).
    pub at_ms: i64,
    /// Rows stored as dead letters (`on_invalid = "dead_letter"`).
    #[serde(default)]
    pub dead_lettered: u64,
}

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    #[serde(flatten)]
    answer: Answer,
}

fn line_of(key: &str, answer: Answer) -> String {
    let mut line = serde_json::to_string(&Line {
        key: key.to_string(),
        answer,
    })
    .expect("a key and numbers serialize");
    line.push('\n');
    line
}

enum Slot {
    /// Acknowledged; `written` says whether its line is in the keys file yet.
    Done {
        answer: Answer,
        line_bytes: u64,
        written: bool,
    },
    /// A request with this key is being processed (by the guard with this id); the receiver
    /// turns `Some` when it is done (`None` inside means it failed and the key is free again).
    InFlight {
        id: u64,
        rx: watch::Receiver<Option<Option<Answer>>>,
    },
}

/// What to do with a request carrying a key.
pub enum Begin {
    /// Answer with this, store nothing.
    Replay(Answer),
    /// Process the request; report the outcome through the guard.
    Process(Guard),
}

/// Held while a keyed request is processed; dropping it without [`IdempotencyStore::done`]
/// frees the key (the slot is removed and waiters are woken).
pub struct Guard {
    shared: Arc<Shared>,
    key: String,
    id: u64,
    tx: watch::Sender<Option<Option<Answer>>>,
    done: bool,
}

struct Shared {
    dir: PathBuf,
    path: PathBuf,
    window_ms: i64,
    max_keys: usize,
    max_bytes: u64,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
}

struct Inner {
    slots: HashMap<String, Slot>,
    file: File,
    /// Bytes of the keys file.
    file_bytes: u64,
    /// Bytes of the lines of the `Done` slots (what a compacted file holds).
    live_bytes: u64,
    /// Keys whose line could not be written yet.
    pending: Vec<String>,
    /// The last write failed part-way: the next one starts with a newline, so a torn fragment
    /// stays a line of its own (skipped when read) instead of corrupting the next line.
    torn: bool,
}

/// The keys of one stream.
pub struct IdempotencyStore {
    shared: Arc<Shared>,
}

/// Limits of a store (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// `limits.idempotency_window_seconds`.
    pub window_seconds: u64,
    /// `limits.idempotency_max_keys`.
    pub max_keys: usize,
    /// `limits.idempotency_max_bytes`.
    pub max_bytes: u64,
}

impl From<&crate::config::Limits> for StoreLimits {
    fn from(l: &crate::config::Limits) -> Self {
        StoreLimits {
            window_seconds: l.idempotency_window_seconds,
            max_keys: l.idempotency_max_keys,
            max_bytes: l.idempotency_max_bytes,
        }
    }
}

fn unavailable(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!(
        "{what} the idempotency keys file {}: {e}; retry with the same Idempotency-Key",
        path.display()
    ))
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<Slot> {
        let old = self.slots.remove(key);
        if let Some(Slot::Done { line_bytes, .. }) = &old {
            self.live_bytes = self.live_bytes.saturating_sub(*line_bytes);
        }
        old
    }

    fn insert(&mut self, key: String, slot: Slot) {
        self.remove(&key);
        if let Slot::Done { line_bytes, .. } = &slot {
            self.live_bytes += line_bytes;
        }
        self.slots.insert(key, slot);
    }

    fn append(&mut self, line: &str) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        if self.torn {
            buf.push(b'\n');
        }
        buf.extend_from_slice(line.as_bytes());
        match self.file.write_all(&buf) {
            Ok(()) => {
                self.torn = false;
                self.file_bytes += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                // What reached the file is unknown; count it all (the disk budget errs high).
                self.file_bytes += buf.len() as u64;
                Err(e)
            }
        }
    }

    /// Writes the lines of keys whose earlier write failed.
    fn flush_pending(&mut self) -> std::io::Result<()> {
        while let Some(key) = self.pending.last().cloned() {
            if let Some(Slot::Done {
                answer, written: false, ..
            }) = self.slots.get(&key)
            {
                let line = line_of(&key, *answer);
                self.append(&line)?;
                if let Some(Slot::Done { written, .. }) = self.slots.get_mut(&key) {
                    *written = true;
                }
            }
            self.pending.pop();
        }
        Ok(())
    }

    fn expire(&mut self, now: i64, window_ms: i64) {
        let old: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Done { answer, .. } if now - answer.at_ms >= window_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            self.remove(&k);
        }
    }
}

/// Writes `entries` as the whole keys file, atomically: a temp file, fsynced, renamed over the
/// file, and the directory fsynced — a crash leaves the old file or the new one, never a mix.
fn rewrite(dir: &Path, path: &Path, entries: &[(&str, Answer)]) -> std::io::Result<u64> {
    let tmp = dir.join("idempotency.jsonl.tmp");
    let mut bytes = 0u64;
    let result = (|| {
        let mut f = std::io::BufWriter::new(File::create(&tmp)?);
        for (key, answer) in entries {
            let line = line_of(key, *answer);
            f.write_all(line.as_bytes())?;
            bytes += line.len() as u64;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| bytes)
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves the map consistent (every step is a whole
    // insert or remove): keep serving rather than wedging every keyed request.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl IdempotencyStore {
    /// Opens the store of the stream whose log lives in `dir`, rebuilding it from the keys file
    /// and the log's records — and, for a stream with `on_invalid = "dead_letter"`, from the keys
    /// of its dead-letter log's records (requests whose rows were all invalid, see
    /// [`super::dead_letter`]).
    pub fn open(
        dir: &Path,
        log: &StreamLog,
        dead_letters: Option<&StreamLog>,
        limits: StoreLimits,
    ) -> std::io::Result<Self> {
        let path = dir.join("idempotency.jsonl");
        let window_ms = (limits.window_seconds as i64).saturating_mul(1000);
        let now = chrono::Utc::now().timestamp_millis();
        let mut entries: HashMap<String, Answer> = HashMap::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                // A torn line (crash or failed write while appending) is skipped: its record is
                // still in the log, because the file is synced before the log is truncated.
                if let Ok(l) = serde_json::from_str::<Line>(&line) {
                    entries.insert(l.key, l.answer);
                }
            }
        }
        let mut offset = log.start_offset();
        while offset < log.end_offset() {
            let records = log.read(offset, RECOVERY_READ_BYTES).map_err(std::io::Error::other)?;
            let Some(last) = records.last() else { break };
            offset = last.end();
            for r in &records {
                if let Some(key) = r.batch.schema().metadata().get(record::KEY_METADATA) {
                    let answer = Answer {
                        accepted: r.batch.num_rows() as u64,
                        first_offset: r.offset,
                        next_offset: r.end(),
                        at_ms: r.appended_at_ms,
                        dead_lettered: r
                            .batch
                            .schema()
                            .metadata()
                            .get(record::DEAD_LETTERED_METADATA)
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0),
                    };
                    entries.entry(key.clone()).or_insert(answer);
                }
            }
        }
        if let Some(dl) = dead_letters {
            let mut offset = dl.start_offset();
            while offset < dl.end_offset() {
                let records = dl.read(offset, RECOVERY_READ_BYTES).map_err(std::io::Error::other)?;
                let Some(last) = records.last() else { break };
                offset = last.end();
                for r in &records {
                    let meta = r.batch.schema().metadata().clone();
                    if let Some(key) = meta.get(record::KEY_METADATA) {
                        let at: u64 = meta
                            .get(record::STREAM_OFFSET_METADATA)
                            .and_then(|o| o.parse().ok())
                            .unwrap_or(0);
                        let answer = Answer {
                            accepted: 0,
                            first_offset: at,
                            next_offset: at,
                            at_ms: r.appended_at_ms,
                            dead_lettered: r.batch.num_rows() as u64,
                        };
                        entries.entry(key.clone()).or_insert(answer);
                    }
                }
            }
        }
        entries.retain(|_, a| now - a.at_ms < window_ms);
        // Every key of the window is kept, even beyond the limits (they bound new keys only).
        let list: Vec<(&str, Answer)> = entries.iter().map(|(k, a)| (k.as_str(), *a)).collect();
        let file_bytes = rewrite(dir, &path, &list)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        let mut inner = Inner {
            slots: HashMap::with_capacity(entries.len()),
            file,
            file_bytes,
            live_bytes: 0,
            pending: vec![],
            torn: false,
        };
        for (k, a) in entries {
            let line_bytes = line_of(&k, a).len() as u64;
            inner.insert(
                k,
                Slot::Done {
                    answer: a,
                    line_bytes,
                    written: true,
                },
            );
        }
        Ok(IdempotencyStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                path,
                window_ms,
                max_keys: limits.max_keys,
                max_bytes: limits.max_bytes,
                next_id: AtomicU64::new(0),
                inner: Mutex::new(inner),
            }),
        })
    }

    /// Claims `key`, or returns its answer, waiting while another request with it is in flight.
    /// A new key over `limits.idempotency_max_keys` / `_max_bytes` is a 429; the answer of a key
    /// whose line is not in the keys file yet is a 503 until it can be written.
    pub async fn begin(&self, key: &str) -> Result<Begin, Error> {
        let sh = &self.shared;
        loop {
            let mut rx = {
                let mut inner = lock(&sh.inner);
                let now = chrono::Utc::now().timestamp_millis();
                match inner.slots.get(key) {
                    Some(Slot::Done { answer, written, .. }) if now - answer.at_ms < sh.window_ms => {
                        let (answer, written) = (*answer, *written);
                        if !written {
                            inner
                                .flush_pending()
                                .map_err(|e| unavailable("could not write", &sh.path, e))?;
                        }
                        return Ok(Begin::Replay(answer));
                    }
                    Some(Slot::InFlight { rx, .. }) if rx.borrow().is_none() => rx.clone(),
                    _ => {
                        inner.remove(key);
                        if inner.slots.len() >= sh.max_keys {
                            inner.expire(now, sh.window_ms);
                        }
                        if inner.slots.len() >= sh.max_keys {
                            return Err(Error::Limit {
                                limit: "limits.idempotency_max_keys",
                                message: format!(
                                    "the stream remembers {} Idempotency-Keys, the most it may inside the window; retry later (keys expire after limits.idempotency_window_seconds)",
                                    inner.slots.len()
                                ),
                                status: StatusCode::TOO_MANY_REQUESTS,
                            });
                        }
                        if inner.live_bytes + key.len() as u64 + LINE_OVERHEAD > sh.max_bytes {
                            return Err(Error::Limit {
                                limit: "limits.idempotency_max_bytes",
                                message: format!(
                                    "the stream's Idempotency-Keys take {} bytes, at the limit {}; retry later (keys expire after limits.idempotency_window_seconds)",
                                    inner.live_bytes, sh.max_bytes
                                ),
                                status: StatusCode::TOO_MANY_REQUESTS,
                            });
                        }
                        let (tx, rx) = watch::channel(None);
                        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
                        inner.insert(key.to_string(), Slot::InFlight { id, rx });
                        return Ok(Begin::Process(Guard {
                            shared: sh.clone(),
                            key: key.to_string(),
                            id,
                            tx,
                            done: false,
                        }));
                    }
                }
            };
            // Wait for the request in flight; then look again (it may have failed). An error
            // means its guard is gone, which removed the slot: looking again claims the key.
            let _ = rx.wait_for(|v| v.is_some()).await;
        }
    }

    /// Records the answer of a processed request: its line is written to the keys file before
    /// this returns. On a failed write the answer is still remembered (its rows are durable),
    /// the line is retried later, and the error (503) is what the request must answer.
    pub fn done(&self, mut guard: Guard, answer: Answer) -> Result<(), Error> {
        guard.done = true;
        let sh = &self.shared;
        let line = line_of(&guard.key, answer);
        let written = {
            let mut inner = lock(&sh.inner);
            let written = inner.flush_pending().and_then(|()| inner.append(&line));
            inner.insert(
                guard.key.clone(),
                Slot::Done {
                    answer,
                    line_bytes: line.len() as u64,
                    written: written.is_ok(),
                },
            );
            if written.is_err() {
                inner.pending.push(guard.key.clone());
            }
            written
        };
        let _ = guard.tx.send(Some(Some(answer)));
        written.map_err(|e| unavailable("stored the rows but could not write", &sh.path, e))
    }

    /// Frees the key of a request that failed.
    pub fn failed(&self, guard: Guard) {
        drop(guard);
    }

    /// Makes the keys file durable; called before the log is truncated. Fails while a key's
    /// line could not be written, so the record holding that key stays in the log.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut inner = lock(&self.shared.inner);
        inner.flush_pending()?;
        inner.file.sync_data()
    }

    /// Bytes of the keys file (counted in the stream's disk budget).
    pub fn disk_bytes(&self) -> u64 {
        lock(&self.shared.inner).file_bytes
    }

    /// Entries remembered (acknowledged and in flight).
    pub fn len(&self) -> usize {
        lock(&self.shared.inner).slots.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The scheduled upkeep (every truncation tick): drops entries older than the window and
    /// compacts the keys file when it holds more than twice its live bytes (or has lines that
    /// could not be appended).
    pub fn expire(&self) {
        let sh = &self.shared;
        let mut inner = lock(&sh.inner);
        let now = chrono::Utc::now().timestamp_millis();
        inner.expire(now, sh.window_ms);
        let bloated = inner.file_bytes > COMPACT_MIN_BYTES.max(inner.live_bytes.saturating_mul(2));
        if (bloated || !inner.pending.is_empty())
            && let Err(e) = self.compact(&mut inner)
        {
            tracing::warn!(path = %sh.path.display(), error = %e, "could not compact the idempotency keys file");
        }
    }

    /// Rewrites the keys file with the live entries (the lock is held: no line is appended to
    /// the old file meanwhile and lost by the rename).
    fn compact(&self, inner: &mut Inner) -> std::io::Result<()> {
        let sh = &self.shared;
        let list: Vec<(&str, Answer)> = inner
            .slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Done { answer, .. } => Some((k.as_str(), *answer)),
                Slot::InFlight { .. } => None,
            })
            .collect();
        let bytes = rewrite(&sh.dir, &sh.path, &list)?;
        inner.file = OpenOptions::new().append(true).open(&sh.path)?;
        inner.file_bytes = bytes;
        inner.torn = false;
        inner.pending.clear();
        for s in inner.slots.values_mut() {
            if let Slot::Done { written, .. } = s {
                *written = true;
            }
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            // Dropped without an outcome (the request failed, the client went away and the
            // handler future was dropped, or a panic): free the key, so a retry is processed and
            // waiters look again instead of waiting forever.
            let mut inner = lock(&self.shared.inner);
            if matches!(inner.slots.get(&self.key), Some(Slot::InFlight { id, .. }) if *id == self.id) {
                inner.remove(&self.key);
            }
            drop(inner);
            let _ = self.tx.send(Some(None));
        }
    }
}

/// Checks a key's form.
pub fn valid_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters (got {})",
            key.len()
        ));
    }
    if !key.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err("Idempotency-Key must be printable ASCII".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use floe_stream::LogOptions;

    use super::*;
    use crate::ingest::dead_letter;
    use crate::ingest::decode::RowError;

    fn limits(max_keys: usize, max_bytes: u64) -> StoreLimits {
        StoreLimits {
            window_seconds: 3600,
            max_keys,
            max_bytes,
        }
    }

    fn answer(first: u64, at_ms: i64) -> Answer {
        Answer {
            accepted: 1,
            first_offset: first,
            next_offset: first + 1,
            at_ms,
            dead_lettered: 0,
        }
    }

    fn empty_store(dir: &Path, l: StoreLimits) -> (Arc<StreamLog>, IdempotencyStore) {
        let log = StreamLog::open(&dir.join("s"), LogOptions::default()).unwrap();
        let store = IdempotencyStore::open(&dir.join("s"), &log, None, l).unwrap();
        (log, store)
    }

    fn claim(store: &IdempotencyStore, key: &str) -> Guard {
        use futures::FutureExt;
        match store.begin(key).now_or_never().expect("begin must not wait") {
            Ok(Begin::Process(g)) => g,
            Ok(Begin::Replay(_)) => panic!("{key}: replayed"),
            Err(e) => panic!("{key}: {e}"),
        }
    }

    fn file_lines(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("s/idempotency.jsonl"))
            .unwrap()
            .lines()
            .count()
    }

    #[test]
    fn a_dropped_guard_frees_its_slot_and_a_retry_is_processed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, store) = empty_store(dir.path(), limits(1, 1 << 20));
        // The handler future holding the guard is dropped (the client disconnected).
        drop(claim(&store, "k"));
        assert!(store.is_empty(), "the in-flight slot must be removed, not kept");
        // The same key again is processed (not stuck waiting), and with max_keys = 1 a new key
        // fits once that one's guard is gone too.
        drop(claim(&store, "k"));
        let g = claim(&store, "other");
        store.done(g, answer(0, chrono::Utc::now().timestamp_millis())).unwrap();
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn a_waiter_claims_the_key_when_the_first_request_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, store) = empty_store(dir.path(), limits(10, 1 << 20));
        let store = Arc::new(store);
        let first = claim(&store, "k");
        let s2 = store.clone();
        let waiter = tokio::spawn(async move { matches!(s2.begin("k").await, Ok(Begin::Process(_))) });
        tokio::task::yield_now().await;
        drop(first);
        assert!(
            waiter.await.unwrap(),
            "the waiter must process the key once the first guard is gone"
        );
    }

    #[test]
    fn over_the_key_limits_a_new_key_is_a_429_and_no_key_inside_the_window_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, store) = empty_store(dir.path(), limits(2, 1 << 20));
        let now = chrono::Utc::now().timestamp_millis();
        for (i, k) in ["a", "b"].into_iter().enumerate() {
            let g = claim(&store, k);
            store.done(g, answer(i as u64, now)).unwrap();
        }
        use futures::FutureExt;
        let e = match store.begin("c").now_or_never().unwrap() {
            Err(e) => e,
            Ok(_) => panic!("a third key must be refused"),
        };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(e.to_string().contains("limits.idempotency_max_keys"), "{e}");
        for k in ["a", "b"] {
            assert!(matches!(store.begin(k).now_or_never().unwrap(), Ok(Begin::Replay(_))));
        }
        // The byte limit: room for about one line.
        let dir = tempfile::tempdir().unwrap();
        let (_log, store) = empty_store(dir.path(), limits(100, 200));
        let g = claim(&store, "a");
        store.done(g, answer(0, now)).unwrap();
        let e = match store.begin("b").now_or_never().unwrap() {
            Err(e) => e,
            Ok(_) => panic!("a second key must be refused"),
        };
        assert!(e.to_string().contains("limits.idempotency_max_bytes"), "{e}");
    }

    #[test]
    fn the_keys_file_is_compacted_on_the_timer_keeping_every_live_key() {
        let dir = tempfile::tempdir().unwrap();
        let (log, store) = empty_store(dir.path(), limits(100_000, 1 << 30));
        let now = chrono::Utc::now().timestamp_millis();
        let old = now - 7_200_000;
        // Many expired answers and a few live ones: the file is far over twice its live bytes.
        for i in 0..2000u64 {
            let g = claim(&store, &format!("old-{i}"));
            store.done(g, answer(i, old)).unwrap();
        }
        for i in 0..3u64 {
            let g = claim(&store, &format!("live-{i}"));
            store.done(g, answer(10_000 + i, now)).unwrap();
        }
        assert_eq!(file_lines(dir.path()), 2003);
        let before = store.disk_bytes();
        store.expire();
        assert_eq!(file_lines(dir.path()), 3, "compaction keeps exactly the live keys");
        assert!(store.disk_bytes() < before / 100);
        assert_eq!(
            store.disk_bytes(),
            std::fs::metadata(dir.path().join("s/idempotency.jsonl")).unwrap().len()
        );
        assert!(!dir.path().join("s/idempotency.jsonl.tmp").exists());
        // Appends after the compaction go to the new file; a reopen knows every live key.
        let g = claim(&store, "after");
        store.done(g, answer(20_000, now)).unwrap();
        drop(store);
        let reopened = IdempotencyStore::open(&dir.path().join("s"), &log, None, limits(100, 1 << 20)).unwrap();
        use futures::FutureExt;
        for k in ["live-0", "live-2", "after"] {
            assert!(
                matches!(reopened.begin(k).now_or_never().unwrap(), Ok(Begin::Replay(_))),
                "{k}"
            );
        }
        assert!(matches!(
            reopened.begin("old-5").now_or_never().unwrap(),
            Ok(Begin::Process(_))
        ));
    }

    #[test]
    fn a_failed_key_write_fails_the_request_and_blocks_truncation_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, store) = empty_store(dir.path(), limits(100, 1 << 20));
        let now = chrono::Utc::now().timestamp_millis();
        // Make the append handle fail: a read-only handle on the same file.
        let good = {
            let mut inner = lock(&store.shared.inner);
            std::mem::replace(
                &mut inner.file,
                File::open(dir.path().join("s/idempotency.jsonl")).unwrap(),
            )
        };
        let g = claim(&store, "k");
        let e = store.done(g, answer(0, now)).unwrap_err();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
        assert!(e.is_retryable());
        // The log must not be truncated past the key's record while its line is missing.
        assert!(store.sync().is_err());
        // The retry with the same key: still 503 (nothing new stored), never a second Process.
        use futures::FutureExt;
        assert!(store.begin("k").now_or_never().unwrap().is_err());
        // Once the file is writable again the line is written and the first answer replayed.
        lock(&store.shared.inner).file = good;
        match store.begin("k").now_or_never().unwrap() {
            Ok(Begin::Replay(a)) => assert_eq!(a.first_offset, 0),
            _ => panic!("the retry must get the first answer"),
        }
        store.sync().unwrap();
        let text = std::fs::read_to_string(dir.path().join("s/idempotency.jsonl")).unwrap();
        assert!(text.contains("\"key\":\"k\""), "{text}");
    }

    #[tokio::test]
    async fn keys_of_all_invalid_requests_are_rebuilt_from_the_dead_letter_log() {
        let dir = tempfile::tempdir().unwrap();
        let main = StreamLog::open(&dir.path().join("s"), LogOptions::default()).unwrap();
        let dl = StreamLog::open(&dir.path().join("s_dead_letter"), LogOptions::default()).unwrap();
        let invalid = vec![(
            RowError {
                row: 0,
                field: "id".into(),
                message: "expected int64".into(),
            },
            r#"{"id":"x"}"#.to_string(),
        )];
        dl.append(dead_letter::batch("s", &invalid, 0, Some(("k1", 7))))
            .await
            .unwrap();
        // Without the keys file (e.g. lost with the page cache), only the log knows the key:
        // a store that does not read the dead-letter log does not know it.
        let without = IdempotencyStore::open(&dir.path().join("s"), &main, None, limits(100, 1 << 20)).unwrap();
        assert!(matches!(without.begin("k1").await, Ok(Begin::Process(_))));
        drop(without);
        let store = IdempotencyStore::open(&dir.path().join("s"), &main, Some(&dl), limits(100, 1 << 20)).unwrap();
        match store.begin("k1").await.unwrap() {
            Begin::Replay(a) => {
                assert_eq!(
                    (a.accepted, a.dead_lettered, a.first_offset, a.next_offset),
                    (0, 1, 7, 7)
                );
            }
            Begin::Process(_) => panic!("the key was not rebuilt from the dead-letter log"),
        }
    }
}
