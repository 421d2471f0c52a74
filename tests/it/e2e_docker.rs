//! End to end with the Docker daemon (issue 4): `docker push`/`docker pull` against stevedore
//! as a private registry, and stevedore as dockerd's `--registry-mirror` in front of the
//! distribution reference registry, still serving after that upstream is stopped.
//!
//! Each test runs its own dockerd (see `common::docker`), so they can run in parallel. Nothing
//! is skipped: a missing `dockerd` or `docker` fails the test with an install hint
//! (`require_daemon` asserts, whatever its name says), and so does a daemon that is
//! installed but cannot start.

use crate::common::api::get;
use crate::common::docker::{Dockerd, DockerdOptions, require_daemon, rootfs_tarball};
use crate::common::refreg::RefRegistry;
use crate::common::*;
use serde_json::Value;

async fn get_json(url: &str) -> Value {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.json().await.unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// The manifest digest `docker push` reports ("v1: digest: sha256:… size: N").
fn pushed_digest(output: &str) -> String {
    output
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in push output:\n{output}"))
        .to_owned()
}

#[tokio::test]
async fn docker_push_and_pull_local_image() {
    require_daemon("docker_push_and_pull_local_image");
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start();
    let d = Dockerd::start(DockerdOptions {
        insecure_registries: vec![s.host().to_owned()],
        ..Default::default()
    });
    let v1 = format!("{}/e2e/app:v1", s.host());
    let v2 = format!("{}/e2e/app:v2", s.host());
    let id = d.import(&rootfs_tarball(tmp.path(), 1), &v1);

    let out = d.docker_ok(&["push", &v1]);
    let pushed = pushed_digest(&out);
    // A second tag of the same image: docker finds its layer already there.
    d.docker_ok(&["tag", &v1, &v2]);
    let out2 = d.docker_ok(&["push", &v2]);
    assert!(out2.contains("exists"), "second push:\n{out2}");
    assert_eq!(pushed_digest(&out2), pushed);

    d.docker_ok(&["rmi", &v1, &v2]);
    assert!(!d.has_image(&id), "image still present after rmi");
    let out = d.docker_ok(&["pull", &v1]);
    assert!(out.contains(&pushed), "pull output lacks {pushed}:\n{out}");
    assert_eq!(d.image_id(&v1), id, "pulled image differs from pushed");
    let repo_digests = d.docker_ok(&["image", "inspect", "--format", "{{json .RepoDigests}}", &v1]);
    assert!(
        repo_digests.contains(&format!("{}/e2e/app@{pushed}", s.host())),
        "{repo_digests}"
    );

    // The same image under another repository: docker offers a cross-repository mount.
    let other = format!("{}/e2e/other:v1", s.host());
    d.docker_ok(&["tag", &v1, &other]);
    let out = d.docker_ok(&["push", &other]);
    assert_eq!(pushed_digest(&out), pushed);
    assert!(
        out.contains("Mounted from e2e/app"),
        "push to e2e/other:\n{out}"
    );
    // And by digest.
    d.docker_ok(&["rmi", &v1, &other]);
    let by_digest = format!("{}/e2e/other@{pushed}", s.host());
    d.docker_ok(&["pull", &by_digest]);
    assert_eq!(d.image_id(&by_digest), id);

    let catalog = get_json(&s.url("/v2/_catalog")).await;
    let repos = strings(&catalog["repositories"]);
    assert!(
        repos.contains(&"e2e/app".to_owned()) && repos.contains(&"e2e/other".to_owned()),
        "{catalog}"
    );
    let tags = get_json(&s.url("/v2/e2e/app/tags/list")).await;
    assert_eq!(tags["name"], "e2e/app");
    let mut t = strings(&tags["tags"]);
    t.sort();
    assert_eq!(t, ["v1", "v2"]);
    // The manifest docker pushed (Docker schema 2) is what the registry serves.
    let r = get(&s.url("/v2/e2e/app/manifests/v1"), Some(DOCKER_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], pushed.as_str());
    assert_eq!(r.headers()["content-type"], DOCKER_MANIFEST);
}

/// dockerd pulls a Docker Hub-style name (`library/…`), so it asks its mirror, stevedore, which
/// fetches from the reference registry. Were the mirror to fail, dockerd would fall back to the
/// real Docker Hub, unreachable here, so a successful pull shows that stevedore answered. After
/// the upstream is stopped the image still pulls, from stevedore's cache (`tagttl: 0s` makes
/// stevedore revalidate the tag every time, so that path is served stale).
#[tokio::test]
async fn docker_pulls_through_mirror_and_from_cache_when_upstream_is_down() {
    require_daemon("docker_pulls_through_mirror_and_from_cache_when_upstream_is_down");
    let tmp = tempfile::tempdir().unwrap();
    let mut up = RefRegistry::start();
    let s = Server::mirror(&up.url(), "  tagttl: 0s\n");
    let d = Dockerd::start(DockerdOptions {
        insecure_registries: vec![up.addr.clone(), s.host().to_owned()],
        registry_mirrors: vec![s.url("")],
    });

    // Publish library/e2e-mirror:1.0 upstream, then forget it locally.
    let upstream_ref = format!("{}/library/e2e-mirror:1.0", up.addr);
    let id = d.import(&rootfs_tarball(tmp.path(), 2), &upstream_ref);
    let pushed = pushed_digest(&d.docker_ok(&["push", &upstream_ref]));
    d.docker_ok(&["rmi", &upstream_ref]);
    assert!(!d.has_image(&id));

    let blob = |outcome: &'static str| [("kind", "blob"), ("outcome", outcome)];
    let hub_ref = "e2e-mirror:1.0";
    let out = d.docker_ok(&["pull", hub_ref]);
    assert!(out.contains(&pushed), "pull output lacks {pushed}:\n{out}");
    assert_eq!(d.image_id(hub_ref), id);
    let lookups = "stevedore_cache_lookups_total";
    // The config and the one layer came through stevedore.
    assert_eq!(
        s.metric(lookups, &blob("miss")).await,
        2.0,
        "{}",
        s.log_text()
    );
    assert_eq!(s.metric(lookups, &blob("hit")).await, 0.0);

    d.docker_ok(&["rmi", hub_ref]);
    assert!(!d.has_image(&id));
    up.stop();
    assert!(
        tools::http_status(&up.addr, "/v2/").is_none(),
        "upstream still answers"
    );

    let out = d.docker_ok(&["pull", hub_ref]);
    assert!(
        out.contains(&pushed),
        "second pull output lacks {pushed}:\n{out}"
    );
    assert_eq!(d.image_id(hub_ref), id);
    assert_eq!(
        s.metric(lookups, &blob("hit")).await,
        2.0,
        "{}",
        s.log_text()
    );
    assert_eq!(s.metric(lookups, &blob("miss")).await, 2.0);
    assert!(
        s.metric("stevedore_stale_serves_total", &[("kind", "manifest")])
            .await
            >= 1.0,
        "the tag was not served stale"
    );

    // By digest, also from the cache.
    d.docker_ok(&["rmi", hub_ref]);
    let by_digest = format!("e2e-mirror@{pushed}");
    d.docker_ok(&["pull", &by_digest]);
    assert_eq!(d.image_id(&by_digest), id);
    assert_eq!(s.metric(lookups, &blob("hit")).await, 4.0);
    assert_eq!(s.metric(lookups, &blob("miss")).await, 2.0);
}
