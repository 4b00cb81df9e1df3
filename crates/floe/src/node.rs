//! The node: one floe process's state — settings, catalog, stream registry, metrics, lookup
//! engine, the live [`Topology`] and the committed positions — and what each stage asks of it.
//!
//! Stages never see [`App`]: ingest takes an [`IngestNode`](crate::ingest::IngestNode), the
//! runner a [`RunnerNode`](crate::pipeline::runner::RunnerNode), and each HTTP area its own state
//! through axum's `FromRef` (implemented here). The node also owns the two rules that span
//! stages: backpressure (a stream's log or its slowest pipeline over a limit → 429) and log
//! truncation behind the slowest statement reading a stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::FromRef;
use axum::http::StatusCode;
use floe_catalog::FloeCatalog;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pipeline::Transform;
use crate::stream::StreamState;
use crate::stream::{StreamRegistry, open_streams};
use crate::topology::Topology;

/// How often stream logs are truncated behind their slowest reader.
pub const TRUNCATE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for pipelines to commit at shutdown.
pub const SHUTDOWN_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request handler or pipeline runner needs.
pub struct App {
    /// The configuration floe started with (settings: server, catalog, limits, auth). The live
    /// streams, sinks and pipelines are in [`App::topology`].
    pub config: Config,
    /// The Iceberg catalog.
    pub catalog: FloeCatalog,
    /// The open streams.
    pub streams: StreamRegistry,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Point lookups and their caches.
    pub lookup: Arc<crate::lookup::LookupEngine>,
    topology: RwLock<Arc<Topology>>,
    positions: Mutex<HashMap<(String, String), (String, u64)>>,
    /// Held while a stream's truncation point is computed and applied, and while the topology
    /// changes: a statement added to the topology is seen by every truncation after that.
    truncation: Mutex<()>,
}

impl App {
    /// Builds the app: catalog, topology (pipeline plans), logs (with recovery), start positions.
    pub async fn open(config: Config) -> Result<Arc<App>> {
        std::fs::create_dir_all(config.data_dir())?;
        let catalog = FloeCatalog::connect_with_storage(
            &config.catalog_uri(),
            &config.catalog.name,
            &config.warehouse_uri(),
            &config.s3_options(),
        )
        .await?;
        // A warehouse floe cannot reach (wrong credentials, a wrong endpoint) stops it here,
        // before anything is acknowledged.
        catalog.storage().check_access().await.map_err(|e| {
            Error::Config(format!(
                "catalog.warehouse {:?} cannot be reached: {}",
                config.warehouse_uri(),
                e.message()
            ))
        })?;
        let metrics = Arc::new(Metrics::default());
        // What runs: floe.toml's objects and those created through the API (stored in the catalog).
        let stored = crate::objects::parse_stored(&catalog.objects().await?)?;
        let declared = crate::objects::merge(&config, &stored)?;
        let topology = Topology::from_config(&declared).await?;
        let streams = StreamRegistry::default();
        for s in open_streams(&config, &topology.streams, &metrics, &streams)? {
            streams.insert(s);
        }
        // Before HTTP serves: every statement's start position is in the catalog, and a log that
        // went backwards or lost rows a pipeline still needs stops floe here.
        crate::pipeline::identity::prepare_positions(topology.running(), &catalog, &streams, &topology.statements)
            .await?;
        for p in &topology.declared.pipelines {
            crate::pipeline::identity::record_version_start(&catalog, p, &topology.statements).await?;
        }
        Ok(Arc::new(App {
            config,
            lookup: Arc::new(crate::lookup::LookupEngine::new(catalog.clone())),
            catalog,
            streams,
            metrics,
            topology: RwLock::new(Arc::new(topology)),
            positions: Mutex::new(HashMap::new()),
            truncation: Mutex::new(()),
        }))
    }

    /// The live topology.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().expect("topology lock").clone()
    }

    /// Every planned statement of the live topology.
    pub fn statements(&self) -> Vec<Transform> {
        self.topology().statements.clone()
    }

    /// The open stream `name`.
    pub fn stream(&self, name: &str) -> Option<Arc<StreamState>> {
        self.streams.get(name)
    }

    /// Makes `topology` the live one (see [`crate::supervisor`], which brings the runners in
    /// line with it).
    pub(crate) fn set_topology(&self, topology: Arc<Topology>) {
        let _truncation = self.truncation.lock().expect("truncation lock");
        *self.topology.write().expect("topology lock") = topology;
    }

    /// Records a statement's committed position (for log truncation).
    pub fn publish_position(&self, t: &Transform, position: u64) {
        self.positions
            .lock()
            .expect("positions lock")
            .insert((t.pipeline.clone(), t.sink.clone()), (t.stream.clone(), position));
    }

    /// Forgets the position of a statement that no longer runs.
    pub(crate) fn forget_position(&self, pipeline: &str, sink: &str) {
        self.positions
            .lock()
            .expect("positions lock")
            .remove(&(pipeline.to_string(), sink.to_string()));
    }

    /// The lowest committed position over every statement reading `stream`, once all have one.
    fn min_position(&self, stream: &str) -> Option<u64> {
        let topology = self.topology();
        let positions = self.positions.lock().expect("positions lock");
        let mut min: Option<u64> = None;
        for t in topology.statements_reading(stream) {
            let (_, p) = positions.get(&(t.pipeline.clone(), t.sink.clone()))?;
            min = Some(min.map_or(*p, |m: u64| m.min(*p)));
        }
        min
    }

    /// The 429 to answer instead of ingesting into `stream`, if a limit is hit.
    pub fn backpressure(&self, stream: &str) -> Option<Error> {
        let s = self.streams.get(stream)?;
        // A stream's dead letters are part of its ingest: their log's limits apply too.
        if let Some(dl) = self.topology().dead_letter_stream_of(stream)
            && let Some(e) = self.backpressure(dl)
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

    /// One truncation pass over the open streams: expired idempotency keys go, and each log is
    /// truncated behind the slowest statement reading it.
    pub fn truncate_logs(&self) {
        for (name, s) in self.streams.list() {
            s.idempotency.expire();
            let _truncation = self.truncation.lock().expect("truncation lock");
            let Some(min) = self.min_position(&name) else {
                continue;
            };
            // Keys must be durable in the keys file before their records leave the log — for a
            // dead-letter log, the keys file of the stream it belongs to as well.
            let owner = self
                .topology()
                .owner_of_dead_letters(&name)
                .and_then(|o| self.streams.get(o));
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

// Each stage takes only what it needs from the node.

impl crate::ingest::IngestNode for App {
    fn streams(&self) -> &StreamRegistry {
        &self.streams
    }

    fn auth(&self) -> &crate::config::AuthConfig {
        &self.config.auth
    }

    fn limits(&self) -> &crate::config::Limits {
        &self.config.limits
    }

    fn backpressure(&self, stream: &str) -> Option<Error> {
        App::backpressure(self, stream)
    }
}

impl crate::pipeline::runner::RunnerNode for App {
    fn catalog(&self) -> &FloeCatalog {
        &self.catalog
    }

    fn streams(&self) -> &StreamRegistry {
        &self.streams
    }

    fn sink_config(&self, name: &str) -> Option<crate::config::SinkConfig> {
        App::topology(self).sink(name).cloned()
    }

    fn pipeline_config(&self, name: &str) -> Option<crate::config::PipelineConfig> {
        App::topology(self).pipeline(name).cloned()
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn batch_bytes(&self) -> usize {
        self.config.limits.batch_bytes
    }

    fn commit_retries(&self) -> u32 {
        self.config.limits.commit_retries
    }

    fn publish_position(&self, t: &Transform, position: u64) {
        App::publish_position(self, t, position)
    }
}

impl FromRef<Arc<App>> for crate::query::QueryState {
    fn from_ref(app: &Arc<App>) -> Self {
        crate::query::QueryState {
            catalog: app.catalog.clone(),
            limits: app.config.limits.clone(),
            auth: app.config.auth.clone(),
        }
    }
}

impl FromRef<Arc<App>> for crate::lookup::LookupState {
    fn from_ref(app: &Arc<App>) -> Self {
        crate::lookup::LookupState {
            engine: app.lookup.clone(),
            limits: app.config.limits.clone(),
            auth: app.config.auth.clone(),
        }
    }
}

impl FromRef<Arc<App>> for crate::pipeline::validate::ValidateState {
    fn from_ref(app: &Arc<App>) -> Self {
        crate::pipeline::validate::ValidateState {
            config: Arc::new(app.topology().resolved_config()),
            auth: app.config.auth.clone(),
        }
    }
}

impl FromRef<Arc<App>> for crate::rest::RestState {
    fn from_ref(app: &Arc<App>) -> Self {
        crate::rest::RestState {
            catalog: app.catalog.clone(),
            config: crate::rest::RestConfig {
                catalog: app.config.catalog.clone(),
                auth: app.config.auth.clone(),
                // Resolved once, when the catalog was opened (not from the environment per request).
                s3: app
                    .catalog
                    .warehouse_rule()
                    .bucket()
                    .map(|_| app.catalog.s3_options().clone()),
            },
        }
    }
}
