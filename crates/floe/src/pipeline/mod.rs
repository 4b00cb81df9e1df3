//! Pipelines: `INSERT INTO <sink> SELECT … FROM <stream> …`, planned by DataFusion.
//!
//! A pipeline's SQL holds one or more `INSERT` statements (fan-out). Each statement becomes a
//! [`Transform`]: the `SELECT` runs on every micro-batch of log records, with the stream
//! registered as an in-memory table holding just that micro-batch, so `now()` is evaluated once
//! per micro-batch. Each statement keeps its own committed position in its sink, so statements
//! never wait for each other. [`runner`] drives a statement: read the log, transform, write,
//! commit.
//!
//! Only stateless SQL is accepted: a plan that aggregates, joins, uses window functions, sorts or
//! limits is refused when the pipeline is created, with the reason.

pub mod runner;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{Statement, TableObject};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

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
    select: String,
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

fn plan_error(pipeline: &str, msg: impl std::fmt::Display) -> Error {
    Error::Config(format!("pipeline {pipeline:?}: {msg}"))
}

/// Parses and plans a pipeline's SQL against the known streams and sinks.
/// `streams` maps stream names to their Arrow schemas.
pub async fn plan_pipeline(
    pipeline: &str,
    sql: &str,
    streams: &[(String, SchemaRef)],
    sinks: &[String],
) -> Result<Vec<Transform>> {
    let statements =
        Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| plan_error(pipeline, format!("SQL syntax: {e}")))?;
    if statements.is_empty() {
        return Err(plan_error(
            pipeline,
            "the SQL holds no statement; write INSERT INTO <sink> SELECT … FROM <stream>",
        ));
    }
    let mut out = Vec::new();
    for (i, statement) in statements.into_iter().enumerate() {
        let Statement::Insert(insert) = statement else {
            return Err(plan_error(
                pipeline,
                format!("statement {} is not INSERT INTO <sink> SELECT …", i + 1),
            ));
        };
        let TableObject::TableName(name) = &insert.table else {
            return Err(plan_error(pipeline, "INSERT INTO must name a sink"));
        };
        let sink = name.to_string();
        if streams.iter().any(|(s, _)| *s == sink) {
            return Err(plan_error(
                pipeline,
                format!("{sink:?} is a stream; pipelines write to sinks, not streams"),
            ));
        }
        if !sinks.contains(&sink) {
            return Err(plan_error(
                pipeline,
                format!("INSERT INTO {sink}: no sink of that name (sinks: {})", sinks.join(", ")),
            ));
        }
        if !insert.columns.is_empty() {
            return Err(plan_error(
                pipeline,
                "INSERT INTO sink (columns…) is not supported; name the columns in the SELECT",
            ));
        }
        let Some(source) = insert.source else {
            return Err(plan_error(pipeline, "INSERT needs a SELECT"));
        };
        let select = source.to_string();
        let ctx = new_context();
        for (name, schema) in streams {
            let empty = MemTable::try_new(schema.clone(), vec![vec![]])?;
            ctx.register_table(name.as_str(), Arc::new(empty))?;
        }
        let plan = ctx
            .state()
            .create_logical_plan(&select)
            .await
            .map_err(|e| plan_error(pipeline, e.find_root()))?;
        check_stateless(pipeline, &plan)?;
        let read = scanned_tables(&plan);
        let stream = match read.as_slice() {
            [one] => one.clone(),
            [] => return Err(plan_error(pipeline, "the SELECT reads no stream")),
            many => {
                return Err(plan_error(
                    pipeline,
                    format!("the SELECT reads {} streams; a statement reads exactly one", many.len()),
                ));
            }
        };
        let input = streams
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, s)| s.clone())
            .expect("planned against streams");
        let output: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
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

fn new_context() -> SessionContext {
    // One partition: a micro-batch is small, and order within it is preserved.
    SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1))
}

fn check_stateless(pipeline: &str, plan: &LogicalPlan) -> Result<()> {
    let mut refused: Option<&'static str> = None;
    plan.apply(|node| {
        refused = match node {
            LogicalPlan::Aggregate(_) => Some("aggregations (GROUP BY, count, sum…) need state across micro-batches"),
            LogicalPlan::Join(_) => Some("joins need state across micro-batches"),
            LogicalPlan::Window(_) => Some("window functions need state across micro-batches"),
            LogicalPlan::Sort(_) => Some("ORDER BY has no meaning on an unbounded stream"),
            LogicalPlan::Limit(_) => Some("LIMIT has no meaning on an unbounded stream"),
            LogicalPlan::Distinct(_) => Some("DISTINCT needs state across micro-batches"),
            LogicalPlan::Union(_) => Some("UNION of streams is not supported; use one INSERT per stream"),
            LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) => {
                Some("only SELECT is allowed inside INSERT")
            }
            _ => None,
        };
        Ok(if refused.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    match refused {
        Some(why) => Err(plan_error(pipeline, format!("not supported in a pipeline: {why}"))),
        None => Ok(()),
    }
}

fn scanned_tables(plan: &LogicalPlan) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let _ = plan.apply(|node| {
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

    /// Runs the statement's SELECT over one micro-batch of stream rows.
    pub async fn run(&self, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let table = MemTable::try_new(self.input.clone(), vec![input])?;
        self.ctx.deregister_table(self.stream.as_str())?;
        self.ctx.register_table(self.stream.as_str(), Arc::new(table))?;
        let df = self.ctx.sql(&self.select).await?;
        Ok(df.collect().await?)
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
        ] {
            let err = plan_pipeline("p", sql, &streams(), &["t".into()])
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{sql}: {err}");
        }
    }
}
