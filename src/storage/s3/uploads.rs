//! Push upload sessions kept in the bucket (`storage.s3`), so that any replica can continue —
//! PATCH, PUT, status, DELETE — a session another one started, also after that one was
//! killed. Layout, beside distribution's own (`startedat` is what distribution writes there):
//!
//! ```text
//! <root>/docker/registry/v2/repositories/<name>/_uploads/<uuid>/startedat     RFC 3339 start time
//!                                                               /state         stevedore's record
//!                                                               /tail/<nonce>  bytes after the last part
//! <root>/stevedore/objects/<uuid>                                the multipart upload's key
//! ```
//!
//! The `state` record is the session: offset, the S3 multipart upload id and the ETags of its
//! parts, the name of the tail object, and the serialized hash state of every byte so far
//! (one write commits them together, so it is kept in the record rather than in distribution's
//! `hashstates/<alg>/<offset>`, which could not be updated with the offset atomically). Bytes go
//! up while they arrive: each whole `chunksize` part is sent to the multipart upload (two in
//! flight), the shorter tail is written as its own object at the end of the request, then the
//! record is rewritten *conditionally* (If-Match on the ETag read; every record carries a fresh
//! nonce, so no two writes share an ETag). A request whose conditional write fails lost a race
//! with another replica: its tail is deleted and it answers 416; the winner's record names only
//! its own parts and tail. A request claims the session (a conditional write) before its first
//! part, so a stale writer learns it lost before it sends a part whose number a newer one uses.
//!
//! The final PUT completes the multipart upload only when the running hash matches the digest
//! (aborted otherwise), at `stevedore/objects/<uuid>` (an S3 multipart upload names its key when
//! it starts, before the digest is known), where the blob then stays: the backend names it for
//! its digest (`S3Backend::adopt`), nothing is copied, and the session is removed. A blob no
//! longer than one part never uses a multipart upload: it is put once, under its digest, after
//! the check. Sessions older than `uploadpurging.age` are aborted and
//! removed by `purge`. Must not: hold more than a few parts of a session in memory, or touch
//! anything outside `_uploads/` but its own object and the blob it commits.

use super::{S3Backend, not_found, s3_err};
use crate::clock::{now_secs, rfc3339};
use crate::oci::{Algorithm, Digest, DigestHasher};
use crate::storage::{AppendError, StoreError};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    UpdateVersion,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Parts of one session sent at once while its bytes keep arriving.
const PARTS_IN_FLIGHT: usize = 2;

/// The `state` object of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Seconds since the Unix epoch (the `startedat` object says the same in RFC 3339).
    started: u64,
    /// The algorithm of `hash` (`sha256`, or what `?digest-algorithm=` asked).
    algorithm: String,
    /// Bytes received and kept.
    offset: u64,
    /// Serialized hash state of bytes `0..offset`, base64.
    hash: String,
    /// The part size of this session (`chunksize` when it started).
    part_size: u64,
    /// The S3 multipart upload at `data`, once a whole part arrived.
    multipart: Option<String>,
    /// ETags of the parts sent, in order: part `i` holds bytes `i*part_size..(i+1)*part_size`.
    parts: Vec<String>,
    /// Name of the `tail/` object holding the bytes after the last part, if any.
    tail: Option<String>,
    /// A fresh value at each write, so that every version of the record has its own ETag.
    write: String,
}

impl Record {
    fn tail_len(&self) -> u64 {
        self.offset - self.parts.len() as u64 * self.part_size
    }

    fn algorithm(&self) -> Result<Algorithm, StoreError> {
        Algorithm::parse(&self.algorithm).map_err(|_| corrupt("unknown algorithm"))
    }

    fn hasher(&self) -> Result<DigestHasher, StoreError> {
        let state = base64::engine::general_purpose::STANDARD
            .decode(&self.hash)
            .map_err(|_| corrupt("hash state is not base64"))?;
        DigestHasher::restore(self.algorithm()?, &state).ok_or_else(|| corrupt("bad hash state"))
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "upload session record in the bucket is unreadable: {what}"
    )))
}

fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(std::io::Error::other(e))
}

/// A session read from the bucket, with the version of its record this process last saw.
#[derive(Debug)]
pub struct BucketSession {
    repo: String,
    id: String,
    record: Record,
    version: UpdateVersion,
    /// The tail's bytes, when this process has them already (after an append).
    tail: Option<Bytes>,
}

impl BucketSession {
    pub fn offset(&self) -> u64 {
        self.record.offset
    }

    pub fn started(&self) -> u64 {
        self.record.started
    }
}

/// Upload sessions in the bucket of an `S3Backend`.
#[derive(Debug, Clone)]
pub struct BucketUploads {
    s3: S3Backend,
}

impl BucketUploads {
    pub fn new(s3: S3Backend) -> BucketUploads {
        BucketUploads { s3 }
    }

    fn repositories(&self) -> Key {
        self.s3.key("docker/registry/v2/repositories")
    }

    fn key(&self, repo: &str, id: &str, rest: &str) -> Key {
        self.s3.key(&format!(
            "docker/registry/v2/repositories/{repo}/_uploads/{id}/{rest}"
        ))
    }

    fn prefix(&self, repo: &str, id: &str) -> Key {
        self.s3.key(&format!(
            "docker/registry/v2/repositories/{repo}/_uploads/{id}"
        ))
    }

    fn store(&self) -> &object_store::aws::AmazonS3 {
        &self.s3.inner.store
    }

    /// Writes a new session of `repo`; its start time.
    pub async fn create(
        &self,
        repo: &str,
        id: &str,
        algorithm: Algorithm,
    ) -> Result<u64, StoreError> {
        let started = now_secs();
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store()
            .put_opts(
                &self.key(repo, id, "startedat"),
                rfc3339(started).into_bytes().into(),
                create(),
            )
            .await
            .map_err(s3_err)?;
        let record = Record {
            started,
            algorithm: algorithm.name().to_owned(),
            offset: 0,
            hash: base64::engine::general_purpose::STANDARD
                .encode(DigestHasher::new(algorithm).save()),
            part_size: self.s3.inner.chunk_size,
            multipart: None,
            parts: Vec::new(),
            tail: None,
            write: uuid::Uuid::new_v4().simple().to_string(),
        };
        let json = serde_json::to_vec(&record).expect("a session record serializes");
        self.store()
            .put_opts(&self.key(repo, id, "state"), json.into(), create())
            .await
            .map_err(s3_err)?;
        Ok(started)
    }

    /// Reads session `id` of `repo`; `None` when there is none.
    pub async fn load(&self, repo: &str, id: &str) -> Result<Option<BucketSession>, StoreError> {
        let got = match self.store().get(&self.key(repo, id, "state")).await {
            Ok(g) => g,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(s3_err(e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let body = got.bytes().await.map_err(s3_err)?;
        let record: Record = serde_json::from_slice(&body).map_err(|e| corrupt(&e.to_string()))?;
        Ok(Some(BucketSession {
            repo: repo.to_owned(),
            id: id.to_owned(),
            record,
            version,
            tail: None,
        }))
    }

    /// Rewrites the record of `s` as `record`, only if nobody wrote it since `s` read it.
    async fn save(&self, s: &mut BucketSession, mut record: Record) -> Result<(), StoreError> {
        record.write = uuid::Uuid::new_v4().simple().to_string();
        let json = serde_json::to_vec(&record).expect("a session record serializes");
        let opts = PutOptions {
            mode: PutMode::Update(s.version.clone()),
            ..Default::default()
        };
        match self
            .store()
            .put_opts(&self.key(&s.repo, &s.id, "state"), json.into(), opts)
            .await
        {
            Ok(r) => {
                s.version = UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                };
                s.record = record;
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Err(StoreError::UploadMoved(s.id.clone())),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// The bytes after the last part.
    async fn tail(&self, s: &BucketSession) -> Result<Bytes, StoreError> {
        if let Some(t) = &s.tail {
            return Ok(t.clone());
        }
        let Some(name) = &s.record.tail else {
            return Ok(Bytes::new());
        };
        let key = self.key(&s.repo, &s.id, &format!("tail/{name}"));
        let bytes = match self.store().get(&key).await {
            Ok(g) => g.bytes().await.map_err(s3_err)?,
            // Removed by a request that won a race after we read the record.
            Err(e) if not_found(&e) => return Err(StoreError::UploadMoved(s.id.clone())),
            Err(e) => return Err(s3_err(e)),
        };
        if bytes.len() as u64 != s.record.tail_len() {
            return Err(corrupt("tail object has the wrong length"));
        }
        Ok(bytes)
    }

    /// Claims the session for this request (so a writer that started earlier loses), and
    /// starts its multipart upload when it has none yet.
    async fn claim(&self, s: &mut BucketSession) -> Result<(), StoreError> {
        let mut record = s.record.clone();
        let mut created = None;
        if record.multipart.is_none() {
            let opts = PutMultipartOptions {
                attributes: self.s3.inner.attributes.clone(),
                ..Default::default()
            };
            let key = self.s3.object_key(&s.id);
            let id = self
                .store()
                .create_multipart_opts(&key, opts)
                .await
                .map_err(s3_err)?;
            record.multipart = Some(id.clone());
            created = Some((key, id));
        }
        let saved = self.save(s, record).await;
        if saved.is_err()
            && let Some((key, id)) = created
        {
            let _ = self.store().abort_multipart(&key, &id).await;
        }
        saved
    }

    /// Appends a body to the session: whole parts go up as they fill, the rest becomes the new
    /// tail, and the record is rewritten at the end. A body that breaks off keeps what arrived;
    /// a failure of the bucket keeps nothing of this request (the session stays where it was).
    pub async fn append<S, E>(&self, s: &mut BucketSession, body: S) -> Result<u64, AppendError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let store_err = AppendError::Store;
        let mut record = s.record.clone();
        let mut hasher = record.hasher().map_err(store_err)?;
        let part_size = record.part_size;
        let mut buf = BytesMut::from(self.tail(s).await.map_err(store_err)?);
        let mut claimed = false;
        let mut next = record.parts.len();
        let mut sending = tokio::task::JoinSet::new();
        let mut sent: Vec<(usize, PartId)> = Vec::new();
        let mut body = std::pin::pin!(body);
        let mut body_error = None;
        let mut failure = None;
        'body: while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            };
            hasher.update(&chunk);
            record.offset += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() as u64 >= part_size {
                if !claimed {
                    if let Err(e) = self.claim(s).await {
                        failure = Some(e);
                        break 'body;
                    }
                    record.multipart.clone_from(&s.record.multipart);
                    claimed = true;
                }
                while sending.len() >= PARTS_IN_FLIGHT {
                    match sending.join_next().await.map(|r| r.map_err(join_err)) {
                        Some(Ok(Ok(part))) => sent.push(part),
                        Some(Ok(Err(e)) | Err(e)) => {
                            failure = Some(e);
                            break 'body;
                        }
                        None => break,
                    }
                }
                let data = buf.split_to(part_size as usize).freeze();
                let (store, key) = (self.store().clone(), self.s3.object_key(&s.id));
                let upload = record.multipart.clone().expect("claimed above");
                let (index, id) = (next, s.id.clone());
                next += 1;
                sending.spawn(async move {
                    let part = store
                        .put_part(&key, &upload, index, PutPayload::from(data))
                        .await
                        .map_err(s3_err)?;
                    tracing::debug!(upload = %id, part = index, "upload part sent to the bucket");
                    Ok((index, part))
                });
            }
        }
        while let Some(r) = sending.join_next().await {
            match r.map_err(join_err) {
                Ok(Ok(part)) => sent.push(part),
                Ok(Err(e)) | Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(AppendError::Store(e));
        }
        sent.sort_by_key(|(i, _)| *i);
        record
            .parts
            .extend(sent.into_iter().map(|(_, p)| p.content_id));
        let arrived = record.offset != s.record.offset;
        if arrived {
            let tail = buf.freeze();
            let old_tail = record.tail.take();
            if !tail.is_empty() {
                let name = uuid::Uuid::new_v4().simple().to_string();
                let key = self.key(&s.repo, &s.id, &format!("tail/{name}"));
                self.store()
                    .put(&key, tail.clone().into())
                    .await
                    .map_err(|e| AppendError::Store(s3_err(e)))?;
                record.tail = Some(name);
            }
            record.hash = base64::engine::general_purpose::STANDARD.encode(hasher.save());
            let new_tail = record.tail.clone();
            if let Err(e) = self.save(s, record).await {
                if let Some(name) = new_tail {
                    self.delete(&self.key(&s.repo, &s.id, &format!("tail/{name}")))
                        .await;
                }
                return Err(AppendError::Store(e));
            }
            if let Some(name) = old_tail {
                self.delete(&self.key(&s.repo, &s.id, &format!("tail/{name}")))
                    .await;
            }
            s.tail = Some(tail);
        }
        match body_error {
            Some(e) => Err(AppendError::Body(e, s.record.offset)),
            None => Ok(s.record.offset),
        }
    }

    /// Verifies the session's bytes against `digest` and commits them under it; the session
    /// is removed whatever the outcome (a mismatch aborts the multipart upload).
    pub async fn finish(&self, mut s: BucketSession, digest: &Digest) -> Result<u64, StoreError> {
        // From here on this request owns the session: a PATCH still running elsewhere loses.
        let record = s.record.clone();
        self.save(&mut s, record).await?;
        let result = self.commit(&s, digest).await;
        self.remove(&s).await?;
        result
    }

    async fn commit(&self, s: &BucketSession, digest: &Digest) -> Result<u64, StoreError> {
        let record = &s.record;
        let size = record.offset;
        let tail = self.tail(s).await?;
        let known = if record.algorithm()? == digest.algorithm() {
            Some(record.hasher()?.finish())
        } else {
            None
        };
        let mismatch = |actual: Digest| StoreError::DigestMismatch {
            expected: digest.clone(),
            actual,
        };
        let Some(upload) = &record.multipart else {
            // No whole part: the blob is the tail, put once under its digest.
            let actual = known.unwrap_or_else(|| Digest::of_with(digest.algorithm(), &tail));
            if actual != *digest {
                return Err(mismatch(actual));
            }
            self.s3.put_blob(digest, tail).await?;
            return Ok(size);
        };
        if let Some(actual) = known.clone()
            && actual != *digest
        {
            return Err(mismatch(actual));
        }
        let data = self.s3.object_key(&s.id);
        let mut parts: Vec<PartId> = record
            .parts
            .iter()
            .map(|e| PartId {
                content_id: e.clone(),
            })
            .collect();
        if !tail.is_empty() {
            parts.push(
                self.store()
                    .put_part(&data, upload, parts.len(), PutPayload::from(tail))
                    .await
                    .map_err(s3_err)?,
            );
        }
        self.store()
            .complete_multipart(&data, upload, parts)
            .await
            .map_err(s3_err)?;
        // Completed: the object is no longer a session's to abort. Whatever fails from here
        // removes it (the bytes are the client's to send again).
        let adopted = async {
            let stored = self.store().head(&data).await.map_err(s3_err)?.size;
            if stored != size {
                return Err(StoreError::SizeMismatch {
                    expected: size,
                    actual: stored,
                });
            }
            if known.is_none() {
                let actual = self.s3.rehash_key(&data, digest.algorithm(), size).await?;
                if actual != *digest {
                    return Err(mismatch(actual));
                }
            }
            self.s3.adopt(&s.id, digest).await
        }
        .await;
        if adopted.is_err() {
            self.delete(&data).await;
        }
        adopted.map(|()| size)
    }

    /// Removes a session: its multipart upload is aborted, its record goes first (so no
    /// request finds a half-removed session), then every other object under it.
    pub async fn remove(&self, s: &BucketSession) -> Result<(), StoreError> {
        self.remove_parts(&s.repo, &s.id, Some(&s.record)).await
    }

    async fn remove_parts(
        &self,
        repo: &str,
        id: &str,
        record: Option<&Record>,
    ) -> Result<(), StoreError> {
        if let Some(upload) = record.and_then(|r| r.multipart.as_ref()) {
            match self
                .store()
                .abort_multipart(&self.s3.object_key(id), upload)
                .await
            {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => {
                    tracing::debug!(upload = %id, error = %e, "aborting an upload's multipart upload failed (completed already?)");
                }
            }
        }
        match self.store().delete(&self.key(repo, id, "state")).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(s3_err(e)),
        }
        let rest: Vec<_> = self
            .store()
            .list(Some(&self.prefix(repo, id)))
            .try_collect()
            .await
            .map_err(s3_err)?;
        for meta in rest {
            self.delete(&meta.location).await;
        }
        Ok(())
    }

    async fn delete(&self, key: &Key) {
        if let Err(e) = self.store().delete(key).await
            && !not_found(&e)
        {
            tracing::warn!(%key, error = %e, "removing an upload session object failed; upload purging retries");
        }
    }

    /// Aborts and removes the sessions started more than `age` ago; how many.
    pub async fn purge(&self, age: Duration, dry_run: bool) -> Result<usize, StoreError> {
        let cutoff = crate::clock::now_ms().saturating_sub(age.as_millis() as u64);
        let root = self.repositories();
        let mut objects = self.store().list(Some(&root));
        let mut stale = Vec::new();
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(s3_err)?;
            let Some(rest) = meta.location.prefix_match(&root) else {
                continue;
            };
            let parts: Vec<String> = rest.map(|p| p.as_ref().to_owned()).collect();
            // <name...>/_uploads/<uuid>/startedat
            let [name @ .., uploads, id, startedat] = parts.as_slice() else {
                continue;
            };
            let modified = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
            if uploads == "_uploads" && startedat == "startedat" && modified <= cutoff {
                stale.push((name.join("/"), id.clone()));
            }
        }
        for (repo, id) in &stale {
            if dry_run {
                tracing::info!(upload = %id, repo = %repo, "would purge stale upload session");
                continue;
            }
            let record = self.load(repo, id).await.ok().flatten();
            self.remove_parts(repo, id, record.as_ref().map(|s| &s.record))
                .await?;
            tracing::info!(upload = %id, repo = %repo, "purged stale upload session");
        }
        Ok(stale.len())
    }
}

impl S3Backend {
    /// The key every replica on this bucket signs upload URLs with when `http.secret` is not
    /// set: generated by the first one (a conditional create) at `<root>/stevedore/http-secret`,
    /// read by the others, so that a session's URL is valid on any replica.
    pub async fn shared_secret(&self) -> Result<Vec<u8>, StoreError> {
        let key = self.key("stevedore/http-secret");
        let fresh: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| u.as_bytes().to_vec())
            .collect();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .store
            .put_opts(&key, fresh.clone().into(), opts)
            .await
        {
            Ok(_) => return Ok(fresh),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(s3_err(e)),
        }
        let got = self.inner.store.get(&key).await.map_err(s3_err)?;
        let secret = got.bytes().await.map_err(s3_err)?.to_vec();
        if secret.len() < 32 {
            return Err(StoreError::Io(std::io::Error::other(format!(
                "{key} in the bucket is shorter than 32 bytes: remove it, or set http.secret"
            ))));
        }
        Ok(secret)
    }

    /// Puts a small verified blob under its digest, unless it is there already.
    async fn put_blob(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        use super::BlobBackend;
        if self.stat(digest).await?.is_some() {
            return Ok(());
        }
        let opts = PutOptions {
            attributes: self.inner.attributes.clone(),
            ..Default::default()
        };
        self.inner
            .store
            .put_opts(&self.blob_key(digest), data.into(), opts)
            .await
            .map_err(s3_err)?;
        Ok(())
    }

    /// The digest in `algorithm` of the object at `key`, streamed.
    async fn rehash_key(
        &self,
        key: &Key,
        algorithm: Algorithm,
        len: u64,
    ) -> Result<Digest, StoreError> {
        use super::RangeSource;
        let source = Box::new(super::ObjectRanges {
            store: self.inner.store.clone(),
            key: key.clone(),
        });
        let mut h = DigestHasher::new(algorithm);
        let mut chunks = source.range(0, len);
        while let Some(chunk) = chunks.next().await {
            h.update(&chunk?);
        }
        Ok(h.finish())
    }
}
