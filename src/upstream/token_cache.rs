//! Bearer tokens of one upstream, cached per scope (`repository:<repo>:pull`) until shortly
//! before they expire (by the token endpoint's `expires_in`, 60 s when absent), with
//! single-flight fetching: concurrent requests for one scope wait for one token request instead
//! of all hitting the token endpoint. The cache (moka) holds at most [`MAX_SCOPES`] scopes and
//! drops each token when it expires, so a mirror asked for ever new repositories does not grow
//! without end. Token values never show in Debug output.

use super::error::UpstreamError;
use moka::ops::compute::Op;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// The most we take off a token's lifetime so it is not used right as it expires.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Scopes (repositories) whose tokens are kept at most, per upstream.
pub const MAX_SCOPES: u64 = 10_000;

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

/// Each cached token leaves the cache when we stop using it.
struct UntilUnusable;

impl moka::Expiry<String, Token> for UntilUnusable {
    fn expire_after_create(&self, _: &String, t: &Token, at: Instant) -> Option<Duration> {
        Some(t.use_until.saturating_duration_since(at))
    }

    fn expire_after_update(
        &self,
        _: &String,
        t: &Token,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(t.use_until.saturating_duration_since(at))
    }
}

/// Tokens by scope.
pub struct TokenCache {
    tokens: moka::future::Cache<String, Token>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_capacity(MAX_SCOPES)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("scopes", &self.tokens.entry_count())
            .finish()
    }
}

impl TokenCache {
    /// A cache of the tokens of at most `scopes` scopes.
    pub fn with_capacity(scopes: u64) -> TokenCache {
        TokenCache {
            tokens: moka::future::Cache::builder()
                .max_capacity(scopes)
                .expire_after(UntilUnusable)
                .build(),
        }
    }

    /// A fresh token for the scope, if we have one (waits while one is being fetched).
    pub async fn get(&self, scope: &str) -> Option<String> {
        // A no-op compute: it queues behind a fetch in progress for the scope.
        self.tokens
            .entry_by_ref(scope)
            .and_compute_with(|_| async { Op::Nop })
            .await
            .into_entry()
            .map(|e| e.into_value())
            .filter(Token::is_fresh)
            .map(|t| t.value)
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
        let result = self
            .tokens
            .entry_by_ref(scope)
            .and_try_compute_with(|current| async move {
                let usable = |t: &Token| t.is_fresh() && Some(t.value()) != rejected;
                if current.is_some_and(|e| usable(e.value())) {
                    return Ok(Op::Nop);
                }
                Ok::<_, UpstreamError>(Op::Put(fetch().await?))
            })
            .await;
        match result {
            Ok(r) => r
                .into_entry()
                .map(|e| e.into_value().value)
                .ok_or_else(|| UpstreamError::Invalid("token cache: no token after fetch".into())),
            Err(e) => {
                // A rejected token must not be offered again.
                if let Some(rejected) = rejected {
                    self.tokens
                        .entry_by_ref(scope)
                        .and_compute_with(|current| async move {
                            match current {
                                Some(c) if c.value().value() == rejected => Op::Remove,
                                _ => Op::Nop,
                            }
                        })
                        .await;
                }
                Err(e)
            }
        }
    }

    /// Scopes held now (tests). Runs the cache's pending maintenance first.
    #[cfg(test)]
    async fn scopes(&self) -> u64 {
        self.tokens.run_pending_tasks().await;
        self.tokens.entry_count()
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

    #[tokio::test]
    async fn expired_tokens_leave_the_cache() {
        let cache = TokenCache::default();
        for i in 0..50 {
            let short = || async { Token::new("x".into(), Duration::from_millis(500)) };
            cache
                .get_or_fetch(&format!("s{i}"), None, short)
                .await
                .unwrap();
        }
        assert_eq!(cache.scopes().await, 50);
        // moka's timer wheel works in ticks of about a second.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.scopes().await > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cache.scopes().await, 0);
        assert_eq!(cache.get("s0").await, None);
    }

    #[tokio::test]
    async fn the_cache_is_capped() {
        let cache = TokenCache::with_capacity(100);
        for i in 0..1000 {
            let long = || async { Token::new("x".into(), Duration::from_secs(600)) };
            cache
                .get_or_fetch(&format!("s{i}"), None, long)
                .await
                .unwrap();
        }
        let held = cache.scopes().await;
        assert!(held <= 100, "{held} scopes held");
    }

    #[tokio::test]
    async fn concurrent_fetches_of_one_scope_are_one() {
        let cache = std::sync::Arc::new(TokenCache::default());
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch("s", None, || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Token::new("t".into(), Duration::from_secs(60))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "t");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
