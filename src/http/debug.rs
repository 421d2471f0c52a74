//! The debug listener (`http.debug.addr`): Prometheus metrics, and health and readiness
//! endpoints for orchestrators, `POST /debug/gc`, `/debug/offline` and `/debug/warm`
//! (`debug_warm`), `/debug/accounts` (`debug_accounts`: users and roles),
//! `GET /debug/notifications` (each endpoint's queue and last failures) and
//! `POST /debug/notifications/test` (publish a made-up event), and whole-image maintenance (`content.rs`: export, import, purge).
//! Endpoints that change anything need the
//! `http.debug.token` bearer token, or, when no token is configured, a loopback listener.

use super::body::{self, Body};
use crate::App;
use crate::config::Secret;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

pub mod content;

/// Serves the debug endpoints until `shutdown` resolves.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning (as the main listener).
                    tracing::warn!(error = %e, "debug listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(answer(&app, req, loopback).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

pub(super) fn text(
    status: StatusCode,
    content_type: &str,
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(body::full(body))
        .expect("static headers are valid")
}

/// Whether a request with this `Authorization` header may use a mutating endpoint: it carries
/// the configured token, or no token is configured and the listener only accepts local
/// connections. The error says why not.
fn may_mutate(
    token: Option<&str>,
    authorization: Option<&str>,
    loopback: bool,
) -> Result<(), &'static str> {
    let Some(token) = token else {
        return if loopback {
            Ok(())
        } else {
            Err("the debug listener is not bound to loopback and http.debug.token is not set\n")
        };
    };
    match authorization.and_then(|v| v.strip_prefix("Bearer ")) {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err("wrong debug token\n"),
        None => Err("this endpoint needs the http.debug.token bearer token\n"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn answer(app: &App, req: Request<Incoming>, loopback: bool) -> Response<Body> {
    let path = req.uri().path();
    if app.config.ui.enabled
        && app.config.ui.listener == crate::config::UiListener::Debug
        && super::console::owns(path)
    {
        return super::console::answer(app, &app.console, req, false).await;
    }
    let mutating = req.method() == Method::POST
        && (matches!(
            path,
            "/debug/gc"
                | "/debug/offline"
                | "/debug/warm"
                | "/debug/accounts"
                | "/debug/notifications/test"
        ) || content::PATHS.contains(&path));
    if mutating {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = app.config.http.debug.token.as_ref().map(Secret::expose);
        if let Err(why) = may_mutate(token, authorization, loopback) {
            return text(StatusCode::FORBIDDEN, "text/plain", why);
        }
    }
    match (req.method(), path) {
        (&Method::POST, "/debug/gc") => return gc(app, req.uri().query()).await,
        (&Method::POST, "/debug/offline") => return offline(app, true, req.uri().query()),
        (&Method::GET, "/debug/offline") => return offline(app, false, None),
        (&Method::POST, "/debug/warm") => return super::debug_warm::warm(app, req).await,
        (&Method::POST, "/debug/accounts") => {
            return super::debug_accounts::accounts(app, req).await;
        }
        (&Method::POST, "/debug/notifications/test") => return notify_test(app, &req),
        (&Method::POST, p) if content::PATHS.contains(&p) => {
            return content::answer(app, p, req.uri().query()).await;
        }
        _ => {}
    }
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
        "/debug/notifications" => text(
            StatusCode::OK,
            "application/json",
            app.notifier.status().to_string(),
        ),
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
        "/debug/peers" => peers(app, req.uri().query()),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `GET /debug/peers[?key=sha256:…|repo:tag]`: the replicas `proxy.peers` found, which are
/// up, and (with `key`) which one owns that key now.
fn peers(app: &App, query: Option<&str>) -> Response<Body> {
    let Some(peers) = app.mirror.as_ref().and_then(|m| m.peers()) else {
        return text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "proxy.peers is not configured\n",
        );
    };
    let q = super::handlers::parse_query(query);
    let key = q.iter().find(|(k, _)| k == "key").map(|(_, v)| v.as_str());
    text(
        StatusCode::OK,
        "application/json",
        peers.view(key).to_string(),
    )
}

/// `POST /debug/notifications/test?action=push&repository=…&tag=…&digest=…&mediatype=…&size=…`:
/// publishes a made-up event (default: a push to `stevedore/test`), to try the endpoints.
fn notify_test(app: &App, req: &Request<Incoming>) -> Response<Body> {
    use crate::notify::{Action, Actor, Descriptor, Event, RequestInfo, Target};
    let q: Vec<(String, String)> = super::handlers::parse_query(req.uri().query());
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let action = match get("action").as_deref().unwrap_or("push") {
        "push" => Action::Push,
        "pull" => Action::Pull,
        "delete" => Action::Delete,
        "mount" => Action::Mount,
        "cache.fill" => Action::CacheFill,
        "cache.evict" => Action::CacheEvict,
        "upstream.error" => Action::UpstreamError,
        "upstream.ratelimited" => Action::UpstreamRateLimited,
        "stale.served" => Action::StaleServed,
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("unknown action {other:?}\n"),
            );
        }
    };
    let digest = match get("digest").map(|d| crate::oci::Digest::parse(&d)) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("digest: {e}\n"),
            );
        }
    };
    let size = get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |h: header::HeaderName| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let event = Event::new(
        action,
        Target {
            descriptor: Descriptor {
                media_type: get("mediatype").unwrap_or_default(),
                size,
                digest,
                ..Descriptor::default()
            },
            length: size,
            repository: get("repository").unwrap_or_else(|| "stevedore/test".into()),
            tag: get("tag"),
            ..Target::default()
        },
        RequestInfo {
            id: uuid::Uuid::new_v4().to_string(),
            addr: String::new(),
            host: header(header::HOST),
            method: "POST".into(),
            useragent: header(header::USER_AGENT),
        },
        Actor::default(),
    );
    let id = event.id.clone();
    app.notifier.publish(event);
    text(
        StatusCode::ACCEPTED,
        "application/json",
        serde_json::json!({ "eventId": id, "endpoints": app.notifier.endpoint_names() })
            .to_string(),
    )
}

/// `POST /debug/gc?dryrun=true&untagged=true&grace=10m`: a garbage collection in the running
/// server (what `stevedore gc` asks for when the server holds the index).
async fn gc(app: &App, query: Option<&str>) -> Response<Body> {
    let q: Vec<(String, String)> = super::handlers::parse_query(query);
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let flag = |k: &str| matches!(get(k), Some("true" | "1"));
    let grace = match get("grace").map(crate::config::units::parse_duration) {
        None => std::time::Duration::from_secs(600),
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("grace: {e}\n"),
            );
        }
    };
    let options = crate::lifecycle::GcOptions {
        dry_run: flag("dryrun"),
        delete_untagged: flag("untagged"),
        grace,
    };
    match app.gc(&options).await {
        Ok(report) => text(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&report).expect("report serializes"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

/// `GET /debug/offline`: whether the mirror is offline; `POST /debug/offline?on=1` (or `on=0`)
/// switches it: while offline no upstream is contacted and only cached content is served.
fn offline(app: &App, set: bool, query: Option<&str>) -> Response<Body> {
    let Some(mirror) = &app.mirror else {
        return text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "this registry mirrors nothing (no proxy section)\n",
        );
    };
    if set {
        let q: Vec<(String, String)> = super::handlers::parse_query(query);
        let on = match q.iter().find(|(k, _)| k == "on").map(|(_, v)| v.as_str()) {
            Some("1" | "true") => true,
            Some("0" | "false") => false,
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "say on=1 (offline) or on=0 (online)\n",
                );
            }
        };
        mirror.set_offline(on);
    }
    text(
        StatusCode::OK,
        "application/json",
        serde_json::json!({ "offline": mirror.offline() }).to_string(),
    )
}

/// Asks a running stevedore's debug listener at `addr` to collect garbage (with `token` when
/// the configuration sets one); returns its JSON report.
pub async fn request_gc(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    query: &str,
) -> Result<String, String> {
    post(addr, token, &format!("/debug/gc?{query}")).await
}

/// POSTs to a mutating endpoint of a running stevedore's debug listener at `addr`; returns
/// the answer's body, or an error saying what the server answered.
pub async fn post(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    path_and_query: &str,
) -> Result<String, String> {
    post_body(addr, token, path_and_query, bytes::Bytes::new()).await
}

/// [`post`] with a request body (a warm list).
pub async fn post_body(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    path_and_query: &str,
    body: bytes::Bytes,
) -> Result<String, String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach the debug listener at {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::post(path_and_query).header(header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("the server answered {status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::may_mutate;

    #[test]
    fn mutating_endpoints_need_the_token_or_loopback() {
        assert!(may_mutate(None, None, true).is_ok());
        assert!(may_mutate(None, None, false).is_err());
        assert!(may_mutate(None, Some("Bearer x"), false).is_err());
        assert!(may_mutate(Some("t0k"), None, true).is_err());
        assert!(may_mutate(Some("t0k"), Some("Bearer t0"), true).is_err());
        assert!(may_mutate(Some("t0k"), Some("Basic t0k"), false).is_err());
        assert!(may_mutate(Some("t0k"), Some("Bearer t0k"), false).is_ok());
    }
}
