//! Notifications: events about what the registry did (pushes, pulls, mounts, deletes, and a
//! mirror's cache events), queued per endpoint and delivered to webhooks in the background.
//!
//! Owns the event model ([`Event`]), the per-endpoint queues and delivery. Must never block or
//! slow the request that publishes an event: [`Notifier::publish`] only enqueues.
//!
//! (Skeleton: the model and the publishing call that the rest of the crate uses; the queues,
//! delivery, formats and signing are built behind `publish`.)

pub mod event;

pub use event::{Action, Actor, BLOB_MEDIA_TYPE, Descriptor, Event, RequestInfo, Source, Target};

/// Hands events to the configured endpoints. Cheap to share (`Arc`), and present even with no
/// endpoint configured, when publishing is a no-op.
#[derive(Debug, Default)]
pub struct Notifier {}

impl Notifier {
    /// A notifier with no endpoint: every event is dropped at once.
    pub fn disabled() -> Notifier {
        Notifier {}
    }

    /// Whether any endpoint could want an event of `action`, so that callers can skip building
    /// events nobody receives (a pull's event costs an allocation or two).
    pub fn wants(&self, _action: Action) -> bool {
        false
    }

    /// Queues `event` for every endpoint whose filters accept it. Never blocks, never fails:
    /// a full queue drops by its overflow policy and counts it.
    pub fn publish(&self, _event: Event) {}
}
