//! `BlobBackend`: what the registry needs from wherever committed blobs live. The filesystem
//! (`FsBackend`) is the first implementation; an object store (S3, issue 16) is meant to be the
//! next, so nothing here assumes a rename or a local path:
//!
//! - reads hand out a local file (which `http/` may send with `sendfile`) *or* a source of byte
//!   ranges (`RangeSource`), so a remote backend answers a `Range` request with a ranged GET;
//! - writes arrive as a `Verified` blob, staged complete in the local tier (`Staging`) and
//!   hashed as it was written: a backend only makes it durable under its digest (the filesystem
//!   renames it; an object store would upload it in parts to the digest's key). Nothing that does
//!   not match its digest can reach a backend, so no backend needs to hash;
//! - stat, delete and list (for recovery and garbage collection) by digest;
//! - quarantine, to set aside a blob whose bytes no longer match its name.

use super::{StoreError, Verified};
use crate::oci::Digest;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::future::Future;

/// A committed blob opened for reading.
pub enum BlobRead {
    /// A file on local disk: the whole blob, readable at any offset (and `sendfile`-able).
    File(std::fs::File),
    /// Bytes kept elsewhere, fetched by range as they are streamed.
    Remote(Box<dyn RangeSource>),
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobRead::File(file) => f.debug_tuple("File").field(file).finish(),
            BlobRead::Remote(_) => f.write_str("Remote"),
        }
    }
}

impl BlobRead {
    /// `len` bytes from `start`, streamed (files in large chunks off the async threads).
    pub fn stream(self, start: u64, len: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
        use futures::StreamExt;
        match self {
            BlobRead::File(f) => super::FileChunks::new(f, start, len).boxed(),
            BlobRead::Remote(r) => r.range(start, len),
        }
    }

    /// The first `len` bytes as a blocking reader, for code already on a blocking thread
    /// (bundle export writes a tar with `std::io`).
    pub fn into_blocking_read(self, len: u64) -> Box<dyn std::io::Read + Send> {
        match self {
            BlobRead::File(f) => Box::new(f),
            remote => Box::new(BlockingChunks {
                chunks: futures::executor::block_on_stream(remote.stream(0, len)),
                current: Bytes::new(),
            }),
        }
    }
}

/// A remote blob's chunks as a blocking reader.
struct BlockingChunks {
    chunks: futures::executor::BlockingStream<BoxStream<'static, std::io::Result<Bytes>>>,
    current: Bytes,
}

impl std::io::Read for BlockingChunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.next() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A blob of a non-local backend, opened: streams any byte range of it. A source shorter
/// than asked must end its stream with an error, never with short data.
pub trait RangeSource: Send + Sync + 'static {
    fn range(self: Box<Self>, start: u64, len: u64) -> BoxStream<'static, std::io::Result<Bytes>>;
}

/// Where committed blobs live. Every method is by digest; a blob is either wholly there, with
/// bytes that hash to its digest, or absent.
pub trait BlobBackend: Send + Sync + 'static {
    /// The size of a committed blob, if present.
    fn stat(&self, digest: &Digest)
    -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Opens a committed blob for reading, with its size; `None` when absent.
    fn open(
        &self,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<(BlobRead, u64)>, StoreError>> + Send;

    /// Makes a verified blob durable and visible under its digest. A blob already present is
    /// kept (it has these very bytes) and the staged copy dropped.
    fn commit(&self, blob: Verified) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a committed blob; false when it was not there.
    fn delete(&self, digest: &Digest) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every committed blob with its size, for recovery and garbage collection.
    fn list(&self) -> impl Future<Output = Result<Vec<(Digest, u64)>, StoreError>> + Send;

    /// Sets aside a blob whose bytes do not match its digest, where no reader finds it but an
    /// operator can; false when it was not there.
    fn quarantine(&self, digest: &Digest) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
