//! Which events an endpoint receives: distribution's `ignore.mediatypes` (and the older
//! `ignoredmediatypes`) and `ignore.actions`, then stevedore's `actions`, `cacheevents` and
//! `repositories`. Pure: no I/O.

use super::event::{Action, Event};
use crate::config::EndpointConfig;
use crate::oci::glob::glob_match;

/// An endpoint's filters, read from its configuration (validated: every action name known).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    ignored_media_types: Vec<String>,
    ignored_actions: Vec<String>,
    /// `actions`; empty = the distribution actions, plus the cache events when `cache_events`.
    actions: Vec<String>,
    cache_events: bool,
    repositories: Vec<String>,
}

impl Filter {
    pub fn new(c: &EndpointConfig) -> Filter {
        Filter {
            ignored_media_types: c
                .ignore
                .mediatypes
                .iter()
                .chain(&c.ignoredmediatypes)
                .cloned()
                .collect(),
            ignored_actions: c.ignore.actions.clone(),
            actions: c.actions.clone(),
            cache_events: c.cacheevents,
            repositories: c.repositories.clone(),
        }
    }

    /// Whether some event of `action` may pass (what `Notifier::wants` asks).
    pub fn wants(&self, action: Action) -> bool {
        let name = action.as_str();
        let listed = if self.actions.is_empty() {
            !action.is_cache_event() || self.cache_events
        } else {
            self.actions.iter().any(|a| a == name)
        };
        listed && !self.ignored_actions.iter().any(|a| a == name)
    }

    /// Whether `event` is sent to the endpoint.
    pub fn accepts(&self, event: &Event) -> bool {
        let t = &event.target;
        self.wants(event.action)
            && !self
                .ignored_media_types
                .iter()
                .any(|m| *m == t.descriptor.media_type)
            && (self.repositories.is_empty()
                || self
                    .repositories
                    .iter()
                    .any(|g| glob_match(g, &t.repository)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::{Actor, Descriptor, RequestInfo, Target};

    fn event(action: Action, repo: &str, media_type: &str) -> Event {
        Event::new(
            action,
            Target {
                descriptor: Descriptor {
                    media_type: media_type.into(),
                    size: 1,
                    digest: None,
                    ..Descriptor::default()
                },
                repository: repo.into(),
                ..Target::default()
            },
            RequestInfo::default(),
            Actor::default(),
        )
    }

    fn filter(yaml: &str) -> Filter {
        let c: crate::config::Config = crate::config::Config::from_yaml_str(&format!(
            "notifications:\n  endpoints:\n    - name: a\n      url: http://x/\n{yaml}"
        ))
        .expect("config");
        Filter::new(&c.notifications.endpoints[0])
    }

    #[test]
    fn distribution_actions_by_default_cache_events_only_when_enabled() {
        let f = filter("");
        for a in [Action::Push, Action::Pull, Action::Delete, Action::Mount] {
            assert!(f.wants(a), "{a:?}");
        }
        assert!(!f.wants(Action::CacheFill));
        assert!(!f.wants(Action::StaleServed));
        let f = filter("      cacheevents: true\n");
        assert!(f.wants(Action::CacheFill) && f.wants(Action::Push));
    }

    #[test]
    fn ignore_actions_alone_works() {
        // distribution fixed this in 2025: an actions-only ignore list used to drop nothing.
        let f = filter("      ignore:\n        actions: [pull]\n");
        assert!(!f.accepts(&event(Action::Pull, "a", "m")));
        assert!(f.accepts(&event(Action::Push, "a", "m")));
    }

    #[test]
    fn ignored_media_types_from_both_keys() {
        let f =
            filter("      ignoredmediatypes: [old]\n      ignore:\n        mediatypes: [new]\n");
        assert!(!f.accepts(&event(Action::Push, "a", "old")));
        assert!(!f.accepts(&event(Action::Push, "a", "new")));
        assert!(f.accepts(&event(Action::Push, "a", "other")));
    }

    #[test]
    fn actions_and_repositories() {
        let f = filter("      actions: [push, cache.fill]\n      repositories: [team/**]\n");
        assert!(f.wants(Action::CacheFill));
        assert!(!f.wants(Action::Pull));
        assert!(f.accepts(&event(Action::Push, "team/a/b", "m")));
        assert!(!f.accepts(&event(Action::Push, "other/a", "m")));
    }
}
