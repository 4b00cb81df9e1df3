//! Drives one pipeline statement: log → SQL → sink → commit, and back to the committed position
//! after any failure.
//!
//! ```text
//!   open sink ── position P (from the catalog) ──► read log from P ──► SQL ──► write
//!        ▲                                                                    │
//!        │ error: files of the attempt deleted, nothing committed             ▼
//!        └──────────── back off, reopen ◄──────── commit when the roll is due (interval / size / idle)
//! ```
//!
//! The position only moves inside a catalog commit, so a crash or error anywhere replays the log
//! from the last committed position: each row lands once.
//!
//! Rows whose SQL fails at run time go to the statement's dead-letter sink (or stop the
//! statement, with `on_error = "fail"`); see [`super::dead_letter`]. The dead-letter sink, opened
//! on the first failing row, commits before the main sink.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::Transform;
use super::dead_letter::{self, BadRow};
use crate::config::{DEFAULT_MAX_BAD_ROWS_PER_BATCH, OnError, PipelineConfig, SinkConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::stream::StreamRegistry;

/// First wait after a failure; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts after repeated failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a runner needs of the node it runs in.
pub trait RunnerNode: Send + Sync + 'static {
    /// The Iceberg catalog.
    fn catalog(&self) -> &floe_catalog::FloeCatalog;
    /// The open streams.
    fn streams(&self) -> &StreamRegistry;
    /// Sink `name` of the live topology, as it is now.
    fn sink_config(&self, name: &str) -> Option<SinkConfig>;
    /// Pipeline `name` of the live topology (built-in ones included), as it is now.
    fn pipeline_config(&self, name: &str) -> Option<PipelineConfig>;
    /// Counters.
    fn metrics(&self) -> &Metrics;
    /// Bytes of log records one micro-batch reads (`limits.batch_bytes`).
    fn batch_bytes(&self) -> usize;
    /// Attempts of one sink commit before it is reported failed (`limits.commit_retries`).
    fn commit_retries(&self) -> u32;
    /// Records a statement's committed position (for log truncation and backpressure).
    fn publish_position(&self, t: &Transform, position: u64);
}

/// Runs `t` until `shutdown` turns true; commits what is pending before returning.
pub async fn run<N: RunnerNode>(app: Arc<N>, t: Transform, mut shutdown: watch::Receiver<bool>) {
    let metrics = app.metrics().sink(&t.pipeline, &t.sink);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut progressed = false;
        match run_once(&*app, &t, &mut shutdown, &mut progressed).await {
            Ok(()) => return,
            Err(e) => {
                backoff = wait_after_failure(backoff, progressed);
                metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
                *metrics.last_error.lock().expect("lock") = Some(e.to_string());
                tracing::error!(pipeline = %t.pipeline, sink = %t.sink, error = %e, retry_in = ?backoff, "pipeline failed; resuming from the committed position");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The wait before the next attempt, given the wait `scheduled` (grown by earlier failures):
/// a run that committed before it failed was a success, so its failure starts the backoff over.
fn wait_after_failure(scheduled: Duration, progressed: bool) -> Duration {
    if progressed { MIN_BACKOFF } else { scheduled }
}

/// Runs `t` once up to the current end of its stream's log, commits, and returns — or returns
/// the first error (a sink that cannot open, a schema mismatch, a failed commit) instead of
/// retrying. Used by tests and tools that need "everything durable so far is committed".
pub async fn catch_up<N: RunnerNode>(app: &Arc<N>, t: &Transform) -> Result<()> {
    let (tx, mut rx) = watch::channel(false);
    // The receiver has not seen `true` yet, so the runner stops as soon as it has caught up.
    tx.send(true)
        .map_err(|_| Error::Internal("shutdown channel closed".into()))?;
    run_once(&**app, t, &mut rx, &mut false).await
}

/// The main sink of a statement and, once a row failed, its dead-letter sink.
struct Sinks {
    main: Box<dyn Sink>,
    dead_letter: Option<Box<dyn Sink>>,
}

async fn run_once<N: RunnerNode>(
    app: &N,
    t: &Transform,
    shutdown: &mut watch::Receiver<bool>,
    progressed: &mut bool,
) -> Result<()> {
    // The statement's sink and pipeline as the live topology has them now.
    let cfg = app
        .sink_config(&t.sink)
        .ok_or_else(|| Error::Internal(format!("sink {:?} is not configured", t.sink)))?;
    let cfg = &cfg;
    let log = app
        .streams()
        .get(&t.stream)
        .map(|s| s.log.clone())
        .ok_or_else(|| Error::Internal(format!("stream {:?} is not open", t.stream)))?;
    let pipeline = app.pipeline_config(&t.pipeline);
    let on_error = pipeline.as_ref().map_or(OnError::DeadLetter, |p| p.on_error);
    let max_bad = pipeline
        .as_ref()
        .map_or(DEFAULT_MAX_BAD_ROWS_PER_BATCH, |p| p.max_bad_rows_per_batch);
    let metrics = app.metrics().sink(&t.pipeline, &t.sink);
    let mut sinks = Sinks {
        main: crate::sink::open(app.catalog().clone(), cfg, &t.pipeline, &t.output, app.commit_retries()).await?,
        dead_letter: None,
    };
    let mut offset = sinks.main.committed();
    // App::open refused these at start; here they mean the log changed under a running floe.
    if offset < log.start_offset() {
        return Err(Error::Internal(format!(
            "pipeline {:?} sink {:?} committed through offset {offset}, but stream {:?} starts at {}: rows in between are gone",
            t.pipeline,
            t.sink,
            t.stream,
            log.start_offset()
        )));
    }
    if offset > log.end_offset() {
        return Err(Error::Internal(format!(
            "pipeline {:?} sink {:?} committed through offset {offset}, beyond the end {} of stream {:?}: was the stream log replaced?",
            t.pipeline,
            t.sink,
            log.end_offset(),
            t.stream
        )));
    }
    app.publish_position(t, offset);
    metrics.position.store(offset, Ordering::Relaxed);
    let mut durable = log.subscribe();
    let mut newest_appended_ms = 0i64;
    // Set once shutdown is asked for: read on to the end of the log, commit, return. (Committing
    // straight from the select would miss records made durable after the last read, e.g. by
    // requests that finished while HTTP was shutting down.)
    let mut stopping = false;
    loop {
        durable.borrow_and_update();
        let records = log.read(offset, app.batch_bytes())?;
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            let first_offset = first.offset;
            let through = last.end();
            newest_appended_ms = newest_appended_ms.max(last.appended_at_ms);
            let input = records
                .iter()
                .map(|r| as_input(&r.batch, &t.input_schema()))
                .collect::<Result<Vec<_>>>()?;
            let isolated =
                dead_letter::run_isolating(t, input, first_offset, max_bad, on_error == OnError::Fail).await?;
            for out in &isolated.output {
                sinks.main.write(out, through).await?;
            }
            sinks
                .main
                .write(&arrow::record_batch::RecordBatch::new_empty(t.output.clone()), through)
                .await?;
            if !isolated.bad.is_empty() {
                write_dead_letters(app, t, cfg, &mut sinks, &isolated.bad, through).await?;
            }
            offset = through;
        }
        if sinks.main.should_roll() {
            commit(app, t, &mut sinks, newest_appended_ms).await?;
            *progressed = true;
        }
        if offset < log.end_offset() {
            continue;
        }
        if stopping {
            if sinks.main.through() > sinks.main.committed() {
                commit(app, t, &mut sinks, newest_appended_ms).await?;
            }
            return Ok(());
        }
        let deadline = sinks.main.roll_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            changed = durable.changed() => {
                if changed.is_err() {
                    return Err(Error::Internal(format!("stream {:?} was closed", t.stream)));
                }
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {}
            _ = shutdown.changed() => stopping = true,
        }
    }
}

/// Hands the failing rows of one micro-batch (ending at `through`) to the dead-letter sink,
/// opening it on first use; rows its committed position covers are in its table already (a
/// replay after the dead-letter commit landed but the main one did not) and are skipped.
async fn write_dead_letters<N: RunnerNode>(
    app: &N,
    t: &Transform,
    main: &SinkConfig,
    sinks: &mut Sinks,
    bad: &[BadRow],
    through: u64,
) -> Result<()> {
    if sinks.dead_letter.is_none() {
        let cfg = dead_letter::sink_config(main, &t.pipeline);
        let schema = dead_letter::schema();
        let sink = crate::sink::open(app.catalog().clone(), &cfg, &t.pipeline, &schema, app.commit_retries()).await?;
        sinks.dead_letter = Some(sink);
    }
    let dl = sinks.dead_letter.as_mut().expect("just opened");
    let fresh: Vec<BadRow> = bad.iter().filter(|b| b.offset >= dl.committed()).cloned().collect();
    tracing::warn!(pipeline = %t.pipeline, sink = %t.sink, rows = bad.len(), first_offset = bad[0].offset, error = %bad[0].error, "rows failed in the pipeline's SQL; they go to its dead-letter table");
    if fresh.is_empty() {
        return Ok(());
    }
    let now_us = chrono::Utc::now().timestamp_micros();
    dl.write(&dead_letter::batch(t, &fresh, now_us)?, through).await
}

async fn commit<N: RunnerNode>(app: &N, t: &Transform, sinks: &mut Sinks, newest_appended_ms: i64) -> Result<()> {
    let metrics = app.metrics().sink(&t.pipeline, &t.sink);
    // Dead letters first: should the main commit then fail, the replay skips the rows the
    // dead-letter table holds already; the other order would lose them.
    if let Some(dl) = sinks.dead_letter.as_mut()
        && dl.pending_rows() > 0
    {
        let stats = dl.commit().await?;
        tracing::info!(pipeline = %t.pipeline, sink = %t.sink, rows = stats.rows, table = %dl.target(), "dead letters committed");
    }
    let sink = &mut sinks.main;
    let stats = sink.commit().await?;
    metrics.commits.fetch_add(1, Ordering::Relaxed);
    metrics.rows_committed.fetch_add(stats.rows, Ordering::Relaxed);
    metrics.files_committed.fetch_add(stats.files as u64, Ordering::Relaxed);
    metrics
        .files_closed_for_memory
        .fetch_add(stats.closed_for_memory, Ordering::Relaxed);
    metrics.position.store(stats.to, Ordering::Relaxed);
    metrics
        .last_commit_ms
        .store(chrono::Utc::now().timestamp_millis() as u64, Ordering::Relaxed);
    metrics
        .last_commit_duration_ms
        .store(stats.elapsed.as_millis() as u64, Ordering::Relaxed);
    metrics
        .last_committed_row_appended_ms
        .store(newest_appended_ms.max(0) as u64, Ordering::Relaxed);
    *metrics.last_error.lock().expect("lock") = None;
    app.publish_position(t, stats.to);
    tracing::debug!(pipeline = %t.pipeline, sink = %t.sink, rows = stats.rows, files = stats.files, from = stats.from, to = stats.to, elapsed = ?stats.elapsed, "committed");
    Ok(())
}

/// A log record as the statement's input. Records may carry schema metadata (an idempotency
/// key): dropped, the columns kept. A record written before the stream's schema evolved is
/// matched by name: a field added since reads as null, a widened one is cast
/// (docs/control-plane.md, "Schema evolution").
fn as_input(
    batch: &arrow::record_batch::RecordBatch,
    input: &arrow::datatypes::SchemaRef,
) -> Result<arrow::record_batch::RecordBatch> {
    if batch.schema().fields() == input.fields() {
        return Ok(arrow::record_batch::RecordBatch::try_new(
            input.clone(),
            batch.columns().to_vec(),
        )?);
    }
    crate::sink::schema::conform_to_table(batch, input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_starts_over_after_a_run_that_committed() {
        // Repeated failures grow the wait ...
        let mut backoff = MIN_BACKOFF;
        for _ in 0..10 {
            backoff = (wait_after_failure(backoff, false) * 2).min(MAX_BACKOFF);
        }
        assert_eq!(backoff, MAX_BACKOFF);
        assert_eq!(wait_after_failure(backoff, false), MAX_BACKOFF);
        // ... and a failure after a commit waits the shortest time again.
        assert_eq!(wait_after_failure(backoff, true), MIN_BACKOFF);
    }
}
