//! The HTTP front end: the accept loop with connection draining, routing, handlers, and the
//! debug listener (metrics, health). The only module that sees hyper's request and response
//! types; it maps every `RegistryError` to a response in one place (`response::error`).

pub mod body;
pub mod debug;
pub(crate) mod handlers;
pub mod range;
pub mod response;
pub mod route;

use crate::App;
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Source;
use body::Body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use route::{Endpoint, RouteError};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024);
    builder.http2().max_header_list_size(64 * 1024);
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(handle(&app, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining open connections");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Answers one request: route, dispatch, map errors, count, log.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    app.metrics.http_in_flight.inc();
    let (label, result) = match Endpoint::parse(&method, &path) {
        Ok(endpoint) => {
            let label = endpoint.label();
            let (parts, body) = req.into_parts();
            let r = handlers::Req {
                query: handlers::parse_query(parts.uri.query()),
                headers: parts.headers,
                body,
            };
            (label, handlers::dispatch(app, endpoint, r).await)
        }
        Err(RouteError::NotFound) => (
            "unknown",
            Err(
                RegistryError::new(ErrorCode::Unsupported, format!("no such endpoint: {path}"))
                    .with_status(StatusCode::NOT_FOUND),
            ),
        ),
        Err(RouteError::MethodNotAllowed) => (
            "unknown",
            Err(RegistryError::unsupported(format!(
                "method {method} is not allowed on {path}"
            ))),
        ),
    };
    let resp = match result {
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
    app.metrics.http_in_flight.dec();
    let took = started.elapsed();
    let status = resp.status();
    app.metrics
        .http_requests
        .with_label_values(&[method.as_str(), label, status.as_str()])
        .inc();
    app.metrics
        .http_request_duration
        .with_label_values(&[method.as_str(), label])
        .observe(took.as_secs_f64());
    if app.access_log {
        let bytes = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let cache = resp
            .extensions()
            .get::<Source>()
            .map(|s| s.as_str())
            .unwrap_or("-");
        tracing::info!(
            target: "stevedore::access",
            method = %method,
            path = %path,
            status = status.as_u16(),
            bytes,
            duration_ms = took.as_secs_f64() * 1000.0,
            cache,
            "request"
        );
    }
    resp
}
