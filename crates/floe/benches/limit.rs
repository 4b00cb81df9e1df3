//! The in-process limit of the ingest path on one core: floe's own JSON → Arrow decoder plus a
//! Parquet (zstd) encode with the sink's writer settings, over the same events `floe-load`
//! sends. Everything floe does beyond this (HTTP, fsync, the log, the pipeline, commits) is
//! overhead measured against it.
//!
//! Then the decoders side by side on the same events, each for the same time: floe's on the
//! JSON arrays `floe-load` sends and on the same events as NDJSON, and arrow-json's on the
//! NDJSON (arrow-json reads no JSON array, and keeps no JSON text: `data` is a struct for it,
//! where floe stores the object's text). floe's path is the valid batch with every per-row
//! check on; the figures are MB of input per second on one core.
//!
//! `cargo bench -p floe --bench limit -- [seconds]` prints `BENCH limit_…` and `BENCH decode_…`
//! lines.

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
    decoders(&bodies, &decoder, seconds);
}

/// MB per second of `decode` over `inputs` (cycled) for `seconds`, and the rows it made.
fn rate(inputs: &[String], seconds: f64, mut decode: impl FnMut(&str) -> usize) -> (f64, usize) {
    let started = Instant::now();
    let (mut bytes, mut rows, mut i) = (0usize, 0usize, 0usize);
    while started.elapsed().as_secs_f64() < seconds {
        let input = &inputs[i % inputs.len()];
        i += 1;
        rows += decode(input);
        bytes += input.len();
    }
    (bytes as f64 / 1e6 / started.elapsed().as_secs_f64(), rows)
}

fn decoders(bodies: &[String], decoder: &RowDecoder, seconds: f64) {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};

    let ndjson: Vec<String> = bodies
        .iter()
        .map(|b| {
            let rows: Vec<&serde_json::value::RawValue> = serde_json::from_str(b).expect("an array");
            rows.iter().map(|r| format!("{}\n", r.get())).collect()
        })
        .collect();
    let each = (seconds / 3.0).max(1.0);
    let (floe_array, n1) = rate(bodies, each, |b| {
        decoder.decode(b.as_bytes(), Framing::Auto).expect("valid").num_rows()
    });
    let (floe_ndjson, n2) = rate(&ndjson, each, |b| {
        decoder.decode(b.as_bytes(), Framing::Ndjson).expect("valid").num_rows()
    });
    let string = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let schema = Arc::new(Schema::new(vec![
        string("ns", false),
        string("type", false),
        string("id", false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "data",
            DataType::Struct(Fields::from(vec![
                Field::new("size", DataType::Int64, true),
                string("region", true),
            ])),
            true,
        ),
        string("visibility", true),
    ]));
    let (arrow_json, n3) = rate(&ndjson, each, |b| {
        let mut d = arrow_json::ReaderBuilder::new(schema.clone())
            .with_batch_size(1 << 16)
            .build_decoder()
            .expect("decoder");
        let used = d.decode(b.as_bytes()).expect("valid");
        assert_eq!(used, b.len());
        d.flush().expect("valid").map_or(0, |batch| batch.num_rows())
    });
    println!("decoders: {n1} + {n2} + {n3} events, {each:.1} s each, one core");
    println!("BENCH decode_floe_array_mb_per_s={floe_array:.2} unit=MB/s");
    println!("BENCH decode_floe_ndjson_mb_per_s={floe_ndjson:.2} unit=MB/s");
    println!("BENCH decode_arrow_json_ndjson_mb_per_s={arrow_json:.2} unit=MB/s");
    println!(
        "BENCH decode_floe_array_vs_arrow_json={:.2} unit=x",
        floe_array / arrow_json
    );
}
