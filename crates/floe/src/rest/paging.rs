//! Paging of list answers (`pageToken`, `pageSize` → `next-page-token`).
//!
//! Lists are sorted by a key (the `%1F`-joined namespace, or the table name). A page token is
//! the key of the last item of the previous page, URL-safe base64 encoded; the next page starts
//! after it. So pages stay correct when items are created or dropped between requests (nothing
//! is skipped or repeated that existed throughout). As the spec asks, without a `pageToken` the
//! whole list comes in one answer (`pageSize` is then ignored); an empty `pageToken` starts paging
//! from the beginning (clients send it to announce that they page); without `pageSize` the rest of
//! the list comes in one page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{RestError, RestResult};

/// The largest page floe answers; a larger `pageSize` is capped to it.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A parsed page request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Start after this key.
    pub after: Option<String>,
    /// At most this many items.
    pub size: Option<usize>,
}

impl PageRequest {
    /// Parses the `pageToken` and `pageSize` query parameters.
    pub fn parse(token: Option<&str>, size: Option<&str>) -> RestResult<Self> {
        let after = match token {
            None | Some("") => None,
            Some(t) => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(t)
                    .map_err(|_| RestError::bad_request(format!("invalid pageToken {t:?}")))?;
                Some(String::from_utf8(bytes).map_err(|_| RestError::bad_request(format!("invalid pageToken {t:?}")))?)
            }
        };
        let size = match size {
            None => None,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if n >= 1 => Some(n.min(MAX_PAGE_SIZE)),
                _ => {
                    return Err(RestError::bad_request(format!(
                        "invalid pageSize {s:?}: a positive integer"
                    )));
                }
            },
        };
        // Paging only when the client announced it with a pageToken (empty for the first page).
        let size = if token.is_some() { size } else { None };
        Ok(Self { after, size })
    }

    /// One page of `items` (sorted by `key`, ascending) and the token of the next page, if any.
    pub fn page<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
        items.sort_by_key(&key);
        if let Some(after) = &self.after {
            items.retain(|i| key(i).as_str() > after.as_str());
        }
        match self.size {
            Some(n) if items.len() > n => {
                items.truncate(n);
                let next = items.last().map(|i| URL_SAFE_NO_PAD.encode(key(i)));
                (items, next)
            }
            _ => (items, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_everything_once() {
        let items: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        let mut seen = Vec::new();
        let mut token: Option<String> = Some(String::new());
        while let Some(t) = token {
            let req = PageRequest::parse(Some(&t), Some("3")).unwrap();
            let (page, next) = req.page(items.clone(), |s| s.clone());
            assert!(page.len() <= 3);
            seen.extend(page);
            token = next;
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(PageRequest::parse(None, Some("0")).is_err());
        assert!(PageRequest::parse(None, Some("-1")).is_err());
        assert!(PageRequest::parse(None, Some("x")).is_err());
        assert!(PageRequest::parse(Some("!!"), None).is_err());
        assert_eq!(PageRequest::parse(None, None).unwrap(), PageRequest::default());
        // Without a pageToken the whole list is one answer.
        assert_eq!(PageRequest::parse(None, Some("2")).unwrap(), PageRequest::default());
    }
}
