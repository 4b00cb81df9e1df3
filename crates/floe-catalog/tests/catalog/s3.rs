//! The catalog on an `s3://` warehouse, against a real S3-compatible server on loopback: the
//! endpoint in `FLOE_TEST_S3` (`scripts/test.sh` starts s3s-fs with `scripts/s3.sh` and sets it;
//! the keys are that script's). Without the variable these tests have no server to talk to and
//! say so on stderr.

use bytes::Bytes;
use floe_catalog::{Deleted, FloeCatalog, S3Options, Store};
use iceberg::Catalog;

use crate::common::{create_table, moves, scan_ids, write_and_append};

/// The environment variable naming the S3 endpoint.
const S3_ENV: &str = "FLOE_TEST_S3";

fn options(secret: &str) -> Option<S3Options> {
    let endpoint = std::env::var(S3_ENV).ok().filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        eprintln!("{S3_ENV} is not set: no S3 server to test against (scripts/test.sh starts one)");
        return None;
    };
    Some(S3Options {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some("floe-test".into()),
        secret_access_key: Some(secret.into()),
        session_token: None,
        path_style: true,
        instance_credentials: false,
    })
}

/// A catalog (SQLite in a temp dir) on a fresh prefix of bucket `warehouse`.
async fn catalog(secret: &str) -> Option<(tempfile::TempDir, FloeCatalog, String)> {
    let opts = options(secret)?;
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = format!("s3://warehouse/t-{}", uuid::Uuid::new_v4().simple());
    let uri = Store::sqlite_uri(&dir.path().join("catalog.db"));
    let catalog = FloeCatalog::connect_with_storage(&uri, "floe", &warehouse, &opts)
        .await
        .expect("open catalog");
    Some((dir, catalog, warehouse))
}

#[tokio::test]
async fn storage_round_trip_inside_the_warehouse_only() {
    let Some((_dir, catalog, wh)) = catalog("floe-test-secret").await else {
        return;
    };
    let s = catalog.storage();
    s.check_access().await.expect("reachable");
    let a = format!("{wh}/ns/t/data/a.parquet");
    s.put(&a, Bytes::from_static(b"0123456789")).await.expect("put");
    assert_eq!(s.size(&a).await.expect("size"), 10);
    assert_eq!(&s.read_range(&a, 2..5).await.expect("range")[..], b"234");
    assert!(s.read_range(&a, 8..12).await.is_err(), "past the end");
    assert_eq!(&s.read(&a, 10, "test").await.expect("read")[..], b"0123456789");
    assert!(s.read(&a, 9, "test").await.is_err(), "over the limit");
    s.sync(&a).await.expect("sync");
    let listed = s.list(&format!("{wh}/ns")).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].location, a);
    assert_eq!(listed[0].size, 10);
    assert!(s.list(&format!("{wh}/none")).await.expect("list missing").is_empty());
    assert_eq!(s.delete(&a).await.expect("delete"), Deleted::Deleted);
    assert_eq!(s.delete(&a).await.expect("delete again"), Deleted::Missing);
    for outside in [
        "s3://warehouse/elsewhere/x".to_string(),
        format!("{wh}/../x"),
        format!("{wh}/%2E%2E/x"),
        "s3://other/x".to_string(),
        "file:///etc/passwd".to_string(),
    ] {
        assert!(s.read(&outside, 10, "test").await.is_err(), "{outside}");
        assert!(s.put(&outside, Bytes::from_static(b"y")).await.is_err(), "{outside}");
        assert!(s.delete(&outside).await.is_err(), "{outside}");
    }
}

#[tokio::test]
async fn tables_commit_scan_and_purge_on_s3() {
    let Some((_dir, catalog, wh)) = catalog("floe-test-secret").await else {
        return;
    };
    let table = create_table(&catalog, "ns.t", true).await;
    assert!(
        table
            .metadata_location()
            .expect("location")
            .starts_with(&format!("{wh}/ns/t/metadata/")),
        "{:?}",
        table.metadata_location()
    );
    let table = write_and_append(&catalog, &table, 0..50, moves("p", "s", 0, 50))
        .await
        .expect("append");
    let table = write_and_append(&catalog, &table, 50..80, moves("p", "s", 50, 80))
        .await
        .expect("append");
    let reloaded = catalog.load_table(table.identifier()).await.expect("load");
    assert_eq!(scan_ids(&reloaded).await.expect("scan"), (0..80).collect::<Vec<_>>());
    assert_eq!(
        catalog
            .sink_position("p", "s")
            .await
            .expect("position")
            .expect("moved")
            .position,
        80
    );
    let files = catalog.storage().list(&format!("{wh}/ns/t")).await.expect("list");
    assert!(files.iter().any(|f| f.location.ends_with(".parquet")), "{files:?}");
    catalog.purge_table(table.identifier()).await.expect("purge");
    let left = catalog.storage().list(&format!("{wh}/ns/t")).await.expect("list");
    assert!(left.is_empty(), "purge left {left:?}");
}

#[tokio::test]
async fn wrong_credentials_are_a_clear_error() {
    let Some((_dir, catalog, wh)) = catalog("not-the-secret").await else {
        return;
    };
    let err = catalog.storage().check_access().await.expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains(&wh), "{msg}");
    assert!(
        msg.contains("Signature") || msg.contains("403") || msg.contains("ermission"),
        "{msg}"
    );
}
