//! Access control for the API (issue 7): who is asking (`Authorization: Basic` checked against
//! an htpasswd file, or `Authorization: Bearer` JWTs from a token server, as distribution's
//! `auth.htpasswd` and `auth.token`, or stevedore's own token server and users, `auth.builtin`
//! in [`builtin`]), and whether they may do what the request needs
//! ([`Access`]: pull, push or delete on a repository, or the catalog), under stevedore's
//! [`Policy`] (anonymous pull, per-repository push/delete rules).
//!
//! It sees request headers only (an `http::HeaderMap`), never a body or a hyper type; the HTTP
//! layer computes the accesses an endpoint needs and calls [`Authenticator::authorize`] before
//! any handler runs. Refusals are [`AuthError`]s, which `error.rs` maps once into
//! `RegistryError` (401 `UNAUTHORIZED` with a `WWW-Authenticate` challenge, 403 `DENIED`).

pub mod builtin;
mod htpasswd;
mod password;
mod policy;
mod token;

pub use builtin::Builtin;
pub use htpasswd::Htpasswd;
pub use policy::{Policy, Rule};
pub use token::TokenVerifier;

use crate::config::AuthConfig;
use crate::oci::RepoName;
use http::HeaderMap;
use std::fmt;

/// One thing a request may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// The name used in token scopes and `access` claims.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// A set of [`Action`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

impl Actions {
    pub const PULL: Actions = Actions {
        pull: true,
        push: false,
        delete: false,
    };
    pub const PUSH: Actions = Actions {
        pull: false,
        push: true,
        delete: false,
    };
    pub const PULL_PUSH: Actions = Actions {
        pull: true,
        push: true,
        delete: false,
    };
    pub const DELETE: Actions = Actions {
        pull: false,
        push: false,
        delete: true,
    };
    pub const ALL: Actions = Actions {
        pull: true,
        push: true,
        delete: true,
    };

    pub fn contains(self, a: Action) -> bool {
        match a {
            Action::Pull => self.pull,
            Action::Push => self.push,
            Action::Delete => self.delete,
        }
    }

    pub fn insert(&mut self, a: Action) {
        match a {
            Action::Pull => self.pull = true,
            Action::Push => self.push = true,
            Action::Delete => self.delete = true,
        }
    }

    /// Whether every action of `other` is in `self`.
    pub fn covers(self, other: Actions) -> bool {
        other.iter().all(|a| self.contains(a))
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

/// What a request needs: actions on a repository, or (`repo: None`) the catalog of every
/// repository (`registry:catalog:*` in token scopes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub repo: Option<RepoName>,
    pub actions: Actions,
}

impl Access {
    pub fn repository(repo: RepoName, actions: Actions) -> Access {
        Access {
            repo: Some(repo),
            actions,
        }
    }

    pub fn catalog() -> Access {
        Access {
            repo: None,
            actions: Actions::default(),
        }
    }

    /// The token scope naming this access: `repository:foo/bar:pull,push` or
    /// `registry:catalog:*`.
    pub fn scope(&self) -> String {
        match &self.repo {
            None => "registry:catalog:*".to_owned(),
            Some(r) => {
                let actions: Vec<&str> = self.actions.iter().map(Action::as_str).collect();
                format!("repository:{r}:{}", actions.join(","))
            }
        }
    }

    /// distribution's error detail entries (`{"Type","Name","Action"}`), one per action.
    fn detail(&self) -> Vec<serde_json::Value> {
        match &self.repo {
            None => vec![serde_json::json!({"Type": "registry", "Name": "catalog", "Action": "*"})],
            Some(r) => self
                .actions
                .iter()
                .map(|a| serde_json::json!({"Type": "repository", "Name": r.as_str(), "Action": a.as_str()}))
                .collect(),
        }
    }
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials (and none needed for what was asked).
    Anonymous,
    /// An htpasswd user, or a token's subject.
    User(String),
}

impl Identity {
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(u),
        }
    }
}

/// The `WWW-Authenticate` challenge of a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: String,
    },
    Bearer {
        realm: String,
        service: String,
        /// Space-separated scopes the request needs (empty for `GET /v2/`).
        scope: String,
        /// `invalid_token` or `insufficient_scope` (RFC 6750), when a token was presented.
        error: Option<&'static str>,
    },
}

/// Quotes a challenge parameter value (RFC 7235 quoted-string).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Challenge::Basic { realm } => write!(f, "Basic realm={}", quoted(realm)),
            Challenge::Bearer {
                realm,
                service,
                scope,
                error,
            } => {
                write!(
                    f,
                    "Bearer realm={},service={}",
                    quoted(realm),
                    quoted(service)
                )?;
                if !scope.is_empty() {
                    write!(f, ",scope={}", quoted(scope))?;
                }
                if let Some(e) = error {
                    write!(f, ",error={}", quoted(e))?;
                }
                Ok(())
            }
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No, wrong, expired or insufficient credentials: 401 with `challenge`.
    #[error("{reason}")]
    Unauthorized {
        reason: String,
        challenge: Challenge,
        access: Vec<Access>,
    },
    /// Authenticated, but the policy forbids it: 403.
    #[error("{reason}")]
    Denied { reason: String, access: Vec<Access> },
    /// The users and roles could not be read (`auth.builtin`): 500.
    #[error("{0}")]
    Unavailable(String),
}

impl AuthError {
    /// Puts `origin()` (scheme and host) in front of a challenge's realm that is a path.
    pub fn with_origin(mut self, origin: impl FnOnce() -> String) -> AuthError {
        if let AuthError::Unauthorized {
            challenge: Challenge::Bearer { realm, .. },
            ..
        } = &mut self
            && realm.starts_with('/')
        {
            *realm = format!("{}{realm}", origin());
        }
        self
    }

    /// distribution's `detail` of an UNAUTHORIZED or DENIED error: the accesses asked for.
    pub fn detail(&self) -> Option<serde_json::Value> {
        let access = match self {
            AuthError::Unauthorized { access, .. } | AuthError::Denied { access, .. } => access,
            AuthError::Unavailable(_) => return None,
        };
        (!access.is_empty())
            .then(|| serde_json::Value::Array(access.iter().flat_map(Access::detail).collect()))
    }
}

/// Why auth could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.htpasswd.path {path}: {message}")]
    Htpasswd { path: String, message: String },
    #[error("auth.token.rootcertbundle {path}: {message}")]
    CertBundle { path: String, message: String },
    #[error("auth.builtin: {0}")]
    Builtin(String),
}

/// How requests are authenticated.
enum Scheme {
    Htpasswd(Htpasswd),
    Token(TokenVerifier),
    Builtin(Box<Builtin>),
}

/// Authenticates requests and decides whether they may do what they ask.
pub struct Authenticator {
    scheme: Scheme,
    policy: Policy,
}

/// What the credentials of a request establish, before the decision.
enum Credentials {
    Anonymous,
    /// An htpasswd user: may do anything the policy allows.
    User(String),
    /// A valid token: may do what its `access` claim grants and the policy allows.
    Token(token::Grant),
    /// No user (no credentials, or `auth.builtin`'s anonymous token): may pull what the grant
    /// allows (`auth.builtin`'s `anonymous` role) or the policy lets anonymous users pull.
    Guest(token::Grant),
}

impl Authenticator {
    /// The authenticator `config` asks for, or `None` when it configures no authentication
    /// (everyone may do everything, as in distribution).
    /// `auth.builtin` keeps its users in `index` and its signing key under `root`.
    pub fn from_config(
        config: &AuthConfig,
        root: &std::path::Path,
        index: &std::sync::Arc<crate::index::Index>,
    ) -> Result<Option<Authenticator>, AuthSetupError> {
        let policy = Policy::from_config(&config.policy);
        let scheme = if let Some(b) = &config.builtin {
            Scheme::Builtin(Box::new(Builtin::open(b, root, index.clone())?))
        } else if let Some(h) = &config.htpasswd {
            Scheme::Htpasswd(Htpasswd::open(&h.realm, &h.path)?)
        } else if let Some(t) = &config.token {
            if t.autoredirect {
                tracing::warn!(
                    "auth.token.autoredirect is not implemented: the challenge names auth.token.realm as configured"
                );
            }
            Scheme::Token(TokenVerifier::open(t)?)
        } else {
            return Ok(None);
        };
        Ok(Some(Authenticator { scheme, policy }))
    }

    /// Checks the request's credentials and whether they allow every access of `required`
    /// (empty: only authentication, as for `GET /v2/`).
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        required: &[Access],
    ) -> Result<Identity, AuthError> {
        let authorization = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .find(|v| !v.is_empty());
        let credentials = match &self.scheme {
            Scheme::Htpasswd(h) => match authorization.and_then(|a| scheme_value(a, "basic")) {
                None => Credentials::Anonymous,
                Some(value) => match h.authenticate(value).await {
                    Ok(user) => Credentials::User(user),
                    Err(reason) => return Err(self.unauthorized(reason, required, None)),
                },
            },
            Scheme::Token(t) => match authorization.and_then(|a| scheme_value(a, "bearer")) {
                None => Credentials::Anonymous,
                Some(token) => self.bearer(t, token, required).map_err(|e| *e)?,
            },
            Scheme::Builtin(b) => match authorization {
                Some(a) if scheme_value(a, "bearer").is_some() => {
                    let token = scheme_value(a, "bearer").unwrap_or_default();
                    match self.bearer(b.verifier(), token, required).map_err(|e| *e)? {
                        Credentials::Token(g) if g.subject.is_none() => Credentials::Guest(g),
                        c => c,
                    }
                }
                // Basic credentials on the API: what a token for exactly these accesses
                // would grant (curl -u, and clients that send them unasked).
                Some(a) if scheme_value(a, "basic").is_some() => {
                    let encoded = scheme_value(a, "basic").unwrap_or_default();
                    let (user, password) = decode_basic(encoded).ok_or_else(|| {
                        self.unauthorized("malformed basic credentials".into(), required, None)
                    })?;
                    if let Err(reason) = b.check_password(&user, &password).await {
                        return Err(self.unauthorized(reason, required, None));
                    }
                    Credentials::Token(
                        b.grant_for(Some(&user), required)
                            .map_err(AuthError::Unavailable)?,
                    )
                }
                _ => Credentials::Guest(
                    b.grant_for(None, required)
                        .map_err(AuthError::Unavailable)?,
                ),
            },
        };
        match decide(&self.policy, &credentials, required) {
            Ok(()) => Ok(match credentials {
                Credentials::Anonymous => Identity::Anonymous,
                Credentials::User(u) => Identity::User(u),
                Credentials::Token(g) => {
                    g.subject.map(Identity::User).unwrap_or(Identity::Anonymous)
                }
                Credentials::Guest(_) => Identity::Anonymous,
            }),
            Err(Refusal::NeedCredentials) => {
                Err(self.unauthorized("authentication required".to_owned(), required, None))
            }
            Err(Refusal::InsufficientScope) => Err(self.unauthorized(
                "the token does not grant the access this request needs".to_owned(),
                required,
                Some("insufficient_scope"),
            )),
            Err(Refusal::Denied) => Err(AuthError::Denied {
                reason: "the access policy does not allow this".to_owned(),
                access: required.to_vec(),
            }),
        }
    }

    /// The credentials of a bearer token `verifier` accepts.
    fn bearer(
        &self,
        verifier: &TokenVerifier,
        token: &str,
        required: &[Access],
    ) -> Result<Credentials, Box<AuthError>> {
        verifier
            .verify(token)
            .map(Credentials::Token)
            .map_err(|reason| {
                Box::new(self.unauthorized(
                    format!("invalid token: {reason}"),
                    required,
                    Some("invalid_token"),
                ))
            })
    }

    /// The built-in token server, when `auth.builtin` is configured.
    pub fn builtin(&self) -> Option<&Builtin> {
        match &self.scheme {
            Scheme::Builtin(b) => Some(b),
            _ => None,
        }
    }

    /// Answers a request to `auth.builtin`'s token endpoint: its `Authorization` header
    /// (Basic, or none for an anonymous token), `service` and `scope` parameters.
    pub async fn issue_token(
        &self,
        authorization: Option<&str>,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<builtin::IssuedToken, TokenEndpointError> {
        let Scheme::Builtin(b) = &self.scheme else {
            return Err(TokenEndpointError::NotHere);
        };
        let refused = |reason: String| {
            TokenEndpointError::Auth(AuthError::Unauthorized {
                reason,
                challenge: Challenge::Basic {
                    realm: b.service().to_owned(),
                },
                access: Vec::new(),
            })
        };
        let user = match authorization.map(str::trim).filter(|a| !a.is_empty()) {
            None => None,
            Some(a) => {
                let (user, password) = scheme_value(a, "basic")
                    .and_then(decode_basic)
                    .ok_or_else(|| refused("the token endpoint takes Basic credentials".into()))?;
                b.check_password(&user, &password).await.map_err(refused)?;
                Some(user)
            }
        };
        b.issue(user.as_deref(), service, scopes)
            .map_err(TokenEndpointError::Request)
    }

    /// Whether the console can log users in with a name and password: htpasswd (and builtin
    /// users) can; an external token server (`auth.token`) cannot, since stevedore only
    /// verifies its tokens and never sees passwords.
    pub fn supports_login(&self) -> bool {
        match &self.scheme {
            Scheme::Htpasswd(_) | Scheme::Builtin(_) => true,
            Scheme::Token(_) => false,
        }
    }

    /// The console's login: checks `user`'s `password` against the configured scheme (the one
    /// place both the console and any future password check go through). A wrong name or
    /// password, and a scheme without passwords, are `AuthError::Unauthorized`.
    pub async fn check_password(&self, user: &str, password: &str) -> Result<Identity, AuthError> {
        use base64::Engine as _;
        let refused = |reason: String| AuthError::Unauthorized {
            reason,
            challenge: Challenge::Basic {
                realm: "stevedore console".to_owned(),
            },
            access: Vec::new(),
        };
        match &self.scheme {
            Scheme::Htpasswd(h) => {
                if user.contains(':') {
                    return Err(refused("a user name cannot contain ':'".to_owned()));
                }
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                h.authenticate(&encoded)
                    .await
                    .map(Identity::User)
                    .map_err(refused)
            }
            Scheme::Builtin(b) => b
                .check_password(user, password)
                .await
                .map(|()| Identity::User(user.to_owned()))
                .map_err(refused),
            Scheme::Token(_) => Err(refused(
                "auth.token: log in at the token server; the console cannot check passwords"
                    .to_owned(),
            )),
        }
    }

    /// Whether `who` may do `action` on `repo`, as the API decides for the same user (the
    /// console's per-repository checks: show a delete button, accept a delete).
    pub fn may(&self, who: &Identity, repo: &RepoName, action: Action) -> bool {
        let user = who.name();
        if user.is_none() && action != Action::Pull {
            return false;
        }
        if let Scheme::Builtin(b) = &self.scheme {
            // The user's roles, then the policy (as for a token granting exactly this).
            let granted = b
                .grants(user)
                .is_ok_and(|g| g.on(repo.as_str()).contains(action));
            return match user {
                None => {
                    self.policy.allows(None, repo, action)
                        || (granted && !self.policy.restricts(repo, action))
                }
                Some(_) => granted && self.policy.allows(user, repo, action),
            };
        }
        self.policy.allows(user, repo, action)
    }

    /// Whether anonymous users may pull at all (the console then shows read-only pages
    /// without a login).
    pub fn anonymous_browse(&self) -> bool {
        if let Scheme::Builtin(b) = &self.scheme
            && b.grants(None).is_ok_and(|g| g.any())
        {
            return true;
        }
        self.policy.anonymous_pull
    }

    /// Whether `who` is an administrator: may run registry-wide actions (GC, evict, warm;
    /// users and roles). For htpasswd users: no `auth.policy` rule restricts their `delete`
    /// anywhere (every rule's `delete` list is unset, or names them or `"*"`).
    pub fn is_admin(&self, who: &Identity) -> bool {
        let Some(user) = who.name() else {
            return false;
        };
        if let Scheme::Builtin(b) = &self.scheme {
            return b.is_admin(user);
        }
        self.policy.rules.iter().all(|r| {
            r.delete
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == "*" || n == user))
        })
    }

    fn unauthorized(
        &self,
        reason: String,
        required: &[Access],
        error: Option<&'static str>,
    ) -> AuthError {
        let (realm, service) = match &self.scheme {
            Scheme::Htpasswd(h) => {
                return AuthError::Unauthorized {
                    reason,
                    challenge: Challenge::Basic {
                        realm: h.realm().to_owned(),
                    },
                    access: required.to_vec(),
                };
            }
            Scheme::Token(t) => (t.realm(), t.service()),
            Scheme::Builtin(b) => (b.realm(), b.service()),
        };
        let challenge = Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.to_owned(),
            scope: required
                .iter()
                .map(Access::scope)
                .collect::<Vec<_>>()
                .join(" "),
            error,
        };
        AuthError::Unauthorized {
            reason,
            challenge,
            access: required.to_vec(),
        }
    }
}

/// Why the token endpoint refused a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenEndpointError {
    /// `auth.builtin` is not configured: there is no token endpoint.
    #[error("this registry issues no tokens (auth.builtin is not configured)")]
    NotHere,
    #[error("{0}")]
    Auth(AuthError),
    #[error("{0}")]
    Request(builtin::TokenRequestError),
}

/// The user and password of Basic credentials (base64 `user:password`).
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// The value of an `Authorization` header with the (case-insensitive) `scheme`.
fn scheme_value<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Anonymous, and the policy lets anonymous users do less than this: 401.
    NeedCredentials,
    /// The token does not grant it: 401 `insufficient_scope`.
    InsufficientScope,
    /// The policy forbids this user: 403.
    Denied,
}

/// The decision, given who is asking: pure, table-tested.
fn decide(policy: &Policy, who: &Credentials, required: &[Access]) -> Result<(), Refusal> {
    let user = match who {
        Credentials::Anonymous | Credentials::Guest(_) => {
            // Anonymous users get at most pull, and never `GET /v2/` (clients probe it to
            // learn how to log in) or the catalog.
            let granted = |a: &Access| matches!(who, Credentials::Guest(g) if g.allows(a));
            let ok = !required.is_empty()
                && required.iter().all(|a| match &a.repo {
                    Some(r) => {
                        Actions::PULL.covers(a.actions)
                            && (a.actions.iter().all(|x| policy.allows(None, r, x))
                                || (granted(a) && !policy.restricts(r, Action::Pull)))
                    }
                    None => false,
                });
            return if ok {
                Ok(())
            } else {
                Err(Refusal::NeedCredentials)
            };
        }
        Credentials::User(u) => Some(u.as_str()),
        Credentials::Token(grant) => {
            if !required.iter().all(|a| grant.allows(a)) {
                return Err(Refusal::InsufficientScope);
            }
            // The claims decide, whoever the subject is: a token with an empty `sub` (Docker
            // Hub's, Harbor's public projects', docker_auth's anonymous rules) is an
            // authenticated client nobody named, which rules listing users leave out and `"*"`
            // takes in; `anonymouspull` is not asked.
            Some(grant.subject.as_deref().unwrap_or(""))
        }
    };
    let ok = required.iter().all(|a| match &a.repo {
        None => true,
        Some(r) => a.actions.iter().all(|x| policy.allows(user, r, x)),
    });
    if ok { Ok(()) } else { Err(Refusal::Denied) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthPolicyConfig, AuthRuleConfig};

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn policy(anonymous_pull: bool) -> Policy {
        Policy::from_config(&AuthPolicyConfig {
            anonymouspull: anonymous_pull,
            rules: vec![AuthRuleConfig {
                repository: "team/*".into(),
                pull: None,
                push: Some(vec!["alice".into()]),
                delete: Some(vec![]),
            }],
        })
    }

    fn grant(access: &[(&str, &[&str])], sub: &str) -> token::Grant {
        token::Grant::from_claims(
            Some(sub.into()),
            access
                .iter()
                .map(|(n, a)| token::ResourceActions {
                    kind: if *n == "catalog" {
                        "registry".into()
                    } else {
                        "repository".into()
                    },
                    name: (*n).into(),
                    actions: a.iter().map(|s| (*s).to_owned()).collect(),
                })
                .collect(),
        )
    }

    #[test]
    fn scopes_are_distributions() {
        let a = Access::repository(repo("foo/bar"), Actions::PULL_PUSH);
        assert_eq!(a.scope(), "repository:foo/bar:pull,push");
        assert_eq!(Access::catalog().scope(), "registry:catalog:*");
        let c = Challenge::Bearer {
            realm: "https://auth/token".into(),
            service: "reg".into(),
            scope: a.scope(),
            error: Some("insufficient_scope"),
        };
        assert_eq!(
            c.to_string(),
            r#"Bearer realm="https://auth/token",service="reg",scope="repository:foo/bar:pull,push",error="insufficient_scope""#
        );
        assert_eq!(
            Challenge::Basic {
                realm: "My \"R\"".into()
            }
            .to_string(),
            r#"Basic realm="My \"R\"""#
        );
    }

    #[test]
    fn decisions() {
        use Refusal::*;
        let pull = |r: &str| Access::repository(repo(r), Actions::PULL);
        let push = |r: &str| Access::repository(repo(r), Actions::PULL_PUSH);
        let del = |r: &str| Access::repository(repo(r), Actions::DELETE);
        let anon = Credentials::Anonymous;
        let alice = Credentials::User("alice".into());
        let bob = Credentials::User("bob".into());
        let t_pull = Credentials::Token(grant(&[("a", &["pull"])], "bob"));
        let t_all = Credentials::Token(grant(&[("a", &["*"]), ("team/x", &["*"])], "bob"));
        let t_cat = Credentials::Token(grant(&[("catalog", &["*"])], "bob"));
        let t_nobody = Credentials::Token(grant(
            &[("a", &["pull", "push"]), ("team/x", &["pull", "push"])],
            "",
        ));
        let closed = policy(false);
        let open = policy(true);
        type Case<'a> = (
            &'a Policy,
            &'a Credentials,
            Vec<Access>,
            Result<(), Refusal>,
        );
        let cases: Vec<Case<'_>> = vec![
            // GET /v2/: anyone authenticated, never anonymous.
            (&open, &anon, vec![], Err(NeedCredentials)),
            (&closed, &bob, vec![], Ok(())),
            (&closed, &t_pull, vec![], Ok(())),
            // Anonymous pull only when the policy says so, and never push or the catalog.
            (&closed, &anon, vec![pull("a")], Err(NeedCredentials)),
            (&open, &anon, vec![pull("a")], Ok(())),
            (&open, &anon, vec![push("a")], Err(NeedCredentials)),
            (&open, &anon, vec![Access::catalog()], Err(NeedCredentials)),
            // htpasswd users: anything but what the rules restrict.
            (&closed, &bob, vec![push("a"), pull("b")], Ok(())),
            (&closed, &bob, vec![Access::catalog()], Ok(())),
            (&closed, &bob, vec![pull("team/x")], Ok(())),
            (&closed, &bob, vec![push("team/x")], Err(Denied)),
            (&closed, &alice, vec![push("team/x")], Ok(())),
            (&closed, &alice, vec![del("team/x")], Err(Denied)),
            // A mount needs push on the target and pull on the source.
            (&closed, &bob, vec![push("a"), pull("team/x")], Ok(())),
            // Tokens: the grant first (401 insufficient_scope), then the rules (403).
            (&closed, &t_pull, vec![pull("a")], Ok(())),
            (&closed, &t_pull, vec![push("a")], Err(InsufficientScope)),
            (&closed, &t_pull, vec![pull("b")], Err(InsufficientScope)),
            (
                &closed,
                &t_pull,
                vec![Access::catalog()],
                Err(InsufficientScope),
            ),
            (&closed, &t_cat, vec![Access::catalog()], Ok(())),
            // No subject: the claims decide, not anonymouspull; named rules still hold.
            (&closed, &t_nobody, vec![pull("a")], Ok(())),
            (&closed, &t_nobody, vec![pull("team/x")], Ok(())),
            (&closed, &t_nobody, vec![push("a")], Ok(())),
            (&closed, &t_nobody, vec![push("team/x")], Err(Denied)),
            (&closed, &t_nobody, vec![pull("b")], Err(InsufficientScope)),
            (&closed, &t_all, vec![del("a")], Ok(())),
            (&closed, &t_all, vec![push("team/x")], Err(Denied)),
            (
                &closed,
                &t_all,
                vec![push("a"), pull("b")],
                Err(InsufficientScope),
            ),
        ];
        for (i, (p, who, required, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(p, who, &required), want, "case {i}: {required:?}");
        }
    }

    #[test]
    fn authorization_schemes() {
        assert_eq!(scheme_value("Basic YWI6Yw==", "basic"), Some("YWI6Yw=="));
        assert_eq!(scheme_value("bearer  t.o.k", "bearer"), Some("t.o.k"));
        assert_eq!(scheme_value("Bearer t", "basic"), None);
        assert_eq!(scheme_value("Basic", "basic"), None);
    }
}
