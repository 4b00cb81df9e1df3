//! SQL over the catalog's tables: `floe sql` and `POST /v1/query`.
//!
//! Each query gets a fresh DataFusion session whose default catalog is floe's Iceberg catalog,
//! so `namespace.table` resolves and every query sees the latest committed snapshot.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use datafusion::prelude::{SessionConfig, SessionContext};
use floe_catalog::SqliteCatalog;
use iceberg_datafusion::IcebergCatalogProvider;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::server::App;

/// Most rows a query returns over HTTP or prints; beyond it the query fails naming the limit.
pub const MAX_RESULT_ROWS: usize = 100_000;

/// Runs `sql` over every table of `catalog`.
pub async fn run_sql(catalog: &SqliteCatalog, sql: &str) -> Result<Vec<RecordBatch>> {
    let name = catalog.name().to_string();
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(&name, "default")
        .with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    let provider = IcebergCatalogProvider::try_new(Arc::new(catalog.clone())).await?;
    ctx.register_catalog(&name, Arc::new(provider));
    let df = ctx.sql(sql).await?;
    let batches = df.collect().await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > MAX_RESULT_ROWS {
        return Err(Error::Limit {
            limit: "query.max_result_rows",
            message: format!("the query returned {rows} rows, over {MAX_RESULT_ROWS}; add a LIMIT or aggregate"),
            status: axum::http::StatusCode::BAD_REQUEST,
        });
    }
    Ok(batches)
}

/// Rows as a JSON array of objects.
pub fn to_json(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = arrow_json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs)?;
    writer.finish()?;
    let out = writer.into_inner();
    Ok(if out.is_empty() { b"[]".to_vec() } else { out })
}

/// Rows as CSV with a header.
pub fn to_csv(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    Ok(writer.into_inner())
}

/// `POST /v1/query` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The SQL.
    pub sql: String,
}

/// `POST /v1/query` → `{"columns": [...], "rows": [...]}`.
pub async fn post_query(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        crate::auth::require(&app.config.auth, &headers, "read")?;
        let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| Error::BadRequest {
            code: "bad_request",
            message: format!("body must be {{\"sql\": \"…\"}}: {e}"),
        })?;
        let batches = run_sql(&app.catalog, &req.sql).await?;
        let columns: Vec<String> = batches
            .first()
            .map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default();
        let rows = to_json(&batches)?;
        let mut out = Vec::with_capacity(rows.len() + 64);
        out.extend_from_slice(b"{\"columns\":");
        out.extend_from_slice(&serde_json::to_vec(&columns).expect("strings serialize"));
        out.extend_from_slice(b",\"rows\":");
        out.extend_from_slice(&rows);
        out.push(b'}');
        Ok::<_, Error>(out)
    }
    .await;
    match result {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}
