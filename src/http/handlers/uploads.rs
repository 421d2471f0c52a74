//! Upload endpoints: start (or mount, or a single-request upload), status, PATCH chunks, the
//! final PUT, and cancel. Every request on a session must come through a URL this registry
//! issued: its signed `_state` is checked first (`http::location`).

use super::{HandlerResult, Req};
use crate::App;
use crate::error::{ErrorCode, RegistryError};
use crate::http::events::Emitter;
use crate::http::{body, range, response};
use crate::mirror::Scope;
use crate::notify::Action;
use crate::oci::{Algorithm, Digest, RepoName};
use crate::registry::UploadStatus;
use http::{StatusCode, header};

/// 202 with where the upload stands; the `Location` carries the session's signed state.
fn accepted(app: &App, req: &Req, repo: &RepoName, status: &UploadStatus) -> HandlerResult {
    accepted_at(app, &app.urls.prefix(req), repo, status)
}

/// [`accepted`] once the request is consumed; `location` comes from `UrlBase::prefix`.
fn accepted_at(app: &App, location: &str, repo: &RepoName, status: &UploadStatus) -> HandlerResult {
    let path = app.upload_key.upload_path(repo, &status.id, status.offset);
    Ok(response::empty(StatusCode::ACCEPTED)
        .header(header::LOCATION, format!("{location}{path}"))
        .header(header::RANGE, range::upload_range(status.offset))
        .header(response::UPLOAD_UUID, status.id.as_str())
        .header("oci-chunk-min-length", 0)
        .body(body::empty())
        .expect("upload headers are valid"))
}

/// 201 for a committed blob; `location` is what goes before `/v2/` (`UrlBase::prefix`).
fn created(location: &str, repo: &RepoName, digest: &Digest) -> HandlerResult {
    Ok(response::empty(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("{location}/v2/{repo}/blobs/{digest}"),
        )
        .header(response::CONTENT_DIGEST, digest.as_str())
        .body(body::empty())
        .expect("upload headers are valid"))
}

/// Refuses a request on session `id` whose URL this registry did not issue.
fn check_state(app: &App, repo: &RepoName, id: &str, req: &Req) -> Result<(), RegistryError> {
    app.upload_key.check(repo, id, req.query("_state"))
}

fn digest_param(req: &Req) -> Result<Option<Digest>, RegistryError> {
    req.query("digest")
        .map(Digest::parse)
        .transpose()
        .map_err(Into::into)
}

/// `?digest-algorithm=` of a POST: the algorithm the client will name the blob in.
fn algorithm_param(req: &Req) -> Result<Algorithm, RegistryError> {
    match req.query("digest-algorithm") {
        None => Ok(Algorithm::Sha256),
        Some(name) => Ok(Algorithm::parse(name)?),
    }
}

/// A 416 about where the upload stands also says where the session is (its URL with signed
/// state), so the client can ask its status and resume; `location` comes from `UrlBase::prefix`.
fn locate_range_error(
    app: &App,
    location: &str,
    repo: &RepoName,
    err: RegistryError,
) -> RegistryError {
    let Some(at) = &err.upload else {
        return err;
    };
    let path = app.upload_key.upload_path(repo, &at.id, at.offset);
    err.with_header(header::LOCATION, format!("{location}{path}"))
}

/// Refuses a `Content-Range` that does not match the body's `Content-Length`.
fn check_range_length(req: &Req, range: Option<(u64, u64)>) -> Result<(), RegistryError> {
    if let (Some((start, end)), Some(len)) = (
        range,
        req.header(header::CONTENT_LENGTH)
            .and_then(|l| l.parse::<u64>().ok()),
    ) && (end - start).checked_add(1) != Some(len)
    {
        return Err(RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("Content-Range {start}-{end} does not match the body's {len} bytes"),
        ));
    }
    Ok(())
}

pub async fn start(app: &App, scope: &Scope, req: Req) -> HandlerResult {
    let repo = scope.local();
    let algorithm = algorithm_param(&req)?;
    let location = app.urls.prefix(&req);
    if let Some(mount) = req.query("mount") {
        let digest = Digest::parse(mount)?;
        if let Some(from) = req.query("from").and_then(|f| RepoName::parse(f).ok())
            && let Some(size) = app.registry.mount_blob(repo, &digest, &from).await?
        {
            if let Some(events) = Emitter::new(app, &req, Action::Mount) {
                events.mounted(repo, &digest, size, &from);
            }
            return created(&location, repo, &digest);
        }
        // Not mountable: the spec says to start an ordinary upload instead.
        let status = app.registry.start_upload(repo, algorithm).await?;
        return accepted(app, &req, repo, &status);
    }
    if let Some(digest) = digest_param(&req)? {
        let events = Emitter::new(app, &req, Action::Push);
        let size = app
            .registry
            .upload_whole(
                repo,
                &digest,
                body::request_stream(req.body, app.config.http.limits.bodytimeout),
            )
            .await?;
        if let Some(events) = events {
            events.blob(Action::Push, repo, &digest, size);
        }
        return created(&location, repo, &digest);
    }
    let status = app.registry.start_upload(repo, algorithm).await?;
    accepted(app, &req, repo, &status)
}

pub async fn status(app: &App, scope: &Scope, id: &str, req: &Req) -> HandlerResult {
    let repo = scope.local();
    check_state(app, repo, id, req)?;
    let status = app.registry.upload_status(repo, id).await?;
    let resp = accepted(app, req, repo, &status)?;
    let (mut parts, b) = resp.into_parts();
    parts.status = StatusCode::NO_CONTENT;
    Ok(http::Response::from_parts(parts, b))
}

/// `Content-Range: <start>-<end>` (also accepted with a `bytes ` prefix).
fn content_range(req: &Req) -> Result<Option<(u64, u64)>, RegistryError> {
    let Some(v) = req.header(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let parsed = crate::http::range::chunk_range(v);
    match parsed {
        Some(r) => Ok(Some(r)),
        None => Err(RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("invalid Content-Range {v:?}"),
        )),
    }
}

pub async fn patch(app: &App, scope: &Scope, id: &str, req: Req) -> HandlerResult {
    let repo = scope.local();
    check_state(app, repo, id, &req)?;
    let range = content_range(&req)?;
    check_range_length(&req, range)?;
    let location = app.urls.prefix(&req);
    let status = app
        .registry
        .upload_chunk(
            repo,
            id,
            range,
            body::request_stream(req.body, app.config.http.limits.bodytimeout),
        )
        .await;
    let status = match status {
        Ok(status) => status,
        Err(e) => return Err(locate_range_error(app, &location, repo, e)),
    };
    accepted_at(app, &location, repo, &status)
}

pub async fn put(app: &App, scope: &Scope, id: &str, req: Req) -> HandlerResult {
    let repo = scope.local();
    check_state(app, repo, id, &req)?;
    let location = app.urls.prefix(&req);
    let Some(digest) = digest_param(&req)? else {
        // An unknown session is reported as such before the missing parameter.
        app.registry.upload_status(repo, id).await?;
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            "the final PUT of an upload needs a ?digest= parameter",
        ));
    };
    let range = content_range(&req)?;
    check_range_length(&req, range)?;
    let events = Emitter::new(app, &req, Action::Push);
    let done = app
        .registry
        .finish_upload(
            repo,
            id,
            &digest,
            range,
            body::request_stream(req.body, app.config.http.limits.bodytimeout),
        )
        .await;
    let size = match done {
        Ok(size) => size,
        Err(e) => return Err(locate_range_error(app, &location, repo, e)),
    };
    if let Some(events) = events {
        events.blob(Action::Push, repo, &digest, size);
    }
    created(&location, repo, &digest)
}

pub async fn cancel(app: &App, scope: &Scope, id: &str, req: &Req) -> HandlerResult {
    check_state(app, scope.local(), id, req)?;
    app.registry.cancel_upload(scope.local(), id).await?;
    Ok(response::empty(StatusCode::NO_CONTENT)
        .body(body::empty())
        .expect("static headers are valid"))
}
