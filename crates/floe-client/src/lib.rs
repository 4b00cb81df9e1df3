//! floe's typed async client: floe's answer to a Worker binding's `env.STREAM.send(rows)`.
//!
//! One [`Client`] per floe server (`http://127.0.0.1:8080` by default) does both halves of what a
//! program needs from it:
//!
//! - **Send rows** to a stream: [`Client::send`] for a slice of rows, or a [`Sender`] that
//!   buffers rows and posts them as they fill a batch. Rows go out as NDJSON in requests of at
//!   most [`SEND_BATCH_ROWS`] rows and [`SEND_BATCH_BYTES`] bytes; each request carries its own
//!   `Idempotency-Key`, kept across its retries, so a retry after a lost answer never stores the
//!   rows twice. Backpressure (`429` with `Retry-After`) makes the client wait and try again.
//! - **Manage** streams, sinks and pipelines at run time ([`Client::streams`],
//!   [`Client::sinks`], [`Client::pipelines`], [`Client::pipeline_versions`]): the routes of
//!   `docs/control-plane.md`, answered as typed [`Object`]s.
//!
//! Point lookups ([`Client::lookup`]) come along, since the `floe get` command uses them.
//!
//! Every failure is an [`Error`]: [`Error::Refused`] (a `4xx`: the caller's fault),
//! [`Error::Server`] (a `5xx`), [`Error::Unreachable`], [`Error::Decode`]; each knows the exit
//! code a command line gives it ([`Error::exit_code`]). Which answers are retried, and how long
//! the client waits: [`RetryPolicy`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), floe_client::Error> {
//! use serde_json::json;
//! let client = floe_client::Client::new("http://127.0.0.1:8080")?.with_token("secret");
//! client.streams().create(json!({"name": "clicks", "fields": [{"name": "url", "type": "string"}]})).await?;
//! let report = client.send("clicks", &[json!({"url": "/a"}), json!({"url": "/b"})]).await?;
//! assert_eq!(report.accepted, 2);
//! # Ok(()) }
//! ```
//!
//! This crate knows floe only through its HTTP API; it does not depend on the `floe` crate (the
//! `floe` command line depends on it).

mod error;
mod lookup;
mod objects;
mod retry;
mod send;

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Url};

pub use error::{EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, Error, status_text};
pub use lookup::{Lookup, LookupAnswer};
pub use objects::{
    DeleteOptions, Deleted, Kind, Object, Objects, PipelineStatus, PipelineVersion, PipelineVersions, StatementStatus,
};
pub use retry::RetryPolicy;
pub use send::{
    BatchFailure, IngestAnswer, RowError, SEND_BATCH_BYTES, SEND_BATCH_ROWS, SendError, SendReport, Sender,
};

/// The server `floe serve` listens on by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// How long making a connection may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request (connection, sending, the whole answer) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one floe server. Cheap to clone (clones share their connections).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    timeout: Duration,
    retry: RetryPolicy,
}

impl Client {
    /// A client of the server at `base_url` (`http://host:port`, optionally with a path prefix
    /// the routes are under), with [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_TIMEOUT`], the default
    /// [`RetryPolicy`] and no token. Plain `http` only. A loopback server is reached directly,
    /// never through a proxy of the environment.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        let base = parse_base(base_url)?;
        Ok(Client {
            http: build_http(&base, DEFAULT_CONNECT_TIMEOUT)?,
            base,
            token: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request (docs/security.md: ingest into
    /// a stream with `http.auth` needs `send:<stream>`, lookups `read`, the control plane
    /// `admin`).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// How long one request may take, its answer included (each try of it).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// How long making a connection may take.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Result<Client, Error> {
        self.http = build_http(&self.base, timeout)?;
        Ok(self)
    }

    /// Which failures are retried, how often and how patiently.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Client {
        self.retry = retry;
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of a route: the base URL's path, then `segments`, each percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// One request, tried again as [`RetryPolicy`] says. A `2xx` answer is returned; any other
    /// becomes an [`Error`].
    pub(crate) async fn call(&self, req: Call) -> Result<Answer, Error> {
        let mut retry = 0u32;
        loop {
            let mut builder = self
                .http
                .request(req.method.clone(), req.url.clone())
                .timeout(self.timeout)
                .headers(req.headers.clone());
            if let Some(token) = &self.token {
                builder = builder.bearer_auth(token);
            }
            if let Some(body) = &req.body {
                builder = builder.body(body.clone());
            }
            let attempts_left = retry + 1 < self.retry.max_attempts;
            let outcome = match builder.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let wait = match outcome {
                Ok((status, headers, body)) if (200..300).contains(&status) => {
                    return Ok(Answer { headers, body });
                }
                Ok((status, headers, body)) => {
                    if (status == 429 || status == 503) && attempts_left {
                        let after = headers
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(retry::parse_retry_after);
                        retry += 1;
                        self.retry.delay(retry, after)
                    } else {
                        return Err(Error::from_answer(status, &body));
                    }
                }
                Err(e) => {
                    let retryable =
                        e.is_connect() || (req.replay_safe && (e.is_timeout() || e.is_request() || e.is_body()));
                    if retryable && attempts_left {
                        retry += 1;
                        self.retry.delay(retry, None)
                    } else {
                        return Err(Error::Unreachable(format!(
                            "{} {}: {}",
                            req.method,
                            req.url,
                            error_chain(&e)
                        )));
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// A JSON request; its `2xx` answer decoded as `T`.
    pub(crate) async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<T, Error> {
        let replay_safe = method == Method::GET;
        let mut call = Call::new(method, url, replay_safe);
        if let Some(body) = body {
            call.headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            call.body = Some(Bytes::from(body.to_string()));
        }
        let (method, url) = (call.method.clone(), call.url.clone());
        let answer = self.call(call).await?;
        serde_json::from_slice(&answer.body)
            .map_err(|e| Error::Decode(format!("{method} {url}: the answer is not the JSON expected: {e}")))
    }
}

/// A request to make (see [`Client::call`]).
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
    /// The request may be sent again after a timeout or a cut connection, because repeating it
    /// changes nothing (`GET`) or the server recognises the repeat (`Idempotency-Key`).
    pub(crate) replay_safe: bool,
}

impl Call {
    pub(crate) fn new(method: Method, url: Url, replay_safe: bool) -> Call {
        Call {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            replay_safe,
        }
    }
}

/// A `2xx` answer.
pub(crate) struct Answer {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

fn parse_base(base_url: &str) -> Result<Url, Error> {
    let url = Url::parse(base_url.trim()).map_err(|e| Error::InvalidUrl(format!("{base_url:?}: {e}")))?;
    if url.scheme() != "http" {
        return Err(Error::InvalidUrl(format!(
            "{base_url:?}: only plain http:// is supported (put a TLS-terminating proxy on loopback in front of floe)"
        )));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(Error::InvalidUrl(format!("{base_url:?}: no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidUrl(format!(
            "{base_url:?}: a base URL has no query or fragment"
        )));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    match ip.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

fn build_http(base: &Url, connect_timeout: Duration) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder().connect_timeout(connect_timeout);
    if is_loopback(base) {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|e| Error::Unreachable(format!("cannot set up the HTTP client: {}", error_chain(&e))))
}

/// What a transport error says: its sources, `: `-separated, without reqwest's own line
/// ("error sending request for url (…)"), which repeats the URL and hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let c = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(c.url(&["v1", "streams"]).as_str(), "http://127.0.0.1:8080/v1/streams");
        let c = Client::new("http://127.0.0.1:8080/floe/").unwrap();
        assert_eq!(
            c.url(&["v1", "streams", "a b/c"]).as_str(),
            "http://127.0.0.1:8080/floe/v1/streams/a%20b%2Fc"
        );
        for bad in [
            "127.0.0.1:8080",
            "https://example.com",
            "http://h/?x=1",
            "file:///tmp",
            "",
        ] {
            assert!(
                matches!(Client::new(bad), Err(Error::InvalidUrl(_))),
                "{bad:?} accepted"
            );
        }
        assert!(is_loopback(&Url::parse("http://localhost:1").unwrap()));
        assert!(is_loopback(&Url::parse("http://[::1]:1").unwrap()));
        assert!(!is_loopback(&Url::parse("http://10.0.0.5:1").unwrap()));
    }
}
