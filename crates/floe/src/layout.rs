//! Table layout expressions of a sink's configuration, parsed: `partition_by` and `sort_by`
//! entries. The configuration checks them at load; the sinks turn them into Iceberg partition
//! specs and sort orders (`sink::partition`, `sink::sort`).
//!
//! - `partition_by`: `col` (identity), `year(col)`, `month(col)`, `day(col)`, `hour(col)`,
//!   `bucket[N](col)`, `truncate[W](col)`.
//! - `sort_by`: `col`, `col ASC`, `col DESC`, each optionally followed by `NULLS FIRST` or
//!   `NULLS LAST` (case does not matter). Without a null order, ascending keys put nulls first and
//!   descending ones last — Iceberg's defaults, so the sort order in the table's metadata says
//!   exactly what the files hold.

use iceberg::spec::Transform;

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

/// One `sort_by` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The column.
    pub column: String,
    /// Descending instead of ascending.
    pub descending: bool,
    /// Nulls before the values.
    pub nulls_first: bool,
}

/// Parses one `sort_by` entry; the error says what is accepted.
pub fn parse_sort_key(s: &str) -> std::result::Result<SortKey, String> {
    let bad =
        || format!("{s:?} is not a sort key; use col, col ASC or col DESC, optionally with NULLS FIRST or NULLS LAST");
    let words: Vec<String> = s.split_whitespace().map(str::to_ascii_lowercase).collect();
    let Some(column) = s.split_whitespace().next() else {
        return Err(bad());
    };
    if !column.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad());
    }
    let rest: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let (descending, rest) = match rest.as_slice() {
        ["asc", rest @ ..] => (false, rest),
        ["desc", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let nulls_first = match rest {
        [] => !descending,
        ["nulls", "first"] => true,
        ["nulls", "last"] => false,
        _ => return Err(bad()),
    };
    Ok(SortKey {
        column: column.to_string(),
        descending,
        nulls_first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_iceberg_null_defaults() {
        let k = parse_sort_key("ts").unwrap();
        assert!(!k.descending && k.nulls_first);
        let k = parse_sort_key("ts DESC").unwrap();
        assert!(k.descending && !k.nulls_first);
        let k = parse_sort_key("  ns  asc  NULLS last ").unwrap();
        assert_eq!((k.column.as_str(), k.descending, k.nulls_first), ("ns", false, false));
        for bad in [
            "",
            "ts sideways",
            "ts DESC NULLS",
            "a-b",
            "ts nulls middle",
            "ts desc asc",
        ] {
            assert!(parse_sort_key(bad).is_err(), "{bad:?} should be refused");
        }
    }

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
