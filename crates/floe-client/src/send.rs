//! Sending rows to a stream: `POST /v1/streams/{stream}/events` in batches, each with its own
//! `Idempotency-Key` (docs/http-api.md, "Ingest").

use std::ops::Range;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Call, Client, Error};

/// Most rows one ingest request carries.
pub const SEND_BATCH_ROWS: usize = 1000;
/// Most bytes one ingest request's body has (below floe's default `limits.max_body_bytes`,
/// 5 MiB). A single row larger than this is sent alone.
pub const SEND_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The `200` answer of one ingest request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestAnswer {
    /// Rows stored in the stream.
    pub accepted: u64,
    /// Invalid rows sent to the stream's dead-letter stream (`on_invalid = "dead_letter"`).
    pub dead_lettered: u64,
    /// Rows refused.
    pub rejected: u64,
    /// The stream offset of the request's first row.
    pub first_offset: Option<u64>,
    /// The stream offset after its last row.
    pub next_offset: Option<u64>,
    /// Where dead-lettered rows went.
    pub dead_letter_stream: Option<String>,
    /// Why rows were dead-lettered (`row` 0-based in the request).
    pub errors: Vec<RowError>,
    /// The answer was the stored answer of an earlier request with the same `Idempotency-Key`
    /// (`Idempotent-Replayed: true`): nothing was stored again.
    #[serde(skip)]
    pub replayed: bool,
    /// Any other field of the answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A row the server found invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RowError {
    /// The row, 0-based. In a [`SendReport`] it counts from the first row sent (the index into
    /// the slice given to [`Client::send`], or the push order of a [`Sender`]); in an
    /// [`IngestAnswer`] from the request's first row.
    pub row: usize,
    /// The dotted path of the field (`geo.lat`, `tags.3`); empty when the row as a whole is wrong.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A batch the server refused (`400`, `413`): nothing of it was stored.
#[derive(Debug, Clone)]
pub struct BatchFailure {
    /// Its rows (0-based, counted like [`RowError::row`]).
    pub rows: Range<usize>,
    /// The refusal.
    pub error: Error,
    /// The invalid rows the answer listed (`400 invalid_rows`), counted like the batch's rows.
    pub row_errors: Vec<RowError>,
}

/// What a send did.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// Requests answered (stored or refused).
    pub requests: u64,
    /// Rows stored in the stream.
    pub accepted: u64,
    /// Rows sent to the stream's dead-letter stream.
    pub dead_lettered: u64,
    /// Rows of refused batches (none of them stored).
    pub rejected: u64,
    /// Requests the server answered from its idempotency store (stored earlier, not again).
    pub replayed: u64,
    /// The refused batches, in order.
    pub failures: Vec<BatchFailure>,
    /// Why rows were dead-lettered, counted like [`RowError::row`].
    pub dead_letters: Vec<RowError>,
}

impl SendReport {
    /// Every row was stored or dead-lettered: no batch was refused.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A send that stopped before all rows were confirmed: the server could not be reached, failed,
/// or refused in a way that applies to every batch (`401`, `403`, `404`, …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} (rows {}..{} not confirmed)", unconfirmed.start + 1, unconfirmed.end)]
pub struct SendError {
    /// Why it stopped.
    pub error: Error,
    /// What was done up to then.
    pub report: SendReport,
    /// The rows not confirmed as stored (0-based, counted like [`RowError::row`]): the batch that
    /// failed and those after it. The server may have stored the failed batch if only its
    /// answer was lost; a [`Sender`] retried with [`Sender::flush`] sends it again with the
    /// same `Idempotency-Key`, so it is stored once.
    pub unconfirmed: Range<usize>,
}

impl SendError {
    /// The exit code of the error that stopped the send ([`Error::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        self.error.exit_code()
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        e.error
    }
}

impl Client {
    /// Sends `rows` to `stream` in batches of at most [`SEND_BATCH_ROWS`] rows and
    /// [`SEND_BATCH_BYTES`] bytes, one request at a time, each with its own `Idempotency-Key`
    /// (kept across that request's retries).
    ///
    /// A batch the server refuses as such (`400`, e.g. `invalid_rows`; `413`) is recorded in the
    /// report and the next batch is sent: each batch is stored whole or not at all. A failure
    /// that would hit every batch stops the send with a [`SendError`]: an unreachable or
    /// failing server (after the retries of [`crate::RetryPolicy`]), and refusals such as
    /// `401`, `403`, `404`.
    pub async fn send(&self, stream: &str, rows: &[Value]) -> Result<SendReport, SendError> {
        let mut sender = self.sender(stream);
        for row in rows {
            if let Err(error) = sender.push(row).await {
                return Err(sender.stopped(error, rows.len()));
            }
        }
        sender.finish().await
    }

    /// [`Client::send`] for rows that are JSON text already (each one JSON value, e.g. the lines
    /// of an NDJSON file), sent as they are (line breaks in them become spaces). They are not
    /// checked here: a row that is not JSON makes the server refuse its batch
    /// (`400 malformed_json`).
    pub async fn send_json_texts<S: AsRef<str>>(&self, stream: &str, rows: &[S]) -> Result<SendReport, SendError> {
        let mut sender = self.sender(stream);
        for row in rows {
            if let Err(error) = sender.push_json(row.as_ref()).await {
                return Err(sender.stopped(error, rows.len()));
            }
        }
        sender.finish().await
    }

    /// A [`Sender`] of rows to `stream`.
    pub fn sender(&self, stream: &str) -> Sender {
        Sender {
            client: self.clone(),
            url: self.url(&["v1", "streams", stream, "events"]),
            buf: String::new(),
            buf_rows: 0,
            first_row: 0,
            sealed: None,
            report: SendReport::default(),
        }
    }

    /// One ingest request, retried with the same key.
    async fn post_events(&self, url: &reqwest::Url, body: Bytes, key: &str) -> Result<IngestAnswer, Error> {
        let mut call = Call::new(Method::POST, url.clone(), true);
        call.headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        call.headers.insert(
            "idempotency-key",
            HeaderValue::from_str(key).map_err(|e| Error::Decode(format!("idempotency key {key:?}: {e}")))?,
        );
        call.body = Some(body);
        let answer = self.call(call).await?;
        let mut ingest: IngestAnswer = serde_json::from_slice(&answer.body)
            .map_err(|e| Error::Decode(format!("POST {url}: the answer is not an ingest answer: {e}")))?;
        ingest.replayed = answer
            .headers
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(ingest)
    }
}

/// A batch that has been tried: its rows and key stay fixed until it is answered, so that every
/// try of it is the same request to the server's idempotency store.
#[derive(Debug)]
struct Sealed {
    key: String,
    body: Bytes,
}

/// Buffers rows for one stream and posts them a batch at a time ([`SEND_BATCH_ROWS`],
/// [`SEND_BATCH_BYTES`]).
///
/// [`Sender::push`] returns once the row is buffered; when the buffer is full it first posts
/// it, waiting out backpressure (`429` with `Retry-After`) and retrying as the client's
/// [`crate::RetryPolicy`] says: a producer that pushes is slowed to what the server takes. Call
/// [`Sender::finish`] (or [`Sender::flush`]) to post what is left.
///
/// An `Err` from `push` or `flush` means the buffered batch was not confirmed and is kept,
/// with its `Idempotency-Key`: calling `flush` again (or pushing, which flushes it first)
/// retries it, and the server stores it once whatever happened to the earlier tries. The row
/// given to a `push` that failed was not taken.
#[derive(Debug)]
pub struct Sender {
    client: Client,
    url: reqwest::Url,
    /// The NDJSON body being filled.
    buf: String,
    /// Rows in `buf` (or in `sealed`).
    buf_rows: usize,
    /// The index of the buffered batch's first row, in push order.
    first_row: usize,
    /// The buffered batch once it has been tried.
    sealed: Option<Sealed>,
    report: SendReport,
}

impl Sender {
    /// Buffers a row (any value that serializes as a JSON object), posting the buffer first
    /// when the row does not fit in it.
    pub async fn push<T: Serialize + ?Sized>(&mut self, row: &T) -> Result<(), Error> {
        let text = serde_json::to_string(row)
            .map_err(|e| Error::Decode(format!("row {} cannot be encoded as JSON: {e}", self.pushed() + 1)))?;
        self.push_text(text).await
    }

    /// Buffers a row given as JSON text (one JSON value, sent as it is; line breaks become
    /// spaces). Not checked here: text that is not JSON makes the server refuse its batch.
    pub async fn push_json(&mut self, json: &str) -> Result<(), Error> {
        let text = if json.contains(['\n', '\r']) {
            // Outside strings a line break is only whitespace, and inside them JSON has it
            // escaped: a space keeps the value and makes it one NDJSON line.
            json.replace(['\n', '\r'], " ")
        } else {
            json.to_string()
        };
        self.push_text(text).await
    }

    async fn push_text(&mut self, text: String) -> Result<(), Error> {
        if self.sealed.is_some() {
            self.flush().await?;
        }
        if self.buf_rows > 0 && (self.buf_rows >= SEND_BATCH_ROWS || self.buf.len() + text.len() + 1 > SEND_BATCH_BYTES)
        {
            self.flush().await?;
        }
        self.buf.push_str(&text);
        self.buf.push('\n');
        self.buf_rows += 1;
        Ok(())
    }

    /// Posts the buffered rows, if any. A batch refused as such (`400`, `413`) is recorded in
    /// the report and dropped; any other failure is returned and the batch kept for a retry.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.buf_rows == 0 {
            return Ok(());
        }
        let sealed = self.sealed.get_or_insert_with(|| Sealed {
            key: uuid::Uuid::new_v4().to_string(),
            body: Bytes::from(std::mem::take(&mut self.buf)),
        });
        let rows = self.first_row..self.first_row + self.buf_rows;
        let (key, body) = (sealed.key.clone(), sealed.body.clone());
        match self.client.post_events(&self.url, body, &key).await {
            Ok(answer) => {
                let r = &mut self.report;
                r.requests += 1;
                r.accepted += answer.accepted;
                r.dead_lettered += answer.dead_lettered;
                r.replayed += u64::from(answer.replayed);
                r.dead_letters.extend(answer.errors.into_iter().map(|mut e| {
                    e.row += rows.start;
                    e
                }));
            }
            Err(error @ Error::Refused { status: 400 | 413, .. }) => {
                let row_errors = match &error {
                    Error::Refused { body, .. } => row_errors(body, rows.start),
                    _ => Vec::new(),
                };
                let r = &mut self.report;
                r.requests += 1;
                r.rejected += rows.len() as u64;
                r.failures.push(BatchFailure {
                    rows: rows.clone(),
                    error,
                    row_errors,
                });
            }
            Err(error) => return Err(error),
        }
        self.sealed = None;
        self.first_row = rows.end;
        self.buf_rows = 0;
        Ok(())
    }

    /// What was done so far.
    pub fn report(&self) -> &SendReport {
        &self.report
    }

    /// Rows buffered and not yet confirmed.
    pub fn pending_rows(&self) -> usize {
        self.buf_rows
    }

    /// Posts what is left and returns the report.
    pub async fn finish(mut self) -> Result<SendReport, SendError> {
        match self.flush().await {
            Ok(()) => Ok(self.report),
            Err(error) => {
                let total = self.pushed();
                Err(self.stopped(error, total))
            }
        }
    }

    /// Rows taken so far.
    fn pushed(&self) -> usize {
        self.first_row + self.buf_rows
    }

    /// The [`SendError`] of a send of `total` rows stopped by `error`.
    fn stopped(self, error: Error, total: usize) -> SendError {
        SendError {
            error,
            unconfirmed: self.first_row..total,
            report: self.report,
        }
    }
}

/// The `rows` of a `400 invalid_rows` answer, their `row` shifted by `first`.
fn row_errors(body: &Value, first: usize) -> Vec<RowError> {
    body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_value::<RowError>(r.clone()).ok())
        .map(|mut e| {
            e.row += first;
            e
        })
        .collect()
}
