//! The `notifications` section: distribution's webhook endpoints, plus stevedore's extensions
//! (queues, retries, formats, signing, filters). Types and defaults only; `validate.rs` checks
//! them and `notify/` acts on them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{Secret, de};

/// `notifications`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct NotificationsConfig {
    pub events: NotificationEvents,
    /// Webhooks each event is posted to.
    pub endpoints: Vec<EndpointConfig>,
}

/// `notifications.events`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct NotificationEvents {
    /// Send a manifest's layers, config or child manifests as `target.references`.
    #[serde(deserialize_with = "de::flag")]
    pub includereferences: bool,
}

/// `notifications.endpoints[]`: one webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EndpointConfig {
    /// Names the endpoint in logs, metrics and `/debug/notifications`.
    #[serde(deserialize_with = "de::text")]
    pub name: String,
    /// Configured but not sent to.
    #[serde(deserialize_with = "de::flag")]
    pub disabled: bool,
    /// Where events are POSTed (`http://` or `https://`).
    #[serde(deserialize_with = "de::text")]
    pub url: String,
    /// Headers added to every request, name to values. Values are secrets (a token often
    /// is one): never logged, and `REGISTRY_…_HEADERS_<NAME>_FILE` may supply them.
    #[serde(deserialize_with = "de::secret_list_map")]
    pub headers: BTreeMap<String, Vec<Secret>>,
    /// Time limit of one delivery attempt (connect to response headers); default 1s.
    #[serde(deserialize_with = "de::duration")]
    pub timeout: Duration,
    /// Consecutive failures retried `backoff` apart before the waits start doubling;
    /// default 10.
    #[serde(deserialize_with = "de::uint")]
    pub threshold: u64,
    /// Wait between retries of a failed delivery (doubling past `threshold`, with jitter,
    /// at most `maxbackoff`); default 1s.
    #[serde(deserialize_with = "de::duration")]
    pub backoff: Duration,
    /// Target media types whose events are not sent (distribution's older key).
    #[serde(deserialize_with = "de::strings")]
    pub ignoredmediatypes: Vec<String>,
    pub ignore: IgnoreConfig,
    /// *Stevedore extension*: the endpoint's queue.
    pub queue: QueueConfig,
    /// *Stevedore extension*: attempts at an event the endpoint rejects for good (a 4xx other
    /// than 408 and 429) before it is dead-lettered; default 3. Other failures are retried
    /// until they succeed.
    #[serde(deserialize_with = "de::uint")]
    pub maxattempts: u64,
    /// *Stevedore extension*: the longest wait between retries; default 5m.
    #[serde(deserialize_with = "de::duration")]
    pub maxbackoff: Duration,
    /// *Stevedore extension*: the wire format.
    pub format: NotifyFormat,
    /// *Stevedore extension*: Standard Webhooks signatures.
    pub signing: SigningConfig,
    /// *Stevedore extension*: repository globs (`*` within a path component, `**` across)
    /// whose events are sent; empty = every repository.
    #[serde(deserialize_with = "de::strings")]
    pub repositories: Vec<String>,
    /// *Stevedore extension*: the actions sent (`push`, `pull`, `delete`, `mount`, and the
    /// cache events); empty = push, pull, delete, mount (plus the cache events when
    /// `cacheevents` is set).
    #[serde(deserialize_with = "de::strings")]
    pub actions: Vec<String>,
    /// *Stevedore extension*: also send the mirror's cache events (`cache.fill`,
    /// `cache.evict`, `upstream.error`, `upstream.ratelimited`, `stale.served`); default false.
    #[serde(deserialize_with = "de::flag")]
    pub cacheevents: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            name: String::new(),
            disabled: false,
            url: String::new(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(1),
            threshold: 10,
            backoff: Duration::from_secs(1),
            ignoredmediatypes: Vec::new(),
            ignore: IgnoreConfig::default(),
            queue: QueueConfig::default(),
            maxattempts: 3,
            maxbackoff: Duration::from_secs(300),
            format: NotifyFormat::default(),
            signing: SigningConfig::default(),
            repositories: Vec::new(),
            actions: Vec::new(),
            cacheevents: false,
        }
    }
}

/// `notifications.endpoints[].ignore`: events dropped by target media type or by action.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct IgnoreConfig {
    #[serde(deserialize_with = "de::strings")]
    pub mediatypes: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub actions: Vec<String>,
}

/// `notifications.endpoints[].queue` (*stevedore extension*).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Events waiting for delivery at most; default 10000.
    #[serde(deserialize_with = "de::uint")]
    pub size: u64,
    /// Which event a full queue drops: `dropoldest` (default) or `dropnewest`.
    pub overflow: Overflow,
    /// Keep queued events on disk (under the storage root, `notifications/<name>/`), so
    /// they are delivered after a restart or a crash; default false.
    #[serde(deserialize_with = "de::flag")]
    pub persistent: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            size: 10_000,
            overflow: Overflow::default(),
            persistent: false,
        }
    }
}

/// What a full queue gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The oldest waiting event (a receiver that comes back learns of the latest state).
    #[default]
    DropOldest,
    /// The event being published.
    DropNewest,
}

/// How events are put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyFormat {
    /// distribution 2.x (`registry:2`): `application/vnd.docker.distribution.events.v1+json`.
    #[default]
    DistributionV1,
    /// distribution 3.x: `application/vnd.docker.distribution.events.v2+json`.
    DistributionV2,
    /// CloudEvents 1.0, binary mode (`ce-*` headers, the event as the body).
    CloudEvents,
}

impl NotifyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyFormat::DistributionV1 => "distribution-v1",
            NotifyFormat::DistributionV2 => "distribution-v2",
            NotifyFormat::CloudEvents => "cloudevents",
        }
    }
}

/// `notifications.endpoints[].signing` (*stevedore extension*): Standard Webhooks.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct SigningConfig {
    /// Files each holding one secret (`whsec_` + base64, or raw text); every request is
    /// signed with each, so a receiver can move from one secret to the next. Empty = unsigned.
    #[serde(deserialize_with = "de::paths")]
    pub secretfiles: Vec<PathBuf>,
}

impl<'de> Deserialize<'de> for Overflow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pick = |s: &str| match s {
            "dropoldest" => Some(Overflow::DropOldest),
            "dropnewest" => Some(Overflow::DropNewest),
            _ => None,
        };
        de::keyword(d, pick, "expected dropoldest or dropnewest")
    }
}

impl<'de> Deserialize<'de> for NotifyFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pick = |s: &str| match s {
            "distribution-v1" | "" => Some(NotifyFormat::DistributionV1),
            "distribution-v2" => Some(NotifyFormat::DistributionV2),
            "cloudevents" => Some(NotifyFormat::CloudEvents),
            _ => None,
        };
        de::keyword(
            d,
            pick,
            "expected distribution-v1, distribution-v2 or cloudevents",
        )
    }
}
