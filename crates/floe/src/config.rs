//! `floe.toml`: the configuration file, documented key by key in `docs/config.md`.
//!
//! Parsing is strict — every table denies unknown keys, so a typo fails at start with the key's
//! name — and [`Config::validate`] checks what serde cannot (names, references between streams,
//! sinks and pipelines, partition expressions). Relative paths are resolved against the config
//! file's folder (or the working directory for the built-in defaults).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default maximum HTTP request body (after decompression), bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// Default maximum size of one row (its JSON text), bytes.
pub const DEFAULT_MAX_ROW_BYTES: usize = 1024 * 1024;
/// Default number of per-row errors listed in a 400 response.
pub const DEFAULT_MAX_ERRORS_REPORTED: usize = 100;
/// Default sink roll interval.
pub const DEFAULT_ROLL_INTERVAL_SECONDS: u64 = 10;
/// Default sink roll size (uncompressed Arrow bytes buffered before a commit).
pub const DEFAULT_ROLL_SIZE_MB: u64 = 128;
/// Default of `rolling.memory_mb`: what a sink's open data file writers may hold in memory.
pub const DEFAULT_ROLL_MEMORY_MB: u64 = 256;
/// Default of `limits.commit_retries`.
pub const DEFAULT_COMMIT_RETRIES: u32 = 10;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    #[serde(default)]
    pub server: ServerConfig,
    /// `[catalog]`
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// `[limits]`
    #[serde(default)]
    pub limits: Limits,
    /// `[[streams]]`
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    /// `[[sinks]]`
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// `[[pipelines]]`
    #[serde(default)]
    pub pipelines: Vec<PipelineConfig>,
    /// `[auth]`
    #[serde(default)]
    pub auth: AuthConfig,
    /// Folder relative paths resolve against (not a key of the file).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Folder for stream logs, `catalog.db` and the default warehouse.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("floe-data")
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
        }
    }
}

/// `[catalog]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// The JDBC layout's `catalog_name`.
    #[serde(default = "default_catalog_name")]
    pub name: String,
    /// Warehouse URI or folder; default `<data_dir>/warehouse`.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// The catalog database: `sqlite:///path/catalog.db` or `postgres://user:pass@host:port/db`;
    /// default the SQLite file `<data_dir>/catalog.db`.
    #[serde(default)]
    pub uri: Option<String>,
    /// `[catalog.s3]`: how an `s3://` warehouse is reached.
    #[serde(default)]
    pub s3: Option<S3Config>,
}

/// `[catalog.s3]`: the S3-compatible store of an `s3://` warehouse. Credentials not given here
/// come from the standard environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` /
/// `AWS_ENDPOINT_URL`); nothing else is consulted unless `instance_credentials = true`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint URL; default AWS S3 of the region.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region; default `us-east-1` (Cloudflare R2: `auto`).
    #[serde(default)]
    pub region: Option<String>,
    /// The access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret access key (never printed).
    #[serde(default, skip_serializing)]
    pub secret_access_key: Option<String>,
    /// The session token of temporary credentials (never printed).
    #[serde(default, skip_serializing)]
    pub session_token: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`): MinIO, Garage, s3s and most self-hosted
    /// stores; default false (virtual-hosted style, as AWS S3 and R2).
    #[serde(default)]
    pub path_style: bool,
    /// Let the S3 client look for credentials itself (`~/.aws`, the cloud instance-metadata
    /// address) when none are given; default false.
    #[serde(default)]
    pub instance_credentials: bool,
    /// Hand the credentials to REST catalog clients whose token may write (or to everyone when
    /// no tokens are configured) in `config` and load-table answers; default false: clients get
    /// the endpoint, region and path style, and bring their own credentials.
    #[serde(default)]
    pub vend_credentials: bool,
}

impl S3Config {
    /// The options floe's S3 clients use, with what is missing here taken from the environment
    /// through `env` (`std::env::var` in floe; a map in tests).
    pub fn options(&self, env: impl Fn(&str) -> Option<String>) -> floe_catalog::S3Options {
        let pick = |given: &Option<String>, names: &[&str]| {
            given
                .clone()
                .or_else(|| names.iter().find_map(|n| env(n).filter(|v| !v.is_empty())))
        };
        floe_catalog::S3Options {
            endpoint: pick(&self.endpoint, &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]),
            region: pick(&self.region, &["AWS_REGION", "AWS_DEFAULT_REGION"]),
            access_key_id: pick(&self.access_key_id, &["AWS_ACCESS_KEY_ID"]),
            secret_access_key: pick(&self.secret_access_key, &["AWS_SECRET_ACCESS_KEY"]),
            session_token: pick(&self.session_token, &["AWS_SESSION_TOKEN"]),
            path_style: self.path_style,
            instance_credentials: self.instance_credentials,
        }
    }
}

fn default_catalog_name() -> String {
    "floe".to_string()
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            name: default_catalog_name(),
            warehouse: None,
            uri: None,
            s3: None,
        }
    }
}

/// `[limits]`: every limit is named in the error that reports it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `limits.max_body_bytes`: request body after decompression.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// `limits.max_row_bytes`: one row's JSON text.
    #[serde(default = "default_max_row")]
    pub max_row_bytes: usize,
    /// `limits.max_errors_reported`: row errors listed in a 400.
    #[serde(default = "default_max_errors")]
    pub max_errors_reported: usize,
    /// `limits.batch_bytes`: most log bytes a pipeline reads per micro-batch step.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// `limits.commit_retries`: how often one sink commit that lost the catalog's
    /// compare-and-swap to another writer is retried on the fresh metadata before it is reported
    /// failed (so one commit makes at most `commit_retries + 1` attempts).
    #[serde(default = "default_commit_retries")]
    pub commit_retries: u32,
    /// `limits.stream_max_disk_bytes`: a stream's log on disk above this → 429 until sinks catch up.
    #[serde(default = "default_stream_max_disk")]
    pub stream_max_disk_bytes: u64,
    /// `limits.max_uncommitted_rows`: the slowest pipeline this far behind a stream's end → 429.
    #[serde(default = "default_max_uncommitted")]
    pub max_uncommitted_rows: u64,
    /// `limits.idempotency_window_seconds`: how long an `Idempotency-Key` is remembered.
    #[serde(default = "default_idempotency_window")]
    pub idempotency_window_seconds: u64,
    /// `limits.query_max_rows`: most rows a SQL query or a lookup returns; beyond it the query
    /// fails naming this limit.
    #[serde(default = "default_query_max_rows")]
    pub query_max_rows: usize,
    /// `limits.query_timeout_seconds`: longest a SQL query or a lookup may run.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_seconds: f64,
    /// `limits.max_record_bytes`: most Arrow IPC bytes one request's rows may take as one log
    /// record; a bigger request is a 413 naming this limit (at most 1 GiB, the log's format bound).
    #[serde(default = "default_max_record")]
    pub max_record_bytes: usize,
    /// `limits.idempotency_max_keys`: most `Idempotency-Key`s a stream remembers inside the
    /// window; a new key beyond it is a 429 naming this limit (no key is forgotten early).
    #[serde(default = "default_idempotency_max_keys")]
    pub idempotency_max_keys: usize,
    /// `limits.idempotency_max_bytes`: most bytes of a stream's keys file
    /// (`idempotency.jsonl`, live entries); a new key beyond it is a 429 naming this limit.
    #[serde(default = "default_idempotency_max_bytes")]
    pub idempotency_max_bytes: u64,
    /// `limits.max_api_objects`: most streams, sinks and pipelines (each kind counted apart)
    /// created through the control plane; a create beyond it is a 409 naming this limit.
    #[serde(default = "default_max_api_objects")]
    pub max_api_objects: usize,
}

fn default_max_api_objects() -> usize {
    1000
}

fn default_max_record() -> usize {
    floe_stream::DEFAULT_MAX_RECORD_BYTES
}
fn default_idempotency_max_keys() -> usize {
    1_000_000
}
fn default_idempotency_max_bytes() -> u64 {
    256 << 20
}

fn default_query_max_rows() -> usize {
    100_000
}
fn default_query_timeout() -> f64 {
    60.0
}

fn default_stream_max_disk() -> u64 {
    1 << 30
}
fn default_max_uncommitted() -> u64 {
    10_000_000
}
fn default_idempotency_window() -> u64 {
    24 * 3600
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_row() -> usize {
    DEFAULT_MAX_ROW_BYTES
}
fn default_max_errors() -> usize {
    DEFAULT_MAX_ERRORS_REPORTED
}
fn default_batch_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_commit_retries() -> u32 {
    DEFAULT_COMMIT_RETRIES
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            max_row_bytes: default_max_row(),
            max_errors_reported: default_max_errors(),
            batch_bytes: default_batch_bytes(),
            commit_retries: default_commit_retries(),
            stream_max_disk_bytes: default_stream_max_disk(),
            max_uncommitted_rows: default_max_uncommitted(),
            idempotency_window_seconds: default_idempotency_window(),
            query_max_rows: default_query_max_rows(),
            query_timeout_seconds: default_query_timeout(),
            max_record_bytes: default_max_record(),
            idempotency_max_keys: default_idempotency_max_keys(),
            idempotency_max_bytes: default_idempotency_max_bytes(),
            max_api_objects: default_max_api_objects(),
        }
    }
}

/// `[[streams]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Stream name (the URL segment).
    pub name: String,
    /// Schema; `None` means unstructured: one `value` json column.
    #[serde(default)]
    pub fields: Option<Vec<FieldConfig>>,
    /// HTTP ingest settings.
    #[serde(default)]
    pub http: HttpIngestConfig,
    /// What happens to invalid rows.
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// What happens to fields not in the schema.
    #[serde(default)]
    pub unknown_fields: UnknownFields,
}

/// `http = { … }` of a stream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIngestConfig {
    /// Whether `POST /v1/streams/{name}/events` is served.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether a bearer token with `send:<stream>` is required.
    #[serde(default)]
    pub auth: bool,
    /// Browser origins (`https://app.example.com`, or `*` for any) allowed to call the stream's
    /// ingest route cross-origin: CORS preflights are answered and responses carry
    /// `Access-Control-Allow-Origin` for them. Empty: no CORS headers.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for HttpIngestConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auth: false,
            cors_origins: vec![],
        }
    }
}

/// `on_invalid`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Reject the whole request with 400.
    #[default]
    Reject,
    /// Accept valid rows, store invalid ones in a dead-letter table.
    DeadLetter,
}

/// `unknown_fields`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// A row with a field not in the schema is invalid.
    #[default]
    Reject,
    /// Fields not in the schema are ignored.
    Drop,
}

/// One field of a stream schema (also used for list items and struct members).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// Field name (absent for list `items`).
    #[serde(default)]
    pub name: String,
    /// Field type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Whether a row must carry a non-null value.
    #[serde(default)]
    pub required: bool,
    /// Element type of a `list`.
    #[serde(default)]
    pub items: Option<Box<FieldConfig>>,
    /// Members of a `struct`.
    #[serde(default)]
    pub fields: Option<Vec<FieldConfig>>,
}

/// Field types of a stream schema (`docs/config.md`, "Field types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 32-bit integer.
    Int32,
    /// 64-bit integer.
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// Boolean.
    Bool,
    /// RFC 3339 string with offset, or epoch milliseconds / microseconds (told apart by
    /// magnitude, see `ingest::decode::TIMESTAMP_MICROS_FROM`); stored as UTC microseconds.
    Timestamp,
    /// Base64 text; stored as bytes.
    Binary,
    /// Any JSON value, stored as its JSON text.
    Json,
    /// A list of `items`.
    List,
    /// A struct of `fields`.
    Struct,
}

/// `[[sinks]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Sink name (what `INSERT INTO` names).
    pub name: String,
    /// Sink type.
    #[serde(rename = "type")]
    pub ty: SinkType,
    /// `namespace.table` for iceberg sinks.
    #[serde(default)]
    pub table: Option<String>,
    /// The codec and level of the files: for Parquet (every iceberg sink, a files sink with
    /// `format = "parquet"`) any [`Compression`], `zstd(3)` unless set; for a files sink's NDJSON
    /// `gzip` / `gzip(N)` or `uncompressed` (`none`), `gzip` unless set. Read it through
    /// [`parquet_compression`](Self::parquet_compression) / [`json_gzip`](Self::json_gzip).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// Where a Parquet row group ends (rows or bytes).
    #[serde(default)]
    pub row_group_size: RowGroupSize,
    /// Size at which a data file is closed and the next one started within one commit, MB.
    #[serde(default = "default_target_file_size_mb")]
    pub target_file_size_mb: u64,
    /// Sort order of the rows within each data file: `col`, `col DESC`, `col ASC NULLS LAST`, …;
    /// the table's Iceberg sort order is set to match. Empty: rows stay in stream order.
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// Partition transforms: `col`, `year(c)`, `month(c)`, `day(c)`, `hour(c)`, `bucket[N](c)`,
    /// `truncate[W](c)`.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// When files roll and commit.
    #[serde(default)]
    pub rolling: Rolling,
    /// Columns whose Parquet column chunks get a bloom filter (point lookups on them skip row
    /// groups that cannot hold the value). Empty: none.
    #[serde(default)]
    pub bloom_filter_columns: Vec<String>,
    /// files: the folder the files go to: a local folder (relative to the config file's folder)
    /// or a `file://` / `s3://bucket/prefix` URI. Resolved to a URI by [`Config::files_location`].
    #[serde(default)]
    pub path: Option<String>,
    /// files: what a file holds (`json` unless set).
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// files: the strftime pattern of a row's folder below `path`
    /// ([`DEFAULT_FILES_PARTITIONING`](crate::layout::DEFAULT_FILES_PARTITIONING) unless set;
    /// `""`: no folders).
    #[serde(default)]
    pub partitioning: Option<String>,
    /// files: the timestamp column of the pipeline's output whose value places a row
    /// (`partitioning`); unset: the time of the commit.
    #[serde(default)]
    pub time_column: Option<String>,
    /// files: how files are named (`uuid` unless set).
    #[serde(default)]
    pub file_naming: Option<FileNaming>,
    /// files: text before each file's name (`""` unless set).
    #[serde(default)]
    pub file_prefix: Option<String>,
    /// files: text after each file's name (the format's extension unless set: `.json`,
    /// `.json.gz`, `.parquet`).
    #[serde(default)]
    pub file_suffix: Option<String>,
    /// iceberg: the background maintenance of the sink's table (`[sinks.maintenance]`).
    #[serde(default)]
    pub maintenance: Maintenance,
}

/// `[sinks.maintenance]`: what `floe serve` does to an iceberg sink's table by itself, every
/// `interval` (docs/maintenance.md, "Automatic maintenance").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// Run it at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often (a duration: `10m`, `1h`; at least `10s`).
    #[serde(default = "default_maintenance_interval")]
    pub interval: String,
    /// Compact small files (into files of the sink's `target_file_size_mb`).
    #[serde(default = "yes")]
    pub compact: bool,
    /// A partition is compacted once it has this many small files (at least 2).
    #[serde(default = "default_min_input_files")]
    pub min_input_files: usize,
    /// Merge small data manifests into few, clustered by partition.
    #[serde(default = "yes")]
    pub rewrite_manifests: bool,
    /// Manifests are rewritten once the table has this many below the target manifest size
    /// (at least 2).
    #[serde(default = "default_min_input_manifests")]
    pub min_input_manifests: usize,
    /// Expire snapshots older than this (a duration; `"off"`: never expire).
    #[serde(default = "default_expire_older_than")]
    pub expire_older_than: String,
    /// Keep at least this many newest snapshots (at least 1).
    #[serde(default = "default_retain_last")]
    pub retain_last: usize,
    /// Delete orphan files older than this, once a day (a duration, at least `1h`; `"off"`:
    /// never).
    #[serde(default = "default_orphan_older_than")]
    pub orphan_older_than: String,
    /// The share of the machine maintenance may take: MB of Parquet it reads per second while
    /// compacting (≥ 1).
    #[serde(default = "default_maintenance_mb_per_second")]
    pub max_mb_per_second: u64,
    /// Drop rows older than this (a duration, e.g. `30d`), by `retention_column`, at most hourly;
    /// unset: keep everything.
    #[serde(default)]
    pub retention: Option<String>,
    /// The timestamp or date column `retention` goes by.
    #[serde(default)]
    pub retention_column: Option<String>,
}

fn default_maintenance_interval() -> String {
    "10m".into()
}
fn default_min_input_files() -> usize {
    5
}
fn default_min_input_manifests() -> usize {
    100
}
fn default_expire_older_than() -> String {
    "7d".into()
}
fn default_retain_last() -> usize {
    10
}
fn default_orphan_older_than() -> String {
    "1d".into()
}
fn default_maintenance_mb_per_second() -> u64 {
    64
}

impl Default for Maintenance {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_maintenance_interval(),
            compact: true,
            min_input_files: default_min_input_files(),
            rewrite_manifests: true,
            min_input_manifests: default_min_input_manifests(),
            expire_older_than: default_expire_older_than(),
            retain_last: default_retain_last(),
            orphan_older_than: default_orphan_older_than(),
            max_mb_per_second: default_maintenance_mb_per_second(),
            retention: None,
            retention_column: None,
        }
    }
}

impl Maintenance {
    /// `interval` in milliseconds.
    pub fn interval_ms(&self) -> i64 {
        parse_duration_ms(&self.interval).unwrap_or(600_000)
    }

    /// `expire_older_than` in milliseconds; `None` when `"off"`.
    pub fn expire_older_than_ms(&self) -> Option<i64> {
        off_or_duration(&self.expire_older_than)
    }

    /// `orphan_older_than` in milliseconds; `None` when `"off"`.
    pub fn orphan_older_than_ms(&self) -> Option<i64> {
        off_or_duration(&self.orphan_older_than)
    }

    /// `retention` in milliseconds and its column, when set.
    pub fn retention_ms(&self) -> Option<(i64, &str)> {
        let ms = parse_duration_ms(self.retention.as_deref()?).ok()?;
        Some((ms, self.retention_column.as_deref()?))
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| Err(ConfigError::Invalid { key, message });
        match (&self.retention, &self.retention_column) {
            (Some(r), Some(_)) => match parse_duration_ms(r) {
                Ok(ms) if ms >= 1000 => {}
                Ok(_) => return invalid(format!("{at}.retention"), "must be at least 1s".into()),
                Err(m) => return invalid(format!("{at}.retention"), m),
            },
            (Some(_), None) => {
                return invalid(
                    format!("{at}.retention_column"),
                    "is required with retention (the timestamp or date column rows expire by)".into(),
                );
            }
            (None, Some(_)) => {
                return invalid(format!("{at}.retention"), "is required with retention_column".into());
            }
            (None, None) => {}
        }
        match parse_duration_ms(&self.interval) {
            Ok(ms) if ms >= 10_000 => {}
            Ok(_) => return invalid(format!("{at}.interval"), "must be at least 10s".into()),
            Err(m) => return invalid(format!("{at}.interval"), m),
        }
        if self.min_input_files < 2 {
            return invalid(format!("{at}.min_input_files"), "must be at least 2".into());
        }
        if self.min_input_manifests < 2 {
            return invalid(format!("{at}.min_input_manifests"), "must be at least 2".into());
        }
        if self.retain_last == 0 {
            return invalid(format!("{at}.retain_last"), "must be at least 1".into());
        }
        if self.max_mb_per_second == 0 {
            return invalid(format!("{at}.max_mb_per_second"), "must be at least 1".into());
        }
        if self.expire_older_than != "off"
            && let Err(m) = parse_duration_ms(&self.expire_older_than)
        {
            return invalid(format!("{at}.expire_older_than"), m);
        }
        if self.orphan_older_than != "off" {
            match parse_duration_ms(&self.orphan_older_than) {
                Ok(ms) if ms >= 3_600_000 => {}
                Ok(_) => {
                    return invalid(
                        format!("{at}.orphan_older_than"),
                        "must be at least 1h (younger files may belong to a commit in flight)".into(),
                    );
                }
                Err(m) => return invalid(format!("{at}.orphan_older_than"), m),
            }
        }
        Ok(())
    }
}

/// The table-property prefix of a maintenance policy ([`Maintenance::from_table_properties`]).
pub const TABLE_POLICY_PREFIX: &str = "floe.maintenance.";

impl Maintenance {
    /// The policy an Iceberg table's properties set, for a table no sink of floe writes:
    /// `floe.maintenance.enabled = true` opts it in (`None` otherwise: floe leaves other
    /// engines' tables alone unless asked), `floe.maintenance.<key>` sets a key of
    /// `[sinks.maintenance]` (spelled with `-` or `_`: `min-input-files`), and where those are
    /// absent the standard `history.expire.max-snapshot-age-ms` and
    /// `history.expire.min-snapshots-to-keep` set expiry. A property floe does not know under
    /// the prefix, or a value that does not parse or validate, is an error naming the property.
    pub fn from_table_properties(
        props: &std::collections::HashMap<String, String>,
    ) -> Result<Option<Maintenance>, ConfigError> {
        let mut fields = serde_json::Map::new();
        let mut spelled: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for (k, v) in props {
            let Some(key) = k.strip_prefix(TABLE_POLICY_PREFIX) else {
                continue;
            };
            let field = key.replace('-', "_");
            let invalid = |message: String| ConfigError::Invalid {
                key: format!("table property {k}"),
                message,
            };
            let value = match field.as_str() {
                "enabled" | "compact" | "rewrite_manifests" => match v.trim() {
                    "true" => serde_json::Value::Bool(true),
                    "false" => serde_json::Value::Bool(false),
                    _ => return Err(invalid(format!("{v:?} is not true or false"))),
                },
                "min_input_files" | "min_input_manifests" | "retain_last" | "max_mb_per_second" => {
                    match v.trim().parse::<u64>() {
                        Ok(n) => serde_json::Value::from(n),
                        Err(_) => return Err(invalid(format!("{v:?} is not a whole number"))),
                    }
                }
                "interval" | "expire_older_than" | "orphan_older_than" | "retention" | "retention_column" => {
                    serde_json::Value::String(v.trim().to_string())
                }
                _ => {
                    return Err(invalid(
                        "is not a maintenance setting (docs/maintenance.md lists them)".to_string(),
                    ));
                }
            };
            spelled.insert(field.clone(), k.clone());
            fields.insert(field, value);
        }
        if fields.get("enabled") != Some(&serde_json::Value::Bool(true)) {
            return Ok(None);
        }
        // Iceberg's standard expiry properties, where floe's own are absent: (property, field,
        // the duration unit its number is in, what the number must be).
        for (property, field, unit, what) in [
            (
                "history.expire.max-snapshot-age-ms",
                "expire_older_than",
                Some("ms"),
                "a whole number of milliseconds",
            ),
            (
                "history.expire.min-snapshots-to-keep",
                "retain_last",
                None,
                "a whole number",
            ),
        ] {
            let Some(v) = props.get(property).filter(|_| !fields.contains_key(field)) else {
                continue;
            };
            let Ok(n) = v.trim().parse::<u64>() else {
                return Err(ConfigError::Invalid {
                    key: format!("table property {property}"),
                    message: format!("{v:?} is not {what}"),
                });
            };
            let value = match unit {
                Some(unit) => serde_json::Value::String(format!("{n}{unit}")),
                None => serde_json::Value::from(n),
            };
            fields.insert(field.into(), value);
            spelled.insert(field.into(), property.into());
        }
        let policy: Maintenance =
            serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| ConfigError::Invalid {
                key: "table properties floe.maintenance.*".into(),
                message: e.to_string(),
            })?;
        // Errors name the property as the table spells it.
        policy.validate("floe.maintenance").map_err(|e| match e {
            ConfigError::Invalid { key, message } => {
                let field = key.trim_start_matches("floe.maintenance.");
                let name = spelled
                    .get(field)
                    .cloned()
                    .unwrap_or_else(|| format!("{TABLE_POLICY_PREFIX}{}", field.replace('_', "-")));
                ConfigError::Invalid {
                    key: format!("table property {name}"),
                    message,
                }
            }
            other => other,
        })?;
        Ok(Some(policy))
    }
}

fn off_or_duration(s: &str) -> Option<i64> {
    if s == "off" { None } else { parse_duration_ms(s).ok() }
}

/// Parses a duration: a whole number and a unit, `ms`, `s`, `m`, `h`, `d` or `w` (`90s`,
/// `7d`); `0` alone is zero. The error says what is wrong.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (a number and a unit: 30m, 12h, 7d)"))?;
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown duration unit {unit:?} (one of ms, s, m, h, d, w)"
            ));
        }
    };
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
}

/// `format` of a files sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Newline-delimited JSON: one object per row, every column present (null as `null`).
    #[default]
    Json,
    /// Parquet, with the iceberg sink's writer settings.
    Parquet,
}

/// `file_naming` of a files sink: the middle of a file's name, between `file_prefix` and
/// `file_suffix`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileNaming {
    /// A random UUID (v4), 36 characters.
    #[default]
    Uuid,
    /// A ULID: 26 characters of Crockford base32, sorting by creation time (milliseconds).
    Ulid,
    /// A number counting up per sink folder, 20 digits (`00000000000000000042`); it survives
    /// restarts (kept in the catalog with the commits).
    Sequence,
}

/// The keys only a files sink takes, as `(key, whether it is set)`.
fn files_keys(s: &SinkConfig) -> [(&'static str, bool); 7] {
    [
        ("path", s.path.is_some()),
        ("format", s.format.is_some()),
        ("partitioning", s.partitioning.is_some()),
        ("time_column", s.time_column.is_some()),
        ("file_naming", s.file_naming.is_some()),
        ("file_prefix", s.file_prefix.is_some()),
        ("file_suffix", s.file_suffix.is_some()),
    ]
}

impl SinkConfig {
    /// The Parquet codec: `compression`, or `zstd(3)`.
    pub fn parquet_compression(&self) -> Compression {
        self.compression.unwrap_or_default()
    }

    /// A files sink's NDJSON compression: `Some(level)` for gzip (the default, level 6), `None`
    /// for uncompressed.
    pub fn json_gzip(&self) -> Option<u32> {
        match self.compression {
            None => Some(DEFAULT_GZIP_LEVEL),
            Some(Compression::Gzip(level)) => Some(level),
            Some(_) => None,
        }
    }

    /// A files sink's `format`.
    pub fn file_format(&self) -> FileFormat {
        self.format.unwrap_or_default()
    }

    /// A files sink's `partitioning` pattern.
    pub fn partitioning(&self) -> &str {
        self.partitioning
            .as_deref()
            .unwrap_or(crate::layout::DEFAULT_FILES_PARTITIONING)
    }

    /// A files sink's `file_naming`.
    pub fn file_naming(&self) -> FileNaming {
        self.file_naming.unwrap_or_default()
    }

    /// A files sink's `file_suffix`: as set, or the format's extension.
    pub fn file_suffix(&self) -> String {
        if let Some(s) = &self.file_suffix {
            return s.clone();
        }
        match (self.file_format(), self.json_gzip()) {
            (FileFormat::Parquet, _) => ".parquet".into(),
            (FileFormat::Json, Some(_)) => ".json.gz".into(),
            (FileFormat::Json, None) => ".json".into(),
        }
    }

    /// What the sink's position row names as its target: the table (`namespace.table`) of an
    /// iceberg sink, the folder URI of a files sink (`path` as [`Config::files_location`]
    /// resolved it).
    pub fn target(&self) -> Option<String> {
        match self.ty {
            SinkType::Iceberg => self.table.clone(),
            SinkType::Files => self.path.clone(),
        }
    }
}

/// Default of `target_file_size_mb`.
pub const DEFAULT_TARGET_FILE_SIZE_MB: u64 = 128;
/// Largest `target_file_size_mb` (16 GiB), the bound compaction packs to as well.
pub const MAX_TARGET_FILE_SIZE_MB: u64 = 16 * 1024;

fn default_target_file_size_mb() -> u64 {
    DEFAULT_TARGET_FILE_SIZE_MB
}

impl Default for SinkConfig {
    /// An Iceberg sink with every setting at its default (name and table still to be set).
    fn default() -> Self {
        SinkConfig {
            name: String::new(),
            ty: SinkType::Iceberg,
            table: None,
            compression: None,
            row_group_size: RowGroupSize::default(),
            target_file_size_mb: DEFAULT_TARGET_FILE_SIZE_MB,
            sort_by: Vec::new(),
            partition_by: Vec::new(),
            rolling: Rolling::default(),
            bloom_filter_columns: Vec::new(),
            path: None,
            format: None,
            partitioning: None,
            time_column: None,
            file_naming: None,
            file_prefix: None,
            file_suffix: None,
            maintenance: Maintenance::default(),
        }
    }
}

/// Sink types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    /// Parquet files committed into an Iceberg table.
    Iceberg,
    /// NDJSON or Parquet files under Hive-style folders (`sink::files`).
    Files,
}

/// `compression = "zstd(3)"`: the Parquet codec of a sink's files and, for zstd and gzip, its
/// level. Written as `zstd`, `zstd(N)` (1–22), `snappy`, `gzip`, `gzip(N)` (0–9), `lz4` or
/// `uncompressed`; a codec without a level takes its default (zstd 3, gzip 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    /// zstd at a level (default: `zstd(3)`).
    Zstd(i32),
    /// Snappy.
    Snappy,
    /// gzip at a level.
    Gzip(u32),
    /// LZ4 (raw).
    Lz4,
    /// None.
    Uncompressed,
}

/// zstd level of `compression = "zstd"`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// gzip level of `compression = "gzip"`.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(DEFAULT_ZSTD_LEVEL)
    }
}

impl Compression {
    /// The codec's name, without the level (`zstd`, `gzip`, …): Iceberg's
    /// `write.parquet.compression-codec`.
    pub fn codec(&self) -> &'static str {
        match self {
            Compression::Zstd(_) => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip(_) => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Uncompressed => "uncompressed",
        }
    }

    /// The level, for the codecs that take one: Iceberg's `write.parquet.compression-level`.
    pub fn level(&self) -> Option<i64> {
        match self {
            Compression::Zstd(l) => Some(i64::from(*l)),
            Compression::Gzip(l) => Some(i64::from(*l)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.level() {
            Some(l) => write!(f, "{}({l})", self.codec()),
            None => f.write_str(self.codec()),
        }
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Compression {
    type Error = String;

    fn try_from(v: String) -> Result<Self, String> {
        v.parse()
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(v: &str) -> Result<Self, String> {
        let v = v.trim().to_ascii_lowercase();
        let (codec, level) = match v.split_once('(') {
            Some((codec, rest)) => {
                let Some(level) = rest.strip_suffix(')') else {
                    return Err(format!("{v:?}: a level is written codec(N), e.g. \"zstd(3)\""));
                };
                (codec.trim(), Some(level.trim()))
            }
            None => (v.as_str(), None),
        };
        let number = |lo: i64, hi: i64| -> Result<Option<i64>, String> {
            let Some(l) = level else { return Ok(None) };
            match l.parse::<i64>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(format!("{codec} level {l:?} is not a whole number from {lo} to {hi}")),
            }
        };
        let no_level = |c: Compression| match level {
            None => Ok(c),
            Some(_) => Err(format!("{codec} takes no level")),
        };
        match codec {
            "zstd" => Ok(Compression::Zstd(
                number(1, 22)?.map_or(DEFAULT_ZSTD_LEVEL, |n| n as i32),
            )),
            "gzip" => Ok(Compression::Gzip(
                number(0, 9)?.map_or(DEFAULT_GZIP_LEVEL, |n| n as u32),
            )),
            "snappy" => no_level(Compression::Snappy),
            "lz4" => no_level(Compression::Lz4),
            "uncompressed" | "none" => no_level(Compression::Uncompressed),
            other => Err(format!(
                "unknown codec {other:?}; use zstd, zstd(1..22), snappy, gzip, gzip(0..9), lz4 or uncompressed (none)"
            )),
        }
    }
}

/// `row_group_size`: where a Parquet row group ends — a number of rows (`row_group_size =
/// 100000`) or of encoded bytes (`row_group_size = "64MiB"`; units B, KiB, MiB, GiB, or KB, MB,
/// GB as powers of 1000). Smaller row groups let readers skip more of a file by its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "toml::Value", into = "toml::Value")]
pub enum RowGroupSize {
    /// At most this many rows.
    Rows(u64),
    /// At most about this many encoded bytes.
    Bytes(u64),
}

/// Default of `row_group_size`: 128 MiB (the Parquet writer's own default is 1 Mi rows, which
/// for wide rows makes row groups of a GiB and more).
pub const DEFAULT_ROW_GROUP_BYTES: u64 = 128 * 1024 * 1024;

impl Default for RowGroupSize {
    fn default() -> Self {
        RowGroupSize::Bytes(DEFAULT_ROW_GROUP_BYTES)
    }
}

impl From<RowGroupSize> for toml::Value {
    fn from(r: RowGroupSize) -> toml::Value {
        match r {
            RowGroupSize::Rows(n) => toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
            RowGroupSize::Bytes(n) => toml::Value::String(format!("{n}B")),
        }
    }
}

impl TryFrom<toml::Value> for RowGroupSize {
    type Error = String;

    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) if n >= 1 => Ok(RowGroupSize::Rows(n as u64)),
            toml::Value::Integer(n) => Err(format!("{n} rows: must be at least 1")),
            toml::Value::String(s) => parse_bytes(&s).map(RowGroupSize::Bytes),
            other => Err(format!(
                "{other}: give a number of rows (100000) or of bytes with a unit (\"64MiB\")"
            )),
        }
    }
}

/// `"64MiB"` → 67108864; at least 1 KiB.
fn parse_bytes(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{v:?}: a size is a whole number and a unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. \"64MiB\""
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{v:?}: a size starts with a whole number, e.g. \"64MiB\""))?;
    let bytes = n.checked_mul(unit_bytes).ok_or_else(|| format!("{v:?} is too large"))?;
    if bytes < 1024 {
        return Err(format!("{v:?}: a row group of less than 1 KiB makes files of metadata"));
    }
    Ok(bytes)
}

/// `rolling = { … }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rolling {
    /// Commit at least this often while data is pending.
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// Commit when this many MB (in memory, Arrow) are pending.
    #[serde(default = "default_size_mb")]
    pub size_mb: u64,
    /// Commit once no new stream rows have arrived for this long (while rows are pending), without
    /// waiting for `interval_seconds`. `None`: only interval and size roll.
    #[serde(default)]
    pub inactivity_seconds: Option<u64>,
    /// The memory budget, in MB, of the data file writers a sink keeps open between commits
    /// (one per partition written to): above it the largest are closed first, their files kept
    /// for the same commit (`sink::fanout`).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
}

fn default_interval() -> u64 {
    DEFAULT_ROLL_INTERVAL_SECONDS
}
fn default_size_mb() -> u64 {
    DEFAULT_ROLL_SIZE_MB
}
fn default_memory_mb() -> u64 {
    DEFAULT_ROLL_MEMORY_MB
}

impl Default for Rolling {
    fn default() -> Self {
        Self {
            interval_seconds: default_interval(),
            size_mb: default_size_mb(),
            inactivity_seconds: None,
            memory_mb: default_memory_mb(),
        }
    }
}

/// `[[pipelines]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Pipeline name.
    pub name: String,
    /// `INSERT INTO <sink> SELECT … FROM <stream> …`
    pub sql: String,
    /// Where a statement without a committed position starts reading its stream (docs/config.md,
    /// "Pipeline identity"). Recorded in the catalog at start, before HTTP serves.
    #[serde(default)]
    pub start: PipelineStart,
    /// The name of a pipeline no longer in the config whose positions this one takes over
    /// (a rename): its sinks continue where the old pipeline committed.
    #[serde(default)]
    pub replaces: Option<String>,
    /// What a row whose SQL fails at run time (a failed cast, a division by zero) does.
    #[serde(default)]
    pub on_error: OnError,
    /// Most failing rows one micro-batch may send to the dead-letter table; more fail the
    /// pipeline (a SELECT that fails for every row is a bug, not bad data).
    #[serde(default = "default_max_bad_rows")]
    pub max_bad_rows_per_batch: usize,
}

/// Default of `pipelines[].max_bad_rows_per_batch`.
pub const DEFAULT_MAX_BAD_ROWS_PER_BATCH: usize = 1000;

fn default_max_bad_rows() -> usize {
    DEFAULT_MAX_BAD_ROWS_PER_BATCH
}

/// `start` of a pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStart {
    /// At the stream log's end when the pipeline is first started: only rows sent from then on.
    #[default]
    Latest,
    /// At the first row still in the stream's log.
    Earliest,
}

/// `on_error` of a pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The failing rows go to the pipeline's dead-letter table `<namespace>.<pipeline>_errors`;
    /// the others land.
    #[default]
    DeadLetter,
    /// The pipeline stops at the failing row (healthz degraded, the row's offset in the error).
    Fail,
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.tokens]]`
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Tokens created at run time (`floe tokens create`, stored hashed in the catalog), by id;
    /// shared by every clone of this config, so a token created or revoked counts at once
    /// everywhere (not a key of the file).
    #[serde(skip)]
    pub runtime: RuntimeTokens,
}

/// The valid tokens created at run time, by id (see [`crate::auth`]).
#[derive(Debug, Clone, Default)]
pub struct RuntimeTokens(std::sync::Arc<std::sync::RwLock<HashMap<String, RuntimeToken>>>);

/// One valid token created at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeToken {
    /// SHA-256 of its secret part.
    pub secret_sha256: [u8; 32],
    /// Its scopes.
    pub scopes: Vec<String>,
}

impl RuntimeTokens {
    /// Replaces the set (after reading the catalog).
    pub fn set(&self, tokens: HashMap<String, RuntimeToken>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = tokens;
    }

    /// Adds or replaces one.
    pub fn insert(&self, id: String, token: RuntimeToken) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(id, token);
    }

    /// Removes one (a revocation).
    pub fn remove(&self, id: &str) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The token of `id`.
    pub fn get(&self, id: &str) -> Option<RuntimeToken> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}

/// Whether `scope` is one floe knows: `read`, `write`, `admin`, `send:*` or `send:<stream>`.
pub fn check_scope(scope: &str) -> Result<(), String> {
    match scope {
        "read" | "write" | "admin" | "send:*" => Ok(()),
        s if s.strip_prefix("send:").is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 128
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) =>
        {
            Ok(())
        }
        s => Err(format!(
            "{s:?} is not a scope: read, write, admin, send:* or send:<stream>"
        )),
    }
}

/// One bearer token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret.
    pub token: String,
    /// `send:<stream>`, `read`, `write`, `admin`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong value type (toml names the key).
    #[error("{path}: {message}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value that parses but is not valid.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `sinks[0].partition_by`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The built-in example: one stream of multi-tenant resource events, a table partitioned by
/// day and tenant, and a pipeline between them.
pub const DEFAULT_CONFIG: &str = r#"
[[streams]]
name = "events"
fields = [
  { name = "ns",         type = "string",    required = true },
  { name = "type",       type = "string",    required = true },
  { name = "id",         type = "string",    required = true },
  { name = "ts",         type = "timestamp", required = true },
  { name = "data",       type = "json" },
  { name = "visibility", type = "string" },
]

[[sinks]]
name         = "events_table"
type         = "iceberg"
table        = "analytics.events"
partition_by = ["day(ts)", "ns"]
rolling      = { interval_seconds = 5 }

[[pipelines]]
name = "events_to_table"
sql  = "INSERT INTO events_table SELECT * FROM events"
"#;

impl Config {
    /// Parses TOML text; `base_dir` is where relative paths resolve.
    pub fn from_toml(text: &str, path: &Path, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// Loads `--config PATH`, else `./floe.toml` when present, else the built-in defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(cwd.join("floe.toml")).filter(|p| p.is_file()),
        };
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let base = path
                    .parent()
                    .map(|p| {
                        if p.as_os_str().is_empty() {
                            cwd.clone()
                        } else {
                            p.to_path_buf()
                        }
                    })
                    .unwrap_or(cwd.clone());
                let base = std::path::absolute(&base).unwrap_or(base);
                Self::from_toml(&text, &path, &base)
            }
            None => Self::from_toml(DEFAULT_CONFIG, Path::new("<built-in defaults>"), &cwd),
        }
    }

    /// The data folder, absolute.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.server.data_dir)
    }

    /// The default SQLite catalog file (used when `catalog.uri` is not set).
    pub fn catalog_db(&self) -> PathBuf {
        self.data_dir().join("catalog.db")
    }

    /// The catalog database's URI: `catalog.uri`, or the SQLite file [`catalog_db`](Self::catalog_db).
    pub fn catalog_uri(&self) -> String {
        match &self.catalog.uri {
            Some(uri) => uri.clone(),
            None => floe_catalog::Store::sqlite_uri(&self.catalog_db()),
        }
    }

    /// The folder of one stream's log.
    pub fn stream_dir(&self, stream: &str) -> PathBuf {
        self.data_dir().join("streams").join(stream)
    }

    /// How floe reaches an `s3://` warehouse: `[catalog.s3]` with the `AWS_*` environment
    /// variables for what it leaves out.
    pub fn s3_options(&self) -> floe_catalog::S3Options {
        self.catalog
            .s3
            .clone()
            .unwrap_or_default()
            .options(|name| std::env::var(name).ok())
    }

    /// The warehouse as a URI (`file:///abs/path` or `s3://bucket/prefix`).
    pub fn warehouse_uri(&self) -> String {
        match &self.catalog.warehouse {
            Some(w) if w.contains("://") && !w.starts_with("file://") => w.clone(),
            Some(w) => {
                let path = self.resolve(Path::new(w.strip_prefix("file://").unwrap_or(w)));
                format!("file://{}", path.display())
            }
            None => format!("file://{}", self.data_dir().join("warehouse").display()),
        }
    }

    /// A files sink's `path` as a URI: an `s3://…` (or other non-`file`) URI as written, a local
    /// folder or `file://` URI as `file:///abs/path` (relative to the config file's folder), without
    /// a trailing `/`.
    pub fn files_location(&self, path: &str) -> String {
        let uri = if path.contains("://") && !path.starts_with("file://") {
            path.to_string()
        } else {
            let local = self.resolve(Path::new(path.strip_prefix("file://").unwrap_or(path)));
            format!("file://{}", local.display())
        };
        match uri.trim_end_matches('/') {
            "" => uri,
            trimmed if trimmed.ends_with(':') => uri,
            trimmed => trimmed.to_string(),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Finds a stream by name.
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Finds a sink by name.
    pub fn sink(&self, name: &str) -> Option<&SinkConfig> {
        self.sinks.iter().find(|s| s.name == name)
    }

    /// The `[catalog.s3]` rules, with the environment read through `env`.
    fn check_s3(&self, warehouse: &str, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message,
            })
        };
        let files_on_s3 = self
            .sinks
            .iter()
            .any(|s| s.path.as_deref().is_some_and(|p| p.starts_with("s3://")));
        if !warehouse.starts_with("s3://") && !files_on_s3 {
            if self.catalog.s3.is_some() {
                return invalid(
                    "catalog.s3",
                    format!(
                        "is set, but neither the warehouse {warehouse:?} nor a files sink's path is an s3:// location"
                    ),
                );
            }
            return Ok(());
        }
        let s3 = self.catalog.s3.clone().unwrap_or_default().options(env);
        let keys = s3.access_key_id.is_some() && s3.secret_access_key.is_some();
        if !keys && !s3.instance_credentials {
            return invalid(
                "catalog.s3",
                "an s3:// warehouse or files sink path needs credentials: access_key_id and secret_access_key in [catalog.s3], \
                 or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment \
                 (or instance_credentials = true to let the S3 client find them)"
                    .into(),
            );
        }
        if let Some(e) = &s3.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return invalid(
                "catalog.s3.endpoint",
                format!("{e:?} is not an http:// or https:// URL"),
            );
        }
        Ok(())
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_keys()?;
        // Last: which s3:// locations there are depends on the sinks checked above.
        self.check_s3(&self.warehouse_uri(), |name| std::env::var(name).ok())
    }

    fn validate_keys(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| Err(ConfigError::Invalid { key, message });
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "server.listen".into(),
                format!("{:?} is not an address like 127.0.0.1:8080", self.server.listen),
            );
        }
        if self.catalog.name.is_empty() {
            return invalid("catalog.name".into(), "must not be empty".into());
        }
        if let Some(uri) = &self.catalog.uri
            && let Err(e) = floe_catalog::Store::backend_of(uri)
        {
            return invalid("catalog.uri".into(), e.message().to_string());
        }
        let warehouse = self.warehouse_uri();
        if let Err(e) = floe_catalog::Warehouse::new(&warehouse) {
            return invalid("catalog.warehouse".into(), e.message().to_string());
        }
        // Table locations are confined to the warehouse: it must not hold floe's own files
        // (stream logs, catalog.db), or a table could be placed over them.
        if let Some(wh) = self.warehouse_uri().strip_prefix("file://")
            && self.data_dir().starts_with(wh)
        {
            return invalid(
                "catalog.warehouse".into(),
                "must not be server.data_dir or a folder above it (it would contain the stream logs and catalog.db)"
                    .into(),
            );
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            for (j, scope) in t.scopes.iter().enumerate() {
                if let Err(message) = check_scope(scope) {
                    return invalid(format!("auth.tokens[{i}].scopes[{j}]"), message);
                }
            }
        }
        let mut names = HashSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            check_name(&format!("streams[{i}].name"), &s.name)?;
            if !names.insert(s.name.clone()) {
                return invalid(format!("streams[{i}].name"), format!("{:?} is used twice", s.name));
            }
            if let Some(fields) = &s.fields {
                check_fields(&format!("streams[{i}].fields"), fields)?;
            }
            for (j, origin) in s.http.cors_origins.iter().enumerate() {
                if let Err(message) = check_origin(origin) {
                    return invalid(format!("streams[{i}].http.cors_origins[{j}]"), message);
                }
            }
        }
        let mut files_paths = Vec::new();
        for (i, s) in self.sinks.iter().enumerate() {
            check_name(&format!("sinks[{i}].name"), &s.name)?;
            if !names.insert(s.name.clone()) {
                return invalid(
                    format!("sinks[{i}].name"),
                    format!("{:?} is already the name of a stream or sink", s.name),
                );
            }
            match s.ty {
                SinkType::Files => {
                    self.validate_files_sink(i, s, &mut files_paths)?;
                }
                SinkType::Iceberg => {
                    if let Some((key, _)) = files_keys(s).into_iter().find(|(_, set)| *set) {
                        return invalid(
                            format!("sinks[{i}].{key}"),
                            "only a sink of type = \"files\" takes it".into(),
                        );
                    }
                    let Some(table) = &s.table else {
                        return invalid(
                            format!("sinks[{i}].table"),
                            "an iceberg sink needs table = \"namespace.table\"".into(),
                        );
                    };
                    if table.split('.').count() < 2 {
                        return invalid(format!("sinks[{i}].table"), format!("{table:?} is not namespace.table"));
                    }
                    // The catalog's one name rule (floe_catalog::names), level by level.
                    let (namespace, name) = table.rsplit_once('.').unwrap_or_default();
                    if let Err(e) = namespace
                        .split('.')
                        .try_for_each(floe_catalog::names::validate_namespace_level)
                        .and_then(|()| floe_catalog::names::validate_table_name(name))
                    {
                        return invalid(format!("sinks[{i}].table"), e.message().to_string());
                    }
                }
            }
            if s.rolling.interval_seconds == 0 {
                return invalid(
                    format!("sinks[{i}].rolling.interval_seconds"),
                    "must be at least 1".into(),
                );
            }
            if s.rolling.size_mb == 0 {
                return invalid(format!("sinks[{i}].rolling.size_mb"), "must be at least 1".into());
            }
            if s.rolling.memory_mb == 0 {
                return invalid(format!("sinks[{i}].rolling.memory_mb"), "must be at least 1".into());
            }
            if s.rolling.inactivity_seconds == Some(0) {
                return invalid(
                    format!("sinks[{i}].rolling.inactivity_seconds"),
                    "must be at least 1 (leave it out to roll by interval and size only)".into(),
                );
            }
            for (j, p) in s.partition_by.iter().enumerate() {
                if let Err(message) = crate::layout::parse_partition_expr(p) {
                    return invalid(format!("sinks[{i}].partition_by[{j}]"), message);
                }
            }
            if !(1..=MAX_TARGET_FILE_SIZE_MB).contains(&s.target_file_size_mb) {
                return invalid(
                    format!("sinks[{i}].target_file_size_mb"),
                    format!("must be 1 to {MAX_TARGET_FILE_SIZE_MB} (16 GiB)"),
                );
            }
            s.maintenance.validate(&format!("sinks[{i}].maintenance"))?;
            let mut sorted = HashSet::new();
            for (j, k) in s.sort_by.iter().enumerate() {
                match crate::layout::parse_sort_key(k) {
                    Ok(key) if !sorted.insert(key.column.clone()) => {
                        return invalid(
                            format!("sinks[{i}].sort_by[{j}]"),
                            format!("column {:?} is sorted by twice", key.column),
                        );
                    }
                    Ok(_) => {}
                    Err(message) => return invalid(format!("sinks[{i}].sort_by[{j}]"), message),
                }
            }
        }
        let mut pipelines = HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            check_name(&format!("pipelines[{i}].name"), &p.name)?;
            if !pipelines.insert(p.name.clone()) {
                return invalid(format!("pipelines[{i}].name"), format!("{:?} is used twice", p.name));
            }
            if p.max_bad_rows_per_batch == 0 {
                return invalid(
                    format!("pipelines[{i}].max_bad_rows_per_batch"),
                    "must be at least 1 (use on_error = \"fail\" to stop at the first failing row)".into(),
                );
            }
        }
        for (i, p) in self.pipelines.iter().enumerate() {
            let Some(old) = &p.replaces else { continue };
            if *old == p.name {
                return invalid(
                    format!("pipelines[{i}].replaces"),
                    "a pipeline cannot replace itself".into(),
                );
            }
            if pipelines.contains(old) {
                return invalid(
                    format!("pipelines[{i}].replaces"),
                    format!(
                        "{old:?} is still a pipeline of this config; replaces names a pipeline that was renamed away"
                    ),
                );
            }
            if let Some(j) = self.pipelines[..i]
                .iter()
                .position(|o| o.replaces.as_ref() == Some(old))
            {
                return invalid(
                    format!("pipelines[{i}].replaces"),
                    format!("pipelines[{j}] replaces {old:?} already; one pipeline takes over its positions"),
                );
            }
        }
        // The dead letters of stream `s` use the names `s_dead_letter` (internal stream and
        // pipeline) and `s_dead_letter_table` (sink).
        for (i, s) in self.streams.iter().enumerate() {
            if s.on_invalid != OnInvalid::DeadLetter {
                continue;
            }
            for reserved in [
                format!("{}_dead_letter", s.name),
                format!("{}_dead_letter_table", s.name),
            ] {
                if names.contains(&reserved) || pipelines.contains(&reserved) {
                    return invalid(
                        format!("streams[{i}].on_invalid"),
                        format!(
                            "dead_letter needs the name {reserved:?} for the stream's dead letters, but a stream, sink or pipeline already has it"
                        ),
                    );
                }
            }
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_row_bytes == 0 {
            return invalid("limits".into(), "body and row limits must be positive".into());
        }
        if self.limits.max_record_bytes == 0 || self.limits.max_record_bytes > floe_stream::MAX_PAYLOAD_BYTES {
            return invalid(
                "limits.max_record_bytes".into(),
                format!("must be 1 to {} bytes", floe_stream::MAX_PAYLOAD_BYTES),
            );
        }
        if self.limits.idempotency_max_keys == 0 || self.limits.idempotency_max_bytes == 0 {
            return invalid(
                "limits".into(),
                "idempotency_max_keys and idempotency_max_bytes must be positive".into(),
            );
        }
        Ok(())
    }
}

impl Config {
    /// The checks of a files sink `s` (`sinks[i]`); `seen` collects the folders of the files
    /// sinks before it (two sinks must not share one).
    fn validate_files_sink(&self, i: usize, s: &SinkConfig, seen: &mut Vec<String>) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: format!("sinks[{i}].{key}"),
                message,
            })
        };
        if s.table.is_some() {
            return invalid(
                "table",
                "a files sink writes files, not a table: give path = \"folder\" (or \"s3://bucket/prefix\")".into(),
            );
        }
        if !s.partition_by.is_empty() {
            return invalid(
                "partition_by",
                "a files sink places rows in folders by time: use partitioning = \"year=%Y/month=%m/day=%d\" (and time_column)"
                    .into(),
            );
        }
        let Some(path) = s.path.as_deref() else {
            return invalid(
                "path",
                "a files sink needs path = \"folder\" (or \"s3://bucket/prefix\")".into(),
            );
        };
        if path.trim().is_empty() || path.chars().any(char::is_control) {
            return invalid("path", format!("{path:?} is not a folder"));
        }
        let location = self.files_location(path);
        if let Some(rest) = location.strip_prefix("s3://") {
            if rest.split('/').next().is_none_or(str::is_empty) {
                return invalid(
                    "path",
                    format!("{path:?}: an s3:// path needs a bucket: s3://bucket/prefix"),
                );
            }
        } else if let Some(local) = location.strip_prefix("file://") {
            if Path::new(local).parent().is_none() {
                return invalid("path", format!("{path:?}: the files go into a folder below /"));
            }
            if self.data_dir().starts_with(local) {
                return invalid(
                    "path",
                    "must not be server.data_dir or a folder above it (it would contain the stream logs and catalog.db)"
                        .into(),
                );
            }
        } else {
            return invalid(
                "path",
                format!("{path:?}: a files sink writes to a local folder, file:// or s3://"),
            );
        }
        if let Some(j) = seen.iter().position(|p| *p == location) {
            return invalid(
                "path",
                format!("{path:?} is already the folder of another files sink (#{j})"),
            );
        }
        seen.push(location);
        match (s.file_format(), s.compression) {
            (FileFormat::Json, Some(c)) if !matches!(c, Compression::Gzip(_) | Compression::Uncompressed) => {
                return invalid(
                    "compression",
                    format!("{c} is a Parquet codec; JSON files take gzip, gzip(0..9) or uncompressed (none)"),
                );
            }
            _ => {}
        }
        if s.file_format() == FileFormat::Json && !s.bloom_filter_columns.is_empty() {
            return invalid(
                "bloom_filter_columns",
                "bloom filters are a Parquet feature; use format = \"parquet\"".into(),
            );
        }
        if let Err(message) = crate::layout::FolderPattern::parse(s.partitioning()) {
            return invalid("partitioning", message);
        }
        if let Some(c) = &s.time_column
            && c.trim().is_empty()
        {
            return invalid(
                "time_column",
                "must name a timestamp column of the pipeline's output (leave it out for the commit time)".into(),
            );
        }
        if let Some(p) = &s.file_prefix
            && let Err(message) = crate::layout::check_name_part(p, true)
        {
            return invalid("file_prefix", message);
        }
        if let Some(p) = &s.file_suffix
            && let Err(message) = crate::layout::check_name_part(p, false)
        {
            return invalid("file_suffix", message);
        }
        Ok(())
    }
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: key.to_string(),
            message: format!("{name:?}: names use letters, digits, '_' and '-' (at most 128)"),
        })
    }
}

/// A CORS origin as browsers send it: `*`, or `http(s)://host[:port]` with nothing after.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match host {
        Some(h) if !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic() && c != '/') => Ok(()),
        _ => Err(format!(
            "{origin:?} is not an origin: use \"*\" or scheme://host[:port] with no path or trailing slash (e.g. \"https://app.example.com\")"
        )),
    }
}

fn check_fields(key: &str, fields: &[FieldConfig]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        let key = format!("{key}[{i}]");
        if f.name.is_empty() {
            return Err(ConfigError::Invalid {
                key,
                message: "a field needs a name".into(),
            });
        }
        if !seen.insert(f.name.as_str()) {
            return Err(ConfigError::Invalid {
                key,
                message: format!("field {:?} appears twice", f.name),
            });
        }
        check_field_type(&key, f)?;
    }
    Ok(())
}

fn check_field_type(key: &str, f: &FieldConfig) -> Result<(), ConfigError> {
    match f.ty {
        FieldType::List => match &f.items {
            Some(items) => check_field_type(&format!("{key}.items"), items),
            None => Err(ConfigError::Invalid {
                key: key.into(),
                message: "a list needs items = { type = … }".into(),
            }),
        },
        FieldType::Struct => match &f.fields {
            Some(fields) if !fields.is_empty() => check_fields(&format!("{key}.fields"), fields),
            _ => Err(ConfigError::Invalid {
                key: key.into(),
                message: "a struct needs fields = [ … ]".into(),
            }),
        },
        _ if f.items.is_some() || f.fields.is_some() => Err(ConfigError::Invalid {
            key: key.into(),
            message: "items/fields only apply to list/struct".into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::from_toml(DEFAULT_CONFIG, Path::new("x"), Path::new("/tmp")).unwrap();
        assert_eq!(c.streams[0].name, "events");
        assert_eq!(c.warehouse_uri(), "file:///tmp/floe-data/warehouse");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n",
            Path::new("f.toml"),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn table_names_follow_the_catalog_rule() {
        let sink = |table: &str| format!("[[sinks]]\nname = \"s\"\ntype = \"iceberg\"\ntable = {table:?}\n");
        for bad in [
            "..",
            "a..b",
            "analytics./",
            "../x.t",
            "a.b/c",
            "a. b",
            "a.b\\c",
            "a.%2e%2e",
        ] {
            let err = Config::from_toml(&sink(bad), Path::new("f"), Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("sinks[0].table"), "{bad}: {err}");
        }
        assert!(Config::from_toml(&sink("a.b.c_d-e"), Path::new("f"), Path::new("/")).is_ok());
    }

    fn sink_with(extra: &str) -> Result<Config, ConfigError> {
        let text = format!("[[sinks]]\nname = \"s\"\ntype = \"iceberg\"\ntable = \"a.t\"\n{extra}\n");
        Config::from_toml(&text, Path::new("f"), Path::new("/"))
    }

    #[test]
    fn compression_takes_a_level_in_range() {
        let sink = |v: &str| sink_with(&format!("compression = {v:?}")).map(|c| c.sinks[0].parquet_compression());
        assert_eq!(sink("zstd").unwrap(), Compression::Zstd(DEFAULT_ZSTD_LEVEL));
        assert_eq!(sink("ZSTD(9)").unwrap(), Compression::Zstd(9));
        assert_eq!(sink("gzip").unwrap(), Compression::Gzip(DEFAULT_GZIP_LEVEL));
        assert_eq!(sink("gzip(0)").unwrap(), Compression::Gzip(0));
        assert_eq!(sink("lz4").unwrap(), Compression::Lz4);
        assert_eq!(sink("none").unwrap(), Compression::Uncompressed);
        assert_eq!(
            sink_with("").unwrap().sinks[0].parquet_compression(),
            Compression::Zstd(3)
        );
        for (bad, says) in [
            ("zstd(0)", "1 to 22"),
            ("zstd(23)", "1 to 22"),
            ("gzip(10)", "0 to 9"),
            ("zstd(x)", "whole number"),
            ("zstd(3", "codec(N)"),
            ("snappy(1)", "takes no level"),
            ("brotli", "unknown codec"),
        ] {
            let err = sink(bad).unwrap_err().to_string();
            assert!(err.contains("compression") && err.contains(says), "{bad}: {err}");
        }
        assert_eq!(Compression::Zstd(7).to_string(), "zstd(7)");
        assert_eq!(Compression::Snappy.to_string(), "snappy");
    }

    #[test]
    fn row_group_size_is_rows_or_bytes() {
        let size = |v: &str| sink_with(&format!("row_group_size = {v}")).map(|c| c.sinks[0].row_group_size);
        assert_eq!(size("1000").unwrap(), RowGroupSize::Rows(1000));
        assert_eq!(size("\"64MiB\"").unwrap(), RowGroupSize::Bytes(64 << 20));
        assert_eq!(size("\"2 GB\"").unwrap(), RowGroupSize::Bytes(2_000_000_000));
        assert_eq!(
            sink_with("").unwrap().sinks[0].row_group_size,
            RowGroupSize::Bytes(DEFAULT_ROW_GROUP_BYTES)
        );
        for bad in [
            "0",
            "-5",
            "\"12\"",
            "\"64 parsecs\"",
            "\"100B\"",
            "1.5",
            "\"99999999999GiB\"",
        ] {
            let err = size(bad).unwrap_err().to_string();
            assert!(err.contains("row_group_size"), "{bad}: {err}");
        }
    }

    #[test]
    fn sort_by_and_target_file_size_are_checked() {
        assert_eq!(
            sink_with("sort_by = [\"ns\", \"ts DESC NULLS FIRST\"]").unwrap().sinks[0]
                .sort_by
                .len(),
            2
        );
        for (bad, key) in [
            ("sort_by = [\"ts sideways\"]", "sinks[0].sort_by[0]"),
            ("sort_by = [\"ns\", \"ns DESC\"]", "sinks[0].sort_by[1]"),
            ("target_file_size_mb = 0", "sinks[0].target_file_size_mb"),
            ("target_file_size_mb = 16385", "sinks[0].target_file_size_mb"),
        ] {
            let err = sink_with(bad).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    fn files_sink(extra: &str) -> Result<Config, ConfigError> {
        let text = format!("[[sinks]]\nname = \"f\"\ntype = \"files\"\npath = \"out/events\"\n{extra}\n");
        Config::from_toml(&text, Path::new("f"), Path::new("/base"))
    }

    #[test]
    fn files_sinks_take_their_keys_with_defaults() {
        let c = files_sink("").unwrap();
        let s = &c.sinks[0];
        assert_eq!(c.files_location(s.path.as_deref().unwrap()), "file:///base/out/events");
        assert_eq!(s.file_format(), FileFormat::Json);
        assert_eq!(s.json_gzip(), Some(DEFAULT_GZIP_LEVEL));
        assert_eq!(s.file_suffix(), ".json.gz");
        assert_eq!(s.partitioning(), "year=%Y/month=%m/day=%d");
        assert_eq!(s.file_naming(), FileNaming::Uuid);
        assert_eq!(s.time_column, None);
        let c = files_sink("compression = \"none\"").unwrap();
        assert_eq!(
            (c.sinks[0].json_gzip(), c.sinks[0].file_suffix().as_str()),
            (None, ".json")
        );
        let c = files_sink("compression = \"gzip(9)\"").unwrap();
        assert_eq!(c.sinks[0].json_gzip(), Some(9));
        let c = files_sink(
            "format = \"parquet\"\ncompression = \"snappy\"\npartitioning = \"dt=%Y-%m-%d/hour=%H\"\n\
             time_column = \"ts\"\nfile_naming = \"sequence\"\nfile_prefix = \"part-\"\nfile_suffix = \".pq\"\n\
             sort_by = [\"id\"]\nbloom_filter_columns = [\"id\"]",
        )
        .unwrap();
        let s = &c.sinks[0];
        assert_eq!(
            (
                s.file_format(),
                s.parquet_compression(),
                s.file_naming(),
                s.file_suffix().as_str()
            ),
            (FileFormat::Parquet, Compression::Snappy, FileNaming::Sequence, ".pq")
        );
        assert_eq!(
            s.target().as_deref(),
            Some("out/events"),
            "resolved by the topology, not here"
        );
        assert_eq!(
            files_sink("format = \"parquet\"").unwrap().sinks[0].file_suffix(),
            ".parquet"
        );
        let c = files_sink("file_naming = \"ulid\"\npartitioning = \"\"").unwrap();
        assert_eq!(c.sinks[0].file_naming(), FileNaming::Ulid);
        // Locations: absolute, file:// and s3:// as written; a trailing slash goes.
        let c = files_sink("").unwrap();
        assert_eq!(c.files_location("/abs/x/"), "file:///abs/x");
        assert_eq!(c.files_location("file:///abs/y"), "file:///abs/y");
        assert_eq!(c.files_location("s3://bucket/prefix/"), "s3://bucket/prefix");
    }

    #[test]
    fn files_sink_errors_name_the_key() {
        for (extra, key) in [
            ("table = \"a.t\"", "sinks[0].table"),
            ("partition_by = [\"ns\"]", "sinks[0].partition_by"),
            ("compression = \"zstd\"", "sinks[0].compression"),
            ("compression = \"lz4\"", "sinks[0].compression"),
            ("bloom_filter_columns = [\"id\"]", "sinks[0].bloom_filter_columns"),
            ("partitioning = \"%Q\"", "sinks[0].partitioning"),
            ("partitioning = \"year=%Y/../x\"", "sinks[0].partitioning"),
            ("partitioning = \"_floe/%Y\"", "sinks[0].partitioning"),
            ("partitioning = \"/%Y\"", "sinks[0].partitioning"),
            ("time_column = \" \"", "sinks[0].time_column"),
            ("file_prefix = \"a/b\"", "sinks[0].file_prefix"),
            ("file_prefix = \"_x\"", "sinks[0].file_prefix"),
            ("file_suffix = \"..json\"", "sinks[0].file_suffix"),
            ("file_suffix = \"a\\u0001\"", "sinks[0].file_suffix"),
            ("file_naming = \"random\"", "file_naming"),
            ("format = \"csv\"", "format"),
        ] {
            let err = files_sink(extra).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let no_path = "[[sinks]]\nname = \"f\"\ntype = \"files\"\n";
        let err = Config::from_toml(no_path, Path::new("f"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[0].path"), "{err}");
        for bad in ["", "s3://", "s3:///x", "ftp://h/x", "/"] {
            let text = format!("[[sinks]]\nname = \"f\"\ntype = \"files\"\npath = {bad:?}\n");
            let err = Config::from_toml(&text, Path::new("f"), Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("sinks[0].path"), "{bad:?}: {err}");
        }
        // Not the data dir or above it; not another files sink's folder.
        let text = "[server]\ndata_dir = \"/d/floe\"\n[[sinks]]\nname = \"f\"\ntype = \"files\"\npath = \"/d\"\n";
        let err = Config::from_toml(text, Path::new("f"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[0].path"), "{err}");
        let text = "[[sinks]]\nname = \"a\"\ntype = \"files\"\npath = \"/x/o\"\n\
                    [[sinks]]\nname = \"b\"\ntype = \"files\"\npath = \"file:///x/o/\"\n";
        let err = Config::from_toml(text, Path::new("f"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[1].path"), "{err}");
        // The files-only keys on an iceberg sink.
        for key in [
            "path = \"x\"",
            "format = \"json\"",
            "time_column = \"ts\"",
            "file_prefix = \"p\"",
        ] {
            let err = sink_with(key).unwrap_err().to_string();
            let name = key.split(' ').next().unwrap();
            assert!(err.contains(&format!("sinks[0].{name}")), "{key}: {err}");
        }
    }

    #[test]
    fn warehouse_must_not_contain_the_data_dir() {
        for wh in ["/d", "/", "file:///d"] {
            let text = format!("[server]\ndata_dir = \"/d/floe\"\n[catalog]\nwarehouse = {wh:?}\n");
            let err = Config::from_toml(&text, Path::new("f"), Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("catalog.warehouse"), "{wh}: {err}");
        }
        let ok = "[server]\ndata_dir = \"/d/floe\"\n[catalog]\nwarehouse = \"/d/wh\"\n";
        assert!(Config::from_toml(ok, Path::new("f"), Path::new("/")).is_ok());
    }

    #[test]
    fn s3_warehouse_settings() {
        let no_env = |_: &str| None;
        let parse = |text: &str| Config::from_toml(text, Path::new("f"), Path::new("/"));
        let with_keys = "[catalog]\nwarehouse = \"s3://lake/floe\"\n[catalog.s3]\nendpoint = \"http://127.0.0.1:9000\"\n\
                         access_key_id = \"k\"\nsecret_access_key = \"s\"\npath_style = true\n";
        let c = parse(with_keys).expect("valid");
        assert_eq!(c.warehouse_uri(), "s3://lake/floe");
        let o = c.catalog.s3.clone().expect("s3").options(no_env);
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(o.path_style && !o.instance_credentials);
        assert_eq!(o.region(), "us-east-1");
        // The secret is never printed.
        assert!(!format!("{o:?}").contains("\"s\""), "{o:?}");
        // Keys from the environment; the file wins over it.
        let mut bare = parse("[catalog]\nwarehouse = \"/wh\"\n").expect("valid");
        bare.catalog.s3 = Some(S3Config {
            region: Some("auto".into()),
            ..S3Config::default()
        });
        let env = |n: &str| match n {
            "AWS_ACCESS_KEY_ID" => Some("ek".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("es".to_string()),
            "AWS_REGION" => Some("eu-west-1".to_string()),
            _ => None,
        };
        let o = bare.catalog.s3.clone().expect("s3").options(env);
        assert_eq!(o.access_key_id.as_deref(), Some("ek"));
        assert_eq!(o.secret_access_key.as_deref(), Some("es"));
        assert_eq!(o.region(), "auto");
        assert!(bare.check_s3("s3://lake", env).is_ok());
        let err = bare.check_s3("s3://lake", no_env).unwrap_err().to_string();
        assert!(err.contains("catalog.s3") && err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        let c = parse(with_keys).expect("valid");
        let mut bad = c.clone();
        bad.catalog.s3.as_mut().expect("s3").endpoint = Some("127.0.0.1:9000".into());
        let err = bad.check_s3("s3://lake/floe", no_env).unwrap_err().to_string();
        assert!(err.contains("catalog.s3.endpoint"), "{err}");
        // [catalog.s3] next to a local warehouse, and warehouses that are no warehouse.
        let err = c.check_s3("file:///wh", no_env).unwrap_err().to_string();
        assert!(err.contains("catalog.s3") && err.contains("s3:// location"), "{err}");
        for wh in ["s3://", "s3://A_B/x", "s3://lake/a/../b", "gs://lake/x"] {
            let text = format!("[catalog]\nwarehouse = {wh:?}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("catalog.warehouse"), "{wh}: {err}");
        }
        // Unknown keys are refused.
        assert!(parse("[catalog]\nwarehouse = \"s3://lake\"\n[catalog.s3]\nsecret = \"x\"\n").is_err());
    }

    #[test]
    fn cors_origins_must_be_origins() {
        let stream = |origin: &str| format!("[[streams]]\nname = \"e\"\nhttp = {{ cors_origins = [{origin:?}] }}\n");
        for bad in [
            "https://app.example.com/",
            "app.example.com",
            "https://",
            "ftp://x",
            "https://a b",
        ] {
            let err = Config::from_toml(&stream(bad), Path::new("f"), Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("streams[0].http.cors_origins[0]"), "{bad}: {err}");
        }
        for good in ["*", "https://app.example.com", "http://localhost:3000"] {
            assert!(
                Config::from_toml(&stream(good), Path::new("f"), Path::new("/")).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn inactivity_of_zero_is_refused() {
        let text =
            "[[sinks]]\nname = \"s\"\ntype = \"iceberg\"\ntable = \"a.b\"\nrolling = { inactivity_seconds = 0 }\n";
        let err = Config::from_toml(text, Path::new("f"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[0].rolling.inactivity_seconds"), "{err}");
    }

    #[test]
    fn bad_partition_is_named() {
        let text = r#"
[[sinks]]
name = "s"
type = "iceberg"
table = "a.b"
partition_by = ["week(ts)"]
"#;
        let err = Config::from_toml(text, Path::new("f"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[0].partition_by[0]"), "{err}");
    }

    #[test]
    fn maintenance_from_table_properties() {
        let props = |kv: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        // Not opted in: left alone, whatever else is set.
        assert_eq!(Maintenance::from_table_properties(&props(&[])).unwrap(), None);
        let off = props(&[
            ("floe.maintenance.enabled", "false"),
            ("floe.maintenance.interval", "1h"),
        ]);
        assert_eq!(Maintenance::from_table_properties(&off).unwrap(), None);
        let on = props(&[
            ("floe.maintenance.enabled", "true"),
            ("floe.maintenance.min-input-files", "3"),
            ("floe.maintenance.rewrite_manifests", "false"),
            ("floe.maintenance.interval", "30s"),
            ("history.expire.max-snapshot-age-ms", "3600000"),
            ("history.expire.min-snapshots-to-keep", "4"),
            ("write.format.default", "parquet"),
        ]);
        let policy = Maintenance::from_table_properties(&on).unwrap().expect("opted in");
        assert_eq!(policy.min_input_files, 3);
        assert!(!policy.rewrite_manifests);
        assert_eq!(policy.interval_ms(), 30_000);
        assert_eq!(policy.expire_older_than_ms(), Some(3_600_000));
        assert_eq!(policy.retain_last, 4);
        // floe's own key wins over the standard one.
        let mut both = on.clone();
        both.insert("floe.maintenance.retain-last".into(), "7".into());
        assert_eq!(
            Maintenance::from_table_properties(&both).unwrap().unwrap().retain_last,
            7
        );
        // Errors name the property as the table spells it.
        for (k, v, named) in [
            ("floe.maintenance.retain-last", "0", "floe.maintenance.retain-last"),
            ("floe.maintenance.retain-last", "many", "floe.maintenance.retain-last"),
            ("floe.maintenance.compact", "yes", "floe.maintenance.compact"),
            ("floe.maintenance.interval", "1s", "floe.maintenance.interval"),
            (
                "floe.maintenance.orphan-older-than",
                "5m",
                "floe.maintenance.orphan-older-than",
            ),
            ("floe.maintenance.typo", "1", "floe.maintenance.typo"),
            (
                "history.expire.min-snapshots-to-keep",
                "0",
                "history.expire.min-snapshots-to-keep",
            ),
            (
                "history.expire.max-snapshot-age-ms",
                "-5",
                "history.expire.max-snapshot-age-ms",
            ),
        ] {
            let bad = props(&[("floe.maintenance.enabled", "true"), (k, v)]);
            let err = Maintenance::from_table_properties(&bad).expect_err(k).to_string();
            assert!(err.contains(named), "{k}={v}: {err}");
        }
    }
}
