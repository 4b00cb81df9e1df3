//! Synthetic resource events for benchmarks (`floe-load`, `benches/`): the same bytes
//! everywhere, so ingest, the in-process limit and the PyIceberg peer measure the same work.
//!
//! An event is ~167 bytes of JSON: `ns` (50 tenants), `type` (5), `id`, `ts`, `data` (a small
//! object) and `visibility`.

/// Resource types cycled through.
pub const TYPES: [&str; 5] = ["function", "bucket", "database", "queue", "topic"];
/// Visibility values cycled through.
pub const VISIBILITY: [&str; 3] = ["public", "private", "team"];
/// Tenants (`ns`) cycled through.
pub const TENANTS: usize = 50;

/// Event number `n` as one JSON object.
pub fn event_json(n: usize, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        r#"{{"ns":"tenant-{:02}.example.com","type":"{}","id":"res-{n:09}","ts":"2026-11-26T10:{:02}:{:02}.{:06}Z","data":{{"size":{},"region":"eu-west-{}"}},"visibility":"{}"}}"#,
        n % TENANTS,
        TYPES[n % TYPES.len()],
        (n / 60) % 60,
        n % 60,
        n % 1_000_000,
        n % 10_000,
        n % 3,
        VISIBILITY[n % VISIBILITY.len()],
    );
}

/// A request body: a JSON array of `batch` events, numbered from `seed * batch`.
pub fn request_body(batch: usize, seed: usize) -> String {
    let mut out = String::with_capacity(batch * 170);
    out.push('[');
    for i in 0..batch {
        if i > 0 {
            out.push(',');
        }
        event_json(seed * batch + i, &mut out);
    }
    out.push(']');
    out
}

/// The stream fields of these events, as `floe.toml` would declare them.
pub fn fields() -> Vec<crate::config::FieldConfig> {
    use crate::config::{FieldConfig, FieldType};
    let f = |name: &str, ty: FieldType, required: bool| FieldConfig {
        name: name.into(),
        ty,
        required,
        items: None,
        fields: None,
    };
    vec![
        f("ns", FieldType::String, true),
        f("type", FieldType::String, true),
        f("id", FieldType::String, true),
        f("ts", FieldType::Timestamp, true),
        f("data", FieldType::Json, false),
        f("visibility", FieldType::String, false),
    ]
}
