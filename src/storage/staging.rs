//! The local tier in front of every backend: blobs being written land in `<root>/tmp`, hashed
//! as they arrive, behind a delete-on-drop guard. A finished write is checked against its digest
//! and only then becomes a `Verified` blob, the one thing a `BlobBackend` accepts. Readers of a
//! blob still arriving (single-flight fetches) follow its staged file through `GrowingFile`;
//! so may a backend that sends it on as it grows (`Early`: told how far the writer got).

use super::StoreError;
use super::s3::{Early, ProgressTx};
use crate::oci::{Algorithm, Digest, DigestHasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// The scratch directory of a store.
#[derive(Debug, Clone)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub(super) fn at(dir: PathBuf) -> Staging {
        Staging { dir }
    }

    pub(super) async fn create(&self) -> Result<(), StoreError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        Ok(())
    }

    /// Removes the temporary files a crashed run left.
    pub(super) async fn remove_leftovers(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = dir.next_entry().await? {
            tracing::info!(path = %entry.path().display(), "removing temporary file left by an earlier run");
            if tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Starts writing a new blob, hashed with `algorithm`.
    pub async fn writer(&self, algorithm: Algorithm) -> Result<BlobWriter, StoreError> {
        let path = self.dir.join(uuid::Uuid::new_v4().simple().to_string());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(BlobWriter {
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            growing: GrowingFile(Arc::new(path.clone())),
            guard: TempGuard(Some(path)),
            hasher: DigestHasher::new(algorithm),
            verified: None,
            len: 0,
            early: None,
            reported: 0,
        })
    }
}

/// How many bytes a writer followed by a backend (`Early`) writes between flushes that let the
/// backend read them.
const REPORT_EVERY: u64 = 4 * 1024 * 1024;

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

/// A blob being written. Dropping it unfinished removes its staged file.
#[derive(Debug)]
pub struct BlobWriter {
    file: tokio::io::BufWriter<tokio::fs::File>,
    growing: GrowingFile,
    guard: TempGuard,
    hasher: DigestHasher,
    /// Set by `verify`.
    verified: Option<Digest>,
    len: u64,
    /// A backend sending the file on while it is written (told how far it got).
    early: Option<Early>,
    /// What `early` was last told is in the file.
    reported: u64,
}

impl BlobWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        self.file.write_all(data).await?;
        // A backend following the file learns of bytes only once they are in it: tokio's
        // file may still be writing what left the buffer, until flushed.
        if self.early.is_some() && self.len >= self.reported + REPORT_EVERY {
            self.flush().await?;
        }
        Ok(())
    }

    /// Flushes buffered bytes so that readers of `growing` see everything written so far.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        self.file.flush().await?;
        if let Some(early) = &self.early {
            early.report(self.len);
            self.reported = self.len;
        }
        Ok(())
    }

    /// Hands the staged file to a backend that sends it on while it is written
    /// (`BlobStore::writer_expecting`).
    pub(super) fn send_early(&mut self, start: impl FnOnce(PathBuf) -> Early) {
        let path = self.guard.0.clone().expect("armed until finished");
        self.early = Some(start(path));
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The staged file as it grows, for readers of a blob still arriving.
    pub fn growing(&self) -> GrowingFile {
        self.growing.clone()
    }

    /// Lends the file and the hasher to a blocking thread (see [`Lander`]); give them back
    /// with [`landed`](Self::landed) before anything else is done with this writer.
    pub async fn lander(&mut self) -> Result<Lander, StoreError> {
        self.flush().await?;
        let path = self.guard.0.as_deref().expect("armed until finished");
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        Ok(Lander {
            file,
            hasher: std::mem::take(&mut self.hasher),
            len: self.len,
            progress: self.early.as_ref().map(Early::progress),
        })
    }

    /// Takes back what [`lander`](Self::lander) lent, with everything it wrote and hashed.
    pub fn landed(&mut self, lander: Lander) {
        self.hasher = lander.hasher;
        self.len = lander.len;
        self.reported = self.len;
    }

    /// Checks the bytes written so far against `expected`, so that readers of the staged file
    /// may be given the last byte before the blob is committed. On a mismatch the writer is
    /// spent; dropping it removes the file.
    pub async fn verify(&mut self, expected: &Digest) -> Result<(), StoreError> {
        let actual = std::mem::take(&mut self.hasher).finish();
        check(expected, &actual)?;
        self.flush().await?;
        self.verified = Some(actual);
        Ok(())
    }

    /// Ends the write: the digest of what was written (checked against `expected` when one
    /// is given; once is enough after `verify`). On a mismatch the staged file is removed.
    pub async fn finish(mut self, expected: Option<&Digest>) -> Result<Verified, StoreError> {
        let actual = match self.verified.take() {
            Some(d) => d,
            None => std::mem::take(&mut self.hasher).finish(),
        };
        if let Some(expected) = expected {
            check(expected, &actual)?;
        }
        self.flush().await?;
        Ok(Verified {
            digest: actual,
            len: self.len,
            guard: self.guard,
            early: self.early,
        })
    }
}

/// A [`BlobWriter`]'s file and hasher on a blocking thread: appends chunks with plain
/// positional writes (no copy into a buffer, no task hop per chunk) and hashes them there,
/// away from the tasks that move bytes over the network.
#[derive(Debug)]
pub struct Lander {
    file: std::fs::File,
    hasher: DigestHasher,
    len: u64,
    progress: Option<ProgressTx>,
}

impl Lander {
    /// Appends `chunks`, tells `written` the new length (the bytes are readable in the file
    /// now), then hashes them. Blocking.
    pub fn append(
        &mut self,
        chunks: &[bytes::Bytes],
        written: impl FnOnce(u64),
    ) -> std::io::Result<()> {
        let mut at = self.len;
        for c in chunks {
            self.file.write_all_at(c, at)?;
            at += c.len() as u64;
        }
        self.len = at;
        written(at);
        if let Some(p) = &self.progress {
            p.send_modify(|p| p.written = at);
        }
        for c in chunks {
            self.hasher.update(c);
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn check(expected: &Digest, actual: &Digest) -> Result<(), StoreError> {
    if expected != actual {
        return Err(StoreError::DigestMismatch {
            expected: expected.clone(),
            actual: actual.clone(),
        });
    }
    Ok(())
}

/// A complete staged blob whose bytes hash to `digest`: what a backend commits. Dropping it
/// uncommitted removes the staged file.
#[derive(Debug)]
pub struct Verified {
    digest: Digest,
    len: u64,
    guard: TempGuard,
    early: Option<Early>,
}

impl Verified {
    /// A staged file the caller has hashed itself (an upload session's data).
    pub(super) fn hashed(path: PathBuf, digest: Digest, len: u64) -> Verified {
        Verified {
            digest,
            len,
            guard: TempGuard(Some(path)),
            early: None,
        }
    }

    /// The upload that followed the file while it was written, if one did.
    pub(super) fn take_early(&mut self) -> Option<Early> {
        self.early.take()
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The staged file, for a backend to move or upload.
    pub(super) fn path(&self) -> &Path {
        self.guard.0.as_deref().expect("armed until committed")
    }

    /// The staged file is gone (moved into place, or removed by the backend).
    pub(super) fn consumed(mut self) {
        self.guard.0 = None;
    }
}

/// The staged file of a blob being written, for readers who follow it as it grows.
#[derive(Debug, Clone)]
pub struct GrowingFile(Arc<PathBuf>);

impl GrowingFile {
    /// Opens the file; `None` once the blob has been committed (the staged file is gone).
    pub fn open(&self) -> Result<Option<std::fs::File>, StoreError> {
        match std::fs::File::open(&*self.0) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
