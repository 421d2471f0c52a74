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

/// One eviction pass; returns how many blobs went.
pub async fn pass(
    registry: &Registry,
    options: &EvictOptions,
    busy: &(impl Fn(&Digest) -> bool + ?Sized),
) -> Result<usize, crate::error::RegistryError> {
    if options.max_size.is_none() && options.max_age.is_zero() {
        return Ok(0);
    }
    let mut cached: Vec<(Digest, u64, u64)> = registry
        .index
        .blobs()?
        .into_iter()
        .filter(|(_, r)| r.origin == Origin::Proxy)
        .map(|(d, r)| {
            let used = registry.recent_access(&d).unwrap_or(0).max(r.last_access);
            (d, r.size, used)
        })
        .collect();
    cached.sort_by_key(|(_, _, used)| *used);
    let mut total: u64 = cached.iter().map(|(_, size, _)| size).sum();
    let t = now_ms();
    let mut evicted = 0;
    for (d, size, used) in cached {
        let too_old = !options.max_age.is_zero()
            && u128::from(t.saturating_sub(used)) > options.max_age.as_millis();
        let too_big = options.max_size.is_some_and(|max| total > max);
        if !too_old && !too_big {
            if options.max_age.is_zero() {
                break;
            }
            continue;
        }
        if registry.store.pins.is_pinned(&d) || busy(&d) {
            continue;
        }
        // Under the lock pushes take, and only if still cached content: a mount or upload may
        // have made it pushed content since the snapshot.
        let _exclusive = registry.maintenance.write().await;
        if registry
            .index
            .blob(&d)?
            .is_none_or(|r| r.origin != Origin::Proxy)
        {
            continue;
        }
        if remove_blob(registry, &d).await? {
            total -= size;
            evicted += 1;
            let reason = if too_big { "size" } else { "age" };
            registry
                .metrics
                .evictions
                .with_label_values(&[reason])
                .inc();
            registry.metrics.evicted_bytes.inc_by(size);
            tracing::debug!(digest = %d, size, reason, "evicted");
        }
    }
    if evicted > 0 {
        tracing::info!(evicted, cache_bytes = total, "eviction pass done");
    }
    Ok(evicted)
}

/// Removes a blob's file and records; true when the file was there.
pub async fn remove_blob(
    registry: &Registry,
    d: &Digest,
) -> Result<bool, crate::error::RegistryError> {
    // The record goes first: a reader that finds no record fetches again instead of
    // trusting a file about to vanish.
    registry.index.remove_blob(d)?;
    registry.cache.forget_blob(d).await;
    Ok(registry.store.delete(d).await?)
}
