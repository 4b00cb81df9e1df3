//! Arrow IPC encoding of record payloads.

use arrow::buffer::{Buffer, MutableBuffer};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::format::RECORD_HEADER_LEN;

/// Encodes `batch` as an Arrow IPC stream (schema, optional dictionaries, the batch, end-of-stream
/// marker) into a new buffer preceded by [`RECORD_HEADER_LEN`] zero bytes, to be filled by the
/// writer once the record's offset is known. `capacity_hint` bounds the initial allocation.
pub(crate) fn encode_frame(batch: &RecordBatch, capacity_hint: usize) -> Result<Vec<u8>, ArrowError> {
    let estimate = batch.get_array_memory_size().saturating_add(1024);
    let mut frame = Vec::with_capacity(RECORD_HEADER_LEN + estimate.min(capacity_hint));
    frame.resize(RECORD_HEADER_LEN, 0);
    let mut writer = StreamWriter::try_new(&mut frame, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(frame)
}

/// Allocates a 64-byte aligned buffer of `len` bytes for a payload to be read into, so that
/// decoding can reference the arrays in place instead of copying them.
pub(crate) fn payload_buffer(len: usize) -> MutableBuffer {
    MutableBuffer::from_len_zeroed(len)
}

/// Decodes the single record batch of an IPC stream payload.
pub(crate) fn decode_payload(payload: MutableBuffer) -> Result<RecordBatch, ArrowError> {
    let mut buffer: Buffer = payload.into();
    let mut decoder = StreamDecoder::new();
    let batch = decoder
        .decode(&mut buffer)?
        .ok_or_else(|| ArrowError::IpcError("record payload holds no record batch".into()))?;
    // Consume the end-of-stream marker (and reject anything else after the batch).
    while !buffer.is_empty() {
        if decoder.decode(&mut buffer)?.is_some() {
            return Err(ArrowError::IpcError(
                "record payload holds more than one record batch".into(),
            ));
        }
    }
    decoder.finish()?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, DictionaryArray, Int64Array, StringArray};
    use arrow::datatypes::Int32Type;
    use std::sync::Arc;

    fn roundtrip(batch: &RecordBatch) -> RecordBatch {
        let frame = encode_frame(batch, usize::MAX).unwrap();
        let payload = &frame[RECORD_HEADER_LEN..];
        let mut buf = payload_buffer(payload.len());
        buf.as_slice_mut().copy_from_slice(payload);
        decode_payload(buf).unwrap()
    }

    #[test]
    fn round_trips_plain_sliced_and_dictionary_batches() {
        let ints: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100));
        let strs: ArrayRef = Arc::new(StringArray::from_iter_values((0..100).map(|i| format!("s{i}"))));
        let batch = RecordBatch::try_from_iter([("i", ints), ("s", strs)]).unwrap();
        assert_eq!(roundtrip(&batch), batch);
        let sliced = batch.slice(17, 20);
        assert_eq!(roundtrip(&sliced), sliced);

        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a", "c"].into_iter().collect();
        let batch = RecordBatch::try_from_iter([("d", Arc::new(dict) as ArrayRef)]).unwrap();
        assert_eq!(roundtrip(&batch), batch);
    }

    #[test]
    fn rejects_garbage() {
        let mut buf = payload_buffer(16);
        buf.as_slice_mut().copy_from_slice(&[0xff; 16]);
        assert!(decode_payload(buf).is_err());
        assert!(decode_payload(payload_buffer(0)).is_err());
    }
}
