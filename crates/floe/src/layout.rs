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
//! - a files sink's `partitioning`: a strftime pattern (`year=%Y/month=%m/day=%d`) that names the
//!   folder of a row by a time, rendered in UTC ([`FolderPattern`]); its `file_prefix` and
//!   `file_suffix` are parts of one file name ([`check_name_part`]).

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone, Utc};
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

/// Default `partitioning` of a files sink: Hive-style folders by day.
pub const DEFAULT_FILES_PARTITIONING: &str = "year=%Y/month=%m/day=%d";

/// A files sink's `partitioning`, parsed: the strftime pattern of a row's folder (relative to the
/// sink's `path`), rendered from a time in UTC. `""`: no folders.
///
/// Refused: a pattern chrono cannot parse; one that renders an empty segment (a leading,
/// trailing or doubled `/`), `.` or `..`, a segment starting with `_` or `.` (hidden from Hive-
/// style readers, and `_floe/` is floe's own), a `\` or a control character.
#[derive(Debug, Clone)]
pub struct FolderPattern {
    items: Vec<Item<'static>>,
    /// Whether the folder can change within one second (`%f`, `%.3f`, …).
    sub_second: bool,
}

impl FolderPattern {
    /// Parses and checks `pattern`; the error says what is wrong.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let items = StrftimeItems::new(pattern).parse_to_owned().map_err(|_| {
            format!("{pattern:?} is not a strftime pattern chrono accepts (e.g. \"year=%Y/month=%m/day=%d\")")
        })?;
        let p = FolderPattern {
            items,
            sub_second: false,
        };
        if pattern.is_empty() {
            return Ok(p);
        }
        let a = Utc.timestamp_opt(1_795_000_000, 123_456_000).single().expect("valid");
        let b = Utc.timestamp_opt(1_795_000_000, 987_654_000).single().expect("valid");
        let rendered = p.render(a);
        for segment in rendered.split('/') {
            let why = if segment.is_empty() {
                Some("it makes an empty folder name (a leading, trailing or doubled '/')")
            } else if segment == "." || segment == ".." {
                Some("it makes a '.' or '..' folder")
            } else if segment.starts_with('_') || segment.starts_with('.') {
                Some("a folder starting with '_' or '.' is hidden from readers (and _floe/ is floe's own)")
            } else if segment.chars().any(|c| c.is_control() || c == '\\') {
                Some("it makes a folder name with a control character or '\\'")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(format!("{pattern:?} renders as {rendered:?}: {why}"));
            }
        }
        let sub_second = p.render(a) != p.render(b);
        Ok(FolderPattern { sub_second, ..p })
    }

    /// The folder of time `t` (relative, without a trailing `/`; `""` without partitioning).
    pub fn render(&self, t: DateTime<Utc>) -> String {
        t.format_with_items(self.items.iter()).to_string()
    }

    /// Whether folders differ within one second (so a cache by whole seconds is not enough).
    pub fn sub_second(&self) -> bool {
        self.sub_second
    }

    /// Whether the pattern makes no folders at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Checks a `file_prefix` / `file_suffix` of a files sink: part of one file name, so no `/`, `\`,
/// `..` or control character, at most 200 bytes; a prefix must not start with `_` or `.` either
/// (readers skip such files as hidden).
pub fn check_name_part(value: &str, prefix: bool) -> Result<(), String> {
    let why = if value.len() > 200 {
        Some("is longer than 200 bytes")
    } else if value.contains('/') || value.contains('\\') {
        Some("is part of one file name: no '/' or '\\'")
    } else if value.contains("..") {
        Some("must not contain '..'")
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if prefix && (value.starts_with('_') || value.starts_with('.')) {
        Some("must not start with '_' or '.' (readers skip such files as hidden)")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!("{value:?} {why}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_patterns_render_in_utc_and_refuse_unsafe_folders() {
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 7, 5, 9).single().unwrap();
        let default = FolderPattern::parse(DEFAULT_FILES_PARTITIONING).unwrap();
        assert_eq!(default.render(t), "year=2026/month=11/day=26");
        assert!(!default.sub_second() && !default.is_empty());
        let hourly = FolderPattern::parse("dt=%Y-%m-%d/hour=%H").unwrap();
        assert_eq!(hourly.render(t), "dt=2026-11-26/hour=07");
        let none = FolderPattern::parse("").unwrap();
        assert!(none.is_empty());
        assert_eq!(none.render(t), "");
        assert!(FolderPattern::parse("ms=%Y%m%d%H%M%S%3f").unwrap().sub_second());
        for bad in [
            "%Q",
            "year=%Y/%",
            "/year=%Y",
            "year=%Y/",
            "a//b",
            "../%Y",
            "a/./b",
            "_floe/%Y",
            ".hidden/%Y",
            "%Y%n",
            "a\\b",
        ] {
            assert!(FolderPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn name_parts_are_one_file_name() {
        for good in ["", "events-", "part_", ".json.gz", "-x.parquet"] {
            assert!(check_name_part(good, false).is_ok(), "{good:?}");
        }
        assert!(check_name_part("events-", true).is_ok());
        for bad in ["a/b", "..", "x..y", "a\nb", "a\\b", &"x".repeat(201)] {
            assert!(check_name_part(bad, false).is_err(), "{bad:?}");
        }
        for bad in ["_tmp", ".hidden"] {
            assert!(check_name_part(bad, true).is_err(), "{bad:?}");
            assert!(check_name_part(bad, false).is_ok(), "{bad:?} as a suffix");
        }
    }

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
