//! `BlobContent`: the bytes of a blob about to be sent, from the store or from a file that is
//! still being fetched from the upstream; `ContentRead` says how they go out.

use super::fetch::{Fetch, arrivals, follow};
use crate::metrics::Source;
use crate::storage::{BlobRead, OpenBlob, ReadLease};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::sync::Arc;

enum Reader {
    Stored(OpenBlob),
    Growing(Arc<Fetch>, std::fs::File),
}

pub struct BlobContent {
    pub size: u64,
    pub source: Source,
    reader: Reader,
}

/// How a range of a blob is read: from a committed local file (the one kind `sendfile` can
/// send), or as a stream of chunks (a blob still arriving, or kept by a remote backend).
pub enum ContentRead {
    Local(LocalRange),
    Growing(GrowingRange),
    Stream(BoxStream<'static, std::io::Result<Bytes>>),
}

/// `len` bytes from `start` of a blob still landing in a local staged file.
pub struct GrowingRange {
    pub file: std::fs::File,
    pub start: u64,
    pub len: u64,
    fetch: Arc<Fetch>,
}

impl GrowingRange {
    /// How the range becomes readable: increments of bytes, together `len` (see
    /// `fetch::arrivals`); for sending straight from `file`.
    pub fn arrivals(&self) -> BoxStream<'static, std::io::Result<u64>> {
        arrivals(self.fetch.clone(), self.start, self.len).boxed()
    }

    /// The range as a stream of chunks, read as they land.
    pub fn stream(self) -> BoxStream<'static, std::io::Result<Bytes>> {
        follow(self.fetch, self.file, self.start, self.len).boxed()
    }
}

/// `len` bytes from `start` of a committed local file, read-leased while this lives.
pub struct LocalRange {
    pub file: std::fs::File,
    pub start: u64,
    pub len: u64,
    pub lease: ReadLease,
}

impl LocalRange {
    /// The range as a stream of chunks read off the async threads.
    pub fn stream(self) -> BoxStream<'static, std::io::Result<Bytes>> {
        let lease = self.lease;
        BlobRead::File(self.file)
            .stream(self.start, self.len)
            .map(move |chunk| {
                let _held = &lease;
                chunk
            })
            .boxed()
    }
}

impl BlobContent {
    pub fn stored(open: OpenBlob, source: Source) -> BlobContent {
        BlobContent {
            size: open.size,
            source,
            reader: Reader::Stored(open),
        }
    }

    pub(super) fn growing(fetch: Arc<Fetch>, file: std::fs::File, size: u64) -> BlobContent {
        BlobContent {
            size,
            source: Source::Upstream,
            reader: Reader::Growing(fetch, file),
        }
    }

    /// Whether the blob is committed to a backend that keeps it elsewhere (an object store),
    /// which a client may then be redirected to.
    pub fn is_remote(&self) -> bool {
        matches!(
            self.reader,
            Reader::Stored(OpenBlob {
                read: BlobRead::Remote(_),
                ..
            })
        )
    }

    /// Waits until the blob is whole in the store (at once for a stored blob).
    pub(super) async fn finished(self) -> Result<(), super::fetch::FetchError> {
        match self.reader {
            Reader::Stored(..) => Ok(()),
            Reader::Growing(fetch, _) => super::blobs::fetch_outcome(&fetch).await,
        }
    }

    /// `len` bytes from `start`.
    pub fn read(self, start: u64, len: u64) -> ContentRead {
        match self.reader {
            Reader::Stored(OpenBlob {
                read: BlobRead::File(file),
                lease,
                ..
            }) => ContentRead::Local(LocalRange {
                file,
                start,
                len,
                lease,
            }),
            Reader::Stored(OpenBlob { read, lease, .. }) => ContentRead::Stream(
                read.stream(start, len)
                    .map(move |chunk| {
                        let _held = &lease;
                        chunk
                    })
                    .boxed(),
            ),
            Reader::Growing(fetch, file) => ContentRead::Growing(GrowingRange {
                file,
                start,
                len,
                fetch,
            }),
        }
    }
}
