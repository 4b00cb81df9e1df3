//! `floe streams|sinks|pipelines …`: the control plane (docs/control-plane.md) from the command
//! line, through [`floe_client`]. Each command builds the request's JSON from its flags, sends it
//! to `--url`, and prints the answer as a table or `key: value` lines, or with `--json` the
//! server's JSON. `floe pipelines validate` is here too; it is local (no server).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use floe_client::{Client, DeleteOptions, Error, Kind, Object, PipelineVersions};
use serde_json::{Map, Value, json};

use super::{ConnectArgs, fail, read_file, usage};
use crate::config::Config;

/// Options of every control-plane command: where the server is, and the output.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ControlArgs {
    /// `--url`, `--token`.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the server's JSON answer (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--set KEY=VALUE`: keys without a flag of their own.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct SetArgs {
    /// Any key of the object, dotted (`rolling.memory_mb=64`, `http.enabled=false`,
    /// `on_error=fail`); the value is JSON when it parses as JSON, else a string; in an update,
    /// `null` puts the key back to its default. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// `floe streams …`
#[derive(Subcommand, Debug)]
pub enum StreamsCommand {
    /// Create a stream.
    Create {
        /// The stream's name.
        name: String,
        /// A schema file in the managed product's format (JSON, `{"fields": [...]}`), sent as
        /// `schema`. Without it (and without `--set fields=[…]`) the stream is unstructured.
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
        /// Ingest needs a token with scope `send:<name>` (`http.auth = true`).
        #[arg(long)]
        auth: bool,
        /// A browser origin allowed to call the ingest route (`http.cors_origins`). Repeatable.
        #[arg(long = "cors-origin", value_name = "ORIGIN")]
        cors_origins: Vec<String>,
        /// What an invalid row does (`on_invalid`).
        #[arg(long, value_parser = ["reject", "dead_letter"])]
        on_invalid: Option<String>,
        /// What a top-level field not in the schema does (`unknown_fields`).
        #[arg(long, value_parser = ["reject", "drop"])]
        unknown_fields: Option<String>,
        /// Other keys.
        #[command(flatten)]
        set: SetArgs,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// List the streams (of every origin).
    List {
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Show one stream.
    Get {
        /// The stream's name.
        name: String,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Change a stream's `http` settings or `unknown_fields`, in place.
    Update {
        /// The stream's name.
        name: String,
        /// Whether ingest needs a token (`http.auth`).
        #[arg(long, value_name = "true|false")]
        auth: Option<bool>,
        /// The browser origins allowed (replaces `http.cors_origins`). Repeatable.
        #[arg(long = "cors-origin", value_name = "ORIGIN")]
        cors_origins: Vec<String>,
        /// Allow no browser origin (`http.cors_origins = []`).
        #[arg(long, conflicts_with = "cors_origins")]
        no_cors_origins: bool,
        /// What a top-level field not in the schema does (`unknown_fields`).
        #[arg(long, value_parser = ["reject", "drop"])]
        unknown_fields: Option<String>,
        /// Other keys.
        #[command(flatten)]
        set: SetArgs,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Delete a stream (its log is moved to <data_dir>/deleted-streams/).
    Delete {
        /// The stream's name.
        name: String,
        /// Also delete the pipelines that read it (refused without: `409 in_use`).
        #[arg(long)]
        force: bool,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
}

/// The keys of a sink that have flags.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkFlags {
    /// The Iceberg table, `namespace.table` (`table`; iceberg sinks).
    #[arg(long)]
    pub table: Option<String>,
    /// A partition field: `col`, `day(ts)`, `bucket[16](id)`, … (`partition_by`; iceberg sinks).
    /// Repeatable; in an update, the list replaces the sink's.
    #[arg(long = "partition-by", value_name = "X")]
    pub partition_by: Vec<String>,
    /// A sort key: `col`, `col DESC`, … (`sort_by`). Repeatable; in an update, the list replaces
    /// the sink's.
    #[arg(long = "sort-by", value_name = "X")]
    pub sort_by: Vec<String>,
    /// Commit at the latest this long after the first uncommitted row
    /// (`rolling.interval_seconds`).
    #[arg(long, value_name = "SECONDS")]
    pub roll_interval: Option<u64>,
    /// Commit once this many MB are pending (`rolling.size_mb`).
    #[arg(long, value_name = "N")]
    pub roll_size_mb: Option<u64>,
    /// The folder of a files sink (`path`): local (relative to the server's config folder) or
    /// `s3://bucket/prefix`.
    #[arg(long, value_name = "P")]
    pub path: Option<String>,
    /// The files' format (`format`; files sinks).
    #[arg(long, value_parser = ["json", "parquet"])]
    pub format: Option<String>,
    /// The codec: `zstd(3)`, `snappy`, `gzip(6)`, `lz4`, `none`, … (`compression`).
    #[arg(long, value_name = "C")]
    pub compression: Option<String>,
}

/// `floe sinks …`
#[derive(Subcommand, Debug)]
pub enum SinksCommand {
    /// Create a sink (an iceberg sink's table is created when a pipeline first writes it).
    Create {
        /// The sink's name (what `INSERT INTO` names).
        name: String,
        /// `iceberg` (a table) or `files` (NDJSON / Parquet files in folders).
        #[arg(long = "type", value_parser = ["iceberg", "files"])]
        sink_type: String,
        /// The sink's keys.
        #[command(flatten)]
        flags: SinkFlags,
        /// Other keys.
        #[command(flatten)]
        set: SetArgs,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// List the sinks (of every origin).
    List {
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Show one sink.
    Get {
        /// The sink's name.
        name: String,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Change a sink: the pipelines writing it stop (committing) and start again with the new
    /// settings.
    Update {
        /// The sink's name.
        name: String,
        /// A new type.
        #[arg(long = "type", value_parser = ["iceberg", "files"])]
        sink_type: Option<String>,
        /// The keys to change.
        #[command(flatten)]
        flags: SinkFlags,
        /// Other keys.
        #[command(flatten)]
        set: SetArgs,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Delete a sink (refused while a pipeline writes it: `409 in_use`).
    Delete {
        /// The sink's name.
        name: String,
        /// Also drop its table and delete its files.
        #[arg(long)]
        purge: bool,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
}

/// The SQL of a new pipeline: `--sql` or `--sql-file`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[group(required = true, multiple = false)]
pub struct SqlSource {
    /// The pipeline SQL: one or more `INSERT INTO <sink> SELECT … FROM <stream>`.
    #[arg(long)]
    pub sql: Option<String>,
    /// A file holding the pipeline SQL.
    #[arg(long, value_name = "FILE")]
    pub sql_file: Option<PathBuf>,
}

/// The new SQL of a pipeline: `--sql` or `--sql-file` (or neither, with `--set`).
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[group(required = false, multiple = false)]
pub struct SqlChange {
    /// The new pipeline SQL (makes a new version).
    #[arg(long)]
    pub sql: Option<String>,
    /// A file holding the new pipeline SQL.
    #[arg(long, value_name = "FILE")]
    pub sql_file: Option<PathBuf>,
}

/// `floe pipelines …`
#[derive(Subcommand, Debug)]
pub enum PipelinesCommand {
    /// Create a pipeline; it starts at once.
    Create {
        /// The pipeline's name.
        name: String,
        /// Its SQL.
        #[command(flatten)]
        sql: SqlSource,
        /// Where a statement without a committed position starts (`start`; default latest).
        #[arg(long, value_parser = ["latest", "earliest"])]
        start: Option<String>,
        /// Other keys.
        #[command(flatten)]
        set: SetArgs,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Change a pipeline: a new version, starting exactly where the last one committed.
    Update {
        /// The pipeline's name.
        name: String,
        /// Its new SQL.
        #[command(flatten)]
        sql: SqlChange,
        /// Other keys.
        #[command(flatten)]
        set: SetArgs,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// A pipeline's versions: SQL, when each started and ended, the offsets where each took over.
    History {
        /// The pipeline's name.
        name: String,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// List the pipelines, with their state, lag and committed offsets.
    List {
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Show one pipeline and its status.
    Get {
        /// The pipeline's name.
        name: String,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Delete a pipeline (it commits what it has read; its positions stay).
    Delete {
        /// The pipeline's name.
        name: String,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Plan pipeline SQL against the config's streams and sinks (offline: no server, no catalog)
    /// and print each INSERT's output schema, or the error with its line and column.
    Validate {
        /// The pipeline SQL: one or more `INSERT INTO <sink> SELECT … FROM <stream>`.
        #[arg(long)]
        sql: String,
        /// Config file; default ./floe.toml when present, else built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the answer as JSON (the body `POST /v1/validate_sql` answers).
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `floe streams …` command; its exit code.
pub async fn streams(command: StreamsCommand) -> ExitCode {
    const KIND: Kind = Kind::Stream;
    match command {
        StreamsCommand::Create {
            name,
            schema,
            auth,
            cors_origins,
            on_invalid,
            unknown_fields,
            set,
            args,
        } => {
            let schema = match schema.map(|p| read_json(&p)).transpose() {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            let mut body = json!({"name": name});
            if let Some(schema) = schema {
                body["schema"] = schema;
            }
            let mut http = Map::new();
            if auth {
                http.insert("auth".into(), Value::Bool(true));
            }
            if !cors_origins.is_empty() {
                http.insert("cors_origins".into(), json!(cors_origins));
            }
            if !http.is_empty() {
                body["http"] = Value::Object(http);
            }
            put(&mut body, "on_invalid", on_invalid);
            put(&mut body, "unknown_fields", unknown_fields);
            create(KIND, body, &set, &args).await
        }
        StreamsCommand::List { args } => list(KIND, &args).await,
        StreamsCommand::Get { name, args } => get(KIND, &name, &args).await,
        StreamsCommand::Update {
            name,
            auth,
            cors_origins,
            no_cors_origins,
            unknown_fields,
            set,
            args,
        } => {
            let mut patch = json!({});
            let mut http = Map::new();
            if let Some(auth) = auth {
                http.insert("auth".into(), Value::Bool(auth));
            }
            if !cors_origins.is_empty() || no_cors_origins {
                http.insert("cors_origins".into(), json!(cors_origins));
            }
            if !http.is_empty() {
                patch["http"] = Value::Object(http);
            }
            put(&mut patch, "unknown_fields", unknown_fields);
            update(KIND, &name, patch, &set, &args).await
        }
        StreamsCommand::Delete { name, force, args } => {
            let options = DeleteOptions {
                force,
                ..DeleteOptions::default()
            };
            delete(KIND, &name, options, &args).await
        }
    }
}

/// Runs a `floe sinks …` command; its exit code.
pub async fn sinks(command: SinksCommand) -> ExitCode {
    const KIND: Kind = Kind::Sink;
    match command {
        SinksCommand::Create {
            name,
            sink_type,
            flags,
            set,
            args,
        } => {
            let mut body = json!({"name": name, "type": sink_type});
            sink_keys(&mut body, flags);
            create(KIND, body, &set, &args).await
        }
        SinksCommand::List { args } => list(KIND, &args).await,
        SinksCommand::Get { name, args } => get(KIND, &name, &args).await,
        SinksCommand::Update {
            name,
            sink_type,
            flags,
            set,
            args,
        } => {
            let mut patch = json!({});
            put(&mut patch, "type", sink_type);
            sink_keys(&mut patch, flags);
            update(KIND, &name, patch, &set, &args).await
        }
        SinksCommand::Delete { name, purge, args } => {
            let options = DeleteOptions {
                purge,
                ..DeleteOptions::default()
            };
            delete(KIND, &name, options, &args).await
        }
    }
}

/// Runs a `floe pipelines …` command; its exit code.
pub async fn pipelines(command: PipelinesCommand) -> ExitCode {
    const KIND: Kind = Kind::Pipeline;
    match command {
        PipelinesCommand::Create {
            name,
            sql,
            start,
            set,
            args,
        } => {
            let sql = match sql_text(sql.sql, sql.sql_file) {
                Ok(Some(sql)) => sql,
                Ok(None) => return usage("give --sql or --sql-file"),
                Err(e) => return usage(e),
            };
            let mut body = json!({"name": name, "sql": sql});
            put(&mut body, "start", start);
            create(KIND, body, &set, &args).await
        }
        PipelinesCommand::Update { name, sql, set, args } => {
            let mut patch = json!({});
            match sql_text(sql.sql, sql.sql_file) {
                Ok(sql) => put(&mut patch, "sql", sql),
                Err(e) => return usage(e),
            }
            update(KIND, &name, patch, &set, &args).await
        }
        PipelinesCommand::History { name, args } => {
            run(
                &args,
                async |c: &Client| c.pipeline_versions(&name).await,
                |v, json| {
                    if json {
                        print_json(v);
                    } else {
                        print_history(v);
                    }
                },
            )
            .await
        }
        PipelinesCommand::List { args } => list(KIND, &args).await,
        PipelinesCommand::Get { name, args } => get(KIND, &name, &args).await,
        PipelinesCommand::Delete { name, args } => delete(KIND, &name, DeleteOptions::default(), &args).await,
        PipelinesCommand::Validate { sql, config, json } => match Config::load(config.as_deref()) {
            Ok(config) => validate(&config, &sql, json).await,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `floe tokens …`
#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Create a token (docs/security.md, "Tokens created at run time"); prints it, once.
    Create {
        /// A scope: `send:<stream>`, `send:*`, `read`, `write`, `admin`. Repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// What it is for (shown by `list`).
        #[arg(long, default_value = "")]
        description: String,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// List the tokens created at run time (never their secrets).
    List {
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Revoke a token by its id: refused from this moment on.
    Revoke {
        /// The token's id (`floe tokens list`).
        id: String,
        /// Server and output.
        #[command(flatten)]
        args: ControlArgs,
    },
}

/// Runs a `floe tokens …` command; the exit code.
pub async fn tokens(command: TokensCommand) -> ExitCode {
    match command {
        TokensCommand::Create {
            scopes,
            description,
            args,
        } => {
            run(
                &args,
                async |c: &Client| c.create_token(&scopes, &description).await,
                |v, json| {
                    if json {
                        print_json(v);
                    } else {
                        println!("{}", v["token"].as_str().unwrap_or(""));
                        eprintln!(
                            "token {} created with scopes {}: it is shown this once, keep it",
                            v["id"].as_str().unwrap_or(""),
                            v["scopes"]
                        );
                    }
                },
            )
            .await
        }
        TokensCommand::List { args } => {
            run(
                &args,
                async |c: &Client| c.list_tokens().await,
                |v, json| {
                    if json {
                        print_json(v);
                        return;
                    }
                    println!(
                        "{:<18} {:<30} {:<26} {:<26} description",
                        "id", "scopes", "created", "revoked"
                    );
                    for t in v["tokens"].as_array().into_iter().flatten() {
                        let text = |k: &str| t[k].as_str().unwrap_or("-").to_string();
                        println!(
                            "{:<18} {:<30} {:<26} {:<26} {}",
                            text("id"),
                            t["scopes"].to_string(),
                            text("created_at"),
                            text("revoked_at"),
                            text("description")
                        );
                    }
                    println!("({} more in floe.toml)", v["config_tokens"]);
                },
            )
            .await
        }
        TokensCommand::Revoke { id, args } => {
            run(
                &args,
                async |c: &Client| c.revoke_token(&id).await,
                |v, json| {
                    if json {
                        print_json(v);
                    } else {
                        println!("revoked {}", v["revoked"].as_str().unwrap_or(""));
                    }
                },
            )
            .await
        }
    }
}

/// Connects, makes the request, and shows its answer (`show(answer, json)`), or prints the
/// error; the exit code.
async fn run<T>(
    args: &ControlArgs,
    request: impl AsyncFnOnce(&Client) -> Result<T, Error>,
    show: impl FnOnce(&T, bool),
) -> ExitCode {
    let client = match args.connect.client() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match request(&client).await {
        Ok(answer) => {
            show(&answer, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn create(kind: Kind, mut body: Value, set: &SetArgs, args: &ControlArgs) -> ExitCode {
    if let Err(e) = apply_sets(&mut body, &set.set) {
        return usage(e);
    }
    run(
        args,
        async |c: &Client| c.objects(kind).create(body).await,
        |o, json| {
            if json {
                print_json(o);
            } else {
                println!("created {} {} (version {})", o.kind, o.name, o.version);
            }
        },
    )
    .await
}

async fn update(kind: Kind, name: &str, mut patch: Value, set: &SetArgs, args: &ControlArgs) -> ExitCode {
    if let Err(e) = apply_sets(&mut patch, &set.set) {
        return usage(e);
    }
    if patch.as_object().is_none_or(Map::is_empty) {
        return usage(format!(
            "nothing to change: give the {kind}'s new settings (see --help)"
        ));
    }
    run(
        args,
        async |c: &Client| c.objects(kind).update(name, patch).await,
        |o, json| {
            if json {
                print_json(o);
            } else {
                println!("updated {} {} (version {})", o.kind, o.name, o.version);
            }
        },
    )
    .await
}

async fn list(kind: Kind, args: &ControlArgs) -> ExitCode {
    run(
        args,
        async |c: &Client| c.objects(kind).list().await,
        |list, json| {
            if json {
                print_json(&json!({kind.plural(): list}));
            } else {
                print_list(kind, list);
            }
        },
    )
    .await
}

async fn get(kind: Kind, name: &str, args: &ControlArgs) -> ExitCode {
    run(
        args,
        async |c: &Client| c.objects(kind).get(name).await,
        |o, json| {
            if json {
                print_json(o);
            } else {
                print_lines(&object_lines(o));
            }
        },
    )
    .await
}

async fn delete(kind: Kind, name: &str, options: DeleteOptions, args: &ControlArgs) -> ExitCode {
    run(
        args,
        async |c: &Client| c.objects(kind).delete(name, options).await,
        |d, json| {
            if json {
                print_json(&json!({"deleted": d}));
            } else {
                println!("deleted {} {}", d.kind, d.name);
            }
        },
    )
    .await
}

/// `body[key] = value` when there is a value.
fn put(body: &mut Value, key: &str, value: Option<impl Into<Value>>) {
    if let (Some(v), Some(map)) = (value, body.as_object_mut()) {
        map.insert(key.to_string(), v.into());
    }
}

/// The sink keys given as flags, into `body`.
fn sink_keys(body: &mut Value, flags: SinkFlags) {
    put(body, "table", flags.table);
    if !flags.partition_by.is_empty() {
        body["partition_by"] = json!(flags.partition_by);
    }
    if !flags.sort_by.is_empty() {
        body["sort_by"] = json!(flags.sort_by);
    }
    let mut rolling = json!({});
    put(&mut rolling, "interval_seconds", flags.roll_interval);
    put(&mut rolling, "size_mb", flags.roll_size_mb);
    if rolling.as_object().is_some_and(|m| !m.is_empty()) {
        body["rolling"] = rolling;
    }
    put(body, "path", flags.path);
    put(body, "format", flags.format);
    put(body, "compression", flags.compression);
}

/// `--set KEY=VALUE`s into `body`: dotted keys make nested objects (merged with what is there),
/// the value is JSON when it parses, else a string.
pub fn apply_sets(body: &mut Value, sets: &[String]) -> Result<(), String> {
    for s in sets {
        let Some((key, raw)) = s.split_once('=') else {
            return Err(format!("--set {s:?} is not KEY=VALUE"));
        };
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|p| p.trim().is_empty()) {
            return Err(format!("--set {s:?}: {key:?} is not a dotted key"));
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        let (last, parents) = path.split_last().expect("split yields at least one part");
        let mut at = &mut *body;
        for (i, part) in parents.iter().enumerate() {
            let Some(map) = at.as_object_mut() else {
                return Err(format!("--set {s:?}: {} is not an object", path[..i].join(".")));
            };
            at = map.entry(part.to_string()).or_insert_with(|| json!({}));
        }
        match at.as_object_mut() {
            Some(map) => {
                map.insert(last.to_string(), value);
            }
            None => return Err(format!("--set {s:?}: {} is not an object", parents.join("."))),
        }
    }
    Ok(())
}

/// The SQL of `--sql` or `--sql-file` (without trailing blank lines), `None` without either.
fn sql_text(sql: Option<String>, file: Option<PathBuf>) -> Result<Option<String>, String> {
    match (sql, file) {
        (Some(sql), _) => Ok(Some(sql)),
        (None, Some(path)) => Ok(Some(read_file(&path)?.trim_end().to_string())),
        (None, None) => Ok(None),
    }
}

/// A JSON file's value, or a usage error naming the file.
fn read_json(path: &std::path::Path) -> Result<Value, String> {
    let text = read_file(path)?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print the answer as JSON: {e}"),
    }
}

/// A table: columns padded to their widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i + 1 < n {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The rows of `floe {kind} list`.
pub fn list_table(kind: Kind, list: &[Object]) -> String {
    let (header, rows): (&[&str], Vec<Vec<String>>) = match kind {
        Kind::Stream => (
            &["NAME", "ORIGIN", "VERSION", "FIELDS", "ON_INVALID", "AUTH"],
            list.iter()
                .map(|o| {
                    let fields = match o.config["fields"].as_array() {
                        Some(f) => f.len().to_string(),
                        None => "unstructured".to_string(),
                    };
                    vec![
                        o.name.clone(),
                        o.origin.clone(),
                        o.version.to_string(),
                        fields,
                        scalar(&o.config["on_invalid"]),
                        scalar(&o.config["http"]["auth"]),
                    ]
                })
                .collect(),
        ),
        Kind::Sink => (
            &["NAME", "ORIGIN", "VERSION", "TYPE", "TARGET"],
            list.iter()
                .map(|o| {
                    let target = match o.config["table"].as_str() {
                        Some(t) => t.to_string(),
                        None => scalar(&o.config["path"]),
                    };
                    vec![
                        o.name.clone(),
                        o.origin.clone(),
                        o.version.to_string(),
                        scalar(&o.config["type"]),
                        target,
                    ]
                })
                .collect(),
        ),
        Kind::Pipeline => (
            &["NAME", "ORIGIN", "VERSION", "STATE", "LAG_ROWS", "COMMITTED"],
            list.iter()
                .map(|o| {
                    let (state, lag, committed) = match &o.status {
                        Some(s) => (s.state.clone(), s.lag_rows().to_string(), committed_offsets(s)),
                        None => ("-".into(), "-".into(), "-".into()),
                    };
                    vec![
                        o.name.clone(),
                        o.origin.clone(),
                        o.version.to_string(),
                        state,
                        lag,
                        committed,
                    ]
                })
                .collect(),
        ),
    };
    if rows.is_empty() {
        return format!("(no {})\n", kind.plural());
    }
    table(header, &rows)
}

/// A pipeline's committed offsets: the offset of its one statement, or `sink:offset` for each.
fn committed_offsets(status: &floe_client::PipelineStatus) -> String {
    let offset = |o: Option<u64>| o.map_or("-".to_string(), |o| o.to_string());
    match status.statements.as_slice() {
        [] => "-".to_string(),
        [one] => offset(one.committed_offset),
        many => many
            .iter()
            .map(|s| format!("{}:{}", s.sink, offset(s.committed_offset)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn print_list(kind: Kind, list: &[Object]) {
    print!("{}", list_table(kind, list));
}

/// A JSON scalar as text (`-` for null or absent).
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `floe … get`: the object as `key: value` lines (config and status flattened to dotted keys).
pub fn object_lines(o: &Object) -> Vec<(String, String)> {
    let mut lines = vec![
        ("kind".to_string(), o.kind.clone()),
        ("name".to_string(), o.name.clone()),
        ("origin".to_string(), o.origin.clone()),
        ("version".to_string(), o.version.to_string()),
        (
            "created_at".to_string(),
            o.created_at.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "updated_at".to_string(),
            o.updated_at.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    flatten("config", &o.config, &mut lines);
    if let Some(status) = &o.status {
        flatten("status", &serde_json::to_value(status).unwrap_or_default(), &mut lines);
    }
    for (k, v) in &o.extra {
        flatten(k, v, &mut lines);
    }
    lines
}

/// `value` as `prefix.key` lines: objects by key, arrays of scalars as one JSON line, other
/// arrays by `[index]`: under `config` each element as one line of JSON (without its null
/// keys: the defaults of a field), elsewhere flattened further.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                let key = format!("{prefix}[{i}]");
                if prefix.starts_with("config") {
                    out.push((key, without_nulls(v).to_string()));
                } else {
                    flatten(&key, v, out);
                }
            }
        }
        Value::Array(_) | Value::Object(_) => out.push((prefix.to_string(), value.to_string())),
        other => out.push((prefix.to_string(), scalar(other))),
    }
}

/// `value` with the null-valued keys of its objects left out, at every depth.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// `key: value` lines, values aligned; a value's further lines are indented to match.
pub fn render_lines(lines: &[(String, String)]) -> String {
    let width = lines.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in lines {
        let key = format!("{k}:");
        let mut value_lines = v.lines();
        let first = value_lines.next().unwrap_or("");
        out.push_str(format!("{key:<width$} {first}").trim_end());
        out.push('\n');
        for more in value_lines {
            out.push_str(&format!("{:width$} {more}\n", ""));
        }
    }
    out
}

fn print_lines(lines: &[(String, String)]) {
    print!("{}", render_lines(lines));
}

/// `floe pipelines history`: one row per version.
pub fn history_table(v: &PipelineVersions) -> String {
    if v.versions.is_empty() {
        return format!("(no versions of {})\n", v.pipeline);
    }
    let offsets = |o: &Option<std::collections::BTreeMap<String, u64>>| match o {
        None => "-".to_string(),
        Some(m) if m.is_empty() => "-".to_string(),
        Some(m) => m.iter().map(|(s, o)| format!("{s}={o}")).collect::<Vec<_>>().join(","),
    };
    let last = v.versions.len() - 1;
    let rows: Vec<Vec<String>> = v
        .versions
        .iter()
        .enumerate()
        .map(|(i, ver)| {
            let ended = match (&ver.ended_at, i == last) {
                (Some(t), _) => t.clone(),
                (None, true) => "(current)".to_string(),
                (None, false) => "-".to_string(),
            };
            vec![
                ver.version.to_string(),
                ver.started_at.clone().unwrap_or_else(|| "-".into()),
                ended,
                offsets(&ver.start_offsets),
                offsets(&ver.end_offsets),
                ver.sql.split_whitespace().collect::<Vec<_>>().join(" "),
            ]
        })
        .collect();
    table(
        &["VERSION", "STARTED", "ENDED", "START_OFFSETS", "END_OFFSETS", "SQL"],
        &rows,
    )
}

fn print_history(v: &PipelineVersions) {
    print!("{}", history_table(v));
}

/// `floe pipelines validate`: exit 0 and the schemas, or exit 1 and the error.
async fn validate(config: &Config, sql: &str, json: bool) -> ExitCode {
    use crate::pipeline::validate::{answer_json, columns_json, error_json, validate_sql};
    match validate_sql(config, sql).await {
        Ok(statements) if json => {
            println!("{}", answer_json(&statements));
            ExitCode::SUCCESS
        }
        Ok(statements) => {
            for v in &statements {
                let table = v.table.as_deref().unwrap_or("?");
                println!("INSERT INTO {} (table {table}) FROM {}:", v.sink, v.stream);
                for c in columns_json(&v.output).as_array().into_iter().flatten() {
                    let required = if c["required"].as_bool() == Some(true) {
                        "required"
                    } else {
                        ""
                    };
                    println!(
                        "  {:<24} {:<32} {required}",
                        c["name"].as_str().unwrap_or(""),
                        c["type"].as_str().unwrap_or("")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) if json => {
            println!("{}", error_json(&e));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("invalid pipeline SQL: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Subcommand, Debug)]
    enum Top {
        Streams {
            #[command(subcommand)]
            command: StreamsCommand,
        },
        Sinks {
            #[command(subcommand)]
            command: SinksCommand,
        },
        Pipelines {
            #[command(subcommand)]
            command: PipelinesCommand,
        },
    }

    fn parse(args: &[&str]) -> Result<Top, clap::Error> {
        Cli::try_parse_from(std::iter::once("floe").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn flags_parse_and_the_url_defaults() {
        let Top::Streams {
            command:
                StreamsCommand::Create {
                    name,
                    auth,
                    cors_origins,
                    on_invalid,
                    args,
                    ..
                },
        } = parse(&[
            "streams",
            "create",
            "clicks",
            "--auth",
            "--cors-origin",
            "http://a",
            "--cors-origin",
            "http://b",
            "--on-invalid",
            "dead_letter",
        ])
        .unwrap()
        else {
            panic!("not streams create");
        };
        assert_eq!(name, "clicks");
        assert!(auth);
        assert_eq!(cors_origins, ["http://a", "http://b"]);
        assert_eq!(on_invalid.as_deref(), Some("dead_letter"));
        assert!(!args.json);
        if std::env::var_os("FLOE_URL").is_none() {
            assert_eq!(args.connect.url, floe_client::DEFAULT_URL);
        }

        assert!(parse(&["streams", "create", "x", "--on-invalid", "ignore"]).is_err());
        let Top::Streams {
            command: StreamsCommand::Update { auth, .. },
        } = parse(&["streams", "update", "x", "--auth", "false", "--json"]).unwrap()
        else {
            panic!("not streams update");
        };
        assert_eq!(auth, Some(false));
        assert!(
            parse(&[
                "streams",
                "update",
                "x",
                "--cors-origin",
                "http://a",
                "--no-cors-origins"
            ])
            .is_err()
        );
    }

    #[test]
    fn pipelines_need_exactly_one_sql_source() {
        assert!(parse(&["pipelines", "create", "p"]).is_err(), "no SQL");
        assert!(
            parse(&["pipelines", "create", "p", "--sql", "x", "--sql-file", "f"]).is_err(),
            "both"
        );
        assert!(parse(&["pipelines", "create", "p", "--sql", "x", "--start", "earliest"]).is_ok());
        assert!(parse(&["pipelines", "update", "p", "--sql-file", "f"]).is_ok());
        assert!(parse(&["pipelines", "update", "p", "--sql", "x", "--sql-file", "f"]).is_err());
        assert!(
            parse(&["pipelines", "validate", "--sql", "x"]).is_ok(),
            "validate still parses"
        );
        assert!(parse(&["sinks", "create", "t"]).is_err(), "--type is required");
        assert!(parse(&["sinks", "create", "t", "--type", "delta"]).is_err());
    }

    #[test]
    fn sink_flags_become_floe_toml_keys() {
        let Top::Sinks {
            command: SinksCommand::Create { flags, .. },
        } = parse(&[
            "sinks",
            "create",
            "t",
            "--type",
            "iceberg",
            "--table",
            "a.t",
            "--partition-by",
            "day(ts)",
            "--partition-by",
            "ns",
            "--sort-by",
            "ts DESC",
            "--roll-interval",
            "5",
            "--roll-size-mb",
            "64",
            "--compression",
            "zstd(5)",
        ])
        .unwrap()
        else {
            panic!("not sinks create");
        };
        let mut body = json!({"name": "t", "type": "iceberg"});
        sink_keys(&mut body, flags);
        assert_eq!(
            body,
            json!({"name": "t", "type": "iceberg", "table": "a.t", "partition_by": ["day(ts)", "ns"],
                   "sort_by": ["ts DESC"], "rolling": {"interval_seconds": 5, "size_mb": 64},
                   "compression": "zstd(5)"})
        );
        let mut patch = json!({});
        sink_keys(&mut patch, SinkFlags::default());
        assert_eq!(patch, json!({}), "no flag, no key");
    }

    #[test]
    fn sets_make_nested_keys_and_typed_values() {
        let mut body = json!({"name": "t", "rolling": {"interval_seconds": 5}});
        apply_sets(
            &mut body,
            &[
                "rolling.memory_mb=64".into(),
                "on_error=fail".into(),
                "http.enabled=false".into(),
                "x=null".into(),
                "s=\"7\"".into(),
                "e=a=b".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"name": "t", "rolling": {"interval_seconds": 5, "memory_mb": 64}, "on_error": "fail",
                   "http": {"enabled": false}, "x": null, "s": "7", "e": "a=b"})
        );
        assert!(apply_sets(&mut body, &["novalue".into()]).is_err());
        assert!(apply_sets(&mut body, &["a..b=1".into()]).is_err());
        assert!(apply_sets(&mut body, &["name.x=1".into()]).is_err(), "name is a string");
    }

    fn pipeline(statements: Value) -> Object {
        serde_json::from_value(json!({
            "kind": "pipeline", "name": "p", "origin": "api", "version": 3, "created_at": "c", "updated_at": "u",
            "config": {"name": "p", "sql": "INSERT INTO t\nSELECT * FROM events", "start": "latest"},
            "status": {"state": "running", "statements": statements, "rows_in": 10, "rows_out": 8, "rows_dead_lettered": 0}
        }))
        .unwrap()
    }

    #[test]
    fn pipeline_lists_show_state_lag_and_committed_offsets() {
        let one = pipeline(
            json!([{"sink": "t", "stream": "events", "state": "running", "committed_offset": 8, "lag_rows": 2}]),
        );
        let two = pipeline(json!([
            {"sink": "a", "stream": "events", "state": "failed", "committed_offset": 8, "lag_rows": 2},
            {"sink": "b", "stream": "events", "state": "running", "committed_offset": null, "lag_rows": 10}]));
        let text = list_table(Kind::Pipeline, &[one, two]);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["NAME", "ORIGIN", "VERSION", "STATE", "LAG_ROWS", "COMMITTED"]
        );
        assert_eq!(lines[1], ["p", "api", "3", "running", "2", "8"]);
        assert_eq!(lines[2], ["p", "api", "3", "running", "12", "a:8", "b:-"]);
        assert_eq!(list_table(Kind::Stream, &[]), "(no streams)\n");
    }

    #[test]
    fn get_shows_key_value_lines() {
        let o = pipeline(json!([{"sink": "t", "stream": "events", "state": "running", "committed_offset": 8}]));
        let lines = object_lines(&o);
        let find = |k: &str| lines.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(find("version"), Some("3"));
        assert_eq!(find("config.start"), Some("latest"));
        assert_eq!(find("status.state"), Some("running"));
        assert_eq!(find("status.statements[0].committed_offset"), Some("8"));
        assert_eq!(find("status.statements[0].error"), Some("-"));

        let stream: Object = serde_json::from_value(json!({
            "kind": "stream", "name": "s", "origin": "api", "version": 1,
            "config": {"name": "s", "fields": [{"name": "id", "type": "int64", "items": null}]}
        }))
        .unwrap();
        let stream_lines = object_lines(&stream);
        let field = stream_lines
            .iter()
            .find(|(k, _)| k == "config.fields[0]")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            field.map(|f| serde_json::from_str::<Value>(f).unwrap()),
            Some(json!({"name": "id", "type": "int64"}))
        );
        let text = render_lines(&lines);
        assert!(text.contains("\nconfig.sql:"), "{text}");
        // The SQL's second line is indented under the first.
        let sql_line = text.lines().position(|l| l.starts_with("config.sql:")).unwrap();
        let second = text.lines().nth(sql_line + 1).unwrap();
        assert_eq!(second.trim(), "SELECT * FROM events");
        assert_eq!(second.find('S'), text.lines().nth(sql_line).unwrap().find("INSERT"));
    }

    #[test]
    fn history_rows() {
        let v: PipelineVersions = serde_json::from_value(json!({"pipeline": "p", "versions": [
            {"version": 1, "sql": "INSERT INTO t\n  SELECT 1", "started_at": "s1", "ended_at": "e1",
             "start_offsets": {"t": 0}, "end_offsets": {"t": 48000}},
            {"version": 2, "sql": "INSERT INTO t SELECT 2", "started_at": "e1", "ended_at": null,
             "start_offsets": {"t": 48000}, "end_offsets": null}]}))
        .unwrap();
        let text = history_table(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("VERSION"));
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["1", "s1", "e1", "t=0", "t=48000", "INSERT", "INTO", "t", "SELECT", "1"]
        );
        assert_eq!(
            lines[2].split_whitespace().take(5).collect::<Vec<_>>(),
            ["2", "e1", "(current)", "t=48000", "-"]
        );
    }
}
