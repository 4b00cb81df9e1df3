//! The stream registry: every open stream (its log, decoder, counters and idempotency keys) by
//! name. It can gain and lose streams while floe runs; a request handler or pipeline runner looks
//! its stream up when it needs it and holds the [`StreamState`] (an `Arc`) while it uses it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use floe_stream::{LogOptions, StreamLog};

use crate::config::{Config, OnInvalid, StreamConfig};
use crate::error::Result;
use crate::ingest::dead_letter;
use crate::ingest::decode::RowDecoder;
use crate::ingest::idempotency::IdempotencyStore;
use crate::ingest::schema::stream_fields;
use crate::metrics::{Metrics, StreamMetrics};

/// One stream: its config, log, decoder and counters.
pub struct StreamState {
    /// The stream's config (for an internal dead-letter stream, the one floe made up).
    pub config: StreamConfig,
    /// The durable log.
    pub log: Arc<StreamLog>,
    /// JSON → Arrow decoder for the stream's schema.
    pub decoder: Arc<RowDecoder>,
    /// Counters.
    pub metrics: Arc<StreamMetrics>,
    /// Remembered `Idempotency-Key`s (shared with the state that replaces this one when the
    /// stream's settings change, see [`StreamState::with_config`]).
    pub idempotency: Arc<IdempotencyStore>,
}

impl StreamState {
    /// The same stream — log, counters, idempotency keys — under changed settings (`http`,
    /// `unknown_fields`, `fields` evolved as [`crate::objects::check_evolution`] allows; its
    /// `on_invalid` does not change in place).
    pub fn with_config(&self, config: &Config, stream: StreamConfig) -> Arc<StreamState> {
        let decoder = RowDecoder::new(
            &stream_fields(stream.fields.as_ref()),
            stream.unknown_fields,
            config.limits.max_row_bytes,
            config.limits.max_errors_reported,
            stream.fields.is_none(),
        );
        Arc::new(StreamState {
            config: stream,
            log: self.log.clone(),
            decoder: Arc::new(decoder),
            metrics: self.metrics.clone(),
            idempotency: self.idempotency.clone(),
        })
    }
}

/// The open streams by name.
#[derive(Default)]
pub struct StreamRegistry {
    streams: RwLock<HashMap<String, Arc<StreamState>>>,
}

impl StreamRegistry {
    /// The stream `name`, if it is open.
    pub fn get(&self, name: &str) -> Option<Arc<StreamState>> {
        self.streams.read().expect("streams lock").get(name).cloned()
    }

    /// Whether `name` is open.
    pub fn contains(&self, name: &str) -> bool {
        self.streams.read().expect("streams lock").contains_key(name)
    }

    /// Every open stream, with its name.
    pub fn list(&self) -> Vec<(String, Arc<StreamState>)> {
        let streams = self.streams.read().expect("streams lock");
        let mut out: Vec<_> = streams.iter().map(|(n, s)| (n.clone(), s.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every open stream.
    pub fn values(&self) -> Vec<Arc<StreamState>> {
        self.list().into_iter().map(|(_, s)| s).collect()
    }

    /// The names of the open streams.
    pub fn names(&self) -> Vec<String> {
        self.list().into_iter().map(|(n, _)| n).collect()
    }

    /// Adds (or replaces) a stream.
    pub fn insert(&self, state: Arc<StreamState>) {
        self.streams
            .write()
            .expect("streams lock")
            .insert(state.config.name.clone(), state);
    }

    /// Takes a stream out: requests for it answer 404 from now on. Its log stays open for
    /// whoever still holds it; closing it is the caller's job.
    pub fn remove(&self, name: &str) -> Option<Arc<StreamState>> {
        self.streams.write().expect("streams lock").remove(name)
    }
}

/// The folder, below the data dir, that the logs of deleted streams are moved to.
pub const DELETED_STREAMS_DIR: &str = "deleted-streams";

/// Moves the log folders of stream `name` and of its dead-letter stream, when they exist, to
/// `<data_dir>/deleted-streams/<folder>.<unix millis>`; returns where each went.
///
/// A stream deleted through the API, or created through it where a log is left on disk (by a
/// delete that crashed before this ran, or by a stream taken out of `floe.toml`), gets a log of
/// its own: offsets from 0, no idempotency keys of the old one, and no records written under
/// another schema, which a pipeline of the new stream could not read. The old rows stay on disk
/// there until removed by hand. `name` is a checked stream name (letters, digits, `_`, `-`), so
/// the paths stay inside the data dir.
pub fn retire_log(config: &Config, name: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for stream in [name.to_string(), dead_letter::stream_name(name)] {
        let dir = config.stream_dir(&stream);
        if !dir.try_exists()? {
            continue;
        }
        let retired = config.data_dir().join(DELETED_STREAMS_DIR);
        std::fs::create_dir_all(&retired)?;
        let to = retired.join(format!("{stream}.{millis}"));
        std::fs::rename(&dir, &to)?;
        tracing::info!(stream = %stream, to = %to.display(), "moved the log of a deleted stream aside");
        moved.push(to);
    }
    Ok(moved)
}

/// Opens `streams` (logs recovered, idempotency keys rebuilt). A stream's dead-letter log is
/// taken from `streams` when it is among them, else from `open` (already running).
pub fn open_streams(
    config: &Config,
    streams: &[StreamConfig],
    metrics: &Metrics,
    open: &StreamRegistry,
) -> Result<Vec<Arc<StreamState>>> {
    // Every log first: a stream's idempotency keys are rebuilt from its dead-letter log too.
    let mut logs = HashMap::new();
    for s in streams {
        logs.insert(
            s.name.clone(),
            StreamLog::open(
                &config.stream_dir(&s.name),
                LogOptions {
                    max_record_bytes: config.limits.max_record_bytes,
                    ..LogOptions::default()
                },
            )?,
        );
    }
    let mut out = Vec::new();
    for s in streams {
        let fields = stream_fields(s.fields.as_ref());
        let log = logs[&s.name].clone();
        let dead_letters = (s.on_invalid == OnInvalid::DeadLetter)
            .then(|| {
                let name = dead_letter::stream_name(&s.name);
                logs.get(&name)
                    .cloned()
                    .or_else(|| open.get(&name).map(|o| o.log.clone()))
            })
            .flatten();
        let decoder = RowDecoder::new(
            &fields,
            s.unknown_fields,
            config.limits.max_row_bytes,
            config.limits.max_errors_reported,
            s.fields.is_none(),
        );
        let m = metrics.stream(&s.name);
        m.log_end_offset.store(log.end_offset(), Ordering::Relaxed);
        m.log_disk_bytes.store(log.disk_bytes(), Ordering::Relaxed);
        let idempotency = IdempotencyStore::open(
            &config.stream_dir(&s.name),
            &log,
            dead_letters.as_deref(),
            (&config.limits).into(),
        )?;
        out.push(Arc::new(StreamState {
            config: s.clone(),
            log,
            decoder: Arc::new(decoder),
            metrics: m,
            idempotency: Arc::new(idempotency),
        }));
    }
    Ok(out)
}
