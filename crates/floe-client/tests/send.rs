//! `Client::send` and `Sender` against a loopback HTTP server: batching, idempotency keys,
//! retries of 429 / 503 / refused connections, refusals that are not retried.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Reply, TestServer, accepted, closed_port};
use floe_client::{Client, EXIT_REFUSED, EXIT_UNAVAILABLE, Error, RetryPolicy, SEND_BATCH_BYTES, SEND_BATCH_ROWS};
use serde_json::{Value, json};

fn rows(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"id": i, "ns": "test"})).collect()
}

/// A policy quick enough for tests (no `Retry-After`: 10 ms, 20 ms, …).
fn quick(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    }
}

/// The ids of a request's rows.
fn ids(seen: &common::Seen) -> Vec<u64> {
    seen.lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn batches_split_at_the_row_limit_and_each_has_its_own_key() {
    let server = TestServer::start(|_, seen| accepted(seen.last().unwrap().lines().len(), 0)).await;
    let client = Client::new(&server.url).unwrap();
    let report = client.send("events", &rows(2500)).await.unwrap();
    assert_eq!((report.accepted, report.requests, report.rejected), (2500, 3, 0));
    assert!(report.is_complete());

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let sizes: Vec<usize> = seen.iter().map(|s| s.lines().len()).collect();
    assert_eq!(sizes, [SEND_BATCH_ROWS, SEND_BATCH_ROWS, 500]);
    let all: Vec<u64> = seen.iter().flat_map(ids).collect();
    assert_eq!(all, (0..2500).collect::<Vec<u64>>(), "rows in order, each once");
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.path, "/v1/streams/events/events");
        assert_eq!(s.header("content-type").as_deref(), Some("application/x-ndjson"));
        assert!(s.header("authorization").is_none());
    }
    let keys: HashSet<String> = seen.iter().map(|s| s.header("idempotency-key").unwrap()).collect();
    assert_eq!(keys.len(), 3, "one key per batch");
    for k in &keys {
        assert_eq!(
            uuid::Uuid::parse_str(k).unwrap().get_version_num(),
            4,
            "{k} is not a v4 UUID"
        );
    }
}

#[tokio::test]
async fn batches_stay_under_the_byte_limit() {
    let server = TestServer::start(|_, seen| accepted(seen.last().unwrap().lines().len(), 0)).await;
    let client = Client::new(&server.url).unwrap();
    // 10 rows of ~1.1 MiB: three fit in 4 MiB, a fourth does not.
    let pad = "x".repeat(1_150_000);
    let big: Vec<Value> = (0..10).map(|i| json!({"id": i, "pad": pad})).collect();
    let report = client.send("events", &big).await.unwrap();
    assert_eq!(report.accepted, 10);
    let seen = server.seen();
    let sizes: Vec<usize> = seen.iter().map(|s| s.lines().len()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    for s in &seen {
        assert!(s.body.len() <= SEND_BATCH_BYTES, "a body of {} bytes", s.body.len());
    }
    let all: Vec<u64> = seen.iter().flat_map(ids).collect();
    assert_eq!(all, (0..10).collect::<Vec<u64>>());
}

#[tokio::test]
async fn backpressure_429_waits_retry_after_and_retries_with_the_same_key() {
    // The first request gets 429 + Retry-After: 1; every other one is accepted.
    let server = TestServer::start(|n, seen| {
        if n == 0 {
            Reply::error(429, "backpressure", "slow down (limit limits.max_uncommitted_rows)")
                .header("retry-after", "1")
        } else {
            accepted(seen.last().unwrap().lines().len(), 0)
        }
    })
    .await;
    let client = Client::new(&server.url).unwrap();
    let start = Instant::now();
    let report = client.send("events", &rows(2500)).await.unwrap();
    let waited = start.elapsed();
    assert_eq!((report.accepted, report.requests), (2500, 3));
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {waited:?}"
    );

    let seen = server.seen();
    assert_eq!(seen.len(), 4, "the refused batch is sent twice, the others once");
    let keys: Vec<String> = seen.iter().map(|s| s.header("idempotency-key").unwrap()).collect();
    assert_eq!(keys[0], keys[1], "the retry of a batch keeps its key");
    assert_eq!(seen[0].body, seen[1].body, "the retry of a batch sends the same rows");
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 3, "a different key per batch: {keys:?}");
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_key() {
    let server = TestServer::start(|n, seen| {
        if n < 2 {
            Reply::error(503, "unavailable", "catalog busy").header("retry-after", "0")
        } else {
            accepted(seen.last().unwrap().lines().len(), 7)
        }
    })
    .await;
    let client = Client::new(&server.url).unwrap().with_retry(quick(3));
    let report = client.send("events", &rows(5)).await.unwrap();
    assert_eq!(report.accepted, 5);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let keys: HashSet<String> = seen.iter().map(|s| s.header("idempotency-key").unwrap()).collect();
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn retries_are_bounded_and_end_as_the_last_answer() {
    let server = TestServer::start(|_, _| Reply::error(429, "backpressure", "full").header("retry-after", "0")).await;
    let client = Client::new(&server.url).unwrap().with_retry(quick(3));
    let err = client.send("events", &rows(1500)).await.unwrap_err();
    assert_eq!(server.seen().len(), 3, "max_attempts = 3");
    assert!(
        matches!(&err.error, Error::Refused { status: 429, code, .. } if code == "backpressure"),
        "{err:?}"
    );
    // A 429 is not a refusal of the batch itself: the send stops, nothing is counted rejected.
    assert_eq!(err.unconfirmed, 0..1500);
    assert_eq!(err.report.rejected, 0);
}

#[tokio::test]
async fn a_400_is_not_retried_and_becomes_refused_with_its_code() {
    // The second batch is refused with floe's invalid_rows answer naming its 4th row.
    let server = TestServer::start(|_, seen| {
        let last = seen.last().unwrap();
        if ids(last)[0] == 1000 {
            Reply::json(
                400,
                json!({"error": {"code": "invalid_rows", "message": "1 of 1000 rows are invalid; nothing of this request was stored"},
                       "accepted": 0, "rejected": 1000, "invalid_rows": 1,
                       "rows": [{"row": 3, "field": "seq", "message": "expected int64"}]}),
            )
        } else {
            accepted(last.lines().len(), 0)
        }
    })
    .await;
    let client = Client::new(&server.url).unwrap().with_retry(quick(5));
    let report = client.send("events", &rows(2500)).await.unwrap();
    assert_eq!(
        server.seen().len(),
        3,
        "the refused batch is not retried; the next one is sent"
    );
    assert_eq!((report.accepted, report.rejected, report.requests), (1500, 1000, 3));
    assert!(!report.is_complete());
    let failure = &report.failures[0];
    assert_eq!(failure.rows, 1000..2000);
    match &failure.error {
        Error::Refused { status, code, body, .. } => {
            assert_eq!((*status, code.as_str()), (400, "invalid_rows"));
            assert_eq!(body["invalid_rows"], 1);
        }
        other => panic!("not Refused: {other:?}"),
    }
    assert_eq!(failure.error.exit_code(), EXIT_REFUSED);
    assert_eq!(failure.row_errors.len(), 1);
    assert_eq!(
        (failure.row_errors[0].row, failure.row_errors[0].field.as_str()),
        (1003, "seq")
    );
}

#[tokio::test]
async fn a_refusal_of_every_batch_stops_the_send() {
    let server = TestServer::start(|_, _| Reply::error(404, "not_found", "no stream nope")).await;
    let client = Client::new(&server.url).unwrap().with_retry(quick(5));
    let err = client.send("nope", &rows(2500)).await.unwrap_err();
    assert_eq!(
        server.seen().len(),
        1,
        "a 404 is neither retried nor repeated for later batches"
    );
    assert!(
        matches!(&err.error, Error::Refused { status: 404, code, message, .. } if code == "not_found" && message == "no stream nope")
    );
    assert_eq!(err.exit_code(), EXIT_REFUSED);
    assert_eq!(err.unconfirmed, 0..2500);
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported() {
    let client = Client::new(&format!("http://127.0.0.1:{}", closed_port()))
        .unwrap()
        .with_retry(quick(3));
    let start = Instant::now();
    let err = client.send("events", &rows(3)).await.unwrap_err();
    assert!(matches!(err.error, Error::Unreachable(_)), "{err:?}");
    assert_eq!(err.exit_code(), EXIT_UNAVAILABLE);
    assert_eq!(err.unconfirmed, 0..3);
    // Two backoffs of at least 5 ms and 10 ms (half of 10 ms, 20 ms): it did wait and retry.
    assert!(start.elapsed() >= Duration::from_millis(15), "{:?}", start.elapsed());
}

#[tokio::test]
async fn the_token_is_sent_as_bearer() {
    let server = TestServer::start(|_, seen| accepted(seen.last().unwrap().lines().len(), 0)).await;
    let client = Client::new(&server.url).unwrap().with_token("s3cret");
    client.send("events", &rows(1)).await.unwrap();
    assert_eq!(
        server.seen()[0].header("authorization").as_deref(),
        Some("Bearer s3cret")
    );
}

#[tokio::test]
async fn json_texts_are_sent_as_given_one_per_line() {
    let server = TestServer::start(|_, seen| accepted(seen.last().unwrap().lines().len(), 0)).await;
    let client = Client::new(&server.url).unwrap();
    let texts = [
        "{\"id\": 1,\n  \"s\": \"a\\nb\"}",
        "{\"id\":2}",
        "{\"id\": 12345678901234567890123}",
    ];
    let report = client.send_json_texts("events", &texts).await.unwrap();
    assert_eq!(report.accepted, 3);
    let lines = server.seen()[0].lines();
    assert_eq!(
        lines,
        [
            "{\"id\": 1,   \"s\": \"a\\nb\"}",
            "{\"id\":2}",
            "{\"id\": 12345678901234567890123}"
        ]
    );
}

#[tokio::test]
async fn replayed_answers_are_counted() {
    let server = TestServer::start(|_, seen| {
        accepted(seen.last().unwrap().lines().len(), 0).header("idempotent-replayed", "true")
    })
    .await;
    let client = Client::new(&server.url).unwrap();
    let report = client.send("events", &rows(3)).await.unwrap();
    assert_eq!((report.accepted, report.replayed), (3, 1));
}

#[tokio::test]
async fn a_sender_flushes_when_a_batch_is_full_and_at_finish() {
    let server = TestServer::start(|_, seen| accepted(seen.last().unwrap().lines().len(), 0)).await;
    let client = Client::new(&server.url).unwrap();
    let mut sender = client.sender("events");
    for (i, row) in rows(2500).iter().enumerate() {
        sender.push(row).await.unwrap();
        // A batch goes out when the row after a full batch arrives.
        assert_eq!(server.seen().len(), (i / SEND_BATCH_ROWS), "after {} rows", i + 1);
    }
    assert_eq!(sender.pending_rows(), 500);
    let report = sender.finish().await.unwrap();
    assert_eq!((report.accepted, report.requests), (2500, 3));
    assert_eq!(
        server.seen().iter().map(|s| s.lines().len()).collect::<Vec<_>>(),
        [1000, 1000, 500]
    );
}

#[tokio::test]
async fn a_sender_keeps_a_failed_batch_and_its_key_until_it_is_answered() {
    // Requests 0 and 1 fail (503, one try each); then everything is accepted.
    let server = TestServer::start(|n, seen| {
        if n < 2 {
            Reply::error(503, "unavailable", "disk full")
        } else {
            accepted(seen.last().unwrap().lines().len(), 0)
        }
    })
    .await;
    let client = Client::new(&server.url).unwrap().with_retry(RetryPolicy::none());
    let mut sender = client.sender("events");
    sender.push(&json!({"id": 0})).await.unwrap();
    sender.push(&json!({"id": 1})).await.unwrap();
    let err = sender.flush().await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 503, .. }), "{err:?}");
    assert_eq!(err.exit_code(), EXIT_UNAVAILABLE);
    assert_eq!(sender.pending_rows(), 2);
    // A push while the tried batch is unanswered retries it first; failing, it takes no row.
    assert!(sender.push(&json!({"id": 2})).await.is_err());
    assert_eq!(sender.pending_rows(), 2);
    sender.flush().await.unwrap();
    sender.push(&json!({"id": 2})).await.unwrap();
    let report = sender.finish().await.unwrap();
    assert_eq!(report.accepted, 3);

    let seen = server.seen();
    assert_eq!(seen.len(), 4);
    let keys: Vec<String> = seen.iter().map(|s| s.header("idempotency-key").unwrap()).collect();
    assert!(
        keys[0] == keys[1] && keys[1] == keys[2],
        "the same batch, the same key: {keys:?}"
    );
    assert_ne!(keys[2], keys[3]);
    assert!(seen[..3].iter().all(|s| ids(s) == [0, 1]));
    assert_eq!(ids(&seen[3]), [2]);
}
