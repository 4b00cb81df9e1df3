//! Integration tests of `floe::sink::iceberg::IcebergSink` under faults: storage writes and
//! deletes that fail (through a fault-injecting iceberg `Storage` given to the catalog), crashes
//! between writing and committing, and other writers of the same table. Every test ends by
//! checking that each row is in the table exactly once and that no file of a failed attempt is
//! referenced or left behind. `limits` covers the sink's configured commit retries and its
//! inactivity roll. `maintenance` covers compaction, expiry, orphan cleanup and deletes on the
//! sink's table, with and without faults. `files` covers the files sink (`FilesSink`): publishing after a crash
//! between its catalog commit and the publish, and removing staged files that never landed.

mod common;
mod faulty_storage;
mod files;
mod limits;
mod maintenance;
mod other_writers;
mod recovery;
mod storage_faults;
