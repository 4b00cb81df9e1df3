//! CORS for the ingest route: a stream's `http.cors_origins` lets web pages served from those
//! origins call `POST /v1/streams/{stream}/events` from a browser.
//!
//! One `tower_http` [`CorsLayer`] on the route decides per request, from the live settings of
//! the stream named in the path (a stream created or changed at run time included): a preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered by the layer
//! itself, without auth (browsers send no `Authorization` on a preflight); every other answer —
//! a `200` as much as a `400` or `429` — carries `Access-Control-Allow-Origin` when the request's
//! `Origin` is allowed for that stream, so the page can read the body. An origin not listed gets
//! no CORS headers and the browser withholds the answer; requests from non-browser clients are
//! unaffected.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The layer for the ingest route; `origins_of(stream)` gives the origins a stream allows now
/// (none for an unknown stream), so streams added or changed at run time are answered too.
pub fn layer(origins_of: impl Fn(&str) -> Vec<String> + Clone + Send + Sync + 'static) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, parts| {
            allowed(&origins_of, origin, parts.uri.path())
        }))
        .allow_methods([Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::AUTHORIZATION,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::RETRY_AFTER, HeaderName::from_static("idempotent-replayed")])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Whether `origin` may call the ingest route at `path` (`/v1/streams/{stream}/events`).
fn allowed(origins_of: &impl Fn(&str) -> Vec<String>, origin: &HeaderValue, path: &str) -> bool {
    let Some(stream) = path
        .strip_prefix("/v1/streams/")
        .and_then(|p| p.strip_suffix("/events"))
    else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    origins_of(stream).iter().any(|o| o == "*" || o == origin)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn origins_are_per_stream() {
        let origins = HashMap::from([
            ("web".to_string(), vec!["https://app.example.com".to_string()]),
            ("open".to_string(), vec!["*".to_string()]),
        ]);
        let origins = |s: &str| origins.get(s).cloned().unwrap_or_default();
        let app = HeaderValue::from_static("https://app.example.com");
        let other = HeaderValue::from_static("https://evil.example");
        assert!(allowed(&origins, &app, "/v1/streams/web/events"));
        assert!(!allowed(&origins, &other, "/v1/streams/web/events"));
        assert!(allowed(&origins, &other, "/v1/streams/open/events"));
        assert!(!allowed(&origins, &app, "/v1/streams/closed/events"));
        assert!(!allowed(&origins, &app, "/v1/query"));
    }
}
