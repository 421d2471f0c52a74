//! `BlobContent`: the bytes of a blob about to be sent, from a committed file or from a file
//! that is still being fetched from the upstream.

use super::fetch::{Fetch, follow};
use crate::metrics::Source;
use crate::registry::OpenBlob;
use crate::storage::FileChunks;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::sync::Arc;

enum Reader {
    File(std::fs::File, crate::storage::PinGuard),
    Growing(Arc<Fetch>, std::fs::File),
}

pub struct BlobContent {
    pub size: u64,
    pub source: Source,
    reader: Reader,
}

impl BlobContent {
    pub fn file(open: OpenBlob, source: Source) -> BlobContent {
        BlobContent {
            size: open.size,
            source,
            reader: Reader::File(open.file, open.pin),
        }
    }

    pub(super) fn growing(fetch: Arc<Fetch>, file: std::fs::File, size: u64) -> BlobContent {
        BlobContent {
            size,
            source: Source::Upstream,
            reader: Reader::Growing(fetch, file),
        }
    }

    /// The committed file and its pin, when the content is one (not a blob still arriving).
    pub fn into_file(self) -> Result<(std::fs::File, crate::storage::PinGuard), BlobContent> {
        match self.reader {
            Reader::File(f, pin) => Ok((f, pin)),
            reader => Err(BlobContent { reader, ..self }),
        }
    }

    /// Waits until the blob is whole in the store (at once for a committed file).
    pub(super) async fn finished(self) -> Result<(), super::fetch::FetchError> {
        match self.reader {
            Reader::File(..) => Ok(()),
            Reader::Growing(fetch, _) => super::blobs::fetch_outcome(&fetch).await,
        }
    }

    /// `len` bytes from `start`.
    pub fn stream(self, start: u64, len: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
        match self.reader {
            Reader::File(f, pin) => FileChunks::new(f, start, len)
                .map(move |chunk| {
                    let _held = &pin;
                    chunk
                })
                .boxed(),
            Reader::Growing(fetch, f) => follow(fetch, f, start, len).boxed(),
        }
    }
}
