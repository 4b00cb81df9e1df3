//! Stream schemas: `floe.toml` fields → Arrow, the form rows take in the log and in pipelines.
//!
//! | floe type   | Arrow                              | Iceberg        |
//! |-------------|------------------------------------|----------------|
//! | `string`    | `Utf8`                             | `string`       |
//! | `int32`     | `Int32`                            | `int`          |
//! | `int64`     | `Int64`                            | `long`         |
//! | `float32`   | `Float32`                          | `float`        |
//! | `float64`   | `Float64`                          | `double`       |
//! | `bool`      | `Boolean`                          | `boolean`      |
//! | `timestamp` | `Timestamp(Microsecond, "UTC")`    | `timestamptz`  |
//! | `binary`    | `Binary`                           | `binary`       |
//! | `json`      | `Utf8` (the value's JSON text)     | `string`       |
//! | `list`      | `List(items)`                      | `list`         |
//! | `struct`    | `Struct(fields)`                   | `struct`       |
//!
//! `required = true` maps to a non-nullable field. A stream without `fields` is unstructured:
//! one required `value` column of JSON text.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::config::{FieldConfig, FieldType};

/// Field metadata key marking a `json` column (Utf8 holding JSON text).
pub const FLOE_TYPE_KEY: &str = "floe.type";

/// The name of the single column of an unstructured stream.
pub const UNSTRUCTURED_COLUMN: &str = "value";

/// The fields of a stream, including the unstructured form.
pub fn stream_fields(fields: Option<&Vec<FieldConfig>>) -> Vec<FieldConfig> {
    match fields {
        Some(f) => f.clone(),
        None => vec![FieldConfig {
            name: UNSTRUCTURED_COLUMN.to_string(),
            ty: FieldType::Json,
            required: true,
            items: None,
            fields: None,
        }],
    }
}

/// The Arrow schema of a stream.
pub fn arrow_schema(fields: &[FieldConfig]) -> SchemaRef {
    Arc::new(Schema::new(fields.iter().map(arrow_field).collect::<Vec<_>>()))
}

/// The Arrow field of one configured field.
pub fn arrow_field(f: &FieldConfig) -> Field {
    let field = Field::new(&f.name, arrow_type(f), !f.required);
    if f.ty == FieldType::Json {
        field.with_metadata(HashMap::from([(FLOE_TYPE_KEY.to_string(), "json".to_string())]))
    } else {
        field
    }
}

/// The Arrow type of one configured field.
pub fn arrow_type(f: &FieldConfig) -> DataType {
    match f.ty {
        FieldType::String | FieldType::Json => DataType::Utf8,
        FieldType::Int32 => DataType::Int32,
        FieldType::Int64 => DataType::Int64,
        FieldType::Float32 => DataType::Float32,
        FieldType::Float64 => DataType::Float64,
        FieldType::Bool => DataType::Boolean,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        FieldType::Binary => DataType::Binary,
        FieldType::List => {
            let items = f.items.as_deref().expect("validated: list has items");
            let mut item = items.clone();
            item.name = "element".to_string();
            DataType::List(Arc::new(arrow_field(&item)))
        }
        FieldType::Struct => {
            let fields = f.fields.as_deref().expect("validated: struct has fields");
            DataType::Struct(Fields::from(fields.iter().map(arrow_field).collect::<Vec<_>>()))
        }
    }
}

/// The name of a floe type, for error messages.
pub fn type_name(t: FieldType) -> &'static str {
    match t {
        FieldType::String => "string",
        FieldType::Int32 => "int32",
        FieldType::Int64 => "int64",
        FieldType::Float32 => "float32",
        FieldType::Float64 => "float64",
        FieldType::Bool => "bool",
        FieldType::Timestamp => "timestamp (RFC 3339 string with offset, or epoch millis/micros)",
        FieldType::Binary => "binary (base64 string)",
        FieldType::Json => "json",
        FieldType::List => "list (JSON array)",
        FieldType::Struct => "struct (JSON object)",
    }
}
