//! The catalog as a hostile or careless client meets it through the Rust API (the REST API is a
//! thin layer over the same calls): the name rule, the location rule, purge by reference, bounded
//! metadata reads (FIFO, `/dev/zero`, huge files), escaped dotted namespaces, staged creates with
//! more updates, the Java wording of conflicts, and a commit whose `COMMIT` fails.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use floe_catalog::{Backend, FloeCatalog, MAX_METADATA_BYTES, TableChange, commit_state_unknown};
use iceberg::spec::{
    FormatVersion, NestedField, PrimitiveType, Schema, SortOrder, StatisticsFile, TableMetadataBuilder, Transform,
    Type, UnboundPartitionSpec,
};
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableCreation, TableIdent, TableRequirement, TableUpdate};

use crate::common::{
    CATALOG, Env, TestResult, create_table, creation, ident, local_path, namespace_rows, ns, pointer, scan_ids,
    table_row, table_rows, write_and_append,
};

/// A directory next to the warehouse (inside the test's temp dir, outside the warehouse) with
/// one file in it, which nothing may touch.
fn sacrificial(env: &Env) -> std::path::PathBuf {
    let dir = local_path(&env.warehouse).parent().unwrap().join("precious");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), b"keep").unwrap();
    dir
}

fn assert_intact(dir: &Path) {
    assert_eq!(
        std::fs::read(dir.join("keep.txt")).unwrap(),
        b"keep",
        "{} was touched",
        dir.display()
    );
}

fn invalid<T: std::fmt::Debug>(r: iceberg::Result<T>, rule: &str) -> iceberg::Error {
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DataInvalid, "{e}");
    assert!(e.message().contains(rule), "{e}");
    e
}

const NAME_RULE: &str = "names are 1 to 255 bytes";
const LOCATION_RULE: &str = "strictly inside the catalog's warehouse";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_follow_one_rule_at_every_entry_point() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    cat.create_namespace(&ns("ns"), HashMap::new()).await?;
    let long = "x".repeat(256);
    for bad in ["..", ".", "a/b", "a\\b", "a\0b", "a\nb", "", long.as_str(), "%2e%2e"] {
        invalid(
            cat.create_table(&ns("ns"), creation(bad, false)).await.map(|_| ()),
            NAME_RULE,
        );
        invalid(
            cat.stage_table(&ns("ns"), creation(bad, false)).await.map(|_| ()),
            NAME_RULE,
        );
        let level = NamespaceIdent::from_vec(vec![bad.to_string()]);
        if let Ok(level) = level {
            invalid(
                cat.create_namespace(&level, HashMap::new()).await.map(|_| ()),
                NAME_RULE,
            );
        }
    }
    let t = create_table(cat, "ns.t", false).await;
    let dotdot = TableIdent::new(ns("ns"), "..".to_string());
    invalid(cat.rename_table(&ident("ns.t"), &dotdot).await, NAME_RULE);
    invalid(cat.register_table(&dotdot, pointer(&t)).await.map(|_| ()), NAME_RULE);
    let staged_create = TableChange {
        ident: dotdot.clone(),
        requirements: vec![TableRequirement::NotExist],
        updates: vec![TableUpdate::AddSchema {
            schema: crate::common::schema(),
        }],
    };
    invalid(cat.commit_changes(vec![staged_create]).await, NAME_RULE);
    // Only the one valid table exists, nothing was written next to the warehouse.
    assert_eq!(table_rows(&env.raw().await).await.len(), 1);
    assert!(
        !local_path(&env.warehouse)
            .join("ns")
            .join("..")
            .join("metadata")
            .exists()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_must_be_inside_the_warehouse() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let precious = sacrificial(&env);
    cat.create_namespace(&ns("ns"), HashMap::new()).await?;
    let wh = env.warehouse.clone();
    let wh_path = local_path(&wh);
    std::fs::create_dir_all(wh_path.join("ns")).unwrap();
    std::os::unix::fs::symlink(&precious, wh_path.join("ns/link")).unwrap();
    let outside = [
        format!("file://{}", precious.display()),
        precious.display().to_string(),
        wh.clone(),
        format!("{wh}/"),
        format!("{wh}/../precious"),
        format!("{wh}/ns/%2e%2e/%2E%2E/precious"),
        format!("{wh}/ns/link/t"),
        "file://host/etc".to_string(),
        "s3://bucket/t".to_string(),
        "/".to_string(),
    ];
    for location in &outside {
        let c = || TableCreation {
            location: Some(location.clone()),
            ..creation("t", false)
        };
        invalid(cat.create_table(&ns("ns"), c()).await.map(|_| ()), LOCATION_RULE);
        invalid(cat.stage_table(&ns("ns"), c()).await.map(|_| ()), LOCATION_RULE);
    }
    // The write.*.path properties and a namespace location follow the same rule.
    let mut props = crate::common::fast_retry_properties();
    props.insert("write.data.path".into(), precious.display().to_string());
    let c = TableCreation {
        properties: props,
        ..creation("t", false)
    };
    invalid(cat.create_table(&ns("ns"), c).await.map(|_| ()), LOCATION_RULE);
    let ns_props = HashMap::from([("location".to_string(), precious.display().to_string())]);
    invalid(
        cat.create_namespace(&ns("other"), ns_props.clone()).await.map(|_| ()),
        LOCATION_RULE,
    );
    invalid(cat.update_namespace(&ns("ns"), ns_props).await, LOCATION_RULE);

    // A location inside is normalised before it is stored.
    let c = TableCreation {
        location: Some(format!("{wh}//ns/./x/../inside/")),
        ..creation("t", false)
    };
    let t = cat.create_table(&ns("ns"), c).await?;
    assert_eq!(t.metadata().location(), format!("{wh}/ns/inside"));

    // A commit may not move the table out (set-location), write its data out, or add a
    // snapshot or statistics file that lives outside.
    let before = pointer(&t);
    let out = format!("file://{}", precious.display());
    for update in [
        TableUpdate::SetLocation { location: out.clone() },
        TableUpdate::SetLocation {
            location: format!("{wh}/ns/../../precious"),
        },
        TableUpdate::SetProperties {
            updates: HashMap::from([("write.metadata.path".to_string(), out.clone())]),
        },
        TableUpdate::SetStatistics {
            statistics: StatisticsFile {
                snapshot_id: 1,
                statistics_path: format!("{out}/keep.txt"),
                file_size_in_bytes: 4,
                file_footer_size_in_bytes: 0,
                key_metadata: None,
                blob_metadata: vec![],
            },
        },
    ] {
        let change = TableChange {
            ident: ident("ns.t"),
            requirements: vec![],
            updates: vec![update],
        };
        invalid(cat.commit_changes(vec![change]).await, LOCATION_RULE);
    }
    assert_eq!(cat.current_metadata_location(&ident("ns.t")).await?, Some(before));
    // Inside is fine, and stored normalised.
    let change = TableChange {
        ident: ident("ns.t"),
        requirements: vec![],
        updates: vec![TableUpdate::SetLocation {
            location: format!("{wh}/ns/moved/./"),
        }],
    };
    let done = cat.commit_changes(vec![change]).await?;
    assert_eq!(done[0].metadata.location(), format!("{wh}/ns/moved"));
    assert_intact(&precious);
    assert_eq!(std::fs::read_dir(&precious)?.count(), 1, "nothing was written outside");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_only_what_the_table_references_under_its_location() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let precious = sacrificial(&env);
    let wh = env.warehouse.clone();
    // Table `a` shares a directory tree with files it does not own: another table's data and a
    // stray file in its own data directory.
    let b = create_table(cat, "ns.b", false).await;
    let b = write_and_append(cat, &b, 0..3, HashMap::new()).await?;
    let a = create_table(cat, "ns.a", false).await;
    let a = write_and_append(cat, &a, 10..13, HashMap::new()).await?;
    let a_dir = local_path(a.metadata().location());
    std::fs::write(a_dir.join("data").join("not-referenced.parquet"), b"x")?;
    // `a` names one of `b`'s data files as its statistics file, through `..` below its own
    // location: a reference, but not `a`'s to delete.
    let b_file = crate::common::list_dir(&local_path(b.metadata().location()).join("data"), ".parquet")
        .into_iter()
        .next()
        .expect("b has a data file");
    let snapshot_id = a.metadata().current_snapshot_id().unwrap();
    let stats = |path: String| TableUpdate::SetStatistics {
        statistics: StatisticsFile {
            snapshot_id,
            statistics_path: path,
            file_size_in_bytes: 1,
            file_footer_size_in_bytes: 0,
            key_metadata: None,
            blob_metadata: vec![],
        },
    };
    cat.commit_changes(vec![TableChange {
        ident: ident("ns.a"),
        requirements: vec![],
        updates: vec![stats(format!("{wh}/ns/a/../b/data/{b_file}"))],
    }])
    .await?;

    let report = cat.purge_table_files(&ident("ns.a")).await?;
    assert!(report.deleted >= 4, "{report:?}");
    assert!(report.skipped >= 1, "{report:?}");
    assert!(!cat.table_exists(&ident("ns.a")).await?);
    // Everything of `a` is gone except the file it never referenced (so its data directory stays).
    assert!(a_dir.join("data").join("not-referenced.parquet").is_file());
    assert!(crate::common::list_dir(&a_dir.join("metadata"), "").is_empty());
    assert!(
        !a_dir.join("metadata").exists(),
        "its emptied metadata directory is removed"
    );
    // `b` is whole.
    let b = cat.load_table(&ident("ns.b")).await?;
    assert_eq!(scan_ids(&b).await?, vec![0, 1, 2]);
    assert_intact(&precious);

    // A table whose location is outside the warehouse (put there by another client of the
    // SQLite file) is not purged, nor even dropped.
    let meta_dir = precious.join("metadata");
    std::fs::create_dir_all(&meta_dir)?;
    let outside_meta = meta_dir.join("00000-x.metadata.json");
    std::fs::copy(local_path(&pointer(&b)), &outside_meta)?;
    sqlx::query("UPDATE iceberg_tables SET metadata_location = $1 WHERE table_name = 'b'")
        .bind(format!("file://{}", outside_meta.display()))
        .execute(&env.raw().await)
        .await?;
    assert!(cat.purge_table_files(&ident("ns.b")).await.is_err());
    assert!(table_row(&env.raw().await, CATALOG, "ns", "b").await.is_some());
    assert!(outside_meta.is_file());
    assert_intact(&precious);
    Ok(())
}

/// Creates a FIFO with the system's `mkfifo`.
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reads_are_bounded_regular_files_inside_the_warehouse() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    let wh = env.warehouse.clone();
    let dir = local_path(&wh).join("ns").join("junk");
    std::fs::create_dir_all(&dir)?;
    let fifo = dir.join("fifo.metadata.json");
    mkfifo(&fifo);
    let huge = dir.join("huge.metadata.json");
    std::fs::File::create(&huge)?.set_len(MAX_METADATA_BYTES + 1)?; // sparse
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.metadata.json"))?;
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.metadata.json"))?;
    std::fs::write(dir.join("garbage.metadata.json"), b"{\"secret\": \"hunter2\"")?;

    let cases = [
        (format!("file://{}", fifo.display()), "not a regular file"),
        (format!("file://{}", dir.display()), "not a regular file"),
        (format!("file://{}", huge.display()), "larger than the metadata limit"),
        ("/dev/zero".to_string(), LOCATION_RULE),
        ("file:///etc/passwd".to_string(), LOCATION_RULE),
        (format!("{wh}/ns/junk/zero.metadata.json"), LOCATION_RULE),
        (format!("{wh}/ns/junk/passwd.metadata.json"), LOCATION_RULE),
        (
            format!("{wh}/ns/junk/garbage.metadata.json"),
            "not valid table metadata",
        ),
        (format!("{wh}/ns/junk/missing.metadata.json"), "no such file"),
    ];
    for (location, why) in &cases {
        // A FIFO would block a plain open forever: the timeout makes that a failure, not a hang.
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            cat.register_table(&ident("ns.r"), location.clone()),
        )
        .await
        .expect("register must not block");
        let e = invalid(r.map(|_| ()), why);
        assert!(!e.message().contains("root:"), "file contents are not echoed: {e}");
        assert!(!e.message().contains("hunter2"), "file contents are not echoed: {e}");
        assert!(
            !e.message().contains("/dev/zero") || location == "/dev/zero",
            "no resolved path: {e}"
        );
        assert!(!cat.table_exists(&ident("ns.r")).await?);
    }
    // A table row pointing at a FIFO (written by another client of the file): load and commit
    // answer an error at once.
    sqlx::query("UPDATE iceberg_tables SET metadata_location = $1 WHERE table_name = 't'")
        .bind(format!("file://{}", fifo.display()))
        .execute(&env.raw().await)
        .await?;
    let r = tokio::time::timeout(Duration::from_secs(20), cat.load_table(&ident("ns.t")))
        .await
        .expect("load must not block");
    invalid(r.map(|_| ()), "not a regular file");
    let change = TableChange {
        ident: ident("ns.t"),
        requirements: vec![],
        updates: vec![],
    };
    let r = tokio::time::timeout(Duration::from_secs(20), cat.commit_changes(vec![change]))
        .await
        .expect("commit must not block");
    invalid(r, "not a regular file");
    let _ = t;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotted_namespace_level_is_stored_escaped() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let dotted = NamespaceIdent::from_vec(vec!["new.db".to_string()])?;
    let two = NamespaceIdent::from_vec(vec!["new".to_string(), "db".to_string()])?;
    cat.create_namespace(&dotted, HashMap::from([("k".to_string(), "1".to_string())]))
        .await?;
    assert!(
        !cat.namespace_exists(&two).await?,
        "one level with a dot is not two levels"
    );
    cat.create_namespace(&two, HashMap::new()).await?;
    let raw = env.raw().await;
    assert_eq!(
        namespace_rows(&raw, CATALOG, "new%2Edb").await.get("k"),
        Some(&Some("1".to_string()))
    );
    assert!(namespace_rows(&raw, CATALOG, "new.db").await.contains_key("exists"));
    let mut top = cat.list_namespaces(None).await?;
    top.sort_by_key(|n| n.join("\u{1f}"));
    assert_eq!(top, vec![ns("new"), dotted.clone()]);
    assert_eq!(cat.list_namespaces(Some(&ns("new"))).await?, vec![two.clone()]);
    assert_eq!(cat.get_namespace(&dotted).await?.properties()["k"], "1");

    let t = cat.create_table(&dotted, creation("t", false)).await?;
    assert_eq!(t.metadata().location(), format!("{}/new.db/t", env.warehouse));
    assert!(table_row(&raw, CATALOG, "new%2Edb", "t").await.is_some());
    assert_eq!(
        cat.list_tables(&dotted).await?,
        vec![TableIdent::new(dotted.clone(), "t".into())]
    );
    assert!(cat.list_tables(&two).await?.is_empty());
    // Plain levels are stored exactly as before (as PyIceberg's SqlCatalog reads them).
    create_table(cat, "a.b.c", false).await;
    assert!(table_row(&raw, CATALOG, "a.b", "c").await.is_some());
    Ok(())
}

fn long_field(id: i32, name: &str) -> iceberg::spec::NestedFieldRef {
    NestedField::optional(id, name, Type::Primitive(PrimitiveType::Long)).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_create_applies_every_update_with_the_ids_the_client_saw() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    cat.create_namespace(&ns("st"), HashMap::new()).await?;
    let staged = cat.stage_table(&ns("st"), creation("t", false)).await?;
    let first = staged.current_schema().as_ref().clone();
    // What PyIceberg's create_table_transaction + update_schema().add_column("extra") +
    // update_spec().add_identity("extra") sends in its one commit.
    let second = Schema::builder()
        .with_schema_id(1)
        .with_fields(
            first
                .as_struct()
                .fields()
                .iter()
                .cloned()
                .chain([long_field(4, "extra")]),
        )
        .build()?;
    let spec = UnboundPartitionSpec::builder()
        .with_spec_id(1)
        .add_partition_field(4, "extra", Transform::Identity)?
        .build();
    let updates = vec![
        TableUpdate::AssignUuid { uuid: staged.uuid() },
        TableUpdate::UpgradeFormatVersion {
            format_version: FormatVersion::V2,
        },
        TableUpdate::AddSchema { schema: first.clone() },
        TableUpdate::SetCurrentSchema {
            schema_id: TableMetadataBuilder::LAST_ADDED,
        },
        TableUpdate::AddSpec {
            spec: UnboundPartitionSpec::builder().with_spec_id(0).build(),
        },
        TableUpdate::SetDefaultSpec {
            spec_id: TableMetadataBuilder::LAST_ADDED,
        },
        TableUpdate::AddSortOrder {
            sort_order: SortOrder::unsorted_order(),
        },
        TableUpdate::SetDefaultSortOrder {
            sort_order_id: TableMetadataBuilder::LAST_ADDED as i64,
        },
        TableUpdate::SetLocation {
            location: staged.location().to_string(),
        },
        TableUpdate::SetProperties {
            updates: HashMap::from([("k".to_string(), "v".to_string())]),
        },
        TableUpdate::AddSchema { schema: second },
        TableUpdate::SetCurrentSchema {
            schema_id: TableMetadataBuilder::LAST_ADDED,
        },
        TableUpdate::AddSpec { spec },
        TableUpdate::SetDefaultSpec {
            spec_id: TableMetadataBuilder::LAST_ADDED,
        },
    ];
    cat.commit_changes(vec![TableChange {
        ident: ident("st.t"),
        requirements: vec![TableRequirement::NotExist],
        updates,
    }])
    .await?;
    let t = cat.load_table(&ident("st.t")).await?;
    let m = t.metadata();
    assert_eq!(m.current_schema_id(), 1);
    assert_eq!(m.current_schema().field_by_name("extra").map(|f| f.id), Some(4));
    assert_eq!(m.last_column_id(), 4);
    let spec = m.default_partition_spec();
    assert_eq!(spec.spec_id(), 1);
    assert_eq!(spec.fields()[0].source_id, 4);
    assert_eq!(m.properties()["k"], "v");
    assert_eq!(m.uuid(), staged.uuid());

    // A client's own field ids (not 1..n) are kept, not renumbered.
    let own = Schema::builder()
        .with_schema_id(0)
        .with_fields(vec![long_field(7, "a"), long_field(9, "b")])
        .build()?;
    let spec = UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(9, "b", Transform::Identity)?
        .build();
    cat.commit_changes(vec![TableChange {
        ident: ident("st.own"),
        requirements: vec![TableRequirement::NotExist],
        updates: vec![
            TableUpdate::AddSchema { schema: own },
            TableUpdate::SetCurrentSchema { schema_id: -1 },
            TableUpdate::AddSpec { spec },
            TableUpdate::SetDefaultSpec { spec_id: -1 },
        ],
    }])
    .await?;
    let own = cat.load_table(&ident("st.own")).await?;
    let m = own.metadata();
    assert_eq!(m.current_schema().field_by_name("a").map(|f| f.id), Some(7));
    assert_eq!(m.current_schema().field_by_name("b").map(|f| f.id), Some(9));
    assert_eq!(m.default_partition_spec().fields()[0].source_id, 9);
    assert_eq!(m.last_column_id(), 9);
    write_and_append_nothing(cat, &own).await;
    Ok(())
}

/// The table is usable afterwards: an empty properties commit lands on it.
async fn write_and_append_nothing(cat: &FloeCatalog, t: &iceberg::table::Table) {
    let done = cat
        .commit_changes(vec![TableChange {
            ident: t.identifier().clone(),
            requirements: vec![TableRequirement::UuidMatch {
                uuid: t.metadata().uuid(),
            }],
            updates: vec![TableUpdate::SetProperties {
                updates: HashMap::from([("x".to_string(), "y".to_string())]),
            }],
        }])
        .await
        .expect("commit on the created table");
    assert_eq!(done[0].metadata.properties()["x"], "y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_use_the_java_wording() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    let t = write_and_append(cat, &t, 0..2, HashMap::new()).await?;
    let m = t.metadata();
    let snap = m.current_snapshot_id().unwrap();
    let uuid = uuid::Uuid::nil();
    let cases = vec![
        (
            TableRequirement::NotExist,
            "Requirement failed: table already exists".to_string(),
        ),
        (
            TableRequirement::UuidMatch { uuid },
            format!(
                "Requirement failed: UUID does not match: expected {} != {uuid}",
                m.uuid()
            ),
        ),
        (
            TableRequirement::CurrentSchemaIdMatch { current_schema_id: 5 },
            "Requirement failed: current schema changed: expected id 5 != 0".to_string(),
        ),
        (
            TableRequirement::LastAssignedFieldIdMatch {
                last_assigned_field_id: 9,
            },
            "Requirement failed: last assigned field id changed: expected id 9 != 3".to_string(),
        ),
        (
            TableRequirement::DefaultSpecIdMatch { default_spec_id: 2 },
            "Requirement failed: default partition spec changed: expected id 2 != 0".to_string(),
        ),
        (
            TableRequirement::LastAssignedPartitionIdMatch {
                last_assigned_partition_id: 1001,
            },
            "Requirement failed: last assigned partition id changed: expected id 1001 != 999".to_string(),
        ),
        (
            TableRequirement::DefaultSortOrderIdMatch {
                default_sort_order_id: 3,
            },
            "Requirement failed: default sort order changed: expected id 3 != 0".to_string(),
        ),
        (
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".into(),
                snapshot_id: Some(1),
            },
            format!("Requirement failed: branch main has changed: expected id 1 != {snap}"),
        ),
        (
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".into(),
                snapshot_id: None,
            },
            "Requirement failed: branch main was created concurrently".to_string(),
        ),
        (
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "dev".into(),
                snapshot_id: Some(1),
            },
            "Requirement failed: branch or tag dev is missing, expected 1".to_string(),
        ),
    ];
    for (requirement, want) in cases {
        let e = cat
            .commit_changes(vec![TableChange {
                ident: ident("ns.t"),
                requirements: vec![requirement],
                updates: vec![],
            }])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::CatalogCommitConflicts, "{e}");
        assert_eq!(e.message(), want);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_statement_keeps_the_files_and_says_the_outcome_is_unknown() -> TestResult {
    let env = Env::new().await;
    let cat = &env.catalog;
    let t = create_table(cat, "ns.t", false).await;
    let before = pointer(&t);
    // Make the database's COMMIT itself fail, after every statement of the commit succeeded: a
    // deferred foreign key is only checked at COMMIT.
    let raw = env.raw().await;
    let trigger: &[&str] = match env.backend {
        Backend::Sqlite => {
            &["CREATE TRIGGER fail_commit AFTER UPDATE ON iceberg_tables BEGIN INSERT INTO fail_child VALUES (42); END"]
        }
        Backend::Postgres => &[
            "CREATE FUNCTION fail_commit_fn() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO fail_child VALUES (42); RETURN NULL; END $$",
            "CREATE TRIGGER fail_commit AFTER UPDATE ON iceberg_tables FOR EACH ROW EXECUTE FUNCTION fail_commit_fn()",
        ],
    };
    for ddl in [
        "CREATE TABLE fail_parent (id BIGINT PRIMARY KEY)",
        "CREATE TABLE fail_child (pid BIGINT REFERENCES fail_parent(id) DEFERRABLE INITIALLY DEFERRED)",
    ]
    .iter()
    .chain(trigger)
    {
        sqlx::query(ddl).execute(&raw).await?;
    }
    let change = TableChange {
        ident: ident("ns.t"),
        requirements: vec![],
        updates: vec![TableUpdate::SetProperties {
            updates: HashMap::from([("k".to_string(), "v".to_string())]),
        }],
    };
    let e = cat.commit_changes(vec![change]).await.unwrap_err();
    assert!(commit_state_unknown(&e), "{e:?}");
    assert!(!e.retryable());
    // The metadata file of the commit is still there (version 1 of the table).
    let metadata_files =
        crate::common::list_dir(&local_path(t.metadata().location()).join("metadata"), ".metadata.json");
    assert_eq!(metadata_files.len(), 2, "{metadata_files:?}");
    assert!(
        metadata_files.iter().any(|f| f.starts_with("00001-")),
        "{metadata_files:?}"
    );
    // Here it did not land; a re-read says so.
    assert_eq!(cat.current_metadata_location(&ident("ns.t")).await?, Some(before));

    // An ordinary conflict is not "unknown", and its file is deleted as before.
    let drop = match env.backend {
        Backend::Sqlite => "DROP TRIGGER fail_commit",
        Backend::Postgres => "DROP TRIGGER fail_commit ON iceberg_tables",
    };
    sqlx::query(drop).execute(&raw).await?;
    let e = cat
        .commit_changes(vec![TableChange {
            ident: ident("ns.t"),
            requirements: vec![TableRequirement::CurrentSchemaIdMatch { current_schema_id: 7 }],
            updates: vec![],
        }])
        .await
        .unwrap_err();
    assert!(!commit_state_unknown(&e));
    Ok(())
}
