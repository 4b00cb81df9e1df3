//! Files-sink commits (`floe_file_commits`, `floe_file_sequences`): the file list and the position
//! move land in one transaction that also closes the attempt; a stale `from` or a taken-over
//! attempt is refused and leaves everything as it was (sequence numbers included); a commit not
//! yet published is found by another instance (a reopen) until it is marked published.

use floe_catalog::{CommittedFile, FilesCommit};
use iceberg::ErrorKind;
use uuid::Uuid;

use crate::common::{CATALOG, Env, TestResult};

const TARGET: &str = "file:///data/out";

fn commit<'a>(from: u64, to: u64, attempt: Option<Uuid>) -> FilesCommit<'a> {
    FilesCommit {
        pipeline: "p",
        sink: "s",
        target: TARGET,
        from,
        to,
        attempt,
    }
}

fn files(attempt: Uuid, first: u64, n: u64) -> Vec<CommittedFile> {
    (0..n)
        .map(|i| CommittedFile {
            staged: format!("{TARGET}/_floe/staging/p/s/{attempt}/{i:05}.json"),
            location: format!("{TARGET}/day=01/part-{:020}.json", first + i),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_list_and_the_position_land_together() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let attempt = Uuid::now_v7();
    cat.begin_attempt("p", "s", attempt, &format!("{TARGET}/_floe/staging/p/s/{attempt}"))
        .await?;
    let recorded = cat
        .commit_files(&commit(0, 10, Some(attempt)), 2, |first| files(attempt, first, 2))
        .await?;
    assert_eq!(recorded, files(attempt, 0, 2));
    assert!(
        cat.pending_attempts("p", "s").await?.is_empty(),
        "the attempt closed with its commit"
    );
    let pending = cat.pending_file_commits("p", "s").await?;
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].attempt, pending[0].from, pending[0].to), (attempt, 0, 10));
    assert_eq!(pending[0].files, recorded);
    let pos = cat.sink_position("p", "s").await?.expect("position");
    assert_eq!((pos.position, pos.table.as_str(), pos.snapshot_id), (10, TARGET, -1));
    assert_eq!(
        pos.table_uuid,
        attempt.to_string(),
        "the first commit's attempt names the target"
    );

    cat.finish_file_commit("p", "s", attempt).await?;
    assert!(cat.pending_file_commits("p", "s").await?.is_empty());

    // The next commit: numbers continue, the target's uuid stays.
    let second = Uuid::now_v7();
    cat.begin_attempt("p", "s", second, "x").await?;
    let recorded = cat
        .commit_files(&commit(10, 25, Some(second)), 3, |first| files(second, first, 3))
        .await?;
    assert_eq!(recorded, files(second, 2, 3));
    assert_eq!(cat.file_sequence(TARGET).await?, 5);
    let pos = cat.sink_position("p", "s").await?.expect("position");
    assert_eq!((pos.position, pos.table_uuid), (25, attempt.to_string()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_from_or_a_lost_attempt_is_refused_and_changes_nothing() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let first = Uuid::now_v7();
    cat.begin_attempt("p", "s", first, "x").await?;
    cat.commit_files(&commit(0, 10, Some(first)), 1, |n| files(first, n, 1))
        .await?;

    // Another instance committed [0, 10) already: a commit from 0 again is refused.
    let stale = Uuid::now_v7();
    cat.begin_attempt("p", "s", stale, "x").await?;
    let err = cat
        .commit_files(&commit(0, 12, Some(stale)), 4, |n| files(stale, n, 4))
        .await
        .expect_err("stale from");
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    assert!(!err.retryable(), "a moved position is never retried");
    assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(10));
    assert_eq!(cat.file_sequence(TARGET).await?, 1, "the reserved numbers rolled back");
    let pending = cat.pending_file_commits("p", "s").await?;
    assert_eq!(pending.iter().map(|c| c.attempt).collect::<Vec<_>>(), vec![first]);
    assert_eq!(
        cat.pending_attempts("p", "s")
            .await?
            .iter()
            .map(|(a, _)| *a)
            .collect::<Vec<_>>(),
        vec![stale],
        "the refused attempt stays registered, so its staged files are removed at the next open"
    );

    // An attempt another instance forgot (it took the sink over) cannot commit.
    cat.forget_attempt("p", "s", stale).await?;
    let err = cat
        .commit_files(&commit(10, 12, Some(stale)), 0, |_| files(stale, 0, 1))
        .await
        .expect_err("attempt gone");
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(10));
    assert_eq!(cat.pending_file_commits("p", "s").await?.len(), 1);

    // Rows that all filtered away: the position moves alone, nothing is recorded.
    cat.commit_files(&commit(10, 30, None), 0, |_| vec![]).await?;
    assert_eq!(cat.sink_position("p", "s").await?.map(|p| p.position), Some(30));
    assert_eq!(cat.pending_file_commits("p", "s").await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpublished_commit_is_found_on_reopen_until_finished() -> TestResult {
    let env = Env::new().await;
    let attempt = Uuid::now_v7();
    // A start position recorded before the first commit (as App::open does): the first commit
    // moves it and fills in the target's uuid.
    env.catalog.record_start_position("p", "s", TARGET, "", 7).await?;
    env.catalog.begin_attempt("p", "s", attempt, "x").await?;
    env.catalog
        .commit_files(&commit(7, 9, Some(attempt)), 0, |_| files(attempt, 100, 2))
        .await?;
    // The process dies here, before publishing. Reopened:
    env.catalog.close().await;
    let reopened = env.open(CATALOG).await;
    let pending = reopened.pending_file_commits("p", "s").await?;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].files, files(attempt, 100, 2));
    assert_eq!((pending[0].from, pending[0].to), (7, 9));
    let pos = reopened.sink_position("p", "s").await?.expect("position");
    assert_eq!((pos.position, pos.table_uuid), (9, attempt.to_string()));
    // Other sinks and catalogs see none of it.
    assert!(reopened.pending_file_commits("p", "other").await?.is_empty());
    assert!(env.open("other").await.pending_file_commits("p", "s").await?.is_empty());
    reopened.finish_file_commit("p", "s", attempt).await?;
    reopened.finish_file_commit("p", "s", attempt).await?;
    assert!(reopened.pending_file_commits("p", "s").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_takes_unpublished_commits_along() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let attempt = Uuid::now_v7();
    cat.begin_attempt("old", "s", attempt, "x").await?;
    let c = FilesCommit {
        pipeline: "old",
        ..commit(0, 3, Some(attempt))
    };
    cat.commit_files(&c, 0, |_| files(attempt, 0, 1)).await?;
    cat.take_over_positions("old", "new", &["s".to_string()]).await?;
    assert!(cat.pending_file_commits("old", "s").await?.is_empty());
    assert_eq!(cat.pending_file_commits("new", "s").await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_positions_keeps_the_ones_with_unpublished_commits() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    // (p, s) and its derived (p, s.dead_letter) were published; (p, u) has a landed commit
    // whose files are not published yet; (q, s) is another pipeline's.
    for (pipeline, sink) in [("p", "s"), ("p", "s.dead_letter"), ("p", "u"), ("q", "s"), ("p", "s_x")] {
        cat.record_start_position(pipeline, sink, TARGET, "", 4).await?;
    }
    let attempt = Uuid::now_v7();
    cat.begin_attempt("p", "u", attempt, "x").await?;
    let c = FilesCommit {
        sink: "u",
        ..commit(4, 6, Some(attempt))
    };
    cat.commit_files(&c, 0, |_| files(attempt, 0, 1)).await?;

    let mut forgotten = cat.forget_positions("p", &["s".to_string(), "u".to_string()]).await?;
    forgotten.sort();
    assert_eq!(forgotten, ["s", "s.dead_letter"]);
    assert!(cat.sink_position("p", "s").await?.is_none());
    assert!(cat.sink_position("p", "s.dead_letter").await?.is_none());
    // `_` in a sink name is not a wildcard: `s_x` is not derived from `s`.
    assert!(cat.sink_position("p", "s_x").await?.is_some());
    assert_eq!(cat.sink_position("p", "u").await?.map(|p| p.position), Some(6));
    assert!(cat.sink_position("q", "s").await?.is_some());
    Ok(())
}
