//! End to end with skopeo (issue 3): images written as OCI layouts are copied into stevedore
//! and back out, alone and as a multi-arch index with `--all`, and through stevedore as a
//! mirror of the distribution reference registry, also after that upstream is stopped.
//! Needs `skopeo` (and `docker-registry` for the mirror test) on PATH; a missing one fails the
//! test with an install hint (see .ci/run).

use crate::common::api::get;
use crate::common::oci_layout::{self, Image, Layout, blob_digests, tagged};
use crate::common::refreg::RefRegistry;
use crate::common::tools::{require, skopeo_ok};
use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A scratch directory; panics with an install hint when skopeo is missing.
fn setup() -> tempfile::TempDir {
    require("skopeo", "skopeo");
    require("tar", "tar");
    require("gzip", "gzip");
    tempfile::tempdir().unwrap()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A layout at `tmp/name` with one linux/amd64 image of a config and three layers, tagged `tag`.
fn single_image_layout(tmp: &Path, name: &str, tag: &str, seed: u64) -> (PathBuf, Image) {
    let dir = tmp.join(name);
    let mut l = Layout::create(&dir);
    let layers: Vec<_> = (0..3)
        .map(|i| l.add_layer(seed * 10 + i, 2 + i as usize, 40_000))
        .collect();
    let img = l.add_image("amd64", &layers);
    l.tag(&img.manifest, tag);
    (dir, img)
}

/// A layout at `tmp/name` with an index of linux/amd64 and linux/arm64 images that share a
/// base layer, tagged `tag`.
fn multi_arch_layout(tmp: &Path, name: &str, tag: &str, seed: u64) -> (PathBuf, Value, Vec<Image>) {
    let dir = tmp.join(name);
    let mut l = Layout::create(&dir);
    let base = l.add_layer(seed * 10, 2, 30_000);
    let amd = l.add_image(
        "amd64",
        &[base.clone(), l.add_layer(seed * 10 + 1, 1, 20_000)],
    );
    let arm = l.add_image("arm64", &[base, l.add_layer(seed * 10 + 2, 1, 20_000)]);
    let index = l.add_index(&[&amd, &arm]);
    l.tag(&index, tag);
    let index_json: Value =
        serde_json::from_slice(&oci_layout::read_blob(&dir, &index.digest)).unwrap();
    (dir, index_json, vec![amd, arm])
}

/// GETs a manifest from `base` accepting `accept`; returns its Docker-Content-Digest and bytes.
async fn get_manifest(base: &str, repo: &str, reference: &str, accept: &str) -> (String, Vec<u8>) {
    let r = get(
        &format!("{base}/v2/{repo}/manifests/{reference}"),
        Some(accept),
    )
    .await;
    assert_eq!(r.status(), 200, "GET manifest {repo}:{reference}");
    let d = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        digest(&body),
        d,
        "Docker-Content-Digest of {repo}:{reference}"
    );
    (d, body)
}

#[tokio::test]
async fn skopeo_copy_image_in_and_out() {
    let tmp = setup();
    let t = tmp.path();
    let s = Server::start();
    let (src, img) = single_image_layout(t, "src", "v1", 1);
    let dest = format!("docker://{}/e2e/img", s.host());

    for tag in ["v1", "v2"] {
        skopeo_ok(
            t,
            &[
                "copy",
                "--preserve-digests",
                "--dest-tls-verify=false",
                &format!("oci:{}:v1", src.display()),
                &format!("{dest}:{tag}"),
            ],
        );
    }

    // The registry holds the very manifest the layout had.
    let (d, body) = get_manifest(&s.url(""), "e2e/img", "v1", OCI_MANIFEST).await;
    assert_eq!(d, img.manifest.digest);
    assert_eq!(body, oci_layout::read_blob(&src, &d));

    let inspect = json(&skopeo_ok(
        t,
        &["inspect", "--tls-verify=false", &format!("{dest}:v1")],
    ));
    assert_eq!(inspect["Digest"], img.manifest.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    let layers: Vec<&str> = inspect["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let want: Vec<&str> = img.layers.iter().map(|l| l.desc.digest.as_str()).collect();
    assert_eq!(layers, want);
    let config = skopeo_ok(
        t,
        &[
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            &format!("{dest}:v2"),
        ],
    );
    assert_eq!(digest(config.as_bytes()), img.config.digest);

    let tags = json(&skopeo_ok(t, &["list-tags", "--tls-verify=false", &dest]));
    let mut tags: Vec<&str> = tags["Tags"]
        .as_array()
        .expect("Tags")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);

    let out = t.join("out");
    skopeo_ok(
        t,
        &[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("{dest}:v2"),
            &format!("oci:{}:copied", out.display()),
        ],
    );
    assert_eq!(tagged(&out, "copied").digest, img.manifest.digest);
    assert_eq!(blob_digests(&out), blob_digests(&src));

    // Deleting the manifest (skopeo resolves the tag, then DELETEs by digest) drops both tags.
    skopeo_ok(t, &["delete", "--tls-verify=false", &format!("{dest}:v2")]);
    for tag in ["v1", "v2"] {
        let r = get(
            &s.url(&format!("/v2/e2e/img/manifests/{tag}")),
            Some(OCI_MANIFEST),
        )
        .await;
        assert_eq!(r.status(), 404, "{tag} after delete");
    }
    let r = get(
        &s.url(&format!("/v2/e2e/img/manifests/{}", img.manifest.digest)),
        Some(OCI_MANIFEST),
    )
    .await;
    assert_eq!(r.status(), 404, "manifest by digest after delete");
    let tags = json(&skopeo_ok(t, &["list-tags", "--tls-verify=false", &dest]));
    assert!(
        tags["Tags"].as_array().is_none_or(|a| a.is_empty()),
        "{tags}"
    );
}

#[tokio::test]
async fn skopeo_copy_multi_arch_index_with_all() {
    let tmp = setup();
    let t = tmp.path();
    let s = Server::start();
    let (src, index, images) = multi_arch_layout(t, "src", "multi", 2);
    let index_desc = tagged(&src, "multi");
    let dest = format!("docker://{}/e2e/multi:1.0", s.host());

    skopeo_ok(
        t,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", src.display()),
            &dest,
        ],
    );

    let (d, body) = get_manifest(&s.url(""), "e2e/multi", "1.0", OCI_INDEX).await;
    assert_eq!(d, index_desc.digest);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), index);
    for img in &images {
        let (d, _) =
            get_manifest(&s.url(""), "e2e/multi", &img.manifest.digest, OCI_MANIFEST).await;
        assert_eq!(d, img.manifest.digest);
    }

    let raw = skopeo_ok(t, &["inspect", "--raw", "--tls-verify=false", &dest]);
    assert_eq!(digest(raw.as_bytes()), index_desc.digest);
    for img in &images {
        let i = json(&skopeo_ok(
            t,
            &[
                "--override-arch",
                &img.arch,
                "inspect",
                "--tls-verify=false",
                &dest,
            ],
        ));
        // skopeo reports the digest of what the tag names (the index) and the chosen
        // platform's details.
        assert_eq!(i["Digest"], index_desc.digest.as_str());
        assert_eq!(i["Architecture"], img.arch.as_str());
        let layers: Vec<&str> = i["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let want: Vec<&str> = img.layers.iter().map(|l| l.desc.digest.as_str()).collect();
        assert_eq!(layers, want, "{}", img.arch);
    }

    let out = t.join("out");
    skopeo_ok(
        t,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &dest,
            &format!("oci:{}:back", out.display()),
        ],
    );
    assert_eq!(tagged(&out, "back").digest, index_desc.digest);
    assert_eq!(blob_digests(&out), blob_digests(&src));
}

/// skopeo pulls a multi-arch index through stevedore mirroring the reference registry: first
/// every manifest and blob is a miss, then, with the upstream stopped, everything comes from the
/// cache (the tag, revalidated on every request with `tagttl: 0s`, is served stale).
#[tokio::test]
async fn skopeo_pull_through_mirror_survives_upstream_outage() {
    let tmp = setup();
    let t = tmp.path();
    let mut up = RefRegistry::start();
    let (src, _, images) = multi_arch_layout(t, "src", "multi", 3);
    let index_desc = tagged(&src, "multi");
    skopeo_ok(
        t,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", src.display()),
            &format!("docker://{}/library/multi:1", up.addr),
        ],
    );
    let s = Server::mirror(&up.url(), "  tagttl: 0s\n");
    let from = format!("docker://{}/library/multi:1", s.host());
    let blobs = blob_digests(&src).len() - 1 - images.len(); // minus index and manifests

    let pull = |out: &str| {
        let out = t.join(out);
        skopeo_ok(
            t,
            &[
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                &from,
                &format!("oci:{}:x", out.display()),
            ],
        );
        assert_eq!(tagged(&out, "x").digest, index_desc.digest);
        assert_eq!(blob_digests(&out), blob_digests(&src));
    };

    pull("out1");
    let miss = s
        .metric(
            "stevedore_cache_lookups_total",
            &[("kind", "blob"), ("outcome", "miss")],
        )
        .await;
    assert_eq!(miss as usize, blobs, "each blob fetched from upstream once");
    assert_eq!(
        s.metric(
            "stevedore_cache_lookups_total",
            &[("kind", "blob"), ("outcome", "hit")]
        )
        .await,
        0.0
    );

    up.stop();
    pull("out2");
    let hit = s
        .metric(
            "stevedore_cache_lookups_total",
            &[("kind", "blob"), ("outcome", "hit")],
        )
        .await;
    assert!(hit as usize >= blobs, "blob hits {hit} < {blobs}");
    assert!(
        s.metric("stevedore_stale_serves_total", &[("kind", "manifest")])
            .await
            >= 1.0,
        "the tag was not served stale; log:\n{}",
        s.log_text()
    );
}
