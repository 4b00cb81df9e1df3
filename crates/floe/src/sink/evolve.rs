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
