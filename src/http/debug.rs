//! The debug listener (`http.debug.addr`): Prometheus metrics, and health and readiness
//! endpoints for orchestrators.

use super::body::{self, Body};
use crate::App;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the debug endpoints until `shutdown` resolves.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(answer(&app, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(body::full(body))
        .expect("static headers are valid")
}

async fn answer(app: &App, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    let path = req.uri().path();
    if app.prometheus_path.as_deref() == Some(path) {
        app.refresh_gauges();
        return text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            app.metrics.encode(),
        );
    }
    match path {
        // Liveness: the process answers.
        "/debug/health" | "/healthz" => text(StatusCode::OK, "application/json", "{}"),
        // Readiness: the storage accepts writes (or the registry is read-only).
        "/debug/ready" | "/readyz" => match app.ready().await {
            Ok(()) => text(StatusCode::OK, "application/json", "{}"),
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({ "storage": e }).to_string(),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
