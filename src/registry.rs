//! The local registry: the operations of the distribution API on pushed (and cached) content,
//! over the blob store, the upload sessions, the index and the layer-info cache. Knows nothing
//! of HTTP or of upstreams; the mirror builds on it.

use crate::cache::{CachedManifest, LayerCache};
use crate::error::{ErrorCode, RegistryError};
use crate::index::{BlobRecord, Index, ManifestRecord, Origin, TagRecord};
use crate::metrics::Metrics;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Algorithm, Descriptor, Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::{AppendError, BlobStore, OpenBlob, StoreError, UploadSession, Uploads};
use bytes::Bytes;
use futures::Stream;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

type Result<T> = std::result::Result<T, RegistryError>;

/// Milliseconds since the Unix epoch (blob records' times).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// The outcome of a manifest push.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// The state of an upload session, as the status endpoints report it.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

pub struct Options {
    pub delete_enabled: bool,
    pub read_only: bool,
}

pub struct Registry {
    pub store: BlobStore,
    pub uploads: Uploads,
    pub index: Index,
    pub cache: LayerCache,
    pub metrics: Arc<Metrics>,
    options: Options,
    /// Held shared by every write that makes pushed content reference blobs (manifest pushes,
    /// mounts, finished uploads) and exclusively by garbage collection and by eviction's
    /// deletes, so that neither removes a blob a concurrent push has just come to rely on.
    pub maintenance: tokio::sync::RwLock<()>,
    /// Woken when proxied content lands, so eviction can keep the cache under its bound.
    pub evictor: crate::lifecycle::Evictor,
    /// Last access times not yet written to the index (see `flush_access`).
    access: std::sync::Mutex<std::collections::HashMap<Digest, u64>>,
}

fn body_failed<E: std::fmt::Display>(e: E, offset: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadInvalid,
        format!("request body broke off after {offset} bytes of the upload: {e}"),
    )
}

impl Registry {
    pub fn new(
        store: BlobStore,
        uploads: Uploads,
        index: Index,
        cache: LayerCache,
        metrics: Arc<Metrics>,
        options: Options,
    ) -> Registry {
        Registry {
            store,
            uploads,
            index,
            cache,
            metrics,
            options,
            access: Default::default(),
            evictor: Default::default(),
            maintenance: tokio::sync::RwLock::new(()),
        }
    }

    /// Notes that a blob was used now. Kept in memory; `flush_access` writes it to the index,
    /// so the hot path does no index write.
    pub fn touch(&self, digest: &Digest) {
        self.access
            .lock()
            .expect("access map poisoned")
            .insert(digest.clone(), now_ms());
    }

    /// The last access of `digest` known in memory, if newer than the index's.
    pub fn recent_access(&self, digest: &Digest) -> Option<u64> {
        self.access
            .lock()
            .expect("access map poisoned")
            .get(digest)
            .copied()
    }

    /// Writes the access times gathered in memory to the index.
    pub fn flush_access(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.access.lock().expect("access map poisoned"));
        for (d, t) in pending {
            self.index.touch_blob(&d, t)?;
        }
        Ok(())
    }

    fn writable(&self) -> Result<()> {
        if self.options.read_only {
            return Err(StoreError::ReadOnly.into());
        }
        Ok(())
    }

    fn deletable(&self) -> Result<()> {
        if !self.options.delete_enabled {
            return Err(RegistryError::unsupported(
                "deletes are disabled (storage.delete.enabled is false)",
            ));
        }
        self.writable()
    }

    // ---- blobs

    /// The size of `digest` if `repo` may see it. Answered from memory when hot.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        if let Some(size) = self.cache.blob_size(repo, digest).await {
            self.metrics
                .layer_info_lookups
                .with_label_values(&["memory"])
                .inc();
            return Ok(Some(size));
        }
        // Redis (shared by replicas) is believed only for a blob this store holds whole.
        if let Some(size) = self.cache.shared_blob_size(repo, digest).await
            && self.store.stat(digest).await? == Some(size)
        {
            self.metrics
                .layer_info_lookups
                .with_label_values(&["redis"])
                .inc();
            self.cache.remember_blob(repo, digest, size).await;
            return Ok(Some(size));
        }
        if !self.index.is_linked(repo, digest)? {
            self.metrics
                .layer_info_lookups
                .with_label_values(&["absent"])
                .inc();
            return Ok(None);
        }
        let size = match self.index.blob(digest)? {
            Some(rec) => Some(rec.size),
            None => self.store.stat(digest).await?,
        };
        self.metrics
            .layer_info_lookups
            .with_label_values(&["index"])
            .inc();
        if let Some(size) = size {
            self.cache.insert_blob(repo, digest, size).await;
        }
        Ok(size)
    }

    /// Opens `digest` for `repo`, if the repository may see it and the file is there.
    pub async fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<OpenBlob>> {
        if self.blob_size(repo, digest).await?.is_none() {
            return Ok(None);
        }
        match self.store.open_blob(digest).await? {
            Some(open) => {
                self.touch(digest);
                Ok(Some(open))
            }
            None => {
                // The index knew a blob whose file is gone: forget it.
                tracing::warn!(%digest, "blob file missing; dropping its index entry");
                self.index.remove_blob(digest)?;
                self.cache.forget_blob(digest).await;
                Ok(None)
            }
        }
    }

    /// Records a committed blob and makes it visible to `repo`.
    pub async fn adopt_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        origin: Origin,
    ) -> Result<()> {
        self.index
            .record_blob(repo, digest, &blob_record(size, origin))?;
        self.cache.insert_blob(repo, digest, size).await;
        if origin == Origin::Proxy {
            self.evictor.wake();
        }
        Ok(())
    }

    /// Makes a blob of `from` visible in `repo`; false when `from` cannot see it.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<bool> {
        self.writable()?;
        let _pushing = self.maintenance.read().await;
        let Some(size) = self.blob_size(from, digest).await? else {
            return Ok(false);
        };
        if self.store.stat(digest).await?.is_none() {
            return Ok(false);
        }
        self.adopt_blob(repo, digest, size, Origin::Local).await?;
        self.index.flush().await?;
        Ok(true)
    }

    /// Unlinks a blob from `repo`; the file itself goes at the next garbage collection.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.deletable()?;
        if !self.index.unlink(repo, digest)? {
            return Err(RegistryError::blob_unknown(digest));
        }
        self.cache.forget_link(repo, digest).await;
        self.index.flush().await?;
        Ok(())
    }

    // ---- uploads

    /// Starts an upload whose data is hashed with `algorithm` as it arrives (a final digest of
    /// another algorithm still works, at the cost of a second read).
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
    ) -> Result<UploadStatus> {
        self.writable()?;
        let id = self.uploads.create(repo, algorithm).await?;
        Ok(UploadStatus { id, offset: 0 })
    }

    async fn session(&self, repo: &RepoName, id: &str) -> Result<UploadSession> {
        self.uploads
            .lock(repo, id)
            .await?
            .ok_or_else(RegistryError::upload_unknown)
    }

    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        let s = self.session(repo, id).await?;
        Ok(UploadStatus {
            id: s.id.clone(),
            offset: s.offset,
        })
    }

    /// Appends a chunk. `range` is the `Content-Range` start and end (inclusive) when given: the
    /// start must be where the upload stands (416 otherwise).
    pub async fn upload_chunk<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        body: S,
    ) -> Result<UploadStatus>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.writable()?;
        let mut s = self.session(repo, id).await?;
        if let Some((start, _end)) = range
            && start != s.offset
        {
            return Err(range_error(s.offset, &s.id, start));
        }
        let before = s.offset;
        let offset = self.append(&mut s, body).await?;
        if let Some((start, end)) = range
            && end.checked_add(1) != Some(offset)
            && end >= start
        {
            tracing::debug!(upload = %s.id, start, end, received = offset - before, "chunk length differs from Content-Range");
        }
        Ok(UploadStatus {
            id: s.id.clone(),
            offset,
        })
    }

    async fn append<S, E>(&self, s: &mut UploadSession, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let before = s.offset;
        let r = self.uploads.append(s, body).await;
        self.metrics
            .upload_bytes
            .inc_by(s.offset.saturating_sub(before));
        match r {
            Ok(o) => Ok(o),
            Err(AppendError::Body(e, offset)) => Err(body_failed(e, offset)),
            Err(AppendError::Store(e)) => Err(e.into()),
        }
    }

    /// Appends the last chunk (if any), verifies `digest` and commits the blob into `repo`.
    /// `range` is the chunk's `Content-Range` when given: one that does not start where the
    /// upload stands is a 416 and leaves the session as it was, for the client to resume.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.writable()?;
        let mut s = self.session(repo, id).await?;
        if let Some((start, _end)) = range
            && start != s.offset
        {
            return Err(range_error(s.offset, &s.id, start));
        }
        self.append(&mut s, body).await?;
        self.commit_session(repo, s, digest).await
    }

    async fn commit_session(
        &self,
        repo: &RepoName,
        s: UploadSession,
        digest: &Digest,
    ) -> Result<u64> {
        let _pushing = self.maintenance.read().await;
        let size = match self.uploads.finish(s, digest).await {
            Ok(size) => size,
            Err(e) => {
                if matches!(e, StoreError::DigestMismatch { .. }) {
                    self.metrics.verify_failures.inc();
                }
                return Err(e.into());
            }
        };
        self.adopt_blob(repo, digest, size, Origin::Local).await?;
        // A push is acknowledged only once its records are durable.
        self.index.flush().await?;
        Ok(size)
    }

    /// A single-request upload (`POST ?digest=`).
    pub async fn upload_whole<S, E>(&self, repo: &RepoName, digest: &Digest, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let status = self.start_upload(repo, digest.algorithm()).await?;
        let mut s = self.session(repo, &status.id).await?;
        if let Err(e) = self.append(&mut s, body).await {
            self.uploads.remove(s).await?;
            return Err(e);
        }
        self.commit_session(repo, s, digest).await
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let s = self.session(repo, id).await?;
        self.uploads.remove(s).await?;
        Ok(())
    }

    // ---- manifests

    /// The digest a reference names in `repo`, with the tag record when it is a tag.
    pub fn resolve(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<(Digest, Option<TagRecord>)>> {
        match reference {
            Reference::Digest(d) => Ok(Some((d.clone(), None))),
            Reference::Tag(t) => match self.index.tag(repo, t)? {
                None => Ok(None),
                Some(rec) => Ok(Some((rec.digest.clone(), Some(rec)))),
            },
        }
    }

    /// A manifest of `repo` by digest, with its bytes.
    pub async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Manifest>> {
        let Some(rec) = self.index.manifest(repo, digest)? else {
            return Ok(None);
        };
        self.touch(digest);
        if let Some(m) = self.cache.manifest(digest).await {
            return Ok(Some(Manifest {
                digest: digest.clone(),
                media_type: m.media_type,
                bytes: m.bytes,
            }));
        }
        let Some(bytes) = self
            .store
            .read_small(digest, MAX_MANIFEST_BYTES as u64)
            .await?
        else {
            tracing::warn!(%digest, repo = %repo, "manifest file missing; dropping its index entry");
            self.index.delete_manifest(repo, digest)?;
            return Ok(None);
        };
        self.cache
            .insert_manifest(
                digest,
                CachedManifest {
                    media_type: rec.media_type.clone(),
                    bytes: bytes.clone(),
                },
            )
            .await;
        Ok(Some(Manifest {
            digest: digest.clone(),
            media_type: rec.media_type,
            bytes,
        }))
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Manifest>> {
        match self.resolve(repo, reference)? {
            None => Ok(None),
            Some((d, _)) => self.manifest_by_digest(repo, &d).await,
        }
    }

    /// Validates and stores a pushed manifest. Every blob it references must be visible in
    /// `repo`, and every child of an index must be a manifest of `repo`. `tags` (the `?tag=`
    /// parameters) are pointed at it too.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
        tags: &[Tag],
    ) -> Result<PutManifest> {
        self.writable()?;
        let _pushing = self.maintenance.read().await;
        let parsed = ParsedManifest::parse(&bytes, content_type)?;
        // Pushed by digest, the manifest is named in that digest's algorithm; by tag, sha256.
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of_with(algorithm, &bytes);
        if let Reference::Digest(d) = reference
            && *d != digest
        {
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                "manifest digest does not match the reference it was pushed to",
            )
            .detail(
                serde_json::json!({ "expected": d.to_string(), "actual": digest.to_string() }),
            ));
        }
        for b in &parsed.blobs {
            if self.blob_size(repo, b).await?.is_none() {
                return Err(RegistryError::new(
                    ErrorCode::ManifestBlobUnknown,
                    "manifest references a blob unknown to this repository",
                )
                .detail(serde_json::json!({ "digest": b.to_string() })));
            }
        }
        for m in &parsed.manifests {
            if self.index.manifest(repo, m)?.is_none() {
                return Err(RegistryError::new(
                    ErrorCode::ManifestBlobUnknown,
                    "index references a manifest unknown to this repository",
                )
                .detail(serde_json::json!({ "digest": m.to_string() })));
            }
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        let checked = now();
        self.store_manifest(repo, &digest, &parsed, bytes, Origin::Local, tag, checked)
            .await?;
        for t in tags {
            self.index.set_tag(
                repo,
                t,
                &TagRecord {
                    digest: digest.clone(),
                    origin: Origin::Local,
                    checked,
                },
            )?;
        }
        self.index.flush().await?;
        Ok(PutManifest {
            digest,
            subject: parsed.subject,
        })
    }

    /// Writes manifest bytes and their index records (pushed, or fetched by the mirror).
    #[allow(clippy::too_many_arguments)]
    pub async fn store_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        parsed: &ParsedManifest,
        bytes: Bytes,
        origin: Origin,
        tag: Option<&Tag>,
        checked: u64,
    ) -> Result<()> {
        let stored = self.store.put_bytes(digest.algorithm(), &bytes).await?;
        debug_assert_eq!(&stored, digest);
        let size = bytes.len() as u64;
        let referrer = parsed.subject.as_ref().map(|_| Descriptor {
            media_type: parsed.media_type.clone(),
            digest: digest.to_string(),
            size: size as i64,
            urls: None,
            annotations: parsed.annotations.clone(),
            artifact_type: parsed.artifact_type.clone(),
            platform: None,
        });
        let tag_record = TagRecord {
            digest: digest.clone(),
            origin,
            checked,
        };
        // Manifests are blobs too (distribution serves them from the blob endpoint): the blob
        // record, link, manifest record, referrer entry and tag are written together.
        self.index.put_manifest(
            repo,
            digest,
            &blob_record(size, origin),
            &ManifestRecord {
                media_type: parsed.media_type.clone(),
                size,
                origin,
                subject: parsed.subject.clone(),
            },
            referrer.as_ref(),
            tag.map(|t| (t, &tag_record)),
        )?;
        self.cache.insert_blob(repo, digest, size).await;
        if origin == Origin::Proxy {
            self.evictor.wake();
        }
        self.cache
            .insert_manifest(
                digest,
                CachedManifest {
                    media_type: parsed.media_type.clone(),
                    bytes,
                },
            )
            .await;
        Ok(())
    }

    /// Deletes a manifest by digest (and its tags), or just a tag.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        self.deletable()?;
        let found = match reference {
            Reference::Tag(t) => self.index.delete_tag(repo, t)?,
            Reference::Digest(d) => self.index.delete_manifest(repo, d)?,
        };
        if !found {
            return Err(RegistryError::manifest_unknown(reference));
        }
        self.index.flush().await?;
        Ok(())
    }

    // ---- listings

    pub fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Option<Vec<String>>> {
        if !self.index.repo_exists(repo)? {
            return Ok(None);
        }
        Ok(Some(self.index.list_tags(repo, last, n)?))
    }

    pub fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        Ok(self.index.list_repos(last, n)?)
    }

    /// Referrers of `subject` in `repo`, optionally only those of one artifact type.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let mut all = self.index.referrers(repo, subject)?;
        if let Some(t) = artifact_type {
            all.retain(|d| d.artifact_type.as_deref() == Some(t));
        }
        Ok(all)
    }
}

/// A new blob record, created and used now.
fn blob_record(size: u64, origin: Origin) -> BlobRecord {
    let t = now_ms();
    BlobRecord {
        size,
        origin,
        created: t,
        last_access: t,
    }
}

/// 416 for a chunk that does not start where the upload stands.
pub fn range_error(offset: u64, id: &str, got: u64) -> RegistryError {
    let err = RegistryError::new(
        ErrorCode::RangeInvalid,
        format!("chunk starts at byte {got} but the upload has {offset} bytes"),
    )
    .with_header(http::HeaderName::from_static("docker-upload-uuid"), id);
    if offset > 0 {
        err.with_header(http::header::RANGE, format!("0-{}", offset - 1))
    } else {
        err.with_header(http::header::RANGE, "0-0")
    }
}
