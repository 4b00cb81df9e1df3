//! `partition_by` expressions → Iceberg partition fields.
//!
//! Accepted forms: `col` (identity), `year(col)`, `month(col)`, `day(col)`, `hour(col)`,
//! `bucket[N](col)`, `truncate[W](col)`. The partition field is named `col` for identity and
//! `col_<transform>` otherwise (`ts_day`, `id_bucket_16`), as Spark and PyIceberg name them.

use iceberg::spec::{Schema, Transform, UnboundPartitionSpec};

/// A parsed `partition_by` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionExpr {
    /// Source column.
    pub column: String,
    /// Transform.
    pub transform: Transform,
}

/// Parses one `partition_by` entry; the error says what is accepted.
pub fn parse_partition_expr(s: &str) -> Result<PartitionExpr, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "{s:?} is not a partition expression; use col, year(col), month(col), day(col), hour(col), bucket[N](col) or truncate[W](col)"
        )
    };
    let Some(open) = s.find('(') else {
        if is_ident(s) {
            return Ok(PartitionExpr {
                column: s.to_string(),
                transform: Transform::Identity,
            });
        }
        return Err(bad());
    };
    let column = s[open + 1..].strip_suffix(')').map(str::trim).ok_or_else(bad)?;
    if !is_ident(column) {
        return Err(bad());
    }
    let func = s[..open].trim().to_ascii_lowercase();
    let transform = match func.as_str() {
        "year" | "years" => Transform::Year,
        "month" | "months" => Transform::Month,
        "day" | "days" => Transform::Day,
        "hour" | "hours" => Transform::Hour,
        "identity" => Transform::Identity,
        f if f.starts_with("bucket[") || f.starts_with("truncate[") => {
            let n: u32 = f
                .split_once('[')
                .and_then(|(_, rest)| rest.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(bad)?;
            if f.starts_with("bucket") {
                Transform::Bucket(n)
            } else {
                Transform::Truncate(n)
            }
        }
        _ => return Err(bad()),
    };
    Ok(PartitionExpr {
        column: column.to_string(),
        transform,
    })
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        for (s, t) in [
            ("ns", Transform::Identity),
            ("day(ts)", Transform::Day),
            ("hour( ts )", Transform::Hour),
            ("bucket[16](id)", Transform::Bucket(16)),
            ("truncate[4](id)", Transform::Truncate(4)),
        ] {
            assert_eq!(parse_partition_expr(s).unwrap().transform, t, "{s}");
        }
        for bad in ["week(ts)", "bucket[0](id)", "day(ts", "a b", "bucket(id)"] {
            assert!(parse_partition_expr(bad).is_err(), "{bad}");
        }
    }
}
