//! Append/read round trips, slicing, truncation and reopening.

use floe_stream::{Error, LogOptions, StreamLog};

use crate::common::{batch, contiguous_values, rt, segment_files, small_segments, values};

#[test]
fn round_trip_across_segments_with_slicing_truncation_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let log = StreamLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (0, 0));
    assert!(log.read(0, usize::MAX).unwrap().is_empty());

    // 30 records of 1..=5 rows each; value == offset.
    let mut expected: Vec<i64> = Vec::new();
    rt.block_on(async {
        for i in 0..30u64 {
            let rows = 1 + i % 5;
            let first = expected.len() as i64;
            let ack = log.append(batch(first..first + rows as i64)).await.unwrap();
            assert_eq!(ack.first_offset, first as u64);
            assert_eq!(ack.next_offset, first as u64 + rows);
            assert_eq!(log.end_offset(), ack.next_offset);
            expected.extend(first..first + rows as i64);
        }
    });
    let end = expected.len() as u64;
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "expected several segments, got {}", files.len());
    let on_disk: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert_eq!(log.disk_bytes(), on_disk);

    // Full read, with and without a byte budget.
    assert_eq!(contiguous_values(&log.read(0, usize::MAX).unwrap(), 0), expected);
    let one = log.read(0, 0).unwrap();
    assert_eq!(one.len(), 1, "a zero budget still returns one record");
    assert!(one[0].appended_at_ms > 1_600_000_000_000);

    // Reading from every offset, following the records to the end in small steps.
    for start in 0..end {
        let mut got = Vec::new();
        let mut at = start;
        while at < end {
            let recs = log.read(at, 100).unwrap();
            assert!(!recs.is_empty());
            assert_eq!(recs[0].offset, at, "first row must be the requested offset");
            got.extend(contiguous_values(&recs, at));
            at = recs.last().unwrap().end();
        }
        assert_eq!(got, expected[start as usize..]);
    }
    assert!(log.read(end, 1).unwrap().is_empty());
    assert!(matches!(
        log.read(end + 1, 1),
        Err(Error::OffsetOutOfRange { offset, end: e, .. }) if offset == end + 1 && e == end
    ));

    // Truncation deletes only whole segments below the offset, never the active one.
    let before = log.disk_bytes();
    assert_eq!(log.truncate_before(0).unwrap(), 0);
    let freed = log.truncate_before(end / 2).unwrap();
    assert!(freed > 0);
    assert_eq!(log.disk_bytes(), before - freed);
    let start = log.start_offset();
    assert!(start > 0 && start <= end / 2, "start {start}");
    assert!(matches!(
        log.read(start - 1, 1),
        Err(Error::OffsetOutOfRange { start: s, .. }) if s == start
    ));
    assert_eq!(
        contiguous_values(&log.read(start, usize::MAX).unwrap(), start),
        expected[start as usize..]
    );
    let freed_all = log.truncate_before(u64::MAX).unwrap();
    assert!(freed_all > 0);
    assert_eq!(segment_files(dir.path()).len(), 1, "the active segment stays");
    let start = log.start_offset();
    assert!(start <= end);
    drop(log);

    // Reopen: same range, and appends continue at the old end.
    let log = StreamLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (start, end));
    rt.block_on(async {
        let ack = log.append(batch(end as i64..end as i64 + 3)).await.unwrap();
        assert_eq!((ack.first_offset, ack.next_offset), (end, end + 3));
    });
    expected.extend(end as i64..end as i64 + 3);
    assert_eq!(
        contiguous_values(&log.read(start, usize::MAX).unwrap(), start),
        expected[start as usize..]
    );
}

#[test]
fn subscribe_sees_durable_end() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
    let mut rx = log.subscribe();
    assert_eq!(*rx.borrow_and_update(), 0);
    rt.block_on(async {
        let ack = log.append(batch(0..4)).await.unwrap();
        // The watch is updated before the append is acknowledged.
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), ack.next_offset);
        let reader = {
            let log = log.clone();
            let mut rx = log.subscribe();
            tokio::spawn(async move {
                rx.wait_for(|&end| end >= 10).await.unwrap();
                values(&log.read(4, usize::MAX).unwrap())
            })
        };
        log.append(batch(4..10)).await.unwrap();
        assert_eq!(reader.await.unwrap(), (4..10).collect::<Vec<_>>());
    });
}

#[test]
fn schema_may_change_between_records() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray};
    use arrow::record_batch::RecordBatch;

    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), LogOptions::default()).unwrap();
    let other =
        RecordBatch::try_from_iter([("flag", Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef)]).unwrap();
    rt().block_on(async {
        log.append(batch(0..1)).await.unwrap();
        log.append(other.clone()).await.unwrap();
    });
    let recs = log.read(0, usize::MAX).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].batch, other);
    assert_eq!(recs[1].offset, 1);
    let sliced = log.read(2, usize::MAX).unwrap();
    assert_eq!(sliced[0].batch, other.slice(1, 1));
}
