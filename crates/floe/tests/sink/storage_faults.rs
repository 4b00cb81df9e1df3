//! Storage faults under `IcebergSink::commit`: for every k, the k-th storage write of a commit
//! fails (ENOSPC / EIO) — which walks the fault through the Parquet data file(s), the manifest,
//! the manifest list and the table metadata — and after each failure the sink is reopened as the
//! pipeline runner does, resumes at the catalog's position, writes the rows again and commits.
//! At the end every row is in the table exactly once, every referenced data file exists, no file
//! of a failed attempt is left on disk, and no data file is unreferenced. Also: a fault while
//! writing (before the commit), and a failed delete of the metadata of a refused commit.

use floe::sink::Sink;
use std::collections::BTreeSet;

use iceberg::ErrorKind;

use crate::common::{Env, TestResult, files_under, open_sink, referenced_data_files, scan_ids, uuids_in, write_range};
use crate::faulty_storage::{EIO, ENOSPC, Logged, Op};

/// Which file of a commit a write operation belongs to.
fn phase(l: &Logged) -> &'static str {
    let name = l.path.rsplit('/').next().unwrap_or(&l.path);
    if name.ends_with(".parquet") {
        "data file"
    } else if name.ends_with(".metadata.json") {
        "table metadata"
    } else if name.starts_with("snap-") {
        "manifest list"
    } else if name.ends_with(".avro") {
        "manifest"
    } else {
        "other"
    }
}

/// Everything the table must satisfy after the faults: rows `0..position` exactly once, every
/// referenced data file present, no file of a failed attempt anywhere, no unreferenced data file.
async fn check_table(env: &Env, position: u64, failed_attempts: &BTreeSet<uuid::Uuid>) -> TestResult {
    let table = env.table().await;
    assert_eq!(scan_ids(&table).await?, (0..position).collect::<Vec<_>>());
    let referenced = referenced_data_files(&table).await?;
    let on_disk = files_under(&env.table_dir());
    for f in &referenced {
        assert!(on_disk.contains(f), "referenced data file {f} is missing");
        assert!(
            uuids_in(f).iter().all(|u| !failed_attempts.contains(u)),
            "a data file of a failed attempt is referenced: {f}"
        );
    }
    for f in &on_disk {
        assert!(
            uuids_in(f).iter().all(|u| !failed_attempts.contains(u)),
            "a file of a failed attempt was left behind: {f}"
        );
        if f.ends_with(".parquet") {
            assert!(referenced.contains(f), "unreferenced data file {f}");
        }
    }
    Ok(())
}

async fn every_commit_fault_is_recovered(partition_by: &[&str]) -> TestResult {
    const CHUNK: u64 = 8;
    let env = Env::new().await;
    let mut sink = env.open_sink(partition_by).await;
    assert_eq!(sink.committed(), 0);
    let mut phases = BTreeSet::new();
    let mut failed_attempts = BTreeSet::new();
    let mut k = 1;
    loop {
        assert!(k <= 40, "the fault never got past the commit's last write");
        let p = sink.committed();
        let pointer = env.table().await.metadata_location().map(str::to_string);
        write_range(&mut sink, p..p + CHUNK).await?;
        let mark = env.faults.writes();
        env.faults.fail_write_in(k, if k % 2 == 0 { ENOSPC } else { EIO });
        let result = sink.commit().await;
        env.faults.disarm();
        let log = env.faults.log_since(mark);
        let fired: Vec<&Logged> = log.iter().filter(|l| l.failed).collect();
        match result {
            Ok(stats) => {
                // k is past the last write operation of a commit: every phase has been hit.
                assert!(fired.is_empty(), "{fired:?}");
                assert_eq!((stats.from, stats.to), (p, p + CHUNK));
                assert_eq!(env.position().await, p + CHUNK);
                break;
            }
            Err(e) => {
                assert_eq!(fired.len(), 1, "k={k}: {e}; log {log:?}");
                let hit = fired[0];
                phases.insert(phase(hit));
                let attempt = uuids_in(&hit.path);
                assert_eq!(
                    attempt.len(),
                    1,
                    "every file of an attempt carries its id: {}",
                    hit.path
                );
                failed_attempts.extend(attempt);

                // Nothing landed.
                assert_eq!(env.position().await, p, "k={k} ({}): {e}", phase(hit));
                assert_eq!(env.table().await.metadata_location().map(str::to_string), pointer);

                // Reopen, resume at the catalog's position, write the same rows again.
                drop(sink);
                sink = env.open_sink(partition_by).await;
                assert_eq!(sink.committed(), env.position().await);
                assert_eq!(sink.committed(), p);
                let leftovers: Vec<String> = files_under(&env.table_dir())
                    .into_iter()
                    .filter(|f| uuids_in(f).iter().any(|u| failed_attempts.contains(u)))
                    .collect();
                assert!(
                    leftovers.is_empty(),
                    "k={k}: files of the failed attempt: {leftovers:?}"
                );
                write_range(&mut sink, p..p + CHUNK).await?;
                sink.commit().await?;
                assert_eq!(env.position().await, p + CHUNK);
            }
        }
        k += 1;
    }
    for wanted in ["data file", "manifest", "manifest list", "table metadata"] {
        assert!(phases.contains(wanted), "no fault hit the {wanted}: {phases:?}");
    }
    let position = env.position().await;
    assert_eq!(position, sink.committed());
    check_table(&env, position, &failed_attempts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_storage_fault_in_a_commit_is_recovered_exactly_once() -> TestResult {
    every_commit_fault_is_recovered(&[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_storage_fault_in_a_partitioned_commit_is_recovered_exactly_once() -> TestResult {
    every_commit_fault_is_recovered(&["bucket"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_while_writing_is_recovered_by_reopening() -> TestResult {
    let env = Env::new().await;
    let mut sink = env.open_sink(&[]).await;
    write_range(&mut sink, 0..10).await?;
    sink.commit().await?;

    // The Parquet file of the next attempt cannot be created.
    let mark = env.faults.writes();
    env.faults.fail_write_in(1, ENOSPC);
    let err = write_range(&mut sink, 10..20).await.unwrap_err();
    env.faults.disarm();
    let log = env.faults.log_since(mark);
    assert!(
        log.iter()
            .any(|l| l.failed && l.op == Op::Open && phase(l) == "data file"),
        "{err}: {log:?}"
    );
    let failed: BTreeSet<uuid::Uuid> = log.iter().flat_map(|l| uuids_in(&l.path)).collect();

    drop(sink);
    let mut sink = env.open_sink(&[]).await;
    assert_eq!(sink.committed(), 10);
    write_range(&mut sink, 10..20).await?;
    sink.commit().await?;
    check_table(&env, 20, &failed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_of_refused_metadata_leaves_nothing_behind() -> TestResult {
    let env = Env::new().await;
    let mut a = env.open_sink(&[]).await;
    // Another floe instance commits the same range first.
    let other = env.other_instance().await;
    let mut b = open_sink(&other, &[]).await;
    write_range(&mut b, 0..10).await?;
    b.commit().await?;

    let mark = env.faults.writes();
    write_range(&mut a, 0..10).await?;
    env.faults.fail_delete_in(1, EIO);
    let err = a.commit().await.unwrap_err();
    env.faults.disarm();
    match &err {
        floe::error::Error::Iceberg(e) => assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{e}"),
        other => panic!("expected the position fence, got {other}"),
    }
    let attempt: BTreeSet<uuid::Uuid> = env
        .faults
        .log_since(mark)
        .iter()
        .flat_map(|l| uuids_in(&l.path))
        .collect();
    assert_eq!(attempt.len(), 1, "one attempt wrote files");
    // The catalog could not delete its metadata file; the sink's cleanup did.
    let leftovers: Vec<String> = files_under(&env.table_dir())
        .into_iter()
        .filter(|f| uuids_in(f).iter().any(|u| attempt.contains(u)))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    drop(a);
    let a = env.open_sink(&[]).await;
    assert_eq!(a.committed(), 10);
    check_table(&env, 10, &attempt).await
}
