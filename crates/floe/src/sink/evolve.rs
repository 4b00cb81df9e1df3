//! Schema evolution of an iceberg sink's table, when the stream its pipeline reads gained
//! optional fields or widened one (docs/control-plane.md, "Schema evolution").
//!
//! The table's current schema is extended, never rebuilt: every column keeps its field id, a
//! column the pipeline's output now has and the table lacks is added as optional with a new id
//! (above the table's `last-column-id`; a list or struct gets new ids for its nested fields too),
//! `int → long` and `float → double` are promoted in place, and a required column the output
//! now leaves optional becomes optional. Anything else is refused with [`check_schema`]'s
//! reason. The new schema is committed through floe's own commit path as `add-schema` +
//! `set-current-schema`, guarded by `assert-current-schema-id` and
//! `assert-last-assigned-field-id`, so an outside engine's schema change in between makes it
//! fail instead of being overwritten. Data files already written stay as they are: Iceberg
//! readers read a column a file lacks as null, and an `int` column of an old file as `long`.

use arrow::datatypes::Schema as ArrowSchema;
use floe_catalog::{FloeCatalog, TableChange};
use iceberg::arrow::arrow_schema_to_schema_auto_assign_ids;
use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema as IcebergSchema, StructType, TableMetadata,
    Type,
};
use iceberg::{Catalog, TableIdent, TableRequirement, TableUpdate};

use super::schema::{check_schema, iceberg_type_name};
use crate::config::SinkConfig;
use crate::error::{Error, Result};

/// The table schema that takes `wanted` (the pipeline's output), or `None` when the current one
/// does already; an error when no evolution allowed here gets there.
pub fn evolved(sink: &str, table: &TableMetadata, wanted: &IcebergSchema) -> Result<Option<IcebergSchema>> {
    let current = table.current_schema();
    let mut next_id = table.last_column_id() + 1;
    let mut fields: Vec<NestedFieldRef> = current.as_struct().fields().to_vec();
    let mut changed = false;
    for w in wanted.as_struct().fields() {
        match fields.iter().position(|f| f.name == w.name) {
            None => {
                if w.required {
                    // check_schema below names it.
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let ty = reassign_ids(&w.field_type, &mut next_id);
                fields.push(NestedField::optional(id, &w.name, ty).into());
                changed = true;
            }
            Some(i) => {
                let t = &fields[i];
                let promoted = match (t.field_type.as_ref(), w.field_type.as_ref()) {
                    (Type::Primitive(PrimitiveType::Int), Type::Primitive(PrimitiveType::Long)) => {
                        Some(Type::Primitive(PrimitiveType::Long))
                    }
                    (Type::Primitive(PrimitiveType::Float), Type::Primitive(PrimitiveType::Double)) => {
                        Some(Type::Primitive(PrimitiveType::Double))
                    }
                    _ => None,
                };
                let loosened = t.required && !w.required;
                if promoted.is_some() || loosened {
                    let mut f = NestedField::clone(t);
                    if let Some(ty) = promoted {
                        f.field_type = Box::new(ty);
                    }
                    f.required &= !loosened;
                    fields[i] = f.into();
                    changed = true;
                }
            }
        }
    }
    if !changed {
        check_schema(sink, current, wanted)?;
        return Ok(None);
    }
    let schema_id = table.schemas_iter().map(|s| s.schema_id()).max().unwrap_or(0) + 1;
    let schema = IcebergSchema::builder()
        .with_schema_id(schema_id)
        .with_fields(fields)
        .with_identifier_field_ids(current.identifier_field_ids())
        .build()
        .map_err(|e| Error::Config(format!("sink {sink:?}: the evolved table schema is not valid: {e}")))?;
    check_schema(sink, &schema, wanted)?;
    Ok(Some(schema))
}

/// `ty` with fresh field ids for its nested fields, from `next`.
fn reassign_ids(ty: &Type, next: &mut i32) -> Type {
    let fresh = |f: &NestedField, next: &mut i32| -> NestedFieldRef {
        let id = *next;
        *next += 1;
        let mut g = f.clone();
        g.id = id;
        g.field_type = Box::new(reassign_ids(&f.field_type, next));
        g.into()
    };
    match ty {
        Type::Primitive(_) => ty.clone(),
        Type::Struct(s) => {
            let fields: Vec<NestedFieldRef> = s.fields().iter().map(|f| fresh(f, next)).collect();
            Type::Struct(StructType::new(fields))
        }
        Type::List(l) => Type::List(ListType::new(fresh(&l.element_field, next))),
        Type::Map(m) => {
            let key = fresh(&m.key_field, next);
            let value = fresh(&m.value_field, next);
            Type::Map(MapType::new(key, value))
        }
    }
}

/// The sink's table as [`IcebergSink::open`](super::iceberg::IcebergSink::open) finds it.
pub(super) fn ident_of(cfg: &SinkConfig) -> Result<Option<TableIdent>> {
    let Some(table) = cfg.table.as_deref() else {
        return Ok(None);
    };
    crate::lookup::parse_table_ident(table)
        .map(Some)
        .map_err(|e| Error::Config(format!("sink {:?}: {e}", cfg.name)))
}

/// Checks that the sink's table (when it exists) can evolve to take `output`; changes nothing.
pub async fn check(catalog: &FloeCatalog, cfg: &SinkConfig, output: &ArrowSchema) -> Result<()> {
    let Some(ident) = ident_of(cfg)? else { return Ok(()) };
    if !catalog.table_exists(&ident).await? {
        return super::iceberg::check_table(catalog, cfg, output).await;
    }
    let wanted = wanted_schema(cfg, output)?;
    let table = catalog.load_table(&ident).await?;
    evolved(&cfg.name, table.metadata(), &wanted).map(|_| ())
}

/// Evolves the sink's table (when it exists) to take `output`; whether it changed.
pub async fn evolve(catalog: &FloeCatalog, cfg: &SinkConfig, output: &ArrowSchema) -> Result<bool> {
    let Some(ident) = ident_of(cfg)? else { return Ok(false) };
    if !catalog.table_exists(&ident).await? {
        return Ok(false); // created with the new schema when the pipeline first writes
    }
    let wanted = wanted_schema(cfg, output)?;
    let table = catalog.load_table(&ident).await?;
    let metadata = table.metadata();
    let Some(schema) = evolved(&cfg.name, metadata, &wanted)? else {
        return Ok(false);
    };
    let columns: Vec<String> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name, iceberg_type_name(&f.field_type)))
        .collect();
    catalog
        .commit_changes(vec![TableChange {
            ident: ident.clone(),
            requirements: vec![
                TableRequirement::CurrentSchemaIdMatch {
                    current_schema_id: metadata.current_schema_id(),
                },
                TableRequirement::LastAssignedFieldIdMatch {
                    last_assigned_field_id: metadata.last_column_id(),
                },
            ],
            updates: vec![
                TableUpdate::AddSchema { schema },
                TableUpdate::SetCurrentSchema { schema_id: -1 },
            ],
        }])
        .await?;
    tracing::info!(sink = %cfg.name, table = %ident, columns = %columns.join(", "), "evolved the table's schema");
    Ok(true)
}

/// The pipeline's `output` as the Iceberg schema a new table of the sink would get.
pub(super) fn wanted_schema(cfg: &SinkConfig, output: &ArrowSchema) -> Result<IcebergSchema> {
    arrow_schema_to_schema_auto_assign_ids(output).map_err(|e| {
        Error::Config(format!(
            "sink {:?}: the pipeline's output cannot be an Iceberg schema: {e}",
            cfg.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::spec::{FormatVersion, PartitionSpec, SortOrder, TableMetadataBuilder};

    use super::*;

    fn field(id: i32, name: &str, ty: Type, required: bool) -> NestedFieldRef {
        if required {
            NestedField::required(id, name, ty).into()
        } else {
            NestedField::optional(id, name, ty).into()
        }
    }

    fn string() -> Type {
        Type::Primitive(PrimitiveType::String)
    }

    /// A table of `id int required, tags list<string>`.
    fn table() -> TableMetadata {
        let schema = IcebergSchema::builder()
            .with_fields([
                field(1, "id", Type::Primitive(PrimitiveType::Int), true),
                field(
                    2,
                    "tags",
                    Type::List(ListType::new(field(3, "element", string(), false))),
                    false,
                ),
            ])
            .build()
            .unwrap();
        TableMetadataBuilder::new(
            schema,
            PartitionSpec::unpartition_spec().into_unbound(),
            SortOrder::unsorted_order(),
            "file:///w/t".into(),
            FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata
    }

    /// Every field id of `ty`'s nested fields, depth first.
    fn ids(fields: &[NestedFieldRef], out: &mut Vec<(String, i32)>) {
        for f in fields {
            out.push((f.name.clone(), f.id));
            match f.field_type.as_ref() {
                Type::Struct(s) => ids(s.fields(), out),
                Type::List(l) => ids(std::slice::from_ref(&l.element_field), out),
                Type::Map(m) => ids(&[m.key_field.clone(), m.value_field.clone()], out),
                Type::Primitive(_) => {}
            }
        }
    }

    #[test]
    fn nested_new_columns_get_fresh_ids_above_the_last_and_old_ones_keep_theirs() {
        let table = table();
        let before: Vec<(String, i32)> = {
            let mut v = Vec::new();
            ids(table.current_schema().as_struct().fields(), &mut v);
            v
        };
        let last = table.last_column_id();
        // The output: `id` widened to long and made optional, `tags` as it was, and a new
        // `meta struct<source string, scores list<double>>`; its ids (here 100…) are the
        // output's own and must not be kept.
        let wanted = IcebergSchema::builder()
            .with_fields([
                field(100, "id", Type::Primitive(PrimitiveType::Long), false),
                field(
                    101,
                    "tags",
                    Type::List(ListType::new(field(102, "element", string(), false))),
                    false,
                ),
                field(
                    103,
                    "meta",
                    Type::Struct(StructType::new(vec![
                        field(104, "source", string(), false),
                        field(
                            105,
                            "scores",
                            Type::List(ListType::new(field(
                                106,
                                "element",
                                Type::Primitive(PrimitiveType::Double),
                                false,
                            ))),
                            false,
                        ),
                    ])),
                    false,
                ),
            ])
            .build()
            .unwrap();
        let schema = evolved("s", &table, &wanted).unwrap().expect("a new schema");
        let mut after = Vec::new();
        ids(schema.as_struct().fields(), &mut after);
        // The old columns keep their ids; the new ones count up from the last assigned id,
        // the struct first, then its members, then a list's element.
        assert_eq!(after[..before.len()], before[..]);
        let new: Vec<(String, i32)> = after[before.len()..].to_vec();
        let want: Vec<(String, i32)> = [("meta", 1), ("source", 2), ("scores", 3), ("element", 4)]
            .iter()
            .map(|(n, k)| (n.to_string(), last + k))
            .collect();
        assert_eq!(new, want);
        let id = schema.field_by_name("id").unwrap();
        assert_eq!(
            (id.field_type.as_ref(), id.required),
            (&Type::Primitive(PrimitiveType::Long), false)
        );
        assert!(!schema.field_by_name("meta").unwrap().required);
        assert!(schema.schema_id() > table.current_schema().schema_id());
        // The evolved schema already takes the output: nothing more to do.
        let next = TableMetadataBuilder::new_from_metadata(table, None)
            .add_current_schema(schema)
            .unwrap()
            .build()
            .unwrap()
            .metadata;
        assert!(matches!(evolved("s", &next, &wanted), Ok(None)));
    }

    #[test]
    fn a_new_required_column_or_a_narrowed_type_is_refused() {
        let table = table();
        for (name, ty, required) in [
            ("new_required", string(), true),
            ("id", Type::Primitive(PrimitiveType::String), true),
        ] {
            let wanted = IcebergSchema::builder()
                .with_fields([
                    field(1, "id", Type::Primitive(PrimitiveType::Int), true),
                    field(
                        2,
                        "tags",
                        Type::List(ListType::new(field(3, "element", string(), false))),
                        false,
                    ),
                ])
                .build()
                .unwrap();
            let mut fields = wanted.as_struct().fields().to_vec();
            fields.retain(|f| f.name != name);
            fields.push(field(9, name, ty, required));
            let wanted = IcebergSchema::builder().with_fields(fields).build().unwrap();
            let err = evolved("s", &table, &wanted).expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
