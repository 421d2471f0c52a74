//! Issue 14, the emitting side: which operation sends which event, checked against the real
//! distribution. The same operations (`golden_ops`: blob pushes, manifest pushes by tag, GET and
//! HEAD of a manifest and a blob, a cross-repository mount, a manifest DELETE that takes two
//! tags with it, a blob DELETE; and skopeo copy/inspect/delete) are run against
//! `docker-registry` (distribution 2.8) and stevedore, each configured with the same
//! `auth` and `notifications` blocks pointing at a recording receiver; the events must be the
//! same, in the same order, with the same keys and values except ids, timestamps, addresses and
//! `source`, and the same headers. `fixtures/notifications-distribution-2.8.json` keeps
//! distribution's events of `golden_ops` (the v1 shape), checked without `docker-registry` too.

use crate::common::refreg::RefRegistry;
use crate::common::tools::{require, skopeo_ok};
use crate::common::*;
use receiver::{Receiver, Recorded};
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
    let auth = |r: reqwest::RequestBuilder| {
        r.basic_auth(USER, Some(PASSWORD))
            .header("user-agent", UA)
    };
    let (dc, dl) = (sha256(CONFIG.as_bytes()), sha256(LAYER));
    for data in [CONFIG.as_bytes(), LAYER] {
        let r = send(auth(c.post(format!("{base}/v2/a/b/blobs/uploads/")))).await;
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
    let r = send(auth(c.get(format!("{base}/v2/a/b/manifests/v1"))).header("accept", OCI_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    let r = send(auth(c.head(format!("{base}/v2/a/b/manifests/{dm}"))).header("accept", OCI_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    let r = send(auth(c.get(format!("{base}/v2/a/b/blobs/{dl}")))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), LAYER);
    let r = send(auth(c.head(format!("{base}/v2/a/b/blobs/{dl}")))).await;
    assert_eq!(r.status(), 200);
    let r = send(auth(c.post(format!(
        "{base}/v2/c/d/blobs/uploads/?mount={dl}&from=a/b"
    ))))
    .await;
    assert_eq!(r.status(), 201, "mount");
    let r = send(auth(c.delete(format!("{base}/v2/a/b/manifests/{dm}")))).await;
    assert_eq!(r.status(), 202, "DELETE manifest");
    let r = send(auth(c.delete(format!("{base}/v2/c/d/blobs/{dl}")))).await;
    assert_eq!(r.status(), 202, "DELETE blob");
}

/// How many events `golden_ops` sends.
const GOLDEN_EVENTS: usize = 13;

/// An event with what legitimately differs between two runs replaced by placeholders (after
/// checking it has the right form): ids, timestamp, client address, `source`, and the
/// registry's `host:port` in `request.host` and `target.url`.
fn normalize(event: &Value, registry_host: &str) -> Value {
    let mut e = event.clone();
    let uuid = |v: &Value, what: &str| {
        let s = v.as_str().unwrap_or_else(|| panic!("{what} is a string: {event}"));
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
fn events(recorded: &[Recorded], registry_host: &str) -> Vec<Value> {
    recorded
        .iter()
        .map(|r| {
            let events = r.body["events"].as_array().expect("an events array");
            assert_eq!(events.len(), 1, "one event per POST: {}", r.body);
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
            .map(|e| format!("{} {}", e["action"], e["request"]["method"]))
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

/// The headers a receiver sees, compared one by one with distribution's (`Host` and
/// `Content-Length` aside, which differ by nature).
fn assert_same_headers(ours: &Recorded, theirs: &Value) {
    for (name, want) in theirs.as_object().expect("headers") {
        let got = ours.header(name);
        assert_eq!(
            got.as_deref(),
            want.as_str(),
            "header {name}: ours {got:?}, distribution's {want}"
        );
    }
    assert_eq!(
        ours.header("content-length").as_deref(),
        Some(ours.raw_len.to_string().as_str()),
        "Content-Length"
    );
}

fn stevedore(dir: &Path, receiver: &Receiver) -> Server {
    Server::start_with(Options {
        extra_yaml: format!(
            "storage:\n  delete:\n    enabled: true\n{}",
            shared_yaml(dir, &receiver.url())
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
    let got = receiver.wait_for(GOLDEN_EVENTS, WAIT).await;
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
    let reference = RefRegistry::start_with(&shared_yaml(dir.path(), &theirs_rx.url()));

    // golden_ops: distribution's events are still the fixture's (the fixture did not drift),
    // and ours are theirs.
    golden_ops(&reference.url()).await;
    let theirs = theirs_rx.wait_for(GOLDEN_EVENTS, WAIT).await;
    let (fixture_events, headers) = fixture();
    let theirs_n = events(&theirs, &reference.addr);
    assert_same_events(&theirs_n, &fixture_events, "distribution vs fixture");
    let s = stevedore(dir.path(), &ours_rx);
    golden_ops(&s.url("")).await;
    let ours = ours_rx.wait_for(GOLDEN_EVENTS, WAIT).await;
    assert_same_events(&events(&ours, s.host()), &theirs_n, "stevedore vs distribution");

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
        skopeo_ok(t, &["inspect", "--tls-verify=false", "--creds", &creds, &dest]);
        skopeo_ok(t, &["delete", "--tls-verify=false", "--creds", &creds, &dest]);
    }
    // skopeo's requests can differ in number (HEADs before uploads): compare once both
    // registries are quiet, and by what they sent.
    let theirs = theirs_rx.settle(GOLDEN_EVENTS + 1, WAIT).await;
    let ours = ours_rx.settle(GOLDEN_EVENTS + 1, WAIT).await;
    let useragent = |e: &mut Value| e["request"]["useragent"] = json!("<skopeo>");
    let mut theirs_n = events(&theirs[GOLDEN_EVENTS..], &reference.addr);
    let mut ours_n = events(&ours[GOLDEN_EVENTS..], s.host());
    theirs_n.iter_mut().for_each(useragent);
    ours_n.iter_mut().for_each(useragent);
    assert_same_events(&ours_n, &theirs_n, "skopeo: stevedore vs distribution");
    for r in ours.iter() {
        assert_same_headers(r, &headers);
    }
}

/// A minimal recording webhook receiver on 127.0.0.1:0 (until the shared one is in
/// `common`).
mod receiver {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use tokio::sync::watch;

    /// One POST as received.
    #[derive(Debug, Clone)]
    pub struct Recorded {
        pub headers: http::HeaderMap,
        pub body: Value,
        pub raw_len: usize,
    }

    impl Recorded {
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }
    }

    pub struct Receiver {
        addr: std::net::SocketAddr,
        got: Arc<Mutex<Vec<Recorded>>>,
        count: watch::Receiver<usize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Receiver {
        pub async fn start() -> Receiver {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let got = Arc::new(Mutex::new(Vec::new()));
            let (tx, count) = watch::channel(0usize);
            let tx = Arc::new(tx);
            let g = got.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (g, tx) = (g.clone(), tx.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (g, tx) = (g.clone(), tx.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let raw = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                                let mut v = g.lock().unwrap();
                                v.push(Recorded {
                                    headers: parts.headers,
                                    body,
                                    raw_len: raw.len(),
                                });
                                tx.send_replace(v.len());
                                Ok::<_, std::convert::Infallible>(Response::new(
                                    http_body_util::Full::new(Bytes::new()),
                                ))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            Receiver {
                addr,
                got,
                count,
                task,
            }
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Waits for `n` POSTs; all of them so far.
        pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
            let mut rx = self.count.clone();
            let ok = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
            let got = self.got.lock().unwrap().clone();
            assert!(ok.is_ok(), "{} of {n} notifications arrived: {got:#?}", got.len());
            got
        }

        /// Waits for at least `n` POSTs, then until none came for a second; all of them.
        pub async fn settle(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
            self.wait_for(n, timeout).await;
            let deadline = Instant::now() + timeout;
            let mut rx = self.count.clone();
            while Instant::now() < deadline {
                rx.mark_unchanged();
                if tokio::time::timeout(Duration::from_secs(1), rx.changed())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            self.got.lock().unwrap().clone()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}
