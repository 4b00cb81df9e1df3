//! SQL over the catalog's tables: `floe sql` and `POST /v1/query` (docs/query.md).
//!
//! Each query gets a fresh DataFusion session whose default catalog is floe's Iceberg catalog,
//! so `namespace.table` resolves and every query sees the latest committed snapshot. Filters and
//! projections are pushed into the Iceberg scan (file and row-group pruning by partition values
//! and statistics), whose files [`scan`] spreads over `target_partitions` (the machine's cores). [`tables`] adds metadata tables and time travel.
//! Results are bounded by `[limits] query_max_rows` and `query_timeout_seconds`; both errors
//! name the limit. Output: table, JSON, CSV, Arrow IPC (file format) or Parquet.
//!
//! Queries are **read-only** ([`read_only`]): the statement is parsed with DataFusion's parser
//! and only `SELECT`/`WITH`/`VALUES`, `EXPLAIN` of those, `SHOW` and `DESCRIBE` pass; the plan is
//! then checked again with DataFusion's `SQLOptions` (no DDL, no DML, no statements), so
//! `COPY … TO`, `CREATE [EXTERNAL] TABLE`, `INSERT`, `SET` and the like answer 400 `read_only`
//! and never run. The session has no URL tables (`SELECT * FROM '/path'` is an unknown table)
//! and only DataFusion's built-in table functions (`generate_series`, `range`), none of which
//! reads files.

pub mod scan;
pub mod tables;

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self as sql_ast, Visit, Visitor};
use floe_catalog::FloeCatalog;
use futures::StreamExt;
use iceberg_datafusion::IcebergCatalogProvider;
use serde::Deserialize;

use crate::config::{AuthConfig, Limits};
use crate::error::{Error, Result};

/// A query's rows and their schema (kept for empty results: Arrow and Parquet need it).
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// The result schema.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

/// Output formats of `floe sql` and `POST /v1/query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// JSON (HTTP: `{"columns", "rows"}`; CLI: an array of objects).
    Json,
    /// CSV with a header.
    Csv,
    /// Arrow IPC file format.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl OutputFormat {
    /// The format an `Accept` header asks for, if it names one.
    pub fn from_accept(accept: &str) -> Option<Self> {
        let a = accept.to_ascii_lowercase();
        if a.contains("application/vnd.apache.arrow") {
            Some(Self::Arrow)
        } else if a.contains("application/vnd.apache.parquet") || a.contains("application/x-parquet") {
            Some(Self::Parquet)
        } else if a.contains("text/csv") {
            Some(Self::Csv)
        } else if a.contains("text/plain") {
            Some(Self::Table)
        } else {
            None
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Table => "text/plain; charset=utf-8",
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.file",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Runs `sql` over every table of `catalog`, within `limits` (rows and time).
pub async fn run_sql(catalog: &FloeCatalog, sql: &str, limits: &Limits) -> Result<QueryOutput> {
    let timeout = Duration::from_secs_f64(limits.query_timeout_seconds);
    match tokio::time::timeout(timeout, run_sql_unbounded(catalog, sql, limits.query_max_rows)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Limit {
            limit: "limits.query_timeout_seconds",
            message: format!(
                "the query ran longer than {} s and was cancelled",
                limits.query_timeout_seconds
            ),
            status: StatusCode::BAD_REQUEST,
        }),
    }
}

/// A session over `catalog`: default catalog floe's, `information_schema` on, one partition per
/// core, and the same SQL surface as pipelines: PostgreSQL's dialect (so `data->'a'` is the JSON
/// operator) and the JSON functions of `datafusion-functions-json`.
pub async fn session(catalog: &FloeCatalog) -> Result<SessionContext> {
    let name = catalog.name().to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(&name, "default")
        .with_information_schema(true)
        .with_target_partitions(cores)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
    let mut ctx = SessionContext::new_with_config(config);
    datafusion_functions_json::register_all(&mut ctx)?;
    let inner = IcebergCatalogProvider::try_new(Arc::new(catalog.clone())).await?;
    ctx.register_catalog(
        &name,
        Arc::new(tables::FloeCatalogProvider::new(Arc::new(inner), catalog.clone())),
    );
    Ok(ctx)
}

/// The `error.code` of a refused write.
pub const READ_ONLY_CODE: &str = "read_only";

fn refused(what: &str) -> Error {
    Error::BadRequest {
        code: READ_ONLY_CODE,
        message: format!(
            "queries are read-only: {what} is not allowed; use SELECT, WITH, VALUES, EXPLAIN, SHOW or DESCRIBE"
        ),
    }
}

/// Finds the first statement or clause in a parsed query that is not a read: a nested
/// `INSERT`/`UPDATE`/`DELETE`/`MERGE` (`WITH … INSERT …`) or `SELECT … INTO` (creates a table).
struct Writes(Option<String>);

impl Visitor for Writes {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &sql_ast::Statement) -> std::ops::ControlFlow<()> {
        use sql_ast::Statement as S;
        match s {
            S::Query(_)
            | S::Explain { .. }
            | S::ExplainTable { .. }
            | S::ShowTables { .. }
            | S::ShowColumns { .. }
            | S::ShowVariable { .. }
            | S::ShowFunctions { .. }
            | S::ShowCreate { .. } => std::ops::ControlFlow::Continue(()),
            other => {
                self.0 = Some(statement_kind(other));
                std::ops::ControlFlow::Break(())
            }
        }
    }

    fn pre_visit_query(&mut self, q: &sql_ast::Query) -> std::ops::ControlFlow<()> {
        fn into(e: &sql_ast::SetExpr) -> bool {
            match e {
                sql_ast::SetExpr::Select(s) => s.into.is_some(),
                sql_ast::SetExpr::SetOperation { left, right, .. } => into(left) || into(right),
                _ => false,
            }
        }
        if into(&q.body) {
            self.0 = Some("SELECT … INTO".into());
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// The statement's leading keywords, for the error message (`CREATE FUNCTION`, `SET`, …).
fn statement_kind(s: &sql_ast::Statement) -> String {
    let text = s.to_string();
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let n = match words.as_slice() {
        [w, ..] if ["CREATE", "DROP", "ALTER"].contains(&w.to_ascii_uppercase().as_str()) => 2,
        _ => 1,
    };
    words
        .iter()
        .take(n)
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

/// The leading keyword of `sql` when it is not one a read starts with (comments and opening
/// parentheses skipped).
fn leading_write(sql: &str) -> Option<String> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after).trim_start();
        } else if let Some(r) = rest.strip_prefix('(') {
            rest = r.trim_start();
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    const READS: [&str; 7] = ["SELECT", "WITH", "VALUES", "EXPLAIN", "SHOW", "DESCRIBE", "DESC"];
    (!word.is_empty() && !READS.contains(&word.as_str())).then_some(word)
}

/// Refuses anything but a read: the allow-list of statement kinds over DataFusion's own parse
/// of `sql` (so what is checked is exactly what would run).
pub fn read_only(statement: &DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(s) => {
            let mut w = Writes(None);
            let _ = s.visit(&mut w);
            match w.0 {
                Some(what) => Err(refused(&what)),
                None => Ok(()),
            }
        }
        DfStatement::Explain(e) => read_only(&e.statement),
        DfStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(refused("COPY … TO")),
        DfStatement::Reset(_) => Err(refused("RESET")),
    }
}

/// The plan-level check: DataFusion's own verifier, with every kind of write off.
fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Parses, checks (statement allow-list, then `SQLOptions` on the plan) and plans `sql`.
pub async fn plan_read_only(ctx: &SessionContext, sql: &str) -> Result<datafusion::dataframe::DataFrame> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = match state.sql_to_statement(sql, &dialect) {
        Ok(s) => s,
        // Text that does not parse never runs; still, say "read-only" when it is plainly not
        // a read (e.g. a write in a syntax this dialect lacks) rather than a syntax error.
        Err(e) => {
            // Several statements (`SELECT 1; COPY …`): refuse any write among them as read-only
            // before the one-statement rule answers. Sessions use the PostgreSQL dialect.
            let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
            if let Ok(statements) = datafusion::sql::parser::DFParser::parse_sql_with_dialect(sql, &dialect) {
                for s in &statements {
                    read_only(s)?;
                }
            }
            return Err(leading_write(sql).map_or_else(|| Error::from(e), |w| refused(&w)));
        }
    };
    read_only(&statement)?;
    let plan = state.statement_to_plan(statement).await?;
    read_only_options()
        .verify_plan(&plan)
        .map_err(|e| refused(&e.strip_backtrace().replace("Error during planning: ", "")))?;
    Ok(ctx.execute_logical_plan(plan).await?)
}

async fn run_sql_unbounded(catalog: &FloeCatalog, sql: &str, max_rows: usize) -> Result<QueryOutput> {
    let ctx = session(catalog).await?;
    let df = plan_read_only(&ctx, sql).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    while let Some(b) = stream.next().await {
        let b = b?;
        rows += b.num_rows();
        if rows > max_rows {
            return Err(Error::Limit {
                limit: "limits.query_max_rows",
                message: format!("the query returns more than {max_rows} rows; add a LIMIT or aggregate"),
                status: StatusCode::BAD_REQUEST,
            });
        }
        batches.push(b);
    }
    Ok(QueryOutput { schema, batches })
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

/// Rows as an Arrow IPC file.
pub fn to_arrow_ipc(out: &QueryOutput) -> Result<Vec<u8>> {
    let mut w = arrow::ipc::writer::FileWriter::try_new(Vec::new(), &out.schema)?;
    for b in &out.batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(w.into_inner()?)
}

/// Rows as a Parquet file (zstd).
pub fn to_parquet(out: &QueryOutput) -> Result<Vec<u8>> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let pq = |e: parquet::errors::ParquetError| Error::Io(std::io::Error::other(format!("parquet: {e}")));
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), out.schema.clone(), Some(props)).map_err(pq)?;
    for b in &out.batches {
        w.write(b).map_err(pq)?;
    }
    w.into_inner().map_err(pq)
}

/// Rows as an aligned text table.
pub fn to_table(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    Ok(format!("{}\n", arrow::util::pretty::pretty_format_batches(batches)?).into_bytes())
}

/// Renders `out` in `format` (JSON here is the array of row objects).
pub fn render(out: &QueryOutput, format: OutputFormat) -> Result<Vec<u8>> {
    match format {
        OutputFormat::Table => to_table(&out.batches),
        OutputFormat::Json => to_json(&out.batches),
        OutputFormat::Csv => to_csv(&out.batches),
        OutputFormat::Arrow => to_arrow_ipc(out),
        OutputFormat::Parquet => to_parquet(out),
    }
}

/// `POST /v1/query` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The SQL.
    pub sql: String,
    /// Output format; default JSON unless the `Accept` header names another.
    #[serde(default)]
    pub format: Option<OutputFormat>,
}

/// What `POST /v1/query` needs of the node.
#[derive(Clone)]
pub struct QueryState {
    /// The Iceberg catalog.
    pub catalog: FloeCatalog,
    /// `[limits]` (rows and time of a query).
    pub limits: Limits,
    /// `[auth]`.
    pub auth: AuthConfig,
}

/// `POST /v1/query` → `{"columns": [...], "rows": [...]}`, or CSV / table text / Arrow IPC /
/// Parquet bytes when `format` (or `Accept`) asks for them.
pub async fn post_query(State(app): State<QueryState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let result = async {
        crate::auth::require(&app.auth, &headers, "read")?;
        let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| Error::BadRequest {
            code: "bad_request",
            message: format!(
                "body must be {{\"sql\": \"…\", \"format\": \"json|csv|table|arrow|parquet\" (optional)}}: {e}"
            ),
        })?;
        let format = req
            .format
            .or_else(|| {
                headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(OutputFormat::from_accept)
            })
            .unwrap_or(OutputFormat::Json);
        let out = run_sql(&app.catalog, &req.sql, &app.limits).await?;
        let bytes = if format == OutputFormat::Json {
            let columns: Vec<String> = out.schema.fields().iter().map(|f| f.name().clone()).collect();
            let rows = to_json(&out.batches)?;
            let mut v = Vec::with_capacity(rows.len() + 64);
            v.extend_from_slice(b"{\"columns\":");
            v.extend_from_slice(&serde_json::to_vec(&columns).expect("strings serialize"));
            v.extend_from_slice(b",\"rows\":");
            v.extend_from_slice(&rows);
            v.push(b'}');
            v
        } else {
            render(&out, format)?
        };
        Ok::<_, Error>((format, bytes))
    }
    .await;
    match result {
        Ok((format, body)) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => e.into_response(),
    }
}
