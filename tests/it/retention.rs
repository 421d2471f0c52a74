//! What stays in the cache (issue 19): pinned images (`proxy.pin`) survive eviction pressure
//! while unpinned ones go; `stevedore purge REPO[:TAG]` drops one image's cached content at
//! once, keeping blobs other content still references, and pushed content only when asked.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::*;
use bytes::Bytes;
use std::path::PathBuf;
use std::time::Duration;

/// A one-layer image `repo:v1` on the fake upstream from `layers` (shared ones allowed);
/// returns (manifest digest, config digest, layer digests).
fn image(
    up: &FakeUpstream,
    repo: &str,
    seed: u64,
    layers: &[Bytes],
) -> (String, String, Vec<String>) {
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}"
    ));
    let cd = up.add_blob(repo, config.clone());
    let ls: Vec<(String, usize)> = layers
        .iter()
        .map(|l| (up.add_blob(repo, l.clone()), l.len()))
        .collect();
    let refs: Vec<(&str, usize)> = ls.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let body = image_manifest(OCI_MANIFEST, (&cd, config.len()), &refs);
    let md = up.add_manifest(repo, Some("v1"), OCI_MANIFEST, Bytes::from(body));
    (md, cd, ls.into_iter().map(|(d, _)| d).collect())
}

async fn get(s: &Server, path: &str) -> reqwest::Response {
    crate::common::api::get(&s.url(path), Some(OCI_MANIFEST)).await
}

/// Pulls `repo:v1` whole through the mirror and waits until its blobs are cached.
async fn pull(s: &Server, repo: &str, config: &str, layers: &[String]) {
    assert_eq!(
        get(s, &format!("/v2/{repo}/manifests/v1")).await.status(),
        200
    );
    for b in std::iter::once(config).chain(layers.iter().map(String::as_str)) {
        let r = get(s, &format!("/v2/{repo}/blobs/{b}")).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        assert!(
            s.fetched_and_cached(b).await,
            "{b} not cached:\n{}",
            s.log_text()
        );
    }
}

fn blob_file(s: &Server, d: &str) -> PathBuf {
    api::blob_path(&s.dir, d)
}

#[tokio::test]
async fn a_pinned_image_survives_eviction_pressure_an_unpinned_one_does_not() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let layer = |seed| Bytes::from(random_bytes(100_000, seed));
    let (_, kc, kl) = image(&up, "library/keep", 1, &[layer(11)]);
    let (_, dc, dl) = image(&up, "library/drop", 2, &[layer(12)]);
    let filler = up.add_blob("library/filler", layer(13));
    let s = Server::mirror(
        &up.url(),
        "  maxsize: 250000\n  pin: [\"library/keep:*\", \"bitnami/**\"]\n",
    );
    // keep is cached first: least recently used, it would be the first to go unpinned.
    pull(&s, "library/keep", &kc, &kl).await;
    pull(&s, "library/drop", &dc, &dl).await;
    assert_eq!(
        get(&s, &format!("/v2/library/filler/blobs/{filler}"))
            .await
            .status(),
        200
    );
    assert!(s.fetched_and_cached(&filler).await);
    // The evictor ran and brought the cache under its bound...
    let mut settled = false;
    for _ in 0..500 {
        let bytes = s
            .metric("stevedore_storage_bytes", &[("origin", "proxy")])
            .await;
        let evicted = s
            .metric("stevedore_evictions_total", &[("reason", "size")])
            .await;
        if bytes <= 250_000.0 && evicted > 0.0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        settled,
        "no eviction brought the cache under 250000 bytes; log:\n{}",
        s.log_text()
    );
    // ...stepping over the pinned image, evicting the unpinned one.
    assert!(
        blob_file(&s, &kl[0]).exists(),
        "the pinned image's layer was evicted"
    );
    assert!(
        blob_file(&s, &kc).exists(),
        "the pinned image's config was evicted"
    );
    assert!(
        !blob_file(&s, &dl[0]).exists(),
        "the unpinned image's layer stayed"
    );
    // With the upstream gone, the pinned image still pulls whole.
    up.stop().await;
    pull(&s, "library/keep", &kc, &kl).await;
}

#[tokio::test]
async fn purge_drops_one_cached_image_and_keeps_what_others_share() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let shared = Bytes::from(random_bytes(50_000, 21));
    let (_, ac, al) = image(
        &up,
        "library/app",
        3,
        &[shared.clone(), Bytes::from(random_bytes(40_000, 22))],
    );
    let (_, oc, ol) = image(
        &up,
        "library/other",
        4,
        &[shared, Bytes::from(random_bytes(30_000, 23))],
    );
    let mut s = Server::mirror(&up.url(), "");
    pull(&s, "library/app", &ac, &al).await;
    pull(&s, "library/other", &oc, &ol).await;
    let (own, _) = push_image(&s.url(""), "team/own", "v1", 1, 9).await;
    let config = s.config_path.to_str().unwrap().to_owned();
    // The command finds the store locked and asks the server's debug listener.
    let debug = s.debug_addr.clone().unwrap();
    let env = [("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())];

    // Against the running server (through its debug listener).
    let (code, out, err) = run_cli_env(&["purge", "library/app:v1", &config], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        report["tags_deleted"],
        serde_json::json!(["v1"]),
        "{report}"
    );
    assert_eq!(report["manifests_deleted"], 1, "{report}");
    // The manifest, its config and its own layer go; the shared layer stays.
    assert_eq!(report["blobs_deleted"], 3, "{report}");
    assert_eq!(report["blobs_kept"], 1, "{report}");
    assert!(!blob_file(&s, &al[1]).exists() && !blob_file(&s, &ac).exists());
    assert!(blob_file(&s, &al[0]).exists());
    // Offline, the purged image is gone and the other one is whole.
    let r = send(client().post(s.debug_url("/debug/offline?on=1"))).await;
    assert_eq!(r.status(), 200);
    assert_ne!(get(&s, "/v2/library/app/manifests/v1").await.status(), 200);
    pull(&s, "library/other", &oc, &ol).await;

    // Pushed content needs --pushed.
    let (code, _, err) = run_cli_env(&["purge", "team/own:v1", &config], &env);
    assert_ne!(code, 0);
    assert!(err.contains("--pushed"), "{err}");
    assert_eq!(
        get(&s, &format!("/v2/team/own/manifests/{own}"))
            .await
            .status(),
        200
    );
    let (code, out, err) = run_cli_env(&["purge", "--pushed", "team/own:v1", &config], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["manifests_deleted"], 1, "{report}");
    assert_ne!(get(&s, "/v2/team/own/manifests/v1").await.status(), 200);
    assert_ne!(
        get(&s, &format!("/v2/team/own/manifests/{own}"))
            .await
            .status(),
        200
    );

    // With the server stopped the CLI purges a whole repository itself.
    s.stop();
    let (code, out, err) = run_cli_env(&["purge", "library/other", &config], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["blobs_deleted"], 4, "{report}");
    assert!(
        !blob_file(&s, &ol[0]).exists(),
        "the last user of the shared layer is gone"
    );
}
