//! Replicas that fetch each blob upstream once (issue 16, `proxy.peers`), and tiers.
//!
//! Three stevedores on loopback, each with its own filesystem storage, name each other as
//! peers (ports chosen before they start, so each config can list all three) and share one
//! counting fake upstream. A miss anywhere is fetched upstream once for the fleet: by the
//! owner of the digest (or of repository:tag), which the others stream from. Killing the
//! owner mid-blob costs at most one more fetch and never a wrong body. The tier test chains
//! node (disk) → regional (on an S3 bucket, SeaweedFS) → fake hubs and pulls through the node
//! with a private containerd.

use crate::common::containerd::{Containerd, require_daemon, write_hosts_toml};
use crate::common::fake_upstream::{FakeOptions, FakeUpstream, Fault};
use crate::common::oci_layout::Image;
use crate::common::s3::{BUCKET, SeaweedFs};
use crate::common::tools::free_port;
use crate::common::*;
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

/// `n` replicas of a mirror of `upstream`, peers of each other, with `proxy_extra` YAML under
/// `proxy:`; returns once every replica sees every other one up.
async fn fleet(upstream: &str, n: usize, proxy_extra: &str) -> Vec<Server> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let list = ports
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let servers: Vec<Server> = ports
        .iter()
        .map(|port| {
            Server::start_with(Options {
                extra_yaml: format!(
                    "http:\n  addr: 127.0.0.1:{port}\nproxy:\n  remoteurl: {upstream}\n  peers:\n    static: [{list}]\n    probeinterval: 100ms\n    probetimeout: 1s\n{proxy_extra}"
                ),
                ..Options::default()
            })
        })
        .collect();
    for s in &servers {
        let all_up = until(|| async {
            let view = peers_view(s, None).await;
            let members = view["members"].as_array().cloned().unwrap_or_default();
            members.len() == n
                && members.iter().all(|m| m["up"] == true)
                && members.iter().filter(|m| m["self"] == true).count() == 1
        })
        .await;
        assert!(
            all_up,
            "replica {} does not see its peers up: {}",
            s.addr,
            peers_view(s, None).await
        );
    }
    servers
}

/// Waits (up to 20 s) until `f` says yes: the replicas' own view of each other is the event.
async fn until<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f().await
}

/// `GET /debug/peers[?key=…]` of a replica.
async fn peers_view(s: &Server, key: Option<&str>) -> serde_json::Value {
    let url = match key {
        Some(k) => s.debug_url(&format!("/debug/peers?key={k}")),
        None => s.debug_url("/debug/peers"),
    };
    match client().get(url).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// The index of the replica that owns `key`, as every replica agrees.
async fn owner(fleet: &[Server], key: &str) -> usize {
    let mut views = Vec::new();
    for s in fleet {
        let o = peers_view(s, Some(key)).await["owner"]
            .as_str()
            .unwrap()
            .to_owned();
        views.push(if o == "self" { s.addr.clone() } else { o });
    }
    assert!(
        views.iter().all(|v| *v == views[0]),
        "replicas disagree on the owner of {key}: {views:?}"
    );
    fleet.iter().position(|s| s.addr == views[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_misses_across_three_replicas_fetch_once() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let data = Bytes::from(random_bytes(3 << 20, 16));
    let d = up.add_blob("library/big", data.clone());
    let fleet = fleet(&up.url(), 3, "").await;
    // Slow enough that the requests overlap the one fetch.
    up.set_fault(Fault::Slow {
        chunk: 256 << 10,
        delay: Duration::from_millis(20),
    });
    let gets = (0..50).map(|i| {
        let url = fleet[i % 3].url(&format!("/v2/library/big/blobs/{d}"));
        async move {
            let r = client().get(url).send().await.expect("reach the replica");
            assert_eq!(r.status(), 200);
            r.bytes().await.expect("whole body")
        }
    });
    for body in futures::future::join_all(gets).await {
        assert_eq!(body.len(), data.len());
        assert_eq!(digest(&body), d, "a wrong body was served");
    }
    assert_eq!(
        up.requests("GET", &format!("/blobs/{d}")),
        1,
        "the fleet fetched the blob more than once: {:?}",
        up.request_log()
    );
    let o = owner(&fleet, &d).await;
    for (i, s) in fleet.iter().enumerate().filter(|(i, _)| *i != o) {
        let forwarded = s
            .metric(
                "stevedore_peer_forwards_total",
                &[("kind", "blob"), ("outcome", "ok")],
            )
            .await;
        assert!(forwarded >= 1.0, "replica {i} did not ask the owner");
        // Each replica keeps what it streamed: a second read is a hit here.
        assert!(s.fetched_and_cached(&d).await);
    }
    let again = client()
        .get(fleet[(o + 1) % 3].url(&format!("/v2/library/big/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(digest(&again.bytes().await.unwrap()), d);
    assert_eq!(up.requests("GET", &format!("/blobs/{d}")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_killed_mid_blob_costs_at_most_one_more_fetch_and_no_bad_body() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let data = Bytes::from(random_bytes(2 << 20, 17));
    let d = up.add_blob("library/big", data.clone());
    let mut fleet = fleet(&up.url(), 3, "").await;
    let o = owner(&fleet, &d).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != o).collect();
    // The owner's upstream body stops after 512 KiB: the others are mid-blob through it.
    up.set_fault(Fault::Stall { after: 512 << 10 });
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = fleet[others[i % 2]].url(&format!("/v2/library/big/blobs/{d}"));
        let started = started_tx.clone();
        tasks.push(tokio::spawn(async move {
            let r = client().get(url).send().await.expect("reach the replica");
            assert_eq!(r.status(), 200);
            let mut body = Vec::new();
            let mut stream = r.bytes_stream();
            let mut told = false;
            while let Some(chunk) = stream.next().await {
                body.extend_from_slice(&chunk.expect("the body broke off"));
                if !told {
                    told = true;
                    let _ = started.send(());
                }
            }
            body
        }));
    }
    for _ in 0..6 {
        tokio::time::timeout(Duration::from_secs(20), started_rx.recv())
            .await
            .expect("every client gets its first bytes through the owner")
            .unwrap();
    }
    assert_eq!(up.requests("GET", &format!("/blobs/{d}")), 1);
    // New upstream requests are answered whole; the owner's stays stalled. Then it dies.
    up.set_fault(Fault::None);
    fleet[o].kill9();
    for t in tasks {
        let body = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("the others recover")
            .expect("client task");
        assert_eq!(body.len(), data.len());
        assert_eq!(digest(&body), d, "a wrong body was served");
    }
    let fetches = up.requests("GET", &format!("/blobs/{d}"));
    assert!(
        (1..=2).contains(&fetches),
        "{fetches} upstream fetches after the owner died"
    );
    for i in &others {
        assert!(fleet[*i].fetched_and_cached(&d).await);
        let fallbacks = fleet[*i]
            .metric("stevedore_peer_fallbacks_total", &[])
            .await;
        let view = peers_view(&fleet[*i], None).await;
        let dead = fleet[o].addr.clone();
        let down = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["addr"] == dead.as_str() && m["up"] == false);
        assert!(down, "the dead owner is still up in {view}");
        assert_eq!(
            fallbacks, 1.0,
            "replica {i} did not go on from another source"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_revalidation_is_routed_to_the_tags_owner_once() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let repo = "library/app";
    let m1 = image_manifest(OCI_MANIFEST, (&digest(b"c1"), 2), &[]);
    let d1 = up.add_manifest(repo, Some("v1"), OCI_MANIFEST, Bytes::from(m1));
    let fleet = fleet(&up.url(), 3, "  tagttl: 1s\n  revalidatetimeout: 10s\n").await;
    let get_tag = |s: &Server| {
        let url = s.url(&format!("/v2/{repo}/manifests/v1"));
        async move {
            let r = client()
                .get(url)
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    for s in &fleet {
        assert_eq!(get_tag(s).await, d1);
    }
    let path = format!("/v2/{repo}/manifests/v1");
    assert_eq!(up.requests("GET", &path), 1, "{:?}", up.request_log());
    // The tag moves upstream; once every replica's copy has expired (tagttl is whole
    // seconds), all three ask at once.
    let m2 = image_manifest(OCI_MANIFEST, (&digest(b"c2"), 2), &[]);
    let d2 = up.add_manifest(repo, Some("v1"), OCI_MANIFEST, Bytes::from(m2));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let answers = futures::future::join_all(fleet.iter().map(get_tag)).await;
    assert!(answers.iter().all(|a| *a == d2), "{answers:?}");
    assert_eq!(up.requests("HEAD", &path), 1, "{:?}", up.request_log());
    assert_eq!(up.requests("GET", &path), 2, "{:?}", up.request_log());
    let o = owner(&fleet, &format!("{repo}:v1")).await;
    for (i, s) in fleet.iter().enumerate().filter(|(i, _)| *i != o) {
        let forwarded = s
            .metric("stevedore_peer_forwards_total", &[("kind", "manifest")])
            .await;
        assert!(forwarded >= 2.0, "replica {i} did not ask the tag's owner");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_down_at_start_takes_no_traffic_and_nothing_changes_without_peers() {
    // A listed replica that never started is down: its keys are owned by the live ones.
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let data = Bytes::from(random_bytes(100_000, 18));
    let d = up.add_blob("library/x", data.clone());
    let dead = free_port();
    let port = free_port();
    let s = Server::start_with(Options {
        extra_yaml: format!(
            "http:\n  addr: 127.0.0.1:{port}\nproxy:\n  remoteurl: {}\n  peers:\n    static: [\"127.0.0.1:{port}\", \"127.0.0.1:{dead}\"]\n    probeinterval: 100ms\n",
            up.url()
        ),
        ..Options::default()
    });
    let me = format!("127.0.0.1:{port}");
    assert!(
        until(|| async { peers_view(&s, None).await["self"] == me.as_str() }).await,
        "the replica did not find itself: {}",
        peers_view(&s, None).await
    );
    let r = client()
        .get(s.url(&format!("/v2/library/x/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(digest(&r.bytes().await.unwrap()), d);
    assert_eq!(
        s.metric("stevedore_peer_forwards_total", &[]).await,
        0.0,
        "a request went to a peer that is down"
    );
    assert_eq!(s.metric("stevedore_peers", &[("state", "down")]).await, 1.0);
    // Without peers: no instance header, no peer view.
    let plain = Server::mirror(&up.url(), "");
    let r = client().get(plain.url("/v2/")).send().await.unwrap();
    assert!(r.headers().get("stevedore-instance").is_none());
    let r = client()
        .get(plain.debug_url("/debug/peers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

use crate::common::oci_layout::seed_upstream as seed;

/// The image's manifest, config and layer digests.
fn digests(image: &Image) -> Vec<String> {
    std::iter::once(image.manifest.digest.clone())
        .chain(std::iter::once(image.config.digest.clone()))
        .chain(image.layers.iter().map(|l| l.desc.digest.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_node_and_regional_tiers_and_the_image_leaves_the_hub_once() {
    require_daemon("containerd_pulls_through_node_and_regional_tiers");
    let tmp = tempfile::tempdir().unwrap();
    let hub = FakeUpstream::start(FakeOptions::default()).await;
    let ghcr = FakeUpstream::start(FakeOptions::default()).await;
    let hub_image = seed(&hub, tmp.path(), "library/app", "v1", 21);
    let ghcr_image = seed(&ghcr, tmp.path(), "owner/tool", "2.0", 22);
    // The regional tier, on an S3 bucket, mirrors the hub (default) and ghcr.io (by ns).
    let weed = SeaweedFs::start();
    let regional_cache = tempfile::tempdir().unwrap();
    let mut regional = weed.server(
        "regional",
        regional_cache.path(),
        &format!(
            "proxy:\n  remoteurl: {}\n  upstreams:\n    - name: ghcr.io\n      remoteurl: {}\n",
            hub.url(),
            ghcr.url()
        ),
    );
    // The node tier knows only the regional tier, for both registries; tags are revalidated
    // on every request, so the run with the regional tier down serves them stale.
    let regional_url = regional.url("");
    let node = Server::mirror(
        &regional_url,
        &format!(
            "  tagttl: 0s\n  upstreams:\n    - name: ghcr.io\n      remoteurl: {regional_url}\n"
        ),
    );
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let pull = |ctd: &Containerd| {
        let hosts = ctd.dir().join("certs.d");
        for registry in ["docker.io", "ghcr.io"] {
            write_hosts_toml(&hosts, registry, &node.url(""), &nowhere);
        }
        let hosts = hosts.display().to_string();
        for reference in ["docker.io/library/app:v1", "ghcr.io/owner/tool:2.0"] {
            ctd.ctr_ok(&[
                "content",
                "fetch",
                "--hosts-dir",
                &hosts,
                "--platform",
                "linux/amd64",
                reference,
            ]);
        }
        let content = ctd.ctr_ok(&["content", "ls", "-q"]);
        for d in digests(&hub_image).iter().chain(&digests(&ghcr_image)) {
            assert!(content.contains(d.as_str()), "{d} not in containerd");
        }
    };
    let first = Containerd::start();
    pull(&first);
    // Each registry was asked for its own image only, and each piece left it once.
    for (up, image, repo) in [
        (&hub, &hub_image, "library/app"),
        (&ghcr, &ghcr_image, "owner/tool"),
    ] {
        for d in digests(image).iter().skip(1) {
            assert_eq!(
                up.requests("GET", &format!("/v2/{repo}/blobs/{d}")),
                1,
                "{d}: {:?}",
                up.request_log()
            );
        }
        assert_eq!(up.requests("GET", &format!("/v2/{repo}/manifests/")), 1);
    }
    assert_eq!(hub.requests("", "owner/tool"), 0);
    assert_eq!(ghcr.requests("", "library/app"), 0);
    // (ghcr's image came from ghcr: the regional tier routed it by the ns the node forwarded;
    // without it, it would have asked the hub.)
    // The regional tier keeps what it fetched in its bucket.
    // (Blobs are committed a moment after their last byte went down the chain.)
    let (hub_digests, ghcr_digests) = (digests(&hub_image), digests(&ghcr_image));
    for d in hub_digests
        .iter()
        .skip(1)
        .chain(ghcr_digests.iter().skip(1))
    {
        assert!(regional.fetched_and_cached(d).await, "{d} not cached");
    }
    let blobs = weed.filer_tree(&format!(
        "/buckets/{BUCKET}/regional/docker/registry/v2/blobs/"
    ));
    for d in digests(&hub_image).iter().chain(&digests(&ghcr_image)) {
        assert!(
            blobs.iter().any(|k| k.contains(&d[7..])),
            "{d} not in the bucket"
        );
    }

    // The regional tier goes away: the node serves what it has, the tags stale.
    regional.kill9();
    let second = Containerd::start();
    pull(&second);
    assert!(
        node.metric("stevedore_stale_serves_total", &[]).await >= 1.0,
        "the node did not serve its tags stale"
    );
}
