//! Notifications: events about what the registry did (pushes, pulls, mounts, deletes, and a
//! mirror's cache events), queued per endpoint and delivered to webhooks in the background.
//!
//! Owns the event model ([`Event`]), the per-endpoint queues and delivery: `filter` (which
//! events an endpoint takes), `format` (distribution v1/v2 envelopes, CloudEvents), `endpoint`
//! (bounded queue, ordered delivery with retries and dead letters), `spool` (a persistent
//! queue's files), `sign` (Standard Webhooks), `transport` (the HTTP POST). Must never block or
//! slow the request that publishes an event: [`Notifier::publish`] only enqueues.

pub mod endpoint;
pub mod event;
pub mod filter;
pub mod format;
pub mod sign;
pub mod spool;
pub mod transport;

pub use event::{Action, Actor, BLOB_MEDIA_TYPE, Descriptor, Event, RequestInfo, Source, Target};

use crate::config::{NotificationsConfig, NotifyFormat};
use crate::metrics::Metrics;
use endpoint::Endpoint;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why notifications could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifications.endpoints[{index}] ({name}): {reason}")]
    Endpoint {
        index: usize,
        name: String,
        reason: String,
    },
}

/// Hands events to the configured endpoints. Cheap to share (`Arc`), and present even with no
/// endpoint configured, when publishing is a no-op.
#[derive(Default)]
pub struct Notifier {
    endpoints: Vec<Arc<Endpoint>>,
    source: Source,
    include_references: bool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.endpoints.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Notifier")
            .field("endpoints", &names)
            .field("source", &self.source)
            .finish()
    }
}

impl Notifier {
    /// A notifier with no endpoint: every event is dropped at once.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// The notifier `config` describes, its endpoints' workers started (so: inside a Tokio
    /// runtime). `source` is put in every event; persistent queues live under
    /// `<root>/notifications/<endpoint name>/`, and what they hold is queued again.
    pub fn from_config(
        config: &NotificationsConfig,
        source: Source,
        root: &Path,
        metrics: &Arc<Metrics>,
    ) -> Result<Notifier, NotifyError> {
        let mut endpoints = Vec::new();
        for (index, c) in config.endpoints.iter().enumerate() {
            let err = |reason: String| NotifyError::Endpoint {
                index,
                name: c.name.clone(),
                reason,
            };
            if c.disabled {
                tracing::info!(endpoint = %c.name, "notification endpoint disabled");
                continue;
            }
            let signer = if c.signing.secretfiles.is_empty() {
                None
            } else {
                Some(sign::Signer::from_files(&c.signing.secretfiles).map_err(err)?)
            };
            let headers: Vec<(String, String)> = c
                .headers
                .iter()
                .flat_map(|(n, vs)| vs.iter().map(move |v| (n.clone(), v.expose().to_string())))
                .collect();
            let transport =
                transport::Transport::new(&c.url, &headers, c.timeout, signer).map_err(err)?;
            let spool = if c.queue.persistent {
                let dir = root.join("notifications").join(&c.name);
                Some(
                    spool::Spool::open(&dir)
                        .map_err(|e| err(format!("queue directory {}: {e}", dir.display())))?,
                )
            } else {
                None
            };
            let held = spool.as_ref().map_or(0, |(_, h)| h.len());
            let ep = Endpoint::new(c, transport, spool, metrics);
            tracing::info!(
                endpoint = %ep.name,
                format = c.format.as_str(),
                persistent = c.queue.persistent,
                requeued = held,
                signed = !c.signing.secretfiles.is_empty(),
                "notification endpoint configured"
            );
            endpoints.push(Arc::new(ep));
        }
        let mut tasks = Vec::new();
        for ep in &endpoints {
            tasks.push(tokio::spawn(ep.clone().deliver()));
            tasks.push(tokio::spawn(ep.clone().spooler()));
        }
        Ok(Notifier {
            endpoints,
            source,
            include_references: config.events.includereferences,
            tasks: Mutex::new(tasks),
        })
    }

    /// Whether any endpoint could want an event of `action`, so that callers can skip building
    /// events nobody receives (a pull's event costs an allocation or two).
    pub fn wants(&self, action: Action) -> bool {
        self.endpoints.iter().any(|e| e.filter.wants(action))
    }

    /// Whether events carry `target.references` (`notifications.events.includereferences`);
    /// when not, publishers may leave them out, and the notifier drops any given.
    pub fn include_references(&self) -> bool {
        self.include_references
    }

    /// Queues `event` for every endpoint whose filters accept it. Never blocks, never fails:
    /// a full queue drops by its overflow policy and counts it.
    pub fn publish(&self, mut event: Event) {
        if self.endpoints.is_empty() {
            return;
        }
        event.source = self.source.clone();
        if !self.include_references {
            event.target.references.clear();
        }
        // Rendered once per format, shared by the endpoints using it.
        let mut rendered: [Option<Arc<format::Rendered>>; 3] = [None, None, None];
        for ep in &self.endpoints {
            if !ep.filter.accepts(&event) {
                continue;
            }
            let slot = &mut rendered[format_index(ep.format)];
            let r = slot
                .get_or_insert_with(|| {
                    Arc::new(format::render(&event, ep.format, self.include_references))
                })
                .clone();
            ep.enqueue(&event.id, r);
        }
    }

    /// Names of the configured (enabled) endpoints.
    pub fn endpoint_names(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.name.clone()).collect()
    }

    /// Sets the gauges that depend on time (age of the oldest pending event), at a scrape.
    pub fn refresh_gauges(&self) {
        for e in &self.endpoints {
            e.refresh_gauges();
        }
    }

    /// Every endpoint's state, for `GET /debug/notifications`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "source": {"addr": self.source.addr, "instanceID": self.source.instance_id},
            "includeReferences": self.include_references,
            "endpoints": self.endpoints.iter().map(|e| e.status()).collect::<Vec<_>>(),
        })
    }

    /// Graceful shutdown: keeps delivering until every queue is empty or `deadline` passed,
    /// writes what a persistent queue still holds to disk, then stops the workers. Events
    /// left in a memory-only queue are lost (and logged).
    pub async fn shutdown(&self, deadline: Duration) {
        if self.endpoints.is_empty() {
            return;
        }
        let until = Instant::now() + deadline;
        for e in &self.endpoints {
            loop {
                let progress = e.progress.notified();
                if e.depth() == 0 {
                    break;
                }
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, progress).await.is_err() {
                    break;
                }
            }
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        for e in &self.endpoints {
            let pending = e.depth();
            if pending == 0 {
                continue;
            }
            let ep = e.clone();
            let _ = tokio::task::spawn_blocking(move || ep.sync_spool()).await;
            if e.all_persisted() {
                tracing::info!(endpoint = %e.name, pending, "notifications left queued on disk; they are sent after the restart");
            } else {
                tracing::warn!(endpoint = %e.name, pending, "notifications not delivered within http.draintimeout are lost (queue.persistent keeps them)");
            }
        }
    }
}

fn format_index(f: NotifyFormat) -> usize {
    match f {
        NotifyFormat::DistributionV1 => 0,
        NotifyFormat::DistributionV2 => 1,
        NotifyFormat::CloudEvents => 2,
    }
}

/// The `source` of this node's events, as distribution fills it: the host name with the
/// listen port (`http.addr`'s), and an id new at every start.
pub fn source_for(listen: std::net::SocketAddr) -> Source {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| listen.ip().to_string());
    Source {
        addr: format!("{host}:{}", listen.port()),
        instance_id: uuid::Uuid::new_v4().to_string(),
    }
}
