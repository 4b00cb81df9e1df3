//! The topology: the one resolved model of what a floe runs — its streams, sinks and pipeline
//! statements — built by [`Topology::from_config`] from a [`Config`].
//!
//! ```text
//!  Config (declared)                      Topology (resolved)
//!  ─────────────────                      ───────────────────────────────────────────────────
//!  [[streams]] events                     streams:    events, events_dead_letter (internal)
//!    on_invalid = "dead_letter"   ──►     sinks:      a, events_dead_letter_table (built-in)
//!  [[sinks]] a                            pipelines:  p, events_dead_letter (built-in)
//!  [[pipelines]] p                        statements: (p, a) reads events,
//!    INSERT INTO a SELECT … FROM events                (events_dead_letter, events_dead_letter_table)
//!                                                      reads events_dead_letter
//! ```
//!
//! Dead letters are explicit here, and only here: a stream with `on_invalid = "dead_letter"` gets
//! an internal stream, a sink and a built-in pipeline (see [`crate::ingest::dead_letter`]), listed
//! in [`Topology::dead_letters`]. Everything downstream (opening logs, recording start positions,
//! running statements, backpressure, truncation) reads the topology, not the config.
//!
//! The topology is a value: a change at run time (a stream or pipeline added or removed, see
//! [`crate::supervisor`]) resolves a new one from the changed declaration, and the supervisor
//! brings what runs in line with it.

use std::collections::HashSet;

use arrow::datatypes::SchemaRef;

use crate::config::{
    Config, DEFAULT_MAX_BAD_ROWS_PER_BATCH, DEFAULT_ROLL_INTERVAL_SECONDS, OnError, OnInvalid, PipelineConfig,
    PipelineStart, SinkConfig, SinkType, StreamConfig,
};
use crate::error::{Error, Result};
use crate::ingest::dead_letter;
use crate::ingest::schema::{arrow_schema, stream_fields};
use crate::pipeline::{Transform, plan_pipeline};

/// The dead-letter wiring of one stream with `on_invalid = "dead_letter"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    /// The stream whose invalid rows these are.
    pub stream: String,
    /// The internal stream holding them (not served over HTTP).
    pub internal_stream: String,
    /// The built-in sink (table `<namespace>.<stream>_dead_letter`).
    pub sink: String,
    /// The built-in pipeline from the internal stream into the sink.
    pub pipeline: String,
}

/// The resolved model of streams, sinks and pipeline statements.
#[derive(Clone)]
pub struct Topology {
    /// The declaration it was resolved from (the config's streams, sinks and pipelines, with the
    /// changes made at run time).
    pub declared: Config,
    /// Every stream: the declared ones, then the internal dead-letter streams.
    pub streams: Vec<StreamConfig>,
    /// Every sink: the declared ones, then the built-in dead-letter sinks.
    pub sinks: Vec<SinkConfig>,
    /// Every pipeline: the declared ones, then the built-in dead-letter pipelines.
    pub pipelines: Vec<PipelineConfig>,
    /// The dead-letter wiring, one per stream with `on_invalid = "dead_letter"`.
    pub dead_letters: Vec<DeadLetters>,
    /// Every planned statement (`INSERT INTO sink SELECT … FROM stream`), in pipeline order.
    pub statements: Vec<Transform>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("streams", &self.streams.iter().map(|s| &s.name).collect::<Vec<_>>())
            .field("sinks", &self.sinks.iter().map(|s| &s.name).collect::<Vec<_>>())
            .field("statements", &self.statements)
            .field("dead_letters", &self.dead_letters)
            .finish()
    }
}

impl Topology {
    /// Resolves `config`'s streams, sinks and pipelines: adds the dead-letter parts and plans
    /// every statement (refusing SQL that does not plan, and a pipeline writing a sink twice).
    pub async fn from_config(config: &Config) -> Result<Topology> {
        Self::resolve(config, None).await
    }

    /// [`from_config`](Self::from_config), keeping the built-in dead-letter sinks `previous`
    /// already has as they are there (a running statement's sink does not move when the
    /// declaration changes around it: a dead-letter table's namespace follows the first pipeline
    /// reading its stream). Declared sinks are taken as declared: a changed one is changed.
    pub async fn resolve(config: &Config, previous: Option<&Topology>) -> Result<Topology> {
        let mut streams = config.streams.clone();
        let mut sinks = config.sinks.clone();
        // A files sink's folder, as the URI it is written and recorded under.
        for s in &mut sinks {
            if let Some(path) = &s.path {
                s.path = Some(config.files_location(path));
            }
        }
        let mut pipelines = config.pipelines.clone();
        let dead_letters: Vec<DeadLetters> = config
            .streams
            .iter()
            .filter(|s| s.on_invalid == OnInvalid::DeadLetter)
            .map(|s| DeadLetters {
                stream: s.name.clone(),
                internal_stream: dead_letter::stream_name(&s.name),
                sink: dead_letter::sink_name(&s.name),
                pipeline: dead_letter::stream_name(&s.name),
            })
            .collect();
        streams.extend(dead_letters.iter().map(|d| dead_letter::stream_config(&d.stream)));
        let schemas: Vec<(String, SchemaRef)> = streams
            .iter()
            .map(|s| (s.name.clone(), arrow_schema(&stream_fields(s.fields.as_ref()))))
            .collect();
        let mut sink_names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
        sink_names.extend(dead_letters.iter().map(|d| d.sink.clone()));
        let mut statements = Vec::new();
        for p in &config.pipelines {
            statements.extend(plan_pipeline(&p.name, &p.sql, &schemas, &sink_names).await?);
        }
        // A files sink's time_column and sort keys must be columns of what its statements write:
        // refused here, at start, rather than by every open of the runner.
        for t in &statements {
            if let Some(s) = sinks.iter().find(|s| s.name == t.sink && s.ty == SinkType::Files) {
                crate::sink::files::check_output(s, &t.output)?;
            }
        }
        for d in &dead_letters {
            let kept = previous.and_then(|t| t.sink(&d.sink)).cloned();
            sinks.push(kept.unwrap_or_else(|| {
                // The namespace and roll interval of the first Iceberg sink the stream feeds.
                let fed = statements.iter().filter(|t| t.stream == d.stream).find_map(|t| {
                    config
                        .sink(&t.sink)
                        .and_then(|c| c.table.clone().map(|tb| (tb, c.rolling.interval_seconds)))
                });
                let (namespace, interval) = match fed {
                    Some((table, interval)) => (
                        table.rsplit_once('.').map(|(ns, _)| ns.to_string()).unwrap_or_default(),
                        interval,
                    ),
                    None => (
                        dead_letter::DEFAULT_NAMESPACE.to_string(),
                        DEFAULT_ROLL_INTERVAL_SECONDS,
                    ),
                };
                dead_letter::sink_config(&d.stream, &namespace, interval)
            }));
            let builtin = PipelineConfig {
                name: d.pipeline.clone(),
                sql: dead_letter::pipeline_sql(&d.stream),
                // Nothing else reads the internal stream: its first row is the start.
                start: PipelineStart::Earliest,
                replaces: None,
                on_error: OnError::DeadLetter,
                max_bad_rows_per_batch: DEFAULT_MAX_BAD_ROWS_PER_BATCH,
            };
            statements.extend(plan_pipeline(&builtin.name, &builtin.sql, &schemas, &sink_names).await?);
            pipelines.push(builtin);
        }
        let mut seen = HashSet::new();
        for t in &statements {
            if !seen.insert((t.pipeline.clone(), t.sink.clone())) {
                return Err(Error::Config(format!(
                    "pipeline {:?} writes to sink {:?} twice; use one INSERT per sink",
                    t.pipeline, t.sink
                )));
            }
        }
        Ok(Topology {
            declared: config.clone(),
            streams,
            sinks,
            pipelines,
            dead_letters,
            statements,
        })
    }

    /// A stream by name (internal ones included).
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// A sink by name (built-in ones included).
    pub fn sink(&self, name: &str) -> Option<&SinkConfig> {
        self.running().sink(name)
    }

    /// A pipeline by name (built-in ones included).
    pub fn pipeline(&self, name: &str) -> Option<&PipelineConfig> {
        self.running().pipeline(name)
    }

    /// Its pipelines and statements, as the position checks of [`crate::pipeline::identity`]
    /// take them.
    pub fn running(&self) -> crate::pipeline::identity::Running<'_> {
        crate::pipeline::identity::Running {
            pipelines: &self.pipelines,
            sinks: &self.sinks,
            statements: &self.statements,
        }
    }

    /// The statements reading `stream`.
    pub fn statements_reading<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a Transform> + 'a {
        self.statements.iter().filter(move |t| t.stream == stream)
    }

    /// The stream a pipeline's statements read (the first statement's).
    pub fn stream_of_pipeline(&self, pipeline: &str) -> Option<&str> {
        self.statements
            .iter()
            .find(|t| t.pipeline == pipeline)
            .map(|t| t.stream.as_str())
    }

    /// The internal dead-letter stream of `stream`, when it has one.
    pub fn dead_letter_stream_of(&self, stream: &str) -> Option<&str> {
        self.dead_letters
            .iter()
            .find(|d| d.stream == stream)
            .map(|d| d.internal_stream.as_str())
    }

    /// The stream whose dead letters the internal stream `internal` holds.
    pub fn owner_of_dead_letters(&self, internal: &str) -> Option<&str> {
        self.dead_letters
            .iter()
            .find(|d| d.internal_stream == internal)
            .map(|d| d.stream.as_str())
    }

    /// The declaration with the resolved streams, sinks and pipelines in it (what planning and
    /// validation see: the dead-letter streams and sinks are there).
    pub fn resolved_config(&self) -> Config {
        let mut c = self.declared.clone();
        c.streams = self.streams.clone();
        c.sinks = self.sinks.clone();
        c.pipelines = self.pipelines.clone();
        c
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text, Path::new("/tmp/floe.toml"), Path::new("/tmp")).expect("config")
    }

    #[tokio::test]
    async fn a_dead_letter_stream_gets_an_internal_stream_sink_and_pipeline() {
        let c = config(
            r#"
[[streams]]
name = "events"
on_invalid = "dead_letter"
fields = [ { name = "id", type = "int64", required = true } ]

[[sinks]]
name = "a"
type = "iceberg"
table = "analytics.a"
rolling = { interval_seconds = 7 }

[[pipelines]]
name = "p"
sql = "INSERT INTO a SELECT id FROM events"
"#,
        );
        let t = Topology::from_config(&c).await.expect("topology");
        let names = |v: Vec<&String>| v.into_iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(t.streams.iter().map(|s| &s.name).collect()),
            ["events", "events_dead_letter"]
        );
        assert_eq!(
            names(t.sinks.iter().map(|s| &s.name).collect()),
            ["a", "events_dead_letter_table"]
        );
        assert_eq!(
            names(t.pipelines.iter().map(|p| &p.name).collect()),
            ["p", "events_dead_letter"]
        );
        let dl = t.sink("events_dead_letter_table").expect("built-in sink");
        // The namespace and roll interval of the first sink a pipeline reading the stream feeds.
        assert_eq!(dl.table.as_deref(), Some("analytics.events_dead_letter"));
        assert_eq!(dl.rolling.interval_seconds, 7);
        assert_eq!(t.dead_letter_stream_of("events"), Some("events_dead_letter"));
        assert_eq!(t.owner_of_dead_letters("events_dead_letter"), Some("events"));
        assert_eq!(
            t.pipeline("events_dead_letter").map(|p| p.start),
            Some(PipelineStart::Earliest)
        );
        let read: Vec<(&str, &str, &str)> = t
            .statements
            .iter()
            .map(|s| (s.pipeline.as_str(), s.sink.as_str(), s.stream.as_str()))
            .collect();
        assert_eq!(
            read,
            [
                ("p", "a", "events"),
                ("events_dead_letter", "events_dead_letter_table", "events_dead_letter")
            ]
        );
        assert!(!t.stream("events_dead_letter").expect("internal").http.enabled);
    }

    #[tokio::test]
    async fn a_resolved_sink_keeps_its_table_when_the_declaration_changes() {
        let mut c = config(
            r#"
[[streams]]
name = "events"
on_invalid = "dead_letter"

[[sinks]]
name = "a"
type = "iceberg"
table = "analytics.a"
"#,
        );
        let first = Topology::from_config(&c).await.expect("topology");
        assert_eq!(
            first.sink("events_dead_letter_table").and_then(|s| s.table.as_deref()),
            Some("floe.events_dead_letter")
        );
        c.pipelines.push(PipelineConfig {
            name: "p".into(),
            sql: "INSERT INTO a SELECT * FROM events".into(),
            start: PipelineStart::Latest,
            replaces: None,
            on_error: OnError::DeadLetter,
            max_bad_rows_per_batch: DEFAULT_MAX_BAD_ROWS_PER_BATCH,
        });
        let second = Topology::resolve(&c, Some(&first)).await.expect("topology");
        assert_eq!(
            second.sink("events_dead_letter_table").and_then(|s| s.table.as_deref()),
            Some("floe.events_dead_letter")
        );
        assert_eq!(second.statements.len(), 2);
    }

    #[tokio::test]
    async fn a_pipeline_writing_a_sink_twice_is_refused() {
        let c = config(
            r#"
[[streams]]
name = "events"

[[sinks]]
name = "a"
type = "iceberg"
table = "analytics.a"

[[pipelines]]
name = "p"
sql = "INSERT INTO a SELECT * FROM events; INSERT INTO a SELECT * FROM events"
"#,
        );
        let e = Topology::from_config(&c).await.expect_err("refused");
        assert!(e.to_string().contains("twice"), "{e}");
    }
}
