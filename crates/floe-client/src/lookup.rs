//! Point lookups: `GET /v1/tables/{ns.table}/rows` (docs/query.md, "Point lookups").

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Client, Error};

/// A point lookup: rows where every `column = value` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// `(column, value)` equalities, values as text (the server parses them by the column's type).
    pub predicates: Vec<(String, String)>,
    /// Most rows answered (the server's default: 100).
    pub limit: Option<usize>,
    /// Read this snapshot instead of the current one.
    pub snapshot_id: Option<i64>,
    /// Read the snapshot current at this time (RFC 3339 or epoch milliseconds).
    pub as_of: Option<String>,
}

/// A lookup's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LookupAnswer {
    /// The rows found, as JSON objects.
    pub rows: Vec<Value>,
    /// `table`, `snapshot_id`, `count`, `stats` and whatever else the server answered.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Client {
    /// `GET /v1/tables/{table}/rows?…`: the rows of `table` (`namespace.table`) that `lookup`
    /// selects.
    pub async fn lookup(&self, table: &str, lookup: &Lookup) -> Result<LookupAnswer, Error> {
        let mut url = self.url(&["v1", "tables", table, "rows"]);
        {
            let mut query = url.query_pairs_mut();
            for (column, value) in &lookup.predicates {
                query.append_pair(column, value);
            }
            if let Some(n) = lookup.limit {
                query.append_pair("limit", &n.to_string());
            }
            if let Some(id) = lookup.snapshot_id {
                query.append_pair("snapshot_id", &id.to_string());
            }
            if let Some(t) = &lookup.as_of {
                query.append_pair("as_of", t);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.call_json(Method::GET, url, None).await
    }
}
