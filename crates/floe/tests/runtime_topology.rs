//! Changing the topology of a running floe through the supervisor, over real HTTP (a loopback
//! listener serving the real router), real stream logs in a temp folder, the SQLite catalog and
//! Iceberg tables read back with floe's own SQL: a stream, sink and pipeline are added, fed,
//! and removed again while the first stream's pipeline keeps running, with no restart. Every
//! acknowledged row lands in its table exactly once.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use floe::config::Config;
use floe::node::App;
use floe::supervisor::Supervisor;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const CONFIG: &str = r#"
[server]
data_dir = "data"

[[streams]]
name = "events"
fields = [ { name = "id", type = "int64", required = true } ]

[[sinks]]
name = "a"
type = "iceberg"
table = "t.a"
rolling = { interval_seconds = 1 }

[[pipelines]]
name = "p"
sql = "INSERT INTO a SELECT id FROM events"
start = "earliest"
"#;

/// What is added at run time, written as a config (its stream, sink and pipeline are taken out).
const ADDED: &str = r#"
[[streams]]
name = "clicks"
on_invalid = "dead_letter"
fields = [ { name = "id", type = "int64", required = true } ]

[[sinks]]
name = "b"
type = "iceberg"
table = "t.b"
rolling = { interval_seconds = 1 }

[[pipelines]]
name = "p2"
sql = "INSERT INTO b SELECT id FROM clicks"
start = "earliest"
"#;

/// POSTs rows `{"id": i}`; the HTTP status.
async fn post(client: &reqwest::Client, base: &str, stream: &str, ids: std::ops::Range<i64>) -> reqwest::StatusCode {
    let body: String = ids.map(|i| format!("{{\"id\": {i}}}\n")).collect();
    client
        .post(format!("{base}/v1/streams/{stream}/events"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("POST")
        .status()
}

/// The ids in `table`, sorted; empty while the table does not exist yet.
async fn ids(app: &App, table: &str) -> Vec<i64> {
    longs(app, &format!("SELECT id FROM {table}")).await
}

/// The first (bigint) column of `sql`, sorted; empty when the query fails.
async fn longs(app: &App, sql: &str) -> Vec<i64> {
    let Ok(out) = floe::query::run_sql(&app.catalog, sql, &app.config.limits).await else {
        return vec![];
    };
    let mut v: Vec<i64> = out
        .batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_primitive::<Int64Type>().clone();
            (0..c.len()).map(move |i| c.value(i))
        })
        .collect();
    v.sort_unstable();
    v
}

/// Polls until `table` holds `want` (sorted) or a minute has passed; returns what it holds.
async fn wait_for(app: &App, table: &str, want: &[i64]) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = ids(app, table).await;
        if got == want || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_sinks_and_pipelines_come_and_go_while_floe_runs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(CONFIG, &dir.path().join("floe.toml"), dir.path())?;
    let added = Config::from_toml(&format!("{CONFIG}\n{ADDED}"), &dir.path().join("floe.toml"), dir.path())?;
    let app = App::open(config).await?;
    let supervisor = Supervisor::start(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = floe::server::router(app.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::builder().no_proxy().build()?;

    // One stream and pipeline, as configured.
    assert_eq!(post(&client, &base, "events", 0..10).await, 200);
    assert_eq!(post(&client, &base, "clicks", 0..1).await, 404);

    // A second stream (with its dead letters), a sink and a pipeline into a new table.
    supervisor
        .add_stream(added.stream("clicks").cloned().expect("clicks"))
        .await?;
    supervisor.add_sink(added.sink("b").cloned().expect("b")).await?;
    let p2 = added.pipelines.iter().find(|p| p.name == "p2").cloned().expect("p2");
    supervisor.add_pipeline(p2.clone()).await?;
    assert_eq!(
        supervisor.running(),
        [
            ("clicks_dead_letter".to_string(), "clicks_dead_letter_table".to_string()),
            ("p".to_string(), "a".to_string()),
            ("p2".to_string(), "b".to_string()),
        ]
    );
    // Names in use are refused, and nothing changes.
    assert!(supervisor.add_pipeline(p2).await.is_err());
    assert!(supervisor.remove_stream("clicks").await.is_err(), "p2 reads clicks");
    assert!(supervisor.remove_sink("b").await.is_err(), "p2 writes b");
    assert!(
        supervisor.remove_pipeline("clicks_dead_letter").await.is_err(),
        "built-in"
    );

    assert_eq!(post(&client, &base, "events", 10..20).await, 200);
    assert_eq!(post(&client, &base, "clicks", 100..110).await, 200);
    // A row of the added stream that does not decode goes to its dead letters.
    let mixed = client
        .post(format!("{base}/v1/streams/clicks/events"))
        .header("content-type", "application/x-ndjson")
        .body("{\"id\": 110}\n{\"id\": \"nope\"}\n")
        .send()
        .await?;
    assert_eq!(mixed.status(), 200);

    // The added pipeline goes (committing what it has), then the stream and sink.
    supervisor.remove_pipeline("p2").await?;
    assert_eq!(ids(&app, "t.b").await, (100..111).collect::<Vec<_>>());
    supervisor.remove_stream("clicks").await?;
    // Its dead-letter pipeline went with it, committing the one invalid row (in the default
    // namespace: no pipeline read the stream when it was added).
    assert_eq!(longs(&app, "SELECT count(*) FROM floe.clicks_dead_letter").await, [1]);
    supervisor.remove_sink("b").await?;
    assert_eq!(supervisor.running(), [("p".to_string(), "a".to_string())]);
    assert!(app.stream("clicks").is_none() && app.stream("clicks_dead_letter").is_none());
    assert!(supervisor.remove_stream("events").await.is_err(), "p reads events");
    assert_eq!(post(&client, &base, "clicks", 200..201).await, 404);

    // The first stream's pipeline never stopped.
    assert_eq!(post(&client, &base, "events", 20..30).await, 200);
    assert_eq!(
        wait_for(&app, "t.a", &(0..30).collect::<Vec<_>>()).await,
        (0..30).collect::<Vec<_>>()
    );
    // The removed pipeline's table holds what was acknowledged before it went, once.
    assert_eq!(ids(&app, "t.b").await, (100..111).collect::<Vec<_>>());

    assert!(supervisor.shutdown(Duration::from_secs(30)).await);
    server.abort();
    for s in app.streams.values() {
        s.log.close();
    }
    app.catalog.close().await;
    Ok(())
}
