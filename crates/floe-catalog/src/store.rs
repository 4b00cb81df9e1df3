//! The catalog's database: **one store over two backends**, SQLite (the default, a file in the
//! data dir) and PostgreSQL (`[catalog] uri = "postgres://…"`, for several floe processes and
//! outside engines sharing one catalog).
//!
//! Both hold the same tables in the Iceberg JDBC layout (see the crate docs), so PyIceberg's
//! `SqlCatalog` and Spark's `JdbcCatalog` open either. Every statement the catalog runs is written
//! once, in the SQL both backends speak: numbered parameters (`$1`), `INSERT … ON CONFLICT`,
//! `BIGINT` for every 64-bit Iceberg id and position. What differs lives here and nowhere else:
//!
//! | | SQLite | PostgreSQL |
//! |---|---|---|
//! | connection set-up | WAL journal, `synchronous = FULL`, 30 s busy timeout | none |
//! | migrations serialised by | the database's single writer lock | `pg_advisory_xact_lock` |
//! | retryable errors (by code, never by message) | `SQLITE_BUSY`, `SQLITE_LOCKED` | `40001`, `40P01`, `55P03`, class `08` |
//!
//! # Schema versions
//!
//! `floe_schema_migrations (version, name, applied_at_ms)` records every migration applied. At
//! open, in one transaction, the missing ones of [`MIGRATIONS`] are applied in order and recorded;
//! a database whose recorded version is newer than this build knows is refused (an older floe
//! must not write to a catalog a newer one has changed). Migration 1 is written with
//! `IF NOT EXISTS`, so a catalog file made before versioning existed is adopted as it is.
//!
//! # Concurrency
//!
//! A commit is one transaction of compare-and-swap `UPDATE`s (`… WHERE metadata_location = $base`,
//! `… WHERE position = $from`) and `INSERT … ON CONFLICT DO NOTHING`s, each checked for exactly
//! one changed row. Under SQLite only one writer runs at a time. Under PostgreSQL's default READ
//! COMMITTED level a second writer of the same row waits for the first and then re-checks the
//! `WHERE` against the committed row, so it changes nothing and loses the swap; the same holds
//! for a conflicting `INSERT`. Either way a range of a stream and a table version can be claimed
//! once.

use std::path::Path;
use std::time::Duration;

use iceberg::{Error, ErrorKind, Result};

use crate::location::percent_decode;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

/// How long a SQLite statement waits for another connection's (or process's) lock before failing.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections in a SQLite pool; SQLite serialises writers anyway.
pub const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Connections in a PostgreSQL pool.
pub const POSTGRES_MAX_CONNECTIONS: u32 = 8;
/// How long opening a connection may take before the catalog reports the database unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// One schema migration: a version, a name, and its statements (in the SQL both backends speak).
pub struct Migration {
    /// Applied in increasing order; never reused.
    pub version: i64,
    /// What it does, recorded beside the version.
    pub name: &'static str,
    /// Its statements, run in one transaction with the others of the same open.
    pub statements: &'static [&'static str],
}

/// Every migration this build knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jdbc layout and floe sink positions",
        statements: &[
            "CREATE TABLE IF NOT EXISTS iceberg_tables (
                catalog_name VARCHAR(255) NOT NULL,
                table_namespace VARCHAR(255) NOT NULL,
                table_name VARCHAR(255) NOT NULL,
                metadata_location VARCHAR(1000),
                previous_metadata_location VARCHAR(1000),
                iceberg_type VARCHAR(5),
                PRIMARY KEY (catalog_name, table_namespace, table_name))",
            "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                catalog_name VARCHAR(255) NOT NULL,
                namespace VARCHAR(255) NOT NULL,
                property_key VARCHAR(255) NOT NULL,
                property_value VARCHAR(1000),
                PRIMARY KEY (catalog_name, namespace, property_key))",
            "CREATE TABLE IF NOT EXISTS floe_sink_positions (
                catalog_name VARCHAR(255) NOT NULL,
                pipeline VARCHAR(255) NOT NULL,
                sink VARCHAR(255) NOT NULL,
                table_ident VARCHAR(1000) NOT NULL,
                table_uuid VARCHAR(64) NOT NULL,
                position BIGINT NOT NULL,
                snapshot_id BIGINT NOT NULL,
                updated_at_ms BIGINT NOT NULL,
                PRIMARY KEY (catalog_name, pipeline, sink))",
            "CREATE TABLE IF NOT EXISTS floe_sink_attempts (
                catalog_name VARCHAR(255) NOT NULL,
                pipeline VARCHAR(255) NOT NULL,
                sink VARCHAR(255) NOT NULL,
                attempt VARCHAR(64) NOT NULL,
                table_location VARCHAR(1000) NOT NULL,
                started_at_ms BIGINT NOT NULL,
                PRIMARY KEY (catalog_name, pipeline, sink, attempt))",
        ],
    },
    Migration {
        version: 2,
        name: "stream log identities",
        statements: &["CREATE TABLE IF NOT EXISTS floe_stream_logs (
                catalog_name VARCHAR(255) NOT NULL,
                stream VARCHAR(255) NOT NULL,
                log_id VARCHAR(64) NOT NULL,
                recorded_at_ms BIGINT NOT NULL,
                PRIMARY KEY (catalog_name, stream))"],
    },
    Migration {
        version: 3,
        name: "files sink commits and sequences",
        statements: &[
            "CREATE TABLE IF NOT EXISTS floe_file_commits (
                catalog_name VARCHAR(255) NOT NULL,
                pipeline VARCHAR(255) NOT NULL,
                sink VARCHAR(255) NOT NULL,
                attempt VARCHAR(64) NOT NULL,
                position_from BIGINT NOT NULL,
                position_to BIGINT NOT NULL,
                files TEXT NOT NULL,
                committed_at_ms BIGINT NOT NULL,
                PRIMARY KEY (catalog_name, pipeline, sink, attempt))",
            "CREATE TABLE IF NOT EXISTS floe_file_sequences (
                catalog_name VARCHAR(255) NOT NULL,
                target VARCHAR(1000) NOT NULL,
                next_seq BIGINT NOT NULL,
                PRIMARY KEY (catalog_name, target))",
        ],
    },
    Migration {
        version: 4,
        name: "control plane objects and pipeline versions",
        statements: &[
            "CREATE TABLE IF NOT EXISTS floe_objects (
                catalog_name VARCHAR(255) NOT NULL,
                kind VARCHAR(16) NOT NULL,
                name VARCHAR(255) NOT NULL,
                body TEXT NOT NULL,
                version BIGINT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                updated_at_ms BIGINT NOT NULL,
                PRIMARY KEY (catalog_name, kind, name))",
            "CREATE TABLE IF NOT EXISTS floe_pipeline_versions (
                catalog_name VARCHAR(255) NOT NULL,
                pipeline VARCHAR(255) NOT NULL,
                version BIGINT NOT NULL,
                sql_text TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                started_at_ms BIGINT,
                ended_at_ms BIGINT,
                start_offsets TEXT,
                end_offsets TEXT,
                PRIMARY KEY (catalog_name, pipeline, version))",
        ],
    },
    Migration {
        version: 5,
        name: "tokens created at run time",
        statements: &["CREATE TABLE IF NOT EXISTS floe_tokens (
                catalog_name VARCHAR(255) NOT NULL,
                id VARCHAR(64) NOT NULL,
                secret_sha256 VARCHAR(64) NOT NULL,
                scopes TEXT NOT NULL,
                description VARCHAR(1000) NOT NULL,
                created_at_ms BIGINT NOT NULL,
                revoked_at_ms BIGINT,
                PRIMARY KEY (catalog_name, id))"],
    },
];

/// The catalog database: a connection pool and the backend it talks to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// The URI of a SQLite catalog file (created when missing).
    pub fn sqlite_uri(path: &Path) -> String {
        // Percent-encode what the URI syntax would misread (`?`, `#`, `%`, spaces).
        let mut uri = String::from("sqlite://");
        for b in path.to_string_lossy().bytes() {
            match b {
                b'?' | b'#' | b'%' | b' ' => uri.push_str(&format!("%{b:02X}")),
                _ => uri.push(b as char),
            }
        }
        uri.push_str("?mode=rwc");
        uri
    }

    /// The backend a catalog URI names: `sqlite:…` or `postgres://…` / `postgresql://…`.
    pub fn backend_of(uri: &str) -> Result<Backend> {
        if uri.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::new(
                ErrorKind::DataInvalid,
                "catalog uri must start with sqlite:, postgres:// or postgresql://",
            ))
        }
    }

    /// Connects to the catalog database at `uri` and brings its schema up to date.
    pub async fn connect(uri: &str) -> Result<Self> {
        let backend = Self::backend_of(uri)?;
        install_default_drivers();
        if backend == Backend::Sqlite
            && let Some(dir) = sqlite_file(uri).and_then(|p| p.parent().map(Path::to_path_buf))
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::new(ErrorKind::Unexpected, format!("create {}", dir.display())).with_source(e))?;
        }
        let options = AnyPoolOptions::new().acquire_timeout(CONNECT_TIMEOUT);
        let pool = match backend {
            Backend::Sqlite => options
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(sqlx::raw_sql(&format!(
                            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;",
                            SQLITE_BUSY_TIMEOUT.as_millis()
                        )))
                        .await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => options.max_connections(POSTGRES_MAX_CONNECTIONS),
        }
        .connect(uri)
        .await
        .map_err(|e| {
            // The URI may carry a password: name the backend, not the URI.
            let what = match backend {
                Backend::Sqlite => "open the SQLite catalog",
                Backend::Postgres => "connect to the PostgreSQL catalog",
            };
            sql_err_owned(what.to_string(), e)
        })?;
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The highest migration applied.
    pub async fn schema_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM floe_schema_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err("read schema version"))?;
        Ok(row.get::<i64, _>(0))
    }

    /// Applies the missing [`MIGRATIONS`] in one transaction (see the module docs).
    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin migration"))?;
        if self.backend == Backend::Postgres {
            // One migrator at a time across processes; released at COMMIT or ROLLBACK.
            sqlx::query("SELECT pg_advisory_xact_lock(7046100001)")
                .execute(&mut *tx)
                .await
                .map_err(sql_err("lock for migration"))?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS floe_schema_migrations (
                version BIGINT NOT NULL PRIMARY KEY,
                name VARCHAR(255) NOT NULL,
                applied_at_ms BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(sql_err("create floe_schema_migrations"))?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM floe_schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(sql_err("read schema version"))?
            .get(0);
        let newest = MIGRATIONS.last().map_or(0, |m| m.version);
        if current > newest {
            return Err(Error::new(
                ErrorKind::FeatureUnsupported,
                format!(
                    "the catalog database is at schema version {current}, newer than this floe knows ({newest}); \
                     run a floe at least as new as the one that upgraded it"
                ),
            ));
        }
        for m in MIGRATIONS.iter().filter(|m| m.version > current) {
            for statement in m.statements {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_err("apply schema migration"))?;
            }
            sqlx::query("INSERT INTO floe_schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(chrono::Utc::now().timestamp_millis())
                .execute(&mut *tx)
                .await
                .map_err(sql_err("record schema migration"))?;
            tracing::info!(version = m.version, name = m.name, "applied catalog schema migration");
        }
        tx.commit().await.map_err(sql_err("commit migration"))?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The file of a `sqlite://…` URI, percent-decoded (as written when an escape is malformed),
/// without its query; `None` for other URIs.
pub fn sqlite_file(uri: &str) -> Option<std::path::PathBuf> {
    let rest = uri.strip_prefix("sqlite://").or_else(|| uri.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    Some(std::path::PathBuf::from(
        percent_decode(path).unwrap_or_else(|| path.to_string()),
    ))
}

/// Whether a database error is a transient condition worth a retry, decided by the backend's
/// error code: SQLite's BUSY/LOCKED (primary codes 5 and 6, any extended code), PostgreSQL's
/// serialization failure, deadlock, lock not available and connection exceptions.
pub fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(d) => {
            let Some(code) = d.code() else { return false };
            if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // The extended result code; its low byte is the primary code.
                code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
            } else {
                // PostgreSQL's five-character SQLSTATE.
                matches!(&*code, "40001" | "40P01" | "55P03") || code.starts_with("08")
            }
        }
        _ => false,
    }
}

/// Maps a database error to the catalog's error, retryable by [`retryable`].
pub(crate) fn sql_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| sql_err_owned(context.to_string(), e)
}

fn sql_err_owned(context: String, e: sqlx::Error) -> Error {
    Error::new(ErrorKind::Unexpected, format!("catalog database: {context}"))
        .with_retryable(retryable(&e))
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_uris_round_trip_odd_paths() {
        for p in ["/d/floe/catalog.db", "/d/with space/a?b#c%d.db", "rel/x.db"] {
            let uri = Store::sqlite_uri(Path::new(p));
            assert_eq!(sqlite_file(&uri).expect("a sqlite uri"), Path::new(p), "{uri}");
            assert_eq!(Store::backend_of(&uri).expect("backend"), Backend::Sqlite);
        }
        assert_eq!(Store::backend_of("postgres://h/db").expect("pg"), Backend::Postgres);
        assert_eq!(Store::backend_of("postgresql://h/db").expect("pg"), Backend::Postgres);
        assert!(Store::backend_of("mysql://h/db").is_err());
    }

    #[test]
    fn migrations_are_ordered_and_unique() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(MIGRATIONS[0].version, 1);
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_and_a_reopen_applies_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = Store::sqlite_uri(&dir.path().join("c.db"));
        let store = Store::connect(&uri).await.expect("connect");
        let newest = MIGRATIONS.last().expect("migrations").version;
        assert_eq!(store.schema_version().await.expect("version"), newest);
        store.close().await;
        let again = Store::connect(&uri).await.expect("reopen");
        assert_eq!(again.schema_version().await.expect("version"), newest);
        sqlx::query("INSERT INTO floe_schema_migrations (version, name, applied_at_ms) VALUES ($1, 'future', 0)")
            .bind(newest + 1)
            .execute(again.pool())
            .await
            .expect("insert");
        again.close().await;
        let err = Store::connect(&uri).await.expect_err("newer schema");
        assert!(err.to_string().contains("newer than this floe knows"), "{err}");
    }
}
