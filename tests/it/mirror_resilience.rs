//! The mirror in front of a bad upstream (issue 17) and the cap on concurrent upstream fetches
//! (issue 11): an upstream that accepts connections and never answers (a relay that freezes),
//! one whose SYNs are dropped (a listening socket with a full backlog that never accepts),
//! offline mode, and a real dockerd pulling a cached image while the upstream is frozen (a
//! missing `dockerd`/`docker` or `docker-registry` fails that test; it is not skipped).
//!
//! Bounds are loose (seconds, against the 30 s+ an unprotected mirror takes) so that a loaded
//! machine does not make them flake; nothing here is a benchmark.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream, Fault};
use crate::common::*;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// A TCP relay in front of an upstream. Thawed it relays; frozen it accepts connections and
/// sends nothing back (open connections stop relaying too); thawing closes what it held.
struct Freezer {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Freezer {
    async fn start(target: SocketAddr) -> Freezer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(relay(conn, target, rx.clone()));
            }
        });
        Freezer { addr, frozen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.task.abort();
        // Held connections close when they see the relay gone.
        self.frozen.send_replace(false);
    }
}

async fn relay(mut conn: TcpStream, target: SocketAddr, mut frozen: watch::Receiver<bool>) {
    if !*frozen.borrow_and_update() {
        let Ok(mut up) = TcpStream::connect(target).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => return,
            _ = frozen.wait_for(|f| *f) => {}
        }
    }
    // Frozen: hold the connection, silent, until thawed.
    let _ = frozen.wait_for(|f| !*f).await;
}

/// An address whose SYNs are dropped: a socket listening with a backlog of 0 that never
/// accepts, its queue filled by one connection. Connects to it hang until they time out.
struct Blackhole {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    async fn start() -> Blackhole {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = sock.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("connect to the blackhole: {e}"),
                Err(_) => break,
            }
            assert!(fillers.len() < 64, "the backlog never filled");
        }
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

/// Puts an image (config + one layer) in the fake under repo:tag; returns (manifest digest,
/// blob digests).
fn seed_image(up: &FakeUpstream, repo: &str, tag: &str, seed: u64) -> (String, Vec<String>) {
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}"
    ));
    let layer = Bytes::from(random_bytes(4096, seed));
    let cd = up.add_blob(repo, config.clone());
    let ld = up.add_blob(repo, layer.clone());
    let body = image_manifest(DOCKER_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    let d = up.add_manifest(repo, Some(tag), DOCKER_MANIFEST, Bytes::from(body));
    (d, vec![cd, ld])
}

async fn get(url: &str) -> reqwest::Response {
    crate::common::api::get(url, Some(DOCKER_MANIFEST)).await
}

/// Pulls repo:tag and its blobs through the mirror; returns the manifest digest.
async fn pull(s: &Server, repo: &str, tag: &str, blobs: &[String]) -> String {
    let r = get(&s.url(&format!("/v2/{repo}/manifests/{tag}"))).await;
    assert_eq!(r.status(), 200, "{repo}:{tag}: {}", s.log_text());
    let d = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    for b in blobs {
        let r = get(&s.url(&format!("/v2/{repo}/blobs/{b}"))).await;
        assert_eq!(r.status(), 200, "{repo}@{b}");
        r.bytes().await.unwrap();
    }
    d
}

/// A manifest GET, timed.
async fn timed_get(url: &str) -> (reqwest::Response, Duration) {
    let t = Instant::now();
    let r = get(url).await;
    (r, t.elapsed())
}

async fn wait_metric(s: &Server, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = s.metric(name, labels).await;
        if v == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {v}, not {want}; log:\n{}",
            tools::tail(&s.log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const REPOS: [&str; 3] = ["library/one", "team/two", "org/three"];

#[tokio::test]
async fn frozen_upstream_cached_tags_answer_fast_breaker_opens_and_closes_and_sees_a_moved_tag() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let relay = Freezer::start(up.addr).await;
    let mut images = Vec::new();
    for (i, repo) in REPOS.iter().enumerate() {
        images.push(seed_image(&up, repo, "latest", i as u64 + 1));
    }
    // tagttl 0s: every request for a tag revalidates it, no waiting for a TTL to pass.
    let s = Server::mirror(
        &relay.url(),
        "  tagttl: 0s\n  revalidatetimeout: 2s\n  timeout: 6s\n  breakerthreshold: 3\n  breakermaxbackoff: 2s\n",
    );
    for (repo, (d, blobs)) in REPOS.iter().zip(&images) {
        assert_eq!(&pull(&s, repo, "latest", blobs).await, d);
    }

    relay.freeze(true);
    // Repeatedly and across repositories: each cached tag comes within the budget (2 s),
    // never after the upstream timeout (6 s), let alone the default 30 s.
    for round in 0..3 {
        for (repo, (d, _)) in REPOS.iter().zip(&images) {
            let (r, took) = timed_get(&s.url(&format!("/v2/{repo}/manifests/latest"))).await;
            assert_eq!(r.status(), 200, "round {round} {repo}");
            assert_eq!(r.headers()["docker-content-digest"], d.as_str());
            assert!(
                took < Duration::from_millis(4500),
                "round {round} {repo}: {took:?}"
            );
        }
    }
    let stale = "stevedore_stale_serves_total";
    assert!(s.metric(stale, &[("reason", "timeout")]).await >= 1.0);

    // The background checks time out upstream; the breaker opens.
    wait_metric(&s, "stevedore_upstream_breaker_open", &[], 1.0).await;
    assert!(
        s.log_text()
            .contains("upstream failing: circuit breaker open")
    );
    let (r, took) = timed_get(&s.url("/v2/library/one/manifests/latest")).await;
    assert_eq!(r.status(), 200);
    // Under the budget: the breaker answers for the upstream, nothing is waited for.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(s.metric(stale, &[("reason", "breaker_open")]).await >= 1.0);
    // A miss fails fast, saying why and when to come back.
    let (r, took) = timed_get(&s.url("/v2/library/one/manifests/other")).await;
    assert_eq!(r.status(), 503);
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(r.headers().contains_key("retry-after"));
    let body = r.text().await.unwrap();
    assert!(body.contains("timed out"), "{body}");
    // Still ready: the cache serves.
    assert_eq!(
        tools::http_status(s.debug_addr.as_ref().unwrap(), "/debug/ready"),
        Some(200)
    );
    assert!(
        s.metric("stevedore_background_revalidations_total", &[])
            .await
            >= 1.0
    );

    // The upstream comes back with the tag moved: the breaker closes on its own probe and the
    // tag is picked up.
    let (moved, _) = seed_image(&up, "library/one", "latest", 99);
    relay.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(&s.url("/v2/library/one/manifests/latest")).await;
        assert_eq!(r.status(), 200);
        if r.headers()["docker-content-digest"] == moved.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moved tag never seen; log:\n{}",
            tools::tail(&s.log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.metric("stevedore_upstream_breaker_open", &[]).await, 0.0);
    assert!(
        s.metric(
            "stevedore_upstream_breaker_transitions_total",
            &[("state", "closed")]
        )
        .await
            >= 1.0
    );
    assert!(s.logged("circuit breaker closed").await);
}

#[tokio::test]
async fn blackholed_connects_give_up_in_seconds_and_misses_fail_fast() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (d, blobs) = seed_image(&up, REPOS[0], "latest", 7);
    let data = tempfile::tempdir().unwrap();
    let start = |url: &str| {
        Server::start_with(Options {
            extra_yaml: format!(
                "proxy:\n  remoteurl: {url}\n  tagttl: 0s\n  connecttimeout: 1s\n  breakerthreshold: 2\n"
            ),
            data_dir: Some(data.path().to_owned()),
            ..Options::default()
        })
    };
    // Cache the image, then restart the mirror in front of an address that drops SYNs.
    let mut s = start(&up.url());
    assert_eq!(pull(&s, REPOS[0], "latest", &blobs).await, d);
    // A client has every byte before the blob is committed: wait for both commits.
    let cached = eventually(Duration::from_secs(30), || {
        s.log_text().matches("blob fetched and cached").count() >= blobs.len()
    })
    .await;
    assert!(cached, "blobs not cached; log:\n{}", s.log_text());
    s.stop();
    let hole = Blackhole::start().await;
    let s = start(&format!("http://{}", hole.addr));

    // Each cached request answers within the default budget (2 s): the connect gives up in 1 s.
    for _ in 0..3 {
        let (r, took) = timed_get(&s.url(&format!("/v2/{}/manifests/latest", REPOS[0]))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        assert!(took < Duration::from_secs(4), "{took:?}");
    }
    wait_metric(&s, "stevedore_upstream_breaker_open", &[], 1.0).await;
    // Cached blobs never needed the upstream.
    let r = get(&s.url(&format!("/v2/{}/blobs/{}", REPOS[0], blobs[1]))).await;
    assert_eq!(r.status(), 200);
    // Misses fail fast with the last error.
    for path in [
        format!("/v2/{}/manifests/nope", REPOS[0]),
        format!("/v2/{}/blobs/sha256:{}", REPOS[0], "ab".repeat(32)),
    ] {
        let (r, took) = timed_get(&s.url(&path)).await;
        assert_eq!(r.status(), 503, "{path}");
        assert!(took < Duration::from_secs(2), "{path}: {took:?}");
        assert!(r.headers().contains_key("retry-after"), "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("timed out (connect)"), "{path}: {body}");
    }
}

#[tokio::test]
async fn offline_mode_never_contacts_the_upstream() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (d, blobs) = seed_image(&up, REPOS[0], "latest", 3);
    let s = Server::mirror(&up.url(), "  tagttl: 0s\n  offline: true\n");
    let offline_url = s.debug_url("/debug/offline");
    // Offline from the start: a miss says so, and nothing is sent.
    let r = get(&s.url(&format!("/v2/{}/manifests/latest", REPOS[0]))).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("offline"), "{body}");
    assert_eq!(up.request_log().len(), 0);
    assert_eq!(s.metric("stevedore_proxy_offline", &[]).await, 1.0);

    // Online through the debug toggle: the image is cached.
    let r = send(client().post(format!("{offline_url}?on=0"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(pull(&s, REPOS[0], "latest", &blobs).await, d);

    // Offline again: cached content is served without a request upstream, misses refused.
    let r = send(client().post(format!("{offline_url}?on=1"))).await;
    assert_eq!(r.text().await.unwrap(), "{\"offline\":true}");
    let sent = up.request_log().len();
    assert_eq!(pull(&s, REPOS[0], "latest", &blobs).await, d);
    let r = get(&s.url(&format!("/v2/{}/manifests/other", REPOS[0]))).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        up.request_log().len(),
        sent,
        "the offline mirror asked upstream"
    );
    assert!(
        s.metric("stevedore_stale_serves_total", &[("reason", "offline")])
            .await
            >= 1.0
    );
    let r = send(client().post(format!("{offline_url}?on=maybe"))).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn concurrent_upstream_fetches_are_capped_and_queued() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let blobs: Vec<(String, Bytes)> = (0..3)
        .map(|i| {
            let data = Bytes::from(random_bytes(8 * 1024, 50 + i));
            (up.add_blob(REPOS[0], data.clone()), data)
        })
        .collect();
    // Each body takes about a second.
    up.set_fault(Fault::Slow {
        chunk: 1024,
        delay: Duration::from_millis(120),
    });
    let s = Server::mirror(&up.url(), "  maxfetches: 1\n");
    let gets = blobs.iter().map(|(d, data)| {
        let url = s.url(&format!("/v2/{}/blobs/{d}", REPOS[0]));
        async move {
            let r = get(&url).await;
            assert_eq!(r.status(), 200);
            assert_eq!(&r.bytes().await.unwrap(), data);
        }
    });
    let all = futures::future::join_all(gets);
    tokio::pin!(all);
    // While the first body streams, the others wait in line (not refused).
    let queue = "stevedore_upstream_queued_requests";
    let mut seen = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = &mut all => break,
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                seen = seen.max(s.metric(queue, &[]).await);
            }
        }
        assert!(Instant::now() < deadline, "blob fetches did not finish");
    }
    assert_eq!(seen, 2.0, "queue length never reached 2");
    assert_eq!(s.metric(queue, &[]).await, 0.0);
}

// dockerd is driven with blocking calls: the relay needs a worker thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_a_cached_image_in_seconds_while_the_upstream_is_frozen() {
    use crate::common::docker::{Dockerd, DockerdOptions, require_daemon, rootfs_tarball};
    use crate::common::refreg::RefRegistry;
    require_daemon("docker_pulls_a_cached_image_in_seconds_while_the_upstream_is_frozen");
    let tmp = tempfile::tempdir().unwrap();
    let up = RefRegistry::start();
    let relay = Freezer::start(up.addr.parse().unwrap()).await;
    let s = Server::mirror(&relay.url(), "  tagttl: 0s\n");
    let d = Dockerd::start(DockerdOptions {
        insecure_registries: vec![up.addr.clone(), s.host().to_owned()],
        registry_mirrors: vec![s.url("")],
    });
    let upstream_ref = format!("{}/library/e2e-frozen:1.0", up.addr);
    let id = d.import(&rootfs_tarball(tmp.path(), 3), &upstream_ref);
    d.docker_ok(&["push", &upstream_ref]);
    d.docker_ok(&["rmi", &upstream_ref]);
    let hub_ref = "e2e-frozen:1.0";
    let out = d.docker(&["pull", hub_ref]);
    assert!(
        out.status.success(),
        "first pull: {}\nstevedore log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tools::tail(&s.log_text(), 30)
    );
    assert_eq!(d.image_id(hub_ref), id);
    d.docker_ok(&["rmi", hub_ref]);

    relay.freeze(true);
    let t = Instant::now();
    d.docker_ok(&["pull", hub_ref]);
    let took = t.elapsed();
    assert_eq!(d.image_id(hub_ref), id);
    assert!(
        took < Duration::from_secs(10),
        "pull took {took:?}; log:\n{}",
        tools::tail(&s.log_text(), 40)
    );
    assert!(
        s.metric("stevedore_stale_serves_total", &[("kind", "manifest")])
            .await
            >= 1.0
    );
}
