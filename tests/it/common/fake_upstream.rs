//! A fake upstream registry for integration tests, behaving like Docker Hub where it matters:
//! Bearer token auth with a `/token` endpoint (tokens scoped to repositories, really
//! expiring), optional Basic credentials on the token endpoint (or Basic auth on the registry
//! itself), blob redirects to a "CDN" on another host name that refuses Authorization,
//! `ratelimit-remaining` headers, Range requests, OCI error JSON, and injectable faults
//! (429, 5xx, corrupt, truncated, stalled, slow bodies, connection drops).
//!
//! Self-contained: uses only tokio, hyper, hyper-util, http-body-util, bytes, sha2, hex and
//! serde_json; no stevedore types. The server listens on 127.0.0.1:0 and stops when the
//! `FakeUpstream` is dropped (or `stop().await`ed); stalled bodies end then too.
#![allow(dead_code)]

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The `service` the fake's Bearer challenges name.
pub const SERVICE: &str = "fake-registry";

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Bearer challenge on every /v2 endpoint; `/token` issues tokens.
    pub bearer_auth: bool,
    /// Token lifetime; `expires_in` says it in whole seconds (rounded down).
    pub token_ttl: Duration,
    /// When set, `/token` requires these Basic credentials (and with `basic_auth`, so does
    /// every /v2 endpoint).
    pub basic_credentials: Option<(String, String)>,
    /// Blob GETs answer 307 to `http://localhost:PORT/cdn/<digest>`: the same server under
    /// another host name, which serves without auth and answers 400 to requests carrying
    /// Authorization (as S3 does).
    pub redirect_blobs: bool,
    /// Adds Docker Hub's `ratelimit-limit`/`ratelimit-remaining` headers to manifest
    /// answers; each manifest GET (not HEAD) uses one.
    pub ratelimit_remaining: Option<u32>,
    /// Registry-level Basic auth (`WWW-Authenticate: Basic`) with `basic_credentials`,
    /// instead of Bearer.
    pub basic_auth: bool,
    /// Page size of a tag list asked without `n` (Docker Hub pages its lists), with a `Link`
    /// to the next page; `None`: the whole list.
    pub tags_page: Option<usize>,
    /// Serves the OCI referrers API (`/v2/<repo>/referrers/<digest>`, from the stored
    /// manifests' `subject`); off, it answers 404 there like distribution 2.8.
    pub referrers_api: bool,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            bearer_auth: false,
            token_ttl: Duration::from_secs(300),
            basic_credentials: None,
            redirect_blobs: false,
            ratelimit_remaining: None,
            basic_auth: false,
            tags_page: None,
            referrers_api: false,
        }
    }
}

/// Misbehaviour injected into answers. Status faults (`TooManyRequests`, `ServerError`)
/// hit manifest and blob requests on /v2; body faults hit blob bodies (on /v2 or /cdn);
/// `CorruptBody` also hits manifest GETs; `Down` hits every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 429 with `Retry-After: <secs>`.
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// 500.
    ServerError,
    /// Flips one byte of the body.
    CorruptBody,
    /// Sends `after` bytes then closes the connection, with Content-Length announcing all.
    Truncate {
        after: usize,
    },
    /// Sends `after` bytes then sends nothing more, ever.
    Stall {
        after: usize,
    },
    /// Sends the body in `chunk`-byte pieces with `delay` before each.
    Slow {
        chunk: usize,
        delay: Duration,
    },
    /// Drops the connection without answering.
    Down,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
}

/// A running fake registry.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

struct State {
    opts: FakeOptions,
    addr: SocketAddr,
    shutdown: watch::Receiver<()>,
    data: Mutex<Data>,
}

#[derive(Default)]
struct Data {
    /// repo → digest → bytes.
    blobs: HashMap<String, HashMap<String, Bytes>>,
    /// repo → digest → (media type, bytes).
    manifests: HashMap<String, HashMap<String, (String, Bytes)>>,
    /// repo → tag → digest.
    tags: HashMap<String, BTreeMap<String, String>>,
    /// token → (repositories, expiry).
    tokens: HashMap<String, (Vec<String>, Instant)>,
    issued: u64,
    token_requests: usize,
    log: Vec<Logged>,
    fault: Option<Fault>,
    ratelimit: Option<u32>,
}

impl FakeUpstream {
    /// Starts the fake on 127.0.0.1 with a free port.
    pub async fn start(opts: FakeOptions) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake upstream");
        let addr = listener.local_addr().expect("fake upstream address");
        let (tx, rx) = watch::channel(());
        let data = Data {
            ratelimit: opts.ratelimit_remaining,
            ..Data::default()
        };
        let state = Arc::new(State {
            opts,
            addr,
            shutdown: rx,
            data: Mutex::new(data),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        FakeUpstream {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stores a blob in `repo`; returns its digest.
    pub fn add_blob(&self, repo: &str, data: Bytes) -> String {
        let digest = sha256_digest(&data);
        let mut d = self.state.data();
        d.blobs
            .entry(repo.to_string())
            .or_default()
            .insert(digest.clone(), data);
        digest
    }

    /// Stores a blob in `repo` under `digest`, whatever the bytes hash to (a sha512 name, or
    /// a lying one).
    pub fn add_blob_named(&self, repo: &str, digest: &str, data: Bytes) {
        self.state
            .data()
            .blobs
            .entry(repo.to_string())
            .or_default()
            .insert(digest.to_string(), data);
    }

    /// Stores an untagged manifest in `repo` under `digest`, whatever the bytes hash to.
    pub fn add_manifest_named(&self, repo: &str, digest: &str, media_type: &str, body: Bytes) {
        let mut d = self.state.data();
        d.manifests
            .entry(repo.to_string())
            .or_default()
            .insert(digest.to_string(), (media_type.to_string(), body));
        d.tags.entry(repo.to_string()).or_default();
    }

    /// Stores a manifest in `repo` (tagged if `tag`); returns its digest.
    pub fn add_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        body: Bytes,
    ) -> String {
        let digest = sha256_digest(&body);
        {
            let mut d = self.state.data();
            d.manifests
                .entry(repo.to_string())
                .or_default()
                .insert(digest.clone(), (media_type.to_string(), body));
            d.tags.entry(repo.to_string()).or_default();
        }
        if let Some(tag) = tag {
            self.set_tag(repo, tag, &digest);
        }
        digest
    }

    /// Points `tag` at `digest` (which should be a stored manifest).
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        self.state
            .data()
            .tags
            .entry(repo.to_string())
            .or_default()
            .insert(tag.to_string(), digest.to_string());
    }

    /// Removes a tag.
    pub fn remove_tag(&self, repo: &str, tag: &str) {
        if let Some(tags) = self.state.data().tags.get_mut(repo) {
            tags.remove(tag);
        }
    }

    /// How many requests with this method (case-insensitive) had a path (with query)
    /// containing `path_contains`.
    pub fn requests(&self, method: &str, path_contains: &str) -> usize {
        self.state
            .data()
            .log
            .iter()
            .filter(|l| l.method.eq_ignore_ascii_case(method) && l.path.contains(path_contains))
            .count()
    }

    /// Every request received so far, in order.
    pub fn request_log(&self) -> Vec<Logged> {
        self.state.data().log.clone()
    }

    /// How many requests to the token endpoint arrived.
    pub fn token_requests(&self) -> usize {
        self.state.data().token_requests
    }

    /// Sets the fault applied from now on (`Fault::None` to heal).
    pub fn set_fault(&self, fault: Fault) {
        self.state.data().fault = Some(fault);
    }

    /// Invalidates every token issued so far (as if they expired early).
    pub fn revoke_tokens(&self) {
        self.state.data().tokens.clear();
    }

    /// Sets what `ratelimit-remaining` says from now on.
    pub fn set_ratelimit_remaining(&self, remaining: Option<u32>) {
        self.state.data().ratelimit = remaining;
    }

    /// Stops the server and waits for its accept loop to end; open connections and stalled
    /// bodies are dropped.
    pub async fn stop(mut self) {
        self.shutdown.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.shutdown.take();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl State {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fault(&self) -> Fault {
        self.data().fault.clone().unwrap_or(Fault::None)
    }
}

/// Resolves once the fake is dropped or stopped.
async fn stopped(mut shutdown: watch::Receiver<()>) {
    while shutdown.changed().await.is_ok() {}
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let shutdown = state.shutdown.clone();
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stopped(shutdown) => {}
            }
        });
    }
}

type Answer = Response<FakeBody>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Answer, io::Error> {
    let path = req.uri().path().to_string();
    let logged = Logged {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.to_string()),
        authorization: header(&req, AUTHORIZATION.as_str()),
        user_agent: header(&req, "user-agent"),
    };
    state.data().log.push(logged);
    let fault = state.fault();
    if fault == Fault::Down {
        return Err(io::Error::other("fake upstream is down"));
    }
    if path == "/token" {
        return Ok(token_endpoint(&state, &req));
    }
    if let Some(digest) = path.strip_prefix("/cdn/") {
        return Ok(cdn(&state, &req, digest, &fault));
    }
    Ok(registry(&state, &req, &path, &fault))
}

fn registry(state: &State, req: &Request<Incoming>, path: &str, fault: &Fault) -> Answer {
    if path == "/v2/" || path == "/v2" {
        return match authorize(state, req, None) {
            Some(refusal) => refusal,
            None => json(StatusCode::OK, "{}".into()),
        };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return oci_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
    };
    let route = if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        Route::Manifest(repo, reference)
    } else if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        Route::Blob(repo, digest)
    } else if let Some(repo) = rest.strip_suffix("/tags/list") {
        Route::Tags(repo)
    } else if let Some((repo, digest)) = rest.rsplit_once("/referrers/")
        && state.opts.referrers_api
    {
        Route::Referrers(repo, digest)
    } else {
        return oci_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
    };
    let repo = route.repo();
    if let Some(refusal) = authorize(state, req, Some(repo)) {
        return refusal;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return oci_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "read-only fake",
        );
    }
    let status_faults_apply = !matches!(route, Route::Tags(_));
    if let (true, Some(answer)) = (status_faults_apply, status_fault(fault)) {
        return answer;
    }
    match route {
        Route::Manifest(repo, reference) => manifest(state, req, repo, reference, fault),
        Route::Blob(repo, digest) => blob(state, req, repo, digest, fault),
        Route::Tags(repo) => tags(state, req, repo),
        Route::Referrers(repo, digest) => referrers(state, req, repo, digest),
    }
}

/// The referrers index of `digest`: stored manifests of `repo` whose `subject` names it.
fn referrers(state: &State, req: &Request<Incoming>, repo: &str, digest: &str) -> Answer {
    let params = query_params(req.uri().query().unwrap_or(""));
    let filter = params
        .iter()
        .find(|(k, _)| k == "artifactType")
        .map(|(_, v)| v.clone());
    let mut found = Vec::new();
    if let Some(manifests) = state.data().manifests.get(repo) {
        for (d, (media_type, body)) in manifests {
            let Ok(m) = serde_json::from_slice::<serde_json::Value>(body) else {
                continue;
            };
            if m["subject"]["digest"].as_str() != Some(digest) {
                continue;
            }
            let artifact_type = m["artifactType"]
                .as_str()
                .or(m["config"]["mediaType"].as_str())
                .map(str::to_owned);
            if filter.is_some() && filter != artifact_type {
                continue;
            }
            found.push(serde_json::json!({
                "mediaType": media_type,
                "digest": d,
                "size": body.len(),
                "artifactType": artifact_type,
            }));
        }
    }
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": found,
    });
    let mut resp = json(StatusCode::OK, body.to_string());
    insert(
        &mut resp,
        "content-type",
        "application/vnd.oci.image.index.v1+json",
    );
    resp
}

enum Route<'a> {
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Tags(&'a str),
    Referrers(&'a str, &'a str),
}

impl<'a> Route<'a> {
    fn repo(&self) -> &'a str {
        match self {
            Route::Manifest(r, _) | Route::Blob(r, _) | Route::Tags(r) | Route::Referrers(r, _) => {
                r
            }
        }
    }
}

fn status_fault(fault: &Fault) -> Option<Answer> {
    match fault {
        Fault::TooManyRequests { retry_after_secs } => {
            let mut resp = oci_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                "You have reached your pull rate limit.",
            );
            insert(&mut resp, "retry-after", &retry_after_secs.to_string());
            Some(resp)
        }
        Fault::ServerError => Some(oci_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "internal server error",
        )),
        _ => None,
    }
}

/// `None` if the request may proceed, else the 401 to answer.
fn authorize(state: &State, req: &Request<Incoming>, repo: Option<&str>) -> Option<Answer> {
    let auth = header(req, AUTHORIZATION.as_str());
    if state.opts.bearer_auth {
        let token = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
        let now = Instant::now();
        let valid = token.is_some_and(|t| {
            state.data().tokens.get(t).is_some_and(|(repos, expiry)| {
                now < *expiry && repo.is_none_or(|r| repos.iter().any(|x| x == r))
            })
        });
        if valid {
            return None;
        }
        let mut challenge = format!(
            r#"Bearer realm="http://{}/token",service="{SERVICE}""#,
            state.addr
        );
        if let Some(repo) = repo {
            challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
        }
        return Some(unauthorized(&challenge));
    }
    if state.opts.basic_auth {
        let expected = state.opts.basic_credentials.as_ref().map(basic_value);
        if expected.is_some() && auth == expected {
            return None;
        }
        return Some(unauthorized(r#"Basic realm="fake-registry""#));
    }
    None
}

fn unauthorized(challenge: &str) -> Answer {
    let mut resp = oci_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    );
    insert(&mut resp, "www-authenticate", challenge);
    resp
}

fn token_endpoint(state: &State, req: &Request<Incoming>) -> Answer {
    state.data().token_requests += 1;
    let credentials_ok = state
        .opts
        .basic_credentials
        .as_ref()
        .is_none_or(|creds| header(req, AUTHORIZATION.as_str()) == Some(basic_value(creds)));
    if !credentials_ok {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"details":"incorrect username or password"}"#.into(),
        );
    }
    let query = req.uri().query().unwrap_or("");
    let repos: Vec<String> = query_params(query)
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let rest = scope.strip_prefix("repository:")?;
            Some(rest.rsplit_once(':')?.0.to_string())
        })
        .collect();
    let ttl = state.opts.token_ttl;
    let token = {
        let mut d = state.data();
        d.issued += 1;
        let token = format!(
            "fake-token-{}-{}",
            d.issued,
            &sha256_digest(query.as_bytes())[7..19]
        );
        d.tokens
            .insert(token.clone(), (repos, Instant::now() + ttl));
        token
    };
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": ttl.as_secs(),
        "issued_at": "2024-01-01T00:00:00Z",
    });
    json(StatusCode::OK, body.to_string())
}

fn manifest(
    state: &State,
    req: &Request<Incoming>,
    repo: &str,
    reference: &str,
    fault: &Fault,
) -> Answer {
    let found = {
        let d = state.data();
        let digest = if reference.contains(':') {
            Some(reference.to_string())
        } else {
            d.tags.get(repo).and_then(|t| t.get(reference)).cloned()
        };
        digest.and_then(|digest| {
            let stored = d.manifests.get(repo)?.get(&digest)?.clone();
            Some((digest, stored))
        })
    };
    let Some((digest, (media_type, body))) = found else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        );
    };
    let is_get = req.method() == Method::GET;
    let body = if is_get && *fault == Fault::CorruptBody {
        corrupt(&body)
    } else {
        body
    };
    let len = body.len();
    let mut resp = if is_get {
        Response::new(FakeBody::full(body))
    } else {
        Response::new(FakeBody::Empty)
    };
    insert(&mut resp, "content-type", &media_type);
    insert(&mut resp, "content-length", &len.to_string());
    insert(&mut resp, "docker-content-digest", &digest);
    add_ratelimit(state, &mut resp, is_get);
    resp
}

fn add_ratelimit(state: &State, resp: &mut Answer, is_get: bool) {
    let remaining = {
        let mut d = state.data();
        if let (true, Some(n)) = (is_get, d.ratelimit.as_mut()) {
            *n = n.saturating_sub(1);
        }
        d.ratelimit
    };
    if let Some(n) = remaining {
        insert(resp, "ratelimit-limit", "100;w=21600");
        insert(resp, "ratelimit-remaining", &format!("{n};w=21600"));
    }
}

fn blob(state: &State, req: &Request<Incoming>, repo: &str, digest: &str, fault: &Fault) -> Answer {
    let data = state
        .data()
        .blobs
        .get(repo)
        .and_then(|b| b.get(digest))
        .cloned();
    let Some(data) = data else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        );
    };
    if req.method() == Method::HEAD {
        let mut resp = Response::new(FakeBody::Empty);
        insert(&mut resp, "content-length", &data.len().to_string());
        insert(&mut resp, "content-type", "application/octet-stream");
        insert(&mut resp, "docker-content-digest", digest);
        return resp;
    }
    if state.opts.redirect_blobs {
        let mut resp = Response::new(FakeBody::Empty);
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        let location = format!("http://localhost:{}/cdn/{digest}", state.addr.port());
        insert(&mut resp, "location", &location);
        return resp;
    }
    serve_bytes(state, req, digest, data, fault)
}

/// The "CDN": blobs of any repository, no auth, Authorization refused.
fn cdn(state: &State, req: &Request<Incoming>, digest: &str, fault: &Fault) -> Answer {
    if req.headers().contains_key(AUTHORIZATION) {
        return json(
            StatusCode::BAD_REQUEST,
            "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>".into(),
        );
    }
    let data = state
        .data()
        .blobs
        .values()
        .find_map(|b| b.get(digest))
        .cloned();
    match data {
        Some(data) => serve_bytes(state, req, digest, data, fault),
        None => json(
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code></Error>".into(),
        ),
    }
}

/// A blob body, honouring `Range: bytes=N-[M]` and the body faults.
fn serve_bytes(
    state: &State,
    req: &Request<Incoming>,
    digest: &str,
    data: Bytes,
    fault: &Fault,
) -> Answer {
    let total = data.len();
    let (status, data, content_range) = match header(req, "range") {
        None => (StatusCode::OK, data, None),
        Some(range) => match parse_range(&range, total) {
            Some((start, end)) => (
                StatusCode::PARTIAL_CONTENT,
                data.slice(start..=end),
                Some(format!("bytes {start}-{end}/{total}")),
            ),
            None => {
                let mut resp = Response::new(FakeBody::Empty);
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                insert(&mut resp, "content-range", &format!("bytes */{total}"));
                return resp;
            }
        },
    };
    let data = if *fault == Fault::CorruptBody {
        corrupt(&data)
    } else {
        data
    };
    let len = data.len();
    let mut resp = Response::new(faulty_body(state, data, fault));
    *resp.status_mut() = status;
    insert(&mut resp, "content-length", &len.to_string());
    insert(&mut resp, "content-type", "application/octet-stream");
    insert(&mut resp, "docker-content-digest", digest);
    insert(&mut resp, "accept-ranges", "bytes");
    if let Some(range) = content_range {
        insert(&mut resp, "content-range", &range);
    }
    resp
}

/// `(start, end)` inclusive, for `bytes=N-` and `bytes=N-M`.
fn parse_range(range: &str, total: usize) -> Option<(usize, usize)> {
    let spec = range.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: usize = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => total.checked_sub(1)?,
        e => e.parse::<usize>().ok()?.min(total.checked_sub(1)?),
    };
    (start <= end && start < total).then_some((start, end))
}

fn faulty_body(state: &State, data: Bytes, fault: &Fault) -> FakeBody {
    let (tx, rx) = mpsc::channel(4);
    let shutdown = state.shutdown.clone();
    match fault.clone() {
        Fault::Truncate { after } => {
            let head = data.slice(..after.min(data.len()));
            tokio::spawn(async move {
                let _ = tx.send(Ok(head)).await;
                // Let the bytes reach the socket before the connection is dropped (the fault's
                // shape as an upstream shows it, not a wait in a test).
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err(io::Error::other("fake truncation"))).await;
            });
        }
        Fault::Stall { after } => {
            let head = data.slice(..after.min(data.len()));
            tokio::spawn(async move {
                if !head.is_empty() {
                    let _ = tx.send(Ok(head)).await;
                }
                tokio::select! {
                    _ = tx.closed() => {}
                    _ = stopped(shutdown) => {}
                }
            });
        }
        Fault::Slow { chunk, delay } => {
            tokio::spawn(async move {
                for piece in data.chunks(chunk.max(1)) {
                    tokio::time::sleep(delay).await;
                    if tx.send(Ok(data.slice_ref(piece))).await.is_err() {
                        return;
                    }
                }
            });
        }
        _ => return FakeBody::full(data),
    }
    FakeBody::Channel(rx)
}

fn tags(state: &State, req: &Request<Incoming>, repo: &str) -> Answer {
    let all: Option<Vec<String>> = state
        .data()
        .tags
        .get(repo)
        .map(|t| t.keys().cloned().collect());
    let Some(all) = all else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    };
    let params = query_params(req.uri().query().unwrap_or(""));
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let last = param("last");
    let n = param("n")
        .and_then(|n| n.parse::<usize>().ok())
        .or(state.opts.tags_page);
    let after: Vec<String> = all
        .into_iter()
        .filter(|t| last.as_ref().is_none_or(|l| t > l))
        .collect();
    let page: Vec<String> = after
        .iter()
        .take(n.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    let more = page.len() < after.len();
    let body = serde_json::json!({ "name": repo, "tags": page }).to_string();
    let mut resp = json(StatusCode::OK, body);
    if let (true, Some(n), Some(last_tag)) = (more, n, page.last()) {
        let link = format!(r#"</v2/{repo}/tags/list?last={last_tag}&n={n}>; rel="next""#);
        insert(&mut resp, "link", &link);
    }
    resp
}

// ---- helpers ----

/// A response body: empty, whole, or fed by a task (for faults).
pub enum FakeBody {
    Empty,
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Result<Bytes, io::Error>>),
}

impl FakeBody {
    fn full(data: Bytes) -> FakeBody {
        FakeBody::Full(Some(data))
    }
}

impl hyper::body::Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            FakeBody::Empty => Poll::Ready(None),
            FakeBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            FakeBody::Channel(rx) => rx
                .poll_recv(cx)
                .map(|item| item.map(|r| r.map(Frame::data))),
        }
    }
}

fn insert(resp: &mut Answer, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, value);
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn json(status: StatusCode, body: String) -> Answer {
    let len = body.len();
    let mut resp = Response::new(FakeBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    insert(&mut resp, "content-type", "application/json");
    insert(&mut resp, "content-length", &len.to_string());
    resp
}

fn oci_error(status: StatusCode, code: &str, message: &str) -> Answer {
    let body =
        serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    json(status, body.to_string())
}

fn corrupt(data: &Bytes) -> Bytes {
    let mut copy = data.to_vec();
    if let Some(byte) = copy.get_mut(data.len() / 2) {
        *byte ^= 0xff;
    }
    Bytes::from(copy)
}

/// `sha256:<hex>` of the bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn basic_value((user, password): &(String, String)) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `key=value` pairs of a query, percent- and `+`-decoded.
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
            {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}
