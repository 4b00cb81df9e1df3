//! Drives one pipeline statement: log → SQL → sink → commit, and back to the committed position
//! after any failure.
//!
//! ```text
//!   open sink ── position P (from the catalog) ──► read log from P ──► SQL ──► write
//!        ▲                                                                    │
//!        │ error: files of the attempt deleted, nothing committed             ▼
//!        └──────────── back off, reopen ◄──────── commit when the roll is due (interval / size)
//! ```
//!
//! The position only moves inside a catalog commit, so a crash or error anywhere replays the log
//! from the last committed position: each row lands once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::Transform;
use crate::error::{Error, Result};
use crate::server::App;
use crate::sink::iceberg::IcebergSink;

/// First wait after a failure; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts after repeated failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs `t` until `shutdown` turns true; commits what is pending before returning.
pub async fn run(app: Arc<App>, t: Transform, mut shutdown: watch::Receiver<bool>) {
    let metrics = app.metrics.sink(&t.pipeline, &t.sink);
    let mut backoff = MIN_BACKOFF;
    loop {
        match run_once(&app, &t, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
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

/// Runs `t` once up to the current end of its stream's log, commits, and returns — or returns
/// the first error (a sink that cannot open, a schema mismatch, a failed commit) instead of
/// retrying. Used by tests and tools that need "everything durable so far is committed".
pub async fn catch_up(app: &App, t: &Transform) -> Result<()> {
    let (tx, mut rx) = watch::channel(false);
    // The receiver has not seen `true` yet, so the runner stops as soon as it has caught up.
    tx.send(true)
        .map_err(|_| Error::Internal("shutdown channel closed".into()))?;
    run_once(app, t, &mut rx).await
}

async fn run_once(app: &App, t: &Transform, shutdown: &mut watch::Receiver<bool>) -> Result<()> {
    let cfg = app.config.sink(&t.sink).expect("planned against config sinks");
    let stream = app.streams.get(&t.stream).expect("planned against config streams");
    let log = &stream.log;
    let metrics = app.metrics.sink(&t.pipeline, &t.sink);
    let mut sink = IcebergSink::open(app.catalog.clone(), cfg, &t.pipeline, &t.output).await?;
    let mut offset = sink.committed();
    if offset < log.start_offset() {
        return Err(Error::Config(format!(
            "pipeline {:?} sink {:?} committed through offset {offset}, but stream {:?} starts at {}: rows in between are gone",
            t.pipeline,
            t.sink,
            t.stream,
            log.start_offset()
        )));
    }
    if offset > log.end_offset() {
        return Err(Error::Config(format!(
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
        let records = log.read(offset, app.config.limits.batch_bytes)?;
        if let Some(last) = records.last() {
            let through = last.end();
            newest_appended_ms = newest_appended_ms.max(last.appended_at_ms);
            // Records may carry schema metadata (an idempotency key): drop it, keep the columns.
            let input = records
                .into_iter()
                .map(|r| arrow::record_batch::RecordBatch::try_new(t.input_schema(), r.batch.columns().to_vec()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            for out in t.run(input).await? {
                sink.write(&out, through).await?;
            }
            sink.write(&arrow::record_batch::RecordBatch::new_empty(t.output.clone()), through)
                .await?;
            offset = through;
        }
        if sink.should_roll() {
            commit(app, t, &mut sink, newest_appended_ms).await?;
        }
        if offset < log.end_offset() {
            continue;
        }
        if stopping {
            if sink.through() > sink.committed() {
                commit(app, t, &mut sink, newest_appended_ms).await?;
            }
            return Ok(());
        }
        let deadline = sink.roll_deadline().map(tokio::time::Instant::from_std);
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

async fn commit(app: &App, t: &Transform, sink: &mut IcebergSink, newest_appended_ms: i64) -> Result<()> {
    let metrics = app.metrics.sink(&t.pipeline, &t.sink);
    let stats = sink.commit().await?;
    metrics.commits.fetch_add(1, Ordering::Relaxed);
    metrics.rows_committed.fetch_add(stats.rows, Ordering::Relaxed);
    metrics.files_committed.fetch_add(stats.files as u64, Ordering::Relaxed);
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
