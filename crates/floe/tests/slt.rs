//! sqllogictest harness: `.slt` files in `tests/slt/` run against floe's real data path.
//!
//! Every statement goes through the same code as `floe serve`: the stream schema builds the
//! decoder, `send` calls the HTTP ingest handler (decode → validation → durable log append, dead
//! letters included), pipelines are planned by `App::open` (refusals included), every pipeline
//! statement is caught up and committed by the real runner into real Iceberg tables in a temp
//! folder, and queries read those tables back through floe's query path (`floe::query::run_sql`).
//!
//! # Directives
//!
//! The first line of a `statement` or `query` record picks what it does; the rest of the record's
//! text is that directive's body.
//!
//! | record | meaning |
//! |---|---|
//! | `stream NAME (f TYPE [required], …) [unknown_fields=drop] [on_invalid=dead_letter]` | declare a stream; no parentheses: an unstructured stream |
//! | `sink NAME NS.TABLE [partition_by=EXPR[;EXPR…]]` | declare an Iceberg sink |
//! | `pipeline NAME [key=value …]` + SQL lines | add a pipeline (`key=value`: its `[[pipelines]]` keys, e.g. `start=earliest`, `on_error=fail`); the server is re-opened (planning, refusals, start positions) and the new pipeline's sinks are opened (table creation, schema check) — errors come back as the statement's error |
//! | `remove_pipeline NAME` | take a pipeline out of the config and re-open (its positions stay in the catalog) |
//! | `send STREAM` + NDJSON lines (or one JSON array) | POST them to the stream; `statement count N` checks `accepted`; a non-200 is an error carrying the response body |
//! | `response STREAM` + NDJSON lines (in a `query`) | as `send`, the answer as one row: `accepted dead_lettered errors`, errors as `row:field:message` joined by ` | ` |
//! | `restart` | close everything (logs, catalog) and open it again from disk |
//! | `validate` + SQL lines (in a `query`) | the output schema (`name type required` per column) of each INSERT, as `POST /v1/validate_sql` computes it |
//! | anything else (in a `query`) | every pipeline is caught up and committed, then the SQL runs over the tables |
//!
//! `TYPE` is `string`, `int32`, `int64`, `float32`, `float64`, `bool`, `timestamp`, `binary`,
//! `json`, `list<TYPE [required]>` or `struct<f TYPE [required], …>`, nested freely.
//!
//! Values print with Arrow's display format: `NULL` for null, `(empty)` for an empty string.
//! Column type letters of `query` lines are not checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, HeaderValue, header};
use floe::config::Config;
use floe::node::App;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

fn err(e: impl std::fmt::Display) -> SltError {
    SltError(e.to_string())
}

struct FloeDb {
    dir: tempfile::TempDir,
    streams: Vec<String>,
    sinks: Vec<String>,
    pipelines: Vec<String>,
    app: Option<Arc<App>>,
}

impl FloeDb {
    fn new() -> Self {
        FloeDb {
            dir: tempfile::tempdir().expect("temp dir"),
            streams: vec![],
            sinks: vec![],
            pipelines: vec![],
            app: None,
        }
    }

    fn config_text(&self) -> String {
        let mut t = String::from("[server]\ndata_dir = \"data\"\n\n");
        for s in self.streams.iter().chain(&self.sinks).chain(&self.pipelines) {
            t.push_str(s);
            t.push('\n');
        }
        t
    }

    fn config(&self) -> Result<Config, SltError> {
        let path = self.dir.path().join("floe.toml");
        Config::from_toml(&self.config_text(), &path, self.dir.path()).map_err(err)
    }

    async fn close(&mut self) {
        if let Some(app) = self.app.take() {
            for s in app.streams.values() {
                s.log.close();
            }
            app.catalog.close().await;
        }
    }

    /// Closes the running app (if any) and opens one on the current config.
    async fn reopen(&mut self) -> Result<Arc<App>, SltError> {
        self.close().await;
        let app = App::open(self.config()?).await.map_err(err)?;
        self.app = Some(app.clone());
        Ok(app)
    }

    async fn app(&mut self) -> Result<Arc<App>, SltError> {
        match &self.app {
            Some(a) => Ok(a.clone()),
            None => self.reopen().await,
        }
    }

    /// Every pipeline statement reads its stream to the end and commits.
    async fn catch_up(&mut self, pipeline: Option<&str>) -> Result<(), SltError> {
        let app = self.app().await?;
        for t in app
            .statements()
            .iter()
            .filter(|t| pipeline.is_none_or(|p| t.pipeline == p))
        {
            floe::pipeline::runner::catch_up(&app, t).await.map_err(err)?;
        }
        Ok(())
    }

    async fn post(&mut self, stream: &str, body: &str) -> Result<serde_json::Value, SltError> {
        let app = self.app().await?;
        let mut headers = HeaderMap::new();
        // A body starting with `[` is sent as a JSON array, anything else as NDJSON.
        let ct = if body.trim_start().starts_with('[') {
            "application/json"
        } else {
            "application/x-ndjson"
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        let resp = floe::ingest::post_events(
            State(app),
            AxPath(stream.to_string()),
            headers,
            Body::from(body.to_string()),
        )
        .await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.map_err(err)?;
        let text = String::from_utf8_lossy(&bytes).to_string();
        if !status.is_success() {
            return Err(SltError(format!("HTTP {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(err)
    }

    async fn query(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        self.catch_up(None).await?;
        let app = self.app().await?;
        let out = floe::query::run_sql(&app.catalog, sql, &app.config.limits)
            .await
            .map_err(err)?;
        rows_output(&out.batches)
    }
}

fn rows_output(batches: &[RecordBatch]) -> Result<DBOutput<DefaultColumnType>, SltError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    let mut width = 0;
    for b in batches {
        width = b.num_columns();
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        for r in 0..b.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let v = f.value(r).to_string();
                        if v.is_empty() { "(empty)".to_string() } else { v }
                    })
                    .collect(),
            );
        }
    }
    Ok(DBOutput::Rows {
        types: vec![DefaultColumnType::Any; width],
        rows,
    })
}

/// Tokens of the stream field syntax.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in s.chars() {
        if "(),<>".contains(ch) || ch.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if !ch.is_whitespace() {
                out.push(ch.to_string());
            }
        } else {
            cur.push(ch);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses `f TYPE [required], …` up to the closing token into TOML inline tables.
fn parse_fields(toks: &[String], pos: &mut usize, close: &str) -> Result<Vec<String>, SltError> {
    let mut fields = Vec::new();
    loop {
        let name = toks.get(*pos).ok_or_else(|| err("field list ends early"))?.clone();
        *pos += 1;
        let ty = parse_type(toks, pos)?;
        let required = toks.get(*pos).is_some_and(|t| t == "required");
        if required {
            *pos += 1;
        }
        fields.push(format!("{{ name = {name:?}, required = {required}, {ty} }}"));
        match toks.get(*pos).map(String::as_str) {
            Some(",") => *pos += 1,
            Some(c) if c == close => {
                *pos += 1;
                return Ok(fields);
            }
            other => return Err(err(format!("expected ',' or '{close}', found {other:?}"))),
        }
    }
}

/// Parses a TYPE into the TOML keys `type = …` (and `items`/`fields`).
fn parse_type(toks: &[String], pos: &mut usize) -> Result<String, SltError> {
    let t = toks.get(*pos).ok_or_else(|| err("type expected"))?.clone();
    *pos += 1;
    match t.as_str() {
        "list" => {
            expect(toks, pos, "<")?;
            let inner = parse_type(toks, pos)?;
            let required = toks.get(*pos).is_some_and(|t| t == "required");
            if required {
                *pos += 1;
            }
            expect(toks, pos, ">")?;
            Ok(format!("type = \"list\", items = {{ required = {required}, {inner} }}"))
        }
        "struct" => {
            expect(toks, pos, "<")?;
            let fields = parse_fields(toks, pos, ">")?;
            Ok(format!("type = \"struct\", fields = [{}]", fields.join(", ")))
        }
        other => Ok(format!("type = {other:?}")),
    }
}

fn expect(toks: &[String], pos: &mut usize, what: &str) -> Result<(), SltError> {
    if toks.get(*pos).map(String::as_str) == Some(what) {
        *pos += 1;
        Ok(())
    } else {
        Err(err(format!("expected {what:?} at token {pos}")))
    }
}

fn stream_toml(rest: &str) -> Result<String, SltError> {
    let toks = tokens(rest);
    let name = toks.first().ok_or_else(|| err("stream needs a name"))?;
    let mut out = format!("[[streams]]\nname = {name:?}\n");
    let mut pos = 1;
    if toks.get(1).map(String::as_str) == Some("(") {
        pos = 2;
        let fields = parse_fields(&toks, &mut pos, ")")?;
        out.push_str(&format!("fields = [\n  {}\n]\n", fields.join(",\n  ")));
    }
    for opt in &toks[pos..] {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| err(format!("option {opt:?} is not key=value")))?;
        out.push_str(&format!("{k} = {v:?}\n"));
    }
    Ok(out)
}

fn sink_toml(rest: &str) -> Result<String, SltError> {
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [name, table, opts @ ..] = parts.as_slice() else {
        return Err(err("sink NAME NS.TABLE [partition_by=…]"));
    };
    let mut out = format!("[[sinks]]\nname = {name:?}\ntype = \"iceberg\"\ntable = {table:?}\n");
    for o in opts {
        match o.split_once('=') {
            Some(("partition_by", v)) => {
                let exprs: Vec<String> = v.split(';').map(|e| format!("{e:?}")).collect();
                out.push_str(&format!("partition_by = [{}]\n", exprs.join(", ")));
            }
            _ => return Err(err(format!("unknown sink option {o:?}"))),
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl AsyncDB for FloeDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let (first, body) = sql.split_once('\n').unwrap_or((sql, ""));
        let first = first.trim();
        let (word, rest) = first.split_once(' ').unwrap_or((first, ""));
        match word {
            "stream" => {
                self.streams.push(stream_toml(rest)?);
                if let Err(e) = self.reopen().await {
                    self.streams.pop();
                    return Err(e);
                }
                Ok(DBOutput::StatementComplete(0))
            }
            "sink" => {
                self.sinks.push(sink_toml(rest)?);
                if let Err(e) = self.reopen().await {
                    self.sinks.pop();
                    return Err(e);
                }
                Ok(DBOutput::StatementComplete(0))
            }
            "pipeline" => {
                let mut words = rest.split_whitespace();
                let name = words.next().unwrap_or_default();
                let mut toml = format!("[[pipelines]]\nname = {name:?}\nsql = {body:?}\n");
                for opt in words {
                    let (k, v) = opt
                        .split_once('=')
                        .ok_or_else(|| err(format!("pipeline option {opt:?} is not key=value")))?;
                    match v.parse::<u64>() {
                        Ok(n) => toml.push_str(&format!("{k} = {n}\n")),
                        Err(_) => toml.push_str(&format!("{k} = {v:?}\n")),
                    }
                }
                self.pipelines.push(toml);
                let opened = match self.reopen().await {
                    Ok(_) => self.catch_up(Some(name)).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = opened {
                    self.pipelines.pop();
                    self.reopen().await?;
                    return Err(e);
                }
                Ok(DBOutput::StatementComplete(0))
            }
            "send" => {
                let answer = self.post(rest.trim(), body).await?;
                Ok(DBOutput::StatementComplete(answer["accepted"].as_u64().unwrap_or(0)))
            }
            "response" => {
                let a = self.post(rest.trim(), body).await?;
                let errors: Vec<String> = a["errors"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|e| {
                                format!(
                                    "{}:{}:{}",
                                    e["row"],
                                    e["field"].as_str().unwrap_or(""),
                                    e["message"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let errors = if errors.is_empty() {
                    "(empty)".to_string()
                } else {
                    errors.join(" | ")
                };
                Ok(DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; 3],
                    rows: vec![vec![a["accepted"].to_string(), a["dead_lettered"].to_string(), errors]],
                })
            }
            "remove_pipeline" => {
                let name = rest.trim();
                let header = format!("[[pipelines]]\nname = {name:?}\n");
                let before = self.pipelines.len();
                self.pipelines.retain(|p| !p.starts_with(&header));
                if self.pipelines.len() == before {
                    return Err(err(format!("no pipeline {name:?} to remove")));
                }
                self.reopen().await?;
                Ok(DBOutput::StatementComplete(0))
            }
            "restart" => {
                self.reopen().await?;
                Ok(DBOutput::StatementComplete(0))
            }
            "validate" => {
                let config = self.config()?;
                let validated = floe::pipeline::validate::validate_sql(&config, body)
                    .await
                    .map_err(err)?;
                let mut rows = Vec::new();
                for v in validated {
                    let cols = floe::pipeline::validate::columns_json(&v.output);
                    for c in cols.as_array().into_iter().flatten() {
                        rows.push(vec![
                            v.sink.clone(),
                            c["name"].as_str().unwrap_or("").to_string(),
                            c["type"].as_str().unwrap_or("").to_string(),
                            c["required"].to_string(),
                        ]);
                    }
                }
                Ok(DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; 4],
                    rows,
                })
            }
            _ => self.query(sql).await,
        }
    }

    async fn shutdown(&mut self) {
        self.close().await;
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("slt")
}

async fn run_file(name: &str) {
    let path = slt_dir().join(format!("{name}.slt"));
    let mut runner = sqllogictest::Runner::new(|| async { Ok(FloeDb::new()) });
    if let Err(e) = runner.run_file_async(&path).await {
        panic!("{}: {}", path.display(), e.display(false));
    }
}

macro_rules! slt_files {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_file(stringify!($name)).await;
            }
        )*

        /// Every `.slt` file in the folder has a test above (a new file cannot be skipped).
        #[test]
        fn every_slt_file_runs() {
            let listed = [$(stringify!($name)),*];
            for entry in std::fs::read_dir(slt_dir()).expect("tests/slt") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "slt") {
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                    assert!(listed.contains(&stem.as_str()), "{} is not listed in slt_files!", path.display());
                }
            }
        }
    };
}

slt_files!(
    select,
    functions,
    json,
    unnest,
    fanout,
    refused,
    schemas,
    dead_letter,
    validate,
    read_only,
    pipeline_identity
);
