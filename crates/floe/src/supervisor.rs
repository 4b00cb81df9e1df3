//! The runner supervisor: brings what runs in line with the [`Topology`] — one runner task per
//! pipeline statement, each with its own stop signal, the log truncation loop and the table
//! maintenance loop ([`crate::maintenance::policy`], per iceberg sink's `[sinks.maintenance]`
//! and per table whose `floe.maintenance.*` properties opt in) — and changes the topology of a running floe: adding or removing a stream, sink or pipeline is a call.
//!
//! ```text
//!  add_stream / add_sink / add_pipeline / remove_…
//!    └─► the declaration, edited ─► Config::validate ─► Topology::resolve (plans every statement)
//!          └─► diff with the live topology:
//!                streams that go:     out of the registry (404 from now on), in-flight requests
//!                                     finish, then their logs close
//!                statements that go:  stop signal ─► the runner reads to the log's end, commits, stops
//!                                     (also those whose pipeline or sink settings change: they
//!                                     come back below, from the positions just committed)
//!                streams that change: the same log, keys and counters under the new settings
//!                                     (new fields: the sinks' tables evolve first, and the
//!                                     statements reading the stream are planned anew)
//!                streams that come:   logs opened (recovered) and registered
//!                the new topology is live (backpressure and truncation see it)
//!                statements that come: start position recorded (pipeline::identity, as at start),
//!                                     then a runner each, and the start of each pipeline's
//!                                     version at those positions (docs/control-plane.md)
//! ```
//!
//! Every change is planned and checked whole before anything stops ([`Supervisor::preview`]
//! runs the same checks alone): the edited declaration, every statement's SQL, and the table of
//! each statement that comes ([`crate::sink::check`]).
//!
//! A stream is only removed when no pipeline reads it (its own dead-letter pipeline aside), a sink
//! when no pipeline writes it. Changes are serialized; they are not written back to `floe.toml`:
//! a restart runs the configured topology.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, PipelineConfig, SinkConfig, StreamConfig};
use crate::error::{Error, Result};
use crate::node::{App, SHUTDOWN_COMMIT_TIMEOUT, TRUNCATE_INTERVAL};
use crate::objects::{self, ObjectConfig};
use crate::pipeline::Transform;
use crate::stream::{StreamState, open_streams};
use crate::topology::Topology;

/// Longest wait for the requests in flight to a removed stream.
pub const REMOVE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A supervised task and its stop signal.
struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Task {
    /// Asks the task to stop and waits up to `timeout` for it; aborts it after that.
    async fn stop(mut self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        match tokio::time::timeout(timeout, &mut self.handle).await {
            Ok(_) => true,
            Err(_) => {
                self.handle.abort();
                false
            }
        }
    }
}

/// Runs the statements of the live topology and changes it.
pub struct Supervisor {
    app: Arc<App>,
    changes: tokio::sync::Mutex<()>,
    runners: Mutex<HashMap<(String, String), Task>>,
    truncator: Mutex<Option<Task>>,
    maintainer: Mutex<Option<Task>>,
}

impl Supervisor {
    /// Starts a runner for every statement of `app`'s topology, the truncation loop and the
    /// maintenance loop.
    pub fn start(app: Arc<App>) -> Arc<Supervisor> {
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(truncate_loop(app.clone(), rx));
        let (maintainer_stop, maintainer_rx) = watch::channel(false);
        let maintainer = tokio::spawn(maintenance_loop(app.clone(), maintainer_rx));
        let supervisor = Supervisor {
            app: app.clone(),
            changes: tokio::sync::Mutex::new(()),
            runners: Mutex::new(HashMap::new()),
            truncator: Mutex::new(Some(Task { stop, handle })),
            maintainer: Mutex::new(Some(Task {
                stop: maintainer_stop,
                handle: maintainer,
            })),
        };
        for t in app.statements() {
            supervisor.spawn(t);
        }
        Arc::new(supervisor)
    }

    /// The app it runs.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The `(pipeline, sink)` of every running statement, sorted.
    pub fn running(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = self.runners.lock().expect("runners lock").keys().cloned().collect();
        out.sort();
        out
    }

    /// Adds a stream (with its dead-letter stream, sink and pipeline when `on_invalid =
    /// "dead_letter"`); it takes requests once this returns.
    pub async fn add_stream(&self, stream: StreamConfig) -> Result<()> {
        self.change(move |_, c| {
            c.streams.push(stream);
            Ok(())
        })
        .await
    }

    /// Removes a declared stream, refused while a pipeline reads it (or its dead letters). Its
    /// requests answer 404 from the start of the call; its log stays on disk (the control plane
    /// moves it aside: `stream::retire_log`).
    pub async fn remove_stream(&self, name: &str) -> Result<()> {
        self.remove_stream_and_readers(name, &[]).await
    }

    /// Adds a sink (for pipelines added after it).
    pub async fn add_sink(&self, sink: SinkConfig) -> Result<()> {
        self.change(move |_, c| {
            c.sinks.push(sink);
            Ok(())
        })
        .await
    }

    /// Removes a declared sink, refused while a pipeline writes it. Its table stays.
    pub async fn remove_sink(&self, name: &str) -> Result<()> {
        self.change(|topology, c| {
            let Some(i) = c.sinks.iter().position(|s| s.name == name) else {
                return Err(Error::NotFound {
                    what: "sink",
                    name: name.to_string(),
                });
            };
            let writers: Vec<&str> = topology
                .statements
                .iter()
                .filter(|t| t.sink == name)
                .map(|t| t.pipeline.as_str())
                .collect();
            if !writers.is_empty() {
                return Err(Error::Config(format!(
                    "sink {name:?} is written by pipeline(s) {}; remove them first",
                    writers.join(", ")
                )));
            }
            c.sinks.remove(i);
            Ok(())
        })
        .await
    }

    /// Adds a pipeline: its SQL is planned against the live streams and sinks, each statement's
    /// start position is recorded as at start (`start`, `replaces`), and its runners start.
    pub async fn add_pipeline(&self, pipeline: PipelineConfig) -> Result<()> {
        self.change(move |_, c| {
            c.pipelines.push(pipeline);
            Ok(())
        })
        .await
    }

    /// Removes a declared pipeline: its runners read their stream to the end, commit and stop.
    /// Its committed positions stay in the catalog (adding it again resumes from them).
    pub async fn remove_pipeline(&self, name: &str) -> Result<()> {
        self.change(|topology, c| {
            let Some(i) = c.pipelines.iter().position(|p| p.name == name) else {
                if topology.pipeline(name).is_some() {
                    return Err(Error::Config(format!(
                        "pipeline {name:?} is the built-in dead-letter pipeline of a stream; it goes with the stream"
                    )));
                }
                return Err(Error::NotFound {
                    what: "pipeline",
                    name: name.to_string(),
                });
            };
            c.pipelines.remove(i);
            Ok(())
        })
        .await
    }

    /// Stops every runner (each commits what it has) and the truncation loop; `false` when some
    /// runner did not finish within `timeout` (it resumes from the log at the next start).
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let _serial = self.changes.lock().await;
        let runners: Vec<Task> = self
            .runners
            .lock()
            .expect("runners lock")
            .drain()
            .map(|(_, t)| t)
            .collect();
        for r in &runners {
            let _ = r.stop.send(true);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut all = true;
        for r in runners {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            all &= r.stop(left).await;
        }
        let truncator = self.truncator.lock().expect("truncator lock").take();
        if let Some(t) = truncator {
            t.stop(Duration::from_secs(1)).await;
        }
        // A round cut off here leaves an attempt its next run cleans (maintenance module docs).
        let maintainer = self.maintainer.lock().expect("maintainer lock").take();
        if let Some(t) = maintainer {
            t.stop(Duration::from_secs(1)).await;
        }
        all
    }

    fn spawn(&self, t: Transform) {
        let (stop, rx) = watch::channel(false);
        let key = (t.pipeline.clone(), t.sink.clone());
        let handle = tokio::spawn(crate::pipeline::runner::run(self.app.clone(), t, rx));
        self.runners
            .lock()
            .expect("runners lock")
            .insert(key, Task { stop, handle });
    }

    /// Stops the runner of `t`, which commits what it has.
    async fn stop_runner(&self, t: &Transform) {
        let task = self
            .runners
            .lock()
            .expect("runners lock")
            .remove(&(t.pipeline.clone(), t.sink.clone()));
        if let Some(task) = task
            && !task.stop(SHUTDOWN_COMMIT_TIMEOUT).await
        {
            tracing::warn!(pipeline = %t.pipeline, sink = %t.sink, "the runner did not finish committing in time; stopped it");
        }
        self.app.forget_position(&t.pipeline, &t.sink);
    }

    /// Edits the declaration with `edit` and checks the result as [`change`](Self::change)
    /// would, changing nothing: the control plane validates with it before storing a change.
    pub async fn preview(&self, edit: impl FnOnce(&Topology, &mut Config) -> Result<()>) -> Result<()> {
        let _serial = self.changes.lock().await;
        self.plan(edit).await.map(|_| ())
    }

    /// Replaces a declared object by `object` (same name, see [`objects::replace`]): a
    /// pipeline's runners read on to the end of their logs, commit and stop, and its new version
    /// starts from the positions they committed; a sink's writers stop (committing) and start
    /// again with the new settings; a stream's settings change in place.
    pub async fn replace(&self, object: ObjectConfig) -> Result<()> {
        self.change(move |_, c| objects::replace(c, object)).await
    }

    /// Removes a declared stream together with `pipelines` (those reading it), in one change.
    pub async fn remove_stream_and_readers(&self, name: &str, pipelines: &[String]) -> Result<()> {
        self.change(|topology, c| {
            c.pipelines.retain(|p| !pipelines.contains(&p.name));
            if !c.streams.iter().any(|s| s.name == name) {
                return Err(Error::NotFound {
                    what: "stream",
                    name: name.to_string(),
                });
            }
            let left = readers_of(topology, name)
                .into_iter()
                .filter(|p| !pipelines.contains(p))
                .collect::<Vec<_>>();
            if !left.is_empty() {
                return Err(Error::Config(format!(
                    "stream {name:?} is read by pipeline(s) {}; remove them first",
                    left.join(", ")
                )));
            }
            c.streams.retain(|s| s.name != name);
            Ok(())
        })
        .await
    }

    /// The change `edit` makes: the new topology and the statements that go and come (a
    /// statement whose pipeline or sink settings changed does both), checked through —
    /// the declaration, every statement's SQL, the tables of the statements that come.
    async fn plan(&self, edit: impl FnOnce(&Topology, &mut Config) -> Result<()>) -> Result<Plan> {
        let old = self.app.topology();
        let mut declared = old.declared.clone();
        edit(&old, &mut declared)?;
        declared.validate().map_err(|e| Error::Config(e.to_string()))?;
        let new = Arc::new(Topology::resolve(&declared, Some(&old)).await?);
        let key = |t: &Transform| (t.pipeline.clone(), t.sink.clone());
        // Streams whose fields change (schema evolution): their statements are planned anew.
        let evolving: HashSet<String> = new
            .streams
            .iter()
            .filter(|s| old.stream(&s.name).is_some_and(|o| o.fields != s.fields))
            .map(|s| s.name.clone())
            .collect();
        let same = |t: &Transform| {
            old.statements.iter().any(|o| key(o) == key(t))
                && as_json(old.pipeline(&t.pipeline)) == as_json(new.pipeline(&t.pipeline))
                && as_json(old.sink(&t.sink)) == as_json(new.sink(&t.sink))
                && !evolving.contains(&t.stream)
        };
        let added: Vec<Transform> = new.statements.iter().filter(|t| !same(t)).cloned().collect();
        let added_keys: HashSet<_> = added.iter().map(key).collect();
        let new_keys: HashSet<_> = new.statements.iter().map(key).collect();
        let removed: Vec<Transform> = old
            .statements
            .iter()
            .filter(|t| !new_keys.contains(&key(t)) || added_keys.contains(&key(t)))
            .cloned()
            .collect();
        for t in &added {
            if let Some(sink) = new.sink(&t.sink) {
                crate::sink::check(&self.app.catalog, sink, &t.output, evolving.contains(&t.stream)).await?;
            }
        }
        Ok(Plan {
            old,
            new,
            removed,
            added,
            evolving,
        })
    }

    /// Edits the declaration with `edit`, resolves the new topology and brings what runs in
    /// line with it (see the module docs).
    async fn change(&self, edit: impl FnOnce(&Topology, &mut Config) -> Result<()>) -> Result<()> {
        let _serial = self.changes.lock().await;
        let app = &self.app;
        let Plan {
            old,
            new,
            removed,
            added,
            evolving,
        } = self.plan(edit).await?;
        // Tables of streams that gained fields take the new columns first, while the old
        // statements still run (their files, of the older schema, stay valid).
        for t in added.iter().filter(|t| evolving.contains(&t.stream)) {
            if let Some(sink) = new.sink(&t.sink)
                && sink.ty == crate::config::SinkType::Iceberg
            {
                crate::sink::evolve::evolve(&app.catalog, sink, &t.output).await?;
            }
        }
        // Streams that go: no new requests, then the ones in flight finish.
        let mut gone: Vec<Arc<StreamState>> = Vec::new();
        for s in old.streams.iter().filter(|s| new.stream(&s.name).is_none()) {
            if let Some(state) = app.streams.remove(&s.name) {
                tracing::info!(stream = %s.name, "stream removed");
                gone.push(state);
            }
        }
        for s in &gone {
            drain(s).await;
        }
        // Statements that go: each reads on to the end of its log, commits and stops.
        for t in &removed {
            self.stop_runner(t).await;
            tracing::info!(pipeline = %t.pipeline, sink = %t.sink, "pipeline statement stopped");
        }
        for s in &gone {
            s.log.close();
        }
        // Streams whose settings change: the same log under the new settings.
        for s in &new.streams {
            if let (Some(before), Some(state)) = (old.stream(&s.name), app.streams.get(&s.name))
                && as_json(Some(before)) != as_json(Some(s))
            {
                app.streams.insert(state.with_config(&app.config, s.clone()));
                tracing::info!(stream = %s.name, "stream settings changed");
            }
        }
        // Streams that come.
        let coming: Vec<StreamConfig> = new
            .streams
            .iter()
            .filter(|s| old.stream(&s.name).is_none())
            .cloned()
            .collect();
        let opened = match open_streams(&app.config, &coming, &app.metrics, &app.streams) {
            Ok(o) => o,
            Err(e) => {
                app.set_topology(without_statements(&old, &removed));
                return Err(e);
            }
        };
        for s in &opened {
            app.streams.insert(s.clone());
            tracing::info!(stream = %s.config.name, "stream added");
        }
        // The new model is live: from here on truncation waits for the added statements.
        app.set_topology(new.clone());
        if let Err(e) =
            crate::pipeline::identity::prepare_positions(new.running(), &app.catalog, &app.streams, &added).await
        {
            app.set_topology(without_statements(&old, &removed));
            for s in &opened {
                app.streams.remove(&s.config.name);
                s.log.close();
            }
            return Err(e);
        }
        let mut started: Vec<String> = Vec::new();
        for t in added {
            tracing::info!(pipeline = %t.pipeline, sink = %t.sink, stream = %t.stream, "pipeline statement started");
            if !started.contains(&t.pipeline) {
                started.push(t.pipeline.clone());
            }
            self.spawn(t);
        }
        // The versions that start here, at the positions their runners read from.
        for name in started {
            if let Some(p) = new.declared.pipelines.iter().find(|p| p.name == name)
                && let Err(e) = crate::pipeline::identity::record_version_start(&app.catalog, p, &new.statements).await
            {
                tracing::warn!(pipeline = %name, error = %e, "could not record the pipeline version's start; it is recorded at the next start");
            }
        }
        Ok(())
    }
}

/// What a change does (see [`Supervisor::plan`]).
struct Plan {
    old: Arc<Topology>,
    new: Arc<Topology>,
    removed: Vec<Transform>,
    added: Vec<Transform>,
    /// Streams whose fields change.
    evolving: HashSet<String>,
}

/// An object's settings as JSON, to tell whether a change touches it.
fn as_json<T: serde::Serialize>(v: Option<&T>) -> Option<serde_json::Value> {
    v.and_then(|v| serde_json::to_value(v).ok())
}

/// The pipelines reading stream `name` (or its dead letters), its own dead-letter pipeline aside.
pub fn readers_of(topology: &Topology, name: &str) -> Vec<String> {
    let own = topology.dead_letters.iter().find(|d| d.stream == name);
    topology
        .statements
        .iter()
        .filter(|t| t.stream == name || own.is_some_and(|d| t.stream == d.internal_stream))
        .filter(|t| own.is_none_or(|d| t.pipeline != d.pipeline))
        .map(|t| t.pipeline.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `topology` without the statements that stopped already (what runs after a failed change).
fn without_statements(topology: &Topology, removed: &[Transform]) -> Arc<Topology> {
    let mut t = topology.clone();
    t.statements
        .retain(|s| !removed.iter().any(|r| r.pipeline == s.pipeline && r.sink == s.sink));
    Arc::new(t)
}

/// Waits (up to [`REMOVE_DRAIN_TIMEOUT`]) until nobody but the caller holds `stream`: the
/// requests in flight to it have finished.
async fn drain(stream: &Arc<StreamState>) {
    let deadline = tokio::time::Instant::now() + REMOVE_DRAIN_TIMEOUT;
    while Arc::strong_count(stream) > 1 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(stream = %stream.config.name, "requests to the removed stream still running; closing it anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn truncate_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRUNCATE_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        app.truncate_logs();
    }
}

/// How often the maintenance loop looks for a table whose round is due.
pub const MAINTENANCE_TICK: Duration = Duration::from_secs(5);

/// How often the maintenance loop looks for tables no sink writes that opted in through their
/// properties (`floe.maintenance.enabled = true`).
pub const TABLE_SCAN_EVERY: Duration = Duration::from_secs(60);

/// Runs the maintenance round of each iceberg sink's table when it is due, one table at a time
/// (a table two sinks write is maintained once, by the first sink's policy), then those of the
/// tables no sink writes whose properties ask for it ([`crate::maintenance::policy::table_policies`],
/// looked up every [`TABLE_SCAN_EVERY`]).
async fn maintenance_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    use crate::maintenance::policy::{Schedule, TablePolicy, record, round, table_policies};
    let mut schedules: HashMap<String, Schedule> = HashMap::new();
    let mut by_properties: Vec<TablePolicy> = Vec::new();
    let mut scanned: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MAINTENANCE_TICK) => {}
            _ = stop.changed() => return,
        }
        let topology = app.topology();
        let mut seen = HashSet::new();
        for sink in &topology.sinks {
            let (crate::config::SinkType::Iceberg, Some(table)) = (sink.ty, sink.table.as_ref()) else {
                continue;
            };
            if !seen.insert(table.clone()) || !sink.maintenance.enabled {
                continue;
            }
            let Ok(ident) = crate::lookup::parse_table_ident(table) else {
                continue;
            };
            let schedule = schedules.entry(table.clone()).or_default();
            if !schedule.due(&sink.maintenance, chrono::Utc::now().timestamp_millis()) {
                continue;
            }
            let metrics = app.metrics.table(table);
            let target = sink.target_file_size_mb.saturating_mul(1024 * 1024);
            tokio::select! {
                r = round(&app.catalog, &ident, &sink.maintenance, target, schedule, &metrics) => {
                    if let Err(e) = r {
                        tracing::warn!(table = %table, error = %e, "table maintenance failed; it runs again next interval");
                    }
                }
                _ = stop.changed() => return,
            }
        }
        if scanned.is_none_or(|t| t.elapsed() >= TABLE_SCAN_EVERY) {
            scanned = Some(std::time::Instant::now());
            tokio::select! {
                r = table_policies(&app.catalog, &seen) => match r {
                    Ok(found) => by_properties = found,
                    Err(e) => tracing::warn!(error = %e, "could not list the catalog's tables for maintenance"),
                },
                _ = stop.changed() => return,
            }
        }
        for table in &by_properties {
            if seen.contains(&table.name) {
                continue; // a sink writes it now
            }
            let metrics = app.metrics.table(&table.name);
            let (policy, target) = match &table.policy {
                Ok(p) => p,
                Err(e) => {
                    // Refused properties are reported once per scan, not every tick.
                    if metrics.last_error.lock().unwrap_or_else(|p| p.into_inner()).as_deref() != Some(e.as_str()) {
                        tracing::warn!(table = %table.name, error = %e, "a table's maintenance properties are refused");
                        record(&metrics, Err(e.clone()));
                    }
                    continue;
                }
            };
            let schedule = schedules.entry(table.name.clone()).or_default();
            if !schedule.due(policy, chrono::Utc::now().timestamp_millis()) {
                continue;
            }
            tokio::select! {
                r = round(&app.catalog, &table.ident, policy, *target, schedule, &metrics) => {
                    if let Err(e) = r {
                        tracing::warn!(table = %table.name, error = %e, "table maintenance failed; it runs again next interval");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }
}
