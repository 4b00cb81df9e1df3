//! Sinks: where pipeline output lands. [`iceberg`] commits Parquet files as Iceberg snapshots;
//! [`partition`] turns `partition_by` expressions into Iceberg partition specs; [`split`] groups
//! a batch's rows by partition.

pub mod iceberg;
pub mod partition;
pub mod split;
