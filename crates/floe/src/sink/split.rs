//! Partition split for the sink: groups a batch's rows by partition value and takes each group
//! out in one pass.
//!
//! iceberg 0.10.1's `RecordBatchPartitionSplitter` turns every row's partition value into a
//! `Literal` (a `String` allocation for a string column), hashes those, then builds one
//! full-length boolean mask per partition and filters the whole batch with each: rows ×
//! partitions work, 14.5 % of floe's CPU under the benchmark's load (BENCHMARKS.md). This splitter
//! computes the same partition values with iceberg's `PartitionValueCalculator`, groups rows by
//! their Arrow row-format encoding, builds one `Literal` per *partition*, and `take`s each group.
//! Groups come out in order of first appearance.

use std::collections::HashMap;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::row::{RowConverter, SortField};
use iceberg::arrow::{PartitionValueCalculator, arrow_struct_to_literal};
use iceberg::spec::{Literal, PartitionKey, PartitionSpecRef, SchemaRef, StructType};

use crate::error::Result;

/// Splits record batches of a table's schema by the table's partition spec.
pub struct PartitionSplitter {
    schema: SchemaRef,
    spec: PartitionSpecRef,
    partition_type: StructType,
    calculator: PartitionValueCalculator,
}

impl PartitionSplitter {
    /// A splitter for `spec` over `schema` (the table's current schema).
    pub fn try_new(schema: SchemaRef, spec: PartitionSpecRef) -> Result<Self> {
        let calculator = PartitionValueCalculator::try_new(&spec, &schema)?;
        let partition_type = spec.partition_type(&schema)?;
        Ok(PartitionSplitter {
            schema,
            spec,
            partition_type,
            calculator,
        })
    }

    /// The rows of `batch` grouped by partition, each with its partition key.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<(PartitionKey, RecordBatch)>> {
        let values: ArrayRef = self.calculator.calculate(batch)?;
        let converter = RowConverter::new(vec![SortField::new(values.data_type().clone())])?;
        let rows = converter.convert_columns(std::slice::from_ref(&values))?;
        let mut index: HashMap<arrow::row::Row<'_>, usize> = HashMap::new();
        let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let g = *index.entry(row).or_insert_with(|| {
                groups.push((i, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i as u32);
        }
        let mut out = Vec::with_capacity(groups.len());
        for (first, ids) in groups {
            let value = arrow_struct_to_literal(&values.slice(first, 1), &self.partition_type)?;
            let Some(Some(Literal::Struct(data))) = value.into_iter().next() else {
                return Err(iceberg::Error::new(
                    iceberg::ErrorKind::DataInvalid,
                    "partition value is not a struct literal or is null",
                )
                .into());
            };
            let part = if ids.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(ids))?
            };
            out.push((
                PartitionKey::new(self.spec.as_ref().clone(), self.schema.clone(), data),
                part,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use iceberg::arrow::{
        RecordBatchPartitionSplitter, arrow_schema_to_schema_auto_assign_ids, schema_to_arrow_schema,
    };
    use iceberg::spec::{PartitionSpec, Transform};

    use super::*;

    /// Same partitions, keys and rows (in row order within each) as iceberg's splitter.
    #[test]
    fn matches_iceberg_splitter() {
        let arrow = arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("ns", arrow::datatypes::DataType::Utf8, true),
            arrow::datatypes::Field::new("n", arrow::datatypes::DataType::Int64, false),
        ]);
        let schema = Arc::new(arrow_schema_to_schema_auto_assign_ids(&arrow).unwrap());
        let table_arrow = Arc::new(schema_to_arrow_schema(&schema).unwrap());
        for transform in [Transform::Identity, Transform::Bucket(4), Transform::Truncate(1)] {
            let spec = Arc::new(
                PartitionSpec::builder(schema.clone())
                    .add_partition_field("ns", "p", transform)
                    .unwrap()
                    .build()
                    .unwrap(),
            );
            let ns: StringArray = (0..200)
                .map(|i| if i % 7 == 0 { None } else { Some(format!("t{}", i % 5)) })
                .collect();
            let batch = RecordBatch::try_new(
                table_arrow.clone(),
                vec![Arc::new(ns), Arc::new(Int64Array::from_iter_values(0..200))],
            )
            .unwrap();
            let mut ours: Vec<_> = PartitionSplitter::try_new(schema.clone(), spec.clone())
                .unwrap()
                .split(&batch)
                .unwrap()
                .into_iter()
                .map(|(k, b)| (format!("{:?}", k.data()), b))
                .collect();
            let mut theirs: Vec<_> = RecordBatchPartitionSplitter::try_new_with_computed_values(schema.clone(), spec)
                .unwrap()
                .split(&batch)
                .unwrap()
                .into_iter()
                .map(|(k, b)| (format!("{:?}", k.data()), b))
                .collect();
            ours.sort_by(|a, b| a.0.cmp(&b.0));
            theirs.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(ours, theirs, "{transform}");
            assert!(ours.len() > 1, "{transform}");
        }
    }
}
