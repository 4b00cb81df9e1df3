//! The control plane's rows: the streams, sinks and pipelines created at run time
//! (`floe_objects`) and the versions of every pipeline (`floe_pipeline_versions`), both added by
//! migration 4.
//!
//! ```text
//! floe_objects           (catalog_name, kind, name) -> body (JSON, floe.toml keys), version,
//!                        created_at_ms, updated_at_ms
//! floe_pipeline_versions (catalog_name, pipeline, version) -> sql_text, body, created_at_ms,
//!                        started_at_ms, ended_at_ms, start_offsets, end_offsets ({sink: offset})
//! ```
//!
//! The crate does not read the bodies: they are the caller's (the `floe` crate's config types as
//! JSON). What it keeps is the discipline: a create inserts with `ON CONFLICT DO NOTHING`, a
//! change swaps on the version it read (`UPDATE … WHERE version = $read`), each checked for one
//! changed row, and a pipeline's object and its version row change in one transaction, so a
//! stored pipeline always has the version row of its current body.
//!
//! A version's start is recorded when its runners first start, not when it is created:
//! [`FloeCatalog::start_pipeline_version`] sets `started_at_ms` and `start_offsets` of the newest
//! version once, and closes every older open version with the same offsets as its end, in one
//! transaction. A process killed between storing a new version and starting it records the
//! switch when it starts again.

use iceberg::{Error, ErrorKind, Result};
use sqlx::Row;

use crate::catalog::FloeCatalog;
use crate::store::sql_err;

/// What a stored object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A stream (`[[streams]]`).
    Stream,
    /// A sink (`[[sinks]]`).
    Sink,
    /// A pipeline (`[[pipelines]]`).
    Pipeline,
}

impl ObjectKind {
    /// The `kind` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Stream => "stream",
            ObjectKind::Sink => "sink",
            ObjectKind::Pipeline => "pipeline",
        }
    }

    fn parse(s: &str) -> Option<ObjectKind> {
        match s {
            "stream" => Some(ObjectKind::Stream),
            "sink" => Some(ObjectKind::Sink),
            "pipeline" => Some(ObjectKind::Pipeline),
            _ => None,
        }
    }
}

/// One row of `floe_objects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its kind.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// Its configuration as JSON.
    pub body: String,
    /// 1 at create, +1 per change.
    pub version: i64,
    /// When it was created (epoch ms).
    pub created_at_ms: i64,
    /// When it last changed (epoch ms).
    pub updated_at_ms: i64,
}

/// One row of `floe_pipeline_versions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineVersion {
    /// The pipeline.
    pub pipeline: String,
    /// 1, 2, …
    pub version: i64,
    /// Its SQL.
    pub sql: String,
    /// Its whole configuration as JSON.
    pub body: String,
    /// When it was recorded (epoch ms).
    pub created_at_ms: i64,
    /// When its runners first started (epoch ms).
    pub started_at_ms: Option<i64>,
    /// When the next version took over (epoch ms).
    pub ended_at_ms: Option<i64>,
    /// `{sink: offset}` where it took over, as JSON.
    pub start_offsets: Option<String>,
    /// `{sink: offset}` where it handed over, as JSON.
    pub end_offsets: Option<String>,
}

/// The outcome of a create or change that did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectRefused {
    /// An object of that kind and name exists already.
    Exists,
    /// No object of that kind and name.
    Missing,
    /// The object's version is no longer the one the change read.
    Moved {
        /// Its version now.
        now: i64,
    },
}

/// A pipeline's version to record with its object: the SQL and whole body.
pub struct VersionBody<'a> {
    /// Its SQL.
    pub sql: &'a str,
    /// Its configuration as JSON.
    pub body: &'a str,
}

const SELECT_OBJECTS: &str =
    "SELECT kind, name, body, version, created_at_ms, updated_at_ms FROM floe_objects WHERE catalog_name = $1";
const SELECT_VERSIONS: &str = "SELECT pipeline, version, sql_text, body, created_at_ms, started_at_ms, ended_at_ms, \
     start_offsets, end_offsets FROM floe_pipeline_versions WHERE catalog_name = $1";

fn object_from_row(row: &sqlx::any::AnyRow) -> Result<StoredObject> {
    let kind: String = row.get(0);
    let kind = ObjectKind::parse(&kind).ok_or_else(|| {
        Error::new(
            ErrorKind::DataInvalid,
            format!("floe_objects holds an object of unknown kind {kind:?}"),
        )
    })?;
    Ok(StoredObject {
        kind,
        name: row.get(1),
        body: row.get(2),
        version: row.get(3),
        created_at_ms: row.get(4),
        updated_at_ms: row.get(5),
    })
}

fn version_from_row(row: &sqlx::any::AnyRow) -> PipelineVersion {
    PipelineVersion {
        pipeline: row.get(0),
        version: row.get(1),
        sql: row.get(2),
        body: row.get(3),
        created_at_ms: row.get(4),
        started_at_ms: row.get(5),
        ended_at_ms: row.get(6),
        start_offsets: row.get(7),
        end_offsets: row.get(8),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl FloeCatalog {
    /// Every stored object, by kind then name.
    pub async fn objects(&self) -> Result<Vec<StoredObject>> {
        let rows = sqlx::query(&format!("{SELECT_OBJECTS} ORDER BY kind, name"))
            .bind(&self.name)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err("read objects"))?;
        rows.iter().map(object_from_row).collect()
    }

    /// The stored object `kind`/`name`.
    pub async fn object(&self, kind: ObjectKind, name: &str) -> Result<Option<StoredObject>> {
        let row = sqlx::query(&format!("{SELECT_OBJECTS} AND kind = $2 AND name = $3"))
            .bind(&self.name)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err("read object"))?;
        row.as_ref().map(object_from_row).transpose()
    }

    /// Stores a new object at version 1 (with its version row, for a pipeline); refused when one
    /// of that kind and name exists.
    pub async fn create_object(
        &self,
        kind: ObjectKind,
        name: &str,
        body: &str,
        pipeline: Option<VersionBody<'_>>,
    ) -> Result<std::result::Result<StoredObject, ObjectRefused>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let inserted = sqlx::query(
            "INSERT INTO floe_objects (catalog_name, kind, name, body, version, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT (catalog_name, kind, name) DO NOTHING",
        )
        .bind(&self.name)
        .bind(kind.as_str())
        .bind(name)
        .bind(body)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(sql_err("create object"))?
        .rows_affected();
        if inserted != 1 {
            return Ok(Err(ObjectRefused::Exists));
        }
        if let Some(v) = pipeline {
            self.insert_version(&mut tx, name, v, now).await?;
        }
        tx.commit().await.map_err(sql_err("commit object"))?;
        Ok(Ok(StoredObject {
            kind,
            name: name.to_string(),
            body: body.to_string(),
            version: 1,
            created_at_ms: now,
            updated_at_ms: now,
        }))
    }

    /// Replaces the body of `kind`/`name` if its version is still `read` (with a new version row,
    /// for a pipeline); the stored object at version `read + 1`, or why not.
    pub async fn update_object(
        &self,
        kind: ObjectKind,
        name: &str,
        read: i64,
        body: &str,
        pipeline: Option<VersionBody<'_>>,
    ) -> Result<std::result::Result<StoredObject, ObjectRefused>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let changed = sqlx::query(
            "UPDATE floe_objects SET body = $1, version = version + 1, updated_at_ms = $2
             WHERE catalog_name = $3 AND kind = $4 AND name = $5 AND version = $6",
        )
        .bind(body)
        .bind(now)
        .bind(&self.name)
        .bind(kind.as_str())
        .bind(name)
        .bind(read)
        .execute(&mut *tx)
        .await
        .map_err(sql_err("update object"))?
        .rows_affected();
        let row = sqlx::query(&format!("{SELECT_OBJECTS} AND kind = $2 AND name = $3"))
            .bind(&self.name)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_err("read object"))?;
        let Some(row) = row else {
            return Ok(Err(ObjectRefused::Missing));
        };
        let stored = object_from_row(&row)?;
        if changed != 1 {
            return Ok(Err(ObjectRefused::Moved { now: stored.version }));
        }
        if let Some(v) = pipeline {
            self.insert_version(&mut tx, name, v, now).await?;
        }
        tx.commit().await.map_err(sql_err("commit object"))?;
        Ok(Ok(stored))
    }

    /// Deletes `kind`/`name`; whether there was one. A pipeline's versions stay (creating it
    /// again continues its history).
    pub async fn delete_object(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM floe_objects WHERE catalog_name = $1 AND kind = $2 AND name = $3")
            .bind(&self.name)
            .bind(kind.as_str())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(sql_err("delete object"))?
            .rows_affected();
        Ok(deleted == 1)
    }

    /// Every recorded version of `pipeline`, oldest first.
    pub async fn pipeline_versions(&self, pipeline: &str) -> Result<Vec<PipelineVersion>> {
        let rows = sqlx::query(&format!("{SELECT_VERSIONS} AND pipeline = $2 ORDER BY version"))
            .bind(&self.name)
            .bind(pipeline)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err("read pipeline versions"))?;
        Ok(rows.iter().map(version_from_row).collect())
    }

    /// Records `v` as a new version of `pipeline` unless its newest version has the same SQL
    /// (a declarative pipeline at start); the newest version either way.
    pub async fn ensure_pipeline_version(&self, pipeline: &str, v: VersionBody<'_>) -> Result<PipelineVersion> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        // A write first: SQLite then takes the write lock (waiting its busy timeout) before
        // reading, instead of failing to upgrade a read lock another writer overtook.
        sqlx::query(
            "INSERT INTO floe_pipeline_versions (catalog_name, pipeline, version, sql_text, body, created_at_ms)
             SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5 FROM floe_pipeline_versions
             WHERE catalog_name = $1 AND pipeline = $2
             HAVING NOT EXISTS (SELECT 1 FROM floe_pipeline_versions n
                 WHERE n.catalog_name = $1 AND n.pipeline = $2 AND n.sql_text = $3
                   AND n.version = (SELECT MAX(m.version) FROM floe_pipeline_versions m
                                    WHERE m.catalog_name = $1 AND m.pipeline = $2))",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(v.sql)
        .bind(v.body)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(sql_err("record pipeline version"))?;
        let newest = self.newest_version(&mut tx, pipeline).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                format!("pipeline {pipeline:?} has no version after recording one"),
            )
        })?;
        tx.commit().await.map_err(sql_err("commit pipeline version"))?;
        Ok(newest)
    }

    /// Marks the newest version of `pipeline` started at `offsets` (JSON `{sink: offset}`), once,
    /// and every older version still open ended at the same offsets (see the module docs). The
    /// newest version; `None` when `pipeline` has none.
    pub async fn start_pipeline_version(&self, pipeline: &str, offsets: &str) -> Result<Option<PipelineVersion>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        // A write first (see ensure_pipeline_version): the newest version, if not started yet.
        let newest_version =
            "(SELECT MAX(m.version) FROM floe_pipeline_versions m WHERE m.catalog_name = $3 AND m.pipeline = $4)";
        let started = sqlx::query(&format!(
            "UPDATE floe_pipeline_versions SET started_at_ms = $1, start_offsets = $2
             WHERE catalog_name = $3 AND pipeline = $4 AND started_at_ms IS NULL AND version = {newest_version}"
        ))
        .bind(now)
        .bind(offsets)
        .bind(&self.name)
        .bind(pipeline)
        .execute(&mut *tx)
        .await
        .map_err(sql_err("start pipeline version"))?
        .rows_affected();
        if started == 1 {
            sqlx::query(&format!(
                "UPDATE floe_pipeline_versions SET ended_at_ms = $1, end_offsets = $2
                 WHERE catalog_name = $3 AND pipeline = $4 AND ended_at_ms IS NULL AND version < {newest_version}"
            ))
            .bind(now)
            .bind(offsets)
            .bind(&self.name)
            .bind(pipeline)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("end pipeline versions"))?;
        }
        let newest = self.newest_version(&mut tx, pipeline).await?;
        tx.commit().await.map_err(sql_err("commit pipeline version"))?;
        Ok(newest)
    }

    async fn newest_version(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        pipeline: &str,
    ) -> Result<Option<PipelineVersion>> {
        let row = sqlx::query(&format!(
            "{SELECT_VERSIONS} AND pipeline = $2 ORDER BY version DESC LIMIT 1"
        ))
        .bind(&self.name)
        .bind(pipeline)
        .fetch_optional(&mut **tx)
        .await
        .map_err(sql_err("read pipeline version"))?;
        Ok(row.as_ref().map(version_from_row))
    }

    async fn insert_version(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        pipeline: &str,
        v: VersionBody<'_>,
        now: i64,
    ) -> Result<()> {
        let next: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM floe_pipeline_versions WHERE catalog_name = $1 AND pipeline = $2",
        )
        .bind(&self.name)
        .bind(pipeline)
        .fetch_one(&mut **tx)
        .await
        .map_err(sql_err("read pipeline versions"))?
        .get(0);
        sqlx::query(
            "INSERT INTO floe_pipeline_versions (catalog_name, pipeline, version, sql_text, body, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(next)
        .bind(v.sql)
        .bind(v.body)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(sql_err("record pipeline version"))?;
        Ok(())
    }
}
