//! Connection I/O adapters of the accept loop: the header and idle deadlines of a connection's
//! reads, and a lingering close so that refused clients can read their answer.

use bytes::{Buf, Bytes, BytesMut};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where a connection stands, as its service tells its I/O: shared by the two (they run in
/// the same task; the atomics only make it `Sync`).
#[derive(Debug, Default)]
pub struct ConnState {
    phase: AtomicU8,
    /// Requests started so far: a new one re-arms the deadlines.
    requests: AtomicU32,
    /// Bytes were read while a request was answered (its body, or the next request's head).
    read_while_busy: AtomicBool,
    /// The current request came with no body: once answered, hyper has nothing left to read.
    bodiless: AtomicBool,
    /// hyper dropped the current request's response body: the answer is all handed over.
    answer_sent: AtomicBool,
    /// Bytes were written since the last completed flush (hyper may hold more in its buffer).
    unflushed: AtomicBool,
}

/// Waiting for (the rest of) a request head: the header timeout runs. Where a connection starts.
const HEAD: u8 = 0;
/// A request is being answered: no deadline here (the body timeout is the handler's).
const BUSY: u8 = 1;
/// Between requests of a kept-alive HTTP/1 connection: the idle timeout runs, and the first byte
/// of the next request starts its header timeout.
const IDLE: u8 = 2;
/// HTTP/2: streams overlap, so there is no "between requests"; hyper's keep-alive pings find
/// dead peers.
const OFF: u8 = 3;

impl ConnState {
    /// The service was handed a request (its head has been read); `bodiless`: it has no body.
    pub fn request_started(&self, version: http::Version, bodiless: bool) {
        let next = if version >= http::Version::HTTP_2 {
            OFF
        } else {
            BUSY
        };
        self.read_while_busy.store(false, Ordering::Relaxed);
        self.bodiless.store(bodiless, Ordering::Relaxed);
        self.answer_sent.store(false, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.phase.store(next, Ordering::Relaxed);
    }

    /// The service answered (the body may still be going out). What was read meanwhile may
    /// hold the start of the next head (pipelining), which is then timed as one.
    pub fn request_answered(&self) {
        let next = if self.read_while_busy.load(Ordering::Relaxed) {
            HEAD
        } else {
            IDLE
        };
        let _ = self
            .phase
            .compare_exchange(BUSY, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// hyper dropped the response body: every byte of the answer is in its write buffer or sent.
    pub fn answer_sent(&self) {
        self.answer_sent.store(true, Ordering::Relaxed);
    }

    /// Whether an HTTP/1 connection whose hyper connection just went pending is idle: a bodiless
    /// request (nothing of it left to read), its whole answer handed over and flushed (hyper's
    /// write buffer is then empty), no bytes read meanwhile (its read buffer is then empty, or
    /// holds only what `into_parts` hands back), and no request since. hyper is then waiting
    /// for the next request head, the only time `park` takes a connection out of it.
    /// Requests started so far on this connection (wraps).
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn parkable(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == IDLE
            && self.bodiless.load(Ordering::Relaxed)
            && self.answer_sent.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
    }
}

/// Which deadline the timer is set to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Armed {
    Head,
    Idle,
    Nothing,
}

/// The deadlines of a connection's reads: a request head (the first bytes of a connection, or
/// of the next request on a kept-alive one, up to the head's end) must arrive within the header
/// timeout; a kept-alive connection on which nothing was read or written for the idle timeout,
/// between requests, is closed. hyper's own header timeout is not used: it starts when hyper
/// starts reading the next head, right after an answer, so it closes every idle keep-alive
/// connection after the header timeout; and HTTP/2 has none (the first bytes of a connection
/// are the head's here, whatever the protocol). One timer per connection, reset in place; it
/// is armed on reads and flushes (an answer ends with a flush) and fails the next read.
pub struct Deadlines<I> {
    io: I,
    state: Arc<ConnState>,
    header: Duration,
    /// Zero: never.
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    armed: Armed,
    /// `state.requests` when the timer was last armed.
    armed_for: u32,
    /// The last successful read or write (the idle timeout counts from it).
    active: Instant,
}

impl<I> Deadlines<I> {
    pub fn new(io: I, state: Arc<ConnState>, header: Duration, idle: Duration) -> Self {
        let now = Instant::now();
        Deadlines {
            io,
            state,
            header,
            idle,
            timer: Box::pin(tokio::time::sleep_until(now + header)),
            armed: Armed::Head,
            armed_for: 0,
            active: now,
        }
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// When a connection idle since its last read or write is closed (`None`: never).
    pub fn idle_deadline(&self) -> Option<Instant> {
        (!self.idle.is_zero()).then(|| self.active + self.idle)
    }

    /// Sets the timer to the deadline that applies now (if it changed) and polls it, so that
    /// the task wakes when it passes; `Err` when it has passed.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let phase = self.state.phase.load(Ordering::Relaxed);
        let want = match phase {
            HEAD => Armed::Head,
            IDLE if !self.idle.is_zero() => Armed::Idle,
            _ => Armed::Nothing,
        };
        let requests = self.state.requests.load(Ordering::Relaxed);
        if want != self.armed || requests != self.armed_for {
            self.armed = want;
            self.armed_for = requests;
            match want {
                Armed::Head => self.timer.as_mut().reset(Instant::now() + self.header),
                Armed::Idle => self.timer.as_mut().reset(self.active + self.idle),
                Armed::Nothing => return Ok(()),
            }
        }
        loop {
            match self.armed {
                Armed::Nothing => return Ok(()),
                _ if self.timer.as_mut().poll(cx).is_pending() => return Ok(()),
                Armed::Head => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not send a request head within the header timeout",
                    ));
                }
                Armed::Idle => {
                    // Writes since the timer was set (a long body going out) push it back.
                    let until = self.active + self.idle;
                    if until <= Instant::now() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the kept-alive connection was idle for the idle timeout",
                        ));
                    }
                    self.timer.as_mut().reset(until);
                }
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Deadlines<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        match &read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.active = Instant::now();
                match this.state.phase.load(Ordering::Relaxed) {
                    // The first bytes of the next request: its head's clock starts.
                    IDLE => {
                        this.state.phase.store(HEAD, Ordering::Relaxed);
                        this.armed = Armed::Head;
                        this.timer.as_mut().reset(this.active + this.header);
                    }
                    BUSY => this.state.read_while_busy.store(true, Ordering::Relaxed),
                    _ => {}
                }
            }
            Poll::Ready(_) => {}
            Poll::Pending => {
                if let Err(e) = this.check(cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> Deadlines<I> {
    fn wrote(&mut self, r: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = r
            && *n > 0
        {
            self.active = Instant::now();
            self.state.unflushed.store(true, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Deadlines<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(&r);
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            this.state.unflushed.store(false, Ordering::Relaxed);
        }
        // An answer ends with a flush, and hyper may be parked on a read it began before: arm
        // the deadline that now applies, and have the task polled (that read fails) once it
        // has passed.
        if this.check(cx).is_err() {
            cx.waker().wake_by_ref();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Bytes a closing connection reads and discards at most (see [`Lingering`]).
const LINGER_BYTES: u64 = 8 * 1024 * 1024;
/// How long a closing connection keeps reading at most.
const LINGER_TIME: Duration = Duration::from_secs(3);

/// A connection that closes the way nginx's lingering close does. When hyper is done with it
/// (after a refusal that left the request body unread, for instance a 413 on an oversized
/// manifest or a 401 on a push), its write side is shut down and what the client still sends
/// is read and discarded, up to `LINGER_BYTES` or `LINGER_TIME`, until the client closes.
/// Closing at once would make the kernel answer the unread bytes with a reset, and a client
/// that writes its whole body before reading (Python's `http.client`, curl without
/// `Expect: 100-continue`) would see a broken pipe instead of the answer already sent.
///
/// It is also the connection as each hyper connection on it sees it: bytes already read from
/// the socket (what a parked hyper connection had read ahead, or the bytes that told HTTP/1
/// from HTTP/2) are put back in front of it (`unread`).
pub struct Lingering<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<I>,
    front: Bytes,
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<I> {
    pub fn new(io: I) -> Self {
        Lingering {
            io: Some(io),
            front: Bytes::new(),
        }
    }

    /// Puts `bytes` in front of what is still to be read.
    pub fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.front = if self.front.is_empty() {
            bytes
        } else {
            let mut joined = BytesMut::with_capacity(bytes.len() + self.front.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.front);
            joined.freeze()
        };
    }

    /// Whether bytes put back are still to be read.
    pub fn has_unread(&self) -> bool {
        !self.front.is_empty()
    }

    pub fn get_ref(&self) -> &I {
        self.io.as_ref().expect("connection used after drop")
    }

    fn io(&mut self) -> Pin<&mut I> {
        Pin::new(self.io.as_mut().expect("connection used after drop"))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<I> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(linger(io));
        }
    }
}

/// Shuts the write side, then reads and discards until EOF, an error or a bound.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(mut io: I) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let _ = io.shutdown().await;
        let mut buf = vec![0u8; 16 * 1024];
        let mut discarded = 0u64;
        while discarded < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n as u64,
            }
        }
    })
    .await;
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.front.is_empty() {
            return this.io().poll_read(cx, buf);
        }
        let n = this.front.len().min(buf.remaining());
        buf.put_slice(&this.front[..n]);
        this.front.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }
}
