//! `/v2/_catalog`, tags lists and the referrers API.

use super::{HandlerResult, Req, pagination};
use crate::App;
use crate::error::RegistryError;
use crate::http::response;
use crate::mirror::Scope;
use crate::oci::{Digest, media};
use http::StatusCode;

/// Largest page the listing endpoints return, whatever `n` asks.
pub const MAX_PAGE: usize = 1000;

/// Catalog page size when `n` is absent (distribution's). A tags list without `n` has no
/// default page: clients that do not paginate expect every tag, so it gets `MAX_PAGE`.
const CATALOG_PAGE: usize = 100;

fn with_link(
    mut resp: http::Response<crate::http::body::Body>,
    path: &str,
    n: usize,
    last: Option<&String>,
) -> http::Response<crate::http::body::Body> {
    if let Some(last) = last {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("last", last)
            .append_pair("n", &n.to_string())
            .finish();
        if let Ok(v) = http::HeaderValue::from_str(&format!("<{path}?{q}>; rel=\"next\"")) {
            resp.headers_mut().insert(http::header::LINK, v);
        }
    }
    resp
}

pub async fn catalog(app: &App, req: &Req) -> HandlerResult {
    let (n, last) = pagination(req, CATALOG_PAGE, MAX_PAGE)?;
    let mut repos = app.registry.catalog(last.as_deref(), n + 1).await?;
    let more = repos.len() > n;
    repos.truncate(n);
    let next = more.then(|| repos.last().cloned()).flatten();
    let resp = response::json(
        StatusCode::OK,
        &serde_json::json!({ "repositories": repos }),
    );
    Ok(with_link(resp, "/v2/_catalog", n, next.as_ref()))
}

/// Response header naming where a proxied tag list came from when the upstream's list could
/// not be had: `local` (only tags pushed or cached here).
pub const TAGS_SOURCE_HEADER: &str = "x-stevedore-tags-source";

pub async fn tags(app: &App, scope: &Scope, req: &Req) -> HandlerResult {
    let (n, last) = pagination(req, MAX_PAGE, MAX_PAGE)?;
    let local = scope.local();
    let (mut tags, local_only) = match (scope, &app.mirror) {
        (Scope::Proxy(p), Some(m)) => {
            let page = m.list_tags(p, last.as_deref(), n + 1).await?;
            (page.tags, page.local_only)
        }
        _ => match app
            .registry
            .list_tags(local, last.as_deref(), n + 1)
            .await?
        {
            Some(t) => (t, false),
            None => return Err(RegistryError::name_unknown(local)),
        },
    };
    let more = tags.len() > n;
    tags.truncate(n);
    let next = more.then(|| tags.last().cloned()).flatten();
    let path = format!("/v2/{local}/tags/list");
    let mut resp = response::json(
        StatusCode::OK,
        &serde_json::json!({ "name": local.as_str(), "tags": tags }),
    );
    if local_only {
        resp.headers_mut()
            .insert(TAGS_SOURCE_HEADER, http::HeaderValue::from_static("local"));
    }
    Ok(with_link(resp, &path, n, next.as_ref()))
}

/// Response header naming where a proxied referrers list came from when the upstream's list
/// could not be had: `local`.
pub const REFERRERS_SOURCE_HEADER: &str = "x-stevedore-referrers-source";

pub async fn referrers(app: &App, scope: &Scope, digest: &str, req: &Req) -> HandlerResult {
    let digest = Digest::parse(digest)?;
    let filter = req.query("artifactType").filter(|t| !t.is_empty());
    let (manifests, local_only) = match (scope, &app.mirror) {
        (Scope::Proxy(p), Some(m)) => {
            let r = m.referrers(p, &digest, filter).await?;
            (r.manifests, r.local_only)
        }
        _ => (
            app.registry
                .referrers(scope.local(), &digest, filter)
                .await?,
            false,
        ),
    };
    let mut resp = response::json(
        StatusCode::OK,
        &serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests }),
    );
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(media::OCI_INDEX),
    );
    if filter.is_some() {
        h.insert(
            "oci-filters-applied",
            http::HeaderValue::from_static("artifactType"),
        );
    }
    if local_only {
        h.insert(
            REFERRERS_SOURCE_HEADER,
            http::HeaderValue::from_static("local"),
        );
    }
    Ok(resp)
}
