//! Shared helpers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use floe_stream::{LogOptions, LogRecord, SEGMENT_FILE_EXTENSION};

/// A batch with an Int64 column `v` holding `values` and a string column derived from it.
pub fn batch(values: impl IntoIterator<Item = i64>) -> RecordBatch {
    let v: Vec<i64> = values.into_iter().collect();
    let s: ArrayRef = Arc::new(StringArray::from_iter_values(v.iter().map(|i| format!("row-{i}"))));
    let v: ArrayRef = Arc::new(Int64Array::from(v));
    RecordBatch::try_from_iter([("v", v), ("s", s)]).unwrap()
}

/// The `v` values of the records, in order, checking the string column along the way.
pub fn values(records: &[LogRecord]) -> Vec<i64> {
    let mut out = Vec::new();
    for r in records {
        let v = r.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let s = r.batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..v.len() {
            assert_eq!(s.value(i), format!("row-{}", v.value(i)));
            out.push(v.value(i));
        }
    }
    out
}

/// Asserts that records are contiguous from `from` and returns their values.
pub fn contiguous_values(records: &[LogRecord], from: u64) -> Vec<i64> {
    let mut next = from;
    for r in records {
        assert_eq!(r.offset, next, "records must be contiguous");
        assert!(r.batch.num_rows() > 0);
        next = r.end();
    }
    values(records)
}

/// Small segments so that a handful of records spans several files.
pub fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 2048,
        ..LogOptions::default()
    }
}

/// Segment files of the log directory, sorted by name (= by base offset).
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_FILE_EXTENSION))
        .collect();
    files.sort();
    files
}

/// A current-thread runtime for tests that drive the log from plain `#[test]` functions.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}
