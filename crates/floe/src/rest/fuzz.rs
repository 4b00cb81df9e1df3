//! Bounded property tests (proptest, a few hundred cases, seconds in CI) of the REST request
//! bodies: arbitrary bytes, arbitrary JSON and valid bodies with one subtree replaced by
//! arbitrary JSON are fed to every body deserializer — and the commit, create, register,
//! rename and transaction handlers run on a real catalog in a temporary directory. No input may
//! panic, and none may answer a 5xx (whatever a client sends is the client's fault or fine).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::node::App;
use crate::rest::parse_body;

/// Arbitrary JSON, biased to the spec's keys and value shapes.
fn arb_json() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("action".to_string()),
        Just("type".to_string()),
        Just("schema".to_string()),
        Just("fields".to_string()),
        Just("id".to_string()),
        Just("name".to_string()),
        Just("location".to_string()),
        Just("snapshot-id".to_string()),
        Just("spec-id".to_string()),
        Just("source-id".to_string()),
        Just("transform".to_string()),
        Just("updates".to_string()),
        Just("required".to_string()),
        "[a-z-]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-3i64..1005).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop_oneof![
            Just("struct".to_string()),
            Just("long".to_string()),
            Just("identity".to_string()),
            Just("bucket[16]".to_string()),
            Just("main".to_string()),
            Just("..".to_string()),
            Just("/etc".to_string()),
            Just("file:///dev/zero".to_string()),
            Just("add-schema".to_string()),
            Just("set-location".to_string()),
            Just("add-spec".to_string()),
            Just("assert-create".to_string()),
            ".{0,20}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn schema_json() -> Value {
    json!({"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "required": false, "type": "long"},
        {"id": 2, "name": "name", "required": false, "type": "string"}]})
}

/// Valid bodies of each kind, the seeds the mutations start from.
fn seeds() -> Vec<(&'static str, Value)> {
    vec![
        (
            "commit",
            json!({"requirements": [],
                   "updates": [
                       {"action": "add-schema", "schema": {"type": "struct", "schema-id": 1, "fields": [
                           {"id": 1, "name": "id", "required": false, "type": "long"},
                           {"id": 2, "name": "name", "required": false, "type": "string"},
                           {"id": 3, "name": "x", "required": false, "type": "int"}]}},
                       {"action": "set-current-schema", "schema-id": -1},
                       {"action": "add-spec", "spec": {"spec-id": 1, "fields": [
                           {"source-id": 3, "field-id": 1000, "name": "x", "transform": "identity"}]}},
                       {"action": "set-default-spec", "spec-id": -1},
                       {"action": "set-properties", "updates": {"a": "b"}},
                       {"action": "remove-properties", "removals": ["a"]}]}),
        ),
        (
            "create",
            json!({"name": "c", "schema": schema_json(), "stage-create": false,
                   "partition-spec": {"spec-id": 0, "fields": [{"source-id": 1, "name": "id_bucket", "transform": "bucket[4]"}]},
                   "write-order": {"order-id": 1, "fields": [
                       {"source-id": 2, "transform": "identity", "direction": "asc", "null-order": "nulls-first"}]},
                   "properties": {"format-version": "2"}}),
        ),
        (
            "register",
            json!({"name": "r", "metadata-location": "file:///nope/m.json", "overwrite": false}),
        ),
        (
            "rename",
            json!({"source": {"namespace": ["fz"], "name": "t"}, "destination": {"namespace": ["fz"], "name": "u"}}),
        ),
        (
            "transaction",
            json!({"table-changes": [{"identifier": {"namespace": ["fz"], "name": "tx"},
                   "requirements": [{"type": "assert-create"}],
                   "updates": [{"action": "upgrade-format-version", "format-version": 2},
                               {"action": "add-schema", "schema": schema_json()},
                               {"action": "set-current-schema", "schema-id": -1},
                               {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
                               {"action": "set-default-sort-order", "sort-order-id": -1},
                               {"action": "set-properties", "updates": {"k": "v"}}]}]}),
        ),
        (
            "namespace",
            json!({"namespace": ["fz", "a.b"], "properties": {"owner": "me"}}),
        ),
        ("properties", json!({"removals": ["x"], "updates": {"owner": "you"}})),
    ]
}

/// Every node of `v`, depth first, as a mutable reference; replaces the `n`-th with `with`.
fn replace_nth(v: &mut Value, n: &mut usize, with: &Value) -> bool {
    if *n == 0 {
        *v = with.clone();
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|i| replace_nth(i, n, with)),
        Value::Object(map) => map.values_mut().any(|i| replace_nth(i, n, with)),
        _ => false,
    }
}

/// Removes the `n`-th node below the root (an array element or an object entry), keeping the
/// rest of the body well-typed more often than a replacement does.
fn remove_nth(v: &mut Value, n: &mut usize) -> bool {
    match v {
        Value::Array(items) => {
            for i in 0..items.len() {
                if *n == 0 {
                    items.remove(i);
                    return true;
                }
                *n -= 1;
                if remove_nth(&mut items[i], n) {
                    return true;
                }
            }
            false
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if *n == 0 {
                    map.remove(&k);
                    return true;
                }
                *n -= 1;
                if remove_nth(map.get_mut(&k).expect("key"), n) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn mutated() -> impl Strategy<Value = (usize, Vec<u8>)> {
    let n_seeds = seeds().len();
    let edit = (any::<usize>(), prop::option::weighted(0.6, arb_json()));
    (0..n_seeds, prop::collection::vec(edit, 1..3), any::<bool>()).prop_map(|(seed, edits, drop_key)| {
        let mut v = seeds()[seed].1.clone();
        for (at, with) in edits {
            let count = count_nodes(&v);
            let mut n = at % count;
            match with {
                Some(with) => {
                    replace_nth(&mut v, &mut n, &with);
                }
                None => {
                    remove_nth(&mut v, &mut n);
                }
            }
        }
        if drop_key
            && let Value::Object(map) = &mut v
            && let Some(k) = map.keys().next().cloned()
        {
            map.remove(&k);
        }
        (seed, serde_json::to_vec(&v).unwrap())
    })
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Parses `bytes` as every request body type (none may panic).
fn parse_all(bytes: &[u8]) {
    let _ = parse_body::<CommitTableRequest>(bytes);
    let _ = parse_body::<CreateTableRequest>(bytes);
    let _ = parse_body::<RegisterTableRequest>(bytes);
    let _ = parse_body::<RenameTableRequest>(bytes);
    let _ = parse_body::<CommitTransactionRequest>(bytes);
    let _ = parse_body::<CreateNamespaceRequest>(bytes);
    let _ = parse_body::<UpdateNamespacePropertiesRequest>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_all(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        parse_all(&serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn mutated_valid_bodies_never_panic((_, bytes) in mutated()) {
        parse_all(&bytes);
        // Truncations of a body too.
        for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            parse_all(&bytes[..cut]);
        }
    }
}

/// One app on a temporary data dir, with namespace `fz` and table `fz.t`.
fn fixture() -> (tokio::runtime::Runtime, tempfile::TempDir, Arc<App>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config::from_toml(
        "[server]\ndata_dir = \"data\"\n",
        &dir.path().join("floe.toml"),
        dir.path(),
    )
    .unwrap();
    let app = rt.block_on(App::open(config)).unwrap();
    rt.block_on(async {
        use iceberg::Catalog;
        let ns = iceberg::NamespaceIdent::new("fz".to_string());
        app.catalog.create_namespace(&ns, HashMap::new()).await.unwrap();
        let schema: iceberg::spec::Schema = serde_json::from_value(schema_json()).unwrap();
        let creation = iceberg::TableCreation::builder()
            .name("t".to_string())
            .schema(schema)
            .build();
        app.catalog.create_table(&ns, creation).await.unwrap();
    });
    (rt, dir, app)
}

fn params(table: Option<&str>) -> Params {
    let mut p = HashMap::from([("namespace".to_string(), "fz".to_string())]);
    if let Some(t) = table {
        p.insert("table".to_string(), t.to_string());
    }
    Ok(Path(p))
}

fn no_query() -> QueryParams {
    Ok(Query(HashMap::new()))
}

/// Runs the handler for a seed kind on `bytes`; answers the status (`None`: not parsed).
async fn call(app: &Arc<App>, kind: &str, bytes: &[u8]) -> Option<u16> {
    let h = HeaderMap::new;
    let state = || State(<RestState as axum::extract::FromRef<Arc<App>>>::from_ref(app));
    let status = |r: RestResult<Response>| match r {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    Some(match kind {
        "commit" => status(
            commit_table(
                state(),
                h(),
                params(Some("t")),
                no_query(),
                parse_body(bytes).map(RestJson),
            )
            .await,
        ),
        "create" => status(create_table(state(), h(), params(None), no_query(), parse_body(bytes).map(RestJson)).await),
        "register" => {
            status(register_table(state(), h(), params(None), no_query(), parse_body(bytes).map(RestJson)).await)
        }
        "rename" => status(rename_table(state(), h(), params(None), no_query(), parse_body(bytes).map(RestJson)).await),
        "transaction" => {
            status(commit_transaction(state(), h(), params(None), no_query(), parse_body(bytes).map(RestJson)).await)
        }
        "namespace" => {
            status(create_namespace(state(), h(), params(None), no_query(), parse_body(bytes).map(RestJson)).await)
        }
        "properties" => status(
            update_namespace_properties(state(), h(), params(None), no_query(), parse_body(bytes).map(RestJson)).await,
        ),
        _ => return None,
    })
}

#[test]
fn handlers_on_a_real_catalog_never_panic_or_answer_5xx() {
    let (rt, _dir, app) = fixture();
    // The seeds themselves: each is a valid body (it may still be refused, e.g. a location
    // outside the warehouse, but as the client's fault).
    for (kind, v) in seeds() {
        let status = rt.block_on(call(&app, kind, &serde_json::to_vec(&v).unwrap())).unwrap();
        assert!(status < 500, "seed {kind} answered {status}");
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 192,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&mutated(), |(seed, bytes)| {
            let kind = seeds()[seed].0;
            let status = rt.block_on(call(&app, kind, &bytes)).unwrap();
            prop_assert!(
                status < 500,
                "{kind} {} answered {status}",
                String::from_utf8_lossy(&bytes)
            );
            Ok(())
        })
        .unwrap();
}
