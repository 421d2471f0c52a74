//! Air-gap bundles (issue 19): `stevedore export` on a mirror of the fake upstream, `stevedore
//! import` on a registry with no upstream, then skopeo and dockerd pull from the second and
//! every digest matches; a tampered bundle is refused naming the bad blob and leaves nothing;
//! an incremental export carries only what the other side lacks.

use crate::common::api::get;
use crate::common::docker::{Dockerd, DockerdOptions, require_daemon};
use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::oci_layout::{self, Image, Layout, blob_digests};
use crate::common::tools::{require, skopeo_ok};
use crate::common::*;
use bytes::Bytes;
use serde_json::{Value, json};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const REPO: &str = "library/app";

/// Every blob of the layout at `dir` on the fake upstream under `repo`, the manifests (and
/// index) as manifests too.
fn serve_layout(
    up: &FakeUpstream,
    repo: &str,
    dir: &Path,
    manifests: &[(&oci_layout::Desc, Option<&str>)],
) {
    for d in blob_digests(dir) {
        up.add_blob(repo, Bytes::from(oci_layout::read_blob(dir, &d)));
    }
    for (m, tag) in manifests {
        up.add_manifest(
            repo,
            *tag,
            &m.media_type,
            Bytes::from(oci_layout::read_blob(dir, &m.digest)),
        );
    }
}

/// A two-platform image `v1` (amd64, arm64; a shared base layer) on the fake upstream, with a
/// signature-style referrer of the amd64 manifest.
struct Fixture {
    layout: PathBuf,
    index: oci_layout::Desc,
    amd: Image,
    arm: Image,
    referrer: String,
    referrer_config: String,
}

fn fixture(up: &FakeUpstream, tmp: &Path) -> Fixture {
    let dir = tmp.join("upstream-layout");
    let l = Layout::create(&dir);
    let base = l.add_layer(71, 2, 30_000);
    let amd = l.add_image("amd64", &[base.clone(), l.add_layer(72, 1, 20_000)]);
    let arm = l.add_image("arm64", &[base, l.add_layer(73, 1, 20_000)]);
    let index = l.add_index(&[&amd, &arm]);
    serve_layout(
        up,
        REPO,
        &dir,
        &[
            (&index, Some("v1")),
            (&amd.manifest, None),
            (&arm.manifest, None),
        ],
    );
    let empty = b"{}";
    let referrer_config = up.add_blob(REPO, Bytes::from_static(empty));
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": referrer_config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": referrer_config, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": amd.manifest.digest, "size": amd.manifest.size},
    }))
    .unwrap();
    let referrer = up.add_manifest(REPO, None, OCI_MANIFEST, Bytes::from(sig));
    Fixture {
        layout: dir,
        index,
        amd,
        arm,
        referrer,
        referrer_config,
    }
}

async fn get_ok(s: &Server, path: &str, accept: &str) -> Bytes {
    let r = get(&s.url(path), Some(accept)).await;
    assert_eq!(r.status(), 200, "GET {path}");
    r.bytes().await.unwrap()
}

/// Pulls the index, the amd64 image and the referrer through the mirror, as a client would,
/// and waits until each blob is recorded in the cache.
async fn pull_amd64(s: &Server, f: &Fixture) {
    let accept = format!("{OCI_INDEX}, {OCI_MANIFEST}");
    get_ok(s, &format!("/v2/{REPO}/manifests/v1"), &accept).await;
    for m in [&f.amd.manifest.digest, &f.referrer] {
        get_ok(s, &format!("/v2/{REPO}/manifests/{m}"), &accept).await;
    }
    let mut blobs: Vec<&str> = f
        .amd
        .layers
        .iter()
        .map(|l| l.desc.digest.as_str())
        .collect();
    blobs.push(&f.amd.config.digest);
    blobs.push(&f.referrer_config);
    for b in blobs {
        get_ok(s, &format!("/v2/{REPO}/blobs/{b}"), "*/*").await;
        assert!(
            s.fetched_and_cached(b).await,
            "{b} not cached; log:\n{}",
            s.log_text()
        );
    }
}

/// Runs `stevedore ARGS` for `s` (its config last): with `s` running, the command finds the
/// store locked and asks `s`'s debug listener (whose port the config cannot know: the
/// environment names it).
fn cli(s: &Server, args: &[&str]) -> Value {
    let debug = s.debug_addr.clone().unwrap_or_default();
    let mut all = args.to_vec();
    all.push(s.config_path.to_str().unwrap());
    let (code, out, err) = run_cli_env(&all, &[("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())]);
    assert_eq!(
        code, 0,
        "stevedore {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}"
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("report is not JSON ({e}): {out}"))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Flips one byte in the middle of the tar entry `name`.
fn tamper(bundle: &Path, name: &str) {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    let (offset, size) = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some(name))
        .map(|e| (e.raw_file_position(), e.size()))
        .unwrap_or_else(|| panic!("no {name} in the bundle"));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(bundle)
        .unwrap();
    let at = offset + size / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
}

fn tar_entries(bundle: &Path) -> Vec<String> {
    tar::Archive::new(std::fs::File::open(bundle).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn export_from_a_mirror_import_air_gapped_then_skopeo_and_docker_pull() {
    require("skopeo", "skopeo");
    require_daemon("export_from_a_mirror_import_air_gapped_then_skopeo_and_docker_pull");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let up = FakeUpstream::start(FakeOptions {
        referrers_api: true,
        ..FakeOptions::default()
    })
    .await;
    let f = fixture(&up, t);
    let a = Server::mirror(&up.url(), "");
    pull_amd64(&a, &f).await;

    // Export while the mirror runs: the CLI asks it through its debug listener.
    let list = t.join("images.txt");
    std::fs::write(
        &list,
        format!("# the amd64 image only\ndocker.io/{REPO}:v1 linux/amd64\n"),
    )
    .unwrap();
    let bundle = t.join("bundle.tar");
    let report = cli(
        &a,
        &["export", "--list", path(&list), "--output", path(&bundle)],
    );
    assert_eq!(report["images"], json!([format!("{REPO}:v1")]), "{report}");
    assert_eq!(report["referrers"], 1, "{report}");
    // index, amd64 manifest, referrer; config, two layers, the referrer's empty blob.
    assert_eq!(report["blobs"], 7, "{report}");
    assert!(!t.join("bundle.tar.partial").exists());
    let entries = tar_entries(&bundle);
    assert!(
        !entries
            .iter()
            .any(|e| e.ends_with(f.arm.manifest.digest.trim_start_matches("sha256:"))),
        "the unlisted platform was exported: {entries:?}"
    );

    // skopeo reads the bundle itself, by the name index.json gives the image.
    let from_bundle = t.join("from-bundle");
    skopeo_ok(
        t,
        &[
            "copy",
            "--override-arch",
            "amd64",
            "--override-os",
            "linux",
            &format!("oci-archive:{}:{REPO}:v1", bundle.display()),
            &format!("oci:{}:v1", from_bundle.display()),
        ],
    );
    assert!(blob_digests(&from_bundle).contains(&f.amd.config.digest));

    // The air-gapped side: no upstream. A tampered copy is refused, naming the blob, and
    // leaves nothing behind; done with the server stopped (the CLI opens the store itself).
    let mut b = Server::start();
    b.stop();
    let bad = t.join("tampered.tar");
    std::fs::copy(&bundle, &bad).unwrap();
    let layer = &f.amd.layers[1].desc.digest;
    let entry = format!("blobs/sha256/{}", layer.trim_start_matches("sha256:"));
    tamper(&bad, &entry);
    let (code, out, err) = run_cli_env(&["import", path(&bad), path(&b.config_path)], &[]);
    assert_ne!(code, 0, "a tampered bundle was imported: {out}");
    assert!(
        err.contains(&entry) && err.contains("nothing was imported"),
        "{err}"
    );
    let stored: Vec<PathBuf> = api::files_under(&b.dir.join("blobs"));
    assert!(stored.is_empty(), "a refused bundle left blobs: {stored:?}");

    let report = cli(&b, &["import", path(&bundle)]);
    assert_eq!(report["origin"], "proxy", "{report}");
    assert_eq!(report["images"], json!([format!("{REPO}:v1")]), "{report}");
    assert_eq!(report["platforms_absent"], 1, "{report}");
    let b = Server::spawn(&b.config_path, &[], b.dir.clone());

    // skopeo copies from the second registry: the same manifests and blobs.
    let copied = t.join("copied");
    skopeo_ok(
        t,
        &[
            "copy",
            "--src-tls-verify=false",
            "--override-arch",
            "amd64",
            "--override-os",
            "linux",
            &format!("docker://{}/{REPO}:v1", b.host()),
            &format!("oci:{}:v1", copied.display()),
        ],
    );
    let want: std::collections::BTreeSet<String> = [&f.amd.manifest.digest, &f.amd.config.digest]
        .into_iter()
        .cloned()
        .chain(f.amd.layers.iter().map(|l| l.desc.digest.clone()))
        .collect();
    assert_eq!(blob_digests(&copied), want);
    for d in &want {
        assert_eq!(
            oci_layout::read_blob(&copied, d),
            oci_layout::read_blob(&f.layout, d)
        );
    }
    let r = get(&b.url(&format!("/v2/{REPO}/manifests/v1")), Some(OCI_INDEX)).await;
    assert_eq!(
        r.headers()["docker-content-digest"],
        f.index.digest.as_str()
    );
    // The signature came along and is listed as a referrer.
    let referrers: Value =
        send(client().get(b.url(&format!("/v2/{REPO}/referrers/{}", f.amd.manifest.digest))))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(
        referrers["manifests"][0]["digest"],
        f.referrer.as_str(),
        "{referrers}"
    );

    let d = Dockerd::start(DockerdOptions {
        insecure_registries: vec![b.host().to_owned()],
        ..Default::default()
    });
    let image = format!("{}/{REPO}:v1", b.host());
    let out = d.docker_ok(&["pull", "--platform", "linux/amd64", &image]);
    assert!(
        out.contains(&f.index.digest),
        "pull output lacks the index digest:\n{out}"
    );
    // The image ID is the config digest (or, with containerd's image store, the index's).
    let id = d.image_id(&image);
    assert!(
        id == f.amd.config.digest || id == f.index.digest,
        "image ID {id}"
    );
    let digests = d.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &image,
    ]);
    assert!(digests.contains(&f.index.digest), "{digests}");
}

#[tokio::test]
async fn an_incremental_bundle_carries_only_what_the_other_side_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let f = fixture(&up, t);
    let a = Server::mirror(&up.url(), "");
    pull_amd64(&a, &f).await;
    let list = t.join("images.txt");
    std::fs::write(&list, format!("{REPO}:v1 linux/amd64\n")).unwrap();
    let first = t.join("first.tar");
    cli(
        &a,
        &["export", "--list", path(&list), "--output", path(&first)],
    );

    // v2: the amd64 image with one more layer.
    let l = Layout::create(&f.layout);
    let mut layers = f.amd.layers.clone();
    layers.push(l.add_layer(74, 1, 10_000));
    let v2 = l.add_image("amd64", &layers);
    serve_layout(&up, REPO, &f.layout, &[(&v2.manifest, Some("v2"))]);
    get_ok(&a, &format!("/v2/{REPO}/manifests/v2"), OCI_MANIFEST).await;
    for b in [&v2.config.digest, &layers[2].desc.digest] {
        get_ok(&a, &format!("/v2/{REPO}/blobs/{b}"), "*/*").await;
        assert!(a.fetched_and_cached(b).await);
    }
    std::fs::write(&list, format!("{REPO}:v1 linux/amd64\n{REPO}:v2\n")).unwrap();
    let second = t.join("second.tar");
    // Offline this time: the mirror is stopped and the CLI opens its store.
    let mut a = a;
    a.stop();
    let report = cli(
        &a,
        &[
            "export",
            "--list",
            path(&list),
            "--output",
            path(&second),
            "--since",
            path(&first),
        ],
    );
    // Only v2's manifest, config and new layer.
    assert_eq!(report["blobs"], 3, "{report}");
    assert_eq!(report["images"].as_array().unwrap().len(), 2, "{report}");
    let entries = tar_entries(&second);
    assert!(
        !entries
            .iter()
            .any(|e| e.contains(f.amd.layers[0].desc.digest.trim_start_matches("sha256:")))
    );

    let b = Server::start();
    cli(&b, &["import", path(&first)]);
    let report = cli(&b, &["import", "--as-pushed", path(&second)]);
    assert_eq!(report["origin"], "local", "{report}");
    assert_eq!(report["blobs_written"], 2, "{report}");
    let m = get_ok(&b, &format!("/v2/{REPO}/manifests/v2"), OCI_MANIFEST).await;
    assert_eq!(digest(&m), v2.manifest.digest);
    for l in &layers {
        let data = get_ok(&b, &format!("/v2/{REPO}/blobs/{}", l.desc.digest), "*/*").await;
        assert_eq!(digest(&data), l.desc.digest);
    }
    // A bundle whose blobs the importing side lacks is refused as incomplete.
    let c = Server::start();
    let debug = c.debug_addr.clone().unwrap();
    let (code, _, err) = run_cli_env(
        &["import", path(&second), path(&c.config_path)],
        &[("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("incomplete") && err.contains("neither in the bundle"),
        "{err}"
    );
}
