//! Table maintenance: what keeps a streaming table fast and its storage bounded —
//! [`compact`] (bin-pack small data files into a `replace` snapshot), [`manifests`] (merge the
//! one-manifest-per-commit pile into few manifests clustered by partition), [`expire`] (drop old
//! snapshots and the files only they referenced), [`orphans`] (delete files under the table
//! location that no metadata references, past a safety window) and [`delete`] (copy-on-write
//! row deletes: `--where` and time-based retention).
//!
//! Every step works on any format-version 2 table in floe's catalog, whoever wrote it (floe's
//! sinks, PyIceberg or Spark through the REST catalog), on local and S3 warehouses alike: table
//! files are read and deleted through the warehouse [`Storage`](floe_catalog::Storage), commits
//! go through the catalog's compare-and-swap ([`floe_catalog::rewrite`] for rewrites).
//!
//! # Safety: files in flight
//!
//! A step that writes files records an *attempt* first (the same `floe_sink_attempts` row a
//! sink records, under the pipeline name [`ATTEMPTS`] and the table name as sink), renews it
//! every [`ATTEMPT_RENEW`] while it works, and names every file it writes after the attempt's
//! id. The row is removed once the commit landed or its files were deleted; one left behind by
//! a killed process (not renewed for [`ATTEMPT_STALE_MS`]) is cleaned by the next compaction or
//! orphan cleanup of the table ([`clean_attempts`]), which deletes the attempt's files only
//! where no snapshot references them. Orphan cleanup never deletes a file named after an open attempt of any
//! sink or step, whatever its age.
//!
//! ```text
//! floe table compact NS.TABLE            ─► compact::compact        replace snapshot
//! floe table rewrite-manifests NS.TABLE  ─► manifests::rewrite_manifests  replace snapshot
//! floe table expire-snapshots NS.TABLE   ─► expire::expire          remove-snapshots + deletes
//! floe table remove-orphans NS.TABLE     ─► orphans::remove_orphans deletes
//! floe table delete NS.TABLE --where …   ─► delete::delete_rows     delete / overwrite snapshot
//! floe serve, [sinks.maintenance]        ─► policy::round           all of them, on a schedule
//! ```

pub mod compact;
pub mod delete;
pub mod expire;
pub mod manifests;
pub mod orphans;
pub mod policy;

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use floe_catalog::FloeCatalog;
use floe_catalog::reachable::{Mode, metadata_files, walk};
use iceberg::TableIdent;
use iceberg::table::Table;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::config::Compression;
use crate::error::{Error, Result};
use crate::sink::parquet::{DATA_PAGE_ROW_LIMIT, codec};

/// The pipeline name maintenance attempts are recorded under (sink = the table's name). Not a
/// valid pipeline name, so it never meets a sink's attempts.
pub const ATTEMPTS: &str = "floe.maintenance";

/// Progress of a long step, for a terminal.
pub trait Progress: Send + Sync {
    /// A phase `what` of `total` units (bytes or files) starts.
    fn start(&self, what: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
}

/// No progress shown (the background runner, `--json`, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal and at most ten
/// times a second.
#[derive(Debug)]
pub struct Bar {
    tty: bool,
    state: Mutex<BarState>,
}

#[derive(Debug)]
struct BarState {
    what: String,
    total: u64,
    done: u64,
    drawn: Option<Instant>,
}

impl Default for Bar {
    fn default() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(BarState {
                what: String::new(),
                total: 0,
                done: 0,
                drawn: None,
            }),
        }
    }
}

impl Bar {
    fn draw(&self, s: &mut BarState, force: bool) {
        if !self.tty || (!force && s.drawn.is_some_and(|t| t.elapsed().as_millis() < 100)) {
            return;
        }
        s.drawn = Some(Instant::now());
        let frac = if s.total == 0 {
            1.0
        } else {
            (s.done as f64 / s.total as f64).min(1.0)
        };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{:<18} [{}{}] {:>5.1}%",
            s.what,
            "#".repeat(filled),
            " ".repeat(width - filled),
            frac * 100.0
        );
        let _ = err.flush();
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = BarState {
            what: what.to_string(),
            total,
            done: 0,
            drawn: None,
        };
        self.draw(&mut s, true);
    }

    fn advance(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.done = s.done.saturating_add(n);
        self.draw(&mut s, false);
    }

    fn finish(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.done = s.total;
        self.draw(&mut s, true);
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// The Parquet writer settings for files maintenance writes into `table`: the codec and level
/// of its `write.parquet.compression-codec` / `-level` properties (floe's default, zstd(3),
/// when absent or unknown to floe), its `write.parquet.row-group-size-bytes`, the bloom filters
/// its properties turn on ([`bloom_columns`]), and page statistics and page row limit as floe's
/// sinks write them (so lookups prune the same).
pub fn table_writer_properties(table: &Table) -> Result<WriterProperties> {
    let props = table.metadata().properties();
    let compression = match props
        .get("write.parquet.compression-codec")
        .map(|c| c.to_ascii_lowercase())
    {
        None => Compression::default(),
        Some(c) => {
            let spelled = match props.get("write.parquet.compression-level") {
                Some(level) if c == "zstd" || c == "gzip" => format!("{c}({level})"),
                _ => c.clone(),
            };
            Compression::try_from(spelled.clone())
                .or_else(|_| Compression::try_from(c.clone()))
                .unwrap_or_else(|_| {
                    tracing::warn!(table = %table.identifier(), codec = %spelled, "unknown Parquet codec in the table properties; maintenance writes zstd(3)");
                    Compression::default()
                })
        }
    };
    let row_group_bytes = props
        .get("write.parquet.row-group-size-bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|b| *b > 0)
        .unwrap_or(crate::config::DEFAULT_ROW_GROUP_BYTES as usize);
    let mut builder = WriterProperties::builder()
        .set_compression(codec(compression)?)
        .set_max_row_group_bytes(Some(row_group_bytes))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_offset_index_disabled(false)
        .set_data_page_row_count_limit(DATA_PAGE_ROW_LIMIT);
    for (column, fpp) in bloom_columns(table) {
        let path = parquet::schema::types::ColumnPath::from(column);
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path, fpp);
    }
    Ok(builder.build())
}

/// The columns whose bloom filter the table's properties turn on
/// (`write.parquet.bloom-filter-enabled.column.<name> = true`, as the sink records its
/// `bloom_filter_columns`, and as other engines write it), with their false-positive probability
/// (`write.parquet.bloom-filter-fpp.column.<name>`, floe's 0.01 unless a number in (0, 1)).
/// Only top-level primitive columns of the current schema are taken; another engine's property
/// naming anything else is ignored, so the properties cannot make a writer fail.
fn bloom_columns(table: &Table) -> Vec<(String, f64)> {
    use crate::sink::parquet::{BLOOM_ENABLED_PROPERTY, BLOOM_FILTER_FPP, BLOOM_FPP_PROPERTY};
    let props = table.metadata().properties();
    let schema = table.metadata().current_schema();
    let mut out: Vec<(String, f64)> = props
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(BLOOM_ENABLED_PROPERTY)?, v)))
        .filter(|(_, v)| v.eq_ignore_ascii_case("true"))
        .filter(|(c, _)| {
            schema
                .as_struct()
                .field_by_name(c)
                .is_some_and(|f| f.field_type.is_primitive())
        })
        .map(|(c, _)| {
            let fpp = props
                .get(&format!("{BLOOM_FPP_PROPERTY}{c}"))
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|p| *p > 0.0 && *p < 1.0)
                .unwrap_or(BLOOM_FILTER_FPP);
            (c.to_string(), fpp)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Records that a maintenance step of `ident` is about to write files named after `attempt`.
pub async fn begin_attempt(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    attempt: uuid::Uuid,
    location: &str,
) -> Result<()> {
    Ok(catalog
        .begin_attempt(ATTEMPTS, &ident.to_string(), attempt, location)
        .await?)
}

/// Forgets a maintenance attempt (its commit landed, or its files are deleted).
pub async fn end_attempt(catalog: &FloeCatalog, ident: &TableIdent, attempt: uuid::Uuid) -> Result<()> {
    Ok(catalog.forget_attempt(ATTEMPTS, &ident.to_string(), attempt).await?)
}

/// How often a running maintenance attempt renews its record ([`renew_while`]).
pub const ATTEMPT_RENEW: std::time::Duration = std::time::Duration::from_secs(10);
/// An attempt not renewed for this long belongs to a process that is gone (killed, or cut
/// off from the catalog): [`clean_attempts`] may clean it.
pub const ATTEMPT_STALE_MS: i64 = 120_000;

/// Runs `work` while renewing the record of `attempt` every [`ATTEMPT_RENEW`], so that no
/// other run takes it for a dead one.
pub async fn renew_while<T>(
    catalog: &FloeCatalog,
    ident: &TableIdent,
    attempt: uuid::Uuid,
    location: &str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(ATTEMPT_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                if let Err(e) = begin_attempt(catalog, ident, attempt, location).await {
                    tracing::warn!(table = %ident, %attempt, error = %e, "could not renew a maintenance attempt");
                }
            }
        }
    }
}

/// Cleans the attempts killed maintenance runs of `ident` left behind (not renewed for
/// [`ATTEMPT_STALE_MS`]): deletes the files named after each that no snapshot or metadata file
/// of the table references (an attempt whose commit landed before the kill keeps the files
/// its snapshot uses), then forgets it. Returns how many files it deleted.
pub async fn clean_attempts(catalog: &FloeCatalog, ident: &TableIdent) -> Result<usize> {
    let now = chrono::Utc::now().timestamp_millis();
    let pending: Vec<(uuid::Uuid, String)> = catalog
        .pending_attempts_since(ATTEMPTS, &ident.to_string())
        .await?
        .into_iter()
        .filter(|(_, _, renewed)| now - renewed > ATTEMPT_STALE_MS)
        .map(|(a, l, _)| (a, l))
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let storage = catalog.storage().clone();
    let (location, metadata) = catalog.load_metadata(ident).await?;
    let dir = catalog.warehouse_rule().check("table location", metadata.location())?;
    let mut referenced = walk(storage.as_ref(), &dir, &metadata, |_| true, Mode::Strict)
        .await?
        .all();
    referenced.extend(metadata_files(storage.as_ref(), &dir, &location, &metadata));
    let listed = storage.list(&dir).await?;
    let mut deleted = 0;
    for (attempt, _) in pending {
        let needle = attempt.to_string();
        for f in &listed {
            let name = f.location.rsplit_once('/').map_or(f.location.as_str(), |(_, n)| n);
            if name.contains(&needle)
                && !referenced.contains(&f.location)
                && storage.delete(&f.location).await? == floe_catalog::Deleted::Deleted
            {
                deleted += 1;
            }
        }
        tracing::info!(table = %ident, %attempt, deleted, "cleaned a maintenance attempt that was cut off");
        end_attempt(catalog, ident, attempt).await?;
    }
    Ok(deleted)
}

/// Parses a duration as the CLI and the config spell it ([`crate::config::parse_duration_ms`]).
pub fn parse_duration_ms(s: &str) -> Result<i64> {
    crate::config::parse_duration_ms(s).map_err(Error::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("0").unwrap(), 0);
        assert_eq!(parse_duration_ms("90s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration_ms("2w").unwrap(), 14 * 86_400_000);
        for bad in ["", "d", "7", "7y", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} accepted");
        }
    }
}
