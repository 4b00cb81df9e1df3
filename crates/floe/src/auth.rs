//! Bearer-token auth: tokens of `[[auth.tokens]]` and tokens created at run time (`floe tokens
//! create`, docs/security.md). With no token of either kind nothing is checked. With tokens, a
//! request needs `Authorization: Bearer <token>` whose scopes include the one asked for, or
//! `admin` (and `send:*` for any `send:<stream>`): 401 when the token is missing, unknown or
//! revoked, 403 when its scopes fall short.
//!
//! A token created at run time reads `floe_<id>_<secret>`: `id` finds its row, and the SHA-256 of
//! `secret` is compared, in constant time, with the hash stored for it; the secret itself is
//! never stored or logged.

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, RuntimeToken};
use crate::error::Error;

/// The text before a run-time token's id.
pub const TOKEN_PREFIX: &str = "floe_";

/// Checks that the request carries a token with `scope` (or `admin`).
pub fn require(auth: &AuthConfig, headers: &HeaderMap, scope: &str) -> Result<(), Error> {
    if auth.tokens.is_empty() && auth.runtime.is_empty() {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(Error::Auth {
            status: StatusCode::UNAUTHORIZED,
            message: "this route needs Authorization: Bearer <token>".into(),
        });
    };
    let scopes = match scopes_of(auth, presented) {
        Some(s) => s,
        None => {
            return Err(Error::Auth {
                status: StatusCode::UNAUTHORIZED,
                message: "unknown or revoked token".into(),
            });
        }
    };
    if grants(&scopes, scope) {
        Ok(())
    } else {
        Err(Error::Auth {
            status: StatusCode::FORBIDDEN,
            message: format!("the token lacks scope {scope:?} (it has {scopes:?})"),
        })
    }
}

/// Whether `scopes` include `wanted`.
pub fn grants(scopes: &[String], wanted: &str) -> bool {
    scopes
        .iter()
        .any(|s| s == wanted || s == "admin" || (s == "send:*" && wanted.starts_with("send:")))
}

/// The scopes of the token `presented`, `None` when it is no valid token.
fn scopes_of(auth: &AuthConfig, presented: &str) -> Option<Vec<String>> {
    // Every configured token is compared (no early exit on a match's position).
    let mut found = None;
    for t in &auth.tokens {
        if constant_time_eq(t.token.as_bytes(), presented.as_bytes()) {
            found = Some(t.scopes.clone());
        }
    }
    if found.is_some() {
        return found;
    }
    let (id, secret) = split_token(presented)?;
    let token = auth.runtime.get(id)?;
    constant_time_eq(&token.secret_sha256, &sha256(secret)).then_some(token.scopes)
}

/// `floe_<id>_<secret>` → `(id, secret)`.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// SHA-256 of `secret`.
pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new run-time token: `(id, the token's text, what is kept of it)`. The id and secret come
/// from random (version 4) UUIDs: 64 bits of id, 244 bits of secret.
pub fn new_token(scopes: Vec<String>) -> (String, String, RuntimeToken) {
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let text = format!("{TOKEN_PREFIX}{id}_{secret}");
    let kept = RuntimeToken {
        secret_sha256: sha256(&secret),
        scopes,
    };
    (id, text, kept)
}

/// Hex of a hash, as stored.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored hex hash back to bytes.
pub fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn with(h: &mut HeaderMap, token: &str) {
        h.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    }

    #[test]
    fn statuses() {
        let auth = AuthConfig {
            tokens: vec![TokenConfig {
                token: "s3cret".into(),
                scopes: vec!["read".into()],
            }],
            ..AuthConfig::default()
        };
        let mut h = HeaderMap::new();
        assert_eq!(
            require(&auth, &h, "read").unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        with(&mut h, "nope");
        assert_eq!(
            require(&auth, &h, "read").unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        with(&mut h, "s3cret");
        assert!(require(&auth, &h, "read").is_ok());
        assert_eq!(
            require(&auth, &h, "send:events").unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        assert!(require(&AuthConfig::default(), &HeaderMap::new(), "admin").is_ok());
    }

    #[test]
    fn run_time_tokens_count_at_once_and_revocation_too() {
        let auth = AuthConfig::default();
        let (id, text, kept) = new_token(vec!["send:*".into()]);
        let shared = auth.clone();
        shared.runtime.insert(id.clone(), kept.clone());
        // The clone shares the set: auth is on for both.
        let mut h = HeaderMap::new();
        assert_eq!(
            require(&auth, &h, "read").unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        with(&mut h, &text);
        assert!(require(&auth, &h, "send:clicks").is_ok());
        assert_eq!(require(&auth, &h, "read").unwrap_err().status(), StatusCode::FORBIDDEN);
        // The right id with another secret is no token.
        with(&mut h, &format!("{TOKEN_PREFIX}{id}_{}", "0".repeat(64)));
        assert_eq!(
            require(&auth, &h, "send:x").unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(unhex(&hex(&kept.secret_sha256)), Some(kept.secret_sha256));
        shared.runtime.remove(&id);
        with(&mut h, &text);
        assert!(
            require(&auth, &h, "send:clicks").is_ok(),
            "no token left: auth is off again"
        );
    }
}
