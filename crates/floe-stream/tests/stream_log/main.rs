//! Integration tests of `floe-stream` through its public API only.

mod common;
mod concurrency;
mod model;
mod recovery;
mod roundtrip;
