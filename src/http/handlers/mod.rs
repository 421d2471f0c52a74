//! Request handlers, one module per family of endpoints. `dispatch` validates the names in the
//! path, picks the scope (local or proxied) and calls the handler; handlers return
//! `Result<Response, RegistryError>` and never build error responses themselves.

mod blobs;
mod listings;
mod manifests;
mod token;
mod uploads;

use super::body::Body;
use super::route::Endpoint;
use crate::App;
use crate::error::{ErrorCode, RegistryError};
use crate::mirror::Scope;
use crate::oci::RepoName;
use http::{HeaderMap, Response};
use hyper::body::Incoming;

pub type HandlerResult = Result<Response<Body>, RegistryError>;

/// The parts of a request handlers look at.
pub struct Req {
    /// Set on plain HTTP/1 connections, where blob bodies can go out with `sendfile`.
    pub sendfile: Option<crate::http::sendfile::SendfileSlot>,
    pub method: http::Method,
    /// The client's socket address (absent only for requests not from a connection).
    pub peer: Option<std::net::SocketAddr>,
    /// The authenticated user, once access was checked.
    pub user: Option<String>,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    /// The URI's authority (HTTP/2 `:authority`, absolute-form HTTP/1 targets).
    pub authority: Option<String>,
    pub body: Incoming,
}

impl Req {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .take(32)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

fn repo(name: &str) -> Result<RepoName, RegistryError> {
    RepoName::parse(name).map_err(|e| {
        RegistryError::from(e)
            .detail(serde_json::json!({ "name": name.chars().take(300).collect::<String>() }))
    })
}

/// How `name` is served: the mirror decides for proxied names.
fn scope(app: &App, name: &str, req: &Req) -> Result<Scope, RegistryError> {
    let r = repo(name)?;
    let ns = req.query("ns");
    match &app.mirror {
        Some(m) => {
            let mut scope = m
                .scope(&r, ns)
                .ok_or_else(|| m.unknown_registry(ns.unwrap_or_default()))?;
            m.check_policy(&scope)?;
            // Sent by a peer replica: answered here, never forwarded again.
            if let Scope::Proxy(p) = &mut scope
                && req
                    .headers
                    .contains_key(crate::upstream::peers::PEER_HEADER)
            {
                p.forwarded = true;
            }
            Ok(scope)
        }
        None => Ok(Scope::Local(r)),
    }
}

pub async fn dispatch(app: &App, endpoint: Endpoint, req: Req) -> HandlerResult {
    use Endpoint::*;
    match endpoint {
        ApiVersion => Ok(super::response::empty(http::StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(super::body::empty())
            .expect("static headers are valid")),
        Catalog => listings::catalog(app, &req).await,
        ListTags { name } => listings::tags(app, &scope(app, &name, &req)?, &req).await,
        GetReferrers { name, digest } => {
            listings::referrers(app, &scope(app, &name, &req)?, &digest, &req).await
        }
        GetManifest { name, reference } => {
            manifests::get(app, &scope(app, &name, &req)?, &reference, &req, true).await
        }
        HeadManifest { name, reference } => {
            manifests::get(app, &scope(app, &name, &req)?, &reference, &req, false).await
        }
        PutManifest { name, reference } => {
            manifests::put(app, &scope(app, &name, &req)?, &reference, req).await
        }
        DeleteManifest { name, reference } => {
            manifests::delete(app, &scope(app, &name, &req)?, &reference, &req).await
        }
        GetBlob { name, digest } => {
            blobs::get(app, &scope(app, &name, &req)?, &digest, &req, true).await
        }
        HeadBlob { name, digest } => {
            blobs::get(app, &scope(app, &name, &req)?, &digest, &req, false).await
        }
        DeleteBlob { name, digest } => {
            blobs::delete(app, &scope(app, &name, &req)?, &digest, &req).await
        }
        StartUpload { name } => uploads::start(app, &scope(app, &name, &req)?, req).await,
        GetUpload { name, id } => uploads::status(app, &scope(app, &name, &req)?, &id, &req).await,
        PatchUpload { name, id } => uploads::patch(app, &scope(app, &name, &req)?, &id, req).await,
        PutUpload { name, id } => uploads::put(app, &scope(app, &name, &req)?, &id, req).await,
        DeleteUpload { name, id } => {
            uploads::cancel(app, &scope(app, &name, &req)?, &id, &req).await
        }
        IssueToken => token::issue(app, &req).await,
    }
}

/// `n` and `last` of the listing endpoints (`default` when `n` is absent). `n` is capped so no
/// request allocates without bound.
pub fn pagination(
    req: &Req,
    default: usize,
    max: usize,
) -> Result<(usize, Option<String>), RegistryError> {
    let n = match req.query("n") {
        None | Some("") => default.min(max),
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| {
                RegistryError::new(
                    ErrorCode::PaginationNumberInvalid,
                    format!("invalid page size n={s:?}"),
                )
            })?
            .min(max as u64) as usize,
    };
    Ok((
        n,
        req.query("last")
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
    ))
}
