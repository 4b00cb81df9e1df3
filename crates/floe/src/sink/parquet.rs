//! Parquet writer settings shared by every sink that writes Parquet: the sink's codec and level,
//! where row groups and files end (`row_group_size`, `target_file_size_mb`), page-level statistics (so the column and offset indexes are written: lookups prune pages
//! with them), small data pages, and bloom filters on the configured `bloom_filter_columns`; and
//! what an open writer costs in memory, for the sink's memory budget.

use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Compression as PqCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::config::{Compression, RowGroupSize, SinkConfig};
use crate::error::{Error, Result};

/// Rows per Parquet data page at most: small pages let lookups read little of a column chunk.
pub const DATA_PAGE_ROW_LIMIT: usize = 8 * 1024;
/// False-positive rate of the bloom filters of `bloom_filter_columns`.
pub const BLOOM_FILTER_FPP: f64 = 0.01;
/// The Parquet codec of `compression` (levels were range-checked with the config).
pub fn codec(compression: Compression) -> Result<PqCompression> {
    let level = |e: parquet::errors::ParquetError| Error::Config(format!("compression {compression}: {e}"));
    Ok(match compression {
        Compression::Zstd(l) => PqCompression::ZSTD(ZstdLevel::try_new(l).map_err(level)?),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Gzip(l) => PqCompression::GZIP(GzipLevel::try_new(l).map_err(level)?),
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::Uncompressed => PqCompression::UNCOMPRESSED,
    })
}

/// What an open Parquet data file writer holds in memory besides its rows, per leaf column: its
/// column writer with encoders, statistics, and page and level buffers. Measured with floe's
/// writer settings (10,000 open one-row writers, debug build): about 19 KiB per column plus
/// 24 KiB per file (81 KiB for 3 columns, 176 KiB for 8); 32 KiB per column plus
/// [`OPEN_WRITER_BYTES`] is above that for any number of columns.
pub const OPEN_WRITER_BYTES_PER_COLUMN: usize = 32 * 1024;
/// What an open data file writer holds besides its columns (the file, the Parquet and Iceberg
/// writer state).
pub const OPEN_WRITER_BYTES: usize = 16 * 1024;

/// The memory an open data file writer of `schema` with `props` holds besides its rows, for the
/// sink's memory budget (`rolling.memory_mb`): a fixed part per file and per leaf column, and the
/// bloom filters (allocated in full when the file opens, kept until it closes).
pub fn open_writer_cost(props: &WriterProperties, schema: &SchemaRef) -> Result<usize> {
    let descr = ArrowSchemaConverter::new()
        .convert(schema)
        .map_err(|e| Error::Internal(format!("the table's schema as Parquet: {e}")))?;
    let mut cost = OPEN_WRITER_BYTES + descr.num_columns() * OPEN_WRITER_BYTES_PER_COLUMN;
    for column in descr.columns() {
        if let Some(bloom) = props.bloom_filter_properties(column.path()) {
            cost += bloom_filter_bytes(bloom.ndv, bloom.fpp);
        }
    }
    Ok(cost)
}

/// The size of a split-block bloom filter for `ndv` distinct values at false-positive rate `fpp`,
/// as the Parquet writer sizes it: 8 hash bits per block, a power of two from 32 B to 128 MiB.
fn bloom_filter_bytes(ndv: u64, fpp: f64) -> usize {
    let bits = -8.0 * ndv as f64 / (1.0 - fpp.powf(1.0 / 8.0)).ln();
    ((bits / 8.0) as usize).clamp(32, 128 * 1024 * 1024).next_power_of_two()
}

/// The size at which a data file is closed and the next started (`target_file_size_mb`).
pub fn target_file_size(cfg: &SinkConfig) -> usize {
    (cfg.target_file_size_mb as usize).saturating_mul(1024 * 1024)
}

/// Iceberg's table property that turns on the Parquet bloom filter of the column named after it
/// (`write.parquet.bloom-filter-enabled.column.id = true`): how the sink's
/// `bloom_filter_columns` reach the other writers of its table, floe's maintenance among them.
pub const BLOOM_ENABLED_PROPERTY: &str = "write.parquet.bloom-filter-enabled.column.";
/// Iceberg's table property with the false-positive probability of a column's bloom filter.
pub const BLOOM_FPP_PROPERTY: &str = "write.parquet.bloom-filter-fpp.column.";

/// The table properties of the sink's `bloom_filter_columns`.
pub fn bloom_properties(cfg: &SinkConfig) -> Vec<(String, String)> {
    cfg.bloom_filter_columns
        .iter()
        .flat_map(|c| {
            [
                (format!("{BLOOM_ENABLED_PROPERTY}{c}"), "true".to_string()),
                (format!("{BLOOM_FPP_PROPERTY}{c}"), BLOOM_FILTER_FPP.to_string()),
            ]
        })
        .collect()
}

/// The Iceberg table properties that record a sink's writer settings, for other writers.
pub fn table_properties(cfg: &SinkConfig) -> Vec<(String, String)> {
    let mut props = vec![
        ("write.format.default".to_string(), "parquet".to_string()),
        (
            "write.parquet.compression-codec".to_string(),
            cfg.parquet_compression().codec().to_string(),
        ),
        (
            "write.target-file-size-bytes".to_string(),
            target_file_size(cfg).to_string(),
        ),
    ];
    if let Some(level) = cfg.parquet_compression().level() {
        props.push(("write.parquet.compression-level".to_string(), level.to_string()));
    }
    // Iceberg has a property for a row group's bytes only; a row count limit stays floe's own.
    if let RowGroupSize::Bytes(b) = cfg.row_group_size {
        props.push(("write.parquet.row-group-size-bytes".to_string(), b.to_string()));
    }
    props.extend(bloom_properties(cfg));
    props
}

/// The writer settings of sink `cfg` for files of schema `schema`; a bloom filter column that
/// is not in `schema` is a configuration error naming it.
pub fn writer_properties(cfg: &SinkConfig, schema: &SchemaRef) -> Result<WriterProperties> {
    let (rows, bytes) = match cfg.row_group_size {
        RowGroupSize::Rows(r) => (Some(r as usize), None),
        RowGroupSize::Bytes(b) => (None, Some(b as usize)),
    };
    let mut props = WriterProperties::builder()
        .set_compression(codec(cfg.parquet_compression())?)
        .set_max_row_group_row_count(rows)
        .set_max_row_group_bytes(bytes)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_offset_index_disabled(false)
        .set_data_page_row_count_limit(DATA_PAGE_ROW_LIMIT);
    for column in &cfg.bloom_filter_columns {
        if schema.field_with_name(column).is_err() {
            return Err(Error::Config(format!(
                "sink {:?}: bloom_filter_columns names {column:?}, which is not a column of the table",
                cfg.name
            )));
        }
        let path = ColumnPath::from(column.as_str());
        props = props
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path, BLOOM_FILTER_FPP);
    }
    Ok(props.build())
}
