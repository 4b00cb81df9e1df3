//! `partition_by` expressions (parsed by [`crate::layout`]) → an Iceberg partition spec.
//!
//! The partition field is named `col` for identity and `col_<transform>` otherwise (`ts_day`,
//! `id_bucket_16`), as Spark and PyIceberg name them.

use iceberg::spec::{Schema, Transform, UnboundPartitionSpec};

use crate::layout::{PartitionExpr, parse_partition_expr};

/// The partition field name for an expression.
pub fn partition_field_name(e: &PartitionExpr) -> String {
    match e.transform {
        Transform::Identity => e.column.clone(),
        Transform::Bucket(n) => format!("{}_bucket_{n}", e.column),
        Transform::Truncate(w) => format!("{}_trunc_{w}", e.column),
        t => format!("{}_{t}", e.column),
    }
}

/// Builds the unbound partition spec for `exprs` over `schema`; errors name the expression.
pub fn partition_spec(exprs: &[String], schema: &Schema) -> Result<UnboundPartitionSpec, String> {
    let mut builder = UnboundPartitionSpec::builder().with_spec_id(0);
    for s in exprs {
        let e = parse_partition_expr(s)?;
        let field = schema
            .field_by_name(&e.column)
            .ok_or_else(|| format!("partition_by {s:?}: the pipeline's output has no column {:?}", e.column))?;
        e.transform
            .result_type(&field.field_type)
            .map_err(|err| format!("partition_by {s:?}: {err}"))?;
        builder = builder
            .add_partition_field(field.id, partition_field_name(&e), e.transform)
            .map_err(|err| format!("partition_by {s:?}: {err}"))?;
    }
    Ok(builder.build())
}
