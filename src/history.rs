//! The mirror dashboard's history (issue 15): once a minute, what each upstream's counters
//! grew by — cache hits and misses, bytes served from the cache and fetched, failed and
//! throttled upstream requests — is added to the index's history section (minute and hour
//! buckets, bounded there). It reads the Prometheus counters only, so the request path does
//! nothing for it; a stop loses at most the minute under way. It never talks to an upstream.

use crate::index::{HistoryPoint, Index, IndexError};
use crate::metrics::Metrics;
use prometheus::core::Collector;
use std::collections::HashMap;

/// The sum of the samples of a counter vector whose labels satisfy `keep`.
pub fn sum_where(c: &impl Collector, keep: impl Fn(&HashMap<&str, &str>) -> bool) -> f64 {
    let mut total = 0.0;
    for family in c.collect() {
        for m in family.get_metric() {
            let labels: HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if keep(&labels) {
                total += m.get_counter().value();
            }
        }
    }
    total
}

/// `upstream`'s counters since the process started.
pub fn totals(metrics: &Metrics, upstream: &str) -> HistoryPoint {
    let is = |l: &HashMap<&str, &str>, k: &str, v: &str| l.get(k) == Some(&v);
    let lookups = |outcomes: &[&str]| {
        sum_where(&metrics.cache_lookups, |l| {
            is(l, "upstream", upstream) && outcomes.iter().any(|o| is(l, "outcome", o))
        }) as u64
    };
    let requests = |f: &dyn Fn(&str) -> bool| {
        sum_where(&metrics.upstream_requests, |l| {
            is(l, "upstream", upstream) && l.get("status").is_some_and(|s| f(s))
        }) as u64
    };
    HistoryPoint {
        hits: lookups(&["hit"]),
        misses: lookups(&["miss", "coalesced"]),
        bytes_cached: metrics
            .cache_served_bytes
            .with_label_values(&[upstream])
            .get(),
        bytes_fetched: metrics.upstream_bytes.with_label_values(&[upstream]).get(),
        errors: requests(&|s| s == "error" || s.starts_with('5')),
        throttled: requests(&|s| s == "429"),
    }
}

/// Turns running totals into per-minute growth.
#[derive(Default)]
pub struct Sampler {
    last: HashMap<String, HistoryPoint>,
}

impl Sampler {
    /// What `upstream` did since the last sample (not in the index yet).
    pub fn pending(&self, metrics: &Metrics, upstream: &str) -> HistoryPoint {
        let t = totals(metrics, upstream);
        let before = self.last.get(upstream).copied().unwrap_or_default();
        growth(&before, &t)
    }

    /// Records what each of `upstreams` did since the last call, at `now` (seconds).
    pub fn sample(
        &mut self,
        metrics: &Metrics,
        index: &Index,
        upstreams: &[String],
        now: u64,
    ) -> Result<(), IndexError> {
        for u in upstreams {
            let t = totals(metrics, u);
            let before = self.last.insert(u.clone(), t).unwrap_or_default();
            let grew = growth(&before, &t);
            if grew != HistoryPoint::default() {
                index.record_history(u, now, &grew)?;
            }
        }
        Ok(())
    }
}

fn growth(before: &HistoryPoint, now: &HistoryPoint) -> HistoryPoint {
    HistoryPoint {
        hits: now.hits.saturating_sub(before.hits),
        misses: now.misses.saturating_sub(before.misses),
        bytes_cached: now.bytes_cached.saturating_sub(before.bytes_cached),
        bytes_fetched: now.bytes_fetched.saturating_sub(before.bytes_fetched),
        errors: now.errors.saturating_sub(before.errors),
        throttled: now.throttled.saturating_sub(before.throttled),
    }
}
