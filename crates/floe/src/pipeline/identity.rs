//! Pipeline identity: which committed position a pipeline statement resumes from, checked at
//! start (in `App::open`, before HTTP serves) and when a pipeline is added to a running floe
//! (before its runner starts), so that nothing is skipped, replayed twice or stalled silently.
//!
//! A position is keyed by `(pipeline, sink)`. At start, for every statement:
//!
//! ```text
//!  position of (pipeline, sink)?
//!   ├─ yes ─► committed P inside the log [start, end]?      no ─► refuse: P > end (log went
//!   │          └─ resume at P                                      backwards) / P < start (rows gone)
//!   └─ no ──► pipeline says replaces = "old"? ─► take old's position over (one transaction)
//!             another pipeline, not in the config, has a position on the same table?
//!               └─ refuse, naming it and its offset (rename → replaces; else remove its row)
//!             record start = log end (`start = "latest"`, default) or log start ("earliest")
//!             in the catalog now, so rows acknowledged from here on are replayed after a crash
//! ```
//!
//! Each stream's log id (`floe_stream::StreamLog::log_id`) is recorded in the catalog the first
//! time; a different id later, while positions committed against the old log exist, is refused:
//! the folder holds another log, even if that one is long enough to pass the offset checks.

use std::collections::HashSet;

use floe_catalog::FloeCatalog;

use super::Transform;
use crate::config::{PipelineConfig, PipelineStart, SinkConfig};
use crate::error::{Error, Result};
use crate::stream::StreamRegistry;

/// The dead-letter sink of statement `(pipeline, sink)` is keyed `(pipeline, "<sink>.dead_letter")`:
/// a `.` never appears in a configured sink name, so it cannot collide with one.
pub fn dead_letter_sink_name(sink: &str) -> String {
    format!("{sink}.dead_letter")
}

/// The pipelines and statements of the live topology, as [`prepare_positions`] needs them.
#[derive(Clone, Copy)]
pub struct Running<'a> {
    /// Every pipeline, built-in ones included.
    pub pipelines: &'a [PipelineConfig],
    /// Every sink, built-in ones included.
    pub sinks: &'a [SinkConfig],
    /// Every planned statement.
    pub statements: &'a [Transform],
}

impl<'a> Running<'a> {
    /// Pipeline `name`, if it runs.
    pub fn pipeline(&self, name: &str) -> Option<&'a PipelineConfig> {
        self.pipelines.iter().find(|p| p.name == name)
    }

    /// Sink `name`, if it is configured.
    pub fn sink(&self, name: &str) -> Option<&'a SinkConfig> {
        self.sinks.iter().find(|s| s.name == name)
    }
}

/// Checks and fixes up the position of each of `transforms` (statements of `running`, whose
/// streams are open in `streams`); see the module docs. At start `transforms` is every statement
/// of the topology; when a pipeline is added, its statements.
pub async fn prepare_positions(
    topology: Running<'_>,
    catalog: &FloeCatalog,
    streams: &StreamRegistry,
    transforms: &[Transform],
) -> Result<()> {
    let running: HashSet<&str> = topology.statements.iter().map(|t| t.pipeline.as_str()).collect();
    let preparing: HashSet<&str> = transforms.iter().map(|t| t.pipeline.as_str()).collect();
    for p in topology.pipelines {
        let Some(old) = &p.replaces else { continue };
        if !preparing.contains(p.name.as_str()) {
            continue;
        }
        let sinks: Vec<String> = transforms
            .iter()
            .filter(|t| t.pipeline == p.name)
            .map(|t| t.sink.clone())
            .collect();
        let moved = catalog.take_over_positions(old, &p.name, &sinks).await?;
        for m in &moved {
            tracing::info!(pipeline = %p.name, replaces = %old, sink = %m.sink, position = m.position, "took over the position of the replaced pipeline");
        }
        if moved.is_empty() && !catalog.pipeline_has_positions(&p.name).await? {
            return Err(Error::Config(format!(
                "pipeline {:?}: replaces = {old:?}, but no pipeline {old:?} ever committed a position; \
                 check the name (or remove replaces to start the pipeline afresh)",
                p.name
            )));
        }
    }
    let mut positions = catalog.sink_positions().await?;
    let log_of = |t: &Transform| {
        streams
            .get(&t.stream)
            .map(|s| s.log.clone())
            .ok_or_else(|| Error::Internal(format!("stream {:?} is not open", t.stream)))
    };
    // Committed positions first: each must lie inside its log.
    let mut fresh = Vec::new();
    for t in transforms {
        let log = log_of(t)?;
        let (start, end) = (log.start_offset(), log.end_offset());
        let Some(p) = positions.iter().find(|p| p.pipeline == t.pipeline && p.sink == t.sink) else {
            fresh.push(t);
            continue;
        };
        if p.position > end {
            return Err(Error::Conflict {
                code: "position_conflict",
                message: format!(
                    "pipeline {:?} sink {:?} committed stream {:?} through offset {}, but the stream's log ends at \
                 offset {end}: the log went backwards (its folder was replaced, or a damaged tail was cut). \
                 Resuming would skip the next {} acknowledged rows; floe refuses to start. Restore the log, \
                 or remove the position (see docs/design.md, \"Pipeline identity\")",
                    t.pipeline,
                    t.sink,
                    t.stream,
                    p.position,
                    p.position - end
                ),
            });
        }
        if p.position < start {
            return Err(Error::Conflict {
                code: "position_conflict",
                message: format!(
                    "pipeline {:?} sink {:?} committed stream {:?} through offset {}, but the stream's log starts at \
                 offset {start}: the {} rows in between were truncated while the pipeline was not running \
                 and cannot reach its table. floe refuses to start rather than skip them silently; remove \
                 the position to start afresh (see docs/design.md, \"Pipeline identity\")",
                    t.pipeline,
                    t.sink,
                    t.stream,
                    p.position,
                    start - p.position
                ),
            });
        }
    }
    // Then each log's identity: a folder holding another log (even a longer one) is refused once
    // a position of it was committed against the old one.
    let mut seen = HashSet::new();
    for t in transforms {
        if !seen.insert(t.stream.as_str()) {
            continue;
        }
        let log = log_of(t)?;
        let current = log.log_id();
        match catalog.stream_log_id(&t.stream).await? {
            Some(recorded) if recorded != current => {
                let committed: Vec<String> = positions
                    .iter()
                    .filter(|p| {
                        p.position > 0
                            && transforms
                                .iter()
                                .any(|o| o.stream == t.stream && o.pipeline == p.pipeline && o.sink == p.sink)
                    })
                    .map(|p| format!("pipeline {:?} sink {:?} at offset {}", p.pipeline, p.sink, p.position))
                    .collect();
                if !committed.is_empty() {
                    return Err(Error::Conflict {
                        code: "position_conflict",
                        message: format!(
                            "stream {:?}: its folder holds another log (id {current}, offsets {}..{}) than the one its \
                         pipelines committed positions in (id {recorded}: {}); floe refuses to start rather than \
                         resume those positions in a different log. Restore the stream's folder, or remove the \
                         positions (see docs/design.md, \"Pipeline identity\")",
                            t.stream,
                            log.start_offset(),
                            log.end_offset(),
                            committed.join(", ")
                        ),
                    });
                }
                catalog.set_stream_log_id(&t.stream, current).await?;
            }
            Some(_) => {}
            None => catalog.set_stream_log_id(&t.stream, current).await?,
        }
    }
    // Statements without a position: refuse a silent rename, else record where they start.
    for t in fresh {
        let log = log_of(t)?;
        // The table of an iceberg sink, the folder of a files sink.
        let table = topology
            .sink(&t.sink)
            .and_then(SinkConfig::target)
            .ok_or_else(|| Error::Internal(format!("sink {:?} has no table or path", t.sink)))?;
        let orphans: Vec<String> = positions
            .iter()
            // A position that never committed (its table uuid is filled in by the first commit)
            // put no row into the table: nothing to repeat or skip there.
            .filter(|p| p.table == table && !p.table_uuid.is_empty() && !running.contains(p.pipeline.as_str()))
            .map(|p| format!("pipeline {:?} (sink {:?}) at offset {}", p.pipeline, p.sink, p.position))
            .collect();
        if !orphans.is_empty() {
            return Err(Error::Config(format!(
                "pipeline {:?}: table {table} is already fed by {}, which is not in the config. If pipeline {:?} \
                 was renamed, add replaces = \"<old name>\" to continue from its position; a new pipeline \
                 would otherwise write the table's rows again or skip some",
                t.pipeline,
                orphans.join(", "),
                t.pipeline
            )));
        }
        let from = match start_of(topology, &t.pipeline) {
            PipelineStart::Latest => log.end_offset(),
            PipelineStart::Earliest => log.start_offset(),
        };
        let recorded = catalog
            .record_start_position(&t.pipeline, &t.sink, &table, "", from)
            .await?;
        tracing::info!(pipeline = %t.pipeline, sink = %t.sink, stream = %t.stream, position = recorded.position, "new pipeline statement: start position recorded");
        positions.push(recorded);
    }
    Ok(())
}

/// A pipeline's `start` (built-in pipelines, a stream's dead letters, read their internal stream
/// from its first row: the topology says `earliest` for them).
fn start_of(topology: Running<'_>, pipeline: &str) -> PipelineStart {
    topology.pipeline(pipeline).map_or(PipelineStart::Earliest, |p| p.start)
}

/// The committed offsets of `pipeline`'s statements among `statements`, as the JSON
/// `{sink: offset}` a pipeline version records (docs/control-plane.md, "Pipeline versions").
pub async fn committed_offsets(catalog: &FloeCatalog, pipeline: &str, statements: &[Transform]) -> Result<String> {
    let mut offsets = serde_json::Map::new();
    for t in statements.iter().filter(|t| t.pipeline == pipeline) {
        if let Some(p) = catalog.sink_position(pipeline, &t.sink).await? {
            offsets.insert(t.sink.clone(), serde_json::Value::from(p.position));
        }
    }
    Ok(serde_json::Value::Object(offsets).to_string())
}

/// Records that `pipeline` starts: its SQL as a version when the newest recorded one differs (a
/// declarative pipeline whose `floe.toml` changed; one created through the API has its version
/// already), and the newest version's start at the committed offsets of its statements, once
/// (the versions before it end there). Called when its runners start, after
/// [`prepare_positions`], so the offsets are where the runners read from.
pub async fn record_version_start(
    catalog: &FloeCatalog,
    pipeline: &PipelineConfig,
    statements: &[Transform],
) -> Result<()> {
    let body = serde_json::to_string(pipeline).map_err(|e| Error::Internal(format!("pipeline as JSON: {e}")))?;
    catalog
        .ensure_pipeline_version(
            &pipeline.name,
            floe_catalog::VersionBody {
                sql: &pipeline.sql,
                body: &body,
            },
        )
        .await?;
    let offsets = committed_offsets(catalog, &pipeline.name, statements).await?;
    catalog.start_pipeline_version(&pipeline.name, &offsets).await?;
    Ok(())
}
