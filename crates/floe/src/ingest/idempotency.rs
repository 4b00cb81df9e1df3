//! `Idempotency-Key`: a retried request gets the first answer back and stores nothing new.
//!
//! The key travels **inside the log record** (as metadata of the batch's Arrow schema), so it
//! becomes durable in the same fsync as the rows: there is no moment where the rows are stored
//! but the key is not, or the reverse. The answer of a request is a pure function of its record
//! (`accepted` = rows, `first_offset`, `next_offset`), so it can be rebuilt from the record.
//!
//! ```text
//!  keys file  <stream dir>/idempotency.jsonl   one JSON line per acknowledged key (appended
//!                                              after the 200, fsynced before log truncation)
//!  recovery   keys file (within the window)  ∪  keys found in the records still in the log
//! ```
//!
//! Because the keys file is fsynced before any log segment is deleted, every key whose record has
//! left the log is already in the file. Entries older than the window are dropped when the file
//! is rewritten at start-up.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use floe_stream::StreamLog;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Schema-metadata key under which a record carries its request's idempotency key.
pub const RECORD_KEY_METADATA: &str = "floe.idempotency_key";
/// Longest accepted `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 200;
/// Log bytes read per step when rebuilding keys from the log at start-up.
const RECOVERY_READ_BYTES: usize = 64 * 1024 * 1024;

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

enum Slot {
    Done(Answer),
    /// A request with this key is being processed; the receiver turns `Some` when it is done
    /// (`None` inside means it failed and the key is free again).
    InFlight(watch::Receiver<Option<Option<Answer>>>),
}

/// What to do with a request carrying a key.
pub enum Begin {
    /// Answer with this, store nothing.
    Replay(Answer),
    /// Process the request; report the outcome through the guard.
    Process(Guard),
}

/// Held while a keyed request is processed; dropping it without [`Guard::done`] frees the key.
pub struct Guard {
    key: String,
    tx: watch::Sender<Option<Option<Answer>>>,
    done: bool,
}

/// The keys of one stream.
pub struct IdempotencyStore {
    path: PathBuf,
    window_ms: i64,
    slots: Mutex<HashMap<String, Slot>>,
    file: Mutex<File>,
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
        window_seconds: u64,
    ) -> std::io::Result<Self> {
        let path = dir.join("idempotency.jsonl");
        let window_ms = (window_seconds as i64).saturating_mul(1000);
        let now = chrono::Utc::now().timestamp_millis();
        let mut entries: HashMap<String, Answer> = HashMap::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                // A torn last line (crash while appending) is skipped: its record is still in
                // the log, because the file is synced before the log is truncated.
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
                if let Some(key) = r.batch.schema().metadata().get(RECORD_KEY_METADATA) {
                    let answer = Answer {
                        accepted: r.batch.num_rows() as u64,
                        first_offset: r.offset,
                        next_offset: r.end(),
                        at_ms: r.appended_at_ms,
                        dead_lettered: r
                            .batch
                            .schema()
                            .metadata()
                            .get(super::dead_letter::RECORD_DEAD_LETTERED_METADATA)
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
                    if let Some(key) = meta.get(RECORD_KEY_METADATA) {
                        let at: u64 = meta
                            .get(super::dead_letter::RECORD_STREAM_OFFSET_METADATA)
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
        // Rewrite the file with the live entries only (tmp + rename + dir fsync).
        let tmp = dir.join("idempotency.jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            for (key, answer) in &entries {
                let line = serde_json::to_string(&Line {
                    key: key.clone(),
                    answer: *answer,
                })
                .map_err(std::io::Error::other)?;
                writeln!(f, "{line}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        let file = OpenOptions::new().append(true).open(&path)?;
        let slots = entries.into_iter().map(|(k, a)| (k, Slot::Done(a))).collect();
        Ok(IdempotencyStore {
            path,
            window_ms,
            slots: Mutex::new(slots),
            file: Mutex::new(file),
        })
    }

    /// Claims `key`, or returns its answer, waiting while another request with it is in flight.
    pub async fn begin(&self, key: &str) -> Begin {
        loop {
            let mut rx = {
                let mut slots = self.slots.lock().expect("idempotency lock");
                let now = chrono::Utc::now().timestamp_millis();
                match slots.get(key) {
                    Some(Slot::Done(a)) if now - a.at_ms < self.window_ms => return Begin::Replay(*a),
                    Some(Slot::InFlight(rx)) if rx.borrow().is_none() => rx.clone(),
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        slots.insert(key.to_string(), Slot::InFlight(rx));
                        return Begin::Process(Guard {
                            key: key.to_string(),
                            tx,
                            done: false,
                        });
                    }
                }
            };
            // Wait for the request in flight; then look again (it may have failed).
            let _ = rx.wait_for(|v| v.is_some()).await;
        }
    }

    /// Records the answer of a processed request.
    pub fn done(&self, mut guard: Guard, answer: Answer) {
        guard.done = true;
        {
            let mut slots = self.slots.lock().expect("idempotency lock");
            slots.insert(guard.key.clone(), Slot::Done(answer));
        }
        let line = serde_json::to_string(&Line {
            key: guard.key.clone(),
            answer,
        })
        .expect("serializable");
        if let Err(e) = writeln!(self.file.lock().expect("idempotency file lock"), "{line}") {
            // The key is still in the log record; it is rebuilt from there at the next start.
            tracing::warn!(path = %self.path.display(), error = %e, "could not append to the idempotency keys file");
        }
        let _ = guard.tx.send(Some(Some(answer)));
    }

    /// Frees the key of a request that failed.
    pub fn failed(&self, mut guard: Guard) {
        guard.done = true;
        self.slots.lock().expect("idempotency lock").remove(&guard.key);
        let _ = guard.tx.send(Some(None));
    }

    /// Makes the keys file durable; called before the log is truncated.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.lock().expect("idempotency file lock").sync_data()
    }

    /// Drops in-memory entries older than the window.
    pub fn expire(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        self.slots
            .lock()
            .expect("idempotency lock")
            .retain(|_, s| !matches!(s, Slot::Done(a) if now - a.at_ms >= self.window_ms));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            // Dropped without an outcome (a bug or a panic): mark it finished-without-answer so
            // waiters and later requests treat the key as free instead of waiting forever.
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
        let without = IdempotencyStore::open(&dir.path().join("s"), &main, None, 3600).unwrap();
        assert!(matches!(without.begin("k1").await, Begin::Process(_)));
        drop(without);
        let store = IdempotencyStore::open(&dir.path().join("s"), &main, Some(&dl), 3600).unwrap();
        match store.begin("k1").await {
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
