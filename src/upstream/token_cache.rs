//! Bearer tokens of one upstream, cached per scope (`repository:<repo>:pull`) until shortly
//! before they expire, with single-flight fetching: concurrent requests for one scope wait
//! for one token request instead of all hitting the token endpoint. Token values never show
//! in Debug output.

use super::error::UpstreamError;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most we take off a token's lifetime so it is not used right as it expires.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// A bearer token and when we stop using it.
#[derive(Clone)]
pub struct Token {
    value: String,
    use_until: Instant,
}

impl Token {
    /// A token valid for `lifetime` from now; we stop using it a little before (a fifth of
    /// the lifetime, at most 10 s).
    pub fn new(value: String, lifetime: Duration) -> Result<Token, UpstreamError> {
        let margin = (lifetime / 5).min(MAX_EXPIRY_MARGIN);
        let use_until = Instant::now()
            .checked_add(lifetime - margin)
            .ok_or_else(|| UpstreamError::Invalid("token lifetime out of range".into()))?;
        Ok(Token { value, use_until })
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    fn is_fresh(&self) -> bool {
        Instant::now() < self.use_until
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("use_until", &self.use_until)
            .finish()
    }
}

/// One scope's token; the async mutex is held while fetching, which makes fetches
/// single-flight.
type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Tokens by scope.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Slot>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scopes = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("TokenCache")
            .field("scopes", &scopes)
            .finish()
    }
}

impl TokenCache {
    fn slot(&self, scope: &str) -> Slot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.entry(scope.to_string()).or_default().clone()
    }

    /// A fresh token for the scope, if we have one (waits while one is being fetched).
    pub async fn get(&self, scope: &str) -> Option<String> {
        let slot = self.slot(scope);
        let guard = slot.lock().await;
        guard
            .as_ref()
            .filter(|t| t.is_fresh())
            .map(|t| t.value.clone())
    }

    /// A fresh token for the scope: the cached one unless it is `rejected` (the upstream
    /// refused it), else one from `fetch`, which is cached. Only one fetch per scope runs at
    /// a time; callers arriving meanwhile get its result from the cache.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        scope: &str,
        rejected: Option<&str>,
        fetch: F,
    ) -> Result<String, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, UpstreamError>>,
    {
        let slot = self.slot(scope);
        let mut guard = slot.lock().await;
        let usable = |t: &&Token| t.is_fresh() && Some(t.value.as_str()) != rejected;
        if let Some(token) = guard.as_ref().filter(usable) {
            return Ok(token.value.clone());
        }
        *guard = None;
        let token = fetch().await?;
        let value = token.value().to_string();
        *guard = Some(token);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn debug_redacts() {
        let t = Token::new("secret-token".into(), Duration::from_secs(60)).unwrap();
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[tokio::test]
    async fn caches_and_refetches_rejected() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let fetch = |v: &'static str| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Token::new(v.into(), Duration::from_secs(60)) }
        };
        assert_eq!(cache.get("s").await, None);
        assert_eq!(
            cache.get_or_fetch("s", None, || fetch("a")).await.unwrap(),
            "a"
        );
        assert_eq!(
            cache.get_or_fetch("s", None, || fetch("b")).await.unwrap(),
            "a"
        );
        assert_eq!(cache.get("s").await.as_deref(), Some("a"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Rejected token is replaced; a stale `rejected` (already replaced) is not refetched.
        assert_eq!(
            cache
                .get_or_fetch("s", Some("a"), || fetch("c"))
                .await
                .unwrap(),
            "c"
        );
        assert_eq!(
            cache
                .get_or_fetch("s", Some("a"), || fetch("d"))
                .await
                .unwrap(),
            "c"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Scopes are separate.
        assert_eq!(
            cache.get_or_fetch("t", None, || fetch("e")).await.unwrap(),
            "e"
        );
    }

    #[tokio::test]
    async fn expired_tokens_are_not_used() {
        let cache = TokenCache::default();
        let short = || async { Token::new("x".into(), Duration::from_millis(50)) };
        cache.get_or_fetch("s", None, short).await.unwrap();
        assert!(cache.get("s").await.is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get("s").await.is_none());
    }

    #[tokio::test]
    async fn failed_fetch_is_not_cached() {
        let cache = TokenCache::default();
        let failing = || async { Err(UpstreamError::Unauthorized("no".into())) };
        assert!(cache.get_or_fetch("s", None, failing).await.is_err());
        assert!(cache.get("s").await.is_none());
    }
}
