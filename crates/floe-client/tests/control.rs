//! The control-plane calls (docs/control-plane.md) and lookups against a loopback HTTP server:
//! the requests they make, the answers they decode, and their errors.

mod common;

use std::time::Duration;

use common::{Reply, TestServer, closed_port};
use floe_client::{Client, DeleteOptions, EXIT_REFUSED, EXIT_UNAVAILABLE, Error, Lookup, RetryPolicy};
use serde_json::{Value, json};

fn quick(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(1),
    }
}

fn object(kind: &str, name: &str, version: u64, config: Value) -> Value {
    json!({"kind": kind, "name": name, "origin": "api", "version": version,
           "created_at": "2026-12-07T15:02:11.120Z", "updated_at": "2026-12-07T15:09:40.031Z",
           "config": config})
}

#[tokio::test]
async fn create_posts_the_body_and_decodes_the_object() {
    let server = TestServer::start(|_, seen| {
        let body = seen.last().unwrap().json();
        let name = body["name"].as_str().unwrap().to_string();
        Reply::json(201, object("stream", &name, 1, body))
    })
    .await;
    let client = Client::new(&server.url).unwrap().with_token("admin-token");
    let body = json!({"name": "clicks", "schema": {"fields": [{"name": "url", "type": "string", "required": true}]},
                      "http": {"auth": true}});
    let created = client.streams().create(body.clone()).await.unwrap();
    assert_eq!(
        (created.kind.as_str(), created.name.as_str(), created.version),
        ("stream", "clicks", 1)
    );
    assert_eq!(created.origin, "api");
    assert_eq!(created.config, body);
    assert!(created.status.is_none());

    let seen = &server.seen()[0];
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/v1/streams"));
    assert_eq!(seen.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(seen.header("authorization").as_deref(), Some("Bearer admin-token"));
    assert_eq!(seen.json(), body);
}

#[tokio::test]
async fn list_get_and_versions_decode_pipeline_status() {
    let server = TestServer::start(|_, seen| {
        let last = seen.last().unwrap();
        let mut p = object(
            "pipeline",
            "p",
            2,
            json!({"name": "p", "sql": "INSERT INTO t SELECT * FROM events"}),
        );
        p["status"] = json!({"state": "running", "statements": [
            {"sink": "t", "stream": "events", "state": "running", "error": null, "committed_offset": 120,
             "log_end_offset": 125, "lag_rows": 5, "lag_bytes": 400, "last_commit_at": null,
             "rows_out": 120, "commits": 3}],
            "rows_in": 125, "rows_out": 120, "rows_dead_lettered": 0});
        match last.path.as_str() {
            "/v1/pipelines" => Reply::json(200, json!({"pipelines": [p]})),
            "/v1/pipelines/p" => Reply::json(200, p),
            "/v1/pipelines/p/versions" => Reply::json(
                200,
                json!({"pipeline": "p", "versions": [
                {"version": 1, "sql": "v1", "created_at": "a", "started_at": "a", "ended_at": "b",
                 "start_offsets": {"t": 0}, "end_offsets": {"t": 100}},
                {"version": 2, "sql": "v2", "created_at": "b", "started_at": "b", "ended_at": null,
                 "start_offsets": {"t": 100}, "end_offsets": null}]}),
            ),
            _ => Reply::error(404, "not_found", "no such route"),
        }
    })
    .await;
    let client = Client::new(&server.url).unwrap();
    let list = client.pipelines().list().await.unwrap();
    assert_eq!(list.len(), 1);
    let status = list[0].status.as_ref().unwrap();
    assert_eq!(status.state, "running");
    assert_eq!(status.statements[0].committed_offset, Some(120));
    assert_eq!(status.lag_rows(), 5);

    let p = client.pipelines().get("p").await.unwrap();
    assert_eq!(p, list[0]);

    let versions = client.pipeline_versions("p").await.unwrap();
    assert_eq!(versions.pipeline, "p");
    assert_eq!(versions.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(versions.versions[0].end_offsets.as_ref().unwrap()["t"], 100);
    assert_eq!(versions.versions[1].start_offsets.as_ref().unwrap()["t"], 100);
    assert!(versions.versions[1].ended_at.is_none());

    let paths: Vec<String> = server
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        paths,
        [
            "GET /v1/pipelines",
            "GET /v1/pipelines/p",
            "GET /v1/pipelines/p/versions"
        ]
    );
}

#[tokio::test]
async fn update_sends_the_merge_patch() {
    let server = TestServer::start(|_, seen| {
        let patch = seen.last().unwrap().json();
        let mut config = json!({"name": "t", "type": "iceberg", "table": "a.t"});
        config["rolling"] = patch["rolling"].clone();
        Reply::json(200, object("sink", "t", 2, config))
    })
    .await;
    let client = Client::new(&server.url).unwrap();
    let patch = json!({"rolling": {"interval_seconds": 5}});
    let updated = client.sinks().update("t", patch.clone()).await.unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.config["rolling"]["interval_seconds"], 5);
    let seen = &server.seen()[0];
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PATCH", "/v1/sinks/t"));
    assert_eq!(seen.json(), patch);
}

#[tokio::test]
async fn delete_options_become_the_query_and_a_409_is_not_retried() {
    let server = TestServer::start(|_, seen| {
        let last = seen.last().unwrap();
        match last.query.as_deref() {
            Some("force=true") => Reply::json(200, json!({"deleted": {"kind": "stream", "name": "events"}})),
            Some("purge=true") => Reply::json(200, json!({"deleted": {"kind": "sink", "name": "t"}})),
            _ => Reply::error(409, "in_use", "stream events is read by pipeline p"),
        }
    })
    .await;
    let client = Client::new(&server.url).unwrap().with_retry(quick(5));
    let err = client
        .streams()
        .delete("events", DeleteOptions::default())
        .await
        .unwrap_err();
    match &err {
        Error::Refused {
            status, code, message, ..
        } => {
            assert_eq!((*status, code.as_str()), (409, "in_use"));
            assert!(message.contains("pipeline p"));
        }
        other => panic!("not Refused: {other:?}"),
    }
    assert_eq!(err.exit_code(), EXIT_REFUSED);
    assert_eq!(server.seen().len(), 1, "a 409 is not retried");

    let deleted = client
        .streams()
        .delete(
            "events",
            DeleteOptions {
                force: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((deleted.kind.as_str(), deleted.name.as_str()), ("stream", "events"));
    let deleted = client
        .sinks()
        .delete(
            "t",
            DeleteOptions {
                purge: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(deleted.kind, "sink");

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].query, None, "no options: no query string");
    assert!(seen.iter().all(|s| s.method == "DELETE"));
    assert_eq!(seen[2].path, "/v1/sinks/t");
}

#[tokio::test]
async fn a_get_is_retried_on_503_but_a_create_is_not_retried_on_500() {
    let server = TestServer::start(|n, seen| match (seen.last().unwrap().method.as_str(), n) {
        ("GET", 0) => Reply::error(503, "unavailable", "catalog busy").header("retry-after", "0"),
        ("GET", _) => Reply::json(200, json!({"streams": []})),
        _ => Reply::error(500, "internal", "catalog write failed"),
    })
    .await;
    let client = Client::new(&server.url).unwrap().with_retry(quick(3));
    assert!(client.streams().list().await.unwrap().is_empty());
    assert_eq!(server.seen().len(), 2);

    let err = client.streams().create(json!({"name": "x"})).await.unwrap_err();
    assert!(
        matches!(&err, Error::Server { status: 500, code, .. } if code == "internal"),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), EXIT_UNAVAILABLE);
    assert_eq!(server.seen().len(), 3, "a 500 is not retried");
}

#[tokio::test]
async fn a_server_without_the_route_and_a_foreign_answer() {
    let server = TestServer::start(|_, seen| match seen.last().unwrap().path.as_str() {
        "/v1/sinks" => Reply::json(200, json!({"something": "else"})),
        _ => Reply::json(404, Value::Null),
    })
    .await;
    let client = Client::new(&server.url).unwrap();
    let err = client.pipelines().get("p").await.unwrap_err();
    assert!(
        matches!(&err, Error::Refused { status: 404, code, message, .. } if code.is_empty() && message == "Not Found"),
        "{err:?}"
    );
    let err = client.sinks().list().await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    assert_eq!(err.exit_code(), EXIT_UNAVAILABLE);
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let client = Client::new(&format!("http://127.0.0.1:{}", closed_port()))
        .unwrap()
        .with_retry(quick(2));
    let err = client.streams().list().await.unwrap_err();
    assert!(
        matches!(&err, Error::Unreachable(m) if m.contains("/v1/streams")),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), EXIT_UNAVAILABLE);
}

#[tokio::test]
async fn lookups_send_their_predicates_and_options() {
    let server = TestServer::start(|_, _| {
        Reply::json(
            200,
            json!({"table": "analytics.events", "snapshot_id": 1, "count": 1,
                                "rows": [{"id": "a b", "ns": "x&y"}], "stats": {}}),
        )
    })
    .await;
    let client = Client::new(&server.url).unwrap();
    let lookup = Lookup {
        predicates: vec![("ns".into(), "x&y".into()), ("id".into(), "a b".into())],
        limit: Some(5),
        snapshot_id: None,
        as_of: Some("2026-01-01T00:00:00Z".into()),
    };
    let answer = client.lookup("analytics.events", &lookup).await.unwrap();
    assert_eq!(answer.rows, [json!({"id": "a b", "ns": "x&y"})]);
    assert_eq!(answer.extra["count"], 1);
    let seen = &server.seen()[0];
    assert_eq!(seen.path, "/v1/tables/analytics.events/rows");
    let pairs: Vec<(String, String)> = url_pairs(seen.query.as_deref().unwrap());
    assert_eq!(
        pairs,
        [
            ("ns", "x&y"),
            ("id", "a b"),
            ("limit", "5"),
            ("as_of", "2026-01-01T00:00:00Z")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

/// The `(key, value)` pairs of a query string, decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    let url = reqwest::Url::parse(&format!("http://127.0.0.1/?{query}")).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
