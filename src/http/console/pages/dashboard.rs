//! The mirror dashboard: what the cache saves, per upstream, over the last hour (minute bars),
//! day or week (hour bars) from the index's history (plus the minute not yet sampled); each
//! upstream's health from the live counters (requests, errors, 429s, mean latency, Docker
//! Hub's remaining pull allowance, the circuit breaker); cache size against `proxy.maxsize`
//! and evictions; fetches in flight; the most pulled images. Reads counters and the index
//! only: opening it never asks an upstream.

use super::super::chart;
use super::super::{Ctx, fmt};
use super::repo::enc;
use crate::history::sum_where;
use crate::http::body::Body;
use crate::index::{HistoryPoint, Origin, Resolution};
use http::Response;
use maud::html;
use prometheus::core::Collector;

/// The window shown: `hour`, `day` (default) or `week`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Range {
    Hour,
    Day,
    Week,
}

impl Range {
    fn parse(s: Option<&str>) -> Range {
        match s {
            Some("hour") => Range::Hour,
            Some("week") => Range::Week,
            _ => Range::Day,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Range::Hour => "dash.hour",
            Range::Day => "dash.day",
            Range::Week => "dash.week",
        }
    }

    fn param(self) -> &'static str {
        match self {
            Range::Hour => "hour",
            Range::Day => "day",
            Range::Week => "week",
        }
    }

    /// Bucket size and number of bars.
    fn shape(self) -> (Resolution, u64) {
        match self {
            Range::Hour => (Resolution::Minute, 60),
            Range::Day => (Resolution::Hour, 24),
            Range::Week => (Resolution::Hour, 168),
        }
    }
}

/// The bars of `upstream` over `range`, ending with the bucket holding `now`, the unsampled
/// growth added to the last one.
fn series(ctx: &Ctx<'_>, upstream: &str, range: Range, now: u64) -> Vec<(u64, HistoryPoint)> {
    let (res, n) = range.shape();
    let step = res.seconds();
    let current = now - now % step;
    let first = current - step * (n - 1);
    let mut bars: Vec<(u64, HistoryPoint)> = (0..n)
        .map(|i| (first + i * step, HistoryPoint::default()))
        .collect();
    for (at, p) in ctx
        .app
        .depot
        .index
        .history(upstream, res, first)
        .unwrap_or_default()
    {
        if let Some(slot) = at.checked_sub(first).map(|d| (d / step) as usize)
            && let Some(b) = bars.get_mut(slot)
        {
            b.1.add(&p);
        }
    }
    let pending = ctx
        .app
        .history
        .lock()
        .expect("history sampler")
        .pending(&ctx.app.metrics, upstream);
    if let Some(last) = bars.last_mut() {
        last.1.add(&pending);
    }
    bars
}

fn sum(bars: &[(u64, HistoryPoint)]) -> HistoryPoint {
    let mut total = HistoryPoint::default();
    for (_, p) in bars {
        total.add(p);
    }
    total
}

/// Mean of a histogram vector's observations for `upstream`, in seconds.
fn mean_latency(c: &impl Collector, upstream: &str) -> Option<f64> {
    let (mut sum, mut count) = (0.0, 0u64);
    for family in c.collect() {
        for m in family.get_metric() {
            if m.get_label()
                .iter()
                .any(|l| l.name() == "upstream" && l.value() == upstream)
            {
                sum += m.get_histogram().get_sample_sum();
                count += m.get_histogram().get_sample_count();
            }
        }
    }
    (count > 0).then(|| sum / count as f64)
}

pub fn get(ctx: &Ctx<'_>) -> Response<Body> {
    let app = ctx.app;
    let m = &app.metrics;
    let range = Range::parse(ctx.query("range"));
    let now = crate::clock::now_secs();
    let (cached_blobs, cached_bytes) = app.depot.index.totals(Origin::Proxy);
    let evictions = sum_where(&m.evictions, |_| true) as u64;
    // Manifests deleted since they were pulled keep their counts but are not shown.
    let top: Vec<_> = app
        .depot
        .most_pulled(20)
        .unwrap_or_default()
        .into_iter()
        .filter(|(r, d, _)| {
            ctx.may(r, crate::auth::Action::Pull)
                && app.depot.index.manifest(r, d).ok().flatten().is_some()
        })
        .take(10)
        .collect();
    let upstreams = app
        .mirror
        .as_ref()
        .map(|mi| mi.upstream_names())
        .unwrap_or_default();
    let in_flight: i64 = upstreams
        .iter()
        .map(|u| m.upstream_fetches_in_flight.with_label_values(&[u]).get())
        .sum();
    let label = |at: u64| {
        let t = fmt::time_secs(at);
        match range {
            Range::Hour => t[11..16].to_owned(),
            Range::Day => t[11..16].to_owned(),
            Range::Week => t[5..13].to_owned(),
        }
    };
    let content = html! {
        @match &app.mirror {
            None => div.notice { (ctx.t("dash.no_mirror")) },
            Some(mi) if mi.offline() => div.notice { (ctx.t("dash.offline")) },
            Some(_) => {},
        }
        @if app.mirror.is_some() {
            div.grid {
                div.card {
                    div.muted { (ctx.t("dash.cache_size")) }
                    div.stat { (fmt::bytes(cached_bytes)) }
                    div.muted {
                        (cached_blobs) " blobs · " (ctx.t("dash.maxsize")) ": "
                        (app.config.proxy.maxsize.map(fmt::bytes).unwrap_or_else(|| "∞".into()))
                        @if let Some(max) = app.config.proxy.maxsize { " (" (fmt::percent(cached_bytes, max)) ")" }
                    }
                }
                div.card {
                    div.muted { (ctx.t("dash.evictions")) }
                    div.stat { (evictions) }
                    div.muted { (fmt::bytes(m.evicted_bytes.get())) }
                }
                div.card {
                    div.muted { (ctx.t("dash.inflight")) }
                    div.stat { (in_flight) }
                }
            }
            p {
                @for r in [Range::Hour, Range::Day, Range::Week] {
                    @if r == range { strong { (ctx.t(r.key())) } } @else { a href={ "/ui/dashboard?range=" (r.param()) } { (ctx.t(r.key())) } }
                    " "
                }
            }
            @for u in &upstreams {
                @let bars = series(ctx, u, range, now);
                @let total = sum(&bars);
                @let points: Vec<(String, u64, u64)> = bars.iter().map(|(at, p)| (label(*at), p.bytes_cached, p.bytes_fetched)).collect();
                @let remaining = m.upstream_ratelimit_remaining.with_label_values(&[u]).get();
                @let requests = sum_where(&m.upstream_requests, |l| l.get("upstream") == Some(&u.as_str())) as u64;
                @let live = crate::history::totals(m, u);
                div.card {
                    h2 { (ctx.t("dash.upstream")) ": " span.mono { (u) } }
                    div.grid {
                        div { div.muted { (ctx.t("dash.hit_ratio")) } div.stat { (fmt::percent(total.hits, total.hits + total.misses)) } }
                        div { div.muted { (ctx.t("dash.from_cache")) } div.stat { (fmt::bytes(total.bytes_cached)) } }
                        div { div.muted { (ctx.t("dash.fetched")) } div.stat { (fmt::bytes(total.bytes_fetched)) } }
                    }
                    div.legend { span.a {} (ctx.t("dash.from_cache")) span.b {} (ctx.t("dash.fetched")) }
                    (chart::stacked_bars(ctx.t(range.key()), &points, fmt::bytes))
                    table {
                        thead { tr {
                            th.num { (ctx.t("dash.requests")) }
                            th.num { (ctx.t("dash.errors")) }
                            th.num { (ctx.t("dash.throttled")) }
                            th.num { (ctx.t("dash.latency")) }
                            th.num { (ctx.t("dash.allowance")) }
                            th { (ctx.t("dash.breaker")) }
                        } }
                        tbody { tr {
                            td.num { (requests) }
                            td.num { (live.errors) }
                            td.num { (live.throttled) }
                            td.num { (mean_latency(&m.upstream_request_duration, u).map(|s| format!("{:.0} ms", s * 1000.0)).unwrap_or_else(|| "—".into())) }
                            td.num { @if remaining < 0 { (ctx.t("unknown")) } @else { (remaining) } }
                            td { @if m.upstream_breaker_open.with_label_values(&[u]).get() > 0 { span.badge { "open" } } @else { "closed" } }
                        } }
                    }
                }
            }
        }
        h2 { (ctx.t("dash.top")) }
        @if top.is_empty() {
            p.muted { (ctx.t("none")) }
        } @else {
            table {
                thead { tr { th { (ctx.t("repo")) } th { (ctx.t("digest")) } th.num { (ctx.t("pulls")) } th { (ctx.t("last_pulled")) } } }
                tbody {
                    @for (repo, d, p) in &top {
                        tr {
                            td { a href={ "/ui/repo?name=" (enc(repo.as_str())) } { (repo.as_str()) } }
                            td.mono { a href={ "/ui/manifest?name=" (enc(repo.as_str())) "&digest=" (enc(d.as_str())) } { (fmt::short_digest(d.as_str())) } }
                            td.num { (p.count) }
                            td { (fmt::time_ms(p.last).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    ctx.page("/ui/dashboard", ctx.t("nav.dashboard"), content)
}
