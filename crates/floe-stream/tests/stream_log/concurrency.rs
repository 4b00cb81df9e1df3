//! Concurrent appends: unique contiguous offsets and group commit.

use std::collections::HashMap;

use floe_stream::{LogOptions, StreamLog};

use crate::common::{batch, contiguous_values};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_contiguous_offsets_and_share_fsyncs() {
    const TASKS: i64 = 8;
    const APPENDS: i64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        segment_bytes: 64 * 1024,
        ..LogOptions::default()
    };
    let log = StreamLog::open(dir.path(), opts.clone()).unwrap();
    let fsyncs_before = log.fsync_count();

    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let log = log.clone();
        tasks.spawn(async move {
            let mut acks = Vec::new();
            for i in 0..APPENDS {
                // Each batch carries a globally unique value; row count varies 1..=3.
                let id = t * 1_000_000 + i * 10;
                let rows = 1 + (i % 3);
                let ack = log.append(batch(id..id + rows)).await.unwrap();
                assert_eq!(ack.next_offset - ack.first_offset, rows as u64);
                acks.push((ack, id));
            }
            acks
        });
    }
    let mut acks: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(acks.len() as i64, TASKS * APPENDS);
    acks.sort_by_key(|(a, _)| a.first_offset);
    let mut next = 0;
    for (a, _) in &acks {
        assert_eq!(a.first_offset, next, "offsets must be unique and contiguous");
        next = a.next_offset;
    }
    assert_eq!(log.end_offset(), next);

    // Group commit: far fewer fsyncs than appends (segment rolls included).
    let fsyncs = log.fsync_count() - fsyncs_before;
    let appends = (TASKS * APPENDS) as u64;
    eprintln!("group commit: {fsyncs} fsyncs for {appends} appends");
    assert!(fsyncs < appends, "{fsyncs} fsyncs for {appends} appends");

    // Each acknowledged batch is stored at its acknowledged offsets.
    let by_offset: HashMap<u64, i64> = acks.iter().map(|(a, id)| (a.first_offset, *id)).collect();
    let check = |log: &StreamLog| {
        let mut at = 0;
        while at < next {
            let recs = log.read(at, 256 * 1024).unwrap();
            contiguous_values(&recs, at);
            for r in &recs {
                let id = by_offset[&r.offset];
                let expected: Vec<i64> = (id..id + r.batch.num_rows() as i64).collect();
                assert_eq!(contiguous_values(std::slice::from_ref(r), r.offset), expected);
            }
            at = recs.last().unwrap().end();
        }
    };
    check(&log);
    drop(log);
    let log = StreamLog::open(dir.path(), opts).unwrap();
    assert_eq!(log.end_offset(), next);
    check(&log);
}
