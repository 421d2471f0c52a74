//! Changes to `auth.builtin`'s users and roles: one [`AccountOp`] per CLI command (`stevedore
//! user …`, `stevedore role …`), applied to the index by [`apply`] in whichever process holds
//! it: the CLI itself with the server stopped, or the running server (its debug listener,
//! `POST /debug/accounts`, and the console). Passwords arrive already hashed (bcrypt): the
//! plain text never leaves the process it was typed into. Also the first admin (at start-up).
//!
//! Rules kept here: names are checked, built-in roles cannot be changed or deleted, a role
//! still held by a user cannot be deleted, and there is always an admin (the last holder of
//! `admin` cannot lose it or be deleted).

use super::roles::{self, ANONYMOUS, parse_actions};
use super::{BCRYPT_COST, password};
use crate::config::FirstAdminConfig;
use crate::index::{Index, IndexError, RoleRecord, RoleRule, UserRecord};
use serde::{Deserialize, Serialize};

/// One change (or listing) of users and roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AccountOp {
    UserAdd {
        name: String,
        /// bcrypt hash of the password.
        hash: String,
        #[serde(default)]
        roles: Vec<String>,
    },
    UserPasswd {
        name: String,
        hash: String,
    },
    UserDel {
        name: String,
    },
    UserList,
    /// Gives a user a role.
    UserGrant {
        name: String,
        role: String,
    },
    /// Takes a role from a user.
    UserRevoke {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDel {
        name: String,
    },
    RoleList,
    /// Adds (or replaces) the rule of `repository` in a role.
    RoleGrant {
        name: String,
        repository: String,
        actions: String,
    },
    /// Removes the rule of `repository` from a role.
    RoleRevoke {
        name: String,
        repository: String,
    },
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Index(#[from] IndexError),
}

impl AccountError {
    /// The HTTP status the debug listener and the console answer it with.
    pub fn status(&self) -> u16 {
        match self {
            AccountError::Invalid(_) => 400,
            AccountError::NotFound(_) => 404,
            AccountError::Conflict(_) => 409,
            AccountError::Index(_) => 500,
        }
    }
}

fn invalid(m: impl Into<String>) -> AccountError {
    AccountError::Invalid(m.into())
}

/// Hashes a new password (refusing one bcrypt cannot take or that is too short).
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < 8 {
        return Err(invalid("a password needs at least 8 characters"));
    }
    if password.len() > 72 {
        return Err(invalid(
            "a password may have at most 72 bytes (bcrypt's limit)",
        ));
    }
    bcrypt::hash(password, BCRYPT_COST).map_err(|e| invalid(format!("hashing the password: {e}")))
}

fn check_user_name(name: &str) -> Result<(), AccountError> {
    if roles::valid_user_name(name) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name:?} is not a valid user name (1-128 characters, no spaces, control characters or ':')"
        )))
    }
}

fn check_hash(hash: &str) -> Result<(), AccountError> {
    if password::is_bcrypt(hash) {
        Ok(())
    } else {
        Err(invalid("the password hash is not a bcrypt hash"))
    }
}

/// Whether `name` is a role: built in, `anonymous`, or stored.
fn role_exists(index: &Index, name: &str) -> Result<bool, AccountError> {
    Ok(roles::built_in(name).is_some() || name == ANONYMOUS || index.role(name)?.is_some())
}

fn user(index: &Index, name: &str) -> Result<UserRecord, AccountError> {
    index
        .user(name)?
        .ok_or_else(|| AccountError::NotFound(format!("no user {name:?}")))
}

/// How many users hold `admin`, `except` one.
fn other_admins(index: &Index, except: &str) -> Result<usize, AccountError> {
    Ok(index
        .users()?
        .iter()
        .filter(|(n, u)| n != except && u.roles.iter().any(|r| r == roles::ADMIN))
        .count())
}

fn last_admin(index: &Index, name: &str, u: &UserRecord) -> Result<bool, AccountError> {
    Ok(u.roles.iter().any(|r| r == roles::ADMIN) && other_admins(index, name)? == 0)
}

/// A stored role that may be changed: not built in (`anonymous` may, pull only).
fn changeable_role(index: &Index, name: &str) -> Result<RoleRecord, AccountError> {
    if roles::built_in(name).is_some() {
        return Err(AccountError::Conflict(format!(
            "{name:?} is a built-in role and cannot be changed"
        )));
    }
    match index.role(name)? {
        Some(r) => Ok(r),
        None if name == ANONYMOUS => Ok(RoleRecord::default()),
        None => Err(AccountError::NotFound(format!("no role {name:?}"))),
    }
}

/// Applies `op`; returns what the command prints.
pub fn apply(index: &Index, op: &AccountOp) -> Result<String, AccountError> {
    let now = crate::clock::now_secs();
    match op {
        AccountOp::UserAdd { name, hash, roles } => {
            check_user_name(name)?;
            check_hash(hash)?;
            if index.user(name)?.is_some() {
                return Err(AccountError::Conflict(format!("user {name:?} exists")));
            }
            for r in roles {
                if r == ANONYMOUS || !role_exists(index, r)? {
                    return Err(AccountError::NotFound(format!("no role {r:?} to give")));
                }
            }
            let mut roles = roles.clone();
            roles.dedup();
            let rec = UserRecord {
                password: hash.clone(),
                roles,
                created: now,
            };
            index.write_accounts(&[(name, Some(&rec))], &[])?;
            Ok(format!("user {name} added\n"))
        }
        AccountOp::UserPasswd { name, hash } => {
            check_hash(hash)?;
            let mut u = user(index, name)?;
            u.password = hash.clone();
            index.write_accounts(&[(name, Some(&u))], &[])?;
            Ok(format!("password of {name} changed\n"))
        }
        AccountOp::UserDel { name } => {
            let u = user(index, name)?;
            if last_admin(index, name, &u)? {
                return Err(AccountError::Conflict(format!(
                    "{name:?} is the last admin: give another user the admin role first"
                )));
            }
            index.write_accounts(&[(name, None)], &[])?;
            Ok(format!("user {name} deleted\n"))
        }
        AccountOp::UserList => Ok(index
            .users()?
            .into_iter()
            .map(|(n, u)| format!("{n}\t{}\n", u.roles.join(",")))
            .collect()),
        AccountOp::UserGrant { name, role } => {
            let mut u = user(index, name)?;
            if role == ANONYMOUS || !role_exists(index, role)? {
                return Err(AccountError::NotFound(format!("no role {role:?} to give")));
            }
            if !u.roles.contains(role) {
                u.roles.push(role.clone());
                index.write_accounts(&[(name, Some(&u))], &[])?;
            }
            Ok(format!("{name} has role {role}\n"))
        }
        AccountOp::UserRevoke { name, role } => {
            let mut u = user(index, name)?;
            if role == roles::ADMIN && last_admin(index, name, &u)? {
                return Err(AccountError::Conflict(format!(
                    "{name:?} is the last admin: give another user the admin role first"
                )));
            }
            if u.roles.contains(role) {
                u.roles.retain(|r| r != role);
                index.write_accounts(&[(name, Some(&u))], &[])?;
            }
            Ok(format!("{name} does not have role {role}\n"))
        }
        AccountOp::RoleAdd { name } => {
            if !roles::valid_role_name(name) {
                return Err(invalid(format!(
                    "{name:?} is not a valid role name (1-64 letters, digits, '.', '_', '-')"
                )));
            }
            if role_exists(index, name)? {
                return Err(AccountError::Conflict(format!("role {name:?} exists")));
            }
            let rec = RoleRecord {
                rules: Vec::new(),
                created: now,
            };
            index.write_accounts(&[], &[(name, Some(&rec))])?;
            Ok(format!("role {name} added\n"))
        }
        AccountOp::RoleDel { name } => {
            changeable_role(index, name)?;
            let holders: Vec<String> = index
                .users()?
                .into_iter()
                .filter(|(_, u)| u.roles.contains(name))
                .map(|(n, _)| n)
                .collect();
            if !holders.is_empty() {
                return Err(AccountError::Conflict(format!(
                    "role {name:?} is held by {}: revoke it first",
                    holders.join(", ")
                )));
            }
            index.write_accounts(&[], &[(name, None)])?;
            Ok(format!("role {name} deleted\n"))
        }
        AccountOp::RoleList => {
            let mut out = String::new();
            for name in roles::BUILT_IN {
                let r = roles::built_in(name).unwrap_or_default();
                out.push_str(&format!("{name}\tbuilt-in\t{}\n", rules_text(&r)));
            }
            let stored = index.roles()?;
            if !stored.iter().any(|(n, _)| n == ANONYMOUS) {
                out.push_str(&format!("{ANONYMOUS}\tanonymous\t\n"));
            }
            for (name, r) in stored {
                let kind = if name == ANONYMOUS {
                    "anonymous"
                } else {
                    "custom"
                };
                out.push_str(&format!("{name}\t{kind}\t{}\n", rules_text(&r)));
            }
            Ok(out)
        }
        AccountOp::RoleGrant {
            name,
            repository,
            actions,
        } => {
            let mut r = changeable_role(index, name)?;
            let acts = parse_actions(actions).map_err(invalid)?;
            if name == ANONYMOUS && acts != crate::auth::Actions::PULL {
                return Err(invalid(
                    "the anonymous role may only grant pull: requests without credentials never push or delete",
                ));
            }
            if repository.trim().is_empty() || repository.len() > 256 {
                return Err(invalid(
                    "a rule needs a repository glob (up to 256 characters)",
                ));
            }
            let rule = RoleRule {
                repository: repository.clone(),
                actions: roles::action_names(acts),
            };
            match r.rules.iter_mut().find(|x| x.repository == *repository) {
                Some(x) => *x = rule,
                None => r.rules.push(rule),
            }
            index.write_accounts(&[], &[(name, Some(&r))])?;
            Ok(format!(
                "role {name}: {repository} {}\n",
                roles::action_names(acts).join(",")
            ))
        }
        AccountOp::RoleRevoke { name, repository } => {
            let mut r = changeable_role(index, name)?;
            let before = r.rules.len();
            r.rules.retain(|x| x.repository != *repository);
            if r.rules.len() == before {
                return Err(AccountError::NotFound(format!(
                    "role {name:?} has no rule for {repository:?}"
                )));
            }
            index.write_accounts(&[], &[(name, Some(&r))])?;
            Ok(format!("role {name}: {repository} removed\n"))
        }
    }
}

/// A role's rules as `glob=pull,push glob2=delete`.
pub fn rules_text(r: &RoleRecord) -> String {
    r.rules
        .iter()
        .map(|x| format!("{}={}", x.repository, x.actions.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates the first admin when no user holds the `admin` role: with the configured password
/// (`firstadmin.password`, its `REGISTRY_…` variable, or `firstadmin.passwordfile`), or a
/// generated one printed to the log once.
pub fn first_admin(index: &Index, c: &FirstAdminConfig) -> Result<(), String> {
    let users = index.users().map_err(|e| e.to_string())?;
    if users
        .iter()
        .any(|(_, u)| u.roles.iter().any(|r| r == roles::ADMIN))
    {
        return Ok(());
    }
    let name = c.username.as_str();
    if users.iter().any(|(n, _)| n == name) {
        return Err(format!(
            "no user holds the admin role and user {name:?} exists: give it the role with `stevedore user grant {name} admin --config …` (server stopped), or set auth.builtin.firstadmin.username to a new name"
        ));
    }
    let (password, generated) = match (&c.password, &c.passwordfile) {
        (Some(p), _) => (p.expose().to_owned(), false),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "auth.builtin.firstadmin.passwordfile {}: {e}",
                    path.display()
                )
            })?;
            (text.lines().next().unwrap_or("").to_owned(), false)
        }
        (None, None) => (generate_password(), true),
    };
    let hash = hash_password(&password).map_err(|e| format!("the first admin's password: {e}"))?;
    let rec = UserRecord {
        password: hash,
        roles: vec![roles::ADMIN.to_owned()],
        created: crate::clock::now_secs(),
    };
    index
        .write_accounts(&[(name, Some(&rec))], &[])
        .map_err(|e| e.to_string())?;
    if generated {
        tracing::warn!(
            user = name,
            password = %password,
            "auth.builtin: created the first admin with this generated password, shown once; change it with `stevedore user passwd {name} --config …` (or in the console)"
        );
    } else {
        tracing::info!(
            user = name,
            "auth.builtin: created the first admin with the configured password"
        );
    }
    Ok(())
}

/// 20 random characters of an unambiguous alphabet.
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let more = *uuid::Uuid::new_v4().as_bytes();
    bytes
        .iter()
        .chain(&more)
        .take(20)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        bcrypt::hash("password1", 4).unwrap()
    }

    #[test]
    fn users_roles_and_the_last_admin() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let c = FirstAdminConfig {
            password: Some(crate::config::Secret::new("admin-pass")),
            ..FirstAdminConfig::default()
        };
        first_admin(&idx, &c).unwrap();
        first_admin(&idx, &c).unwrap(); // once
        assert_eq!(apply(&idx, &AccountOp::UserList).unwrap(), "admin\tadmin\n");
        let err = apply(
            &idx,
            &AccountOp::UserDel {
                name: "admin".into(),
            },
        )
        .unwrap_err();
        assert_eq!(err.status(), 409);
        let revoke = AccountOp::UserRevoke {
            name: "admin".into(),
            role: "admin".into(),
        };
        assert_eq!(apply(&idx, &revoke).unwrap_err().status(), 409);
        apply(
            &idx,
            &AccountOp::RoleAdd {
                name: "team".into(),
            },
        )
        .unwrap();
        assert_eq!(
            apply(
                &idx,
                &AccountOp::RoleAdd {
                    name: "team".into()
                }
            )
            .unwrap_err()
            .status(),
            409
        );
        apply(
            &idx,
            &AccountOp::RoleGrant {
                name: "team".into(),
                repository: "team/*".into(),
                actions: "pull,push".into(),
            },
        )
        .unwrap();
        let add = |name: &str, roles: &[&str]| AccountOp::UserAdd {
            name: name.into(),
            hash: hash(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        apply(&idx, &add("bob", &["team"])).unwrap();
        assert_eq!(apply(&idx, &add("bob", &[])).unwrap_err().status(), 409);
        assert_eq!(
            apply(&idx, &add("carl", &["nope"])).unwrap_err().status(),
            404
        );
        assert_eq!(apply(&idx, &add("a:b", &[])).unwrap_err().status(), 400);
        // A held role cannot go; built-in roles never.
        assert_eq!(
            apply(
                &idx,
                &AccountOp::RoleDel {
                    name: "team".into()
                }
            )
            .unwrap_err()
            .status(),
            409
        );
        assert_eq!(
            apply(
                &idx,
                &AccountOp::RoleDel {
                    name: "read-all".into()
                }
            )
            .unwrap_err()
            .status(),
            409
        );
        // Anonymous: pull only.
        let anon = |actions: &str| AccountOp::RoleGrant {
            name: ANONYMOUS.into(),
            repository: "pub/*".into(),
            actions: actions.into(),
        };
        assert_eq!(apply(&idx, &anon("pull,push")).unwrap_err().status(), 400);
        apply(&idx, &anon("pull")).unwrap();
        let list = apply(&idx, &AccountOp::RoleList).unwrap();
        assert!(list.contains("team\tcustom\tteam/*=pull,push\n"), "{list}");
        assert!(
            list.contains("anonymous\tanonymous\tpub/*=pull\n"),
            "{list}"
        );
        // A second admin lets the first go.
        apply(
            &idx,
            &AccountOp::UserGrant {
                name: "bob".into(),
                role: "admin".into(),
            },
        )
        .unwrap();
        apply(&idx, &revoke).unwrap();
        apply(
            &idx,
            &AccountOp::UserDel {
                name: "admin".into(),
            },
        )
        .unwrap();
        assert_eq!(
            apply(&idx, &AccountOp::UserList).unwrap(),
            "bob\tteam,admin\n"
        );
    }

    #[test]
    fn first_admin_from_a_file_or_generated() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("i")).unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let c = FirstAdminConfig {
            username: "root".into(),
            password: None,
            passwordfile: Some(file),
        };
        first_admin(&idx, &c).unwrap();
        let u = idx.user("root").unwrap().unwrap();
        assert!(bcrypt::verify("from-the-file", &u.password).unwrap());
        let p = generate_password();
        assert_eq!(p.len(), 20);
        assert!(hash_password("short").is_err());
    }
}
