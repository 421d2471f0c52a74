//! Blob endpoints: GET (with ranges) and HEAD, local or proxied, and DELETE.

use super::{HandlerResult, Req};
use crate::App;
use crate::error::{ErrorCode, RegistryError};
use crate::http::events::Emitter;
use crate::http::range::ByteRange;
use crate::http::{body, response};
use crate::metrics::Source;
use crate::mirror::{BlobContent, ContentRead, Scope};
use crate::notify::Action;
use crate::oci::{Digest, DigestError};
use futures::StreamExt;
use http::{StatusCode, header};

pub async fn get(
    app: &App,
    scope: &Scope,
    digest: &str,
    req: &Req,
    with_body: bool,
) -> HandlerResult {
    let digest = Digest::parse(digest).map_err(|e| match e {
        // No blob of an algorithm we cannot compute is ever stored: it is not here (end-2).
        DigestError::UnsupportedAlgorithm(_) => RegistryError::blob_unknown(&digest),
        e => e.into(),
    })?;
    if !with_body {
        let size = match (scope, &app.mirror) {
            (Scope::Proxy(p), Some(m)) => m.blob_size(p, &digest).await?,
            _ => app
                .registry
                .blob_size(scope.local(), &digest)
                .await?
                .ok_or_else(|| RegistryError::blob_unknown(&digest))?,
        };
        if let Some(events) = Emitter::new(app, req, Action::Pull) {
            events.blob(Action::Pull, scope.local(), &digest, size);
        }
        return Ok(headers(StatusCode::OK, &digest, size)
            .body(body::empty())
            .expect("blob headers are valid"));
    }
    let content = match (scope, &app.mirror) {
        (Scope::Proxy(p), Some(m)) => m.blob(p, &digest).await?,
        _ => match app.registry.open_blob(scope.local(), &digest).await? {
            Some(open) => BlobContent::stored(open, Source::Local),
            None => return Err(RegistryError::blob_unknown(&digest)),
        },
    };
    // A blob in an object store: the client fetches it from there (distribution's
    // `storage.redirect`), unless redirects are disabled.
    if content.is_remote()
        && !app.config.storage.redirect.disable
        && let Some(url) = app.registry.presigned_url(&digest).await?
    {
        return Ok(response::builder(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, url)
            .header("docker-content-digest", digest.as_str())
            .body(body::empty())
            .expect("redirect headers are valid"));
    }
    let size = content.size;
    let source = content.source;
    let (status, start, len) = match ByteRange::parse(req.header(header::RANGE), size) {
        ByteRange::Whole => (StatusCode::OK, 0, size),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Invalid => {
            return Err(RegistryError::new(
                ErrorCode::RangeInvalid,
                format!("requested range not satisfiable for a blob of {size} bytes"),
            )
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
    };
    if let Some(events) = Emitter::new(app, req, Action::Pull) {
        events.blob(Action::Pull, scope.local(), &digest, size);
    }
    let mut b = headers(status, &digest, len);
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    let metrics = app.metrics.clone();
    let served = move |n: u64| metrics.served(source, n);
    let body = match (content.read(start, len), &req.sendfile) {
        // A committed local file on a plain HTTP/1 connection: the kernel copies it to the socket.
        (ContentRead::Local(r), Some(slot)) => {
            body::streamed(slot.body(r.file, r.start, r.len, r.lease, served))
        }
        (ContentRead::Local(r), None) => body::streamed(counted(r.stream(), served)),
        // Still landing: the kernel copies each piece as it lands (issue 13).
        (ContentRead::Growing(r), Some(slot)) => {
            let ready = r.arrivals();
            body::streamed(slot.body_as_ready(r.file, r.start, r.len, (), ready, served))
        }
        (ContentRead::Growing(r), None) => body::streamed(counted(r.stream(), served)),
        (ContentRead::Stream(s), _) => body::streamed(counted(s, served)),
    };
    let mut resp = b.body(body).expect("blob headers are valid");
    resp.extensions_mut().insert(source);
    if let Scope::Proxy(p) = scope {
        resp.extensions_mut()
            .insert(crate::http::ViaUpstream(p.upstream.name.clone()));
    }
    Ok(resp)
}

/// Tells `served` of each chunk as it goes out.
fn counted(
    stream: impl futures::Stream<Item = std::io::Result<bytes::Bytes>>,
    served: impl Fn(u64),
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    stream.inspect(move |chunk| {
        if let Ok(c) = chunk {
            served(c.len() as u64);
        }
    })
}

fn headers(status: StatusCode, digest: &Digest, len: u64) -> http::response::Builder {
    response::builder(status)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(response::CONTENT_DIGEST, digest.as_str())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::CACHE_CONTROL, "max-age=31536000")
}

pub async fn delete(app: &App, scope: &Scope, digest: &str, req: &Req) -> HandlerResult {
    let digest = Digest::parse(digest)?;
    app.registry.delete_blob(scope.local(), &digest).await?;
    if let Some(events) = Emitter::new(app, req, Action::Delete) {
        events.deleted(scope.local(), &digest);
    }
    Ok(response::empty(StatusCode::ACCEPTED)
        .body(body::empty())
        .expect("static headers are valid"))
}
