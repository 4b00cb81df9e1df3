//! [`FloeCatalog`]: the `iceberg::Catalog` implementation over the JDBC-layout catalog database ([`crate::store`]).
//!
//! Every mutation of a table is a compare-and-swap on `iceberg_tables.metadata_location`; the
//! metadata file is written first (under a fresh UUID name, so it never overwrites anything) and
//! deleted again if the swap loses.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::Runtime;
use iceberg::io::{FileIO, FileIOBuilder, LocalFsStorageFactory};
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, Result, TableCommit, TableCreation,
    TableIdent, TableRequirement, TableUpdate,
};
use sqlx::{AnyPool, Row};

use crate::location::{PATH_PROPERTIES, Warehouse};
use crate::names::{decode_namespace, encode_namespace, validate_namespace, validate_table_ident};
use crate::outcome::{commit_state_unknown, unknown_outcome};
use crate::positions::{PositionMove, SinkPosition, find_position_move};
use crate::purge::{PurgeReport, purge_files, table_dir};
use crate::requirements::check_requirement;
use crate::s3::{S3Options, S3Storage, s3_file_io};
use crate::storage::{LocalStorage, Storage, read_metadata};
use crate::store::{Store, sql_err};

const NAMESPACE_MARKER: &str = "exists";

/// A new table's row (binds: catalog, namespace, name, metadata location); 0 rows changed means
/// the table exists already.
const INSERT_TABLE_ROW: &str = "INSERT INTO iceberg_tables
     (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type)
     VALUES ($1, $2, $3, $4, NULL, 'TABLE')
     ON CONFLICT (catalog_name, table_namespace, table_name) DO NOTHING";

/// The columns [`position_from_row`] reads, filtered to one catalog; callers append conditions.
pub(crate) const SELECT_POSITIONS: &str =
    "SELECT pipeline, sink, table_ident, table_uuid, position, snapshot_id, updated_at_ms
     FROM floe_sink_positions WHERE catalog_name = $1";

pub(crate) fn position_from_row(r: &sqlx::any::AnyRow) -> SinkPosition {
    SinkPosition {
        pipeline: r.get(0),
        sink: r.get(1),
        table: r.get(2),
        table_uuid: r.get(3),
        position: r.get::<i64, _>(4) as u64,
        snapshot_id: r.get(5),
        updated_at_ms: r.get(6),
    }
}

/// Builds a `FileIO` for a warehouse URI: local files for `file:///…` or an absolute path,
/// S3 (reached with `s3`) for `s3://…`.
pub fn file_io_for(warehouse: &str, s3: &S3Options) -> Result<FileIO> {
    if warehouse.starts_with("file://") || warehouse.starts_with('/') {
        Ok(FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build())
    } else if warehouse.starts_with("s3://") {
        Ok(s3_file_io(s3))
    } else {
        Err(Error::new(
            ErrorKind::FeatureUnsupported,
            format!("warehouse {warehouse:?}: a warehouse is a local folder (file://) or s3://bucket[/prefix]"),
        ))
    }
}

/// The storage for a warehouse: [`LocalStorage`] for a local folder, [`S3Storage`] for
/// `s3://` (reached with `s3`). It lives here, above both implementations, so that neither
/// storage module imports the other.
pub fn storage_for(warehouse: &Warehouse, s3: &S3Options) -> Result<Arc<dyn Storage>> {
    if warehouse.bucket().is_some() {
        Ok(Arc::new(S3Storage::new(warehouse.clone(), s3)?))
    } else {
        Ok(Arc::new(LocalStorage::new(warehouse.clone())))
    }
}

/// The requirements and updates of one table in a commit (what a REST `CommitTableRequest` or an
/// iceberg `TableCommit` carries).
#[derive(Debug, Clone)]
pub struct TableChange {
    /// The table.
    pub ident: TableIdent,
    /// Checked against the current metadata; any failure aborts the whole commit.
    pub requirements: Vec<TableRequirement>,
    /// Applied in order onto the current metadata.
    pub updates: Vec<TableUpdate>,
}

/// A table as a commit left it.
#[derive(Debug, Clone)]
pub struct CommittedTable {
    /// The table.
    pub ident: TableIdent,
    /// Its new current metadata file.
    pub metadata_location: String,
    /// The metadata in that file.
    pub metadata: TableMetadata,
}

/// A checked change whose metadata file is written but not yet pointed at.
#[derive(Debug)]
struct PreparedCommit {
    ident: TableIdent,
    /// `None`: the table is created by this commit.
    base_location: Option<String>,
    new_location: String,
    metadata: TableMetadata,
    position_move: Option<PositionMove>,
}

/// The Iceberg catalog over a SQLite or PostgreSQL [`Store`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FloeCatalog {
    // pub(crate): the pipeline position operations (pipeline_positions.rs) run their own SQL.
    pub(crate) pool: AnyPool,
    store: Store,
    storage: Arc<dyn Storage>,
    pub(crate) name: String,
    warehouse: Warehouse,
    file_io: FileIO,
    /// How `s3://` locations are reached (the warehouse, and files sinks on S3).
    s3: S3Options,
}

impl FloeCatalog {
    /// Opens (creating when missing) the SQLite catalog file at `db_path`. `name` is the JDBC
    /// layout's `catalog_name`; `warehouse` is the URI new tables are placed under
    /// (`file:///abs/path`; `s3://…` through [`connect_with_storage`](Self::connect_with_storage)).
    pub async fn open(db_path: &Path, name: &str, warehouse: &str) -> Result<Self> {
        Self::connect(&Store::sqlite_uri(db_path), name, warehouse).await
    }

    /// Opens the catalog database at `uri` (`sqlite://…` or `postgres://…`, see [`Store`]).
    pub async fn connect(uri: &str, name: &str, warehouse: &str) -> Result<Self> {
        Self::connect_with_storage(uri, name, warehouse, &S3Options::default()).await
    }

    /// Like [`connect`](Self::connect), reaching an `s3://` warehouse with `s3`.
    pub async fn connect_with_storage(uri: &str, name: &str, warehouse: &str, s3: &S3Options) -> Result<Self> {
        let file_io = file_io_for(warehouse, s3)?;
        Self::connect_with(uri, name, warehouse, file_io, s3).await
    }

    /// Like [`open`](Self::open), with a caller-supplied `FileIO` (tests inject faults this way).
    pub async fn open_with_file_io(db_path: &Path, name: &str, warehouse: &str, file_io: FileIO) -> Result<Self> {
        Self::connect_with_file_io(&Store::sqlite_uri(db_path), name, warehouse, file_io).await
    }

    /// Like [`connect`](Self::connect), with a caller-supplied `FileIO`.
    pub async fn connect_with_file_io(uri: &str, name: &str, warehouse: &str, file_io: FileIO) -> Result<Self> {
        Self::connect_with(uri, name, warehouse, file_io, &S3Options::default()).await
    }

    async fn connect_with(uri: &str, name: &str, warehouse: &str, file_io: FileIO, s3: &S3Options) -> Result<Self> {
        let warehouse = Warehouse::new(warehouse)?;
        let storage = storage_for(&warehouse, s3)?;
        let store = Store::connect(uri).await?;
        Ok(Self {
            pool: store.pool().clone(),
            store,
            storage,
            name: name.to_string(),
            warehouse,
            file_io,
            s3: s3.clone(),
        })
    }

    /// The database below the catalog.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The warehouse's storage ([`crate::storage`]): what floe itself reads, writes and deletes
    /// of table files goes through it.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The JDBC layout's `catalog_name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How `s3://` locations are reached (`[catalog.s3]`): the warehouse's storage and files
    /// sinks writing to `s3://` use the same settings.
    pub fn s3_options(&self) -> &S3Options {
        &self.s3
    }

    /// The warehouse URI.
    pub fn warehouse(&self) -> &str {
        self.warehouse.uri()
    }

    /// The warehouse's location rule ([`Warehouse::check`]).
    pub fn warehouse_rule(&self) -> &Warehouse {
        &self.warehouse
    }

    /// Reads the table metadata file at `location` the catalog's way: a regular file inside the
    /// warehouse, at most [`MAX_METADATA_BYTES`](crate::MAX_METADATA_BYTES), off the runtime.
    pub async fn read_metadata(&self, location: &str) -> Result<TableMetadata> {
        read_metadata(self.storage.as_ref(), "metadata file", location).await
    }

    /// The `FileIO` for the warehouse.
    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// The committed position of `(pipeline, sink)`, if it ever committed.
    pub async fn sink_position(&self, pipeline: &str, sink: &str) -> Result<Option<SinkPosition>> {
        let row = sqlx::query(&format!("{SELECT_POSITIONS} AND pipeline = $2 AND sink = $3"))
            .bind(&self.name)
            .bind(pipeline)
            .bind(sink)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err("read sink position"))?;
        Ok(row.as_ref().map(position_from_row))
    }

    /// All recorded sink positions.
    pub async fn sink_positions(&self) -> Result<Vec<SinkPosition>> {
        let rows = sqlx::query(&format!("{SELECT_POSITIONS} ORDER BY pipeline, sink"))
            .bind(&self.name)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err("read sink positions"))?;
        Ok(rows.iter().map(position_from_row).collect())
    }

    /// Moves a sink position without a snapshot: the rows of `[from, to)` produced no output
    /// (all filtered). Same compare-and-swap on the position as a data commit.
    pub async fn advance_position(
        &self,
        pipeline: &str,
        sink: &str,
        table: &TableIdent,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let location = self
            .metadata_location(table)
            .await?
            .ok_or_else(|| Self::no_such_table(table))?;
        let metadata = self.read_metadata(&location).await?;
        let snapshot_id = metadata.current_snapshot_id().unwrap_or(-1);
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let mv = PositionMove {
            pipeline: pipeline.to_string(),
            sink: sink.to_string(),
            from,
            to,
            snapshot_id,
            attempt: None,
        };
        self.move_position(&mut tx, table, &metadata, &mv).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(())
    }

    /// Records that a sink commit attempt is about to write files under `table_location`. The row
    /// is removed in the same transaction as the attempt's commit; one left behind names an
    /// attempt whose files never landed (see [`pending_attempts`](Self::pending_attempts)).
    pub async fn begin_attempt(
        &self,
        pipeline: &str,
        sink: &str,
        attempt: uuid::Uuid,
        table_location: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO floe_sink_attempts (catalog_name, pipeline, sink, attempt, table_location, started_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (catalog_name, pipeline, sink, attempt)
               DO UPDATE SET table_location = excluded.table_location, started_at_ms = excluded.started_at_ms",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(sink)
        .bind(attempt.to_string())
        .bind(table_location)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await
        .map_err(sql_err("record commit attempt"))?;
        Ok(())
    }

    /// Attempts of `(pipeline, sink)` that wrote files but never committed: `(attempt, table location)`.
    pub async fn pending_attempts(&self, pipeline: &str, sink: &str) -> Result<Vec<(uuid::Uuid, String)>> {
        let rows = sqlx::query(
            "SELECT attempt, table_location FROM floe_sink_attempts
             WHERE catalog_name = $1 AND pipeline = $2 AND sink = $3 ORDER BY started_at_ms",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(sink)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("read commit attempts"))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.get::<String, _>(0).parse().ok()?, r.get::<String, _>(1))))
            .collect())
    }

    /// Like [`pending_attempts`](Self::pending_attempts), with each attempt's last
    /// [`begin_attempt`](Self::begin_attempt) time (milliseconds since the Unix epoch): a writer
    /// that renews it while it works shows it is alive.
    pub async fn pending_attempts_since(&self, pipeline: &str, sink: &str) -> Result<Vec<(uuid::Uuid, String, i64)>> {
        let rows = sqlx::query(
            "SELECT attempt, table_location, started_at_ms FROM floe_sink_attempts
             WHERE catalog_name = $1 AND pipeline = $2 AND sink = $3 ORDER BY started_at_ms",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(sink)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("read commit attempts"))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some((
                    r.get::<String, _>(0).parse().ok()?,
                    r.get::<String, _>(1),
                    r.get::<i64, _>(2),
                ))
            })
            .collect())
    }

    /// Every attempt, of any sink, that wrote files below `table_location` and has not been
    /// closed: what orphan cleanup must never delete (their files may be committed any moment).
    pub async fn pending_attempts_at(&self, table_location: &str) -> Result<Vec<uuid::Uuid>> {
        let rows = sqlx::query("SELECT attempt, table_location FROM floe_sink_attempts WHERE catalog_name = $1")
            .bind(&self.name)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err("read commit attempts"))?;
        let dir = table_location.trim_end_matches('/');
        Ok(rows
            .into_iter()
            .filter(|r| r.get::<String, _>(1).trim_end_matches('/') == dir)
            .filter_map(|r| r.get::<String, _>(0).parse().ok())
            .collect())
    }

    /// Forgets an attempt once its files are deleted.
    pub async fn forget_attempt(&self, pipeline: &str, sink: &str, attempt: uuid::Uuid) -> Result<()> {
        sqlx::query(
            "DELETE FROM floe_sink_attempts WHERE catalog_name = $1 AND pipeline = $2 AND sink = $3 AND attempt = $4",
        )
        .bind(&self.name)
        .bind(pipeline)
        .bind(sink)
        .bind(attempt.to_string())
        .execute(&self.pool)
        .await
        .map_err(sql_err("forget commit attempt"))?;
        Ok(())
    }

    /// Closes the connection pool.
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// The JDBC layout's namespace column value (levels escaped and dot-joined, see
    /// [`encode_namespace`]).
    fn ns_key(ns: &NamespaceIdent) -> String {
        encode_namespace(ns)
    }

    fn build_table(&self, ident: TableIdent, location: String, metadata: TableMetadata) -> Result<Table> {
        Table::builder()
            .file_io(self.file_io.clone())
            .metadata_location(location)
            .metadata(metadata)
            .identifier(ident)
            .runtime(Runtime::try_current()?)
            .build()
    }

    /// The table's current metadata location as the catalog row has it (one database query, no
    /// file read): `None` when the table does not exist. Readers that cache a table compare it
    /// with the location they loaded to notice commits made by anyone.
    pub async fn current_metadata_location(&self, ident: &TableIdent) -> Result<Option<String>> {
        self.metadata_location(ident).await
    }

    async fn metadata_location(&self, ident: &TableIdent) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT metadata_location FROM iceberg_tables
             WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3
               AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
        )
        .bind(&self.name)
        .bind(Self::ns_key(ident.namespace()))
        .bind(ident.name())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_err("load table"))?;
        Ok(row.and_then(|r| r.get::<Option<String>, _>(0)))
    }

    fn no_such_table(ident: &TableIdent) -> Error {
        Error::new(ErrorKind::TableNotFound, format!("table {ident} does not exist"))
    }

    fn no_such_namespace(ns: &NamespaceIdent) -> Error {
        Error::new(
            ErrorKind::NamespaceNotFound,
            format!("namespace {} does not exist", ns.join(".")),
        )
    }

    async fn all_namespace_keys(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT namespace FROM iceberg_namespace_properties WHERE catalog_name = $1
             UNION SELECT DISTINCT table_namespace FROM iceberg_tables WHERE catalog_name = $2",
        )
        .bind(&self.name)
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("list namespaces"))?;
        Ok(rows.into_iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Applies `commit` and records a sink position move when the commit carries one; see the
    /// crate docs for the protocol. The one-table case of [`commit_changes`](Self::commit_changes).
    async fn commit_table(&self, mut commit: TableCommit) -> Result<Table> {
        let change = TableChange {
            ident: commit.identifier().clone(),
            requirements: commit.take_requirements(),
            updates: commit.take_updates(),
        };
        let committed = self
            .commit_changes(vec![change])
            .await?
            .pop()
            .expect("one change, one result");
        self.build_table(committed.ident, committed.metadata_location, committed.metadata)
    }

    /// What committing `commit` would make of the table, without writing or committing
    /// anything: the requirements checked and the updates applied to the current metadata (a
    /// dry run of an iceberg `Transaction`, through [`crate::Preview`]).
    pub async fn preview_commit(&self, mut commit: TableCommit) -> Result<Table> {
        let ident = commit.identifier().clone();
        let (location, metadata) = self.load_metadata(&ident).await?;
        let metadata = apply_commit(&metadata, &location, commit.take_requirements(), commit.take_updates())?;
        self.build_table(ident, location, metadata)
    }

    /// Commits changes to one or more tables **all or nothing** — the one commit path of the
    /// catalog, used by floe's sinks (through [`Catalog::update_table`]) and by the REST API
    /// (table commits and multi-table transactions).
    ///
    /// For each change: load the current metadata, check the requirements against it
    /// ([`TableRequirement::check`]), apply the updates ([`TableUpdate::apply`]) and write the new
    /// metadata file. Then, in **one** database transaction, compare-and-swap every table's
    /// `metadata_location` against the location the change was built on (or insert the row of a
    /// table created by an `assert-create` change) and move any sink position a change carries.
    /// If any swap or position move fails, nothing is committed and every metadata file written
    /// for the call is deleted again.
    ///
    /// A failed requirement or a lost swap is [`ErrorKind::CatalogCommitConflicts`] (retryable:
    /// reload and re-apply); an update that cannot apply is [`ErrorKind::DataInvalid`].
    pub async fn commit_changes(&self, changes: Vec<TableChange>) -> Result<Vec<CommittedTable>> {
        if changes.is_empty() {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                "a commit needs at least one table change",
            ));
        }
        for (i, c) in changes.iter().enumerate() {
            if changes[..i].iter().any(|o| o.ident == c.ident) {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    format!("table {} appears twice in one commit", c.ident),
                ));
            }
        }
        let mut prepared: Vec<PreparedCommit> = Vec::with_capacity(changes.len());
        for change in changes {
            match self.prepare_commit(change).await {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    self.delete_metadata_files(&prepared).await;
                    return Err(e);
                }
            }
        }
        match self.swap_pointers(&prepared).await {
            Ok(()) => Ok(prepared
                .into_iter()
                .map(|p| CommittedTable {
                    ident: p.ident,
                    metadata_location: p.new_location,
                    metadata: p.metadata,
                })
                .collect()),
            // The outcome is unknown: the files may be what the catalog points at now.
            Err(e) if commit_state_unknown(&e) => Err(e),
            Err(e) => {
                self.delete_metadata_files(&prepared).await;
                Err(e)
            }
        }
    }

    async fn delete_metadata_files(&self, prepared: &[PreparedCommit]) {
        for p in prepared {
            if let Err(del) = self.file_io.delete(&p.new_location).await {
                tracing::warn!(location = %p.new_location, error = %del, "could not delete metadata of a failed commit");
            }
        }
    }

    /// Checks and applies one change and writes its metadata file; nothing is visible yet.
    async fn prepare_commit(&self, change: TableChange) -> Result<PreparedCommit> {
        let TableChange {
            ident,
            requirements,
            updates,
        } = change;
        let position_move = find_position_move(&updates)?;
        // A commit that names its attempt (a sink's, or a rewrite's) names its metadata file
        // after it, so a failed attempt's files can all be found by its id.
        let attempt = position_move
            .as_ref()
            .and_then(|m| m.attempt)
            .or_else(|| snapshot_attempt(&updates));
        let updates = self.checked_updates(updates)?;
        let base_location = self.metadata_location(&ident).await?;
        let creates = requirements.contains(&TableRequirement::NotExist);
        let (new_metadata, mut new_location) = match &base_location {
            Some(base_location) => {
                let base_metadata = self.read_metadata(base_location).await?;
                let new_metadata = apply_commit(&base_metadata, base_location, requirements, updates)?;
                if new_metadata.location() != base_metadata.location() {
                    self.warehouse.check("location", new_metadata.location())?;
                }
                let new_location = MetadataLocation::from_str(base_location)?
                    .with_next_version()
                    .with_new_metadata(&new_metadata);
                (new_metadata, new_location)
            }
            None if creates => {
                // The commit of a staged create (REST `stage-create`, then `assert-create`).
                validate_table_ident(&ident)?;
                if !self.namespace_exists(ident.namespace()).await? {
                    return Err(Self::no_such_namespace(ident.namespace()));
                }
                for requirement in &requirements {
                    check_requirement(requirement, None)?;
                }
                let default_location = self.default_table_location(&ident);
                let new_metadata = metadata_from_create_updates(updates, &default_location)?;
                self.warehouse.check("location", new_metadata.location())?;
                let new_location = MetadataLocation::new_with_metadata(new_metadata.location(), &new_metadata);
                (new_metadata, new_location)
            }
            None => return Err(Self::no_such_table(&ident)),
        };
        if let Some(attempt) = attempt {
            new_location = MetadataLocation::from_str(&with_attempt_id(&new_location.to_string(), attempt))?;
        }
        // Where the metadata file goes follows the (checked) table location; check the file
        // itself too, so nothing is written outside the warehouse.
        self.warehouse.check("metadata location", &new_location.to_string())?;
        new_metadata.write_to(&self.file_io, &new_location).await?;
        let new_location = new_location.to_string();
        let prepared = PreparedCommit {
            ident,
            base_location,
            new_location,
            metadata: new_metadata,
            position_move,
        };
        if let Err(e) = self.storage.sync(&prepared.new_location).await {
            self.delete_metadata_files(std::slice::from_ref(&prepared)).await;
            return Err(e);
        }
        Ok(prepared)
    }

    /// The location rule applied to a commit's updates: `set-location`, the `write.*.path`
    /// properties, a snapshot's manifest list and statistics files must lie inside the
    /// warehouse; locations are replaced by their normalised form.
    fn checked_updates(&self, updates: Vec<TableUpdate>) -> Result<Vec<TableUpdate>> {
        updates
            .into_iter()
            .map(|update| {
                Ok(match update {
                    TableUpdate::SetLocation { location } => TableUpdate::SetLocation {
                        location: self.warehouse.check("set-location", location.trim_end_matches('/'))?,
                    },
                    TableUpdate::SetProperties { updates } => TableUpdate::SetProperties {
                        updates: self.checked_table_properties(updates)?,
                    },
                    TableUpdate::AddSnapshot { snapshot } => {
                        self.warehouse.check("manifest-list", snapshot.manifest_list())?;
                        TableUpdate::AddSnapshot { snapshot }
                    }
                    TableUpdate::SetStatistics { statistics } => {
                        self.warehouse.check("statistics-path", &statistics.statistics_path)?;
                        TableUpdate::SetStatistics { statistics }
                    }
                    TableUpdate::SetPartitionStatistics { partition_statistics } => {
                        self.warehouse
                            .check("statistics-path", &partition_statistics.statistics_path)?;
                        TableUpdate::SetPartitionStatistics { partition_statistics }
                    }
                    other => other,
                })
            })
            .collect()
    }

    /// Table properties with the `write.*.path` ones checked against the location rule and
    /// normalised.
    fn checked_table_properties(&self, mut properties: HashMap<String, String>) -> Result<HashMap<String, String>> {
        for key in PATH_PROPERTIES {
            if let Some(v) = properties.get_mut(*key) {
                *v = self
                    .warehouse
                    .check(&format!("property {key}"), v.trim_end_matches('/'))?;
            }
        }
        Ok(properties)
    }

    /// Namespace properties with `location` checked against the location rule (PyIceberg's
    /// `SqlCatalog` and Java's `JdbcCatalog` place new tables there) and normalised.
    fn checked_namespace_properties(&self, mut properties: HashMap<String, String>) -> Result<HashMap<String, String>> {
        if let Some(v) = properties.get_mut("location") {
            *v = self.warehouse.check("namespace location", v.trim_end_matches('/'))?;
        }
        Ok(properties)
    }

    /// Purges a table: drops it and deletes the files its metadata references under its
    /// location (see [`crate::purge`]). A table whose location is outside the warehouse is
    /// refused before anything is dropped.
    pub async fn purge_table_files(&self, ident: &TableIdent) -> Result<PurgeReport> {
        let (metadata_location, metadata) = self.load_metadata(ident).await?;
        let dir = table_dir(&self.warehouse, &metadata)?;
        self.drop_table(ident).await?;
        let report = purge_files(self.storage.as_ref(), dir, metadata_location, metadata).await?;
        tracing::info!(table = %ident, deleted = report.deleted, skipped = report.skipped, "purged table");
        Ok(report)
    }

    /// The single atomic point of a commit: every pointer and position in one database transaction.
    async fn swap_pointers(&self, prepared: &[PreparedCommit]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin commit"))?;
        // One fixed order of rows for every commit, so two multi-table commits on PostgreSQL
        // wait for each other instead of deadlocking.
        let mut ordered: Vec<&PreparedCommit> = prepared.iter().collect();
        ordered.sort_by_cached_key(|p| p.ident.to_string());
        for p in ordered {
            let ident = &p.ident;
            let swapped = match &p.base_location {
                Some(base_location) => sqlx::query(
                    "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2
                     WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5
                       AND metadata_location = $6",
                )
                .bind(&p.new_location)
                .bind(base_location)
                .bind(&self.name)
                .bind(Self::ns_key(ident.namespace()))
                .bind(ident.name())
                .bind(base_location),
                None => sqlx::query(INSERT_TABLE_ROW)
                    .bind(&self.name)
                    .bind(Self::ns_key(ident.namespace()))
                    .bind(ident.name())
                    .bind(&p.new_location),
            }
            .execute(&mut *tx)
            .await
            .map_err(sql_err("swap metadata pointer"))?;
            if swapped.rows_affected() != 1 {
                let what = if p.base_location.is_some() {
                    "was changed by another commit"
                } else {
                    "was created by another commit"
                };
                return Err(Error::new(
                    ErrorKind::CatalogCommitConflicts,
                    format!("table {ident} {what}; retry on the new metadata"),
                )
                .with_retryable(true));
            }
            if let Some(mv) = &p.position_move {
                self.move_position(&mut tx, ident, &p.metadata, mv).await?;
            }
        }
        // Everything before this point failed before COMMIT and rolled back; a failing COMMIT
        // leaves the outcome unknown.
        tx.commit().await.map_err(|e| unknown_outcome("commit", e))?;
        Ok(())
    }

    /// Where a table is placed when its creation names no location.
    fn default_table_location(&self, ident: &TableIdent) -> String {
        // Valid names are single harmless path segments, so this is inside the warehouse.
        format!(
            "{}/{}/{}",
            self.warehouse.uri(),
            ident.namespace().join("/"),
            ident.name()
        )
    }

    /// The metadata a create would produce, without writing or registering anything (REST
    /// `stage-create`): the namespace must exist and the table must not.
    pub async fn stage_table(&self, namespace: &NamespaceIdent, creation: TableCreation) -> Result<TableMetadata> {
        let (_, metadata) = self.creation_metadata(namespace, creation).await?;
        Ok(metadata)
    }

    async fn creation_metadata(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<(TableIdent, TableMetadata)> {
        let ident = TableIdent::new(namespace.clone(), creation.name.clone());
        validate_table_ident(&ident)?;
        if !self.namespace_exists(namespace).await? {
            return Err(Self::no_such_namespace(namespace));
        }
        if self.metadata_location(&ident).await?.is_some() {
            return Err(Error::new(
                ErrorKind::TableAlreadyExists,
                format!("table {ident} already exists"),
            ));
        }
        let location = match &creation.location {
            Some(l) => l.trim_end_matches('/').to_string(),
            None => self.default_table_location(&ident),
        };
        let location = self.warehouse.check("location", &location)?;
        let properties = self.checked_table_properties(creation.properties.clone())?;
        let creation = TableCreation {
            location: Some(location),
            properties,
            ..creation
        };
        let metadata = TableMetadataBuilder::from_table_creation(creation)?.build()?.metadata;
        Ok((ident, metadata))
    }

    /// Adds, changes and removes namespace properties in one transaction. Returns the keys
    /// removed and the keys asked for removal that were not set. The JDBC layout's `exists`
    /// marker is reserved.
    pub async fn update_namespace_properties(
        &self,
        namespace: &NamespaceIdent,
        removals: &[String],
        updates: &HashMap<String, String>,
    ) -> Result<(Vec<String>, Vec<String>)> {
        if !self.namespace_exists(namespace).await? {
            return Err(Self::no_such_namespace(namespace));
        }
        if let Some(k) = removals.iter().find(|k| updates.contains_key(*k)) {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("property {k:?} is both updated and removed"),
            ));
        }
        if removals.iter().chain(updates.keys()).any(|k| k == NAMESPACE_MARKER) {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("property {NAMESPACE_MARKER:?} is reserved by the catalog layout"),
            ));
        }
        let updates = &self.checked_namespace_properties(updates.clone())?;
        let key = Self::ns_key(namespace);
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        // A namespace that exists only as the parent of another gets its marker row now.
        sqlx::query(
            "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value)
             VALUES ($1, $2, $3, 'true')
             ON CONFLICT (catalog_name, namespace, property_key) DO NOTHING",
        )
        .bind(&self.name)
        .bind(&key)
        .bind(NAMESPACE_MARKER)
        .execute(&mut *tx)
        .await
        .map_err(sql_err("update namespace"))?;
        let (mut removed, mut missing) = (Vec::new(), Vec::new());
        for k in removals {
            let deleted = sqlx::query(
                "DELETE FROM iceberg_namespace_properties WHERE catalog_name = $1 AND namespace = $2 AND property_key = $3",
            )
            .bind(&self.name)
            .bind(&key)
            .bind(k)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("update namespace"))?;
            if deleted.rows_affected() == 1 {
                removed.push(k.clone());
            } else {
                missing.push(k.clone());
            }
        }
        for (k, v) in updates {
            sqlx::query(
                "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (catalog_name, namespace, property_key) DO UPDATE SET property_value = excluded.property_value",
            )
            .bind(&self.name)
            .bind(&key)
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("update namespace"))?;
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok((removed, missing))
    }

    /// Registers an existing metadata file as table `ident`; with `overwrite`, an existing
    /// table's pointer is replaced (its files are left alone).
    pub async fn register_table_at(
        &self,
        ident: &TableIdent,
        metadata_location: &str,
        overwrite: bool,
    ) -> Result<Table> {
        if !overwrite {
            return self.register_table(ident, metadata_location.to_string()).await;
        }
        let (metadata_location, metadata) = self.registered_metadata(ident, metadata_location).await?;
        sqlx::query(
            "INSERT INTO iceberg_tables
             (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type)
             VALUES ($1, $2, $3, $4, NULL, 'TABLE')
             ON CONFLICT (catalog_name, table_namespace, table_name) DO UPDATE SET
               previous_metadata_location = iceberg_tables.metadata_location,
               metadata_location = excluded.metadata_location",
        )
        .bind(&self.name)
        .bind(Self::ns_key(ident.namespace()))
        .bind(ident.name())
        .bind(&metadata_location)
        .execute(&self.pool)
        .await
        .map_err(sql_err("register table"))?;
        self.build_table(ident.clone(), metadata_location, metadata)
    }

    /// The checks of a register: a valid name in an existing namespace, a metadata file inside
    /// the warehouse that is readable table metadata (bounded, off the runtime) and whose own
    /// `location` is inside the warehouse too. Answers the normalised metadata location.
    async fn registered_metadata(
        &self,
        ident: &TableIdent,
        metadata_location: &str,
    ) -> Result<(String, TableMetadata)> {
        validate_table_ident(ident)?;
        if !self.namespace_exists(ident.namespace()).await? {
            return Err(Self::no_such_namespace(ident.namespace()));
        }
        let location = self.warehouse.check("metadata-location", metadata_location)?;
        let metadata = read_metadata(self.storage.as_ref(), "metadata-location", metadata_location).await?;
        self.warehouse
            .check("the location recorded in the registered metadata", metadata.location())?;
        Ok((location, metadata))
    }

    /// The current metadata location and metadata of a table.
    pub async fn load_metadata(&self, ident: &TableIdent) -> Result<(String, TableMetadata)> {
        let location = self
            .metadata_location(ident)
            .await?
            .ok_or_else(|| Self::no_such_table(ident))?;
        let metadata = self.read_metadata(&location).await?;
        Ok((location, metadata))
    }

    async fn move_position(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        ident: &TableIdent,
        metadata: &TableMetadata,
        mv: &PositionMove,
    ) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        if let Some(attempt) = mv.attempt {
            close_attempt(tx, &self.name, &mv.pipeline, &mv.sink, attempt).await?;
        }
        let target = PositionTarget {
            ident: ident.to_string(),
            uuid: metadata.uuid().to_string(),
            keep_uuid: false,
        };
        cas_position(tx, &self.name, mv, &target, now).await
    }
}

/// Deletes the `floe_sink_attempts` row of `attempt` inside `tx`, the commit's own transaction;
/// refused when it is gone: another instance opened this sink and treated the attempt as
/// abandoned (its files may be deleted), so the commit must not land.
pub(crate) async fn close_attempt(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    catalog_name: &str,
    pipeline: &str,
    sink: &str,
    attempt: uuid::Uuid,
) -> Result<()> {
    let closed = sqlx::query(
        "DELETE FROM floe_sink_attempts WHERE catalog_name = $1 AND pipeline = $2 AND sink = $3 AND attempt = $4",
    )
    .bind(catalog_name)
    .bind(pipeline)
    .bind(sink)
    .bind(attempt.to_string())
    .execute(&mut **tx)
    .await
    .map_err(sql_err("close commit attempt"))?;
    if closed.rows_affected() != 1 {
        return Err(Error::new(
            ErrorKind::PreconditionFailed,
            format!(
                "commit attempt {attempt} of pipeline {pipeline:?} sink {sink:?} is no longer registered: another instance took over this sink"
            ),
        ));
    }
    Ok(())
}

/// What a position row records about its target: the table (`namespace.table`, or a files
/// sink's folder) and its UUID.
pub(crate) struct PositionTarget {
    pub ident: String,
    pub uuid: String,
    /// Keep a UUID the row has already (a files sink's is fixed by its first commit).
    pub keep_uuid: bool,
}

/// Moves the `floe_sink_positions` row of `mv` from `mv.from` to `mv.to` inside `tx`
/// (compare-and-swap on the position), or inserts it for the first commit; any other state is
/// refused as a range another writer committed (not retryable).
pub(crate) async fn cas_position(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    catalog_name: &str,
    mv: &PositionMove,
    target: &PositionTarget,
    now: i64,
) -> Result<()> {
    let uuid = if target.keep_uuid {
        "COALESCE(NULLIF(table_uuid, ''), $5)"
    } else {
        "$5"
    };
    let moved = sqlx::query(&format!(
        "UPDATE floe_sink_positions
             SET position = $1, snapshot_id = $2, updated_at_ms = $3, table_ident = $4, table_uuid = {uuid}
             WHERE catalog_name = $6 AND pipeline = $7 AND sink = $8 AND position = $9"
    ))
    .bind(mv.to as i64)
    .bind(mv.snapshot_id)
    .bind(now)
    .bind(&target.ident)
    .bind(&target.uuid)
    .bind(catalog_name)
    .bind(&mv.pipeline)
    .bind(&mv.sink)
    .bind(mv.from as i64)
    .execute(&mut **tx)
    .await
    .map_err(sql_err("move sink position"))?;
    if moved.rows_affected() != 1 {
        // Either the first commit of this pair, or somebody else moved it: the INSERT
        // only succeeds in the first case (primary key).
        let inserted = sqlx::query(
            "INSERT INTO floe_sink_positions
                 (catalog_name, pipeline, sink, table_ident, table_uuid, position, snapshot_id, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (catalog_name, pipeline, sink) DO NOTHING",
        )
        .bind(catalog_name)
        .bind(&mv.pipeline)
        .bind(&mv.sink)
        .bind(&target.ident)
        .bind(&target.uuid)
        .bind(mv.to as i64)
        .bind(mv.snapshot_id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(sql_err("record sink position"))?;
        if inserted.rows_affected() != 1 {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!(
                    "sink position of pipeline {:?} sink {:?} is no longer {}: another writer committed this range",
                    mv.pipeline, mv.sink, mv.from
                ),
            ));
        }
    }
    Ok(())
}

/// The attempt id (`floe.attempt`) in the summary of the snapshot `updates` add, if any.
fn snapshot_attempt(updates: &[TableUpdate]) -> Option<uuid::Uuid> {
    updates.iter().find_map(|u| match u {
        TableUpdate::AddSnapshot { snapshot } => snapshot
            .summary()
            .additional_properties
            .get(crate::positions::PROP_ATTEMPT)
            .and_then(|a| a.parse().ok()),
        _ => None,
    })
}

/// Replaces the random UUID in a `<version>-<uuid>[.gz].metadata.json` location with `attempt`,
/// so the metadata file of a sink commit attempt can be found by its attempt id.
fn with_attempt_id(location: &str, attempt: uuid::Uuid) -> String {
    let (dir, file) = location.rsplit_once('/').unwrap_or(("", location));
    match file.split_once('-') {
        Some((version, rest)) if rest.len() >= 36 => format!("{dir}/{version}-{attempt}{}", &rest[36..]),
        _ => location.to_string(),
    }
}

/// The pure part of a commit: checks `requirements` against the base metadata and applies
/// `updates`. A failed requirement is a retryable conflict (the caller reloads and re-applies).
pub(crate) fn apply_commit(
    base: &TableMetadata,
    base_location: &str,
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
) -> Result<TableMetadata> {
    for requirement in &requirements {
        check_requirement(requirement, Some(base))?;
    }
    let mut builder = base.clone().into_builder(Some(base_location.to_string()));
    for update in updates {
        builder = update.apply(builder)?;
    }
    Ok(builder.build()?.metadata)
}

/// Builds the first metadata of a table created by a commit (a staged create) the way the Java
/// reference does (`TableMetadata.buildFromEmpty()` plus every update in order): the base is the
/// first `add-schema`, `add-spec` and `add-sort-order` **exactly as the client sent them** (the
/// field, spec and order ids it saw — no renumbering), at the first `set-location` (or the
/// default location) and `upgrade-format-version`; then *every* update is applied onto it in
/// order. The first ones find themselves already there; a second schema, a partition spec on a
/// column added in the same transaction, properties, snapshots all apply as they would on an
/// existing table.
fn metadata_from_create_updates(updates: Vec<TableUpdate>, default_location: &str) -> Result<TableMetadata> {
    let schema = updates
        .iter()
        .find_map(|u| match u {
            TableUpdate::AddSchema { schema } => Some(schema.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            Error::new(
                ErrorKind::DataInvalid,
                "a commit that creates a table (assert-create) needs an add-schema update",
            )
        })?;
    let spec = updates.iter().find_map(|u| match u {
        TableUpdate::AddSpec { spec } => Some(spec.clone()),
        _ => None,
    });
    let order = updates.iter().find_map(|u| match u {
        TableUpdate::AddSortOrder { sort_order } => Some(sort_order.clone()),
        _ => None,
    });
    let location = updates
        .iter()
        .find_map(|u| match u {
            TableUpdate::SetLocation { location } => Some(location.clone()),
            _ => None,
        })
        .unwrap_or_else(|| default_location.to_string());
    let version = updates
        .iter()
        .find_map(|u| match u {
            TableUpdate::UpgradeFormatVersion { format_version } => Some(*format_version),
            _ => None,
        })
        .unwrap_or(iceberg::spec::FormatVersion::V2);
    let base = exact_base(schema, spec, order, location.trim_end_matches('/').to_string(), version)?;
    let mut builder = TableMetadataBuilder::new_from_metadata(base, None);
    for update in updates {
        builder = update.apply(builder)?;
    }
    Ok(builder.build()?.metadata)
}

/// Table metadata holding exactly `schema`, `spec` and `order` with the ids they carry.
/// `TableMetadataBuilder::new` would renumber them (it is meant for a create from scratch) and
/// iceberg-rust has no empty builder, so the builder's own serialised form of a fresh table is
/// taken and its schema, spec and sort order replaced by the client's, then parsed back (which
/// validates it like any metadata file).
fn exact_base(
    schema: iceberg::spec::Schema,
    spec: Option<iceberg::spec::UnboundPartitionSpec>,
    order: Option<iceberg::spec::SortOrder>,
    location: String,
    version: iceberg::spec::FormatVersion,
) -> Result<TableMetadata> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        Error::new(ErrorKind::DataInvalid, format!("staged create: {what}: {e}"))
    };
    let seed = TableMetadataBuilder::new(
        schema.clone(),
        iceberg::spec::UnboundPartitionSpec::builder().build(),
        iceberg::spec::SortOrder::unsorted_order(),
        location,
        version,
        HashMap::new(),
    )?
    .build()?
    .metadata;
    // A first spec or order that does not fit the first schema (it names a column a later
    // add-schema brings) is left to its own update, applied in order after that schema.
    let spec = match spec.and_then(|s| s.bind(schema.clone()).ok()) {
        Some(s) => s,
        None => iceberg::spec::UnboundPartitionSpec::builder()
            .build()
            .bind(schema.clone())?,
    };
    let order = order
        .and_then(|o| {
            iceberg::spec::SortOrder::builder()
                .with_order_id(o.order_id)
                .with_fields(o.fields)
                .build(&schema)
                .ok()
        })
        .unwrap_or_else(iceberg::spec::SortOrder::unsorted_order);
    let mut json = serde_json::to_value(&seed).map_err(|e| invalid("serialise", &e))?;
    let obj = json
        .as_object_mut()
        .ok_or_else(|| invalid("serialise", &"metadata is not an object"))?;
    macro_rules! to_json {
        ($v:expr) => {
            serde_json::to_value($v).map_err(|e| invalid("serialise", &e))
        };
    }
    obj.insert("schemas".into(), serde_json::Value::Array(vec![to_json!(&schema)?]));
    obj.insert("current-schema-id".into(), schema.schema_id().into());
    obj.insert("last-column-id".into(), schema.highest_field_id().max(0).into());
    obj.insert(
        "partition-specs".into(),
        serde_json::Value::Array(vec![to_json!(&spec)?]),
    );
    obj.insert("default-spec-id".into(), spec.spec_id().into());
    obj.insert(
        "last-partition-id".into(),
        spec.highest_field_id().unwrap_or(999).into(),
    );
    obj.insert("sort-orders".into(), serde_json::Value::Array(vec![to_json!(&order)?]));
    obj.insert("default-sort-order-id".into(), order.order_id.into());
    if version == iceberg::spec::FormatVersion::V1 {
        obj.insert("schema".into(), to_json!(&schema)?);
        obj.insert("partition-spec".into(), to_json!(&spec)?["fields"].clone());
    }
    serde_json::from_value(json).map_err(|e| invalid("the first schema, spec and sort order", &e))
}

#[async_trait]
impl Catalog for FloeCatalog {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> Result<Vec<NamespaceIdent>> {
        let keys = self.all_namespace_keys().await?;
        let prefix: Vec<String> = parent.map(|p| p.clone().inner()).unwrap_or_default();
        if let Some(p) = parent
            && !keys
                .iter()
                .any(|k| k == &Self::ns_key(p) || k.starts_with(&format!("{}.", Self::ns_key(p))))
        {
            return Err(Self::no_such_namespace(p));
        }
        let mut out: Vec<NamespaceIdent> = Vec::new();
        for key in keys {
            let parts: Vec<String> = decode_namespace(&key);
            if parts.len() > prefix.len() && parts[..prefix.len()] == prefix[..] {
                let child = NamespaceIdent::from_vec(parts[..=prefix.len()].to_vec())?;
                if !out.contains(&child) {
                    out.push(child);
                }
            }
        }
        out.sort_by_key(|a| a.join("."));
        Ok(out)
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        validate_namespace(namespace)?;
        let properties = self.checked_namespace_properties(properties)?;
        if self.namespace_exists(namespace).await? {
            return Err(Error::new(
                ErrorKind::NamespaceAlreadyExists,
                format!("namespace {} already exists", namespace.join(".")),
            ));
        }
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let mut props = properties.clone();
        props.insert(NAMESPACE_MARKER.to_string(), "true".to_string());
        for (k, v) in &props {
            sqlx::query(
                "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&self.name)
            .bind(Self::ns_key(namespace))
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("create namespace"))?;
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(Namespace::with_properties(namespace.clone(), properties))
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        if !self.namespace_exists(namespace).await? {
            return Err(Self::no_such_namespace(namespace));
        }
        let rows = sqlx::query(
            "SELECT property_key, property_value FROM iceberg_namespace_properties
             WHERE catalog_name = $1 AND namespace = $2",
        )
        .bind(&self.name)
        .bind(Self::ns_key(namespace))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("load namespace"))?;
        let props = rows
            .into_iter()
            .filter_map(|r| {
                let k: String = r.get(0);
                let v: Option<String> = r.get(1);
                (k != NAMESPACE_MARKER).then(|| (k, v.unwrap_or_default()))
            })
            .collect();
        Ok(Namespace::with_properties(namespace.clone(), props))
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        // A parent of an existing namespace exists too (as JdbcCatalog and SqlCatalog see it).
        let key = Self::ns_key(namespace);
        let child_prefix = format!("{key}.");
        Ok(self
            .all_namespace_keys()
            .await?
            .iter()
            .any(|k| k == &key || k.starts_with(&child_prefix)))
    }

    async fn update_namespace(&self, namespace: &NamespaceIdent, properties: HashMap<String, String>) -> Result<()> {
        if !self.namespace_exists(namespace).await? {
            return Err(Self::no_such_namespace(namespace));
        }
        let properties = self.checked_namespace_properties(properties)?;
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        for (k, v) in &properties {
            sqlx::query(
                "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (catalog_name, namespace, property_key) DO UPDATE SET property_value = excluded.property_value",
            )
            .bind(&self.name)
            .bind(Self::ns_key(namespace))
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("update namespace"))?;
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(())
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        if !self.namespace_exists(namespace).await? {
            return Err(Self::no_such_namespace(namespace));
        }
        if !self.list_tables(namespace).await?.is_empty() {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!("namespace {} is not empty", namespace.join(".")),
            ));
        }
        sqlx::query("DELETE FROM iceberg_namespace_properties WHERE catalog_name = $1 AND namespace = $2")
            .bind(&self.name)
            .bind(Self::ns_key(namespace))
            .execute(&self.pool)
            .await
            .map_err(sql_err("drop namespace"))?;
        Ok(())
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        if !self.namespace_exists(namespace).await? {
            return Err(Self::no_such_namespace(namespace));
        }
        let rows = sqlx::query(
            "SELECT table_name FROM iceberg_tables
             WHERE catalog_name = $1 AND table_namespace = $2
               AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) ORDER BY table_name",
        )
        .bind(&self.name)
        .bind(Self::ns_key(namespace))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("list tables"))?;
        Ok(rows
            .into_iter()
            .map(|r| TableIdent::new(namespace.clone(), r.get(0)))
            .collect())
    }

    async fn create_table(&self, namespace: &NamespaceIdent, creation: TableCreation) -> Result<Table> {
        let (ident, metadata) = self.creation_metadata(namespace, creation).await?;
        let location = metadata.location().to_string();
        let metadata_location = MetadataLocation::new_with_metadata(&location, &metadata);
        metadata.write_to(&self.file_io, &metadata_location).await?;
        self.storage.sync(&metadata_location.to_string()).await?;
        let inserted = sqlx::query(INSERT_TABLE_ROW)
            .bind(&self.name)
            .bind(Self::ns_key(namespace))
            .bind(ident.name())
            .bind(metadata_location.to_string())
            .execute(&self.pool)
            .await
            .map_err(sql_err("create table"))?;
        if inserted.rows_affected() != 1 {
            let _ = self.file_io.delete(metadata_location.to_string()).await;
            return Err(Error::new(
                ErrorKind::TableAlreadyExists,
                format!("table {ident} already exists"),
            ));
        }
        self.build_table(ident, metadata_location.to_string(), metadata)
    }

    async fn load_table(&self, ident: &TableIdent) -> Result<Table> {
        let location = self
            .metadata_location(ident)
            .await?
            .ok_or_else(|| Self::no_such_table(ident))?;
        let metadata = self.read_metadata(&location).await?;
        self.build_table(ident.clone(), location, metadata)
    }

    async fn drop_table(&self, ident: &TableIdent) -> Result<()> {
        let deleted = sqlx::query(
            "DELETE FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3",
        )
        .bind(&self.name)
        .bind(Self::ns_key(ident.namespace()))
        .bind(ident.name())
        .execute(&self.pool)
        .await
        .map_err(sql_err("drop table"))?;
        if deleted.rows_affected() == 0 {
            return Err(Self::no_such_table(ident));
        }
        Ok(())
    }

    async fn purge_table(&self, ident: &TableIdent) -> Result<()> {
        self.purge_table_files(ident).await.map(|_| ())
    }

    async fn table_exists(&self, ident: &TableIdent) -> Result<bool> {
        Ok(self.metadata_location(ident).await?.is_some())
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        validate_table_ident(dest)?;
        if !self.namespace_exists(dest.namespace()).await? {
            return Err(Self::no_such_namespace(dest.namespace()));
        }
        if self.table_exists(dest).await? {
            return Err(Error::new(
                ErrorKind::TableAlreadyExists,
                format!("table {dest} already exists"),
            ));
        }
        let renamed = sqlx::query(
            "UPDATE iceberg_tables SET table_namespace = $1, table_name = $2
             WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5",
        )
        .bind(Self::ns_key(dest.namespace()))
        .bind(dest.name())
        .bind(&self.name)
        .bind(Self::ns_key(src.namespace()))
        .bind(src.name())
        .execute(&self.pool)
        .await
        .map_err(sql_err("rename table"))?;
        if renamed.rows_affected() == 0 {
            return Err(Self::no_such_table(src));
        }
        Ok(())
    }

    async fn register_table(&self, ident: &TableIdent, metadata_location: String) -> Result<Table> {
        let (metadata_location, metadata) = self.registered_metadata(ident, &metadata_location).await?;
        let inserted = sqlx::query(INSERT_TABLE_ROW)
            .bind(&self.name)
            .bind(Self::ns_key(ident.namespace()))
            .bind(ident.name())
            .bind(&metadata_location)
            .execute(&self.pool)
            .await
            .map_err(sql_err("register table"))?;
        if inserted.rows_affected() != 1 {
            return Err(Error::new(
                ErrorKind::TableAlreadyExists,
                format!("table {ident} already exists"),
            ));
        }
        self.build_table(ident.clone(), metadata_location, metadata)
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.commit_table(commit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_id_replaces_the_random_uuid() {
        let a = uuid::Uuid::now_v7();
        let loc = "file:///w/ns/t/metadata/00003-1b2f0c8e-6a37-4e4f-9b0e-2d7c1f0e9a11.metadata.json";
        assert_eq!(
            with_attempt_id(loc, a),
            format!("file:///w/ns/t/metadata/00003-{a}.metadata.json")
        );
        let gz = "file:///w/t/metadata/00001-1b2f0c8e-6a37-4e4f-9b0e-2d7c1f0e9a11.gz.metadata.json";
        assert_eq!(
            with_attempt_id(gz, a),
            format!("file:///w/t/metadata/00001-{a}.gz.metadata.json")
        );
        assert!(MetadataLocation::from_str(&with_attempt_id(loc, a)).is_ok());
    }
}
