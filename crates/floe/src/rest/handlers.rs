//! The route handlers of the Iceberg REST API: request and response bodies (kebab-case JSON, as
//! the spec names them) and their translation onto [`FloeCatalog`].

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use floe_catalog::{FloeCatalog, TableChange, carries_sink_keys};
use iceberg::spec::{FormatVersion, Schema, SortOrder, TableMetadata, UnboundPartitionSpec};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent, TableRequirement, TableUpdate};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::paging::PageRequest;
use super::{
    Access, ENDPOINTS, NAMESPACE_SEPARATOR, RestError, RestJson, RestPath, RestResult, RestState, authorize,
    check_table_name, namespace_from_levels, parse_namespace,
};

type Params = Result<Path<HashMap<String, String>>, PathRejection>;
type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The checks every route makes first: the token, then the prefix and the query string.
fn begin(
    app: &RestState,
    headers: &HeaderMap,
    access: Access,
    params: Params,
    query: QueryParams,
) -> RestResult<(RestPath, HashMap<String, String>)> {
    authorize(app, headers, access)?;
    let params = match params {
        Ok(Path(p)) => p,
        // The unprefixed routes without parameters (`/v1/namespaces`).
        Err(PathRejection::MissingPathParams(_)) => HashMap::new(),
        Err(e) => return Err(RestError::bad_request(format!("invalid path: {e}"))),
    };
    let query = query
        .map(|Query(q)| q)
        .map_err(|e| RestError::bad_request(format!("invalid query string: {e}")))?;
    Ok((RestPath::new(app, params)?, query))
}

fn catalog(app: &RestState) -> &FloeCatalog {
    &app.catalog
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `{"namespace": [...], "name": ...}`, the spec's `TableIdentifier`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableIdentifier {
    namespace: Vec<String>,
    name: String,
}

impl TableIdentifier {
    fn to_ident(&self) -> RestResult<TableIdent> {
        Ok(TableIdent::new(
            namespace_from_levels(self.namespace.clone())?,
            check_table_name(&self.name)?,
        ))
    }

    fn from_ident(ident: &TableIdent) -> Self {
        Self {
            namespace: ident.namespace().clone().inner(),
            name: ident.name().to_string(),
        }
    }
}

// --- config -------------------------------------------------------------------------------------

/// `GET /v1/config`: the prefix to use and every route served.
pub async fn config(State(app): State<RestState>, headers: HeaderMap, query: QueryParams) -> RestResult<Response> {
    authorize(&app, &headers, Access::Read)?;
    let Query(query) = query.map_err(|e| RestError::bad_request(format!("invalid query string: {e}")))?;
    if let Some(w) = query.get("warehouse")
        && !w.is_empty()
        && w != &app.config.catalog.name
        && w.trim_end_matches('/') != catalog(&app).warehouse()
    {
        // 400: the status the spec documents for getConfig (it has no 404).
        return Err(RestError::bad_request(format!(
            "unknown warehouse {w:?}: this catalog serves {:?} (or {:?})",
            app.config.catalog.name,
            catalog(&app).warehouse()
        )));
    }
    Ok(axum::Json(json!({
        "defaults": storage_config(&app, &headers),
        "overrides": {"prefix": app.config.catalog.name},
        "endpoints": ENDPOINTS,
    }))
    .into_response())
}

// --- namespaces ---------------------------------------------------------------------------------

/// `GET /v1/{prefix}/namespaces?parent=&pageToken=&pageSize=`.
pub async fn list_namespaces(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
) -> RestResult<Response> {
    let (_, query) = begin(&app, &headers, Access::Read, params, query)?;
    let page = PageRequest::parse(
        query.get("pageToken").map(String::as_str),
        query.get("pageSize").map(String::as_str),
    )?;
    let parent = match query.get("parent") {
        Some(p) if !p.is_empty() => Some(parse_namespace(p)?),
        _ => None,
    };
    let all = catalog(&app).list_namespaces(parent.as_ref()).await?;
    let sep = NAMESPACE_SEPARATOR.to_string();
    let (namespaces, next) = page.page(all, |n| n.clone().inner().join(&sep));
    let namespaces: Vec<Vec<String>> = namespaces.into_iter().map(NamespaceIdent::inner).collect();
    Ok(axum::Json(json!({"namespaces": namespaces, "next-page-token": next})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespaceRequest {
    namespace: Vec<String>,
    #[serde(default)]
    properties: HashMap<String, String>,
}

/// `POST /v1/{prefix}/namespaces`.
pub async fn create_namespace(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
    body: Result<RestJson<CreateNamespaceRequest>, RestError>,
) -> RestResult<Response> {
    begin(&app, &headers, Access::Write, params, query)?;
    let RestJson(req) = body?;
    let ns = namespace_from_levels(req.namespace)?;
    if req.properties.contains_key("exists") {
        return Err(RestError::bad_request(
            "property \"exists\" is reserved by the catalog layout",
        ));
    }
    let created = catalog(&app).create_namespace(&ns, req.properties).await?;
    Ok(
        axum::Json(json!({"namespace": created.name().clone().inner(), "properties": created.properties()}))
            .into_response(),
    )
}

/// `GET /v1/{prefix}/namespaces/{namespace}`.
pub async fn load_namespace(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Read, params, query)?;
    let ns = catalog(&app).get_namespace(&path.namespace()?).await?;
    Ok(axum::Json(json!({"namespace": ns.name().clone().inner(), "properties": ns.properties()})).into_response())
}

/// `HEAD /v1/{prefix}/namespaces/{namespace}`: 204 or 404.
pub async fn namespace_exists(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Read, params, query)?;
    let ns = path.namespace()?;
    if catalog(&app).namespace_exists(&ns).await? {
        Ok(no_content())
    } else {
        Err(RestError::from(iceberg::Error::new(
            iceberg::ErrorKind::NamespaceNotFound,
            format!("namespace {} does not exist", ns.join(".")),
        )))
    }
}

/// `DELETE /v1/{prefix}/namespaces/{namespace}`: only an empty namespace (no tables, no children).
pub async fn drop_namespace(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Write, params, query)?;
    let ns = path.namespace()?;
    let cat = catalog(&app);
    let tables = cat.list_tables(&ns).await?;
    let children = cat.list_namespaces(Some(&ns)).await?;
    if !tables.is_empty() || !children.is_empty() {
        return Err(RestError::new(
            StatusCode::CONFLICT,
            "NamespaceNotEmptyException",
            format!(
                "namespace {} is not empty: {} table(s), {} child namespace(s)",
                ns.join("."),
                tables.len(),
                children.len()
            ),
        ));
    }
    cat.drop_namespace(&ns).await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateNamespacePropertiesRequest {
    #[serde(default)]
    removals: Vec<String>,
    #[serde(default)]
    updates: HashMap<String, String>,
}

/// `POST /v1/{prefix}/namespaces/{namespace}/properties`.
pub async fn update_namespace_properties(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
    body: Result<RestJson<UpdateNamespacePropertiesRequest>, RestError>,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Write, params, query)?;
    let RestJson(req) = body?;
    let ns = path.namespace()?;
    if let Some(k) = req.removals.iter().find(|k| req.updates.contains_key(*k)) {
        return Err(RestError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnprocessableEntityException",
            format!("property {k:?} is both updated and removed"),
        ));
    }
    let (removed, missing) = catalog(&app)
        .update_namespace_properties(&ns, &req.removals, &req.updates)
        .await?;
    let mut updated: Vec<&String> = req.updates.keys().collect();
    updated.sort();
    Ok(axum::Json(json!({"updated": updated, "removed": removed, "missing": missing})).into_response())
}

// --- tables -------------------------------------------------------------------------------------

/// The spec's `LoadTableResult` (a `null` location for a staged table), with the storage
/// settings the caller needs to read the table's files ([`storage_config`]).
fn load_table_result(
    app: &RestState,
    headers: &HeaderMap,
    location: Option<&str>,
    metadata: &TableMetadata,
) -> Response {
    let config = storage_config(app, headers);
    axum::Json(json!({"metadata-location": location, "metadata": metadata, "config": config})).into_response()
}

/// The FileIO properties a client needs for this catalog's warehouse: nothing for a local one;
/// for `s3://` the endpoint, region and path style, and the credentials too when
/// `[catalog.s3] vend_credentials = true` and the caller may write (floe has one set of
/// credentials, which can write: a read-only token never gets them, or it could write to the
/// bucket directly). With no tokens configured every caller may write.
pub(crate) fn storage_config(app: &RestState, headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let Some(s3) = &app.config.s3 else {
        return out;
    };
    let mut props = s3.client_props();
    let vend = app.config.catalog.s3.as_ref().is_some_and(|c| c.vend_credentials);
    if vend && crate::auth::require(&app.config.auth, headers, "write").is_ok() {
        props.extend(s3.credential_props());
    }
    for (k, v) in props {
        out.insert(k, serde_json::Value::String(v));
    }
    out
}

/// `GET /v1/{prefix}/namespaces/{namespace}/tables?pageToken=&pageSize=`.
pub async fn list_tables(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
) -> RestResult<Response> {
    let (path, query) = begin(&app, &headers, Access::Read, params, query)?;
    let page = PageRequest::parse(
        query.get("pageToken").map(String::as_str),
        query.get("pageSize").map(String::as_str),
    )?;
    let all = catalog(&app).list_tables(&path.namespace()?).await?;
    let (tables, next) = page.page(all, |t| t.name().to_string());
    let identifiers: Vec<TableIdentifier> = tables.iter().map(TableIdentifier::from_ident).collect();
    Ok(axum::Json(json!({"identifiers": identifiers, "next-page-token": next})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CreateTableRequest {
    name: String,
    location: Option<String>,
    schema: Schema,
    partition_spec: Option<UnboundPartitionSpec>,
    write_order: Option<SortOrder>,
    #[serde(default)]
    stage_create: bool,
    #[serde(default)]
    properties: HashMap<String, String>,
}

/// `POST /v1/{prefix}/namespaces/{namespace}/tables`, with `stage-create` answering the metadata
/// of a table that a later `assert-create` commit creates.
pub async fn create_table(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
    body: Result<RestJson<CreateTableRequest>, RestError>,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Write, params, query)?;
    let RestJson(mut req) = body?;
    let ns = path.namespace()?;
    // The name rule and the location rule are the catalog's (`FloeCatalog::stage_table` /
    // `create_table`): a refusal is a 400 that names the rule.
    let name = check_table_name(&req.name)?;
    let format_version = match req.properties.remove("format-version").as_deref() {
        None | Some("2") => FormatVersion::V2,
        Some("1") => FormatVersion::V1,
        Some("3") => FormatVersion::V3,
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "invalid format-version {other:?}: 1, 2 or 3"
            )));
        }
    };
    let creation = TableCreation {
        name,
        location: req.location,
        schema: req.schema,
        partition_spec: req.partition_spec,
        sort_order: req.write_order,
        properties: req.properties,
        format_version,
    };
    let cat = catalog(&app);
    if req.stage_create {
        let metadata = cat.stage_table(&ns, creation).await?;
        return Ok(load_table_result(&app, &headers, None, &metadata));
    }
    let table = cat.create_table(&ns, creation).await?;
    Ok(load_table_result(
        &app,
        &headers,
        table.metadata_location(),
        table.metadata(),
    ))
}

/// `GET /v1/{prefix}/namespaces/{namespace}/tables/{table}`.
pub async fn load_table(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
) -> RestResult<Response> {
    let (path, query) = begin(&app, &headers, Access::Read, params, query)?;
    if let Some(s) = query.get("snapshots")
        && s != "all"
        && s != "refs"
    {
        return Err(RestError::bad_request(format!("invalid snapshots {s:?}: all or refs")));
    }
    let (location, metadata) = catalog(&app).load_metadata(&path.table()?).await?;
    Ok(load_table_result(&app, &headers, Some(&location), &metadata))
}

/// `HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}`: 204 or 404.
pub async fn table_exists(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Read, params, query)?;
    let ident = path.table()?;
    if catalog(&app).table_exists(&ident).await? {
        Ok(no_content())
    } else {
        Err(RestError::from(iceberg::Error::new(
            iceberg::ErrorKind::TableNotFound,
            format!("table {ident} does not exist"),
        )))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitTableRequest {
    identifier: Option<TableIdentifier>,
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
}

/// An outside commit must not carry floe's sink keys: they would move a sink's position (only
/// floe's sinks commit those, through the same catalog but not over REST).
fn refuse_sink_keys(ident: &TableIdent, updates: &[TableUpdate]) -> RestResult<()> {
    if carries_sink_keys(updates) {
        return Err(RestError::bad_request(format!(
            "commit to {ident}: the snapshot summary keys floe.pipeline, floe.sink, floe.position.* and floe.attempt \
             are reserved for floe's own sinks"
        )));
    }
    Ok(())
}

/// `POST /v1/{prefix}/namespaces/{namespace}/tables/{table}`: requirements and updates, one
/// compare-and-swap ([`FloeCatalog::commit_changes`]).
pub async fn commit_table(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
    body: Result<RestJson<CommitTableRequest>, RestError>,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Write, params, query)?;
    let RestJson(req) = body?;
    let ident = path.table()?;
    if let Some(id) = &req.identifier
        && id.to_ident()? != ident
    {
        return Err(RestError::bad_request(format!(
            "the body's identifier {}.{} is not the table of the path {ident}",
            id.namespace.join("."),
            id.name
        )));
    }
    refuse_sink_keys(&ident, &req.updates)?;
    let committed = catalog(&app)
        .commit_changes(vec![TableChange {
            ident,
            requirements: req.requirements,
            updates: req.updates,
        }])
        .await?
        .pop()
        .expect("one change, one result");
    Ok(
        axum::Json(json!({"metadata-location": committed.metadata_location, "metadata": committed.metadata}))
            .into_response(),
    )
}

/// `DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}?purgeRequested=`: drops the
/// catalog entry; with `purgeRequested=true` also deletes the table's files.
pub async fn drop_table(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
) -> RestResult<Response> {
    let (path, query) = begin(&app, &headers, Access::Write, params, query)?;
    // PyIceberg sends `True` / `False`.
    let purge = match query.get("purgeRequested").map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            let other = &query["purgeRequested"];
            return Err(RestError::bad_request(format!(
                "invalid purgeRequested {other:?}: true or false"
            )));
        }
    };
    let ident = path.table()?;
    if purge {
        catalog(&app).purge_table(&ident).await?;
    } else {
        catalog(&app).drop_table(&ident).await?;
    }
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegisterTableRequest {
    name: String,
    metadata_location: String,
    #[serde(default)]
    overwrite: bool,
}

/// `POST /v1/{prefix}/namespaces/{namespace}/register`.
pub async fn register_table(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
    body: Result<RestJson<RegisterTableRequest>, RestError>,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Write, params, query)?;
    let RestJson(req) = body?;
    let ident = TableIdent::new(path.namespace()?, check_table_name(&req.name)?);
    // The catalog checks the name, that the file is a regular file inside the warehouse of at
    // most `MAX_METADATA_BYTES` and is table metadata whose own location is inside too: each
    // refusal is a 400 that quotes the location as sent, never a resolved host path.
    let table = catalog(&app)
        .register_table_at(&ident, &req.metadata_location, req.overwrite)
        .await?;
    Ok(load_table_result(
        &app,
        &headers,
        table.metadata_location(),
        table.metadata(),
    ))
}

/// `POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics`: accepted (204) for an
/// existing table; floe does not keep the reports.
pub async fn report_metrics(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
    body: Result<RestJson<Value>, RestError>,
) -> RestResult<Response> {
    let (path, _) = begin(&app, &headers, Access::Read, params, query)?;
    let RestJson(report) = body?;
    if !report.get("report-type").is_some_and(Value::is_string) {
        return Err(RestError::bad_request(
            "a metrics report is a JSON object with a \"report-type\"",
        ));
    }
    let ident = path.table()?;
    if !catalog(&app).table_exists(&ident).await? {
        return Err(RestError::from(iceberg::Error::new(
            iceberg::ErrorKind::TableNotFound,
            format!("table {ident} does not exist"),
        )));
    }
    tracing::debug!(table = %ident, report_type = %report["report-type"], "metrics report");
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameTableRequest {
    source: TableIdentifier,
    destination: TableIdentifier,
}

/// `POST /v1/{prefix}/tables/rename`.
pub async fn rename_table(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
    body: Result<RestJson<RenameTableRequest>, RestError>,
) -> RestResult<Response> {
    begin(&app, &headers, Access::Write, params, query)?;
    let RestJson(req) = body?;
    let (src, dest) = (req.source.to_ident()?, req.destination.to_ident()?);
    catalog(&app).rename_table(&src, &dest).await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CommitTransactionRequest {
    table_changes: Vec<CommitTableRequest>,
}

/// `POST /v1/{prefix}/transactions/commit`: several tables, all or nothing — one SQLite
/// transaction swaps every table's pointer ([`FloeCatalog::commit_changes`]).
pub async fn commit_transaction(
    State(app): State<RestState>,
    headers: HeaderMap,
    params: Params,
    query: QueryParams,
    body: Result<RestJson<CommitTransactionRequest>, RestError>,
) -> RestResult<Response> {
    begin(&app, &headers, Access::Write, params, query)?;
    let RestJson(req) = body?;
    if req.table_changes.is_empty() {
        return Err(RestError::bad_request("table-changes is empty"));
    }
    let mut changes = Vec::with_capacity(req.table_changes.len());
    for change in req.table_changes {
        let Some(id) = &change.identifier else {
            return Err(RestError::bad_request(
                "every entry of table-changes needs an identifier",
            ));
        };
        let ident = id.to_ident()?;
        refuse_sink_keys(&ident, &change.updates)?;
        changes.push(TableChange {
            ident,
            requirements: change.requirements,
            updates: change.updates,
        });
    }
    catalog(&app).commit_changes(changes).await?;
    Ok(no_content())
}

#[cfg(test)]
#[path = "fuzz.rs"]
mod fuzz;
