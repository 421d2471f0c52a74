//! Every Prometheus metric stevedore exports, in one `Metrics` struct, and the text encoder for
//! `/metrics`. Owns metric names and label sets; must not do I/O or know about HTTP types.
//!
//! Names follow Prometheus conventions: base units, `_total` for counters, `_seconds`/`_bytes`.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

/// Buckets for request and upstream latencies, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// What kind of object a cache lookup was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Manifest,
    Blob,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Manifest => "manifest",
            ObjectKind::Blob => "blob",
        }
    }
}

/// The outcome of a cache lookup for proxied content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache without asking the upstream for content.
    Hit,
    /// Fetched from the upstream by this request.
    Miss,
    /// Joined a fetch another request had already started.
    Coalesced,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Coalesced => "coalesced",
        }
    }
}

/// Where the bytes of a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Content pushed to this registry.
    Local,
    /// Proxied content already in the cache.
    Cache,
    /// Proxied content streamed in from the upstream during this request.
    Upstream,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Cache => "cache",
            Source::Upstream => "upstream",
        }
    }
}

/// The `method` label of an HTTP method (as sent): one of a fixed set, so that clients sending
/// made-up methods cannot create series without end.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub http_parked: IntGauge,
    pub cache_lookups: IntCounterVec,
    pub served_bytes: IntCounterVec,
    pub cache_served_bytes: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_request_duration: HistogramVec,
    pub upstream_bytes: IntCounterVec,
    pub upstream_fetches_in_flight: IntGaugeVec,
    pub upstream_ratelimit_remaining: IntGaugeVec,
    pub stale_serves: IntCounterVec,
    pub upstream_breaker_open: IntGaugeVec,
    pub upstream_breaker_transitions: IntCounterVec,
    pub upstream_queued: IntGaugeVec,
    pub background_revalidations: IntCounterVec,
    pub proxy_offline: IntGauge,
    pub peers: IntGaugeVec,
    pub peer_forwards: IntCounterVec,
    pub peer_fallbacks: IntCounter,
    pub proxy_policy_refusals: IntCounterVec,
    pub storage_bytes: IntGaugeVec,
    pub storage_blobs: IntGaugeVec,
    pub evictions: IntCounterVec,
    pub evicted_bytes: IntCounter,
    pub gc_runs: IntCounter,
    pub upload_bytes: IntCounter,
    pub errors: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub layer_info_lookups: IntCounterVec,
    /// Requests for repository metadata (links, tags, cached markers) to a shared bucket.
    pub bucket_metadata_ops: IntCounterVec,
    pub verify_failures: IntCounter,
    pub startup_duration: Histogram,
    pub warm_runs: IntCounterVec,
    pub warm_images: IntCounterVec,
    pub warm_blobs: IntCounterVec,
    pub warm_bytes: IntCounter,
    pub cooldown_decisions: IntCounterVec,
    pub notify_queued: IntCounterVec,
    pub notify_sent: IntCounterVec,
    pub notify_failed: IntCounterVec,
    pub notify_dropped: IntCounterVec,
    pub notify_dead_lettered: IntCounterVec,
    pub notify_queue_depth: IntGaugeVec,
    pub notify_oldest_age: GaugeVec,
    pub notify_delivery_duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition is valid");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric registered once");
                m
            }};
        }
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        let metrics = Metrics {
            http_requests: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_http_requests_total",
                    "HTTP requests answered, by method, API endpoint and status code."
                ),
                &["method", "endpoint", "status"]
            )),
            http_request_duration: reg!(HistogramVec::new(
                latency(
                    "stevedore_http_request_duration_seconds",
                    "Time from request to response headers, by method and API endpoint."
                ),
                &["method", "endpoint"]
            )),
            http_in_flight: reg!(IntGauge::new(
                "stevedore_http_requests_in_flight",
                "HTTP requests being handled now."
            )),
            http_parked: reg!(IntGauge::new(
                "stevedore_http_connections_parked",
                "Idle HTTP/1 keep-alive connections parked outside hyper, holding no buffers."
            )),
            cache_lookups: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_cache_lookups_total",
                    "Lookups of proxied content, by kind (manifest, blob), upstream and outcome (hit, miss, coalesced)."
                ),
                &["kind", "upstream", "outcome"]
            )),
            served_bytes: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_served_bytes_total",
                    "Blob and manifest bytes sent to clients, by source (local, cache, upstream)."
                ),
                &["source"]
            )),
            cache_served_bytes: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_cache_served_bytes_total",
                    "Proxied bytes sent to clients from the cache, by upstream (the console's \"served from cache\")."
                ),
                &["upstream"]
            )),
            upstream_requests: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_upstream_requests_total",
                    "Requests sent to upstream registries, by upstream, operation and status code (\"error\" when no answer came)."
                ),
                &["upstream", "operation", "status"]
            )),
            upstream_request_duration: reg!(HistogramVec::new(
                latency(
                    "stevedore_upstream_request_duration_seconds",
                    "Time until an upstream answered with its headers, by upstream and operation."
                ),
                &["upstream", "operation"]
            )),
            upstream_bytes: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_upstream_received_bytes_total",
                    "Blob and manifest bytes received from upstream registries."
                ),
                &["upstream"]
            )),
            upstream_fetches_in_flight: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_upstream_fetches_in_flight",
                    "Blob fetches from an upstream under way now."
                ),
                &["upstream"]
            )),
            upstream_ratelimit_remaining: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_upstream_ratelimit_remaining",
                    "Pulls the upstream says are left in its window, from its ratelimit-remaining header (Docker Hub); -1 until it has sent one."
                ),
                &["upstream"]
            )),
            stale_serves: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_stale_serves_total",
                    "Cached content served because the upstream could not be asked, by reason (timeout, unreachable, breaker_open, offline, 429, 5xx, error)."
                ),
                &["kind", "upstream", "reason"]
            )),
            upstream_breaker_open: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_upstream_breaker_open",
                    "1 while an upstream's circuit breaker is open or half-open (requests are not sent), else 0."
                ),
                &["upstream"]
            )),
            upstream_breaker_transitions: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_upstream_breaker_transitions_total",
                    "Circuit breaker state changes, by upstream and new state (open, half_open, closed)."
                ),
                &["upstream", "state"]
            )),
            upstream_queued: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_upstream_queued_requests",
                    "Requests waiting for one of an upstream's proxy.maxfetches slots."
                ),
                &["upstream"]
            )),
            background_revalidations: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_background_revalidations_total",
                    "Tag revalidations that outlived proxy.revalidatetimeout and finished in the background, by outcome (current, moved, gone, failed)."
                ),
                &["upstream", "outcome"]
            )),
            proxy_policy_refusals: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_proxy_policy_refusals_total",
                    "Requests for proxied repositories refused by proxy allow/deny rules, by upstream and proxy.policy.mode (enforce = answered 403, audit = served anyway)."
                ),
                &["upstream", "mode"]
            )),
            proxy_offline: reg!(IntGauge::new(
                "stevedore_proxy_offline",
                "1 while the mirror is offline (proxy.offline or the debug toggle), else 0."
            )),
            peers: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_peers",
                    "Other replicas of this mirror (proxy.peers), by state (up, down)."
                ),
                &["state"]
            )),
            peer_forwards: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_peer_forwards_total",
                    "Upstream requests sent to the replica that owns the content instead, by kind (blob, manifest) and outcome (ok, failed)."
                ),
                &["kind", "outcome"]
            )),
            peer_fallbacks: reg!(IntCounter::new(
                "stevedore_peer_fallbacks_total",
                "Blob fetches that lost their owner replica mid-way and went on from another source."
            )),
            storage_bytes: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_storage_bytes",
                    "Bytes of blobs and manifests on disk, by origin (local = pushed, proxy = cached)."
                ),
                &["origin"]
            )),
            storage_blobs: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_storage_blobs",
                    "Blobs and manifests on disk, by origin (local = pushed, proxy = cached)."
                ),
                &["origin"]
            )),
            evictions: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_evictions_total",
                    "Cached blobs removed, by reason (size, age)."
                ),
                &["reason"]
            )),
            evicted_bytes: reg!(IntCounter::new(
                "stevedore_evicted_bytes_total",
                "Bytes of cached blobs removed by eviction."
            )),
            gc_runs: reg!(IntCounter::new(
                "stevedore_gc_runs_total",
                "Garbage collection runs completed."
            )),
            upload_bytes: reg!(IntCounter::new(
                "stevedore_upload_received_bytes_total",
                "Bytes received in blob uploads."
            )),
            errors: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_errors_total",
                    "Error responses, by OCI error code."
                ),
                &["code"]
            )),
            build_info: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_build_info",
                    "Always 1; labels carry the version."
                ),
                &["version"]
            )),
            bucket_metadata_ops: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_bucket_metadata_operations_total",
                    "Requests for repository metadata (tags, manifest and blob links, cached markers) to the storage.s3 bucket, by op (read, write, delete, list) and outcome (ok, error)."
                ),
                &["op", "outcome"]
            )),
            layer_info_lookups: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_layer_info_lookups_total",
                    "Lookups of blob size and type, by outcome (memory = answered by the in-memory cache, redis = by the shared Redis, index, absent)."
                ),
                &["outcome"]
            )),
            verify_failures: reg!(IntCounter::new(
                "stevedore_digest_mismatches_total",
                "Blobs refused because their bytes did not match their digest."
            )),
            startup_duration: reg!(Histogram::with_opts(HistogramOpts::new(
                "stevedore_startup_duration_seconds",
                "Time taken to open and recover the store at start-up."
            ))),
            warm_runs: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_warm_runs_total",
                    "Warm-list runs, by trigger (start, schedule, request)."
                ),
                &["trigger"]
            )),
            warm_images: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_warm_images_total",
                    "Images of warm lists warmed, by outcome (ok, failed)."
                ),
                &["outcome"]
            )),
            warm_blobs: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_warm_blobs_total",
                    "Blobs of warmed images, by outcome (fetched, cached = there already)."
                ),
                &["outcome"]
            )),
            warm_bytes: reg!(IntCounter::new(
                "stevedore_warm_fetched_bytes_total",
                "Bytes of blobs fetched by warm runs."
            )),
            cooldown_decisions: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_cooldown_decisions_total",
                    "Tags whose upstream digest was younger than proxy.cooldown, by decision (held = the previous digest served, refused = none to serve, admitted = old enough)."
                ),
                &["upstream", "decision"]
            )),
            notify_queued: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_notification_events_queued_total",
                    "Events queued for a notification endpoint (dropped ones included), by endpoint."
                ),
                &["endpoint"]
            )),
            notify_sent: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_notification_events_sent_total",
                    "Events a notification endpoint accepted (2xx or 3xx), by endpoint."
                ),
                &["endpoint"]
            )),
            notify_failed: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_notification_attempts_failed_total",
                    "Failed delivery attempts, by endpoint and status code (\"error\" when no answer came)."
                ),
                &["endpoint", "status"]
            )),
            notify_dropped: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_notification_events_dropped_total",
                    "Events dropped because an endpoint's queue was full, by endpoint."
                ),
                &["endpoint"]
            )),
            notify_dead_lettered: reg!(IntCounterVec::new(
                Opts::new(
                    "stevedore_notification_events_dead_lettered_total",
                    "Events an endpoint refused (4xx) maxattempts times and that were set aside, by endpoint."
                ),
                &["endpoint"]
            )),
            notify_queue_depth: reg!(IntGaugeVec::new(
                Opts::new(
                    "stevedore_notification_queue_depth",
                    "Events waiting for (or in) delivery, by endpoint."
                ),
                &["endpoint"]
            )),
            notify_oldest_age: reg!(GaugeVec::new(
                Opts::new(
                    "stevedore_notification_oldest_pending_age_seconds",
                    "Age of the oldest event not yet delivered (0 when none), by endpoint."
                ),
                &["endpoint"]
            )),
            notify_delivery_duration: reg!(HistogramVec::new(
                latency(
                    "stevedore_notification_delivery_duration_seconds",
                    "Time from an event's queueing to its acceptance by the endpoint, by endpoint."
                ),
                &["endpoint"]
            )),
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics.init_known_labels();
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, …
        let _ = metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics cannot fail");
        buf
    }

    /// Creates, at zero, every series whose label values are known before any event, so that
    /// dashboards show 0 rather than "No data" on a fresh install (Prometheus' instrumentation
    /// guide). Per-upstream series are created by [`Metrics::init_upstream`].
    fn init_known_labels(&self) {
        for reason in ["size", "age"] {
            self.evictions.with_label_values(&[reason]);
        }
        for source in [Source::Local, Source::Cache, Source::Upstream] {
            self.served_bytes.with_label_values(&[source.as_str()]);
        }
        for origin in ["local", "proxy"] {
            self.storage_bytes.with_label_values(&[origin]);
            self.storage_blobs.with_label_values(&[origin]);
        }
        for outcome in ["memory", "index", "absent"] {
            self.layer_info_lookups.with_label_values(&[outcome]);
        }
        for op in ["read", "write", "delete", "list"] {
            for outcome in ["ok", "error"] {
                self.bucket_metadata_ops.with_label_values(&[op, outcome]);
            }
        }
        for code in crate::error::ErrorCode::ALL {
            self.errors.with_label_values(&[code.as_str()]);
        }
    }

    /// Creates the series of one HTTP endpoint (its method, label and success status) at zero.
    pub fn init_endpoint(&self, method: &str, endpoint: &str, status: &str) {
        self.http_requests
            .with_label_values(&[method, endpoint, status]);
        self.http_request_duration
            .with_label_values(&[method, endpoint]);
    }

    /// Creates the series of upstream `name` at zero (breaker, queue and background
    /// revalidations included): cache lookups of each kind and outcome,
    /// stale serves, bytes, fetches, and each operation (`operations`) with a 200 status. The
    /// rate-limit headroom starts at -1, "not reported yet": 0 would claim the limit is hit.
    pub fn init_upstream(&self, name: &str, operations: &[&str]) {
        for kind in [ObjectKind::Manifest, ObjectKind::Blob] {
            for outcome in [Outcome::Hit, Outcome::Miss, Outcome::Coalesced] {
                self.cache_lookups
                    .with_label_values(&[kind.as_str(), name, outcome.as_str()]);
            }
            for reason in STALE_REASONS {
                self.stale_serves
                    .with_label_values(&[kind.as_str(), name, reason]);
            }
        }
        self.upstream_breaker_open.with_label_values(&[name]);
        for state in BREAKER_STATES {
            self.upstream_breaker_transitions
                .with_label_values(&[name, state]);
        }
        self.upstream_queued.with_label_values(&[name]);
        for outcome in REVALIDATION_OUTCOMES {
            self.background_revalidations
                .with_label_values(&[name, outcome]);
        }
        self.upstream_bytes.with_label_values(&[name]);
        self.cache_served_bytes.with_label_values(&[name]);
        self.upstream_fetches_in_flight.with_label_values(&[name]);
        let headroom = self.upstream_ratelimit_remaining.with_label_values(&[name]);
        if headroom.get() == 0 {
            headroom.set(-1);
        }
        for op in operations {
            self.upstream_requests.with_label_values(&[name, op, "200"]);
            self.upstream_request_duration
                .with_label_values(&[name, op]);
        }
    }

    pub fn cache_lookup(&self, kind: ObjectKind, upstream: &str, outcome: Outcome) {
        self.cache_lookups
            .with_label_values(&[kind.as_str(), upstream, outcome.as_str()])
            .inc();
    }

    pub fn served(&self, source: Source, bytes: u64) {
        self.served_bytes
            .with_label_values(&[source.as_str()])
            .inc_by(bytes);
    }

    pub fn upstream_answer(&self, upstream: &str, operation: &str, status: &str, took: Duration) {
        self.upstream_requests
            .with_label_values(&[upstream, operation, status])
            .inc();
        self.upstream_request_duration
            .with_label_values(&[upstream, operation])
            .observe(took.as_secs_f64());
    }

    pub fn stale(&self, kind: ObjectKind, upstream: &str, reason: &str) {
        self.stale_serves
            .with_label_values(&[kind.as_str(), upstream, reason])
            .inc();
    }
}

/// Values of the `reason` label of `stevedore_stale_serves_total`.
pub const STALE_REASONS: [&str; 8] = [
    "timeout",
    "unreachable",
    "breaker_open",
    "offline",
    "429",
    "5xx",
    "error",
    "not_found",
];
/// Values of the `state` label of `stevedore_upstream_breaker_transitions_total`.
pub const BREAKER_STATES: [&str; 3] = ["open", "half_open", "closed"];
/// Values of the `outcome` label of `stevedore_background_revalidations_total`.
pub const REVALIDATION_OUTCOMES: [&str; 5] = ["current", "moved", "held", "gone", "failed"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_fixed_set() {
        let known = [
            "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "other",
        ];
        for m in ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"] {
            assert_eq!(method_label(m), m);
        }
        for m in [
            "CONNECT",
            "TRACE",
            "PROPFIND",
            "BREW",
            "get",
            "X-RANDOM-1234",
        ] {
            let label = method_label(m);
            assert_eq!(label, "other", "{m}");
            assert!(known.contains(&label));
        }
    }
}
