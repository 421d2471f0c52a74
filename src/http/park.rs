//! Idle HTTP/1 connections parked outside hyper (issue 13: 10,000 idle keep-alive connections
//! in little memory). A hyper HTTP/1 connection waiting for its next request keeps an 8 KiB
//! read buffer reserved, its write buffer and its state: about 17 KiB each. So when a kept-alive
//! connection goes idle (`ConnState::parkable`: its bodiless request answered and flushed,
//! nothing read since) and stays so for `PARK_AFTER`, its hyper connection is ended without
//! closing the socket (`graceful_shutdown` of an idle connection + `into_parts`), and the
//! socket waits for readability with no buffer at all; the first bytes of the next request start a new hyper
//! connection on it. What hyper had read ahead is put back in front of the socket
//! (`Lingering::unread`).
//! While parked the idle timeout (`http.limits.idletimeout`) and the server's graceful shutdown
//! still close it. HTTP/2 connections are not parked (hyper keeps them, with their pings).
//! Measured (release, `loadgen idle`, one request each then silence): a parked plain
//! connection costs about 4.7 KiB of RSS (before: 27.5 KiB), a parked TLS one about 18 KiB
//! (rustls keeps its session, keys and a 4 KiB record buffer; not reduced further).
//!
//! Owns the parking loop, the response body that tells it an answer is handed over, and the
//! server's shutdown signal; not the deadlines themselves (`io::Deadlines`) nor routing.

use super::body::{Body, BoxError};
use super::io::{ConnState, Deadlines, Lingering};
use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a kept-alive connection stays idle in hyper before it is parked. Parking and
/// unparking cost a hyper connection's teardown and rebuild (its buffers, `into_parts`); a
/// client sending requests back to back (a pull's manifest and blob requests, a load test)
/// never waits this long between two, so only connections that really went quiet pay it.
/// Short, so that a burst of connections that go idle together (a fleet's nodes after a
/// rollout) holds hyper's buffers only briefly.
const PARK_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// The server's graceful shutdown as the connections see it: `true` once it has begun. The
/// accept loop waits for every receiver to be dropped (every connection to end).
pub type Stop = watch::Receiver<bool>;

/// Resolves when the server's graceful shutdown has begun (or its sender is gone).
pub async fn stopping(stop: &mut Stop) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// A socket a parked connection can wait on: readable without reading.
pub trait Readiness {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Readiness for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// rustls keeps no plaintext while hyper waits (a read that returned pending drained it); its
/// buffers stay allocated, which is why a parked TLS connection costs more than a plain one.
impl<I: Readiness> Readiness for tokio_rustls::server::TlsStream<I> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// The connection's I/O stack as hyper sees it.
pub type Stack<I> = Lingering<Deadlines<I>>;

/// The HTTP/2 connection preface: a plain connection whose first bytes are these speaks h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a plain connection until they are, or cannot be, the HTTP/2
/// preface (one read for any HTTP/1 request), and keeps them in front. `None`: the client sent
/// nothing (or the header timeout passed, or a read failed).
pub async fn is_h2<I>(io: &mut Lingering<I>) -> Option<bool>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let mut head = BytesMut::with_capacity(H2_PREFACE.len());
    while head.len() < H2_PREFACE.len() {
        let mut byte = [0u8; H2_PREFACE.len()];
        let want = H2_PREFACE.len() - head.len();
        match io.read(&mut byte[..want]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&byte[..n]),
        }
        if !H2_PREFACE.starts_with(&head) {
            io.unread(head.freeze());
            return Some(false);
        }
    }
    io.unread(head.freeze());
    Some(true)
}

/// A response body that tells the connection when hyper is done with it (dropped: the whole
/// answer was handed over, or the connection failed).
pub struct Tracked {
    body: Body,
    state: Arc<ConnState>,
}

impl Tracked {
    pub fn new(body: Body, state: Arc<ConnState>) -> Self {
        Tracked { body, state }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.state.answer_sent();
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves HTTP/1 on `io` until the client closes, an error, or the server's shutdown, parking
/// the connection outside hyper each time it goes idle.
pub async fn serve_http1<I, S>(
    builder: &http1::Builder,
    mut io: Stack<I>,
    service: S,
    state: &ConnState,
    stop: &mut Stop,
    parked: &prometheus::IntGauge,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Readiness + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Tracked> + Clone + Unpin,
    S::Future: Unpin,
    S::Error: Into<BoxError>,
{
    // When the connection went idle (the request count it was armed for): it is parked once
    // idle for `PARK_AFTER`.
    let mut park_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut armed_for = None;
    loop {
        // Boxed: the parked connection's future then holds no room for a hyper connection.
        let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), service.clone()));
        let mut closing = false;
        let mut parking = false;
        {
            let mut stopped = pin!(stopping(stop));
            poll_fn(|cx| {
                if !closing && stopped.as_mut().poll(cx).is_ready() {
                    closing = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
                loop {
                    if parking {
                        // Idle: nothing is buffered, so nothing is lost by not shutting down.
                        return conn.poll_without_shutdown(cx);
                    }
                    let polled = Pin::new(&mut *conn).poll(cx);
                    if polled.is_pending() && !closing && state.parkable() {
                        let timer = park_timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(PARK_AFTER)));
                        let requests = state.requests();
                        if armed_for != Some(requests) {
                            armed_for = Some(requests);
                            timer
                                .as_mut()
                                .reset(tokio::time::Instant::now() + PARK_AFTER);
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            parking = true;
                            Pin::new(&mut *conn).graceful_shutdown();
                            continue;
                        }
                    }
                    return polled;
                }
            })
            .await?;
        }
        if !parking {
            // The client closed, asked to, or the server is stopping: hyper shut the socket.
            return Ok(());
        }
        let parts = conn.into_parts();
        io = parts.io.into_inner();
        io.unread(parts.read_buf);
        if io.has_unread() {
            // A pipelined request had started: serve it at once.
            continue;
        }
        let deadlines = io.get_ref();
        let idle_until = deadlines.idle_deadline();
        let readable = poll_fn(|cx| deadlines.get_ref().poll_read_ready(cx));
        let idle = async {
            match idle_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let _parked = Parked::new(parked);
        tokio::select! {
            ready = readable => if ready.is_err() { return Ok(()) },
            () = idle => {
                tracing::debug!("closing a parked keep-alive connection idle for the idle timeout");
                return Ok(());
            }
            () = stopping(stop) => return Ok(()),
        }
    }
}

/// Counts a connection in the parked gauge while it lives.
struct Parked<'a>(&'a prometheus::IntGauge);

impl<'a> Parked<'a> {
    fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Parked(gauge)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
