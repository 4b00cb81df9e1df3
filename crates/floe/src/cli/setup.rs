//! `floe setup`: an interactive walk-through that creates a stream, a sink and the pipeline
//! between them on a running server (docs/cli.md, "floe setup").
//!
//! It asks one question a line, each with a default in brackets that enter accepts, and checks
//! every answer where it is given (a name already taken, a schema file that does not convert, SQL
//! that does not plan against the new stream and sink) by asking again with the reason. Nothing
//! is written until the summary is confirmed; then the three objects are created through the
//! control plane (docs/control-plane.md) in order, and when one is refused the ones created
//! before it are deleted again, so a setup lands whole or not at all.
//!
//! The questions read lines from any [`BufRead`] and write to any [`Write`]: a terminal, a pipe
//! of answers, or a unit test's script. The end of the input before the confirmation cancels.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use floe_client::{Client, DeleteOptions, EXIT_USAGE, Kind};
use serde_json::{Value, json};

use super::{ConnectArgs, describe, fail};
use crate::config::{Config, ConfigError, DEFAULT_ROLL_INTERVAL_SECONDS, FieldConfig, FieldType};
use crate::objects::ObjectConfig;
use floe_catalog::ObjectKind;

/// The input ended before the setup was confirmed: nothing was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended;

/// Asks questions on `out` and reads the answers, a line each, from `input`.
pub struct Prompter<R, W> {
    input: R,
    out: W,
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    /// Questions on `out`, answers from `input`.
    pub fn new(input: R, out: W) -> Self {
        Prompter { input, out }
    }

    /// Writes `text` (a note between the questions).
    pub fn say(&mut self, text: &str) {
        // A terminal that cannot be written to will show nothing either way; the answers still
        // decide what is created.
        let _ = writeln!(self.out, "{text}");
    }

    /// One answer, trimmed: `default` for an empty line.
    pub fn ask(&mut self, question: &str, default: &str) -> Result<String, Ended> {
        if default.is_empty() {
            let _ = write!(self.out, "{question}: ");
        } else {
            let _ = write!(self.out, "{question} [{default}]: ");
        }
        let _ = self.out.flush();
        let mut line = String::new();
        match self.input.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = writeln!(self.out);
                Err(Ended)
            }
            Ok(_) => {
                let answer = line.trim();
                Ok(if answer.is_empty() { default } else { answer }.to_string())
            }
        }
    }

    /// Asks until `check` takes the answer; each refusal is shown with its reason.
    pub fn ask_until<T>(
        &mut self,
        question: &str,
        default: &str,
        mut check: impl FnMut(&str) -> Result<T, String>,
    ) -> Result<T, Ended> {
        loop {
            let answer = self.ask(question, default)?;
            match check(&answer) {
                Ok(value) => return Ok(value),
                Err(reason) => self.say(&format!("  ! {reason}")),
            }
        }
    }

    /// One of `options` (the first is the default).
    pub fn choose(&mut self, question: &str, options: &[&str]) -> Result<String, Ended> {
        let question = format!("{question} ({})", options.join(", "));
        self.ask_until(&question, options[0], |a| {
            options
                .iter()
                .find(|o| o.eq_ignore_ascii_case(a))
                .map(|o| o.to_string())
                .ok_or_else(|| format!("answer one of {}", options.join(", ")))
        })
    }

    /// Yes or no.
    pub fn yes_no(&mut self, question: &str, default: bool) -> Result<bool, Ended> {
        let question = format!("{question} ({})", if default { "Y/n" } else { "y/N" });
        self.ask_until(&question, "", |a| match a.to_ascii_lowercase().as_str() {
            "" => Ok(default),
            "y" | "yes" => Ok(true),
            "n" | "no" => Ok(false),
            _ => Err("answer y or n".into()),
        })
    }
}

/// What the walk-through settled on: the three bodies to create, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `POST /v1/streams`
    pub stream: Value,
    /// `POST /v1/sinks`
    pub sink: Value,
    /// `POST /v1/pipelines`
    pub pipeline: Value,
    /// The summary shown before the confirmation, a line each.
    pub summary: Vec<String>,
}

impl Plan {
    fn name(body: &Value) -> &str {
        body["name"].as_str().unwrap_or_default()
    }
}

/// The field types a field typed in here may have (lists and structs come from a schema file).
const SCALAR_TYPES: [&str; 9] = [
    "string",
    "int64",
    "int32",
    "float64",
    "float32",
    "bool",
    "timestamp",
    "binary",
    "json",
];

/// `base`, or `base_2`, `base_3`, … : the first that is not in `taken`.
fn free_name(base: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| !taken.contains(n))
        .expect("an unbounded range has a free name")
}

/// The message of a config error, without its key (the question says what it is about).
fn reason(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { message, .. } => message,
        other => other.to_string(),
    }
}

/// `config` with `object` added, validated as the server will validate the declaration.
fn with_object(config: &Config, object: ObjectConfig) -> Result<Config, String> {
    let mut next = config.clone();
    crate::objects::add(&mut next, object);
    next.validate().map_err(reason)?;
    Ok(next)
}

/// A body parsed as `kind` and added to `config`.
fn checked(config: &Config, kind: ObjectKind, body: &Value) -> Result<Config, String> {
    let object = crate::objects::parse(kind, body.clone()).map_err(|e| e.to_string())?;
    with_object(config, object)
}

/// A name for an object: not taken on the server (`taken`), and valid.
fn name_check<'a>(taken: &'a HashSet<String>, what: &'a str) -> impl FnMut(&str) -> Result<String, String> + 'a {
    move |name: &str| {
        if taken.contains(name) {
            return Err(format!(
                "the server already has a stream, sink or pipeline named {name:?}; choose another {what} name"
            ));
        }
        let ok = !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if ok {
            Ok(name.to_string())
        } else {
            Err(format!(
                "{name:?}: a {what} name here is letters, digits and '_' (not first a digit), at most 128, so SQL can name it unquoted"
            ))
        }
    }
}

/// Walks through the questions and returns what to create. `taken` holds the names of the
/// server's streams, sinks and pipelines; `base` is the local declaration the answers are
/// checked against (the built-in defaults).
pub async fn plan<R: BufRead, W: Write>(
    p: &mut Prompter<R, W>,
    taken: &HashSet<String>,
    base: &Config,
) -> Result<Plan, Ended> {
    p.say("This creates a stream, a sink and a pipeline on the server. Enter accepts the answer in brackets.");
    p.say("Nothing is created until you confirm at the end.");
    p.say("");
    p.say("1/3 The stream: where events are sent (POST /v1/streams/NAME/events).");
    let (stream, config) = loop {
        let name = p.ask_until("Stream name", &free_name("events", taken), name_check(taken, "stream"))?;
        let fields = ask_fields(p)?;
        let mut body = json!({"name": name});
        if let Some(fields) = &fields {
            body["fields"] = fields_json(fields);
            body["unknown_fields"] =
                json!(p.choose("A top-level field the schema does not have", &["reject", "drop"])?);
        }
        body["on_invalid"] = json!(p.choose(
            "A row that does not fit the schema: refuse it (reject) or keep it in a dead-letter table (dead_letter)",
            &["reject", "dead_letter"]
        )?);
        if p.yes_no(&format!("Require a token with scope send:{name} to send"), false)? {
            body["http"] = json!({"auth": true});
        }
        match checked(base, ObjectKind::Stream, &body) {
            Ok(config) => break (body, config),
            Err(e) => p.say(&format!("  ! {e}; the stream again:")),
        }
    };
    let stream_name = Plan::name(&stream).to_string();
    let timestamp = stream["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["type"] == "timestamp")
        .and_then(|f| f["name"].as_str())
        .map(str::to_string);

    p.say("");
    p.say("2/3 The sink: where the pipeline writes.");
    let (sink, config) = loop {
        let mut taken = taken.clone();
        taken.insert(stream_name.clone());
        let name = p.ask_until(
            "Sink name",
            &free_name(&format!("{stream_name}_table"), &taken),
            name_check(&taken, "sink"),
        )?;
        let ty = p.choose(
            "Sink type: an Iceberg table, or NDJSON/Parquet files",
            &["iceberg", "files"],
        )?;
        let mut body = json!({"name": name, "type": ty});
        if ty == "iceberg" {
            body["table"] = json!(
                p.ask_until("Table (namespace.table)", &format!("default.{stream_name}"), |t| {
                    match t.split_once('.') {
                        Some((ns, table)) if !ns.is_empty() && !table.is_empty() => Ok(t.to_string()),
                        _ => Err(format!("{t:?} is not namespace.table")),
                    }
                })?
            );
            let partition_default = timestamp.as_ref().map(|ts| format!("day({ts})")).unwrap_or_default();
            let partition = p.ask(
                "Partition by (comma-separated: day(ts), bucket[16](id), a column; none for no partitioning)",
                if partition_default.is_empty() {
                    "none"
                } else {
                    &partition_default
                },
            )?;
            let partition: Vec<String> = if partition.eq_ignore_ascii_case("none") {
                Vec::new()
            } else {
                partition
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            };
            if !partition.is_empty() {
                body["partition_by"] = json!(partition);
            }
        } else {
            body["path"] = json!(p.ask("Folder, inside the warehouse", &format!("exports/{stream_name}"))?);
            body["format"] = json!(p.choose("File format", &["json", "parquet"])?);
        }
        let interval = p.ask_until(
            "Commit at least every N seconds",
            &DEFAULT_ROLL_INTERVAL_SECONDS.to_string(),
            |s| match s.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{s:?} is not a whole number of seconds above 0")),
            },
        )?;
        body["rolling"] = json!({"interval_seconds": interval});
        match checked(&config, ObjectKind::Sink, &body) {
            Ok(config) => break (body, config),
            Err(e) => p.say(&format!("  ! {e}; the sink again:")),
        }
    };
    let sink_name = Plan::name(&sink).to_string();

    p.say("");
    p.say("3/3 The pipeline: SQL from the stream into the sink.");
    let to = if sink["type"] == "files" { "files" } else { "table" };
    let pipeline_name = p.ask_until(
        "Pipeline name",
        &free_name(&format!("{stream_name}_to_{to}"), taken),
        name_check(taken, "pipeline"),
    )?;
    let default_sql = format!("INSERT INTO {sink_name} SELECT * FROM {stream_name}");
    let (sql, columns) = loop {
        let sql = p.ask("SQL (one line)", &default_sql)?;
        match crate::pipeline::validate::validate_sql(&config, &sql).await {
            Ok(statements) => {
                let columns: Vec<String> = statements
                    .iter()
                    .flat_map(|s| s.output.fields().iter())
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect();
                break (sql, columns);
            }
            Err(e) => {
                let at = match (e.line, e.column) {
                    (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                    _ => String::new(),
                };
                p.say(&format!(
                    "  ! {}{at}; the SQL reads the stream {stream_name} and writes the sink {sink_name}",
                    e.message
                ));
            }
        }
    };
    // From the first offset: rows sent between the stream's creation and the pipeline's are
    // written too.
    let pipeline = json!({"name": pipeline_name, "sql": sql, "start": "earliest"});

    let mut summary = vec![format!("stream   {stream_name}: {}", describe_stream(&stream))];
    summary.push(format!("sink     {sink_name}: {}", describe_sink(&sink)));
    summary.push(format!("pipeline {pipeline_name}: {sql}"));
    summary.push(format!("         writes columns {}", columns.join(", ")));
    Ok(Plan {
        stream,
        sink,
        pipeline,
        summary,
    })
}

/// The stream's fields: from a schema file, typed in one by one, or none (unstructured).
fn ask_fields<R: BufRead, W: Write>(p: &mut Prompter<R, W>) -> Result<Option<Vec<FieldConfig>>, Ended> {
    let file = p.ask_until(
        "Schema file in the managed product's format ({\"fields\": [...]}); blank to type the fields here",
        "",
        |path| {
            if path.is_empty() {
                return Ok(None);
            }
            schema_file(Path::new(path)).map(Some)
        },
    )?;
    if let Some(fields) = file {
        p.say(&format!("  {} fields from the file", fields.len()));
        return Ok(Some(fields));
    }
    p.say("  The fields, one by one (lists and structs need a schema file); a blank name when done.");
    let mut fields: Vec<FieldConfig> = Vec::new();
    loop {
        let question = format!("  Field {} name", fields.len() + 1);
        let name = p.ask_until(&question, "", |n| {
            if fields.iter().any(|f| f.name == n) {
                Err(format!("there is a field {n:?} already"))
            } else {
                Ok(n.to_string())
            }
        })?;
        if name.is_empty() {
            break;
        }
        let ty = p.choose("    type", &SCALAR_TYPES)?;
        let required = p.yes_no("    required: every row must have it", false)?;
        let ty: FieldType = serde_json::from_value(json!(ty)).expect("SCALAR_TYPES are field types");
        fields.push(FieldConfig {
            name,
            ty,
            required,
            items: None,
            fields: None,
        });
    }
    if fields.is_empty() {
        p.say("  No fields: the stream is unstructured (each event is one `value` json column).");
        return Ok(None);
    }
    Ok(Some(fields))
}

/// Fields as the body's `fields`: the keys that are set (a field typed in here has no `items` or
/// `fields`; one from a schema file may).
fn fields_json(fields: &[FieldConfig]) -> Value {
    let without_nulls = |v: Value| match v {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    };
    Value::Array(
        fields
            .iter()
            .map(|f| without_nulls(serde_json::to_value(f).unwrap_or(Value::Null)))
            .collect(),
    )
}

/// A schema file's fields.
fn schema_file(path: &Path) -> Result<Vec<FieldConfig>, String> {
    let text = super::read_file(path)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let fields = crate::objects::schema_file_fields(&value).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_value(fields).map_err(|e| format!("{}: {e}", path.display()))
}

fn describe_stream(body: &Value) -> String {
    let fields = match body["fields"].as_array() {
        None => "unstructured (one value json column)".to_string(),
        Some(fields) => fields
            .iter()
            .map(|f| {
                let required = if f["required"] == true { " required" } else { "" };
                format!(
                    "{} {}{required}",
                    f["name"].as_str().unwrap_or(""),
                    f["type"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut out = fields;
    if let Some(unknown) = body["unknown_fields"].as_str() {
        out.push_str(&format!("; unknown fields: {unknown}"));
    }
    out.push_str(&format!(
        "; invalid rows: {}",
        body["on_invalid"].as_str().unwrap_or("reject")
    ));
    if body["http"]["auth"] == true {
        out.push_str("; sending needs a token");
    }
    out
}

fn describe_sink(body: &Value) -> String {
    let every = format!("commits every {} s", body["rolling"]["interval_seconds"]);
    match body["table"].as_str() {
        Some(table) => {
            let partition = match body["partition_by"].as_array() {
                Some(p) => format!(
                    "partitioned by {}",
                    p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
                ),
                None => "not partitioned".to_string(),
            };
            format!("Iceberg table {table}, {partition}, {every}")
        }
        None => format!(
            "{} files in {} (inside the warehouse), {every}",
            body["format"].as_str().unwrap_or("json"),
            body["path"].as_str().unwrap_or("")
        ),
    }
}

/// The built-in defaults: the declaration the answers are checked against. Its folders are
/// never opened (an absolute base folder only makes its paths valid).
fn defaults() -> Result<Config, ConfigError> {
    let base = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/"));
    Config::from_toml("", &base.join("floe.toml"), &base)
}

/// Creates the plan's objects in order; when one is refused, deletes the ones created before it
/// (newest first). The error is the refusal, with what could not be deleted again.
pub async fn apply(client: &Client, plan: &Plan) -> Result<(), (floe_client::Error, Vec<String>)> {
    let steps = [
        (Kind::Stream, &plan.stream),
        (Kind::Sink, &plan.sink),
        (Kind::Pipeline, &plan.pipeline),
    ];
    let mut created: Vec<(Kind, String)> = Vec::new();
    for (kind, body) in steps {
        match client.objects(kind).create(body.clone()).await {
            Ok(o) => created.push((kind, o.name)),
            Err(e) => {
                let mut left = Vec::new();
                for (kind, name) in created.iter().rev() {
                    if let Err(d) = client.objects(*kind).delete(name, DeleteOptions::default()).await {
                        left.push(format!("{kind} {name} ({})", describe(&d)));
                    }
                }
                return Err((e, left));
            }
        }
    }
    Ok(())
}

/// `floe setup`: the names the server has, the questions, the summary, the confirmation, and
/// then the objects. Exit 0 when created or declined, 1 when the server refused one (the others
/// are deleted again), 2 when the input ended first, 3 when the server cannot be reached.
pub async fn run(connect: &ConnectArgs) -> ExitCode {
    let client = match connect.client() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut taken = HashSet::new();
    for kind in [Kind::Stream, Kind::Sink, Kind::Pipeline] {
        match client.objects(kind).list().await {
            Ok(list) => taken.extend(list.into_iter().map(|o| o.name)),
            Err(e) => return fail(&e),
        }
    }
    let base = match defaults() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: the built-in defaults do not load: {e}");
            return ExitCode::from(3);
        }
    };
    let stdin = std::io::stdin();
    let mut p = Prompter::new(stdin.lock(), std::io::stdout());
    let cancelled = || {
        eprintln!("setup cancelled (the input ended): nothing was created");
        ExitCode::from(EXIT_USAGE)
    };
    let Ok(plan) = plan(&mut p, &taken, &base).await else {
        return cancelled();
    };
    p.say("");
    p.say("Setup will create:");
    for line in &plan.summary {
        p.say(&format!("  {line}"));
    }
    match p.yes_no("Create them now", true) {
        Ok(true) => {}
        Ok(false) => {
            p.say("Nothing was created.");
            return ExitCode::SUCCESS;
        }
        Err(Ended) => return cancelled(),
    }
    if let Err((e, left)) = apply(&client, &plan).await {
        let code = fail(&e);
        if left.is_empty() {
            eprintln!("nothing was left behind: what this setup had created was deleted again");
        } else {
            eprintln!("could not delete again: {}", left.join("; "));
        }
        return code;
    }
    let (stream, sink, pipeline) = (
        Plan::name(&plan.stream),
        Plan::name(&plan.sink),
        Plan::name(&plan.pipeline),
    );
    p.say(&format!(
        "Created stream {stream}, sink {sink} and pipeline {pipeline}."
    ));
    p.say(&format!(
        "Send events:  floe send {stream} rows.ndjson --url {0}   (or POST {0}/v1/streams/{stream}/events)",
        connect.url.trim_end_matches('/')
    ));
    if plan.stream["http"]["auth"] == true {
        p.say(&format!(
            "  sending needs a token:  floe tokens create --scope send:{stream} --url {}",
            connect.url
        ));
    }
    if let Some(table) = plan.sink["table"].as_str() {
        p.say(&format!("Query:        floe sql \"SELECT * FROM {table}\""));
    }
    p.say(&format!(
        "Status:       floe pipelines get {pipeline} --url {}",
        connect.url
    ));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        defaults().unwrap()
    }

    async fn script(answers: &str, taken: &[&str]) -> (Result<Plan, Ended>, String) {
        let taken: HashSet<String> = taken.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let mut p = Prompter::new(answers.as_bytes(), &mut out);
        let plan = plan(&mut p, &taken, &base()).await;
        (plan, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn every_default_accepted_makes_an_unstructured_stream_into_a_table() {
        let (plan, out) = script(&"\n".repeat(12), &[]).await;
        let plan = plan.unwrap();
        assert_eq!(plan.stream, json!({"name": "events", "on_invalid": "reject"}), "{out}");
        assert_eq!(
            plan.sink,
            json!({"name": "events_table", "type": "iceberg", "table": "default.events",
                   "rolling": {"interval_seconds": DEFAULT_ROLL_INTERVAL_SECONDS}})
        );
        assert_eq!(
            plan.pipeline,
            json!({"name": "events_to_table", "sql": "INSERT INTO events_table SELECT * FROM events",
                   "start": "earliest"})
        );
        assert!(out.contains("Stream name [events]: "), "{out}");
    }

    #[tokio::test]
    async fn typed_fields_taken_names_and_bad_sql_are_asked_again() {
        let answers = [
            "events", // taken on the server
            "clicks", //
            "",       // no schema file
            "id",     // field 1
            "text",   // not a type
            "string", //
            "y",      // required
            "ts",     // field 2
            "timestamp",
            "",          // not required
            "id",        // twice
            "",          // done
            "drop",      // unknown fields
            "",          // on_invalid reject
            "maybe",     // not y/n
            "y",         // auth
            "",          // sink name: clicks_table
            "",          // iceberg
            "analytics", // not ns.table
            "analytics.clicks",
            "",  // partition by day(ts)
            "0", // not above 0
            "2",
            "", // pipeline name
            "INSERT INTO clicks_table SELECT nope FROM clicks",
            "INSERT INTO clicks_table SELECT id, ts FROM clicks",
        ]
        .join("\n")
            + "\n";
        let (plan, out) = script(&answers, &["events"]).await;
        let plan = plan.unwrap();
        assert_eq!(
            plan.stream,
            json!({"name": "clicks", "unknown_fields": "drop", "on_invalid": "reject", "http": {"auth": true},
                   "fields": [
                       {"name": "id", "type": "string", "required": true},
                       {"name": "ts", "type": "timestamp", "required": false}]})
        );
        assert_eq!(plan.sink["partition_by"], json!(["day(ts)"]));
        assert_eq!(plan.sink["table"], "analytics.clicks");
        assert_eq!(plan.sink["rolling"]["interval_seconds"], 2);
        assert_eq!(plan.pipeline["name"], "clicks_to_table");
        assert_eq!(
            plan.pipeline["sql"],
            "INSERT INTO clicks_table SELECT id, ts FROM clicks"
        );
        for refusal in [
            "already has a stream, sink or pipeline named \"events\"",
            "Require a token with scope send:clicks to send",
            "answer one of string",
            "there is a field \"id\" already",
            "answer y or n",
            "\"analytics\" is not namespace.table",
            "\"0\" is not a whole number",
            "nope",
        ] {
            assert!(out.contains(refusal), "{refusal:?} not in:\n{out}");
        }
        assert!(
            plan.summary.iter().any(|l| l.contains("partitioned by day(ts)")),
            "{:?}",
            plan.summary
        );
    }

    #[tokio::test]
    async fn a_schema_file_gives_the_fields_and_a_bad_one_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("schema.json");
        std::fs::write(
            &good,
            r#"{"fields": [{"name": "id", "type": "string", "required": true},
                           {"name": "tags", "type": "list", "items": {"type": "string"}}]}"#,
        )
        .unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"fields": [{"name": "x", "type": "decimal"}]}"#).unwrap();
        let answers = format!(
            "s\n{}\n{}\n{}",
            bad.display(),
            dir.path().join("missing.json").display(),
            good.display()
        ) + &"\n".repeat(12);
        let (plan, out) = script(&answers, &[]).await;
        let plan = plan.unwrap();
        let names: Vec<&str> = plan.stream["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["id", "tags"]);
        assert!(out.contains("decimal"), "{out}");
        assert!(out.contains("cannot read"), "{out}");
        // No timestamp field: no partition by default.
        assert!(plan.sink.get("partition_by").is_none(), "{}", plan.sink);
    }

    #[tokio::test]
    async fn a_files_sink_and_the_end_of_input_cancels() {
        let answers = "\n\n\n\n\nout\nfiles\n\nparquet\n\n";
        let (plan, out) = script(answers, &[]).await;
        assert_eq!(plan, Err(Ended), "{out}");
        let answers = "\n\n\n\n\nout\nfiles\n\nparquet\n\n\n\n";
        let (plan, _) = script(answers, &[]).await;
        let plan = plan.unwrap();
        assert_eq!(
            plan.sink,
            json!({"name": "out", "type": "files", "path": "exports/events", "format": "parquet",
                   "rolling": {"interval_seconds": DEFAULT_ROLL_INTERVAL_SECONDS}})
        );
        assert_eq!(plan.pipeline["sql"], "INSERT INTO out SELECT * FROM events");
        assert_eq!(plan.pipeline["name"], "events_to_files");
    }

    #[test]
    fn free_names_count_up() {
        let taken: HashSet<String> = ["a", "a_2"].iter().map(|s| s.to_string()).collect();
        assert_eq!(free_name("a", &taken), "a_3");
        assert_eq!(free_name("b", &taken), "b");
    }
}
