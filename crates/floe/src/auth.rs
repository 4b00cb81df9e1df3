//! Bearer-token auth (`[[auth.tokens]]`). With no tokens configured nothing is checked. With
//! tokens, a request needs `Authorization: Bearer <token>` whose scopes include the one asked
//! for, or `admin`: 401 when the token is missing or unknown, 403 when its scopes fall short.

use axum::http::{HeaderMap, StatusCode, header};

use crate::config::AuthConfig;
use crate::error::Error;

/// Checks that the request carries a token with `scope` (or `admin`).
pub fn require(auth: &AuthConfig, headers: &HeaderMap, scope: &str) -> Result<(), Error> {
    if auth.tokens.is_empty() {
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
    let Some(token) = auth
        .tokens
        .iter()
        .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
    else {
        return Err(Error::Auth {
            status: StatusCode::UNAUTHORIZED,
            message: "unknown token".into(),
        });
    };
    if token.scopes.iter().any(|s| s == scope || s == "admin") {
        Ok(())
    } else {
        Err(Error::Auth {
            status: StatusCode::FORBIDDEN,
            message: format!("the token lacks scope {scope:?} (it has {:?})", token.scopes),
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    #[test]
    fn statuses() {
        let auth = AuthConfig {
            tokens: vec![TokenConfig {
                token: "s3cret".into(),
                scopes: vec!["read".into()],
            }],
        };
        let mut h = HeaderMap::new();
        assert_eq!(
            require(&auth, &h, "read").unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(
            require(&auth, &h, "read").unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(require(&auth, &h, "read").is_ok());
        assert_eq!(
            require(&auth, &h, "send:events").unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        assert!(require(&AuthConfig::default(), &HeaderMap::new(), "admin").is_ok());
    }
}
