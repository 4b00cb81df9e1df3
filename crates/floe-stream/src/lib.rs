//! Durable, ordered, append-only log of Arrow record batches, one [`StreamLog`] per stream.
//!
//! Ingest appends batches; the pipeline reads them back by row offset. Every row gets a
//! 64-bit offset, assigned contiguously from 0 in append order; a record (one appended batch)
//! covers the offsets `offset..offset + rows`.
//!
//! # On-disk format
//!
//! A log is a directory of segment files named by the offset of their first row, written with
//! [`SEGMENT_NAME_DIGITS`] zero-padded digits so that name order is offset order, plus a `LOCK`
//! file ([`LOCK_FILE_NAME`]) on which the opening process holds an exclusive `flock`, and the
//! log's random identity ([`LOG_ID_FILE_NAME`], see [`StreamLog::log_id`]):
//!
//! ```text
//! stream-dir/
//!   LOCK
//!   00000000000000000000.log   rows      0..41_230   sealed
//!   00000000000000041230.log   rows 41_230..80_002   sealed
//!   00000000000000080002.log   rows 80_002..         active (the only file written to)
//!
//! segment file:
//! +--------------------------- segment header, 24 bytes -----------------------------+
//! | magic "FLOESEG\0" (8) | version u32 (=1) | base offset u64 | crc32c u32 of bytes 0..20 |
//! +-----------------------------------------------------------------------------------+
//! | record | record | record | ...                                                   |
//! +-----------------------------------------------------------------------------------+
//!
//! record (all integers little endian):
//! +---------+-----------+------------+----------+---------------------+----------------+
//! | len u32 | crc32c u32| offset u64 | rows u32 | appended_at_ms i64  | payload        |
//! +---------+-----------+------------+----------+---------------------+----------------+
//!   0         4           8            16         20                    28 .. 28+len
//!             '--- crc32c covers bytes 8 .. 28+len (everything after the crc field) ---'
//! ```
//!
//! * `len` is the payload length; the 28-byte header is [`RECORD_HEADER_LEN`].
//! * `offset` is the offset of the record's first row and `rows` its row count (at least 1).
//! * `appended_at_ms` is the wall-clock time (ms since the Unix epoch) of the commit.
//! * The payload is the batch in the Arrow IPC *stream* format (schema message, dictionary
//!   batches if any, the record batch, end-of-stream marker), so every record is
//!   self-describing and schemas may change from one record to the next.
//!
//! # Invariants
//!
//! * Offsets are contiguous: the first record of a segment has the segment's base offset,
//!   each record starts where the previous one ends, and each segment's base offset is the
//!   previous segment's end. Recovery checks all three.
//! * Only the last segment is ever written; the others are sealed and immutable until
//!   [`StreamLog::truncate_before`] deletes whole segments, oldest first (never the last one).
//! * Only durable data is visible: [`StreamLog::end_offset`], [`StreamLog::subscribe`] and
//!   [`StreamLog::read`] move forward only after the fsync that made the records durable, and
//!   an acknowledged record is never lost or changed afterwards.
//! * In memory, each segment keeps an index of `(offset, file position, length, rows)` per
//!   record (no per-row state), built by recovery and extended by each commit, so a read finds
//!   its records by binary search and reads them with `pread`, verifying each checksum again.
//!
//! # Group commit
//!
//! [`StreamLog::append`] encodes the batch to Arrow IPC in the calling task (so encoding runs in
//! parallel on all cores), then hands the bytes to the log's single writer thread over a channel
//! and waits for its answer. The writer takes the first record, drains everything else already
//! queued (up to [`MAX_GROUP_BYTES`]), assigns offsets, checksums each record in one pass over
//! header and payload (one hardware crc32c pass is cheaper than combining a payload checksum
//! computed elsewhere with `crc32c_combine`: ~3% of the CPU in the profile), writes all the
//! records, issues **one** `fdatasync`, publishes the new end offset and only then answers every
//! waiter. Under concurrent load many appends share each fsync ([`StreamLog::fsync_count`]).
//! The segment is rolled between groups once it holds at least
//! [`LogOptions::segment_bytes`]: the new file is created with its header, fsynced, and the
//! directory is fsynced, before any record goes into it.
//!
//! If a write or fsync fails, every waiter of the group gets an error and nothing of the group
//! is acknowledged or published; the file is cut back to its last durable length (and synced)
//! so the bytes cannot resurface after a crash either. If that rollback fails too, the log is
//! marked failed and refuses further appends ([`Error::Failed`]) until it is reopened.
//!
//! # Recovery
//!
//! [`StreamLog::open`] scans every segment and verifies every checksum:
//!
//! * In the **last** segment, a torn tail (the file ends inside a record, or a record fails its
//!   checksum, as an interrupted write leaves it) is cut: the file is truncated to the end of the
//!   last good record and a warning is logged. Those records were never acknowledged, since the
//!   acknowledgement waits for the fsync. An empty last segment whose header is incomplete (a
//!   crash while rolling) gets its header rewritten.
//! * In a **sealed** segment any such failure is [`Error::Corrupt`]: its records were
//!   acknowledged, so silently dropping them would lose data.
//! * A checksum-valid record with the wrong offset or zero rows, or a segment that does not
//!   start where the previous one ends, is [`Error::Corrupt`] wherever it is.
//!
//! # Example
//!
//! ```
//! # use std::sync::Arc;
//! # use arrow::array::{ArrayRef, Int64Array};
//! # use arrow::record_batch::RecordBatch;
//! # use floe_stream::{LogOptions, StreamLog};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> floe_stream::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let log = StreamLog::open(dir.path(), LogOptions::default())?;
//! let col: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
//! let batch = RecordBatch::try_from_iter([("v", col)])?;
//! let ack = log.append(batch).await?;
//! assert_eq!((ack.first_offset, ack.next_offset), (0, 3));
//! let records = log.read(1, 1 << 20)?;
//! assert_eq!(records[0].offset, 1);
//! assert_eq!(records[0].batch.num_rows(), 2);
//! # Ok(())
//! # }
//! ```

mod codec;
mod error;
mod format;
mod log;

pub use error::{Error, Result};
pub use format::{
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_BYTES, LOCK_FILE_NAME, LOG_ID_FILE_NAME, MAX_GROUP_BYTES,
    MAX_INFLIGHT_BYTES, MAX_PAYLOAD_BYTES, RECORD_HEADER_LEN, SEGMENT_FILE_EXTENSION, SEGMENT_FORMAT_VERSION,
    SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SEGMENT_NAME_DIGITS,
};
pub use log::{AppendAck, LogOptions, LogRecord, StreamLog};
