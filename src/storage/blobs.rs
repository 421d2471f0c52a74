//! Committed blobs: open, stat, delete, and the verified write path (`BlobWriter`).

use super::StoreError;
use crate::oci::{Algorithm, Digest, DigestHasher};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The committed blobs under `<root>/blobs/<algorithm>` and the scratch space under `<root>/tmp`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    /// Blobs being read; see `Pins`.
    pub pins: super::Pins,
}

impl BlobStore {
    /// Opens (creating) the store under `root`. Touches no file: temporary files of a crashed
    /// run are removed only by `remove_temporary_files`, which the server alone calls at
    /// start-up (a maintenance command beside it must not delete its in-flight writes).
    pub async fn open(root: &Path) -> Result<BlobStore, StoreError> {
        let store = BlobStore::at(root);
        for algorithm in Algorithm::ALL {
            tokio::fs::create_dir_all(store.blobs.join(algorithm.name())).await?;
        }
        tokio::fs::create_dir_all(&store.tmp).await?;
        Ok(store)
    }

    /// Opens an existing store for reading only: creates nothing, removes nothing.
    pub async fn open_read_only(root: &Path) -> Result<BlobStore, StoreError> {
        let store = BlobStore::at(root);
        tokio::fs::metadata(&store.blobs).await?;
        Ok(store)
    }

    fn at(root: &Path) -> BlobStore {
        BlobStore {
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            pins: super::Pins::default(),
        }
    }

    /// Removes the temporary files a crashed run left. Only for the process that owns the
    /// store (the server at start-up, holding the index lock).
    pub async fn remove_temporary_files(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(&self.tmp).await?;
        while let Some(entry) = dir.next_entry().await? {
            tracing::info!(path = %entry.path().display(), "removing temporary file left by an earlier run");
            if tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// The size of a committed blob, if present.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(self.path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a committed blob for reading, with its size.
    pub async fn open_blob(
        &self,
        digest: &Digest,
    ) -> Result<Option<(std::fs::File, u64)>, StoreError> {
        let path = self.path(digest);
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let f = std::fs::File::open(path)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        match opened {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a small committed blob (a manifest) whole, refusing one over `max` bytes.
    pub async fn read_small(
        &self,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        match self.stat(digest).await? {
            None => Ok(None),
            Some(len) if len > max => Err(StoreError::TooLarge(max)),
            Some(_) => match tokio::fs::read(self.path(digest)).await {
                Ok(v) => Ok(Some(v.into())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Removes a committed blob; false when it was not there.
    pub async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        match tokio::fs::remove_file(self.path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts writing a new blob into a temporary file, hashed with sha256.
    pub async fn writer(&self) -> Result<BlobWriter, StoreError> {
        self.writer_for(Algorithm::Sha256).await
    }

    /// Starts writing a new blob into a temporary file, hashed with `algorithm`.
    pub async fn writer_for(&self, algorithm: Algorithm) -> Result<BlobWriter, StoreError> {
        let path = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(BlobWriter {
            file: Some(tokio::io::BufWriter::with_capacity(256 * 1024, file)),
            guard: TempGuard(Some(path)),
            hasher: DigestHasher::new(algorithm),
            verified: None,
            len: 0,
            store: self.clone(),
        })
    }

    /// Stores `data` (small: a manifest) under its digest in `algorithm`.
    pub async fn put_bytes(&self, algorithm: Algorithm, data: &[u8]) -> Result<Digest, StoreError> {
        let mut w = self.writer_for(algorithm).await?;
        w.write(data).await?;
        Ok(w.commit(None).await?.0)
    }

    /// Moves a complete, already-verified file into place as `digest`: fsync the file, rename,
    /// fsync the directory. Used by upload sessions, whose data file was hashed as it arrived.
    pub async fn commit_file(&self, file: &Path, digest: &Digest) -> Result<(), StoreError> {
        let dest = self.path(digest);
        let src = file.to_owned();
        tokio::task::spawn_blocking(move || commit_blocking(&src, &dest))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    }

    /// Digests of every committed blob, for recovery and garbage collection.
    pub async fn list(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(Digest, u64)>> {
            let mut out = Vec::new();
            for algorithm in Algorithm::ALL {
                list_algorithm(&blobs, algorithm, &mut out)?;
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
        .map_err(StoreError::from)
    }
}

/// Appends the committed blobs of one algorithm (`<blobs>/<algorithm>/<2 hex>/<hex>`) to `out`.
fn list_algorithm(
    blobs: &Path,
    algorithm: Algorithm,
    out: &mut Vec<(Digest, u64)>,
) -> std::io::Result<()> {
    let dir = blobs.join(algorithm.name());
    let shards = match std::fs::read_dir(&dir) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for shard in shards {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(shard.path())? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Ok(d) = Digest::parse(&format!("{algorithm}:{name}")) {
                out.push((d, entry.metadata()?.len()));
            }
        }
    }
    Ok(())
}

/// fsync `src`, rename it to `dest` (creating the shard directory), fsync the directory.
fn commit_blocking(src: &Path, dest: &Path) -> Result<(), StoreError> {
    std::fs::File::open(src)?.sync_all()?;
    let dir = dest.parent().expect("blob paths have a shard directory");
    std::fs::create_dir_all(dir)?;
    // A blob already there has these very bytes (both were verified against the name): keep
    // it rather than replace a file that readers may have open.
    if dest.exists() {
        std::fs::remove_file(src)?;
        return Ok(());
    }
    std::fs::rename(src, dest)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Removes its file when dropped, unless disarmed.
#[derive(Debug)]
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A blob being written. Dropping it without `commit` removes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    guard: TempGuard,
    hasher: DigestHasher,
    /// Set by `verify`.
    verified: Option<Digest>,
    len: u64,
    store: BlobStore,
}

impl BlobWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        let file = self.file.as_mut().expect("writer used after commit");
        file.write_all(data).await?;
        Ok(())
    }

    /// Flushes buffered bytes so that readers of `temp_path` see everything written so far.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        self.file
            .as_mut()
            .expect("writer used after commit")
            .flush()
            .await?;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the bytes are being written (readers of a blob still arriving follow this file).
    pub fn temp_path(&self) -> &Path {
        self.guard.0.as_deref().expect("guard armed until commit")
    }

    /// Checks the bytes written so far against `expected`, so that readers of the temporary
    /// file may be given the last byte before the blob is made durable. On a mismatch the
    /// writer is spent; dropping it removes the file.
    pub async fn verify(&mut self, expected: &Digest) -> Result<(), StoreError> {
        let actual = std::mem::take(&mut self.hasher).finish();
        if *expected != actual {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.flush().await?;
        self.verified = Some(actual);
        Ok(())
    }

    /// Verifies the digest (when one is expected; once is enough after `verify`), then makes
    /// the blob durable and visible. On a mismatch nothing is kept.
    pub async fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let actual = match self.verified.take() {
            Some(d) => d,
            None => std::mem::take(&mut self.hasher).finish(),
        };
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let mut file = self.file.take().expect("commit once");
        file.flush().await?;
        drop(file.into_inner());
        let src = self.guard.0.clone().expect("guard armed until commit");
        self.store.commit_file(&src, &actual).await?;
        self.guard.0 = None;
        Ok((actual, self.len))
    }
}
