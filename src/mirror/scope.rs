//! Which repositories are proxied, and through which upstream.

use super::{Mirror, Upstream};
use crate::oci::RepoName;
use std::sync::Arc;

/// A proxied repository.
#[derive(Clone)]
pub struct ProxyRepo {
    pub upstream: Arc<Upstream>,
    /// The name the upstream knows.
    pub remote: String,
    /// The name the cache stores it under (unique across upstreams).
    pub local: RepoName,
    /// The name and `?ns=` the client asked with: what a peer replica is asked with, so that
    /// it picks this same upstream.
    pub asked: (RepoName, Option<String>),
    /// The request came from a peer replica: it is answered from the cache or the upstream,
    /// never forwarded to another replica.
    pub forwarded: bool,
}

/// How a request for a repository is served.
#[derive(Clone)]
pub enum Scope {
    /// Only what was pushed (or cached) here.
    Local(RepoName),
    Proxy(ProxyRepo),
}

impl Scope {
    /// The repository name in this registry's own index.
    pub fn local(&self) -> &RepoName {
        match self {
            Scope::Local(r) => r,
            Scope::Proxy(p) => &p.local,
        }
    }
}

impl Mirror {
    /// Chooses the scope of `name`, given containerd's `ns` parameter if any.
    ///
    /// No `ns`, or `ns=docker.io` (what containerd sends for a `certs.d/docker.io` mirror), is
    /// served by the upstream named `docker.io` when one is configured, else by the default
    /// upstream, whatever its host. Any other `ns` names a configured upstream (default
    /// included) by name or alias. `None` when `ns` names a registry this mirror does not
    /// mirror: nothing here is that registry's content, and a not-found answer sends containerd
    /// to the registry itself.
    pub fn scope(&self, name: &RepoName, ns: Option<&str>) -> Option<Scope> {
        let n = name.as_str();
        if self
            .options
            .local_prefixes
            .iter()
            .any(|p| n.starts_with(p.as_str()))
        {
            return Some(Scope::Local(name.clone()));
        }
        let asked = (name.clone(), ns.map(str::to_ascii_lowercase));
        for up in &self.upstreams {
            if let Some(prefix) = &up.prefix
                && let Some(rest) = n.strip_prefix(prefix.as_str())
                && !rest.is_empty()
            {
                return Some(Scope::Proxy(ProxyRepo {
                    upstream: up.clone(),
                    remote: rest.to_owned(),
                    local: name.clone(),
                    asked,
                    forwarded: false,
                }));
            }
        }
        let ns = asked.1.clone();
        let hub = ns.as_deref().is_none_or(|ns| ns == DOCKER_HUB);
        if hub {
            if let Some(up) = self.upstreams.iter().find(|u| u.name == DOCKER_HUB) {
                return Some(named(up, &asked));
            }
            match (&self.default, &ns) {
                (Some(d), _) => return Some(proxied(d, &asked, name.clone())),
                (None, None) => return Some(Scope::Local(name.clone())),
                // `ns=docker.io` with nothing mirroring Docker Hub: not ours.
                (None, Some(_)) => return None,
            }
        }
        let ns = ns.unwrap_or_default();
        let selects = |u: &Upstream| u.name == ns || u.aliases.contains(&ns);
        if let Some(d) = self.default.as_ref().filter(|d| selects(d)) {
            return Some(proxied(d, &asked, name.clone()));
        }
        self.upstreams
            .iter()
            .find(|u| selects(u))
            .map(|up| named(up, &asked))
    }
}

/// The `ns` value containerd sends for Docker Hub.
const DOCKER_HUB: &str = "docker.io";

/// `name` on a non-default upstream, cached under "<registry>/<name>" so that e.g. quay.io's
/// foo/bar and Docker Hub's foo/bar never share tags.
fn named(up: &Arc<Upstream>, asked: &(RepoName, Option<String>)) -> Scope {
    let name = &asked.0;
    let local =
        RepoName::parse(&format!("{}/{}", up.name, name.as_str())).unwrap_or_else(|_| name.clone());
    proxied(up, asked, local)
}

fn proxied(up: &Arc<Upstream>, asked: &(RepoName, Option<String>), local: RepoName) -> Scope {
    Scope::Proxy(ProxyRepo {
        upstream: up.clone(),
        remote: asked.0.as_str().to_owned(),
        local,
        asked: asked.clone(),
        forwarded: false,
    })
}
