//! `floe_catalog::rewrite::commit_rewrite`, the `replace` commit compaction and copy-on-write
//! deletes use, against its conflict rule: an append that lands between planning and commit
//! is kept (the rewrite lands on top of it); a second rewrite of the same files, or a file
//! deleted meanwhile, abandons the rewrite with nothing of it left in the table or its folder;
//! and the reachability walk that expiry and orphan cleanup rely on sees both sides.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use floe_catalog::reachable::{Mode, walk};
use floe_catalog::rewrite::{Rewrite, commit_rewrite, read_manifest, read_manifest_list};
use floe_catalog::{FloeCatalog, commit_state_unknown};
use iceberg::spec::{DataFile, Operation};
use iceberg::table::Table;
use iceberg::{Catalog, ErrorKind};

use crate::common::{Env, TestResult, append, create_table, files_in, ident, scan_ids, write_and_append, write_files};

/// The live data files of the table's current snapshot, by the manifest that lists them.
async fn live_by_manifest(catalog: &FloeCatalog, table: &Table) -> BTreeMap<String, BTreeSet<String>> {
    let metadata = table.metadata();
    let snapshot = metadata.current_snapshot().expect("a snapshot");
    let list = read_manifest_list(catalog, metadata, snapshot.manifest_list())
        .await
        .expect("manifest list");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in list.entries() {
        let manifest = read_manifest(catalog, m).await.expect("manifest");
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            out.entry(m.manifest_path.clone())
                .or_default()
                .insert(e.file_path().to_string());
        }
    }
    out
}

/// A rewrite of the files of `manifests` (the ones listed in `by_manifest`) into `added`.
fn replace(
    base: i64,
    by_manifest: &BTreeMap<String, BTreeSet<String>>,
    manifests: &[&String],
    added: Vec<DataFile>,
) -> Rewrite {
    Rewrite {
        base_snapshot_id: base,
        removed: manifests
            .iter()
            .map(|m| ((*m).clone(), by_manifest[*m].clone()))
            .collect(),
        added,
        operation: Operation::Replace,
        properties: HashMap::from([("floe.maintenance".to_string(), "test".to_string())]),
        id: uuid::Uuid::now_v7(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_between_is_kept_and_time_travel_still_reads_the_old_files() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "rw.rebase", true).await;
    let t = write_and_append(cat, &t, 0..100, HashMap::new()).await?;
    let t = write_and_append(cat, &t, 100..200, HashMap::new()).await?;
    let base = t.metadata().current_snapshot_id().expect("base");
    let planned = live_by_manifest(cat, &t).await;
    assert_eq!(planned.len(), 2, "one manifest per append");
    // The same rows, rewritten into new files: one per partition for all 200 rows.
    let added = write_files(&t, 0..200).await?;
    let manifests: Vec<&String> = planned.keys().collect();
    let rewrite = replace(base, &planned, &manifests, added.clone());

    // An ingest commit lands after the rewrite was planned.
    write_and_append(cat, &t, 200..300, HashMap::new()).await?;
    let done = commit_rewrite(cat, &ident("rw.rebase"), &rewrite, 3).await?;
    let t = cat.load_table(&ident("rw.rebase")).await?;
    assert_eq!(t.metadata().current_snapshot_id(), Some(done.snapshot_id));
    assert_eq!(
        scan_ids(&t).await?,
        (0..300).collect::<Vec<_>>(),
        "every row exactly once"
    );
    let snapshot = t.metadata().current_snapshot().expect("current");
    assert_eq!(snapshot.summary().operation, Operation::Replace);
    let props = &snapshot.summary().additional_properties;
    assert_eq!(
        props["deleted-data-files"],
        (planned.values().map(BTreeSet::len).sum::<usize>()).to_string()
    );
    assert_eq!(props["added-data-files"], added.len().to_string());
    assert_eq!(props["total-records"], "300");

    // The live files are the rewritten ones plus the append's; the originals are gone from
    // the current snapshot but still read by the base snapshot.
    let live: BTreeSet<String> = live_by_manifest(cat, &t).await.into_values().flatten().collect();
    let originals: BTreeSet<String> = planned.values().flatten().cloned().collect();
    assert!(live.is_disjoint(&originals));
    for f in &added {
        assert!(live.contains(f.file_path()));
    }
    let old = t.scan().snapshot_id(base).build()?;
    let old_ids: Vec<i64> = {
        use futures::TryStreamExt;
        let batches: Vec<arrow::array::RecordBatch> = old.to_arrow().await?.try_collect().await?;
        let mut ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("id").expect("id");
                let c = c.as_any().downcast_ref::<arrow::array::Int64Array>().expect("long");
                c.values().to_vec()
            })
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        old_ids,
        (0..200).collect::<Vec<_>>(),
        "time travel to the base snapshot"
    );

    // The walk expiry relies on: the current snapshot alone reads the new files, lists the
    // originals only as removed; all snapshots together reference both.
    let dir = cat.warehouse_rule().check("table", t.metadata().location())?;
    let current = t.metadata().current_snapshot_id();
    let now = walk(
        cat.storage().as_ref(),
        &dir,
        t.metadata(),
        |id| Some(id) == current,
        Mode::Strict,
    )
    .await?;
    let normal = |s: &String| cat.warehouse_rule().below(&dir, s).expect("below the table");
    let live_n: BTreeSet<String> = live.iter().map(normal).collect();
    let originals_n: BTreeSet<String> = originals.iter().map(normal).collect();
    assert_eq!(now.live, live_n);
    assert_eq!(now.removed, originals_n);
    let all = walk(cat.storage().as_ref(), &dir, t.metadata(), |_| true, Mode::Strict).await?;
    assert!(originals_n.is_subset(&all.live));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rewrite_of_the_same_files_is_abandoned_and_leaves_nothing() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "rw.race", false).await;
    let t = write_and_append(cat, &t, 0..50, HashMap::new()).await?;
    let t = write_and_append(cat, &t, 50..100, HashMap::new()).await?;
    let base = t.metadata().current_snapshot_id().expect("base");
    let planned = live_by_manifest(cat, &t).await;
    let manifests: Vec<&String> = planned.keys().collect();
    let first = replace(base, &planned, &manifests, write_files(&t, 0..100).await?);
    let second_files = write_files(&t, 0..100).await?;
    let second = replace(base, &planned, &manifests, second_files.clone());
    commit_rewrite(cat, &ident("rw.race"), &first, 3).await?;
    let after_first = cat.load_table(&ident("rw.race")).await?;
    let metadata_files = files_in(&after_first, "metadata", "");

    let err = commit_rewrite(cat, &ident("rw.race"), &second, 3)
        .await
        .expect_err("the files were rewritten by the first");
    assert_eq!(err.kind(), ErrorKind::CatalogCommitConflicts);
    assert!(!commit_state_unknown(&err));
    assert!(err.to_string().contains("the rewrite was abandoned"), "{err}");
    let t = cat.load_table(&ident("rw.race")).await?;
    assert_eq!(
        t.metadata_location(),
        after_first.metadata_location(),
        "nothing committed"
    );
    assert_eq!(scan_ids(&t).await?, (0..100).collect::<Vec<_>>());
    assert_eq!(
        files_in(&t, "metadata", ""),
        metadata_files,
        "no manifest of the abandoned rewrite is left"
    );
    assert!(
        !metadata_files.iter().any(|f| f.contains(&second.id.to_string())),
        "none is named after it"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_by_an_outside_engine_abandons_the_rewrite() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "rw.gone", false).await;
    let t = write_and_append(cat, &t, 0..10, HashMap::new()).await?;
    let t = write_and_append(cat, &t, 10..20, HashMap::new()).await?;
    let base = t.metadata().current_snapshot_id().expect("base");
    let planned = live_by_manifest(cat, &t).await;
    let manifests: Vec<&String> = planned.keys().collect();
    let rewrite = replace(base, &planned, &manifests, write_files(&t, 0..20).await?);

    // An outside engine deletes the first append's rows: its own rewrite of one manifest
    // (here: floe's rewrite with no added files, as a delete commit would be).
    let (m0, files0) = planned.iter().next().expect("a manifest");
    let delete = Rewrite {
        base_snapshot_id: base,
        removed: BTreeMap::from([(m0.clone(), files0.clone())]),
        added: vec![],
        operation: Operation::Delete,
        properties: HashMap::new(),
        id: uuid::Uuid::now_v7(),
    };
    commit_rewrite(cat, &ident("rw.gone"), &delete, 3).await?;
    let err = commit_rewrite(cat, &ident("rw.gone"), &rewrite, 3)
        .await
        .expect_err("a file it read is gone");
    assert_eq!(err.kind(), ErrorKind::CatalogCommitConflicts);
    let t = cat.load_table(&ident("rw.gone")).await?;
    assert_eq!(
        scan_ids(&t).await?,
        (10..20).collect::<Vec<_>>(),
        "the delete stands, nothing doubled"
    );
    // An append on top and a fresh plan compact fine.
    let t = append(cat, &t, write_files(&t, 20..30).await?, HashMap::new()).await?;
    let base = t.metadata().current_snapshot_id().expect("base");
    let planned = live_by_manifest(cat, &t).await;
    let manifests: Vec<&String> = planned.keys().collect();
    let again = replace(base, &planned, &manifests, write_files(&t, 10..30).await?);
    commit_rewrite(cat, &ident("rw.gone"), &again, 3).await?;
    let t = cat.load_table(&ident("rw.gone")).await?;
    assert_eq!(scan_ids(&t).await?, (10..30).collect::<Vec<_>>());
    Ok(())
}

/// Every live entry of the current snapshot, in manifest-list order: (manifest, file, data
/// sequence number, file sequence number, partition as text).
async fn live_entries(catalog: &FloeCatalog, table: &Table) -> Vec<(String, String, i64, i64, String)> {
    let metadata = table.metadata();
    let snapshot = metadata.current_snapshot().expect("a snapshot");
    let list = read_manifest_list(catalog, metadata, snapshot.manifest_list())
        .await
        .expect("manifest list");
    let mut out = Vec::new();
    for m in list.entries() {
        let manifest = read_manifest(catalog, m).await.expect("manifest");
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            out.push((
                m.manifest_path.clone(),
                e.file_path().to_string(),
                e.sequence_number().unwrap_or(m.sequence_number),
                e.file_sequence_number.unwrap_or(m.sequence_number),
                format!("{:?}", e.data_file().partition()),
            ));
        }
    }
    out
}

/// A manifest rewrite of every manifest in `by_manifest`: no file moves.
fn merge_manifests(base: i64, by_manifest: &BTreeMap<String, BTreeSet<String>>) -> Rewrite {
    Rewrite {
        base_snapshot_id: base,
        removed: by_manifest.keys().map(|m| (m.clone(), BTreeSet::new())).collect(),
        added: vec![],
        operation: Operation::Replace,
        properties: HashMap::from([("floe.maintenance".to_string(), "rewrite-manifests".to_string())]),
        id: uuid::Uuid::now_v7(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_rewrite_clusters_entries_by_partition_and_moves_no_file() -> TestResult {
    use iceberg::transaction::{ApplyTransactionAction, Transaction};
    let env = Env::new().await;
    let cat = &env.catalog;
    let name = "rw.manifests";
    let mut t = create_table(cat, name, true).await;
    for i in 0..12 {
        t = write_and_append(cat, &t, i * 8..i * 8 + 8, HashMap::new()).await?;
    }
    let before = live_entries(cat, &t).await;
    let planned = live_by_manifest(cat, &t).await;
    assert_eq!(planned.len(), 12, "one manifest per append");
    let base = t.metadata().current_snapshot_id().expect("base");

    // An append lands between planning and commit: carried over as it is.
    t = write_and_append(cat, &t, 96..100, HashMap::new()).await?;
    let appended: BTreeSet<String> = live_by_manifest(cat, &t)
        .await
        .into_iter()
        .filter(|(m, _)| !planned.contains_key(m))
        .flat_map(|(_, f)| f)
        .collect();
    let done = commit_rewrite(cat, &ident(name), &merge_manifests(base, &planned), 3).await?;
    let t = cat.load_table(&ident(name)).await?;
    assert_eq!(t.metadata().current_snapshot_id(), Some(done.snapshot_id));
    assert_eq!(scan_ids(&t).await?, (0..100).collect::<Vec<_>>(), "no row moved");
    let after = live_entries(cat, &t).await;
    let key = |v: &[(String, String, i64, i64, String)]| -> BTreeSet<(String, i64, i64)> {
        v.iter().map(|(_, f, s, fs, _)| (f.clone(), *s, *fs)).collect()
    };
    let mut expected = key(&before);
    let after_keys = key(&after);
    for f in &appended {
        let (_, s, fs) = after_keys
            .iter()
            .find(|(p, _, _)| p == f)
            .expect("the append's file")
            .clone();
        expected.insert((f.clone(), s, fs));
    }
    assert_eq!(after_keys, expected, "same files, same sequence numbers");
    let by_manifest: BTreeSet<&String> = after.iter().map(|(m, ..)| m).collect();
    assert_eq!(by_manifest.len(), 2, "one merged manifest and the append's");
    let summary = &t.metadata().current_snapshot().expect("current").summary();
    assert_eq!(summary.operation, Operation::Replace);
    assert_eq!(summary.additional_properties["manifests-replaced"], "12");
    assert_eq!(summary.additional_properties["manifests-created"], "1");
    assert_eq!(summary.additional_properties["manifests-kept"], "1");
    assert_eq!(summary.additional_properties["added-data-files"], "0");
    assert_eq!(summary.additional_properties["total-records"], "100");
    // Clustered: the merged manifest lists each partition's files together.
    let append_manifest = after.iter().find(|(_, f, ..)| appended.contains(f)).map(|(m, ..)| m);
    let merged: Vec<&String> = after
        .iter()
        .filter(|(m, ..)| Some(m) != append_manifest)
        .map(|(.., p)| p)
        .collect();
    let mut runs = merged.clone();
    runs.dedup();
    let distinct: BTreeSet<&&String> = merged.iter().collect();
    assert_eq!(runs.len(), distinct.len(), "partitions contiguous: {merged:?}");

    // A small target manifest size cuts the merged entries into several manifests, still
    // clustered, and a second rewrite planned on the old manifests is abandoned.
    let tx = Transaction::new(&t);
    let tx = tx
        .update_table_properties()
        .set("commit.manifest.target-size-bytes".into(), "4096".into())
        .apply(tx)?;
    let t = tx.commit(cat).await?;
    let planned = live_by_manifest(cat, &t).await;
    let before_cut = key(&live_entries(cat, &t).await);
    let base = t.metadata().current_snapshot_id().expect("base");
    let stale = merge_manifests(base, &planned);
    commit_rewrite(cat, &ident(name), &merge_manifests(base, &planned), 3).await?;
    let t = cat.load_table(&ident(name)).await?;
    let cut = live_entries(cat, &t).await;
    let manifests: BTreeSet<&String> = cut.iter().map(|(m, ..)| m).collect();
    assert!(manifests.len() > 1, "cut at the target size");
    let order: Vec<&String> = cut.iter().map(|(.., p)| p).collect();
    let mut runs = order.clone();
    runs.dedup();
    let distinct: BTreeSet<&&String> = order.iter().collect();
    assert_eq!(
        runs.len(),
        distinct.len(),
        "partitions contiguous across manifests: {order:?}"
    );
    assert_eq!(key(&cut), before_cut, "same files, same sequence numbers");
    assert_eq!(scan_ids(&t).await?, (0..100).collect::<Vec<_>>());
    let err = commit_rewrite(cat, &ident(name), &stale, 3)
        .await
        .expect_err("its manifests were replaced");
    assert_eq!(err.kind(), ErrorKind::CatalogCommitConflicts);
    assert_eq!(
        scan_ids(&cat.load_table(&ident(name)).await?).await?,
        (0..100).collect::<Vec<_>>()
    );
    Ok(())
}
