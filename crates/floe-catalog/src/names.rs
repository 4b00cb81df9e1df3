//! The one rule for table names and namespace levels, checked in one place for every entry point
//! that *creates* a name: the REST API (create, stage-create, register, rename, create
//! namespace), floe's config (`table = "analytics.events"`) and [`FloeCatalog`] itself, so the
//! Rust API is as safe as the HTTP one.
//!
//! A name becomes a directory of the warehouse (`<warehouse>/<level>/…/<table>`), so the rule is
//! the one that keeps a name a single, harmless path segment on every engine that reads it:
//!
//! - 1 to [`MAX_NAME_BYTES`] bytes of UTF-8;
//! - letters and digits (any script), and `_ - . $ @ + = ~ !` — no `/`, `\`, `%`, `:`, `#`, `?`,
//!   `*`, quotes, whitespace, control characters or NUL;
//! - not `.` or `..`.
//!
//! A `.` *inside* a namespace level (`new.db`) is legal, as in the REST API; the catalog escapes
//! it where the JDBC layout joins levels with dots (see [`encode_namespace`]).
//!
//! Lookups (load, drop, exists) do not apply the rule, so a table another catalog client created
//! under a name outside it stays reachable and droppable.
//!
//! [`FloeCatalog`]: crate::FloeCatalog

use iceberg::{Error, ErrorKind, NamespaceIdent, Result, TableIdent};

/// The longest table name or namespace level, in bytes (the common file-name limit, and the
/// JDBC layout's `VARCHAR(255)`).
pub const MAX_NAME_BYTES: usize = 255;

/// The most levels a namespace may have.
pub const MAX_NAMESPACE_LEVELS: usize = 16;

/// The punctuation a name may contain besides letters and digits.
pub const NAME_PUNCTUATION: &str = "_-.$@+=~!";

/// The rule, as error messages quote it.
pub const NAME_RULE: &str =
    "names are 1 to 255 bytes of letters, digits and _ - . $ @ + = ~ !, and not \".\" or \"..\"";

fn check(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        // Quote at most a prefix of what the client sent: a 1 MB name is not echoed back.
        let shown: String = name.chars().take(64).collect();
        let ellipsis = if shown.len() < name.len() { "…" } else { "" };
        Err(Error::new(
            ErrorKind::DataInvalid,
            format!("invalid {what} {shown:?}{ellipsis}: {why} ({NAME_RULE})"),
        ))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad(&format!("{} bytes, more than {MAX_NAME_BYTES}", name.len()));
    }
    if name == "." || name == ".." {
        return bad("a path segment that means a directory");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || NAME_PUNCTUATION.contains(*c)))
    {
        return bad(&format!("character {c:?} is not allowed"));
    }
    Ok(())
}

/// Checks a table name against the rule.
pub fn validate_table_name(name: &str) -> Result<()> {
    check("table name", name)
}

/// Checks one namespace level against the rule.
pub fn validate_namespace_level(level: &str) -> Result<()> {
    check("namespace level", level)
}

/// Checks every level of a namespace (and their count, 1 to [`MAX_NAMESPACE_LEVELS`]).
pub fn validate_namespace(namespace: &NamespaceIdent) -> Result<()> {
    if namespace.len() > MAX_NAMESPACE_LEVELS {
        return Err(Error::new(
            ErrorKind::DataInvalid,
            format!(
                "invalid namespace: {} levels, more than {MAX_NAMESPACE_LEVELS}",
                namespace.len()
            ),
        ));
    }
    namespace.iter().try_for_each(|l| validate_namespace_level(l))
}

/// Checks a table identifier: its namespace and its name.
pub fn validate_table_ident(ident: &TableIdent) -> Result<()> {
    validate_namespace(ident.namespace())?;
    validate_table_name(ident.name())
}

/// One namespace level as the JDBC layout's dot-joined column stores it: `%` becomes `%25` and
/// `.` becomes `%2E`, so a level containing a dot cannot be confused with two levels. A level
/// with neither character (every name floe's config allows, and the usual case) is stored
/// exactly as it is, as PyIceberg's `SqlCatalog` and Java's `JdbcCatalog` store it.
pub fn encode_level(level: &str) -> String {
    if !level.contains(['.', '%']) {
        return level.to_string();
    }
    level.replace('%', "%25").replace('.', "%2E")
}

/// Reverses [`encode_level`]. Only `%2E` / `%2e` and `%25` are decoded; any other `%` stays as
/// it is (a name written by another client).
pub fn decode_level(stored: &str) -> String {
    if !stored.contains('%') {
        return stored.to_string();
    }
    let mut out = String::with_capacity(stored.len());
    let mut rest = stored;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match tail.get(..3) {
            Some("%2E") | Some("%2e") => {
                out.push('.');
                rest = &tail[3..];
            }
            Some("%25") => {
                out.push('%');
                rest = &tail[3..];
            }
            _ => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A namespace as the JDBC layout's `table_namespace` / `namespace` column stores it: the
/// [encoded](encode_level) levels joined by `.`.
pub fn encode_namespace(namespace: &NamespaceIdent) -> String {
    namespace.iter().map(|l| encode_level(l)).collect::<Vec<_>>().join(".")
}

/// The levels of a stored namespace column value.
pub fn decode_namespace(stored: &str) -> Vec<String> {
    stored.split('.').map(decode_level).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in [
            "events",
            "new.db",
            "a-b_c",
            "Ünïcode",
            "名前",
            "x$1",
            "a@b+c=d~e!f",
            "...",
            ".hidden",
        ] {
            validate_table_name(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            validate_namespace_level(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "", ".", "..", "a/b", "/", "a\\b", "a\0b", "a\nb", "tab\t", "a b", "a%2Fb", "c:", "a#b", "a?b", "*", "'",
            "\"", &long,
        ] {
            let e = validate_table_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DataInvalid, "{bad:?}");
            assert!(e.message().contains("names are 1 to 255 bytes"), "{e}");
            assert!(e.message().len() < 400, "a long name is not echoed whole: {e}");
        }
        assert!(validate_table_name(&"a".repeat(MAX_NAME_BYTES)).is_ok());
        let deep = NamespaceIdent::from_vec(vec!["a".to_string(); MAX_NAMESPACE_LEVELS + 1]).unwrap();
        assert!(validate_namespace(&deep).is_err());
    }

    #[test]
    fn levels_with_dots_are_escaped_and_plain_ones_kept() {
        let ns = |v: &[&str]| NamespaceIdent::from_vec(v.iter().map(|s| s.to_string()).collect()).unwrap();
        assert_eq!(encode_namespace(&ns(&["analytics"])), "analytics");
        assert_eq!(encode_namespace(&ns(&["a", "b"])), "a.b");
        assert_eq!(encode_namespace(&ns(&["new.db"])), "new%2Edb");
        assert_eq!(encode_namespace(&ns(&["new.db", "x"])), "new%2Edb.x");
        assert_eq!(encode_namespace(&ns(&["50%", "a.b%2E"])), "50%25.a%2Eb%252E");
        for levels in [
            vec!["a"],
            vec!["a", "b"],
            vec!["new.db"],
            vec!["50%", "a.b%2E"],
            vec!["%", "%%2E", "."],
        ] {
            let n = ns(&levels);
            assert_eq!(decode_namespace(&encode_namespace(&n)), levels, "{levels:?}");
        }
        // A stray % written by another client is kept.
        assert_eq!(decode_level("a%zz%"), "a%zz%");
    }
}
