//! The control plane (docs/control-plane.md): streams, sinks and pipelines created, listed,
//! changed and deleted on a running server, answered as typed [`Object`]s.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Client, Error};

/// What an object of the control plane is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A stream (`/v1/streams`).
    Stream,
    /// A sink (`/v1/sinks`).
    Sink,
    /// A pipeline (`/v1/pipelines`).
    Pipeline,
}

impl Kind {
    /// The singular name, as the objects' `kind` spells it: `stream`, `sink`, `pipeline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Sink => "sink",
            Kind::Pipeline => "pipeline",
        }
    }

    /// The plural: the route's path segment (`/v1/streams`) and the key of its list answer
    /// (`{"streams": […]}`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Stream => "streams",
            Kind::Sink => "sinks",
            Kind::Pipeline => "pipelines",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream, sink or pipeline as every control-plane route answers it.
///
/// Fields the server adds beyond these are kept in `extra`, so that serializing an `Object`
/// gives back everything the server said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// `stream`, `sink` or `pipeline`.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// `api` (created at run time), `config` (from `floe.toml`, read-only) or `internal` (a
    /// stream's dead-letter stream, sink and pipeline, read-only).
    pub origin: String,
    /// 1 at create, +1 on every change.
    pub version: u64,
    /// When it was created (RFC 3339); `None` for `config` and `internal` objects.
    #[serde(default)]
    pub created_at: Option<String>,
    /// When it last changed (RFC 3339); `None` for `config` and `internal` objects.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The object as `floe.toml` keys, every default filled in.
    #[serde(default)]
    pub config: Value,
    /// A pipeline's status (absent for streams and sinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PipelineStatus>,
    /// Any other field of the answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A pipeline's status: its state and one entry per statement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineStatus {
    /// `running`, or `failed` when any statement's state is `failed`.
    pub state: String,
    /// One per `INSERT` statement.
    pub statements: Vec<StatementStatus>,
    /// Rows the pipeline's streams accepted since the process started.
    pub rows_in: u64,
    /// Rows the pipeline's sinks committed since the process started.
    pub rows_out: u64,
    /// Rows its SQL failed on, sent to its dead-letter table (`on_error = "dead_letter"`).
    pub rows_dead_lettered: u64,
    /// Any other field of the answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PipelineStatus {
    /// The rows in the logs after every statement's committed offset, added up.
    pub fn lag_rows(&self) -> u64 {
        self.statements.iter().map(|s| s.lag_rows).sum()
    }
}

/// One `INSERT INTO sink SELECT … FROM stream` of a running pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatementStatus {
    /// The sink it writes.
    pub sink: String,
    /// The stream it reads.
    pub stream: String,
    /// `running` or `failed`.
    pub state: String,
    /// Why it failed (for a failing row, with the stream offset it failed at).
    pub error: Option<String>,
    /// The stream offset up to which rows are in the sink, durably.
    pub committed_offset: Option<u64>,
    /// The end of the stream's log.
    pub log_end_offset: Option<u64>,
    /// Rows in the log after `committed_offset`.
    pub lag_rows: u64,
    /// Log bytes after `committed_offset`.
    pub lag_bytes: u64,
    /// When the statement last committed (RFC 3339).
    pub last_commit_at: Option<String>,
    /// Rows it committed since the process started.
    pub rows_out: u64,
    /// Commits since the process started.
    pub commits: u64,
    /// Any other field of the answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One version of a pipeline (`GET /v1/pipelines/{name}/versions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineVersion {
    /// 1, 2, …
    pub version: u64,
    /// Its SQL.
    pub sql: String,
    /// When it was recorded.
    pub created_at: Option<String>,
    /// When its runners first started; `None` until they have.
    pub started_at: Option<String>,
    /// When the next version took over; `None` for the current one.
    pub ended_at: Option<String>,
    /// Per sink, the stream offset where this version took over.
    pub start_offsets: Option<BTreeMap<String, u64>>,
    /// Per sink, the stream offset where it handed over; `None` for the current one.
    pub end_offsets: Option<BTreeMap<String, u64>>,
    /// Any other field of the answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A pipeline's versions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineVersions {
    /// The pipeline's name.
    pub pipeline: String,
    /// Its versions, oldest first.
    pub versions: Vec<PipelineVersion>,
    /// Any other field of the answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a delete removed (`{"deleted": {"kind", "name"}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// `stream`, `sink` or `pipeline`.
    pub kind: String,
    /// The object's name.
    pub name: String,
}

/// Options of a delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// A stream: delete the pipelines that read it with it (`?force=true`), instead of a
    /// `409 in_use`.
    pub force: bool,
    /// A sink: drop its table and delete its files (`?purge=true`).
    pub purge: bool,
}

/// The routes of one kind of object: `client.streams()`, `client.sinks()`,
/// `client.pipelines()`.
#[derive(Debug, Clone, Copy)]
pub struct Objects<'a> {
    client: &'a Client,
    kind: Kind,
}

impl Client {
    /// The stream routes (`/v1/streams`).
    pub fn streams(&self) -> Objects<'_> {
        self.objects(Kind::Stream)
    }

    /// The sink routes (`/v1/sinks`).
    pub fn sinks(&self) -> Objects<'_> {
        self.objects(Kind::Sink)
    }

    /// The pipeline routes (`/v1/pipelines`).
    pub fn pipelines(&self) -> Objects<'_> {
        self.objects(Kind::Pipeline)
    }

    /// The routes of `kind`.
    pub fn objects(&self, kind: Kind) -> Objects<'_> {
        Objects { client: self, kind }
    }

    /// `GET /v1/pipelines/{name}/versions`: a pipeline's versions, oldest first.
    pub async fn pipeline_versions(&self, name: &str) -> Result<PipelineVersions, Error> {
        let url = self.url(&["v1", "pipelines", name, "versions"]);
        self.call_json(Method::GET, url, None).await
    }
}

impl Client {
    /// `POST /v1/tokens`: creates a token with `scopes`; the answer (`id`, `token`, `scopes`,
    /// `description`, `created_at`) is the only place the token's text appears.
    pub async fn create_token(&self, scopes: &[String], description: &str) -> Result<Value, Error> {
        let url = self.url(&["v1", "tokens"]);
        let body = serde_json::json!({"scopes": scopes, "description": description});
        self.call_json(Method::POST, url, Some(&body)).await
    }

    /// `GET /v1/tokens`: the tokens created at run time (never their secrets), as
    /// `{"tokens": [{id, scopes, description, created_at, revoked_at}], "config_tokens": N}`.
    pub async fn list_tokens(&self) -> Result<Value, Error> {
        let url = self.url(&["v1", "tokens"]);
        self.call_json(Method::GET, url, None).await
    }

    /// `DELETE /v1/tokens/{id}`: revokes a token, refused from that moment on.
    pub async fn revoke_token(&self, id: &str) -> Result<Value, Error> {
        let url = self.url(&["v1", "tokens", id]);
        self.call_json(Method::DELETE, url, None).await
    }
}

impl Objects<'_> {
    /// The kind these routes serve.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `POST /v1/{kind}`: creates an object from its `floe.toml` keys as JSON
    /// (`{"name": …, …}`). Answers the object created.
    pub async fn create(&self, body: Value) -> Result<Object, Error> {
        let url = self.client.url(&["v1", self.kind.plural()]);
        self.client.call_json(Method::POST, url, Some(&body)).await
    }

    /// `GET /v1/{kind}`: every object of this kind, whatever its origin.
    pub async fn list(&self) -> Result<Vec<Object>, Error> {
        let url = self.client.url(&["v1", self.kind.plural()]);
        let mut answer: Map<String, Value> = self.client.call_json(Method::GET, url.clone(), None).await?;
        let list = answer.remove(self.kind.plural()).unwrap_or(Value::Null);
        serde_json::from_value(list).map_err(|e| {
            Error::Decode(format!(
                "GET {url}: the answer has no list {:?} of objects: {e}",
                self.kind.plural()
            ))
        })
    }

    /// `GET /v1/{kind}/{name}`: one object (`Refused` with status 404 when there is none).
    pub async fn get(&self, name: &str) -> Result<Object, Error> {
        let url = self.client.url(&["v1", self.kind.plural(), name]);
        self.client.call_json(Method::GET, url, None).await
    }

    /// `PATCH /v1/{kind}/{name}`: changes an object by a JSON merge patch of its `config`
    /// (RFC 7386: the keys given replace the object's, `null` puts a key back to its default).
    /// Answers the object changed.
    pub async fn update(&self, name: &str, patch: Value) -> Result<Object, Error> {
        let url = self.client.url(&["v1", self.kind.plural(), name]);
        self.client.call_json(Method::PATCH, url, Some(&patch)).await
    }

    /// `DELETE /v1/{kind}/{name}[?force=true][?purge=true]`.
    pub async fn delete(&self, name: &str, options: DeleteOptions) -> Result<Deleted, Error> {
        let mut url = self.client.url(&["v1", self.kind.plural(), name]);
        {
            let mut query = url.query_pairs_mut();
            if options.force {
                query.append_pair("force", "true");
            }
            if options.purge {
                query.append_pair("purge", "true");
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        #[derive(Deserialize)]
        struct Answer {
            deleted: Deleted,
        }
        let answer: Answer = self.client.call_json(Method::DELETE, url, None).await?;
        Ok(answer.deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_of_the_contract_decodes_and_keeps_what_it_does_not_know() {
        let answer = json!({
            "kind": "pipeline", "name": "events_to_table", "origin": "api", "version": 2,
            "created_at": "2026-12-07T15:02:11.120Z", "updated_at": "2026-12-07T15:09:40.031Z",
            "config": {"name": "events_to_table", "sql": "INSERT INTO t SELECT * FROM events", "start": "latest"},
            "status": {
                "state": "running",
                "statements": [{"sink": "events_table", "stream": "events", "state": "running", "error": null,
                    "committed_offset": 12000, "log_end_offset": 12500, "lag_rows": 500, "lag_bytes": 81234,
                    "last_commit_at": "2026-12-07T15:09:41.500Z", "rows_out": 12000, "commits": 12}],
                "rows_in": 12500, "rows_out": 12000, "rows_dead_lettered": 0
            },
            "future_field": [1, 2]
        });
        let o: Object = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!((o.kind.as_str(), o.version), ("pipeline", 2));
        let status = o.status.as_ref().unwrap();
        assert_eq!(status.statements[0].committed_offset, Some(12000));
        assert_eq!(status.lag_rows(), 500);
        assert_eq!(o.extra["future_field"], json!([1, 2]));
        assert_eq!(serde_json::to_value(&o).unwrap(), answer);

        let stream: Object = serde_json::from_value(json!({
            "kind": "stream", "name": "events", "origin": "config", "version": 1,
            "created_at": null, "updated_at": null, "config": {"name": "events"}
        }))
        .unwrap();
        assert!(stream.status.is_none() && stream.created_at.is_none());
    }

    #[test]
    fn versions_decode() {
        let v: PipelineVersions = serde_json::from_value(json!({"pipeline": "p", "versions": [
            {"version": 1, "sql": "a", "created_at": "x", "started_at": "x", "ended_at": "y",
             "start_offsets": {"t": 0}, "end_offsets": {"t": 48000}},
            {"version": 2, "sql": "b", "created_at": "y", "started_at": "y", "ended_at": null,
             "start_offsets": {"t": 48000}, "end_offsets": null}
        ]}))
        .unwrap();
        assert_eq!(v.versions[0].end_offsets.as_ref().unwrap()["t"], 48000);
        assert!(v.versions[1].end_offsets.is_none() && v.versions[1].ended_at.is_none());
    }
}
