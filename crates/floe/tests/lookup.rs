//! Point lookups over a table of many files: exactly the matching rows, pruning counted, caches
//! reused and refreshed after floe's own and an outside commit, `snapshot_id` / `as_of` honoured,
//! and the request errors that name the column.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use floe::config::{Rolling, SinkConfig};
use floe::error::Error;
use floe::lookup::{LookupEngine, LookupRequest, LookupResult, parse_table_ident};
use floe::sink::Sink;
use floe::sink::iceberg::IcebergSink;
use floe_catalog::FloeCatalog;
use iceberg::TableIdent;

const NS: [&str; 3] = ["acme.com", "beta.io", "corp.net"];
const TYPES: [&str; 2] = ["function", "table"];
const ROWS_PER_PART: i64 = 40;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("ns", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
    ]))
}

fn sink_config() -> SinkConfig {
    SinkConfig {
        name: "out".into(),
        table: Some("analytics.res".into()),
        partition_by: vec!["ns".into(), "type".into()],
        rolling: Rolling {
            interval_seconds: 3600,
            size_mb: 1024,
            inactivity_seconds: None,
            ..Rolling::default()
        },
        bloom_filter_columns: vec!["id".into()],
        ..SinkConfig::default()
    }
}

/// Ids overlap across commits (`k00017c3`: row 17 of commit 3), so manifest bounds cannot tell
/// the commits apart and bloom filters must.
fn id(i: i64, commit: i64) -> String {
    format!("k{i:05}c{commit}")
}

/// One commit: every (ns, type) partition gets `ROWS_PER_PART` rows.
async fn commit(sink: &mut IcebergSink, commit: i64) {
    let (mut ns, mut ty, mut ids, mut n) = (vec![], vec![], vec![], vec![]);
    for a in NS {
        for t in TYPES {
            for i in 0..ROWS_PER_PART {
                ns.push(a.to_string());
                ty.push(t.to_string());
                ids.push(id(i, commit));
                n.push(commit * 1000 + i);
            }
        }
    }
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(ns)),
            Arc::new(StringArray::from(ty)),
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from(n)),
        ],
    )
    .unwrap();
    let through = sink.through() + batch.num_rows() as u64;
    sink.write(&batch, through).await.unwrap();
    sink.commit().await.unwrap();
}

async fn lookup(engine: &LookupEngine, ident: &TableIdent, params: &[(&str, &str)]) -> Result<LookupResult, Error> {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let req: LookupRequest = engine.parse_request(ident, &params, 100_000).await?;
    engine.lookup(ident, &req).await
}

fn column(r: &LookupResult, name: &str) -> Vec<String> {
    let mut out = vec![];
    for b in &r.batches {
        let c = b.column_by_name(name).unwrap();
        let c = arrow::compute::cast(c, &DataType::Utf8).unwrap();
        let s = c.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..s.len()).map(|i| s.value(i).to_string()));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_prune_cache_and_follow_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let warehouse = format!("file://{}", dir.path().join("warehouse").display());
    let catalog = FloeCatalog::open(&db, "floe", &warehouse).await.unwrap();
    let mut sink = IcebergSink::open(catalog.clone(), &sink_config(), "pipe", &schema())
        .await
        .unwrap();
    for c in 0..5 {
        commit(&mut sink, c).await;
    }
    let ident = parse_table_ident("analytics.res").unwrap();
    let engine = LookupEngine::new(catalog.clone());

    // One row by its full key: only the (ns, type) partition's files are candidates, and of
    // those only the commit holding the id is read (bloom filters skip the other four).
    let r = lookup(
        &engine,
        &ident,
        &[("ns", "beta.io"), ("type", "table"), ("id", "k00017c3")],
    )
    .await
    .unwrap();
    assert_eq!(column(&r, "n"), vec!["3017"]);
    assert_eq!(r.stats.files_total, 30, "{:?}", r.stats);
    assert_eq!(r.stats.files_pruned_by_partition, 25, "{:?}", r.stats);
    assert_eq!(
        r.stats.row_groups_read, 1,
        "bloom filters leave one row group: {:?}",
        r.stats
    );
    assert!(r.stats.row_groups_pruned_by_bloom >= 3, "{:?}", r.stats);
    let loads = |e: &LookupEngine| {
        (
            e.counters.table_loads.load(Ordering::Relaxed),
            e.counters.manifest_loads.load(Ordering::Relaxed),
            e.counters.footer_loads.load(Ordering::Relaxed),
        )
    };
    let first = loads(&engine);
    assert_eq!(first.0, 1);
    assert_eq!(first.1, 5, "one manifest per commit");

    // Warm: the same lookup reads no metadata, manifest or footer again.
    let r2 = lookup(
        &engine,
        &ident,
        &[("ns", "beta.io"), ("type", "table"), ("id", "k00017c3")],
    )
    .await
    .unwrap();
    assert_eq!(column(&r2, "n"), vec!["3017"]);
    assert_eq!(loads(&engine), first);

    // By id alone: every partition is a candidate; exactly one row comes back.
    let r = lookup(&engine, &ident, &[("id", "k00005c1")]).await.unwrap();
    assert_eq!(column(&r, "n").len(), 6, "one per partition");
    assert_eq!(r.stats.files_pruned_by_partition, 0);
    // By a non-key column: bounds (n is 1000*commit + i) leave one commit's six files.
    let r = lookup(&engine, &ident, &[("n", "2039")]).await.unwrap();
    assert_eq!(column(&r, "id"), vec!["k00039c2"; 6]);
    assert_eq!(r.stats.files_pruned_by_bounds, 24, "{:?}", r.stats);
    // A whole partition, every row exactly once.
    let r = lookup(
        &engine,
        &ident,
        &[("ns", "corp.net"), ("type", "function"), ("limit", "1000")],
    )
    .await
    .unwrap();
    let mut want: Vec<String> = (0..5).flat_map(|c| (0..ROWS_PER_PART).map(move |i| id(i, c))).collect();
    want.sort();
    assert_eq!(column(&r, "id"), want);
    // limit
    let r = lookup(&engine, &ident, &[("ns", "corp.net"), ("limit", "7")])
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 7);
    // No match.
    let r = lookup(&engine, &ident, &[("ns", "acme.com"), ("id", "nope")])
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 0);
    let before = r.snapshot_id.unwrap();
    let before_ms = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    // floe's own next commit: seen by the next lookup (one SQLite query noticed it); only the
    // new manifest is read.
    commit(&mut sink, 5).await;
    let mid = loads(&engine);
    let r = lookup(
        &engine,
        &ident,
        &[("ns", "acme.com"), ("type", "function"), ("id", "k00001c5")],
    )
    .await
    .unwrap();
    assert_eq!(column(&r, "n"), vec!["5001"]);
    let after = loads(&engine);
    assert_eq!(after.0, mid.0 + 1, "metadata reloaded once");
    assert_eq!(after.1, mid.1 + 1, "only the new manifest is read");

    // An outside commit (another catalog instance, another writer): seen too.
    let other = FloeCatalog::open(&db, "floe", &warehouse).await.unwrap();
    let mut outside = IcebergSink::open(other, &sink_config(), "outside", &schema())
        .await
        .unwrap();
    commit(&mut outside, 6).await;
    let r = lookup(&engine, &ident, &[("id", "k00002c6"), ("type", "table")])
        .await
        .unwrap();
    assert_eq!(column(&r, "n"), vec!["6002"; 3]);
    assert_eq!(loads(&engine).0, after.0 + 1);

    // Time travel: the new ids are absent before they were committed.
    let before_s = before.to_string();
    let r = lookup(&engine, &ident, &[("id", "k00002c6"), ("snapshot_id", &before_s)])
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 0);
    assert_eq!(r.snapshot_id, Some(before));
    let r = lookup(
        &engine,
        &ident,
        &[("id", "k00001c5"), ("as_of", &before_ms.to_string())],
    )
    .await
    .unwrap();
    assert_eq!(r.num_rows(), 0);
    assert_eq!(r.snapshot_id, Some(before));
    let r = lookup(
        &engine,
        &ident,
        &[("id", "k00001c4"), ("as_of", &before_ms.to_string())],
    )
    .await
    .unwrap();
    assert_eq!(r.num_rows(), 6);

    // Errors name what is wrong.
    let e = lookup(&engine, &ident, &[("colour", "red")]).await.unwrap_err();
    assert_eq!(e.code(), "unknown_column");
    assert!(e.to_string().contains("colour"), "{e}");
    let e = lookup(&engine, &ident, &[("n", "twelve")]).await.unwrap_err();
    assert_eq!(e.code(), "bad_value");
    assert!(e.to_string().contains("\"n\""), "{e}");
    let e = lookup(&engine, &ident, &[("snapshot_id", "12345")]).await.unwrap_err();
    assert_eq!(e.code(), "unknown_snapshot");
    let missing = parse_table_ident("analytics.nope").unwrap();
    let e = lookup(&engine, &missing, &[("id", "x")]).await.unwrap_err();
    assert_eq!(e.status(), axum::http::StatusCode::NOT_FOUND);
}
