//! floe's catalog over the **Iceberg REST catalog API** (apache/iceberg
//! `open-api/rest-catalog-open-api.yaml`), mounted under `/iceberg` on floe's listener, so Spark,
//! PyIceberg, DuckDB and Trino connect with a URI (`http://host:port/iceberg`) and nothing else.
//!
//! Every route is a thin translation onto [`floe_catalog::FloeCatalog`] — the same catalog, the
//! same SQLite file and the same compare-and-swap commit path that floe's own sinks use
//! ([`FloeCatalog::commit_changes`](floe_catalog::FloeCatalog::commit_changes)). So an
//! outside engine's commit and a sink commit race on one `metadata_location` swap, and the catalog
//! behaves the same whether it is reached over REST or as the SQLite file.
//!
//! - `GET /v1/config` answers `overrides.prefix = <catalog name>` and lists [`ENDPOINTS`]; the
//!   routes are served both with that prefix (`/v1/floe/namespaces`) and without one
//!   (`/v1/namespaces`), for clients that skip the prefix. Any other prefix is a 404.
//! - Namespaces travel in paths as levels joined by `%1F` (and in the `parent` query parameter).
//! - Lists page with `pageToken` / `pageSize` and answer `next-page-token` (see [`paging`]).
//! - Auth: the `[[auth.tokens]]` bearer tokens; reads need `read`, `write` or `admin`, changes
//!   `write` or `admin` (see [`Access`]).
//!
//! Design notes, limitations: `docs/rest-catalog.md`.

mod error;
mod handlers;
pub mod paging;

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use floe_catalog::FloeCatalog;
use iceberg::{NamespaceIdent, TableIdent};
use serde::de::DeserializeOwned;

pub use error::{RestError, RestResult};

use crate::config::{AuthConfig, CatalogConfig};

/// The separator of namespace levels in paths and in the `parent` query parameter (the spec's
/// `%1F`, decoded).
pub const NAMESPACE_SEPARATOR: char = '\u{1f}';

/// Every route floe serves, in the spec's `"METHOD /v1/{prefix}/…"` form; `GET /v1/config`
/// answers this list as `endpoints`.
pub const ENDPOINTS: &[&str] = &[
    "GET /v1/{prefix}/namespaces",
    "POST /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "DELETE /v1/{prefix}/namespaces/{namespace}",
    "POST /v1/{prefix}/namespaces/{namespace}/properties",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "POST /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/register",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    "POST /v1/{prefix}/tables/rename",
    "POST /v1/{prefix}/transactions/commit",
];

/// What the REST catalog needs of the node: the catalog, its name and the tokens.
#[derive(Clone)]
pub struct RestState {
    /// The Iceberg catalog.
    pub catalog: FloeCatalog,
    /// The settings the routes read.
    pub config: RestConfig,
}

/// The settings the REST routes read (`[catalog]`, `[auth]`).
#[derive(Clone)]
pub struct RestConfig {
    /// `[catalog]`: its name is the REST prefix.
    pub catalog: CatalogConfig,
    /// `[auth]`: the tokens.
    pub auth: AuthConfig,
    /// How the `s3://` warehouse is reached (`None` for a local one): what `config` answers hand
    /// out.
    pub s3: Option<floe_catalog::S3Options>,
}

/// The routes, to be nested under `/iceberg`, on any router state that gives a [`RestState`].
pub fn router<S>() -> Router<S>
where
    RestState: axum::extract::FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    use handlers::*;
    let mut r = Router::new().route("/v1/config", get(config));
    for base in ["/v1", "/v1/{prefix}"] {
        r = r
            .route(
                &format!("{base}/namespaces"),
                get(list_namespaces).post(create_namespace),
            )
            .route(
                &format!("{base}/namespaces/{{namespace}}"),
                get(load_namespace).head(namespace_exists).delete(drop_namespace),
            )
            .route(
                &format!("{base}/namespaces/{{namespace}}/properties"),
                post(update_namespace_properties),
            )
            .route(
                &format!("{base}/namespaces/{{namespace}}/tables"),
                get(list_tables).post(create_table),
            )
            .route(
                &format!("{base}/namespaces/{{namespace}}/tables/{{table}}"),
                get(load_table).head(table_exists).post(commit_table).delete(drop_table),
            )
            .route(
                &format!("{base}/namespaces/{{namespace}}/register"),
                post(register_table),
            )
            .route(
                &format!("{base}/namespaces/{{namespace}}/tables/{{table}}/metrics"),
                post(report_metrics),
            )
            .route(&format!("{base}/tables/rename"), post(rename_table))
            .route(&format!("{base}/transactions/commit"), post(commit_transaction));
    }
    r.fallback(|req: Request| async move { RestError::no_route(req.method().as_str(), req.uri().path()) })
        .method_not_allowed_fallback(|req: Request| async move {
            RestError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowedException",
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            )
        })
}

/// What a route needs from the caller's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Config, list, load, exists, metrics reports: scope `read`, `write` or `admin`.
    Read,
    /// Create, commit, drop, rename, register, properties: scope `write` or `admin`.
    Write,
}

/// Checks the bearer token for `access` (`docs/security.md`, "With `[[auth.tokens]]`"). With no
/// tokens configured everything is served, whatever `Authorization` says (PyIceberg sends
/// `Bearer None`).
pub fn authorize(app: &RestState, headers: &HeaderMap, access: Access) -> RestResult<()> {
    let auth = &app.config.auth;
    match access {
        Access::Write => crate::auth::require(auth, headers, "write").map_err(RestError::from),
        Access::Read => match crate::auth::require(auth, headers, "read") {
            Err(e) if e.status() == StatusCode::FORBIDDEN => {
                crate::auth::require(auth, headers, "write").map_err(RestError::from)
            }
            other => other.map_err(RestError::from),
        },
    }
}

/// The largest REST request body (8 MiB): a commit of a wide table's schema plus a snapshot is
/// kilobytes; anything larger is refused with 413 before it is parsed.
pub const MAX_REST_BODY_BYTES: usize = 8 * 1024 * 1024;

/// A JSON body whose parse errors answer 400 `BadRequestException` (not axum's plain-text 422),
/// at most [`MAX_REST_BODY_BYTES`] (413 beyond).
pub struct RestJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for RestJson<T> {
    type Rejection = RestError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            RestError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadRequestException",
                format!("the request body is larger than the REST limit of {MAX_REST_BODY_BYTES} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_REST_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), MAX_REST_BODY_BYTES)
            .await
            .map_err(|e| {
                // A chunked body over the limit: http-body's `LengthLimitError` in the chain.
                let mut over = false;
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(s) = source {
                    over |= s.to_string().contains("length limit exceeded");
                    source = s.source();
                }
                if over {
                    too_large()
                } else {
                    RestError::bad_request(format!("cannot read the request body: {e}"))
                }
            })?;
        parse_body(&bytes).map(RestJson)
    }
}

/// Parses a REST request body: malformed JSON, unknown fields or wrong types are a 400.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> RestResult<T> {
    serde_json::from_slice(bytes).map_err(|e| RestError::bad_request(format!("invalid request body: {e}")))
}

/// Path parameters: `prefix` (checked), `namespace`, `table`.
pub struct RestPath {
    params: HashMap<String, String>,
}

impl RestPath {
    fn new(app: &RestState, params: HashMap<String, String>) -> RestResult<Self> {
        if let Some(prefix) = params.get("prefix")
            && prefix != &app.config.catalog.name
        {
            return Err(RestError::new(
                StatusCode::NOT_FOUND,
                "NotFoundException",
                format!(
                    "unknown prefix {prefix:?}: this catalog's prefix is {:?} (GET /v1/config)",
                    app.config.catalog.name
                ),
            ));
        }
        Ok(Self { params })
    }

    /// The `{namespace}` parameter, levels split at `%1F`.
    fn namespace(&self) -> RestResult<NamespaceIdent> {
        parse_namespace(self.params.get("namespace").map(String::as_str).unwrap_or(""))
    }

    /// `{namespace}` and `{table}`.
    fn table(&self) -> RestResult<TableIdent> {
        let name = self.params.get("table").map(String::as_str).unwrap_or("");
        Ok(TableIdent::new(self.namespace()?, check_table_name(name)?))
    }
}

/// Parses a `%1F`-joined namespace (already percent-decoded).
pub fn parse_namespace(joined: &str) -> RestResult<NamespaceIdent> {
    namespace_from_levels(joined.split(NAMESPACE_SEPARATOR).map(str::to_string).collect())
}

/// A namespace to look up: non-empty levels without control characters and at most
/// [`MAX_NAME_BYTES`](floe_catalog::names::MAX_NAME_BYTES) each. Creating a namespace (or a
/// table in it) applies the full name rule ([`floe_catalog::names`]) in the catalog; lookups do
/// not, so a table another client named outside the rule stays reachable.
pub fn namespace_from_levels(levels: Vec<String>) -> RestResult<NamespaceIdent> {
    if levels.is_empty() {
        return Err(RestError::bad_request("a namespace needs at least one level"));
    }
    if levels.len() > floe_catalog::names::MAX_NAMESPACE_LEVELS {
        floe_catalog::names::validate_namespace(&NamespaceIdent::from_vec(levels)?)?;
        unreachable!("more levels than allowed is invalid");
    }
    for level in &levels {
        check_lookup_name("namespace level", level)?;
    }
    NamespaceIdent::from_vec(levels).map_err(RestError::from)
}

/// A table name to look up (see [`namespace_from_levels`]).
pub fn check_table_name(name: &str) -> RestResult<String> {
    check_lookup_name("table name", name)?;
    Ok(name.to_string())
}

fn check_lookup_name(what: &str, name: &str) -> RestResult<()> {
    if name.is_empty() || name.len() > floe_catalog::names::MAX_NAME_BYTES || name.chars().any(char::is_control) {
        let shown: String = name.chars().take(64).collect();
        return Err(RestError::bad_request(format!(
            "invalid {what} {shown:?}: {}",
            floe_catalog::names::NAME_RULE
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_split_at_unit_separator() {
        let ns = parse_namespace("a\u{1f}b").unwrap();
        assert_eq!(ns.inner(), vec!["a".to_string(), "b".to_string()]);
        // A dot inside one level is legal (stored escaped); empty levels and control
        // characters are not.
        assert_eq!(parse_namespace("new.db").unwrap().inner(), vec!["new.db".to_string()]);
        for bad in ["", "a\u{1f}", "\u{1f}b", "a\u{0}b", "a\nb"] {
            let e = parse_namespace(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn endpoints_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for e in ENDPOINTS {
            let (method, path) = e.split_once(' ').unwrap();
            assert!(["GET", "HEAD", "POST", "DELETE"].contains(&method), "{e}");
            assert!(path.starts_with("/v1/{prefix}/"), "{e}");
            assert!(seen.insert(*e), "{e} twice");
        }
    }
}
