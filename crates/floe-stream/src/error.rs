//! Error type of the stream log.

use std::path::PathBuf;

/// Result type used throughout `floe-stream`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while opening, writing or reading a [`StreamLog`](crate::StreamLog).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O call failed on `path` (a segment file or the log directory).
    ///
    /// For an append this means the whole commit group was rolled back: none of its records was
    /// acknowledged and none will ever be visible, so the append may be retried.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File or directory the failing call operated on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A record or segment header failed its checksum or framing checks where that cannot be
    /// explained by an interrupted write: in a sealed (non-last) segment, in a record that was
    /// already acknowledged, or in a checksum-valid record that breaks the log's invariants.
    #[error("corrupt stream log segment {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position in the file of the offending header or record.
        position: u64,
        /// What check failed.
        reason: String,
    },

    /// The encoded batch is bigger than [`LogOptions::max_record_bytes`](crate::LogOptions).
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// Encoded size of the batch (Arrow IPC bytes).
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// The log was closed (explicitly or by drop); the operation was not performed.
    #[error("stream log is closed")]
    Closed,

    /// A read asked for an offset outside `start_offset..=end_offset`.
    ///
    /// This variant is an addition to the original API sketch: `read` must fail for such offsets
    /// and none of the other variants describes it.
    #[error("offset {offset} is outside the stored range {start}..={end}")]
    OffsetOutOfRange {
        /// Requested offset.
        offset: u64,
        /// First offset still stored.
        start: u64,
        /// Durable end offset (next offset to be assigned).
        end: u64,
    },

    /// An earlier write error could not be rolled back, so the on-disk state of the active
    /// segment is unknown; the log refuses all further appends until it is reopened (recovery
    /// then cuts whatever was not acknowledged).
    ///
    /// This variant is an addition to the original API sketch.
    #[error("stream log failed and refuses appends until reopened: {reason}")]
    Failed {
        /// Description of the unrecoverable error.
        reason: String,
    },

    /// Encoding or decoding Arrow IPC failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    ///
    /// True for transient conditions: I/O errors (e.g. a full disk; a failed append left no trace)
    /// and [`Error::Closed`] (the log is shutting down; the append was not taken, so retrying it
    /// against the reopened log cannot duplicate data). False when the request itself is invalid
    /// (too large, out of range, un-encodable) or the log needs an operator (corrupt, failed).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Closed)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_message_names_the_path() {
        let e = Error::io("/data/s/00000000000000000000.log", std::io::Error::other("boom"));
        let msg = e.to_string();
        assert!(msg.contains("/data/s/00000000000000000000.log"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
        assert!(e.is_retryable());
    }

    #[test]
    fn retryability() {
        assert!(Error::Closed.is_retryable());
        assert!(!Error::RecordTooLarge { size: 2, limit: 1 }.is_retryable());
        assert!(
            !Error::Corrupt {
                path: "x".into(),
                position: 0,
                reason: "r".into()
            }
            .is_retryable()
        );
        assert!(!Error::Failed { reason: "r".into() }.is_retryable());
        assert!(
            !Error::OffsetOutOfRange {
                offset: 9,
                start: 0,
                end: 1
            }
            .is_retryable()
        );
    }
}
