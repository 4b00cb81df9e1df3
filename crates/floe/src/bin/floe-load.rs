//! `floe-load`: a load generator for a running `floe serve` (loopback only).
//!
//! Sends pre-built requests of ~160-byte resource events (`ns, type, id, ts, data, visibility`)
//! from several concurrent connections for a bounded time, then waits (bounded) until the sink
//! has committed every acknowledged row. Prints the hardware and one line per figure:
//!
//! ```text
//! BENCH ingest_events_per_s=… unit=events/s   BENCH ingest_mb_per_s=…   BENCH ack_p50_ms=… / ack_p99_ms=…
//! BENCH e2e_rows_per_s=…   BENCH e2e_mb_per_s=…
//! BENCH freshness_saturated_p50_ms / _p99_ms   (probes sent during the full load)
//! BENCH freshness_half_p50_ms / _p99_ms        (probes at half the saturating request rate)
//! ```
//!
//! Freshness: a probe event is sent, and from its 200 the generator polls
//! `GET /v1/tables/{table}/rows?ns=…&type=…&id=…` every 10 ms until the row is there.
//!
//! After the full load, a lighter one runs for `--light-seconds`: `--light-share` (default 0.5)
//! of the request rate the full load reached, spread evenly over the same connections — the
//! load a sink must keep up with below saturation.
//!
//! Usage: `floe-load [--url http://127.0.0.1:8080] [--stream events] [--connections 4]
//! [--batch 1000] [--seconds 20] [--table analytics.events] [--light-seconds 10]
//! [--light-share 0.5]`

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Longest wait for the sink to commit everything after the load stops.
const COMMIT_WAIT: Duration = Duration::from_secs(120);
/// Distinct request bodies prepared up front (cycled).
const BODIES: usize = 64;

struct Args {
    url: String,
    stream: String,
    connections: usize,
    batch: usize,
    seconds: u64,
    table: String,
    light_seconds: u64,
    light_share: f64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        stream: "events".into(),
        connections: 4,
        batch: 1000,
        seconds: 20,
        table: "analytics.events".into(),
        light_seconds: 10,
        light_share: 0.5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val()?,
            "--stream" => a.stream = val()?,
            "--connections" => a.connections = val()?.parse()?,
            "--batch" => a.batch = val()?.parse()?,
            "--seconds" => a.seconds = val()?.parse()?,
            "--table" => a.table = val()?,
            "--light-seconds" => a.light_seconds = val()?.parse()?,
            "--light-share" => a.light_share = val()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let host = a
        .url
        .trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .unwrap_or("");
    if !(a.light_share > 0.0 && a.light_share <= 1.0) {
        bail!("--light-share must be in (0, 1], not {}", a.light_share);
    }
    if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
        bail!("floe-load only targets loopback addresses, not {host:?}");
    }
    Ok(a)
}

fn body(batch: usize, seed: usize) -> String {
    floe::loadgen::request_body(batch, seed)
}

/// One summary line a script can read: `BENCH name=value unit=…`.
fn bench(name: &str, value: f64, unit: &str) {
    println!("BENCH {name}={value:.2} unit={unit}");
}

/// Sends one probe event per `every` until `until`, and measures, for each, the time from its
/// 200 to the row being visible through a point lookup (the sink committed it).
async fn freshness(
    client: reqwest::Client,
    url: String,
    stream: String,
    table: String,
    every: Duration,
    until: Instant,
    tag: &'static str,
) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut polls = Vec::new();
    let mut k = 0u64;
    while Instant::now() < until {
        let next = Instant::now() + every;
        k += 1;
        let id = format!("probe-{tag}-{k}-{}", std::process::id());
        let event = serde_json::json!([{
            "ns": "probe.example.com", "type": "probe", "id": id,
            "ts": chrono::Utc::now().to_rfc3339(), "data": {}, "visibility": "private"
        }]);
        let Ok(resp) = client
            .post(format!("{url}/v1/streams/{stream}/events"))
            .json(&event)
            .send()
            .await
        else {
            continue;
        };
        if !resp.status().is_success() {
            continue;
        }
        let acked = Instant::now();
        let (client, url, table) = (client.clone(), url.clone(), table.clone());
        // Each probe polls on its own, so a slow one does not delay the next probe.
        polls.push(tokio::spawn(async move {
            let give_up = acked + Duration::from_secs(60);
            while Instant::now() < give_up {
                let r = client
                    .get(format!("{url}/v1/tables/{table}/rows"))
                    .query(&[("ns", "probe.example.com"), ("type", "probe"), ("id", id.as_str())])
                    .send()
                    .await;
                if let Ok(r) = r
                    && let Ok(v) = r.json::<serde_json::Value>().await
                    && v["count"].as_u64().unwrap_or(0) >= 1
                {
                    return Some(acked.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        }));
        tokio::time::sleep_until(next.into()).await;
    }
    for p in polls {
        if let Ok(Some(d)) = p.await {
            out.push(d);
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(f64::NAN)
}

fn hardware() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024)
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}, {mem} GiB RAM")
}

async fn committed_rows(client: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let text = client.get(format!("{url}/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("floe_sink_rows_committed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let bodies: Vec<bytes::Bytes> = (0..BODIES).map(|i| bytes::Bytes::from(body(args.batch, i))).collect();
    let avg_body = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len();
    println!("hardware: {}", hardware());
    println!(
        "load: {} connections, {} events/request, {:.0} bytes/event, {} s",
        args.connections,
        args.batch,
        avg_body as f64 / args.batch as f64,
        args.seconds
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let base_committed = committed_rows(&client, &args.url).await.context("GET /metrics")?;
    let endpoint = format!("{}/v1/streams/{}/events", args.url, args.stream);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let client = client.clone();
        let endpoint = endpoint.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut rows, mut bytes, mut errors) = (0u64, 0u64, 0u64);
            let mut i = c;
            while Instant::now() < deadline {
                let b = bodies[i % bodies.len()].clone();
                i += 1;
                let len = b.len() as u64;
                let t = Instant::now();
                let resp = client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        lat.push(t.elapsed());
                        rows += v["accepted"].as_u64().unwrap_or(0);
                        bytes += len;
                    }
                    Ok(r) if r.status().as_u16() == 429 => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => errors += 1,
                }
            }
            (lat, rows, bytes, errors)
        }));
    }
    let probe = tokio::spawn(freshness(
        client.clone(),
        args.url.clone(),
        args.stream.clone(),
        args.table.clone(),
        Duration::from_millis(500),
        deadline,
        "full",
    ));
    let mut lat = Vec::new();
    let (mut rows, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    for t in tasks {
        let (l, r, b, e) = t.await?;
        lat.extend(l);
        rows += r;
        bytes += b;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    println!(
        "requests_ok={} requests_failed_or_429={errors} rows_acked={rows}",
        lat.len()
    );
    bench("ingest_events_per_s", rows as f64 / elapsed, "events/s");
    bench("ingest_mb_per_s", bytes as f64 / elapsed / 1e6, "MB/s");
    bench("ack_p50_ms", pct(0.50), "ms");
    bench("ack_p99_ms", pct(0.99), "ms");
    let wait_until = Instant::now() + COMMIT_WAIT;
    loop {
        let committed = committed_rows(&client, &args.url).await? - base_committed;
        if committed >= rows {
            let e2e = started.elapsed().as_secs_f64();
            bench("e2e_rows_per_s", rows as f64 / e2e, "rows/s");
            bench("e2e_mb_per_s", bytes as f64 / e2e / 1e6, "MB/s");
            bench("e2e_seconds", e2e, "s");
            break;
        }
        if Instant::now() > wait_until {
            println!("e2e: only {committed} of {rows} rows committed after {COMMIT_WAIT:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut full = probe.await?;
    full.sort();
    bench("freshness_saturated_p50_ms", percentile(&full, 0.5), "ms");
    bench("freshness_saturated_p99_ms", percentile(&full, 0.99), "ms");

    // Freshness at a steady load below saturation: a share of the full load's request rate,
    // each connection sending on its own fixed clock.
    let saturating_rps = lat.len() as f64 / elapsed;
    let light_rps = (saturating_rps * args.light_share).max(1.0);
    let per_connection = Duration::from_secs_f64(args.connections as f64 / light_rps);
    let until = Instant::now() + Duration::from_secs(args.light_seconds);
    let mut light = Vec::new();
    for c in 0..args.connections {
        let client = client.clone();
        let endpoint = endpoint.clone();
        let bodies = bodies.clone();
        // Staggered starts, so the connections do not send in lockstep.
        let first = Instant::now() + per_connection.mul_f64(c as f64 / args.connections as f64);
        light.push(tokio::spawn(async move {
            let mut next = first;
            let mut i = c;
            while next < until {
                tokio::time::sleep_until(next.into()).await;
                next += per_connection;
                let _ = client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(bodies[i % bodies.len()].clone())
                    .send()
                    .await;
                i += 1;
            }
        }));
    }
    let mut probes = freshness(
        client.clone(),
        args.url.clone(),
        args.stream.clone(),
        args.table.clone(),
        Duration::from_millis(300),
        until,
        "light",
    )
    .await;
    for t in light {
        t.await?;
    }
    probes.sort();
    println!(
        "freshness: {} probes at {light_rps:.1} requests/s of background load ({:.0} % of the saturating {saturating_rps:.1})",
        probes.len(),
        args.light_share * 100.0
    );
    bench("freshness_half_p50_ms", percentile(&probes, 0.5), "ms");
    bench("freshness_half_p99_ms", percentile(&probes, 0.99), "ms");
    Ok(())
}
