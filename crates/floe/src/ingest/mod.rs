//! Ingest: `POST /v1/streams/{stream}/events` → validated Arrow batch → durable log → 200.
//!
//! The order is the promise: read the body within `limits.max_body_bytes` (after gzip), decode
//! and validate every row against the stream's schema (any invalid row rejects the whole request
//! with the list of `{row, field, message}`), append the batch to the stream's log, and answer
//! 200 only once the log has fsynced it. Nothing of a rejected request reaches the log.
//!
//! With `on_invalid = "dead_letter"` the valid rows are accepted and the invalid ones are appended
//! to the stream's dead-letter log (see [`dead_letter`]) before the 200, which then says
//! `{"accepted": N, "dead_lettered": M, "errors": [{row, field, message}, …]}`.

pub mod cors;
pub mod dead_letter;
pub mod decode;
pub mod idempotency;
pub mod record;
pub mod schema;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use self::decode::{DecodeError, Framing};
use crate::config::{AuthConfig, Limits, OnInvalid};
use crate::error::Error;
use crate::stream::StreamRegistry;

/// What ingest needs of the node it runs in.
pub trait IngestNode: Send + Sync + 'static {
    /// The open streams.
    fn streams(&self) -> &StreamRegistry;
    /// `[auth]`.
    fn auth(&self) -> &AuthConfig;
    /// `[limits]`.
    fn limits(&self) -> &Limits;
    /// The 429 to answer instead of ingesting into `stream`, if a limit is hit.
    fn backpressure(&self, stream: &str) -> Option<Error>;
}

/// `POST /v1/streams/{stream}/events`
pub async fn post_events<N: IngestNode>(
    State(app): State<Arc<N>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(state) = app.streams().get(&stream).filter(|s| s.config.http.enabled) else {
        return Error::NotFound {
            what: "stream",
            name: stream,
        }
        .into_response();
    };
    if state.config.http.auth
        && let Err(e) = crate::auth::require(app.auth(), &headers, &format!("send:{stream}"))
    {
        return e.into_response();
    }
    let metrics = state.metrics.clone();
    // Every refusal counts, and frees the idempotency key it holds (if any).
    let fail = |guard: Option<idempotency::Guard>, resp: Response| {
        if let Some(g) = guard {
            state.idempotency.failed(g);
        }
        metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
        resp
    };
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            let k = v
                .to_str()
                .map_err(|_| "Idempotency-Key must be printable ASCII".to_string())?;
            idempotency::valid_key(k).map(|()| k.to_string())
        })
        .transpose();
    let key = match key {
        Ok(k) => k,
        Err(message) => {
            let e = Error::BadRequest {
                code: "bad_idempotency_key",
                message,
            };
            return fail(None, e.into_response());
        }
    };
    let guard = match &key {
        None => None,
        Some(k) => match state.idempotency.begin(k).await {
            Err(e) => return fail(None, e.into_response()),
            Ok(idempotency::Begin::Replay(answer)) => {
                let mut resp = accepted_response(answer);
                resp.headers_mut()
                    .insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
                return resp;
            }
            Ok(idempotency::Begin::Process(g)) => Some(g),
        },
    };
    // From here on every path reports the outcome to the idempotency store (through `fail`).
    if let Some(e) = app.backpressure(&stream) {
        return fail(guard, e.into_response());
    }
    let limit = app.limits().max_body_bytes;
    let read = async {
        let raw = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| over_body_limit(limit))?;
        decompress(&headers, raw, limit)
    }
    .await;
    let body = match read {
        Ok(b) => b,
        Err(e) => return fail(guard, e.into_response()),
    };
    let framing = match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some(ct) if ct.contains("ndjson") || ct.contains("jsonlines") || ct.contains("x-jsonl") => Framing::Ndjson,
        _ => Framing::Auto,
    };
    let len = body.len();
    let decoder = state.decoder.clone();
    let lenient = state.config.on_invalid == OnInvalid::DeadLetter;
    let decoded = tokio::task::spawn_blocking(move || {
        if lenient {
            decoder.decode_lenient(&body, framing)
        } else {
            decoder.decode(&body, framing).map(|b| decode::Lenient {
                rows: b.num_rows(),
                batch: Some(b),
                invalid: vec![],
            })
        }
    })
    .await;
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            return fail(
                guard,
                Error::Internal(format!("decoder task failed: {e}")).into_response(),
            );
        }
    };
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            if let DecodeError::Rows { count, .. } = &e {
                metrics.rows_rejected.fetch_add(*count as u64, Ordering::Relaxed);
            }
            return fail(guard, decode_error_response(e));
        }
    };
    // Too large for one log record: a 413 now, before any IPC frame is built or anything stored.
    let record_limit = app.limits().max_record_bytes;
    if let Some(b) = &decoded.batch
        && let Err(e) = check_record_size(b, record_limit)
    {
        return fail(guard, e.into_response());
    }
    let rows = decoded.batch.as_ref().map_or(0, |b| b.num_rows() as u64);
    let dead_lettered = decoded.invalid.len() as u64;
    let errors: Vec<decode::RowError> = decoded
        .invalid
        .iter()
        .take(app.limits().max_errors_reported)
        .map(|(e, _)| e.clone())
        .collect();
    // The idempotency key rides on the last record of the request (see `dead_letter`).
    let letters = (!decoded.invalid.is_empty()).then(|| {
        let key_here = if decoded.batch.is_none() {
            key.as_deref().map(|k| (k, state.log.end_offset()))
        } else {
            None
        };
        dead_letter::batch(
            &stream,
            &decoded.invalid,
            chrono::Utc::now().timestamp_micros(),
            key_here,
        )
    });
    if let Some(l) = &letters
        && let Err(e) = check_record_size(l, record_limit)
    {
        return fail(guard, e.into_response());
    }
    let batch = match decoded.batch {
        Some(batch) if key.is_some() || dead_lettered > 0 => {
            let mut schema = batch.schema().as_ref().clone();
            if let Some(k) = &key {
                schema.metadata.insert(record::KEY_METADATA.to_string(), k.clone());
            }
            if dead_lettered > 0 {
                schema
                    .metadata
                    .insert(record::DEAD_LETTERED_METADATA.to_string(), dead_lettered.to_string());
            }
            match batch.with_schema(Arc::new(schema)) {
                Ok(b) => Some(b),
                Err(e) => return fail(guard, Error::Arrow(e).into_response()),
            }
        }
        other => other,
    };
    // The appends and their bookkeeping run in their own task: if the client goes away mid-way,
    // the outcome is still recorded (a record that became durable must keep its key).
    let task_app = app.clone();
    let task_stream = stream.clone();
    let task_state = state.clone();
    let outcome = tokio::spawn(async move {
        let state = &task_state;
        let appended = async {
            if let Some(letters) = letters {
                let dl = task_app
                    .streams()
                    .get(&dead_letter::stream_name(&task_stream))
                    .ok_or_else(|| Error::Internal(format!("stream {task_stream:?} has no dead-letter stream")))?;
                let ack = dl.log.append(letters).await?;
                dl.metrics.rows_accepted.fetch_add(dead_lettered, Ordering::Relaxed);
                dl.metrics.log_end_offset.fetch_max(ack.next_offset, Ordering::Relaxed);
            }
            match batch {
                Some(batch) => Ok::<_, Error>(state.log.append(batch).await?),
                None => {
                    let end = state.log.end_offset();
                    Ok(floe_stream::AppendAck {
                        first_offset: end,
                        next_offset: end,
                    })
                }
            }
        }
        .await;
        match appended {
            Ok(ack) => {
                let answer = idempotency::Answer {
                    accepted: rows,
                    first_offset: ack.first_offset,
                    next_offset: ack.next_offset,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    dead_lettered,
                };
                // The key's line is written before the answer; if it cannot be, the rows are
                // durable but the request answers 503: the client retries with the same key and
                // gets this answer once the line is written (see `idempotency`).
                let key_written = match guard {
                    Some(g) => state.idempotency.done(g, answer),
                    None => Ok(()),
                };
                let m = &state.metrics;
                m.rows_accepted.fetch_add(rows, Ordering::Relaxed);
                m.rows_dead_lettered.fetch_add(dead_lettered, Ordering::Relaxed);
                m.requests_accepted.fetch_add(1, Ordering::Relaxed);
                m.bytes_accepted.fetch_add(len as u64, Ordering::Relaxed);
                m.log_end_offset.fetch_max(ack.next_offset, Ordering::Relaxed);
                key_written.map(|()| answer)
            }
            Err(e) => {
                if let Some(g) = guard {
                    state.idempotency.failed(g);
                }
                state.metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(answer)) => {
            let mut resp = accepted_response(answer);
            if !errors.is_empty() {
                let body = json!({
                    "accepted": answer.accepted,
                    "dead_lettered": answer.dead_lettered,
                    "rejected": 0,
                    "first_offset": answer.first_offset,
                    "next_offset": answer.next_offset,
                    "dead_letter_stream": dead_letter::stream_name(&stream),
                    "errors": errors,
                });
                resp = (StatusCode::OK, axum::Json(body)).into_response();
            }
            resp
        }
        Ok(Err(e)) => e.into_response(),
        Err(e) => Error::Internal(format!("append task failed: {e}")).into_response(),
    }
}

fn accepted_response(a: idempotency::Answer) -> Response {
    let body = json!({
        "accepted": a.accepted,
        "dead_lettered": a.dead_lettered,
        "rejected": 0,
        "first_offset": a.first_offset,
        "next_offset": a.next_offset,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn decode_error_response(e: DecodeError) -> Response {
    let (rejected, details) = match &e {
        DecodeError::Rows { count, total, rows } => (*count, json!({"invalid_rows": total, "rows": rows})),
        _ => (0, json!({"rows": []})),
    };
    let code = match &e {
        DecodeError::Malformed(_) => "malformed_json",
        DecodeError::Empty => "empty_request",
        DecodeError::Rows { .. } => "invalid_rows",
    };
    let mut body = json!({
        "error": {"code": code, "message": format!("{e}; nothing of this request was stored")},
        "accepted": 0,
        "rejected": rejected,
    });
    if let (Some(obj), Some(d)) = (body.as_object_mut(), details.as_object()) {
        obj.extend(d.clone());
    }
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn over_body_limit(limit: usize) -> Error {
    Error::Limit {
        limit: "limits.max_body_bytes",
        message: format!("request body is over {limit} bytes"),
        status: StatusCode::PAYLOAD_TOO_LARGE,
    }
}

/// Undoes `Content-Encoding: gzip`, enforcing the body limit on the decompressed size.
fn decompress(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, Error> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(raw),
        "gzip" | "x-gzip" => gunzip(&raw, limit).map(Bytes::from),
        other => Err(Error::BadRequest {
            code: "unsupported_encoding",
            message: format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        }),
    }
}

/// Decompresses a gzip body: every member (RFC 1952 allows several, `cat a.gz b.gz`), and
/// nothing else — bytes after the last member that are not another member are a 400, never
/// silently dropped (a 200 for part of the body would lose the rest). Over `limit` decompressed
/// bytes is a 413 naming `limits.max_body_bytes`; the output buffer never grows past `limit`,
/// whatever the compression ratio (a decompression bomb costs at most `limit` bytes).
pub fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, Error> {
    let bad = |e: std::io::Error| Error::BadRequest {
        code: "bad_encoding",
        message: format!("Content-Encoding gzip: the body is not valid gzip: {e}"),
    };
    if raw.is_empty() {
        return Err(bad(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
    }
    // `bufread::MultiGzDecoder` reads member after member until the input ends; whatever follows
    // a member must parse as a gzip header, so trailing garbage is an error.
    let mut decoder = flate2::bufread::MultiGzDecoder::new(raw);
    let mut out: Vec<u8> = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(e)),
        };
        let want = out.len() + n;
        if want > limit {
            return Err(over_body_limit(limit));
        }
        if want > out.capacity() {
            // Grow by doubling, but never past the limit.
            let target = out.capacity().saturating_mul(2).max(want).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

/// A lower bound of the Arrow IPC bytes `batch` encodes to: its buffers (the IPC body holds each
/// of them, padded, plus metadata). Computed without encoding, so a request too large for one
/// log record is refused before the frame is built.
pub fn ipc_size_lower_bound(batch: &arrow::record_batch::RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_buffer_memory_size())
        })
        .sum()
}

/// The 413 of a request whose rows do not fit in one log record of `limit` bytes.
fn check_record_size(batch: &arrow::record_batch::RecordBatch, limit: usize) -> Result<(), Error> {
    let size = ipc_size_lower_bound(batch);
    if size > limit || u32::try_from(batch.num_rows()).is_err() {
        return Err(Error::Limit {
            limit: crate::error::RECORD_LIMIT,
            message: format!(
                "the request's {} rows encode to at least {size} bytes, over the stream log's record limit of {limit} bytes; send fewer rows per request",
                batch.num_rows()
            ),
            status: StatusCode::PAYLOAD_TOO_LARGE,
        });
    }
    Ok(())
}
