//! Eviction of proxied content: least recently used first while the cache is over
//! `proxy.maxsize`, and anything unused for longer than `proxy.ttl`. Pushed content is never
//! evicted, nor is what a pinned image (`proxy.pin`) reaches. Runs as a background task woken
//! when the registry notes that proxied content landed (`Depot::note_growth`), and once a
//! minute. Each evicted blob is a `cache.evict` event (digest, size, `size`/`age` reason).

use crate::clock::now_ms;
use crate::depot::Depot;
use crate::index::Origin;
use crate::notify::{Action, BLOB_MEDIA_TYPE, Event, Target};
use crate::oci::{Digest, RepoName, Tag};
use std::sync::Arc;
use std::time::Duration;

/// Whether the cached image (repository, tag) is pinned: what it reaches is never evicted.
pub type Pinned = Arc<dyn Fn(&RepoName, &Tag) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct EvictOptions {
    /// Bytes of proxied content to keep at most.
    pub max_size: Option<u64>,
    /// Proxied content unused for this long goes; zero keeps it forever.
    pub max_age: Duration,
    pub pinned: Option<Pinned>,
    /// Where `cache.evict` events go.
    pub notifier: Arc<crate::notify::Notifier>,
}

/// Runs eviction passes until `stop` resolves: one at once, then one each time the depot
/// grows and at least once a minute. `busy` says whether a blob is being fetched.
pub async fn run(
    depot: &Depot,
    options: EvictOptions,
    busy: impl Fn(&Digest) -> bool + Send + Sync,
    stop: impl std::future::Future<Output = ()>,
) {
    if depot.store.shared_meta().is_some() {
        // Replicas share the bucket: one node's LRU must not delete what others serve.
        tracing::info!(
            "storage.s3: this node evicts nothing (proxy.maxsize and proxy.ttl apply to the shared bucket through the maintenance job, not per replica)"
        );
        return;
    }
    let mut stop = std::pin::pin!(stop);
    loop {
        if let Err(e) = pass(depot, &options, &busy).await {
            tracing::warn!(error = %e, "eviction pass failed");
        }
        tokio::select! {
            () = depot.grown() => {},
            () = tokio::time::sleep(Duration::from_secs(60)) => {},
            () = &mut stop => return,
        }
    }
}

/// One eviction pass; returns how many blobs went. Walks cached blobs least recently used
/// first and stops at the first one that may stay, so a pass costs what it evicts (plus the
/// pinned or busy blobs it steps over), not the size of the cache.
pub async fn pass(
    depot: &Depot,
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
    let (_, mut total) = depot.index.totals(Origin::Proxy);
    let too_big = |total: u64| options.max_size.is_some_and(|max| total > max);
    let oldest = depot.index.cached_by_access().next().transpose()?;
    if !oldest.is_some_and(|(_, used)| too_old(used)) && !too_big(total) {
        return Ok(0);
    }
    // The order on disk is brought up to date with the reads noted in memory since.
    depot.flush_access()?;
    let pinned = match &options.pinned {
        Some(p) => super::pinned::pinned_blobs(depot, p).await?,
        None => Default::default(),
    };
    // Under the lock pushes take, once for the pass: a mount or upload may make a cached blob
    // pushed content, and must not do so while it is being removed.
    let _exclusive = depot.removing().await;
    let mut evicted = 0;
    for entry in depot.index.cached_by_access() {
        let (d, recorded) = entry?;
        let big = too_big(total);
        if !big && !too_old(recorded) {
            break;
        }
        let used = depot.recent_access(&d).unwrap_or(0).max(recorded);
        if !big && !too_old(used) {
            continue;
        }
        if depot.store.is_being_read(&d) || busy(&d) || pinned.contains(&d) {
            continue;
        }
        let Some(size) = depot.remove_blob(&d).await? else {
            continue;
        };
        total = total.saturating_sub(size);
        evicted += 1;
        let reason = if big { "size" } else { "age" };
        depot.metrics.evictions.with_label_values(&[reason]).inc();
        depot.metrics.evicted_bytes.inc_by(size);
        tracing::debug!(digest = %d, size, reason, "evicted");
        if options.notifier.wants(Action::CacheEvict) {
            let mut target = Target::cached("", "", BLOB_MEDIA_TYPE, Some(d.clone()), size);
            target.reason = Some(reason.to_owned());
            options
                .notifier
                .publish(Event::cache(Action::CacheEvict, target));
        }
    }
    if evicted > 0 {
        tracing::info!(evicted, cache_bytes = total, "eviction pass done");
    }
    Ok(evicted)
}
