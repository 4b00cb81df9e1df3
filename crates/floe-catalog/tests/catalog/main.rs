//! Integration tests of `floe_catalog::FloeCatalog` through the `iceberg::Catalog` trait:
//! namespaces, tables (checked against the SQLite rows of the JDBC layout), commits that move
//! sink positions, commit attempts, files-sink commits, compare-and-swap against other writers, the rewrite commit (replace snapshots and their
//! conflict rule), the control plane's stored objects and pipeline versions, and reading committed rows back; and the hardening against hostile or careless clients.

mod attempts;
mod commits;
mod common;
mod concurrency;
mod file_commits;
mod hardening;
mod namespaces;
mod objects;
mod rewrite;
mod s3;
mod scan;
mod tables;
mod transactions;
