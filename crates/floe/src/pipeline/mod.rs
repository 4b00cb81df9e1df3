//! Pipelines: `INSERT INTO <sink> SELECT … FROM <stream> …`, planned by DataFusion.
//!
//! A pipeline's SQL holds one or more `INSERT` statements (fan-out). Each statement becomes a
//! [`Transform`]: the `SELECT` runs on every micro-batch of log records, with the stream
//! registered as an in-memory table holding just that micro-batch. Each statement keeps its own
//! committed position in its sink, so statements never wait for each other. [`runner`] drives a
//! statement: read the log, transform, write, commit.
//!
//! The SQL surface is DataFusion's, plus the JSON functions and `->` / `->>` operators of
//! `datafusion-functions-json` (registered in every session, see [`new_context`]).
//!
//! `now()` / `current_timestamp`: evaluated once per micro-batch (every micro-batch is planned in
//! a fresh session state, whose start time is the moment the batch is planned). All rows of one
//! micro-batch see the same value; a replay after a crash sees the time of the replay.
//!
//! Only stateless SQL is accepted: a plan that aggregates, joins, uses window functions, sorts,
//! limits, de-duplicates, unions or uses subquery expressions is refused when the pipeline is
//! created, with the reason. [`validate_sql`] runs the same planning without starting anything
//! and reports the output schema per sink, or the error with its line and column.
//!
//! [`identity`] decides at start where each statement resumes (and refuses what would skip or
//! repeat rows); [`dead_letter`] isolates rows whose SQL fails at run time.

pub mod dead_letter;
pub mod identity;
pub mod runner;
pub mod validate;

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{SetExpr, Spanned, Statement, TableObject};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

use crate::error::{Error, Result};

/// One `INSERT INTO sink SELECT …` of a pipeline, validated and ready to run.
#[derive(Clone)]
pub struct Transform {
    /// Pipeline name.
    pub pipeline: String,
    /// Sink the statement writes to.
    pub sink: String,
    /// Stream the statement reads.
    pub stream: String,
    /// The statement's output schema.
    pub output: SchemaRef,
    select: DfStatement,
    input: SchemaRef,
    ctx: SessionContext,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform")
            .field("pipeline", &self.pipeline)
            .field("sink", &self.sink)
            .field("stream", &self.stream)
            .finish()
    }
}

/// Why a pipeline's SQL was refused, with the position in the SQL when it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// What is wrong.
    pub message: String,
    /// 1-based line of the SQL the error points at.
    pub line: Option<u64>,
    /// 1-based column of the SQL the error points at.
    pub column: Option<u64>,
}

impl SqlError {
    fn new(message: impl std::fmt::Display) -> Self {
        SqlError {
            message: message.to_string(),
            line: None,
            column: None,
        }
    }

    fn at(mut self, line: u64, column: u64) -> Self {
        if line > 0 && self.line.is_none() {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            // Parser messages already carry their position.
            if !self.message.contains(" at Line: ") {
                write!(f, " (at line {l}, column {c})")?;
            }
        }
        Ok(())
    }
}

/// Parses and plans a pipeline's SQL against the known streams and sinks.
/// `streams` maps stream names to their Arrow schemas.
pub async fn plan_pipeline(
    pipeline: &str,
    sql: &str,
    streams: &[(String, SchemaRef)],
    sinks: &[String],
) -> Result<Vec<Transform>> {
    plan_statements(pipeline, sql, streams, sinks)
        .await
        .map_err(|e| Error::Config(format!("pipeline {pipeline:?}: {e}")))
}

/// [`plan_pipeline`] with the error's position kept apart (for validation).
pub async fn plan_statements(
    pipeline: &str,
    sql: &str,
    streams: &[(String, SchemaRef)],
    sinks: &[String],
) -> std::result::Result<Vec<Transform>, SqlError> {
    // PostgreSQL's dialect: `data->'a'` is the JSON operator there, not a lambda.
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(parser_error)?;
    if statements.is_empty() {
        return Err(SqlError::new(
            "the SQL holds no statement; write INSERT INTO <sink> SELECT … FROM <stream>",
        ));
    }
    let mut out = Vec::new();
    for (i, statement) in statements.into_iter().enumerate() {
        let start = statement.span().start;
        let at = |e: SqlError| e.at(start.line, start.column);
        let statement = hoist_with(statement).map_err(at)?;
        let Statement::Insert(insert) = statement else {
            return Err(at(SqlError::new(format!(
                "statement {} is not INSERT INTO <sink> SELECT …; a pipeline only inserts into sinks",
                i + 1
            ))));
        };
        let TableObject::TableName(name) = &insert.table else {
            return Err(at(SqlError::new("INSERT INTO must name a sink")));
        };
        let name_at = name.span().start;
        let sink = name.to_string();
        if streams.iter().any(|(s, _)| *s == sink) {
            return Err(SqlError::new(format!(
                "INSERT INTO {sink}: {sink:?} is a stream; writing to a stream from a pipeline is not supported \
                 (it would feed a pipeline's output back into the log); pipelines write to sinks"
            ))
            .at(name_at.line, name_at.column));
        }
        if !sinks.contains(&sink) {
            return Err(SqlError::new(format!(
                "INSERT INTO {sink}: no sink of that name (sinks: {})",
                sinks.join(", ")
            ))
            .at(name_at.line, name_at.column));
        }
        if !insert.columns.is_empty() {
            return Err(at(SqlError::new(
                "INSERT INTO sink (columns…) is not supported; name the columns in the SELECT",
            )));
        }
        let Some(source) = insert.source else {
            return Err(at(SqlError::new("INSERT needs a SELECT")));
        };
        let select = DfStatement::Statement(Box::new(Statement::Query(source)));
        let ctx = new_context();
        for (name, schema) in streams {
            let empty = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(SqlError::new)?;
            ctx.register_table(name.as_str(), Arc::new(empty))
                .map_err(SqlError::new)?;
        }
        let plan = ctx
            .state()
            .statement_to_plan(select.clone())
            .await
            .map_err(|e| datafusion_error(&e).at(start.line, start.column))?;
        check_stateless(&plan).map_err(at)?;
        let read = scanned_tables(&plan);
        let stream = match read.as_slice() {
            [one] => one.clone(),
            [] => return Err(at(SqlError::new("the SELECT reads no stream"))),
            many => {
                return Err(at(SqlError::new(format!(
                    "the SELECT reads {} streams ({}); a statement reads exactly one",
                    many.len(),
                    many.join(", ")
                ))));
            }
        };
        let input = streams
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| at(SqlError::new(format!("{stream:?} is not a stream"))))?;
        let planned: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let output = storable_schema(&planned).map_err(at)?;
        if let Err(e) = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&output) {
            return Err(at(SqlError::new(format!(
                "the SELECT's output cannot be an Iceberg table schema: {e}"
            ))));
        }
        out.push(Transform {
            pipeline: pipeline.to_string(),
            sink,
            stream,
            output,
            select,
            input,
            ctx: new_context(),
        });
    }
    Ok(out)
}

fn parser_error(e: ParserError) -> SqlError {
    let text = e.to_string();
    let mut err = SqlError::new(format!("SQL syntax: {text}"));
    // sqlparser ends its messages with "at Line: L, Column: C".
    if let Some(p) = text.rfind("at Line: ") {
        let rest = &text[p + "at Line: ".len()..];
        let mut parts = rest.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let col = parts
            .next()
            .and_then(|c| c.trim().trim_end_matches(|ch: char| !ch.is_ascii_digit()).parse().ok());
        if let (Some(l), Some(c)) = (line, col) {
            err = err.at(l, c);
        }
    }
    err
}

fn datafusion_error(e: &datafusion::error::DataFusionError) -> SqlError {
    let mut err = SqlError::new(e.find_root());
    if let Some(span) = e.diagnostic().and_then(|d| d.span) {
        err = err.at(span.start.line, span.start.column);
    }
    err
}

/// A session with floe's SQL surface: DataFusion's functions plus the JSON functions, the `->`,
/// `->>` and `?` operators and the cast rewrites of `datafusion-functions-json`.
pub fn new_context() -> SessionContext {
    // One partition: a micro-batch is small, and order within it is preserved.
    let mut config = SessionConfig::new().with_target_partitions(1);
    config.options_mut().sql_parser.collect_spans = true;
    let mut ctx = SessionContext::new_with_config(config);
    datafusion_functions_json::register_all(&mut ctx).expect("registering the JSON functions cannot fail");
    ctx
}

fn check_stateless(plan: &LogicalPlan) -> std::result::Result<(), SqlError> {
    let mut refused: Option<&'static str> = None;
    plan.apply_with_subqueries(|node| {
        refused = match node {
            LogicalPlan::Aggregate(_) => {
                Some("aggregations (GROUP BY, count, sum, …) are not supported: they need state across micro-batches")
            }
            LogicalPlan::Join(_) => Some("joins are not supported: they need state across micro-batches"),
            LogicalPlan::Window(_) => {
                Some("window functions (… OVER …) are not supported: they need state across micro-batches")
            }
            LogicalPlan::Sort(_) => {
                Some("ORDER BY is not supported: a stream is unbounded, so a pipeline could only sort each micro-batch")
            }
            LogicalPlan::Limit(_) => Some(
                "LIMIT/OFFSET is not supported: a stream is unbounded, so a pipeline could only limit each micro-batch",
            ),
            LogicalPlan::Distinct(_) => Some("DISTINCT is not supported: it needs state across micro-batches"),
            LogicalPlan::Union(_) => {
                Some("UNION/INTERSECT/EXCEPT are not supported: write one INSERT per stream instead")
            }
            LogicalPlan::Subquery(_) => Some(
                "subquery expressions (IN/EXISTS/scalar subqueries) are not supported: they compare rows across \
                 the stream; subqueries in FROM are fine",
            ),
            LogicalPlan::RecursiveQuery(_) => Some("recursive queries are not supported in a pipeline"),
            LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) => {
                Some("only a SELECT is allowed inside INSERT")
            }
            _ => None,
        };
        Ok(if refused.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })
    .map_err(|e| SqlError::new(e.find_root()))?;
    match refused {
        Some(why) => Err(SqlError::new(format!("not supported in a pipeline: {why}"))),
        None => Ok(()),
    }
}

/// `WITH … INSERT INTO t SELECT …` parses as a query around the INSERT: move the CTEs into the
/// INSERT's SELECT, so both spellings (`INSERT INTO t WITH … SELECT …` too) mean the same.
fn hoist_with(statement: Statement) -> std::result::Result<Statement, SqlError> {
    let Statement::Query(query) = statement else {
        return Ok(statement);
    };
    if !matches!(*query.body, SetExpr::Insert(_)) {
        return Ok(Statement::Query(query));
    }
    let query = *query;
    let with = query.with;
    let SetExpr::Insert(inner) = *query.body else {
        unreachable!("checked above")
    };
    let Statement::Insert(mut insert) = inner else {
        return Ok(inner);
    };
    if let (Some(with), Some(source)) = (with, insert.source.as_mut()) {
        if source.with.is_some() {
            return Err(SqlError::new(
                "WITH given both before INSERT and inside its SELECT; use one",
            ));
        }
        source.with = Some(with);
    }
    Ok(Statement::Insert(insert))
}

/// The schema a sink table gets for `planned`: types Iceberg has no equivalent for are widened
/// (small and unsigned integers, other timestamp/time units, string/binary views, dictionaries);
/// types it cannot hold at all are refused, naming the column.
fn storable_schema(planned: &SchemaRef) -> std::result::Result<SchemaRef, SqlError> {
    let fields = planned
        .fields()
        .iter()
        .map(|f| {
            storable_type(f.data_type())
                .map(|t| Arc::new(f.as_ref().clone().with_data_type(t)))
                .map_err(|why| SqlError::new(format!("output column {:?}: {why}", f.name())))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new_with_metadata(fields, planned.metadata().clone())))
}

fn storable_type(t: &DataType) -> std::result::Result<DataType, String> {
    use arrow::datatypes::{Field, TimeUnit};
    let child = |f: &Arc<Field>| -> std::result::Result<Arc<Field>, String> {
        Ok(Arc::new(
            f.as_ref().clone().with_data_type(storable_type(f.data_type())?),
        ))
    };
    Ok(match t {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time64(TimeUnit::Microsecond),
        DataType::Dictionary(_, v) => storable_type(v)?,
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            DataType::List(child(f)?)
        }
        DataType::FixedSizeList(f, _) => DataType::List(child(f)?),
        DataType::Struct(fs) => {
            DataType::Struct(fs.iter().map(child).collect::<std::result::Result<Vec<_>, _>>()?.into())
        }
        DataType::Map(f, sorted) => DataType::Map(child(f)?, *sorted),
        DataType::Union(..) => {
            return Err(
                "has a JSON union type (the result of json_get or ->), which no table can store; \
                 use ->> or json_get_str/json_get_int/…, or cast it (e.g. (data->'a')::bigint)"
                    .to_string(),
            );
        }
        DataType::Null => return Err("has no type (a bare NULL); give it one, e.g. CAST(NULL AS VARCHAR)".to_string()),
        DataType::Duration(_) | DataType::Interval(_) => {
            return Err(format!(
                "is a {t} (an interval), which Iceberg cannot store; convert it, e.g. to seconds with date_part('epoch', …)"
            ));
        }
        DataType::Decimal32(..) | DataType::Decimal64(..) => match t {
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
            _ => unreachable!(),
        },
        DataType::Decimal256(..) => {
            return Err(
                "is a 256-bit decimal; Iceberg decimals hold at most 38 digits (cast to DECIMAL(38, s))".into(),
            );
        }
        DataType::RunEndEncoded(_, v) => storable_type(v.data_type())?,
        other => other.clone(),
    })
}

fn scanned_tables(plan: &LogicalPlan) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let n = scan.table_name.table().to_string();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
}

impl Transform {
    /// The stream's schema, as the statement reads it.
    pub fn input_schema(&self) -> SchemaRef {
        self.input.clone()
    }

    /// Runs the statement's SELECT over one micro-batch of stream rows. The batch is planned in a
    /// fresh session state, so `now()` is the same for every row of it.
    pub async fn run(&self, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let table = MemTable::try_new(self.input.clone(), vec![input])?;
        self.ctx.deregister_table(self.stream.as_str())?;
        self.ctx.register_table(self.stream.as_str(), Arc::new(table))?;
        let state = self.ctx.state();
        let plan = state.statement_to_plan(self.select.clone()).await?;
        let df = DataFrame::new(state, plan);
        let batches = df.collect().await?;
        batches.into_iter().map(|b| self.to_output(b)).collect()
    }

    /// Casts a batch of the SELECT to the storable output schema (see [`storable_schema`]).
    fn to_output(&self, batch: RecordBatch) -> Result<RecordBatch> {
        crate::sink::schema::conform(&batch, &self.output)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn streams() -> Vec<(String, SchemaRef)> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ns", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]));
        vec![("events".to_string(), schema)]
    }

    #[tokio::test]
    async fn plans_and_runs_a_projection_with_filter() {
        let t = plan_pipeline(
            "p",
            "INSERT INTO t SELECT upper(ns) AS ns, n * 2 AS n2 FROM events WHERE n > 1",
            &streams(),
            &["t".into()],
        )
        .await
        .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].output.field(1).name(), "n2");
        let batch = RecordBatch::try_new(
            streams()[0].1.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![1, 5])),
            ],
        )
        .unwrap();
        let out = t[0].run(vec![batch]).await.unwrap();
        let rows: usize = out.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn refuses_stateful_sql_with_a_reason() {
        for (sql, why) in [
            (
                "INSERT INTO t SELECT ns, count(*) FROM events GROUP BY ns",
                "aggregations",
            ),
            ("INSERT INTO t SELECT * FROM events ORDER BY n", "ORDER BY"),
            ("INSERT INTO t SELECT * FROM events LIMIT 3", "LIMIT"),
            ("INSERT INTO events SELECT * FROM events", "is a stream"),
            ("INSERT INTO nope SELECT * FROM events", "no sink"),
            ("SELECT * FROM events", "not INSERT"),
            (
                "INSERT INTO t SELECT * FROM events WHERE n IN (SELECT n FROM events)",
                "subquery",
            ),
        ] {
            let err = plan_pipeline("p", sql, &streams(), &["t".into()])
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{sql}: {err}");
        }
    }
}
