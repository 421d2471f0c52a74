//! The in-memory layer-info cache (moka): (repository, digest) → size, so that HEAD requests and
//! existence checks of hot blobs touch neither sled nor the disk; and digest → manifest bytes
//! and media type, so hot manifests are served without a file read. Entries are only ever
//! added for content that is committed and linked; deletes and evictions invalidate them.

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
}

impl LayerCache {
    /// `entries`: how many blob entries to keep (storage.cache.blobdescriptorsize).
    pub fn new(entries: u64) -> LayerCache {
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
        }
    }

    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        self.blobs.get(&(repo.clone(), digest.clone())).await
    }

    pub async fn insert_blob(&self, repo: &RepoName, digest: &Digest, size: u64) {
        self.blobs
            .insert((repo.clone(), digest.clone()), size)
            .await;
    }

    pub async fn forget_link(&self, repo: &RepoName, digest: &Digest) {
        self.blobs.invalidate(&(repo.clone(), digest.clone())).await;
    }

    /// Forgets every entry of a blob that is gone from the store.
    pub async fn forget_blob(&self, digest: &Digest) {
        let d = digest.clone();
        // Only fails when invalidation closures are not enabled, which they are.
        let _ = self.blobs.invalidate_entries_if(move |k, _| k.1 == d);
        self.manifests.invalidate(digest).await;
    }

    pub async fn manifest(&self, digest: &Digest) -> Option<CachedManifest> {
        self.manifests.get(digest).await
    }

    pub async fn insert_manifest(&self, digest: &Digest, manifest: CachedManifest) {
        self.manifests.insert(digest.clone(), manifest).await;
    }
}
