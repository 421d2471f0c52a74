//! Eviction of proxied content: least recently used first while the cache is over
//! `proxy.maxsize`, and anything unused for longer than `proxy.ttl`. Pushed content is never
//! evicted. Runs as a background task woken after each cache fill and once a minute.

use crate::index::Origin;
use crate::oci::Digest;
use crate::registry::{Registry, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct EvictOptions {
    /// Bytes of proxied content to keep at most.
    pub max_size: Option<u64>,
    /// Proxied content unused for this long goes; zero keeps it forever.
    pub max_age: Duration,
}

/// Wakes the eviction task; cheap to clone and call from the fetch path.
#[derive(Clone, Default)]
pub struct Evictor {
    wake: Arc<Notify>,
}

impl Evictor {
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs eviction passes until `stop` resolves. `busy` says whether a blob is being fetched.
    pub async fn run(
        &self,
        registry: Arc<Registry>,
        options: EvictOptions,
        busy: impl Fn(&Digest) -> bool + Send + Sync,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        loop {
            if let Err(e) = pass(&registry, &options, &busy).await {
                tracing::warn!(error = %e, "eviction pass failed");
            }
            tokio::select! {
                () = self.wake.notified() => {},
                () = tokio::time::sleep(Duration::from_secs(60)) => {},
                () = &mut stop => return,
            }
        }
    }
}

/// One eviction pass; returns how many blobs went. Walks cached blobs least recently used
/// first and stops at the first one that may stay, so a pass costs what it evicts (plus the
/// pinned or busy blobs it steps over), not the size of the cache.
pub async fn pass(
    registry: &Registry,
    options: &EvictOptions,
    busy: &(impl Fn(&Digest) -> bool + ?Sized),
) -> Result<usize, crate::error::RegistryError> {
    if options.max_size.is_none() && options.max_age.is_zero() {
        return Ok(0);
    }
    let t = now_ms();
    let too_old = |used: u64| {
        !options.max_age.is_zero()
            && u128::from(t.saturating_sub(used)) > options.max_age.as_millis()
    };
    let (_, mut total) = registry.index.totals(Origin::Proxy);
    let too_big = |total: u64| options.max_size.is_some_and(|max| total > max);
    let oldest = registry.index.cached_by_access().next().transpose()?;
    if !oldest.is_some_and(|(_, used)| too_old(used)) && !too_big(total) {
        return Ok(0);
    }
    // The order on disk is brought up to date with the reads noted in memory since.
    registry.flush_access()?;
    // Under the lock pushes take, once for the pass: a mount or upload may make a cached blob
    // pushed content, and must not do so while it is being removed.
    let _exclusive = registry.maintenance.write().await;
    let mut evicted = 0;
    for entry in registry.index.cached_by_access() {
        let (d, recorded) = entry?;
        let big = too_big(total);
        if !big && !too_old(recorded) {
            break;
        }
        let used = registry.recent_access(&d).unwrap_or(0).max(recorded);
        if !big && !too_old(used) {
            continue;
        }
        if registry.store.is_being_read(&d) || busy(&d) {
            continue;
        }
        let Some(size) = remove_blob(registry, &d).await? else {
            continue;
        };
        total = total.saturating_sub(size);
        evicted += 1;
        let reason = if big { "size" } else { "age" };
        registry
            .metrics
            .evictions
            .with_label_values(&[reason])
            .inc();
        registry.metrics.evicted_bytes.inc_by(size);
        tracing::debug!(digest = %d, size, reason, "evicted");
    }
    if evicted > 0 {
        tracing::info!(evicted, cache_bytes = total, "eviction pass done");
    }
    Ok(evicted)
}

/// Removes a blob's record and file; the size it had, when it had a record.
pub async fn remove_blob(
    registry: &Registry,
    d: &Digest,
) -> Result<Option<u64>, crate::error::RegistryError> {
    // The record goes first: a reader that finds no record fetches again instead of
    // trusting a file about to vanish.
    let old = registry.index.remove_blob(d)?;
    registry.cache.forget_blob(d).await;
    registry.store.delete(d).await?;
    Ok(old.map(|r| r.size))
}
