//! What each endpoint needs of the access policy: a pure mapping of an [`Endpoint`] (and the
//! `mount`/`from` query of a blob mount) onto [`Access`]es, checked by `handle` before any
//! handler runs. As distribution: reads need `pull`; writes need `pull,push` (every upload
//! endpoint too, even `GET` of an upload's status); deletes need `delete`; a cross-repository
//! mount also needs `pull` on the source; the catalog needs `registry:catalog:*`; `GET /v2/`
//! needs only authentication; `auth.builtin`'s token endpoint checks its own credentials.
//! A challenge naming a relative realm (`auth.builtin`'s default) gets the request's origin.

use super::handlers::Req;
use super::location::UrlBase;
use super::route::Endpoint;
use crate::App;
use crate::auth::{Access, Actions};
use crate::error::RegistryError;
use crate::oci::RepoName;

/// Whether the request may reach `endpoint`'s handler: always when no `auth` is configured,
/// else as the authenticator decides. `Ok` names the authenticated user, if any.
pub async fn check(
    app: &App,
    endpoint: &Endpoint,
    req: &Req,
) -> Result<Option<String>, RegistryError> {
    let Some(auth) = &app.auth else {
        return Ok(None);
    };
    if *endpoint == Endpoint::IssueToken {
        return Ok(None);
    }
    let mut needs = required(endpoint, &req.query)?;
    // containerd's `?ns=` (or, with no `ns`, an upstream named `docker.io`) can send a name
    // to another registry's cache, stored as "<registry>/<name>": what the handler will touch
    // must be authorized too.
    if let Some(mirror) = &app.mirror {
        let ns = req.query("ns");
        let extra: Vec<Access> = needs
            .iter()
            .filter_map(|a| {
                let repo = a.repo.as_ref()?;
                let local = mirror.scope(repo, ns)?.local().clone();
                (local != *repo).then(|| Access::repository(local, a.actions))
            })
            .collect();
        needs.extend(extra);
    }
    let who = auth
        .authorize(&req.headers, &needs)
        .await
        .map_err(|e| e.with_origin(|| origin(app, req)))?;
    if let Some(user) = who.name() {
        tracing::debug!(user, endpoint = endpoint.label(), "authorized");
    }
    Ok(who.name().map(str::to_owned))
}

/// Scheme and host the client reached this server by: `http.host`, or from the request.
fn origin(app: &App, req: &Req) -> String {
    let base = match &app.config.http.host {
        Some(h) => UrlBase::Fixed(h.trim_end_matches('/').to_owned()),
        None => UrlBase::FromRequest {
            tls: app.tls.is_some(),
        },
    };
    base.prefix(req)
}

/// The accesses `endpoint` needs (empty: authentication only). A name that is not a valid
/// repository name is refused here, as the handler would.
pub fn required(
    endpoint: &Endpoint,
    query: &[(String, String)],
) -> Result<Vec<Access>, RegistryError> {
    use Endpoint::*;
    let on = |name: &str, actions: Actions| -> Result<Access, RegistryError> {
        Ok(Access::repository(RepoName::parse(name)?, actions))
    };
    let q = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    Ok(match endpoint {
        ApiVersion => Vec::new(),
        Catalog => vec![Access::catalog()],
        ListTags { name }
        | GetManifest { name, .. }
        | HeadManifest { name, .. }
        | GetBlob { name, .. }
        | HeadBlob { name, .. }
        | GetReferrers { name, .. } => vec![on(name, Actions::PULL)?],
        PutManifest { name, .. }
        | GetUpload { name, .. }
        | PatchUpload { name, .. }
        | PutUpload { name, .. }
        | DeleteUpload { name, .. } => vec![on(name, Actions::PULL_PUSH)?],
        StartUpload { name } => {
            let mut v = vec![on(name, Actions::PULL_PUSH)?];
            // The handler ignores a `from` that is not a valid name (it starts a plain upload).
            if q("mount").is_some()
                && let Some(from) = q("from").and_then(|f| RepoName::parse(f).ok())
            {
                v.push(Access::repository(from, Actions::PULL));
            }
            v
        }
        DeleteManifest { name, .. } | DeleteBlob { name, .. } => {
            vec![on(name, Actions::DELETE)?]
        }
        IssueToken => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn scopes(method: Method, path: &str, query: &[(&str, &str)]) -> Vec<String> {
        let e = Endpoint::parse(&method, path).expect("routes");
        let q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        required(&e, &q)
            .expect("valid names")
            .iter()
            .map(Access::scope)
            .collect()
    }

    #[test]
    fn table() {
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let pull = |r: &str| vec![format!("repository:{r}:pull")];
        let push = |r: &str| vec![format!("repository:{r}:pull,push")];
        let del = |r: &str| vec![format!("repository:{r}:delete")];
        type Case = (
            Method,
            String,
            Vec<(&'static str, &'static str)>,
            Vec<String>,
        );
        let cases: Vec<Case> = vec![
            (Method::GET, "/v2/".into(), vec![], vec![]),
            (Method::HEAD, "/v2".into(), vec![], vec![]),
            (
                Method::GET,
                "/v2/_catalog".into(),
                vec![],
                vec!["registry:catalog:*".into()],
            ),
            (Method::GET, "/v2/a/b/tags/list".into(), vec![], pull("a/b")),
            (Method::GET, "/v2/a/manifests/t".into(), vec![], pull("a")),
            (Method::HEAD, "/v2/a/manifests/t".into(), vec![], pull("a")),
            (Method::GET, format!("/v2/a/blobs/{d}"), vec![], pull("a")),
            (Method::HEAD, format!("/v2/a/blobs/{d}"), vec![], pull("a")),
            (
                Method::GET,
                format!("/v2/a/referrers/{d}"),
                vec![],
                pull("a"),
            ),
            (Method::PUT, "/v2/a/manifests/t".into(), vec![], push("a")),
            (
                Method::POST,
                "/v2/a/blobs/uploads/".into(),
                vec![],
                push("a"),
            ),
            (
                Method::GET,
                "/v2/a/blobs/uploads/u".into(),
                vec![],
                push("a"),
            ),
            (
                Method::PATCH,
                "/v2/a/blobs/uploads/u".into(),
                vec![],
                push("a"),
            ),
            (
                Method::PUT,
                "/v2/a/blobs/uploads/u".into(),
                vec![],
                push("a"),
            ),
            (
                Method::DELETE,
                "/v2/a/blobs/uploads/u".into(),
                vec![],
                push("a"),
            ),
            (Method::DELETE, "/v2/a/manifests/t".into(), vec![], del("a")),
            (Method::DELETE, format!("/v2/a/blobs/{d}"), vec![], del("a")),
            (
                Method::POST,
                "/v2/a/blobs/uploads/".into(),
                vec![("mount", d), ("from", "lib/b")],
                vec![
                    "repository:a:pull,push".into(),
                    "repository:lib/b:pull".into(),
                ],
            ),
            // No mount, or a `from` the handler would ignore: nothing more.
            (
                Method::POST,
                "/v2/a/blobs/uploads/".into(),
                vec![("from", "lib/b")],
                push("a"),
            ),
            (
                Method::POST,
                "/v2/a/blobs/uploads/".into(),
                vec![("mount", d), ("from", "Not/Valid")],
                push("a"),
            ),
        ];
        for (m, path, q, want) in cases {
            assert_eq!(scopes(m.clone(), &path, &q), want, "{m} {path} {q:?}");
        }
    }

    #[test]
    fn invalid_names_are_refused() {
        let e = Endpoint::parse(&Method::GET, "/v2/UPPER/manifests/t").unwrap();
        let err = required(&e, &[]).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::NameInvalid);
    }
}
