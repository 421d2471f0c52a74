//! `BlobStore`: the handle the registry, the mirror and lifecycle hold. It puts the local
//! staging tier (`Staging`) and the open-read count (`OpenReads`) in front of the backend that
//! keeps committed blobs, and adds what every backend shares: reading small blobs whole, the
//! write-then-commit path, re-hashing for verification.

use super::{
    BlobBackend, BlobRead, BlobWriter, FsBackend, OpenReads, ReadLease, S3Backend, SharedMeta,
    Staging, StoreError, Verified,
};
use crate::config::S3Config;
use crate::oci::{Algorithm, Digest, DigestHasher};
use bytes::Bytes;
use std::path::Path;

/// How long a presigned blob URL stays valid (distribution's S3 driver: 20 minutes).
const PRESIGNED_URL_TTL: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// The backends a store can sit on. Dispatch is a match, not a trait object: the blob GET
/// path pays no allocation for it.
#[derive(Debug, Clone)]
enum Backend {
    Fs(FsBackend),
    S3(S3Backend),
}

/// Calls the same `BlobBackend` method on whichever backend the store has.
macro_rules! backend {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match &$self.backend {
            Backend::Fs(b) => b.$method($($arg),*).await,
            Backend::S3(b) => b.$method($($arg),*).await,
        }
    };
}

/// A committed blob opened for reading, counted as read (so not evicted) while this lives.
#[derive(Debug)]
pub struct OpenBlob {
    pub read: BlobRead,
    pub size: u64,
    pub lease: ReadLease,
}

/// Committed blobs, the staging directory for blobs being written, and the open reads.
#[derive(Debug, Clone)]
pub struct BlobStore {
    backend: Backend,
    staging: Staging,
    reads: OpenReads,
    /// The repository metadata of a shared bucket; `None` on the filesystem.
    meta: Option<SharedMeta>,
}

impl BlobStore {
    /// Opens (creating) the store under `root`. Touches no file: temporary files of a crashed
    /// run are removed only by `remove_temporary_files`, which the server alone calls at
    /// start-up (a maintenance command beside it must not delete its in-flight writes).
    pub async fn open(root: &Path) -> Result<BlobStore, StoreError> {
        let fs = FsBackend::at(root);
        fs.create().await?;
        BlobStore::over(Backend::Fs(fs), root).await
    }

    /// Opens a store whose committed blobs live in the bucket of `config`; `root` is the
    /// local directory of the staging tier. Fails when the bucket does not answer.
    pub async fn open_s3(config: &S3Config, root: &Path) -> Result<BlobStore, StoreError> {
        let s3 = S3Backend::open(config, root).await?;
        s3.check().await?;
        BlobStore::over(Backend::S3(s3), root).await
    }

    async fn over(backend: Backend, root: &Path) -> Result<BlobStore, StoreError> {
        let meta = match &backend {
            Backend::Fs(_) => None,
            Backend::S3(s3) => Some(SharedMeta::new(s3.clone())),
        };
        let store = BlobStore {
            backend,
            staging: Staging::at(root.join("tmp")),
            reads: OpenReads::default(),
            meta,
        };
        store.staging.create().await?;
        Ok(store)
    }

    /// Opens an existing filesystem store for reading only: creates nothing, removes nothing.
    pub async fn open_read_only(root: &Path) -> Result<BlobStore, StoreError> {
        let fs = FsBackend::at(root);
        fs.exists().await?;
        Ok(BlobStore {
            backend: Backend::Fs(fs),
            staging: Staging::at(root.join("tmp")),
            reads: OpenReads::default(),
            meta: None,
        })
    }

    /// Removes the temporary files a crashed run left (and, on an object store, aborts the
    /// multipart uploads it left). Only for the process that owns the store (the server at
    /// start-up, holding the index lock).
    pub async fn remove_temporary_files(&self) -> Result<usize, StoreError> {
        let mut removed = self.staging.remove_leftovers().await?;
        if let Backend::S3(s3) = &self.backend {
            removed += s3.abort_stale_uploads().await?;
        }
        Ok(removed)
    }

    /// Upload sessions in the bucket, when committed blobs live in one (so that any replica
    /// can continue a session); `None` on the filesystem, where sessions stay local.
    pub(super) fn bucket_uploads(&self) -> Option<super::s3::BucketUploads> {
        match &self.backend {
            Backend::Fs(_) => None,
            Backend::S3(s3) => Some(super::s3::BucketUploads::new(s3.clone())),
        }
    }

    /// The upload-URL signing key shared by every replica on the bucket (see
    /// `S3Backend::shared_secret`); `None` on the filesystem.
    pub async fn shared_secret(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Fs(_) => Ok(None),
            Backend::S3(s3) => s3.shared_secret().await.map(Some),
        }
    }

    /// The repository metadata kept beside the blobs when the backend is shared by replicas
    /// (a bucket): the source of truth the index caches. `None` on the filesystem, whose
    /// index is the only truth.
    pub fn shared_meta(&self) -> Option<&SharedMeta> {
        self.meta.as_ref()
    }

    /// A short-lived URL a client may GET the blob from directly, when the backend has one
    /// (an object store); `None` for local files.
    pub async fn presigned_url(&self, digest: &Digest) -> Result<Option<String>, StoreError> {
        match &self.backend {
            Backend::Fs(_) => Ok(None),
            Backend::S3(s3) => Ok(Some(s3.presign(digest, PRESIGNED_URL_TTL).await?)),
        }
    }

    /// The shared bucket, when committed blobs live in one: what the maintenance job works on.
    pub fn bucket(&self) -> Option<&S3Backend> {
        match &self.backend {
            Backend::Fs(_) => None,
            Backend::S3(s3) => Some(s3),
        }
    }

    /// The size of a committed blob, if present.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        backend!(self.stat(digest))
    }

    /// Opens a committed blob for reading, with its size. Counted as read from before it is
    /// opened, so eviction never removes it between the two.
    pub async fn open_blob(&self, digest: &Digest) -> Result<Option<OpenBlob>, StoreError> {
        let lease = self.reads.lease(digest);
        Ok(backend!(self.open(digest))?.map(|(read, size)| OpenBlob { read, size, lease }))
    }

    /// Whether a reader has `digest` open now (eviction and garbage collection step over it).
    pub fn is_being_read(&self, digest: &Digest) -> bool {
        self.reads.is_read(digest)
    }

    /// Reads a small committed blob (a manifest) whole, refusing one over `max` bytes.
    pub async fn read_small(&self, digest: &Digest, max: u64) -> Result<Option<Bytes>, StoreError> {
        let Some((read, len)) = backend!(self.open(digest))? else {
            return Ok(None);
        };
        if len > max {
            return Err(StoreError::TooLarge(max));
        }
        let bytes = match read {
            BlobRead::File(f) => {
                tokio::task::spawn_blocking(move || super::read_at(&f, 0, len as usize))
                    .await
                    .map_err(|e| StoreError::Io(std::io::Error::other(e)))??
            }
            remote => {
                use futures::TryStreamExt;
                let chunks: Vec<Bytes> = remote.stream(0, len).try_collect().await?;
                chunks.concat().into()
            }
        };
        if bytes.len() as u64 != len {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("blob {digest} is shorter than its {len} bytes"),
            )));
        }
        Ok(Some(bytes))
    }

    /// Removes a committed blob; false when it was not there.
    pub async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        backend!(self.delete(digest))
    }

    /// Starts writing a new blob, hashed with sha256.
    pub async fn writer(&self) -> Result<BlobWriter, StoreError> {
        self.writer_for(Algorithm::Sha256).await
    }

    /// Starts writing a new blob, hashed with `algorithm`.
    pub async fn writer_for(&self, algorithm: Algorithm) -> Result<BlobWriter, StoreError> {
        self.staging.writer(algorithm).await
    }

    /// Starts writing blob `digest`, known before its bytes arrive: on a bucket, its parts go
    /// up while it is staged (completed at commit, only if it matches).
    pub async fn writer_expecting(&self, digest: &Digest) -> Result<BlobWriter, StoreError> {
        let mut writer = self.writer_for(digest.algorithm()).await?;
        if let Backend::S3(s3) = &self.backend {
            writer.send_early(|path| s3.early_upload(digest, path));
        }
        Ok(writer)
    }

    /// Ends a write and commits it: only when its digest matches `expected`, when one is
    /// given. On a mismatch nothing is kept.
    pub async fn commit(
        &self,
        writer: BlobWriter,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        self.finish_and_commit(writer, expected, false).await
    }

    /// [`BlobStore::commit`] for a blob fetched from an upstream: on a shared bucket, a blob
    /// not there before is marked as cached content (the marker first, so no cached blob is
    /// ever taken for pushed content; a marker whose commit failed names nothing and is
    /// harmless). A blob already there keeps what it was.
    pub async fn commit_cached(
        &self,
        writer: BlobWriter,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        self.finish_and_commit(writer, expected, true).await
    }

    async fn finish_and_commit(
        &self,
        writer: BlobWriter,
        expected: Option<&Digest>,
        cached: bool,
    ) -> Result<(Digest, u64), StoreError> {
        let blob = writer.finish(expected).await?;
        let done = (blob.digest().clone(), blob.len());
        if cached
            && let Some(meta) = &self.meta
            && self.stat(&done.0).await?.is_none()
        {
            meta.mark_cached(&done.0).await?;
        }
        self.commit_verified(blob).await?;
        Ok(done)
    }

    pub(super) async fn commit_verified(&self, blob: Verified) -> Result<(), StoreError> {
        backend!(self.commit(blob))
    }

    /// Stores `data` (small: a manifest) under its digest in `algorithm`; `cached` when it
    /// came from an upstream (see [`BlobStore::commit_cached`]).
    pub async fn put_bytes(
        &self,
        algorithm: Algorithm,
        data: &[u8],
        cached: bool,
    ) -> Result<Digest, StoreError> {
        let mut w = self.writer_for(algorithm).await?;
        w.write(data).await?;
        let (d, _) = if cached {
            self.commit_cached(w, None).await?
        } else {
            self.commit(w, None).await?
        };
        Ok(d)
    }

    /// Digests of every committed blob, for recovery and garbage collection.
    pub async fn list(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        backend!(self.list())
    }

    /// The digest a committed blob's bytes have now (in its own algorithm); `None` when it is
    /// gone.
    pub async fn rehash(&self, digest: &Digest) -> Result<Option<Digest>, StoreError> {
        let algorithm = digest.algorithm();
        let Some((read, len)) = backend!(self.open(digest))? else {
            return Ok(None);
        };
        let actual = match read {
            BlobRead::File(f) => tokio::task::spawn_blocking(move || hash_reader(f, algorithm))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))??,
            remote => {
                use futures::StreamExt;
                let mut h = DigestHasher::new(algorithm);
                let mut s = remote.stream(0, len);
                while let Some(chunk) = s.next().await {
                    h.update(&chunk?);
                }
                h.finish()
            }
        };
        Ok(Some(actual))
    }

    /// Sets aside a blob whose bytes no longer match its name; false when it was not there.
    pub async fn quarantine(&self, digest: &Digest) -> Result<bool, StoreError> {
        backend!(self.quarantine(digest))
    }
}

/// The digest in `algorithm` of everything `r` reads, in large chunks (blocking).
pub(super) fn hash_reader(
    mut r: impl std::io::Read,
    algorithm: Algorithm,
) -> std::io::Result<Digest> {
    let mut h = DigestHasher::new(algorithm);
    let mut buf = vec![0u8; super::CHUNK_SIZE];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}
