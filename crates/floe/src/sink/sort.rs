//! `sort_by` (keys parsed by [`crate::layout`]): the order of rows within each data file, and
//! the table's Iceberg sort order. Only top-level columns of a primitive type can be sort keys.
//!
//! A sink with `sort_by` keeps the rows of a commit in memory (bounded by `rolling.size_mb`, as
//! every pending row is), sorts them once at commit, and then splits them by partition: every
//! data file of the commit is sorted. Rows that reach `rolling.memory_mb` before the commit are
//! sorted and written then, and the files they went to closed: a run of sorted files of its own.

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch};
use iceberg::spec::{NullOrder, Schema as IcebergSchema, SortDirection, SortOrder, Transform};

use crate::error::{Error, Result};
pub use crate::layout::SortKey;
use crate::layout::parse_sort_key;

/// The parsed `sort_by` of a sink (validated with the config: parsing cannot fail here).
pub fn sort_keys(sort_by: &[String]) -> Result<Vec<SortKey>> {
    sort_by
        .iter()
        .map(|k| parse_sort_key(k).map_err(Error::Config))
        .collect()
}

/// Checks that every key names a top-level primitive column of `schema`; the error names the
/// sink and the column.
pub fn check_keys(sink: &str, keys: &[SortKey], schema: &IcebergSchema) -> Result<()> {
    for k in keys {
        match schema.as_struct().field_by_name(&k.column) {
            None => {
                return Err(Error::Config(format!(
                    "sink {sink:?}: sort_by names {:?}, which is not a column of the table",
                    k.column
                )));
            }
            Some(f) if !f.field_type.is_primitive() => {
                return Err(Error::Config(format!(
                    "sink {sink:?}: sort_by column {:?} is a {}; only columns of a primitive type can be sorted by",
                    k.column,
                    super::schema::iceberg_type_name(&f.field_type)
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether `order` (a table's default sort order over `schema`) is exactly `keys`.
pub fn order_matches(order: &SortOrder, keys: &[SortKey], schema: &IcebergSchema) -> bool {
    order.fields.len() == keys.len()
        && order.fields.iter().zip(keys).all(|(f, k)| {
            schema.as_struct().field_by_name(&k.column).map(|c| c.id) == Some(f.source_id)
                && f.transform == Transform::Identity
                && (f.direction == SortDirection::Descending) == k.descending
                && (f.null_order == NullOrder::First) == k.nulls_first
        })
}

/// The rows of `batches` (all of one schema, holding every key column) as one batch sorted by
/// `keys`; the order among equal keys is the stream order.
pub fn sort_batches(batches: &[RecordBatch], keys: &[SortKey]) -> Result<Option<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let all = concat_batches(&first.schema(), batches)?;
    if all.num_rows() < 2 {
        return Ok(Some(all));
    }
    let columns = keys
        .iter()
        .map(|k| {
            let values = all
                .column_by_name(&k.column)
                .ok_or_else(|| Error::Internal(format!("sort key {:?} is not in the rows", k.column)))?
                .clone();
            Ok(SortColumn {
                values,
                options: Some(SortOptions {
                    descending: k.descending,
                    nulls_first: k.nulls_first,
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // lexsort is not stable by itself: the row index as the last key keeps stream order.
    let mut columns = columns;
    columns.push(SortColumn {
        values: std::sync::Arc::new(arrow::array::UInt64Array::from_iter_values(0..all.num_rows() as u64)),
        options: None,
    });
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(Some(take_record_batch(&all, &indices)?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn sorting_keeps_stream_order_among_equal_keys() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ns", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = |ns: Vec<Option<&str>>, n: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(ns)), Arc::new(Int64Array::from(n))],
            )
            .unwrap()
        };
        let a = batch(vec![Some("b"), None, Some("a")], vec![0, 1, 2]);
        let b = batch(vec![Some("a"), Some("b")], vec![3, 4]);
        let keys = vec![crate::layout::parse_sort_key("ns DESC").unwrap()];
        let out = sort_batches(&[a, b], &keys).unwrap().unwrap();
        let n = out.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        // b, b, a, a, then the null (DESC puts nulls last); equal keys in stream order.
        assert_eq!(n.values(), &[0, 4, 2, 3, 1]);
        assert!(out.column(0).is_null(4));
    }
}
