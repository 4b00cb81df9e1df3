//! `floe serve`: opens the catalog and every stream log, plans the pipelines, starts one runner
//! per pipeline statement, serves HTTP, and shuts down in order on SIGTERM / Ctrl-C (stop
//! accepting, finish in-flight requests, commit what is durable, exit).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use floe_catalog::FloeCatalog;
use floe_stream::{LogOptions, StreamLog};
use serde_json::json;
use tokio::sync::watch;

use crate::config::{Config, OnInvalid, StreamConfig};
use crate::error::{Error, Result};
use crate::ingest::dead_letter;
use crate::ingest::decode::RowDecoder;
use crate::ingest::idempotency::IdempotencyStore;
use crate::ingest::schema::{arrow_schema, stream_fields};
use crate::metrics::{Metrics, StreamMetrics};
use crate::pipeline::{Transform, plan_pipeline};

/// How often stream logs are truncated behind their slowest reader.
pub const TRUNCATE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for pipelines to commit at shutdown.
pub const SHUTDOWN_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// One stream: its config, log, decoder and counters.
pub struct StreamState {
    /// The `[[streams]]` entry.
    pub config: StreamConfig,
    /// The durable log.
    pub log: Arc<StreamLog>,
    /// JSON → Arrow decoder for the stream's schema.
    pub decoder: Arc<RowDecoder>,
    /// Counters.
    pub metrics: Arc<StreamMetrics>,
    /// Remembered `Idempotency-Key`s.
    pub idempotency: IdempotencyStore,
}

/// Everything a request handler or pipeline runner needs.
pub struct App {
    /// The configuration.
    pub config: Config,
    /// The Iceberg catalog.
    pub catalog: FloeCatalog,
    /// Streams by name.
    pub streams: HashMap<String, StreamState>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Planned pipeline statements.
    pub transforms: Vec<Transform>,
    /// Point lookups and their caches.
    pub lookup: crate::lookup::LookupEngine,
    positions: Mutex<HashMap<(String, String), (String, u64)>>,
}

impl App {
    /// Builds the app: catalog, logs (with recovery), pipeline plans.
    pub async fn open(mut config: Config) -> Result<Arc<App>> {
        std::fs::create_dir_all(config.data_dir())?;
        let catalog =
            FloeCatalog::connect(&config.catalog_uri(), &config.catalog.name, &config.warehouse_uri()).await?;
        let metrics = Arc::new(Metrics::default());
        // Streams with on_invalid = "dead_letter" get an internal stream for their dead letters.
        let dead_letter_streams: Vec<String> = config
            .streams
            .iter()
            .filter(|s| s.on_invalid == OnInvalid::DeadLetter)
            .map(|s| s.name.clone())
            .collect();
        for s in &dead_letter_streams {
            config.streams.push(dead_letter::stream_config(s));
        }
        let mut logs = HashMap::new();
        for s in &config.streams {
            logs.insert(
                s.name.clone(),
                StreamLog::open(
                    &config.stream_dir(&s.name),
                    LogOptions {
                        max_record_bytes: config.limits.max_record_bytes,
                        ..LogOptions::default()
                    },
                )?,
            );
        }
        let mut streams = HashMap::new();
        let mut schemas = Vec::new();
        for s in &config.streams {
            let fields = stream_fields(s.fields.as_ref());
            let log = logs[&s.name].clone();
            let dead_letters = (s.on_invalid == OnInvalid::DeadLetter)
                .then(|| logs.get(&dead_letter::stream_name(&s.name)))
                .flatten();
            let decoder = RowDecoder::new(
                &fields,
                s.unknown_fields,
                config.limits.max_row_bytes,
                config.limits.max_errors_reported,
                s.fields.is_none(),
            );
            let m = metrics.stream(&s.name);
            m.log_end_offset.store(log.end_offset(), Ordering::Relaxed);
            m.log_disk_bytes.store(log.disk_bytes(), Ordering::Relaxed);
            let idempotency = IdempotencyStore::open(
                &config.stream_dir(&s.name),
                &log,
                dead_letters.map(|l| l.as_ref()),
                (&config.limits).into(),
            )?;
            schemas.push((s.name.clone(), arrow_schema(&fields)));
            streams.insert(
                s.name.clone(),
                StreamState {
                    config: s.clone(),
                    log,
                    decoder: Arc::new(decoder),
                    metrics: m,
                    idempotency,
                },
            );
        }
        let mut sink_names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
        sink_names.extend(dead_letter_streams.iter().map(|s| dead_letter::sink_name(s)));
        let mut transforms = Vec::new();
        for p in &config.pipelines {
            transforms.extend(plan_pipeline(&p.name, &p.sql, &schemas, &sink_names).await?);
        }
        for s in &dead_letter_streams {
            // The namespace and roll interval of the first Iceberg sink the stream feeds.
            let fed = transforms.iter().filter(|t| t.stream == *s).find_map(|t| {
                config
                    .sink(&t.sink)
                    .and_then(|c| c.table.clone().map(|tb| (tb, c.rolling.interval_seconds)))
            });
            let (namespace, interval) = match fed {
                Some((table, interval)) => (
                    table.rsplit_once('.').map(|(ns, _)| ns.to_string()).unwrap_or_default(),
                    interval,
                ),
                None => (
                    dead_letter::DEFAULT_NAMESPACE.to_string(),
                    crate::config::DEFAULT_ROLL_INTERVAL_SECONDS,
                ),
            };
            config.sinks.push(dead_letter::sink_config(s, &namespace, interval));
            let name = dead_letter::stream_name(s);
            transforms.extend(plan_pipeline(&name, &dead_letter::pipeline_sql(s), &schemas, &sink_names).await?);
        }
        let mut seen = std::collections::HashSet::new();
        for t in &transforms {
            if !seen.insert((t.pipeline.clone(), t.sink.clone())) {
                return Err(Error::Config(format!(
                    "pipeline {:?} writes to sink {:?} twice; use one INSERT per sink",
                    t.pipeline, t.sink
                )));
            }
        }
        // Before HTTP serves: every statement's start position is in the catalog, and a log that
        // went backwards or lost rows a pipeline still needs stops floe here.
        crate::pipeline::identity::prepare_positions(&config, &catalog, &streams, &transforms).await?;
        Ok(Arc::new(App {
            config,
            lookup: crate::lookup::LookupEngine::new(catalog.clone()),
            catalog,
            streams,
            metrics,
            transforms,
            positions: Mutex::new(HashMap::new()),
        }))
    }

    /// Records a statement's committed position (for log truncation).
    pub fn publish_position(&self, t: &Transform, position: u64) {
        self.positions
            .lock()
            .expect("positions lock")
            .insert((t.pipeline.clone(), t.sink.clone()), (t.stream.clone(), position));
    }

    /// The lowest committed position over every statement reading `stream`, once all have one.
    fn min_position(&self, stream: &str) -> Option<u64> {
        let positions = self.positions.lock().expect("positions lock");
        let mut min: Option<u64> = None;
        for t in self.transforms.iter().filter(|t| t.stream == stream) {
            let (_, p) = positions.get(&(t.pipeline.clone(), t.sink.clone()))?;
            min = Some(min.map_or(*p, |m: u64| m.min(*p)));
        }
        min
    }

    /// The 429 to answer instead of ingesting into `stream`, if a limit is hit.
    pub fn backpressure(&self, stream: &str) -> Option<Error> {
        let s = self.streams.get(stream)?;
        // A stream's dead letters are part of its ingest: their log's limits apply too.
        if s.config.on_invalid == OnInvalid::DeadLetter
            && let Some(e) = self.backpressure(&dead_letter::stream_name(stream))
        {
            return Some(e);
        }
        let limits = &self.config.limits;
        // The idempotency keys file is part of the stream's disk budget.
        let disk = s.log.disk_bytes() + s.idempotency.disk_bytes();
        if disk > limits.stream_max_disk_bytes {
            return Some(Error::Limit {
                limit: "limits.stream_max_disk_bytes",
                message: format!(
                    "stream {stream:?} holds {disk} bytes of log (not yet committed by every pipeline) and idempotency keys, over {}; retry later",
                    limits.stream_max_disk_bytes
                ),
                status: StatusCode::TOO_MANY_REQUESTS,
            });
        }
        let behind = s.log.end_offset().saturating_sub(self.min_position(stream)?);
        if behind >= limits.max_uncommitted_rows {
            return Some(Error::Limit {
                limit: "limits.max_uncommitted_rows",
                message: format!(
                    "the slowest pipeline of stream {stream:?} is {behind} rows behind, at the limit {}; retry later",
                    limits.max_uncommitted_rows
                ),
                status: StatusCode::TOO_MANY_REQUESTS,
            });
        }
        None
    }

    fn stream_of_pipeline(&self, pipeline: &str) -> Option<String> {
        self.transforms
            .iter()
            .find(|t| t.pipeline == pipeline)
            .map(|t| t.stream.clone())
    }
}

/// The HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    let ingest = post(crate::ingest::post_events);
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
    let status = if failing.is_empty() { "ok" } else { "degraded" };
    (
        StatusCode::OK,
        axum::Json(json!({"status": status, "failing_sinks": failing})),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    for (name, s) in &app.streams {
        let m = app.metrics.stream(name);
        m.log_end_offset.store(s.log.end_offset(), Ordering::Relaxed);
        m.log_start_offset.store(s.log.start_offset(), Ordering::Relaxed);
        m.log_disk_bytes.store(s.log.disk_bytes(), Ordering::Relaxed);
    }
    let body = app.metrics.render(&|p| app.stream_of_pipeline(p));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen.clone();
    let app = App::open(config).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut runners = tokio::task::JoinSet::new();
    for t in app.transforms.clone() {
        runners.spawn(crate::pipeline::runner::run(app.clone(), t, shutdown_rx.clone()));
    }
    let truncator = tokio::spawn(truncate_loop(app.clone(), shutdown_rx.clone()));
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
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_COMMIT_TIMEOUT, async {
        while runners.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "pipelines did not finish committing within {SHUTDOWN_COMMIT_TIMEOUT:?}; they resume from the log at the next start"
        );
    }
    truncator.abort();
    for s in app.streams.values() {
        s.log.close();
    }
    app.catalog.close().await;
    Ok(())
}

async fn truncate_loop(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRUNCATE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        for (name, s) in &app.streams {
            s.idempotency.expire();
            if let Some(min) = app.min_position(name) {
                // Keys must be durable in the keys file before their records leave the log —
                // for a dead-letter log, the keys file of the stream it belongs to as well.
                let owner = app
                    .config
                    .streams
                    .iter()
                    .find(|o| o.on_invalid == OnInvalid::DeadLetter && dead_letter::stream_name(&o.name) == *name)
                    .and_then(|o| app.streams.get(&o.name));
                if let Some(o) = owner
                    && let Err(e) = o.idempotency.sync()
                {
                    tracing::warn!(stream = %name, error = %e, "could not sync idempotency keys; not truncating");
                    continue;
                }
                if let Err(e) = s.idempotency.sync() {
                    tracing::warn!(stream = %name, error = %e, "could not sync idempotency keys; not truncating");
                    continue;
                }
                match s.log.truncate_before(min) {
                    Ok(0) => {}
                    Ok(freed) => tracing::debug!(stream = %name, before = min, freed, "log truncated"),
                    Err(e) => tracing::warn!(stream = %name, error = %e, "log truncation failed"),
                }
            }
        }
    }
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
