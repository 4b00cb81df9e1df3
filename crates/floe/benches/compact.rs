//! Compaction throughput, and what it buys readers: a table written by floe's sink in many
//! small commits (`commits` × 50 tenant partitions, the file pile a day of 10 s commits
//! leaves), then `floe::maintenance::compact::compact` on it.
//!
//! Prints `BENCH compact_mb_per_s` (Parquet bytes rewritten per wall-clock second),
//! `BENCH compact_mb_per_cpu_s` (per second of CPU time this process spent compacting: the
//! per-core figure), and point-lookup p50 and a full aggregate before and after, with their
//! speedups. `cargo bench -p floe --bench compact -- [rows] [commits]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use floe::config::Config;
use floe::loadgen::{TENANTS, TYPES};
use floe::maintenance::Quiet;
use floe::maintenance::compact::{CompactOptions, compact};
use floe::sink::Sink;
use floe::sink::iceberg::IcebergSink;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("ns", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        ),
        Field::new("data", DataType::Utf8, true),
    ]))
}

fn ns(n: usize) -> String {
    format!("tenant-{:02}.example.com", n % TENANTS)
}

fn chunk(from: usize, to: usize) -> RecordBatch {
    let r = from..to;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(r.clone().map(ns))),
            Arc::new(StringArray::from_iter_values(r.clone().map(|n| TYPES[n % TYPES.len()]))),
            Arc::new(StringArray::from_iter_values(r.clone().map(|n| format!("evt-{n:09}")))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(r.clone().map(|n| 1_795_000_000_000_000 + n as i64 * 1000))
                    .with_timezone("+00:00"),
            ),
            Arc::new(StringArray::from_iter_values(r.map(|n| {
                format!(r#"{{"bytes":{},"region":"r{}","ok":true}}"#, n % 9973, n % 7)
            }))),
        ],
    )
    .expect("batch")
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// Lookup p50 (ms, in process) and the aggregate's median time (ms).
async fn reads(app: &floe::node::App, config: &Config, rows: usize) -> anyhow::Result<(f64, f64)> {
    let ident = floe::lookup::parse_table_ident("analytics.events")?;
    let mut lat = Vec::new();
    for k in 0..200usize {
        let n = (k * 7919) % rows;
        let params = vec![("ns".to_string(), ns(n)), ("id".to_string(), format!("evt-{n:09}"))];
        let t = Instant::now();
        let found = app.lookup.lookup_params(&ident, &params, 100).await?;
        lat.push(t.elapsed());
        anyhow::ensure!(found.num_rows() == 1, "lookup of row {n} found {}", found.num_rows());
    }
    let sql = "SELECT type, count(*) AS n, count(DISTINCT ns) AS tenants, max(ts) AS last FROM analytics.events GROUP BY type";
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        floe::query::run_sql(&app.catalog, sql, &config.limits).await?;
        times.push(t.elapsed());
    }
    Ok((median(lat), median(times)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse::<usize>().ok());
    let rows = args.next().unwrap_or(2_000_000);
    let commits = args.next().unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("floe.toml");
    std::fs::write(
        &config_path,
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data"
[[sinks]]
name = "events_table"
type = "iceberg"
table = "analytics.events"
partition_by = ["ns"]
maintenance = { enabled = false }
"#,
    )?;
    let config = Config::load(Some(&config_path))?;
    let app = floe::node::App::open(config.clone()).await?;
    let t = Instant::now();
    let mut sink = IcebergSink::open(app.catalog.clone(), &config.sinks[0], "bench", &schema()).await?;
    let per_commit = rows.div_ceil(commits);
    let mut n = 0;
    while n < rows {
        let end = (n + per_commit).min(rows);
        sink.write(&chunk(n, end), end as u64).await?;
        n = end;
        sink.commit().await?;
    }
    println!(
        "table: {rows} rows in {commits} commits × {TENANTS} partitions, written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (lookup_before, aggregate_before) = reads(&app, &config, rows).await?;

    let ident = floe::lookup::parse_table_ident("analytics.events")?;
    let options = CompactOptions::with_target(128 * 1024 * 1024);
    let cpu = cpu_seconds();
    let report = compact(&app.catalog, &ident, &options, &Quiet).await?;
    let cpu = cpu_seconds() - cpu;
    anyhow::ensure!(report.commits >= 1, "nothing compacted: {report:?}");
    let mb = report.bytes_rewritten as f64 / (1024.0 * 1024.0);
    println!(
        "compaction: {} files ({mb:.1} MiB) → {} files in {:.2} s wall, {cpu:.2} s CPU",
        report.files_rewritten, report.files_written, report.seconds
    );
    let (lookup_after, aggregate_after) = reads(&app, &config, rows).await?;
    println!("BENCH compact_files_before={} unit=files", report.files_before);
    println!("BENCH compact_files_after={} unit=files", report.files_after);
    println!("BENCH compact_mb_per_s={:.1} unit=MB/s", mb / report.seconds);
    println!("BENCH compact_mb_per_cpu_s={:.1} unit=MB/s", mb / cpu.max(1e-3));
    println!("BENCH lookup_before_compact_p50_ms={lookup_before:.3} unit=ms");
    println!("BENCH lookup_after_compact_p50_ms={lookup_after:.3} unit=ms");
    println!(
        "BENCH lookup_compact_speedup={:.2} unit=x",
        lookup_before / lookup_after
    );
    println!("BENCH aggregate_before_compact_ms={aggregate_before:.1} unit=ms");
    println!("BENCH aggregate_after_compact_ms={aggregate_after:.1} unit=ms");
    println!(
        "BENCH aggregate_compact_speedup={:.2} unit=x",
        aggregate_before / aggregate_after
    );
    Ok(())
}
