//! Whole-image operations on local content, for the air-gap bundles (`bundle/`), `purge` and
//! the pinned images eviction spares: walking what an image references, writing verified
//! blobs from a reader, and dropping one image's cached content at once. A child of
//! `registry` so it sees the index and the store; nothing here is on a request's path.

use super::{Registry, Result};
use crate::error::RegistryError;
use crate::index::Origin;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, ParsedManifest, RepoName, Tag};
use bytes::Bytes;
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What `purge` removed.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub repository: String,
    pub tags_deleted: Vec<String>,
    pub manifests_deleted: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    /// Blobs of the purged manifests still referenced by other content (or being read).
    pub blobs_kept: usize,
}

impl Registry {
    /// The bytes of a stored manifest by digest, whatever repository holds it.
    pub async fn stored_manifest(&self, digest: &Digest) -> Result<Option<Bytes>> {
        Ok(self
            .depot
            .store
            .read_small(digest, MAX_MANIFEST_BYTES as u64)
            .await?)
    }

    /// Streams `reader` into the store as `digest` (hashed on the way, committed only when it
    /// matches). Records nothing: `adopt_blob` or `store_manifest` make it visible.
    pub async fn write_blob_from(
        &self,
        digest: &Digest,
        mut reader: impl AsyncRead + Unpin,
    ) -> Result<u64> {
        self.writable()?;
        let mut w = self.depot.store.writer_for(digest.algorithm()).await?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| RegistryError::internal(format!("reading {digest}: {e}")))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        match self.depot.store.commit(w, Some(digest)).await {
            Ok((_, size)) => Ok(size),
            Err(e) => {
                if matches!(e, crate::storage::StoreError::DigestMismatch { .. }) {
                    self.depot.metrics.verify_failures.inc();
                }
                Err(e.into())
            }
        }
    }

    /// Makes every index write so far durable.
    pub async fn flush(&self) -> Result<()> {
        Ok(self.depot.index.flush().await?)
    }

    /// Everything `roots` reference in `repo`, the roots included: child manifests of an
    /// index that are stored, and the config and layers of image manifests. Manifests not
    /// stored are left out (a mirror caches only the platforms that were pulled).
    pub async fn reachable(
        &self,
        repo: &RepoName,
        roots: impl IntoIterator<Item = Digest>,
    ) -> Result<HashSet<Digest>> {
        let mut out = HashSet::new();
        self.closure(repo, roots, &mut out).await?;
        Ok(out)
    }

    async fn closure(
        &self,
        repo: &RepoName,
        roots: impl IntoIterator<Item = Digest>,
        out: &mut HashSet<Digest>,
    ) -> Result<()> {
        let mut todo: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = todo.pop() {
            if !out.insert(d.clone()) {
                continue;
            }
            let Some(m) = self.manifest_by_digest(repo, &d).await? else {
                continue;
            };
            let parsed = ParsedManifest::parse(&m.bytes, Some(&m.media_type)).map_err(|e| {
                RegistryError::internal(format!(
                    "stored manifest {d} of {repo} does not parse: {e}"
                ))
            })?;
            out.extend(parsed.blobs);
            todo.extend(parsed.manifests);
        }
        Ok(())
    }

    /// Drops the cached content of one image (`tag`) or of a whole repository (`None`): its
    /// tags, the manifests no remaining tag of the repository reaches, and the blobs of those
    /// manifests that no other manifest of any repository references. Pushed tags and
    /// manifests stay unless `pushed_too`; blobs being read or fetched (`busy`) stay.
    pub async fn purge(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        pushed_too: bool,
        busy: &(dyn Fn(&Digest) -> bool + Send + Sync),
    ) -> Result<PurgeReport> {
        let mut report = PurgeReport {
            repository: repo.to_string(),
            ..PurgeReport::default()
        };
        if self.meta().is_some() {
            return Err(RegistryError::unsupported(
                "purge is not available with a shared storage.s3 bucket: its content is shared by every replica; nothing was deleted",
            ));
        }
        let purgeable = |origin: Origin| origin == Origin::Proxy || pushed_too;
        // Exclusive: no push may come to rely on a blob while it goes, nor eviction race us.
        let _exclusive = self.depot.removing().await;
        let tags: Vec<(Tag, crate::index::TagRecord)> = self
            .depot
            .index
            .tags()?
            .into_iter()
            .filter(|(r, _, _)| r == repo)
            .map(|(_, t, rec)| (t, rec))
            .collect();
        let (going, staying): (Vec<_>, Vec<_>) = tags
            .into_iter()
            .partition(|(t, rec)| tag.is_none_or(|want| want == t) && purgeable(rec.origin));
        if going.is_empty() && tag.is_some() {
            let what = format!("{repo}:{}", tag.map(Tag::as_str).unwrap_or_default());
            let why = if pushed_too {
                "no such tag"
            } else {
                "no such cached tag (pushed tags are purged only when asked: --pushed)"
            };
            return Err(RegistryError::new(
                crate::error::ErrorCode::ManifestUnknown,
                format!("{what}: {why}"),
            ));
        }
        // The manifests to drop: what the purged tags reach (or, for a whole repository,
        // every purgeable manifest of it), less what a remaining tag reaches.
        let mut candidates = HashSet::new();
        match tag {
            Some(_) => {
                self.closure(
                    repo,
                    going.iter().map(|(_, r)| r.digest.clone()),
                    &mut candidates,
                )
                .await?
            }
            None => {
                for (r, d, rec) in self.depot.index.manifests()? {
                    if r == *repo && purgeable(rec.origin) {
                        self.closure(repo, [d], &mut candidates).await?;
                    }
                }
            }
        }
        let mut kept = HashSet::new();
        self.closure(
            repo,
            staying.iter().map(|(_, r)| r.digest.clone()),
            &mut kept,
        )
        .await?;
        for (t, _) in &going {
            self.depot.index.delete_tag(repo, t)?;
            report.tags_deleted.push(t.to_string());
        }
        let manifests: BTreeSet<Digest> = candidates
            .iter()
            .filter(|d| !kept.contains(*d))
            .cloned()
            .collect();
        for d in &manifests {
            match self.depot.index.manifest(repo, d)? {
                Some(rec) if purgeable(rec.origin) => {
                    self.depot.index.delete_manifest(repo, d)?;
                    report.manifests_deleted += 1;
                }
                _ => {}
            }
        }
        // What every remaining manifest references stays: in this repository it stays
        // linked, in any repository it stays stored.
        let mut referenced = HashSet::new();
        let mut referenced_here = HashSet::new();
        for (r, d, _) in self.depot.index.manifests()? {
            let mut refs = vec![d.clone()];
            match self.stored_manifest(&d).await? {
                Some(bytes) => match ParsedManifest::parse(&bytes, None) {
                    Ok(p) => {
                        refs.extend(p.blobs);
                        refs.extend(p.manifests);
                    }
                    Err(e) => {
                        return Err(RegistryError::internal(format!(
                            "stored manifest {d} of {r} does not parse ({e}); purge stopped before deleting any blob"
                        )));
                    }
                },
                None => continue,
            }
            if r == *repo {
                referenced_here.extend(refs.iter().cloned());
            }
            referenced.extend(refs);
        }
        let mut blobs: Vec<&Digest> = candidates.difference(&kept).collect();
        blobs.sort();
        for d in blobs {
            if !referenced_here.contains(d) {
                self.depot.index.unlink(repo, d)?;
                self.depot.cache.forget_link(repo, d).await;
            }
            let Some(rec) = self.depot.index.blob(d)? else {
                continue;
            };
            if referenced.contains(d)
                || !purgeable(rec.origin)
                || self.depot.store.is_being_read(d)
                || busy(d)
            {
                report.blobs_kept += 1;
                continue;
            }
            self.depot.remove_blob(d).await?;
            report.blobs_deleted += 1;
            report.bytes_freed += rec.size;
        }
        self.depot.index.flush().await?;
        tracing::info!(?report, "purged");
        Ok(report)
    }
}
