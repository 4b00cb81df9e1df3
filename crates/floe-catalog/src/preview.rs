//! A dry-run view of a [`FloeCatalog`]: an [`iceberg::Catalog`] whose `update_table` answers
//! the table a commit *would* make — requirements checked, updates applied to the current
//! metadata — and writes and commits nothing. Running an iceberg `Transaction` against it
//! (e.g. snapshot expiry's) shows what the real commit would change. Reads go to the catalog;
//! every other change is refused.

use std::collections::HashMap;

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};

use crate::catalog::FloeCatalog;

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Preview<'a>(pub &'a FloeCatalog);

fn refused(what: &str) -> Error {
    Error::new(
        ErrorKind::FeatureUnsupported,
        format!("{what} is not possible in a dry run"),
    )
}

#[async_trait]
impl Catalog for Preview<'_> {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> Result<Vec<NamespaceIdent>> {
        self.0.list_namespaces(parent).await
    }

    async fn create_namespace(&self, _: &NamespaceIdent, _: HashMap<String, String>) -> Result<Namespace> {
        Err(refused("creating a namespace"))
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.0.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.0.namespace_exists(namespace).await
    }

    async fn update_namespace(&self, _: &NamespaceIdent, _: HashMap<String, String>) -> Result<()> {
        Err(refused("changing a namespace"))
    }

    async fn drop_namespace(&self, _: &NamespaceIdent) -> Result<()> {
        Err(refused("dropping a namespace"))
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.0.list_tables(namespace).await
    }

    async fn create_table(&self, _: &NamespaceIdent, _: TableCreation) -> Result<Table> {
        Err(refused("creating a table"))
    }

    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        self.0.load_table(table).await
    }

    async fn drop_table(&self, _: &TableIdent) -> Result<()> {
        Err(refused("dropping a table"))
    }

    async fn purge_table(&self, _: &TableIdent) -> Result<()> {
        Err(refused("purging a table"))
    }

    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.0.table_exists(table).await
    }

    async fn rename_table(&self, _: &TableIdent, _: &TableIdent) -> Result<()> {
        Err(refused("renaming a table"))
    }

    async fn register_table(&self, _: &TableIdent, _: String) -> Result<Table> {
        Err(refused("registering a table"))
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.0.preview_commit(commit).await
    }
}
