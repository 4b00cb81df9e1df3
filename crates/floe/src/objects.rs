//! Streams, sinks and pipelines as the control plane stores and shows them: parsing a body sent
//! to the API (`floe.toml` keys as JSON, or a stream schema in the managed product's format), the
//! confinement of what a client may name, and merging the stored objects
//! ([`floe_catalog::objects`]) into the declaration at start (docs/control-plane.md).
//!
//! The declaration a floe runs is `floe.toml`'s objects plus the stored ones; a name in both is a
//! start error, so what runs never depends on which one would win.

use serde_json::{Map, Value};

use floe_catalog::{ObjectKind, StoredObject};

use crate::config::{Config, FieldConfig, PipelineConfig, SinkConfig, SinkType, StreamConfig};
use crate::error::{Error, Result};

/// Where a live object comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `floe.toml`: read-only through the API.
    Config,
    /// Created through the API and stored in the catalog database.
    Api,
    /// A stream's dead-letter stream, sink or pipeline: comes and goes with the stream.
    Internal,
}

impl Origin {
    /// As the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
            Origin::Internal => "internal",
        }
    }
}

/// One object's configuration, parsed.
#[derive(Debug, Clone)]
pub enum ObjectConfig {
    /// `[[streams]]`
    Stream(StreamConfig),
    /// `[[sinks]]` (boxed: a sink's settings are the largest by far)
    Sink(Box<SinkConfig>),
    /// `[[pipelines]]`
    Pipeline(PipelineConfig),
}

impl ObjectConfig {
    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            ObjectConfig::Stream(s) => &s.name,
            ObjectConfig::Sink(s) => &s.name,
            ObjectConfig::Pipeline(p) => &p.name,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            ObjectConfig::Stream(_) => ObjectKind::Stream,
            ObjectConfig::Sink(_) => ObjectKind::Sink,
            ObjectConfig::Pipeline(_) => ObjectKind::Pipeline,
        }
    }

    /// As JSON, every default filled in (what is stored and shown).
    pub fn to_json(&self) -> Value {
        let v = match self {
            ObjectConfig::Stream(s) => serde_json::to_value(s),
            ObjectConfig::Sink(s) => serde_json::to_value(s),
            ObjectConfig::Pipeline(p) => serde_json::to_value(p),
        };
        v.unwrap_or(Value::Null)
    }
}

fn bad(message: String) -> Error {
    Error::BadRequest {
        code: "bad_request",
        message,
    }
}

/// Parses a body of `kind` (an object of `floe.toml` keys; a stream may give `schema` in the
/// managed product's format instead of `fields`). Only the shape is checked here; the values
/// are checked with the whole declaration ([`Config::validate`]).
pub fn parse(kind: ObjectKind, body: Value) -> Result<ObjectConfig> {
    let Value::Object(mut map) = body else {
        return Err(bad(format!(
            "a {} is a JSON object of its floe.toml keys",
            kind.as_str()
        )));
    };
    let what = kind.as_str();
    let parsed = match kind {
        ObjectKind::Stream => {
            if let Some(schema) = map.remove("schema") {
                if map.contains_key("fields") {
                    return Err(bad(
                        "give the stream's fields as \"fields\" or as \"schema\", not both".into()
                    ));
                }
                map.insert("fields".into(), schema_file_fields(&schema)?);
            }
            serde_json::from_value(Value::Object(map)).map(ObjectConfig::Stream)
        }
        ObjectKind::Sink => serde_json::from_value(Value::Object(map)).map(|s| ObjectConfig::Sink(Box::new(s))),
        ObjectKind::Pipeline => serde_json::from_value(Value::Object(map)).map(ObjectConfig::Pipeline),
    };
    parsed.map_err(|e| bad(format!("not a {what}: {e}")))
}

/// The `fields` of a schema file in the managed product's format (`{"fields": [{"name", "type",
/// "required", "items", "fields", "unit"}]}`), as floe's [`FieldConfig`] JSON. `unit` of a
/// timestamp may be `millisecond` or `microsecond` (floe tells them apart by magnitude); other
/// units, `sql_name` and `metadata_key` are refused, naming the field.
pub fn schema_file_fields(schema: &Value) -> Result<Value> {
    let fields = schema
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("schema: expected {\"fields\": [ … ]}".into()))?;
    if let Some(extra) = schema.as_object().and_then(|o| o.keys().find(|k| *k != "fields")) {
        return Err(bad(format!("schema: key {extra:?} is not supported (only \"fields\")")));
    }
    let out: Vec<Value> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| schema_field(f, &format!("schema.fields[{i}]")))
        .collect::<Result<_>>()?;
    let out = Value::Array(out);
    // The result must be floe's FieldConfig (an unknown type is named as the schema's).
    serde_json::from_value::<Vec<FieldConfig>>(out.clone()).map_err(|e| bad(format!("schema: {e}")))?;
    Ok(out)
}

fn schema_field(f: &Value, at: &str) -> Result<Value> {
    let Value::Object(map) = f else {
        return Err(bad(format!("{at}: a field is an object {{\"name\", \"type\", …}}")));
    };
    let mut out = Map::new();
    for (k, v) in map {
        match k.as_str() {
            "name" | "type" | "required" => {
                out.insert(k.clone(), v.clone());
            }
            "unit" => match v.as_str() {
                Some("millisecond" | "microsecond") => {}
                _ => {
                    return Err(bad(format!(
                        "{at}.unit: {v} is not supported: floe reads epoch milliseconds and microseconds (told apart by size) and RFC 3339 text"
                    )));
                }
            },
            "items" => {
                out.insert(k.clone(), schema_field(v, &format!("{at}.items"))?);
            }
            "fields" => {
                let members = v
                    .as_array()
                    .ok_or_else(|| bad(format!("{at}.fields: expected a list of fields")))?;
                let members: Vec<Value> = members
                    .iter()
                    .enumerate()
                    .map(|(j, m)| schema_field(m, &format!("{at}.fields[{j}]")))
                    .collect::<Result<_>>()?;
                out.insert(k.clone(), Value::Array(members));
            }
            other => {
                return Err(bad(format!(
                    "{at}: key {other:?} is not supported (a field has name, type, required, items, fields, unit)"
                )));
            }
        }
    }
    Ok(Value::Object(out))
}

/// What a client may not do that `floe.toml` may: a files sink created through the API writes
/// inside the warehouse only (a relative `path` is taken below it).
pub fn confine(config: &Config, object: &mut ObjectConfig) -> Result<()> {
    let ObjectConfig::Sink(sink) = object else {
        return Ok(());
    };
    if sink.ty != SinkType::Files {
        return Ok(());
    }
    let Some(path) = sink.path.clone() else {
        return Ok(()); // Config::validate names the missing key
    };
    let warehouse = config.warehouse_uri();
    let warehouse = warehouse.trim_end_matches('/');
    let location = if path.contains("://") || path.starts_with('/') {
        config.files_location(&path)
    } else {
        format!("{warehouse}/{}", path.trim_end_matches('/'))
    };
    let inside = location
        .strip_prefix(warehouse)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| {
            !rest.is_empty() && rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        });
    if !inside {
        return Err(Error::Config(format!(
            "path {path:?}: a files sink created through the API writes inside the warehouse ({warehouse}); give a folder below it"
        )));
    }
    sink.path = Some(location);
    Ok(())
}

/// The stored objects, parsed (a row that no longer parses is a start error naming it).
pub fn parse_stored(stored: &[StoredObject]) -> Result<Vec<ObjectConfig>> {
    stored
        .iter()
        .map(|o| {
            let body: Value = serde_json::from_str(&o.body)
                .map_err(|e| Error::Config(format!("stored {} {:?} is not JSON: {e}", o.kind.as_str(), o.name)))?;
            let parsed = parse(o.kind, body)
                .map_err(|e| Error::Config(format!("stored {} {:?} no longer reads: {e}", o.kind.as_str(), o.name)))?;
            if parsed.name() != o.name {
                return Err(Error::Config(format!(
                    "stored {} {:?} names itself {:?}",
                    o.kind.as_str(),
                    o.name,
                    parsed.name()
                )));
            }
            Ok(parsed)
        })
        .collect()
}

/// `config` with the stored `objects` added; a name both declare is a start error.
pub fn merge(config: &Config, objects: &[ObjectConfig]) -> Result<Config> {
    let mut merged = config.clone();
    for o in objects {
        let clash = match o {
            ObjectConfig::Stream(s) => merged.stream(&s.name).is_some(),
            ObjectConfig::Sink(s) => merged.sink(&s.name).is_some(),
            ObjectConfig::Pipeline(p) => merged.pipelines.iter().any(|q| q.name == p.name),
        };
        if clash {
            return Err(Error::Config(format!(
                "{} {:?} is in floe.toml and was also created through the API: delete it through the API (DELETE /v1/{}s/{}) or rename it in the file",
                o.kind().as_str(),
                o.name(),
                o.kind().as_str(),
                o.name()
            )));
        }
        add(&mut merged, o.clone());
    }
    Ok(merged)
}

/// Adds `object` to `config`'s objects.
pub fn add(config: &mut Config, object: ObjectConfig) {
    match object {
        ObjectConfig::Stream(s) => config.streams.push(s),
        ObjectConfig::Sink(s) => config.sinks.push(*s),
        ObjectConfig::Pipeline(p) => config.pipelines.push(p),
    }
}

/// Puts `object` in the place of `config`'s object of the same kind and name. A stream's
/// `fields` change only as [`check_evolution`] allows, and its `on_invalid` not at all (its
/// dead-letter wiring depends on it); everything else of it and every key of a sink or pipeline
/// can.
pub fn replace(config: &mut Config, object: ObjectConfig) -> Result<()> {
    let missing = |what: &'static str, name: &str| Error::NotFound {
        what,
        name: name.to_string(),
    };
    match object {
        ObjectConfig::Stream(s) => {
            let slot = config
                .streams
                .iter_mut()
                .find(|x| x.name == s.name)
                .ok_or_else(|| missing("stream", &s.name))?;
            check_evolution(&s.name, slot.fields.as_deref(), s.fields.as_deref())?;
            if slot.on_invalid != s.on_invalid {
                return Err(Error::Config(format!(
                    "stream {:?}: on_invalid cannot change on a running stream (its dead-letter stream, sink and pipeline come and go with it)",
                    s.name
                )));
            }
            *slot = s;
        }
        ObjectConfig::Sink(s) => {
            let slot = config
                .sinks
                .iter_mut()
                .find(|x| x.name == s.name)
                .ok_or_else(|| missing("sink", &s.name))?;
            *slot = *s;
        }
        ObjectConfig::Pipeline(p) => {
            let slot = config
                .pipelines
                .iter_mut()
                .find(|x| x.name == p.name)
                .ok_or_else(|| missing("pipeline", &p.name))?;
            *slot = p;
        }
    }
    Ok(())
}

/// Whether a stream's fields may go from `old` to `new` while it runs (schema evolution): new
/// fields must be optional; an existing field keeps its name and type, or widens `int32 → int64`
/// or `float32 → float64`, and may become optional; nothing is removed, and a list's items or a
/// struct's members do not change. Rows already in the log read the new fields as null.
pub fn check_evolution(stream: &str, old: Option<&[FieldConfig]>, new: Option<&[FieldConfig]>) -> Result<()> {
    use crate::config::FieldType as T;
    let refuse = |why: String| Err(Error::Config(format!("stream {stream:?}: {why}")));
    let (old, new) = match (old, new) {
        (None, None) => return Ok(()),
        (Some(o), Some(n)) => (o, n),
        _ => return refuse("a stream cannot change between unstructured (no fields) and structured".into()),
    };
    for o in old {
        let Some(n) = new.iter().find(|n| n.name == o.name) else {
            return refuse(format!(
                "field {:?} cannot be removed (rows in the log and the tables have it); make it optional instead",
                o.name
            ));
        };
        let type_ok = (n.ty == o.ty && n.items == o.items && n.fields == o.fields)
            || matches!((o.ty, n.ty), (T::Int32, T::Int64) | (T::Float32, T::Float64));
        if !type_ok {
            return refuse(format!(
                "field {:?} cannot change from {:?} to {:?}: a field's type may only widen int32 → int64 or float32 → float64",
                o.name, o.ty, n.ty
            ));
        }
        if n.required && !o.required {
            return refuse(format!(
                "field {:?} cannot become required: rows already in the log may lack it",
                o.name
            ));
        }
    }
    for n in new.iter().filter(|n| !old.iter().any(|o| o.name == n.name)) {
        if n.required {
            return refuse(format!(
                "the new field {:?} must be optional (required = false): rows already in the log do not have it",
                n.name
            ));
        }
    }
    Ok(())
}

/// A JSON merge patch (RFC 7386) applied to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_managed_schema_file_loads_and_what_floe_would_misread_is_refused() {
        let body = json!({"name": "clicks", "schema": {"fields": [
            {"name": "url", "type": "string", "required": true},
            {"name": "ts", "type": "timestamp", "unit": "millisecond"},
            {"name": "tags", "type": "list", "items": {"type": "string"}},
            {"name": "geo", "type": "struct", "fields": [{"name": "lat", "type": "float64"}]}
        ]}});
        let ObjectConfig::Stream(s) = parse(ObjectKind::Stream, body).expect("parses") else {
            panic!("a stream")
        };
        let fields = s.fields.expect("fields");
        assert_eq!(fields.len(), 4);
        assert!(fields[0].required);
        assert_eq!(fields[3].fields.as_ref().map(Vec::len), Some(1));
        for (bad_field, names) in [
            (
                json!({"name": "ts", "type": "timestamp", "unit": "second"}),
                "schema.fields[0].unit",
            ),
            (json!({"name": "a", "type": "string", "sql_name": "b"}), "\"sql_name\""),
            (
                json!({"name": "a", "type": "list", "items": {"type": "int32", "metadata_key": "k"}}),
                "schema.fields[0].items",
            ),
            (json!({"name": "a", "type": "decimal"}), "schema"),
        ] {
            let body = json!({"name": "s", "schema": {"fields": [bad_field]}});
            let err = parse(ObjectKind::Stream, body).expect_err("refused").to_string();
            assert!(err.contains(names), "{err}");
        }
        let both = json!({"name": "s", "fields": [], "schema": {"fields": []}});
        assert!(parse(ObjectKind::Stream, both).is_err());
        assert!(parse(ObjectKind::Sink, json!({"name": "s", "type": "iceberg", "nope": 1})).is_err());
        assert!(parse(ObjectKind::Pipeline, json!(["not", "an", "object"])).is_err());
    }

    #[test]
    fn streams_evolve_by_optional_fields_and_widenings_only() {
        let fields = |v: Value| -> Vec<FieldConfig> { serde_json::from_value(v).expect("fields") };
        let old = fields(json!([{"name": "id", "type": "int32", "required": true}, {"name": "x", "type": "float32"}]));
        let ok = [
            json!([{"name": "id", "type": "int32", "required": true}, {"name": "x", "type": "float32"}, {"name": "new", "type": "string"}]),
            json!([{"name": "id", "type": "int64", "required": true}, {"name": "x", "type": "float64"}]),
            json!([{"name": "id", "type": "int32"}, {"name": "x", "type": "float32"}]),
        ];
        for new in ok {
            check_evolution("s", Some(&old), Some(&fields(new.clone()))).unwrap_or_else(|e| panic!("{new}: {e}"));
        }
        let refused = [
            (json!([{"name": "id", "type": "int32", "required": true}]), "removed"),
            (
                json!([{"name": "id", "type": "string", "required": true}, {"name": "x", "type": "float32"}]),
                "widen",
            ),
            (
                json!([{"name": "id", "type": "int64", "required": true}, {"name": "x", "type": "float32", "required": true}]),
                "required",
            ),
            (
                json!([{"name": "id", "type": "int32", "required": true}, {"name": "x", "type": "float32"}, {"name": "n", "type": "bool", "required": true}]),
                "optional",
            ),
            (
                json!([{"name": "id", "type": "int64", "required": true}, {"name": "x", "type": "int32"}]),
                "widen",
            ),
        ];
        for (new, why) in refused {
            let err = check_evolution("s", Some(&old), Some(&fields(new.clone())))
                .expect_err("refused")
                .to_string();
            assert!(err.contains(why), "{new}: {err}");
        }
        assert!(check_evolution("s", Some(&old), None).is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(&mut target, &json!({"a": null, "b": {"c": 9}, "e": [2], "f": "x"}));
        assert_eq!(target, json!({"b": {"c": 9, "d": 3}, "e": [2], "f": "x"}));
    }

    #[test]
    fn an_api_files_sink_stays_inside_the_warehouse() {
        let config = Config::from_toml(
            "[catalog]\nwarehouse = \"/srv/wh\"\n",
            std::path::Path::new("floe.toml"),
            std::path::Path::new("/srv"),
        )
        .expect("config");
        let sink = |path: &str| {
            ObjectConfig::Sink(Box::new(
                serde_json::from_value(json!({"name": "f", "type": "files", "path": path})).expect("a sink"),
            ))
        };
        for path in [
            "/etc",
            "../up",
            "/srv/wh",
            "/srv/wh/../x",
            "file:///tmp/x",
            "s3://other/x",
            "/srv/wh2/x",
        ] {
            assert!(confine(&config, &mut sink(path)).is_err(), "{path}");
        }
        let mut ok = sink("archive/events");
        confine(&config, &mut ok).expect("inside");
        let ObjectConfig::Sink(s) = ok else { unreachable!() };
        assert_eq!(s.path.as_deref(), Some("file:///srv/wh/archive/events"));
        let mut absolute = sink("/srv/wh/a");
        confine(&config, &mut absolute).expect("inside");
    }
}
