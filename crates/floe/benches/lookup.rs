//! Point-lookup latency and a SQL aggregate on a 10 M-row table of ≥ 100 files partitioned by
//! `ns, type` (bloom filters on `id`), read through a real HTTP server in this process.
//!
//! The table is written with floe's own sink (10 commits × 50 partitions = 500 files). Ids are
//! scattered (`res-` + a permutation of the row number), so every file's id bounds span nearly
//! the whole range: the manifests cannot find the file, partition values and bloom filters must.
//!
//! `cargo bench -p floe --bench lookup -- [rows] [lookups]` prints `BENCH lookup_…` and
//! `BENCH sql_aggregate_…` lines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use floe::config::Config;
use floe::loadgen::{TENANTS, TYPES, VISIBILITY};
use floe::sink::Sink;
use floe::sink::iceberg::IcebergSink;

const COMMITS: usize = 10;
/// Rows per write call.
const CHUNK: usize = 100_000;
/// A multiplier coprime with every row count used, to scatter ids.
const SCATTER: usize = 2_654_435_761;

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
        Field::new("visibility", DataType::Utf8, true),
    ]))
}

fn ns(n: usize) -> String {
    format!("tenant-{:02}.example.com", n % TENANTS)
}
fn id(n: usize, rows: usize) -> String {
    format!("res-{:09}", (n.wrapping_mul(SCATTER)) % rows)
}

fn chunk(from: usize, to: usize, rows: usize) -> RecordBatch {
    let r = from..to;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(r.clone().map(ns))),
            Arc::new(StringArray::from_iter_values(r.clone().map(|n| TYPES[n % TYPES.len()]))),
            Arc::new(StringArray::from_iter_values(r.clone().map(|n| id(n, rows)))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(r.clone().map(|n| 1_795_000_000_000_000 + n as i64 * 1000))
                    .with_timezone("+00:00"),
            ),
            Arc::new(StringArray::from_iter_values(r.clone().map(|n| {
                format!(r#"{{"size":{},"region":"eu-west-{}"}}"#, n % 10_000, n % 3)
            }))),
            Arc::new(StringArray::from_iter_values(
                r.map(|n| VISIBILITY[n % VISIBILITY.len()]),
            )),
        ],
    )
    .expect("batch")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse::<usize>().ok());
    let rows = args.next().unwrap_or(10_000_000);
    let lookups = args.next().unwrap_or(2000);
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
partition_by = ["ns", "type"]
bloom_filter_columns = ["id"]
"#,
    )?;
    let config = Config::load(Some(&config_path))?;
    let app = floe::node::App::open(config.clone()).await?;

    // Write the table with floe's sink.
    let t = Instant::now();
    let sink_cfg = config.sinks[0].clone();
    let mut sink = IcebergSink::open(app.catalog.clone(), &sink_cfg, "bench", &schema()).await?;
    let per_commit = rows.div_ceil(COMMITS);
    let mut n = 0;
    while n < rows {
        let end = (n + per_commit).min(rows);
        while n < end {
            let to = (n + CHUNK).min(end);
            sink.write(&chunk(n, to, rows), to as u64).await?;
            n = to;
        }
        sink.commit().await?;
    }
    let files = floe::query::run_sql(
        &app.catalog,
        r#"SELECT count(*) AS files FROM analytics."events$files""#,
        &config.limits,
    )
    .await?;
    println!(
        "table: {rows} rows written in {:.1} s; files: {}",
        t.elapsed().as_secs_f64(),
        arrow::util::pretty::pretty_format_batches(&files.batches)?
            .to_string()
            .lines()
            .nth(3)
            .unwrap_or("?")
            .trim_matches(|c| c == '|' || c == ' ')
    );

    // Serve HTTP in this process and look rows up through it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = floe::server::router(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/tables/analytics.events/rows");
    let mut state = 12345usize;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % rows
    };
    let mut run = |keys: &'static str, count: usize| {
        let picks: Vec<usize> = (0..count).map(|_| next()).collect();
        let client = client.clone();
        let url = url.clone();
        async move {
            let mut lat = Vec::with_capacity(count);
            for n in picks {
                let mut q = vec![("id", id(n, rows))];
                if keys == "ns,type,id" {
                    q.push(("ns", ns(n)));
                    q.push(("type", TYPES[n % TYPES.len()].to_string()));
                }
                let t = Instant::now();
                let v: serde_json::Value = client.get(&url).query(&q).send().await?.json().await?;
                lat.push(t.elapsed());
                anyhow::ensure!(v["count"] == 1, "lookup of row {n} found {}: {v}", v["count"]);
            }
            lat.sort();
            Ok::<_, anyhow::Error>(lat)
        }
    };
    let cold = Instant::now();
    run("ns,type,id", 1).await?;
    println!("first (cold) lookup: {:.1} ms", cold.elapsed().as_secs_f64() * 1e3);
    run("ns,type,id", 300).await?; // warm the footer and bloom caches
    let lat = run("ns,type,id", lookups).await?;
    println!("lookups by (ns, type, id): {lookups} sequential requests over HTTP");
    println!("BENCH lookup_p50_ms={:.3} unit=ms", pct(&lat, 0.5));
    println!("BENCH lookup_p99_ms={:.3} unit=ms", pct(&lat, 0.99));
    let lat = run("id", lookups / 4).await?;
    println!("BENCH lookup_id_only_p50_ms={:.3} unit=ms", pct(&lat, 0.5));
    println!("BENCH lookup_id_only_p99_ms={:.3} unit=ms", pct(&lat, 0.99));

    // A SQL aggregate over every row.
    let sql = "SELECT type, count(*) AS n, count(DISTINCT ns) AS tenants, max(ts) AS last FROM analytics.events GROUP BY type ORDER BY type";
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = floe::query::run_sql(&app.catalog, sql, &config.limits).await?;
        times.push(t.elapsed());
        let total: i64 = out
            .batches
            .iter()
            .map(|b| {
                arrow::compute::sum(
                    b.column(1)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .expect("count"),
                )
                .unwrap_or(0)
            })
            .sum();
        anyhow::ensure!(total as usize == rows, "aggregate counted {total} rows, not {rows}");
    }
    times.sort();
    println!("aggregate: {sql}");
    println!("BENCH sql_aggregate_10m_ms={:.1} unit=ms", pct(&times, 0.5));
    Ok(())
}
