//! Commit requirements checked with the **Java reference's wording**
//! (`org.apache.iceberg.UpdateRequirement`), because engines match on it: Java's
//! `CommitFailureMessages.isRequirementFailure` looks for the prefix `Requirement failed:` to tell
//! a failed requirement from other commit failures.
//!
//! | requirement | message when it fails |
//! |---|---|
//! | `assert-create` | `Requirement failed: table already exists` |
//! | `assert-table-uuid` | `Requirement failed: UUID does not match: expected <current> != <required>` |
//! | `assert-ref-snapshot-id` | `Requirement failed: branch main has changed: expected id <required> != <current>`, `… branch b was created concurrently`, `… branch or tag b is missing, expected <id>` |
//! | `assert-current-schema-id` | `Requirement failed: current schema changed: expected id X != Y` |
//! | `assert-last-assigned-field-id` | `Requirement failed: last assigned field id changed: expected id X != Y` |
//! | `assert-last-assigned-partition-id` | `Requirement failed: last assigned partition id changed: expected id X != Y` |
//! | `assert-default-spec-id` | `Requirement failed: default partition spec changed: expected id X != Y` |
//! | `assert-default-sort-order-id` | `Requirement failed: default sort order changed: expected id X != Y` |
//! | any but `assert-create`, on a missing table | `Requirement failed: table does not exist` (404) |
//!
//! (The UUID message keeps Java's order, current first.) All but the last are
//! [`ErrorKind::CatalogCommitConflicts`] (REST 409 `CommitFailedException`), retryable except
//! `table already exists`.

use iceberg::spec::TableMetadata;
use iceberg::{Error, ErrorKind, Result, TableRequirement};

/// The prefix of every requirement failure.
pub const REQUIREMENT_FAILED: &str = "Requirement failed:";

fn failed(message: String, retryable: bool) -> Error {
    Error::new(
        ErrorKind::CatalogCommitConflicts,
        format!("{REQUIREMENT_FAILED} {message}"),
    )
    .with_retryable(retryable)
}

/// `branch` or `tag`, as the metadata records the ref.
fn ref_type(metadata: &TableMetadata, name: &str) -> &'static str {
    // `TableMetadata` exposes a ref's snapshot but not its kind; the JSON form has it.
    let kind = serde_json::to_value(metadata)
        .ok()
        .and_then(|v| v.get("refs")?.get(name)?.get("type")?.as_str().map(str::to_string));
    match kind.as_deref() {
        Some("tag") => "tag",
        _ => "branch",
    }
}

/// Checks one requirement against the table's current metadata (`None`: the table does not
/// exist).
pub fn check_requirement(requirement: &TableRequirement, base: Option<&TableMetadata>) -> Result<()> {
    let Some(base) = base else {
        return match requirement {
            TableRequirement::NotExist => Ok(()),
            _ => Err(Error::new(
                ErrorKind::TableNotFound,
                format!("{REQUIREMENT_FAILED} table does not exist"),
            )),
        };
    };
    match requirement {
        TableRequirement::NotExist => Err(failed("table already exists".into(), false)),
        TableRequirement::UuidMatch { uuid } if *uuid != base.uuid() => Err(failed(
            format!("UUID does not match: expected {} != {uuid}", base.uuid()),
            true,
        )),
        TableRequirement::RefSnapshotIdMatch { r#ref, snapshot_id } => {
            let current = base.snapshot_for_ref(r#ref).map(|s| s.snapshot_id());
            match (snapshot_id, current) {
                (None, Some(_)) => Err(failed(
                    format!("{} {ref} was created concurrently", ref_type(base, r#ref)),
                    true,
                )),
                (Some(want), Some(have)) if *want != have => Err(failed(
                    format!(
                        "{} {ref} has changed: expected id {want} != {have}",
                        ref_type(base, r#ref)
                    ),
                    true,
                )),
                (Some(want), None) => Err(failed(format!("branch or tag {ref} is missing, expected {want}"), true)),
                _ => Ok(()),
            }
        }
        TableRequirement::LastAssignedFieldIdMatch { last_assigned_field_id }
            if *last_assigned_field_id != base.last_column_id() =>
        {
            Err(failed(
                format!(
                    "last assigned field id changed: expected id {last_assigned_field_id} != {}",
                    base.last_column_id()
                ),
                true,
            ))
        }
        TableRequirement::CurrentSchemaIdMatch { current_schema_id }
            if *current_schema_id != base.current_schema_id() =>
        {
            Err(failed(
                format!(
                    "current schema changed: expected id {current_schema_id} != {}",
                    base.current_schema_id()
                ),
                true,
            ))
        }
        TableRequirement::LastAssignedPartitionIdMatch {
            last_assigned_partition_id,
        } if *last_assigned_partition_id != base.last_partition_id() => Err(failed(
            format!(
                "last assigned partition id changed: expected id {last_assigned_partition_id} != {}",
                base.last_partition_id()
            ),
            true,
        )),
        TableRequirement::DefaultSpecIdMatch { default_spec_id }
            if *default_spec_id != base.default_partition_spec_id() =>
        {
            Err(failed(
                format!(
                    "default partition spec changed: expected id {default_spec_id} != {}",
                    base.default_partition_spec_id()
                ),
                true,
            ))
        }
        TableRequirement::DefaultSortOrderIdMatch { default_sort_order_id }
            if *default_sort_order_id != base.default_sort_order_id() =>
        {
            Err(failed(
                format!(
                    "default sort order changed: expected id {default_sort_order_id} != {}",
                    base.default_sort_order_id()
                ),
                true,
            ))
        }
        _ => Ok(()),
    }
}
