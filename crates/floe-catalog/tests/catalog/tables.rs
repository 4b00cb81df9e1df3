//! Tables through the `iceberg::Catalog` trait, checked against the SQLite rows of the JDBC
//! layout: create (plain and partitioned), load, exists, list, rename across namespaces, drop,
//! purge, register, duplicate creation, and isolation between two `catalog_name`s on one file.

use std::collections::HashMap;

use iceberg::spec::Transform;
use iceberg::{Catalog, ErrorKind};

use crate::common::{
    CATALOG, Env, TableRow, TestResult, create_table, creation, files_in, ident, local_path, moves, ns, pointer,
    table_row, table_rows, write_and_append,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_load_exists_list() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    cat.create_namespace(&ns("ns"), HashMap::new()).await?;
    assert!(cat.list_tables(&ns("ns")).await?.is_empty());

    let t = cat.create_table(&ns("ns"), creation("t", false)).await?;
    assert_eq!(t.identifier(), &ident("ns.t"));
    assert_eq!(t.metadata().location(), format!("{}/ns/t", env.warehouse));
    assert!(t.metadata().default_partition_spec().is_unpartitioned());
    assert!(t.metadata().current_snapshot().is_none());
    let location = pointer(&t);
    assert!(
        location.starts_with(&format!("{}/ns/t/metadata/00000-", env.warehouse)),
        "{location}"
    );
    assert!(
        local_path(&location).is_file(),
        "the metadata file is written before the row"
    );

    assert_eq!(
        table_row(&env.raw().await, CATALOG, "ns", "t").await,
        Some(TableRow {
            catalog_name: CATALOG.to_string(),
            table_namespace: "ns".to_string(),
            table_name: "t".to_string(),
            metadata_location: Some(location.clone()),
            previous_metadata_location: None,
            iceberg_type: Some("TABLE".to_string()),
        })
    );

    let loaded = cat.load_table(&ident("ns.t")).await?;
    assert_eq!(pointer(&loaded), location);
    assert_eq!(loaded.metadata(), t.metadata());
    assert!(cat.table_exists(&ident("ns.t")).await?);
    assert!(!cat.table_exists(&ident("ns.u")).await?);

    create_table(cat, "ns.a", true).await;
    assert_eq!(cat.list_tables(&ns("ns")).await?, vec![ident("ns.a"), ident("ns.t")]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_partition_spec() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.p", true).await;
    let loaded = cat.load_table(&ident("ns.p")).await?;
    for table in [&t, &loaded] {
        let spec = table.metadata().default_partition_spec();
        assert!(!spec.is_unpartitioned());
        let fields = spec.fields();
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].name, "bucket");
        assert_eq!(fields[0].source_id, 3);
        assert_eq!(fields[0].transform, Transform::Identity);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_twice_is_table_already_exists() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    let metadata_files = files_in(&t, "metadata", ".metadata.json");

    let err = cat.create_table(&ns("ns"), creation("t", true)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableAlreadyExists, "{err}");
    assert_eq!(files_in(&t, "metadata", ".metadata.json"), metadata_files);
    assert_eq!(pointer(&cat.load_table(&ident("ns.t")).await?), pointer(&t));
    assert_eq!(table_rows(&env.raw().await).await.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_into_another_namespace() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns1.t", false).await;
    let t = write_and_append(cat, &t, 0..5, HashMap::new()).await?;
    cat.create_namespace(&ns("ns2"), HashMap::new()).await?;

    cat.rename_table(&ident("ns1.t"), &ident("ns2.u")).await?;
    assert!(!cat.table_exists(&ident("ns1.t")).await?);
    assert!(cat.table_exists(&ident("ns2.u")).await?);
    assert!(cat.list_tables(&ns("ns1")).await?.is_empty());
    assert_eq!(cat.list_tables(&ns("ns2")).await?, vec![ident("ns2.u")]);
    let moved = cat.load_table(&ident("ns2.u")).await?;
    assert_eq!(moved.identifier(), &ident("ns2.u"));
    assert_eq!(pointer(&moved), pointer(&t), "a rename moves the row, not the files");
    assert_eq!(crate::common::scan_ids(&moved).await?, (0..5).collect::<Vec<_>>());

    let raw = env.raw().await;
    assert!(table_row(&raw, CATALOG, "ns1", "t").await.is_none());
    let row = table_row(&raw, CATALOG, "ns2", "u").await.expect("renamed row");
    assert_eq!(row.metadata_location.as_deref(), Some(pointer(&t).as_str()));
    assert_eq!(table_rows(&raw).await.len(), 1);

    // The renamed table still takes commits.
    write_and_append(cat, &moved, 5..7, HashMap::new()).await?;
    let moved = cat.load_table(&ident("ns2.u")).await?;
    assert_eq!(crate::common::scan_ids(&moved).await?, (0..7).collect::<Vec<_>>());

    create_table(cat, "ns2.v", false).await;
    let err = cat.rename_table(&ident("ns2.u"), &ident("ns2.v")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableAlreadyExists, "{err}");
    let err = cat.rename_table(&ident("ns1.gone"), &ident("ns2.w")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableNotFound, "{err}");
    let err = cat.rename_table(&ident("ns2.u"), &ident("nope.u")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NamespaceNotFound, "{err}");
    assert!(cat.table_exists(&ident("ns2.u")).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_removes_the_row_and_keeps_the_files_purge_removes_both() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    cat.drop_table(&ident("ns.t")).await?;
    assert!(!cat.table_exists(&ident("ns.t")).await?);
    assert!(table_rows(&env.raw().await).await.is_empty());
    assert!(local_path(&pointer(&t)).is_file(), "drop (not purge) keeps the files");
    let err = cat.load_table(&ident("ns.t")).await.map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableNotFound, "{err}");
    let err = cat.drop_table(&ident("ns.t")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableNotFound, "{err}");

    let p = create_table(cat, "ns.p", false).await;
    let p = write_and_append(cat, &p, 0..3, HashMap::new()).await?;
    let dir = local_path(p.metadata().location());
    assert!(dir.join("data").is_dir());
    cat.purge_table(&ident("ns.p")).await?;
    assert!(!cat.table_exists(&ident("ns.p")).await?);
    assert!(!dir.exists(), "purge removes the table's directory");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_an_existing_metadata_file() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    let t = write_and_append(cat, &t, 0..4, HashMap::new()).await?;
    let location = pointer(&t);

    let r = cat.register_table(&ident("ns.r"), location.clone()).await?;
    assert_eq!(pointer(&r), location);
    assert_eq!(r.metadata().uuid(), t.metadata().uuid());
    assert_eq!(crate::common::scan_ids(&r).await?, vec![0, 1, 2, 3]);
    let row = table_row(&env.raw().await, CATALOG, "ns", "r")
        .await
        .expect("registered row");
    assert_eq!(row.metadata_location.as_deref(), Some(location.as_str()));
    assert_eq!(row.previous_metadata_location, None);
    assert_eq!(row.iceberg_type.as_deref(), Some("TABLE"));
    assert_eq!(cat.list_tables(&ns("ns")).await?, vec![ident("ns.r"), ident("ns.t")]);

    let err = cat
        .register_table(&ident("ns.r"), location.clone())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableAlreadyExists, "{err}");
    let err = cat
        .register_table(&ident("nope.r"), location.clone())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NamespaceNotFound, "{err}");
    let missing = format!("{}/ns/t/metadata/99999-missing.metadata.json", env.warehouse);
    assert!(cat.register_table(&ident("ns.m"), missing).await.is_err());
    assert!(!cat.table_exists(&ident("ns.m")).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_catalog_names_on_one_file_do_not_see_each_other() -> TestResult {
    let env = Env::new().await;
    let one = &env.catalog;
    let two = env.open("other").await;
    let t1 = create_table(one, "ns.t", false).await;
    write_and_append(one, &t1, 0..10, moves("p", "s", 0, 10)).await?;

    assert!(!two.namespace_exists(&ns("ns")).await?);
    assert!(two.list_namespaces(None).await?.is_empty());
    assert!(!two.table_exists(&ident("ns.t")).await?);
    let err = two.load_table(&ident("ns.t")).await.map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TableNotFound, "{err}");
    assert_eq!(two.sink_position("p", "s").await?, None);
    assert!(two.sink_positions().await?.is_empty());

    // The same names are free in the other catalog.
    let t2 = create_table(&two, "ns.t", false).await;
    assert_ne!(t2.metadata().uuid(), t1.metadata().uuid());
    let raw = env.raw().await;
    let rows = table_rows(&raw).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].catalog_name, CATALOG);
    assert_eq!(rows[1].catalog_name, "other");

    two.drop_table(&ident("ns.t")).await?;
    assert!(one.table_exists(&ident("ns.t")).await?);
    assert_eq!(one.sink_position("p", "s").await?.map(|p| p.position), Some(10));
    assert_eq!(table_rows(&raw).await.len(), 1);
    Ok(())
}
