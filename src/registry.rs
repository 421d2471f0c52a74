//! The local registry: the operations of the distribution API on pushed (and cached) content,
//! over the depot (blob store, index, layer-info cache) and the upload sessions. Its fields are
//! private: the mirror and `App` get operations, never the layers below. Knows nothing of HTTP,
//! of upstreams or of `lifecycle/` (which works on the depot beside it); a failure that HTTP
//! states in headers is carried as a fact on `RegistryError` (`UploadPosition`).
//!
//! With a shared bucket (`storage.s3`) the bucket is the source of truth: every push, tag and
//! delete is written to it before the index and before it is acknowledged, and what the
//! index lacks is read through from it (`shared`). Without one the index is the only truth
//! and nothing of that runs.

use crate::cache::CachedManifest;
use crate::clock::{now_ms, now_secs};
use crate::depot::Depot;
use crate::error::{ErrorCode, RegistryError, UploadPosition};
use crate::index::{BlobRecord, ManifestRecord, Origin, TagNotes, TagRecord};
use crate::oci::{Algorithm, Descriptor, Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::{AppendError, BlobWriter, OpenBlob, StoreError, UploadSession, Uploads};
use bytes::Bytes;
use futures::Stream;
use std::sync::Arc;
use std::time::Duration;

mod hot;
mod images;
mod shared;
pub use images::PurgeReport;

type Result<T> = std::result::Result<T, RegistryError>;

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
    /// The manifest's media type, as stored.
    pub media_type: String,
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
    /// With a shared bucket: how old a tag's local copy may be before it is checked in the
    /// bucket again (`storage.s3.tagrefresh`).
    pub tag_refresh: Duration,
}

pub struct Registry {
    /// Shared with `lifecycle/`: pushes take its lock shared, reads note accesses in it, and
    /// proxied content that lands wakes eviction through it.
    depot: Arc<Depot>,
    uploads: Uploads,
    options: Options,
    /// Tags resolved lately, while the index says the same (`get_manifest` by tag).
    hot: hot::HotTags,
    /// With a shared bucket: when each tag was last checked there.
    checked: shared::Checked,
}

fn body_failed<E: std::fmt::Display>(e: E, offset: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadInvalid,
        format!("request body broke off after {offset} bytes of the upload: {e}"),
    )
}

impl Registry {
    pub fn new(depot: Arc<Depot>, uploads: Uploads, options: Options) -> Registry {
        Registry {
            depot,
            uploads,
            options,
            hot: hot::HotTags::default(),
            checked: shared::Checked::default(),
        }
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
        self.sync_link(repo, digest).await?;
        if let Some(size) = self.depot.cache.blob_size(repo, digest).await {
            self.depot
                .metrics
                .layer_info_lookups
                .with_label_values(&["memory"])
                .inc();
            return Ok(Some(size));
        }
        // Redis (shared by replicas) is believed only for a blob this store holds whole.
        if let Some(size) = self.depot.cache.shared_blob_size(repo, digest).await
            && self.depot.store.stat(digest).await? == Some(size)
        {
            self.depot
                .metrics
                .layer_info_lookups
                .with_label_values(&["redis"])
                .inc();
            self.depot.cache.remember_blob(repo, digest, size).await;
            return Ok(Some(size));
        }
        if !self.depot.index.is_linked(repo, digest)? {
            if let Some(size) = self.read_link_through(repo, digest).await? {
                self.depot.cache.insert_blob(repo, digest, size).await;
                return Ok(Some(size));
            }
            self.depot
                .metrics
                .layer_info_lookups
                .with_label_values(&["absent"])
                .inc();
            return Ok(None);
        }
        let size = match self.depot.index.blob(digest)? {
            Some(rec) => Some(rec.size),
            None => self.depot.store.stat(digest).await?,
        };
        self.depot
            .metrics
            .layer_info_lookups
            .with_label_values(&["index"])
            .inc();
        if let Some(size) = size {
            self.depot.cache.insert_blob(repo, digest, size).await;
        }
        Ok(size)
    }

    /// Opens `digest` for `repo`, if the repository may see it and the file is there.
    pub async fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<OpenBlob>> {
        if self.blob_size(repo, digest).await?.is_none() {
            return Ok(None);
        }
        match self.depot.store.open_blob(digest).await? {
            Some(open) => {
                self.depot.touch(digest);
                Ok(Some(open))
            }
            None => {
                // The index knew a blob whose file is gone: forget it.
                tracing::warn!(%digest, "blob file missing; dropping its index entry");
                self.depot.index.remove_blob(digest)?;
                self.depot.cache.forget_blob(digest).await;
                Ok(None)
            }
        }
    }

    /// A short-lived URL to GET a committed blob from its backend directly (an object
    /// store's presigned URL); `None` when the backend has none. No visibility check: the
    /// caller opened the blob for its repository first.
    pub async fn presigned_url(&self, digest: &Digest) -> Result<Option<String>> {
        Ok(self.depot.store.presigned_url(digest).await?)
    }

    /// Records a committed blob and makes it visible to `repo` (in a shared bucket first: a
    /// pushed blob loses its cached marker there, and `repo` gets its link).
    pub async fn adopt_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        origin: Origin,
    ) -> Result<()> {
        if let Some(meta) = self.meta() {
            if origin == Origin::Local {
                meta.mark_pushed(digest).await?;
            }
            meta.link_layer(repo, digest).await?;
        }
        self.depot
            .index
            .record_blob(repo, digest, &blob_record(size, origin))?;
        self.depot.cache.insert_blob(repo, digest, size).await;
        if origin == Origin::Proxy {
            self.depot.note_growth();
        }
        Ok(())
    }

    /// Makes a blob of `from` visible in `repo`; its size, or `None` when `from` cannot see it.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Option<u64>> {
        self.writable()?;
        let _pushing = self.depot.pushing().await;
        let Some(size) = self.blob_size(from, digest).await? else {
            return Ok(None);
        };
        if self.depot.store.stat(digest).await?.is_none() {
            return Ok(None);
        }
        self.adopt_blob(repo, digest, size, Origin::Local).await?;
        self.depot.index.flush().await?;
        Ok(Some(size))
    }

    /// Unlinks a blob from `repo`; the file itself goes at the next garbage collection.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.deletable()?;
        let in_bucket = match self.meta() {
            Some(meta) => meta.unlink_layer(repo, digest).await?,
            None => false,
        };
        if !self.depot.index.unlink(repo, digest)? && !in_bucket {
            return Err(RegistryError::blob_unknown(digest));
        }
        self.depot.cache.forget_link(repo, digest).await;
        self.depot.index.flush().await?;
        Ok(())
    }

    /// Holds off removals (eviction, purge, gc) while the caller records content in several
    /// steps, as a push does. Do not call the API's push operations while holding it: they take
    /// the same shared lock, and a removal queued in between would wait on both.
    pub async fn hold_removals(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.depot.pushing().await
    }

    /// The size of `digest` in the store, whatever repository it came through: no visibility
    /// check, for the mirror to ask the upstream whether a repository may see it too.
    pub async fn stored_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.depot.store.stat(digest).await?)
    }

    /// Makes `digest` visible in `repo` before the blob is here: a fetched manifest's blobs,
    /// which the mirror serves to that repository once they are fetched.
    pub async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.depot.index.is_linked(repo, digest)? {
            return Ok(());
        }
        // In a shared bucket first, as every link is (another replica's `sync_link` keeps a
        // link only the bucket confirms).
        if let Some(meta) = self.meta() {
            meta.link_layer(repo, digest).await?;
        }
        Ok(self.depot.index.link(repo, digest)?)
    }

    /// Starts writing a blob fetched from elsewhere: hashed as it is written, committed only
    /// when its digest matches; `adopt_blob` then records it.
    pub async fn blob_writer(
        &self,
        digest: &Digest,
    ) -> std::result::Result<BlobWriter, StoreError> {
        self.depot.store.writer_expecting(digest).await
    }

    /// Ends a `blob_writer` write of a blob fetched from an upstream and commits it (marked
    /// as cached content in a shared bucket), only if it matches `expected` (when given); the
    /// digest and size committed. `adopt_blob` then records it.
    pub async fn commit_blob(
        &self,
        writer: BlobWriter,
        expected: Option<&Digest>,
    ) -> std::result::Result<(Digest, u64), StoreError> {
        self.depot.store.commit_cached(writer, expected).await
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
            return Err(offset_mismatch(&s, start));
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
        self.depot
            .metrics
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
            return Err(offset_mismatch(&s, start));
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
        let _pushing = self.depot.pushing().await;
        let size = self
            .uploads
            .finish(s, digest)
            .await
            .map_err(|e| self.push_failed(e))?;
        self.pushed(repo, digest, size).await
    }

    /// A store failure of a push, counted when it is a digest mismatch.
    fn push_failed(&self, e: StoreError) -> RegistryError {
        if matches!(e, StoreError::DigestMismatch { .. }) {
            self.depot.metrics.verify_failures.inc();
        }
        e.into()
    }

    /// Records a pushed blob in `repo`; a push is acknowledged only once its records are
    /// durable.
    async fn pushed(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<u64> {
        self.adopt_blob(repo, digest, size, Origin::Local).await?;
        self.depot.index.flush().await?;
        Ok(size)
    }

    /// A single-request upload (`POST ?digest=`).
    pub async fn upload_whole<S, E>(&self, repo: &RepoName, digest: &Digest, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        if self.uploads.in_bucket() {
            return self.put_whole(repo, digest, body).await;
        }
        let status = self.start_upload(repo, digest.algorithm()).await?;
        let mut s = self.session(repo, &status.id).await?;
        if let Err(e) = self.append(&mut s, body).await {
            self.uploads.remove(s).await?;
            return Err(e);
        }
        self.commit_session(repo, s, digest).await
    }

    /// [`Registry::upload_whole`] with sessions in the bucket: a single request needs no
    /// session another replica could continue.
    async fn put_whole<S, E>(&self, repo: &RepoName, digest: &Digest, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.writable()?;
        let _pushing = self.depot.pushing().await;
        let size = match self.uploads.put_whole(digest, body).await {
            Ok(size) => size,
            Err(AppendError::Body(e, offset)) => return Err(body_failed(e, offset)),
            Err(AppendError::Store(e)) => return Err(self.push_failed(e)),
        };
        self.depot.metrics.upload_bytes.inc_by(size);
        self.pushed(repo, digest, size).await
    }

    /// Removes upload sessions started more than `age` ago (a dry run only counts them); how many.
    pub async fn purge_uploads(
        &self,
        age: Duration,
        dry_run: bool,
    ) -> std::result::Result<usize, StoreError> {
        self.uploads.purge(age, dry_run).await
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let s = self.session(repo, id).await?;
        self.uploads.remove(s).await?;
        Ok(())
    }

    // ---- manifests

    /// The digest a reference names in `repo`, with the tag record when it is a tag.
    pub async fn resolve(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<(Digest, Option<TagRecord>)>> {
        match reference {
            Reference::Digest(d) => Ok(Some((d.clone(), None))),
            Reference::Tag(t) => match self.tag_record(repo, t).await? {
                None => Ok(None),
                Some(rec) => Ok(Some((rec.digest.clone(), Some(rec)))),
            },
        }
    }

    /// What `tag` of `repo` points at, whether pushed or cached, and when it was last checked.
    pub async fn tag_record(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>> {
        self.sync_tag(repo, tag).await?;
        Ok(self.depot.index.tag(repo, tag)?)
    }

    /// A manifest of `repo` by digest, with its bytes.
    pub async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Manifest>> {
        self.sync_manifest(repo, digest).await?;
        let rec = match self.depot.index.manifest(repo, digest)? {
            Some(rec) => rec,
            None if self.read_manifest_through(repo, digest, None).await? => {
                match self.depot.index.manifest(repo, digest)? {
                    Some(rec) => rec,
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        self.depot.touch(digest);
        if let Some(m) = self.depot.cache.manifest(digest).await {
            return Ok(Some(Manifest {
                digest: digest.clone(),
                media_type: m.media_type,
                bytes: m.bytes,
            }));
        }
        let Some(bytes) = self.stored_manifest(digest).await? else {
            tracing::warn!(%digest, repo = %repo, "manifest file missing; dropping its index entry");
            self.depot.index.delete_manifest(repo, digest)?;
            return Ok(None);
        };
        self.depot
            .cache
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

    /// A manifest of `repo` by tag or digest. A tag resolved lately is answered from memory
    /// while the index has not changed since (see `hot`).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Manifest>> {
        let Reference::Tag(tag) = reference else {
            return match self.resolve(repo, reference).await? {
                None => Ok(None),
                Some((d, _)) => self.manifest_by_digest(repo, &d).await,
            };
        };
        // With a shared bucket, at most one small GET per `storage.s3.tagrefresh`; a change
        // it finds bumps the generation below.
        self.sync_tag(repo, tag).await?;
        let generation = self.depot.index.tags_generation();
        if let Some((m, touch)) = self.hot.get(repo, tag, generation) {
            if touch {
                self.depot.touch(&m.digest);
            }
            return Ok(Some(m));
        }
        let Some((d, _)) = self.resolve(repo, reference).await? else {
            return Ok(None);
        };
        let found = self.manifest_by_digest(repo, &d).await?;
        if let Some(m) = &found {
            self.hot.insert(repo, tag, generation, m.clone());
        }
        Ok(found)
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
        let _pushing = self.depot.pushing().await;
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
            if self.depot.index.manifest(repo, m)?.is_none()
                && !self.read_manifest_through(repo, m, None).await?
            {
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
        let checked = now_secs();
        self.store_manifest(repo, &digest, &parsed, bytes, Origin::Local, tag, checked)
            .await?;
        for t in tags {
            if let Some(meta) = self.meta() {
                meta.set_tag(repo, t, &digest).await?;
            }
            self.checked.note(repo, t.as_str());
            self.depot.index.set_tag(
                repo,
                t,
                &TagRecord {
                    digest: digest.clone(),
                    origin: Origin::Local,
                    checked,
                },
            )?;
        }
        self.depot.index.flush().await?;
        Ok(PutManifest {
            digest,
            media_type: parsed.media_type,
            subject: parsed.subject,
        })
    }

    /// Writes manifest bytes and their records (pushed, or fetched by the mirror): in a
    /// shared bucket first (bytes, revision link, tag), then in the index.
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
        let stored = self
            .depot
            .store
            .put_bytes(digest.algorithm(), &bytes, origin == Origin::Proxy)
            .await?;
        debug_assert_eq!(&stored, digest);
        if let Some(meta) = self.meta() {
            if origin == Origin::Local {
                meta.mark_pushed(digest).await?;
            }
            meta.add_revision(repo, digest).await?;
            if let Some(subject) = &parsed.subject {
                meta.add_referrer(repo, subject, digest).await?;
            }
            if let Some(t) = tag {
                meta.set_tag(repo, t, digest).await?;
            }
        }
        let tag_record = tag.map(|t| {
            (
                t,
                TagRecord {
                    digest: digest.clone(),
                    origin,
                    checked,
                },
            )
        });
        self.record_manifest(
            repo,
            digest,
            parsed,
            bytes,
            origin,
            tag_record.as_ref().map(|(t, r)| (*t, r)),
        )
        .await?;
        self.checked.note(repo, digest.as_str());
        if let Some(t) = tag {
            self.checked.note(repo, t.as_str());
        }
        Ok(())
    }

    /// Records a stored manifest in the index (blob record, link, manifest record, referrer,
    /// tag) and keeps its bytes in memory.
    async fn record_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        parsed: &ParsedManifest,
        bytes: Bytes,
        origin: Origin,
        tag: Option<(&Tag, &TagRecord)>,
    ) -> Result<()> {
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
        // Manifests are blobs too (distribution serves them from the blob endpoint): the blob
        // record, link, manifest record, referrer entry and tag are written together.
        self.depot.index.put_manifest(
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
            tag,
        )?;
        self.depot.cache.insert_blob(repo, digest, size).await;
        if origin == Origin::Proxy {
            self.depot.note_growth();
        }
        self.depot
            .cache
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

    /// Records that the upstream still points cached tag `tag` of `repo` at `digest`, as of now.
    /// Index only: the digest is the one the bucket already names (a moved tag is stored
    /// with its manifest, by `store_manifest`).
    pub fn confirm_cached_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        let rec = TagRecord {
            digest: digest.clone(),
            origin: Origin::Proxy,
            checked: now_secs(),
        };
        Ok(self.depot.index.set_tag(repo, tag, &rec)?)
    }

    /// The mirror's notes on cached tag `tag` of `repo` (see `TagNotes`).
    pub fn tag_notes(&self, repo: &RepoName, tag: &Tag) -> Result<TagNotes> {
        Ok(self.depot.index.tag_notes(repo, tag)?)
    }

    /// Changes the mirror's notes on a cached tag with `f`, atomically; returns what `f`
    /// returned on the update that was kept.
    pub fn update_tag_notes<R>(
        &self,
        repo: &RepoName,
        tag: &Tag,
        f: impl Fn(&mut TagNotes) -> R,
    ) -> Result<R> {
        Ok(self.depot.index.update_tag_notes(repo, tag, f)?)
    }

    /// Deletes a manifest by digest (and its tags), or just a tag; returns the tags that
    /// went (the one named, or those that pointed at the manifest, in tag order).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Vec<Tag>> {
        self.deletable()?;
        // In a shared bucket first: what it had counts as there even if this replica had
        // not read it yet.
        let in_bucket = match self.meta() {
            None => None,
            Some(meta) => Some(match reference {
                Reference::Tag(t) => meta.remove_tag(repo, t).await?.then(|| vec![t.clone()]),
                Reference::Digest(d) => {
                    let mut tags = Vec::new();
                    for name in meta.tags(repo).await?.unwrap_or_default() {
                        let Ok(t) = Tag::parse(&name) else { continue };
                        if meta.tag(repo, &t).await?.is_some_and(|(at, _)| at == *d) {
                            meta.remove_tag(repo, &t).await?;
                            tags.push(t);
                        }
                    }
                    if let Some(subject) = self.subject_of(d).await? {
                        meta.remove_referrer(repo, &subject, d).await?;
                    }
                    meta.remove_revision(repo, d).await?.then_some(tags)
                }
            }),
        };
        let removed = match reference {
            Reference::Tag(t) => {
                self.checked.note(repo, t.as_str());
                self.depot
                    .index
                    .delete_tag(repo, t)?
                    .then(|| vec![t.clone()])
            }
            Reference::Digest(d) => self.depot.index.delete_manifest_and_tags(repo, d)?,
        };
        let removed = match (removed, in_bucket.flatten()) {
            (Some(mut here), Some(there)) => {
                for t in there {
                    if !here.contains(&t) {
                        here.push(t);
                    }
                }
                here.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                Some(here)
            }
            (here, there) => here.or(there),
        };
        let Some(tags) = removed else {
            return Err(RegistryError::manifest_unknown(reference));
        };
        for t in &tags {
            self.checked.note(repo, t.as_str());
        }
        if let Reference::Digest(d) = reference {
            self.checked.note(repo, d.as_str());
        }
        self.depot.index.flush().await?;
        Ok(tags)
    }

    // ---- listings

    /// Up to `n` tags of `repo` after `last`; `None` when there is no such repository. With a
    /// shared bucket, its listing (every replica's tags, none this one alone has).
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Option<Vec<String>>> {
        if let Some(meta) = self.meta() {
            return Ok(meta.tags(repo).await?.map(|tags| page(tags, last, n)));
        }
        if !self.depot.index.repo_exists(repo)? {
            return Ok(None);
        }
        Ok(Some(self.depot.index.list_tags(repo, last, n)?))
    }

    /// Up to `n` repository names after `last`. With a shared bucket, from its listing.
    pub async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        if let Some(meta) = self.meta() {
            return Ok(page(meta.repositories().await?, last, n));
        }
        Ok(self.depot.index.list_repos(last, n)?)
    }

    /// Referrers of `subject` in `repo`, optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        self.sync_referrers(repo, subject).await?;
        let mut all = self.depot.index.referrers(repo, subject)?;
        if let Some(t) = artifact_type {
            all.retain(|d| d.artifact_type.as_deref() == Some(t));
        }
        Ok(all)
    }
}

/// Up to `n` of sorted `names` after `last`.
fn page(names: Vec<String>, last: Option<&str>, n: usize) -> Vec<String> {
    names
        .into_iter()
        .filter(|x| last.is_none_or(|l| x.as_str() > l))
        .take(n)
        .collect()
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

/// 416 for a chunk that does not start where the upload stands; the error says where it does.
fn offset_mismatch(s: &UploadSession, got: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::RangeInvalid,
        format!(
            "chunk starts at byte {got} but the upload has {} bytes",
            s.offset
        ),
    )
    .at_upload(UploadPosition {
        id: s.id.clone(),
        offset: s.offset,
    })
}
