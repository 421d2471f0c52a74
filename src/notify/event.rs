//! The event model: what happened, to what, at whose request. Field names follow
//! distribution's `notifications/event.go`; how an event is rendered on the wire (distribution
//! v1/v2 envelopes, CloudEvents) belongs to the formats, not to this type.

use crate::oci::Digest;
use std::time::SystemTime;

/// The media type distribution gives every blob in an event (its blob store keeps none).
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Push,
    Pull,
    Delete,
    Mount,
    /// Mirror events (off by default): a blob or manifest fetched from upstream into the cache.
    CacheFill,
    /// Cached content removed by eviction.
    CacheEvict,
    /// An upstream request failed.
    UpstreamError,
    /// An upstream answered 429.
    UpstreamRateLimited,
    /// A stale cached tag was served because the upstream could not be asked.
    StaleServed,
}

impl Action {
    /// The name on the wire and in `ignore.actions`: `push`, `pull`, `delete`, `mount`,
    /// `cache.fill`, `cache.evict`, `upstream.error`, `upstream.ratelimited`, `stale.served`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Mount => "mount",
            Action::CacheFill => "cache.fill",
            Action::CacheEvict => "cache.evict",
            Action::UpstreamError => "upstream.error",
            Action::UpstreamRateLimited => "upstream.ratelimited",
            Action::StaleServed => "stale.served",
        }
    }

    /// Whether this is one of the mirror's cache events (delivered only where enabled).
    pub fn is_cache_event(self) -> bool {
        !matches!(
            self,
            Action::Push | Action::Pull | Action::Delete | Action::Mount
        )
    }
}

/// A content descriptor, as in an event's `target` and its `references`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub size: u64,
    pub digest: Option<Digest>,
    /// `urls` of a reference (a layer's foreign URLs), as the manifest lists them.
    pub urls: Vec<String>,
    /// `annotations` of a reference, as the manifest lists them.
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// What the event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// `mediaType`, `size`, `digest` (distribution embeds a descriptor).
    pub descriptor: Descriptor,
    /// `length`: the same as `size` (distribution keeps both).
    pub length: u64,
    pub repository: String,
    /// `fromRepository`, for a mount.
    pub from_repository: Option<String>,
    /// `url`: where the content can be fetched from this registry.
    pub url: Option<String>,
    pub tag: Option<String>,
    /// `references`: a manifest's layers, config, or an index's manifests; sent only when
    /// `notifications.events.includereferences` is set.
    pub references: Vec<Descriptor>,
    /// For cache events: the upstream the content came from (or failed at).
    pub upstream: Option<String>,
    /// For cache events: why (the upstream's error for `upstream.error`, its `Retry-After`
    /// for `upstream.ratelimited`, `size`/`age` for `cache.evict`, the upstream's failure for
    /// `stale.served`).
    pub reason: Option<String>,
}

/// The request that caused the event (`request`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// Who made the request (`actor`); `name` is `None` for an anonymous one (sent as `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub name: Option<String>,
}

/// The node that emitted the event (`source`): its listen address and instance id. Filled in
/// by the notifier, not by the publisher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub addr: String,
    pub instance_id: String,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// A fresh UUID.
    pub id: String,
    pub timestamp: SystemTime,
    pub action: Action,
    pub target: Target,
    pub request: RequestInfo,
    pub actor: Actor,
    pub source: Source,
}

impl Event {
    /// A new event of `action` about `target`, now, with a fresh id and an empty source.
    pub fn new(action: Action, target: Target, request: RequestInfo, actor: Actor) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: SystemTime::now(),
            action,
            target,
            request,
            actor,
            source: Source::default(),
        }
    }

    /// A mirror's cache event (`cache.fill`, …): caused by no client request of its own, so
    /// with an empty `request` and an anonymous `actor`.
    pub fn cache(action: Action, target: Target) -> Event {
        Event::new(action, target, RequestInfo::default(), Actor::default())
    }
}

impl Target {
    /// The target of a cache event about content from `upstream`: `mediaType`, `size`,
    /// `length`, `digest`, `repository` and `upstream`.
    pub fn cached(
        upstream: &str,
        repository: &str,
        media_type: &str,
        digest: Option<Digest>,
        size: u64,
    ) -> Target {
        Target {
            descriptor: Descriptor {
                media_type: media_type.to_owned(),
                size,
                digest,
                ..Descriptor::default()
            },
            length: size,
            repository: repository.to_owned(),
            upstream: (!upstream.is_empty()).then(|| upstream.to_owned()),
            ..Target::default()
        }
    }
}
