//! Validating pipeline SQL before anything runs: `floe pipelines validate --sql "…"` and
//! `POST /v1/validate_sql`.
//!
//! The SQL is planned exactly as at start-up (same parser, same refusals, same functions) against
//! the streams and sinks of the configuration — no server, log or catalog is needed. The answer
//! is the output schema of each `INSERT` (the schema its sink's table gets), or the error with its
//! line and column in the SQL when DataFusion or the parser can point at one.
//!
//! ```text
//! POST /v1/validate_sql {"sql": "INSERT INTO t SELECT upper(ns) AS ns FROM events"}
//! 200 {"valid": true, "statements": [{"sink": "t", "stream": "events", "table": "analytics.t",
//!       "columns": [{"name": "ns", "type": "string", "required": false}]}]}
//! 400 {"error": {"code": "invalid_sql", "message": "…", "line": 1, "column": 22}}
//! ```

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{SqlError, plan_statements};
use crate::config::{Config, OnInvalid};
use crate::error::Error;
use crate::ingest::dead_letter;
use crate::ingest::schema::{arrow_schema, stream_fields};
use crate::sink::schema::iceberg_type_name;

/// The streams a pipeline of `config` may read, with their schemas (dead-letter streams included).
pub fn stream_schemas(config: &Config) -> Vec<(String, SchemaRef)> {
    let mut out: Vec<(String, SchemaRef)> = config
        .streams
        .iter()
        .map(|s| (s.name.clone(), arrow_schema(&stream_fields(s.fields.as_ref()))))
        .collect();
    for s in config.streams.iter().filter(|s| s.on_invalid == OnInvalid::DeadLetter) {
        let name = dead_letter::stream_name(&s.name);
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, arrow_schema(&dead_letter::fields())));
        }
    }
    out
}

/// One validated statement.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The sink it writes to.
    pub sink: String,
    /// The stream it reads.
    pub stream: String,
    /// The sink's table, when the configuration names one.
    pub table: Option<String>,
    /// The output schema (the sink table's schema).
    pub output: SchemaRef,
}

/// Plans `sql` against `config`'s streams and sinks without running anything.
pub async fn validate_sql(config: &Config, sql: &str) -> Result<Vec<Validated>, SqlError> {
    let streams = stream_schemas(config);
    let sinks: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    let transforms = plan_statements("validate", sql, &streams, &sinks).await?;
    Ok(transforms
        .into_iter()
        .map(|t| Validated {
            table: config.sink(&t.sink).and_then(|s| s.table.clone()),
            sink: t.sink,
            stream: t.stream,
            output: t.output,
        })
        .collect())
}

/// The columns of a schema as JSON: name, Iceberg type, required.
pub fn columns_json(schema: &Schema) -> Value {
    let types: Option<Vec<String>> = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(schema)
        .ok()
        .map(|s| {
            s.as_struct()
                .fields()
                .iter()
                .map(|f| iceberg_type_name(&f.field_type))
                .collect()
        });
    let cols: Vec<Value> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "name": f.name(),
                "type": types.as_ref().and_then(|t| t.get(i).cloned()).unwrap_or_else(|| f.data_type().to_string()),
                "arrow_type": f.data_type().to_string(),
                "required": !f.is_nullable(),
            })
        })
        .collect();
    Value::Array(cols)
}

/// The success answer.
pub fn answer_json(validated: &[Validated]) -> Value {
    json!({
        "valid": true,
        "statements": validated.iter().map(|v| json!({
            "sink": v.sink,
            "stream": v.stream,
            "table": v.table,
            "columns": columns_json(&v.output),
        })).collect::<Vec<_>>(),
    })
}

/// The error answer (the error shape of `docs/http-api.md`, "Errors", plus the position).
pub fn error_json(e: &SqlError) -> Value {
    let mut err = json!({"code": "invalid_sql", "message": e.to_string()});
    if let (Some(l), Some(c)) = (e.line, e.column) {
        err["line"] = json!(l);
        err["column"] = json!(c);
    }
    json!({ "error": err })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateRequest {
    sql: String,
}

/// What `POST /v1/validate_sql` needs of the node: the live streams and sinks (taken per
/// request) and the tokens.
#[derive(Clone)]
pub struct ValidateState {
    /// The live topology as a declaration (dead-letter streams and sinks included): what the SQL
    /// is planned against.
    pub config: Arc<Config>,
    /// `[auth]`.
    pub auth: crate::config::AuthConfig,
}

/// `POST /v1/validate_sql` `{"sql": "…"}` → 200 with the output schema per sink, or 400.
pub async fn post_validate_sql(
    State(app): State<ValidateState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = crate::auth::require(&app.auth, &headers, "read") {
        return e.into_response();
    }
    let req: ValidateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return Error::BadRequest {
                code: "bad_request",
                message: format!("body must be {{\"sql\": \"…\"}}: {e}"),
            }
            .into_response();
        }
    };
    // The live streams and sinks (dead-letter ones included).
    match validate_sql(&app.config, &req.sql).await {
        Ok(v) => (StatusCode::OK, axum::Json(answer_json(&v))).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(error_json(&e))).into_response(),
    }
}
