//! A fault-injecting iceberg `Storage`: the local filesystem storage of iceberg 0.10.1, except
//! that the k-th *write operation* from the moment a fault is armed fails with an injected OS
//! error (ENOSPC or EIO), and the k-th `delete` can fail likewise.
//!
//! Write operations, numbered in the order they happen:
//! - `Storage::write` (a whole file at once: table metadata JSON). A failing one leaves a torn
//!   file (the first half of the bytes) behind, as a full disk would.
//! - `Storage::writer` (opening a streamed file: Parquet, manifest, manifest list). A failing
//!   one creates nothing.
//! - `FileWrite::close` of a streamed file (its final flush + fsync). A failing one leaves the
//!   bytes written so far on disk.
//!
//! Every operation is logged with its path, so a test can tell which phase a fault hit.
//!
//! A hook can also run just before each table metadata file (`*.metadata.json`) is written: the
//! catalog writes it between loading the table and swapping its pointer, so a hook that commits
//! through another catalog instance makes that commit lose the compare-and-swap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use iceberg::io::{
    FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, LocalFsStorage, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// `ENOSPC`: no space left on device.
pub const ENOSPC: i32 = 28;
/// `EIO`: input/output error.
pub const EIO: i32 = 5;

/// What kind of write operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `Storage::write` of a whole file.
    WriteAll,
    /// `Storage::writer`: a streamed file is opened.
    Open,
    /// `FileWrite::close`: a streamed file is completed.
    Close,
}

/// One logged write operation.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Its number (1-based, since the storage was created).
    pub n: usize,
    /// What it was.
    pub op: Op,
    /// The file.
    pub path: String,
    /// Whether the fault fired on it.
    pub failed: bool,
}

/// What runs before a metadata file is written.
pub type Hook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Shared fault plan and log; one per test, shared by every storage the factory builds.
#[derive(Default)]
pub struct Faults {
    writes: AtomicUsize,
    fail_write: AtomicUsize,
    deletes: AtomicUsize,
    fail_delete: AtomicUsize,
    errno: AtomicUsize,
    log: Mutex<Vec<Logged>>,
    before_metadata_write: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("writes", &self.writes)
            .field("deletes", &self.deletes)
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// Fails the `k`-th write operation from now (1 = the next one) with `errno`.
    pub fn fail_write_in(&self, k: usize, errno: i32) {
        self.errno.store(errno as usize, Ordering::SeqCst);
        self.fail_write
            .store(self.writes.load(Ordering::SeqCst) + k, Ordering::SeqCst);
    }

    /// Fails the `k`-th `delete` from now with `errno`.
    pub fn fail_delete_in(&self, k: usize, errno: i32) {
        self.errno.store(errno as usize, Ordering::SeqCst);
        self.fail_delete
            .store(self.deletes.load(Ordering::SeqCst) + k, Ordering::SeqCst);
    }

    /// Runs `hook` (to completion) before every later write of a `*.metadata.json` file; `None`
    /// removes it.
    pub fn before_metadata_write(&self, hook: Option<Hook>) {
        *self.before_metadata_write.lock().expect("hook") = hook;
    }

    /// Disarms every pending fault.
    pub fn disarm(&self) {
        self.fail_write.store(0, Ordering::SeqCst);
        self.fail_delete.store(0, Ordering::SeqCst);
    }

    /// Write operations so far.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// The write operations numbered above `after`.
    pub fn log_since(&self, after: usize) -> Vec<Logged> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.n > after)
            .cloned()
            .collect()
    }

    /// Numbers the next write operation; `Err` when the fault fires on it.
    fn next_write(&self, op: Op, path: &str) -> Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let failed = self.fail_write.load(Ordering::SeqCst) == n;
        self.log.lock().expect("log").push(Logged {
            n,
            op,
            path: path.to_string(),
            failed,
        });
        if failed { Err(self.injected(op, path)) } else { Ok(()) }
    }

    fn next_delete(&self, path: &str) -> Result<()> {
        let n = self.deletes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_delete.load(Ordering::SeqCst) == n {
            return Err(self.injected("delete", path));
        }
        Ok(())
    }

    fn injected(&self, what: impl std::fmt::Debug, path: &str) -> Error {
        let errno = self.errno.load(Ordering::SeqCst) as i32;
        let io = std::io::Error::from_raw_os_error(errno);
        Error::new(ErrorKind::Unexpected, format!("injected fault: {what:?} {path}: {io}")).with_source(io)
    }
}

/// The local filesystem storage with [`Faults`] applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultyStorage {
    #[serde(skip)]
    faults: Arc<Faults>,
    inner: LocalFsStorage,
}

#[async_trait]
#[typetag::serde(name = "floe-test-faulty-storage")]
impl Storage for FaultyStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        self.inner.exists(path).await
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        self.inner.metadata(path).await
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        self.inner.read(path).await
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        self.inner.reader(path).await
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        if path.ends_with(".metadata.json") {
            let hook = self.faults.before_metadata_write.lock().expect("hook").clone();
            if let Some(hook) = hook {
                hook().await;
            }
        }
        if let Err(e) = self.faults.next_write(Op::WriteAll, path) {
            // A torn file, as a full disk leaves it.
            self.inner.write(path, bs.slice(..bs.len() / 2)).await?;
            return Err(e);
        }
        self.inner.write(path, bs).await
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        self.faults.next_write(Op::Open, path)?;
        Ok(Box::new(FaultyWrite {
            inner: self.inner.writer(path).await?,
            faults: self.faults.clone(),
            path: path.to_string(),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.faults.next_delete(path)?;
        self.inner.delete(path).await
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        self.inner.delete_prefix(path).await
    }

    async fn delete_stream(&self, paths: BoxStream<'static, String>) -> Result<()> {
        self.inner.delete_stream(paths).await
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// A streamed file whose `close` can fail.
struct FaultyWrite {
    inner: Box<dyn FileWrite>,
    faults: Arc<Faults>,
    path: String,
}

#[async_trait]
impl FileWrite for FaultyWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.inner.write(bs).await
    }

    async fn close(&mut self) -> Result<()> {
        if let Err(e) = self.faults.next_write(Op::Close, &self.path) {
            // The descriptor is released; the fsync "failed".
            let _ = self.inner.close().await;
            return Err(e);
        }
        self.inner.close().await
    }
}

/// Builds [`FaultyStorage`]s sharing one [`Faults`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultyStorageFactory {
    #[serde(skip)]
    faults: Arc<Faults>,
}

#[typetag::serde(name = "floe-test-faulty-storage-factory")]
impl StorageFactory for FaultyStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(FaultyStorage {
            faults: self.faults.clone(),
            inner: LocalFsStorage::new(),
        }))
    }
}

/// A `FileIO` over the local filesystem whose faults `faults` controls.
pub fn faulty_file_io(faults: Arc<Faults>) -> FileIO {
    FileIOBuilder::new(Arc::new(FaultyStorageFactory { faults })).build()
}
