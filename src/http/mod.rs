//! The HTTP front end: the accept loop with connection draining, TLS (`tls`), per-client
//! connection and request limits (`limits`), routing, handlers, and the debug listener (metrics,
//! health). The only module that sees hyper's request and response
//! types; it maps every `RegistryError` to a response in one place (`response::error`).

pub mod access;
pub mod body;
pub mod console;
pub mod debug;
pub mod debug_accounts;
pub mod debug_warm;
pub(crate) mod events;
pub(crate) mod handlers;
mod io;
pub mod limits;
pub mod location;
mod park;
pub mod range;
pub mod response;
pub mod route;
mod sendfile;
pub mod tls;

use crate::App;
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Source;
use body::Body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use limits::{Limits, Refusal};
use route::{Endpoint, RouteError};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// How long a connection refused for its client's connection limit may take to hear its 429.
const REFUSAL_TIME: Duration = Duration::from_secs(5);

/// The connection builders: auto-detected HTTP/1 or HTTP/2 (refused connections), HTTP/1 (the
/// parking loop's), and HTTP/2 (after TLS whose ALPN said so, or a plain connection that began
/// with the h2c preface).
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
    http2: auto::Builder<TokioExecutor>,
    /// `http.http2.disabled`: plain connections are HTTP/1 whatever they send.
    h2c: bool,
}

/// The HTTP/1 settings, on hyper's builder or hyper-util's.
macro_rules! http1_settings {
    ($b:expr, $l:expr) => {
        $b
            // Body chunks are queued, never copied into hyper's buffer: `sendfile` relies on it.
            .writev(true)
            .timer(TokioTimer::new())
            // `io::Deadlines` times request heads instead: hyper's would close idle
            // keep-alive connections.
            .header_read_timeout(None)
            .max_buf_size(usize::try_from($l.maxheaderbytes).unwrap_or(usize::MAX))
            .max_headers(usize::try_from($l.maxheaders).unwrap_or(usize::MAX))
    };
}

impl Builders {
    fn new(http: &crate::config::HttpConfig) -> Builders {
        let l = &http.limits;
        let mut b = auto::Builder::new(TokioExecutor::new());
        http1_settings!(b.http1(), l);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1_settings!(http1, l);
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(l.maxheaderbytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(u32::try_from(l.maxstreams).unwrap_or(u32::MAX))
            // An idle HTTP/2 connection is legitimate, a dead peer is not: ping it.
            .keep_alive_interval(Duration::from_secs(60))
            .keep_alive_timeout(Duration::from_secs(20));
        Builders {
            http1,
            http2: b.clone().http2_only(),
            h2c: !http.http2.disabled,
            auto: if http.http2.disabled {
                b.http1_only()
            } else {
                b
            },
        }
    }
}

/// Each endpoint's method, metrics label and success status: their request series exist from
/// start-up, at zero.
const ENDPOINT_SUCCESS: &[(&str, &str, &str)] = &[
    ("GET", "base", "200"),
    ("GET", "catalog", "200"),
    ("GET", "tags", "200"),
    ("GET", "manifest", "200"),
    ("HEAD", "manifest", "200"),
    ("PUT", "manifest", "201"),
    ("DELETE", "manifest", "202"),
    ("GET", "blob", "200"),
    ("HEAD", "blob", "200"),
    ("DELETE", "blob", "202"),
    ("POST", "upload", "202"),
    ("GET", "upload", "204"),
    ("PATCH", "upload", "202"),
    ("PUT", "upload", "201"),
    ("DELETE", "upload", "204"),
    ("GET", "referrers", "200"),
    ("GET", "token", "200"),
];

/// What every connection task shares.
struct Shared {
    app: Arc<App>,
    limits: Arc<Limits>,
    builders: Builders,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

/// Creates each endpoint's success series at zero. Called before any listener serves (the
/// debug listener included), so the first scrape already has them.
pub fn init_endpoint_metrics(metrics: &crate::metrics::Metrics) {
    for (method, endpoint, status) in ENDPOINT_SUCCESS {
        metrics.init_endpoint(method, endpoint, status);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// for up to `drain`. Plain HTTP, or HTTPS when the app has a TLS configuration.
///
/// Each connection must send its first byte (or finish its TLS handshake) and then each request
/// head within `http.limits.headertimeout`; connections beyond `http.limits.maxconns` are
/// closed at once, and those beyond a client's `maxconnsperclient` are answered 429 and closed;
/// requests beyond a client's rate are answered 429 with `Retry-After`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    // Each connection holds a receiver: the drain waits for all of them to be dropped.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        limits: Arc::new(Limits::new(&app.config.http.limits)),
        builders: Builders::new(&app.config.http),
        tls: app.tls.as_ref().map(|t| t.acceptor()),
        header_timeout: app.config.http.limits.headertimeout,
        idle_timeout: app.config.http.limits.idletimeout,
        app,
    });
    let mut last_full_warning: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (guard, verdict) = shared.limits.admit(peer.ip());
        let refused = match verdict {
            Ok(()) => false,
            Err(Refusal::Full) => {
                // Spend nothing on it; warn at most every 10 s.
                if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_full_warning = Some(Instant::now());
                    tracing::warn!(
                        maxconns = shared.app.config.http.limits.maxconns,
                        "connection limit reached: closing new connections"
                    );
                }
                drop(stream);
                continue;
            }
            Err(Refusal::ClientFull) => {
                tracing::debug!(%peer, "client connection limit reached: refusing");
                true
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            shared.connection(stream, peer, refused, stop).await;
            drop(guard);
        });
    }
    tracing::info!("shutting down: draining open connections");
    stop_tx.send_replace(true);
    drop(stop_rx);
    if tokio::time::timeout(drain, stop_tx.closed()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// A request's answer as the connection's service gives it to hyper: boxed, so that the HTTP/1
/// parking loop can poll the connection (`poll_without_shutdown` needs an `Unpin` future).
type Answer = std::pin::Pin<
    Box<dyn Future<Output = Result<Response<park::Tracked>, Infallible>> + Send + 'static>,
>;

impl Shared {
    /// Serves one accepted connection: TLS handshake (if any) and HTTP. The handshake and then
    /// each request head must each come within the header timeout (`io::Deadlines`).
    async fn connection(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        refused: bool,
        stop: park::Stop,
    ) {
        // The futures below are boxed so that a parked connection's task is no larger than
        // what it holds while parked.
        let Some(acceptor) = &self.tls else {
            let (stream, slot) = sendfile::SendfileStream::new(stream);
            return Box::pin(self.http(stream, peer, refused, None, stop, Some(slot))).await;
        };
        let handshake = Box::pin(tokio::time::timeout(
            self.header_timeout,
            acceptor.accept(stream),
        ));
        let stream = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Box::pin(self.http(stream, peer, refused, Some(h2), stop, None)).await
    }

    /// Serves HTTP on a connection. `tls_h2`: what TLS's ALPN chose (HTTP/2 or not); `None` on
    /// a plain connection, whose first bytes tell (h2c) unless HTTP/2 is disabled.
    async fn http<I>(
        self: &Arc<Self>,
        io: I,
        peer: SocketAddr,
        refused: bool,
        tls_h2: Option<bool>,
        mut stop: park::Stop,
        sendfile: Option<sendfile::SendfileSlot>,
    ) where
        I: AsyncRead + AsyncWrite + park::Readiness + Unpin + Send + 'static,
    {
        let state = Arc::new(io::ConnState::default());
        let io = io::Deadlines::new(io, state.clone(), self.header_timeout, self.idle_timeout);
        let mut io = io::Lingering::new(io);
        if refused {
            let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                let e = RegistryError::new(
                    ErrorCode::TooManyRequests,
                    "too many connections from your address",
                )
                .with_header(http::header::RETRY_AFTER, "1")
                .with_header(http::header::CONNECTION, "close");
                Ok::<_, Infallible>(response::error(&e))
            });
            let builder = match tls_h2 {
                Some(true) => &self.builders.http2,
                _ => &self.builders.auto,
            };
            let conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));
            let _ = tokio::time::timeout(REFUSAL_TIME, conn).await;
            return;
        }
        let h2 = match tls_h2 {
            Some(h2) => h2,
            None if self.builders.h2c => match park::is_h2(&mut io).await {
                Some(h2) => h2,
                None => return,
            },
            None => false,
        };
        let shared = self.clone();
        let conn_state = state.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| -> Answer {
            let shared = shared.clone();
            let state = conn_state.clone();
            let bodiless = hyper::body::Body::is_end_stream(req.body());
            let http1 = req.version() <= http::Version::HTTP_11;
            state.request_started(req.version(), bodiless);
            // Zero-copy blob bodies need HTTP/1's plain byte stream on a plain socket.
            let slot = sendfile
                .as_ref()
                .filter(|_| req.version() <= http::Version::HTTP_11)
                .cloned();
            Box::pin(async move {
                let resp = match shared.limits.request(peer.ip()) {
                    Err(wait) => too_many_requests(&shared.app, &req, wait),
                    Ok(()) => handle(&shared.app, req, slot, Some(peer)).await,
                };
                let mut resp = resp;
                if http1
                    && !bodiless
                    && (resp.status().is_client_error() || resp.status().is_server_error())
                {
                    // A refusal may leave the body unread, and then hyper closes the
                    // connection after the answer: say so, or a keep-alive client sends its
                    // next request into a closed connection (a PUT or PATCH it cannot retry).
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                state.request_answered();
                Ok::<_, Infallible>(resp.map(|body| park::Tracked::new(body, state)))
            })
        });
        let ended = if h2 {
            let mut conn = Box::pin(
                self.builders
                    .http2
                    .serve_connection(TokioIo::new(io), service),
            );
            tokio::select! {
                ended = conn.as_mut() => ended,
                () = park::stopping(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        } else {
            let parked = &self.app.metrics.http_parked;
            park::serve_http1(&self.builders.http1, io, service, &state, &mut stop, parked)
                .await
                .map_err(Into::into)
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// The answer to a request over its client's rate: 429 with the time until the next token.
fn too_many_requests(app: &App, req: &Request<Incoming>, wait: Duration) -> Response<Body> {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let e = RegistryError::new(
        ErrorCode::TooManyRequests,
        "too many requests from your address: slow down",
    )
    .with_header(http::header::RETRY_AFTER, secs.to_string());
    app.metrics
        .errors
        .with_label_values(&[e.code.as_str()])
        .inc();
    app.metrics
        .http_requests
        .with_label_values(&[
            crate::metrics::method_label(req.method().as_str()),
            "limited",
            "429",
        ])
        .inc();
    tracing::debug!(method = %req.method(), path = req.uri().path(), "request over the rate limit");
    response::error(&e)
}

/// Response extension naming the upstream a proxied repository is served from (access log).
#[derive(Debug, Clone)]
pub(crate) struct ViaUpstream(pub(crate) String);

/// The status a request is counted and logged with when its client went away before it was
/// answered (its future was dropped): nginx's "client closed request".
pub const CANCELLED_STATUS: u16 = 499;

/// Accounting of one request, from its start to its response head: the in-flight gauge, the
/// request counter and duration, and the access log. Done on drop, so a request whose future is
/// dropped mid-way (the client disconnected) still leaves the gauge and is counted and logged,
/// with status [`CANCELLED_STATUS`].
struct Accounting<'a> {
    app: &'a App,
    started: Instant,
    method: http::Method,
    /// The request target (cheap to clone: shared bytes); its path is logged.
    uri: http::Uri,
    endpoint: &'static str,
    /// Status, once answered; with the access log on, the response's size, cache source and
    /// upstream too.
    answered: Option<(StatusCode, Option<Answered>)>,
}

/// What the access log says of a response.
struct Answered {
    bytes: String,
    cache: &'static str,
    upstream: String,
}

impl<'a> Accounting<'a> {
    fn start(app: &'a App, method: http::Method, uri: http::Uri) -> Accounting<'a> {
        app.metrics.http_in_flight.inc();
        Accounting {
            app,
            started: Instant::now(),
            method,
            uri,
            endpoint: "unknown",
            answered: None,
        }
    }

    fn answered(&mut self, resp: &Response<Body>) {
        let logged = self.app.access_log.then(|| Answered {
            bytes: resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned(),
            cache: resp
                .extensions()
                .get::<Source>()
                .map(|s| s.as_str())
                .unwrap_or("-"),
            upstream: resp
                .extensions()
                .get::<ViaUpstream>()
                .map(|u| u.0.clone())
                .unwrap_or_else(|| "-".to_owned()),
        });
        self.answered = Some((resp.status(), logged));
    }
}

impl Drop for Accounting<'_> {
    fn drop(&mut self) {
        let app = self.app;
        app.metrics.http_in_flight.dec();
        let took = self.started.elapsed();
        let method = crate::metrics::method_label(self.method.as_str());
        let path = self.uri.path();
        let (status, logged) = match self.answered.take() {
            Some((status, logged)) => (status.as_u16(), logged),
            None => {
                tracing::debug!(method = %self.method, path, "client went away before the answer");
                (CANCELLED_STATUS, None)
            }
        };
        let digits = status_digits(status);
        let code = std::str::from_utf8(&digits).unwrap_or("000");
        app.metrics
            .http_requests
            .with_label_values(&[method, self.endpoint, code])
            .inc();
        app.metrics
            .http_request_duration
            .with_label_values(&[method, self.endpoint])
            .observe(took.as_secs_f64());
        if app.access_log {
            let a = logged.unwrap_or(Answered {
                bytes: "-".to_owned(),
                cache: "-",
                upstream: "-".to_owned(),
            });
            tracing::info!(
                target: "stevedore::access",
                method = %self.method,
                path,
                status,
                bytes = a.bytes,
                duration_ms = took.as_secs_f64() * 1000.0,
                cache = a.cache,
                upstream = a.upstream,
                "request"
            );
        }
    }
}

/// A status code's three ASCII digits, without a heap allocation.
fn status_digits(status: u16) -> [u8; 3] {
    [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]
}

/// Answers one request: route, dispatch, map errors, count, log. `sendfile`: the connection's
/// zero-copy slot, on plain HTTP/1 connections; `peer`: the client's address.
async fn handle(
    app: &App,
    req: Request<Incoming>,
    sendfile: Option<sendfile::SendfileSlot>,
    peer: Option<SocketAddr>,
) -> Response<Body> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = uri.path();
    if app.config.ui.enabled
        && app.config.ui.listener == crate::config::UiListener::Main
        && console::owns(path)
    {
        let mut resp = console::answer(app, &app.console, req, app.tls.is_some()).await;
        for (name, value) in &app.extra_headers {
            resp.headers_mut().append(name, value.clone());
        }
        return resp;
    }
    let mut accounting = Accounting::start(app, method.clone(), uri.clone());
    let result = match Endpoint::parse(&method, path) {
        Ok(endpoint) => {
            accounting.endpoint = endpoint.label();
            let (parts, body) = req.into_parts();
            let mut r = handlers::Req {
                sendfile,
                query: handlers::parse_query(parts.uri.query()),
                authority: parts.uri.authority().map(|a| a.to_string()),
                method: parts.method,
                peer,
                user: None,
                headers: parts.headers,
                body,
            };
            // Access control before any handler, so none can forget it.
            match access::check(app, &endpoint, &r).await {
                Ok(user) => {
                    r.user = user;
                    handlers::dispatch(app, endpoint, r).await
                }
                Err(e) => Err(e),
            }
        }
        Err(RouteError::NotFound) => Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("no such endpoint: {path}"),
        )
        .with_status(StatusCode::NOT_FOUND)),
        Err(RouteError::MethodNotAllowed) => Err(RegistryError::unsupported(format!(
            "method {method} is not allowed on {path}"
        ))),
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            app.metrics
                .errors
                .with_label_values(&[e.code.as_str()])
                .inc();
            if e.status().is_server_error() {
                tracing::warn!(%method, %path, error = %e, "request failed");
            } else {
                tracing::info!(%method, %path, error = %e, "request refused");
            }
            response::error(&e)
        }
    };
    accounting.answered(&resp);
    drop(accounting);
    for (name, value) in &app.extra_headers {
        resp.headers_mut().append(name, value.clone());
    }
    resp
}
