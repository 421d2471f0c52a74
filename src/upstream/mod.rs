//! The only code in stevedore that talks to upstream registries over the network.
//!
//! [`UpstreamClient`] (one per configured upstream) speaks the Docker Registry V2 / OCI
//! Distribution API read side: manifest HEAD/GET, blob HEAD/GET, tag lists, referrers. It owns
//! authentication as real registries do it (Bearer token flow with per-scope token caching,
//! Basic), redirects (blobs go to a CDN; Authorization is never sent to another host),
//! timeouts (connect + headers, and a stall timeout between body chunks), and the upstream
//! metrics. Submodules:
//! - `auth`: WWW-Authenticate parsing, token endpoint URL and answer, credentials;
//! - `token_cache`: tokens per scope with expiry and single-flight fetching;
//! - `body`: streamed, capped and excerpted body reading;
//! - `tls`: the HTTPS connector and its root certificates;
//! - `names`: name, reference and URL checks, scopes, redirect targets, same-origin rule;
//! - `tags`: a whole tag list, following `Link` pagination;
//! - `peers`: the other replicas of a mirror (static list or DNS), their liveness, and the
//!   owner of a key by rendezvous hashing; a peer is reached as an upstream of its own;
//! - `referrers`: the referrers index of a manifest;
//! - `breaker`: the circuit breaker that stops asking a failing upstream;
//! - `slots`: the cap on concurrent requests, with a queue;
//! - `error`: [`UpstreamError`].
//!
//! Before a request is sent: the offline switch (`Offline`), the breaker (`CircuitOpen` while
//! open, at once), then a slot (queued if all are taken).
//!
//! Callers check digests; this module passes bytes through as received.

mod auth;
mod body;
mod breaker;
mod error;
mod names;
pub mod peers;
mod referrers;
mod slots;
mod tags;
pub(crate) mod tls;
mod token_cache;

/// For the fuzz targets (`crate::fuzzing`).
pub(crate) use auth::parse_challenges;
pub use breaker::BreakerOptions;
pub use error::UpstreamError;

use crate::config::Secret;
use crate::metrics::Metrics;
use auth::{AuthChallenge, Credentials};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use names::{
    check_query, check_reference, check_repo, is_docker_hub, parse_base, parse_url, pull_scope,
    resolve_location, same_origin,
};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use token_cache::TokenCache;

/// Largest manifest (and tag list) we accept.
pub const MANIFEST_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Largest token endpoint answer we read.
const TOKEN_MAX_BYTES: usize = 64 * 1024;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;
/// How long idle pooled connections are kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
const USER_AGENT: &str = concat!("stevedore/", env!("CARGO_PKG_VERSION"));

/// Network settings of one upstream.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Budget for connecting and receiving the response headers of one request.
    pub timeout: Duration,
    /// Budget for the TCP connect alone (capped by `timeout`), so that a blackholed host
    /// shows as a connect timeout in seconds.
    pub connect_timeout: Duration,
    /// Longest wait for the next body chunk.
    pub stall_timeout: Duration,
    /// Extra CA certificates (PEM) trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Concurrent requests; more wait in a queue.
    pub max_requests: usize,
    pub breaker: BreakerOptions,
    /// While set, nothing is sent (`Offline`). Shared by every upstream of a mirror.
    pub offline: Arc<AtomicBool>,
    /// containerd's `?ns=` sent with every manifest, blob and tag list request: set when the
    /// upstream is itself a mirror (a regional stevedore) serving the registry named so.
    pub ns: Option<String>,
    /// Sent as the [`peers::PEER_HEADER`] of every request: the upstream is a peer replica,
    /// which must answer from its own cache or upstream, never forward again.
    pub peer: Option<String>,
    /// Where `upstream.error` and `upstream.ratelimited` events go.
    pub notifier: Arc<crate::notify::Notifier>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            max_requests: 16,
            breaker: BreakerOptions::default(),
            offline: Arc::new(AtomicBool::new(false)),
            ns: None,
            peer: None,
            notifier: Arc::new(crate::notify::Notifier::disabled()),
        }
    }
}

/// What a manifest HEAD told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// Docker-Content-Digest.
    pub digest: Option<String>,
    /// Content-Type.
    pub media_type: Option<String>,
    /// Content-Length.
    pub size: Option<u64>,
}

/// A manifest fetched whole.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    /// Content-Type.
    pub media_type: Option<String>,
    /// Docker-Content-Digest header (unchecked).
    pub digest: Option<String>,
}

/// A blob whose headers arrived; the body comes as it is received.
pub struct BlobResponse {
    /// Content-Length.
    pub len: Option<u64>,
    /// The bytes; each chunk must come within the stall timeout (else `Timeout`), and a body
    /// ending before Content-Length yields `Body("truncated…")`.
    pub body: BoxStream<'static, Result<Bytes, UpstreamError>>,
}

impl fmt::Debug for BlobResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobResponse")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Upstream operations, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    ManifestHead,
    ManifestGet,
    BlobGet,
    BlobHead,
    Tags,
    Token,
    Referrers,
    Probe,
}

/// The `operation` label values of the upstream metrics (for series that exist from start-up).
pub fn operation_labels() -> Vec<&'static str> {
    use Op::*;
    [
        ManifestHead,
        ManifestGet,
        BlobGet,
        BlobHead,
        Tags,
        Token,
        Referrers,
    ]
    .map(Op::as_str)
    .to_vec()
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::ManifestHead => "manifest_head",
            Op::ManifestGet => "manifest_get",
            Op::BlobGet => "blob_get",
            Op::BlobHead => "blob_head",
            Op::Tags => "tags",
            Op::Token => "token",
            Op::Referrers => "referrers",
            Op::Probe => "probe",
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Client of one upstream registry. Cheap to clone (shares the connection pool and tokens).
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// Scheme, authority and optional path prefix, without trailing slash.
    base: String,
    base_uri: Uri,
    docker_hub: bool,
    credentials: Option<Credentials>,
    opts: ClientOptions,
    metrics: Arc<Metrics>,
    http: HttpClient,
    tokens: TokenCache,
    breaker: breaker::Breaker,
    slots: slots::Slots,
    /// Set once the upstream asked for Basic auth: later requests send it straight away.
    basic_mode: AtomicBool,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("name", &self.inner.name)
            .field("base", &self.inner.base)
            .field("credentials", &self.inner.credentials)
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

/// One logical request: what to ask and how to label it.
struct Call<'a> {
    op: Op,
    method: Method,
    /// Path and query, appended to the base URL.
    path: String,
    accept: Option<HeaderValue>,
    /// Repository the request is for (scopes the token).
    repo: &'a str,
}

impl UpstreamClient {
    /// A client for the upstream at `remote_url` (`https://registry-1.docker.io`,
    /// `http://127.0.0.1:1234`, optionally with a path prefix).
    pub fn new(
        name: &str,
        remote_url: &str,
        credentials: Option<(String, Secret)>,
        opts: ClientOptions,
        metrics: Arc<Metrics>,
    ) -> Result<UpstreamClient, UpstreamError> {
        let (base, base_uri) = parse_base(remote_url)?;
        let connect_timeout = opts.connect_timeout.min(opts.timeout);
        let connector = tls::connector(connect_timeout, opts.ca_file.as_deref())?;
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let docker_hub = is_docker_hub(&base_uri);
        let inner = Inner {
            name: name.to_string(),
            base,
            base_uri,
            docker_hub,
            credentials: credentials.map(|(u, p)| Credentials::new(u, p)),
            breaker: breaker::Breaker::new(name, opts.breaker.clone(), metrics.clone()),
            slots: slots::Slots::new(
                opts.max_requests,
                metrics.upstream_queued.with_label_values(&[name]),
            ),
            opts,
            metrics,
            http,
            tokens: TokenCache::default(),
            basic_mode: AtomicBool::new(false),
        };
        Ok(UpstreamClient {
            inner: Arc::new(inner),
        })
    }

    /// The upstream's configured name (metric label).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// HEAD of a manifest with the given Accept media types. Docker Hub does not count HEAD
    /// against the pull limit.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<ManifestHead, UpstreamError> {
        self.head_manifest_in(self.default_ns(), repo, reference, accept)
            .await
    }

    /// [`head_manifest`](Self::head_manifest) with `?ns=` set to `ns` (to a peer or a mirror).
    pub async fn head_manifest_in(
        &self,
        ns: Option<&str>,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<ManifestHead, UpstreamError> {
        let call =
            self.manifest_call(Op::ManifestHead, Method::HEAD, ns, repo, reference, accept)?;
        let resp = self.inner.send(&call).await?;
        let headers = resp.headers();
        Ok(ManifestHead {
            digest: header_string(headers, "docker-content-digest"),
            media_type: header_string(headers, header::CONTENT_TYPE.as_str()),
            size: content_length(headers),
        })
    }

    /// GET of a manifest, read whole; `TooLarge` past 4 MiB.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest, UpstreamError> {
        self.get_manifest_in(self.default_ns(), repo, reference, accept)
            .await
    }

    /// [`get_manifest`](Self::get_manifest) with `?ns=` set to `ns` (to a peer or a mirror).
    pub async fn get_manifest_in(
        &self,
        ns: Option<&str>,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest, UpstreamError> {
        let call = self.manifest_call(Op::ManifestGet, Method::GET, ns, repo, reference, accept)?;
        let resp = self.inner.send(&call).await?;
        let media_type = header_string(resp.headers(), header::CONTENT_TYPE.as_str());
        let digest = header_string(resp.headers(), "docker-content-digest");
        let bytes = self.inner.read_capped(resp).await?;
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// GET of a blob, following redirects (Authorization only to the upstream's own origin).
    /// Returns once the headers are in; see [`BlobResponse`] for the body.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<BlobResponse, UpstreamError> {
        self.get_blob_in(self.default_ns(), repo, digest).await
    }

    /// [`get_blob`](Self::get_blob) with `?ns=` set to `ns` (to a peer or a mirror).
    pub async fn get_blob_in(
        &self,
        ns: Option<&str>,
        repo: &str,
        digest: &str,
    ) -> Result<BlobResponse, UpstreamError> {
        let call = self.blob_call(Op::BlobGet, Method::GET, ns, repo, digest)?;
        let mut resp = self.inner.send(&call).await?;
        let len = content_length(resp.headers());
        let counter = self.inner.bytes_counter();
        // The slot is held until the body is read or dropped; a stalled body counts against
        // the breaker.
        let slot = resp.extensions_mut().remove::<slots::Slot>();
        let inner = self.inner.clone();
        let body = body::stream(
            resp.into_body(),
            len,
            self.inner.opts.stall_timeout,
            counter,
        )
        .map(move |chunk| {
            let _held = &slot;
            if let Err(e) = &chunk {
                inner.breaker.body_failed(e);
            }
            chunk
        })
        .boxed();
        Ok(BlobResponse { len, body })
    }

    /// HEAD of a blob: `Ok(Some(size))` if present, `Ok(None)` if present without
    /// Content-Length, `Err(NotFound)` if absent.
    pub async fn head_blob(&self, repo: &str, digest: &str) -> Result<Option<u64>, UpstreamError> {
        let call = self.blob_call(Op::BlobHead, Method::HEAD, self.default_ns(), repo, digest)?;
        let resp = self.inner.send(&call).await?;
        Ok(content_length(resp.headers()))
    }

    /// GET of `/v2/<repo>/tags/list[?query]`, passed through: the raw body (at most 4 MiB)
    /// and the Link header, if any.
    pub async fn list_tags(
        &self,
        repo: &str,
        query: Option<&str>,
    ) -> Result<(Bytes, Option<String>), UpstreamError> {
        let repo = self.upstream_repo(repo)?;
        let mut path = format!("/v2/{repo}/tags/list");
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            check_query(query)?;
            path.push('?');
            path.push_str(query);
        }
        push_ns(&mut path, self.default_ns())?;
        let call = Call {
            op: Op::Tags,
            method: Method::GET,
            path,
            accept: None,
            repo: &repo,
        };
        let resp = self.inner.send(&call).await?;
        let link = header_string(resp.headers(), header::LINK.as_str());
        let bytes = self.inner.read_capped(resp).await?;
        Ok((bytes, link))
    }

    fn manifest_call<'a>(
        &self,
        op: Op,
        method: Method,
        ns: Option<&str>,
        repo: &'a str,
        reference: &str,
        accept: &[&str],
    ) -> Result<Call<'a>, UpstreamError> {
        check_reference(reference)?;
        let upstream_repo = self.upstream_repo(repo)?;
        let mut path = format!("/v2/{upstream_repo}/manifests/{reference}");
        push_ns(&mut path, ns)?;
        Ok(Call {
            op,
            method,
            path,
            accept: accept_header(accept)?,
            repo,
        })
    }

    fn blob_call<'a>(
        &self,
        op: Op,
        method: Method,
        ns: Option<&str>,
        repo: &'a str,
        digest: &str,
    ) -> Result<Call<'a>, UpstreamError> {
        check_reference(digest)?;
        if !digest.contains(':') {
            return Err(UpstreamError::Invalid(format!("bad digest {digest:?}")));
        }
        let upstream_repo = self.upstream_repo(repo)?;
        let mut path = format!("/v2/{upstream_repo}/blobs/{digest}");
        push_ns(&mut path, ns)?;
        Ok(Call {
            op,
            method,
            path,
            accept: None,
            repo,
        })
    }

    /// The `ns` this client sends unless told otherwise (`ClientOptions::ns`).
    fn default_ns(&self) -> Option<&str> {
        self.inner.opts.ns.as_deref()
    }

    /// The repository name as the upstream knows it: checked, and on Docker Hub with
    /// `library/` before single-component names.
    fn upstream_repo(&self, repo: &str) -> Result<String, UpstreamError> {
        check_repo(repo)?;
        if self.inner.docker_hub && !repo.contains('/') {
            Ok(format!("library/{repo}"))
        } else {
            Ok(repo.to_string())
        }
    }
}

impl UpstreamClient {
    /// Asks `GET /v2/` and returns the [`peers::INSTANCE_HEADER`] of any answer short of a
    /// 5xx (a 401 is an answer: the registry is up). No authentication, no retry, no
    /// breaker; counted under the `probe` operation.
    pub async fn probe(&self) -> Result<Option<String>, UpstreamError> {
        let url = parse_url(&format!("{}/v2/", self.inner.base))?;
        let resp = self
            .inner
            .exchange(Op::Probe, &Method::GET, &url, None, None)
            .await?;
        let instance = header_string(resp.headers(), peers::INSTANCE_HEADER);
        let status = resp.status();
        self.inner.discard(resp).await;
        if status.is_server_error() {
            return Err(UpstreamError::Status(status.as_u16(), String::new()));
        }
        Ok(instance)
    }

    /// Whether the upstream may be asked now (not offline, breaker not open).
    pub fn check_available(&self) -> Result<(), UpstreamError> {
        if self.inner.opts.offline.load(Ordering::Relaxed) {
            return Err(UpstreamError::Offline);
        }
        self.inner.breaker.check()
    }
}

impl Inner {
    /// Sends a call with authentication and redirects handled; returns a 2xx response or the
    /// error its status means. Refused at once when offline or while the breaker is open;
    /// waits for a slot otherwise. The response carries its [`slots::Slot`] in its
    /// extensions: whoever reads the body takes it out to hold it until the body is read.
    async fn send(&self, call: &Call<'_>) -> Result<Response<Incoming>, UpstreamError> {
        if self.opts.offline.load(Ordering::Relaxed) {
            return Err(UpstreamError::Offline);
        }
        self.breaker.check()?;
        let slot = self.slots.acquire().await;
        let ticket = self.breaker.admit()?;
        let outcome = match self.send_authenticated(call).await {
            Ok(resp) => self.check_status(call.op, resp).await,
            Err(e) => Err(e),
        };
        ticket.record(&outcome);
        if let Err(e) = &outcome {
            self.notify_failure(call, e);
        }
        let mut resp = outcome?;
        resp.extensions_mut().insert(slot);
        Ok(resp)
    }

    /// Sends `upstream.ratelimited` for a 429 and `upstream.error` for any other failure
    /// but a 404 (an answer, not a failure).
    fn notify_failure(&self, call: &Call<'_>, e: &UpstreamError) {
        use crate::notify::{Action, Event, Target};
        let (action, reason) = match e {
            UpstreamError::NotFound => return,
            UpstreamError::TooManyRequests { retry_after } => (
                Action::UpstreamRateLimited,
                retry_after
                    .as_ref()
                    .map(|r| format!("Retry-After: {r}"))
                    .unwrap_or_else(|| "429 Too Many Requests".to_owned()),
            ),
            e => (Action::UpstreamError, format!("{}: {e}", call.op.as_str())),
        };
        let notifier = &self.opts.notifier;
        if notifier.wants(action) {
            let mut target = Target::cached(&self.name, call.repo, "", None, 0);
            target.reason = Some(reason);
            notifier.publish(Event::cache(action, target));
        }
    }

    /// Sends a call, answering 401 challenges: Bearer (fetch a token, or replace a rejected
    /// one, then retry once) and Basic (retry once with credentials).
    async fn send_authenticated(
        &self,
        call: &Call<'_>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let url = parse_url(&format!("{}{}", self.base, call.path))?;
        let scope = pull_scope(call.repo, self.docker_hub);
        let mut auth = self.initial_auth(&scope).await?;
        let (mut tried_bearer, mut tried_basic) = (false, false);
        loop {
            let resp = self
                .follow(
                    call.op,
                    &call.method,
                    &url,
                    call.accept.as_ref(),
                    auth.header(),
                    &self.base_uri,
                )
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = auth::challenge_from_headers(resp.headers());
            match challenge {
                Some(AuthChallenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                }) if !tried_bearer => {
                    tried_bearer = true;
                    self.discard(resp).await;
                    let token_scope = asked.unwrap_or_else(|| scope.clone());
                    let rejected = auth.bearer().map(str::to_string);
                    let token = self
                        .tokens
                        .get_or_fetch(&scope, rejected.as_deref(), || {
                            self.fetch_token(&realm, service.as_deref(), &token_scope)
                        })
                        .await?;
                    auth = Auth::from_token(&token)?;
                }
                Some(AuthChallenge::Basic { .. }) if !tried_basic && self.credentials.is_some() => {
                    tried_basic = true;
                    self.discard(resp).await;
                    self.basic_mode.store(true, Ordering::Relaxed);
                    auth = self.basic_auth()?;
                }
                _ => {
                    let text = body::excerpt(resp.into_body(), self.opts.stall_timeout).await;
                    tracing::warn!(upstream = %self.name, op = call.op.as_str(), %url, "upstream refused our credentials: {text}");
                    return Err(UpstreamError::Unauthorized(text));
                }
            }
        }
    }

    /// What to send first: a cached token for the scope, else Basic if the upstream wants it.
    async fn initial_auth(&self, scope: &str) -> Result<Auth, UpstreamError> {
        if let Some(token) = self.tokens.get(scope).await {
            return Auth::from_token(&token);
        }
        if self.basic_mode.load(Ordering::Relaxed) && self.credentials.is_some() {
            return self.basic_auth();
        }
        Ok(Auth::None)
    }

    fn basic_auth(&self) -> Result<Auth, UpstreamError> {
        match &self.credentials {
            Some(c) => Ok(Auth::Basic(c.basic_header()?)),
            None => Ok(Auth::None),
        }
    }

    /// Gets a token from the realm (with Basic credentials if we have them).
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<token_cache::Token, UpstreamError> {
        let url = auth::token_url(realm, service, scope)?;
        let basic = match &self.credentials {
            Some(c) => Some(c.basic_header()?),
            None => None,
        };
        let resp = self
            .follow(Op::Token, &Method::GET, &url, None, basic.as_ref(), &url)
            .await?;
        let status = resp.status();
        // A refusal (or a misconfigured realm) is an auth failure, not "manifest unknown".
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            let text = body::excerpt(resp.into_body(), self.opts.stall_timeout).await;
            tracing::warn!(upstream = %self.name, %status, "token endpoint refused: {text}");
            return Err(UpstreamError::Unauthorized(format!(
                "token endpoint answered {status}: {text}"
            )));
        }
        let resp = self.check_status(Op::Token, resp).await?;
        let len = content_length(resp.headers());
        let stall = self.opts.stall_timeout;
        let body = read_token_body(resp.into_body(), len, stall).await?;
        tracing::debug!(upstream = %self.name, scope, "got a token");
        auth::parse_token_answer(&body)
    }

    /// Sends one request, following up to 5 redirects; `auth` goes only to `auth_origin`'s
    /// scheme, host and port.
    async fn follow(
        &self,
        op: Op,
        method: &Method,
        url: &Uri,
        accept: Option<&HeaderValue>,
        auth: Option<&HeaderValue>,
        auth_origin: &Uri,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let auth = auth.filter(|_| same_origin(&url, auth_origin));
            let resp = self.exchange(op, method, &url, accept, auth).await?;
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| UpstreamError::Invalid("redirect without Location".into()))?;
            let next = resolve_location(&url, location)?;
            tracing::debug!(upstream = %self.name, op = op.as_str(), from = %url, to = %next, "following redirect");
            self.discard(resp).await;
            url = next;
        }
        Err(UpstreamError::Invalid(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// One HTTP exchange up to the response headers, timed, logged and counted.
    async fn exchange(
        &self,
        op: Op,
        method: &Method,
        url: &Uri,
        accept: Option<&HeaderValue>,
        auth: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = build_request(method, url, accept, auth)?;
        if let Some(peer) = &self.opts.peer {
            let v = HeaderValue::try_from(peer.as_str())
                .map_err(|_| UpstreamError::Invalid("bad peer address".into()))?;
            req.headers_mut().insert(peers::PEER_HEADER, v);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.opts.timeout, self.http.request(req)).await;
        let took = started.elapsed();
        let outcome = match result {
            Err(_) => Err(UpstreamError::Timeout("response headers")),
            Ok(Err(e)) => Err(UpstreamError::from_client(&e)),
            Ok(Ok(resp)) => Ok(resp),
        };
        match &outcome {
            Ok(resp) => {
                let status = resp.status();
                self.metrics
                    .upstream_answer(&self.name, op.as_str(), status.as_str(), took);
                self.note_ratelimit(resp.headers());
                tracing::debug!(upstream = %self.name, op = op.as_str(), %method, %url, status = status.as_u16(), took_ms = took.as_millis() as u64, "upstream answered");
            }
            Err(err) => {
                self.metrics
                    .upstream_answer(&self.name, op.as_str(), "error", took);
                tracing::warn!(upstream = %self.name, op = op.as_str(), %method, %url, took_ms = took.as_millis() as u64, "upstream request failed: {err}");
            }
        }
        outcome
    }

    /// Maps non-2xx statuses onto errors (reading a short excerpt of the body).
    async fn check_status(
        &self,
        op: Op,
        resp: Response<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = header_string(resp.headers(), header::RETRY_AFTER.as_str());
        let text = body::excerpt(resp.into_body(), self.opts.stall_timeout).await;
        let err = match status {
            StatusCode::NOT_FOUND => UpstreamError::NotFound,
            StatusCode::UNAUTHORIZED => UpstreamError::Unauthorized(text),
            StatusCode::FORBIDDEN => UpstreamError::Denied(text),
            StatusCode::TOO_MANY_REQUESTS => UpstreamError::TooManyRequests { retry_after },
            _ => UpstreamError::Status(status.as_u16(), text),
        };
        if err.is_unavailable() {
            tracing::warn!(upstream = %self.name, op = op.as_str(), "upstream failed: {err}");
        } else {
            tracing::debug!(upstream = %self.name, op = op.as_str(), "upstream refused: {err}");
        }
        Err(err)
    }

    /// Reads a response we do not need, briefly, so the connection can be reused.
    async fn discard(&self, resp: Response<Incoming>) {
        let _ = body::excerpt(resp.into_body(), self.opts.stall_timeout).await;
    }

    async fn read_capped(&self, mut resp: Response<Incoming>) -> Result<Bytes, UpstreamError> {
        let _slot = resp.extensions_mut().remove::<slots::Slot>();
        let len = content_length(resp.headers());
        let counter = self.bytes_counter();
        body::read_capped(
            resp.into_body(),
            len,
            MANIFEST_MAX_BYTES,
            self.opts.stall_timeout,
            Some(counter),
        )
        .await
    }

    fn bytes_counter(&self) -> prometheus::IntCounter {
        self.metrics
            .upstream_bytes
            .with_label_values(&[self.name.as_str()])
    }

    /// Records Docker Hub's `ratelimit-remaining: 100;w=21600`.
    fn note_ratelimit(&self, headers: &HeaderMap) {
        let remaining = headers
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .and_then(|n| n.trim().parse::<i64>().ok());
        if let Some(n) = remaining {
            self.metrics
                .upstream_ratelimit_remaining
                .with_label_values(&[self.name.as_str()])
                .set(n);
        }
    }
}

async fn read_token_body(
    body: Incoming,
    len: Option<u64>,
    stall: Duration,
) -> Result<Bytes, UpstreamError> {
    // Token answers are not content: not counted in upstream_bytes.
    body::read_capped(body, len, TOKEN_MAX_BYTES, stall, None).await
}

/// The Authorization we send.
enum Auth {
    None,
    Bearer(HeaderValue, String),
    Basic(HeaderValue),
}

impl Auth {
    fn from_token(token: &str) -> Result<Auth, UpstreamError> {
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| UpstreamError::Invalid("token makes a bad header".into()))?;
        value.set_sensitive(true);
        Ok(Auth::Bearer(value, token.to_string()))
    }

    fn header(&self) -> Option<&HeaderValue> {
        match self {
            Auth::None => None,
            Auth::Bearer(value, _) | Auth::Basic(value) => Some(value),
        }
    }

    fn bearer(&self) -> Option<&str> {
        match self {
            Auth::Bearer(_, token) => Some(token),
            _ => None,
        }
    }
}

fn build_request(
    method: &Method,
    url: &Uri,
    accept: Option<&HeaderValue>,
    auth: Option<&HeaderValue>,
) -> Result<Request<Empty<Bytes>>, UpstreamError> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(url.clone())
        .header(header::USER_AGENT, USER_AGENT)
        .body(Empty::new())
        .map_err(|e| UpstreamError::Invalid(format!("request to {url}: {e}")))?;
    let headers = req.headers_mut();
    if let Some(accept) = accept {
        headers.insert(header::ACCEPT, accept.clone());
    }
    if let Some(auth) = auth {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    Ok(req)
}

fn accept_header(accept: &[&str]) -> Result<Option<HeaderValue>, UpstreamError> {
    if accept.is_empty() {
        return Ok(None);
    }
    HeaderValue::try_from(accept.join(", "))
        .map(Some)
        .map_err(|_| UpstreamError::Invalid("bad Accept media type".into()))
}

/// Appends `ns=<ns>` to a path (which may have a query already).
fn push_ns(path: &mut String, ns: Option<&str>) -> Result<(), UpstreamError> {
    let Some(ns) = ns else { return Ok(()) };
    if ns.is_empty()
        || !ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:_[]".contains(&b))
    {
        return Err(UpstreamError::Invalid(format!("bad ns {ns:?}")));
    }
    path.push(if path.contains('?') { '&' } else { '?' });
    path.push_str("ns=");
    path.push_str(ns);
    Ok(())
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
