//! What can go wrong talking to floe, and the exit code a command line gives each case.

use serde_json::Value;

/// Exit code of a request the server refused (a `4xx`: the caller's fault, retrying the same
/// request does not help).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code of a usage error: a bad flag or argument (clap's own code), or a base URL that is
/// not a plain `http://` URL.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a server that could not be reached, failed (`5xx`) or answered something that is
/// not floe's answer: try again later.
pub const EXIT_UNAVAILABLE: u8 = 3;

/// A request that did not succeed.
///
/// `4xx` answers are [`Error::Refused`], `5xx` answers [`Error::Server`], both with the `code` and
/// `message` of floe's error body (`{"error": {"code", "message", …}}`, docs/http-api.md); a
/// bare answer without that body (a `404` of a route this server does not have) has an empty
/// `code` and the status's reason as `message`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server refused the request (`4xx`). Not retried, except `429` (backpressure), which is
    /// retried until the retry policy gives up and then reported as this.
    #[error("{} {code_sep}{message}", status_text(*status), code_sep = code_prefix(code))]
    Refused {
        /// HTTP status (400 to 499).
        status: u16,
        /// `error.code` of the answer (`invalid_config`, `not_found`, `in_use`, …); empty when
        /// the answer had none.
        code: String,
        /// `error.message` of the answer, for people.
        message: String,
        /// The whole answer (`Value::Null` when it was not JSON): ingest row errors, validation
        /// positions and other fields beside `error`.
        body: Value,
    },
    /// The server failed (`5xx`). `503` is retried until the retry policy gives up.
    #[error("{} {code_sep}{message}", status_text(*status), code_sep = code_prefix(code))]
    Server {
        /// HTTP status (500 to 599).
        status: u16,
        /// `error.code` of the answer (`internal`, `unavailable`); empty when it had none.
        code: String,
        /// `error.message` of the answer.
        message: String,
    },
    /// No answer: the connection failed, was cut, or a timeout passed (after the retries).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// An answer (or a row to send) that is not the JSON expected.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The base URL is not a plain `http://host[:port][/prefix]` URL.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
}

impl Error {
    /// The process exit code for this error: [`EXIT_REFUSED`] (1) for a refusal,
    /// [`EXIT_UNAVAILABLE`] (3) for an unreachable or failing server and an answer that is not
    /// floe's, [`EXIT_USAGE`] (2) for an invalid base URL.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Refused { .. } => EXIT_REFUSED,
            Error::Server { .. } | Error::Unreachable(_) | Error::Decode(_) => EXIT_UNAVAILABLE,
            Error::InvalidUrl(_) => EXIT_USAGE,
        }
    }

    /// The HTTP status of a refusal or server failure; `None` when there was no answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } | Error::Server { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `error.code` of a refusal or server failure (`""` when the answer had none); `None`
    /// when there was no answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } | Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Builds the error of a non-success answer from its status and body.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Error {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let code = json["error"]["code"].as_str().unwrap_or("").to_string();
        let message = match json["error"]["message"].as_str() {
            Some(m) => m.to_string(),
            None => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() || json != Value::Null {
                    reason(status).to_string()
                } else {
                    truncate(text, 500)
                }
            }
        };
        match status {
            400..=499 => Error::Refused {
                status,
                code,
                message,
                body: json,
            },
            500..=599 => Error::Server { status, code, message },
            _ => Error::Decode(format!("HTTP status {status}: {message}")),
        }
    }
}

/// `"400 Bad Request"`: a status with its reason phrase.
pub fn status_text(status: u16) -> String {
    match reason(status) {
        "" => status.to_string(),
        r => format!("{status} {r}"),
    }
}

fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

fn code_prefix(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!("{code}: ")
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floe_error_bodies_become_refused_or_server() {
        let e = Error::from_answer(
            409,
            br#"{"error": {"code": "in_use", "message": "read by pipeline p"}}"#,
        );
        assert!(
            matches!(&e, Error::Refused { status: 409, code, message, .. } if code == "in_use" && message == "read by pipeline p")
        );
        assert_eq!(e.exit_code(), EXIT_REFUSED);
        assert_eq!(e.to_string(), "409 Conflict in_use: read by pipeline p");

        let e = Error::from_answer(503, br#"{"error": {"code": "unavailable", "message": "disk full"}}"#);
        assert!(matches!(&e, Error::Server { status: 503, code, .. } if code == "unavailable"));
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE);
    }

    #[test]
    fn bare_answers_keep_their_status() {
        let e = Error::from_answer(404, b"");
        assert!(
            matches!(&e, Error::Refused { status: 404, code, message, body } if code.is_empty() && message == "Not Found" && body.is_null())
        );
        let e = Error::from_answer(400, b"Failed to deserialize query string");
        assert!(matches!(&e, Error::Refused { message, .. } if message == "Failed to deserialize query string"));
        assert_eq!(Error::Unreachable("x".into()).exit_code(), EXIT_UNAVAILABLE);
        assert_eq!(Error::Decode("x".into()).exit_code(), EXIT_UNAVAILABLE);
        assert_eq!(Error::InvalidUrl("x".into()).exit_code(), EXIT_USAGE);
    }
}
