//! Pipeline safety through the real `App::open`, ingest handler, runner and Iceberg sinks:
//! where a new, renamed or re-added pipeline starts (and that its start survives a crash before
//! its first commit), refusals at start of a log that went backwards or lost rows a pipeline
//! still needs, and rows whose SQL fails at run time going to the pipeline's dead-letter table.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, HeaderValue, header};
use floe::config::Config;
use floe::node::App;
use floe_stream::{LogOptions, StreamLog};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A data folder that outlives the apps opened on it.
struct Floe {
    dir: tempfile::TempDir,
}

const STREAM: &str = r#"
[server]
data_dir = "data"

[[streams]]
name = "events"
fields = [
  { name = "id", type = "int64", required = true },
  { name = "s", type = "string" },
]

[[sinks]]
name = "a"
type = "iceberg"
table = "t.a"

[[sinks]]
name = "b"
type = "iceberg"
table = "t.b"
"#;

impl Floe {
    fn new() -> Self {
        Floe {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Opens floe with `pipelines` (TOML `[[pipelines]]` tables) after the stream and sinks.
    async fn open(&self, pipelines: &str) -> floe::error::Result<Arc<App>> {
        let text = format!("{STREAM}\n{pipelines}");
        let path = self.dir.path().join("floe.toml");
        let config = Config::from_toml(&text, &path, self.dir.path()).expect("config");
        App::open(config).await
    }

    fn stream_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("streams").join("events")
    }
}

fn pipeline(name: &str, sql: &str, extra: &str) -> String {
    format!("[[pipelines]]\nname = {name:?}\nsql = {sql:?}\n{extra}\n")
}

/// Closes an app as a crash would leave things: nothing committed beyond what was.
async fn close(app: Arc<App>) {
    for s in app.streams.values() {
        s.log.close();
    }
    app.catalog.close().await;
}

/// POSTs NDJSON rows `{"id": i, "s": s}`; panics unless all are accepted.
async fn send(app: &Arc<App>, rows: &[(i64, &str)]) {
    let body: String = rows
        .iter()
        .map(|(i, s)| format!("{{\"id\": {i}, \"s\": {s:?}}}\n"))
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    let resp = floe::ingest::post_events(
        State(app.clone()),
        AxPath("events".to_string()),
        headers,
        Body::from(body),
    )
    .await;
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// Every statement reads to the end of its stream and commits.
async fn catch_up(app: &Arc<App>) -> floe::error::Result<()> {
    for t in &app.statements() {
        floe::pipeline::runner::catch_up(app, t).await?;
    }
    Ok(())
}

/// The values of the first column of `sql` (a bigint column).
async fn longs(app: &Arc<App>, sql: &str) -> Vec<i64> {
    let out = floe::query::run_sql(&app.catalog, sql, &app.config.limits)
        .await
        .expect("query");
    out.batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_primitive::<Int64Type>().clone();
            (0..c.len()).map(move |i| c.value(i))
        })
        .collect()
}

/// The first column of `sql` as text.
async fn texts(app: &Arc<App>, sql: &str) -> Vec<String> {
    let out = floe::query::run_sql(&app.catalog, sql, &app.config.limits)
        .await
        .expect("query");
    out.batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_string::<i32>().clone();
            (0..c.len()).map(move |i| c.value(i).to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pipeline_starts_at_the_end_and_its_start_survives_a_crash() -> TestResult {
    let floe = Floe::new();
    let a = pipeline("pa", "INSERT INTO a SELECT * FROM events", "");
    let app = floe.open(&a).await?;
    send(&app, &[(1, "x"), (2, "x"), (3, "x")]).await;
    catch_up(&app).await?;
    close(app).await;

    // pb is added to a stream with history: it starts at the end (3) ...
    let b = pipeline("pb", "INSERT INTO b SELECT * FROM events", "");
    let app = floe.open(&format!("{a}{b}")).await?;
    send(&app, &[(4, "x"), (5, "x")]).await;
    // ... and floe dies before pb's first commit: the rows acknowledged since must still land.
    close(app).await;
    let app = floe.open(&format!("{a}{b}")).await?;
    catch_up(&app).await?;
    assert_eq!(longs(&app, "SELECT id FROM t.b ORDER BY id").await, vec![4, 5]);
    assert_eq!(longs(&app, "SELECT id FROM t.a ORDER BY id").await, vec![1, 2, 3, 4, 5]);
    close(app).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_earliest_reads_the_whole_log() -> TestResult {
    let floe = Floe::new();
    let a = pipeline("pa", "INSERT INTO a SELECT * FROM events", "");
    let app = floe.open(&a).await?;
    send(&app, &[(1, "x"), (2, "x")]).await;
    catch_up(&app).await?;
    close(app).await;
    let b = pipeline("pb", "INSERT INTO b SELECT * FROM events", "start = \"earliest\"");
    let app = floe.open(&format!("{a}{b}")).await?;
    catch_up(&app).await?;
    assert_eq!(longs(&app, "SELECT id FROM t.b ORDER BY id").await, vec![1, 2]);
    close(app).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_pipeline_is_refused_unless_it_replaces_the_old_one() -> TestResult {
    let floe = Floe::new();
    let sql = "INSERT INTO a SELECT * FROM events";
    let app = floe.open(&pipeline("old", sql, "")).await?;
    send(&app, &[(1, "x"), (2, "x"), (3, "x")]).await;
    catch_up(&app).await?;
    close(app).await;

    let err = floe
        .open(&pipeline("new", sql, "start = \"earliest\""))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("table t.a is already fed by pipeline \"old\" (sink \"a\") at offset 3"),
        "{err}"
    );
    assert!(err.contains("replaces"), "{err}");

    let app = floe
        .open(&pipeline("new", sql, "start = \"earliest\"\nreplaces = \"old\""))
        .await?;
    send(&app, &[(4, "x")]).await;
    catch_up(&app).await?;
    close(app).await;
    // And after a restart (replaces still set, nothing left to take over): still exactly once.
    let app = floe
        .open(&pipeline("new", sql, "start = \"earliest\"\nreplaces = \"old\""))
        .await?;
    send(&app, &[(5, "x")]).await;
    catch_up(&app).await?;
    assert_eq!(longs(&app, "SELECT id FROM t.a ORDER BY id").await, vec![1, 2, 3, 4, 5]);
    let pos = app.catalog.sink_position("new", "a").await?.expect("position");
    assert_eq!(pos.position, 5);
    assert!(app.catalog.sink_position("old", "a").await?.is_none());
    close(app).await;

    let err = floe
        .open(&pipeline("newer", sql, "replaces = \"nope\""))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("no pipeline \"nope\" ever committed"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_stream_dir_is_refused_at_start_with_the_numbers() -> TestResult {
    let floe = Floe::new();
    let a = pipeline("pa", "INSERT INTO a SELECT * FROM events", "");
    let app = floe.open(&a).await?;
    send(&app, &[(1, "x"), (2, "x"), (3, "x")]).await;
    catch_up(&app).await?;
    close(app).await;

    // The stream's folder is replaced by an empty one (restored from elsewhere, lost, …).
    std::fs::remove_dir_all(floe.stream_dir())?;
    let err = floe.open(&a).await.err().expect("refused").to_string();
    assert!(err.contains("through offset 3"), "{err}");
    assert!(err.contains("ends at offset 0"), "{err}");
    assert!(err.contains("went backwards"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_behind_the_log_start_is_refused_at_start() -> TestResult {
    let floe = Floe::new();
    let a = pipeline("pa", "INSERT INTO a SELECT * FROM events", "");
    let b = pipeline("pb", "INSERT INTO b SELECT * FROM events", "");
    let app = floe.open(&format!("{a}{b}")).await?;
    send(&app, &[(1, "x"), (2, "x")]).await;
    catch_up(&app).await?;
    close(app).await;

    // pb leaves the config; pa reads on, and the log is truncated behind pa.
    let app = floe.open(&a).await?;
    send(&app, &[(3, "x")]).await;
    catch_up(&app).await?;
    close(app).await;
    {
        // Several segments (tiny ones), so whole segments can be truncated.
        let log = StreamLog::open(
            &floe.stream_dir(),
            LogOptions {
                segment_bytes: 1,
                ..LogOptions::default()
            },
        )?;
        let records = log.read(0, usize::MAX)?;
        for r in &records {
            log.append(r.batch.clone()).await?;
        }
        // Behind pa (at 3), ahead of pb (at 2).
        log.truncate_before(3)?;
        assert_eq!(log.start_offset(), 3);
        log.close();
    }
    let app = floe.open(&a).await?;
    catch_up(&app).await?;
    let start = app.streams.get("events").unwrap().log.start_offset();
    close(app).await;

    // pb comes back: its position (2) is behind the log's start.
    let err = floe.open(&format!("{a}{b}")).await.err().expect("refused").to_string();
    assert!(err.contains("through offset 2"), "{err}");
    assert!(err.contains(&format!("starts at offset {start}")), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_cast_fails_goes_to_the_dead_letter_table() -> TestResult {
    let floe = Floe::new();
    let p = pipeline("casts", "INSERT INTO a SELECT id, CAST(s AS INT) AS n FROM events", "");
    let app = floe.open(&p).await?;
    send(&app, &[(1, "10"), (2, "abc"), (3, "30"), (4, "x"), (5, "50")]).await;
    catch_up(&app).await?;
    assert_eq!(longs(&app, "SELECT id FROM t.a ORDER BY id").await, vec![1, 3, 5]);
    assert_eq!(
        longs(&app, "SELECT \"offset\" FROM t.casts_errors ORDER BY \"offset\"").await,
        vec![1, 3]
    );
    let errors = texts(&app, "SELECT error FROM t.casts_errors ORDER BY \"offset\"").await;
    assert!(errors[0].contains("abc"), "{errors:?}");
    let raw = texts(&app, "SELECT raw FROM t.casts_errors ORDER BY \"offset\"").await;
    assert_eq!(raw[0], r#"{"id":2,"s":"abc"}"#);
    let who = texts(
        &app,
        "SELECT concat(pipeline, '/', sink, '/', stream) FROM t.casts_errors LIMIT 1",
    )
    .await;
    assert_eq!(who, vec!["casts/a/events".to_string()]);
    // Later rows keep landing, and a restart adds nothing twice to either table.
    send(&app, &[(6, "60"), (7, "bad")]).await;
    close(app).await;
    let app = floe.open(&p).await?;
    catch_up(&app).await?;
    assert_eq!(longs(&app, "SELECT id FROM t.a ORDER BY id").await, vec![1, 3, 5, 6]);
    assert_eq!(
        longs(&app, "SELECT \"offset\" FROM t.casts_errors ORDER BY \"offset\"").await,
        vec![1, 3, 6]
    );
    close(app).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_fail_stops_at_the_failing_row_with_its_offset() -> TestResult {
    let floe = Floe::new();
    let p = pipeline(
        "strict",
        "INSERT INTO a SELECT id, 100 / CAST(s AS BIGINT) AS q FROM events",
        "on_error = \"fail\"",
    );
    let app = floe.open(&p).await?;
    send(&app, &[(1, "1"), (2, "2"), (3, "0"), (4, "4")]).await;
    let err = catch_up(&app).await.expect_err("fails").to_string();
    assert!(err.contains("row at offset 2"), "{err}");
    assert!(err.to_lowercase().contains("divide by zero"), "{err}");
    assert_eq!(
        app.catalog.sink_position("strict", "a").await?.map(|p| p.position),
        Some(0)
    );
    close(app).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_bad_rows_than_the_limit_fail_the_pipeline() -> TestResult {
    let floe = Floe::new();
    let p = pipeline(
        "casts",
        "INSERT INTO a SELECT id, CAST(s AS INT) AS n FROM events",
        "max_bad_rows_per_batch = 2",
    );
    let app = floe.open(&p).await?;
    send(&app, &[(1, "a"), (2, "b"), (3, "c"), (4, "4")]).await;
    let err = catch_up(&app).await.expect_err("fails").to_string();
    assert!(err.contains("pipelines.max_bad_rows_per_batch"), "{err}");
    assert!(err.contains("first at offset 0"), "{err}");
    close(app).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dir_replaced_by_a_longer_log_is_refused_at_start() -> TestResult {
    let floe = Floe::new();
    let a = pipeline("pa", "INSERT INTO a SELECT * FROM events", "");
    let app = floe.open(&a).await?;
    send(&app, &[(1, "x"), (2, "x")]).await;
    catch_up(&app).await?;
    close(app).await;

    // Another log, longer than the committed position (2), takes the folder's place.
    let other = floe.dir.path().join("other-log");
    {
        let old = StreamLog::open(&floe.stream_dir(), LogOptions::default())?;
        let records = old.read(0, usize::MAX)?;
        old.close();
        let log = StreamLog::open(&other, LogOptions::default())?;
        for _ in 0..3 {
            for r in &records {
                log.append(r.batch.clone()).await?;
            }
        }
        assert_eq!(log.end_offset(), 6);
        log.close();
    }
    std::fs::remove_dir_all(floe.stream_dir())?;
    std::fs::rename(&other, floe.stream_dir())?;
    let err = floe.open(&a).await.err().expect("refused").to_string();
    assert!(err.contains("holds another log"), "{err}");
    assert!(err.contains("offsets 0..6"), "{err}");
    assert!(err.contains("pipeline \"pa\" sink \"a\" at offset 2"), "{err}");
    Ok(())
}
