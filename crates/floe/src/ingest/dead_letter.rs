//! Dead letters: with `on_invalid = "dead_letter"`, a request's valid rows are accepted and each
//! invalid row is kept, with its error, in the Iceberg table `<namespace>.<stream>_dead_letter`.
//!
//! ```text
//!  POST /v1/streams/events/events ─► decode_lenient ─┬─ valid rows ──► log  streams/events/ ─► user pipelines
//!                                                    └─ invalid rows ─► log  streams/events_dead_letter/
//!                                                         │  (stream, row, field, error, raw, received_at)
//!                                                         └─► built-in pipeline events_dead_letter
//!                                                             INSERT INTO events_dead_letter_table
//!                                                             SELECT * FROM events_dead_letter
//! ```
//!
//! The dead letters of stream `s` are an internal stream `s_dead_letter` (its own durable log,
//! not reachable over HTTP) with a built-in pipeline `s_dead_letter` into the sink
//! `s_dead_letter_table`, so they get the same guarantees as any row: durable (fsync) before the
//! 200, and committed exactly once with the sink's position. Users may read the internal stream
//! from their own pipelines too (e.g. to route dead letters elsewhere).
//!
//! Order of the two appends: the dead letters first, then the valid rows. The request's
//! idempotency key rides on the last record written (the valid rows', or the dead letters' when
//! every row is invalid), so a key is only remembered once everything of the request is durable.
//! At start-up a stream's keys are rebuilt from both logs; before the dead-letter log is
//! truncated, the stream's keys file is synced (as before its own log is truncated).
//!
//! The table's namespace is that of the first Iceberg sink a pipeline reading the stream writes
//! to (in pipeline order), else [`DEFAULT_NAMESPACE`].

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;

use super::decode::RowError;
use super::schema::arrow_schema;
use crate::config::{
    FieldConfig, FieldType, HttpIngestConfig, OnInvalid, Rolling, SinkConfig, StreamConfig, UnknownFields,
};
use crate::ingest::record;

/// Namespace of dead-letter tables of streams that feed no Iceberg sink.
pub const DEFAULT_NAMESPACE: &str = "floe";

/// The internal stream (and built-in pipeline) holding the dead letters of `stream`.
pub fn stream_name(stream: &str) -> String {
    format!("{stream}_dead_letter")
}

/// The sink of the built-in dead-letter pipeline of `stream`.
pub fn sink_name(stream: &str) -> String {
    format!("{stream}_dead_letter_table")
}

/// The columns of a dead-letter table.
pub fn fields() -> Vec<FieldConfig> {
    let f = |name: &str, ty: FieldType, required: bool| FieldConfig {
        name: name.to_string(),
        ty,
        required,
        items: None,
        fields: None,
    };
    vec![
        f("stream", FieldType::String, true),
        f("row", FieldType::Int64, true),
        f("field", FieldType::String, false),
        f("error", FieldType::String, true),
        f("raw", FieldType::String, true),
        f("received_at", FieldType::Timestamp, true),
    ]
}

/// The internal stream's config (not served over HTTP).
pub fn stream_config(stream: &str) -> StreamConfig {
    StreamConfig {
        name: stream_name(stream),
        fields: Some(fields()),
        http: HttpIngestConfig {
            enabled: false,
            auth: false,
            cors_origins: vec![],
        },
        on_invalid: OnInvalid::Reject,
        unknown_fields: UnknownFields::Reject,
    }
}

/// The built-in sink's config.
pub fn sink_config(stream: &str, namespace: &str, interval_seconds: u64) -> SinkConfig {
    SinkConfig {
        name: sink_name(stream),
        table: Some(format!("{namespace}.{}", stream_name(stream))),
        partition_by: vec![],
        rolling: Rolling {
            interval_seconds,
            ..Rolling::default()
        },
        bloom_filter_columns: vec![],
        ..SinkConfig::default()
    }
}

/// The built-in pipeline's SQL.
pub fn pipeline_sql(stream: &str) -> String {
    format!(
        "INSERT INTO {} SELECT * FROM {}",
        sink_name(stream),
        stream_name(stream)
    )
}

/// One record of dead letters: `invalid` rows of one request to `stream`, received at `now_us`.
/// `key` is `(idempotency key, the stream's end offset)` when this record carries the request's key.
pub fn batch(stream: &str, invalid: &[(RowError, String)], now_us: i64, key: Option<(&str, u64)>) -> RecordBatch {
    let n = invalid.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![stream; n])),
        Arc::new(Int64Array::from_iter_values(invalid.iter().map(|(e, _)| e.row as i64))),
        Arc::new(StringArray::from_iter(invalid.iter().map(|(e, _)| {
            if e.field.is_empty() {
                None
            } else {
                Some(e.field.as_str())
            }
        }))),
        Arc::new(StringArray::from_iter_values(
            invalid.iter().map(|(e, _)| e.message.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            invalid.iter().map(|(_, raw)| raw.as_str()),
        )),
        Arc::new(TimestampMicrosecondArray::from(vec![now_us; n]).with_timezone("UTC")),
    ];
    let mut schema = arrow_schema(&fields()).as_ref().clone();
    if let Some((k, offset)) = key {
        schema.metadata = HashMap::from([
            (record::KEY_METADATA.to_string(), k.to_string()),
            (record::DEAD_LETTERED_METADATA.to_string(), n.to_string()),
            (record::STREAM_OFFSET_METADATA.to_string(), offset.to_string()),
        ]);
    }
    RecordBatch::try_new(Arc::new(schema), columns).expect("dead-letter columns match their schema")
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    use super::*;

    #[test]
    fn batch_keeps_row_field_error_and_raw() {
        let invalid = vec![
            (
                RowError {
                    row: 2,
                    field: "n".into(),
                    message: "expected int64, found string \"x\"".into(),
                },
                r#"{"n":"x"}"#.to_string(),
            ),
            (
                RowError {
                    row: 5,
                    field: String::new(),
                    message: "malformed JSON".into(),
                },
                "{oops".to_string(),
            ),
        ];
        let b = batch("events", &invalid, 7, Some(("k1", 12)));
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(1), 5);
        assert_eq!(b.column(2).as_string::<i32>().value(0), "n");
        assert!(b.column(2).is_null(1));
        assert_eq!(b.column(4).as_string::<i32>().value(1), "{oops");
        assert_eq!(b.schema().metadata()[record::DEAD_LETTERED_METADATA], "2");
        assert_eq!(b.schema().metadata()[record::STREAM_OFFSET_METADATA], "12");
    }
}
