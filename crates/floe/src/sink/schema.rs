//! Pipeline output meets a table's schema: whether an existing table can take the pipeline's
//! rows, and the recasts that line a batch up with the table's columns.
//!
//! Columns are matched by name. A table column the pipeline does not write must be optional
//! (it is written as null: an outside engine's `ADD COLUMN`); a column the pipeline writes must
//! have the same type in the table, or one of Iceberg's widenings (int → long, float → double).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use iceberg::spec::Schema as IcebergSchema;

use crate::error::{Error, Result};

/// Recasts `batch` to `target` (same columns by position): to the table's Arrow schema, which
/// carries the Iceberg field ids the Parquet writer needs, or to a pipeline's storable output.
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
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

/// Builds the table's row layout from pipeline output `batch`: columns matched by name (the table
/// may have columns the pipeline does not write: null), each cast to the table's type.
pub fn conform_to_table(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().as_ref() == target.as_ref() {
        return Ok(batch.clone());
    }
    let schema = batch.schema();
    let columns = target
        .fields()
        .iter()
        .map(|f| match schema.index_of(f.name()) {
            Ok(i) => {
                let c = batch.column(i);
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    Ok(arrow::compute::cast(c, f.data_type())?)
                }
            }
            Err(_) if f.is_nullable() => Ok(arrow::array::new_null_array(f.data_type(), batch.num_rows())),
            Err(_) => Err(Error::Internal(format!(
                "the table's required column {:?} is not in the pipeline's output",
                f.name()
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(target.clone(), columns, &options)?)
}

/// Whether a column of type `wanted` (the pipeline's) can be written into a table column of
/// type `table`: the same type, or Iceberg's widenings int → long and float → double.
fn writable_as(wanted: &str, table: &str) -> bool {
    wanted == table || matches!((wanted, table), ("int", "long") | ("float", "double"))
}

/// An existing table must hold every column of the pipeline's output, by name, with the same
/// type (or a wider one); columns the pipeline does not write must be optional.
pub fn check_schema(sink: &str, table: &IcebergSchema, wanted: &IcebergSchema) -> Result<()> {
    let t = column_types(table);
    let w = column_types(wanted);
    let mut problems = Vec::new();
    for (name, ty, _) in &w {
        match t.iter().find(|(n, _, _)| n == name) {
            None => problems.push(format!("the table has no column {name:?}")),
            Some((_, tt, _)) if !writable_as(ty, tt) => {
                problems.push(format!("column {name:?} is {tt} in the table, {ty} in the pipeline"))
            }
            Some(_) => {}
        }
    }
    for (name, _, required) in &t {
        if *required && !w.iter().any(|(n, _, _)| n == name) {
            problems.push(format!(
                "the table's column {name:?} is required, and the pipeline does not write it"
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let show = |v: &[(String, String, bool)]| {
        v.iter()
            .map(|(n, ty, _)| format!("{n} {ty}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Error::Config(format!(
        "sink {sink:?}: the table's schema ({}) does not match the pipeline's output ({}): {}",
        show(&t),
        show(&w),
        problems.join("; ")
    )))
}

fn column_types(schema: &IcebergSchema) -> Vec<(String, String, bool)> {
    schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| (f.name.clone(), iceberg_type_name(&f.field_type), f.required))
        .collect()
}

/// An Iceberg type as text: `long`, `list<string>`, `struct<a: long required, b: string>`.
pub fn iceberg_type_name(t: &iceberg::spec::Type) -> String {
    use iceberg::spec::Type;
    let field = |f: &iceberg::spec::NestedFieldRef| {
        let req = if f.required { " required" } else { "" };
        format!("{}: {}{req}", f.name, iceberg_type_name(&f.field_type))
    };
    match t {
        Type::Primitive(p) => p.to_string(),
        Type::List(l) => {
            let req = if l.element_field.required { " required" } else { "" };
            format!("list<{}{req}>", iceberg_type_name(&l.element_field.field_type))
        }
        Type::Struct(s) => format!(
            "struct<{}>",
            s.fields().iter().map(field).collect::<Vec<_>>().join(", ")
        ),
        Type::Map(m) => format!(
            "map<{}, {}>",
            iceberg_type_name(&m.key_field.field_type),
            iceberg_type_name(&m.value_field.field_type)
        ),
    }
}
