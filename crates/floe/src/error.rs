//! floe's error type. Each variant knows whose fault it is — the caller's, an outside
//! system's, or ours — and that decides the HTTP status and whether a retry can help.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `Result` with floe's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in floe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration or pipeline definition problem.
    #[error("{0}")]
    Config(String),
    /// The caller asked for something that does not exist.
    #[error("{what} {name:?} does not exist")]
    NotFound {
        /// Kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The caller sent something invalid.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// The request conflicts with the state of what it names (409): the name is taken, the
    /// object is declared in `floe.toml`, another change landed first, it is in use.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// A named limit was hit.
    #[error("{message} (limit {limit})")]
    Limit {
        /// The limit's config key.
        limit: &'static str,
        /// What happened.
        message: String,
        /// HTTP status to answer (413 or 429).
        status: StatusCode,
    },
    /// Missing, unknown or insufficient bearer token (401 / 403).
    #[error("{message}")]
    Auth {
        /// 401 or 403.
        status: StatusCode,
        /// What is missing.
        message: String,
    },
    /// SQL planning or execution failed.
    #[error("{0}")]
    Sql(#[from] datafusion::error::DataFusionError),
    /// The Iceberg library or catalog failed.
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// The stream log failed.
    #[error("stream log: {0}")]
    Log(#[from] floe_stream::Error),
    /// Arrow failed (a bug or a type mismatch).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// File system error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// floe's own failure (a task that died, a channel that closed): never the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// floe cannot serve the request right now, through no fault of the caller, and the same
    /// request may succeed later (503 `unavailable`, `Retry-After`).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Whose fault an error is. With [`Class::retryable`] this decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The caller sent something floe refuses (4xx): fixing the request is the way out.
    Caller,
    /// Something floe depends on but does not control failed: a full disk, storage or the
    /// catalog busy for a moment. Always a 5xx; usually retryable.
    Outside,
    /// floe's own failure (a bug, a task that died, an I/O or catalog error it cannot explain):
    /// a 5xx with code `internal`.
    Internal,
}

/// How an [`Error`] answers: decided in one place, [`Error::class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// Whose fault it is.
    pub domain: Domain,
    /// Whether the same request may succeed later (503 / 429 with `Retry-After`).
    pub retryable: bool,
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable `error.code`.
    pub code: &'static str,
    /// The limit's config key, for limit errors.
    pub limit: Option<&'static str>,
}

impl Class {
    fn caller(status: StatusCode, code: &'static str) -> Self {
        Class {
            domain: Domain::Caller,
            retryable: false,
            status,
            code,
            limit: None,
        }
    }

    /// floe's own failure: 500 `internal`, or 503 `unavailable` when a retry can help.
    fn internal(retryable: bool) -> Self {
        Class {
            domain: Domain::Internal,
            retryable,
            status: if retryable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            },
            code: if retryable { "unavailable" } else { "internal" },
            limit: None,
        }
    }

    fn outside() -> Self {
        Class {
            domain: Domain::Outside,
            ..Class::internal(true)
        }
    }
}

/// Limit key of the log's record size (`[limits] max_record_bytes`).
pub const RECORD_LIMIT: &str = "limits.max_record_bytes";

/// An I/O error whose cause lies outside floe (full disk, quota): retry once space is freed.
fn io_outside(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded | std::io::ErrorKind::ResourceBusy
    )
}

/// Whether a DataFusion error (its root cause) is the query's fault: it does not plan (unknown
/// table or column, bad syntax, unsupported feature), or fails on the query's own values (a
/// failed cast, division by zero, overflow). Everything else — reading the tables, the catalog,
/// memory — is floe's.
fn sql_class(e: &datafusion::error::DataFusionError) -> Class {
    use arrow::error::ArrowError as A;
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::Plan(_) | D::SQL(..) | D::SchemaError(..) | D::NotImplemented(_) | D::Configuration(_) => {
            Class::caller(StatusCode::BAD_REQUEST, "sql_error")
        }
        D::Execution(_) => Class::caller(StatusCode::BAD_REQUEST, "sql_error"),
        D::ArrowError(a, _) => match a.as_ref() {
            A::IoError(..) | A::ExternalError(_) | A::MemoryError(_) => Class::internal(false),
            _ => Class::caller(StatusCode::BAD_REQUEST, "sql_error"),
        },
        D::ResourcesExhausted(_) => Class::internal(true),
        D::External(x) => match x.downcast_ref::<iceberg::Error>() {
            Some(i) => iceberg_class(i),
            None => Class::internal(false),
        },
        _ => Class::internal(false),
    }
}

fn iceberg_class(e: &iceberg::Error) -> Class {
    match e.kind() {
        iceberg::ErrorKind::TableNotFound | iceberg::ErrorKind::NamespaceNotFound => {
            Class::caller(StatusCode::NOT_FOUND, "not_found")
        }
        _ if e.retryable() => Class::outside(),
        _ => Class::internal(false),
    }
}

impl Error {
    /// The one place that decides how an error answers.
    pub fn class(&self) -> Class {
        match self {
            // Config errors reach HTTP only from the validate paths (a pipeline definition the
            // caller sent); runtime failures must use `Internal`.
            Error::Config(_) => Class::caller(StatusCode::BAD_REQUEST, "invalid_config"),
            Error::NotFound { .. } => Class::caller(StatusCode::NOT_FOUND, "not_found"),
            Error::BadRequest { code, .. } => Class::caller(StatusCode::BAD_REQUEST, code),
            Error::Conflict { code, .. } => Class::caller(StatusCode::CONFLICT, code),
            Error::Limit { limit, status, .. } => {
                let retryable = matches!(*status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE);
                Class {
                    domain: Domain::Caller,
                    retryable,
                    status: *status,
                    code: if *status == StatusCode::TOO_MANY_REQUESTS {
                        "backpressure"
                    } else {
                        "limit_exceeded"
                    },
                    limit: Some(limit),
                }
            }
            Error::Auth { status, .. } if *status == StatusCode::FORBIDDEN => Class::caller(*status, "forbidden"),
            Error::Auth { status, .. } => Class::caller(*status, "unauthorized"),
            Error::Sql(e) => sql_class(e),
            Error::Iceberg(e) => iceberg_class(e),
            Error::Log(floe_stream::Error::RecordTooLarge { .. }) => Class {
                limit: Some(RECORD_LIMIT),
                ..Class::caller(StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded")
            },
            Error::Log(floe_stream::Error::Io { source, .. }) if io_outside(source) => Class::outside(),
            Error::Log(e) => Class::internal(e.is_retryable()),
            Error::Io(e) if io_outside(e) => Class::outside(),
            Error::Arrow(_) | Error::Io(_) | Error::Internal(_) => Class::internal(false),
            Error::Unavailable(_) => Class::internal(true),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.class().status
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        self.class().code
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.class().retryable
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let class = self.class();
        if class.status.is_server_error() {
            tracing::error!(error = %self, code = class.code, "request failed");
        }
        let mut body = json!({"error": {"code": class.code, "message": self.to_string()}});
        if let Some(limit) = class.limit {
            body["error"]["limit"] = json!(limit);
        }
        if class.retryable {
            body["error"]["retryable"] = json!(true);
        }
        let mut resp = (class.status, axum::Json(body)).into_response();
        if class.retryable {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: Error) -> (StatusCode, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_failures_are_5xx_internal_never_invalid_config() {
        let io = Error::Io(std::io::Error::other("disk gone"));
        let arrow = Error::Arrow(arrow::error::ArrowError::ComputeError("x".into()));
        let log = Error::Log(floe_stream::Error::Failed { reason: "x".into() });
        let iceberg = Error::Iceberg(iceberg::Error::new(iceberg::ErrorKind::Unexpected, "catalog"));
        let ext = Error::Sql(datafusion::error::DataFusionError::External(Box::new(
            iceberg::Error::new(iceberg::ErrorKind::Unexpected, "manifest unreadable"),
        )));
        for e in [io, arrow, log, iceberg, ext, Error::Internal("join".into())] {
            let (status, body) = answer(e).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
            assert_eq!(body["error"]["code"], "internal", "{body}");
        }
    }

    #[tokio::test]
    async fn retryable_outside_failures_are_503_with_retry_after() {
        let full = Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        let closed = Error::Log(floe_stream::Error::Closed);
        for e in [full, closed] {
            assert!(e.is_retryable());
            let resp = e.into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        }
    }

    #[tokio::test]
    async fn an_over_large_record_is_a_413_naming_the_limit() {
        let (status, body) = answer(Error::Log(floe_stream::Error::RecordTooLarge { size: 10, limit: 5 })).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["limit"], RECORD_LIMIT);
    }

    #[test]
    fn caller_faults_stay_4xx() {
        use datafusion::error::DataFusionError as D;
        assert_eq!(Error::Sql(D::Plan("no table".into())).status(), StatusCode::BAD_REQUEST);
        let cast = D::ArrowError(Box::new(arrow::error::ArrowError::CastError("'x' to int".into())), None);
        assert_eq!(Error::Sql(cast).status(), StatusCode::BAD_REQUEST);
        let missing = Error::Iceberg(iceberg::Error::new(iceberg::ErrorKind::TableNotFound, "t"));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(Error::Config("x".into()).class().domain, Domain::Caller);
        let bp = Error::Limit {
            limit: "limits.max_uncommitted_rows",
            message: "behind".into(),
            status: StatusCode::TOO_MANY_REQUESTS,
        };
        assert_eq!((bp.code(), bp.is_retryable()), ("backpressure", true));
    }
}
