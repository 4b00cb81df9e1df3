//! floe: JSON events over HTTP → a durable stream → SQL pipelines → exactly-once Iceberg tables,
//! in one binary.
//!
//! The modules follow the data path:
//!
//! ```text
//!  ingest (HTTP, JSON → Arrow) ─► floe_stream (durable log) ─► pipeline (DataFusion SQL)
//!        ─► sink (Parquet + Iceberg commit) ─► floe_catalog (SQLite, JDBC layout) ─► query, lookup
//! ```
//!
//! [`topology`] resolves the config into what runs (streams, sinks, pipeline statements, dead
//! letters); [`stream`] is the registry of open streams; [`supervisor`] runs a runner per
//! statement and changes the topology at run time; [`server`] wires them together for
//! `floe serve`; [`config`] is the `floe.toml` contract; [`rest`] serves the catalog over the
//! Iceberg REST API under `/iceberg`.

pub mod auth;
pub mod config;
pub mod error;
pub mod ingest;
pub mod loadgen;
pub mod lookup;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod rest;
pub mod server;
pub mod sink;
pub mod stream;
pub mod supervisor;
pub mod topology;
