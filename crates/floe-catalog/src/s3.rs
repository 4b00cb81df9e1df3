//! Warehouses on S3-compatible object storage (`s3://bucket/prefix`): AWS S3, Cloudflare R2,
//! MinIO, Garage, s3s.
//!
//! Two clients share one set of [`S3Options`]: iceberg's `FileIO` (through
//! `iceberg-storage-opendal`, properties `s3.endpoint`, `s3.region`, `s3.access-key-id`,
//! `s3.secret-access-key`, `s3.session-token`, `s3.path-style-access`) writes and reads Parquet
//! data files, manifests and metadata, and [`S3Storage`] is floe's own [`Storage`] for the rest
//! (metadata reads, purge, lookups, a failed attempt's files, listing).
//!
//! **Credentials are never looked up behind the user's back.** Unless
//! [`S3Options::instance_credentials`] is set, both clients are told not to load `~/.aws`
//! configuration and not to ask the cloud instance-metadata address (`s3.disable-config-load`,
//! `s3.disable-ec2-metadata`): floe uses exactly the keys it was given (the caller resolves the
//! standard `AWS_*` environment variables into the options), and a test on loopback can never
//! reach 169.254.169.254.
//!
//! Durability on object storage: a `PUT` (or the completing request of a multipart upload, which
//! opendal uses for a large file) is counted durable only once the store answered it; S3's
//! read-after-write consistency makes the object visible to every reader from then on, so
//! [`Storage::sync`] has nothing left to do. An upload that fails or is interrupted never
//! becomes a visible object: a multipart upload's parts are not an object until it completes.
//! Object stores have no folders: [`Storage::remove_empty_dir`] answers `false` and a "folder"
//! is simply a key prefix ending in `/`.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use iceberg::io::{FileIO, FileIOBuilder};
use iceberg::{Error, ErrorKind, Result};
use iceberg_storage_opendal::OpenDalStorageFactory;
use opendal::Operator;

use crate::location::Warehouse;
use crate::storage::{Deleted, FileEntry, Storage};

/// How floe reaches an S3-compatible store (`[catalog.s3]` in floe's configuration).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// The endpoint URL (`http://127.0.0.1:9000`, `https://<account>.r2.cloudflarestorage.com`);
    /// `None`: AWS S3 for the region.
    pub endpoint: Option<String>,
    /// The region; `None`: `us-east-1` (R2 takes `auto`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted style
    /// (`bucket.endpoint/key`): MinIO, Garage and most self-hosted stores want it.
    pub path_style: bool,
    /// Let the client find credentials itself (`~/.aws`, the instance-metadata service) when
    /// none are given. Off by default: no request ever goes to the metadata address.
    pub instance_credentials: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("path_style", &self.path_style)
            .field("instance_credentials", &self.instance_credentials)
            .finish()
    }
}

/// The region used when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";

impl S3Options {
    /// The region in effect.
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or(DEFAULT_REGION)
    }

    /// The `FileIO` properties of these options (iceberg's `s3.*` keys), credentials included.
    pub fn file_io_props(&self) -> Vec<(String, String)> {
        let mut props = self.client_props();
        props.extend(self.credential_props());
        if !self.instance_credentials {
            props.push(("s3.disable-ec2-metadata".into(), "true".into()));
            props.push(("s3.disable-config-load".into(), "true".into()));
        }
        props
    }

    /// What a client needs besides credentials: endpoint, region, path style (what the REST
    /// catalog hands out).
    pub fn client_props(&self) -> Vec<(String, String)> {
        let mut props = vec![
            ("s3.region".to_string(), self.region().to_string()),
            ("s3.path-style-access".to_string(), self.path_style.to_string()),
        ];
        if let Some(e) = &self.endpoint {
            props.push(("s3.endpoint".into(), e.clone()));
        }
        props
    }

    /// The credential properties alone (for credential vending).
    pub fn credential_props(&self) -> Vec<(String, String)> {
        let mut props = Vec::new();
        if let Some(v) = &self.access_key_id {
            props.push(("s3.access-key-id".into(), v.clone()));
        }
        if let Some(v) = &self.secret_access_key {
            props.push(("s3.secret-access-key".into(), v.clone()));
        }
        if let Some(v) = &self.session_token {
            props.push(("s3.session-token".into(), v.clone()));
        }
        props
    }
}

/// iceberg's `FileIO` for an `s3://` warehouse.
pub fn s3_file_io(options: &S3Options) -> FileIO {
    FileIOBuilder::new(Arc::new(OpenDalStorageFactory::S3 {
        customized_credential_load: None,
    }))
    .with_props(options.file_io_props())
    .build()
}

/// [`Storage`] on an S3-compatible store (see the module docs).
#[derive(Clone)]
pub struct S3Storage {
    warehouse: Warehouse,
    bucket: String,
    /// For messages.
    endpoint: String,
    op: Operator,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("warehouse", &self.warehouse.uri())
            .finish()
    }
}

fn s3_err(what: &str, location: &str) -> impl FnOnce(opendal::Error) -> Error {
    let message = format!("storage: {what} {location}");
    move |e| {
        let kind = if e.kind() == opendal::ErrorKind::NotFound {
            ErrorKind::DataInvalid
        } else {
            ErrorKind::Unexpected
        };
        Error::new(kind, format!("{message}: {e}"))
    }
}

impl S3Storage {
    /// Storage confined to the `s3://` `warehouse`, reached with `options`.
    pub fn new(warehouse: Warehouse, options: &S3Options) -> Result<Self> {
        let bucket = warehouse
            .bucket()
            .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "S3 storage needs an s3:// warehouse"))?
            .to_string();
        let mut b = opendal::services::S3::default()
            .bucket(&bucket)
            .root("/")
            .region(options.region());
        if let Some(e) = &options.endpoint {
            b = b.endpoint(e);
        }
        if let Some(v) = &options.access_key_id {
            b = b.access_key_id(v);
        }
        if let Some(v) = &options.secret_access_key {
            b = b.secret_access_key(v);
        }
        if let Some(v) = &options.session_token {
            b = b.session_token(v);
        }
        if !options.path_style {
            b = b.enable_virtual_host_style();
        }
        if !options.instance_credentials {
            b = b.disable_ec2_metadata().disable_config_load();
        }
        let op = Operator::new(b)
            .map_err(|e| Error::new(ErrorKind::DataInvalid, format!("S3 warehouse {}: {e}", warehouse.uri())))?
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(3)
                    .with_min_delay(Duration::from_millis(100)),
            )
            .layer(opendal::layers::TimeoutLayer::new().with_timeout(Duration::from_secs(60)))
            .finish();
        let endpoint = options
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 in {}", options.region()));
        Ok(Self {
            warehouse,
            bucket,
            endpoint,
            op,
        })
    }

    fn key(&self, what: &str, location: &str) -> Result<String> {
        self.warehouse.object_key(what, location)
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    async fn check_access(&self) -> Result<()> {
        let prefix = match self.warehouse.object_prefix() {
            Some("") | None => String::new(),
            Some(p) => format!("{p}/"),
        };
        let what = format!("S3 warehouse {} (endpoint {})", self.warehouse.uri(), self.endpoint);
        let mut lister = self.op.lister_with(&prefix).await.map_err(s3_err("list", &what))?;
        lister.try_next().await.map_err(s3_err("list", &what))?;
        Ok(())
    }

    async fn list(&self, dir: &str) -> Result<Vec<FileEntry>> {
        let key = self.key("list", dir)?;
        let entries = self
            .op
            .list_with(&format!("{key}/"))
            .recursive(true)
            .await
            .map_err(s3_err("list", dir))?;
        let mut out: Vec<FileEntry> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| FileEntry {
                location: format!("s3://{}/{}", self.bucket, e.path().trim_start_matches('/')),
                size: e.metadata().content_length(),
                modified_ms: e
                    .metadata()
                    .last_modified()
                    .map(|t| crate::storage::epoch_ms(std::time::SystemTime::from(t))),
            })
            .collect();
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    async fn size(&self, location: &str) -> Result<u64> {
        let key = self.key("read", location)?;
        let meta = self.op.stat(&key).await.map_err(s3_err("stat", location))?;
        if !meta.is_file() {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("storage: {location} is not an object"),
            ));
        }
        Ok(meta.content_length())
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        let key = self.key("read", location)?;
        let want = range.end.saturating_sub(range.start);
        let bytes = self
            .op
            .read_with(&key)
            .range(range)
            .await
            .map_err(s3_err("read", location))?
            .to_bytes();
        if bytes.len() as u64 != want {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("storage: {location} is shorter than the range read"),
            ));
        }
        Ok(bytes)
    }

    async fn read(&self, location: &str, limit: u64, kind: &'static str) -> Result<Bytes> {
        let key = self.key("read", location)?;
        let meta = self.op.stat(&key).await.map_err(s3_err("stat", location))?;
        if !meta.is_file() {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("{kind} {location}: not an object"),
            ));
        }
        let too_big = || {
            Error::new(
                ErrorKind::DataInvalid,
                format!("{kind} {location}: larger than the {kind} limit of {limit} bytes"),
            )
        };
        if meta.content_length() > limit {
            return Err(too_big());
        }
        if meta.content_length() == 0 {
            return Ok(Bytes::new());
        }
        // Never more than the size checked against the limit, even if the object was replaced
        // since the stat (a shorter one is an error, a longer one is cut and fails to parse).
        let bytes = self
            .op
            .read_with(&key)
            .range(0..meta.content_length())
            .await
            .map_err(s3_err("read", location))?
            .to_bytes();
        if bytes.len() as u64 > limit {
            return Err(too_big());
        }
        Ok(bytes)
    }

    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        let key = self.key("write", location)?;
        self.op.write(&key, bytes).await.map_err(s3_err("write", location))?;
        Ok(())
    }

    async fn sync(&self, location: &str) -> Result<()> {
        // Durable once the store answered the upload (see the module docs); only the location
        // rule is left to check.
        self.key("sync", location).map(|_| ())
    }

    async fn delete(&self, location: &str) -> Result<Deleted> {
        let key = self.key("delete", location)?;
        match self.op.stat(&key).await {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(Deleted::NotAFile),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Deleted::Missing),
            Err(e) => return Err(s3_err("stat", location)(e)),
        }
        self.op.delete(&key).await.map_err(s3_err("delete", location))?;
        Ok(Deleted::Deleted)
    }

    async fn remove_empty_dir(&self, location: &str) -> Result<bool> {
        self.key("remove folder", location)?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> S3Options {
        S3Options {
            endpoint: Some("http://127.0.0.1:9".into()),
            access_key_id: Some("ak".into()),
            secret_access_key: Some("very-secret".into()),
            path_style: true,
            ..S3Options::default()
        }
    }

    #[test]
    fn no_metadata_address_unless_asked_and_secrets_only_where_meant() {
        let props: std::collections::HashMap<_, _> = opts().file_io_props().into_iter().collect();
        assert_eq!(props["s3.disable-ec2-metadata"], "true");
        assert_eq!(props["s3.disable-config-load"], "true");
        assert_eq!(props["s3.region"], DEFAULT_REGION);
        assert_eq!(props["s3.path-style-access"], "true");
        assert_eq!(props["s3.secret-access-key"], "very-secret");
        let asked = S3Options {
            instance_credentials: true,
            ..opts()
        };
        assert!(
            !asked
                .file_io_props()
                .iter()
                .any(|(k, _)| k == "s3.disable-ec2-metadata")
        );
        let client = opts().client_props();
        assert!(
            !client.iter().any(|(k, _)| k.contains("key") || k.contains("token")),
            "{client:?}"
        );
        assert!(!format!("{:?}", opts()).contains("very-secret"));
    }
}
