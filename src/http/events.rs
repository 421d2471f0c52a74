//! Which request emits which notification event, as distribution 2.8 does (its
//! `notifications/listener.go` wraps the repository a request works on, `bridge.go` builds the
//! events, `registry/handlers/app.go` names the actor and the URLs). Owns turning a request and
//! the outcome of its operation into [`Event`]s for `App.notifier`; must not queue, filter,
//! render or deliver them (`notify/`), and emits only once the operation succeeded.
//!
//! | request                                          | events, in order                    | `target`                                             |
//! |--------------------------------------------------|-------------------------------------|------------------------------------------------------|
//! | `GET`/`HEAD …/manifests/<tag>`                   | `pull`                              | `mediaType size digest length repository url tag`    |
//! | `GET`/`HEAD …/manifests/<digest>`                | `pull`                              | the same without `tag`                               |
//! | `GET`/`HEAD …/blobs/<digest>`                    | `pull`                              | `mediaType`¹ `size digest length repository url`     |
//! | `PUT …/manifests/<tag>`                          | `push`                              | as a manifest pull, with `tag`                       |
//! | `PUT …/manifests/<digest>`                       | `push`                              | as a manifest pull, no `tag`                         |
//! | `PUT …/blobs/uploads/<id>?digest=`, `POST …/blobs/uploads/?digest=` | `push`           | as a blob pull                                       |
//! | `POST …/blobs/uploads/?mount=&from=`, mounted    | `mount`                             | as a blob pull, with `fromRepository`                |
//! | `DELETE …/manifests/<digest>`                    | `delete`, then a `delete` per tag that pointed at it | `digest repository`; then `repository tag` |
//! | `DELETE …/manifests/<tag>`                       | `delete`                            | `repository tag` (distribution 3.x; 2.8 refuses)     |
//! | `DELETE …/blobs/<digest>`                        | `delete`                            | `digest repository`                                  |
//! | anything else, and every failed request          | none                                |                                                      |
//!
//! ¹ always `application/octet-stream`: distribution's blob store keeps no media type.
//!
//! Manifest events carry `references` (an image's config and layers, an index's manifests) when
//! `notifications.events.includereferences` is set. A pull of a proxied repository is the same
//! `pull`, whether served from the cache or from the upstream (distribution's proxy mode); the
//! mirror's own events (`cache.fill`, …) come from `mirror/`, `upstream/` and `lifecycle/`.
//!
//! `target.url` is built as distribution builds it: on `http.host` when set; a path alone with
//! `http.relativeurls: true`; otherwise from the request's scheme and host (distribution's
//! default, whatever stevedore's `Location` headers do). `request`: a fresh id, the client's
//! address (`X-Forwarded-For`'s first IP, else `X-Real-Ip`, else the peer), `Host`, method and
//! `User-Agent`. `actor.name`: the authenticated user, else the user of a Basic
//! `Authorization` header (as distribution falls back to), else none (`{}`).
//!
//! A pull's event is sent when its response starts, not when its body has been sent
//! (distribution waits for the body): a client that breaks off a blob download still counts.

use super::handlers::Req;
use super::location::UrlBase;
use crate::App;
use crate::notify::{
    Action, Actor, BLOB_MEDIA_TYPE, Descriptor, Event, Notifier, RequestInfo, Target,
};
use crate::oci::{Digest, RepoName, Tag};
use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// Emits the events of one request. Exists only when some endpoint wants its action, so that
/// a request nobody listens to builds nothing.
pub(crate) struct Emitter<'a> {
    notifier: &'a Notifier,
    request: RequestInfo,
    actor: Actor,
    /// What goes before `/v2/…` in `target.url`.
    prefix: String,
    references: bool,
}

/// A manifest an event is about.
pub(crate) struct ManifestInfo<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub bytes: &'a [u8],
}

impl<'a> Emitter<'a> {
    /// The emitter of `req`'s events of `action`, or `None` when no endpoint wants them.
    pub fn new(app: &'a App, req: &Req, action: Action) -> Option<Emitter<'a>> {
        if !app.notifier.wants(action) {
            return None;
        }
        Some(Emitter {
            notifier: &app.notifier,
            request: request_info(
                &req.headers,
                req.authority.as_deref(),
                &req.method,
                req.peer,
            ),
            actor: Actor {
                name: req.user.clone().or_else(|| basic_user(&req.headers)),
            },
            prefix: UrlBase::for_events(&app.config.http).prefix(req),
            references: app.notifier.include_references(),
        })
    }

    fn publish(&self, action: Action, target: Target) {
        self.notifier.publish(Event::new(
            action,
            target,
            self.request.clone(),
            self.actor.clone(),
        ));
    }

    /// A manifest pulled or pushed (`tag` when named by one).
    pub fn manifest(
        &self,
        action: Action,
        repo: &RepoName,
        m: &ManifestInfo<'_>,
        tag: Option<&Tag>,
    ) {
        let size = m.bytes.len() as u64;
        self.publish(
            action,
            Target {
                descriptor: Descriptor {
                    media_type: m.media_type.to_owned(),
                    size,
                    digest: Some(m.digest.clone()),
                    ..Descriptor::default()
                },
                length: size,
                repository: repo.to_string(),
                url: Some(format!("{}/v2/{repo}/manifests/{}", self.prefix, m.digest)),
                tag: tag.map(|t| t.to_string()),
                references: if self.references {
                    references(m.bytes)
                } else {
                    Vec::new()
                },
                ..Target::default()
            },
        );
    }

    /// A blob pulled or pushed.
    pub fn blob(&self, action: Action, repo: &RepoName, digest: &Digest, size: u64) {
        self.publish(action, self.blob_target(repo, digest, size));
    }

    /// A blob mounted into `repo` from `from`.
    pub fn mounted(&self, repo: &RepoName, digest: &Digest, size: u64, from: &RepoName) {
        let mut target = self.blob_target(repo, digest, size);
        target.from_repository = Some(from.to_string());
        self.publish(Action::Mount, target);
    }

    fn blob_target(&self, repo: &RepoName, digest: &Digest, size: u64) -> Target {
        Target {
            descriptor: Descriptor {
                media_type: BLOB_MEDIA_TYPE.to_owned(),
                size,
                digest: Some(digest.clone()),
                ..Descriptor::default()
            },
            length: size,
            repository: repo.to_string(),
            url: Some(format!("{}/v2/{repo}/blobs/{digest}", self.prefix)),
            ..Target::default()
        }
    }

    /// A manifest or a blob deleted: distribution names only the digest and repository.
    pub fn deleted(&self, repo: &RepoName, digest: &Digest) {
        self.publish(
            Action::Delete,
            Target {
                descriptor: Descriptor {
                    digest: Some(digest.clone()),
                    ..Descriptor::default()
                },
                repository: repo.to_string(),
                ..Target::default()
            },
        );
    }

    /// A tag deleted (by itself, or with the manifest it pointed at).
    pub fn tag_deleted(&self, repo: &RepoName, tag: &Tag) {
        self.publish(
            Action::Delete,
            Target {
                repository: repo.to_string(),
                tag: Some(tag.to_string()),
                ..Target::default()
            },
        );
    }
}

fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `request`: as distribution's `NewRequestRecord`.
fn request_info(
    headers: &HeaderMap,
    authority: Option<&str>,
    method: &http::Method,
    peer: Option<SocketAddr>,
) -> RequestInfo {
    RequestInfo {
        id: uuid::Uuid::new_v4().to_string(),
        addr: client_addr(headers, peer),
        host: header(headers, http::header::HOST)
            .or(authority)
            .unwrap_or_default()
            .to_owned(),
        method: method.to_string(),
        useragent: header(headers, http::header::USER_AGENT)
            .unwrap_or_default()
            .to_owned(),
    }
}

/// distribution's `RemoteAddr`: the first `X-Forwarded-For` entry, else `X-Real-Ip`, when an
/// IP address; else the peer's `ip:port`.
fn client_addr(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    let ip = |v: &&str| v.parse::<IpAddr>().is_ok();
    if let Some(first) = header(headers, "x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(ip)
    {
        return first.to_owned();
    }
    if let Some(real) = header(headers, "x-real-ip").map(str::trim).filter(ip) {
        return real.to_owned();
    }
    peer.map(|p| p.to_string()).unwrap_or_default()
}

/// The user of a Basic `Authorization` header, if any.
fn basic_user(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let v = header(headers, http::header::AUTHORIZATION)?;
    let (scheme, creds) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _) = text.split_once(':')?;
    (!user.is_empty()).then(|| user.to_owned())
}

/// A manifest's `references`, as distribution's `Manifest.References()`: an image's config then
/// its layers, or an index's manifests (without their platform). Empty for what does not parse.
pub fn references(bytes: &[u8]) -> Vec<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Raw {
        config: Option<RawDescriptor>,
        #[serde(default)]
        layers: Vec<RawDescriptor>,
        manifests: Option<Vec<RawDescriptor>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawDescriptor {
        #[serde(default)]
        media_type: String,
        #[serde(default)]
        size: u64,
        digest: Option<String>,
        #[serde(default)]
        urls: Vec<String>,
        #[serde(default)]
        annotations: std::collections::BTreeMap<String, String>,
    }
    let Ok(raw) = serde_json::from_slice::<Raw>(bytes) else {
        return Vec::new();
    };
    let list = match raw.manifests {
        Some(m) => m,
        None => raw.config.into_iter().chain(raw.layers).collect(),
    };
    list.into_iter()
        .map(|d| Descriptor {
            media_type: d.media_type,
            size: d.size,
            digest: d.digest.and_then(|d| Digest::parse(&d).ok()),
            urls: d.urls,
            annotations: d.annotations,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn request_record_as_distribution_builds_it() {
        let peer: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        let h = headers(&[("host", "reg.example:5000"), ("user-agent", "skopeo/1.13")]);
        let r = request_info(&h, None, &http::Method::HEAD, Some(peer));
        assert_eq!(r.addr, "10.0.0.9:40000");
        assert_eq!(r.host, "reg.example:5000");
        assert_eq!(r.method, "HEAD");
        assert_eq!(r.useragent, "skopeo/1.13");
        assert_eq!(r.id.len(), 36);
        // HTTP/2: the authority stands for Host; no User-Agent is an empty one.
        let r = request_info(
            &HeaderMap::new(),
            Some("h2.example"),
            &http::Method::GET,
            None,
        );
        assert_eq!((r.host.as_str(), r.useragent.as_str()), ("h2.example", ""));
    }

    #[test]
    fn client_address_prefers_forwarded_ips() {
        let peer = Some("[::1]:5".parse().unwrap());
        let addr = |pairs: &[(&'static str, &str)]| client_addr(&headers(pairs), peer);
        assert_eq!(addr(&[]), "[::1]:5");
        assert_eq!(
            addr(&[("x-forwarded-for", " 192.0.2.1 , 10.0.0.1")]),
            "192.0.2.1"
        );
        assert_eq!(addr(&[("x-forwarded-for", "not-an-ip")]), "[::1]:5");
        assert_eq!(addr(&[("x-real-ip", "2001:db8::1")]), "2001:db8::1");
        assert_eq!(
            addr(&[("x-forwarded-for", "nope"), ("x-real-ip", "192.0.2.7")]),
            "192.0.2.7"
        );
    }

    #[test]
    fn basic_auth_user_is_the_fallback_actor() {
        // "alice:secret"
        let h = headers(&[("authorization", "Basic YWxpY2U6c2VjcmV0")]);
        assert_eq!(basic_user(&h).as_deref(), Some("alice"));
        assert_eq!(
            basic_user(&headers(&[("authorization", "Bearer x.y.z")])),
            None
        );
        assert_eq!(basic_user(&headers(&[("authorization", "Basic !!")])), None);
        assert_eq!(basic_user(&HeaderMap::new()), None);
    }

    #[test]
    fn image_references_are_config_then_layers() {
        let c = Digest::of(b"c");
        let l = Digest::of(b"l");
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1, "digest": c.to_string()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 2, "digest": l.to_string(),
                        "urls": ["https://example.com/l"], "annotations": {"b": "2", "a": "1"}}]
        });
        let refs = references(m.to_string().as_bytes());
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].digest, Some(c));
        assert_eq!(
            refs[0].media_type,
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(refs[1].size, 2);
        assert_eq!(refs[1].urls, ["https://example.com/l"]);
        assert_eq!(
            refs[1].annotations.keys().collect::<Vec<_>>(),
            ["a", "b"],
            "sorted, as Go encodes maps"
        );
    }

    #[test]
    fn index_references_are_its_manifests() {
        let a = Digest::of(b"a");
        let m = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 5, "digest": a.to_string(),
                           "platform": {"architecture": "amd64", "os": "linux"}}]
        });
        let refs = references(m.to_string().as_bytes());
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].digest, Some(a));
        assert!(references(b"not json").is_empty());
    }
}
