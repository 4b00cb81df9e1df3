//! Errors of the Iceberg REST API in the spec's shape, `{"error": {"message", "type", "code"}}`.
//!
//! The `type` names are the exception classes the spec and the clients use (PyIceberg and the
//! Java client map them, and the status, to their own exceptions): a 404 on a table is
//! `NoSuchTableException`, a failed requirement or lost compare-and-swap is a 409
//! `CommitFailedException`, a commit whose SQLite `COMMIT` failed is a 500
//! `CommitStateUnknownException`, and so on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iceberg::ErrorKind;
use serde_json::json;

/// One error answer of the REST API.
#[derive(Debug)]
pub struct RestError {
    /// HTTP status.
    pub status: StatusCode,
    /// The spec's `type` (an exception class name).
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// `Result` of a REST handler.
pub type RestResult<T> = Result<T, RestError>;

impl RestError {
    /// A 400 `BadRequestException`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// An error with the given status and type.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// A 404 for a route floe does not serve.
    pub fn no_route(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            format!(
                "{method} {path} is not a route of floe's Iceberg REST catalog (GET /iceberg/v1/config lists them)"
            ),
        )
    }
}

impl From<iceberg::Error> for RestError {
    fn from(e: iceberg::Error) -> Self {
        // The message with its sources: the catalog puts the useful part in the source chain.
        let mut message = e.message().to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        let (status, kind) = match e.kind() {
            // The SQLite COMMIT itself failed: the spec's answer is a 5xx CommitStateUnknown, so
            // the client reloads instead of retrying or cleaning up.
            _ if floe_catalog::commit_state_unknown(&e) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "CommitStateUnknownException")
            }
            ErrorKind::TableNotFound => (StatusCode::NOT_FOUND, "NoSuchTableException"),
            ErrorKind::NamespaceNotFound => (StatusCode::NOT_FOUND, "NoSuchNamespaceException"),
            ErrorKind::TableAlreadyExists | ErrorKind::NamespaceAlreadyExists => {
                (StatusCode::CONFLICT, "AlreadyExistsException")
            }
            // A failed requirement, a lost compare-and-swap, or a fenced sink position.
            ErrorKind::CatalogCommitConflicts | ErrorKind::PreconditionFailed => {
                (StatusCode::CONFLICT, "CommitFailedException")
            }
            ErrorKind::DataInvalid => (StatusCode::BAD_REQUEST, "BadRequestException"),
            ErrorKind::FeatureUnsupported => (StatusCode::NOT_ACCEPTABLE, "UnsupportedOperationException"),
            _ if e.retryable() => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableException"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "ServerErrorException"),
        };
        Self::new(status, kind, message)
    }
}

impl From<crate::error::Error> for RestError {
    fn from(e: crate::error::Error) -> Self {
        let status = e.status();
        let kind = match status {
            StatusCode::UNAUTHORIZED => "NotAuthorizedException",
            StatusCode::FORBIDDEN => "ForbiddenException",
            StatusCode::BAD_REQUEST => "BadRequestException",
            StatusCode::NOT_FOUND => "NotFoundException",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailableException",
            _ => "ServerErrorException",
        };
        Self::new(status, kind, e.to_string())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(kind = self.kind, message = %self.message, "iceberg REST request failed");
        }
        let body = json!({"error": {"message": self.message, "type": self.kind, "code": self.status.as_u16()}});
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(kind: ErrorKind) -> (u16, &'static str) {
        let e = RestError::from(iceberg::Error::new(kind, "x"));
        (e.status.as_u16(), e.kind)
    }

    #[test]
    fn iceberg_errors_map_to_the_spec_exceptions() {
        assert_eq!(mapped(ErrorKind::TableNotFound), (404, "NoSuchTableException"));
        assert_eq!(mapped(ErrorKind::NamespaceNotFound), (404, "NoSuchNamespaceException"));
        assert_eq!(mapped(ErrorKind::TableAlreadyExists), (409, "AlreadyExistsException"));
        assert_eq!(
            mapped(ErrorKind::NamespaceAlreadyExists),
            (409, "AlreadyExistsException")
        );
        assert_eq!(
            mapped(ErrorKind::CatalogCommitConflicts),
            (409, "CommitFailedException")
        );
        assert_eq!(mapped(ErrorKind::PreconditionFailed), (409, "CommitFailedException"));
        assert_eq!(mapped(ErrorKind::DataInvalid), (400, "BadRequestException"));
        assert_eq!(mapped(ErrorKind::Unexpected), (500, "ServerErrorException"));
        let busy = RestError::from(iceberg::Error::new(ErrorKind::Unexpected, "busy").with_retryable(true));
        // A failed COMMIT is recognised by the catalog's marker, not by its text.
        let lookalike = RestError::from(iceberg::Error::new(ErrorKind::Unexpected, "commit state unknown"));
        assert_eq!(lookalike.kind, "ServerErrorException");
        assert_eq!((busy.status.as_u16(), busy.kind), (503, "ServiceUnavailableException"));
    }

    #[tokio::test]
    async fn the_body_has_the_spec_shape() {
        let resp = RestError::bad_request("no").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": {"message": "no", "type": "BadRequestException", "code": 400}})
        );
        let auth = RestError::from(crate::error::Error::Auth {
            status: StatusCode::FORBIDDEN,
            message: "scope".into(),
        });
        assert_eq!((auth.status.as_u16(), auth.kind), (403, "ForbiddenException"));
        let auth = RestError::from(crate::error::Error::Auth {
            status: StatusCode::UNAUTHORIZED,
            message: "token".into(),
        });
        assert_eq!((auth.status.as_u16(), auth.kind), (401, "NotAuthorizedException"));
    }
}
