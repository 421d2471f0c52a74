//! `UpstreamError`: every way a request to an upstream registry can fail, and the mapping of
//! low-level HTTP client errors onto it. Owns the "should the mirror serve stale content"
//! decision (`is_unavailable`); knows nothing about how requests are made.

use std::error::Error as StdError;
use std::io;

/// Why a request to an upstream registry failed. Cloneable, so that every waiter on a shared
/// fetch can be told the same failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// 404, whatever the error code inside (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN…).
    #[error("not found upstream")]
    NotFound,
    /// 401 even after authenticating, or the token endpoint refused us.
    #[error("unauthorized by upstream: {0}")]
    Unauthorized(String),
    /// 403.
    #[error("access denied by upstream: {0}")]
    Denied(String),
    /// 429; `retry_after` is the upstream's Retry-After header, passed through.
    #[error("upstream rate limit reached (retry after: {})", retry_after.as_deref().unwrap_or("unknown"))]
    TooManyRequests { retry_after: Option<String> },
    /// Any other unexpected status (5xx…), with a short excerpt of the body.
    #[error("upstream answered {0}: {1}")]
    Status(u16, String),
    /// No answer in time; says which stage timed out.
    #[error("upstream timed out ({0})")]
    Timeout(&'static str),
    /// DNS failure, connection refused or reset before an answer, TLS failure.
    #[error("cannot reach upstream: {0}")]
    Connect(String),
    /// The body broke off: truncated, or reset mid-body.
    #[error("upstream body failed: {0}")]
    Body(String),
    /// A manifest (or tag list) bigger than we accept.
    #[error("upstream response too large")]
    TooLarge,
    /// Bad URL, bad header, bad input.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Not sent: the mirror is offline (`proxy.offline`, or switched off on the debug listener).
    #[error("the mirror is offline and does not contact its upstream")]
    Offline,
    /// Not sent: the upstream's circuit breaker is open after repeated failures.
    #[error("upstream is failing ({last_error}); not asked again for {retry_after_secs}s")]
    CircuitOpen {
        retry_after_secs: u64,
        last_error: String,
    },
}

impl UpstreamError {
    /// True when the upstream could not be asked properly (timeout, unreachable, 5xx, 429):
    /// the cases where a mirror should serve what it has cached, even if stale.
    pub fn is_unavailable(&self) -> bool {
        match self {
            UpstreamError::Timeout(_)
            | UpstreamError::Connect(_)
            | UpstreamError::TooManyRequests { .. }
            | UpstreamError::Offline
            | UpstreamError::CircuitOpen { .. } => true,
            UpstreamError::Status(code, _) => *code >= 500,
            _ => false,
        }
    }

    /// Maps an error of the pooled HTTP client (no response headers came) onto our kinds.
    pub(crate) fn from_client(err: &hyper_util::client::legacy::Error) -> UpstreamError {
        let chain = error_chain(err);
        if err.is_connect() && has_io_kind(err, io::ErrorKind::TimedOut) {
            UpstreamError::Timeout("connect")
        } else if err.is_connect() {
            UpstreamError::Connect(chain)
        } else {
            UpstreamError::Connect(format!("no answer: {chain}"))
        }
    }

    /// Maps an error while reading a body onto `Body`, saying how far we got.
    pub(crate) fn from_body(err: &hyper::Error, received: u64, expected: Option<u64>) -> Self {
        let chain = error_chain(err);
        match expected {
            Some(len) if received < len => UpstreamError::Body(format!(
                "truncated: received {received} of {len} bytes ({chain})"
            )),
            _ => UpstreamError::Body(format!("reset after {received} bytes: {chain}")),
        }
    }
}

/// The messages of an error and its sources, joined with ": ".
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = inner.source();
    }
    out
}

/// Whether any error in the chain is an I/O error of the given kind.
fn has_io_kind(err: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_cases() {
        assert!(UpstreamError::Timeout("connect").is_unavailable());
        assert!(UpstreamError::Connect("refused".into()).is_unavailable());
        assert!(UpstreamError::Status(503, String::new()).is_unavailable());
        assert!(UpstreamError::TooManyRequests { retry_after: None }.is_unavailable());
        assert!(!UpstreamError::Status(400, String::new()).is_unavailable());
        assert!(!UpstreamError::NotFound.is_unavailable());
        assert!(!UpstreamError::Unauthorized(String::new()).is_unavailable());
        assert!(!UpstreamError::TooLarge.is_unavailable());
        assert!(UpstreamError::Offline.is_unavailable());
        assert!(
            UpstreamError::CircuitOpen {
                retry_after_secs: 1,
                last_error: String::new()
            }
            .is_unavailable()
        );
    }
}
