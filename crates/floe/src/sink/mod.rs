//! Sinks: where pipeline output lands, behind one [`Sink`] trait that the pipeline runner
//! drives without knowing the kind.
//!
//! ```text
//!  open(cfg)  ──► committed position P (from the catalog)       runner reads the log from P
//!  write(batch, through) …                                      output of rows up to `through`
//!  should_roll() / roll_deadline()   (shared: rolling::RollState)
//!  commit()   ──► everything written, with the positions [from, to), lands in one catalog
//!                 transaction, or nothing does and the sink must be reopened from P
//! ```
//!
//! The contract every sink keeps, whatever it writes into: its committed position only moves in
//! the same catalog transaction that makes its output visible, so a crash anywhere replays the
//! log from a position whose rows are all in the target exactly once. A failed `write` or
//! `commit` leaves the sink unusable (reopen it: it resumes from the committed position) and
//! removes, now or at the next open, every file of the attempt that did not land.
//!
//! [`iceberg`] commits Parquet files as Iceberg snapshots; [`files`] publishes NDJSON or Parquet
//! files under Hive-style folders (the file list and the position in one catalog transaction);
//! [`rolling`] is the roll schedule and [`parquet`] the writer settings every sink shares;
//! [`fanout`] keeps one open data file per partition within the memory budget
//! `rolling.memory_mb`; [`schema`] matches output to a table's columns; [`sort`] is `sort_by`;
//! [`partition`] turns `partition_by` into Iceberg partition specs; [`split`] groups a batch's
//! rows by partition.

pub mod evolve;
pub mod fanout;
pub mod files;
pub mod iceberg;
pub mod parquet;
pub mod partition;
pub mod rolling;
pub mod schema;
pub mod sort;
pub mod split;

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema as ArrowSchema;
use floe_catalog::FloeCatalog;

use crate::config::{SinkConfig, SinkType};
use crate::error::Result;
use rolling::RollState;

/// One (pipeline, sink) writer with its committed position.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// The sink's name.
    fn name(&self) -> &str;

    /// What it writes into, for logs and errors (`namespace.table`).
    fn target(&self) -> String;

    /// Its positions and roll schedule.
    fn rolling(&self) -> &RollState;

    /// Writes `batch`, the output for stream rows up to (excluding) `through` (an empty batch
    /// still moves `through`: rows the SQL filtered out). After an error the sink refuses further
    /// use.
    async fn write(&mut self, batch: &RecordBatch, through: u64) -> Result<()>;

    /// Commits everything written so far with the positions it covers. On error nothing of it
    /// is visible and the sink must be reopened.
    async fn commit(&mut self) -> Result<CommitStats>;

    /// The committed position: every stream row before it is in the target exactly once.
    fn committed(&self) -> u64 {
        self.rolling().committed()
    }

    /// The position after the last row handed to [`write`](Self::write).
    fn through(&self) -> u64 {
        self.rolling().through()
    }

    /// Rows written but not committed.
    fn pending_rows(&self) -> u64 {
        self.rolling().pending_rows()
    }

    /// Whether the pending rows should be committed now (`rolling` size, interval, inactivity).
    fn should_roll(&self) -> bool {
        self.rolling().should_roll()
    }

    /// When the next time-based roll is due, if anything is pending.
    fn roll_deadline(&self) -> Option<Instant> {
        self.rolling().roll_deadline()
    }
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
    /// Data files closed before the commit to stay within `rolling.memory_mb` (among `files`).
    pub closed_for_memory: u64,
    /// Position before.
    pub from: u64,
    /// Position after.
    pub to: u64,
    /// Time from close to catalog commit.
    pub elapsed: Duration,
}

/// Checks that sink `cfg` can take rows of schema `output` before a statement writing it is added
/// or changed (an iceberg sink's table, see [`iceberg::check_table`]; with `evolving`, the
/// statement's stream gained fields and the table may evolve, see [`evolve::check`]); changes
/// nothing.
pub async fn check(catalog: &FloeCatalog, cfg: &SinkConfig, output: &ArrowSchema, evolving: bool) -> Result<()> {
    match (cfg.ty, evolving) {
        (SinkType::Iceberg, false) => iceberg::check_table(catalog, cfg, output).await,
        (SinkType::Iceberg, true) => evolve::check(catalog, cfg, output).await,
        (SinkType::Files, _) => Ok(()),
    }
}

/// Opens sink `cfg` for `pipeline`, whose rows have schema `output`, by its type; a commit that
/// loses the catalog's compare-and-swap is retried `commit_retries` times.
pub async fn open(
    catalog: FloeCatalog,
    cfg: &SinkConfig,
    pipeline: &str,
    output: &ArrowSchema,
    commit_retries: u32,
) -> Result<Box<dyn Sink>> {
    match cfg.ty {
        SinkType::Iceberg => Ok(Box::new(
            iceberg::IcebergSink::open(catalog, cfg, pipeline, output)
                .await?
                .with_commit_retries(commit_retries),
        )),
        SinkType::Files => Ok(Box::new(files::FilesSink::open(catalog, cfg, pipeline, output).await?)),
    }
}
