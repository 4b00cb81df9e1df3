//! Read-back: rows committed through the catalog come back from iceberg's scan, whole and
//! per partition, from a table loaded by a fresh catalog instance as well.

use std::collections::HashMap;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::Catalog;
use iceberg::expr::Reference;
use iceberg::spec::Datum;

use crate::common::{CATALOG, Env, TestResult, create_table, files_in, ident, moves, scan_ids, write_and_append};

/// `(id, name, bucket)` of every row the scan returns, sorted by id.
async fn scan_rows(table: &iceberg::table::Table, bucket: Option<i32>) -> iceberg::Result<Vec<(i64, String, i32)>> {
    let mut scan = table.scan();
    if let Some(b) = bucket {
        scan = scan.with_filter(Reference::new("bucket").equal_to(Datum::int(b)));
    }
    let batches: Vec<RecordBatch> = scan.build()?.to_arrow().await?.try_collect().await?;
    let mut rows = Vec::new();
    for batch in &batches {
        let id = batch.column_by_name("id").expect("id");
        let id = id.as_any().downcast_ref::<Int64Array>().expect("long");
        let name = batch.column_by_name("name").expect("name");
        let name = name.as_any().downcast_ref::<StringArray>().expect("string");
        let bucket = batch.column_by_name("bucket").expect("bucket");
        let bucket = bucket.as_any().downcast_ref::<Int32Array>().expect("int");
        for i in 0..batch.num_rows() {
            rows.push((id.value(i), name.value(i).to_string(), bucket.value(i)));
        }
    }
    rows.sort();
    Ok(rows)
}

fn expected(ids: impl IntoIterator<Item = i64>) -> Vec<(i64, String, i32)> {
    let mut rows: Vec<_> = ids
        .into_iter()
        .map(|i| (i, format!("row-{i}"), (i % 4) as i32))
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpartitioned_rows_are_read_back() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    assert!(scan_ids(&t).await?.is_empty(), "a table without snapshots scans empty");
    let t = write_and_append(cat, &t, 0..100, moves("p", "s", 0, 100)).await?;
    let t = write_and_append(cat, &t, 100..150, moves("p", "s", 100, 150)).await?;
    assert_eq!(scan_rows(&t, None).await?, expected(0..150));
    assert_eq!(files_in(&t, "data", ".parquet").len(), 2);

    // A fresh instance on the same file reads the same rows.
    cat.close().await;
    let again = env.open(CATALOG).await;
    let t = again.load_table(&ident("ns.t")).await?;
    assert_eq!(scan_rows(&t, None).await?, expected(0..150));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_rows_are_read_back_whole_and_per_partition() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.p", true).await;
    let t = write_and_append(cat, &t, 0..40, HashMap::new()).await?;
    let snapshot = t.metadata().current_snapshot().expect("snapshot");
    assert_eq!(
        snapshot
            .summary()
            .additional_properties
            .get("added-data-files")
            .map(String::as_str),
        Some("4"),
        "one file per bucket"
    );
    assert_eq!(scan_rows(&t, None).await?, expected(0..40));
    for b in 0..4 {
        assert_eq!(
            scan_rows(&t, Some(b)).await?,
            expected((0..40).filter(|i| i % 4 == b as i64)),
            "bucket {b}"
        );
    }
    Ok(())
}
