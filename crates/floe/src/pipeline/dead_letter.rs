//! Pipeline dead letters: rows whose SQL fails at run time (a failed `CAST`, a division by zero,
//! a bad `to_timestamp`) are isolated from their micro-batch and kept, with the error, in the
//! pipeline's dead-letter table `<namespace>.<pipeline>_errors` (the namespace of the statement's
//! sink), so one bad row does not stop the pipeline.
//!
//! ```text
//!  micro-batch ──► SELECT ──ok──► main sink
//!                    │ execution error
//!                    ▼
//!  bisect: run each half again, down to single rows (at most max_bad_rows_per_batch of them)
//!      good halves ──► main sink        single failing rows ──► dead-letter sink (pipeline,
//!                                          "<sink>.dead_letter"), its own position row
//!  commit: dead-letter sink first (when it has rows), then the main sink
//!  replay from the main sink's position: failing rows below the dead-letter sink's position
//!  are already in the dead-letter table and are skipped
//! ```
//!
//! So the dead-letter table gets each failing row exactly once: a crash between the two commits
//! replays the batch, and the rows the dead-letter commit covered are skipped.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::Transform;
use crate::config::{Rolling, SinkConfig};
use crate::error::{Error, Result};

/// The dead-letter table of `pipeline` whose statement writes `main_table` (`ns.table`).
pub fn table_name(main_table: &str, pipeline: &str) -> String {
    let ns = main_table.rsplit_once('.').map_or("floe", |(ns, _)| ns);
    format!("{ns}.{pipeline}_errors")
}

/// Columns of a pipeline dead-letter table.
pub fn schema() -> SchemaRef {
    let utc: Arc<str> = Arc::from("UTC");
    Arc::new(Schema::new(vec![
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("sink", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new(
            "failed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some(utc)),
            false,
        ),
    ]))
}

/// The sink config of the dead-letter sink of a statement writing through `main`.
pub fn sink_config(main: &SinkConfig, pipeline: &str) -> SinkConfig {
    let table = main.table.as_deref().unwrap_or("floe.unknown");
    SinkConfig {
        name: super::identity::dead_letter_sink_name(&main.name),
        table: Some(table_name(table, pipeline)),
        partition_by: vec![],
        rolling: Rolling {
            interval_seconds: main.rolling.interval_seconds,
            ..Rolling::default()
        },
        bloom_filter_columns: vec![],
        ..SinkConfig::default()
    }
}

/// One input row whose SQL failed.
#[derive(Debug, Clone)]
pub struct BadRow {
    /// Its stream offset.
    pub offset: u64,
    /// The error, as DataFusion / Arrow reported it.
    pub error: String,
    /// The row as a JSON object (the stream's columns).
    pub raw: String,
}

/// The dead-letter rows of `bad` (rows of statement `t`), failed at `now_us`.
pub fn batch(t: &Transform, bad: &[BadRow], now_us: i64) -> Result<RecordBatch> {
    let n = bad.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![t.pipeline.as_str(); n])),
        Arc::new(StringArray::from(vec![t.sink.as_str(); n])),
        Arc::new(StringArray::from(vec![t.stream.as_str(); n])),
        Arc::new(Int64Array::from_iter_values(bad.iter().map(|b| b.offset as i64))),
        Arc::new(StringArray::from_iter_values(bad.iter().map(|b| b.error.as_str()))),
        Arc::new(StringArray::from_iter_values(bad.iter().map(|b| b.raw.as_str()))),
        Arc::new(TimestampMicrosecondArray::from(vec![now_us; n]).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// Whether `e`, from running a statement's SELECT on rows, is about the rows (an execution
/// error of DataFusion or a failed Arrow cast) rather than floe's own machinery.
pub fn is_row_error(e: &Error) -> bool {
    matches!(e, Error::Sql(_) | Error::Arrow(_))
}

/// One row (`batch` has exactly one) as a JSON object.
fn row_json(batch: &RecordBatch) -> String {
    let mut w = arrow_json::ArrayWriter::new(Vec::new());
    let text = w
        .write(batch)
        .and_then(|_| w.finish())
        .map(|_| String::from_utf8_lossy(&w.into_inner()).into_owned());
    match text {
        // The writer makes a one-element array: keep the object.
        Ok(t) => t
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .map(str::to_string)
            .unwrap_or(t),
        Err(e) => format!("{{\"_unprintable\": {:?}}}", e.to_string()),
    }
}

/// What running a micro-batch with isolation gave.
pub struct Isolated {
    /// Output batches, in input order.
    pub output: Vec<RecordBatch>,
    /// Rows whose SQL failed, in offset order.
    pub bad: Vec<BadRow>,
}

/// Runs `t` on the micro-batch `input` (rows at offsets `first..`). When the whole batch fails
/// with a row error, halves are run again, down to single rows; each single failing row is a
/// [`BadRow`]. More than `max_bad` failing rows (or, with `stop_at_first`, any) end the search:
/// the error then names the first failing row's offset.
pub async fn run_isolating(
    t: &Transform,
    input: Vec<RecordBatch>,
    first: u64,
    max_bad: usize,
    stop_at_first: bool,
) -> Result<Isolated> {
    let err = match t.run(input.clone()).await {
        Ok(output) => return Ok(Isolated { output, bad: vec![] }),
        Err(e) if is_row_error(&e) => e,
        Err(e) => return Err(e),
    };
    tracing::debug!(pipeline = %t.pipeline, sink = %t.sink, error = %err, "micro-batch failed; isolating the failing rows");
    let all = arrow::compute::concat_batches(&t.input_schema(), &input)?;
    let mut output = Vec::new();
    let mut bad: Vec<BadRow> = Vec::new();
    // Depth-first, left half first, so output and bad rows stay in offset order.
    let mut todo = vec![(0usize, all.num_rows())];
    while let Some((start, len)) = todo.pop() {
        if len == 0 {
            continue;
        }
        let part = all.slice(start, len);
        match t.run(vec![part.clone()]).await {
            Ok(out) => output.extend(out),
            Err(e) if is_row_error(&e) && len == 1 => {
                let offset = first + start as u64;
                if stop_at_first {
                    return Err(Error::Internal(format!(
                        "pipeline {:?} sink {:?}: the row at offset {offset} of stream {:?} fails: {e} \
                         (on_error = \"fail\": the pipeline stops here; fix the SQL or set on_error = \"dead_letter\")",
                        t.pipeline, t.sink, t.stream
                    )));
                }
                bad.push(BadRow {
                    offset,
                    error: e.to_string(),
                    raw: row_json(&part),
                });
                if bad.len() > max_bad {
                    return Err(Error::Internal(format!(
                        "pipeline {:?} sink {:?}: more than {max_bad} rows of one micro-batch of stream {:?} fail \
                         (limit pipelines.max_bad_rows_per_batch); the first at offset {}: {}",
                        t.pipeline, t.sink, t.stream, bad[0].offset, bad[0].error
                    )));
                }
            }
            Err(e) if is_row_error(&e) => {
                let half = len / 2;
                todo.push((start + half, len - half));
                todo.push((start, half));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Isolated { output, bad })
}
