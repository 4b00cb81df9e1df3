//! The in-process limit of the ingest path on one core: floe's own JSON → Arrow decoder plus a
//! Parquet (zstd) encode with the sink's writer settings, over the same events `floe-load`
//! sends. Everything floe does beyond this (HTTP, fsync, the log, the pipeline, commits) is
//! overhead measured against it.
//!
//! `cargo bench -p floe --bench limit -- [seconds]` prints `BENCH limit_…` lines.

use std::time::{Duration, Instant};

use floe::config::UnknownFields;
use floe::ingest::decode::{Framing, RowDecoder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

/// Rows per Parquet file written (then a new one starts), like a sink commit's file.
const FILE_ROWS: usize = 1_000_000;

fn main() {
    let seconds: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5.0);
    let bodies: Vec<String> = (0..64).map(|i| floe::loadgen::request_body(1000, i)).collect();
    let decoder = RowDecoder::new(&floe::loadgen::fields(), UnknownFields::Reject, 1 << 20, 100, false);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(floe::sink::parquet::DATA_PAGE_ROW_LIMIT)
        .build();
    let (mut decode_t, mut encode_t) = (Duration::ZERO, Duration::ZERO);
    let (mut bytes, mut rows, mut out_bytes) = (0usize, 0usize, 0usize);
    let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
    let mut in_file = 0usize;
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed().as_secs_f64() < seconds {
        let body = &bodies[i % bodies.len()];
        i += 1;
        let t = Instant::now();
        let batch = decoder.decode(body.as_bytes(), Framing::Auto).expect("valid events");
        decode_t += t.elapsed();
        let t = Instant::now();
        let w = writer.get_or_insert_with(|| {
            ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props.clone())).expect("writer")
        });
        w.write(&batch).expect("write");
        in_file += batch.num_rows();
        if in_file >= FILE_ROWS {
            out_bytes += writer.take().expect("open").into_inner().expect("close").len();
            in_file = 0;
        }
        encode_t += t.elapsed();
        bytes += body.len();
        rows += batch.num_rows();
    }
    if let Some(w) = writer.take() {
        let t = Instant::now();
        out_bytes += w.into_inner().expect("close").len();
        encode_t += t.elapsed();
    }
    let mb = bytes as f64 / 1e6;
    let total = (decode_t + encode_t).as_secs_f64();
    println!(
        "limit: {rows} events, {mb:.0} MB of JSON → {:.1} MB of Parquet (zstd) on one core",
        out_bytes as f64 / 1e6
    );
    println!(
        "BENCH limit_decode_mb_per_s={:.2} unit=MB/s",
        mb / decode_t.as_secs_f64()
    );
    println!(
        "BENCH limit_encode_mb_per_s={:.2} unit=MB/s",
        mb / encode_t.as_secs_f64()
    );
    println!("BENCH limit_mb_per_s={:.2} unit=MB/s", mb / total);
    println!("BENCH limit_rows_per_s={:.2} unit=rows/s", rows as f64 / total);
}
