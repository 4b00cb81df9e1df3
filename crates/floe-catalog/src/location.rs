//! Where the catalog may point, read and delete: **only inside its warehouse**.
//!
//! Every location a client hands the catalog — a table `location` on create or stage-create, a
//! `set-location` in a commit, the `write.*.path` table properties, a namespace `location`, a
//! metadata file to register, a snapshot's manifest list or a statistics file — goes through
//! [`Warehouse::check`] before anything is written or read:
//!
//! 1. the scheme: `file:///abs`, `file:/abs` or a plain absolute path (a `file://host/…` URI is
//!    refused: iceberg's local storage would read it as `/host/…`, other engines as a host);
//! 2. the path is normalised twice — as written (what floe's own storage opens) and with URL
//!    percent-encoding decoded (what PyIceberg, DuckDB or Spark open) — dropping `.` and empty
//!    segments (`//`) and resolving `..` lexically;
//! 3. symbolic links: the longest existing prefix of each form is canonicalised (and a dangling
//!    link is refused), so a link inside the warehouse pointing out of it does not count as inside;
//! 4. both forms must lie strictly below the canonical warehouse root.
//!
//! The location stored is the normalised form, so `..` never reaches the filesystem. A refusal
//! is [`ErrorKind::DataInvalid`] (REST 400) that names the rule and quotes the location as the
//! client sent it — never a resolved host path.
//!
//! [`read_metadata`](crate::storage::read_metadata) reads a metadata file the same way: only a regular file inside the
//! warehouse, at most [`MAX_METADATA_BYTES`], checked before it is opened (a FIFO, a device or a
//! directory is never opened; the open is non-blocking besides) and read on a blocking thread,
//! off the async runtime.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use iceberg::{Error, ErrorKind, Result};

/// The largest table metadata file the catalog reads (64 MiB, after gzip decompression too): a
/// metadata file of a healthy table is kilobytes to a few megabytes.
pub const MAX_METADATA_BYTES: u64 = 64 * 1024 * 1024;

/// The rule, as error messages quote it.
pub const LOCATION_RULE: &str = "locations must be file:// URIs or absolute paths (s3:// URIs in its bucket, for an s3:// warehouse) strictly inside the catalog's warehouse \
     (after resolving '.', '..', '//', %-encoding and symbolic links)";

/// Table properties that name where files are written; they follow the location rule too.
pub const PATH_PROPERTIES: &[&str] = &[
    "write.data.path",
    "write.metadata.path",
    "write.object-storage.path",
    "write.folder-storage.path",
];

/// The warehouse a catalog is confined to.
#[derive(Debug, Clone)]
pub struct Warehouse {
    /// The warehouse URI as configured, without a trailing `/`.
    uri: String,
    root: Root,
}

/// Where a warehouse is.
#[derive(Debug, Clone)]
enum Root {
    /// A local folder: its path, lexically normalised.
    Local(PathBuf),
    /// `s3://bucket/prefix`: the bucket and the key prefix (`""` for the whole bucket, else
    /// normalised segments joined by `/`, no leading or trailing `/`).
    Object { bucket: String, prefix: String },
}

/// Whether `b` is a bucket name S3 accepts (3–63 of `a-z 0-9 . -`, starting and ending with a
/// letter or digit).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Lexical normalisation of an object key below the bucket (`a/./b//../c` → `a/c`); the key as
/// `/`-joined segments without a leading `/`.
fn normalize_key(key: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

fn refuse(what: &str, given: &str, why: &str) -> Error {
    let shown: String = given.chars().take(300).collect();
    Error::new(
        ErrorKind::DataInvalid,
        format!("{what} {shown:?} is refused: {why}; {LOCATION_RULE}"),
    )
}

/// Lexical normalisation of an absolute path: `.` and empty segments dropped, `..` applied.
fn normalize(path: &str) -> Option<PathBuf> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The path part of a local location: `file:///p`, `file:/p` or `/p`.
fn path_part(location: &str) -> std::result::Result<&str, &'static str> {
    if let Some(rest) = location.strip_prefix("file://") {
        if rest.starts_with('/') {
            Ok(rest)
        } else {
            Err("a file:// URI with a host is not a local path")
        }
    } else if let Some(rest) = location.strip_prefix("file:") {
        if rest.starts_with('/') {
            Ok(rest)
        } else {
            Err("not an absolute path")
        }
    } else if location.starts_with('/') {
        Ok(location)
    } else if location.contains("://") {
        Err("only local (file://) locations are supported by this catalog")
    } else {
        Err("not an absolute path")
    }
}

/// `path` with its longest existing prefix canonicalised (symbolic links resolved). A dangling
/// link or an unreadable prefix is an error.
fn resolve_links(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut existing = path.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(canon) => {
                let mut out = canon;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(&existing).is_ok() {
                    return Err("it goes through a dangling symbolic link");
                }
                let Some(name) = existing.file_name() else {
                    return Err("no part of it exists");
                };
                rest.push(name.to_os_string());
                if !existing.pop() {
                    return Err("no part of it exists");
                }
            }
            Err(_) => return Err("it cannot be resolved"),
        }
    }
}

impl Warehouse {
    /// The warehouse of `uri`: `file:///abs`, an absolute path, or `s3://bucket[/prefix]`.
    pub fn new(uri: &str) -> Result<Self> {
        let uri = uri.trim_end_matches('/').to_string();
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let unsupported =
                |why: &str| Error::new(ErrorKind::FeatureUnsupported, format!("warehouse {uri:?}: {why}"));
            if !valid_bucket(bucket) {
                return Err(unsupported(
                    "the bucket name must be 3-63 characters of a-z, 0-9, '.' and '-'",
                ));
            }
            if prefix
                .chars()
                .any(|c| c.is_control() || c == '?' || c == '#' || c == '%')
            {
                return Err(unsupported(
                    "the key prefix must not hold control characters, '?', '#' or '%'",
                ));
            }
            let normal = normalize_key(prefix);
            if normal != prefix {
                return Err(unsupported("the key prefix must not hold '.', '..' or empty segments"));
            }
            let bucket = bucket.to_string();
            return Ok(Self {
                uri,
                root: Root::Object { bucket, prefix: normal },
            });
        }
        let root = path_part(&uri)
            .ok()
            .and_then(normalize)
            .filter(|p| p.parent().is_some())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::FeatureUnsupported,
                    format!(
                        "warehouse {uri:?}: a warehouse is a local folder below / (file:///path or /path) or s3://bucket[/prefix]"
                    ),
                )
            })?;
        Ok(Self {
            uri,
            root: Root::Local(root),
        })
    }

    /// The warehouse URI as configured.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The warehouse's local path; `None` for an object-store warehouse.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.root {
            Root::Local(p) => Some(p),
            Root::Object { .. } => None,
        }
    }

    /// The bucket of an `s3://` warehouse.
    pub fn bucket(&self) -> Option<&str> {
        match &self.root {
            Root::Object { bucket, .. } => Some(bucket),
            Root::Local(_) => None,
        }
    }

    /// The key prefix of an `s3://` warehouse (`""` for a whole bucket).
    pub fn object_prefix(&self) -> Option<&str> {
        match &self.root {
            Root::Object { prefix, .. } => Some(prefix),
            Root::Local(_) => None,
        }
    }

    fn local(&self) -> std::result::Result<&Path, &'static str> {
        self.local_root().ok_or("the warehouse is not a local folder")
    }

    fn canonical_root(&self) -> std::result::Result<PathBuf, &'static str> {
        resolve_links(self.local()?)
    }

    /// `path` (normalised, absolute) resolved, if strictly below the warehouse root.
    fn inside(&self, path: &Path) -> std::result::Result<PathBuf, &'static str> {
        let root = self.canonical_root()?;
        let resolved = resolve_links(path)?;
        if resolved != root && resolved.starts_with(&root) {
            Ok(resolved)
        } else {
            Err("it is not inside the warehouse")
        }
    }

    /// Checks a location a client gave for `what` (for messages: `"location"`,
    /// `"metadata-location"`, …) and answers its normalised form, in the warehouse's style
    /// (`file://…` when the warehouse is a `file:` URI).
    pub fn check(&self, what: &str, location: &str) -> Result<String> {
        match &self.root {
            Root::Local(_) => {
                let path = self.check_path(what, location)?;
                Ok(self.to_location(&path))
            }
            Root::Object { bucket, .. } => {
                let key = self.object_key(what, location)?;
                Ok(format!("s3://{bucket}/{key}"))
            }
        }
    }

    /// For an `s3://` warehouse: the normalised object key (below the bucket, no leading `/`)
    /// of a location a client gave, when it lies strictly below the warehouse prefix in the
    /// warehouse's bucket — as written and with %-encoding decoded (what other engines open).
    pub fn object_key(&self, what: &str, location: &str) -> Result<String> {
        let Root::Object { bucket, prefix } = &self.root else {
            return Err(refuse(what, location, "the warehouse is not on object storage"));
        };
        if location.chars().any(char::is_control) {
            return Err(refuse(what, location, "it contains control characters"));
        }
        let Some(rest) = location.strip_prefix("s3://") else {
            return Err(refuse(
                what,
                location,
                "not an s3:// location in the warehouse's bucket",
            ));
        };
        let (b, key) = rest.split_once('/').unwrap_or((rest, ""));
        if b != bucket {
            return Err(refuse(what, location, "it is not in the warehouse's bucket"));
        }
        if key.contains(['?', '#']) {
            return Err(refuse(what, location, "it contains '?' or '#'"));
        }
        let decoded = percent_decode(key).ok_or_else(|| refuse(what, location, "its %-encoding is malformed"))?;
        if decoded.chars().any(char::is_control) {
            return Err(refuse(what, location, "it contains encoded control characters"));
        }
        let as_written = normalize_key(key);
        let below = |k: &str| {
            if prefix.is_empty() {
                !k.is_empty()
            } else {
                k.strip_prefix(prefix.as_str()).is_some_and(|r| r.starts_with('/'))
            }
        };
        if !below(&as_written) || !below(&normalize_key(&decoded)) {
            return Err(refuse(what, location, "it is not inside the warehouse"));
        }
        Ok(as_written)
    }

    /// Like [`check`](Self::check), answering the normalised local path.
    pub fn check_path(&self, what: &str, location: &str) -> Result<PathBuf> {
        if location.chars().any(char::is_control) {
            return Err(refuse(what, location, "it contains control characters"));
        }
        let raw = path_part(location).map_err(|why| refuse(what, location, why))?;
        let decoded = percent_decode(raw).ok_or_else(|| refuse(what, location, "its %-encoding is malformed"))?;
        if decoded.chars().any(char::is_control) {
            return Err(refuse(what, location, "it contains encoded control characters"));
        }
        let as_written = normalize(raw).ok_or_else(|| refuse(what, location, "not an absolute path"))?;
        let as_decoded = normalize(&decoded).ok_or_else(|| refuse(what, location, "not an absolute path"))?;
        for p in [&as_written, &as_decoded] {
            self.inside(p).map_err(|why| refuse(what, location, why))?;
        }
        Ok(as_written)
    }

    /// A local path as a location in the warehouse's style.
    pub fn to_location(&self, path: &Path) -> String {
        if self.uri.starts_with("file:") {
            format!("file://{}", path.display())
        } else {
            path.display().to_string()
        }
    }

    /// Whether `location` lies (after normalisation, and symbolic links on a local warehouse)
    /// strictly below the folder `dir` (a checked location inside the warehouse); answers the
    /// normalised location to act on.
    pub fn below(&self, dir: &str, location: &str) -> Option<String> {
        match &self.root {
            Root::Object { .. } => {
                let dir = self.check("folder", dir).ok()?;
                let loc = self.check("location", location).ok()?;
                loc.strip_prefix(dir.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                    .then_some(loc)
            }
            Root::Local(_) => {
                let dir = self.check_path("folder", dir).ok()?;
                let raw = path_part(location).ok()?;
                let decoded = percent_decode(raw)?;
                let as_written = normalize(raw)?;
                let as_decoded = normalize(&decoded)?;
                let dir = resolve_links(&dir).ok()?;
                for p in [&as_written, &as_decoded] {
                    let resolved = resolve_links(p).ok()?;
                    if resolved == dir || !resolved.starts_with(&dir) {
                        return None;
                    }
                }
                Some(self.to_location(&as_written))
            }
        }
    }
}

/// Reads a whole regular file of at most `limit` bytes, checking its type before opening it (a
/// FIFO, device or directory is never opened) and again on the opened handle. The error is the
/// reason, without the path (callers quote the location the client gave).
pub(crate) fn read_regular_file(path: &Path, limit: u64, kind: &str) -> std::result::Result<Vec<u8>, String> {
    let not_regular = || "not a regular file".to_string();
    let too_big = || format!("larger than the {kind} limit of {limit} bytes");
    // `metadata` follows links (a link's target was checked to be inside the warehouse too).
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        _ => "cannot be read".to_string(),
    })?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > limit {
        return Err(too_big());
    }
    let file = open_nonblocking(path).map_err(|_| "cannot be opened".to_string())?;
    // The file may have been replaced between the check and the open: check what was opened.
    let opened = file.metadata().map_err(|_| "cannot be read".to_string())?;
    if !opened.is_file() {
        return Err(not_regular());
    }
    let mut bytes = Vec::with_capacity(opened.len().min(limit) as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| "cannot be read".to_string())?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize("/a/./b//c/../d/").unwrap(), PathBuf::from("/a/b/d"));
        assert_eq!(normalize("/../../x").unwrap(), PathBuf::from("/x"));
        assert!(normalize("rel/x").is_none());
        assert_eq!(percent_decode("/a%2e%2E/%2F").unwrap(), "/a../".to_string() + "/");
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%2").is_none());
    }

    #[test]
    fn inside_and_outside() {
        let dir = tempfile::tempdir().unwrap();
        let wh_path = dir.path().join("wh");
        std::fs::create_dir_all(wh_path.join("ns")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), wh_path.join("ns/escape")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("missing"), wh_path.join("ns/dangling")).unwrap();
        let wh = Warehouse::new(&format!("file://{}", wh_path.display())).unwrap();
        let root = wh_path.display().to_string();
        let t = format!("file://{root}/ns/t");
        for (given, want) in [
            (format!("file://{root}/ns/t"), t.clone()),
            (format!("file:{root}/ns/t"), t.clone()),
            (format!("{root}/ns/t"), t.clone()),
            (format!("file://{root}//ns/./t/"), t.clone()),
            (format!("file://{root}/ns/x/../t"), t.clone()),
            (
                format!("file://{root}/new/deeper/t"),
                format!("file://{root}/new/deeper/t"),
            ),
        ] {
            assert_eq!(wh.check("location", &given).unwrap(), want, "{given}");
        }
        for bad in [
            format!("file://{root}"),
            format!("file://{root}/"),
            format!("file://{root}/.."),
            format!("file://{root}/ns/../../outside"),
            format!("file://{root}/ns/%2e%2e/%2e%2e/outside"),
            format!("file://{root}/ns%2F..%2F..%2Foutside"),
            format!("file://{root}/ns/escape/t"),
            format!("file://{root}/ns/dangling/t"),
            format!("file://localhost{root}/ns/t"),
            "s3://bucket/t".to_string(),
            "relative/t".to_string(),
            "/etc/passwd".to_string(),
            format!("file://{root}/ns/t\n"),
            format!("file://{root}/ns/%00t"),
            format!("file://{root}/ns/%zz"),
            format!("{root}-sibling/t"),
        ] {
            let e = wh.check("location", &bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DataInvalid, "{bad}");
            assert!(e.message().contains("strictly inside the catalog's warehouse"), "{e}");
            assert!(
                !e.message().contains(&dir.path().join("outside").display().to_string()) || bad.contains("outside"),
                "{e}"
            );
        }
    }

    #[test]
    fn object_store_warehouse() {
        let wh = Warehouse::new("s3://lake/floe/").unwrap();
        assert_eq!(wh.uri(), "s3://lake/floe");
        assert_eq!(wh.bucket(), Some("lake"));
        assert_eq!(wh.object_prefix(), Some("floe"));
        assert!(wh.local_root().is_none());
        for (given, want) in [
            ("s3://lake/floe/ns/t", "s3://lake/floe/ns/t"),
            ("s3://lake/floe//ns/./t/", "s3://lake/floe/ns/t"),
            ("s3://lake/floe/ns/x/../t", "s3://lake/floe/ns/t"),
        ] {
            assert_eq!(wh.check("location", given).unwrap(), want, "{given}");
        }
        for bad in [
            "s3://lake/floe",
            "s3://lake/floe/",
            "s3://lake/floe/..",
            "s3://lake/floe/../other/t",
            "s3://lake/floe/%2E%2E/other/t",
            "s3://lake/floex/t",
            "s3://lake/other/t",
            "s3://other/floe/t",
            "s3://lake/floe/t?x=1",
            "s3://lake/floe/t#x",
            "s3://lake/floe/a\nb",
            "s3://lake/floe/a%0Ab",
            "s3://lake/floe/%zz",
            "file:///lake/floe/t",
            "/lake/floe/t",
            "gs://lake/floe/t",
        ] {
            let err = wh.check("location", bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DataInvalid, "{bad}");
        }
        assert!(wh.check_path("location", "s3://lake/floe/t").is_err());
        assert_eq!(
            wh.below("s3://lake/floe/ns/t", "s3://lake/floe/ns/t/data/a.parquet")
                .as_deref(),
            Some("s3://lake/floe/ns/t/data/a.parquet")
        );
        assert!(wh.below("s3://lake/floe/ns/t", "s3://lake/floe/ns/t2/a").is_none());
        assert!(wh.below("s3://lake/floe/ns/t", "s3://lake/floe/ns/t/../u/a").is_none());
        // A whole bucket.
        let all = Warehouse::new("s3://lake").unwrap();
        assert_eq!(all.check("location", "s3://lake/ns/t").unwrap(), "s3://lake/ns/t");
        assert!(all.check("location", "s3://lake/").is_err());
        for bad in [
            "s3://",
            "s3://A_B",
            "s3://ab",
            "s3://lake/a/../b",
            "s3://lake/a//b",
            "s3://lake/%41",
        ] {
            assert!(Warehouse::new(bad).is_err(), "{bad}");
        }
    }
}
