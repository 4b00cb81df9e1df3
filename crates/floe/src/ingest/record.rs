//! What an ingest request leaves in a stream log besides its rows: keys in the Arrow schema
//! metadata of the record (one record per request, see `floe_stream`'s log format).
//!
//! | key                    | on                        | value                                     |
//! |------------------------|---------------------------|-------------------------------------------|
//! | `floe.idempotency_key` | a keyed request's record  | its `Idempotency-Key`                     |
//! | `floe.dead_lettered`   | a record with dead letters| how many rows of the request went there   |
//! | `floe.stream_offset`   | a keyed dead-letter record| the stream's end offset when it was written |
//!
//! The idempotency store is rebuilt from these at start (a stream's log and its dead-letter
//! log); pipelines drop the metadata and keep only the columns.

/// Schema-metadata key under which a record carries its request's idempotency key.
pub const KEY_METADATA: &str = "floe.idempotency_key";

/// Schema-metadata key of a record: how many rows of its request were dead-lettered.
pub const DEAD_LETTERED_METADATA: &str = "floe.dead_lettered";

/// Schema-metadata key of a keyed dead-letter record: the stream's end offset when it was written
/// (the `first_offset`/`next_offset` of a replayed answer).
pub const STREAM_OFFSET_METADATA: &str = "floe.stream_offset";
