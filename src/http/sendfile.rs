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
//! after a short send the next write tries again at once rather than waiting for the writability
//! edge, since the client, reading on the other core, has often made room by then. On 2 cores,
//! 256 MiB, one connection: 1 MiB pieces took about 2,050 `sendfile` calls per GB (nginx:
//! 1,130-1,290), 4 MiB pieces 400-600.
//!
//! What the speed with a client that reads in small steps (curl, Go's `io.Copy` in 32 KiB
//! reads) turns on, though, is which core does the TCP work. A full send buffer holds data not
//! yet *transmitted* (the congestion window, BBR's on loopback in particular, lets out only so
//! much), and each ACK the client sends then transmits the next segments from inside the
//! client's own `recv` (perf: `tcp_ack` → `__tcp_push_pending_frames` on the client's core), so
//! the client, the bottleneck of a one-connection download, pays for our transmit path on top of
//! its copy. nginx's `sendfile` leaves the client the same work; the reference's 32 KiB
//! `write`s never fill the buffer. So plain connections set `TCP_NOTSENT_LOWAT`
//! (`NOTSENT_LOWAT`): the socket counts as writable only while less than that is queued
//! untransmitted, each `sendfile` stops there, and the server's core transmits what the window
//! allows from inside its own `sendfile`.
//!
//! How low that mark may go is bounded by the other half of the trade (issue 13, second
//! look): whatever the client has not yet received must be in its receive queue or in our
//! untransmitted queue, or it sleeps. With a 128 KiB mark (the writer is woken below half of
//! it) the pipe ran dry between our wake-ups: curl slept about 4,400-4,700 times per GB on
//! stevedore against 15-810 on nginx (perf `context-switches` of the client, 256 MiB × 4 GETs,
//! one connection, 2 cores at load average 7-9), so it read at 1.1-1.3 GB/s while using only
//! 0.23-0.35 s of CPU per GB; and the server paid 0.42-0.58 s of CPU per GB (nginx 0.06-0.09),
//! most of it loopback receive processing (`tcp_data_queue`, `sock_def_readable`) run inside
//! its `sendfile`. Not the wake-up path: 25-40 futex wake-ups and ≤ 7 task migrations per GB,
//! one worker thread instead of two changed nothing; a blocking Python `sendfile` server with
//! the same 128 KiB mark starved curl as often (3,700-5,600 sleeps per GB). A 1 MiB mark,
//! measured the same way: curl sleeps 30-1,500 times per GB, the Go-style reader 1,000-2,900
//! (nginx: up to 840), server CPU 0.09-0.26 s per GB. The client takes back part of the
//! transmit work (0.29-0.61 s of CPU per GB against 0.20-0.35; nginx's 0.54-0.78), which it can
//! afford now that it waits less. Rates at that load were too noisy to rank the marks (nginx
//! itself ranged 0.9-1.6 GB/s between rounds). 512 KiB still starved curl on some rounds
//! (120-2,200 sleeps per GB); 2 MiB and no mark at all were no faster. Waiting for the
//! writability edge after a short send changed nothing measurable.

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

/// How much data not yet transmitted a plain connection's socket may queue before it stops
/// counting as writable (`TCP_NOTSENT_LOWAT`; see the module doc).
const NOTSENT_LOWAT: u32 = 1024 * 1024;

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
        // Only a tuning: a socket that refuses it still serves, as before.
        if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
            tracing::debug!(error = %e, "cannot set TCP_NOTSENT_LOWAT");
        }
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

    #[tokio::test]
    async fn plain_connections_cap_the_untransmitted_queue() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, (server, _)) = (client.unwrap(), accepted.unwrap());
        // Start from another value, whatever the system's default is.
        socket2::SockRef::from(&server)
            .set_tcp_notsent_lowat(4 * NOTSENT_LOWAT)
            .unwrap();
        let (stream, _slot) = SendfileStream::new(server);
        let after = socket2::SockRef::from(&stream.tcp)
            .tcp_notsent_lowat()
            .unwrap();
        assert_eq!(after, NOTSENT_LOWAT);
    }
}
