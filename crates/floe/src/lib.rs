//! floe: JSON events over HTTP → a durable stream → SQL pipelines → exactly-once Iceberg tables,
//! in one binary.
//!
//! The modules follow the data path:
//!
//! ```text
//!  ingest (HTTP, JSON → Arrow) ─► floe_stream (durable log) ─► pipeline (DataFusion SQL)
//!        ─► sink (Parquet + Iceberg commit) ─► floe_catalog (SQLite or PostgreSQL, JDBC layout)
//!        ─► query, lookup
//! ```
//!
//! Dependencies point one way (docs/design.md, "Dependency direction"):
//!
//! ```text
//!  config, layout, error, metrics, auth              the model: what is declared, how it fails
//!    ◄── ingest, stream, pipeline, sink, query,      the stages: each names what it needs of the
//!        lookup, rest                                 node in a trait or a FromRef state
//!    ◄── objects                                     stored objects: API bodies, merge at start
//!    ◄── topology                                    resolves config into what runs (plans SQL)
//!    ◄── node                                        one process's state; implements the traits
//!    ◄── supervisor                                  runners per statement; runtime changes
//!    ◄── control                                     the control plane's routes (docs/control-plane.md)
//!    ◄── server                                      HTTP routes and `floe serve`
//!    ◄── main (the CLI)
//! ```
//!
//! [`config`] is the `floe.toml` contract; [`rest`] serves the catalog over the Iceberg REST API
//! under `/iceberg`.

pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod error;
pub mod ingest;
pub mod layout;
pub mod loadgen;
pub mod lookup;
pub mod maintenance;
pub mod metrics;
pub mod node;
pub mod objects;
pub mod pipeline;
pub mod query;
pub mod rest;
pub mod server;
pub mod sink;
pub mod stream;
pub mod supervisor;
pub mod topology;
