//! The circuit breaker of one upstream. Consecutive failures that say the upstream cannot be
//! asked (timeouts, connection failures, 5xx) open it; while it is open no request is sent and
//! callers get `CircuitOpen` at once. After a backoff (1 s, doubling per failed probe, capped,
//! with ±20 % jitter) one request at a time is let through as a probe: if the upstream answers,
//! the breaker closes; if not, it opens again for longer.
//!
//! Owns the breaker state, its metrics and its log lines; sends nothing itself.

use super::UpstreamError;
use crate::metrics::Metrics;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first backoff after the breaker opens.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Breaker settings.
#[derive(Debug, Clone)]
pub struct BreakerOptions {
    /// Consecutive failures that open the breaker; 0 = never opens.
    pub threshold: u32,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            threshold: 3,
            max_backoff: Duration::from_secs(60),
        }
    }
}

pub struct Breaker {
    name: String,
    opts: BreakerOptions,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Consecutive failures while closed.
    failures: u32,
    /// Set while open (or half-open): when the next probe may go.
    open_until: Option<Instant>,
    /// The backoff last used; doubles per failed probe.
    backoff: Duration,
    /// A probe is under way.
    probing: bool,
    /// The failure that opened (or kept open) the breaker.
    last_error: String,
}

/// Permission to send one request; report its outcome with [`Ticket::record`]. A ticket dropped
/// without an outcome (a cancelled request) frees the probe slot.
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Breaker {
    pub fn new(name: &str, opts: BreakerOptions, metrics: Arc<Metrics>) -> Breaker {
        metrics
            .upstream_breaker_open
            .with_label_values(&[name])
            .set(0);
        Breaker {
            name: name.to_string(),
            opts,
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("breaker state poisoned")
    }

    /// `Err(CircuitOpen)` when no request may go now (open, or a probe is under way); does not
    /// take the probe slot.
    pub fn check(&self) -> Result<(), UpstreamError> {
        let s = self.lock();
        match s.open_until {
            Some(until) if s.probing || Instant::now() < until => Err(self.open_error(&s)),
            _ => Ok(()),
        }
    }

    /// Lets a request through: always while closed; once the backoff is over, one probe at a
    /// time.
    pub fn admit(&self) -> Result<Ticket<'_>, UpstreamError> {
        let mut s = self.lock();
        let probe = match s.open_until {
            None => false,
            Some(until) if s.probing || Instant::now() < until => {
                return Err(self.open_error(&s));
            }
            Some(_) => {
                s.probing = true;
                tracing::info!(upstream = %self.name, "upstream circuit breaker half-open: sending one probe");
                self.transition("half_open");
                true
            }
        };
        Ok(Ticket {
            breaker: self,
            probe,
            done: false,
        })
    }

    fn open_error(&self, s: &State) -> UpstreamError {
        let wait = s
            .open_until
            .map(|u| u.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        UpstreamError::CircuitOpen {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            last_error: s.last_error.clone(),
        }
    }

    fn transition(&self, to: &str) {
        self.metrics
            .upstream_breaker_transitions
            .with_label_values(&[self.name.as_str(), to])
            .inc();
        self.metrics
            .upstream_breaker_open
            .with_label_values(&[self.name.as_str()])
            .set(i64::from(to != "closed"));
    }

    fn succeeded(&self, probe: bool) {
        let mut s = self.lock();
        s.failures = 0;
        if probe {
            s.probing = false;
        }
        if s.open_until.take().is_some() {
            s.backoff = Duration::ZERO;
            tracing::info!(upstream = %self.name, "upstream answers again: circuit breaker closed");
            self.transition("closed");
        }
    }

    fn failed(&self, probe: bool, err: &UpstreamError) {
        if self.opts.threshold == 0 {
            return;
        }
        let mut s = self.lock();
        if probe {
            s.probing = false;
        }
        s.failures = s.failures.saturating_add(1);
        let reopen = probe && s.open_until.is_some();
        if !reopen && (s.open_until.is_some() || s.failures < self.opts.threshold) {
            return;
        }
        s.backoff = if reopen {
            (s.backoff * 2).min(self.opts.max_backoff)
        } else {
            FIRST_BACKOFF.min(self.opts.max_backoff)
        };
        let wait = jitter(s.backoff);
        s.open_until = Some(Instant::now() + wait);
        s.last_error = err.to_string();
        tracing::warn!(
            upstream = %self.name,
            failures = s.failures,
            backoff_ms = wait.as_millis() as u64,
            error = %err,
            "upstream failing: circuit breaker open"
        );
        self.transition("open");
    }

    /// A body that stalled or broke off after its headers came: a failure like a timeout
    /// before them (the request's ticket already counted the headers as an answer).
    pub fn body_failed(&self, err: &UpstreamError) {
        if matches!(err, UpstreamError::Timeout(_)) {
            self.failed(false, err);
        }
    }

    fn abandoned(&self, probe: bool) {
        if probe {
            self.lock().probing = false;
        }
    }
}

impl Ticket<'_> {
    /// Reports how the request went: an error that says the upstream cannot be asked counts
    /// as a failure; any answer (a 404 included) is a success.
    pub fn record<T>(mut self, outcome: &Result<T, UpstreamError>) {
        self.done = true;
        match outcome {
            Err(e) if counts_as_failure(e) => self.breaker.failed(self.probe, e),
            _ => self.breaker.succeeded(self.probe),
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.abandoned(self.probe);
        }
    }
}

/// Timeouts, connection failures and 5xx; not 429 (the upstream answers, on purpose).
fn counts_as_failure(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Timeout(_) | UpstreamError::Connect(_) => true,
        UpstreamError::Status(code, _) => *code >= 500,
        _ => false,
    }
}

/// `d` scaled by a random factor in [0.8, 1.2).
fn jitter(d: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let unit = (h.finish() % 10_000) as f64 / 10_000.0;
    d.mul_f64(0.8 + 0.4 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(
            "test",
            BreakerOptions {
                threshold,
                max_backoff: Duration::from_secs(60),
            },
            Arc::new(Metrics::new()),
        )
    }

    fn timeout() -> Result<(), UpstreamError> {
        Err(UpstreamError::Timeout("connect"))
    }

    #[test]
    fn opens_after_consecutive_failures_and_refuses_fast() {
        let b = breaker(3);
        for _ in 0..2 {
            b.admit().unwrap().record(&timeout());
        }
        // A success in between resets the count.
        b.admit().unwrap().record(&Ok::<(), UpstreamError>(()));
        for _ in 0..2 {
            b.admit().unwrap().record(&timeout());
        }
        assert!(b.check().is_ok());
        b.admit().unwrap().record(&timeout());
        match b.admit().err() {
            Some(UpstreamError::CircuitOpen {
                retry_after_secs,
                last_error,
            }) => {
                assert!(retry_after_secs >= 1);
                assert!(last_error.contains("timed out"), "{last_error}");
            }
            other => panic!("expected CircuitOpen, got {other:?}"),
        }
        assert!(b.check().is_err());
    }

    #[test]
    fn one_probe_at_a_time_closes_or_reopens_longer() {
        let b = breaker(1);
        b.admit().unwrap().record(&timeout());
        // Pretend the backoff is over.
        b.lock().open_until = Some(Instant::now());
        let probe = b.admit().expect("probe admitted");
        assert!(b.admit().is_err(), "a second probe was admitted");
        probe.record(&timeout());
        let backoff = b.lock().backoff;
        assert_eq!(backoff, Duration::from_secs(2));
        b.lock().open_until = Some(Instant::now());
        // A cancelled probe frees the slot.
        drop(b.admit().expect("probe"));
        let probe = b.admit().expect("probe after a cancelled one");
        probe.record(&Err::<(), _>(UpstreamError::NotFound));
        assert!(b.check().is_ok());
        assert!(b.lock().open_until.is_none());
    }

    #[test]
    fn rate_limits_and_refusals_do_not_open_it() {
        let b = breaker(1);
        b.admit()
            .unwrap()
            .record(&Err::<(), _>(UpstreamError::TooManyRequests {
                retry_after: None,
            }));
        b.admit()
            .unwrap()
            .record(&Err::<(), _>(UpstreamError::Status(404, String::new())));
        assert!(b.check().is_ok());
        b.admit()
            .unwrap()
            .record(&Err::<(), _>(UpstreamError::Status(502, String::new())));
        assert!(b.check().is_err());
    }

    #[test]
    fn stalled_bodies_count_broken_ones_do_not() {
        let b = breaker(2);
        b.body_failed(&UpstreamError::Body("reset".into()));
        b.body_failed(&UpstreamError::Timeout("body stalled"));
        assert!(b.check().is_ok());
        b.body_failed(&UpstreamError::Timeout("body stalled"));
        assert!(b.check().is_err());
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(8) && j < Duration::from_secs(12));
        }
    }
}
