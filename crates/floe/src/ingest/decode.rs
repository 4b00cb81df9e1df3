//! JSON rows → one Arrow `RecordBatch`, validated against the stream's schema in one pass.
//!
//! The body is first split into rows without copying (a JSON array becomes `Vec<&RawValue>`,
//! NDJSON is split on newlines); each row is then deserialized by a `DeserializeSeed` that writes
//! straight into per-column Arrow builders — no `serde_json::Value`, no per-row allocation for
//! strings without escapes. A row that fails records `{row, field, message}`; the request is then
//! rejected whole (the builders are discarded), so nothing of it reaches the log.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    ListArray, StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use base64::Engine;
use serde::Serialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::schema::{arrow_schema, type_name};
use crate::config::{FieldConfig, FieldType, UnknownFields};

/// One invalid row: which row (0-based position in the request), which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowError {
    /// Row index within the request.
    pub row: usize,
    /// Dotted field path, or empty when the row as a whole is wrong.
    pub field: String,
    /// What is wrong, with expected and found types.
    pub message: String,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON at all (or not an array/NDJSON).
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// The body holds no rows.
    #[error("the request holds no rows")]
    Empty,
    /// Some rows are invalid; `total` counts all invalid rows, `rows` lists the first ones.
    #[error("{total} of {count} rows are invalid")]
    Rows {
        /// Rows in the request.
        count: usize,
        /// Invalid rows in total.
        total: usize,
        /// The first invalid rows.
        rows: Vec<RowError>,
    },
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Decide from the first non-blank byte: `[` array, else NDJSON.
    Auto,
    /// Newline-delimited JSON.
    Ndjson,
}

/// The outcome of [`RowDecoder::decode_lenient`].
#[derive(Debug)]
pub struct Lenient {
    /// Rows in the request.
    pub rows: usize,
    /// The valid rows, if any.
    pub batch: Option<RecordBatch>,
    /// Every invalid row: its error and its raw JSON text.
    pub invalid: Vec<(RowError, String)>,
}

/// Splits a body into rows without copying: a JSON array's elements, or NDJSON lines.
fn split_rows(body: &[u8], framing: Framing) -> Result<Vec<&str>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::Malformed(format!("body is not UTF-8: {e}")))?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    let rows: Vec<&str> = match (framing, first) {
        (_, None) => return Err(DecodeError::Empty),
        (Framing::Auto, Some(b'[')) => {
            let raw: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
            raw.into_iter().map(RawValue::get).collect()
        }
        _ => text
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.trim().is_empty())
            .collect(),
    };
    if rows.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(rows)
}

/// The elements of a JSON array body found by a structural scan alone, without parsing them:
/// strings are skipped by their quotes and escapes, objects and arrays by their depth, and
/// between the elements only `,` and whitespace are taken. `None` when the body is not an array
/// or the scan finds anything else (the exact path then decides, and names the error).
///
/// The elements are not checked here: each is parsed whole when its row is decoded, and a row
/// must be exactly one JSON value. So when the scan succeeds and every row decodes, the body was
/// a valid JSON array with exactly these elements — what `Vec<&RawValue>` would have given,
/// without a first full parse of the body. Any row error sends the body down the exact path
/// (which reproduces the errors as before, malformed bodies as `Malformed`).
fn scan_array(text: &str) -> Option<Vec<&str>> {
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    let mut i = ws(0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i = ws(i + 1);
    // A row is at least `{}`; a body of N bytes holds at most N/3 of them.
    let mut rows = Vec::with_capacity((b.len() / 128).max(1));
    if b.get(i) == Some(&b']') {
        return (ws(i + 1) == b.len()).then_some(rows);
    }
    loop {
        let end = scan_value(b, i)?;
        rows.push(&text[i..end]);
        i = ws(end);
        match b.get(i) {
            Some(b',') => i = ws(i + 1),
            Some(b']') => return (ws(i + 1) == b.len()).then_some(rows),
            _ => return None,
        }
    }
}

/// The end of the JSON value starting at `b[i]` (not validated: see [`scan_array`]).
fn scan_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => scan_string(b, i + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = scan_string(b, j + 1)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        // A number, true, false, null: up to the next delimiter.
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The index after the closing quote of a string whose content starts at `b[i]`.
fn scan_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[at] == b'"' {
            return Some(at + 1);
        }
        // A backslash escapes the next byte (`\"`, `\\`, `\u…`: the rest is ordinary text).
        i = at + 2;
    }
}

/// Integers with an absolute value below this are epoch **milliseconds**; from it on, epoch
/// **microseconds**. 10^14 ms is the year 5138; 10^14 µs is 1973-03-03: so millisecond values
/// of any real date, and microsecond values from March 1973 on, are told apart unambiguously.
pub const TIMESTAMP_MICROS_FROM: i64 = 100_000_000_000_000;

/// A reusable decoder for one stream schema.
#[derive(Debug)]
pub struct RowDecoder {
    fields: Arc<[Spec]>,
    schema: SchemaRef,
    index: FieldIndex,
    unknown: UnknownFields,
    max_row_bytes: usize,
    max_errors: usize,
    raw_rows: bool,
}

/// A field with its nested specs resolved once.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    ty: FieldType,
    required: bool,
    items: Option<Box<Spec>>,
    fields: Vec<Spec>,
    arrow: Field,
}

impl Spec {
    fn new(f: &FieldConfig) -> Self {
        Spec {
            name: f.name.clone(),
            ty: f.ty,
            required: f.required,
            items: f.items.as_deref().map(|i| {
                let mut i = i.clone();
                i.name = "element".into();
                Box::new(Spec::new(&i))
            }),
            fields: f.fields.iter().flatten().map(Spec::new).collect(),
            arrow: super::schema::arrow_field(f),
        }
    }
}

impl RowDecoder {
    /// A decoder for `fields`. With `raw_rows` (an unstructured stream) every row is stored
    /// whole as JSON text in the single `value` column.
    pub fn new(
        fields: &[FieldConfig],
        unknown: UnknownFields,
        max_row_bytes: usize,
        max_errors: usize,
        raw_rows: bool,
    ) -> Self {
        let specs: Vec<Spec> = fields.iter().map(Spec::new).collect();
        let index = FieldIndex::new(specs.iter().map(|s| s.name.as_str()));
        RowDecoder {
            fields: specs.into(),
            schema: arrow_schema(fields),
            index,
            unknown,
            max_row_bytes,
            max_errors,
            raw_rows,
        }
    }

    /// The Arrow schema of decoded batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The batch of a JSON array body whose rows are all valid, through [`scan_array`]; `None`
    /// for anything else (another framing, a row error, a body the scan does not take).
    fn decode_fast(&self, body: &[u8], framing: Framing) -> Option<RecordBatch> {
        if framing != Framing::Auto {
            return None;
        }
        let rows = scan_array(std::str::from_utf8(body).ok()?)?;
        if rows.is_empty() {
            return None;
        }
        let mut failed = false;
        let batch = self.decode_rows(&rows, |_, _| failed = true).ok()?;
        (!failed).then_some(batch)
    }

    /// Decodes a whole body into one batch, or says exactly what is wrong.
    pub fn decode(&self, body: &[u8], framing: Framing) -> Result<RecordBatch, DecodeError> {
        match self.decode_fast(body, framing) {
            Some(batch) => Ok(batch),
            None => self.decode_exact(body, framing),
        }
    }

    /// [`decode`](Self::decode) without the fast path: the body split by a full parse first.
    fn decode_exact(&self, body: &[u8], framing: Framing) -> Result<RecordBatch, DecodeError> {
        let rows = split_rows(body, framing)?;
        let mut errors = Vec::new();
        let mut total_errors = 0usize;
        let batch = self.decode_rows(&rows, |e, _| {
            total_errors += 1;
            if errors.len() < self.max_errors {
                errors.push(e);
            }
        });
        if total_errors > 0 {
            return Err(DecodeError::Rows {
                count: rows.len(),
                total: total_errors,
                rows: errors,
            });
        }
        batch
    }

    /// Decodes the valid rows of a body and returns the invalid ones apart, each with its raw
    /// text (for `on_invalid = "dead_letter"`). Only a body that is not JSON at all, or holds no
    /// rows, is an error. Invalid rows cost a second pass over the valid ones (a failed row may
    /// have filled some columns before its error).
    pub fn decode_lenient(&self, body: &[u8], framing: Framing) -> Result<Lenient, DecodeError> {
        match self.decode_fast(body, framing) {
            Some(batch) => Ok(Lenient {
                rows: batch.num_rows(),
                batch: Some(batch),
                invalid: Vec::new(),
            }),
            None => self.decode_lenient_exact(body, framing),
        }
    }

    /// [`decode_lenient`](Self::decode_lenient) without the fast path.
    fn decode_lenient_exact(&self, body: &[u8], framing: Framing) -> Result<Lenient, DecodeError> {
        let rows = split_rows(body, framing)?;
        let mut invalid: Vec<(RowError, String)> = Vec::new();
        let batch = self.decode_rows(&rows, |e, raw| invalid.push((e, raw.to_string())));
        if invalid.is_empty() {
            return Ok(Lenient {
                rows: rows.len(),
                batch: Some(batch?),
                invalid,
            });
        }
        let bad: std::collections::HashSet<usize> = invalid.iter().map(|(e, _)| e.row).collect();
        let valid: Vec<&str> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| !bad.contains(i))
            .map(|(_, r)| *r)
            .collect();
        let batch = if valid.is_empty() {
            None
        } else {
            let mut again = 0usize;
            let b = self.decode_rows(&valid, |_, _| again += 1);
            if again > 0 {
                return Err(DecodeError::Malformed(
                    "a row decoded differently on the second pass (a bug in floe)".into(),
                ));
            }
            Some(b?)
        };
        Ok(Lenient {
            rows: rows.len(),
            batch,
            invalid,
        })
    }

    /// Decodes `rows`, calling `on_error` for each invalid one. With any invalid row the
    /// builders are discarded and the result is a `Rows` error without details (the caller
    /// collected them).
    fn decode_rows<'r>(
        &self,
        rows: &[&'r str],
        mut on_error: impl FnMut(RowError, &'r str),
    ) -> Result<RecordBatch, DecodeError> {
        let mut cols: Vec<Col> = self.fields.iter().map(|s| Col::new(s, rows.len())).collect();
        let mut seen = vec![false; self.fields.len()];
        let mut failed = 0usize;
        for (i, row) in rows.iter().enumerate() {
            let result = if row.len() > self.max_row_bytes {
                Err(RowError {
                    row: i,
                    field: String::new(),
                    message: format!(
                        "row is {} bytes, over the limit limits.max_row_bytes = {}",
                        row.len(),
                        self.max_row_bytes
                    ),
                })
            } else if self.raw_rows {
                self.decode_raw(row, i, &mut cols)
            } else {
                self.decode_row(row, i, &mut cols, &mut seen)
            };
            if let Err(e) = result {
                failed += 1;
                on_error(e, row);
            }
        }
        if failed > 0 {
            return Err(DecodeError::Rows {
                count: rows.len(),
                total: failed,
                rows: vec![],
            });
        }
        let arrays: Vec<ArrayRef> = cols
            .into_iter()
            .zip(self.fields.iter())
            .map(|(c, s)| c.finish(s))
            .collect();
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| DecodeError::Rows {
            count: rows.len(),
            total: rows.len(),
            rows: vec![RowError {
                row: 0,
                field: String::new(),
                message: e.to_string(),
            }],
        })
    }

    fn decode_raw(&self, row: &str, i: usize, cols: &mut [Col]) -> Result<(), RowError> {
        let raw: &RawValue = serde_json::from_str(row).map_err(|e| RowError {
            row: i,
            field: String::new(),
            message: format!("malformed JSON: {e}"),
        })?;
        match &mut cols[0] {
            Col::Str(b) => b.append_value(raw.get()),
            _ => unreachable!("unstructured streams have one json column"),
        }
        Ok(())
    }

    fn decode_row(&self, row: &str, i: usize, cols: &mut [Col], seen: &mut [bool]) -> Result<(), RowError> {
        seen.iter_mut().for_each(|s| *s = false);
        let mut failed_field: Option<String> = None;
        let mut de = serde_json::Deserializer::from_str(row);
        let seed = RowSeed {
            dec: self,
            cols,
            seen,
            failed_field: &mut failed_field,
        };
        let result = seed.deserialize(&mut de).and_then(|()| de.end());
        result.map_err(|e| RowError {
            row: i,
            field: failed_field.take().unwrap_or_default(),
            message: clean_message(&e),
        })
    }
}

/// serde_json appends " at line L column C"; for a one-row document the column helps, keep it.
fn clean_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    if e.is_data() {
        // Our own messages: drop the position, the field names where.
        match s.rfind(" at line ") {
            Some(p) => s[..p].to_string(),
            None => s,
        }
    } else {
        format!("malformed JSON: {s}")
    }
}

/// A column under construction.
enum Col {
    Str(StringBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMicrosecondBuilder),
    Bin(BinaryBuilder),
    List {
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<Col>,
    },
    Struct {
        cols: Vec<Col>,
        nulls: NullBufferBuilder,
        len: usize,
    },
}

impl Col {
    fn new(spec: &Spec, capacity: usize) -> Col {
        match spec.ty {
            FieldType::String | FieldType::Json => Col::Str(StringBuilder::with_capacity(capacity, capacity * 16)),
            FieldType::Int32 => Col::I32(Int32Builder::with_capacity(capacity)),
            FieldType::Int64 => Col::I64(Int64Builder::with_capacity(capacity)),
            FieldType::Float32 => Col::F32(Float32Builder::with_capacity(capacity)),
            FieldType::Float64 => Col::F64(Float64Builder::with_capacity(capacity)),
            FieldType::Bool => Col::Bool(BooleanBuilder::with_capacity(capacity)),
            FieldType::Timestamp => Col::Ts(TimestampMicrosecondBuilder::with_capacity(capacity)),
            FieldType::Binary => Col::Bin(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            FieldType::List => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Col::List {
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    child: Box::new(Col::new(spec.items.as_deref().expect("list items"), capacity)),
                }
            }
            FieldType::Struct => Col::Struct {
                cols: spec.fields.iter().map(|f| Col::new(f, capacity)).collect(),
                nulls: NullBufferBuilder::new(capacity),
                len: 0,
            },
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::Str(b) => b.len(),
            Col::I32(b) => b.len(),
            Col::I64(b) => b.len(),
            Col::F32(b) => b.len(),
            Col::F64(b) => b.len(),
            Col::Bool(b) => b.len(),
            Col::Ts(b) => b.len(),
            Col::Bin(b) => b.len(),
            Col::List { offsets, .. } => offsets.len() - 1,
            Col::Struct { len, .. } => *len,
        }
    }

    fn append_null(&mut self, spec: &Spec) {
        match self {
            Col::Str(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
            Col::Bin(b) => b.append_null(),
            Col::List { offsets, nulls, .. } => {
                offsets.push(*offsets.last().expect("offsets start with 0"));
                nulls.append_null();
            }
            Col::Struct { cols, nulls, len } => {
                // Children get a placeholder slot; the parent's null masks it.
                for (c, s) in cols.iter_mut().zip(&spec.fields) {
                    c.append_placeholder(s);
                }
                nulls.append_null();
                *len += 1;
            }
        }
    }

    /// A slot under a null parent: null, or a default for non-nullable primitives.
    fn append_placeholder(&mut self, spec: &Spec) {
        if !spec.required {
            return self.append_null(spec);
        }
        match self {
            Col::Str(b) => b.append_value(""),
            Col::I32(b) => b.append_value(0),
            Col::I64(b) => b.append_value(0),
            Col::F32(b) => b.append_value(0.0),
            Col::F64(b) => b.append_value(0.0),
            Col::Bool(b) => b.append_value(false),
            Col::Ts(b) => b.append_value(0),
            Col::Bin(b) => b.append_value(b""),
            Col::List { offsets, nulls, .. } => {
                offsets.push(*offsets.last().expect("offsets start with 0"));
                nulls.append_non_null();
            }
            Col::Struct { cols, nulls, len } => {
                for (c, s) in cols.iter_mut().zip(&spec.fields) {
                    c.append_placeholder(s);
                }
                nulls.append_non_null();
                *len += 1;
            }
        }
    }

    fn finish(self, spec: &Spec) -> ArrayRef {
        match self {
            Col::Str(mut b) => Arc::new(b.finish()),
            Col::I32(mut b) => Arc::new(b.finish()),
            Col::I64(mut b) => Arc::new(b.finish()),
            Col::F32(mut b) => Arc::new(b.finish()),
            Col::F64(mut b) => Arc::new(b.finish()),
            Col::Bool(mut b) => Arc::new(b.finish()),
            Col::Ts(mut b) => Arc::new(b.finish().with_timezone("UTC")),
            Col::Bin(mut b) => Arc::new(b.finish()),
            Col::List {
                offsets,
                mut nulls,
                child,
            } => {
                let item = spec.items.as_deref().expect("list items");
                let DataType::List(field) = spec.arrow.data_type() else {
                    unreachable!()
                };
                let values = child.finish(item);
                Arc::new(ListArray::new(
                    field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    values,
                    nulls.finish(),
                ))
            }
            Col::Struct { cols, mut nulls, .. } => {
                let DataType::Struct(fields) = spec.arrow.data_type() else {
                    unreachable!()
                };
                let arrays = cols.into_iter().zip(&spec.fields).map(|(c, s)| c.finish(s)).collect();
                Arc::new(StructArray::new(fields.clone(), arrays, nulls.finish()))
            }
        }
    }
}

/// Deserializes one row (a JSON object) into the top-level columns.
struct RowSeed<'a> {
    dec: &'a RowDecoder,
    cols: &'a mut [Col],
    seen: &'a mut [bool],
    failed_field: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object (one row)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let dec = self.dec;
        while let Some(key) = map.next_key_seed(KeySeed(&dec.index))? {
            match key {
                Key::Known(i) => {
                    let spec = &dec.fields[i];
                    if self.seen[i] {
                        *self.failed_field = Some(spec.name.clone());
                        return Err(de::Error::custom("field appears twice in the row"));
                    }
                    self.seen[i] = true;
                    let mut path = None;
                    let seed = ValueSeed {
                        spec,
                        col: &mut self.cols[i],
                        failed: &mut path,
                    };
                    if let Err(e) = map.next_value_seed(seed) {
                        *self.failed_field = Some(match path {
                            Some(p) => format!("{}.{p}", spec.name),
                            None => spec.name.clone(),
                        });
                        return Err(e);
                    }
                }
                Key::Unknown(name) => match dec.unknown {
                    UnknownFields::Drop => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    UnknownFields::Reject => {
                        *self.failed_field = Some(name.clone());
                        return Err(de::Error::custom(format!(
                            "field {name:?} is not in the stream's schema (unknown_fields = \"reject\")"
                        )));
                    }
                },
            }
        }
        for (i, spec) in dec.fields.iter().enumerate() {
            if !self.seen[i] {
                if spec.required {
                    *self.failed_field = Some(spec.name.clone());
                    return Err(de::Error::custom(format!(
                        "required field is missing (expected {})",
                        type_name(spec.ty)
                    )));
                }
                self.cols[i].append_null(spec);
            }
        }
        Ok(())
    }
}

enum Key {
    Known(usize),
    Unknown(String),
}

/// A row's top-level field names → their column. A short list is searched in order (a few
/// length-and-bytes compares beat hashing the key); a long one through a map.
#[derive(Debug)]
enum FieldIndex {
    Few(Vec<Box<str>>),
    Many(HashMap<String, usize>),
}

/// Up to this many fields are searched in order.
const FEW_FIELDS: usize = 24;

impl FieldIndex {
    fn new<'a>(names: impl Iterator<Item = &'a str>) -> Self {
        let names: Vec<&str> = names.collect();
        if names.len() <= FEW_FIELDS {
            FieldIndex::Few(names.into_iter().map(Box::from).collect())
        } else {
            FieldIndex::Many(names.into_iter().enumerate().map(|(i, n)| (n.to_string(), i)).collect())
        }
    }

    fn get(&self, key: &str) -> Option<usize> {
        match self {
            FieldIndex::Few(names) => names.iter().position(|n| n.len() == key.len() && **n == *key),
            FieldIndex::Many(map) => map.get(key).copied(),
        }
    }
}

struct KeySeed<'a>(&'a FieldIndex);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match self.0.get(v) {
            Some(i) => Key::Known(i),
            None => Key::Unknown(v.to_string()),
        })
    }
}

/// Deserializes one value into a column; on error `failed` receives the nested path below it.
struct ValueSeed<'a> {
    spec: &'a Spec,
    col: &'a mut Col,
    failed: &'a mut Option<String>,
}

fn found<E: de::Error>(spec: &Spec, what: fmt::Arguments) -> E {
    E::custom(format!("expected {}, found {what}", type_name(spec.ty)))
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.spec.ty == FieldType::Json {
            let raw = <&RawValue as serde::Deserialize>::deserialize(d)?;
            let Col::Str(b) = self.col else { unreachable!() };
            if raw.get() == "null" {
                if self.spec.required {
                    return Err(de::Error::custom("required field is null"));
                }
                b.append_null();
            } else {
                b.append_value(raw.get());
            }
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(type_name(self.spec.ty))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.spec.required {
            return Err(E::custom(format!(
                "required field is null (expected {})",
                type_name(self.spec.ty)
            )));
        }
        self.col.append_null(self.spec);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match self.col {
            Col::Bool(b) => b.append_value(v),
            _ => return Err(found(self.spec, format_args!("bool {v}"))),
        }
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match self.col {
            Col::I64(b) => b.append_value(v),
            Col::I32(b) => match i32::try_from(v) {
                Ok(x) => b.append_value(x),
                Err(_) => return Err(E::custom(format!("expected int32, found {v} (out of range)"))),
            },
            Col::F64(b) => b.append_value(v as f64),
            Col::F32(b) => b.append_value(v as f32),
            Col::Ts(b) if v.unsigned_abs() >= TIMESTAMP_MICROS_FROM as u64 => b.append_value(v),
            Col::Ts(b) => b.append_value(v * 1000),
            _ => return Err(found(self.spec, format_args!("number {v}"))),
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(x) => self.visit_i64(x),
            Err(_) => match self.col {
                Col::F64(b) => {
                    b.append_value(v as f64);
                    Ok(())
                }
                _ => Err(E::custom(format!(
                    "expected {}, found {v} (out of range)",
                    type_name(self.spec.ty)
                ))),
            },
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.col {
            Col::F64(b) => b.append_value(v),
            // `as f32` would turn 1e39 into +inf silently: out of range is the row's error.
            Col::F32(b) if (v as f32).is_finite() => b.append_value(v as f32),
            Col::F32(_) => {
                return Err(E::custom(format!(
                    "expected float32, found {v} (out of range: float32 holds ±{:e})",
                    f32::MAX
                )));
            }
            _ => return Err(found(self.spec, format_args!("number {v}"))),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.col {
            Col::Str(b) => b.append_value(v),
            Col::Ts(b) => match chrono::DateTime::parse_from_rfc3339(v) {
                Ok(t) => b.append_value(t.timestamp_micros()),
                Err(e) => {
                    return Err(E::custom(format!(
                        "expected timestamp (RFC 3339 with offset, e.g. 2026-01-31T12:00:00Z, or epoch millis/micros), found {v:?}: {e}"
                    )));
                }
            },
            Col::Bin(b) => match base64::engine::general_purpose::STANDARD.decode(v) {
                Ok(bytes) => b.append_value(bytes),
                Err(e) => {
                    return Err(E::custom(format!(
                        "expected binary as base64, found invalid base64: {e}"
                    )));
                }
            },
            _ => {
                let shown: String = v.chars().take(40).collect();
                return Err(found(self.spec, format_args!("string {shown:?}")));
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Col::List { offsets, nulls, child } = self.col else {
            return Err(found(self.spec, format_args!("array")));
        };
        let item = self.spec.items.as_deref().expect("list items");
        let mut i = 0usize;
        loop {
            let mut path = None;
            let seed = ValueSeed {
                spec: item,
                col: child,
                failed: &mut path,
            };
            match seq.next_element_seed(seed) {
                Ok(Some(())) => i += 1,
                Ok(None) => break,
                Err(e) => {
                    *self.failed = Some(match path {
                        Some(p) => format!("{i}.{p}"),
                        None => i.to_string(),
                    });
                    return Err(e);
                }
            }
        }
        let len = i32::try_from(child.len()).map_err(|_| de::Error::custom("list too large"))?;
        offsets.push(len);
        nulls.append_non_null();
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Col::Struct { cols, nulls, len } = self.col else {
            return Err(found(self.spec, format_args!("object")));
        };
        let mut seen = vec![false; self.spec.fields.len()];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let Some(i) = self.spec.fields.iter().position(|f| f.name == key) else {
                *self.failed = Some(key.to_string());
                return Err(de::Error::custom(format!(
                    "field {key:?} is not in the struct's fields"
                )));
            };
            let spec = &self.spec.fields[i];
            if seen[i] {
                *self.failed = Some(spec.name.clone());
                return Err(de::Error::custom("field appears twice"));
            }
            seen[i] = true;
            let mut path = None;
            let seed = ValueSeed {
                spec,
                col: &mut cols[i],
                failed: &mut path,
            };
            if let Err(e) = map.next_value_seed(seed) {
                *self.failed = Some(match path {
                    Some(p) => format!("{}.{p}", spec.name),
                    None => spec.name.clone(),
                });
                return Err(e);
            }
        }
        for (i, spec) in self.spec.fields.iter().enumerate() {
            if !seen[i] {
                if spec.required {
                    *self.failed = Some(spec.name.clone());
                    return Err(de::Error::custom("required field is missing"));
                }
                cols[i].append_null(spec);
            }
        }
        nulls.append_non_null();
        *len += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};

    use super::*;

    fn decoder() -> RowDecoder {
        let fields: Vec<FieldConfig> = toml::from_str::<toml::Table>(
            r#"f = [
              { name = "id", type = "string", required = true },
              { name = "n", type = "int64" },
              { name = "ts", type = "timestamp" },
              { name = "data", type = "json" },
              { name = "tags", type = "list", items = { type = "string" } },
              { name = "geo", type = "struct", fields = [ { name = "lat", type = "float64", required = true } ] },
            ]"#,
        )
        .unwrap()["f"]
            .clone()
            .try_into()
            .unwrap();
        RowDecoder::new(&fields, UnknownFields::Reject, 1 << 20, 10, false)
    }

    /// What a decode gave, comparable: the batch, or the error's text.
    fn outcome(r: Result<RecordBatch, DecodeError>) -> Result<RecordBatch, String> {
        r.map_err(|e| match e {
            DecodeError::Rows { count, total, rows } => format!("{count} {total} {rows:?}"),
            other => other.to_string(),
        })
    }

    /// A lenient decode's outcome, comparable: the row count, the batch and the invalid rows.
    type LenientOutcome = Result<(usize, Option<RecordBatch>, Vec<(RowError, String)>), String>;

    fn lenient_outcome(r: Result<Lenient, DecodeError>) -> LenientOutcome {
        r.map(|l| (l.rows, l.batch, l.invalid)).map_err(|e| e.to_string())
    }

    /// The fast path answers exactly what the exact path answers, for `body`.
    fn same_as_exact(body: &[u8]) {
        let d = decoder();
        assert_eq!(
            outcome(d.decode(body, Framing::Auto)),
            outcome(d.decode_exact(body, Framing::Auto)),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            lenient_outcome(d.decode_lenient(body, Framing::Auto)),
            lenient_outcome(d.decode_lenient_exact(body, Framing::Auto)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }

    #[test]
    fn the_array_scan_finds_the_elements_a_full_parse_finds() {
        for body in [
            r#"[]"#,
            r#" [ {"id":"a"} , {"id":"b,]}{\"\\"} ] "#,
            "[\n{\"id\":\"x\",\"data\":[1,{\"a\":\"]\"}],\"tags\":[]}\r\n]",
            r#"[{"id":"\u00e9\"]"}]"#,
            r#"[1, "s", null, true, [2], {"id": "a"}]"#,
        ] {
            let exact: Vec<&str> = serde_json::from_str::<Vec<&RawValue>>(body)
                .unwrap()
                .into_iter()
                .map(RawValue::get)
                .collect();
            assert_eq!(scan_array(body), Some(exact), "{body}");
        }
        // Not arrays, or broken between the elements: the scan gives up (the exact path decides).
        for body in [
            r#"{"id":"a"}"#,
            r#"[{"id":"a"} {"id":"b"}]"#,
            r#"[{"id":"a"},]"#,
            r#"[{"id":"a"}"#,
            r#"[{"id":"a"}] x"#,
            r#"[{"id":"a}]"#,
            r#"[,{"id":"a"}]"#,
            "",
        ] {
            assert_eq!(scan_array(body), None, "{body}");
        }
    }

    #[test]
    fn the_fast_path_answers_what_the_exact_path_answers() {
        for body in [
            &br#"[{"id":"a","n":1},{"id":"b","data":{"k":"]"}}]"#[..],
            br#"[{"id":"a","n":"x"},{"id":"b"}]"#,
            br#"[{"id":"a"} {"id":"b"}]"#,
            br#"[{"id":"a", "n": 1,}]"#,
            br#"[{"id":"a"}, 5]"#,
            br#"[{"id":"a", "id": "b"}]"#,
            br#"[{"id":"a", "nope": 1}]"#,
            br#"[{"id":"a"]"#,
            br#"[{"id":"a","data":{"x":1]}}]"#,
            br#"[{"id":"a","data":{"x":1}}}]"#,
            br#"[]"#,
            br#"  "#,
        ] {
            same_as_exact(body);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// JSON-shaped text (brackets, quotes, escapes, commas): whatever the body, both paths
        /// give the same batch or the same error.
        #[test]
        fn any_json_shaped_body_decodes_the_same_on_both_paths(
            body in r#"\[?(\{("(id|n|data|tags|x)"|"[a-z\\\]\[{},"]{0,6}"):("[a-z\]\[{}]{0,4}"|[0-9]{1,3}|null|\[[0-9,\]\[]{0,6}\]|\{[":a-z0-9,{}]{0,8}\}),?[ ]?\}[, ]{0,2}){0,4}\]?[ ]?"#
        ) {
            same_as_exact(body.as_bytes());
        }

        /// A valid array of rows with one byte replaced anywhere: both paths agree.
        #[test]
        fn a_valid_body_with_one_byte_changed_decodes_the_same_on_both_paths(
            at in 0usize..200,
            byte in proptest::sample::select(&b"[]{},:\"\\ 0a"[..]),
        ) {
            let mut body = br#"[{"id":"a","n":5,"data":{"x":[1,"]"]},"tags":["p"]},{"id":"b\"c","geo":{"lat":1.5}}]"#.to_vec();
            let at = at % body.len();
            body[at] = byte;
            same_as_exact(&body);
        }
    }

    #[test]
    fn rows_of_few_and_of_many_fields_find_their_columns() {
        for n in [2, FEW_FIELDS, FEW_FIELDS + 1, 100] {
            let fields: Vec<FieldConfig> = (0..n)
                .map(|i| FieldConfig {
                    name: format!("f{i}"),
                    ty: FieldType::Int64,
                    required: false,
                    items: None,
                    fields: None,
                })
                .collect();
            let d = RowDecoder::new(&fields, UnknownFields::Reject, 1 << 20, 10, false);
            let last = n - 1;
            let body = format!(r#"[{{"f{last}": 7, "f0": 3}}, {{}}]"#);
            let b = d.decode(body.as_bytes(), Framing::Auto).unwrap();
            let col = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
            assert_eq!((col(last).value(0), col(0).value(0)), (7, 3), "{n} fields");
            assert!(col(last).is_null(1));
            let err = d.decode(br#"[{"f1x": 1}]"#, Framing::Auto).unwrap_err();
            assert!(err.to_string().contains("invalid"), "{n} fields: {err}");
        }
    }

    #[test]
    fn decodes_every_type() {
        let body =
            br#"[{"id":"a","n":5,"ts":"2026-01-01T00:00:00Z","data":{"x":[1,2]},"tags":["p","q"],"geo":{"lat":1.5}},
                        {"id":"b\u00e9","ts":1700000000000,"geo":null,"tags":null}]"#;
        let b = decoder().decode(body, Framing::Auto).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_string::<i32>().value(1), "bé");
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 5);
        assert!(b.column(1).is_null(1));
        let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_767_225_600_000_000);
        assert_eq!(ts.value(1), 1_700_000_000_000_000);
        assert_eq!(b.column(3).as_string::<i32>().value(0), r#"{"x":[1,2]}"#);
        assert_eq!(b.column(4).as_list::<i32>().value(0).len(), 2);
        assert!(b.column(5).is_null(1));
    }

    #[test]
    fn errors_name_row_and_field() {
        let body = b"{\"id\":\"a\",\"n\":\"x\"}\n{\"n\":1}\n{\"id\":\"c\",\"zz\":1}\n{\"id\":\"d\",\"geo\":{\"lat\":\"no\"}}\n{\"id\":\"e\",\"tags\":[\"a\",3]}\nnot json\n";
        let Err(DecodeError::Rows { count, total, rows }) = decoder().decode(body, Framing::Ndjson) else {
            panic!("expected row errors")
        };
        assert_eq!((count, total), (6, 6));
        let fields: Vec<(usize, &str)> = rows.iter().map(|r| (r.row, r.field.as_str())).collect();
        assert_eq!(
            fields,
            vec![(0, "n"), (1, "id"), (2, "zz"), (3, "geo.lat"), (4, "tags.1"), (5, "")]
        );
        assert!(
            rows[0].message.contains("expected int64, found string"),
            "{}",
            rows[0].message
        );
        assert!(rows[5].message.contains("malformed JSON"), "{}", rows[5].message);
    }

    #[test]
    fn unstructured_rows_are_kept_whole() {
        let fields = super::super::schema::stream_fields(None);
        let d = RowDecoder::new(&fields, UnknownFields::Reject, 1 << 20, 10, true);
        let b = d.decode(br#"[{"a":1}, 5, "x"]"#, Framing::Auto).unwrap();
        assert_eq!(b.column(0).as_string::<i32>().value(0), r#"{"a":1}"#);
        assert_eq!(b.column(0).as_string::<i32>().value(2), r#""x""#);
    }

    #[test]
    fn epoch_integers_are_millis_below_1e14_and_micros_from_it() {
        let body = br#"[{"id":"a","ts":1767225600123},{"id":"b","ts":1767225600123456},{"id":"c","ts":-1000},{"id":"d","ts":99999999999999}]"#;
        let b = decoder().decode(body, Framing::Auto).unwrap();
        let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_767_225_600_123_000);
        assert_eq!(ts.value(1), 1_767_225_600_123_456);
        assert_eq!(ts.value(2), -1_000_000);
        assert_eq!(ts.value(3), 99_999_999_999_999_000);
    }

    #[test]
    fn lenient_decode_keeps_valid_rows_and_returns_invalid_ones_raw() {
        // Row 1 fails after its first field was appended: the second pass must not keep it.
        let body = b"{\"id\":\"a\",\"n\":1}\n{\"id\":\"b\",\"n\":\"x\"}\n{\"id\":\"c\"}\n{bad\n";
        let l = decoder().decode_lenient(body, Framing::Ndjson).unwrap();
        assert_eq!(l.rows, 4);
        let b = l.batch.unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_string::<i32>().value(1), "c");
        assert!(b.column(1).is_null(1));
        let bad: Vec<(usize, &str, &str)> = l
            .invalid
            .iter()
            .map(|(e, raw)| (e.row, e.field.as_str(), raw.as_str()))
            .collect();
        assert_eq!(bad, vec![(1, "n", r#"{"id":"b","n":"x"}"#), (3, "", "{bad")]);
        let none = decoder().decode_lenient(b"{\"n\":1}", Framing::Ndjson).unwrap();
        assert!(none.batch.is_none());
        assert_eq!(none.invalid.len(), 1);
        assert!(matches!(
            decoder().decode_lenient(b"[{", Framing::Auto),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn float32_out_of_range_is_a_row_error_not_infinity() {
        let fields: Vec<FieldConfig> = toml::from_str::<toml::Table>(r#"f = [ { name = "x", type = "float32" } ]"#)
            .unwrap()["f"]
            .clone()
            .try_into()
            .unwrap();
        let d = RowDecoder::new(&fields, UnknownFields::Reject, 1 << 20, 10, false);
        let body = br#"[{"x":1.5},{"x":1e39},{"x":-1e39},{"x":3.4e38}]"#;
        let Err(DecodeError::Rows { total, rows, .. }) = d.decode(body, Framing::Auto) else {
            panic!("1e39 must not be stored as a float32")
        };
        assert_eq!(total, 2);
        let at: Vec<(usize, &str)> = rows.iter().map(|r| (r.row, r.field.as_str())).collect();
        assert_eq!(at, vec![(1, "x"), (2, "x")]);
        assert!(rows[0].message.contains("float32"), "{}", rows[0].message);
        let ok = d.decode(br#"[{"x":3.4e38},{"x":-1}]"#, Framing::Auto).unwrap();
        let col = ok.column(0).as_primitive::<arrow::datatypes::Float32Type>();
        assert!(col.value(0).is_finite() && col.value(1) == -1.0);
    }

    #[test]
    fn malformed_and_empty_bodies() {
        assert!(matches!(
            decoder().decode(b"[{", Framing::Auto),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decoder().decode(b"  ", Framing::Auto),
            Err(DecodeError::Empty)
        ));
        assert!(matches!(
            decoder().decode(b"[]", Framing::Auto),
            Err(DecodeError::Empty)
        ));
    }
}
