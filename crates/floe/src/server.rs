//! `floe serve`: opens the [`App`] (catalog, topology, stream logs), has the [`Supervisor`] start
//! one runner per pipeline statement, serves HTTP, and shuts down in order on SIGTERM / Ctrl-C
//! (stop accepting, finish in-flight requests, commit what is durable, exit).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::config::Config;
use crate::control::ControlPlane;
use crate::node::{App, SHUTDOWN_COMMIT_TIMEOUT};
use crate::supervisor::Supervisor;

/// Every route `floe serve` answers, as `(method, path)` (the OpenAPI document in
/// `docs/openapi.json` must list exactly these; a test checks both against the router).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/streams/{stream}/events"),
    ("POST", "/v1/query"),
    ("POST", "/v1/validate_sql"),
    ("GET", "/v1/tables/{table}/rows"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/streams"),
    ("POST", "/v1/streams"),
    ("GET", "/v1/streams/{name}"),
    ("PATCH", "/v1/streams/{name}"),
    ("DELETE", "/v1/streams/{name}"),
    ("GET", "/v1/sinks"),
    ("POST", "/v1/sinks"),
    ("GET", "/v1/sinks/{name}"),
    ("PATCH", "/v1/sinks/{name}"),
    ("DELETE", "/v1/sinks/{name}"),
    ("GET", "/v1/pipelines"),
    ("POST", "/v1/pipelines"),
    ("GET", "/v1/pipelines/{name}"),
    ("PATCH", "/v1/pipelines/{name}"),
    ("DELETE", "/v1/pipelines/{name}"),
    ("GET", "/v1/pipelines/{name}/versions"),
    ("GET", "/v1/tokens"),
    ("POST", "/v1/tokens"),
    ("DELETE", "/v1/tokens/{id}"),
    // The Iceberg REST catalog (crate::rest), with and without the `{prefix}` segment.
    ("GET", "/iceberg/v1/config"),
    ("GET", "/iceberg/v1/namespaces"),
    ("POST", "/iceberg/v1/namespaces"),
    ("GET", "/iceberg/v1/namespaces/{namespace}"),
    ("HEAD", "/iceberg/v1/namespaces/{namespace}"),
    ("DELETE", "/iceberg/v1/namespaces/{namespace}"),
    ("POST", "/iceberg/v1/namespaces/{namespace}/properties"),
    ("GET", "/iceberg/v1/namespaces/{namespace}/tables"),
    ("POST", "/iceberg/v1/namespaces/{namespace}/tables"),
    ("GET", "/iceberg/v1/namespaces/{namespace}/tables/{table}"),
    ("HEAD", "/iceberg/v1/namespaces/{namespace}/tables/{table}"),
    ("POST", "/iceberg/v1/namespaces/{namespace}/tables/{table}"),
    ("DELETE", "/iceberg/v1/namespaces/{namespace}/tables/{table}"),
    ("POST", "/iceberg/v1/namespaces/{namespace}/register"),
    ("POST", "/iceberg/v1/namespaces/{namespace}/tables/{table}/metrics"),
    ("POST", "/iceberg/v1/tables/rename"),
    ("POST", "/iceberg/v1/transactions/commit"),
    ("GET", "/iceberg/v1/{prefix}/namespaces"),
    ("POST", "/iceberg/v1/{prefix}/namespaces"),
    ("GET", "/iceberg/v1/{prefix}/namespaces/{namespace}"),
    ("HEAD", "/iceberg/v1/{prefix}/namespaces/{namespace}"),
    ("DELETE", "/iceberg/v1/{prefix}/namespaces/{namespace}"),
    ("POST", "/iceberg/v1/{prefix}/namespaces/{namespace}/properties"),
    ("GET", "/iceberg/v1/{prefix}/namespaces/{namespace}/tables"),
    ("POST", "/iceberg/v1/{prefix}/namespaces/{namespace}/tables"),
    ("GET", "/iceberg/v1/{prefix}/namespaces/{namespace}/tables/{table}"),
    ("HEAD", "/iceberg/v1/{prefix}/namespaces/{namespace}/tables/{table}"),
    ("POST", "/iceberg/v1/{prefix}/namespaces/{namespace}/tables/{table}"),
    ("DELETE", "/iceberg/v1/{prefix}/namespaces/{namespace}/tables/{table}"),
    ("POST", "/iceberg/v1/{prefix}/namespaces/{namespace}/register"),
    (
        "POST",
        "/iceberg/v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    ),
    ("POST", "/iceberg/v1/{prefix}/tables/rename"),
    ("POST", "/iceberg/v1/{prefix}/transactions/commit"),
];

/// Every route of `floe serve`: [`router`] and the control plane's ([`crate::control`]).
pub fn full_router(app: Arc<App>, control: Arc<ControlPlane>) -> Router {
    router(app).merge(crate::control::routes(control))
}

/// The HTTP routes without the control plane's.
pub fn router(app: Arc<App>) -> Router {
    let ingest = post(crate::ingest::post_events::<App>);
    // `streams[].http.cors_origins` of the live streams (docs/http-api.md, "CORS").
    let live = app.clone();
    let ingest = ingest.layer(crate::ingest::cors::layer(move |stream| {
        live.stream(stream)
            .filter(|s| s.config.http.enabled)
            .map(|s| s.config.http.cors_origins.clone())
            .unwrap_or_default()
    }));
    Router::new()
        .route("/v1/streams/{stream}/events", ingest)
        .route("/v1/query", post(crate::query::post_query))
        .route("/v1/validate_sql", post(crate::pipeline::validate::post_validate_sql))
        .route("/v1/tables/{table}/rows", get(crate::lookup::get_rows))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/iceberg", crate::rest::router())
        .with_state(app)
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let failing: Vec<_> = app
        .metrics
        .failing_sinks()
        .into_iter()
        .map(|(p, s, e)| json!({"pipeline": p, "sink": s, "error": e}))
        .collect();
    let maintenance: Vec<_> = app
        .metrics
        .failing_maintenance()
        .into_iter()
        .map(|(t, e)| json!({"table": t, "error": e}))
        .collect();
    let status = if failing.is_empty() && maintenance.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    (
        StatusCode::OK,
        axum::Json(json!({"status": status, "failing_sinks": failing, "failing_maintenance": maintenance})),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    for (name, s) in app.streams.list() {
        let m = app.metrics.stream(&name);
        m.log_end_offset.store(s.log.end_offset(), Ordering::Relaxed);
        m.log_start_offset.store(s.log.start_offset(), Ordering::Relaxed);
        m.log_disk_bytes.store(s.log.disk_bytes(), Ordering::Relaxed);
    }
    let topology = app.topology();
    let body = app
        .metrics
        .render(&|p| topology.stream_of_pipeline(p).map(str::to_string));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen.clone();
    let app = App::open(config).await?;
    let supervisor = Supervisor::start(app.clone());
    let control = ControlPlane::open(supervisor.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (server.listen): {e}"))?;
    tracing::info!(%listen, data_dir = %app.config.data_dir().display(), "floe is serving");
    eprintln!(
        "floe listening on http://{listen} (data in {})",
        app.config.data_dir().display()
    );
    axum::serve(listener, full_router(app.clone(), control))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("HTTP stopped; committing what is durable");
    if !supervisor.shutdown(SHUTDOWN_COMMIT_TIMEOUT).await {
        tracing::warn!(
            "pipelines did not finish committing within {SHUTDOWN_COMMIT_TIMEOUT:?}; they resume from the log at the next start"
        );
    }
    for s in app.streams.values() {
        s.log.close();
    }
    app.catalog.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
