//! On-disk format: constants, segment header, record framing and the record decoder used by
//! recovery. See the crate docs for the layout.

use std::io::{self, Read};

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FLOESEG\0";

/// Version of the segment format written by this crate (the only one it reads).
pub const SEGMENT_FORMAT_VERSION: u32 = 1;

/// Size of the segment file header: magic (8) + version (u32) + base offset (u64) + crc32c (u32).
pub const SEGMENT_HEADER_LEN: usize = 24;

/// Size of a record header: len (u32) + crc32c (u32) + offset (u64) + rows (u32) +
/// appended_at_ms (i64).
pub const RECORD_HEADER_LEN: usize = 28;

/// Hard upper bound on a record payload, whatever [`LogOptions::max_record_bytes`] says.
///
/// Recovery treats a length field above it as garbage instead of trusting it, so a damaged
/// header can never make the decoder read (or allocate) gigabytes.
///
/// [`LogOptions::max_record_bytes`]: crate::LogOptions::max_record_bytes
pub const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// Default [`LogOptions::segment_bytes`](crate::LogOptions::segment_bytes): 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Default [`LogOptions::max_record_bytes`](crate::LogOptions::max_record_bytes): 64 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 << 20;

/// The writer stops draining its queue into one commit group once the group holds this many
/// payload bytes (it always takes at least one record), bounding how far a segment can grow past
/// `segment_bytes` and how much one fsync covers.
pub const MAX_GROUP_BYTES: usize = 16 << 20;

/// Bytes of encoded records that may be queued for (or inside) the writer at once; appends
/// beyond it wait, giving back-pressure instead of unbounded memory growth. A single record
/// larger than this is admitted alone.
pub const MAX_INFLIGHT_BYTES: usize = 256 << 20;

/// File name extension of segment files.
pub const SEGMENT_FILE_EXTENSION: &str = "log";

/// Number of decimal digits (zero-padded) of the base offset in a segment file name.
pub const SEGMENT_NAME_DIGITS: usize = 20;

/// Name of the lock file held (flock, exclusive) by the process that has the log open.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Name of the file holding the log's identity: a random id written when the log is created (or
/// first opened by a floe that knows it). Readers record it with their positions, so a folder
/// replaced by another log — even a longer one — is told apart from the log they read.
pub const LOG_ID_FILE_NAME: &str = "LOG_ID";

/// File name of the segment whose first record has offset `base`.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:0width$}.{SEGMENT_FILE_EXTENSION}", width = SEGMENT_NAME_DIGITS)
}

/// Inverse of [`segment_file_name`]; `None` for any other file name.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_FILE_EXTENSION)?.strip_suffix('.')?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Encodes the segment header for a segment whose first offset is `base`.
pub(crate) fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header read from a file named for `expected_base`.
pub(crate) fn check_segment_header(h: &[u8], expected_base: u64) -> Result<(), String> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "segment header truncated ({} of {SEGMENT_HEADER_LEN} bytes)",
            h.len()
        ));
    }
    if h[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let stored_crc = u32::from_le_bytes(h[20..24].try_into().expect("4 bytes"));
    if crc32c::crc32c(&h[0..20]) != stored_crc {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != SEGMENT_FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    let base = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
    if base != expected_base {
        return Err(format!(
            "segment header says base offset {base}, file name says {expected_base}"
        ));
    }
    Ok(())
}

/// Decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// Payload length in bytes (the bytes following the header).
    pub len: u32,
    /// crc32c over header bytes 8..28 followed by the payload.
    pub crc: u32,
    /// Offset of the record's first row.
    pub offset: u64,
    /// Number of rows in the batch.
    pub rows: u32,
    /// Wall-clock time (ms since the Unix epoch) of the commit that wrote the record.
    pub appended_at_ms: i64,
}

impl RecordHeader {
    pub(crate) fn decode(h: &[u8; RECORD_HEADER_LEN]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        RecordHeader {
            len: u32_at(0),
            crc: u32_at(4),
            offset: u64_at(8),
            rows: u32_at(16),
            appended_at_ms: u64_at(20) as i64,
        }
    }
}

/// Checksum of a record: crc32c over header bytes 8..28 followed by the payload, computed in one
/// pass. (Combining a separately computed payload crc with `crc32c_combine` costs more than
/// hashing the payload again: tens of microseconds per record in the profile.)
pub(crate) fn record_crc(header: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[8..]), payload)
}

/// Fills the first [`RECORD_HEADER_LEN`] bytes of `frame` (header space followed by the
/// payload) with a complete header, checksum included.
pub(crate) fn fill_record_header(frame: &mut [u8], offset: u64, rows: u32, appended_at_ms: i64) {
    let payload_len = frame.len() - RECORD_HEADER_LEN;
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&offset.to_le_bytes());
    h[16..20].copy_from_slice(&rows.to_le_bytes());
    h[20..28].copy_from_slice(&appended_at_ms.to_le_bytes());
    let crc = record_crc(&h, &frame[RECORD_HEADER_LEN..]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    frame[..RECORD_HEADER_LEN].copy_from_slice(&h);
}

/// Location of one record inside a segment file; the in-memory index is a `Vec` of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset of the first row.
    pub offset: u64,
    /// Byte position of the record header in the file.
    pub pos: u64,
    /// Payload length.
    pub len: u32,
    /// Row count.
    pub rows: u32,
}

impl IndexEntry {
    pub(crate) fn end(&self) -> u64 {
        self.offset + u64::from(self.rows)
    }
}

/// Why the decoder stopped before the end of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// The data ends inside a record or a record fails its checksum: what an interrupted
    /// (unacknowledged) write leaves behind. Cut in the last segment, corruption elsewhere.
    Torn { position: u64, reason: String },
    /// A checksum-valid record breaks an invariant (offset gap, zero rows): never a torn write.
    Invalid { position: u64, reason: String },
}

/// Result of decoding the records of one segment.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Every valid record, in order.
    pub entries: Vec<IndexEntry>,
    /// Byte position just past the last valid record.
    pub valid_len: u64,
    /// Offset following the last valid record (the start offset if there is none).
    pub end_offset: u64,
    /// Set when decoding stopped before `data_len`.
    pub stop: Option<ScanStop>,
}

/// Decodes records from `reader`, which yields the file bytes starting at position `start_pos`
/// and holds `data_len - start_pos` bytes. Records must be contiguous from `first_offset`.
///
/// Never trusts a header before its checksum is verified except to bound the read (the length is
/// checked against [`MAX_PAYLOAD_BYTES`] and the remaining bytes first). I/O errors other than an
/// unexpected end of data are returned as such.
pub(crate) fn scan_records<R: Read>(
    mut reader: R,
    start_pos: u64,
    data_len: u64,
    first_offset: u64,
) -> io::Result<Scan> {
    let mut scan = Scan {
        entries: Vec::new(),
        valid_len: start_pos,
        end_offset: first_offset,
        stop: None,
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let mut pos = start_pos;
    let torn = |position: u64, reason: &str| {
        Some(ScanStop::Torn {
            position,
            reason: reason.to_string(),
        })
    };
    while pos < data_len {
        let remaining = data_len - pos;
        if remaining < RECORD_HEADER_LEN as u64 {
            scan.stop = torn(pos, "truncated record header");
            break;
        }
        let mut hb = [0u8; RECORD_HEADER_LEN];
        match reader.read_exact(&mut hb) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                scan.stop = torn(pos, "truncated record header");
                break;
            }
            Err(e) => return Err(e),
        }
        let h = RecordHeader::decode(&hb);
        let len = h.len as usize;
        if len > MAX_PAYLOAD_BYTES {
            scan.stop = torn(pos, "record length field out of range");
            break;
        }
        if remaining - (RECORD_HEADER_LEN as u64) < len as u64 {
            scan.stop = torn(pos, "truncated record payload");
            break;
        }
        // Checksum the payload in chunks: constant memory whatever the record size.
        // Seeded with the header bytes the checksum covers, so no combine step is needed.
        let mut crc = crc32c::crc32c(&hb[8..]);
        let mut left = len;
        let mut eof = false;
        while left > 0 {
            let n = left.min(chunk.len());
            match reader.read_exact(&mut chunk[..n]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    eof = true;
                    break;
                }
                Err(e) => return Err(e),
            }
            crc = crc32c::crc32c_append(crc, &chunk[..n]);
            left -= n;
        }
        if eof {
            scan.stop = torn(pos, "truncated record payload");
            break;
        }
        if crc != h.crc {
            scan.stop = torn(pos, "record checksum mismatch");
            break;
        }
        if h.offset != scan.end_offset {
            scan.stop = Some(ScanStop::Invalid {
                position: pos,
                reason: format!(
                    "record has offset {}, expected {} (offsets must be contiguous)",
                    h.offset, scan.end_offset
                ),
            });
            break;
        }
        if h.rows == 0 {
            scan.stop = Some(ScanStop::Invalid {
                position: pos,
                reason: "record with zero rows".into(),
            });
            break;
        }
        scan.entries.push(IndexEntry {
            offset: h.offset,
            pos,
            len: h.len,
            rows: h.rows,
        });
        pos += (RECORD_HEADER_LEN + len) as u64;
        scan.valid_len = pos;
        scan.end_offset = h.offset + u64::from(h.rows);
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(offset: u64, rows: u32, ts: i64, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; RECORD_HEADER_LEN];
        f.extend_from_slice(payload);
        fill_record_header(&mut f, offset, rows, ts);
        f
    }

    /// A segment (header + records) with records of the given (rows, payload length).
    fn segment(base: u64, records: &[(u32, usize)]) -> (Vec<u8>, Vec<IndexEntry>) {
        let mut data = encode_segment_header(base).to_vec();
        let mut entries = Vec::new();
        let mut offset = base;
        for (i, &(rows, len)) in records.iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
            entries.push(IndexEntry {
                offset,
                pos: data.len() as u64,
                len: len as u32,
                rows,
            });
            data.extend_from_slice(&frame(offset, rows, 1_700_000_000_000 + i as i64, &payload));
            offset += u64::from(rows);
        }
        (data, entries)
    }

    fn scan_bytes(data: &[u8], base: u64) -> Result<Scan, String> {
        check_segment_header(&data[..data.len().min(SEGMENT_HEADER_LEN)], base)?;
        Ok(scan_records(
            &data[SEGMENT_HEADER_LEN..],
            SEGMENT_HEADER_LEN as u64,
            data.len() as u64,
            base,
        )
        .expect("reading a slice cannot fail"))
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("0000000000000000042.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.log.tmp"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.log"), None);
        assert_eq!(parse_segment_file_name("LOCK"), None);
    }

    #[test]
    fn segment_header_checks() {
        let h = encode_segment_header(7);
        assert_eq!(check_segment_header(&h, 7), Ok(()));
        assert!(check_segment_header(&h, 8).is_err());
        assert!(check_segment_header(&h[..10], 7).is_err());
        for i in 0..SEGMENT_HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x01;
            assert!(check_segment_header(&bad, 7).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn header_round_trip() {
        let f = frame(10, 3, -5, b"hello");
        let h = RecordHeader::decode(f[..RECORD_HEADER_LEN].try_into().unwrap());
        assert_eq!(h.len, 5);
        assert_eq!(h.offset, 10);
        assert_eq!(h.rows, 3);
        assert_eq!(h.appended_at_ms, -5);
        // The crc covers everything after the crc field.
        assert_eq!(h.crc, crc32c::crc32c(&f[8..]));
    }

    #[test]
    fn scans_valid_segment() {
        let (data, entries) = segment(100, &[(1, 10), (5, 0), (2, 300)]);
        let scan = scan_bytes(&data, 100).unwrap();
        assert_eq!(scan.entries, entries);
        assert_eq!(scan.stop, None);
        assert_eq!(scan.valid_len, data.len() as u64);
        assert_eq!(scan.end_offset, 108);
    }

    #[test]
    fn gap_and_zero_rows_are_invalid_not_torn() {
        let mut data = encode_segment_header(0).to_vec();
        data.extend(frame(0, 2, 0, b"a"));
        data.extend(frame(3, 1, 0, b"b"));
        let scan = scan_bytes(&data, 0).unwrap();
        assert_eq!(scan.entries.len(), 1);
        assert!(matches!(scan.stop, Some(ScanStop::Invalid { .. })));

        let mut data = encode_segment_header(0).to_vec();
        data.extend(frame(0, 0, 0, b"a"));
        let scan = scan_bytes(&data, 0).unwrap();
        assert!(scan.entries.is_empty());
        assert!(matches!(scan.stop, Some(ScanStop::Invalid { .. })));
    }

    #[test]
    fn huge_length_field_is_torn() {
        let mut data = encode_segment_header(0).to_vec();
        let mut f = frame(0, 1, 0, b"abc");
        f[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        data.extend(f);
        let scan = scan_bytes(&data, 0).unwrap();
        assert!(matches!(scan.stop, Some(ScanStop::Torn { .. })));
        assert_eq!(scan.valid_len, SEGMENT_HEADER_LEN as u64);
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip { at: usize, mask: u8 },
        Set { at: usize, value: u8 },
        Truncate { at: usize },
        Append { bytes: Vec<u8> },
        Zero { at: usize, len: usize },
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
            (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
            any::<usize>().prop_map(|at| Mutation::Truncate { at }),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|bytes| Mutation::Append { bytes }),
            (any::<usize>(), 0usize..64).prop_map(|(at, len)| Mutation::Zero { at, len }),
        ]
    }

    fn apply(data: &mut Vec<u8>, m: &Mutation) {
        match m {
            Mutation::Flip { at, mask } if !data.is_empty() => {
                let i = at % data.len();
                data[i] ^= mask;
            }
            Mutation::Set { at, value } if !data.is_empty() => {
                let i = at % data.len();
                data[i] = *value;
            }
            Mutation::Truncate { at } => {
                let n = at % (data.len() + 1);
                data.truncate(n);
            }
            Mutation::Append { bytes } => data.extend_from_slice(bytes),
            Mutation::Zero { at, len } if !data.is_empty() => {
                let i = at % data.len();
                let j = (i + len).min(data.len());
                data[i..j].fill(0);
            }
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary damage never panics the decoder, and every record it yields has a valid
        /// checksum, contiguous offsets, and lies inside the data.
        #[test]
        fn decoder_survives_mutations(
            records in proptest::collection::vec((1u32..50, 0usize..200), 0..8),
            base in 0u64..1_000_000,
            mutations in proptest::collection::vec(mutation(), 0..6),
        ) {
            let (original, original_entries) = segment(base, &records);
            let mut data = original.clone();
            for m in &mutations {
                apply(&mut data, m);
            }
            if let Ok(scan) = scan_bytes(&data, base) {
                let mut expected_offset = base;
                let mut expected_pos = SEGMENT_HEADER_LEN as u64;
                for e in &scan.entries {
                    let start = e.pos as usize;
                    let end = start + RECORD_HEADER_LEN + e.len as usize;
                    prop_assert!(end <= data.len());
                    let h = RecordHeader::decode(data[start..start + RECORD_HEADER_LEN].try_into().unwrap());
                    prop_assert_eq!(h.crc, crc32c::crc32c(&data[start + 8..end]));
                    prop_assert_eq!(e.offset, expected_offset);
                    prop_assert_eq!(e.pos, expected_pos);
                    prop_assert!(e.rows > 0);
                    expected_offset = e.end();
                    expected_pos = end as u64;
                }
                prop_assert_eq!(scan.valid_len, expected_pos);
                prop_assert_eq!(scan.end_offset, expected_offset);
                prop_assert_eq!(scan.stop.is_none(), scan.valid_len == data.len() as u64);
                // A damaged record is never accepted: what survives is a prefix of the original
                // records, byte for byte (a forged crc32c match is a 2^-32 event).
                prop_assert!(scan.entries.len() <= original_entries.len());
                for (got, want) in scan.entries.iter().zip(&original_entries) {
                    prop_assert_eq!(got, want);
                    let (s, e) = (got.pos as usize, got.pos as usize + RECORD_HEADER_LEN + got.len as usize);
                    prop_assert_eq!(&data[s..e], &original[s..e]);
                }
            }
        }

        /// Cutting a valid segment anywhere yields exactly the records that fit entirely.
        #[test]
        fn truncation_keeps_whole_records(
            records in proptest::collection::vec((1u32..50, 0usize..100), 1..6),
            cut in any::<usize>(),
        ) {
            let (data, entries) = segment(0, &records);
            let cut = SEGMENT_HEADER_LEN + cut % (data.len() - SEGMENT_HEADER_LEN + 1);
            let scan = scan_bytes(&data[..cut], 0).unwrap();
            let whole: Vec<_> = entries
                .iter()
                .copied()
                .filter(|e| e.pos as usize + RECORD_HEADER_LEN + e.len as usize <= cut)
                .collect();
            prop_assert_eq!(&scan.entries, &whole);
            prop_assert_eq!(scan.stop.is_some(), scan.valid_len != cut as u64);
        }
    }
}
