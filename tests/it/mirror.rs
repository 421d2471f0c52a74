//! The pull-through cache against a Docker-Hub-like fake upstream: misses stream through and
//! land in the cache, hits never reach the upstream, faults never leave bad blobs behind, and
//! concurrent misses cost one upstream fetch.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream, Fault};
use crate::common::*;
use bytes::Bytes;
use futures::future::join_all;
use std::time::{Duration, Instant};

const REPO: &str = "library/app";

/// Puts an image (config + layers) in the fake under REPO:tag; returns (manifest digest,
/// manifest bytes, layer blobs).
fn seed_image(
    up: &FakeUpstream,
    tag: &str,
    layer_sizes: &[usize],
    seed: u64,
) -> (String, Bytes, Vec<Bytes>) {
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}"
    ));
    let cd = up.add_blob(REPO, config.clone());
    let layers: Vec<Bytes> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, n)| Bytes::from(random_bytes(*n, seed * 100 + i as u64)))
        .collect();
    let refs: Vec<(String, usize)> = layers
        .iter()
        .map(|l| (up.add_blob(REPO, l.clone()), l.len()))
        .collect();
    let refs2: Vec<(&str, usize)> = refs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let body = Bytes::from(image_manifest(DOCKER_MANIFEST, (&cd, config.len()), &refs2));
    let d = up.add_manifest(REPO, Some(tag), DOCKER_MANIFEST, body.clone());
    (d, body, layers)
}

async fn get(url: &str) -> reqwest::Response {
    crate::common::api::get(url, Some(DOCKER_MANIFEST)).await
}

fn blob_file(s: &Server, d: &str) -> std::path::PathBuf {
    let hex = d.trim_start_matches("sha256:");
    s.dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

#[tokio::test]
async fn miss_then_hit_with_bearer_auth_and_redirects() {
    let up = FakeUpstream::start(FakeOptions {
        bearer_auth: true,
        redirect_blobs: true,
        ratelimit_remaining: Some(100),
        ..FakeOptions::default()
    })
    .await;
    let (md, mbody, layers) = seed_image(&up, "1.0", &[200_000, 3000], 1);
    let s = Server::mirror(&up.url(), "");

    let r = get(&s.url(&format!("/v2/{REPO}/manifests/1.0"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    assert_eq!(r.headers()["content-type"], DOCKER_MANIFEST);
    assert_eq!(r.bytes().await.unwrap(), mbody);
    for l in &layers {
        let r = get(&s.url(&format!("/v2/{REPO}/blobs/{}", digest(l)))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), *l);
    }
    // Clients get their last byte before the blob is committed: let the cache catch up.
    for l in &layers {
        let f = blob_file(&s, &digest(l));
        assert!(eventually(Duration::from_secs(10), || f.exists()).await);
        // Recorded in the index right after the rename.
        assert!(s.fetched_and_cached(&digest(l)).await, "{}", s.log_text());
    }
    let before = up.request_log().len();
    // Again: all from the cache.
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/1.0"))).await;
    assert_eq!(r.bytes().await.unwrap(), mbody);
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/{md}"))).await;
    assert_eq!(r.bytes().await.unwrap(), mbody);
    for l in &layers {
        let r = get(&s.url(&format!("/v2/{REPO}/blobs/{}", digest(l)))).await;
        assert_eq!(r.bytes().await.unwrap(), *l);
        let h = send(client().head(s.url(&format!("/v2/{REPO}/blobs/{}", digest(l))))).await;
        assert_eq!(h.headers()["content-length"], l.len().to_string().as_str());
    }
    assert_eq!(
        up.request_log().len(),
        before,
        "hits must not reach the upstream"
    );
    assert_eq!(up.token_requests(), 1, "one token for the repository scope");
    assert_eq!(
        s.metric(
            "stevedore_cache_lookups_total",
            &[("kind", "blob"), ("outcome", "miss")]
        )
        .await,
        2.0
    );
    assert!(
        s.metric(
            "stevedore_cache_lookups_total",
            &[("kind", "blob"), ("outcome", "hit")]
        )
        .await
            >= 2.0
    );
    assert_eq!(
        s.metric("stevedore_upstream_ratelimit_remaining", &[])
            .await,
        99.0
    );
    for l in &layers {
        assert!(
            eventually(Duration::from_secs(10), || blob_file(&s, &digest(l))
                .exists())
            .await
        );
    }
}

#[tokio::test]
async fn concurrent_misses_fetch_once() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let big = Bytes::from(random_bytes(50 * 1024 * 1024, 7));
    let d = up.add_blob(REPO, big.clone());
    // Pace the body so that every client joins while the fetch is under way.
    up.set_fault(Fault::Slow {
        chunk: 1024 * 1024,
        delay: Duration::from_millis(20),
    });
    let s = Server::mirror(&up.url(), "");
    let url = s.url(&format!("/v2/{REPO}/blobs/{d}"));
    let pulls = (0..32).map(|_| {
        let url = url.clone();
        async move {
            let r = client().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body = r.bytes().await.unwrap();
            digest(&body)
        }
    });
    let digests = join_all(pulls).await;
    assert!(
        digests.iter().all(|x| *x == d),
        "every client got the right bytes"
    );
    assert_eq!(
        up.requests("GET", &format!("/blobs/{d}")),
        1,
        "the upstream served the blob once"
    );
    let coalesced = s
        .metric(
            "stevedore_cache_lookups_total",
            &[("kind", "blob"), ("outcome", "coalesced")],
        )
        .await;
    let missed = s
        .metric(
            "stevedore_cache_lookups_total",
            &[("kind", "blob"), ("outcome", "miss")],
        )
        .await;
    assert_eq!(missed, 1.0);
    assert_eq!(
        coalesced
            + missed
            + s.metric(
                "stevedore_cache_lookups_total",
                &[("kind", "blob"), ("outcome", "hit")]
            )
            .await,
        32.0
    );
    assert_eq!(
        s.metric("stevedore_upstream_received_bytes_total", &[])
            .await,
        big.len() as f64
    );
}

/// A cold pull as a client makes it (the manifest, then the config and every layer at once)
/// costs the upstream exactly one GET per object: no HEAD before a GET, no probe, no second
/// fetch; every body is whole and right, and every blob lands in the cache.
#[tokio::test]
async fn a_cold_pull_asks_the_upstream_once_per_object() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    // Layers of several landing batches each, and a small one.
    let (md, mbody, layers) = seed_image(
        &up,
        "cold",
        &[5 * 1024 * 1024 + 7, 3 * 1024 * 1024, 1000],
        13,
    );
    let s = Server::mirror(&up.url(), "");
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/cold"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), mbody);
    let manifest: serde_json::Value = serde_json::from_slice(&mbody).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mut wanted = vec![config.clone()];
    wanted.extend(layers.iter().map(|l| digest(l)));
    let pulls = wanted.iter().map(|d| {
        let url = s.url(&format!("/v2/{REPO}/blobs/{d}"));
        async move {
            let r = client().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            digest(&r.bytes().await.unwrap())
        }
    });
    assert_eq!(join_all(pulls).await, wanted, "every body whole and right");
    let log: Vec<String> = up
        .request_log()
        .iter()
        .map(|l| format!("{} {}", l.method, l.path))
        .collect();
    assert_eq!(up.requests("GET", "/manifests/cold"), 1, "{log:?}");
    for d in &wanted {
        assert_eq!(
            up.requests("GET", &format!("/blobs/{d}")),
            1,
            "{d}: {log:?}"
        );
    }
    assert_eq!(log.len(), 1 + wanted.len(), "nothing else asked: {log:?}");
    assert_eq!(up.requests("GET", &format!("/manifests/{md}")), 0);
    for d in &wanted {
        assert!(
            eventually(Duration::from_secs(10), || blob_file(&s, d).exists()).await,
            "{d} cached"
        );
    }
}

/// A fault in the blob body: the client's request fails (never a complete bad body), nothing
/// is cached, and the next request fetches again and succeeds.
async fn body_fault_leaves_nothing(fault: Fault, proxy_extra: &str) {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let data = Bytes::from(random_bytes(300_000, 3));
    let d = up.add_blob(REPO, data.clone());
    up.set_fault(fault.clone());
    let s = Server::mirror(&up.url(), proxy_extra);
    let url = s.url(&format!("/v2/{REPO}/blobs/{d}"));
    let started = Instant::now();
    let r = client().get(&url).send().await.unwrap();
    let outcome = if r.status() == 200 {
        r.bytes().await.map(|b| b.len())
    } else {
        Ok(0)
    };
    // An error means the connection broke off: what we want. A body must be short.
    if let Ok(n) = outcome {
        assert!(
            n < data.len(),
            "{fault:?}: a complete body was handed over ({n} bytes)"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{fault:?}: took {:?}",
        started.elapsed()
    );
    let clean = eventually(Duration::from_secs(10), || !blob_file(&s, &d).exists()).await;
    assert!(clean, "{fault:?}: a bad blob was committed");
    let tmp_empty = eventually(Duration::from_secs(10), || {
        std::fs::read_dir(s.dir.join("tmp"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    })
    .await;
    assert!(tmp_empty, "{fault:?}: temporary files left behind");
    up.set_fault(Fault::None);
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), data);
    assert!(eventually(Duration::from_secs(10), || blob_file(&s, &d).exists()).await);
}

#[tokio::test]
async fn corrupt_body_is_refused() {
    body_fault_leaves_nothing(Fault::CorruptBody, "").await;
}

#[tokio::test]
async fn truncated_body_is_refused() {
    body_fault_leaves_nothing(Fault::Truncate { after: 100_000 }, "").await;
}

#[tokio::test]
async fn stalled_body_times_out() {
    body_fault_leaves_nothing(Fault::Stall { after: 100_000 }, "  stalltimeout: 1s\n").await;
}

#[tokio::test]
async fn range_on_a_miss_is_partial() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let data = Bytes::from(random_bytes(1_000_000, 5));
    let d = up.add_blob(REPO, data.clone());
    let s = Server::mirror(&up.url(), "");
    let r = client()
        .get(s.url(&format!("/v2/{REPO}/blobs/{d}")))
        .header("range", "bytes=400000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 400000-999999/1000000");
    assert_eq!(r.bytes().await.unwrap(), data.slice(400_000..));
    // The whole blob landed in the cache all the same.
    assert!(eventually(Duration::from_secs(10), || blob_file(&s, &d).exists()).await);
}

#[tokio::test]
async fn tags_revalidate_with_head_and_follow_upstream_changes() {
    let up = FakeUpstream::start(FakeOptions {
        bearer_auth: true,
        ..FakeOptions::default()
    })
    .await;
    let (d1, _, _) = seed_image(&up, "latest", &[1000], 1);
    let s = Server::mirror(&up.url(), "  tagttl: 0s\n");
    let url = s.url(&format!("/v2/{REPO}/manifests/latest"));
    assert_eq!(
        get(&url).await.headers()["docker-content-digest"],
        d1.as_str()
    );
    let gets = up.requests("GET", "/manifests/");
    // Unchanged upstream: a HEAD, no GET.
    assert_eq!(
        get(&url).await.headers()["docker-content-digest"],
        d1.as_str()
    );
    assert_eq!(up.requests("GET", "/manifests/"), gets);
    assert!(up.requests("HEAD", "/manifests/latest") >= 1);
    // The tag moves upstream: the next pull follows it.
    let (d2, _, _) = seed_image(&up, "latest", &[2000], 2);
    assert_ne!(d1, d2);
    assert_eq!(
        get(&url).await.headers()["docker-content-digest"],
        d2.as_str()
    );
}

#[tokio::test]
async fn upstream_trouble_serves_cache_and_fails_fast_otherwise() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (d, body, layers) = seed_image(&up, "v1", &[5000], 9);
    let other = up.add_blob(REPO, Bytes::from_static(b"never fetched"));
    let s = Server::mirror(&up.url(), "  tagttl: 0s\n  timeout: 2s\n");
    let murl = s.url(&format!("/v2/{REPO}/manifests/v1"));
    let burl = s.url(&format!("/v2/{REPO}/blobs/{}", digest(&layers[0])));
    assert_eq!(get(&murl).await.status(), 200);
    assert_eq!(get(&burl).await.status(), 200);

    up.set_fault(Fault::TooManyRequests {
        retry_after_secs: 42,
    });
    let r = get(&murl).await;
    assert_eq!(r.status(), 200, "stale tag served during a 429");
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert_eq!(r.bytes().await.unwrap(), body);
    let r = get(&s.url(&format!("/v2/{REPO}/blobs/{other}"))).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "42");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");

    up.set_fault(Fault::Down);
    let started = Instant::now();
    assert_eq!(get(&murl).await.status(), 200);
    assert_eq!(get(&burl).await.status(), 200);
    let r = get(&s.url(&format!("/v2/{REPO}/blobs/{other}"))).await;
    assert_eq!(r.status(), 503);
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/not-cached"))).await;
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        s.metric("stevedore_stale_serves_total", &[("kind", "manifest")])
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn upstream_gone_entirely_still_serves_cache() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (_, body, layers) = seed_image(&up, "v1", &[5000], 11);
    let s = Server::mirror(&up.url(), "  tagttl: 0s\n  timeout: 2s\n");
    let murl = s.url(&format!("/v2/{REPO}/manifests/v1"));
    let burl = s.url(&format!("/v2/{REPO}/blobs/{}", digest(&layers[0])));
    assert_eq!(get(&murl).await.status(), 200);
    assert_eq!(get(&burl).await.status(), 200);
    up.stop().await;
    let r = get(&murl).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(get(&burl).await.bytes().await.unwrap(), layers[0]);
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/v2"))).await;
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn unknown_upstream_content_is_not_found() {
    let up = FakeUpstream::start(FakeOptions {
        bearer_auth: true,
        ..FakeOptions::default()
    })
    .await;
    let s = Server::mirror(&up.url(), "");
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/nope"))).await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let r = get(&s.url(&format!("/v2/{REPO}/blobs/{}", digest(b"nope")))).await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
}

#[tokio::test]
async fn expired_tokens_are_refreshed() {
    let up = FakeUpstream::start(FakeOptions {
        bearer_auth: true,
        token_ttl: Duration::from_secs(1),
        ..FakeOptions::default()
    })
    .await;
    let (_, _, layers) = seed_image(&up, "v1", &[100, 200, 300], 4);
    let s = Server::mirror(&up.url(), "");
    for l in &layers {
        let r = get(&s.url(&format!("/v2/{REPO}/blobs/{}", digest(l)))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), *l);
        up.revoke_tokens();
    }
    assert!(up.token_requests() >= 3);
}

#[tokio::test]
async fn local_pushes_win_and_local_prefixes_stay_local() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (upstream_digest, _, _) = seed_image(&up, "v1", &[100], 21);
    let s = Server::mirror(&up.url(), "  localprefixes: [\"team/\"]\n");
    // A pushed tag shadows the upstream's.
    let (local_digest, _) = push_image(&s.url(""), REPO, "v1", 1, 22).await;
    assert_ne!(local_digest, upstream_digest);
    let r = crate::common::api::get(
        &s.url(&format!("/v2/{REPO}/manifests/v1")),
        Some(OCI_MANIFEST),
    )
    .await;
    assert_eq!(r.headers()["docker-content-digest"], local_digest.as_str());
    assert_eq!(up.requests("GET", "/manifests/"), 0);
    // Local-only prefix: never asks the upstream.
    let r = get(&s.url("/v2/team/app/manifests/v1")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(up.requests("", "team/app"), 0);
}

#[tokio::test]
async fn containerd_ns_parameter_picks_the_upstream() {
    let hub = FakeUpstream::start(FakeOptions::default()).await;
    let quay = FakeUpstream::start(FakeOptions::default()).await;
    let (hub_digest, _, _) = seed_image(&hub, "v1", &[100], 31);
    let (quay_digest, _, _) = seed_image(&quay, "v1", &[100], 32);
    let extra = format!(
        "  upstreams:\n    - name: quay.io\n      remoteurl: {}\n      prefix: quay/\n",
        quay.url()
    );
    let s = Server::mirror(&hub.url(), &extra);
    let hub_ns = hub.url().trim_start_matches("http://").to_owned();
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/v1?ns={hub_ns}"))).await;
    assert_eq!(r.headers()["docker-content-digest"], hub_digest.as_str());
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/v1?ns=quay.io"))).await;
    assert_eq!(r.headers()["docker-content-digest"], quay_digest.as_str());
    let r = get(&s.url(&format!("/v2/quay/{REPO}/manifests/v1"))).await;
    assert_eq!(r.headers()["docker-content-digest"], quay_digest.as_str());
    // A registry we do not mirror: no upstream is asked.
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/v1?ns=gcr.io"))).await;
    assert_eq!(r.status(), 404);
}

/// containerd's rule (issue 18): `ns=docker.io` (or no `ns`) is the default upstream whatever
/// its host, unless an upstream is named `docker.io`, which then takes both.
#[tokio::test]
async fn ns_docker_io_is_the_default_upstream_unless_one_is_named_so() {
    let corp = FakeUpstream::start(FakeOptions::default()).await;
    let (corp_digest, _, _) = seed_image(&corp, "v1", &[100], 33);
    let s = Server::mirror(&corp.url(), "");
    for q in ["", "?ns=docker.io", "?ns=DOCKER.IO"] {
        let r = get(&s.url(&format!("/v2/{REPO}/manifests/v1{q}"))).await;
        assert_eq!(r.status(), 200, "{q}");
        assert_eq!(r.headers()["docker-content-digest"], corp_digest.as_str());
    }
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/v1?ns=ghcr.io"))).await;
    assert_eq!(r.status(), 404);

    let hub = FakeUpstream::start(FakeOptions::default()).await;
    let (hub_digest, _, _) = seed_image(&hub, "v1", &[100], 34);
    let extra = format!(
        "  upstreams:\n    - name: docker.io\n      remoteurl: {}\n",
        hub.url()
    );
    let s = Server::mirror(&corp.url(), &extra);
    for q in ["", "?ns=docker.io"] {
        let r = get(&s.url(&format!("/v2/{REPO}/manifests/v1{q}"))).await;
        assert_eq!(r.status(), 200, "{q}");
        assert_eq!(r.headers()["docker-content-digest"], hub_digest.as_str());
    }
    // The default upstream is still reachable by its own name.
    let corp_ns = corp.url().trim_start_matches("http://").to_owned();
    let r = get(&s.url(&format!("/v2/{REPO}/manifests/v1?ns={corp_ns}"))).await;
    assert_eq!(r.headers()["docker-content-digest"], corp_digest.as_str());
}

/// A mirror accepts pushes to any name: the existence checks a pusher makes (HEAD of each
/// blob) answer "not here" when the upstream is unreachable or refuses us, so the push goes
/// on, and the pushed image then wins over the upstream.
#[tokio::test]
async fn pushes_to_a_mirror_work_whatever_the_upstream_says() {
    for fault in ["down", "refused"] {
        let up = FakeUpstream::start(FakeOptions {
            bearer_auth: true,
            basic_credentials: Some(("someone".into(), "secret".into())),
            ..FakeOptions::default()
        })
        .await;
        if fault == "down" {
            up.set_fault(Fault::Down);
        }
        let s = Server::mirror(&up.url(), "  timeout: 2s\n");
        let blob = random_bytes(5000, 77);
        let r =
            send(client().head(s.url(&format!("/v2/newuser/app/blobs/{}", digest(&blob))))).await;
        assert_eq!(r.status(), 404, "{fault}");
        let (d, body) = push_image(&s.url(""), "newuser/app", "latest", 2, 78).await;
        let r = crate::common::api::get(
            &s.url("/v2/newuser/app/manifests/latest"),
            Some(OCI_MANIFEST),
        )
        .await;
        assert_eq!(r.status(), 200, "{fault}");
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        assert_eq!(r.bytes().await.unwrap(), body);
    }
}

/// The tags and `Link` of `GET url`, checking the source header is `source`.
async fn tag_page(url: &str, source: Option<&str>) -> (Vec<String>, Option<String>) {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    assert_eq!(
        r.headers()
            .get("x-stevedore-tags-source")
            .map(|v| v.to_str().unwrap()),
        source,
        "GET {url}"
    );
    let link = r
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = r.json().await.unwrap();
    let tags = body["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags in {body}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (tags, link)
}

/// Tags of a mirrored repository (issue 18): the upstream's whole list (which it pages, as
/// Docker Hub does) merged with tags pushed here, paged with `n`/`last` and `Link` across the
/// merge, cached for `tagttl`; the local tags alone, marked, when the upstream is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_lists_merge_the_upstreams_with_local_tags() {
    let up = FakeUpstream::start(FakeOptions {
        tags_page: Some(2),
        ..FakeOptions::default()
    })
    .await;
    let (d, _, _) = seed_image(&up, "v1", &[100], 41);
    for t in ["v2", "v3", "v5", "latest"] {
        up.set_tag(REPO, t, &d);
    }
    let s = Server::mirror(&up.url(), "  tagttl: 1h\n  timeout: 2s\n");
    push_image(&s.url(""), REPO, "v4", 1, 42).await;
    let all = ["latest", "v1", "v2", "v3", "v4", "v5"];

    let (tags, link) = tag_page(&s.url(&format!("/v2/{REPO}/tags/list")), None).await;
    assert_eq!(tags, all);
    assert_eq!(link, None);
    // Three upstream pages of two, by its Link headers.
    assert_eq!(up.requests("GET", "/tags/list"), 3);

    // Paging across the merge, from the cached upstream list.
    let mut url = s.url(&format!("/v2/{REPO}/tags/list?n=2"));
    let mut pages = Vec::new();
    loop {
        let (tags, link) = tag_page(&url, None).await;
        pages.push(tags);
        let Some(link) = link else { break };
        let target = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(t, _)| t.to_owned())
            .unwrap_or_else(|| panic!("bad Link {link}"));
        url = s.url(&target);
    }
    assert_eq!(
        pages,
        [["latest", "v1"], ["v2", "v3"], ["v4", "v5"]],
        "pages of two"
    );
    let (tags, _) = tag_page(&s.url(&format!("/v2/{REPO}/tags/list?last=v3")), None).await;
    assert_eq!(tags, ["v4", "v5"]);
    assert_eq!(up.requests("GET", "/tags/list"), 3, "cached for tagttl");

    // skopeo list-tags, as Renovate and "newest tag" scripts use a mirror.
    tools::require("skopeo", "skopeo");
    let reference = format!("docker://{}/{REPO}", s.host());
    let out = tokio::task::spawn_blocking(move || {
        tools::run_ok(
            std::process::Command::new("skopeo")
                .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
                .args(["--insecure-policy", "list-tags", "--tls-verify=false"])
                .arg(reference),
        )
    })
    .await
    .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["Tags"], serde_json::json!(all), "{out}");

    // Upstream down (and another mirror, so nothing is cached): the local tags, marked.
    let s2 = Server::mirror(&up.url(), "  timeout: 2s\n");
    push_image(&s2.url(""), REPO, "mine", 1, 43).await;
    up.set_fault(Fault::Down);
    let (tags, _) = tag_page(&s2.url(&format!("/v2/{REPO}/tags/list")), Some("local")).await;
    assert_eq!(tags, ["mine"]);
    // Nothing local either: the upstream's failure, not an empty list.
    let r = send(client().get(s2.url("/v2/library/other/tags/list"))).await;
    assert!(r.status().is_server_error(), "{}", r.status());
}
