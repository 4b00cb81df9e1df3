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
use crate::node::{App, SHUTDOWN_COMMIT_TIMEOUT};
use crate::supervisor::Supervisor;

/// The HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    let ingest = post(crate::ingest::post_events::<App>);
    // `streams[].http.cors_origins` (docs/http-api.md, "CORS").
    let ingest = match crate::ingest::cors::layer(&app.config) {
        Some(cors) => ingest.layer(cors),
        None => ingest,
    };
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
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (server.listen): {e}"))?;
    tracing::info!(%listen, data_dir = %app.config.data_dir().display(), "floe is serving");
    eprintln!(
        "floe listening on http://{listen} (data in {})",
        app.config.data_dir().display()
    );
    axum::serve(listener, router(app.clone()))
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
