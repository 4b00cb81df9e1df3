//! Issue 10 regressions through the real HTTP handlers of an `App` opened on a temp folder:
//! `POST /v1/query` is read-only (writes answer 400 `read_only` and touch nothing), files cannot
//! be read by path, and ingest answers say whose fault a failure is — gzip with several members
//! is read whole, trailing garbage is a 400, and a request too large for one log record is a 413
//! naming `limits.max_record_bytes` with nothing stored.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use floe::config::Config;
use floe::node::App;

async fn open(dir: &Path, extra: &str) -> Arc<App> {
    let text = format!(
        "[server]\ndata_dir = \"data\"\n\n{extra}\n[[streams]]\nname = \"events\"\nfields = [ {{ name = \"id\", type = \"int64\", required = true }}, {{ name = \"x\", type = \"float32\" }} ]\n"
    );
    let config = Config::from_toml(&text, &dir.join("floe.toml"), dir).unwrap();
    App::open(config).await.unwrap()
}

async fn json_of(resp: Response) -> (StatusCode, serde_json::Value) {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

async fn query(app: &Arc<App>, sql: &str) -> (StatusCode, serde_json::Value) {
    let body = serde_json::to_vec(&serde_json::json!({ "sql": sql })).unwrap();
    let state = <floe::query::QueryState as axum::extract::FromRef<Arc<App>>>::from_ref(app);
    json_of(floe::query::post_query(State(state), HeaderMap::new(), body.into()).await).await
}

async fn send(app: &Arc<App>, body: Vec<u8>, gzip: bool) -> (StatusCode, serde_json::Value) {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let resp = floe::ingest::post_events(State(app.clone()), AxPath("events".into()), headers, Body::from(body)).await;
    json_of(resp).await
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn post_query_refuses_every_write_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), "").await;
    // A sacrificial folder outside floe's data dir.
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.csv");
    std::fs::write(&victim, "keep me\n").unwrap();
    let new_file = outside.path().join("new.csv");
    let writes = [
        format!("COPY (SELECT 1 AS a) TO '{}'", victim.display()),
        format!("COPY (SELECT 1 AS a) TO '{}' STORED AS CSV", new_file.display()),
        format!("EXPLAIN COPY (SELECT 1) TO '{}'", new_file.display()),
        format!("EXPLAIN ANALYZE COPY (SELECT 1) TO '{}'", new_file.display()),
        format!(
            "CREATE EXTERNAL TABLE leak (line VARCHAR) STORED AS CSV LOCATION '{}'",
            victim.display()
        ),
        "CREATE TABLE t AS SELECT 1 AS a".into(),
        "CREATE TABLE t (a INT)".into(),
        "CREATE VIEW v AS SELECT 1".into(),
        "CREATE SCHEMA s".into(),
        "CREATE FUNCTION f(a INT) RETURNS INT RETURN a + 1".into(),
        "INSERT INTO default.t VALUES (1)".into(),
        "DELETE FROM default.t".into(),
        "UPDATE default.t SET a = 1".into(),
        "DROP TABLE default.t".into(),
        "DROP VIEW v".into(),
        "SET datafusion.execution.batch_size = 1".into(),
        "RESET datafusion.execution.batch_size".into(),
        "SELECT 1 INTO newtab".into(),
        "WITH x AS (SELECT 1 AS a) INSERT INTO default.t SELECT a FROM x".into(),
        "BEGIN TRANSACTION".into(),
        "PREPARE p AS SELECT 1".into(),
    ];
    for sql in &writes {
        let (status, body) = query(&app, sql).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        assert_eq!(body["error"]["code"], "read_only", "{sql}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("queries are read-only"),
            "{sql}: {body}"
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert!(!new_file.exists());
    // Reads still work.
    for sql in [
        "SELECT 1 AS a",
        "WITH x AS (SELECT 2 AS a) SELECT a FROM x",
        "VALUES (1), (2)",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "SHOW TABLES",
        "SHOW datafusion.execution.batch_size",
        "SELECT count(*) AS n FROM generate_series(1, 10)",
    ] {
        let (status, body) = query(&app, sql).await;
        assert_eq!(status, StatusCode::OK, "{sql}: {body}");
    }
}

#[tokio::test]
async fn files_cannot_be_read_by_path_or_table_function() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), "").await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.csv");
    std::fs::write(&secret, "a\nsecret-value\n").unwrap();
    let p = secret.display();
    for sql in [
        format!("SELECT * FROM '{p}'"),
        format!("SELECT * FROM \"{p}\""),
        format!("SELECT * FROM read_csv('{p}')"),
        format!("SELECT * FROM read_parquet('{p}')"),
        format!("SELECT * FROM iceberg_scan('{p}')"),
        format!("SELECT * FROM parquet_metadata('{p}')"),
    ] {
        let (status, body) = query(&app, &sql).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        assert!(!body.to_string().contains("secret-value"), "{sql}: {body}");
    }
}

#[tokio::test]
async fn gzip_members_are_all_read_and_trailing_garbage_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), "").await;
    // Two members (`cat a.gz b.gz`): both rows are stored.
    let mut two = gz(b"{\"id\":1}\n");
    two.extend(gz(b"{\"id\":2}\n"));
    let (status, body) = send(&app, two, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2, "both members are read: {body}");
    // One member then garbage: refused whole, nothing stored.
    let end = app.streams.get("events").unwrap().log.end_offset();
    let mut garbage = gz(b"{\"id\":3}\n");
    garbage.extend_from_slice(b"this is not gzip");
    let (status, body) = send(&app, garbage, true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_encoding", "{body}");
    // A truncated member: also a 400.
    let whole = gz(b"{\"id\":4}\n{\"id\":5}\n");
    let (status, _) = send(&app, whole[..whole.len() - 4].to_vec(), true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.streams.get("events").unwrap().log.end_offset(), end);
}

#[tokio::test]
async fn a_gzip_bomb_is_a_413_naming_the_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), "[limits]\nmax_body_bytes = 100000\n").await;
    let bomb = gz(&vec![b' '; 50_000_000]);
    let (status, body) = send(&app, bomb, true).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["limit"], "limits.max_body_bytes", "{body}");
}

#[tokio::test]
async fn a_request_too_large_for_one_record_is_a_413_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), "[limits]\nmax_record_bytes = 4096\n").await;
    let rows: String = (0..2000).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let (status, body) = send(&app, rows.into_bytes(), false).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["limit"], "limits.max_record_bytes", "{body}");
    assert_eq!(app.streams.get("events").unwrap().log.end_offset(), 0);
    // A small request still fits.
    let (status, body) = send(&app, b"{\"id\":1}\n".to_vec(), false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_float32_out_of_range_is_a_row_error() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), "").await;
    let (status, body) = send(&app, b"{\"id\":1,\"x\":1e39}\n".to_vec(), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["rows"][0]["row"], 0, "{body}");
    assert_eq!(body["rows"][0]["field"], "x", "{body}");
    assert_eq!(app.streams.get("events").unwrap().log.end_offset(), 0);
}
