//! When a request is tried again, and how long the client waits before it does.

use std::time::Duration;

/// How often and how patiently a request is retried.
///
/// Retried: `429` (backpressure) and `503` (unavailable) answers, waiting what their
/// `Retry-After` says (at most `max_delay`) or else the backoff; and failed connections. A request
/// that is safe to repeat (a `GET`, and an ingest request, which carries an `Idempotency-Key`)
/// is also retried after a timeout or a connection cut mid-request; a change (`POST`, `PATCH`,
/// `DELETE` of the control plane) only when the connection could not be made, since it may have
/// taken effect. No other `4xx` and no other `5xx` is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// Wait before the first retry without `Retry-After`; doubled for each further one.
    pub base_delay: Duration,
    /// The longest wait between two tries (also caps `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries, from 250 ms doubling up to 5 s apart: about 4 s of retries for a server that
    /// does not answer, 4 s of backpressure with floe's `Retry-After: 1`.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first), given the answer's `Retry-After`
    /// in seconds when it had one. Without one: `base_delay · 2^(retry-1)`, capped at
    /// `max_delay`, then spread over its upper half so that clients that failed together do
    /// not retry together.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_delay);
        }
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        let full = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let half = full / 2;
        // Uniform in [0, 1): 53 random bits of a fresh v4 UUID.
        let unit = (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(unit)
    }
}

/// A `Retry-After` header value in seconds (the delay form; an HTTP date is ignored).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_and_honours_retry_after() {
        let p = RetryPolicy::default();
        for retry in 1..=40 {
            let full = p
                .base_delay
                .saturating_mul(1u32.checked_shl(retry - 1).unwrap_or(u32::MAX))
                .min(p.max_delay);
            let d = p.delay(retry, None);
            assert!(
                d >= full / 2 && d <= full,
                "retry {retry}: {d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
        assert_eq!(p.delay(1, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(p.delay(1, Some(Duration::from_secs(3600))), p.max_delay);
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
