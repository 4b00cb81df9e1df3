//! floe's Iceberg catalog: a database in the Iceberg **JDBC catalog layout** — a SQLite file by
//! default, or PostgreSQL ([`store`]) — plus the one thing
//! a streaming sink needs that no stock catalog gives it — a commit that records *how far in the
//! stream* it has landed, atomically with the table's new metadata pointer.
//!
//! # Layout (shared with PyIceberg's `SqlCatalog` and Spark's `JdbcCatalog`)
//!
//! ```text
//! iceberg_tables                (catalog_name, table_namespace, table_name) -> metadata_location,
//!                                previous_metadata_location, iceberg_type
//! iceberg_namespace_properties  (catalog_name, namespace, property_key) -> property_value
//!                                every namespace has the marker property  exists = true
//! floe_sink_positions           (catalog_name, pipeline, sink) -> table, table_uuid, position,
//!                                snapshot_id, updated_at_ms            (floe's own, ignored by others)
//! floe_sink_attempts            (catalog_name, pipeline, sink, attempt) -> table_location, started_at_ms
//! floe_stream_logs              (catalog_name, stream) -> log_id, recorded_at_ms
//! floe_file_commits             (catalog_name, pipeline, sink, attempt) -> position_from,
//!                                position_to, files, committed_at_ms  (files sinks: landed, not
//!                                yet published; see file_commits)
//! floe_file_sequences           (catalog_name, target) -> next_seq  (files sinks' sequence names)
//! floe_objects                  (catalog_name, kind, name) -> body, version, created/updated  (streams,
//!                                sinks and pipelines created at run time; see objects)
//! floe_pipeline_versions        (catalog_name, pipeline, version) -> sql_text, body, started/ended,
//!                                start/end offsets
//! floe_tokens                   (catalog_name, id) -> secret_sha256, scopes, description, created,
//!                                revoked   (tokens created at run time; see tokens)
//! floe_schema_migrations        (version) -> name, applied_at_ms   (see store: versioned migrations)
//! ```
//!
//! # Layers
//!
//! ```text
//! FloeCatalog (catalog.rs)   iceberg::Catalog + the commit path: requirements, updates, location
//!     │                      rule, metadata files, position moves — pure of any SQL dialect choice
//!     ▼
//! Store (store.rs)           one pool over SQLite or PostgreSQL, schema migrations, error codes
//! Storage (storage.rs)       the warehouse's files: list, read (bounded / ranges), durable put,
//!                            sync, delete — confined to the warehouse, regular files only
//! ```
//!
//! Beside the commit path sit the maintenance primitives: [`reachable`] walks a table's metadata
//! to the set of files it references (purge, snapshot expiry and orphan cleanup all use it), and
//! [`rewrite`] commits an Iceberg `replace` snapshot — remove exactly these files, add those —
//! with its own conflict rule, since iceberg's `Transaction` can only fast-append.
//!
//! Namespaces are stored dot-joined (`a.b`), as the JDBC layout does; a `.` or `%` inside one
//! level is escaped (`new.db` is stored `new%2Edb`, see [`names::encode_namespace`]).
//!
//! # Confinement
//!
//! Names follow one rule ([`names`]); every location a client gives, every metadata file read
//! and every file a purge deletes lies inside the warehouse ([`location`], [`purge`]); conflict
//! messages use the Java reference's wording ([`requirements`]); a commit whose `COMMIT` failed
//! is reported as of unknown outcome ([`commit_state_unknown`]).
//!
//! # Commit protocol
//!
//! ```text
//!  sink                               FloeCatalog::update_table              database
//!   │ fast-append(files, summary{floe.pipeline, floe.sink,                       │
//!   │             floe.position.from = F, floe.position.to = T})                 │
//!   ├──────────────► load current row, check requirements, apply updates         │
//!   │                write  <table>/metadata/NNNNN-<uuid>.metadata.json           │
//!   │                BEGIN                                                        │
//!   │                UPDATE iceberg_tables SET metadata_location = new            │
//!   │                  WHERE metadata_location = base          ── 0 rows: conflict (retryable)
//!   │                UPDATE floe_sink_positions SET position = T                  │
//!   │                  WHERE position = F          (or INSERT the first one)      │
//!   │                                              ── 0 rows: fenced (not retryable)
//!   │                COMMIT  ◄── the single atomic point: pointer + position      │
//! ```
//!
//! A commit that loses the compare-and-swap is retried by iceberg's `Transaction` on the fresh
//! metadata (an outside writer — PyIceberg, compaction — may have committed in between). A commit
//! whose recorded position no longer equals `from` means another instance already committed that
//! range: it is refused, so a range of the stream can land at most once. The position also stays
//! in the snapshot summary, so outside readers can see it; the row in `floe_sink_positions` is the
//! one recovery trusts, because snapshot expiry or another writer's commit cannot remove it.

mod catalog;
mod file_commits;
pub mod location;
pub mod names;
pub mod objects;
mod outcome;
mod pipeline_positions;
mod positions;
mod preview;
pub mod purge;
pub mod reachable;
pub mod requirements;
pub mod rewrite;
pub mod s3;
pub mod storage;
pub mod store;
pub mod tokens;

pub use catalog::{CommittedTable, FloeCatalog, TableChange, file_io_for, storage_for};
pub use file_commits::{CommittedFile, FileCommit, FilesCommit};
pub use location::{MAX_METADATA_BYTES, Warehouse};
pub use objects::{ObjectKind, ObjectRefused, PipelineVersion, StoredObject, VersionBody};
pub use outcome::{CommitStateUnknown, commit_state_unknown};
pub use positions::{
    PROP_ATTEMPT, PROP_PIPELINE, PROP_POSITION_FROM, PROP_POSITION_TO, PROP_SINK, SinkPosition, carries_sink_keys,
    position_summary,
};
pub use preview::Preview;
pub use purge::PurgeReport;
pub use s3::{S3Options, S3Storage};
pub use storage::{Deleted, FileEntry, LocalStorage, Storage};
pub use store::{Backend, Store};
pub use tokens::StoredToken;
