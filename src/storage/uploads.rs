//! Push upload sessions: `uploads/<id>/data` grows with each PATCH, `info.json` says which
//! repository started it and when. The hash state (sha256, or the algorithm the client asked for
//! with `?digest-algorithm=`) is kept in memory while the server runs so that finishing an upload
//! needs no second read; after a restart, or when the final digest is of another algorithm, the
//! data is re-hashed instead. With `storage.s3` the sessions live in the bucket instead
//! (`s3::BucketUploads`), so that any replica can continue one; this module then only
//! serializes the requests of this process on a session and dispatches.

use super::s3::{BucketSession, BucketUploads};
use super::{BlobStore, StoreError};
use crate::clock::now_secs;
use crate::oci::{Algorithm, Digest, DigestHasher, RepoName};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// What `info.json` records of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadInfo {
    pub repo: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Hash of `data` so far; `None` when unknown (after a restart or a failed write).
    hasher: Option<DigestHasher>,
    hashed_len: u64,
}

/// A locked session: only one request works on an upload at a time.
pub struct UploadSession {
    pub id: String,
    pub info: UploadInfo,
    pub offset: u64,
    place: Place,
    state: tokio::sync::OwnedMutexGuard<State>,
}

/// Where a session's bytes are kept.
enum Place {
    /// `uploads/<id>/` on the local disk.
    Disk(PathBuf),
    /// In the bucket, with the record this process read.
    Bucket(Box<BucketSession>),
}

/// Every upload session of the store.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    store: BlobStore,
    /// Set with `storage.s3`: sessions are kept in the bucket.
    bucket: Option<BucketUploads>,
    live: Mutex<HashMap<String, Arc<tokio::sync::Mutex<State>>>>,
}

/// Upload ids are UUIDs we issued; anything else is not a session (and never becomes a path).
fn canonical_id(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
        .filter(|c| c == id)
}

impl Uploads {
    pub async fn open(root: &Path, store: BlobStore) -> Result<Uploads, StoreError> {
        let dir = root.join("uploads");
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Uploads {
            dir,
            bucket: store.bucket_uploads(),
            store,
            live: Mutex::new(HashMap::new()),
        })
    }

    fn state(&self, id: &str) -> Arc<tokio::sync::Mutex<State>> {
        let mut live = self.live.lock().expect("uploads map poisoned");
        live.entry(id.to_owned()).or_default().clone()
    }

    fn forget(&self, id: &str) {
        self.live.lock().expect("uploads map poisoned").remove(id);
    }

    /// Starts a session for `repo` whose data is hashed with `algorithm` as it arrives.
    pub async fn create(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        if let Some(bucket) = &self.bucket {
            bucket.create(repo.as_str(), &id, algorithm).await?;
            return Ok(id);
        }
        let dir = self.dir.join(&id);
        // Held until the session is whole, so that `purge` never sees it half-made (a directory
        // without its info.json looks like an abandoned one).
        let state = self.state(&id);
        let mut held = state.lock().await;
        let info = UploadInfo {
            repo: repo.as_str().to_owned(),
            started: now_secs(),
        };
        let json = serde_json::to_vec(&info).expect("upload info serializes");
        let result = async {
            tokio::fs::create_dir(&dir).await?;
            tokio::fs::write(dir.join("info.json"), json).await?;
            tokio::fs::File::create(dir.join("data")).await?;
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            drop(held);
            self.forget(&id);
            return Err(e.into());
        }
        *held = State {
            hasher: Some(DigestHasher::new(algorithm)),
            hashed_len: 0,
        };
        Ok(id)
    }

    /// Locks session `id` of `repo`; `None` when there is no such session.
    pub async fn lock(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<Option<UploadSession>, StoreError> {
        let Some(id) = canonical_id(id) else {
            return Ok(None);
        };
        let state = self.state(&id).lock_owned().await;
        if let Some(bucket) = &self.bucket {
            let Some(session) = bucket.load(repo.as_str(), &id).await? else {
                drop(state);
                self.forget(&id);
                return Ok(None);
            };
            return Ok(Some(UploadSession {
                id,
                info: UploadInfo {
                    repo: repo.as_str().to_owned(),
                    started: session.started(),
                },
                offset: session.offset(),
                place: Place::Bucket(Box::new(session)),
                state,
            }));
        }
        let dir = self.dir.join(&id);
        let info: UploadInfo = match tokio::fs::read(dir.join("info.json")).await {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(i) => i,
                Err(_) => return Ok(None),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                drop(state);
                self.forget(&id);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if info.repo != repo.as_str() {
            return Ok(None);
        }
        let offset = match tokio::fs::metadata(dir.join("data")).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(UploadSession {
            id,
            info,
            offset,
            place: Place::Disk(dir),
            state,
        }))
    }

    /// Removes a session and its data.
    pub async fn remove(&self, session: UploadSession) -> Result<(), StoreError> {
        let id = session.id.clone();
        let dir = match (&session.place, &self.bucket) {
            (Place::Disk(dir), _) => dir.clone(),
            (Place::Bucket(s), Some(bucket)) => {
                let result = bucket.remove(s).await;
                drop(session);
                self.forget(&id);
                return result;
            }
            (Place::Bucket(_), None) => unreachable!("bucket sessions come from a bucket"),
        };
        let result = tokio::fs::remove_dir_all(&dir).await;
        drop(session);
        self.forget(&id);
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends a body to the session, hashing as it goes; returns the new offset. A body that
    /// breaks off keeps what arrived (the client can ask the status and resume). A failed write
    /// cuts the data back to where it was before this request. The running hash is taken out
    /// of the session while the append runs and put back only when it ends normally: a request
    /// dropped midway (a cancelled HTTP/2 stream) leaves no hash, and the data is re-hashed at
    /// the end instead of being trusted to match a hash of bytes that never reached the file.
    pub async fn append<S, E>(
        &self,
        session: &mut UploadSession,
        body: S,
    ) -> Result<u64, AppendError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let path = match (&mut session.place, &self.bucket) {
            (Place::Disk(dir), _) => dir.join("data"),
            (Place::Bucket(s), Some(bucket)) => {
                let result = bucket.append(s, body).await;
                session.offset = s.offset();
                return result;
            }
            (Place::Bucket(_), None) => unreachable!("bucket sessions come from a bucket"),
        };
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .map_err(|e| AppendError::Store(e.into()))?;
        let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        let mut hasher = session
            .state
            .hasher
            .take()
            .filter(|_| session.state.hashed_len == session.offset);
        let start = session.offset;
        let mut body = std::pin::pin!(body);
        let mut body_error = None;
        let mut write_error = None;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            };
            if let Err(e) = file.write_all(&chunk).await {
                write_error = Some(e.into());
                break;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            session.offset += chunk.len() as u64;
        }
        if write_error.is_none()
            && let Err(e) = file.flush().await
        {
            write_error = Some(e.into());
        }
        if let Some(e) = write_error {
            // Whatever part of this request reached the file is cut off again.
            let _ = file.get_ref().set_len(start).await;
            session.offset = start;
            return Err(AppendError::Store(e));
        }
        session.state.hasher = hasher;
        session.state.hashed_len = session.offset;
        match body_error {
            Some(e) => Err(AppendError::Body(e, session.offset)),
            None => Ok(session.offset),
        }
    }

    /// Verifies the session's data against `digest` and commits it into the blob store. The
    /// session is removed whatever the outcome: a mismatch leaves nothing behind.
    pub async fn finish(
        &self,
        mut session: UploadSession,
        digest: &Digest,
    ) -> Result<u64, StoreError> {
        let data = match (&session.place, &self.bucket) {
            (Place::Disk(dir), _) => dir.join("data"),
            (Place::Bucket(_), Some(bucket)) => {
                let id = session.id.clone();
                let Place::Bucket(s) =
                    std::mem::replace(&mut session.place, Place::Disk(PathBuf::new()))
                else {
                    unreachable!("matched above")
                };
                let result = bucket.finish(*s, digest).await;
                drop(session);
                self.forget(&id);
                return result;
            }
            (Place::Bucket(_), None) => unreachable!("bucket sessions come from a bucket"),
        };
        let actual = match session.state.hasher.take() {
            Some(h)
                if session.state.hashed_len == session.offset
                    && h.algorithm() == digest.algorithm() =>
            {
                h.finish()
            }
            _ => hash_file(&data, digest.algorithm()).await?,
        };
        let size = session.offset;
        let result = if actual != *digest {
            Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            })
        } else {
            let blob = super::Verified::hashed(data, actual, size);
            self.store.commit_verified(blob).await
        };
        self.remove(session).await?;
        result.map(|()| size)
    }

    /// Whether sessions live in the bucket (`storage.s3`) rather than on this node's disk.
    pub fn in_bucket(&self) -> bool {
        self.bucket.is_some()
    }

    /// A whole blob in one request whose digest is known up front (`POST ?digest=`): there is
    /// no session for another replica to continue, so it is staged on the local disk, hashed
    /// as it arrives, and committed under `digest` only if it matches (on an object store, in
    /// parts sent to the digest's own key while it arrives: nothing is copied). Returns the
    /// size.
    pub async fn put_whole<S, E>(&self, digest: &Digest, body: S) -> Result<u64, AppendError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let mut writer = self
            .store
            .writer_expecting(digest)
            .await
            .map_err(AppendError::Store)?;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => writer.write(&c).await.map_err(AppendError::Store)?,
                Err(e) => return Err(AppendError::Body(e, writer.len())),
            }
        }
        self.store
            .commit(writer, Some(digest))
            .await
            .map(|(_, size)| size)
            .map_err(AppendError::Store)
    }

    /// Removes sessions started more than `age` ago; returns how many.
    pub async fn purge(&self, age: Duration, dry_run: bool) -> Result<usize, StoreError> {
        if let Some(bucket) = &self.bucket {
            return bucket.purge(age, dry_run).await;
        }
        let cutoff = now_secs().saturating_sub(age.as_secs());
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(canonical_id) else {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
                continue;
            };
            // Decided under the session's lock: a session being created or written is whole
            // by the time the lock is ours.
            let state = self.state(&id);
            let held = state.lock().await;
            let started = match tokio::fs::read(entry.path().join("info.json")).await {
                Ok(b) => serde_json::from_slice::<UploadInfo>(&b)
                    .map(|i| i.started)
                    .unwrap_or(0),
                Err(_) if !tokio::fs::try_exists(entry.path()).await.unwrap_or(true) => {
                    // Finished or cancelled meanwhile.
                    drop(held);
                    self.forget(&id);
                    continue;
                }
                Err(_) => 0,
            };
            if started > cutoff {
                continue;
            }
            removed += 1;
            if dry_run {
                tracing::info!(upload = %id, "would purge stale upload session");
                continue;
            }
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
            drop(held);
            self.forget(&id);
            tracing::info!(upload = %id, "purged stale upload session");
        }
        Ok(removed)
    }
}

/// Why an append stopped.
#[derive(Debug)]
pub enum AppendError<E> {
    /// The request body failed after this many bytes of the session were stored.
    Body(E, u64),
    Store(StoreError),
}

/// The digest in `algorithm` of a whole file, read in large chunks on the blocking pool.
async fn hash_file(path: &Path, algorithm: Algorithm) -> Result<Digest, StoreError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        super::blobs::hash_reader(std::fs::File::open(path)?, algorithm)
    })
    .await
    .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    .map_err(StoreError::from)
}
