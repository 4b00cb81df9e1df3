//! Metrics in the Prometheus text format: one struct per observable fact, labelled by stream,
//! pipeline or sink, rendered on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// All of floe's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    streams: Mutex<BTreeMap<String, std::sync::Arc<StreamMetrics>>>,
    sinks: Mutex<BTreeMap<(String, String), std::sync::Arc<SinkMetrics>>>,
    tables: Mutex<BTreeMap<String, std::sync::Arc<TableMetrics>>>,
}

/// Per-table facts the background maintenance observes (`namespace.table`), as of its last run.
#[derive(Debug, Default)]
pub struct TableMetrics {
    /// Live data files of the current snapshot.
    pub data_files: AtomicU64,
    /// Their bytes.
    pub data_bytes: AtomicU64,
    /// Live data files below the small-file threshold.
    pub small_files: AtomicU64,
    /// Snapshots the table retains.
    pub snapshots: AtomicU64,
    /// Maintenance runs finished.
    pub runs: AtomicU64,
    /// Maintenance runs that failed.
    pub failures: AtomicU64,
    /// Data files replaced by compaction.
    pub files_compacted: AtomicU64,
    /// Files deleted by snapshot expiry and orphan cleanup.
    pub files_deleted: AtomicU64,
    /// Unix millis the last run ended (0: never).
    pub last_run_ms: AtomicU64,
    /// Whether the last run succeeded (1) or failed (0).
    pub last_run_ok: AtomicU64,
    /// The last run's error, if it failed.
    pub last_error: Mutex<Option<String>>,
}

/// Per-stream ingest counters.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    /// Rows acknowledged (durable).
    pub rows_accepted: AtomicU64,
    /// Rows rejected (in 4xx answers).
    pub rows_rejected: AtomicU64,
    /// Rows stored as dead letters (accepted, but invalid).
    pub rows_dead_lettered: AtomicU64,
    /// Requests acknowledged.
    pub requests_accepted: AtomicU64,
    /// Requests rejected.
    pub requests_rejected: AtomicU64,
    /// Body bytes acknowledged.
    pub bytes_accepted: AtomicU64,
    /// Next offset of the log (durable end).
    pub log_end_offset: AtomicU64,
    /// Bytes of log segments on disk.
    pub log_disk_bytes: AtomicU64,
    /// First offset still in the log.
    pub log_start_offset: AtomicU64,
}

/// Per (pipeline, sink) counters.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Successful commits.
    pub commits: AtomicU64,
    /// Failed commits.
    pub commit_failures: AtomicU64,
    /// Rows committed.
    pub rows_committed: AtomicU64,
    /// Data files committed.
    pub files_committed: AtomicU64,
    /// Committed data files that were closed early to stay within `rolling.memory_mb`.
    pub files_closed_for_memory: AtomicU64,
    /// Committed position.
    pub position: AtomicU64,
    /// Unix millis of the last successful commit (0: never).
    pub last_commit_ms: AtomicU64,
    /// Milliseconds the last commit took.
    pub last_commit_duration_ms: AtomicU64,
    /// Append time (Unix millis) of the newest row committed: end-to-end freshness.
    pub last_committed_row_appended_ms: AtomicU64,
    /// The last commit error, if the last commit failed.
    pub last_error: Mutex<Option<String>>,
}

impl Metrics {
    /// The counters of `stream`.
    pub fn stream(&self, stream: &str) -> std::sync::Arc<StreamMetrics> {
        self.streams
            .lock()
            .expect("metrics lock")
            .entry(stream.to_string())
            .or_default()
            .clone()
    }

    /// The counters of (`pipeline`, `sink`).
    pub fn sink(&self, pipeline: &str, sink: &str) -> std::sync::Arc<SinkMetrics> {
        self.sinks
            .lock()
            .expect("metrics lock")
            .entry((pipeline.to_string(), sink.to_string()))
            .or_default()
            .clone()
    }

    /// The maintenance facts of table `table` (`namespace.table`).
    pub fn table(&self, table: &str) -> std::sync::Arc<TableMetrics> {
        self.tables
            .lock()
            .expect("metrics lock")
            .entry(table.to_string())
            .or_default()
            .clone()
    }

    /// Tables whose last maintenance run failed: (table, error).
    pub fn failing_maintenance(&self) -> Vec<(String, String)> {
        self.tables
            .lock()
            .expect("metrics lock")
            .iter()
            .filter_map(|(t, m)| m.last_error.lock().expect("lock").clone().map(|e| (t.clone(), e)))
            .collect()
    }

    /// Sinks whose last commit failed: (pipeline, sink, error).
    pub fn failing_sinks(&self) -> Vec<(String, String, String)> {
        self.sinks
            .lock()
            .expect("metrics lock")
            .iter()
            .filter_map(|((p, s), m)| {
                m.last_error
                    .lock()
                    .expect("lock")
                    .clone()
                    .map(|e| (p.clone(), s.clone(), e))
            })
            .collect()
    }

    /// Renders everything in the Prometheus text format. `stream_of` maps a pipeline to the
    /// stream it reads, for the uncommitted-bytes gauge.
    pub fn render(&self, stream_of: &dyn Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        let streams = self.streams.lock().expect("metrics lock").clone();
        let sinks = self.sinks.lock().expect("metrics lock").clone();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        type StreamGetter = fn(&StreamMetrics) -> &AtomicU64;
        let stream_series: [(&str, &str, &str, StreamGetter); 8] = [
            (
                "floe_stream_rows_dead_lettered_total",
                "counter",
                "Invalid rows stored in the stream's dead-letter table (on_invalid = \"dead_letter\").",
                |m| &m.rows_dead_lettered,
            ),
            (
                "floe_stream_rows_accepted_total",
                "counter",
                "Rows acknowledged after they were durable.",
                |m| &m.rows_accepted,
            ),
            (
                "floe_stream_rows_rejected_total",
                "counter",
                "Rows refused with a 4xx answer.",
                |m| &m.rows_rejected,
            ),
            (
                "floe_stream_requests_accepted_total",
                "counter",
                "Ingest requests acknowledged.",
                |m| &m.requests_accepted,
            ),
            (
                "floe_stream_requests_rejected_total",
                "counter",
                "Ingest requests refused.",
                |m| &m.requests_rejected,
            ),
            (
                "floe_stream_bytes_accepted_total",
                "counter",
                "JSON body bytes acknowledged.",
                |m| &m.bytes_accepted,
            ),
            (
                "floe_stream_log_end_offset",
                "gauge",
                "Next offset of the stream log.",
                |m| &m.log_end_offset,
            ),
            (
                "floe_stream_log_disk_bytes",
                "gauge",
                "Bytes of stream log segments on disk.",
                |m| &m.log_disk_bytes,
            ),
        ];
        for (name, kind, help, get) in stream_series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (s, m) in &streams {
                let _ = writeln!(out, "{name}{{stream=\"{s}\"}} {}", g(get(m)));
            }
        }
        type SinkGetter = fn(&SinkMetrics) -> &AtomicU64;
        let sink_series: [(&str, &str, &str, SinkGetter); 9] = [
            ("floe_sink_commits_total", "counter", "Successful sink commits.", |m| {
                &m.commits
            }),
            (
                "floe_sink_commit_failures_total",
                "counter",
                "Failed sink commits.",
                |m| &m.commit_failures,
            ),
            (
                "floe_sink_rows_committed_total",
                "counter",
                "Rows committed to the sink.",
                |m| &m.rows_committed,
            ),
            (
                "floe_sink_files_committed_total",
                "counter",
                "Data files committed.",
                |m| &m.files_committed,
            ),
            (
                "floe_sink_files_closed_for_memory_total",
                "counter",
                "Committed data files closed early to stay within rolling.memory_mb.",
                |m| &m.files_closed_for_memory,
            ),
            ("floe_sink_position", "gauge", "Committed stream offset.", |m| {
                &m.position
            }),
            (
                "floe_sink_last_commit_timestamp_ms",
                "gauge",
                "Unix millis of the last successful commit.",
                |m| &m.last_commit_ms,
            ),
            (
                "floe_sink_last_commit_duration_ms",
                "gauge",
                "Duration of the last commit.",
                |m| &m.last_commit_duration_ms,
            ),
            (
                "floe_sink_last_committed_row_appended_ms",
                "gauge",
                "Append time of the newest committed row (freshness).",
                |m| &m.last_committed_row_appended_ms,
            ),
        ];
        for (name, kind, help, get) in sink_series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((p, s), m) in &sinks {
                let _ = writeln!(out, "{name}{{pipeline=\"{p}\",sink=\"{s}\"}} {}", g(get(m)));
            }
        }
        type TableGetter = fn(&TableMetrics) -> &AtomicU64;
        let table_series: [(&str, &str, &str, TableGetter); 10] = [
            (
                "floe_table_data_files",
                "gauge",
                "Live data files of the current snapshot.",
                |m| &m.data_files,
            ),
            ("floe_table_data_bytes", "gauge", "Bytes of the live data files.", |m| {
                &m.data_bytes
            }),
            (
                "floe_table_small_files",
                "gauge",
                "Live data files below the compaction threshold.",
                |m| &m.small_files,
            ),
            ("floe_table_snapshots", "gauge", "Snapshots the table retains.", |m| {
                &m.snapshots
            }),
            (
                "floe_maintenance_runs_total",
                "counter",
                "Background maintenance runs finished.",
                |m| &m.runs,
            ),
            (
                "floe_maintenance_failures_total",
                "counter",
                "Background maintenance runs that failed.",
                |m| &m.failures,
            ),
            (
                "floe_maintenance_files_compacted_total",
                "counter",
                "Data files replaced by compaction.",
                |m| &m.files_compacted,
            ),
            (
                "floe_maintenance_files_deleted_total",
                "counter",
                "Files deleted by snapshot expiry and orphan cleanup.",
                |m| &m.files_deleted,
            ),
            (
                "floe_maintenance_last_run_timestamp_ms",
                "gauge",
                "Unix millis the last maintenance run ended.",
                |m| &m.last_run_ms,
            ),
            (
                "floe_maintenance_last_run_success",
                "gauge",
                "1 when the last maintenance run succeeded, 0 when it failed.",
                |m| &m.last_run_ok,
            ),
        ];
        let tables = self.tables.lock().expect("metrics lock").clone();
        for (name, kind, help, get) in table_series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (t, m) in &tables {
                let _ = writeln!(out, "{name}{{table=\"{t}\"}} {}", g(get(m)));
            }
        }
        let name = "floe_pipeline_uncommitted_rows";
        let _ = writeln!(
            out,
            "# HELP {name} Stream rows not yet committed by a pipeline's sink.\n# TYPE {name} gauge"
        );
        let lags: Vec<(String, String, String, u64, u64)> = sinks
            .iter()
            .filter_map(|((p, s), m)| {
                let stream = stream_of(p)?;
                let sm = streams.get(&stream)?;
                let (start, end) = (g(&sm.log_start_offset), g(&sm.log_end_offset));
                let rows = end.saturating_sub(g(&m.position));
                // Bytes are estimated from the log's average bytes per stored row.
                let per_row = g(&sm.log_disk_bytes) as f64 / (end.saturating_sub(start).max(1)) as f64;
                Some((p.clone(), s.clone(), stream, rows, (rows as f64 * per_row) as u64))
            })
            .collect();
        for (p, s, stream, rows, _) in &lags {
            let _ = writeln!(
                out,
                "{name}{{pipeline=\"{p}\",sink=\"{s}\",stream=\"{stream}\"}} {rows}"
            );
        }
        let name = "floe_pipeline_uncommitted_log_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Log bytes (estimated) not yet committed by a pipeline's sink.\n# TYPE {name} gauge"
        );
        for (p, s, stream, _, bytes) in &lags {
            let _ = writeln!(
                out,
                "{name}{{pipeline=\"{p}\",sink=\"{s}\",stream=\"{stream}\"}} {bytes}"
            );
        }
        out
    }
}
