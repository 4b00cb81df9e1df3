//! Crash recovery: torn tails are cut, damaged sealed segments are refused.

use std::fs;
use std::path::{Path, PathBuf};

use floe_stream::{Error, LogOptions, SEGMENT_HEADER_LEN, StreamLog};

use crate::common::{batch, contiguous_values, rt, segment_files, small_segments};

/// A closed log of `records` records (2 rows each, value == offset) and the byte range of the
/// last record inside the last segment file.
struct Fixture {
    dir: tempfile::TempDir,
    opts: LogOptions,
    last_file: PathBuf,
    last_bytes: Vec<u8>,
    last_record: std::ops::Range<usize>,
    end_before_last: u64,
}

fn fixture(records: i64, opts: LogOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), opts.clone()).unwrap();
    let rt = rt();
    let mut end_before_last = 0;
    let mut before_last: Option<(PathBuf, u64)> = None;
    rt.block_on(async {
        for i in 0..records {
            if i == records - 1 {
                end_before_last = log.end_offset();
                let f = segment_files(dir.path()).pop().unwrap();
                let len = f.metadata().unwrap().len();
                before_last = Some((f, len));
            }
            log.append(batch(i * 2..i * 2 + 2)).await.unwrap();
        }
    });
    drop(log);
    let last_file = segment_files(dir.path()).pop().unwrap();
    let last_bytes = fs::read(&last_file).unwrap();
    let (file_before, len_before) = before_last.unwrap();
    // If the last append rolled to a new segment, the record starts right after its header.
    let start = if file_before == last_file {
        len_before as usize
    } else {
        SEGMENT_HEADER_LEN
    };
    Fixture {
        dir,
        opts,
        last_file,
        last_bytes: last_bytes.clone(),
        last_record: start..last_bytes.len(),
        end_before_last,
    }
}

/// Opens the damaged log and checks it holds exactly the records before the last one, and
/// that appends continue right after them.
fn assert_recovers_to_earlier_records(fx: &Fixture, rt: &tokio::runtime::Runtime, what: &str) {
    let log = StreamLog::open(fx.dir.path(), fx.opts.clone()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let end = fx.end_before_last;
    assert_eq!(log.end_offset(), end, "{what}");
    let expected: Vec<i64> = (0..end as i64).collect();
    assert_eq!(
        contiguous_values(&log.read(0, usize::MAX).unwrap(), 0),
        expected,
        "{what}"
    );
    rt.block_on(async {
        let ack = log.append(batch(1000..1001)).await.unwrap();
        assert_eq!((ack.first_offset, ack.next_offset), (end, end + 1), "{what}");
    });
    let recs = log.read(end, usize::MAX).unwrap();
    assert_eq!(contiguous_values(&recs, end), vec![1000], "{what}");
}

#[test]
fn torn_tail_is_cut_at_every_byte_position() {
    let rt = rt();
    for opts in [LogOptions::default(), small_segments()] {
        let fx = fixture(7, opts);
        assert!(fx.last_record.len() > 100);
        for cut in fx.last_record.clone() {
            fs::write(&fx.last_file, &fx.last_bytes[..cut]).unwrap();
            assert_recovers_to_earlier_records(&fx, &rt, &format!("cut at {cut}"));
        }
    }
}

#[test]
fn corrupt_byte_in_last_record_is_cut() {
    let rt = rt();
    let fx = fixture(5, small_segments());
    for pos in fx.last_record.clone() {
        let mut bytes = fx.last_bytes.clone();
        bytes[pos] ^= 0x5a;
        fs::write(&fx.last_file, &bytes).unwrap();
        assert_recovers_to_earlier_records(&fx, &rt, &format!("flip at {pos}"));
    }
}

#[test]
fn garbage_after_last_record_is_cut() {
    let rt = rt();
    let fx = fixture(3, LogOptions::default());
    for garbage in [vec![0u8; 1], vec![0u8; 4096], vec![0xab; 40]] {
        let mut bytes = fx.last_bytes.clone();
        bytes.extend_from_slice(&garbage);
        fs::write(&fx.last_file, &bytes).unwrap();
        let log = StreamLog::open(fx.dir.path(), fx.opts.clone()).unwrap();
        assert_eq!(log.end_offset(), fx.end_before_last + 2);
        assert_eq!(
            fs::metadata(&fx.last_file).unwrap().len(),
            fx.last_bytes.len() as u64,
            "the file is truncated to the last good record"
        );
        drop(log);
    }
    drop(rt);
}

fn multi_segment_log() -> (tempfile::TempDir, Vec<PathBuf>) {
    let fx = fixture(20, small_segments());
    let files = segment_files(fx.dir.path());
    assert!(files.len() >= 3, "{} segments", files.len());
    (fx.dir, files)
}

fn expect_corrupt(dir: &Path, file: &Path) -> (u64, String) {
    match StreamLog::open(dir, small_segments()) {
        Err(Error::Corrupt { path, position, reason }) => {
            assert_eq!(path, file);
            (position, reason)
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

#[test]
fn damaged_sealed_segment_is_corrupt() {
    let (dir, files) = multi_segment_log();
    let sealed = &files[1];
    let original = fs::read(sealed).unwrap();

    // A flipped payload byte in the middle of the segment.
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(sealed, &bytes).unwrap();
    let (position, reason) = expect_corrupt(dir.path(), sealed);
    assert!(position as usize <= mid && position >= SEGMENT_HEADER_LEN as u64);
    assert!(reason.contains("checksum"), "{reason}");

    // A truncated sealed segment (a torn tail there would be lost acknowledged data).
    fs::write(sealed, &original[..original.len() - 3]).unwrap();
    expect_corrupt(dir.path(), sealed);

    // A damaged segment header.
    let mut bytes = original.clone();
    bytes[2] ^= 0xff;
    fs::write(sealed, &bytes).unwrap();
    let (position, _) = expect_corrupt(dir.path(), sealed);
    assert_eq!(position, 0);

    // Restored, the log opens again.
    fs::write(sealed, &original).unwrap();
    StreamLog::open(dir.path(), small_segments()).unwrap();
}

#[test]
fn missing_middle_segment_is_corrupt() {
    let (dir, files) = multi_segment_log();
    fs::remove_file(&files[1]).unwrap();
    let (_, reason) = expect_corrupt(dir.path(), &files[2]);
    assert!(reason.contains("previous segment ends"), "{reason}");
}

#[test]
fn misnamed_segment_is_corrupt() {
    let (dir, files) = multi_segment_log();
    let last = files.last().unwrap();
    let renamed = last.with_file_name("00000000000000999999.log");
    fs::rename(last, &renamed).unwrap();
    let (position, reason) = expect_corrupt(dir.path(), &renamed);
    assert_eq!(position, 0);
    assert!(reason.contains("base offset"), "{reason}");
}

#[test]
fn corruption_after_open_is_detected_on_read() {
    let (dir, files) = multi_segment_log();
    let log = StreamLog::open(dir.path(), small_segments()).unwrap();
    let mut bytes = fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    fs::write(&files[0], &bytes).unwrap();
    // Find a read that touches the damaged (last) record of the first segment.
    let mut at = log.start_offset();
    let err = loop {
        match log.read(at, 0) {
            Ok(recs) => at = recs[0].end(),
            Err(e) => break e,
        }
        assert!(at < log.end_offset(), "damaged record was never reported");
    };
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if path == &files[0]),
        "{err}"
    );
}

#[test]
fn torn_header_of_empty_last_segment_is_rewritten() {
    let rt = rt();
    let fx = fixture(3, LogOptions::default());
    let end = fx.end_before_last + 2;
    // A crash while rolling: the new file exists but its header is incomplete.
    let name = format!("{end:020}.log");
    let torn = fx.dir.path().join(&name);
    for partial in [&b""[..], &b"FLOE"[..], &[0u8; SEGMENT_HEADER_LEN][..]] {
        fs::write(&torn, partial).unwrap();
        let log = StreamLog::open(fx.dir.path(), fx.opts.clone()).unwrap();
        assert_eq!(log.end_offset(), end);
        assert_eq!(fs::metadata(&torn).unwrap().len(), SEGMENT_HEADER_LEN as u64);
        drop(log);
    }
    let log = StreamLog::open(fx.dir.path(), fx.opts.clone()).unwrap();
    rt.block_on(async {
        let ack = log.append(batch(0..1)).await.unwrap();
        assert_eq!(ack.first_offset, end);
    });
    drop(log);
    assert!(fs::metadata(&torn).unwrap().len() > SEGMENT_HEADER_LEN as u64);
    let log = StreamLog::open(fx.dir.path(), fx.opts.clone()).unwrap();
    assert_eq!(log.end_offset(), end + 1);
    assert_eq!(log.read(0, usize::MAX).unwrap().len(), 4);
}
