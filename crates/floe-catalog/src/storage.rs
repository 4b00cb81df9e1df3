//! The warehouse's storage: **one interface** for everything floe does to table files itself —
//! list, read (whole and bounded, or a byte range), durable put, make durable, delete — used by
//! the catalog (metadata files, purge), the sinks (partition folders, a failed attempt's files)
//! and lookups (Parquet footers and pages). Nothing else touches table data with `std::fs`,
//! `tokio::fs` or `remove_dir_all`. Writers that go through iceberg's `FileIO` (Parquet data
//! files, manifests, metadata files) call [`Storage::sync`] on what they wrote before the catalog
//! points at it.
//!
//! Every location is checked against the [`Warehouse`] rule first (inside the warehouse after
//! normalising `..`, `//`, percent-encoding and links), so a location an outside engine put into
//! a manifest cannot make any of these calls reach outside it. Only **regular files** are read or
//! deleted: a FIFO, device, directory or link-to-directory is refused, never opened.
//!
//! [`LocalStorage`] is the implementation for local (`file://`) warehouses, and
//! [`S3Storage`](crate::s3::S3Storage) the one for `s3://` warehouses (see [`crate::s3`]). Its guarantees: [`put`] writes
//! a temporary file in the same folder, `fsync`s it, renames it into place and `fsync`s the
//! folder (and the parent of every folder it had to create); [`rename`] is `rename(2)` plus
//! `fsync` of both folders (the files sink publishes its staged files with it); [`sync`]
//! `fsync`s a file (or folder) and its parent folder; [`delete`] and [`remove_empty_dir`] never
//! remove a non-empty folder. Blocking calls run on tokio's blocking pool.
//!
//! [`put`]: Storage::put
//! [`rename`]: Storage::rename
//! [`sync`]: Storage::sync
//! [`delete`]: Storage::delete
//! [`remove_empty_dir`]: Storage::remove_empty_dir

use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use iceberg::spec::TableMetadata;
use iceberg::{Error, ErrorKind, Result};

use crate::location::{MAX_METADATA_BYTES, Warehouse, read_regular_file};

/// One file found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Its location (`file:///…`).
    pub location: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, in milliseconds since the Unix epoch, where the store says.
    pub modified_ms: Option<i64>,
}

/// Milliseconds since the Unix epoch of `t` (negative before it).
pub(crate) fn epoch_ms(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// What [`Storage::delete`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The regular file was deleted.
    Deleted,
    /// Nothing was there.
    Missing,
    /// Something other than a regular file is there; it was left alone.
    NotAFile,
}

/// The warehouse's storage (see the module docs).
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The location rule every call checks.
    fn warehouse(&self) -> &Warehouse;

    /// Whether the warehouse can be reached (on object storage: with the credentials given);
    /// the error says what the store answered. Called once at start.
    async fn check_access(&self) -> Result<()> {
        Ok(())
    }

    /// Every regular file below the folder `dir`, recursively (links are not followed); an empty
    /// list when `dir` does not exist.
    async fn list(&self, dir: &str) -> Result<Vec<FileEntry>>;

    /// The size of the regular file at `location`.
    async fn size(&self, location: &str) -> Result<u64>;

    /// The bytes `range` of the regular file at `location`; an error when the file is shorter.
    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes>;

    /// The whole regular file at `location`, refused when larger than `limit` (`kind` names the
    /// limit in the error).
    async fn read(&self, location: &str, limit: u64, kind: &'static str) -> Result<Bytes>;

    /// Writes `bytes` at `location` durably (atomically replacing what is there).
    async fn put(&self, location: &str, bytes: Bytes) -> Result<()>;

    /// Makes a file or folder someone else wrote at `location` durable, with its entry in the
    /// parent folder.
    async fn sync(&self, location: &str) -> Result<()>;

    /// Deletes the regular file at `location`.
    async fn delete(&self, location: &str) -> Result<Deleted>;

    /// Removes the folder at `location` if it is empty (and a folder, not a link); whether it did.
    async fn remove_empty_dir(&self, location: &str) -> Result<bool>;

    /// Moves the regular file at `from` to `to` durably, replacing what is at `to`: a reader of
    /// `to` sees the old content or the whole new one, never a part. An error when `from` is not
    /// a regular file. The default reads `from` whole, [`put`](Self::put)s it at `to` (atomic and
    /// durable), then deletes `from`; [`LocalStorage`] renames.
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let bytes = self.read(from, u64::MAX, "file to move").await?;
        self.put(to, bytes).await?;
        self.delete(from).await?;
        Ok(())
    }
}

/// Reads and parses the table metadata file at `location` through the warehouse storage: only
/// a regular file (an object, on object storage) inside the warehouse, at most
/// [`MAX_METADATA_BYTES`] (gzip-compressed `*.gz.metadata.json` after decompression too). On a
/// local warehouse the file is checked before it is opened, opened non-blocking, and read on a
/// blocking thread. Errors are [`ErrorKind::DataInvalid`] and quote `location` as given.
pub async fn read_metadata(storage: &dyn Storage, what: &str, location: &str) -> Result<TableMetadata> {
    storage.warehouse().check(what, location)?;
    let invalid = |why: String| {
        let shown: String = location.chars().take(300).collect();
        Error::new(ErrorKind::DataInvalid, format!("{what} {shown:?}: {why}"))
    };
    let bytes = storage
        .read(location, MAX_METADATA_BYTES, "metadata")
        .await
        .map_err(|e| invalid(e.message().to_string()))?;
    let mut bytes = bytes.to_vec();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut json = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut json)
            .map_err(|_| invalid("not valid gzip".to_string()))?;
        if json.len() as u64 > MAX_METADATA_BYTES {
            return Err(invalid(format!(
                "larger than the metadata limit of {MAX_METADATA_BYTES} bytes once decompressed"
            )));
        }
        bytes = json;
    }
    serde_json::from_slice::<TableMetadata>(&bytes).map_err(|e| invalid(format!("not valid table metadata: {e}")))
}

/// [`Storage`] on the local file system (see the module docs).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    warehouse: Warehouse,
}

impl LocalStorage {
    /// Storage confined to `warehouse`.
    pub fn new(warehouse: Warehouse) -> Self {
        Self { warehouse }
    }

    fn path(&self, what: &str, location: &str) -> Result<PathBuf> {
        self.warehouse.check_path(what, location)
    }
}

fn io_err(what: &str, location: &str) -> impl FnOnce(std::io::Error) -> Error {
    let message = format!("storage: {what} {location}");
    move |e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::DataInvalid
        } else {
            ErrorKind::Unexpected
        };
        Error::new(kind, message).with_source(e)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, "storage task failed").with_source(e))?
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `create_dir_all` whose new folders survive a crash: the parent of each folder it creates is
/// `fsync`ed after the creation.
fn create_dirs_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.is_dir() {
        missing.push(d);
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    for m in missing.into_iter().rev() {
        match std::fs::create_dir(m) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && m.is_dir() => continue,
            Err(e) => return Err(e),
        }
        if let Some(parent) = m.parent() {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for LocalStorage {
    fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    async fn list(&self, dir: &str) -> Result<Vec<FileEntry>> {
        let root = self.path("list", dir)?;
        let warehouse = self.warehouse.clone();
        let dir = dir.to_string();
        blocking(move || {
            let mut out = Vec::new();
            let mut dirs = vec![root];
            while let Some(d) = dirs.pop() {
                let entries = match std::fs::read_dir(&d) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("list", &dir)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_err("list", &dir))?;
                    // `file_type` does not follow links: a link is neither listed nor entered.
                    let ft = entry.file_type().map_err(io_err("list", &dir))?;
                    if ft.is_dir() {
                        dirs.push(entry.path());
                    } else if ft.is_file() {
                        let meta = entry.metadata().map_err(io_err("list", &dir))?;
                        out.push(FileEntry {
                            location: warehouse.to_location(&entry.path()),
                            size: meta.len(),
                            modified_ms: meta.modified().ok().map(epoch_ms),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.location.cmp(&b.location));
            Ok(out)
        })
        .await
    }

    async fn size(&self, location: &str) -> Result<u64> {
        let path = self.path("read", location)?;
        let location = location.to_string();
        blocking(move || {
            let m = std::fs::metadata(&path).map_err(io_err("stat", &location))?;
            if !m.is_file() {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    format!("storage: {location} is not a regular file"),
                ));
            }
            Ok(m.len())
        })
        .await
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path("read", location)?;
        let location = location.to_string();
        blocking(move || {
            let file = std::fs::File::open(&path).map_err(io_err("open", &location))?;
            if !file.metadata().map_err(io_err("stat", &location))?.is_file() {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    format!("storage: {location} is not a regular file"),
                ));
            }
            let len = usize::try_from(range.end.saturating_sub(range.start))
                .map_err(|_| Error::new(ErrorKind::DataInvalid, "storage: range too large"))?;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, range.start)
                .map_err(io_err("read", &location))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn read(&self, location: &str, limit: u64, kind: &'static str) -> Result<Bytes> {
        let path = self.path("read", location)?;
        let location = location.to_string();
        blocking(move || {
            read_regular_file(&path, limit, kind)
                .map(Bytes::from)
                .map_err(|why| Error::new(ErrorKind::DataInvalid, format!("{kind} {location}: {why}")))
        })
        .await
    }

    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        let path = self.path("write", location)?;
        let location = location.to_string();
        blocking(move || {
            let dir = path
                .parent()
                .ok_or_else(|| Error::new(ErrorKind::DataInvalid, format!("storage: {location} has no folder")))?;
            create_dirs_durably(dir).map_err(io_err("create folder for", &location))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                fsync_dir(dir)
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_err("write", &location)(e)
            })
        })
        .await
    }

    async fn sync(&self, location: &str) -> Result<()> {
        let path = self.path("sync", location)?;
        let location = location.to_string();
        blocking(move || {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", &location))?;
            if let Some(dir) = path.parent() {
                fsync_dir(dir).map_err(io_err("fsync the folder of", &location))?;
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, location: &str) -> Result<Deleted> {
        let path = self.path("delete", location)?;
        let location = location.to_string();
        blocking(move || match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => match std::fs::remove_file(&path) {
                Ok(()) => Ok(Deleted::Deleted),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Deleted::Missing),
                Err(e) => Err(io_err("delete", &location)(e)),
            },
            Ok(_) => Ok(Deleted::NotAFile),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Deleted::Missing),
            Err(e) => Err(io_err("delete", &location)(e)),
        })
        .await
    }

    async fn remove_empty_dir(&self, location: &str) -> Result<bool> {
        let path = self.path("remove folder", location)?;
        blocking(move || {
            // `remove_dir` removes only an empty folder; a link to one is not a folder here.
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir());
            Ok(is_dir && std::fs::remove_dir(&path).is_ok())
        })
        .await
    }

    /// `rename(2)` (atomic), then `fsync` of both folders; new folders of `to` are made durable.
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let src = self.path("move", from)?;
        let dst = self.path("move to", to)?;
        let (from, to) = (from.to_string(), to.to_string());
        blocking(move || {
            match std::fs::symlink_metadata(&src) {
                Ok(m) if m.file_type().is_file() => {}
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::DataInvalid,
                        format!("storage: {from} is not a regular file"),
                    ));
                }
                Err(e) => return Err(io_err("move", &from)(e)),
            }
            let dir = dst
                .parent()
                .ok_or_else(|| Error::new(ErrorKind::DataInvalid, format!("storage: {to} has no folder")))?;
            create_dirs_durably(dir).map_err(io_err("create folder for", &to))?;
            std::fs::rename(&src, &dst).map_err(io_err("move to", &to))?;
            fsync_dir(dir).map_err(io_err("fsync the folder of", &to))?;
            if let Some(src_dir) = src.parent() {
                fsync_dir(src_dir).map_err(io_err("fsync the folder of", &from))?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, LocalStorage, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = dir.path().join("wh");
        std::fs::create_dir_all(&wh).expect("mkdir");
        let uri = format!("file://{}", wh.display());
        let storage = LocalStorage::new(Warehouse::new(&uri).expect("warehouse"));
        (dir, storage, uri)
    }

    #[tokio::test]
    async fn put_read_list_delete_inside_the_warehouse() {
        let (_dir, s, wh) = setup();
        let a = format!("{wh}/ns/t/data/a.parquet");
        s.put(&a, Bytes::from_static(b"0123456789")).await.expect("put");
        assert_eq!(s.size(&a).await.expect("size"), 10);
        assert_eq!(&s.read_range(&a, 2..5).await.expect("range")[..], b"234");
        assert!(s.read_range(&a, 8..12).await.is_err(), "past the end");
        assert_eq!(&s.read(&a, 10, "test").await.expect("read")[..], b"0123456789");
        assert!(s.read(&a, 9, "test").await.is_err(), "over the limit");
        s.sync(&a).await.expect("sync");
        let listed = s.list(&format!("{wh}/ns")).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].location.as_str(), listed[0].size), (a.as_str(), 10));
        let age = chrono::Utc::now().timestamp_millis() - listed[0].modified_ms.expect("local files have an mtime");
        assert!((0..60_000).contains(&age), "just written, but {age} ms old");
        assert!(s.list(&format!("{wh}/none")).await.expect("list missing").is_empty());
        assert!(!s.remove_empty_dir(&format!("{wh}/ns/t/data")).await.expect("rmdir"));
        assert_eq!(s.delete(&a).await.expect("delete"), Deleted::Deleted);
        assert_eq!(s.delete(&a).await.expect("delete again"), Deleted::Missing);
        assert!(s.remove_empty_dir(&format!("{wh}/ns/t/data")).await.expect("rmdir"));
    }

    #[tokio::test]
    async fn rename_moves_a_file_into_new_folders_and_refuses_outside() {
        let (dir, s, wh) = setup();
        let a = format!("{wh}/_staging/x/00000.json");
        let b = format!("{wh}/year=2026/month=01/f.json");
        s.put(&a, Bytes::from_static(b"abc")).await.expect("put");
        s.rename(&a, &b).await.expect("rename");
        assert_eq!(&s.read(&b, 10, "test").await.expect("read")[..], b"abc");
        assert!(s.size(&a).await.is_err(), "the source is gone");
        assert!(s.rename(&a, &b).await.is_err(), "a missing source is an error");
        let outside = format!("file://{}", dir.path().join("out.json").display());
        assert!(s.rename(&b, &outside).await.is_err());
        assert!(s.rename(&b, &format!("{wh}/../out.json")).await.is_err());
        assert_eq!(&s.read(&b, 10, "test").await.expect("still there")[..], b"abc");
        assert!(
            s.rename(&format!("{wh}/year=2026"), &format!("{wh}/d")).await.is_err(),
            "a folder"
        );
    }

    #[tokio::test]
    async fn nothing_outside_the_warehouse_nor_other_than_regular_files() {
        let (dir, s, wh) = setup();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"x").expect("write");
        let out = format!("file://{}", outside.display());
        for loc in [out.clone(), format!("{wh}/../secret"), format!("{wh}/%2E%2E/secret")] {
            assert!(s.read(&loc, 10, "test").await.is_err(), "{loc}");
            assert!(s.delete(&loc).await.is_err(), "{loc}");
            assert!(s.put(&loc, Bytes::from_static(b"y")).await.is_err(), "{loc}");
        }
        assert_eq!(std::fs::read(&outside).expect("read"), b"x");
        // A link inside the warehouse to a file outside is refused like the file itself.
        let link = dir.path().join("wh").join("link");
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        assert!(s.read(&format!("{wh}/link"), 10, "test").await.is_err());
        // A folder is not deleted as a file; a folder with only folders lists nothing.
        std::fs::create_dir_all(dir.path().join("wh/d/e")).expect("mkdir");
        assert_eq!(
            s.delete(&format!("{wh}/d")).await.expect("delete dir"),
            Deleted::NotAFile
        );
        let listed = s.list(&format!("{wh}/d")).await.expect("list");
        assert!(listed.is_empty(), "{listed:?}");
        assert!(s.read(&format!("{wh}/d"), 10, "test").await.is_err());
    }
}
