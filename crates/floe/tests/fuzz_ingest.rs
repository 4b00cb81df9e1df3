//! Bounded fuzzing (proptest, fixed case counts, no persisted failures) of everything a client's
//! bytes reach before the log: gzip framing, NDJSON / array splitting and the row decoder.
//! Properties: no panic; every failure is a body error (malformed, empty, bad gzip, a limit) or
//! row errors naming rows that exist; valid rows decode to exactly one row each; and the decoded
//! output stays proportional to the input (no unbounded allocation).

use std::io::Write;

use base64::Engine;
use floe::config::{FieldConfig, UnknownFields};
use floe::error::Error;
use floe::ingest::decode::{DecodeError, Framing, RowDecoder};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A schema with every field type, nested list and struct included.
fn fields() -> Vec<FieldConfig> {
    toml::from_str::<toml::Table>(
        r#"f = [
          { name = "s",   type = "string", required = true },
          { name = "i32", type = "int32" },
          { name = "i64", type = "int64" },
          { name = "f32", type = "float32" },
          { name = "f64", type = "float64" },
          { name = "b",   type = "bool" },
          { name = "ts",  type = "timestamp" },
          { name = "bin", type = "binary" },
          { name = "j",   type = "json" },
          { name = "l",   type = "list", items = { type = "int64" } },
          { name = "st",  type = "struct", fields = [ { name = "lat", type = "float64", required = true }, { name = "tag", type = "string" } ] },
        ]"#,
    )
    .unwrap()["f"]
        .clone()
        .try_into()
        .unwrap()
}

const MAX_ROW: usize = 4096;

fn decoder() -> RowDecoder {
    RowDecoder::new(&fields(), UnknownFields::Reject, MAX_ROW, 1000, false)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Decoded memory is linear in the body: each row costs at most a few bytes per column, and
/// every row takes at least 2 bytes of the body.
fn bounded(batch: &arrow::record_batch::RecordBatch, body_len: usize) {
    let mem = batch.get_array_memory_size();
    assert!(
        mem <= 512 * (body_len + 64),
        "{mem} bytes of Arrow for a {body_len}-byte body"
    );
    assert!(batch.num_rows() <= body_len / 2 + 1);
}

fn check_any(body: &[u8], framing: Framing) {
    let d = decoder();
    match d.decode(body, framing) {
        Ok(b) => bounded(&b, body.len()),
        Err(DecodeError::Rows { count, total, rows }) => {
            assert!(total >= 1 && total <= count && rows.len() <= total);
            assert!(rows.iter().all(|r| r.row < count));
        }
        Err(DecodeError::Malformed(_) | DecodeError::Empty) => {}
    }
    match d.decode_lenient(body, framing) {
        Ok(l) => {
            let valid = l.batch.as_ref().map_or(0, |b| b.num_rows());
            assert_eq!(valid + l.invalid.len(), l.rows);
            if let Some(b) = &l.batch {
                bounded(b, body.len());
            }
        }
        Err(DecodeError::Malformed(_) | DecodeError::Empty) => {}
        Err(e) => panic!("lenient decoding failed with {e}"),
    }
}

/// One field's value: valid for its type, or one that must be refused.
fn value(field: &'static str, valid: bool) -> BoxedStrategy<Value> {
    let any_json = prop_oneof![
        Just(json!(null)),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z]{0,8}".prop_map(|s| json!(s)),
        Just(json!({"k": [1, {"x": null}]})),
    ];
    match (field, valid) {
        ("s" | "st.tag", true) => "\\PC{0,12}".prop_map(|s| json!(s)).boxed(),
        ("s" | "st.tag", false) => prop_oneof![any::<i64>().prop_map(|n| json!(n)), Just(json!([1]))].boxed(),
        ("i32", true) => any::<i32>().prop_map(|n| json!(n)).boxed(),
        ("i32", false) => prop_oneof![
            (i32::MAX as i64 + 1..i64::MAX).prop_map(|n| json!(n)),
            Just(json!(1.5)),
            Just(json!("7"))
        ]
        .boxed(),
        ("i64", true) => any::<i64>().prop_map(|n| json!(n)).boxed(),
        ("i64", false) => prop_oneof![Just(json!(u64::MAX)), Just(json!(true)), Just(json!({}))].boxed(),
        ("f32", true) => (-3.0e38f64..3.0e38).prop_map(|f| json!(f)).boxed(),
        ("f32", false) => prop_oneof![
            (1.0e39f64..1.0e300).prop_map(|f| json!(f)),
            (1.0e39f64..1.0e300).prop_map(|f| json!(-f)),
            Just(json!("1.0"))
        ]
        .boxed(),
        ("f64" | "st.lat", true) => prop_oneof![
            any::<i32>().prop_map(|n| json!(n)),
            (-1.0e300f64..1.0e300).prop_map(|f| json!(f))
        ]
        .boxed(),
        ("f64" | "st.lat", false) => prop_oneof![Just(json!("x")), Just(json!([]))].boxed(),
        ("b", true) => any::<bool>().prop_map(|b| json!(b)).boxed(),
        ("b", false) => prop_oneof![Just(json!(1)), Just(json!("true"))].boxed(),
        ("ts", true) => prop_oneof![
            (0i64..4_000_000_000_000).prop_map(|ms| json!(ms)),
            (0i64..4_000_000_000).prop_map(|s| json!(chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339())),
        ]
        .boxed(),
        ("ts", false) => prop_oneof![
            Just(json!("yesterday")),
            Just(json!("2026-13-45T00:00:00Z")),
            Just(json!(true))
        ]
        .boxed(),
        ("bin", true) => proptest::collection::vec(any::<u8>(), 0..16)
            .prop_map(|b| json!(base64::engine::general_purpose::STANDARD.encode(b)))
            .boxed(),
        ("bin", false) => prop_oneof![Just(json!("not base64!")), Just(json!(12))].boxed(),
        ("j", _) => any_json.boxed(),
        ("l", true) => proptest::collection::vec(any::<i64>(), 0..5)
            .prop_map(|v| json!(v))
            .boxed(),
        ("l", false) => prop_oneof![Just(json!([1, "two"])), Just(json!({"a": 1})), Just(json!("[1]"))].boxed(),
        _ => unreachable!("{field}"),
    }
}

const TOP: [&str; 10] = ["s", "i32", "i64", "f32", "f64", "b", "ts", "bin", "j", "l"];

/// A row and whether it is valid: each field is absent, null, valid or invalid.
fn row() -> impl Strategy<Value = (Value, bool)> {
    let per_field: Vec<BoxedStrategy<(Option<Value>, bool)>> = TOP
        .iter()
        .map(|&f| {
            let required = f == "s";
            prop_oneof![
                4 => value(f, true).prop_map(|v| (Some(v), true)),
                1 => value(f, false).prop_map(move |v| (Some(v), f == "j")),
                1 => Just((None, !required)),
                1 => Just((Some(Value::Null), !required)),
            ]
            .boxed()
        })
        .collect();
    let st = prop_oneof![
        3 => (value("st.lat", true), value("st.tag", true)).prop_map(|(lat, tag)| (Some(json!({"lat": lat, "tag": tag})), true)),
        1 => value("st.lat", false).prop_map(|lat| (Some(json!({"lat": lat})), false)),
        1 => Just((Some(json!({"tag": "no lat"})), false)),
        1 => Just((Some(json!({"lat": 1, "zz": 2})), false)),
        1 => Just((None, true)),
    ];
    (per_field, st).prop_map(|(vals, st)| {
        let mut obj = serde_json::Map::new();
        let mut ok = true;
        for (name, (v, valid)) in TOP.iter().zip(vals) {
            ok &= valid;
            if let Some(v) = v {
                obj.insert(name.to_string(), v);
            }
        }
        ok &= st.1;
        if let Some(v) = st.0 {
            obj.insert("st".into(), v);
        }
        (Value::Object(obj), ok)
    })
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn body_error(e: &Error) {
    assert!(
        matches!(
            e,
            Error::BadRequest {
                code: "bad_encoding",
                ..
            } | Error::Limit {
                limit: "limits.max_body_bytes",
                ..
            }
        ),
        "{e:?}"
    );
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_any(&body, Framing::Auto);
        check_any(&body, Framing::Ndjson);
    }

    #[test]
    fn json_shaped_text_never_panics(body in "[\\[\\]{}\",:0-9a-z\\\\ \n.eE+-]{0,512}") {
        check_any(body.as_bytes(), Framing::Auto);
        check_any(body.as_bytes(), Framing::Ndjson);
    }

    #[test]
    fn arbitrary_bytes_are_never_accepted_as_gzip_past_the_limit(raw in proptest::collection::vec(any::<u8>(), 0..1024)) {
        match floe::ingest::gunzip(&raw, 4096) {
            Ok(out) => prop_assert!(out.len() <= 4096),
            Err(e) => body_error(&e),
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn structured_rows_are_accepted_exactly_when_valid(rows in proptest::collection::vec(row(), 1..24), ndjson in any::<bool>()) {
        let body = if ndjson {
            rows.iter().map(|(v, _)| v.to_string()).collect::<Vec<_>>().join("\n").into_bytes()
        } else {
            serde_json::to_vec(&rows.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>()).unwrap()
        };
        let framing = if ndjson { Framing::Ndjson } else { Framing::Auto };
        let expected_bad: Vec<usize> = rows.iter().enumerate().filter(|(_, (_, ok))| !ok).map(|(i, _)| i).collect();
        let d = decoder();
        match d.decode(&body, framing) {
            Ok(b) => {
                prop_assert!(expected_bad.is_empty(), "rows {:?} should have been refused", expected_bad);
                prop_assert_eq!(b.num_rows(), rows.len());
                prop_assert_eq!(b.num_columns(), 11);
                bounded(&b, body.len());
            }
            Err(DecodeError::Rows { count, rows: errs, total }) => {
                prop_assert_eq!(count, rows.len());
                prop_assert_eq!(total, expected_bad.len());
                let got: Vec<usize> = errs.iter().map(|e| e.row).collect();
                prop_assert_eq!(got, expected_bad.clone());
                prop_assert!(errs.iter().all(|e| !e.field.is_empty()), "{:?}", errs);
            }
            Err(e) => prop_assert!(false, "a well-formed body failed as a whole: {}", e),
        }
        let l = d.decode_lenient(&body, framing).unwrap();
        prop_assert_eq!(l.invalid.iter().map(|(e, _)| e.row).collect::<Vec<_>>(), expected_bad.clone());
        prop_assert_eq!(l.batch.map_or(0, |b| b.num_rows()), rows.len() - expected_bad.len());
    }

    #[test]
    fn ndjson_splitting_counts_every_row_whatever_the_line_ends(
        ids in proptest::collection::vec(any::<i64>(), 1..40),
        seps in proptest::collection::vec(prop_oneof![Just("\n"), Just("\r\n"), Just("\n\n"), Just("\n  \t\n"), Just("\r\n\r\n")], 40),
        lead in prop_oneof![Just(""), Just("\n"), Just("  \n")],
    ) {
        let mut body = String::from(lead);
        for (i, id) in ids.iter().enumerate() {
            body.push_str(&json!({"s": format!("line\n{i}"), "i64": id}).to_string());
            body.push_str(seps[i]);
        }
        let b = decoder().decode(body.as_bytes(), Framing::Ndjson).unwrap();
        prop_assert_eq!(b.num_rows(), ids.len());
        let col = b.column(2).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
        prop_assert_eq!(col.values().to_vec(), ids);
    }

    #[test]
    fn gzip_members_roundtrip_and_damage_is_a_400(
        parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..4),
        cut in any::<prop::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 1..32),
    ) {
        let limit = 1 << 16;
        let members: Vec<Vec<u8>> = parts.iter().map(|p| gz(p)).collect();
        let whole: Vec<u8> = members.concat();
        let plain: Vec<u8> = parts.concat();
        // Every member is read.
        prop_assert_eq!(floe::ingest::gunzip(&whole, limit).unwrap(), plain.clone());
        // Trailing bytes that are not a gzip member: a 400, never the members alone.
        if garbage[0] != 0x1f {
            let mut g = whole.clone();
            g.extend_from_slice(&garbage);
            match floe::ingest::gunzip(&g, limit) {
                Err(e) => body_error(&e),
                Ok(_) => prop_assert!(false, "garbage after the last member was accepted"),
            }
        }
        // Cut anywhere: a 400, except exactly at a member boundary (fewer whole members).
        let at = cut.index(whole.len());
        let boundaries: Vec<usize> = members.iter().scan(0, |n, m| { *n += m.len(); Some(*n) }).collect();
        match floe::ingest::gunzip(&whole[..at], limit) {
            Ok(out) => {
                let k = boundaries.iter().position(|&b| b == at);
                prop_assert!(k.is_some(), "a body cut at {} of {} was accepted", at, whole.len());
                prop_assert_eq!(out, parts[..=k.unwrap()].concat());
            }
            Err(e) => body_error(&e),
        }
        // Over the limit: a 413 naming it, the output never past it.
        if plain.len() > 16 {
            match floe::ingest::gunzip(&whole, plain.len() - 1) {
                Err(Error::Limit { limit: l, .. }) => prop_assert_eq!(l, "limits.max_body_bytes"),
                other => prop_assert!(false, "expected the body limit, got {:?}", other.map(|v| v.len())),
            }
        }
    }
}
