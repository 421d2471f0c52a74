//! The pull-through cache. A request for a proxied repository is answered from the cache when
//! it can be, and otherwise from the upstream, whose answer lands in the cache as it streams
//! to the client. Rules:
//!
//! - Which upstream: a configured name prefix (`ghcr/…`), else containerd's `?ns=` parameter,
//!   else the default upstream (`proxy.remoteurl`). Repositories under `proxy.localprefixes`
//!   are never proxied. A locally pushed tag wins over the upstream's tag of the same name.
//! - Manifests by digest are immutable and cached for good. Tags are trusted for
//!   `proxy.tagttl`, then revalidated with a HEAD (which Docker Hub does not count as a pull),
//!   single-flight per tag; a request waits for that answer at most
//!   `proxy.revalidatetimeout`, then gets the cached tag while the check goes on (`revalidate`).
//! - When the upstream cannot be asked (down, timeout, 429, 5xx, its circuit breaker open, the
//!   mirror offline), cached content is served, stale tags included; what is not cached fails
//!   promptly with the upstream's error.
//! - Blob misses are single-flight (see `fetch`).
//! - With `proxy.peers`, a miss (blob, manifest, tag revalidation) is asked of the replica
//!   that owns it, which asks the upstream once for the fleet (see `peering`).
//! - `proxy.allow`/`deny` rules refuse repositories before any upstream contact, cached or
//!   not (see `policy`).
//! - Referrers of a proxied manifest are the upstream's (its referrers API, else the
//!   `sha256-<hex>` tag scheme), cached for `proxy.tagttl`, merged with local ones (see
//!   `referrers`).
//! - A tag the upstream now answers 404 for is kept and served, marked, until purged.
//! - `proxy.cooldown`: a tag's new upstream digest is served only once this mirror has known
//!   it for that long; until then the previous digest is (see `cooldown`).
//! - Warm lists fetch images ahead of use through these same paths (see `warm`).
//! - A tag list is the upstream's (cached for `proxy.tagttl`) merged with local tags; the
//!   local tags alone, marked, when the upstream cannot be asked (see `tags`).
//!
//! Cache events: `cache.fill` when a manifest or blob fetched upstream is cached, and
//! `stale.served` when a cached tag is served because the upstream could not confirm it (its
//! reason as in `stevedore_stale_serves_total`); `upstream/` sends the upstream's failures.
//!
//! Depends on the registry's operations (never on the index or store behind it; only storage's
//! file-reading helpers for a growing fetch) and the upstream clients; knows no HTTP types.

mod blobs;
mod content;
mod cooldown;
mod fetch;
mod lists;
mod manifests;
mod peering;
pub mod pins;
mod policy;
mod referrers;
mod revalidate;
mod scope;
mod tags;
pub mod warm;

pub use content::{BlobContent, ContentRead, LocalRange};
pub use policy::{PolicyOptions, RepoPolicy};
pub use referrers::Referrers;
pub use scope::{ProxyRepo, Scope};
pub use tags::TagPage;

use crate::metrics::Metrics;
use crate::oci::Digest;
use crate::registry::Registry;
use crate::upstream::UpstreamClient;
use crate::upstream::peers::Peers;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An upstream registry and how requests reach it.
pub struct Upstream {
    /// Label in metrics and logs, and the `ns` value that selects it (e.g. `docker.io`).
    pub name: String,
    /// Other `ns` values that also select it.
    pub aliases: Vec<String>,
    /// Repository name prefix that selects it (stripped before asking the upstream).
    pub prefix: Option<String>,
    /// Which of its repositories may be pulled through (see `policy`).
    pub policy: RepoPolicy,
    /// Minimum age of a tag's digest before it is served (see `cooldown`); zero = off.
    pub cooldown: Duration,
    pub client: Arc<UpstreamClient>,
}

pub struct MirrorOptions {
    pub tag_ttl: Duration,
    /// How long a request waits for the revalidation of an expired tag.
    pub revalidate_timeout: Duration,
    pub local_prefixes: Vec<String>,
    /// The offline switch the upstream clients read.
    pub offline: Arc<AtomicBool>,
    /// How allow/deny refusals are applied.
    pub policy: PolicyOptions,
    /// The other replicas (`proxy.peers`): misses are fetched through the owner.
    pub peers: Option<Arc<Peers>>,
    /// Where the cache events (`cache.fill`, `stale.served`) go.
    pub notifier: Arc<crate::notify::Notifier>,
}

pub struct Mirror {
    registry: Arc<Registry>,
    /// The upstream for names no prefix or `ns` selects, if any.
    default: Option<Arc<Upstream>>,
    upstreams: Vec<Arc<Upstream>>,
    options: MirrorOptions,
    metrics: Arc<Metrics>,
    /// Set with `proxy.peers`.
    peering: Option<peering::Peering>,
    blob_fetches: fetch::Fetches,
    manifest_locks: KeyedLocks,
    tag_lists: tags::TagLists,
    referrer_lists: referrers::Lists,
    revalidations: revalidate::Checks,
    /// Held by the warm run under way.
    warming: tokio::sync::Mutex<()>,
}

impl Mirror {
    pub fn new(
        registry: Arc<Registry>,
        default: Option<Arc<Upstream>>,
        upstreams: Vec<Arc<Upstream>>,
        options: MirrorOptions,
        metrics: Arc<Metrics>,
    ) -> Mirror {
        metrics
            .proxy_offline
            .set(i64::from(options.offline.load(Ordering::Relaxed)));
        let peering = options.peers.clone().map(|peers| peering::Peering {
            peers,
            metrics: metrics.clone(),
        });
        Mirror {
            registry,
            default,
            upstreams,
            options,
            metrics,
            peering,
            blob_fetches: Default::default(),
            manifest_locks: KeyedLocks::default(),
            tag_lists: Default::default(),
            referrer_lists: Default::default(),
            revalidations: Default::default(),
            warming: Default::default(),
        }
    }

    /// Switches offline mode: while on, no upstream is contacted.
    pub fn set_offline(&self, on: bool) {
        let was = self.options.offline.swap(on, Ordering::Relaxed);
        self.metrics.proxy_offline.set(i64::from(on));
        if was != on {
            tracing::warn!(offline = on, "mirror offline mode switched");
        }
    }

    /// The upstreams' names (metrics labels), the default one first.
    pub fn upstream_names(&self) -> Vec<String> {
        self.default
            .iter()
            .chain(self.upstreams.iter())
            .map(|u| u.name.clone())
            .collect()
    }

    pub fn offline(&self) -> bool {
        self.options.offline.load(Ordering::Relaxed)
    }

    /// The other replicas, when `proxy.peers` is set.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.options.peers.as_ref()
    }

    /// Whether any blob fetch is under way (used by eviction and GC to spare such blobs).
    pub fn fetching(&self, digest: &Digest) -> bool {
        self.blob_fetches
            .lock()
            .expect("fetch map poisoned")
            .contains_key(digest)
    }
}

/// Async locks by key, so that concurrent misses of one manifest ask the upstream once.
#[derive(Default)]
struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held keyed lock; removes its entry when the last holder lets go.
struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Locks `key`; the flag says whether another holder had it first (a coalesced wait).
    async fn lock(&self, key: String) -> (KeyedGuard<'_>, bool) {
        let lock = self
            .locks
            .lock()
            .expect("lock map poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let (guard, waited) = match lock.clone().try_lock_owned() {
            Ok(g) => (g, false),
            Err(_) => (lock.clone().lock_owned().await, true),
        };
        (
            KeyedGuard {
                owner: self,
                key,
                lock,
                guard: Some(guard),
            },
            waited,
        )
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.owner.locks.lock().expect("lock map poisoned");
        // Two references: ours and the map's. Nobody else waits, so the entry can go.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}
