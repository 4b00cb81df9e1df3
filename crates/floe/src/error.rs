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
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Limit { status, .. } => *status,
            Error::Auth { status, .. } => *status,
            Error::Sql(e) => match e.find_root() {
                datafusion::error::DataFusionError::Plan(_)
                | datafusion::error::DataFusionError::SQL(..)
                | datafusion::error::DataFusionError::SchemaError(..)
                | datafusion::error::DataFusionError::NotImplemented(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Log(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            Error::Iceberg(e) if e.retryable() => StatusCode::SERVICE_UNAVAILABLE,
            Error::Iceberg(_) | Error::Log(_) | Error::Arrow(_) | Error::Io(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config(_) => "invalid_config",
            Error::NotFound { .. } => "not_found",
            Error::BadRequest { code, .. } => code,
            Error::Limit { .. } => "limit_exceeded",
            Error::Auth { status, .. } if *status == StatusCode::FORBIDDEN => "forbidden",
            Error::Auth { .. } => "unauthorized",
            Error::Sql(_) => "sql_error",
            Error::Iceberg(_) => "iceberg_error",
            Error::Log(_) => "stream_log_error",
            Error::Arrow(_) => "internal_error",
            Error::Io(_) => "io_error",
            Error::Internal(_) => "internal",
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.status(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        )
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let code = if status == StatusCode::TOO_MANY_REQUESTS {
            "backpressure"
        } else {
            self.code()
        };
        let mut body = json!({"error": {"code": code, "message": self.to_string()}});
        if let Error::Limit { limit, .. } = &self {
            body["error"]["limit"] = json!(limit);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}
