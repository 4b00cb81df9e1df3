//! A commit whose **outcome is unknown**: the database `COMMIT` of the pointer swap itself failed
//! (an I/O error, a full disk, a constraint checked at commit time…). Unlike a lost
//! compare-and-swap, which is detected *before* `COMMIT` and rolled back, this failure leaves no
//! way to tell from the error whether the new pointer is durable. So the catalog keeps the
//! metadata files it wrote (deleting them could corrupt a table whose commit did land) and
//! returns an error that [`commit_state_unknown`] recognises; only a re-read of the catalog
//! (`current_metadata_location`, `sink_position`) says which way it went.
//!
//! The REST API answers it as `500 CommitStateUnknownException` (the spec's answer for this
//! case); floe's sinks keep their data files until they have re-read the catalog. The error is
//! not retryable: re-applying the same change on top of a commit that did land would apply it
//! twice.

use iceberg::{Error, ErrorKind};

/// The marker source of an unknown-outcome error; [`commit_state_unknown`] looks for it in the
/// source chain, so a caller never matches on message text.
#[derive(Debug)]
pub struct CommitStateUnknown {
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl std::fmt::Display for CommitStateUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "commit state unknown: {}", self.source)
    }
}

impl std::error::Error for CommitStateUnknown {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The error of a commit whose outcome is unknown (see the module docs).
pub(crate) fn unknown_outcome(what: &str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!(
            "{what}: the catalog database failed while committing, so the commit may or may not have landed; \
             its metadata files are kept, reload the table to see which"
        ),
    )
    .with_retryable(false)
    .with_source(CommitStateUnknown {
        source: Box::new(source),
    })
}

/// Whether `error` says a commit's outcome is unknown: the new metadata pointer (and any sink
/// position moved with it) may or may not be committed. A caller must not delete the files the
/// commit referenced until a re-read of the catalog shows the commit did not land.
pub fn commit_state_unknown(error: &iceberg::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        if s.downcast_ref::<CommitStateUnknown>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognised_by_its_marker_not_its_text() {
        let io = std::io::Error::other("disk I/O error");
        let e = unknown_outcome("commit", io);
        assert!(commit_state_unknown(&e));
        assert!(!e.retryable());
        let lookalike = Error::new(ErrorKind::Unexpected, e.message().to_string());
        assert!(!commit_state_unknown(&lookalike));
        let other = Error::new(ErrorKind::Unexpected, "x").with_source(std::io::Error::other("y"));
        assert!(!commit_state_unknown(&other));
    }
}
