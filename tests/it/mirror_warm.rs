//! Issue 19, what enters and what stays: warm lists (only the listed platforms fetched, the
//! image then pulled by skopeo with the upstream stopped; HEAD before GET; a moved tag
//! followed), the cooldown (the previous digest served while the new one is young; refused
//! with none), and a cached tag kept and served, marked, when the upstream answers 404.

use crate::common::api::get;
use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::oci_layout::{Layout, add_to_fake, read_blob, tagged};
use crate::common::tools::{require, skopeo};
use crate::common::*;
use bytes::Bytes;
use std::path::Path;
use std::time::{Duration, Instant};

const REPO: &str = "library/app";

/// `stevedore warm FILE --config CONFIG --addr DEBUG` against the running `s` (its config
/// says port 0): exit code, stdout, stderr.
async fn warm_cli(s: &Server, list: &Path) -> (i32, String, String) {
    let list = list.to_owned();
    let config = s.config_path.clone();
    let addr = s.debug_addr.clone().expect("debug listener");
    tokio::task::spawn_blocking(move || {
        run_cli_env(
            &[
                "warm",
                list.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--addr",
                &addr,
            ],
            &[],
        )
    })
    .await
    .unwrap()
}

/// A small image (config and one layer) in the fake's REPO, untagged; its manifest digest.
fn small_image(up: &FakeUpstream, seed: u64) -> String {
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}"
    ));
    let layer = Bytes::from(random_bytes(3000, seed));
    let cd = up.add_blob(REPO, config.clone());
    let ld = up.add_blob(REPO, layer.clone());
    let body = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    up.add_manifest(REPO, None, OCI_MANIFEST, body.into())
}

async fn get_tag(s: &Server, tag: &str) -> reqwest::Response {
    get(
        &s.url(&format!("/v2/{REPO}/manifests/{tag}")),
        Some(&format!("{OCI_MANIFEST}, {OCI_INDEX}")),
    )
    .await
}

fn digest_of(r: &reqwest::Response) -> String {
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Polls a metric until `ok` holds for it (or 20 s pass); returns its last value.
async fn metric_until(s: &Server, name: &str, labels: &[(&str, &str)], ok: fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = s.metric(name, labels).await;
        if ok(v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_list_fetches_only_listed_platforms_and_skopeo_pulls_with_the_upstream_stopped() {
    require("skopeo", "skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let mut l = Layout::create(&t.join("src"));
    let base = l.add_layer(50, 2, 30_000);
    let amd = l.add_image("amd64", &[base.clone(), l.add_layer(51, 1, 20_000)]);
    let arm = l.add_image("arm64", &[base, l.add_layer(52, 1, 20_000)]);
    let index = l.add_index(&[&amd, &arm]);
    l.tag(&index, "1");
    add_to_fake(&up, REPO, &l.dir, &amd, None);
    add_to_fake(&up, REPO, &l.dir, &arm, None);
    up.add_manifest(
        REPO,
        Some("1"),
        OCI_INDEX,
        read_blob(&l.dir, &index.digest).into(),
    );
    let s = Server::mirror(&up.url(), "");
    let list = t.join("warm.list");
    std::fs::write(
        &list,
        format!("# the amd64 image only\n{}/{REPO}:1 linux/amd64\n", up.addr),
    )
    .unwrap();

    let (code, out, err) = warm_cli(&s, &list).await;
    assert_eq!(
        code,
        0,
        "stdout:\n{out}\nstderr:\n{err}\nlog:\n{}",
        s.log_text()
    );
    assert!(out.contains("1 images warmed, 0 failed"), "{out}");
    assert!(out.contains("[linux/amd64]"), "{out}");
    // The index, the amd64 manifest, its config and both its layers came in; nothing of arm64.
    assert_eq!(up.requests("GET", &amd.manifest.digest), 1);
    for d in std::iter::once(&amd.config).chain(amd.layers.iter().map(|l| &l.desc)) {
        assert_eq!(up.requests("GET", &d.digest), 1, "{}", d.digest);
    }
    assert_eq!(up.requests("GET", &arm.manifest.digest), 0);
    assert_eq!(up.requests("GET", &arm.config.digest), 0);
    assert_eq!(up.requests("GET", &arm.layers[1].desc.digest), 0);
    assert_eq!(
        s.metric("stevedore_warm_blobs_total", &[("outcome", "fetched")])
            .await,
        3.0
    );
    assert_eq!(
        s.metric("stevedore_warm_runs_total", &[("trigger", "request")])
            .await,
        1.0
    );
    assert!(s.logged("warm: image cached").await);

    up.stop().await;
    let pull = |arch: &str, out: &str| {
        skopeo(
            t,
            &[
                "--override-os",
                "linux",
                "--override-arch",
                arch,
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{}/{REPO}:1", s.host()),
                &format!("oci:{}:x", t.join(out).display()),
            ],
        )
    };
    let amd_pull = tokio::task::block_in_place(|| pull("amd64", "amd"));
    assert!(
        amd_pull.status.success(),
        "{}\nlog:\n{}",
        String::from_utf8_lossy(&amd_pull.stderr),
        s.log_text()
    );
    assert_eq!(tagged(&t.join("amd"), "x").digest, amd.manifest.digest);
    // The unlisted platform was never fetched, and the upstream is gone.
    let arm_pull = tokio::task::block_in_place(|| pull("arm64", "arm"));
    assert!(!arm_pull.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_runs_at_start_heads_before_pulling_and_follows_a_moved_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let v1 = small_image(&up, 1);
    let v2 = small_image(&up, 2);
    up.set_tag(REPO, "1", &v1);
    let list = tmp.path().join("warm.list");
    std::fs::write(&list, "app:1\n").unwrap();
    let s = Server::mirror(
        &up.url(),
        &format!("  warm:\n    file: {}\n", list.display()),
    );
    assert!(
        eventually(Duration::from_secs(20), || s
            .log_text()
            .contains("warm run finished"))
        .await,
        "{}",
        s.log_text()
    );
    assert_eq!(
        s.metric("stevedore_warm_runs_total", &[("trigger", "start")])
            .await,
        1.0
    );
    assert_eq!(up.requests("HEAD", "/manifests/1"), 1);
    assert_eq!(up.requests("GET", "/manifests/1"), 1);
    assert_eq!(
        s.metric("stevedore_warm_blobs_total", &[("outcome", "fetched")])
            .await,
        2.0
    );

    // Unchanged upstream: one HEAD, no manifest GET, every blob there already.
    let (code, out, err) = warm_cli(&s, &list).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&v1), "{out}");
    assert!(
        out.contains("0 manifests and 0 blobs (0 bytes) fetched"),
        "{out}"
    );
    assert_eq!(up.requests("HEAD", "/manifests/1"), 2);
    assert_eq!(up.requests("GET", "/manifests/1"), 1);
    assert_eq!(
        s.metric("stevedore_warm_blobs_total", &[("outcome", "cached")])
            .await,
        2.0
    );

    // The tag moves: the next run follows it, and the cache serves the new digest alone.
    up.set_tag(REPO, "1", &v2);
    let (code, out, err) = warm_cli(&s, &list).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&v2), "{out}");
    up.stop().await;
    let r = get_tag(&s, "1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_of(&r), v2);

    // A list naming what the upstream lacks fails that image, and says so.
    std::fs::write(&list, "app:1\napp:nope\n").unwrap();
    let (code, out, _) = warm_cli(&s, &list).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED app:nope"), "{out}");
    // A list that does not parse is refused before the server is asked.
    std::fs::write(&list, "app:1 linux\n").unwrap();
    let (code, _, err) = warm_cli(&s, &list).await;
    assert_eq!(code, 2);
    assert!(err.contains("line 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_runs_on_schedule_and_refuses_unknown_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let v1 = small_image(&up, 3);
    up.set_tag(REPO, "1", &v1);
    let child = small_image(&up, 4);
    let index = api::index_body(OCI_INDEX, &[(OCI_MANIFEST, &child, 0)]);
    up.add_manifest(REPO, Some("multi"), OCI_INDEX, index.into());
    let list = tmp.path().join("warm.list");
    std::fs::write(&list, "app:1\napp:multi linux/s390x\n").unwrap();
    let s = Server::mirror(
        &up.url(),
        &format!("  warm:\n    file: {}\n    interval: 1s\n", list.display()),
    );
    // One failure per run: the start-up run's, then a scheduled one's.
    let failed = metric_until(
        &s,
        "stevedore_warm_images_total",
        &[("outcome", "failed")],
        |v| v >= 2.0,
    )
    .await;
    assert!(failed >= 2.0, "{}", s.log_text());
    assert!(
        s.metric("stevedore_warm_runs_total", &[("trigger", "schedule")])
            .await
            >= 1.0
    );
    assert!(s.logged("the index has no linux/s390x image").await);
    // The index was fetched (to read its platforms), no child manifest was.
    assert_eq!(up.requests("GET", &child), 0);
}

/// The mirror's config YAML for `up`, with data under `data`.
fn mirror_opts(up: &FakeUpstream, data: &Path, proxy_extra: &str) -> Options {
    Options {
        extra_yaml: format!(
            "proxy:\n  remoteurl: {}\n  tagttl: 0s\n{proxy_extra}",
            up.url()
        ),
        data_dir: Some(data.to_owned()),
        ..Options::default()
    }
}

#[tokio::test]
async fn cooldown_serves_the_previous_digest_after_the_tag_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let v1 = small_image(&up, 5);
    let v2 = small_image(&up, 6);
    up.set_tag(REPO, "1", &v1);
    // Pulled once with no cooldown: v1 is the tag's digest here.
    let mut s = Server::start_with(mirror_opts(&up, &data, ""));
    let r = get_tag(&s, "1").await;
    assert_eq!(digest_of(&r), v1);
    s.stop();
    drop(s);

    let s = Server::start_with(mirror_opts(&up, &data, "  cooldown: 168h\n"));
    up.set_tag(REPO, "1", &v2);
    let r = get_tag(&s, "1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_of(&r), v1, "the young digest was served");
    assert_eq!(
        s.metric(
            "stevedore_cooldown_decisions_total",
            &[("decision", "held")]
        )
        .await,
        1.0
    );
    assert!(s.logged("cooldown: the upstream tag moved").await);
    // Asked again: still v1, and v2's age runs from its first sighting (held again).
    let r = get_tag(&s, "1").await;
    assert_eq!(digest_of(&r), v1);
    // A pull by digest names its content: not held.
    let r = get_tag(&s, &v2).await;
    assert_eq!(r.status(), 200);

    // A tag never seen before has no earlier digest: refused, and no manifest GET was spent.
    up.set_tag(REPO, "new", &v2);
    let r = get_tag(&s, "new").await;
    let body = api::expect_error(r, 403, "DENIED").await;
    assert!(body.to_string().contains("proxy.cooldown"), "{body}");
    assert_eq!(up.requests("GET", "/manifests/new"), 0);
    assert_eq!(
        s.metric(
            "stevedore_cooldown_decisions_total",
            &[("decision", "refused")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn cooldown_admits_a_digest_once_old_enough() {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let v1 = small_image(&up, 7);
    up.set_tag(REPO, "1", &v1);
    let s = Server::start_with(mirror_opts(
        &up,
        &tmp.path().join("data"),
        "  cooldown: 2s\n",
    ));
    let r = get_tag(&s, "1").await;
    assert_eq!(r.status(), 403);
    let deadline = Instant::now() + Duration::from_secs(10);
    let admitted = loop {
        let r = get_tag(&s, "1").await;
        if r.status() == 200 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(admitted.status(), 200);
    assert_eq!(digest_of(&admitted), v1);
    assert_eq!(
        s.metric(
            "stevedore_cooldown_decisions_total",
            &[("decision", "admitted")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_tag_the_upstream_drops_is_kept_and_served_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let v1 = small_image(&up, 8);
    up.set_tag(REPO, "1", &v1);
    let s = Server::start_with(mirror_opts(&up, &tmp.path().join("data"), ""));
    let r = get_tag(&s, "1").await;
    assert_eq!(digest_of(&r), v1);
    assert!(r.headers().get("x-stevedore-upstream").is_none());

    up.remove_tag(REPO, "1");
    for _ in 0..2 {
        let r = get_tag(&s, "1").await;
        assert_eq!(r.status(), 200, "{}", s.log_text());
        assert_eq!(digest_of(&r), v1);
        assert_eq!(r.headers()["x-stevedore-upstream"], "not-found");
    }
    assert!(
        up.requests("HEAD", "/manifests/1") >= 2,
        "the upstream was asked"
    );
    assert_eq!(
        s.metric(
            "stevedore_stale_serves_total",
            &[("kind", "manifest"), ("reason", "not_found")]
        )
        .await,
        2.0
    );
    assert_eq!(
        s.log_text().matches("tag is gone upstream").count(),
        1,
        "said once"
    );

    // Back upstream: the mark goes.
    up.set_tag(REPO, "1", &v1);
    let r = get_tag(&s, "1").await;
    assert_eq!(digest_of(&r), v1);
    assert!(r.headers().get("x-stevedore-upstream").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_lists_obey_the_deny_rules_without_asking_the_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let v1 = small_image(&up, 9);
    up.set_tag(REPO, "1", &v1);
    let s = Server::mirror(&up.url(), "  deny: [\"library/secret\"]\n");
    let list = tmp.path().join("warm.list");
    std::fs::write(&list, "secret:1\napp:1\n").unwrap();
    let (code, out, err) = warm_cli(&s, &list).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAILED secret:1"), "{out}");
    assert!(out.contains("proxy.deny"), "{out}");
    assert!(out.contains("1 images warmed, 1 failed"), "{out}");
    assert!(
        up.request_log().iter().all(|l| !l.path.contains("secret")),
        "the upstream was asked for a denied repository"
    );
}
