//! `Depot`: the local content that both the registry (serving requests) and `lifecycle/`
//! (recovery, eviction, garbage collection) work on — the blob store, the index and the
//! layer-info cache — with what the two share over them: the lock that orders pushes against
//! removals, the last-access times not yet written to the index, and the signal that proxied
//! content grew. `App` builds one and hands it to both, so neither depends on the other.
//! Knows nothing of HTTP, upstreams or the API's rules (visibility, read-only, deletes).

use crate::cache::LayerCache;
use crate::error::RegistryError;
use crate::index::{Index, IndexError};
use crate::metrics::Metrics;
use crate::oci::{Digest, RepoName};
use crate::storage::BlobStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub struct Depot {
    pub store: BlobStore,
    pub index: Arc<Index>,
    pub cache: LayerCache,
    pub metrics: Arc<Metrics>,
    /// Held shared by every write that makes pushed content reference blobs (manifest pushes,
    /// mounts, finished uploads) and exclusively by garbage collection's sweep and by
    /// eviction's deletes, so that neither removes a blob a concurrent push has just come to
    /// rely on.
    removals: RwLock<()>,
    /// Last access times not yet written to the index (see `flush_access`).
    access: Mutex<HashMap<Digest, u64>>,
    /// Woken when proxied content lands; eviction waits on it (`grown`).
    growth: Notify,
    /// Manifest pulls not yet written to the index: (repo, digest) → (count, last ms).
    pulls: Mutex<HashMap<(RepoName, Digest), (u64, u64)>>,
    /// With a shared bucket: last accesses not yet in this replica's access record (S3 has
    /// no atime; the bucket's maintenance job evicts by these records).
    shared_access: Option<Mutex<HashMap<Digest, u64>>>,
}

impl Depot {
    pub fn new(
        store: BlobStore,
        index: Arc<Index>,
        cache: LayerCache,
        metrics: Arc<Metrics>,
    ) -> Depot {
        Depot {
            index,
            cache,
            metrics,
            removals: RwLock::new(()),
            access: Mutex::default(),
            growth: Notify::new(),
            pulls: Mutex::default(),
            shared_access: store.bucket().map(|_| Mutex::default()),
            store,
        }
    }

    /// Taken (shared) by a write that makes pushed content rely on blobs; no removal runs
    /// while it is held.
    pub async fn pushing(&self) -> RwLockReadGuard<'_, ()> {
        self.removals.read().await
    }

    /// Taken (exclusively) to remove blobs: waits for the pushes under way, holds off new ones.
    pub async fn removing(&self) -> RwLockWriteGuard<'_, ()> {
        self.removals.write().await
    }

    /// Notes that a blob was used now. Kept in memory; `flush_access` writes it to the index,
    /// so the hot path does no index write.
    pub fn touch(&self, digest: &Digest) {
        let now = crate::clock::now_ms();
        self.access
            .lock()
            .expect("access map poisoned")
            .insert(digest.clone(), now);
        if let Some(shared) = &self.shared_access {
            shared
                .lock()
                .expect("access map poisoned")
                .insert(digest.clone(), now);
        }
    }

    /// The accesses gathered for the bucket's access record since the last call (empty
    /// without a shared bucket).
    pub fn take_shared_access(&self) -> HashMap<Digest, u64> {
        self.shared_access
            .as_ref()
            .map(|m| std::mem::take(&mut *m.lock().expect("access map poisoned")))
            .unwrap_or_default()
    }

    /// Puts back accesses whose record could not be written (newer ones win).
    pub fn restore_shared_access(&self, accesses: HashMap<Digest, u64>) {
        if let Some(shared) = &self.shared_access {
            let mut map = shared.lock().expect("access map poisoned");
            for (d, t) in accesses {
                let e = map.entry(d).or_insert(t);
                *e = (*e).max(t);
            }
        }
    }

    /// The last access of `digest` known in memory, if newer than the index's.
    pub fn recent_access(&self, digest: &Digest) -> Option<u64> {
        self.access
            .lock()
            .expect("access map poisoned")
            .get(digest)
            .copied()
    }

    /// Writes the access times and pull counts gathered in memory to the index.
    pub fn flush_access(&self) -> Result<(), IndexError> {
        let pending = std::mem::take(&mut *self.access.lock().expect("access map poisoned"));
        for (d, t) in pending {
            self.index.touch_blob(&d, t)?;
        }
        let pulls = std::mem::take(&mut *self.pulls.lock().expect("pull map poisoned"));
        for ((repo, d), (count, last)) in pulls {
            self.index.add_pulls(&repo, &d, count, last)?;
        }
        Ok(())
    }

    /// Notes a pull of manifest `digest` of `repo` (its bytes were served): counted in memory,
    /// written by `flush_access` with the access times, so a pull does no index write.
    pub fn note_pull(&self, repo: &RepoName, digest: &Digest) {
        let mut map = self.pulls.lock().expect("pull map poisoned");
        let e = map.entry((repo.clone(), digest.clone())).or_default();
        e.0 += 1;
        e.1 = crate::clock::now_ms();
    }

    /// The `n` most pulled manifests, the pulls not yet written included.
    pub fn most_pulled(
        &self,
        n: usize,
    ) -> Result<Vec<(RepoName, Digest, crate::index::PullRecord)>, IndexError> {
        let pending: Vec<(RepoName, Digest)> = self
            .pulls
            .lock()
            .expect("pull map poisoned")
            .keys()
            .cloned()
            .collect();
        let mut all: HashMap<(RepoName, Digest), crate::index::PullRecord> = self
            .index
            .most_pulled(n)?
            .into_iter()
            .map(|(r, d, p)| ((r, d), p))
            .collect();
        for (r, d) in pending {
            let p = self.pulls(&r, &d)?;
            all.insert((r, d), p);
        }
        let mut v: Vec<_> = all.into_iter().map(|((r, d), p)| (r, d, p)).collect();
        v.sort_by(|a, b| {
            b.2.count
                .cmp(&a.2.count)
                .then_with(|| a.0.as_str().cmp(b.0.as_str()))
        });
        v.truncate(n);
        Ok(v)
    }

    /// `digest`'s pulls in `repo`: the index's, plus those not yet written.
    pub fn pulls(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<crate::index::PullRecord, IndexError> {
        let mut p = self.index.pulls(repo, digest)?;
        if let Some((count, last)) = self
            .pulls
            .lock()
            .expect("pull map poisoned")
            .get(&(repo.clone(), digest.clone()))
        {
            p.count += count;
            p.last = p.last.max(*last);
        }
        Ok(p)
    }

    /// Says that proxied content grew, waking eviction (at most one wake-up is kept).
    pub fn note_growth(&self) {
        self.growth.notify_one();
    }

    /// Resolves at the next `note_growth` (or at once, for one made since the last wait).
    pub async fn grown(&self) {
        self.growth.notified().await;
    }

    /// Removes a blob's record, its cached layer info and its file; the size its record had.
    /// Callers hold `removing` and have checked that nobody reads or fetches it.
    pub async fn remove_blob(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        // The record goes first: a reader that finds no record fetches again instead of
        // trusting a file about to vanish.
        let old = self.index.remove_blob(digest)?;
        self.cache.forget_blob(digest).await;
        self.store.delete(digest).await?;
        Ok(old.map(|r| r.size))
    }
}
