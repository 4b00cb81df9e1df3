//! Model-based property test: random operations against a `Vec` model.

use floe_stream::{Error, LogOptions, StreamLog};
use proptest::prelude::*;

use crate::common::{batch, contiguous_values, rt};

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Read { at: u16, max_bytes: u16 },
    Truncate(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u8..20).prop_map(Op::Append),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes: max_bytes % 3000 }),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
    ]
}

fn value_at(offset: u64) -> i64 {
    offset as i64 * 3 + 1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_vec_model(ops in proptest::collection::vec(op(), 1..30), segment_bytes in 600u64..4000) {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions { segment_bytes, ..LogOptions::default() };
        let rt = rt();
        let mut log = StreamLog::open(dir.path(), opts.clone()).unwrap();
        // The model: every offset ever assigned (value == value_at(offset)), and the first one
        // the log still holds.
        let mut end = 0u64;
        let mut start = 0u64;
        for op in ops {
            match op {
                Op::Append(rows) => {
                    let b = batch((end..end + u64::from(rows)).map(value_at));
                    let ack = rt.block_on(log.append(b)).unwrap();
                    prop_assert_eq!(ack.first_offset, end);
                    end += u64::from(rows);
                    prop_assert_eq!(ack.next_offset, end);
                }
                Op::Read { at, max_bytes } => {
                    // Offsets from a little below start to a little past end.
                    let lo = start.saturating_sub(3);
                    let at = lo + u64::from(at) % (end + 4 - lo);
                    match log.read(at, usize::from(max_bytes)) {
                        Ok(recs) => {
                            prop_assert!(at >= start && at <= end, "read({}) ok outside {}..={}", at, start, end);
                            prop_assert_eq!(recs.is_empty(), at == end);
                            let got = contiguous_values(&recs, at);
                            let want: Vec<i64> = (at..at + got.len() as u64).map(value_at).collect();
                            prop_assert_eq!(got, want);
                        }
                        Err(Error::OffsetOutOfRange { .. }) => {
                            prop_assert!(at < start || at > end, "read({}) failed inside {}..={}", at, start, end);
                        }
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Op::Truncate(to) => {
                    let to = u64::from(to) % (end + 2);
                    let disk = log.disk_bytes();
                    let freed = log.truncate_before(to).unwrap();
                    let new_start = log.start_offset();
                    prop_assert_eq!(log.disk_bytes(), disk - freed);
                    prop_assert!(new_start >= start);
                    prop_assert!(new_start == start || new_start <= to, "start {} > truncation point {}", new_start, to);
                    prop_assert_eq!(freed > 0, new_start > start);
                    start = new_start;
                }
                Op::Reopen => {
                    drop(log);
                    log = StreamLog::open(dir.path(), opts.clone()).unwrap();
                }
            }
            prop_assert_eq!(log.start_offset(), start);
            prop_assert_eq!(log.end_offset(), end);
        }
        // Everything still stored reads back.
        let recs = log.read(start, usize::MAX).unwrap();
        let want: Vec<i64> = (start..end).map(value_at).collect();
        prop_assert_eq!(contiguous_values(&recs, start), want);
    }
}
