//! What may be pulled through: per-upstream `allow`/`deny` repository globs
//! (`proxy.allow`/`deny` for the default upstream, `proxy.upstreams[].allow`/`deny`), and
//! `proxy.policy` (`mode: enforce|audit`, `contact`). Checked on the chosen scope before any
//! handler runs, so a refused repository costs no upstream request and its cached content is
//! not served either. In audit mode a refusal is logged and counted, and the request served.
//!
//! Globs match the repository name as the upstream knows it (on Docker Hub a one-component
//! name is `library/<name>`): `*` matches within one path component, `**` across components.
//! A `deny` match refuses; else a non-empty `allow` list must match.

use super::{Mirror, Scope, Upstream};
use crate::error::{ErrorCode, RegistryError};

/// The rules of one upstream.
#[derive(Debug, Clone, Default)]
pub struct RepoPolicy {
    /// The configuration key the rules come from (named in refusals), e.g. `proxy` or
    /// `proxy.upstreams[1]`.
    pub key: String,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// How refusals are applied.
#[derive(Debug, Clone, Default)]
pub struct PolicyOptions {
    /// Log and count refusals, but serve.
    pub audit: bool,
    /// How to ask for access, told in refusals.
    pub contact: Option<String>,
}

impl RepoPolicy {
    fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// The rule that refuses `repo`, described for a person; `None` when it may be pulled.
    fn refusal(&self, repo: &str) -> Option<String> {
        if let Some(g) = self.deny.iter().find(|g| glob_match(g, repo)) {
            return Some(format!("{}.deny rule {g:?}", self.key));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|g| glob_match(g, repo)) {
            return Some(format!(
                "{}.allow (it matches none of {:?})",
                self.key, self.allow
            ));
        }
        None
    }
}

impl Mirror {
    /// Whether any upstream has `allow`/`deny` rules.
    fn policy_active(&self) -> bool {
        self.default
            .iter()
            .chain(self.upstreams.iter())
            .any(|u| !u.policy.is_empty())
    }

    /// Refuses (`DENIED`) a proxied scope the rules of its upstream do not allow; in audit
    /// mode only logs and counts it.
    pub fn check_policy(&self, scope: &Scope) -> Result<(), RegistryError> {
        let Scope::Proxy(p) = scope else {
            return Ok(());
        };
        let name = policy_name(&p.upstream, &p.remote);
        let Some(rule) = p.upstream.policy.refusal(&name) else {
            return Ok(());
        };
        self.refused(
            &p.upstream.name,
            &format!("{name:?} from {}", p.upstream.name),
            &rule,
        )
    }

    /// The answer for a `?ns=` registry this mirror does not mirror: NAME_UNKNOWN (so
    /// containerd asks the registry itself) unless rules are set, then DENIED (in audit mode:
    /// logged and counted, still NAME_UNKNOWN).
    pub fn unknown_registry(&self, ns: &str) -> RegistryError {
        let unknown = RegistryError::new(
            ErrorCode::NameUnknown,
            format!("this mirror does not mirror registry {ns:?}"),
        );
        if !self.policy_active() {
            return unknown;
        }
        let what = format!("registry {ns:?}");
        let rule = "the allow/deny rules (a registry with no proxy.upstreams entry is refused once any rule is set)";
        match self.refused("unknown", &what, rule) {
            Ok(()) => unknown,
            Err(e) => e,
        }
    }

    fn refused(&self, upstream: &str, what: &str, rule: &str) -> Result<(), RegistryError> {
        let audit = self.options.policy.audit;
        let mode = if audit { "audit" } else { "enforce" };
        self.metrics
            .proxy_policy_refusals
            .with_label_values(&[upstream, mode])
            .inc();
        if audit {
            tracing::warn!(
                upstream,
                "policy audit: would refuse {what}: refused by {rule}"
            );
            return Ok(());
        }
        tracing::warn!(upstream, "policy: refused {what}: refused by {rule}");
        let ask = match &self.options.policy.contact {
            Some(c) => format!("to ask for access: {c}"),
            None => "to ask for access, contact the mirror's administrators".to_owned(),
        };
        Err(RegistryError::new(
            ErrorCode::Denied,
            format!("pulling {what} through this mirror is refused by {rule}; {ask}"),
        ))
    }
}

/// The name rules match: the upstream's, with Docker Hub's implicit `library/`.
fn policy_name(up: &Upstream, remote: &str) -> String {
    if up.name == "docker.io" && !remote.contains('/') {
        format!("library/{remote}")
    } else {
        remote.to_owned()
    }
}

pub use crate::oci::glob::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_then_allow() {
        let p = RepoPolicy {
            key: "proxy".into(),
            allow: vec!["library/*".into(), "bitnami/*".into()],
            deny: vec!["library/bad".into()],
        };
        assert!(p.refusal("library/alpine").is_none());
        assert!(p.refusal("bitnami/redis").is_none());
        assert!(p.refusal("library/bad").unwrap().contains("proxy.deny"));
        assert!(p.refusal("evil/x").unwrap().contains("proxy.allow"));
        assert!(RepoPolicy::default().refusal("any/thing").is_none());
    }
}
