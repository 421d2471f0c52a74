//! The in-memory layer-info cache (moka): (repository, digest) → size, so that HEAD requests and
//! existence checks of hot blobs touch neither sled nor the disk; and digest → manifest bytes
//! and media type, so hot manifests are served without a file read. Entries are only ever
//! added for content that is committed and linked; deletes and evictions invalidate them.
//!
//! With `storage.cache.blobdescriptor: redis`, blob entries are also written to Redis
//! ([`redis`]) and a memory miss asks it ([`LayerCache::shared_blob_size`]); the caller
//! decides whether a Redis answer holds locally. Manifests stay in memory only.

mod redis;

pub use self::redis::{RedisLayerInfo, RedisSetupError};

use crate::oci::{Digest, RepoName};
use bytes::Bytes;
use moka::future::Cache;

/// A manifest held in memory: immutable once stored, so it never goes stale.
#[derive(Debug, Clone)]
pub struct CachedManifest {
    pub media_type: String,
    pub bytes: Bytes,
}

pub struct LayerCache {
    blobs: Cache<(RepoName, Digest), u64>,
    manifests: Cache<Digest, CachedManifest>,
    shared: Option<RedisLayerInfo>,
}

impl LayerCache {
    /// `entries`: how many blob entries to keep (storage.cache.blobdescriptorsize).
    pub fn new(entries: u64) -> LayerCache {
        Self::with_redis(entries, None)
    }

    /// Like [`LayerCache::new`], with Redis behind the memory cache.
    pub fn with_redis(entries: u64, shared: Option<RedisLayerInfo>) -> LayerCache {
        LayerCache {
            blobs: Cache::builder()
                .max_capacity(entries.max(1))
                .support_invalidation_closures()
                .build(),
            manifests: Cache::builder()
                // weighed in bytes: at most 64 MiB of manifests
                .weigher(|_: &Digest, m: &CachedManifest| {
                    u32::try_from(m.bytes.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(64 * 1024 * 1024)
                .build(),
            shared,
        }
    }

    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        self.blobs.get(&(repo.clone(), digest.clone())).await
    }

    /// What Redis says of a blob the memory cache does not know; `None` without Redis, when
    /// it does not know either, or when it cannot be reached.
    pub async fn shared_blob_size(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        self.shared.as_ref()?.blob_size(repo, digest).await
    }

    /// Records a blob in memory and (when configured) in Redis.
    pub async fn insert_blob(&self, repo: &RepoName, digest: &Digest, size: u64) {
        self.remember_blob(repo, digest, size).await;
        if let Some(r) = &self.shared {
            r.insert_blob(repo, digest, size).await;
        }
    }

    /// Records a blob in memory only (what Redis already knows).
    pub async fn remember_blob(&self, repo: &RepoName, digest: &Digest, size: u64) {
        self.blobs
            .insert((repo.clone(), digest.clone()), size)
            .await;
    }

    pub async fn forget_link(&self, repo: &RepoName, digest: &Digest) {
        self.blobs.invalidate(&(repo.clone(), digest.clone())).await;
        if let Some(r) = &self.shared {
            r.forget_link(repo, digest).await;
        }
    }

    /// Forgets every entry of a blob that is gone from the store.
    pub async fn forget_blob(&self, digest: &Digest) {
        let d = digest.clone();
        // Only fails when invalidation closures are not enabled, which they are.
        let _ = self.blobs.invalidate_entries_if(move |k, _| k.1 == d);
        self.manifests.invalidate(digest).await;
        if let Some(r) = &self.shared {
            r.forget_blob(digest).await;
        }
    }

    pub async fn manifest(&self, digest: &Digest) -> Option<CachedManifest> {
        self.manifests.get(digest).await
    }

    pub async fn insert_manifest(&self, digest: &Digest, manifest: CachedManifest) {
        self.manifests.insert(digest.clone(), manifest).await;
    }
}
