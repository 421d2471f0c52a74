//! Issue 14, the emitting side: which operation sends which event, checked against the real
//! distribution. The same operations (`golden_ops`: blob pushes, manifest pushes by tag, GET and
//! HEAD of a manifest and a blob, a cross-repository mount, a manifest DELETE that takes two
//! tags with it, a blob DELETE; and skopeo copy/inspect/delete) are run against
//! `docker-registry` (distribution 2.8) and stevedore, each configured with the same
//! `auth` and `notifications` blocks pointing at a recording receiver; the events must be the
//! same, in the same order, with the same keys and values except ids, timestamps, addresses and
//! `source`, and the same headers. `fixtures/notifications-distribution-2.8.json` keeps
//! distribution's events of `golden_ops` (the v1 shape), checked without `docker-registry` too.

use crate::common::api::{get, head};
use crate::common::fake_upstream::{FakeOptions, FakeUpstream, Fault};
use crate::common::receiver::{Received, Receiver};
use crate::common::refreg::RefRegistry;
use crate::common::tools::{require, skopeo_ok};
use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const USER: &str = "testuser";
const PASSWORD: &str = "testpassword";
/// The fixture was captured with curl: the same `User-Agent` keeps `request.useragent` equal.
const UA: &str = "curl/7.88.1";
const WAIT: Duration = Duration::from_secs(30);

/// The `auth` and `notifications` blocks both registries get (`htpasswd` at `dir`).
fn shared_yaml(dir: &Path, receiver: &str) -> String {
    let path = dir.join("htpasswd");
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    std::fs::write(&path, format!("{USER}:{hash}\n")).expect("write htpasswd");
    format!(
        "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\nnotifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: listener\n      url: {receiver}/api/notification\n      headers:\n        Authorization: [Bearer abc]\n      timeout: 500ms\n      threshold: 5\n      backoff: 1s\n",
        path.display()
    )
}

fn sha256(data: &[u8]) -> String {
    digest(data)
}

const CONFIG: &str =
    r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
const LAYER: &[u8] = b"layer-bytes-xyz";

/// The operations the fixture was captured with, against `base` (`http://host:port`).
async fn golden_ops(base: &str) {
    let c = client();
    let auth =
        |r: reqwest::RequestBuilder| r.basic_auth(USER, Some(PASSWORD)).header("user-agent", UA);
    let (dc, dl) = (sha256(CONFIG.as_bytes()), sha256(LAYER));
    for data in [CONFIG.as_bytes(), LAYER] {
        upload(base, "a/b", data).await;
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{dc}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{dl}","size":{}}}]}}"#,
        CONFIG.len(),
        LAYER.len()
    );
    let dm = sha256(manifest.as_bytes());
    for tag in ["v1", "v2"] {
        let r = send(
            auth(c.put(format!("{base}/v2/a/b/manifests/{tag}")))
                .header("content-type", OCI_MANIFEST)
                .body(manifest.clone()),
        )
        .await;
        assert_eq!(r.status(), 201, "PUT manifest {tag}");
    }
    let r = send(auth(c.get(format!("{base}/v2/a/b/manifests/v1"))).header("accept", OCI_MANIFEST))
        .await;
    assert_eq!(r.status(), 200);
    let r =
        send(auth(c.head(format!("{base}/v2/a/b/manifests/{dm}"))).header("accept", OCI_MANIFEST))
            .await;
    assert_eq!(r.status(), 200);
    let r = send(auth(c.get(format!("{base}/v2/a/b/blobs/{dl}")))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), LAYER);
    let r = send(auth(c.head(format!("{base}/v2/a/b/blobs/{dl}")))).await;
    assert_eq!(r.status(), 200);
    let r = send(auth(
        c.post(format!("{base}/v2/c/d/blobs/uploads/?mount={dl}&from=a/b")),
    ))
    .await;
    assert_eq!(r.status(), 201, "mount");
    let r = send(auth(c.delete(format!("{base}/v2/a/b/manifests/{dm}")))).await;
    assert_eq!(r.status(), 202, "DELETE manifest");
    let r = send(auth(c.delete(format!("{base}/v2/c/d/blobs/{dl}")))).await;
    assert_eq!(r.status(), 202, "DELETE blob");
}

/// Pushes `data` into `repo` with a POST and a PUT (distribution 2.8 has no single-POST
/// upload), as the test user.
async fn upload(base: &str, repo: &str, data: &[u8]) {
    let c = client();
    let auth =
        |r: reqwest::RequestBuilder| r.basic_auth(USER, Some(PASSWORD)).header("user-agent", UA);
    let r = send(auth(c.post(format!("{base}/v2/{repo}/blobs/uploads/")))).await;
    assert_eq!(r.status(), 202, "start upload");
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let loc = if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = send(
        auth(c.put(format!("{loc}{sep}digest={}", sha256(data))))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec()),
    )
    .await;
    assert_eq!(r.status(), 201, "finish upload");
}

/// How many events `golden_ops` sends.
const GOLDEN_EVENTS: usize = 13;

/// An event with what legitimately differs between two runs replaced by placeholders (after
/// checking it has the right form): ids, timestamp, client address, `source`, and the
/// registry's `host:port` in `request.host` and `target.url`.
fn normalize(event: &Value, registry_host: &str) -> Value {
    let mut e = event.clone();
    let uuid = |v: &Value, what: &str| {
        let s = v
            .as_str()
            .unwrap_or_else(|| panic!("{what} is a string: {event}"));
        assert!(uuid::Uuid::parse_str(s).is_ok(), "{what} is a UUID: {s}");
    };
    uuid(&e["id"], "id");
    e["id"] = json!("<id>");
    let ts = e["timestamp"].as_str().expect("timestamp").to_owned();
    assert!(
        ts.ends_with('Z') && ts.len() >= 20 && ts.as_bytes()[10] == b'T',
        "timestamp in UTC RFC 3339: {ts}"
    );
    e["timestamp"] = json!("<timestamp>");
    uuid(&e["request"]["id"], "request.id");
    e["request"]["id"] = json!("<id>");
    let addr = e["request"]["addr"].as_str().expect("request.addr");
    assert!(addr.starts_with("127.0.0.1:"), "request.addr: {addr}");
    e["request"]["addr"] = json!("<addr>");
    assert_eq!(e["request"]["host"], json!(registry_host), "request.host");
    e["request"]["host"] = json!("<registry>");
    if let Some(url) = e["target"]["url"].as_str() {
        let url = url.replace(registry_host, "<registry>");
        e["target"]["url"] = json!(url);
    }
    let source = &e["source"];
    assert!(
        source["addr"].as_str().is_some_and(|s| !s.is_empty())
            && source["instanceID"].as_str().is_some_and(|s| !s.is_empty()),
        "source: {source}"
    );
    e["source"] = json!("<source>");
    e
}

/// The events of `recorded` (one per POST, as distribution sends them), normalized.
fn events(recorded: &[Received], registry_host: &str) -> Vec<Value> {
    recorded
        .iter()
        .map(|r| {
            let events = r.events();
            assert_eq!(events.len(), 1, "one event per POST: {events:?}");
            normalize(&events[0], registry_host)
        })
        .collect()
}

/// The fixture's envelopes and headers.
fn fixture() -> (Vec<Value>, Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/notifications-distribution-2.8.json");
    let f: Value = serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("JSON");
    let events = f["envelopes"]
        .as_array()
        .expect("envelopes")
        .iter()
        .map(|env| {
            let e = &env["events"][0];
            let host = e["request"]["host"].as_str().expect("host").to_owned();
            normalize(e, &host)
        })
        .collect();
    (events, f["headers"].clone())
}

/// Compares two lists of events one by one, for a readable failure.
fn assert_same_events(ours: &[Value], theirs: &[Value], what: &str) {
    let actions = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|e| {
                let t = &e["target"];
                format!(
                    "{} {} {} {} {}",
                    e["action"], e["request"]["method"], t["repository"], t["digest"], t["tag"]
                )
            })
            .collect()
    };
    assert_eq!(actions(ours), actions(theirs), "{what}: actions in order");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(
            a,
            b,
            "{what}: event {i}\nours:   {}\ntheirs: {}",
            serde_json::to_string_pretty(a).unwrap(),
            serde_json::to_string_pretty(b).unwrap()
        );
    }
}

/// The headers a receiver sees, compared one by one with distribution's: the same names
/// (`Host` aside), the same values except two that Go's HTTP client sets by itself: its
/// `User-Agent` (ours names stevedore) and `Accept-Encoding: gzip` (a transport detail: a
/// webhook's answer is read and dropped, nothing asks for it compressed).
fn assert_same_headers(ours: &Received, theirs: &Value) {
    let theirs = theirs.as_object().expect("headers");
    for (name, want) in theirs {
        let got = ours.header(name);
        match name.to_ascii_lowercase().as_str() {
            "user-agent" => assert!(
                got.is_some_and(|ua| ua.starts_with("stevedore/")),
                "User-Agent: {got:?}"
            ),
            "accept-encoding" => {}
            _ => assert_eq!(
                got,
                want.as_str(),
                "header {name}: ours {got:?}, distribution's {want}"
            ),
        }
    }
    assert_eq!(
        ours.header("content-length"),
        Some(ours.body.len().to_string().as_str()),
        "Content-Length"
    );
    for name in ours.headers.keys() {
        assert!(
            name == "host"
                || name == "content-length"
                || theirs.keys().any(|k| k.eq_ignore_ascii_case(name)),
            "ours has a header distribution does not send: {name}"
        );
    }
}

fn stevedore(dir: &Path, receiver: &Receiver) -> Server {
    Server::start_with(Options {
        extra_yaml: format!(
            "storage:\n  delete:\n    enabled: true\n{}",
            shared_yaml(dir, &receiver.url(""))
        ),
        ..Options::default()
    })
}

/// stevedore's events of `golden_ops` are the fixture's, header by header.
#[tokio::test]
async fn golden_ops_send_distributions_events() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let s = stevedore(dir.path(), &receiver);
    golden_ops(&s.url("")).await;
    let got = arrived(&receiver, GOLDEN_EVENTS).await;
    let (want, headers) = fixture();
    assert_same_events(&events(&got, s.host()), &want, "stevedore vs fixture");
    for r in &got {
        assert_same_headers(r, &headers);
    }
}

/// Live against `docker-registry`: the same operations, with skopeo too, send the same events.
#[tokio::test]
async fn same_events_as_distribution_live() {
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let (theirs_rx, ours_rx) = (Receiver::start().await, Receiver::start().await);
    let reference = RefRegistry::start_with(&shared_yaml(dir.path(), &theirs_rx.url("")));

    // golden_ops: distribution's events are still the fixture's (the fixture did not drift),
    // and ours are theirs.
    golden_ops(&reference.url()).await;
    let theirs = arrived(&theirs_rx, GOLDEN_EVENTS).await;
    let (fixture_events, headers) = fixture();
    let theirs_n = events(&theirs, &reference.addr);
    assert_same_events(&theirs_n, &fixture_events, "distribution vs fixture");
    let s = stevedore(dir.path(), &ours_rx);
    golden_ops(&s.url("")).await;
    let ours = arrived(&ours_rx, GOLDEN_EVENTS).await;
    assert_same_events(
        &events(&ours, s.host()),
        &theirs_n,
        "stevedore vs distribution",
    );

    // skopeo: copy an image in, inspect it, delete it.
    let t = dir.path();
    let src = t.join("src");
    let mut l = oci_layout::Layout::create(&src);
    let layers: Vec<_> = (0..2).map(|i| l.add_layer(40 + i, 1, 10_000)).collect();
    let img = l.add_image("amd64", &layers);
    l.tag(&img.manifest, "v1");
    let creds = format!("{USER}:{PASSWORD}");
    for host in [reference.addr.as_str(), s.host()] {
        let dest = format!("docker://{host}/e/f:v1");
        skopeo_ok(
            t,
            &[
                "copy",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--dest-creds",
                &creds,
                &format!("oci:{}:v1", src.display()),
                &dest,
            ],
        );
        skopeo_ok(
            t,
            &["inspect", "--tls-verify=false", "--creds", &creds, &dest],
        );
        skopeo_ok(
            t,
            &["delete", "--tls-verify=false", "--creds", &creds, &dest],
        );
        // Delivery keeps the order: once this push's event is in, skopeo's are.
        upload(&format!("http://{host}"), "zz/sentinel", b"s").await;
    }
    let theirs = until_sentinel(&theirs_rx).await;
    let ours = until_sentinel(&ours_rx).await;
    let useragent = |e: &mut Value| e["request"]["useragent"] = json!("<skopeo>");
    let mut theirs_n = events(&theirs[GOLDEN_EVENTS..], &reference.addr);
    let mut ours_n = events(&ours[GOLDEN_EVENTS..], s.host());
    theirs_n.iter_mut().for_each(useragent);
    ours_n.iter_mut().for_each(useragent);
    // skopeo sometimes uploads a blob twice (seen against distribution): two PUTs, two pushes
    // of one blob, which says nothing of the registry; keep each blob push once.
    let once = |v: &mut Vec<Value>| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|e| {
            let blob_push =
                e["action"] == "push" && e["target"]["mediaType"] == "application/octet-stream";
            !blob_push || seen.insert(e["target"]["digest"].to_string())
        });
    };
    once(&mut theirs_n);
    once(&mut ours_n);
    // At least: 3 blob pushes and a manifest push, 2 pulls (inspect), a pull and 2 deletes.
    assert!(theirs_n.len() >= 9, "skopeo's events: {theirs_n:#?}");
    assert_same_events(&ours_n, &theirs_n, "skopeo: stevedore vs distribution");
    for r in ours.iter() {
        assert_same_headers(r, &headers);
    }
}

/// Waits for `n` delivered events; all of them so far.
async fn arrived(receiver: &Receiver, n: usize) -> Vec<Received> {
    let ok = receiver.wait_for(n, WAIT).await;
    let got = receiver.accepted();
    assert!(ok, "{} of {n} events arrived: {got:#?}", got.len());
    got
}

/// Waits until the sentinel push's event arrived; everything delivered before it.
async fn until_sentinel(receiver: &Receiver) -> Vec<Received> {
    let is_sentinel = |r: &Received| {
        r.events()
            .first()
            .is_some_and(|e| e["target"]["repository"] == "zz/sentinel")
    };
    let ok = receiver
        .wait_until(WAIT, |log| {
            log.iter()
                .any(|r| (200..300).contains(&r.status) && is_sentinel(r))
        })
        .await;
    assert!(ok, "the sentinel event arrived: {:#?}", receiver.received());
    let mut got = receiver.accepted();
    let last = got.iter().position(is_sentinel).expect("sentinel");
    got.truncate(last);
    got
}

/// A mirror's pulls are `pull` events whether served from upstream or cache (distribution's
/// proxy mode), anonymous ones with `actor: {}`; with `cacheevents`, its cache events come too:
/// `cache.fill` (manifest and blob, with the upstream), `upstream.error` and `stale.served`
/// under a 5xx, `upstream.ratelimited` (with `Retry-After`) under a 429, `cache.evict` over
/// `proxy.maxsize`.
#[tokio::test]
async fn mirror_pulls_and_cache_events() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let repo = "library/alpine";
    let config = b"{\"os\":\"linux\"}".to_vec();
    let (l1, l2) = (random_bytes(50_000, 1), random_bytes(50_000, 2));
    let cd = up.add_blob(repo, config.clone().into());
    let d1 = up.add_blob(repo, l1.clone().into());
    let d2 = up.add_blob(repo, l2.clone().into());
    let m = image_manifest(
        OCI_MANIFEST,
        (&cd, config.len()),
        &[(&d1, l1.len()), (&d2, l2.len())],
    );
    let md = up.add_manifest(repo, Some("latest"), OCI_MANIFEST, m.clone().into());
    let rx = Receiver::start().await;
    let s = Server::start_with(Options {
        extra_yaml: format!(
            "proxy:\n  remoteurl: {}\n  tagttl: 0s\n  timeout: 2s\n  maxsize: 60000\nnotifications:\n  endpoints:\n    - name: hook\n      url: {}\n      backoff: 20ms\n      cacheevents: true\n",
            up.url(),
            rx.url("/hook")
        ),
        ..Options::default()
    });
    let upstream_name = up.url().trim_start_matches("http://").to_owned();
    let manifest_url = s.url(&format!("/v2/{repo}/manifests/latest"));
    let events =
        |rx: &Receiver| -> Vec<Value> { rx.accepted().iter().flat_map(Received::events).collect() };
    let find = |evs: &[Value], action: &str| -> Vec<Value> {
        evs.iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect()
    };

    // A miss: the manifest is fetched (cache.fill), then served (pull).
    assert_eq!(get(&manifest_url, Some(OCI_MANIFEST)).await.status(), 200);
    assert!(rx.wait_for(2, WAIT).await, "{:#?}", rx.received());
    let evs = events(&rx);
    assert_eq!(evs[0]["action"], "cache.fill");
    let t = &evs[0]["target"];
    assert_eq!(
        (&t["digest"], &t["tag"], &t["upstream"], &t["repository"]),
        (
            &json!(md),
            &json!("latest"),
            &json!(upstream_name),
            &json!(repo)
        )
    );
    assert_eq!(t["size"], json!(m.len()));
    assert_eq!(evs[1]["action"], "pull");
    assert_eq!(evs[1]["target"]["tag"], "latest");
    assert_eq!(evs[1]["target"]["mediaType"], OCI_MANIFEST);
    assert_eq!(evs[1]["actor"], json!({}), "anonymous");

    // A blob miss: pull, and cache.fill once it is committed (either order).
    let r = get(&s.url(&format!("/v2/{repo}/blobs/{d1}")), None).await;
    assert_eq!(r.bytes().await.unwrap(), l1);
    assert!(rx.wait_for(4, WAIT).await, "{:#?}", rx.received());
    let evs = events(&rx);
    let fills = find(&evs, "cache.fill");
    assert!(
        fills.iter().any(|e| e["target"]["digest"] == json!(d1)
            && e["target"]["mediaType"] == "application/octet-stream"
            && e["target"]["size"] == json!(l1.len())),
        "{fills:#?}"
    );
    assert!(
        find(&evs, "pull")
            .iter()
            .any(|e| e["target"]["digest"] == json!(d1))
    );

    // The upstream fails (500): the cached tag is served stale, and said so.
    up.set_fault(Fault::ServerError);
    assert_eq!(get(&manifest_url, Some(OCI_MANIFEST)).await.status(), 200);
    let stale_and_error = |log: &[Received]| {
        let evs: Vec<Value> = log.iter().flat_map(Received::events).collect();
        evs.iter().any(|e| e["action"] == "stale.served")
            && evs.iter().any(|e| e["action"] == "upstream.error")
    };
    assert!(
        rx.wait_until(WAIT, stale_and_error).await,
        "{:#?}",
        events(&rx)
    );
    let evs = events(&rx);
    let stale = &find(&evs, "stale.served")[0]["target"];
    assert_eq!(
        (&stale["digest"], &stale["tag"]),
        (&json!(md), &json!("latest"))
    );
    assert_eq!(stale["reason"], "5xx");
    let err = &find(&evs, "upstream.error")[0]["target"];
    assert_eq!(err["upstream"], json!(upstream_name));
    assert!(
        err["reason"].as_str().is_some_and(|r| r.contains("500")),
        "{err}"
    );

    // A 429: upstream.ratelimited with its Retry-After.
    up.set_fault(Fault::TooManyRequests {
        retry_after_secs: 7,
    });
    assert_eq!(get(&manifest_url, Some(OCI_MANIFEST)).await.status(), 200);
    let limited = |log: &[Received]| {
        log.iter()
            .flat_map(Received::events)
            .any(|e| e["action"] == "upstream.ratelimited")
    };
    assert!(rx.wait_until(WAIT, limited).await, "{:#?}", events(&rx));
    let evs = events(&rx);
    assert_eq!(
        find(&evs, "upstream.ratelimited")[0]["target"]["reason"],
        "Retry-After: 7"
    );

    // Over proxy.maxsize once the second layer lands: the first is evicted.
    up.set_fault(Fault::None);
    let r = get(&s.url(&format!("/v2/{repo}/blobs/{d2}")), None).await;
    assert_eq!(r.bytes().await.unwrap(), l2);
    let evicted = |log: &[Received]| {
        log.iter()
            .flat_map(Received::events)
            .any(|e| e["action"] == "cache.evict" && e["target"]["digest"] == json!(d1))
    };
    assert!(rx.wait_until(WAIT, evicted).await, "{:#?}", events(&rx));
    let evs = events(&rx);
    let ev = find(&evs, "cache.evict")
        .into_iter()
        .find(|e| e["target"]["digest"] == json!(d1))
        .unwrap();
    assert_eq!(ev["target"]["size"], json!(l1.len()));
    assert_eq!(ev["target"]["reason"], "size");
}

/// Without `cacheevents`, a mirror sends only distribution's actions.
#[tokio::test]
async fn cache_events_are_off_by_default() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let layer = random_bytes(1000, 3);
    let d = up.add_blob("a/b", layer.clone().into());
    let rx = Receiver::start().await;
    let s = Server::start_with(Options {
        extra_yaml: format!(
            "proxy:\n  remoteurl: {}\nnotifications:\n  endpoints:\n    - name: hook\n      url: {}\n      backoff: 20ms\n",
            up.url(),
            rx.url("/hook")
        ),
        ..Options::default()
    });
    let r = get(&s.url(&format!("/v2/a/b/blobs/{d}")), None).await;
    assert_eq!(r.bytes().await.unwrap(), layer);
    // The HEAD comes after the fill: its pull arriving means the fill was not sent.
    assert_eq!(
        head(&s.url(&format!("/v2/a/b/blobs/{d}")), None)
            .await
            .status(),
        200
    );
    assert!(rx.wait_for(2, WAIT).await, "{:#?}", rx.received());
    let actions: Vec<Value> = rx
        .accepted()
        .iter()
        .flat_map(Received::events)
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, [json!("pull"), json!("pull")]);
}

/// A seed config run on this machine: loopback, a temporary root, JSON logs, its
/// notification endpoint pointed at `receiver` through the environment.
fn seed_server(name: &str, root: &Path, receiver: &Receiver, extra: &[(&str, String)]) -> Server {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/seed-{name}.yml"));
    let mut env = vec![
        ("REGISTRY_LOG_FORMATTER".to_owned(), "json".to_owned()),
        ("REGISTRY_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        (
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".to_owned(),
            root.display().to_string(),
        ),
        (
            "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL".to_owned(),
            receiver.url("/api/notification"),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Server::spawn(&path, &env, root.to_path_buf())
}

/// docker-registry-web's two registry configs, verbatim with their `notifications` block,
/// start and deliver a push to their listener (here a receiver); with token auth, the event
/// names the token's subject.
#[tokio::test]
async fn registry_web_seeds_deliver_to_their_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let s = seed_server("registry-web", &tmp.path().join("root"), &rx, &[]);
    let blob = b"pushed through the web UI's registry";
    let d = push_blob(&s.url(""), "seed/app", blob).await;
    assert!(rx.wait_for(1, WAIT).await, "{:#?}", rx.received());
    let got = &rx.accepted()[0];
    assert_eq!(got.path, "/api/notification");
    assert_eq!(
        got.header("content-type"),
        Some("application/vnd.docker.distribution.events.v1+json")
    );
    let e = &got.events()[0];
    assert_eq!(
        (
            &e["action"],
            &e["target"]["digest"],
            &e["target"]["repository"]
        ),
        (&json!("push"), &json!(d), &json!("seed/app"))
    );

    // The token-auth seed: a token signed by the key of its rootcertbundle.
    let rx = Receiver::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["test".into()]).unwrap();
    let bundle = tmp.path().join("auth.cert");
    std::fs::write(&bundle, cert.cert.pem()).unwrap();
    let s = seed_server(
        "registry-web-auth",
        &tmp.path().join("root2"),
        &rx,
        &[(
            "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE",
            bundle.display().to_string(),
        )],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({
        "iss": "test", "sub": "webuser", "aud": "localhost:5000",
        "exp": now + 60, "nbf": now - 5, "iat": now - 5, "jti": "x",
        "access": [{"type": "repository", "name": "seed/app", "actions": ["pull", "push"]}],
    });
    // rcgen's key is a P-256 key in PKCS#8, what `from_ec_der` takes.
    let key = jsonwebtoken::EncodingKey::from_ec_der(&cert.signing_key.serialize_der());
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .unwrap();
    let r = send(
        client()
            .post(s.url(&format!("/v2/seed/app/blobs/uploads/?digest={d}")))
            .bearer_auth(&token)
            .body(blob.to_vec()),
    )
    .await;
    assert_eq!(r.status(), 201, "push with a token");
    assert!(rx.wait_for(1, WAIT).await, "{:#?}", rx.received());
    let e = &rx.accepted()[0].events()[0];
    assert_eq!(
        (&e["action"], &e["actor"]),
        (&json!("push"), &json!({"name": "webuser"}))
    );
}
