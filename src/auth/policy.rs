//! Stevedore's access policy (`auth.policy`, a stevedore extension): whether anonymous users
//! may pull, and per-repository rules naming who may pull, push or delete. Pure: no I/O.
//!
//! Rules are tried in order and the first whose `repository` glob matches decides; a rule
//! restricts only the actions it lists (`push: [alice]` leaves pull to every authenticated
//! user), and a repository no rule matches is open to every authenticated user. `"*"` in a
//! list means any authenticated user; an empty list means nobody.

use super::Action;
use crate::config::AuthPolicyConfig;
use crate::oci::RepoName;

/// The compiled `auth.policy`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub anonymous_pull: bool,
    pub rules: Vec<Rule>,
}

/// One `auth.policy.rules` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Glob on repository names: `*` matches any run of characters, `/` included.
    pub repository: String,
    pub pull: Option<Vec<String>>,
    pub push: Option<Vec<String>>,
    pub delete: Option<Vec<String>>,
}

impl Rule {
    fn users(&self, action: Action) -> Option<&[String]> {
        match action {
            Action::Pull => self.pull.as_deref(),
            Action::Push => self.push.as_deref(),
            Action::Delete => self.delete.as_deref(),
        }
    }
}

impl Policy {
    pub fn from_config(c: &AuthPolicyConfig) -> Policy {
        Policy {
            anonymous_pull: c.anonymouspull,
            rules: c
                .rules
                .iter()
                .map(|r| Rule {
                    repository: r.repository.clone(),
                    pull: r.pull.clone(),
                    push: r.push.clone(),
                    delete: r.delete.clone(),
                })
                .collect(),
        }
    }

    /// Whether a rule names who may do `action` on `repo` (then anonymous users may not).
    pub fn restricts(&self, repo: &RepoName, action: Action) -> bool {
        self.rules
            .iter()
            .find(|r| glob(&r.repository, repo.as_str()))
            .and_then(|r| r.users(action))
            .is_some()
    }

    /// Whether `user` (`None`: anonymous) may do `action` on `repo`.
    pub fn allows(&self, user: Option<&str>, repo: &RepoName, action: Action) -> bool {
        let listed = self
            .rules
            .iter()
            .find(|r| glob(&r.repository, repo.as_str()))
            .and_then(|r| r.users(action));
        match user {
            None => action == Action::Pull && self.anonymous_pull && listed.is_none(),
            Some(u) => listed.is_none_or(|names| names.iter().any(|n| n == "*" || n == u)),
        }
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (even empty).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthRuleConfig;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("team/*", "team/a", true),
            ("team/*", "team/a/b", true),
            ("team/*", "team", false),
            ("team/*", "teams/a", false),
            ("*", "anything/at/all", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("*/prod", "x/y/prod", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "a", false),
        ] {
            assert_eq!(glob(p, n), want, "{p} ~ {n}");
        }
    }

    fn rule(repository: &str, push: Option<&[&str]>, delete: Option<&[&str]>) -> AuthRuleConfig {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| (*s).to_owned()).collect());
        AuthRuleConfig {
            repository: repository.into(),
            pull: None,
            push: list(push),
            delete: list(delete),
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = Policy::from_config(&AuthPolicyConfig {
            anonymouspull: true,
            rules: vec![
                rule("team/public", Some(&["*"]), None),
                rule("team/*", Some(&["alice"]), Some(&[])),
                AuthRuleConfig {
                    repository: "secret/*".into(),
                    pull: Some(vec!["carol".into()]),
                    push: None,
                    delete: None,
                },
            ],
        });
        let r = |s: &str| RepoName::parse(s).unwrap();
        use Action::*;
        for (user, repo, action, want) in [
            (Some("bob"), "team/public", Push, true),
            (Some("bob"), "team/app", Push, false),
            (Some("alice"), "team/app", Push, true),
            (Some("alice"), "team/app", Delete, false),
            (Some("bob"), "team/app", Pull, true),
            (Some("bob"), "other", Delete, true),
            (None, "other", Pull, true),
            (None, "other", Push, false),
            (None, "team/app", Pull, true),
            (None, "secret/x", Pull, false),
            (Some("bob"), "secret/x", Pull, false),
            (Some("carol"), "secret/x", Pull, true),
        ] {
            assert_eq!(
                p.allows(user, &r(repo), action),
                want,
                "{user:?} {action:?} {repo}"
            );
        }
        let closed = Policy::default();
        assert!(!closed.allows(None, &r("a"), Pull));
        assert!(closed.allows(Some("x"), &r("a"), Delete));
    }
}
