//! Namespaces through the `iceberg::Catalog` trait: properties round-trip (the JDBC `exists`
//! marker is stored but never shown), multi-level listing, dropping, and `NamespaceNotFound`.

use std::collections::HashMap;

use iceberg::{Catalog, ErrorKind};

use crate::common::{CATALOG, Env, TestResult, create_table, ident, namespace_rows, ns};

fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_hide_the_exists_marker() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let a = ns("a");
    assert!(!cat.namespace_exists(&a).await?);

    let initial = props(&[("owner", "alice"), ("comment", "first")]);
    let created = cat.create_namespace(&a, initial.clone()).await?;
    assert_eq!(created.name(), &a);
    assert_eq!(created.properties(), &initial);
    assert!(cat.namespace_exists(&a).await?);

    // Stored in the JDBC layout, with the marker row …
    let raw = env.raw().await;
    let rows = namespace_rows(&raw, CATALOG, "a").await;
    assert_eq!(rows.get("exists"), Some(&Some("true".to_string())), "{rows:?}");
    assert_eq!(rows.get("owner"), Some(&Some("alice".to_string())));
    assert_eq!(rows.len(), 3, "{rows:?}");
    // … which get_namespace hides.
    let got = cat.get_namespace(&a).await?;
    assert_eq!(got.properties(), &initial);
    assert!(!got.properties().contains_key("exists"));

    let again = cat.create_namespace(&a, HashMap::new()).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::NamespaceAlreadyExists, "{again}");

    cat.update_namespace(&a, props(&[("owner", "bob"), ("team", "data")]))
        .await?;
    let got = cat.get_namespace(&a).await?;
    assert_eq!(
        got.properties(),
        &props(&[("owner", "bob"), ("comment", "first"), ("team", "data")])
    );
    assert_eq!(namespace_rows(&raw, CATALOG, "a").await.len(), 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_level_namespaces_list_one_level_at_a_time() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    for n in ["a", "a.b", "a.b.c", "z"] {
        cat.create_namespace(&ns(n), HashMap::new()).await?;
    }
    assert_eq!(cat.list_namespaces(None).await?, vec![ns("a"), ns("z")]);
    assert_eq!(cat.list_namespaces(Some(&ns("a"))).await?, vec![ns("a.b")]);
    assert_eq!(cat.list_namespaces(Some(&ns("a.b"))).await?, vec![ns("a.b.c")]);
    assert!(cat.list_namespaces(Some(&ns("a.b.c"))).await?.is_empty());
    assert!(cat.list_namespaces(Some(&ns("z"))).await?.is_empty());
    assert!(cat.namespace_exists(&ns("a.b.c")).await?);
    assert!(!cat.namespace_exists(&ns("a.c")).await?);
    // Stored dot-joined, as the JDBC layout does.
    assert_eq!(
        namespace_rows(&env.raw().await, CATALOG, "a.b.c").await.get("exists"),
        Some(&Some("true".to_string()))
    );

    let err = cat.list_namespaces(Some(&ns("missing"))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NamespaceNotFound, "{err}");
    // A prefix of a name is not a parent.
    cat.create_namespace(&ns("ab"), HashMap::new()).await?;
    assert_eq!(cat.list_namespaces(Some(&ns("a"))).await?, vec![ns("a.b")]);
    assert_eq!(cat.list_namespaces(None).await?, vec![ns("a"), ns("ab"), ns("z")]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_refuses_a_non_empty_namespace_and_removes_an_empty_one() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    create_table(cat, "n.t", false).await;

    let err = cat.drop_namespace(&ns("n")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    assert!(cat.namespace_exists(&ns("n")).await?);
    assert!(cat.table_exists(&ident("n.t")).await?);

    cat.drop_table(&ident("n.t")).await?;
    cat.drop_namespace(&ns("n")).await?;
    assert!(!cat.namespace_exists(&ns("n")).await?);
    assert!(namespace_rows(&env.raw().await, CATALOG, "n").await.is_empty());
    assert!(cat.list_namespaces(None).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_namespaces_are_namespace_not_found() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let missing = ns("nope");
    let kinds = [
        cat.get_namespace(&missing).await.map(|_| ()).unwrap_err().kind(),
        cat.update_namespace(&missing, HashMap::new()).await.unwrap_err().kind(),
        cat.drop_namespace(&missing).await.unwrap_err().kind(),
        cat.list_tables(&missing).await.map(|_| ()).unwrap_err().kind(),
        cat.list_namespaces(Some(&missing))
            .await
            .map(|_| ())
            .unwrap_err()
            .kind(),
        cat.create_table(&missing, crate::common::creation("t", false))
            .await
            .map(|_| ())
            .unwrap_err()
            .kind(),
    ];
    assert!(kinds.iter().all(|k| *k == ErrorKind::NamespaceNotFound), "{kinds:?}");
    assert!(!cat.namespace_exists(&missing).await?);
    Ok(())
}

/// Only `x.y` is created (as `IcebergSink::open` does for a table `x.y.t`): `x` is listed, so it
/// must also exist — Spark's `JdbcCatalog` and PyIceberg's `SqlCatalog`, which share this layout,
/// treat a namespace with children as existing (`namespace = 'x' OR namespace LIKE 'x.%'`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_parent_namespace_exists() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    cat.create_namespace(&ns("x.y"), HashMap::new()).await?;
    assert_eq!(cat.list_namespaces(None).await?, vec![ns("x")]);
    assert_eq!(cat.list_namespaces(Some(&ns("x"))).await?, vec![ns("x.y")]);
    for listed in cat.list_namespaces(None).await? {
        assert!(
            cat.namespace_exists(&listed).await?,
            "list_namespaces returned {listed}, but namespace_exists says it does not exist"
        );
    }
    Ok(())
}
