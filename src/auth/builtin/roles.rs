//! What `auth.builtin`'s roles grant: the built-in roles (docker-registry-web's `read-all` and
//! `write-all`, and `admin`), the `anonymous` role, and the union of a user's roles' rules on
//! a repository. Pure: the records come from the index through the caller.
//!
//! A rule grants actions on the repositories its glob matches (`*` matches any characters,
//! `/` included, as in `auth.policy`); a user may do on a repository the union of what the
//! rules of all their roles grant. The catalog (`registry:catalog:*`) is granted to users
//! with `pull` on every repository (a rule whose glob is only `*`s). `admin` also manages
//! users and roles. The `anonymous` role holds what requests without credentials may pull; it
//! grants nothing else, whatever its rules say.

use crate::auth::policy::glob;
use crate::auth::{Action, Actions};
use crate::index::{RoleRecord, RoleRule};

pub const ADMIN: &str = "admin";
pub const READ_ALL: &str = "read-all";
pub const WRITE_ALL: &str = "write-all";
pub const ANONYMOUS: &str = "anonymous";

/// The roles defined here, which cannot be changed or deleted.
pub const BUILT_IN: [&str; 3] = [ADMIN, READ_ALL, WRITE_ALL];

/// A built-in role's rules, or `None` when `name` is not built in.
pub fn built_in(name: &str) -> Option<RoleRecord> {
    let actions: &[&str] = match name {
        ADMIN => &["pull", "push", "delete"],
        WRITE_ALL => &["pull", "push"],
        READ_ALL => &["pull"],
        _ => return None,
    };
    Some(RoleRecord {
        rules: vec![RoleRule {
            repository: "*".into(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }],
        created: 0,
    })
}

/// A role name: letters, digits, `.`, `_`, `-`, up to 64.
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A user name: what a token's `sub` and a Basic credential can carry (no `:`, no control
/// characters, no spaces), up to 128.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != ':')
}

/// `pull,push` (or `*` for all) as actions; the error names what is not an action.
pub fn parse_actions(list: &str) -> Result<Actions, String> {
    let mut out = Actions::default();
    for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if a == "*" {
            out = Actions::ALL;
            continue;
        }
        let act = Action::ALL
            .into_iter()
            .find(|x| x.as_str() == a)
            .ok_or_else(|| format!("{a:?} is not an action (pull, push, delete or *)"))?;
        out.insert(act);
    }
    if out == Actions::default() {
        return Err(format!(
            "{list:?} names no action (pull, push, delete or *)"
        ));
    }
    Ok(out)
}

/// Actions as the names a role rule stores.
pub fn action_names(a: Actions) -> Vec<String> {
    a.iter().map(|x| x.as_str().to_owned()).collect()
}

fn rule_actions(rule: &RoleRule) -> Actions {
    parse_actions(&rule.actions.join(",")).unwrap_or_default()
}

/// What a set of roles grants.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    rules: Vec<(String, Actions)>,
    /// Holds the `admin` role.
    pub admin: bool,
}

impl Grants {
    /// The grants of `roles` (name and record; a role that no longer exists is `None`).
    /// `anonymous`: whether these are the anonymous role's (pull only).
    pub fn of<'a>(
        roles: impl IntoIterator<Item = (&'a str, Option<RoleRecord>)>,
        anonymous: bool,
    ) -> Grants {
        let mut g = Grants::default();
        for (name, record) in roles {
            g.admin |= name == ADMIN && !anonymous;
            let record = built_in(name).or(record);
            for rule in record.iter().flat_map(|r| &r.rules) {
                let mut actions = rule_actions(rule);
                if anonymous {
                    actions = Actions {
                        pull: actions.pull,
                        ..Actions::default()
                    };
                }
                g.rules.push((rule.repository.clone(), actions));
            }
        }
        g
    }

    /// What these roles allow on `repo`.
    pub fn on(&self, repo: &str) -> Actions {
        let mut out = Actions::default();
        for (pattern, actions) in &self.rules {
            if glob(pattern, repo) {
                for a in actions.iter() {
                    out.insert(a);
                }
            }
        }
        out
    }

    /// Whether these roles allow listing every repository.
    pub fn catalog(&self) -> bool {
        self.rules
            .iter()
            .any(|(p, a)| a.pull && !p.is_empty() && p.bytes().all(|b| b == b'*'))
    }

    /// Whether anything at all is granted.
    pub fn any(&self) -> bool {
        self.rules.iter().any(|(_, a)| *a != Actions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(rules: &[(&str, &str)]) -> Option<RoleRecord> {
        Some(RoleRecord {
            rules: rules
                .iter()
                .map(|(r, a)| RoleRule {
                    repository: (*r).into(),
                    actions: a.split(',').map(str::to_owned).collect(),
                })
                .collect(),
            created: 0,
        })
    }

    #[test]
    fn built_in_roles_are_docker_registry_webs() {
        let g = Grants::of([(READ_ALL, None)], false);
        assert_eq!(g.on("any/thing"), Actions::PULL);
        assert!(g.catalog() && !g.admin);
        let g = Grants::of([(WRITE_ALL, None)], false);
        assert_eq!(g.on("x"), Actions::PULL_PUSH);
        let g = Grants::of([(ADMIN, None)], false);
        assert_eq!(g.on("x"), Actions::ALL);
        assert!(g.admin);
        // A stored record cannot change a built-in role.
        let g = Grants::of([(READ_ALL, role(&[("*", "*")]))], false);
        assert_eq!(g.on("x"), Actions::PULL);
    }

    #[test]
    fn rules_union_and_globs() {
        let g = Grants::of(
            [
                ("team", role(&[("team/*", "pull,push")])),
                ("del", role(&[("team/tmp/*", "delete")])),
                ("gone", None),
            ],
            false,
        );
        assert_eq!(g.on("team/app"), Actions::PULL_PUSH);
        assert_eq!(g.on("team/tmp/x"), Actions::ALL);
        assert_eq!(g.on("other"), Actions::default());
        assert!(!g.catalog() && !g.admin);
    }

    #[test]
    fn anonymous_gets_pull_only() {
        let g = Grants::of([(ANONYMOUS, role(&[("pub/*", "*")]))], true);
        assert_eq!(g.on("pub/a"), Actions::PULL);
        assert_eq!(g.on("priv/a"), Actions::default());
        let g = Grants::of([(ADMIN, None)], true);
        assert!(!g.admin);
    }

    #[test]
    fn actions_and_names() {
        assert_eq!(parse_actions("pull, push").unwrap(), Actions::PULL_PUSH);
        assert_eq!(parse_actions("*").unwrap(), Actions::ALL);
        assert!(parse_actions("pull,write").is_err());
        assert!(parse_actions("").is_err());
        assert!(valid_role_name("team-a.b_c") && !valid_role_name("a b") && !valid_role_name(""));
        assert!(valid_user_name("alice@example.com") && !valid_user_name("a:b"));
    }
}
