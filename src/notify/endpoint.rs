//! One endpoint: its bounded queue, the worker that delivers the queue in order (retrying with
//! backoff, dead-lettering what the receiver refuses for good), the spooler that keeps a
//! persistent queue's files in step, and the endpoint's counters for metrics and
//! `/debug/notifications`.
//!
//! Enqueueing takes a short lock and never waits on I/O: the worker and spooler are tasks of
//! their own. Owns no wire format (`format`) and no HTTP (`transport`).

use super::format::Rendered;
use super::spool::{Spool, Stored};
use super::transport::{Outcome, Transport};
use crate::config::{EndpointConfig, NotifyFormat, Overflow};
use crate::metrics::Metrics;
use prometheus::{Gauge, Histogram, IntCounter, IntGauge};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Failures and dead letters kept for `/debug/notifications`.
const KEPT_FAILURES: usize = 20;
const KEPT_DEAD_LETTERS: usize = 100;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// At most one "queue full" warning per endpoint in this long.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// One queued event.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    id: String,
    queued: SystemTime,
    rendered: Arc<Rendered>,
    /// Whether the spool holds it.
    persisted: bool,
    attempts: u32,
}

/// A failed attempt, as `/debug/notifications` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub time: String,
    #[serde(rename = "eventId")]
    pub event_id: String,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Idle,
    Sending,
    BackingOff,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Entry>,
    /// The entry being delivered (out of `queue`).
    inflight: Option<Entry>,
    next_seq: u64,
    phase: Phase,
    retry_at: Option<SystemTime>,
    consecutive_failures: u64,
    sent: u64,
    failed: u64,
    dropped: u64,
    dead_lettered: u64,
    failures: VecDeque<Failure>,
    dead_letters: VecDeque<Failure>,
    /// Spool work for the spooler: files to delete, files to move to `dead/`.
    unlink: Vec<u64>,
    bury: Vec<u64>,
    drops_unlogged: u64,
    last_drop_log: Option<Instant>,
}

/// Per-endpoint metric handles.
struct EndpointMetrics {
    queued: IntCounter,
    sent: IntCounter,
    dropped: IntCounter,
    dead_lettered: IntCounter,
    depth: IntGauge,
    oldest_age: Gauge,
    latency: Histogram,
    metrics: Arc<Metrics>,
}

/// One configured endpoint.
pub struct Endpoint {
    pub name: String,
    /// The URL without its query (which may hold a token), for logs and the debug page.
    url_shown: String,
    pub format: NotifyFormat,
    pub filter: super::filter::Filter,
    size: usize,
    overflow: Overflow,
    threshold: u64,
    backoff: Duration,
    max_backoff: Duration,
    max_attempts: u32,
    transport: Transport,
    spool: Option<Spool>,
    state: Mutex<State>,
    /// Wakes the worker: something was queued.
    work: Notify,
    /// Wakes the spooler: something to write or delete.
    spool_work: Notify,
    /// Woken whenever an entry leaves the endpoint (delivered, dropped, dead-lettered).
    pub(super) progress: Notify,
    m: EndpointMetrics,
}

impl Endpoint {
    /// An endpoint from its configuration, with a transport and, for a persistent queue, its
    /// spool and what the spool held (queued again, oldest first).
    pub fn new(
        c: &EndpointConfig,
        transport: Transport,
        spool: Option<(Spool, Vec<(u64, Stored)>)>,
        metrics: &Arc<Metrics>,
    ) -> Endpoint {
        let name = c.name.clone();
        let label = [name.as_str()];
        let m = EndpointMetrics {
            queued: metrics.notify_queued.with_label_values(&label),
            sent: metrics.notify_sent.with_label_values(&label),
            dropped: metrics.notify_dropped.with_label_values(&label),
            dead_lettered: metrics.notify_dead_lettered.with_label_values(&label),
            depth: metrics.notify_queue_depth.with_label_values(&label),
            oldest_age: metrics.notify_oldest_age.with_label_values(&label),
            latency: metrics.notify_delivery_duration.with_label_values(&label),
            metrics: metrics.clone(),
        };
        let (spool, held) = match spool {
            Some((s, held)) => (Some(s), held),
            None => (None, Vec::new()),
        };
        let next_seq = held.last().map_or(1, |(seq, _)| seq + 1);
        let queue: VecDeque<Entry> = held
            .into_iter()
            .map(|(seq, s)| Entry {
                seq,
                id: s.id.clone(),
                queued: s.queued(),
                rendered: Arc::new(s.rendered()),
                persisted: true,
                attempts: 0,
            })
            .collect();
        m.depth.set(queue.len() as i64);
        let zero_to = |d: Duration, default: u64| {
            if d.is_zero() {
                Duration::from_secs(default)
            } else {
                d
            }
        };
        Endpoint {
            url_shown: c.url.split(['?', '#']).next().unwrap_or("").to_string(),
            name,
            format: c.format,
            filter: super::filter::Filter::new(c),
            size: usize::try_from(c.queue.size).unwrap_or(usize::MAX).max(1),
            overflow: c.queue.overflow,
            // distribution's defaults for zero values.
            threshold: if c.threshold == 0 { 10 } else { c.threshold },
            backoff: zero_to(c.backoff, 1),
            max_backoff: zero_to(c.maxbackoff, 300),
            max_attempts: u32::try_from(c.maxattempts).unwrap_or(u32::MAX).max(1),
            transport,
            spool,
            state: Mutex::new(State {
                queue,
                inflight: None,
                next_seq,
                phase: Phase::Idle,
                retry_at: None,
                consecutive_failures: 0,
                sent: 0,
                failed: 0,
                dropped: 0,
                dead_lettered: 0,
                failures: VecDeque::new(),
                dead_letters: VecDeque::new(),
                unlink: Vec::new(),
                bury: Vec::new(),
                drops_unlogged: 0,
                last_drop_log: None,
            }),
            work: Notify::new(),
            spool_work: Notify::new(),
            progress: Notify::new(),
            m,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event; a full queue drops by the overflow policy. Never waits.
    pub fn enqueue(&self, id: &str, rendered: Arc<Rendered>) {
        let mut dropped_log = None;
        {
            let mut s = self.lock();
            let seq = s.next_seq;
            s.next_seq += 1;
            let entry = Entry {
                seq,
                id: id.to_string(),
                queued: SystemTime::now(),
                rendered,
                persisted: false,
                attempts: 0,
            };
            self.m.queued.inc();
            if s.queue.len() >= self.size {
                s.dropped += 1;
                s.drops_unlogged += 1;
                self.m.dropped.inc();
                match self.overflow {
                    Overflow::DropNewest => {}
                    Overflow::DropOldest => {
                        if let Some(old) = s.queue.pop_front() {
                            if old.persisted {
                                s.unlink.push(old.seq);
                            }
                        }
                        s.queue.push_back(entry);
                    }
                }
                if s.last_drop_log
                    .is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY)
                {
                    s.last_drop_log = Some(Instant::now());
                    dropped_log = Some(std::mem::take(&mut s.drops_unlogged));
                }
            } else {
                s.queue.push_back(entry);
            }
            self.m.depth.set(depth(&s) as i64);
        }
        if let Some(n) = dropped_log {
            tracing::warn!(
                endpoint = %self.name,
                dropped = n,
                size = self.size,
                policy = ?self.overflow,
                "notification queue full: events dropped (the endpoint is slower than the registry or down)"
            );
            self.progress.notify_waiters();
        }
        self.work.notify_one();
        if self.spool.is_some() {
            self.spool_work.notify_one();
        }
    }

    /// Events queued or being sent.
    pub fn depth(&self) -> usize {
        depth(&self.lock())
    }

    /// Sets the age-of-the-oldest-pending-event gauge (at a scrape).
    pub fn refresh_gauges(&self) {
        let s = self.lock();
        let oldest = s.inflight.as_ref().or(s.queue.front());
        let age = oldest.map_or(0.0, |e| {
            e.queued.elapsed().unwrap_or_default().as_secs_f64()
        });
        self.m.oldest_age.set(age);
        self.m.depth.set(depth(&s) as i64);
    }

    /// Delivers the queue in order, forever (the task is aborted at shutdown).
    pub async fn deliver(self: Arc<Self>) {
        loop {
            let entry = loop {
                {
                    let mut s = self.lock();
                    if let Some(e) = s.queue.pop_front() {
                        s.inflight = Some(e.clone());
                        s.phase = Phase::Sending;
                        break e;
                    }
                    s.phase = Phase::Idle;
                }
                self.work.notified().await;
            };
            self.deliver_one(entry).await;
            self.progress.notify_waiters();
        }
    }

    async fn deliver_one(&self, mut entry: Entry) {
        loop {
            entry.attempts += 1;
            {
                let mut s = self.lock();
                s.phase = Phase::Sending;
                s.retry_at = None;
                if let Some(i) = s.inflight.as_mut() {
                    i.attempts = entry.attempts;
                }
            }
            let outcome = self.transport.post(&entry.id, &entry.rendered).await;
            let (status, error, retry_after, permanent) = match outcome {
                Outcome::Delivered(code) => {
                    self.m.sent.inc();
                    self.m
                        .latency
                        .observe(entry.queued.elapsed().unwrap_or_default().as_secs_f64());
                    let mut s = self.lock();
                    s.sent += 1;
                    s.consecutive_failures = 0;
                    self.finish(&mut s, false);
                    tracing::debug!(endpoint = %self.name, event = %entry.id, status = code, "notification delivered");
                    return;
                }
                Outcome::Retry {
                    status,
                    error,
                    retry_after,
                } => (status, error, retry_after, false),
                Outcome::Rejected(code) => {
                    (Some(code), format!("rejected with {code}"), None, true)
                }
            };
            let label = status.map_or_else(|| "error".to_string(), |c| c.to_string());
            self.m
                .metrics
                .notify_failed
                .with_label_values(&[self.name.as_str(), label.as_str()])
                .inc();
            let failure = Failure {
                time: super::format::rfc3339_nano(SystemTime::now()),
                event_id: entry.id.clone(),
                attempt: entry.attempts,
                status,
                error: error.clone(),
            };
            let (wait, failures) = {
                let mut s = self.lock();
                s.failed += 1;
                s.consecutive_failures += 1;
                push_bounded(&mut s.failures, failure.clone(), KEPT_FAILURES);
                if permanent && entry.attempts >= self.max_attempts {
                    s.dead_lettered += 1;
                    s.consecutive_failures = 0;
                    self.m.dead_lettered.inc();
                    push_bounded(&mut s.dead_letters, failure, KEPT_DEAD_LETTERS);
                    self.finish(&mut s, true);
                    drop(s);
                    tracing::warn!(endpoint = %self.name, url = %self.url_shown, event = %entry.id, attempts = entry.attempts, error = %error, "notification dead-lettered: the endpoint refuses it");
                    return;
                }
                let wait = retry_delay(
                    s.consecutive_failures,
                    self.threshold,
                    self.backoff,
                    self.max_backoff,
                    retry_after,
                );
                s.phase = Phase::BackingOff;
                s.retry_at = Some(SystemTime::now() + wait);
                (wait, s.consecutive_failures)
            };
            if failures == 1 || failures.is_power_of_two() {
                tracing::warn!(endpoint = %self.name, url = %self.url_shown, event = %entry.id, attempt = entry.attempts, consecutive_failures = failures, retry_in = ?wait, error = %error, "notification delivery failed; will retry");
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The in-flight entry is done (delivered, or dead-lettered when `dead`): its file goes.
    fn finish(&self, s: &mut State, dead: bool) {
        if let Some(e) = s.inflight.take() {
            if e.persisted {
                if dead {
                    s.bury.push(e.seq);
                } else {
                    s.unlink.push(e.seq);
                }
                self.spool_work.notify_one();
            }
        }
        s.retry_at = None;
        s.phase = if s.queue.is_empty() {
            Phase::Idle
        } else {
            Phase::Sending
        };
        self.m.depth.set(depth(s) as i64);
    }

    /// Keeps the spool in step with the queue, forever (aborted at shutdown, after
    /// [`Endpoint::sync_spool`] ran once more).
    pub async fn spooler(self: Arc<Self>) {
        if self.spool.is_none() {
            return;
        }
        loop {
            self.spool_work.notified().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.sync_spool()).await;
        }
    }

    /// Writes queued entries not yet on disk, deletes and buries what left the queue.
    pub fn sync_spool(&self) {
        let Some(spool) = &self.spool else { return };
        let (writes, unlink, bury) = {
            let mut s = self.lock();
            let writes: Vec<(u64, Stored)> = s
                .inflight
                .iter()
                .chain(s.queue.iter())
                .filter(|e| !e.persisted)
                .map(|e| (e.seq, Stored::new(&e.id, e.queued, &e.rendered)))
                .collect();
            (
                writes,
                std::mem::take(&mut s.unlink),
                std::mem::take(&mut s.bury),
            )
        };
        if let Err(e) = spool.bury(&bury) {
            tracing::warn!(endpoint = %self.name, error = %e, "moving dead-lettered notifications to dead/ failed");
        }
        if let Err(e) = spool.remove(&unlink) {
            tracing::warn!(endpoint = %self.name, error = %e, "removing sent notifications from the queue directory failed");
        }
        if writes.is_empty() {
            return;
        }
        if let Err(e) = spool.write(&writes) {
            tracing::warn!(endpoint = %self.name, error = %e, "writing queued notifications to disk failed: they are kept in memory only");
            return;
        }
        // Mark what is still queued; what left meanwhile loses its file again.
        let mut gone = Vec::new();
        {
            let mut guard = self.lock();
            let s = &mut *guard;
            for (seq, _) in &writes {
                let e = s
                    .inflight
                    .iter_mut()
                    .chain(s.queue.iter_mut())
                    .find(|e| e.seq == *seq);
                match e {
                    Some(e) => e.persisted = true,
                    None => gone.push(*seq),
                }
            }
        }
        if let Err(e) = spool.remove(&gone) {
            tracing::warn!(endpoint = %self.name, error = %e, "removing sent notifications from the queue directory failed");
        }
        self.progress.notify_waiters();
    }

    /// Whether every queued event is on disk (always true without a persistent queue).
    pub fn all_persisted(&self) -> bool {
        let s = self.lock();
        self.spool.is_none() || s.inflight.iter().chain(s.queue.iter()).all(|e| e.persisted)
    }

    /// The endpoint's state for `/debug/notifications`.
    pub fn status(&self) -> serde_json::Value {
        let s = self.lock();
        let oldest = s.inflight.as_ref().or(s.queue.front());
        serde_json::json!({
            "name": self.name,
            "url": self.url_shown,
            "format": self.format.as_str(),
            "state": s.phase,
            "queue": {
                "depth": depth(&s),
                "size": self.size,
                "overflow": match self.overflow {
                    Overflow::DropOldest => "dropoldest",
                    Overflow::DropNewest => "dropnewest",
                },
                "persistent": self.spool.is_some(),
                "oldestAgeSeconds": oldest.map_or(0.0, |e| e.queued.elapsed().unwrap_or_default().as_secs_f64()),
            },
            "inflight": s.inflight.as_ref().map(|e| serde_json::json!({"eventId": e.id, "attempts": e.attempts})),
            "retryAt": s.retry_at.map(super::format::rfc3339_nano),
            "consecutiveFailures": s.consecutive_failures,
            "sent": s.sent,
            "failed": s.failed,
            "dropped": s.dropped,
            "deadLettered": s.dead_lettered,
            "lastFailures": s.failures,
            "deadLetters": s.dead_letters,
        })
    }
}

fn depth(s: &State) -> usize {
    s.queue.len() + usize::from(s.inflight.is_some())
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T, cap: usize) {
    if list.len() >= cap {
        list.pop_front();
    }
    list.push_back(item);
}

/// The wait before the next attempt after `failures` consecutive failures: `backoff` up to
/// `threshold` failures (distribution's meaning), then doubling, at most `max`; with "equal
/// jitter" (half fixed, half random); never shorter than the receiver's `Retry-After` (itself
/// capped at an hour).
pub fn retry_delay(
    failures: u64,
    threshold: u64,
    backoff: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let doublings = failures.saturating_sub(threshold).min(32) as u32;
    let base = backoff
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(max)
        .min(max);
    let jittered = base / 2 + base.mul_f64(0.5 * unit_random());
    match retry_after {
        Some(r) => jittered.max(r.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// A number in [0, 1).
fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_hold_then_double_with_jitter_and_honour_retry_after() {
        let s = Duration::from_secs;
        for _ in 0..100 {
            let d = retry_delay(1, 3, s(2), s(60), None);
            assert!(d >= s(1) && d <= s(2), "{d:?}");
            let d = retry_delay(3, 3, s(2), s(60), None);
            assert!(d >= s(1) && d <= s(2), "{d:?}");
            let d = retry_delay(5, 3, s(2), s(60), None);
            assert!(d >= s(4) && d <= s(8), "{d:?}");
            let d = retry_delay(500, 3, s(2), s(60), None);
            assert!(d >= s(30) && d <= s(60), "{d:?}");
            let d = retry_delay(1, 3, s(2), s(60), Some(s(30)));
            assert!(d >= s(30), "{d:?}");
            let d = retry_delay(1, 3, s(2), s(60), Some(s(100_000)));
            assert_eq!(d, MAX_RETRY_AFTER);
        }
    }
}
