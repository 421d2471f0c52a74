//! Observability: the metrics exposition passes `promtool check metrics`; every query of the
//! Grafana dashboard returns data from a real Prometheus scraping stevedore, and the hit ratio
//! it shows is the one the traffic produced; the example configurations pass
//! `stevedore config check`; the health endpoints answer.
//!
//! promtool and prometheus come from Debian's `prometheus` package
//! (scripts/install-test-deps.sh); a missing tool is a failure.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream, Fault};
use crate::common::*;
use bytes::Bytes;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DASHBOARD: &str = "grafana/dashboards/stevedore.json";

/// Metrics the dashboard charts that stevedore's scrape may lack, and why. A query reading
/// only such a metric may come back empty, but only while the metric is really absent.
const MAY_BE_ABSENT: &[(&str, &str)] = &[(
    "stevedore_evictions_total",
    "labelled by reason; no series exists until something is evicted, and nothing evicts yet",
)];

/// Grafana's `$__rate_interval` for the test's 1 s scrape interval: the window is far longer
/// than the test, so every rate covers all of its traffic.
const RATE_INTERVAL: &str = "1m";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The path of `name` on PATH. A missing tool fails the test: the suite's install step
/// (scripts/install-test-deps.sh) provides it.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    assert!(
        found.is_some(),
        "`{name}` is not on PATH: install Debian's `prometheus` package (scripts/install-test-deps.sh)"
    );
    found
}

// ---------------------------------------------------------------- traffic

/// An image stored in the fake upstream.
struct Image {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    digest: String,
    /// Config first, then layers.
    blobs: Vec<(String, Vec<u8>)>,
}

impl Image {
    fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

fn add_image(up: &FakeUpstream, repo: &str, tag: &str, layers: usize, seed: u64) -> Image {
    let config = format!("{{\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let mut blobs = vec![(digest(&config), config)];
    for i in 0..layers {
        let data = random_bytes(2000 + 500 * i, seed * 100 + i as u64);
        blobs.push((digest(&data), data));
    }
    for (_, data) in &blobs {
        up.add_blob(repo, Bytes::from(data.clone()));
    }
    let layer_refs: Vec<(&str, usize)> = blobs[1..]
        .iter()
        .map(|(d, b)| (d.as_str(), b.len()))
        .collect();
    let manifest = image_manifest(OCI_MANIFEST, (&blobs[0].0, blobs[0].1.len()), &layer_refs);
    let digest = up.add_manifest(repo, Some(tag), OCI_MANIFEST, Bytes::from(manifest.clone()));
    Image {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest,
        digest,
        blobs,
    }
}

/// GETs `path`, asserts the status, returns the body.
async fn get(s: &Server, path: &str, status: u16) -> Vec<u8> {
    let r = crate::common::api::get(&s.url(path), Some(OCI_MANIFEST)).await;
    let got = r.status().as_u16();
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        got,
        status,
        "GET {path}: {}\nlog:\n{}",
        String::from_utf8_lossy(&body),
        s.log_text()
    );
    body
}

async fn get_manifest(s: &Server, img: &Image, reference: &str) {
    let body = get(s, &format!("/v2/{}/manifests/{reference}", img.repo), 200).await;
    assert_eq!(body, img.manifest, "manifest {}:{reference}", img.repo);
}

async fn get_blob(s: &Server, img: &Image, i: usize) {
    let (d, data) = &img.blobs[i];
    let body = get(s, &format!("/v2/{}/blobs/{d}", img.repo), 200).await;
    assert!(
        body == *data,
        "blob {d} of {} came back different",
        img.repo
    );
}

/// Waits until `n` proxied blobs in all have been committed to the cache, so that the next GET
/// of one is a plain hit (not a join of a fetch that is still finishing).
async fn wait_cached(s: &Server, n: usize) {
    let ok = eventually(Duration::from_secs(20), || {
        s.log_text().matches("blob fetched and cached").count() >= n
    })
    .await;
    assert!(
        ok,
        "{n} blobs were not cached in time; log:\n{}",
        s.log_text()
    );
}

/// A mirror of a fake Docker-Hub-like upstream that sends rate-limit headers. Tags are
/// revalidated on every pull (tagttl 0), so that an upstream failure turns into a stale serve;
/// `local/` is pushable.
async fn start_mirror() -> (FakeUpstream, Server) {
    let up = FakeUpstream::start(FakeOptions {
        ratelimit_remaining: Some(100),
        ..FakeOptions::default()
    })
    .await;
    let s = Server::mirror(&up.url(), "  tagttl: 0s\n  localprefixes: [local/]\n");
    (up, s)
}

/// Traffic that creates every series the dashboard reads (except evictions): a push and pull
/// of local content, proxied manifest and blob misses and hits, an upstream 500 turned into a
/// stale serve, and client errors.
async fn mixed_traffic(up: &FakeUpstream, s: &Server) {
    let (local_digest, _) = push_image(&s.url(""), "local/app", "v1", 2, 7).await;
    get(s, "/v2/local/app/manifests/v1", 200).await;
    get(s, &format!("/v2/local/app/manifests/{local_digest}"), 200).await;

    let warm = add_image(up, "library/warm", "latest", 1, 11);
    get_manifest(s, &warm, "latest").await; // manifest miss
    get_blob(s, &warm, 0).await; // blob misses
    get_blob(s, &warm, 1).await;
    wait_cached(s, 2).await;
    get_manifest(s, &warm, "latest").await; // revalidated: manifest hit
    get_blob(s, &warm, 1).await; // blob hit

    up.set_fault(Fault::ServerError);
    get_manifest(s, &warm, "latest").await; // stale serve (and hit)
    up.set_fault(Fault::None);
    assert_eq!(
        s.metric("stevedore_stale_serves_total", &[("kind", "manifest")])
            .await,
        1.0,
        "the upstream 500 should have made one stale serve"
    );

    get(s, "/v2/library/warm/manifests/no-such-tag", 404).await;
    let missing = digest(b"not in any registry");
    get(s, &format!("/v2/library/warm/blobs/{missing}"), 404).await;
    get(s, "/v2/local/app/manifests/nope", 404).await;
    get(s, "/not-an-api-path", 404).await;
}

async fn lookups_of(s: &Server, kind: &str, outcome: &str) -> f64 {
    s.metric(
        "stevedore_cache_lookups_total",
        &[("kind", kind), ("outcome", outcome)],
    )
    .await
}

async fn scrape(s: &Server) -> String {
    let r = reqwest::get(s.debug_url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

// ---------------------------------------------------------------- promtool

#[tokio::test]
async fn metrics_exposition_passes_promtool() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let (up, s) = start_mirror().await;
    mixed_traffic(&up, &s).await;
    let text = scrape(&s).await;
    for (name, labels) in [
        ("stevedore_cache_lookups_total", vec![("outcome", "hit")]),
        ("stevedore_cache_lookups_total", vec![("outcome", "miss")]),
        ("stevedore_served_bytes_total", vec![("source", "local")]),
        ("stevedore_errors_total", vec![("code", "MANIFEST_UNKNOWN")]),
        ("stevedore_upstream_requests_total", vec![("status", "500")]),
        ("stevedore_upload_received_bytes_total", vec![]),
    ] {
        assert!(
            metric_value(&text, name, &labels) > 0.0,
            "the traffic should show in {name}{labels:?}:\n{text}"
        );
    }

    let check = |exposition: &str| {
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(exposition.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let (ok, said) = check(&text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics complained:\n{said}\nexposition:\n{text}"
    );
    // The check can fail: a counter without `_total` is a lint error.
    let (ok, said) = check("# HELP bad_bytes b\n# TYPE bad_bytes counter\nbad_bytes 1\n");
    assert!(
        !ok && said.contains("_total"),
        "promtool accepted a bad exposition: {said}"
    );
    up.stop().await;
}

// ---------------------------------------------------------------- Prometheus

/// A Prometheus server scraping one target every second; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Prometheus {
    async fn start(bin: &Path, target: &str) -> Prometheus {
        // The port is found free and then given to Prometheus: another process may take it in
        // between, so a start that fails is retried on a new port.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                     scrape_configs:\n  - job_name: stevedore\n    metrics_path: /metrics\n    \
                     static_configs:\n      - targets: [\"{target}\"]\n"
                ),
            )
            .unwrap();
            let addr = format!("127.0.0.1:{}", free_port());
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn prometheus");
            let mut p = Prometheus {
                child,
                base: format!("http://{addr}"),
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                if let Ok(r) = reqwest::get(format!("{}/-/ready", p.base)).await
                    && r.status() == 200
                {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!("prometheus did not start:\n{}", p.log());
        }
        panic!("prometheus did not start three times");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: each series' labels and value.
    async fn query(&self, expr: &str, time: Option<f64>) -> Vec<(BTreeMap<String, String>, f64)> {
        let mut params = form_urlencoded::Serializer::new(String::new());
        params.append_pair("query", expr);
        if let Some(t) = time {
            params.append_pair("time", &format!("{t:.3}"));
        }
        let url = format!("{}/api/v1/query?{}", self.base, params.finish());
        let v: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert_eq!(v["status"], "success", "query {expr}: {v}");
        let data = &v["data"];
        let number = |pair: &Value| -> f64 {
            match pair[1].as_str().unwrap_or("") {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                s => s.parse().unwrap_or_else(|_| panic!("value in {v}")),
            }
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect();
                    (labels, number(&s["value"]))
                })
                .collect(),
            Some("scalar") => vec![(BTreeMap::new(), number(&data["result"]))],
            other => panic!("query {expr}: unexpected result type {other:?}: {v}"),
        }
    }

    /// The single value of `expr` now (NaN when it has no series).
    async fn value(&self, expr: &str) -> f64 {
        match self.query(expr, None).await.as_slice() {
            [(_, v)] => *v,
            [] => f64::NAN,
            more => panic!("{expr} has {} series", more.len()),
        }
    }

    /// Waits until Prometheus has scraped stevedore with `expr` at `expected`; returns the
    /// timestamp (seconds) of the latest scrape, which shows it.
    async fn wait_for(&self, expr: &str, expected: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = f64::NAN;
        while Instant::now() < deadline {
            last = self.value(expr).await;
            if last == expected {
                return self
                    .value("max(timestamp(stevedore_build_info{job=\"stevedore\"}))")
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let targets = reqwest::get(format!("{}/api/v1/targets", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        panic!(
            "Prometheus never saw {expr} = {expected} (last: {last})\ntargets: {targets}\nlog:\n{}",
            self.log()
        );
    }
}

/// One query of the dashboard.
struct PanelQuery {
    panel: String,
    unit: String,
    ref_id: String,
    expr: String,
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join(DASHBOARD)).expect("read dashboard");
    serde_json::from_str(&text).expect("dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested);
        }
        out.push(p);
    }
    out
}

fn panel_queries(dash: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(PanelQuery {
                panel: p["title"].as_str().unwrap_or("").to_owned(),
                unit: p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                ref_id: t["refId"].as_str().unwrap_or("").to_owned(),
                expr: t["expr"].as_str().expect("target has an expr").to_owned(),
            });
        }
    }
    out
}

/// Replaces Grafana's variables as Grafana would for "All" of every template variable.
fn substitute(expr: &str, dash: &Value, range: &str) -> String {
    let mut vars: Vec<(String, String)> = vec![
        ("__rate_interval".into(), RATE_INTERVAL.into()),
        ("__interval".into(), "15s".into()),
        ("__range".into(), range.into()),
    ];
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let all = v["allValue"]
                .as_str()
                .expect("query variables have allValue");
            vars.push((v["name"].as_str().unwrap().to_owned(), all.to_owned()));
        }
    }
    // Longest names first, so `$__range` is not cut by a shorter name.
    vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = expr.to_owned();
    for (name, value) in &vars {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "unknown Grafana variable left in {out}");
    out
}

/// The `stevedore_*` metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("stevedore_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names in a text exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_prometheus() {
    let Some(bin) = tool("prometheus") else {
        return;
    };
    let (up, s) = start_mirror().await;
    let prom = Prometheus::start(&bin, s.debug_addr.as_deref().expect("debug listener")).await;

    // Phase 1: create every series, and let Prometheus see them.
    mixed_traffic(&up, &s).await;
    let lookups = "sum(stevedore_cache_lookups_total{job=\"stevedore\"})";
    let baseline = s.metric("stevedore_cache_lookups_total", &[]).await;
    let t0 = prom.wait_for(lookups, baseline).await;
    let blob_hits0 = lookups_of(&s, "blob", "hit").await;
    let blob_misses0 = lookups_of(&s, "blob", "miss").await;
    let manifest_hits0 = lookups_of(&s, "manifest", "hit").await;
    let manifest_misses0 = lookups_of(&s, "manifest", "miss").await;
    let cache_bytes0 = s
        .metric("stevedore_served_bytes_total", &[("source", "cache")])
        .await;
    let upstream_bytes0 = s
        .metric("stevedore_upstream_received_bytes_total", &[])
        .await;

    // Phase 2, measured: one image (config + 3 layers) pulled once from the upstream, then
    // its manifest three more times and its blobs twice more from the cache. One request at
    // a time, so no lookup is coalesced.
    let img = add_image(&up, "library/app", "v1", 3, 23);
    get_manifest(&s, &img, &img.tag).await;
    for i in 0..img.blobs.len() {
        get_blob(&s, &img, i).await;
    }
    wait_cached(&s, 2 + img.blobs.len()).await;
    get_manifest(&s, &img, &img.tag).await;
    get_manifest(&s, &img, &img.tag).await;
    get_manifest(&s, &img, &img.digest).await;
    for _ in 0..2 {
        for i in 0..img.blobs.len() {
            get_blob(&s, &img, i).await;
        }
    }
    let (manifest_hits, manifest_misses) = (3.0, 1.0);
    let blobs = img.blobs.len() as f64;
    let (blob_hits, blob_misses) = (2.0 * blobs, blobs);
    let manifest_len = img.manifest.len() as f64;
    let cache_bytes = 2.0 * img.blob_bytes() as f64 + 3.0 * manifest_len;
    let upstream_bytes = img.blob_bytes() as f64 + manifest_len;

    // stevedore counted the traffic it got.
    assert_eq!(lookups_of(&s, "blob", "hit").await - blob_hits0, blob_hits);
    assert_eq!(
        lookups_of(&s, "blob", "miss").await - blob_misses0,
        blob_misses
    );
    assert_eq!(
        lookups_of(&s, "manifest", "hit").await - manifest_hits0,
        manifest_hits
    );
    assert_eq!(
        lookups_of(&s, "manifest", "miss").await - manifest_misses0,
        manifest_misses
    );
    assert_eq!(
        s.metric("stevedore_cache_lookups_total", &[("outcome", "coalesced")])
            .await,
        0.0
    );
    assert_eq!(
        s.metric("stevedore_served_bytes_total", &[("source", "cache")])
            .await
            - cache_bytes0,
        cache_bytes
    );
    assert_eq!(
        s.metric("stevedore_upstream_received_bytes_total", &[])
            .await
            - upstream_bytes0,
        upstream_bytes
    );

    // Prometheus has scraped all of it.
    let total = s.metric("stevedore_cache_lookups_total", &[]).await;
    assert_eq!(
        total,
        baseline + blob_hits + blob_misses + manifest_hits + manifest_misses
    );
    prom.wait_for(lookups, total).await;
    let served = "sum(stevedore_served_bytes_total{job=\"stevedore\",source=\"cache\"})";
    let t1 = prom.wait_for(served, cache_bytes0 + cache_bytes).await;
    let final_scrape = scrape(&s).await;
    let exported = sample_names(&final_scrape);

    // The window (t1 - range, t1] starts 1 ms before the last phase-1 scrape: every series
    // the ratio reads has the same samples in it, so increase() extrapolates each by the same
    // factor and the ratio of two sums of increases is the ratio of the counts.
    let range_ms = ((t1 - t0) * 1000.0).round() as i64 + 1;
    assert!(range_ms > 1, "no scrape between t0 {t0} and t1 {t1}");
    let range = format!("{range_ms}ms");

    let dash = dashboard();
    let queries = panel_queries(&dash);
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    let mut problems = Vec::new();
    let mut results = BTreeMap::new();
    for q in &queries {
        let expr = substitute(&q.expr, &dash, &range);
        let res = prom.query(&expr, Some(t1)).await;
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{}: reads no stevedore metric", q.panel);
        let absent: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        for n in &absent {
            if !MAY_BE_ABSENT.iter().any(|(m, _)| m == n) {
                problems.push(format!(
                    "{} {}: reads {n}, which stevedore does not export",
                    q.panel, q.ref_id
                ));
            }
        }
        if res.is_empty() && !absent.is_empty() {
            eprintln!(
                "!!! panel {:?} is empty: {} not exported ({})",
                q.panel,
                absent
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                MAY_BE_ABSENT
                    .iter()
                    .filter(|(m, _)| absent.iter().any(|a| a == m))
                    .map(|(_, why)| *why)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        } else if !res.iter().any(|(_, v)| v.is_finite()) {
            problems.push(format!(
                "{} {}: no number from {expr}: {res:?}",
                q.panel, q.ref_id
            ));
        } else if q.unit == "percentunit" && !res.iter().all(|(_, v)| (0.0..=1.0).contains(v)) {
            problems.push(format!(
                "{} {}: ratio outside [0, 1] from {expr}: {res:?}",
                q.panel, q.ref_id
            ));
        }
        results.insert((q.panel.clone(), q.ref_id.clone()), res);
    }
    assert!(
        problems.is_empty(),
        "dashboard queries without data:\n{}\nPrometheus log:\n{}",
        problems.join("\n"),
        prom.log()
    );

    // The hit ratio the dashboard shows is the traffic's.
    let ratio = &results[&(
        "Cache hit ratio (selected range)".to_owned(),
        "A".to_owned(),
    )];
    let by_kind: BTreeMap<&str, f64> = ratio
        .iter()
        .map(|(l, v)| (l.get("kind").map(String::as_str).unwrap_or(""), *v))
        .collect();
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-9 * want.abs().max(1.0);
    let want_blob = blob_hits / (blob_hits + blob_misses);
    let want_manifest = manifest_hits / (manifest_hits + manifest_misses);
    assert!(
        by_kind.len() == 2
            && close(by_kind["blob"], want_blob)
            && close(by_kind["manifest"], want_manifest),
        "hit ratio {by_kind:?}, expected blob {want_blob}, manifest {want_manifest}"
    );
    let share = &results[&(
        "Proxied bytes served from cache (selected range)".to_owned(),
        "A".to_owned(),
    )];
    let want_share = cache_bytes / (cache_bytes + upstream_bytes);
    assert!(
        share.len() == 1 && close(share[0].1, want_share),
        "cache share of bytes {share:?}, expected {want_share}"
    );
    // A single increase() is extrapolated by at most 1 ms over a window of at least one 1 s
    // scrape interval: within 0.1 %.
    let saved = &results[&(
        "Bandwidth saved (selected range)".to_owned(),
        "A".to_owned(),
    )];
    assert!(
        saved.len() == 1 && (saved[0].1 - cache_bytes).abs() <= cache_bytes * 1e-3,
        "bytes served from cache {saved:?}, expected {cache_bytes}"
    );

    // The template variables find this job, instance and upstream.
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let def = v["definition"].as_str().unwrap();
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {def} is not label_values(selector, label)"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let selector = substitute(selector.trim(), &dash, &range);
        let mut params = form_urlencoded::Serializer::new(String::new());
        params.append_pair("match[]", &selector);
        let url = format!(
            "{}/api/v1/label/{}/values?{}",
            prom.base,
            label.trim(),
            params.finish()
        );
        let values: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let n = values["data"].as_array().map_or(0, Vec::len);
        assert!(n > 0, "variable {def} finds nothing: {values}");
    }

    drop(prom);
    up.stop().await;
}

// ---------------------------------------------------------------- files

/// Runs `stevedore config check` without the REGISTRY_* overrides of this environment.
fn config_check(path: &Path) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["config", "check"]).arg(path);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run stevedore config check");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn example_configs_pass_config_check() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("config"))
        .expect("config/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "config/ has {files:?}");
    files.push(root().join("deploy/config.yml"));

    // The Kubernetes ConfigMaps' configs are checked as rendered, in deploy.rs.
    let tmp = tempfile::tempdir().unwrap();

    for f in &files {
        let (ok, said) = config_check(f);
        assert!(
            ok && said.contains("configuration is valid"),
            "{}: {said}",
            f.display()
        );
    }
    // The check can fail.
    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "version: 0.1\nproxy:\n  remoteurl: https://x\n  bogus: 1\n",
    )
    .unwrap();
    let (ok, said) = config_check(&bad);
    assert!(!ok && said.contains("bogus"), "a bad config passed: {said}");

    // The compose stack's Prometheus configuration is valid too.
    if let Some(promtool) = tool("promtool") {
        let out = Command::new(promtool)
            .args(["check", "config"])
            .arg(root().join("deploy/prometheus.yml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check config deploy/prometheus.yml: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn dashboard_and_provisioning_are_well_formed() {
    let dash = dashboard();
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "the dashboard needs a DS_PROMETHEUS datasource variable"
    );
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("");
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "duplicate id: {title}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }
    // Every metric the brief asks for has a panel.
    let exprs: String = panel_queries(&dash)
        .iter()
        .map(|q| q.expr.clone())
        .collect();
    for m in [
        "stevedore_cache_lookups_total",
        "stevedore_served_bytes_total",
        "stevedore_upstream_received_bytes_total",
        "stevedore_http_requests_total",
        "stevedore_http_request_duration_seconds_bucket",
        "stevedore_upstream_request_duration_seconds_bucket",
        "stevedore_upstream_requests_total",
        "stevedore_upstream_fetches_in_flight",
        "stevedore_stale_serves_total",
        "stevedore_upstream_ratelimit_remaining",
        "stevedore_storage_bytes",
        "stevedore_storage_blobs",
        "stevedore_evictions_total",
        "stevedore_evicted_bytes_total",
        "stevedore_errors_total",
    ] {
        assert!(exprs.contains(m), "no panel reads {m}");
    }
    for f in [
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/stevedore.yml",
        "deploy/docker-compose.yml",
        "deploy/prometheus.yml",
        "deploy/prometheus-alerts.yml",
    ] {
        let text = std::fs::read_to_string(root().join(f)).unwrap();
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
            .unwrap_or_else(|e| panic!("{f} is not YAML: {e}"));
    }
}

// ---------------------------------------------------------------- health

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let s = Server::start();
    for path in ["/debug/health", "/debug/ready"] {
        let r = reqwest::get(s.debug_url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = reqwest::get(s.debug_url("/debug/nothing")).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(s.debug_url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
}

/// Dashboards never say "No data" (issue 18): right after start-up, before any request, every
/// metric a dashboard query reads is exposed, its series with known labels at 0 (the rate-limit
/// headroom at -1, "not reported yet").
#[tokio::test]
async fn every_dashboard_metric_exists_from_start_up() {
    let (up, s) = start_mirror().await;
    let text = scrape(&s).await;
    let exposed = sample_names(&text);
    let dash = dashboard();
    for q in panel_queries(&dash) {
        for name in metric_names(&q.expr) {
            assert!(
                exposed.contains(&name),
                "panel {:?} reads {name}, not exposed at start-up:\n{text}",
                q.panel
            );
        }
    }
    let upstream = up.url().trim_start_matches("http://").to_owned();
    let zero = [
        ("stevedore_evictions_total", vec![("reason", "size")]),
        ("stevedore_evictions_total", vec![("reason", "age")]),
        (
            "stevedore_stale_serves_total",
            vec![("kind", "manifest"), ("upstream", upstream.as_str())],
        ),
        (
            "stevedore_cache_lookups_total",
            vec![
                ("kind", "blob"),
                ("upstream", upstream.as_str()),
                ("outcome", "hit"),
            ],
        ),
        ("stevedore_errors_total", vec![("code", "BLOB_UNKNOWN")]),
        ("stevedore_served_bytes_total", vec![("source", "cache")]),
    ];
    for (name, labels) in zero {
        assert_eq!(metric_value(&text, name, &labels), 0.0, "{name} {labels:?}");
        assert!(
            text.lines().any(|l| l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))),
            "{name} {labels:?} missing:\n{text}"
        );
    }
    assert_eq!(
        metric_value(
            &text,
            "stevedore_upstream_ratelimit_remaining",
            &[("upstream", upstream.as_str())]
        ),
        -1.0
    );
}
