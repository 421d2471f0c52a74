//! Streaming reads of blob files in large chunks, off the async threads.

use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::task::JoinHandle;

/// Bytes read per blocking call: large enough that the per-call overhead vanishes.
pub const CHUNK_SIZE: usize = 512 * 1024;

/// Reads up to `max` bytes at `offset`; fewer only at end of file.
pub fn read_at(file: &std::fs::File, offset: u64, max: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(max);
    let mut filled = 0;
    while filled < max {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

/// A stream of `len` bytes of `file` from `start`, read in `CHUNK_SIZE` pieces on the blocking
/// pool. A file shorter than announced ends the stream with an error, never with short data.
pub struct FileChunks {
    file: Arc<std::fs::File>,
    pos: u64,
    end: u64,
    pending: Option<JoinHandle<std::io::Result<Bytes>>>,
}

impl FileChunks {
    pub fn new(file: std::fs::File, start: u64, len: u64) -> FileChunks {
        FileChunks {
            file: Arc::new(file),
            pos: start,
            end: start + len,
            pending: None,
        }
    }
}

impl Stream for FileChunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.pending.is_none() {
            if this.pos >= this.end {
                return Poll::Ready(None);
            }
            let want = (this.end - this.pos).min(CHUNK_SIZE as u64) as usize;
            let (file, pos) = (this.file.clone(), this.pos);
            this.pending = Some(tokio::task::spawn_blocking(move || {
                read_at(&file, pos, want)
            }));
        }
        let handle = this.pending.as_mut().expect("set above");
        let result = match Pin::new(handle).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        this.pending = None;
        let chunk = match result {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                this.pos = this.end;
                return Poll::Ready(Some(Err(e)));
            }
            Err(join) => {
                this.pos = this.end;
                return Poll::Ready(Some(Err(std::io::Error::other(join))));
            }
        };
        if chunk.is_empty() {
            this.pos = this.end;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob file is shorter than its recorded size",
            ))));
        }
        this.pos += chunk.len() as u64;
        Poll::Ready(Some(Ok(chunk)))
    }
}
