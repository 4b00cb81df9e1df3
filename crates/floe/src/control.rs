//! The control plane's HTTP routes: create, list, show, change and delete streams, sinks and
//! pipelines of a running floe, and a pipeline's versions (docs/control-plane.md).
//!
//! ```text
//!  POST /v1/{kind}          body ─► objects::parse ─► confine ─► Supervisor::preview (validate,
//!  PATCH /v1/{kind}/{name}         plan every statement, check sink tables) ─► store the row
//!                                  (catalog CAS on its version) ─► Supervisor::add_… / replace_…
//!                                  └─ that fails: the row is put back as it was
//!  DELETE /v1/{kind}/{name}  refusals (origin, in use) ─► Supervisor::remove_… ─► delete the row
//! ```
//!
//! Changes are serialized by one lock, so the stored rows and the running topology move
//! together; an object from `floe.toml` (or a stream's internal dead-letter objects) is shown
//! and never changed here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use floe_catalog::{ObjectKind, ObjectRefused, StoredObject, VersionBody};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::objects::{ObjectConfig, Origin, confine, merge_patch, parse};
use crate::supervisor::{Supervisor, readers_of};
use crate::topology::Topology;

/// The control plane of one floe: the supervisor that changes what runs, and the objects stored
/// in the catalog database (its lock serializes changes).
pub struct ControlPlane {
    supervisor: Arc<Supervisor>,
    stored: tokio::sync::Mutex<HashMap<(ObjectKind, String), StoredObject>>,
}

impl ControlPlane {
    /// The control plane over `supervisor`, with the objects stored in its catalog; the tokens
    /// created at run time count from here on (re-read every [`TOKEN_REFRESH`], for those another
    /// floe sharing the catalog creates or revokes).
    pub async fn open(supervisor: Arc<Supervisor>) -> Result<Arc<ControlPlane>> {
        load_tokens(supervisor.app()).await?;
        let stored = supervisor
            .app()
            .catalog
            .objects()
            .await?
            .into_iter()
            .map(|o| ((o.kind, o.name.clone()), o))
            .collect();
        let plane = Arc::new(ControlPlane {
            supervisor,
            stored: tokio::sync::Mutex::new(stored),
        });
        // Ends with the last user of the control plane (the server).
        let weak = Arc::downgrade(&plane);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKEN_REFRESH).await;
                let Some(plane) = weak.upgrade() else { return };
                if let Err(e) = load_tokens(plane.supervisor.app()).await {
                    tracing::warn!(error = %e, "could not re-read the tokens created at run time");
                }
            }
        });
        Ok(plane)
    }

    fn topology(&self) -> Arc<Topology> {
        self.supervisor.app().topology()
    }

    /// Creates an object from `body` (docs/control-plane.md, "Create").
    pub async fn create(&self, kind: ObjectKind, body: Value) -> Result<Value> {
        let mut stored = self.stored.lock().await;
        let app = self.supervisor.app();
        let mut object = parse(kind, body)?;
        confine(&app.config, &mut object)?;
        let name = object.name().to_string();
        let limit = app.config.limits.max_api_objects;
        if stored.keys().filter(|(k, _)| *k == kind).count() >= limit {
            return Err(Error::Limit {
                limit: "limits.max_api_objects",
                message: format!("there are {limit} {}s created through the API already", kind.as_str()),
                status: StatusCode::CONFLICT,
            });
        }
        if live_config(&self.topology(), kind, &name).is_some() {
            return Err(Error::Conflict {
                code: "already_exists",
                message: format!("a {} named {name:?} exists", kind.as_str()),
            });
        }
        let add = object.clone();
        self.supervisor
            .preview(move |_, c| {
                crate::objects::add(c, add);
                Ok(())
            })
            .await?;
        let body = object.to_json().to_string();
        let version = pipeline_version(&object, &body);
        let row = match app.catalog.create_object(kind, &name, &body, version).await? {
            Ok(row) => row,
            Err(_) => {
                return Err(Error::Conflict {
                    code: "already_exists",
                    message: format!(
                        "a {} named {name:?} is stored already (by another floe sharing this catalog name)",
                        kind.as_str()
                    ),
                });
            }
        };
        let applied = match object {
            // A log left on disk under this name is not this stream's (see `retire_log`).
            ObjectConfig::Stream(s) => match crate::stream::retire_log(&app.config, &s.name) {
                Ok(_) => self.supervisor.add_stream(s).await,
                Err(e) => Err(Error::Internal(format!(
                    "cannot move the log left by an earlier stream {:?} aside: {e}",
                    s.name
                ))),
            },
            ObjectConfig::Sink(s) => self.supervisor.add_sink(*s).await,
            ObjectConfig::Pipeline(p) => self.supervisor.add_pipeline(p).await,
        };
        if let Err(e) = applied {
            if let Err(undo) = app.catalog.delete_object(kind, &name).await {
                tracing::error!(kind = kind.as_str(), %name, error = %undo, "could not remove the stored object of a create that failed");
            }
            return Err(e);
        }
        stored.insert((kind, name.clone()), row);
        Ok(self.view(&stored, kind, &name).await)
    }

    /// Changes an object by a JSON merge patch of its config (docs/control-plane.md, "Change").
    pub async fn update(&self, kind: ObjectKind, name: &str, patch: Value) -> Result<Value> {
        let mut stored = self.stored.lock().await;
        let app = self.supervisor.app();
        let topology = self.topology();
        let Some(current) = live_config(&topology, kind, name) else {
            return Err(not_found(kind, name));
        };
        let Some(row) = stored.get(&(kind, name.to_string())).cloned() else {
            return Err(read_only(kind, name, origin(&stored, &topology, kind, name)));
        };
        if !patch.is_object() {
            return Err(Error::BadRequest {
                code: "bad_request",
                message: "a change is a JSON object of the keys to change (a merge patch)".into(),
            });
        }
        let mut body = current;
        merge_patch(&mut body, &patch);
        if body.get("name").and_then(Value::as_str) != Some(name) {
            return Err(Error::BadRequest {
                code: "bad_request",
                message: format!("the name of {} {name:?} cannot change", kind.as_str()),
            });
        }
        let mut object = parse(kind, body)?;
        confine(&app.config, &mut object)?;
        let edited = object.clone();
        self.supervisor
            .preview(move |_, c| crate::objects::replace(c, edited))
            .await?;
        let body = object.to_json().to_string();
        let version = pipeline_version(&object, &body);
        let updated = match app
            .catalog
            .update_object(kind, name, row.version, &body, version)
            .await?
        {
            Ok(updated) => updated,
            Err(ObjectRefused::Moved { now }) => {
                return Err(Error::Conflict {
                    code: "conflict",
                    message: format!(
                        "{} {name:?} changed to version {now} meanwhile (another floe sharing this catalog name); read it again",
                        kind.as_str()
                    ),
                });
            }
            Err(_) => return Err(not_found(kind, name)),
        };
        let applied = self.supervisor.replace(object).await;
        if let Err(e) = applied {
            // Put the stored row back to what runs (as a version of its own).
            let previous = parse(kind, serde_json::from_str(&row.body).unwrap_or(Value::Null))?;
            let version = pipeline_version(&previous, &row.body);
            match app
                .catalog
                .update_object(kind, name, updated.version, &row.body, version)
                .await
            {
                Ok(Ok(back)) => {
                    stored.insert((kind, name.to_string()), back);
                }
                other => {
                    tracing::error!(kind = kind.as_str(), %name, outcome = ?other, "could not put back the stored object of a change that failed")
                }
            }
            return Err(e);
        }
        stored.insert((kind, name.to_string()), updated);
        Ok(self.view(&stored, kind, name).await)
    }

    /// Deletes an object (docs/control-plane.md, "Delete").
    pub async fn delete(&self, kind: ObjectKind, name: &str, force: bool, purge: bool) -> Result<Value> {
        let mut stored = self.stored.lock().await;
        let app = self.supervisor.app();
        let topology = self.topology();
        if live_config(&topology, kind, name).is_none() {
            return Err(not_found(kind, name));
        }
        if !stored.contains_key(&(kind, name.to_string())) {
            return Err(read_only(kind, name, origin(&stored, &topology, kind, name)));
        }
        match kind {
            ObjectKind::Stream => {
                let readers = readers_of(&topology, name);
                if !readers.is_empty() && !force {
                    return Err(Error::Conflict {
                        code: "in_use",
                        message: format!(
                            "stream {name:?} is read by pipeline(s) {}: delete them first, or delete with ?force=true (floe streams delete --force) to delete them too",
                            readers.join(", ")
                        ),
                    });
                }
                if let Some(p) = readers
                    .iter()
                    .find(|p| !stored.contains_key(&(ObjectKind::Pipeline, p.to_string())))
                {
                    return Err(Error::Conflict {
                        code: "in_use",
                        message: format!(
                            "stream {name:?} is read by pipeline {p:?}, which is from floe.toml: remove it from the file first"
                        ),
                    });
                }
                // The statements whose positions are offsets in this stream's logs: its readers'
                // and its own dead-letter pipeline's.
                let dead_letters = crate::ingest::dead_letter::stream_name(name);
                let positions: Vec<(String, String)> = topology
                    .statements
                    .iter()
                    .filter(|t| t.stream == name || t.stream == dead_letters)
                    .map(|t| (t.pipeline.clone(), t.sink.clone()))
                    .collect();
                self.supervisor.remove_stream_and_readers(name, &readers).await?;
                for p in &readers {
                    app.catalog.delete_object(ObjectKind::Pipeline, p).await?;
                    stored.remove(&(ObjectKind::Pipeline, p.clone()));
                }
                // After the readers committed what they had read. One left behind only makes a
                // pipeline of the same name and sink refused later (`position_conflict`).
                for (pipeline, sink) in &positions {
                    if let Err(e) = app.catalog.forget_positions(pipeline, std::slice::from_ref(sink)).await {
                        tracing::warn!(stream = %name, %pipeline, %sink, error = %e, "could not delete the position of a deleted stream's reader");
                    }
                }
            }
            ObjectKind::Sink => {
                let writers: Vec<String> = topology
                    .statements
                    .iter()
                    .filter(|t| t.sink == name)
                    .map(|t| t.pipeline.clone())
                    .collect();
                if !writers.is_empty() {
                    return Err(Error::Conflict {
                        code: "in_use",
                        message: format!(
                            "sink {name:?} is written by pipeline(s) {}; delete them first",
                            writers.join(", ")
                        ),
                    });
                }
                let table = topology.sink(name).and_then(|s| s.table.clone());
                self.supervisor.remove_sink(name).await?;
                if purge && let Some(table) = table {
                    purge_table(app, &table).await?;
                }
            }
            ObjectKind::Pipeline => self.supervisor.remove_pipeline(name).await?,
        }
        app.catalog.delete_object(kind, name).await?;
        stored.remove(&(kind, name.to_string()));
        // Gone from the declaration and the store: its log goes aside (a create of the same
        // name does it too, should this fail or not run).
        if kind == ObjectKind::Stream
            && let Err(e) = crate::stream::retire_log(&app.config, name)
        {
            tracing::warn!(stream = %name, error = %e, "could not move the log of the deleted stream aside");
        }
        Ok(json!({"deleted": {"kind": kind.as_str(), "name": name}}))
    }

    /// One object's view.
    pub async fn get(&self, kind: ObjectKind, name: &str) -> Result<Value> {
        let stored = self.stored.lock().await;
        if live_config(&self.topology(), kind, name).is_none() {
            return Err(not_found(kind, name));
        }
        Ok(self.view(&stored, kind, name).await)
    }

    /// Every object of `kind`, by name.
    pub async fn list(&self, kind: ObjectKind) -> Value {
        let stored = self.stored.lock().await;
        let topology = self.topology();
        let mut names: Vec<String> = match kind {
            ObjectKind::Stream => topology.streams.iter().map(|s| s.name.clone()).collect(),
            ObjectKind::Sink => topology.sinks.iter().map(|s| s.name.clone()).collect(),
            ObjectKind::Pipeline => topology.pipelines.iter().map(|p| p.name.clone()).collect(),
        };
        names.sort();
        let mut out = Vec::new();
        for n in names {
            out.push(self.view(&stored, kind, &n).await);
        }
        json!({ format!("{}s", kind.as_str()): out })
    }

    /// A pipeline's versions (docs/control-plane.md, "Pipeline versions").
    pub async fn versions(&self, name: &str) -> Result<Value> {
        let versions = self.supervisor.app().catalog.pipeline_versions(name).await?;
        if versions.is_empty() && live_config(&self.topology(), ObjectKind::Pipeline, name).is_none() {
            return Err(not_found(ObjectKind::Pipeline, name));
        }
        let parse_offsets = |o: &Option<String>| o.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok());
        let versions: Vec<Value> = versions
            .iter()
            .map(|v| {
                json!({
                    "version": v.version,
                    "sql": v.sql,
                    "created_at": time(Some(v.created_at_ms)),
                    "started_at": time(v.started_at_ms),
                    "ended_at": time(v.ended_at_ms),
                    "start_offsets": parse_offsets(&v.start_offsets),
                    "end_offsets": parse_offsets(&v.end_offsets),
                })
            })
            .collect();
        Ok(json!({"pipeline": name, "versions": versions}))
    }

    async fn view(&self, stored: &HashMap<(ObjectKind, String), StoredObject>, kind: ObjectKind, name: &str) -> Value {
        let topology = self.topology();
        let row = stored.get(&(kind, name.to_string()));
        let mut v = json!({
            "kind": kind.as_str(),
            "name": name,
            "origin": origin(stored, &topology, kind, name).as_str(),
            "version": row.map_or(1, |r| r.version),
            "created_at": time(row.map(|r| r.created_at_ms)),
            "updated_at": time(row.map(|r| r.updated_at_ms)),
            "config": live_config(&topology, kind, name).unwrap_or(Value::Null),
        });
        if kind == ObjectKind::Pipeline {
            v["status"] = self.status(&topology, name);
            if row.is_none()
                && let Ok(versions) = self.supervisor.app().catalog.pipeline_versions(name).await
                && let Some(last) = versions.last()
            {
                v["version"] = json!(last.version);
            }
        }
        v
    }

    fn status(&self, topology: &Topology, pipeline: &str) -> Value {
        let app = self.supervisor.app();
        let failing = app.metrics.failing_sinks();
        let mut rows_in = 0u64;
        let mut rows_out = 0u64;
        let mut dead = 0u64;
        let mut any_failed = false;
        let mut streams_counted: Vec<String> = Vec::new();
        let mut statements = Vec::new();
        for t in topology.statements.iter().filter(|t| t.pipeline == pipeline) {
            let m = app.metrics.sink(&t.pipeline, &t.sink);
            let error = failing
                .iter()
                .find(|(p, s, _)| *p == t.pipeline && *s == t.sink)
                .map(|(_, _, e)| e.clone());
            any_failed |= error.is_some();
            let committed = m.position.load(Ordering::Relaxed);
            let (end, lag_bytes) = match app.stream(&t.stream) {
                Some(s) => {
                    let (start, end) = (s.log.start_offset(), s.log.end_offset());
                    let lag = end.saturating_sub(committed);
                    let per_row = s.log.disk_bytes() as f64 / end.saturating_sub(start).max(1) as f64;
                    (end, (lag as f64 * per_row) as u64)
                }
                None => (committed, 0),
            };
            if !streams_counted.contains(&t.stream) {
                rows_in += app.metrics.stream(&t.stream).rows_accepted.load(Ordering::Relaxed);
                streams_counted.push(t.stream.clone());
            }
            let out = m.rows_committed.load(Ordering::Relaxed);
            rows_out += out;
            let dl = crate::pipeline::identity::dead_letter_sink_name(&t.sink);
            dead += app
                .metrics
                .sink(&t.pipeline, &dl)
                .rows_committed
                .load(Ordering::Relaxed);
            let last = m.last_commit_ms.load(Ordering::Relaxed);
            statements.push(json!({
                "sink": t.sink,
                "stream": t.stream,
                "state": if error.is_some() { "failed" } else { "running" },
                "error": error,
                "committed_offset": committed,
                "log_end_offset": end,
                "lag_rows": end.saturating_sub(committed),
                "lag_bytes": lag_bytes,
                "last_commit_at": time((last > 0).then_some(last as i64)),
                "rows_out": out,
                "commits": m.commits.load(Ordering::Relaxed),
            }));
        }
        json!({
            "state": if any_failed { "failed" } else { "running" },
            "statements": statements,
            "rows_in": rows_in,
            "rows_out": rows_out,
            "rows_dead_lettered": dead,
        })
    }
}

/// How often the tokens created at run time are re-read from the catalog.
pub const TOKEN_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Most tokens created at run time (valid and revoked) one catalog name holds.
pub const MAX_TOKENS: usize = 10_000;

/// Makes the valid stored tokens the ones that count.
async fn load_tokens(app: &crate::node::App) -> Result<()> {
    let mut valid = HashMap::new();
    for t in app.catalog.tokens().await? {
        let (None, Some(hash), Ok(scopes)) = (
            t.revoked_at_ms,
            crate::auth::unhex(&t.secret_sha256),
            serde_json::from_str::<Vec<String>>(&t.scopes),
        ) else {
            continue;
        };
        valid.insert(
            t.id,
            crate::config::RuntimeToken {
                secret_sha256: hash,
                scopes,
            },
        );
    }
    app.config.auth.runtime.set(valid);
    Ok(())
}

impl ControlPlane {
    /// Creates a token with `scopes` (docs/security.md, "Tokens created at run time"); the
    /// answer carries its text, which is not stored and never shown again.
    pub async fn create_token(&self, body: Value) -> Result<Value> {
        let _serial = self.stored.lock().await;
        let app = self.supervisor.app();
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Create {
            scopes: Vec<String>,
            #[serde(default)]
            description: String,
        }
        let req: Create = serde_json::from_value(body).map_err(|e| Error::BadRequest {
            code: "bad_request",
            message: format!("a token is {{\"scopes\": [...], \"description\": \"…\"}}: {e}"),
        })?;
        if req.scopes.is_empty() {
            return Err(Error::Config("scopes: a token needs at least one scope".into()));
        }
        for (i, s) in req.scopes.iter().enumerate() {
            crate::config::check_scope(s).map_err(|m| Error::Config(format!("scopes[{i}]: {m}")))?;
        }
        if req.description.len() > 1000 || req.description.chars().any(char::is_control) {
            return Err(Error::Config(
                "description: at most 1000 characters, no control characters".into(),
            ));
        }
        if app.catalog.tokens().await?.len() >= MAX_TOKENS {
            return Err(Error::Conflict {
                code: "limit_exceeded",
                message: format!("there are {MAX_TOKENS} tokens already (revoked ones count): this floe keeps no more"),
            });
        }
        let (id, text, kept) = crate::auth::new_token(req.scopes.clone());
        let now = chrono::Utc::now().timestamp_millis();
        app.catalog
            .create_token(&floe_catalog::StoredToken {
                id: id.clone(),
                secret_sha256: crate::auth::hex(&kept.secret_sha256),
                scopes: serde_json::to_string(&req.scopes).unwrap_or_default(),
                description: req.description.clone(),
                created_at_ms: now,
                revoked_at_ms: None,
            })
            .await?;
        app.config.auth.runtime.insert(id.clone(), kept);
        Ok(json!({
            "id": id,
            "token": text,
            "scopes": req.scopes,
            "description": req.description,
            "created_at": time(Some(now)),
        }))
    }

    /// The tokens created at run time (never their secrets), and how many `floe.toml` has.
    pub async fn list_tokens(&self) -> Result<Value> {
        let app = self.supervisor.app();
        let tokens: Vec<Value> = app
            .catalog
            .tokens()
            .await?
            .into_iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "scopes": serde_json::from_str::<Value>(&t.scopes).unwrap_or(Value::Null),
                    "description": t.description,
                    "created_at": time(Some(t.created_at_ms)),
                    "revoked_at": time(t.revoked_at_ms),
                })
            })
            .collect();
        Ok(json!({"tokens": tokens, "config_tokens": app.config.auth.tokens.len()}))
    }

    /// Revokes a token: it is refused from this moment on.
    pub async fn revoke_token(&self, id: &str) -> Result<Value> {
        let _serial = self.stored.lock().await;
        let app = self.supervisor.app();
        if !app.catalog.revoke_token(id).await? {
            return Err(Error::NotFound {
                what: "token",
                name: id.to_string(),
            });
        }
        app.config.auth.runtime.remove(id);
        Ok(json!({"revoked": id}))
    }
}

/// The version row a pipeline's create or change stores with it.
fn pipeline_version<'a>(object: &'a ObjectConfig, body: &'a str) -> Option<VersionBody<'a>> {
    match object {
        ObjectConfig::Pipeline(p) => Some(VersionBody { sql: &p.sql, body }),
        _ => None,
    }
}

/// The live object's config as JSON (every default filled in), `None` when there is none.
fn live_config(topology: &Topology, kind: ObjectKind, name: &str) -> Option<Value> {
    let v = match kind {
        ObjectKind::Stream => topology.stream(name).map(serde_json::to_value),
        ObjectKind::Sink => topology
            .declared
            .sink(name)
            .or_else(|| topology.sink(name))
            .map(serde_json::to_value),
        ObjectKind::Pipeline => topology.pipeline(name).map(serde_json::to_value),
    };
    v.and_then(|r| r.ok())
}

fn origin(
    stored: &HashMap<(ObjectKind, String), StoredObject>,
    topology: &Topology,
    kind: ObjectKind,
    name: &str,
) -> Origin {
    if stored.contains_key(&(kind, name.to_string())) {
        return Origin::Api;
    }
    let internal = topology.dead_letters.iter().any(|d| match kind {
        ObjectKind::Stream => d.internal_stream == name,
        ObjectKind::Sink => d.sink == name,
        ObjectKind::Pipeline => d.pipeline == name,
    });
    if internal { Origin::Internal } else { Origin::Config }
}

async fn purge_table(app: &crate::node::App, table: &str) -> Result<()> {
    use iceberg::Catalog;
    let ident = crate::lookup::parse_table_ident(table).map_err(|e| Error::Config(e.to_string()))?;
    if app.catalog.table_exists(&ident).await? {
        app.catalog.purge_table(&ident).await?;
    }
    Ok(())
}

fn not_found(kind: ObjectKind, name: &str) -> Error {
    Error::NotFound {
        what: kind.as_str(),
        name: name.to_string(),
    }
}

fn read_only(kind: ObjectKind, name: &str, origin: Origin) -> Error {
    let message = match origin {
        Origin::Internal => format!(
            "{} {name:?} is a stream's internal dead-letter object: it comes and goes with the stream",
            kind.as_str()
        ),
        _ => format!(
            "{} {name:?} is declared in floe.toml: edit the file and restart floe to change it",
            kind.as_str()
        ),
    };
    Error::Conflict {
        code: "declared_in_config",
        message,
    }
}

fn time(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// The axum state of the control routes.
pub type ControlState = Arc<ControlPlane>;

fn admin(plane: &ControlPlane, headers: &HeaderMap) -> Result<()> {
    crate::auth::require(&plane.supervisor.app().config.auth, headers, "admin")
}

fn json_body(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest {
        code: "bad_request",
        message: format!("the body is not JSON: {e}"),
    })
}

fn answer(status: StatusCode, r: Result<Value>) -> Response {
    match r {
        Ok(v) => (status, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `?force=true` (streams) / `?purge=true` (sinks) of a delete; anything else is refused.
fn delete_flags(kind: ObjectKind, query: Option<&str>) -> Result<(bool, bool)> {
    let (mut force, mut purge) = (false, false);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        let on = match value {
            "true" => true,
            "false" => false,
            other => {
                return Err(Error::BadRequest {
                    code: "bad_request",
                    message: format!("{key}={other:?}: true or false"),
                });
            }
        };
        match (key, kind) {
            ("force", ObjectKind::Stream) => force = on,
            ("purge", ObjectKind::Sink) => purge = on,
            _ => {
                return Err(Error::BadRequest {
                    code: "bad_request",
                    message: format!(
                        "a delete of a {} takes {}",
                        kind.as_str(),
                        match kind {
                            ObjectKind::Stream => "?force=true",
                            ObjectKind::Sink => "?purge=true",
                            ObjectKind::Pipeline => "no query parameter",
                        }
                    ),
                });
            }
        }
    }
    Ok((force, purge))
}

/// `POST /v1/{kind}`.
pub async fn post_object(plane: ControlState, kind: ObjectKind, headers: HeaderMap, body: Bytes) -> Response {
    let r = async {
        admin(&plane, &headers)?;
        plane.create(kind, json_body(&body)?).await
    };
    answer(StatusCode::CREATED, r.await)
}

/// `GET /v1/{kind}`.
pub async fn list_objects(plane: ControlState, kind: ObjectKind, headers: HeaderMap) -> Response {
    let r = async {
        admin(&plane, &headers)?;
        Ok(plane.list(kind).await)
    };
    answer(StatusCode::OK, r.await)
}

/// `GET /v1/{kind}/{name}`.
pub async fn get_object(plane: ControlState, kind: ObjectKind, name: String, headers: HeaderMap) -> Response {
    let r = async {
        admin(&plane, &headers)?;
        plane.get(kind, &name).await
    };
    answer(StatusCode::OK, r.await)
}

/// `PATCH /v1/{kind}/{name}`.
pub async fn patch_object(
    plane: ControlState,
    kind: ObjectKind,
    name: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        admin(&plane, &headers)?;
        plane.update(kind, &name, json_body(&body)?).await
    };
    answer(StatusCode::OK, r.await)
}

/// `DELETE /v1/{kind}/{name}[?force=true|?purge=true]`.
pub async fn delete_object(
    plane: ControlState,
    kind: ObjectKind,
    name: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        admin(&plane, &headers)?;
        let (force, purge) = delete_flags(kind, query.as_deref())?;
        plane.delete(kind, &name, force, purge).await
    };
    answer(StatusCode::OK, r.await)
}

/// `GET /v1/pipelines/{name}/versions`.
pub async fn get_versions(plane: ControlState, name: String, headers: HeaderMap) -> Response {
    let r = async {
        admin(&plane, &headers)?;
        plane.versions(&name).await
    };
    answer(StatusCode::OK, r.await)
}

/// `POST /v1/tokens`.
pub async fn post_token(plane: ControlState, headers: HeaderMap, body: Bytes) -> Response {
    let r = async {
        admin(&plane, &headers)?;
        plane.create_token(json_body(&body)?).await
    };
    answer(StatusCode::CREATED, r.await)
}

/// The control routes: streams, sinks, pipelines (each collection at `/v1/{kind}s`), a
/// pipeline's versions, tokens.
pub fn routes(plane: ControlState) -> axum::Router {
    use axum::extract::RawQuery;
    use axum::routing::get;
    let mut router = axum::Router::new();
    for (base, kind) in [
        ("/v1/streams", ObjectKind::Stream),
        ("/v1/sinks", ObjectKind::Sink),
        ("/v1/pipelines", ObjectKind::Pipeline),
    ] {
        router = router
            .route(
                base,
                get(move |State(p): State<ControlState>, h: HeaderMap| list_objects(p, kind, h))
                    .post(move |State(p): State<ControlState>, h: HeaderMap, b: Bytes| post_object(p, kind, h, b)),
            )
            .route(
                &format!("{base}/{{name}}"),
                get(
                    move |State(p): State<ControlState>, Path(n): Path<String>, h: HeaderMap| get_object(p, kind, n, h),
                )
                .patch(
                    move |State(p): State<ControlState>, Path(n): Path<String>, h: HeaderMap, b: Bytes| {
                        patch_object(p, kind, n, h, b)
                    },
                )
                .delete(
                    move |State(p): State<ControlState>, Path(n): Path<String>, RawQuery(q): RawQuery, h: HeaderMap| {
                        delete_object(p, kind, n, q, h)
                    },
                ),
            );
    }
    router
        .route(
            "/v1/pipelines/{name}/versions",
            get(|State(p): State<ControlState>, Path(n): Path<String>, h: HeaderMap| get_versions(p, n, h)),
        )
        .route(
            "/v1/tokens",
            get(|State(p): State<ControlState>, h: HeaderMap| async move {
                let r = async {
                    admin(&p, &h)?;
                    p.list_tokens().await
                };
                answer(StatusCode::OK, r.await)
            })
            .post(|State(p): State<ControlState>, h: HeaderMap, b: Bytes| post_token(p, h, b)),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(
                |State(p): State<ControlState>, Path(id): Path<String>, h: HeaderMap| async move {
                    let r = async {
                        admin(&p, &h)?;
                        p.revoke_token(&id).await
                    };
                    answer(StatusCode::OK, r.await)
                },
            ),
        )
        .with_state(plane)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_flags_are_per_kind() {
        assert_eq!(
            delete_flags(ObjectKind::Stream, Some("force=true")).ok(),
            Some((true, false))
        );
        assert_eq!(
            delete_flags(ObjectKind::Sink, Some("purge=true")).ok(),
            Some((false, true))
        );
        assert_eq!(delete_flags(ObjectKind::Pipeline, None).ok(), Some((false, false)));
        assert!(delete_flags(ObjectKind::Sink, Some("force=true")).is_err());
        assert!(delete_flags(ObjectKind::Stream, Some("force=yes")).is_err());
        assert!(delete_flags(ObjectKind::Pipeline, Some("x=1")).is_err());
    }
}
