//! Bearer tokens created at run time (`floe tokens create`), table `floe_tokens` (migration 5):
//!
//! ```text
//! floe_tokens (catalog_name, id) -> secret_sha256, scopes (JSON list), description,
//!                                   created_at_ms, revoked_at_ms
//! ```
//!
//! Only the SHA-256 of a token's secret is stored (hex); the secret itself is shown once, to
//! whoever created it, and never again. The crate stores and lists rows; hashing, the token's
//! text form and the checks are the caller's (`floe`'s auth). A revoked token keeps its row,
//! with `revoked_at_ms` set, so a listing shows what was revoked and when.

use iceberg::Result;
use sqlx::Row;

use crate::catalog::FloeCatalog;
use crate::store::sql_err;

/// One row of `floe_tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The token's public id (part of the token's text).
    pub id: String,
    /// Hex SHA-256 of the token's secret part.
    pub secret_sha256: String,
    /// Its scopes as a JSON list of strings.
    pub scopes: String,
    /// What it is for, as its creator said.
    pub description: String,
    /// When it was created (epoch ms).
    pub created_at_ms: i64,
    /// When it was revoked (epoch ms); `None` while it is valid.
    pub revoked_at_ms: Option<i64>,
}

impl FloeCatalog {
    /// Stores a new token.
    pub async fn create_token(&self, token: &StoredToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO floe_tokens (catalog_name, id, secret_sha256, scopes, description, created_at_ms, revoked_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&self.name)
        .bind(&token.id)
        .bind(&token.secret_sha256)
        .bind(&token.scopes)
        .bind(&token.description)
        .bind(token.created_at_ms)
        .execute(&self.pool)
        .await
        .map_err(sql_err("create token"))?;
        Ok(())
    }

    /// Every stored token (revoked ones too), oldest first.
    pub async fn tokens(&self) -> Result<Vec<StoredToken>> {
        let rows = sqlx::query(
            "SELECT id, secret_sha256, scopes, description, created_at_ms, revoked_at_ms FROM floe_tokens
             WHERE catalog_name = $1 ORDER BY created_at_ms, id",
        )
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("read tokens"))?;
        Ok(rows
            .iter()
            .map(|r| StoredToken {
                id: r.get(0),
                secret_sha256: r.get(1),
                scopes: r.get(2),
                description: r.get(3),
                created_at_ms: r.get(4),
                revoked_at_ms: r.get(5),
            })
            .collect())
    }

    /// Revokes token `id`; whether a valid token of that id was there.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE floe_tokens SET revoked_at_ms = $1 WHERE catalog_name = $2 AND id = $3 AND revoked_at_ms IS NULL",
        )
        .bind(chrono::Utc::now().timestamp_millis())
        .bind(&self.name)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql_err("revoke token"))?
        .rows_affected();
        Ok(changed == 1)
    }
}
