//! Reading one Parquet data file for a lookup: cached footer and page index, row groups pruned
//! by statistics and bloom filters, pages selected by the column index, and a `RowFilter` that
//! evaluates the equality predicates before any other column is decoded.
//!
//! Data files are immutable (a commit adds new ones), so footers and bloom filters are cached by
//! path with no invalidation; the caches are bounded by entry count.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, Scalar};
use arrow::compute::kernels::cmp;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use floe_catalog::Storage;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use iceberg::spec::{DataFile, PrimitiveLiteral};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::bloom_filter::Sbbf;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use super::{CacheCounters, LookupStats, Predicate};
use crate::error::{Error, Result};

/// Footers kept before the cache is emptied and refilled.
const MAX_CACHED_FOOTERS: usize = 50_000;
/// Bloom filters kept before that cache is emptied and refilled.
const MAX_CACHED_BLOOMS: usize = 100_000;
/// Rows per decoded batch.
const BATCH_ROWS: usize = 1024;

type BloomKey = (String, usize, usize);

/// Footers (with page index) and bloom filters of data files, by path.
pub struct FileCache {
    footers: Mutex<HashMap<String, ArrowReaderMetadata>>,
    blooms: Mutex<HashMap<BloomKey, Option<Arc<Sbbf>>>>,
    counters: Arc<CacheCounters>,
    storage: Arc<dyn Storage>,
}

/// A data file read through the warehouse storage (byte ranges, confined to the warehouse):
/// parquet's async reader interface.
struct StorageFile {
    storage: Arc<dyn Storage>,
    location: String,
    size: u64,
}

fn storage_err(e: iceberg::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StorageFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.storage
                .read_range(&self.location, range)
                .await
                .map_err(storage_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let mut reader = ParquetMetaDataReader::new();
            if let Some(o) = options {
                reader = reader
                    .with_column_index_policy(o.column_index_policy())
                    .with_offset_index_policy(o.offset_index_policy());
            }
            let size = self.size;
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}

/// A predicate bound to one file's Arrow schema.
struct Bound<'a> {
    pred: &'a Predicate,
    /// Root column index in the file's Arrow schema.
    root: usize,
    /// Leaf column index in the Parquet schema (bloom filters).
    leaf: Option<usize>,
    /// The value cast to the file's column type.
    scalar: ArrayRef,
}

impl FileCache {
    /// Empty caches counting their loads into `counters`, reading files through `storage`.
    pub fn new(counters: Arc<CacheCounters>, storage: Arc<dyn Storage>) -> Self {
        Self {
            footers: Mutex::new(HashMap::new()),
            blooms: Mutex::new(HashMap::new()),
            counters,
            storage,
        }
    }

    /// Reads the rows of `file` matching every predicate, at most `limit`.
    pub async fn read(
        &self,
        file: &DataFile,
        preds: &[Predicate],
        limit: usize,
    ) -> Result<(Vec<RecordBatch>, LookupStats)> {
        let mut stats = LookupStats {
            files_read: 1,
            ..Default::default()
        };
        let path = storage_location(file.file_path())?;
        let mut input = StorageFile {
            storage: self.storage.clone(),
            // The manifest records the file's size; the storage refuses anything outside the
            // warehouse or not a regular file before reading a byte.
            size: file.file_size_in_bytes(),
            location: path.clone(),
        };
        if input.size == 0 {
            input.size = self.storage.size(&path).await?;
        }
        let cached = self.footers.lock().expect("footers lock").get(&path).cloned();
        let meta = match cached {
            Some(m) => m,
            None => {
                let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
                let m = ArrowReaderMetadata::load_async(&mut input, options)
                    .await
                    .map_err(parquet_err)?;
                self.counters.footer_loads.fetch_add(1, Ordering::Relaxed);
                let mut footers = self.footers.lock().expect("footers lock");
                if footers.len() >= MAX_CACHED_FOOTERS {
                    footers.clear();
                }
                footers.insert(path.clone(), m.clone());
                m
            }
        };
        let schema: SchemaRef = meta.schema().clone();
        let pq = meta.metadata().clone();
        let descr = pq.file_metadata().schema_descr_ptr();
        let mut bound = Vec::with_capacity(preds.len());
        for p in preds {
            let Some(root) = find_column(&schema, p) else {
                // The column is not in this file (added later): every row is null, none match.
                stats.row_groups_total += pq.num_row_groups() as u64;
                stats.row_groups_pruned_by_stats += pq.num_row_groups() as u64;
                return Ok((vec![], stats));
            };
            let field = schema.field(root);
            let scalar = arrow::compute::cast(&p.scalar, field.data_type())?;
            let leaf = descr
                .columns()
                .iter()
                .position(|c| c.path().parts().len() == 1 && c.path().parts()[0] == *field.name());
            bound.push(Bound {
                pred: p,
                root,
                leaf,
                scalar,
            });
        }

        // Row groups: min/max statistics, then bloom filters.
        let n_rg = pq.num_row_groups();
        stats.row_groups_total = n_rg as u64;
        let mut keep: Vec<bool> = vec![true; n_rg];
        for b in &bound {
            let conv =
                StatisticsConverter::try_new(schema.field(b.root).name(), &schema, &descr).map_err(parquet_err)?;
            let mins = conv.row_group_mins(pq.row_groups()).map_err(parquet_err)?;
            let maxes = conv.row_group_maxes(pq.row_groups()).map_err(parquet_err)?;
            let outside = outside_range(&b.scalar, &mins, &maxes)?;
            for (rg, k) in keep.iter_mut().enumerate() {
                if *k && outside.value(rg) && outside.is_valid(rg) {
                    *k = false;
                    stats.row_groups_pruned_by_stats += 1;
                }
            }
        }
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(input, meta.clone());
        for b in &bound {
            let Some(leaf) = b.leaf else { continue };
            for (rg, k) in keep.iter_mut().enumerate() {
                if !*k || pq.row_group(rg).column(leaf).bloom_filter_offset().is_none() {
                    continue;
                }
                let key = (path.clone(), rg, leaf);
                let cached = self.blooms.lock().expect("blooms lock").get(&key).cloned();
                let sbbf = match cached {
                    Some(s) => s,
                    None => {
                        let s = builder
                            .get_row_group_column_bloom_filter(rg, leaf)
                            .await
                            .map_err(parquet_err)?
                            .map(Arc::new);
                        self.counters.bloom_loads.fetch_add(1, Ordering::Relaxed);
                        let mut blooms = self.blooms.lock().expect("blooms lock");
                        if blooms.len() >= MAX_CACHED_BLOOMS {
                            blooms.clear();
                        }
                        blooms.insert(key, s.clone());
                        s
                    }
                };
                if let Some(s) = sbbf
                    && !bloom_may_contain(&s, b.pred)
                {
                    *k = false;
                    stats.row_groups_pruned_by_bloom += 1;
                }
            }
        }
        let row_groups: Vec<usize> = (0..n_rg).filter(|rg| keep[*rg]).collect();
        stats.row_groups_read = row_groups.len() as u64;
        if row_groups.is_empty() {
            return Ok((vec![], stats));
        }
        stats.rows_in_row_groups_read = row_groups.iter().map(|rg| pq.row_group(*rg).num_rows() as u64).sum();

        // Pages: select only pages whose min/max can hold every value.
        let selection = match (pq.column_index(), pq.offset_index()) {
            (Some(ci), Some(oi)) => page_selection(&bound, &schema, &descr, ci, oi, &pq, &row_groups)?,
            _ => None,
        };
        stats.rows_selected_by_page_index = match &selection {
            Some(s) => s.row_count() as u64,
            None => stats.rows_in_row_groups_read,
        };
        if stats.rows_selected_by_page_index == 0 {
            return Ok((vec![], stats));
        }

        let roots: Vec<usize> = {
            let mut r: Vec<usize> = bound.iter().map(|b| b.root).collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        let mask = ProjectionMask::roots(&descr, roots);
        let tests: Vec<(String, ArrayRef)> = bound
            .iter()
            .map(|b| (schema.field(b.root).name().clone(), b.scalar.clone()))
            .collect();
        let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let mut acc: Option<BooleanArray> = None;
            for (name, scalar) in &tests {
                let col = batch.column_by_name(name).ok_or_else(|| {
                    arrow::error::ArrowError::SchemaError(format!("column {name} missing from the filter batch"))
                })?;
                let eq = cmp::eq(col, &Scalar::new(scalar.clone()))?;
                acc = Some(match acc {
                    None => eq,
                    Some(a) => arrow::compute::and(&a, &eq)?,
                });
            }
            Ok(acc.unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()])))
        });
        builder = builder
            .with_row_groups(row_groups)
            .with_batch_size(BATCH_ROWS)
            .with_limit(limit);
        if !bound.is_empty() {
            builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
        }
        if let Some(s) = selection {
            builder = builder.with_row_selection(s);
        }
        let batches: Vec<RecordBatch> = builder
            .build()
            .map_err(parquet_err)?
            .try_collect()
            .await
            .map_err(parquet_err)?;
        Ok((batches.into_iter().filter(|b| b.num_rows() > 0).collect(), stats))
    }
}

fn parquet_err(e: parquet::errors::ParquetError) -> Error {
    Error::Io(std::io::Error::other(format!("parquet: {e}")))
}

/// The location of a data file as the warehouse storage takes it: `file:///…` for a local path
/// (`/…` and `file:/…` are spelled that way), `s3://…` as it is; other schemes are refused. The
/// storage checks the location rule itself.
fn storage_location(location: &str) -> Result<String> {
    if location.starts_with("file://") || location.starts_with("s3://") {
        Ok(location.to_string())
    } else if let Some(p) = location.strip_prefix("file:") {
        Ok(format!("file://{p}"))
    } else if location.starts_with('/') {
        Ok(format!("file://{location}"))
    } else {
        Err(Error::BadRequest {
            code: "unsupported_storage",
            message: format!("lookups read file:// and s3:// warehouses, not {location}"),
        })
    }
}

/// The file's root column for `p`: by Iceberg field id when the file records ids, else by name.
fn find_column(schema: &SchemaRef, p: &Predicate) -> Option<usize> {
    let by_id = schema
        .fields()
        .iter()
        .position(|f| f.metadata().get("PARQUET:field_id").and_then(|v| v.parse::<i32>().ok()) == Some(p.field_id));
    by_id.or_else(|| schema.index_of(&p.column).ok())
}

/// `true` where the value is below the min or above the max (nulls where unknown).
fn outside_range(scalar: &ArrayRef, mins: &ArrayRef, maxes: &ArrayRef) -> Result<BooleanArray> {
    let s = Scalar::new(cast_to(scalar, mins.data_type())?);
    let below = cmp::lt(&s, mins)?;
    let s = Scalar::new(cast_to(scalar, maxes.data_type())?);
    let above = cmp::gt(&s, maxes)?;
    Ok(arrow::compute::or_kleene(&below, &above)?)
}

fn cast_to(a: &ArrayRef, ty: &arrow::datatypes::DataType) -> Result<ArrayRef> {
    if a.data_type() == ty {
        Ok(a.clone())
    } else {
        Ok(arrow::compute::cast(a, ty)?)
    }
}

fn bloom_may_contain(s: &Sbbf, p: &Predicate) -> bool {
    match p.value.literal() {
        PrimitiveLiteral::String(v) => s.check(v.as_str()),
        PrimitiveLiteral::Int(v) => s.check(v),
        PrimitiveLiteral::Long(v) => s.check(v),
        PrimitiveLiteral::Float(v) => s.check(&v.0),
        PrimitiveLiteral::Double(v) => s.check(&v.0),
        PrimitiveLiteral::Binary(v) => s.check(v.as_slice()),
        _ => true,
    }
}

/// Rows to decode in `row_groups`: the pages of each predicate column whose min/max can hold the
/// value, intersected over predicates. `None` when the index gives nothing to skip.
fn page_selection(
    bound: &[Bound<'_>],
    schema: &SchemaRef,
    descr: &parquet::schema::types::SchemaDescriptor,
    ci: &parquet::file::metadata::ParquetColumnIndex,
    oi: &parquet::file::metadata::ParquetOffsetIndex,
    pq: &parquet::file::metadata::ParquetMetaData,
    row_groups: &[usize],
) -> Result<Option<RowSelection>> {
    let mut result: Option<RowSelection> = None;
    for b in bound {
        let conv = StatisticsConverter::try_new(schema.field(b.root).name(), schema, descr).map_err(parquet_err)?;
        let mut selectors = Vec::new();
        for rg in row_groups {
            let one = std::slice::from_ref(rg);
            let mins = conv.data_page_mins(ci, oi, one).map_err(parquet_err)?;
            let maxes = conv.data_page_maxes(ci, oi, one).map_err(parquet_err)?;
            let counts = conv
                .data_page_row_counts(oi, pq.row_groups(), one)
                .map_err(parquet_err)?;
            let Some(counts) = counts else {
                selectors.push(RowSelector::select(pq.row_group(*rg).num_rows() as usize));
                continue;
            };
            let outside = outside_range(&b.scalar, &mins, &maxes)?;
            for page in 0..counts.len() {
                let rows = counts.value(page) as usize;
                let skip = outside.is_valid(page) && outside.value(page);
                selectors.push(if skip {
                    RowSelector::skip(rows)
                } else {
                    RowSelector::select(rows)
                });
            }
        }
        let sel = RowSelection::from(selectors);
        result = Some(match result {
            None => sel,
            Some(r) => r.intersection(&sel),
        });
    }
    Ok(result)
}
