//! `streams[].http.cors_origins` through the real router on a real socket: a browser preflight
//! from a listed origin is answered (without a token, even on an `auth = true` stream), answers to
//! that origin carry `Access-Control-Allow-Origin`, and an origin that is not listed — or a stream
//! that lists none — gets no CORS headers.

use std::path::Path;
use std::sync::Arc;

use floe::config::Config;
use floe::node::App;
use reqwest::{Method, StatusCode};

const APP_ORIGIN: &str = "https://app.example.com";
const TOKEN: &str = "cors-test-token";

/// Serves an `App` on `floe.toml` text `extra` (plus a data dir) at a free port; returns its URL.
async fn serve(dir: &Path, extra: &str) -> String {
    let text = format!("[server]\ndata_dir = \"data\"\n\n{extra}");
    let config = Config::from_toml(&text, &dir.join("floe.toml"), dir).unwrap();
    let app: Arc<App> = App::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, floe::server::router(app)).await });
    url
}

fn streams() -> String {
    format!(
        r#"
[[streams]]
name = "web"
http = {{ auth = true, cors_origins = ["{APP_ORIGIN}", "http://localhost:3000"] }}

[[streams]]
name = "any"
http = {{ cors_origins = ["*"] }}

[[streams]]
name = "plain"

[[auth.tokens]]
token  = "{TOKEN}"
scopes = ["send:web"]
"#
    )
}

async fn preflight(url: &str, stream: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("{url}/v1/streams/{stream}/events"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

async fn post(url: &str, stream: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/streams/{stream}/events"))
        .header("origin", origin)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("idempotency-key", format!("k-{stream}-{origin}"))
        .body(r#"[{"a": 1}]"#)
        .send()
        .await
        .unwrap()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_get_cors_answers_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve(dir.path(), &streams()).await;

    // The preflight needs no token, though the stream does.
    let resp = preflight(&url, "web", APP_ORIGIN).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP_ORIGIN));
    let methods = header(&resp, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let headers = header(&resp, "access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in ["content-type", "authorization", "idempotency-key", "content-encoding"] {
        assert!(headers.contains(h), "{h} in {headers}");
    }
    assert!(header(&resp, "access-control-max-age").is_some());

    // The real request: accepted, and readable by the page.
    let resp = post(&url, "web", APP_ORIGIN).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP_ORIGIN));
    let exposed = header(&resp, "access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("idempotent-replayed") && exposed.contains("retry-after"),
        "{exposed}"
    );
    // Errors are readable by the page too: an unknown token is a 401 it must be able to show.
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/streams/web/events"))
        .header("origin", APP_ORIGIN)
        .header("authorization", "Bearer wrong")
        .body("[{}]")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP_ORIGIN));

    // Another listed origin of the same stream, and `*`.
    let resp = preflight(&url, "web", "http://localhost:3000").await;
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let resp = preflight(&url, "any", "https://anyone.example").await;
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://anyone.example")
    );

    // An origin the stream does not list, and a stream that lists none: no CORS headers.
    for (stream, origin) in [("web", "https://evil.example"), ("plain", APP_ORIGIN)] {
        let resp = preflight(&url, stream, origin).await;
        assert_eq!(header(&resp, "access-control-allow-origin"), None, "{stream} {origin}");
        let resp = post(&url, stream, origin).await;
        assert_eq!(header(&resp, "access-control-allow-origin"), None, "{stream} {origin}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_origins_there_are_no_cors_headers() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve(dir.path(), "[[streams]]\nname = \"events\"\n").await;
    // The CORS layer is on the route for every stream (a stream's origins may be set at run
    // time); a preflight for a stream listing none gets no CORS headers, so the browser refuses.
    let resp = preflight(&url, "events", APP_ORIGIN).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    let resp = post(&url, "events", APP_ORIGIN).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
}
