//! Compare-and-swap against other writers: a commit from a stale `Table` handle lands on the
//! refreshed metadata; an outside commit slipped in between iceberg's refresh and the catalog
//! update is a retryable conflict that iceberg's `Transaction` retries; a competing floe commit
//! of the same range is fenced even after that retry; and two `FloeCatalog` instances (two
//! pools on one file) committing concurrently both land, with nothing lost or doubled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use floe_catalog::{FloeCatalog, PROP_POSITION_TO};
use iceberg::table::Table;
use iceberg::{Catalog, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};

use crate::common::{Env, TestResult, create_table, ident, moves, pointer, scan_ids, write_and_append};

/// A commit another writer makes just before the wrapped catalog sees the next `update_table`.
struct SideCommit {
    table: Table,
    ids: std::ops::Range<i64>,
    properties: HashMap<String, String>,
}

/// Delegates to a [`FloeCatalog`]; the first `update_table` first lands a [`SideCommit`]
/// through the same database, so the forwarded commit's base is stale: exactly the window
/// between iceberg's refresh and the catalog's compare-and-swap.
struct Interleaving {
    inner: FloeCatalog,
    side: Mutex<Option<SideCommit>>,
    update_calls: AtomicUsize,
}

impl std::fmt::Debug for Interleaving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interleaving")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Interleaving {
    fn new(inner: FloeCatalog, side: SideCommit) -> Self {
        Self {
            inner,
            side: Mutex::new(Some(side)),
            update_calls: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Catalog for Interleaving {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(&self, ns: &NamespaceIdent, props: HashMap<String, String>) -> Result<Namespace> {
        self.inner.create_namespace(ns, props).await
    }
    async fn get_namespace(&self, ns: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(ns).await
    }
    async fn namespace_exists(&self, ns: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(ns).await
    }
    async fn update_namespace(&self, ns: &NamespaceIdent, props: HashMap<String, String>) -> Result<()> {
        self.inner.update_namespace(ns, props).await
    }
    async fn drop_namespace(&self, ns: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(ns).await
    }
    async fn list_tables(&self, ns: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(ns).await
    }
    async fn create_table(&self, ns: &NamespaceIdent, creation: TableCreation) -> Result<Table> {
        self.inner.create_table(ns, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        self.inner.load_table(table).await
    }
    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(&self, table: &TableIdent, location: String) -> Result<Table> {
        self.inner.register_table(table, location).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.update_calls.fetch_add(1, Ordering::SeqCst);
        let side = self.side.lock().expect("lock").take();
        if let Some(side) = side {
            write_and_append(&self.inner, &side.table, side.ids, side.properties).await?;
        }
        self.inner.update_table(commit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_handle_commits_on_the_refreshed_metadata() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    create_table(cat, "ns.t", false).await;
    let h1 = cat.load_table(&ident("ns.t")).await?;
    let h2 = cat.load_table(&ident("ns.t")).await?;
    let h3 = cat.load_table(&ident("ns.t")).await?;
    assert_eq!(pointer(&h1), pointer(&h2));

    let after1 = write_and_append(cat, &h1, 0..10, moves("p", "s", 0, 10)).await?;
    // h2 still has the version before h1's commit.
    let after2 = write_and_append(cat, &h2, 10..20, moves("p", "s", 10, 20)).await?;
    assert_ne!(pointer(&after2), pointer(&after1));
    let snapshots: Vec<_> = after2.metadata().snapshots().collect();
    assert_eq!(snapshots.len(), 2);
    let current = after2.metadata().current_snapshot().expect("snapshot");
    assert_eq!(current.parent_snapshot_id(), after1.metadata().current_snapshot_id());
    assert_eq!(scan_ids(&after2).await?, (0..20).collect::<Vec<_>>());
    assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(20));

    // A third handle that still thinks the range 0..10 is open is fenced, not merged.
    let err = write_and_append(cat, &h3, 100..110, moves("p", "s", 0, 10))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    let now = cat.load_table(&ident("ns.t")).await?;
    assert_eq!(pointer(&now), pointer(&after2));
    assert_eq!(scan_ids(&now).await?, (0..20).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_commit_before_the_swap_is_retried_and_lands() -> TestResult {
    let env = Env::new().await;
    let t = create_table(&env.catalog, "ns.t", false).await;
    let wrapped = Interleaving::new(
        env.catalog.clone(),
        SideCommit {
            table: t.clone(),
            ids: 100..105,
            // Another engine: no floe keys.
            properties: HashMap::new(),
        },
    );
    let landed = write_and_append(&wrapped, &t, 0..10, moves("p", "s", 0, 10)).await?;
    assert_eq!(
        wrapped.update_calls.load(Ordering::SeqCst),
        2,
        "the first update lost the compare-and-swap and was retried"
    );
    let mut expected: Vec<i64> = (0..10).chain(100..105).collect();
    expected.sort_unstable();
    assert_eq!(scan_ids(&landed).await?, expected);
    let loaded = env.catalog.load_table(&ident("ns.t")).await?;
    assert_eq!(pointer(&loaded), pointer(&landed));
    assert_eq!(loaded.metadata().snapshots().count(), 2);
    let current = loaded.metadata().current_snapshot().expect("snapshot");
    assert_eq!(
        current
            .summary()
            .additional_properties
            .get(PROP_POSITION_TO)
            .map(String::as_str),
        Some("10")
    );
    let pos = env.catalog.sink_position("p", "s").await?.expect("position");
    assert_eq!((pos.position, pos.snapshot_id), (10, current.snapshot_id()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_competing_floe_commit_of_the_same_range_is_fenced_after_the_retry() -> TestResult {
    let env = Env::new().await;
    let t = create_table(&env.catalog, "ns.t", false).await;
    let wrapped = Interleaving::new(
        env.catalog.clone(),
        SideCommit {
            table: t.clone(),
            ids: 100..110,
            properties: moves("p", "s", 0, 10),
        },
    );
    let err = write_and_append(&wrapped, &t, 0..10, moves("p", "s", 0, 10))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    assert_eq!(wrapped.update_calls.load(Ordering::SeqCst), 2);
    let loaded = env.catalog.load_table(&ident("ns.t")).await?;
    assert_eq!(scan_ids(&loaded).await?, (100..110).collect::<Vec<_>>());
    assert_eq!(loaded.metadata().snapshots().count(), 1);
    assert_eq!(env.catalog.sink_position("p", "s").await?.map(|p| p.position), Some(10));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_catalog_instances_commit_concurrently_and_both_land() -> TestResult {
    let env = Env::new().await;
    let a = env.open(crate::common::CATALOG).await;
    let b = env.open(crate::common::CATALOG).await;
    create_table(&a, "ns.t", false).await;
    // Handles loaded once, at the same version; every later commit starts from a stale one.
    let ta = a.load_table(&ident("ns.t")).await?;
    let tb = b.load_table(&ident("ns.t")).await?;
    const ROUNDS: i64 = 5;
    for r in 0..ROUNDS {
        let (from, to) = (10 * r as u64, 10 * (r as u64 + 1));
        let (ra, rb) = tokio::join!(
            write_and_append(&a, &ta, 20 * r..20 * r + 10, moves("p", "a", from, to)),
            write_and_append(&b, &tb, 20 * r + 10..20 * r + 20, moves("p", "b", from, to)),
        );
        ra?;
        rb?;
    }
    for cat in [&a, &b] {
        let t = cat.load_table(&ident("ns.t")).await?;
        assert_eq!(t.metadata().snapshots().count(), 2 * ROUNDS as usize);
        assert_eq!(scan_ids(&t).await?, (0..20 * ROUNDS).collect::<Vec<_>>());
        assert_eq!(cat.sink_position("p", "a").await?.map(|p| p.position), Some(50));
        assert_eq!(cat.sink_position("p", "b").await?.map(|p| p.position), Some(50));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_for_the_same_range_land_exactly_once() -> TestResult {
    let env = Env::new().await;
    let a = env.open(crate::common::CATALOG).await;
    let b = env.open(crate::common::CATALOG).await;
    create_table(&a, "ns.t", false).await;
    let ta = a.load_table(&ident("ns.t")).await?;
    let tb = b.load_table(&ident("ns.t")).await?;
    let (ra, rb) = tokio::join!(
        write_and_append(&a, &ta, 0..10, moves("p", "s", 0, 10)),
        write_and_append(&b, &tb, 100..110, moves("p", "s", 0, 10)),
    );
    let (winner, loser) = match (ra, rb) {
        (Ok(_), Err(e)) => ((0..10).collect::<Vec<i64>>(), e),
        (Err(e), Ok(_)) => ((100..110).collect::<Vec<i64>>(), e),
        (ra, rb) => panic!("exactly one must land: {:?} / {:?}", ra.map(|_| ()), rb.map(|_| ())),
    };
    assert_eq!(loser.kind(), ErrorKind::PreconditionFailed, "{loser}");
    let t = a.load_table(&ident("ns.t")).await?;
    assert_eq!(t.metadata().snapshots().count(), 1);
    assert_eq!(scan_ids(&t).await?, winner);
    assert_eq!(b.sink_position("p", "s").await?.map(|p| p.position), Some(10));
    Ok(())
}
