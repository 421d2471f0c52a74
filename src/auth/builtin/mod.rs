//! `auth.builtin`: stevedore as its own token server (issue 15). Users (bcrypt passwords),
//! roles and rules are kept in the index ([`roles`] says what they grant, [`manage`] changes
//! them); clients log in at the token endpoint with distribution's token protocol and get a
//! JWT signed (ES256) by a key generated once under the data root ([`key`]); the API verifies
//! those tokens with [`TokenVerifier`], the code that verifies `auth.token`'s.
//!
//! A token grants what was asked for, intersected with what the user's roles grant (requests
//! without credentials: the `anonymous` role, pull only). At the first start, when no user
//! holds the `admin` role, the first admin is created with the configured password, or a
//! generated one printed to the log once.
//!
//! It sees no HTTP type: the HTTP layer parses the token request and hands over its
//! credentials and scopes.

mod key;
pub mod manage;
pub mod roles;

use super::password::{self, PasswordCheck};
use super::token::{Grant, ResourceActions};
use super::{Access, AuthSetupError, TokenVerifier};
use crate::config::BuiltinAuth;
use crate::index::{Index, UserRecord};
use crate::oci::RepoName;
use roles::Grants;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The path of the token endpoint on the main listener.
pub const TOKEN_PATH: &str = "/auth/token";

/// bcrypt cost of the passwords stevedore hashes (Go's `bcrypt.DefaultCost`).
pub const BCRYPT_COST: u32 = 10;

/// Most scopes one token request may ask for.
const MAX_SCOPES: usize = 32;

/// A token, as the token endpoint answers it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<ResourceActions>,
}

/// The built-in token server and its user store.
pub struct Builtin {
    realm: String,
    service: String,
    issuer: String,
    expiration: Duration,
    index: Arc<Index>,
    signing: jsonwebtoken::EncodingKey,
    kid: String,
    verifier: TokenVerifier,
    check: PasswordCheck,
    /// Serializes changes to users and roles (checks such as "the last admin" span reads).
    writes: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin")
            .field("realm", &self.realm)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn setup(message: impl std::fmt::Display) -> AuthSetupError {
    AuthSetupError::Builtin(message.to_string())
}

impl Builtin {
    /// Loads (or creates, once) the signing key under `root` and creates the first admin if
    /// no user holds the `admin` role.
    pub fn open(
        c: &BuiltinAuth,
        root: &Path,
        index: Arc<Index>,
    ) -> Result<Builtin, AuthSetupError> {
        let key = key::SigningKey::load_or_create(&root.join(key::FILE)).map_err(setup)?;
        let realm = if c.realm.is_empty() {
            TOKEN_PATH.to_owned()
        } else {
            c.realm.clone()
        };
        let b = Builtin {
            verifier: TokenVerifier::for_p256(&realm, &c.service, &c.issuer, &key.public),
            signing: jsonwebtoken::EncodingKey::from_ec_der(&key.pkcs8),
            kid: key.kid(),
            realm,
            service: c.service.clone(),
            issuer: c.issuer.clone(),
            expiration: c.expiration,
            index,
            check: PasswordCheck::new(),
            writes: std::sync::Mutex::new(()),
        };
        manage::first_admin(&b.index, &c.firstadmin).map_err(setup)?;
        Ok(b)
    }

    /// The realm of challenges: `auth.builtin.realm`, or [`TOKEN_PATH`] (relative: the HTTP
    /// layer puts the request's origin in front).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub(crate) fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// Whether `password` is `user`'s. An unknown user costs a bcrypt all the same.
    pub async fn check_password(&self, user: &str, password: &str) -> Result<(), String> {
        let refused = || format!("wrong user name or password for {user:?}");
        let hash = match self.index.user(user) {
            Ok(Some(u)) => Ok(Arc::from(u.password.as_str())),
            Ok(None) => Err(password::dummy_hash(BCRYPT_COST)),
            Err(e) => return Err(format!("cannot read the users: {e}")),
        };
        if self.check.check(user, password, hash).await {
            Ok(())
        } else {
            Err(refused())
        }
    }

    /// What `user`'s roles grant (`None`: a request without credentials, the `anonymous`
    /// role). A user who no longer exists is granted nothing.
    pub fn grants(&self, user: Option<&str>) -> Result<Grants, String> {
        let err = |e: crate::index::IndexError| format!("cannot read the users and roles: {e}");
        let (names, anonymous) = match user {
            None => (vec![roles::ANONYMOUS.to_owned()], true),
            Some(u) => match self.index.user(u).map_err(err)? {
                Some(UserRecord { roles, .. }) => (roles, false),
                None => return Ok(Grants::default()),
            },
        };
        let records = names
            .iter()
            .map(|n| Ok((n.as_str(), self.index.role(n).map_err(err)?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Grants::of(records, anonymous))
    }

    /// The grant of a request authenticated as `user` (or anonymous) for `required`, as if
    /// it had fetched a token for exactly those accesses.
    pub(crate) fn grant_for(
        &self,
        user: Option<&str>,
        required: &[Access],
    ) -> Result<Grant, String> {
        let grants = self.grants(user)?;
        let access = required
            .iter()
            .map(|a| {
                resource(
                    &grants,
                    a.repo.as_ref().map(RepoName::as_str),
                    a.actions.iter().map(|x| x.as_str()),
                )
            })
            .collect();
        Ok(Grant::from_claims(user.map(str::to_owned), access))
    }

    /// Issues a token to `user` (`None`: anonymous) for the `scopes` asked for (distribution's
    /// `type:name:actions` strings; several may come space-separated in one), granting what
    /// the user's roles allow of them. `service` must be this registry's, when given.
    pub fn issue(
        &self,
        user: Option<&str>,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<IssuedToken, TokenRequestError> {
        if let Some(s) = service.filter(|s| *s != self.service) {
            return Err(TokenRequestError::BadRequest(format!(
                "this token server serves {:?}, not {s:?}",
                self.service
            )));
        }
        let grants = self.grants(user).map_err(TokenRequestError::Unavailable)?;
        let mut access = Vec::new();
        for scope in scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty())
        {
            if access.len() >= MAX_SCOPES {
                return Err(TokenRequestError::BadRequest(format!(
                    "more than {MAX_SCOPES} scopes in one request"
                )));
            }
            let (kind, rest) = scope.split_once(':').ok_or_else(|| {
                TokenRequestError::BadRequest(format!("malformed scope {scope:?}"))
            })?;
            let (name, actions) = rest.rsplit_once(':').ok_or_else(|| {
                TokenRequestError::BadRequest(format!("malformed scope {scope:?}"))
            })?;
            // `repository(plugin):name:pull` names a class: the type is what comes before it.
            let kind = kind.split('(').next().unwrap_or(kind);
            let asked = actions.split(',').filter(|a| !a.is_empty());
            match kind {
                "repository" if RepoName::parse(name).is_ok() => {
                    access.push(resource(&grants, Some(name), asked));
                }
                "registry" if name == "catalog" => access.push(resource(&grants, None, asked)),
                _ => {}
            }
        }
        let now = crate::clock::now_secs();
        let exp = now + self.expiration.as_secs();
        let claims = Claims {
            iss: &self.issuer,
            sub: user.unwrap_or(""),
            aud: &self.service,
            exp,
            nbf: now.saturating_sub(1),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|e| TokenRequestError::Unavailable(format!("signing the token: {e}")))?;
        Ok(IssuedToken {
            access_token: token.clone(),
            token,
            expires_in: self.expiration.as_secs(),
            issued_at: rfc3339(now),
        })
    }

    /// Whether `user` holds the `admin` role (manages users and roles).
    pub fn is_admin(&self, user: &str) -> bool {
        self.grants(Some(user)).is_ok_and(|g| g.admin)
    }

    /// Changes users or roles (serialized with every other change); returns the command's
    /// output.
    pub fn manage(&self, op: &manage::AccountOp) -> Result<String, manage::AccountError> {
        let _one_at_a_time = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        manage::apply(&self.index, op)
    }
}

/// One `access` entry: the actions asked for (`*`: all) that `grants` allow on `repo` (`None`:
/// the catalog, which a grant names with `*`).
fn resource<'a>(
    grants: &Grants,
    repo: Option<&str>,
    asked: impl Iterator<Item = &'a str>,
) -> ResourceActions {
    let asked: Vec<&str> = asked.collect();
    let Some(repo) = repo else {
        let ok = grants.catalog() && asked.contains(&"*");
        return ResourceActions {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: if ok { vec!["*".into()] } else { Vec::new() },
        };
    };
    let allowed = grants.on(repo);
    let mut actions: Vec<String> = Vec::new();
    for a in &asked {
        let names: Vec<&str> = if *a == "*" {
            allowed.iter().map(|x| x.as_str()).collect()
        } else {
            vec![*a]
        };
        for n in names {
            let ok = super::Action::ALL
                .iter()
                .any(|x| x.as_str() == n && allowed.contains(*x));
            if ok && !actions.iter().any(|x| x == n) {
                actions.push(n.to_owned());
            }
        }
    }
    ResourceActions {
        kind: "repository".into(),
        name: repo.to_owned(),
        actions,
    }
}

/// Why a token request was refused (besides bad credentials, which are `AuthError`s).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenRequestError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

pub use crate::clock::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Actions;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_220_964), "2026-12-02T14:16:04Z");
    }

    fn open(dir: &Path) -> Builtin {
        let index = Arc::new(Index::open(&dir.join("index")).unwrap());
        let mut c = BuiltinAuth::default();
        c.firstadmin.password = Some(crate::config::Secret::new("first-admin-pw"));
        Builtin::open(&c, dir, index).unwrap()
    }

    #[tokio::test]
    async fn tokens_grant_what_roles_allow_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        b.check_password("admin", "first-admin-pw").await.unwrap();
        assert!(b.check_password("admin", "nope").await.is_err());
        assert!(b.check_password("nobody", "x").await.is_err());
        b.manage(&manage::AccountOp::UserAdd {
            name: "rita".into(),
            hash: bcrypt::hash("reader-pw", 4).unwrap(),
            roles: vec![roles::READ_ALL.into()],
        })
        .unwrap();
        let t = b
            .issue(
                Some("rita"),
                Some("stevedore"),
                &["repository:a/b:pull,push registry:catalog:*".into()],
            )
            .unwrap();
        let g = b.verifier().verify(&t.token).unwrap();
        let a = |acts| Access::repository(RepoName::parse("a/b").unwrap(), acts);
        assert!(g.allows(&a(Actions::PULL)));
        assert!(!g.allows(&a(Actions::PUSH)));
        assert!(g.allows(&Access::catalog()));
        assert_eq!(g.subject.as_deref(), Some("rita"));
        // Anonymous: the anonymous role, empty until granted.
        let t = b
            .issue(None, None, &["repository:a/b:pull".into()])
            .unwrap();
        assert!(
            !b.verifier()
                .verify(&t.token)
                .unwrap()
                .allows(&a(Actions::PULL))
        );
        assert!(b.issue(None, Some("other"), &[]).is_err());
        assert!(b.issue(None, None, &["nonsense".into()]).is_err());
        // The key is kept: a reopened server verifies tokens issued before.
        drop(b);
        let b = open(dir.path());
        assert!(b.verifier().verify(&t.token).is_ok());
    }
}
