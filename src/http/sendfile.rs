//! Zero-copy blob responses on plain HTTP/1.1 connections: the kernel copies file pages
//! straight to the socket (`sendfile(2)`), as nginx does, instead of reading each chunk into
//! memory and writing it back out.
//!
//! hyper owns the socket writes, so the trick is done below it. Each plain connection's socket
//! is wrapped in a `SendfileStream` that shares a `SendfileSlot` with the connection's requests.
//! A blob handler that can use it registers the file range in the slot and answers with a body
//! of *placeholder* chunks: slices of one static buffer, which hyper passes down untouched (the
//! connections are built with vectored writes, so hyper queues body chunks instead of copying
//! them). When a write reaches the socket wrapper, slices that point into the placeholder buffer
//! are replaced by `sendfile` of as many bytes from the registered range. Anything that is not
//! a placeholder is written as is. A placeholder with no range registered fails the connection:
//! the client gets a short body and an error, never filler bytes.
//!
//! How much one `sendfile` may send decides how often the connection wakes (issue 13): the
//! placeholder chunks are as large as a socket's send buffer can grow (`tcp_wmem`'s 4 MiB), and
//! after a short send the next write tries again at once. On 2 cores, 256 MiB, one connection:
//! 1 MiB pieces took about 2,050 `sendfile` calls per GB (nginx: 1,130-1,290), 4 MiB pieces
//! 400-600. Waiting for the writability edge after a short send instead is not safe: a short
//! `sendfile` does not always leave the socket short of room, and then no edge comes (tried: one
//! GET of 8 hung until the client gave up after 300 s).
//!
//! The other lever is which core does the TCP work. Once the congestion window (BBR's, on
//! loopback) holds data back in a full send buffer, each ACK the client sends transmits the next
//! segments from inside the client's own `recv` (`tcp_ack` → `__tcp_push_pending_frames` on its
//! core). `TCP_NOTSENT_LOWAT` moves that work to the server: the socket then counts as writable
//! only while less than the mark is queued untransmitted, and the server transmits from inside
//! its `sendfile`. Plain connections set a 1 MiB mark for a while (with 1 MiB pieces, at load
//! average 7-9, curl slept 4,400-4,700 times per GB with a 128 KiB mark, 30-1,500 with 1 MiB;
//! 2 MiB and no mark were no faster). With 4 MiB pieces, on an idle machine, the mark costs more
//! than it gives, so sockets keep the system's default (no mark), as nginx's do. Four
//! `bench --only blob --reps 5` runs each, interleaved, 2 cores, without the mark against with
//! it: server CPU per GB 0.25-0.27 s against 0.33-0.35 with the hyper load generator, 0.23-0.25
//! against 0.27-0.29 with curl, 0.21-0.23 against 0.26-0.29 with the Go-style reader; the hyper
//! load generator at one connection 2.03-2.39 GB/s (84-116% of nginx) against 1.79-2.11
//! (80-110%), curl and the Go-style reader at one connection no slower. At 8 connections the
//! mark was about a tenth faster for curl and the Go-style reader (3.15-3.41 against 2.75-2.85
//! GB/s with curl); without it they stay at 102-135% of nginx.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The placeholder buffer. Never read: only its address range is compared (it lives in .bss,
/// so its size costs no memory).
static PLACEHOLDER: [u8; PLACEHOLDER_LEN] = [0; PLACEHOLDER_LEN];
/// The largest piece one `sendfile` is asked for: Linux's default ceiling of a TCP send buffer
/// (`net.ipv4.tcp_wmem`), so that one call can fill it (see the module doc).
const PLACEHOLDER_LEN: usize = 4 * 1024 * 1024;

fn is_placeholder(buf: &[u8]) -> bool {
    !buf.is_empty() && PLACEHOLDER.as_ptr_range().contains(&buf.as_ptr())
}

/// A file range to send, registered by a handler for its response body. Ranges queue in the
/// order the responses go out (hyper answers one request of a connection at a time, in order,
/// but may read a body to its end, and start on a pipelined next request, before it has
/// written all of it), and each leaves the queue when its last byte is sent.
struct Job {
    file: Arc<std::fs::File>,
    offset: u64,
    remaining: u64,
    /// Whatever must live as long as the sending (the blob's read lease).
    _keep: Box<dyn Send>,
}

/// Shared by a connection's socket wrapper and its requests.
#[derive(Clone, Default)]
pub struct SendfileSlot {
    jobs: Arc<Mutex<VecDeque<Job>>>,
}

impl SendfileSlot {
    /// Registers `len` bytes of `file` from `start` and returns the body that stands for them.
    /// `keep` (the blob's read lease, say) lives as long as the body; `sent` is told of each chunk
    /// handed to hyper.
    pub fn body<K: Send + 'static>(
        &self,
        file: std::fs::File,
        start: u64,
        len: u64,
        keep: K,
        sent: impl Fn(u64) + Send + 'static,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let whole = futures::stream::iter((len > 0).then_some(Ok(len)));
        self.body_as_ready(file, start, len, keep, whole, sent)
    }

    /// Like [`SendfileSlot::body`] for a file still being written: `ready` says how many more
    /// bytes of the range may be sent, each time more may (together `len`); the body stands for
    /// only those, so `sendfile` never reads past what has landed. An error from `ready` ends the
    /// body with it (the client gets a short body and an error).
    pub fn body_as_ready<K: Send + 'static>(
        &self,
        file: std::fs::File,
        start: u64,
        len: u64,
        keep: K,
        ready: impl Stream<Item = io::Result<u64>> + Send + 'static,
        sent: impl Fn(u64) + Send + 'static,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        if len > 0 {
            self.jobs
                .lock()
                .expect("sendfile slot poisoned")
                .push_back(Job {
                    file: Arc::new(file),
                    offset: start,
                    remaining: len,
                    _keep: Box::new(keep),
                });
        }
        ready
            .flat_map(|step| {
                let chunks: Vec<io::Result<Bytes>> = match step {
                    Ok(n) => (0..n)
                        .step_by(PLACEHOLDER_LEN)
                        .map(|at| {
                            let piece = (n - at).min(PLACEHOLDER_LEN as u64) as usize;
                            Ok(Bytes::from_static(&PLACEHOLDER[..piece]))
                        })
                        .collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(chunks)
            })
            .inspect(move |chunk| {
                if let Ok(c) = chunk {
                    sent(c.len() as u64);
                }
            })
    }
}

/// A plain TCP connection that turns placeholder writes into `sendfile`.
pub struct SendfileStream {
    tcp: TcpStream,
    slot: SendfileSlot,
}

impl SendfileStream {
    pub fn new(tcp: TcpStream) -> (SendfileStream, SendfileSlot) {
        let slot = SendfileSlot::default();
        (
            SendfileStream {
                tcp,
                slot: slot.clone(),
            },
            slot,
        )
    }

    /// Sends up to `max` bytes of the current file range (`max`: the placeholder bytes at the
    /// head of the write).
    fn poll_sendfile(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let mut jobs = self.slot.jobs.lock().expect("sendfile slot poisoned");
        let Some(job) = jobs.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "placeholder body bytes with no file range registered",
            )));
        };
        let want = (max as u64).min(job.remaining) as usize;
        if want == 0 {
            return Poll::Ready(Err(io::Error::other(
                "placeholder body bytes past the registered file range",
            )));
        }
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut offset = job.offset;
            let tcp = &self.tcp;
            let file = &job.file;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(tcp, &**file, Some(&mut offset), want).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than its recorded size",
                    )));
                }
                Ok(n) => {
                    job.offset += n as u64;
                    job.remaining -= n as u64;
                    if job.remaining == 0 {
                        jobs.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl super::park::Readiness for SendfileStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_read_ready(cx)
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_placeholder(buf) {
            return this.poll_sendfile(cx, buf.len());
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match bufs.iter().position(|b| is_placeholder(b)) {
            Some(0) => {
                // Consecutive placeholder chunks stand for consecutive bytes of the range.
                let max = bufs
                    .iter()
                    .take_while(|b| is_placeholder(b))
                    .map(|b| b.len())
                    .sum::<usize>()
                    .min(PLACEHOLDER_LEN);
                this.poll_sendfile(cx, max)
            }
            Some(i) => Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..i]),
            None => Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_detection() {
        assert!(is_placeholder(&PLACEHOLDER[..10]));
        assert!(is_placeholder(&PLACEHOLDER[PLACEHOLDER_LEN - 1..]));
        assert!(!is_placeholder(&PLACEHOLDER[..0]));
        let copy = PLACEHOLDER[..10].to_vec();
        assert!(!is_placeholder(&copy), "a copy is not a placeholder");
    }
}
