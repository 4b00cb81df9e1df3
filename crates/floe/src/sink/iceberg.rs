//! The Iceberg sink: pipeline output → Parquet data files → one fast-append snapshot per roll.
//!
//! ```text
//!  write(batch, through)  ──► cast to the table's Arrow schema (field ids) ──► partition split
//!                              ──► Parquet writers (zstd, column stats)          │
//!  should_roll()? interval since first pending row, or pending bytes ≥ size      │
//!  commit()  ──► close writers → DataFiles ──► fast-append with summary          ▼
//!                {floe.pipeline, floe.sink, floe.position.from, floe.position.to}
//!                ──► SqliteCatalog CAS: pointer + position in one SQLite transaction
//! ```
//!
//! Data files are named `floe-<pipeline>-<sink>-<attempt uuid>-…parquet`, so files of an
//! attempt that never committed can be found and removed. A failed commit deletes its files and
//! reports the error; the pipeline then resumes from the catalog's recorded position, re-reading
//! the log (which keeps every row until all its readers have committed past it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use floe_catalog::{SqliteCatalog, position_summary};
use iceberg::arrow::{arrow_schema_to_schema_auto_assign_ids, schema_to_arrow_schema};
use iceberg::spec::{DataFile, DataFileFormat, PartitionSpecRef, Schema as IcebergSchema};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::unpartitioned_writer::UnpartitionedWriter;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use parquet::basic::{Compression as PqCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::config::{Compression, SinkConfig};
use crate::error::{Error, Result};

/// Largest Parquet file a sink writes before starting the next one within a commit.
pub const TARGET_FILE_SIZE_BYTES: usize = 256 * 1024 * 1024;
/// Rows per Parquet data page at most: small pages let lookups read little of a column chunk.
pub const DATA_PAGE_ROW_LIMIT: usize = 8 * 1024;
/// False-positive rate of the bloom filters of `bloom_filter_columns`.
pub const BLOOM_FILTER_FPP: f64 = 0.01;

type Builder = DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

// One per sink, created once per commit: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Writer {
    Unpartitioned(UnpartitionedWriter<Builder>),
    Partitioned(FanoutWriter<Builder>, super::split::PartitionSplitter),
}

/// One (pipeline, sink) writer with its committed position.
pub struct IcebergSink {
    pipeline: String,
    name: String,
    catalog: SqliteCatalog,
    ident: TableIdent,
    table: Table,
    table_arrow: SchemaRef,
    props: WriterProperties,
    /// In a mutex only so the sink is `Sync` (Parquet writers are not); always reached through
    /// `&mut self`, so it is never contended.
    writer: std::sync::Mutex<Option<Writer>>,
    attempt: uuid::Uuid,
    committed: u64,
    through: u64,
    pending_rows: u64,
    pending_bytes: usize,
    first_pending: Option<Instant>,
    interval: Duration,
    size_bytes: usize,
    /// Set by a failed write or commit: the in-memory state no longer matches the table.
    broken: bool,
}

impl IcebergSink {
    /// Opens the sink: creates namespace and table from `output` when missing, checks an
    /// existing table's schema, and reads the committed position (0 when it never committed).
    pub async fn open(catalog: SqliteCatalog, cfg: &SinkConfig, pipeline: &str, output: &ArrowSchema) -> Result<Self> {
        let table_name = cfg.table.as_deref().expect("validated: iceberg sink has a table");
        let parts: Vec<&str> = table_name.split('.').collect();
        let (ns, name) = parts.split_at(parts.len() - 1);
        let namespace = NamespaceIdent::from_strs(ns)?;
        let ident = TableIdent::new(namespace.clone(), name[0].to_string());
        let wanted = arrow_schema_to_schema_auto_assign_ids(output).map_err(|e| {
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
            check_schema(&cfg.name, table.metadata().current_schema(), &wanted)?;
            table
        } else {
            let spec = super::partition::partition_spec(&cfg.partition_by, &wanted)
                .map_err(|e| Error::Config(format!("sink {:?}: {e}", cfg.name)))?;
            let creation = TableCreation::builder()
                .name(ident.name().to_string())
                .schema(wanted)
                .partition_spec(spec)
                .properties([
                    ("write.format.default".to_string(), "parquet".to_string()),
                    (
                        "write.parquet.compression-codec".to_string(),
                        format!("{:?}", cfg.compression).to_lowercase(),
                    ),
                ])
                .build();
            match catalog.create_table(&namespace, creation).await {
                Ok(t) => t,
                Err(e) if e.kind() == iceberg::ErrorKind::TableAlreadyExists => catalog.load_table(&ident).await?,
                Err(e) => return Err(e.into()),
            }
        };
        for (attempt, location) in catalog.pending_attempts(pipeline, &cfg.name).await? {
            let removed = remove_attempt_files(&location, attempt)?;
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
            props,
            writer: std::sync::Mutex::new(None),
            attempt: uuid::Uuid::now_v7(),
            committed,
            through: committed,
            pending_rows: 0,
            pending_bytes: 0,
            first_pending: None,
            interval: Duration::from_secs(cfg.rolling.interval_seconds),
            size_bytes: (cfg.rolling.size_mb as usize).saturating_mul(1024 * 1024),
            broken: false,
        })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table, as `namespace.table`.
    pub fn table_ident(&self) -> &TableIdent {
        &self.ident
    }

    /// The committed position: every stream row before it is in the table exactly once.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The position after the last row handed to [`write`](Self::write).
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Rows written but not committed.
    pub fn pending_rows(&self) -> u64 {
        self.pending_rows
    }

    /// Writes `batch`, the output for stream rows up to (excluding) `through`. After an error
    /// the sink refuses further use: reopen it (it resumes from the committed position).
    pub async fn write(&mut self, batch: &RecordBatch, through: u64) -> Result<()> {
        self.usable()?;
        let result = self.write_inner(batch, through).await;
        self.broken = result.is_err();
        result
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Config(format!(
                "sink {:?} of pipeline {:?} failed earlier; it must be reopened from its committed position",
                self.name, self.pipeline
            )));
        }
        Ok(())
    }

    async fn write_inner(&mut self, batch: &RecordBatch, through: u64) -> Result<()> {
        if self.first_pending.is_none() && through > self.through {
            self.first_pending = Some(Instant::now());
        }
        self.through = self.through.max(through);
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = conform(batch, &self.table_arrow)?;
        self.pending_rows += batch.num_rows() as u64;
        self.pending_bytes += batch.get_array_memory_size();
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
        match self.writer.get_mut().expect("writer lock").as_mut().expect("just set") {
            Writer::Unpartitioned(w) => w.write(batch).await?,
            Writer::Partitioned(w, splitter) => {
                for (key, part) in splitter.split(&batch)? {
                    w.write(key, part).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether the pending rows should be committed now.
    pub fn should_roll(&self) -> bool {
        self.through > self.committed
            && (self.pending_bytes >= self.size_bytes
                || self.first_pending.is_some_and(|t| t.elapsed() >= self.interval))
    }

    /// When the interval roll is due, if anything is pending.
    pub fn roll_deadline(&self) -> Option<Instant> {
        self.first_pending.map(|t| t + self.interval)
    }

    /// Commits everything written so far, with the position it covers. On error nothing was
    /// committed, the files of this attempt are deleted, and the sink must be reopened (a second
    /// `commit` would otherwise skip the rows of the failed one).
    pub async fn commit(&mut self) -> Result<CommitStats> {
        self.usable()?;
        let result = self.commit_inner().await;
        self.broken = result.is_err();
        result
    }

    async fn commit_inner(&mut self) -> Result<CommitStats> {
        let from = self.committed;
        let to = self.through;
        let started = Instant::now();
        let writer = self.writer.get_mut().expect("writer lock").take();
        let files: Vec<DataFile> = match writer {
            Some(Writer::Unpartitioned(w)) => w.close().await?,
            Some(Writer::Partitioned(w, _)) => w.close().await?,
            None => vec![],
        };
        // New partition folders must survive a crash before the table points at their files.
        let mut dirs: Vec<&str> = files
            .iter()
            .filter_map(|f| f.file_path().rsplit_once('/').map(|(d, _)| d))
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        for dir in dirs {
            if let Some(path) = dir.strip_prefix("file://") {
                std::fs::File::open(path).and_then(|d| d.sync_all())?;
            }
        }
        let stats = CommitStats {
            rows: self.pending_rows,
            files: files.len(),
            bytes: files.iter().map(|f| f.file_size_in_bytes()).sum(),
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
            let tx = Transaction::new(&self.table);
            let action = tx
                .fast_append()
                .set_commit_uuid(self.attempt)
                .add_data_files(files)
                .set_snapshot_properties(position_summary(&self.pipeline, &self.name, from, to, self.attempt));
            let committed = match action.apply(tx) {
                Ok(tx) => tx.commit(&self.catalog).await,
                Err(e) => Err(e),
            };
            match committed {
                Ok(table) => {
                    self.table = table;
                    Ok(())
                }
                Err(e) => {
                    // Nothing landed: delete every file the attempt wrote (data, manifests,
                    // metadata). Should this fail, the attempt row stays and the next open retries.
                    match remove_attempt_files(self.table.metadata().location(), self.attempt) {
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
            }
        };
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.first_pending = None;
        self.attempt = uuid::Uuid::now_v7();
        result?;
        self.committed = to;
        Ok(CommitStats {
            elapsed: started.elapsed(),
            ..stats
        })
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
            TARGET_FILE_SIZE_BYTES,
            self.table.file_io().clone(),
            location,
            names,
        );
        let builder = DataFileWriterBuilder::new(rolling);
        let spec: PartitionSpecRef = metadata.default_partition_spec().clone();
        Ok(if spec.is_unpartitioned() {
            Writer::Unpartitioned(UnpartitionedWriter::new(builder))
        } else {
            let splitter = super::split::PartitionSplitter::try_new(schema, spec)?;
            Writer::Partitioned(FanoutWriter::new(builder), splitter)
        })
    }
}

/// Deletes every file under a table location whose name carries `attempt`; returns how many.
/// Only local (`file://`) warehouses can be listed in this build; elsewhere nothing is removed.
pub fn remove_attempt_files(table_location: &str, attempt: uuid::Uuid) -> Result<usize> {
    let Some(root) = table_location.strip_prefix("file://") else {
        tracing::warn!(table_location, %attempt, "cannot list a non-local warehouse; files of a failed attempt are left");
        return Ok(0);
    };
    let needle = attempt.to_string();
    let mut removed = 0;
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if entry.file_name().to_string_lossy().contains(&needle) {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// What one commit did.
#[derive(Debug, Clone)]
pub struct CommitStats {
    /// Rows committed.
    pub rows: u64,
    /// Data files added.
    pub files: usize,
    /// Bytes of data files added.
    pub bytes: u64,
    /// Position before.
    pub from: u64,
    /// Position after.
    pub to: u64,
    /// Time from close to catalog commit.
    pub elapsed: Duration,
}

/// Parquet writer settings: the sink's codec, page-level statistics (so the column and offset
/// indexes are written: lookups prune pages with them), and bloom filters on the configured
/// `bloom_filter_columns`.
fn writer_properties(cfg: &SinkConfig, table: &SchemaRef) -> Result<WriterProperties> {
    let compression = match cfg.compression {
        Compression::Zstd => PqCompression::ZSTD(ZstdLevel::try_new(3).expect("valid level")),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Gzip => PqCompression::GZIP(GzipLevel::default()),
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::Uncompressed => PqCompression::UNCOMPRESSED,
    };
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_offset_index_disabled(false)
        .set_data_page_row_count_limit(DATA_PAGE_ROW_LIMIT);
    for column in &cfg.bloom_filter_columns {
        if table.field_with_name(column).is_err() {
            return Err(Error::Config(format!(
                "sink {:?}: bloom_filter_columns names {column:?}, which is not a column of the table",
                cfg.name
            )));
        }
        let path = ColumnPath::from(column.as_str());
        props = props
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path, BLOOM_FILTER_FPP);
    }
    Ok(props.build())
}

/// Recasts `batch` to `target` (same columns by position): to the table's Arrow schema, which
/// carries the Iceberg field ids the Parquet writer needs, or to a pipeline's storable output.
pub(crate) fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().as_ref() == target.as_ref() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

/// An existing table must have the pipeline's columns, in order, with the same types.
fn check_schema(sink: &str, table: &IcebergSchema, wanted: &IcebergSchema) -> Result<()> {
    let t: Vec<(String, String)> = table
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                crate::pipeline::validate::iceberg_type_name(&f.field_type),
            )
        })
        .collect();
    let w: Vec<(String, String)> = wanted
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                crate::pipeline::validate::iceberg_type_name(&f.field_type),
            )
        })
        .collect();
    if t == w {
        return Ok(());
    }
    let show = |v: &[(String, String)]| {
        v.iter()
            .map(|(n, ty)| format!("{n} {ty}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Error::Config(format!(
        "sink {sink:?}: the table's schema ({}) does not match the pipeline's output ({})",
        show(&t),
        show(&w)
    )))
}
