//! The Iceberg sink: pipeline output → Parquet data files → one fast-append snapshot per roll.
//!
//! ```text
//!  write(batch, through)  ──► cast to the table's Arrow schema (field ids) ──► partition split
//!                              ──► Parquet writers (zstd, column stats)          │
//!                                  within rolling.memory_mb (super::fanout)      │
//!  should_roll()? size, interval or inactivity (super::rolling)                  │
//!  commit()  ──► close writers → DataFiles ──► fast-append with summary          ▼
//!                {floe.pipeline, floe.sink, floe.position.from, floe.position.to}
//!                ──► FloeCatalog CAS: pointer + position in one catalog transaction
//! ```
//!
//! Data files are named `floe-<pipeline>-<sink>-<attempt uuid>-…parquet`, so files of an
//! attempt that never committed can be found and removed. A failed commit re-reads the catalog
//! before it deletes anything: the attempt's row in `floe_sink_attempts` is removed in the same
//! catalog transaction as the commit, so while it is there the commit did not land and the files
//! go; when it is gone and the position moved to the attempt's target with a snapshot carrying
//! the attempt id, the commit landed (its outcome was only reported as an error) and counts as
//! committed. The pipeline resumes from the catalog's recorded position, re-reading the log
//! (which keeps every row until all its readers have committed past it).
//!
//! Schema changes by others: the table may carry columns the pipeline does not write (an outside
//! engine's `ADD COLUMN`); rows are matched to the table's columns by name and those columns are
//! written as null. The sink follows the table's current schema after every commit. A table that
//! lost a column the pipeline writes, changed its type (other than widening int → long, float →
//! double), or gained a required column is refused with both schemas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use floe_catalog::{Deleted, FloeCatalog, Storage, position_summary};
use iceberg::arrow::{arrow_schema_to_schema_auto_assign_ids, schema_to_arrow_schema};
use iceberg::spec::{
    DataFile, DataFileFormat, PartitionSpecRef, Schema as IcebergSchema, TableMetadataBuilder, TableProperties,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use parquet::file::properties::WriterProperties;

use super::fanout::Fanout;
use super::parquet::{open_writer_cost, table_properties, target_file_size, writer_properties};
use super::rolling::RollState;
use super::schema::{check_schema, conform_to_table};
use super::sort::{SortKey, check_keys, order_matches, sort_batches, sort_keys};
use super::{CommitStats, Sink};
use crate::config::SinkConfig;
use crate::error::{Error, Result};

type Builder = DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

/// The open data files of one commit attempt: one writer per partition written to (one in all
/// for an unpartitioned table), within the sink's memory budget.
struct Writer {
    fanout: Fanout<Builder>,
    /// `None`: the table is unpartitioned.
    splitter: Option<super::split::PartitionSplitter>,
}

/// A partitioned table's rows are split by partition once this many have come (or at the
/// commit), not batch by batch: a micro-batch arrives as about one batch per log record (a
/// request's rows, often ~1,000), which 50 partitions would cut into writes of ~20 rows each,
/// and a Parquet writer pays a fixed cost per write and column.
pub const SPLIT_ROWS: usize = 32 * 1024;

/// One (pipeline, sink) writer with its committed position.
pub struct IcebergSink {
    pipeline: String,
    name: String,
    catalog: FloeCatalog,
    ident: TableIdent,
    table: Table,
    table_arrow: SchemaRef,
    /// The pipeline's output as an Iceberg schema: what the table must be able to take.
    wanted: IcebergSchema,
    /// Kept to rebuild the writer settings when the table's schema changes.
    cfg: SinkConfig,
    props: WriterProperties,
    /// In a mutex only so the sink is `Sync` (Parquet writers are not); always reached through
    /// `&mut self`, so it is never contended.
    writer: std::sync::Mutex<Option<Writer>>,
    attempt: uuid::Uuid,
    rolling: RollState,
    /// `sort_by`, parsed; empty: rows are written as they come.
    sort: Vec<SortKey>,
    /// Rows (in the table's layout) gathered before they go to the writers, written at commit
    /// or earlier: with `sort_by`, sorted, once they reach the memory budget (as a run of files
    /// of their own); otherwise, on a partitioned table, once `split_rows` have come.
    pending: Vec<RecordBatch>,
    /// Arrow bytes of `pending`.
    pending_bytes: usize,
    /// Rows in `pending`.
    pending_rows: usize,
    /// Unsorted rows of a partitioned table are split once this many are gathered
    /// ([`SPLIT_ROWS`] until set).
    split_rows: usize,
    /// `rolling.memory_mb` in bytes.
    budget: usize,
    /// `limits.commit_retries`: retries of a commit that lost the compare-and-swap.
    commit_retries: u32,
    /// Set by a failed write or commit: the in-memory state no longer matches the table.
    broken: bool,
}

/// Checks, before a statement is added or changed, what [`IcebergSink::open`] would refuse: an
/// existing table's schema against the pipeline's `output`, or for a table still to be created,
/// the partition spec and sort order over `output`. Reads the catalog, changes nothing.
pub async fn check_table(catalog: &FloeCatalog, cfg: &SinkConfig, output: &ArrowSchema) -> Result<()> {
    let Some(ident) = super::evolve::ident_of(cfg)? else {
        return Ok(()); // Config::validate names the missing key
    };
    let wanted = super::evolve::wanted_schema(cfg, output)?;
    if catalog.table_exists(&ident).await? {
        let table = catalog.load_table(&ident).await?;
        check_schema(&cfg.name, table.metadata().current_schema(), &wanted)?;
    } else {
        super::partition::partition_spec(&cfg.partition_by, &wanted)
            .map_err(|e| Error::Config(format!("sink {:?}: {e}", cfg.name)))?;
    }
    let sort = sort_keys(&cfg.sort_by)?;
    check_keys(&cfg.name, &sort, &wanted)?;
    Ok(())
}

impl IcebergSink {
    /// Opens the sink: creates namespace and table from `output` when missing, checks an
    /// existing table's schema, and reads the committed position (0 when it never committed).
    pub async fn open(catalog: FloeCatalog, cfg: &SinkConfig, pipeline: &str, output: &ArrowSchema) -> Result<Self> {
        let table_name = cfg.table.as_deref().expect("validated: iceberg sink has a table");
        let parts: Vec<&str> = table_name.split('.').collect();
        let (ns, name) = parts.split_at(parts.len() - 1);
        let namespace = NamespaceIdent::from_strs(ns)?;
        let ident = TableIdent::new(namespace.clone(), name[0].to_string());
        let wanted_schema = arrow_schema_to_schema_auto_assign_ids(output).map_err(|e| {
            Error::Config(format!(
                "sink {:?}: the pipeline's output cannot be an Iceberg schema: {e}",
                cfg.name
            ))
        })?;
        if !catalog.namespace_exists(&namespace).await? {
            match catalog.create_namespace(&namespace, Default::default()).await {
                Ok(_) => {}
                Err(e) if e.kind() == iceberg::ErrorKind::NamespaceAlreadyExists => {}
                // Another sink of the same namespace created it in between (the catalog may
                // report that as a unique-constraint error rather than NamespaceAlreadyExists).
                Err(_) if catalog.namespace_exists(&namespace).await? => {}
                Err(e) => return Err(e.into()),
            }
        }
        let table = if catalog.table_exists(&ident).await? {
            let table = catalog.load_table(&ident).await?;
            check_schema(&cfg.name, table.metadata().current_schema(), &wanted_schema)?;
            table
        } else {
            let spec = super::partition::partition_spec(&cfg.partition_by, &wanted_schema)
                .map_err(|e| Error::Config(format!("sink {:?}: {e}", cfg.name)))?;
            let creation = TableCreation::builder()
                .name(ident.name().to_string())
                .schema(wanted_schema.clone())
                .partition_spec(spec)
                .properties(table_properties(cfg))
                .build();
            match catalog.create_table(&namespace, creation).await {
                Ok(t) => t,
                Err(e) if e.kind() == iceberg::ErrorKind::TableAlreadyExists => catalog.load_table(&ident).await?,
                Err(e) => return Err(e.into()),
            }
        };
        let (_, unreadable) = commit_base(&table, None)?;
        if !unreadable.is_empty() {
            tracing::warn!(sink = %cfg.name, table = %ident, properties = ?unreadable, "the table has properties iceberg cannot read; floe's commits use iceberg's defaults for them");
        }
        let sort = sort_keys(&cfg.sort_by)?;
        let table = ensure_sort_order(&catalog, &cfg.name, table, &sort).await?;
        let table = ensure_bloom_properties(&catalog, cfg, table).await?;
        for (attempt, location) in catalog.pending_attempts(pipeline, &cfg.name).await? {
            let removed = remove_attempt_files(catalog.storage().as_ref(), &location, attempt).await?;
            tracing::info!(pipeline, sink = %cfg.name, %attempt, removed, "removed the files of a commit attempt that never landed");
            catalog.forget_attempt(pipeline, &cfg.name, attempt).await?;
        }
        let committed = catalog
            .sink_position(pipeline, &cfg.name)
            .await?
            .map(|p| p.position)
            .unwrap_or(0);
        let table_arrow = Arc::new(schema_to_arrow_schema(table.metadata().current_schema())?);
        let props = writer_properties(cfg, &table_arrow)?;
        Ok(IcebergSink {
            pipeline: pipeline.to_string(),
            name: cfg.name.clone(),
            catalog,
            ident,
            table,
            table_arrow,
            wanted: wanted_schema,
            cfg: cfg.clone(),
            props,
            writer: std::sync::Mutex::new(None),
            attempt: uuid::Uuid::now_v7(),
            rolling: RollState::new(&cfg.rolling, committed),
            sort,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_rows: 0,
            split_rows: SPLIT_ROWS,
            budget: (cfg.rolling.memory_mb as usize).saturating_mul(1024 * 1024),
            commit_retries: crate::config::DEFAULT_COMMIT_RETRIES,
            broken: false,
        })
    }

    /// Sets how often a commit that lost the catalog's compare-and-swap to another writer is
    /// retried on the fresh metadata before [`commit`](Sink::commit) fails
    /// (`limits.commit_retries`; [`DEFAULT_COMMIT_RETRIES`](crate::config::DEFAULT_COMMIT_RETRIES)
    /// until set). It replaces the table's own `commit.retry.num-retries`; the waits between
    /// attempts follow the table's other `commit.retry.*` properties (iceberg's defaults: 100 ms
    /// doubling up to 60 s, 30 min in all), capped at those defaults ([`commit_base`]).
    pub fn with_commit_retries(mut self, retries: u32) -> Self {
        self.commit_retries = retries;
        self
    }

    /// Sets how many rows a partitioned table's sink gathers before it splits them by partition
    /// ([`SPLIT_ROWS`] until set; 1 splits every batch as it comes). Fewer rows held, more
    /// and smaller writes per partition.
    pub fn with_split_rows(mut self, rows: usize) -> Self {
        self.split_rows = rows.max(1);
        self
    }

    /// The table, as `namespace.table`.
    pub fn table_ident(&self) -> &TableIdent {
        &self.ident
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Internal(format!(
                "sink {:?} of pipeline {:?} failed earlier; it must be reopened from its committed position",
                self.name, self.pipeline
            )));
        }
        Ok(())
    }

    async fn write_inner(&mut self, batch: &RecordBatch, through: u64) -> Result<()> {
        self.rolling.input(through);
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = conform_to_table(batch, &self.table_arrow)?;
        self.rolling
            .wrote(batch.num_rows() as u64, batch.get_array_memory_size());
        let sorted = !self.sort.is_empty();
        if !sorted && self.table.metadata().default_partition_spec().is_unpartitioned() {
            return self.write_files(batch).await;
        }
        self.pending_bytes += batch.get_array_memory_size();
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if sorted && self.pending_bytes >= self.budget {
            // Sorted and written now, in files of their own: every file stays sorted.
            self.write_pending().await?;
            if let Some(w) = self.writer.get_mut().expect("writer lock").as_mut() {
                w.fanout.close_open().await?;
            }
        } else if !sorted && self.pending_rows >= self.split_rows {
            self.write_pending().await?;
        }
        Ok(())
    }

    /// Hands the rows gathered in `pending` to the writers as one batch, sorted by `sort_by`
    /// when the sink has it.
    async fn write_pending(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        (self.pending_bytes, self.pending_rows) = (0, 0);
        let batch = match (self.sort.is_empty(), pending.as_slice()) {
            (false, _) => sort_batches(&pending, &self.sort)?,
            (true, []) => None,
            (true, [one]) => Some(one.clone()),
            (true, all) => Some(arrow::compute::concat_batches(&all[0].schema(), all)?),
        };
        drop(pending);
        match batch {
            Some(b) => self.write_files(b).await,
            None => Ok(()),
        }
    }

    /// Hands `batch` (in the table's layout) to the Parquet writers, starting the attempt (its
    /// row in `floe_sink_attempts`, then the writers) with the first one.
    async fn write_files(&mut self, batch: RecordBatch) -> Result<()> {
        if self.writer.get_mut().expect("writer lock").is_none() {
            self.catalog
                .begin_attempt(
                    &self.pipeline,
                    &self.name,
                    self.attempt,
                    self.table.metadata().location(),
                )
                .await?;
            let w = self.new_writer().await?;
            *self.writer.get_mut().expect("writer lock") = Some(w);
        }
        let w = self.writer.get_mut().expect("writer lock").as_mut().expect("just set");
        match &w.splitter {
            None => w.fanout.write(None, batch).await?,
            Some(splitter) => {
                for (key, part) in splitter.split(&batch)? {
                    w.fanout.write(Some(key), part).await?;
                }
            }
        }
        Ok(())
    }

    async fn commit_inner(&mut self) -> Result<CommitStats> {
        let from = self.rolling.committed();
        let to = self.rolling.through();
        let started = Instant::now();
        self.write_pending().await?;
        let writer = self.writer.get_mut().expect("writer lock").take();
        let mut closed_for_memory = 0;
        let files: Vec<DataFile> = match writer {
            Some(w) => {
                let flushed = w.fanout.stats();
                closed_for_memory = flushed.writers_closed;
                if flushed.flushes > 0 {
                    tracing::info!(
                        pipeline = %self.pipeline,
                        sink = %self.name,
                        budget_mb = self.cfg.rolling.memory_mb,
                        flushes = flushed.flushes,
                        files_closed = flushed.writers_closed,
                        "open data files went over rolling.memory_mb; the largest were closed early (more, smaller files in this commit)"
                    );
                }
                w.fanout.close().await?
            }
            None => vec![],
        };
        // New partition folders must survive a crash before the table points at their files.
        sync_folders(self.catalog.storage().as_ref(), &files).await?;
        let stats = CommitStats {
            rows: self.rolling.pending_rows(),
            files: files.len(),
            bytes: files.iter().map(|f| f.file_size_in_bytes()).sum(),
            closed_for_memory,
            from,
            to,
            elapsed: Duration::ZERO,
        };
        let result = if files.is_empty() {
            // Every row was filtered out: move the position alone (no snapshot to make).
            self.catalog
                .advance_position(&self.pipeline, &self.name, &self.ident, from, to)
                .await
        } else {
            let summary = position_summary(&self.pipeline, &self.name, from, to, self.attempt);
            let committed = match commit_base(&self.table, Some(self.commit_retries)) {
                Ok((base, _)) => {
                    let tx = Transaction::new(&base);
                    // No duplicate-file check: it loads every manifest of the table on each
                    // commit, and cannot find anything here. Each file's name carries this
                    // attempt's UUID, an attempt commits once, and the position's
                    // compare-and-swap refuses a second commit of the same range.
                    let action = tx
                        .fast_append()
                        .with_check_duplicate(false)
                        .set_commit_uuid(self.attempt)
                        .add_data_files(files)
                        .set_snapshot_properties(summary);
                    match action.apply(tx) {
                        Ok(tx) => tx.commit(&self.catalog).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match committed {
                Ok(table) => {
                    self.table = table;
                    Ok(())
                }
                Err(e) => match self.failed_commit_outcome(to).await {
                    Outcome::Landed(table) => {
                        tracing::warn!(pipeline = %self.pipeline, sink = %self.name, error = %e, attempt = %self.attempt, "the commit reported an error but landed (the catalog says so); counted as committed");
                        self.table = table;
                        Ok(())
                    }
                    Outcome::NotLanded => {
                        // Delete every file the attempt wrote (data, manifests, metadata).
                        // Should this fail, the attempt row stays and the next open retries.
                        match remove_attempt_files(
                            self.catalog.storage().as_ref(),
                            self.table.metadata().location(),
                            self.attempt,
                        )
                        .await
                        {
                            Ok(_) => {
                                if let Err(forget) = self
                                    .catalog
                                    .forget_attempt(&self.pipeline, &self.name, self.attempt)
                                    .await
                                {
                                    tracing::warn!(error = %forget, "could not forget a failed commit attempt");
                                }
                            }
                            Err(del) => tracing::warn!(error = %del, "could not delete the files of a failed commit"),
                        }
                        Err(e)
                    }
                    Outcome::Unknown(why) => {
                        // Keep every file: the next open reads the attempt row and decides.
                        tracing::warn!(pipeline = %self.pipeline, sink = %self.name, error = %e, reread = %why, "commit outcome unknown; its files are kept until the catalog can be read");
                        Err(e)
                    }
                    Outcome::NotOurs => Err(e),
                },
            }
        };
        self.rolling.finish_commit(result.is_ok());
        self.attempt = uuid::Uuid::now_v7();
        result?;
        self.follow_schema()?;
        Ok(CommitStats {
            elapsed: started.elapsed(),
            ..stats
        })
    }

    /// After a commit error: whether the commit landed after all, from the catalog's own record.
    async fn failed_commit_outcome(&self, to: u64) -> Outcome {
        let pending = match self.catalog.pending_attempts(&self.pipeline, &self.name).await {
            Ok(p) => p,
            Err(e) => return Outcome::Unknown(e.to_string()),
        };
        if pending.iter().any(|(a, _)| *a == self.attempt) {
            // The attempt row leaves only with its commit (same catalog transaction).
            return Outcome::NotLanded;
        }
        let position = match self.catalog.sink_position(&self.pipeline, &self.name).await {
            Ok(p) => p,
            Err(e) => return Outcome::Unknown(e.to_string()),
        };
        if position.is_some_and(|p| p.position == to) {
            match self.catalog.load_table(&self.ident).await {
                Ok(table) => {
                    let attempt = self.attempt.to_string();
                    let ours = table
                        .metadata()
                        .snapshots()
                        .any(|s| s.summary().additional_properties.get(floe_catalog::PROP_ATTEMPT) == Some(&attempt));
                    if ours {
                        return Outcome::Landed(table);
                    }
                }
                Err(e) => return Outcome::Unknown(e.to_string()),
            }
        }
        // The row is gone but the commit is not ours: another instance opened this sink and
        // cleaned the attempt up (its files are its business now).
        Outcome::NotOurs
    }

    /// Takes on the table's current schema when a commit brought a new one (an outside engine
    /// changed it), or refuses it when the pipeline's rows no longer fit.
    fn follow_schema(&mut self) -> Result<()> {
        let current = self.table.metadata().current_schema();
        let arrow = Arc::new(schema_to_arrow_schema(current)?);
        if arrow == self.table_arrow {
            return Ok(());
        }
        if let Err(e) = check_schema(&self.name, current, &self.wanted) {
            self.broken = true;
            return Err(e);
        }
        tracing::info!(pipeline = %self.pipeline, sink = %self.name, schema_id = current.schema_id(), "the table's schema changed; writing with the new one");
        self.props = writer_properties(&self.cfg, &arrow)?;
        self.table_arrow = arrow;
        Ok(())
    }

    async fn new_writer(&self) -> Result<Writer> {
        let metadata = self.table.metadata();
        let schema = metadata.current_schema().clone();
        let location = DefaultLocationGenerator::new(metadata)?;
        let names = DefaultFileNameGenerator::new(
            format!("floe-{}-{}-{}", self.pipeline, self.name, self.attempt),
            None,
            DataFileFormat::Parquet,
        );
        let parquet = ParquetWriterBuilder::new(self.props.clone(), schema.clone());
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            target_file_size(&self.cfg),
            self.table.file_io().clone(),
            location,
            names,
        );
        let builder = DataFileWriterBuilder::new(rolling);
        let spec: PartitionSpecRef = metadata.default_partition_spec().clone();
        let splitter = if spec.is_unpartitioned() {
            None
        } else {
            Some(super::split::PartitionSplitter::try_new(schema, spec)?)
        };
        let open_cost = open_writer_cost(&self.props, &self.table_arrow)?;
        Ok(Writer {
            fanout: Fanout::new(builder, self.budget, open_cost),
            splitter,
        })
    }
}

#[async_trait::async_trait]
impl Sink for IcebergSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> String {
        self.ident.to_string()
    }

    fn rolling(&self) -> &RollState {
        &self.rolling
    }

    async fn write(&mut self, batch: &RecordBatch, through: u64) -> Result<()> {
        self.usable()?;
        let result = self.write_inner(batch, through).await;
        self.broken = result.is_err();
        result
    }

    /// On error nothing was committed, the files of this attempt are deleted (or, when the
    /// outcome cannot be read, left to the next open), and the sink must be reopened (a second
    /// `commit` would otherwise skip the rows of the failed one).
    async fn commit(&mut self) -> Result<CommitStats> {
        self.usable()?;
        let result = self.commit_inner().await;
        self.broken = result.is_err();
        result
    }
}

/// Gives `table` the sort order `keys` (`sort_by`) when its default one differs, so readers see
/// in the metadata how the files are sorted. Another writer may do the same at the same moment:
/// a lost race is fine when the table then has the order asked for.
async fn ensure_sort_order(catalog: &FloeCatalog, sink: &str, table: Table, keys: &[SortKey]) -> Result<Table> {
    let schema = table.metadata().current_schema().clone();
    check_keys(sink, keys, &schema)?;
    if keys.is_empty() || order_matches(table.metadata().default_sort_order(), keys, &schema) {
        return Ok(table);
    }
    let null_order = |k: &SortKey| {
        if k.nulls_first {
            iceberg::spec::NullOrder::First
        } else {
            iceberg::spec::NullOrder::Last
        }
    };
    let tx = Transaction::new(&commit_base(&table, None)?.0);
    let mut action = tx.replace_sort_order();
    for k in keys {
        action = if k.descending {
            action.desc(&k.column, null_order(k))
        } else {
            action.asc(&k.column, null_order(k))
        };
    }
    match action.apply(tx) {
        Ok(tx) => match tx.commit(catalog).await {
            Ok(t) => {
                tracing::info!(sink, table = %t.identifier(), sort_by = ?keys, "set the table's sort order");
                Ok(t)
            }
            Err(e) => {
                let fresh = catalog.load_table(table.identifier()).await?;
                let schema = fresh.metadata().current_schema().clone();
                if order_matches(fresh.metadata().default_sort_order(), keys, &schema) {
                    Ok(fresh)
                } else {
                    Err(e.into())
                }
            }
        },
        Err(e) => Err(e.into()),
    }
}

/// `table` with the bloom filter properties of the sink's `bloom_filter_columns` (a table made
/// before the sink had them, or by another writer), so maintenance rewrites its files with the
/// same bloom filters. Properties set otherwise are left as they are.
async fn ensure_bloom_properties(catalog: &FloeCatalog, cfg: &SinkConfig, table: Table) -> Result<Table> {
    let have = table.metadata().properties();
    let missing: Vec<(String, String)> = super::parquet::bloom_properties(cfg)
        .into_iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .collect();
    if missing.is_empty() {
        return Ok(table);
    }
    let tx = Transaction::new(&commit_base(&table, None)?.0);
    let mut action = tx.update_table_properties();
    for (k, v) in &missing {
        action = action.set(k.clone(), v.clone());
    }
    let committed = match action.apply(tx) {
        Ok(tx) => tx.commit(catalog).await,
        Err(e) => Err(e),
    };
    match committed {
        Ok(t) => {
            tracing::info!(sink = %cfg.name, table = %t.identifier(), columns = ?cfg.bloom_filter_columns, "recorded the sink's bloom filter columns in the table's properties");
            Ok(t)
        }
        // Another writer changed the table in between: the files are right either way, and the
        // next open tries again.
        Err(e) => {
            tracing::warn!(sink = %cfg.name, error = %e, "could not record the bloom filter columns in the table's properties");
            Ok(catalog.load_table(table.identifier()).await?)
        }
    }
}

/// The most a table's `commit.retry.min-wait-ms` (first wait before a commit is retried),
/// `max-wait-ms` (longest wait) and `total-timeout-ms` may ask of floe: any client can set
/// them, and a sink waiting an hour between attempts is a stopped pipeline.
const COMMIT_FIRST_WAIT_CAP_MS: u64 = 1_000;
const COMMIT_WAIT_CAP_MS: u64 = 60_000;
const COMMIT_TOTAL_CAP_MS: u64 = 30 * 60_000;

/// `table` made fit for iceberg's `Transaction`, in memory only. The transaction parses the
/// base table's properties before it commits and fails on any it cannot read (a
/// `write.target-file-size-bytes` of `"big"`, a `gc.enabled` of `"yes"`, …): properties any
/// engine can set through the REST catalog, which must not stop a pipeline. So the copy
///
/// - sets `commit.retry.num-retries = retries` when given (floe's `limits.commit_retries`),
/// - caps the `commit.retry.*` waits (1 s first, 60 s at most, 30 min in all),
/// - and leaves out each property iceberg cannot parse (iceberg's default applies instead).
///
/// None of this is written to the table: a fast append's or a sort order's updates carry
/// their own change only, and the catalog applies them to the metadata it holds. Returns the
/// table itself when nothing needs changing, and the properties left out (for a warning).
pub fn commit_base(table: &Table, retries: Option<u32>) -> iceberg::Result<(Table, Vec<String>)> {
    let props = table.metadata().properties();
    let mut set: HashMap<String, String> = HashMap::new();
    if let Some(r) = retries {
        set.insert(TableProperties::PROPERTY_COMMIT_NUM_RETRIES.to_string(), r.to_string());
    }
    for (key, cap) in [
        (
            TableProperties::PROPERTY_COMMIT_MIN_RETRY_WAIT_MS,
            COMMIT_FIRST_WAIT_CAP_MS,
        ),
        (TableProperties::PROPERTY_COMMIT_MAX_RETRY_WAIT_MS, COMMIT_WAIT_CAP_MS),
        (
            TableProperties::PROPERTY_COMMIT_TOTAL_RETRY_TIME_MS,
            COMMIT_TOTAL_CAP_MS,
        ),
    ] {
        if let Some(v) = props.get(key)
            && v.trim().parse::<u64>().is_ok_and(|ms| ms > cap)
        {
            set.insert(key.to_string(), cap.to_string());
        }
    }
    set.retain(|k, v| props.get(k) != Some(v));
    let mut unreadable: Vec<String> = Vec::new();
    if TableProperties::try_from(props).is_err() {
        // Each property on its own, through iceberg's own parser.
        unreadable = props
            .iter()
            .filter(|(k, _)| !set.contains_key(*k))
            .filter(|(k, v)| TableProperties::try_from(&HashMap::from([((*k).clone(), (*v).clone())])).is_err())
            .map(|(k, _)| k.clone())
            .collect();
        unreadable.sort();
    }
    if set.is_empty() && unreadable.is_empty() {
        return Ok((table.clone(), unreadable));
    }
    let mut metadata = TableMetadataBuilder::new_from_metadata(table.metadata().clone(), None);
    if !unreadable.is_empty() {
        metadata = metadata.remove_properties(&unreadable)?;
    }
    if !set.is_empty() {
        metadata = metadata.set_properties(set)?;
    }
    let metadata = metadata.build()?.metadata;
    let mut builder = Table::builder()
        .identifier(table.identifier().clone())
        .file_io(table.file_io().clone())
        .metadata(metadata)
        .runtime(iceberg::Runtime::try_current()?);
    if let Some(location) = table.metadata_location() {
        builder = builder.metadata_location(location);
    }
    Ok((builder.build()?, unreadable))
}

/// Makes the folders of `files` durable (each once): new files' directory entries must survive
/// a crash before a commit points at them. Nothing to do on object storage.
pub async fn sync_folders(storage: &dyn Storage, files: &[DataFile]) -> Result<()> {
    let mut dirs: Vec<&str> = files
        .iter()
        .filter_map(|f| f.file_path().rsplit_once('/').map(|(d, _)| d))
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    for dir in dirs {
        storage.sync(dir).await?;
    }
    Ok(())
}

/// Deletes every file under a table location whose name carries `attempt`, through the
/// warehouse storage; returns how many.
pub async fn remove_attempt_files(storage: &dyn Storage, table_location: &str, attempt: uuid::Uuid) -> Result<usize> {
    let needle = attempt.to_string();
    let mut removed = 0;
    for f in storage.list(table_location).await? {
        let name = f.location.rsplit_once('/').map_or(f.location.as_str(), |(_, n)| n);
        if name.contains(&needle) && storage.delete(&f.location).await? == Deleted::Deleted {
            removed += 1;
        }
    }
    Ok(removed)
}

/// What a re-read of the catalog says about a commit that reported an error.
enum Outcome {
    /// It landed: the table as it is now.
    Landed(Table),
    /// It did not land: its files can go.
    NotLanded,
    /// Another instance took the attempt over.
    NotOurs,
    /// The catalog could not be read: keep everything.
    Unknown(String),
}
