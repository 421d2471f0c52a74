//! Replicas on one S3 bucket (issue 16): the bucket, not a node's index, holds repository
//! links, manifests and tags, so a push through one replica pulls through another, a tag
//! moved or deleted, a blob unlinked or a referrer pushed through one shows on the others
//! within `storage.s3.tagrefresh`, and a
//! replica started with an empty disk serves pushed and cached images from the bucket alone
//! (the upstream stopped). SeaweedFS on loopback, the real binary, events awaited.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::s3::{BUCKET, SeaweedFs};
use crate::common::*;
use bytes::Bytes;
use std::time::{Duration, Instant};

const REFRESH: &str = "storage:\n  s3:\n    tagrefresh: 1s\n";

/// GET a manifest; (status, digest header, body).
async fn manifest(s: &Server, repo: &str, reference: &str) -> (u16, String, Bytes) {
    let r = api::get(
        &s.url(&format!("/v2/{repo}/manifests/{reference}")),
        Some(OCI_MANIFEST),
    )
    .await;
    let status = r.status().as_u16();
    let d = api::header(&r, "docker-content-digest").unwrap_or_default();
    (status, d, r.bytes().await.unwrap())
}

/// The config and layer digests of an image manifest.
fn blobs_of(body: &[u8]) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(body).unwrap();
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Pulls repo:tag (by tag, then by digest, then every blob) and checks every body.
async fn pull_ok(s: &Server, repo: &str, tag: &str, want: &str) {
    let (status, d, body) = manifest(s, repo, tag).await;
    assert_eq!(status, 200, "{repo}:{tag} on {}: {}", s.addr, s.log_text());
    assert_eq!(d, want);
    assert_eq!(digest(&body), want, "manifest body");
    let (status, _, by_digest) = manifest(s, repo, want).await;
    assert_eq!(status, 200, "{repo}@{want}");
    assert_eq!(by_digest, body);
    for b in blobs_of(&body) {
        let r = client()
            .get(s.url(&format!("/v2/{repo}/blobs/{b}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{repo} blob {b}");
        assert_eq!(digest(&r.bytes().await.unwrap()), b, "blob {b}");
    }
}

/// Waits (up to `limit`) until `reference` of `repo` on `s` answers `status` (and, for 200,
/// names `want`); how long it took.
async fn until_served(
    s: &Server,
    repo: &str,
    reference: &str,
    status: u16,
    want: Option<&str>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let (st, d, _) = manifest(s, repo, reference).await;
        if st == status && want.is_none_or(|w| w == d) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{repo}:{reference} on {} still answers {st} {d} after {limit:?}",
            s.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn json(url: String) -> serde_json::Value {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_one_replica_pulls_through_another_and_tag_changes_show_within_the_bound() {
    let weed = SeaweedFs::start();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = weed.server("replicas", ca.path(), REFRESH);
    let b = weed.server("replicas", cb.path(), REFRESH);
    let (d1, _) = push_image(&a.url(""), "team/app", "v1", 2, 1).await;
    push_image(&a.url(""), "team/app", "v2", 1, 2).await;
    push_image(&a.url(""), "other", "latest", 1, 3).await;

    // B never saw the push: tag, digest, blobs, tags list and catalog come from the bucket.
    pull_ok(&b, "team/app", "v1", &d1).await;
    let tags = json(b.url("/v2/team/app/tags/list")).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]), "{tags}");
    let catalog = json(b.url("/v2/_catalog")).await;
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["other", "team/app"]),
        "{catalog}"
    );
    let page = json(b.url("/v2/_catalog?n=1")).await;
    assert_eq!(page["repositories"], serde_json::json!(["other"]));

    // The tag moves on A: B serves the new digest within the bound (1 s; the poll allows
    // for a loaded machine but not for "never").
    let (d2, _) = push_image(&a.url(""), "team/app", "v1", 1, 4).await;
    assert_ne!(d1, d2);
    let took = until_served(
        &b,
        "team/app",
        "v1",
        200,
        Some(&d2),
        Duration::from_secs(15),
    )
    .await;
    assert!(took < Duration::from_secs(8), "moved tag took {took:?}");
    eprintln!("tag moved on A, served by B after {took:?} (tagrefresh 1s)");
    pull_ok(&b, "team/app", "v1", &d2).await;
    // The old manifest is still there by digest (only the tag moved).
    assert_eq!(manifest(&b, "team/app", &d1).await.0, 200);

    // The tag is deleted on A: B stops serving it within the bound.
    let r = client()
        .delete(a.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(manifest(&a, "team/app", "v1").await.0, 404, "A at once");
    let took = until_served(&b, "team/app", "v1", 404, None, Duration::from_secs(15)).await;
    assert!(took < Duration::from_secs(8), "deleted tag took {took:?}");
    eprintln!("tag deleted on A, 404 on B after {took:?} (tagrefresh 1s)");
    let tags = json(b.url("/v2/team/app/tags/list")).await;
    assert_eq!(tags["tags"], serde_json::json!(["v2"]));

    // A blob unlinked on A: B stops serving it to the repository within the bound.
    let blob = push_blob(&a.url(""), "team/app", &random_bytes(3000, 6)).await;
    let blob_url = |s: &Server| s.url(&format!("/v2/team/app/blobs/{blob}"));
    let r = client().get(blob_url(&b)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().delete(blob_url(&a)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let started = Instant::now();
    loop {
        let status = client().get(blob_url(&b)).send().await.unwrap().status();
        if status == 404 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "B still serves the unlinked blob: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "blob unlinked on A, 404 on B after {:?} (tagrefresh 1s)",
        started.elapsed()
    );

    // A write through B shows on B at once, and on A.
    let (d3, _) = push_image(&b.url(""), "team/app", "v3", 1, 5).await;
    assert_eq!(manifest(&b, "team/app", "v3").await.1, d3);
    pull_ok(&a, "team/app", "v3", &d3).await;

    // A manifest deleted by digest on B (with its tag) is gone from A too.
    let r = client()
        .delete(b.url(&format!("/v2/team/app/manifests/{d3}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    until_served(&a, "team/app", "v3", 404, None, Duration::from_secs(15)).await;
    until_served(&a, "team/app", &d3, 404, None, Duration::from_secs(15)).await;
    let tree = weed.filer_tree(&format!(
        "/buckets/{BUCKET}/replicas/docker/registry/v2/repositories/team/app/_manifests/"
    ));
    assert!(
        !tree
            .iter()
            .any(|k| k.contains(&d3[7..]) || k.contains("/tags/v3/")),
        "{tree:?}"
    );

    // What B did reached the bucket through counted metadata requests.
    for op in ["read", "write", "list"] {
        assert!(
            b.metric(
                "stevedore_bucket_metadata_operations_total",
                &[("op", op), ("outcome", "ok")]
            )
            .await
                >= 1.0,
            "no {op} counted"
        );
    }
}

/// Puts an image (config + one layer) in the fake under repo:tag; (manifest digest, body).
fn seed_upstream(up: &FakeUpstream, repo: &str, tag: &str, seed: u64) -> (String, Vec<u8>) {
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}"
    ));
    let layer = Bytes::from(random_bytes(300_000, seed));
    let cd = up.add_blob(repo, config.clone());
    let ld = up.add_blob(repo, layer.clone());
    let body = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    let d = up.add_manifest(repo, Some(tag), OCI_MANIFEST, Bytes::from(body.clone()));
    (d, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_an_empty_disk_serves_pushed_and_cached_images_from_the_bucket_alone() {
    let weed = SeaweedFs::start();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (cached, body) = seed_upstream(&up, "library/app", "v1", 7);
    let proxy = format!(
        "proxy:\n  remoteurl: {}\n  tagttl: 1h\n  localprefixes: [\"team/\"]\n",
        up.url()
    );
    let mirror = |cache: &std::path::Path| weed.server("emptydisk", cache, &proxy);
    let first = tempfile::tempdir().unwrap();
    let mut a = mirror(first.path());
    let (pushed, _) = push_image(&a.url(""), "team/app", "v1", 2, 8).await;
    pull_ok(&a, "library/app", "v1", &cached).await;
    for b in blobs_of(&body) {
        assert!(a.fetched_and_cached(&b).await, "{b} not cached");
    }
    a.stop();
    // A proxied blob is marked as cache content in the bucket; a pushed one is not.
    let markers = weed.filer_tree(&format!("/buckets/{BUCKET}/emptydisk/stevedore/cached/"));
    for b in blobs_of(&body) {
        assert!(
            markers.iter().any(|m| m.ends_with(&b[7..])),
            "{b}: {markers:?}"
        );
    }
    assert!(!markers.iter().any(|m| m.ends_with(&pushed[7..])));

    // A replica with an empty disk, upstream still up: nothing is asked of it.
    let asked = up.request_log().len();
    let empty = tempfile::tempdir().unwrap();
    let b = mirror(empty.path());
    pull_ok(&b, "team/app", "v1", &pushed).await;
    pull_ok(&b, "library/app", "v1", &cached).await;
    for op in ["read", "list"] {
        let n = b
            .metric("stevedore_bucket_metadata_operations_total", &[("op", op)])
            .await;
        eprintln!("empty-disk replica, two image pulls (tag, digest, blobs): {n} metadata {op}s");
    }
    assert_eq!(
        up.request_log().len(),
        asked,
        "the upstream was asked for what the bucket has: {:?}",
        &up.request_log()[asked..]
    );
    drop(b);

    // And with the upstream gone, another empty replica serves both all the same.
    up.stop().await;
    let empty = tempfile::tempdir().unwrap();
    let c = mirror(empty.path());
    pull_ok(&c, "team/app", "v1", &pushed).await;
    pull_ok(&c, "library/app", "v1", &cached).await;
}

/// Whether `request` was answered 201 (not when the server was killed under it).
async fn created(request: reqwest::RequestBuilder) -> bool {
    request.send().await.is_ok_and(|r| r.status() == 201)
}

/// Pushes images to `repo` until one fails (the server was killed); the tags acknowledged.
async fn push_until_killed(base: String, repo: &'static str, round: u64) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    for i in 0..200u64 {
        let seed = round * 1000 + i;
        let config = format!("{{\"seed\":{seed}}}").into_bytes();
        let layer = random_bytes(20_000 + (seed as usize % 5) * 10_000, seed);
        let mut ds = Vec::new();
        for data in [&config, &layer] {
            let d = digest(data);
            let post = client()
                .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
                .header("content-type", "application/octet-stream")
                .body(data.clone());
            if !created(post).await {
                return acked;
            }
            ds.push(d);
        }
        let body = image_manifest(
            OCI_MANIFEST,
            (&ds[0], config.len()),
            &[(&ds[1], layer.len())],
        );
        let tag = format!("r{round}-{i}");
        let put = client()
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(body.clone());
        if !created(put).await {
            return acked;
        }
        acked.push((tag, digest(&body)));
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_bucket_and_index_writes_leaves_nothing_pointing_at_nothing() {
    let weed = SeaweedFs::start();
    let cache = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for round in 0..4u64 {
        let mut s = weed.server("killed", cache.path(), "");
        let pushing = tokio::spawn(push_until_killed(s.url(""), "crash/app", round));
        // Killed once this round's pushes are under way: bucket writes reach the bucket
        // (counted) while the index writes follow them.
        let writes = 20.0 + round as f64 * 7.0;
        assert!(
            s.metric_reaches(
                "stevedore_bucket_metadata_operations_total",
                &[("op", "write")],
                writes
            )
            .await,
            "pushes did not start"
        );
        s.kill9();
        acked.extend(pushing.await.unwrap());
    }
    assert!(!acked.is_empty());

    // In the bucket, every link names a blob that is there, and every tag a revision.
    let root = format!("/buckets/{BUCKET}/killed/docker/registry/v2");
    let tree = weed.filer_tree(&format!("{root}/"));
    let has_blob = |hex: &str| {
        tree.iter()
            .any(|k| k.ends_with(&format!("/blobs/sha256/{}/{hex}/data", &hex[..2])))
    };
    let mut links = 0;
    for k in tree.iter().filter(|k| k.ends_with("/link")) {
        let hex = k.rsplit('/').nth(1).unwrap();
        if k.contains("/_layers/") || k.contains("/revisions/") {
            assert!(has_blob(hex), "{k} names a blob the bucket does not have");
            links += 1;
        }
        if k.contains("/_manifests/tags/") && k.contains("/index/") {
            let revision = format!("/_manifests/revisions/sha256/{hex}/link");
            assert!(
                tree.iter().any(|r| r.ends_with(&revision)),
                "{k} names no revision"
            );
        }
    }
    assert!(links > 0);

    // A replica on the crashed cache, and one on an empty one, list the same tags; every tag
    // pulls whole, and every acknowledged push is there.
    let empty = tempfile::tempdir().unwrap();
    for dir in [cache.path(), empty.path()] {
        let s = weed.server("killed", dir, "");
        let tags = json(s.url("/v2/crash/app/tags/list")).await;
        let tags: Vec<String> = tags["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        for (t, _) in &acked {
            assert!(tags.contains(t), "acknowledged {t} lost");
        }
        for t in &tags {
            let (status, d, body) = manifest(&s, "crash/app", t).await;
            assert_eq!(status, 200, "{t} is listed but does not pull");
            if let Some((_, want)) = acked.iter().find(|(at, _)| at == t) {
                assert_eq!(&d, want);
            }
            for b in blobs_of(&body) {
                let r = client()
                    .get(s.url(&format!("/v2/crash/app/blobs/{b}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{t}: blob {b}");
                assert_eq!(digest(&r.bytes().await.unwrap()), b);
            }
        }
    }
}

/// The digests B's referrers API lists for `subject`.
async fn referrer_digests(s: &Server, repo: &str, subject: &str) -> Vec<String> {
    let list = json(s.url(&format!("/v2/{repo}/referrers/{subject}"))).await;
    list["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until `s` lists exactly `want` as referrers of `subject` (up to `limit`).
async fn until_referrers(s: &Server, repo: &str, subject: &str, want: &[String], limit: Duration) {
    let started = Instant::now();
    loop {
        let got = referrer_digests(s, repo, subject).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{repo} referrers of {subject} on {}: {got:?}, want {want:?}",
            s.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_pushed_through_one_replica_are_listed_by_the_others() {
    let weed = SeaweedFs::start();
    let (ca, cb, cc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = weed.server("referrers", ca.path(), REFRESH);
    let b = weed.server("referrers", cb.path(), REFRESH);
    let (subject, body) = push_image(&a.url(""), "team/app", "v1", 1, 1).await;
    // B has read the subject, and listed its referrers, before there were any.
    assert_eq!(manifest(&b, "team/app", &subject).await.0, 200);
    assert!(referrer_digests(&b, "team/app", &subject).await.is_empty());

    // A signature-like artifact about it, pushed through A.
    let empty = push_blob(&a.url(""), "team/app", b"{}").await;
    let artifact = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": body.len()},
    });
    let artifact = serde_json::to_vec(&artifact).unwrap();
    let ad = digest(&artifact);
    api::put_manifest_ok(&a.url(""), "team/app", &ad, OCI_MANIFEST, &artifact).await;
    let want = vec![ad.clone()];
    assert_eq!(referrer_digests(&a, "team/app", &subject).await, want);
    // B lists it within the bound, and so does a replica that starts with an empty disk.
    until_referrers(&b, "team/app", &subject, &want, Duration::from_secs(15)).await;
    let c = weed.server("referrers", cc.path(), REFRESH);
    assert_eq!(referrer_digests(&c, "team/app", &subject).await, want);

    // Deleted through A: B stops listing it within the bound, and the bucket's record goes.
    let r = client()
        .delete(a.url(&format!("/v2/team/app/manifests/{ad}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(referrer_digests(&a, "team/app", &subject).await.is_empty());
    until_referrers(&b, "team/app", &subject, &[], Duration::from_secs(15)).await;
    let tree = weed.filer_tree(&format!(
        "/buckets/{BUCKET}/referrers/docker/registry/v2/repositories/team/app/_manifests/"
    ));
    assert!(
        !tree.iter().any(|k| k.contains("_manifests/referrers/")),
        "{tree:?}"
    );
}
