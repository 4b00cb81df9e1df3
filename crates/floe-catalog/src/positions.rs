//! Sink positions: how far in a stream a (pipeline, sink) pair has committed.
//!
//! A sink attaches [`position_summary`] to the snapshot it appends; the catalog finds those
//! properties in the commit's `AddSnapshot` update and moves the `floe_sink_positions` row in the
//! same SQLite transaction as the metadata pointer (see the crate docs).

use std::collections::HashMap;

use iceberg::TableUpdate;

/// Snapshot-summary key: the pipeline that produced the snapshot.
pub const PROP_PIPELINE: &str = "floe.pipeline";
/// Snapshot-summary key: the sink (within the pipeline) that produced the snapshot.
pub const PROP_SINK: &str = "floe.sink";
/// Snapshot-summary key: the stream offset this commit starts at (the previous commit's `to`).
pub const PROP_POSITION_FROM: &str = "floe.position.from";
/// Snapshot-summary key: the stream offset after the last row this commit covers.
pub const PROP_POSITION_TO: &str = "floe.position.to";

/// Snapshot-summary key: the sink's commit attempt (a UUID). Every file the attempt writes —
/// data files, manifests, manifest list, table metadata — carries it in its name, so the files
/// of an attempt that never landed can be found and deleted after a crash.
pub const PROP_ATTEMPT: &str = "floe.attempt";

/// The committed position of one (pipeline, sink) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkPosition {
    /// Pipeline name.
    pub pipeline: String,
    /// Sink name.
    pub sink: String,
    /// The table, as `namespace.table`.
    pub table: String,
    /// The table's UUID when the position was recorded.
    pub table_uuid: String,
    /// Next stream offset to process: every row before it is in the table exactly once.
    pub position: u64,
    /// The snapshot that recorded this position.
    pub snapshot_id: i64,
    /// When the position was recorded (Unix millis).
    pub updated_at_ms: i64,
}

/// The snapshot-summary properties a sink sets to move its position from `from` to `to`.
pub fn position_summary(
    pipeline: &str,
    sink: &str,
    from: u64,
    to: u64,
    attempt: uuid::Uuid,
) -> HashMap<String, String> {
    HashMap::from([
        (PROP_ATTEMPT.to_string(), attempt.to_string()),
        (PROP_PIPELINE.to_string(), pipeline.to_string()),
        (PROP_SINK.to_string(), sink.to_string()),
        (PROP_POSITION_FROM.to_string(), from.to_string()),
        (PROP_POSITION_TO.to_string(), to.to_string()),
    ])
}

/// Whether a snapshot added by `updates` carries any of floe's sink keys (`floe.pipeline`,
/// `floe.sink`, `floe.position.*`, `floe.attempt`) in its summary. Only floe's own sinks may
/// commit such a snapshot: from anyone else (the REST API) it would move a sink's position.
pub fn carries_sink_keys(updates: &[TableUpdate]) -> bool {
    const KEYS: [&str; 5] = [
        PROP_PIPELINE,
        PROP_SINK,
        PROP_POSITION_FROM,
        PROP_POSITION_TO,
        PROP_ATTEMPT,
    ];
    updates.iter().any(|u| match u {
        TableUpdate::AddSnapshot { snapshot } => {
            let props = &snapshot.summary().additional_properties;
            KEYS.iter().any(|k| props.contains_key(*k))
        }
        _ => false,
    })
}

/// A position move found in a commit's updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PositionMove {
    pub pipeline: String,
    pub sink: String,
    pub from: u64,
    pub to: u64,
    pub snapshot_id: i64,
    pub attempt: Option<uuid::Uuid>,
}

/// Finds the position move carried by an `AddSnapshot` update, if any. A malformed one is an error
/// (never silently ignored: it would break exactly-once).
pub(crate) fn find_position_move(updates: &[TableUpdate]) -> iceberg::Result<Option<PositionMove>> {
    for update in updates {
        let TableUpdate::AddSnapshot { snapshot } = update else {
            continue;
        };
        let props = &snapshot.summary().additional_properties;
        let (Some(pipeline), Some(sink)) = (props.get(PROP_PIPELINE), props.get(PROP_SINK)) else {
            continue;
        };
        let parse = |key: &str| -> iceberg::Result<u64> {
            props.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
                iceberg::Error::new(
                    iceberg::ErrorKind::DataInvalid,
                    format!("snapshot summary has {PROP_PIPELINE} but no valid {key}"),
                )
            })
        };
        return Ok(Some(PositionMove {
            pipeline: pipeline.clone(),
            sink: sink.clone(),
            from: parse(PROP_POSITION_FROM)?,
            to: parse(PROP_POSITION_TO)?,
            snapshot_id: snapshot.snapshot_id(),
            attempt: props.get(PROP_ATTEMPT).and_then(|a| a.parse().ok()),
        }));
    }
    Ok(None)
}
