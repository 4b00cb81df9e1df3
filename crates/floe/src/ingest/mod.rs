//! Ingest: `POST /v1/streams/{stream}/events` → validated Arrow batch → durable log → 200.
//!
//! The order is the promise: read the body within `limits.max_body_bytes` (after gzip), decode
//! and validate every row against the stream's schema (any invalid row rejects the whole request
//! with the list of `{row, field, message}`), append the batch to the stream's log, and answer
//! 200 only once the log has fsynced it. Nothing of a rejected request reaches the log.

pub mod decode;
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
use crate::error::Error;
use crate::server::App;

/// `POST /v1/streams/{stream}/events`
pub async fn post_events(
    State(app): State<Arc<App>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(state) = app.streams.get(&stream).filter(|s| s.config.http.enabled) else {
        return Error::NotFound {
            what: "stream",
            name: stream,
        }
        .into_response();
    };
    if state.config.http.auth
        && let Err(e) = crate::auth::require(&app.config.auth, &headers, &format!("send:{stream}"))
    {
        return e.into_response();
    }
    let metrics = state.metrics.clone();
    let limit = app.config.limits.max_body_bytes;
    let result = async {
        let raw = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| over_body_limit(limit))?;
        let body = decompress(&headers, raw, limit)?;
        let framing = match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(ct) if ct.contains("ndjson") || ct.contains("jsonlines") || ct.contains("x-jsonl") => Framing::Ndjson,
            _ => Framing::Auto,
        };
        let decoder = state.decoder.clone();
        let len = body.len();
        let decoded = tokio::task::spawn_blocking(move || decoder.decode(&body, framing))
            .await
            .map_err(|e| Error::Config(format!("decoder task failed: {e}")))?;
        Ok::<_, Error>((decoded, len))
    }
    .await;
    let (decoded, len) = match result {
        Ok(x) => x,
        Err(e) => {
            metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
            return e.into_response();
        }
    };
    match decoded {
        Ok(batch) => {
            let rows = batch.num_rows();
            match state.log.append(batch).await {
                Ok(ack) => {
                    metrics.rows_accepted.fetch_add(rows as u64, Ordering::Relaxed);
                    metrics.requests_accepted.fetch_add(1, Ordering::Relaxed);
                    metrics.bytes_accepted.fetch_add(len as u64, Ordering::Relaxed);
                    metrics.log_end_offset.fetch_max(ack.next_offset, Ordering::Relaxed);
                    (
                        StatusCode::OK,
                        axum::Json(json!({
                            "accepted": rows,
                            "rejected": 0,
                            "first_offset": ack.first_offset,
                            "next_offset": ack.next_offset,
                        })),
                    )
                        .into_response()
                }
                Err(e) => {
                    metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
                    Error::Log(e).into_response()
                }
            }
        }
        Err(e) => {
            metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
            let (rejected, details) = match &e {
                DecodeError::Rows { count, total, rows } => {
                    metrics.rows_rejected.fetch_add(*count as u64, Ordering::Relaxed);
                    (*count, json!({"invalid_rows": total, "rows": rows}))
                }
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
    }
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
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
            decoder.read_to_end(&mut out).map_err(|e| Error::BadRequest {
                code: "bad_encoding",
                message: format!("Content-Encoding gzip: the body is not valid gzip: {e}"),
            })?;
            if out.len() > limit {
                return Err(over_body_limit(limit));
            }
            Ok(Bytes::from(out))
        }
        other => Err(Error::BadRequest {
            code: "unsupported_encoding",
            message: format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        }),
    }
}
