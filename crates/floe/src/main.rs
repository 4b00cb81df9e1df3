//! The `floe` command line: `serve`, `send`, `sql`, `get`, `streams|sinks|pipelines …`,
//! `catalog`, `tokens`, `table compact|expire-snapshots|remove-orphans|delete` (documented in
//! `docs/cli.md`). The commands that talk to a running server are in `floe::cli`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use floe::cli::control::{PipelinesCommand, SinksCommand, StreamsCommand, TokensCommand};
use floe::config::Config;
use floe::query::OutputFormat;
use floe_catalog::FloeCatalog;

#[derive(Parser)]
#[command(
    name = "floe",
    version,
    about = "JSON events → durable stream → SQL → exactly-once Iceberg tables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (ingest, pipelines, catalog, query).
    Serve {
        /// Config file; default ./floe.toml when present, else built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Send NDJSON or a JSON array to a stream, in batches; reports accepted and rejected rows.
    Send {
        /// Stream name.
        stream: String,
        /// File to send; `-` or absent for standard input.
        file: Option<PathBuf>,
        /// Server URL.
        #[arg(long, env = "FLOE_URL", default_value = floe_client::DEFAULT_URL)]
        url: String,
        /// Bearer token (scope `send:<stream>`, for a stream with `http.auth`); default
        /// `$FLOE_TOKEN`.
        #[arg(long, env = "FLOE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Run SQL over the tables (`namespace.table`).
    Sql {
        /// The query.
        query: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Config file (to find the catalog and `[limits]`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write the result to this file instead of standard output (needed for arrow/parquet
        /// on a terminal).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Point lookup: rows of NS.TABLE where every `column=value` holds (via the server).
    Get {
        /// `namespace.table`.
        table: String,
        /// `column=value` predicates (values typed by the column).
        #[arg(value_name = "COLUMN=VALUE")]
        predicates: Vec<String>,
        /// Most rows returned.
        #[arg(long)]
        limit: Option<usize>,
        /// Read this snapshot instead of the current one.
        #[arg(long)]
        snapshot_id: Option<i64>,
        /// Read the snapshot current at this time (RFC 3339 or epoch milliseconds).
        #[arg(long)]
        as_of: Option<String>,
        /// Server URL.
        #[arg(long, env = "FLOE_URL", default_value = floe_client::DEFAULT_URL)]
        url: String,
        /// Bearer token (scope `read`); default `$FLOE_TOKEN`.
        #[arg(long, env = "FLOE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Streams of a running server: create, list, get, update, delete (docs/control-plane.md).
    Streams {
        #[command(subcommand)]
        command: StreamsCommand,
    },
    /// Sinks of a running server: create, list, get, update, delete.
    Sinks {
        #[command(subcommand)]
        command: SinksCommand,
    },
    /// Create a stream, a sink and a pipeline on a running server by answering questions
    /// (enter accepts each default); nothing is created until you confirm.
    Setup {
        /// `--url`, `--token`.
        #[command(flatten)]
        connect: floe::cli::ConnectArgs,
    },
    /// Tokens of a running server: create (shown once), list, revoke (docs/security.md).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Pipelines: create, list, get, update, history, delete on a running server; `validate`
    /// offline.
    Pipelines {
        #[command(subcommand)]
        command: PipelinesCommand,
    },
    /// Print how to connect to the catalog from other engines.
    Catalog {
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Table maintenance: compaction, manifest rewrite, snapshot expiry, orphan cleanup, deletes
    /// (docs/maintenance.md).
    Table {
        #[command(subcommand)]
        command: TableCommand,
    },
}

/// Options every `floe table …` command takes.
#[derive(clap::Args)]
struct TableArgs {
    /// `namespace.table`.
    table: String,
    /// Plan and report only: change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Config file (to find the catalog and warehouse).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TableCommand {
    /// Bin-pack small data files into files near the target size (a `replace` snapshot).
    Compact {
        #[command(flatten)]
        args: TableArgs,
        /// Target file size in MiB, 1 to 16384 (default: the table's write.target-file-size-bytes, else 128).
        #[arg(long)]
        target_file_size_mb: Option<u64>,
        /// Files below this size in MiB are compacted (default: three quarters of the target).
        #[arg(long)]
        small_file_size_mb: Option<u64>,
    },
    /// Merge small data manifests into few, clustered by partition (a `replace` snapshot that
    /// changes no data file).
    RewriteManifests {
        #[command(flatten)]
        args: TableArgs,
        /// Rewrite only when at least this many data manifests are below the target size.
        #[arg(long, default_value_t = floe::maintenance::manifests::DEFAULT_MIN_INPUT_MANIFESTS)]
        min_input_manifests: usize,
    },
    /// Expire snapshots and delete the files only they referenced.
    ExpireSnapshots {
        #[command(flatten)]
        args: TableArgs,
        /// Expire snapshots older than this (`7d`, `12h`, `0` for all but the retained).
        #[arg(long, default_value = "7d")]
        older_than: String,
        /// Keep at least this many newest snapshots of each branch.
        #[arg(long, default_value_t = floe::maintenance::expire::DEFAULT_RETAIN_LAST)]
        retain_last: usize,
    },
    /// Delete the rows a SQL condition selects (copy-on-write: one delete/overwrite snapshot).
    Delete {
        #[command(flatten)]
        args: TableArgs,
        /// The rows to delete: a SQL boolean expression over the table's columns.
        #[arg(long = "where", value_name = "CONDITION")]
        condition: String,
    },
    /// Delete files under the table location that no metadata references.
    RemoveOrphans {
        #[command(flatten)]
        args: TableArgs,
        /// Only files older than this (`1d`, `6h`); younger ones may belong to a commit in flight.
        #[arg(long, default_value = "1d")]
        older_than: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
    Arrow,
    Parquet,
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOE_LOG").unwrap_or_else(|_| "warn,floe=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            floe::server::serve(config).await?;
        }
        Command::Send {
            stream,
            file,
            url,
            token,
        } => return floe::cli::send(&stream, file, &url, token.as_deref()).await,
        Command::Sql {
            query,
            format,
            config,
            output,
        } => {
            let config = Config::load(config.as_deref())?;
            let catalog = open_catalog(&config).await?;
            let result = floe::query::run_sql(&catalog, &query, &config.limits).await?;
            let format = match format {
                Format::Table => OutputFormat::Table,
                Format::Json => OutputFormat::Json,
                Format::Csv => OutputFormat::Csv,
                Format::Arrow => OutputFormat::Arrow,
                Format::Parquet => OutputFormat::Parquet,
            };
            let mut out = floe::query::render(&result, format)?;
            if format == OutputFormat::Json {
                out.push(b'\n');
            }
            match output {
                Some(path) => std::fs::write(&path, &out).with_context(|| format!("write {}", path.display()))?,
                None => {
                    if matches!(format, OutputFormat::Arrow | OutputFormat::Parquet)
                        && std::io::IsTerminal::is_terminal(&std::io::stdout())
                    {
                        bail!("--format arrow|parquet writes binary: pass --output FILE or redirect stdout");
                    }
                    std::io::stdout().write_all(&out)?;
                }
            }
        }
        Command::Get {
            table,
            predicates,
            limit,
            snapshot_id,
            as_of,
            url,
            token,
        } => {
            let lookup = floe_client::Lookup {
                predicates: Vec::new(),
                limit,
                snapshot_id,
                as_of,
            };
            return floe::cli::get(&table, &predicates, lookup, &url, token.as_deref()).await;
        }
        Command::Streams { command } => return Ok(floe::cli::control::streams(command).await),
        Command::Sinks { command } => return Ok(floe::cli::control::sinks(command).await),
        Command::Pipelines { command } => return Ok(floe::cli::control::pipelines(command).await),
        Command::Tokens { command } => return Ok(floe::cli::control::tokens(command).await),
        Command::Setup { connect } => return Ok(floe::cli::setup::run(&connect).await),
        Command::Catalog { config } => {
            let config = Config::load(config.as_deref())?;
            print_catalog(&config);
        }
        Command::Table { command } => return table(command).await,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `floe table …`: runs one maintenance step and prints its report (a human summary, or
/// `--json`); exit 0 when it ran (also when there was nothing to do), 1 on an error.
async fn table(command: TableCommand) -> anyhow::Result<std::process::ExitCode> {
    use floe::maintenance::{Bar, Progress, Quiet, compact, delete, expire, manifests, orphans, parse_duration_ms};
    let args = match &command {
        TableCommand::Compact { args, .. }
        | TableCommand::RewriteManifests { args, .. }
        | TableCommand::ExpireSnapshots { args, .. }
        | TableCommand::Delete { args, .. }
        | TableCommand::RemoveOrphans { args, .. } => args,
    };
    let config = Config::load(args.config.as_deref())?;
    let ident = floe::lookup::parse_table_ident(&args.table)?;
    let catalog = open_catalog(&config).await?;
    let bar = Bar::default();
    let progress: &dyn Progress = if args.json { &Quiet } else { &bar };
    let dry = if args.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let json = match &command {
        TableCommand::Compact {
            args,
            target_file_size_mb,
            small_file_size_mb,
        } => {
            let table = iceberg::Catalog::load_table(&catalog, &ident).await?;
            let target = match target_file_size_mb {
                Some(mb) => compact::check_target_file_bytes(mb.saturating_mul(1024 * 1024))
                    .map_err(|e| anyhow::anyhow!("--target-file-size-mb {mb}: {e}"))?,
                None => compact::table_target_file_bytes(table.metadata().properties())
                    .map_err(|e| anyhow::anyhow!("{e}; give --target-file-size-mb"))?,
            };
            let mut options = compact::CompactOptions::with_target(target);
            if let Some(mb) = small_file_size_mb {
                options.small_file_bytes = mb.saturating_mul(1024 * 1024);
            }
            options.dry_run = args.dry_run;
            let r = compact::compact(&catalog, &ident, &options, progress).await?;
            if !args.json {
                println!(
                    "{ident}: data files {} → {}, {:.1} MiB → {:.1} MiB; rewrote {} files ({:.1} MiB) into {} in {} commit(s){dry}",
                    r.files_before,
                    r.files_after,
                    mib(r.bytes_before),
                    mib(r.bytes_after),
                    r.files_rewritten,
                    mib(r.bytes_rewritten),
                    r.files_written,
                    r.commits
                );
                if let Some(why) = &r.skipped {
                    println!("nothing compacted: {why}");
                }
                if r.abandoned > 0 {
                    println!(
                        "a rewrite lost to another commit of the same files and was abandoned; run again to compact the rest"
                    );
                }
            }
            serde_json::to_value(&r)?
        }
        TableCommand::RewriteManifests {
            args,
            min_input_manifests,
        } => {
            if *min_input_manifests < 2 {
                bail!("--min-input-manifests must be at least 2");
            }
            let options = manifests::ManifestOptions {
                min_input_manifests: *min_input_manifests,
                dry_run: args.dry_run,
            };
            let r = manifests::rewrite_manifests(&catalog, &ident, &options, progress).await?;
            if !args.json {
                println!(
                    "{ident}: data manifests {} → {}; merged {} ({:.1} MiB) into {} in {} commit(s){dry}",
                    r.manifests_before,
                    r.manifests_after,
                    r.manifests_rewritten,
                    mib(r.bytes_rewritten),
                    r.manifests_written,
                    r.commits
                );
                if let Some(why) = &r.skipped {
                    println!("nothing rewritten: {why}");
                }
                if r.abandoned > 0 {
                    println!("a rewrite lost to another commit of the same manifests and was abandoned; run again");
                }
            }
            serde_json::to_value(&r)?
        }
        TableCommand::ExpireSnapshots {
            args,
            older_than,
            retain_last,
        } => {
            if *retain_last == 0 {
                bail!("--retain-last must be at least 1 (the current snapshot is always kept)");
            }
            let options = expire::ExpireOptions {
                older_than_ms: parse_duration_ms(older_than)?,
                retain_last: *retain_last,
                dry_run: args.dry_run,
            };
            let r = expire::expire(&catalog, &ident, &options, progress).await?;
            if !args.json {
                println!(
                    "{ident}: snapshots {} → {}; deleted {} files{dry}",
                    r.snapshots_before, r.snapshots_after, r.files_deleted
                );
                if r.delete_failures > 0 {
                    println!(
                        "{} files could not be deleted (see the log); remove-orphans will",
                        r.delete_failures
                    );
                }
            }
            serde_json::to_value(&r)?
        }
        TableCommand::Delete { args, condition } => {
            let r = delete::delete_rows(
                &catalog,
                &ident,
                &delete::Condition::Sql(condition.clone()),
                args.dry_run,
                progress,
            )
            .await?;
            if !args.json {
                println!(
                    "{ident}: rows {} → {}; {} files dropped whole, {} rewritten into {} ({} of {} files read){dry}",
                    r.rows_before,
                    r.rows_before - r.rows_deleted,
                    r.files_dropped,
                    r.files_rewritten,
                    r.files_written,
                    r.files_read,
                    r.files_scanned
                );
            }
            serde_json::to_value(&r)?
        }
        TableCommand::RemoveOrphans { args, older_than } => {
            let options = orphans::OrphanOptions {
                older_than_ms: parse_duration_ms(older_than)?,
                dry_run: args.dry_run,
            };
            let r = orphans::remove_orphans(&catalog, &ident, &options, progress).await?;
            if !args.json {
                println!(
                    "{ident}: files {} → {} ({:.1} MiB → {:.1} MiB); deleted {} orphans, kept {} younger than {older_than} and {} of commits in flight{dry}",
                    r.files_listed,
                    r.files_listed - if args.dry_run { 0 } else { r.files_deleted },
                    mib(r.bytes_listed),
                    mib(r.bytes_listed - if args.dry_run { 0 } else { r.bytes_deleted }),
                    r.files_deleted,
                    r.kept_young,
                    r.kept_in_flight
                );
            }
            serde_json::to_value(&r)?
        }
    };
    if args.json {
        println!("{json}");
    }
    catalog.close().await;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn open_catalog(config: &Config) -> anyhow::Result<FloeCatalog> {
    if config.catalog.uri.is_none() {
        let db = config.catalog_db();
        if !db.exists() {
            bail!(
                "no catalog at {} (has `floe serve` run with this config?)",
                db.display()
            );
        }
    }
    Ok(FloeCatalog::connect_with_storage(
        &config.catalog_uri(),
        &config.catalog.name,
        &config.warehouse_uri(),
        &config.s3_options(),
    )
    .await?)
}

/// How outside engines open the catalog database directly (without a running server): the
/// lines of `floe catalog` after "Without a running server".
fn direct_access(config: &Config, name: &str, wh: &str) -> String {
    match config.catalog.uri.as_deref() {
        Some(uri)
            if matches!(
                floe_catalog::Store::backend_of(uri),
                Ok(floe_catalog::Backend::Postgres)
            ) =>
        {
            // postgres://user:pass@host:port/db → SQLAlchemy and JDBC spellings.
            let (_, auth, hostdb) = split_uri(uri);
            let at = auth.map(|a| format!("{a}@")).unwrap_or_default();
            let (user, password) = auth.map_or(("", ""), |a| a.split_once(':').unwrap_or((a, "")));
            format!(
                "Without a running server, the PostgreSQL catalog directly:
  PyIceberg (pip install 'pyiceberg[sql-postgres]'):
    from pyiceberg.catalog.sql import SqlCatalog
    catalog = SqlCatalog({name:?}, uri=\"postgresql+psycopg2://{at}{hostdb}\", warehouse=\"{wh}\")
  Spark (JdbcCatalog):
    --conf spark.sql.catalog.{name}=org.apache.iceberg.spark.SparkCatalog
    --conf spark.sql.catalog.{name}.catalog-impl=org.apache.iceberg.jdbc.JdbcCatalog
    --conf spark.sql.catalog.{name}.uri=jdbc:postgresql://{hostdb}
    --conf spark.sql.catalog.{name}.jdbc.user={user}
    --conf spark.sql.catalog.{name}.jdbc.password={password}
    --conf spark.sql.catalog.{name}.warehouse={wh}"
            )
        }
        _ => {
            let db = config
                .catalog
                .uri
                .as_deref()
                .and_then(floe_catalog::store::sqlite_file)
                .unwrap_or_else(|| config.catalog_db())
                .display()
                .to_string();
            format!(
                "Without a running server, the SQLite file directly:
  PyIceberg:
    from pyiceberg.catalog.sql import SqlCatalog
    catalog = SqlCatalog({name:?}, uri=\"sqlite:///{db}\", warehouse=\"{wh}\")
  DuckDB (read the current metadata file):
    SELECT * FROM iceberg_scan((SELECT metadata_location FROM sqlite_scan('{db}', 'iceberg_tables')
                                WHERE table_namespace = 'analytics' AND table_name = 'events'));
  Spark (JdbcCatalog):
    --conf spark.sql.catalog.{name}=org.apache.iceberg.spark.SparkCatalog
    --conf spark.sql.catalog.{name}.catalog-impl=org.apache.iceberg.jdbc.JdbcCatalog
    --conf spark.sql.catalog.{name}.uri=jdbc:sqlite:{db}
    --conf spark.sql.catalog.{name}.warehouse={wh}"
            )
        }
    }
}

fn print_catalog(config: &Config) {
    let wh = config.warehouse_uri();
    let name = &config.catalog.name;
    // The REST catalog is served on floe's own listener; a wildcard address is reached on loopback.
    let listen = config
        .server
        .listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "127.0.0.1:");
    let uri = format!("http://{listen}/iceberg");
    let token_note = if config.auth.tokens.is_empty() {
        ""
    } else {
        "\n  (tokens are configured: add your token — PyIceberg token=\"…\", Spark .token=…, DuckDB SECRET)"
    };
    println!(
        "floe catalog {name:?}
  Iceberg REST catalog:         {uri}   (served by `floe serve`)
  warehouse:                    {wh}
  catalog database:             {db}{token_note}

PyIceberg (REST):
  from pyiceberg.catalog.rest import RestCatalog
  catalog = RestCatalog({name:?}, uri=\"{uri}\")
  catalog.load_table(\"analytics.events\").scan().to_arrow()

Spark (REST catalog):
  --conf spark.sql.catalog.{name}=org.apache.iceberg.spark.SparkCatalog
  --conf spark.sql.catalog.{name}.type=rest
  --conf spark.sql.catalog.{name}.uri={uri}
  --conf spark.sql.catalog.{name}.warehouse={name}

DuckDB (REST catalog):
  INSTALL iceberg; LOAD iceberg;
  ATTACH '' AS {name} (TYPE iceberg, ENDPOINT '{uri}', AUTHORIZATION_TYPE 'none');
  SELECT * FROM {name}.analytics.events;

{s3}{direct}",
        s3 = s3_note(config),
        db = match &config.catalog.uri {
            Some(uri) => masked_uri(uri),
            None => config.catalog_db().display().to_string(),
        },
        direct = direct_access(config, name, &wh),
    );
}

/// For an `s3://` warehouse: what readers need besides the catalog (never the secret itself).
fn s3_note(config: &Config) -> String {
    if !config.warehouse_uri().starts_with("s3://") {
        return String::new();
    }
    let s3 = config.s3_options();
    let endpoint = s3.endpoint.clone().unwrap_or_else(|| "AWS S3".to_string());
    let vended = if config.catalog.s3.as_ref().is_some_and(|c| c.vend_credentials) {
        "endpoint, region, path style and keys (vend_credentials = true, to callers that may write)"
    } else {
        "endpoint, region and path style; clients bring their own keys"
    };
    let (host, ssl) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (rest.trim_end_matches('/').to_string(), scheme == "https"),
        None => (endpoint.clone(), true),
    };
    format!(
        "The tables are on S3 ({endpoint}, region {region}, path style {path_style}); the REST catalog
hands out the {vended}.
  PyIceberg without it: add s3.endpoint=\"{endpoint}\", s3.region=\"{region}\", s3.access-key-id=\"…\",
    s3.secret-access-key=\"…\" to the catalog's properties
  DuckDB: CREATE SECRET (TYPE s3, KEY_ID '…', SECRET '…', REGION '{region}', ENDPOINT '{host}',
    URL_STYLE '{style}', USE_SSL {ssl});

",
        region = s3.region(),
        path_style = s3.path_style,
        style = if s3.path_style { "path" } else { "vhost" },
    )
}

/// A catalog URI with any password replaced by `***`, for printing.
fn masked_uri(uri: &str) -> String {
    match split_uri(uri) {
        (Some(scheme), Some(auth), host) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => uri.to_string(),
        },
        _ => uri.to_string(),
    }
}

/// `scheme://auth@rest` → (scheme, auth, rest); the parts a URI lacks are `None` (and `rest` is
/// what is left).
fn split_uri(uri: &str) -> (Option<&str>, Option<&str>, &str) {
    let (scheme, rest) = match uri.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, uri),
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => (scheme, Some(auth), host),
        None => (scheme, None, rest),
    }
}
