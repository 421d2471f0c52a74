//! Manifest endpoints: GET/HEAD (local or proxied), PUT, DELETE.

use super::{HandlerResult, Req};
use crate::App;
use crate::error::{ErrorCode, RegistryError};
use crate::http::events::{Emitter, ManifestInfo};
use crate::http::{body, response};
use crate::metrics::Source;
use crate::mirror::Scope;
use crate::notify::Action;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{DigestError, NameError, Reference, Tag, media};
use crate::registry::Manifest;
use http::{StatusCode, header};

/// On a proxied tag the upstream now answers 404 for, served from the cache: `not-found`.
pub const UPSTREAM_HEADER: &str = "x-stevedore-upstream";

pub async fn get(
    app: &App,
    scope: &Scope,
    reference: &str,
    req: &Req,
    with_body: bool,
) -> HandlerResult {
    let reference = Reference::parse(reference).map_err(|e| match e {
        // No manifest of an algorithm we cannot compute is ever stored: it is not here (end-3).
        NameError::Digest(DigestError::UnsupportedAlgorithm(_)) => {
            RegistryError::manifest_unknown(&reference)
        }
        e => e.into(),
    })?;
    let mut gone_upstream = false;
    let (m, source) = match (scope, &app.mirror) {
        (Scope::Proxy(p), Some(mirror)) => {
            let (m, source) = mirror.get_manifest(p, &reference).await?;
            gone_upstream = source == Source::Cache && mirror.upstream_gone(p, &reference);
            (m, source)
        }
        _ => match app.registry.get_manifest(scope.local(), &reference).await? {
            Some(m) => (m, Source::Local),
            None => return Err(RegistryError::manifest_unknown(&reference)),
        },
    };
    // Only an index can be refused for the Accept header (`media::acceptable`): the header is
    // read for those alone.
    if media::is_index(&m.media_type)
        && !media::acceptable(
            &m.media_type,
            &media::accepted(
                req.headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            ),
        )
    {
        return Err(RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "the manifest is a {} and the request's Accept header does not list it",
                m.media_type
            ),
        ));
    }
    if with_body {
        app.depot.note_pull(scope.local(), &m.digest);
    }
    if let Some(events) = Emitter::new(app, req, Action::Pull) {
        let tag = match &reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        let info = ManifestInfo {
            digest: &m.digest,
            media_type: &m.media_type,
            bytes: &m.bytes,
        };
        events.manifest(Action::Pull, scope.local(), &info, tag);
    }
    let mut resp = respond(app, m, source, with_body);
    if gone_upstream {
        resp.headers_mut()
            .insert(UPSTREAM_HEADER, http::HeaderValue::from_static("not-found"));
    }
    if let Scope::Proxy(p) = scope {
        resp.extensions_mut()
            .insert(crate::http::ViaUpstream(p.upstream.name.clone()));
    }
    Ok(resp)
}

/// The answer to a GET or HEAD of manifest `m`. Built field by field (one header map of the right
/// size, no formatting): this is the hottest path of a pull.
fn respond(app: &App, m: Manifest, source: Source, with_body: bool) -> http::Response<body::Body> {
    let len = m.bytes.len();
    let digest = m.digest.as_str();
    let mut etag = String::with_capacity(digest.len() + 2);
    etag.push('"');
    etag.push_str(digest);
    etag.push('"');
    let body = if with_body {
        app.metrics.served(source, len as u64);
        body::full(m.bytes)
    } else {
        body::empty()
    };
    let mut resp = http::Response::new(body);
    let h = resp.headers_mut();
    h.reserve(6);
    response::common_headers(h);
    let value = |v: &str| http::HeaderValue::from_str(v).expect("manifest headers are valid");
    h.insert(header::CONTENT_TYPE, value(&m.media_type));
    h.insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
    h.insert(response::CONTENT_DIGEST, value(digest));
    h.insert(
        header::ETAG,
        http::HeaderValue::try_from(etag).expect("manifest headers are valid"),
    );
    if app.access_log {
        resp.extensions_mut().insert(source);
    }
    resp
}

pub async fn put(app: &App, scope: &Scope, reference: &str, req: Req) -> HandlerResult {
    let reference = Reference::parse(reference)?;
    // `?tag=` parameters (end-7b): more tags for the same manifest, set with it.
    let tags = req
        .query
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| Tag::parse(v))
        .collect::<Result<Vec<Tag>, _>>()?;
    let too_large = || {
        RegistryError::new(
            ErrorCode::SizeInvalid,
            format!("manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if let Some(len) = req
        .header(header::CONTENT_LENGTH)
        .and_then(|l| l.parse::<u64>().ok())
        && len > MAX_MANIFEST_BYTES as u64
    {
        return Err(too_large());
    }
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_owned);
    let location = app.urls.prefix(&req);
    let events = Emitter::new(app, &req, Action::Push);
    let bytes = body::collect_limited(
        req.body,
        MAX_MANIFEST_BYTES,
        app.config.http.limits.bodytimeout,
    )
    .await
    .map_err(|e| match e {
        body::CollectError::TooLarge(_) => too_large(),
        body::CollectError::Body(e) => RegistryError::new(
            ErrorCode::ManifestInvalid,
            format!("manifest body broke off: {e}"),
        ),
    })?;
    let local = scope.local();
    let put = app
        .registry
        .put_manifest(
            local,
            &reference,
            content_type.as_deref(),
            bytes.clone(),
            &tags,
        )
        .await?;
    if let Some(events) = events {
        let info = ManifestInfo {
            digest: &put.digest,
            media_type: &put.media_type,
            bytes: &bytes,
        };
        // One push per tag the manifest now has (the reference's, then each `?tag=`; one
        // untagged push when pushed by digest alone): distribution knows only the first.
        let mut named: Vec<&Tag> = Vec::new();
        if let Reference::Tag(t) = &reference {
            named.push(t);
        }
        named.extend(
            tags.iter()
                .filter(|t| !matches!(&reference, Reference::Tag(r) if r == *t)),
        );
        if named.is_empty() {
            events.manifest(Action::Push, local, &info, None);
        }
        for t in named {
            events.manifest(Action::Push, local, &info, Some(t));
        }
    }
    let mut b = response::empty(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("{location}/v2/{local}/manifests/{}", put.digest),
        )
        .header(response::CONTENT_DIGEST, put.digest.as_str());
    if let Some(subject) = &put.subject {
        b = b.header("oci-subject", subject.as_str());
    }
    if !tags.is_empty() {
        let list: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        b = b.header("oci-tag", list.join(", "));
    }
    Ok(b.body(body::empty()).expect("manifest headers are valid"))
}

pub async fn delete(app: &App, scope: &Scope, reference: &str, req: &Req) -> HandlerResult {
    let reference = Reference::parse(reference)?;
    let tags = app
        .registry
        .delete_manifest(scope.local(), &reference)
        .await?;
    if let Some(events) = Emitter::new(app, req, Action::Delete) {
        if let Reference::Digest(d) = &reference {
            events.deleted(scope.local(), d);
        }
        for t in &tags {
            events.tag_deleted(scope.local(), t);
        }
    }
    Ok(response::empty(StatusCode::ACCEPTED)
        .body(body::empty())
        .expect("static headers are valid"))
}
