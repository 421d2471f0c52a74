//! Pinned images (`proxy.pin`, a stevedore extension): `REPO_GLOB[:TAG_GLOB]` patterns whose
//! cached images eviction never removes, neither for `proxy.maxsize` nor for `proxy.ttl`.
//! Repository globs are the local names (`library/alpine`), with `*` within one path
//! component and `**` across (as `allow`/`deny`); no tag glob means every tag. Pure: the
//! evictor asks `pins` through the predicate `lib.rs` hands it.

use super::policy::glob_match;

/// One `proxy.pin` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    repo: String,
    tag: Option<String>,
}

/// The pin patterns, with room for more (e.g. a warm list's entries marked to be pinned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinRules {
    patterns: Vec<Pattern>,
}

impl PinRules {
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> PinRules {
        let mut rules = PinRules::default();
        for p in patterns {
            rules.add(p.as_ref());
        }
        rules
    }

    /// Adds a `REPO_GLOB[:TAG_GLOB]` pattern (validated with the configuration).
    pub fn add(&mut self, pattern: &str) {
        let (repo, tag) = split(pattern);
        self.patterns.push(Pattern {
            repo: repo.to_owned(),
            tag: tag.map(str::to_owned),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the cached image `repo:tag` is pinned.
    pub fn pins(&self, repo: &str, tag: &str) -> bool {
        self.patterns.iter().any(|p| {
            glob_match(&p.repo, repo) && p.tag.as_deref().is_none_or(|t| glob_match(t, tag))
        })
    }
}

/// `REPO_GLOB[:TAG_GLOB]` in two (a `:` after the last `/` starts the tag glob).
pub fn split(pattern: &str) -> (&str, Option<&str>) {
    let slash = pattern.rfind('/').map(|i| i + 1).unwrap_or(0);
    match pattern[slash..].find(':') {
        Some(i) => (&pattern[..slash + i], Some(&pattern[slash + i + 1..])),
        None => (pattern, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let r = PinRules::new(["library/alpine:3.*", "bitnami/**", "team/app:latest"]);
        assert!(r.pins("library/alpine", "3.20"));
        assert!(!r.pins("library/alpine", "edge"));
        assert!(r.pins("bitnami/redis", "7"));
        assert!(r.pins("bitnami/a/b", "x"));
        assert!(r.pins("team/app", "latest"));
        assert!(!r.pins("team/app", "v1"));
        assert!(!r.pins("library/busybox", "latest"));
        assert!(!PinRules::default().pins("a", "b"));
        assert_eq!(split("a/b:c"), ("a/b", Some("c")));
        assert_eq!(split("a/**"), ("a/**", None));
    }
}
