//! Sinks: where pipeline output lands. [`iceberg`] commits Parquet files as Iceberg snapshots;
//! [`partition`] turns `partition_by` expressions into Iceberg partition specs.

pub mod iceberg;
pub mod partition;
