//! Commits of a **files sink** (plain NDJSON / Parquet files under a folder, no table): the
//! catalog's side of its exactly-once protocol.
//!
//! ```text
//!  floe_sink_attempts  (pipeline, sink, attempt) -> staging folder      before the first staged put
//!  one transaction (commit_files):
//!     DELETE the attempt's row                          ── 0 rows: taken over (refused)
//!     reserve N numbers of floe_file_sequences(target)  (sequence naming only)
//!     INSERT floe_file_commits (pipeline, sink, attempt) -> from, to, files [{staged, location}]
//!     move floe_sink_positions from -> to               ── stale from: refused (not retryable)
//!     COMMIT  ◄── the single atomic point: the file list + the position
//!  publish: every staged file renamed to its final location, then finish_file_commit
//!     deletes the floe_file_commits row
//! ```
//!
//! A row of `floe_file_commits` therefore names a commit that landed but may not be published
//! yet: the sink publishes it (again: idempotent) when it opens. A row left in
//! `floe_sink_attempts` names an attempt that never landed: its staged files are deleted. The
//! position row's `table_ident` is the sink's folder (`file:///…` or `s3://…`), its `table_uuid`
//! the attempt id of the first commit (kept afterwards), its `snapshot_id` -1: nothing that
//! lists Iceberg tables reads this table.

use iceberg::{Error, ErrorKind, Result};
use sqlx::Row;

use crate::catalog::{FloeCatalog, PositionTarget, cas_position, close_attempt};
use crate::outcome::unknown_outcome;
use crate::positions::PositionMove;
use crate::store::sql_err;

/// One file of a files-sink commit: where it was staged, and where it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedFile {
    /// The staged file (under the sink's `_floe/staging/` folder).
    pub staged: String,
    /// Its final location, visible to readers once published.
    pub location: String,
}

/// A files-sink commit that landed and is not known to be published yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCommit {
    /// The commit attempt.
    pub attempt: uuid::Uuid,
    /// The position it moved from.
    pub from: u64,
    /// The position it moved to.
    pub to: u64,
    /// Its files.
    pub files: Vec<CommittedFile>,
    /// When it landed (Unix millis).
    pub committed_at_ms: i64,
}

/// What one files-sink commit moves and records (see [`FloeCatalog::commit_files`]).
#[derive(Debug, Clone)]
pub struct FilesCommit<'a> {
    /// The pipeline.
    pub pipeline: &'a str,
    /// The sink.
    pub sink: &'a str,
    /// The sink's folder URI: the position's target, and the key of its sequence numbers.
    pub target: &'a str,
    /// The committed position before.
    pub from: u64,
    /// The position after.
    pub to: u64,
    /// The attempt whose files are recorded (registered with
    /// [`begin_attempt`](FloeCatalog::begin_attempt)); `None`: no files, the position moves alone.
    pub attempt: Option<uuid::Uuid>,
}

fn files_json(files: &[CommittedFile]) -> String {
    serde_json::Value::Array(
        files
            .iter()
            .map(|f| serde_json::json!({"staged": f.staged, "location": f.location}))
            .collect(),
    )
    .to_string()
}

fn files_from_json(text: &str) -> Result<Vec<CommittedFile>> {
    let bad = || Error::new(ErrorKind::DataInvalid, "floe_file_commits.files is not a list of files");
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad().with_source(e))?;
    value
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|f| {
            let field = |k: &str| f.get(k).and_then(|v| v.as_str()).map(str::to_string).ok_or_else(bad);
            Ok(CommittedFile {
                staged: field("staged")?,
                location: field("location")?,
            })
        })
        .collect()
}

impl FloeCatalog {
    /// Commits a files sink's attempt in **one transaction**: closes the attempt's
    /// `floe_sink_attempts` row (refused when it is gone: another instance took the sink over),
    /// reserves `sequence_numbers` numbers of the target's sequence (when more than 0), names the
    /// files with `name(first reserved number)` (0 when none are reserved), records them in
    /// `floe_file_commits` and moves the position from `from` to `to` (refused, not retryable,
    /// when it is no longer `from`). Returns the files recorded. A failed database `COMMIT` is of
    /// unknown outcome ([`commit_state_unknown`](crate::commit_state_unknown)): re-read with
    /// [`pending_file_commits`](Self::pending_file_commits) and
    /// [`pending_attempts`](Self::pending_attempts).
    pub async fn commit_files(
        &self,
        c: &FilesCommit<'_>,
        sequence_numbers: u64,
        name: impl FnOnce(u64) -> Vec<CommittedFile> + Send,
    ) -> Result<Vec<CommittedFile>> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        if let Some(attempt) = c.attempt {
            close_attempt(&mut tx, &self.name, c.pipeline, c.sink, attempt).await?;
        }
        let first = if sequence_numbers > 0 {
            self.reserve_sequence(&mut tx, c.target, sequence_numbers).await?
        } else {
            0
        };
        let files = name(first);
        let now = chrono::Utc::now().timestamp_millis();
        if !files.is_empty() {
            let Some(attempt) = c.attempt else {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    "a files commit with files needs its attempt",
                ));
            };
            sqlx::query(
                "INSERT INTO floe_file_commits
                     (catalog_name, pipeline, sink, attempt, position_from, position_to, files, committed_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&self.name)
            .bind(c.pipeline)
            .bind(c.sink)
            .bind(attempt.to_string())
            .bind(c.from as i64)
            .bind(c.to as i64)
            .bind(files_json(&files))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("record files commit"))?;
        }
        let mv = PositionMove {
            pipeline: c.pipeline.to_string(),
            sink: c.sink.to_string(),
            from: c.from,
            to: c.to,
            snapshot_id: -1,
            attempt: c.attempt,
        };
        let target = PositionTarget {
            ident: c.target.to_string(),
            uuid: c.attempt.unwrap_or_else(uuid::Uuid::now_v7).to_string(),
            keep_uuid: true,
        };
        cas_position(&mut tx, &self.name, &mv, &target, now).await?;
        tx.commit().await.map_err(|e| unknown_outcome("files commit", e))?;
        Ok(files)
    }

    /// Reserves `n` numbers of `target`'s sequence inside `tx`; returns the first.
    async fn reserve_sequence(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, target: &str, n: u64) -> Result<u64> {
        sqlx::query(
            "INSERT INTO floe_file_sequences (catalog_name, target, next_seq) VALUES ($1, $2, 0)
             ON CONFLICT (catalog_name, target) DO NOTHING",
        )
        .bind(&self.name)
        .bind(target)
        .execute(&mut **tx)
        .await
        .map_err(sql_err("create file sequence"))?;
        // The UPDATE locks the row (PostgreSQL) or the database (SQLite) until COMMIT, so two
        // commits never get the same numbers.
        sqlx::query("UPDATE floe_file_sequences SET next_seq = next_seq + $1 WHERE catalog_name = $2 AND target = $3")
            .bind(n as i64)
            .bind(&self.name)
            .bind(target)
            .execute(&mut **tx)
            .await
            .map_err(sql_err("reserve file sequence numbers"))?;
        let next: i64 = sqlx::query("SELECT next_seq FROM floe_file_sequences WHERE catalog_name = $1 AND target = $2")
            .bind(&self.name)
            .bind(target)
            .fetch_one(&mut **tx)
            .await
            .map_err(sql_err("read file sequence"))?
            .get(0);
        Ok((next as u64).saturating_sub(n))
    }

    /// The next number `target`'s sequence would hand out (0 when it never did).
    pub async fn file_sequence(&self, target: &str) -> Result<u64> {
        let row = sqlx::query("SELECT next_seq FROM floe_file_sequences WHERE catalog_name = $1 AND target = $2")
            .bind(&self.name)
            .bind(target)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err("read file sequence"))?;
        Ok(row.map_or(0, |r| r.get::<i64, _>(0) as u64))
    }

    /// The commits of `(pipeline, sink)` that landed and are not marked published, oldest first.
    pub async fn pending_file_commits(&self, pipeline: &str, sink: &str) -> Result<Vec<FileCommit>> {
        let rows = sqlx::query(
            "SELECT attempt, position_from, position_to, files, committed_at_ms FROM floe_file_commits
             WHERE catalog_name = $1 AND pipeline = $2 AND sink = $3 ORDER BY committed_at_ms, position_from",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(sink)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("read files commits"))?;
        rows.iter()
            .map(|r| {
                let attempt: String = r.get(0);
                Ok(FileCommit {
                    attempt: attempt.parse().map_err(|e| {
                        Error::new(ErrorKind::DataInvalid, "floe_file_commits.attempt is not a UUID").with_source(e)
                    })?,
                    from: r.get::<i64, _>(1) as u64,
                    to: r.get::<i64, _>(2) as u64,
                    files: files_from_json(&r.get::<String, _>(3))?,
                    committed_at_ms: r.get(4),
                })
            })
            .collect()
    }

    /// Marks a files commit published (its row goes): every file is at its final location.
    pub async fn finish_file_commit(&self, pipeline: &str, sink: &str, attempt: uuid::Uuid) -> Result<()> {
        sqlx::query(
            "DELETE FROM floe_file_commits WHERE catalog_name = $1 AND pipeline = $2 AND sink = $3 AND attempt = $4",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(sink)
        .bind(attempt.to_string())
        .execute(&self.pool)
        .await
        .map_err(sql_err("finish files commit"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lists_round_trip_through_json() {
        let files = vec![
            CommittedFile {
                staged: "file:///w/_floe/staging/p/s/a/00000.json".into(),
                location: "file:///w/year=2026/\"odd\" name.json".into(),
            },
            CommittedFile {
                staged: "s".into(),
                location: "l".into(),
            },
        ];
        assert_eq!(files_from_json(&files_json(&files)).expect("parse"), files);
        assert!(files_from_json("{}").is_err());
        assert!(files_from_json("[{\"staged\": 1}]").is_err());
    }
}
