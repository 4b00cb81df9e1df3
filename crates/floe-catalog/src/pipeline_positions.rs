//! Position operations a pipeline needs at start, outside any table commit: recording where a
//! new (pipeline, sink) starts, handing an old pipeline's positions to the pipeline that
//! replaces it (a rename), and forgetting the positions of a deleted stream's readers.
//!
//! Both are plain rows of `floe_sink_positions`; the first data commit then moves the row with
//! the usual compare-and-swap (`position = from`), so a start position recorded here is exactly
//! what the first commit must start from.
//!
//! Also the identity of each stream's log (`floe_stream_logs (catalog_name, stream) -> log_id`),
//! recorded when floe first reads the log, so a log folder replaced by another log is noticed
//! even when the other log is longer.

use iceberg::Result;
use sqlx::Row;

use crate::catalog::{FloeCatalog, SELECT_POSITIONS, position_from_row};
use crate::positions::SinkPosition;
use crate::store::sql_err;

impl FloeCatalog {
    /// Records the position a (pipeline, sink) that never committed starts from, before any row
    /// of it is read, so that rows acknowledged after the start are replayed after a crash.
    /// `table` is `namespace.table`; `table_uuid` may be empty when the table does not exist yet
    /// (the first commit fills it in). When a row exists already (another instance recorded one
    /// first), it is left alone and returned.
    pub async fn record_start_position(
        &self,
        pipeline: &str,
        sink: &str,
        table: &str,
        table_uuid: &str,
        position: u64,
    ) -> Result<SinkPosition> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        sqlx::query(
            "INSERT INTO floe_sink_positions
                 (catalog_name, pipeline, sink, table_ident, table_uuid, position, snapshot_id, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, -1, $7)
                 ON CONFLICT (catalog_name, pipeline, sink) DO NOTHING",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(sink)
        .bind(table)
        .bind(table_uuid)
        .bind(position as i64)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(sql_err("record start position"))?;
        let row = sqlx::query(&format!("{SELECT_POSITIONS} AND pipeline = $2 AND sink = $3"))
            .bind(&self.name)
            .bind(pipeline)
            .bind(sink)
            .fetch_one(&mut *tx)
            .await
            .map_err(sql_err("read start position"))?;
        tx.commit().await.map_err(sql_err("commit start position"))?;
        Ok(position_from_row(&row))
    }

    /// Moves the positions (and open commit attempts, and files commits not yet published) of
    /// `old`'s `sinks` to pipeline `new`, in one transaction: a rename keeps every sink where it
    /// was. A sink's own derived rows (named
    /// `<sink>.<suffix>`, e.g. its dead-letter sink) move with it. Returns the moved positions;
    /// sinks `new` already has a position for are left alone.
    pub async fn take_over_positions(&self, old: &str, new: &str, sinks: &[String]) -> Result<Vec<SinkPosition>> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let mut moved = Vec::new();
        for sink in sinks {
            let pattern = format!("{}.%", like_escape(sink));
            let rows = sqlx::query(&format!(
                "{SELECT_POSITIONS} AND pipeline = $2 AND (sink = $3 OR sink LIKE $4 ESCAPE '\\')"
            ))
            .bind(&self.name)
            .bind(old)
            .bind(sink)
            .bind(&pattern)
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_err("read positions to take over"))?;
            for row in rows {
                let mut p = position_from_row(&row);
                let taken = sqlx::query(
                    "SELECT 1 FROM floe_sink_positions WHERE catalog_name = $1 AND pipeline = $2 AND sink = $3",
                )
                .bind(&self.name)
                .bind(new)
                .bind(&p.sink)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql_err("read positions to take over"))?
                .is_some();
                if taken {
                    continue;
                }
                for table in ["floe_sink_positions", "floe_sink_attempts", "floe_file_commits"] {
                    sqlx::query(&format!(
                        "UPDATE {table} SET pipeline = $1 WHERE catalog_name = $2 AND pipeline = $3 AND sink = $4"
                    ))
                    .bind(new)
                    .bind(&self.name)
                    .bind(old)
                    .bind(&p.sink)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_err("take over position"))?;
                }
                p.pipeline = new.to_string();
                moved.push(p);
            }
        }
        tx.commit().await.map_err(sql_err("commit take-over"))?;
        Ok(moved)
    }

    /// Deletes the positions of `pipeline`'s `sinks` (and of their derived `<sink>.<suffix>`
    /// rows), for a stream deleted with the pipelines that read it: a stream created again under
    /// its name has a new log, where those offsets mean nothing. A position with a files commit
    /// that landed but is not yet published (`floe_file_commits`) is kept, so its files are
    /// still published when the pair runs again. Returns the sinks whose positions were deleted.
    pub async fn forget_positions(&self, pipeline: &str, sinks: &[String]) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let mut forgotten = Vec::new();
        for sink in sinks {
            let pattern = format!("{}.%", like_escape(sink));
            let rows = sqlx::query(
                "DELETE FROM floe_sink_positions AS p
                 WHERE p.catalog_name = $1 AND p.pipeline = $2 AND (p.sink = $3 OR p.sink LIKE $4 ESCAPE '\\')
                   AND NOT EXISTS (SELECT 1 FROM floe_file_commits f
                                   WHERE f.catalog_name = p.catalog_name AND f.pipeline = p.pipeline AND f.sink = p.sink)
                 RETURNING sink",
            )
            .bind(&self.name)
            .bind(pipeline)
            .bind(sink)
            .bind(&pattern)
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_err("forget positions"))?;
            forgotten.extend(rows.iter().map(|r| r.get::<String, _>(0)));
        }
        tx.commit().await.map_err(sql_err("commit forget positions"))?;
        Ok(forgotten)
    }

    /// Whether pipeline `pipeline` has any recorded position.
    pub async fn pipeline_has_positions(&self, pipeline: &str) -> Result<bool> {
        let row = sqlx::query("SELECT count(*) FROM floe_sink_positions WHERE catalog_name = $1 AND pipeline = $2")
            .bind(&self.name)
            .bind(pipeline)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err("read positions"))?;
        Ok(row.get::<i64, _>(0) > 0)
    }
}

impl FloeCatalog {
    /// The log id recorded for `stream`, if any.
    pub async fn stream_log_id(&self, stream: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT log_id FROM floe_stream_logs WHERE catalog_name = $1 AND stream = $2")
            .bind(&self.name)
            .bind(stream)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err("read stream log id"))?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Records (or replaces) the log id of `stream`.
    pub async fn set_stream_log_id(&self, stream: &str, log_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO floe_stream_logs (catalog_name, stream, log_id, recorded_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (catalog_name, stream) DO UPDATE SET log_id = excluded.log_id, recorded_at_ms = excluded.recorded_at_ms",
        )
        .bind(&self.name)
        .bind(stream)
        .bind(log_id)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await
        .map_err(sql_err("record stream log id"))?;
        Ok(())
    }
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
