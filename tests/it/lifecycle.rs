//! Cache lifecycle: eviction order and bound, read leases on blobs being read, garbage
//! collection after deletes, upload-session expiry, recovery of a damaged store, verification.

use crate::common::api::get;
use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::*;
use bytes::Bytes;
use futures::StreamExt;
use std::time::{Duration, Instant};

const REPO: &str = "library/cache";

fn blob_path(s: &Server, d: &str) -> std::path::PathBuf {
    let hex = d.trim_start_matches("sha256:");
    s.dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

async fn fetch(s: &Server, d: &str) -> Bytes {
    let r = send(client().get(s.url(&format!("/v2/{REPO}/blobs/{d}")))).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap()
}

/// Fetches a blob and waits until it is committed to the cache (a client has its last byte
/// before the blob is durable and recorded).
async fn fetch_cached(s: &Server, d: &str) -> Bytes {
    let b = fetch(s, d).await;
    assert!(eventually(Duration::from_secs(10), || blob_path(s, d).exists()).await);
    // Recorded right after the rename.
    assert!(
        s.fetched_and_cached(d).await,
        "{d} not recorded; log:\n{}",
        s.log_text()
    );
    b
}

/// Waits for the evictor to settle: proxied bytes at or under `max`.
async fn proxied_bytes(s: &Server) -> f64 {
    s.metric("stevedore_storage_bytes", &[("origin", "proxy")])
        .await
}

#[tokio::test]
async fn least_recently_used_goes_first_and_local_content_stays() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let blobs: Vec<Bytes> = (0..3)
        .map(|i| Bytes::from(random_bytes(100_000, 40 + i)))
        .collect();
    let ds: Vec<String> = blobs.iter().map(|b| up.add_blob(REPO, b.clone())).collect();
    let s = Server::mirror(&up.url(), "  maxsize: 250000\n");
    // A pushed blob larger than the bound is never evicted.
    let local = random_bytes(300_000, 99);
    let ld = push_blob(&s.url(""), "team/own", &local).await;
    fetch_cached(&s, &ds[0]).await;
    fetch_cached(&s, &ds[1]).await;
    fetch(&s, &ds[0]).await; // 0 is now more recent than 1
    // Not a wait for an event: the index's access clock counts milliseconds, and this keeps the
    // read above and the fill below apart on it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    fetch_cached(&s, &ds[2]).await; // over the bound: 1 must go
    assert!(
        eventually(Duration::from_secs(10), || !blob_path(&s, &ds[1]).exists()).await,
        "LRU blob not evicted; server log:\n{}",
        s.log_text()
    );
    assert!(blob_path(&s, &ds[0]).exists());
    assert!(blob_path(&s, &ds[2]).exists());
    assert!(
        blob_path(&s, &ld).exists(),
        "pushed content is never evicted"
    );
    assert!(proxied_bytes(&s).await <= 250_000.0);
    assert_eq!(
        s.metric("stevedore_evictions_total", &[("reason", "size")])
            .await,
        1.0
    );
    // The evicted blob is simply fetched again.
    assert_eq!(fetch(&s, &ds[1]).await, blobs[1]);
}

#[tokio::test]
async fn a_blob_being_read_is_not_evicted() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let big = Bytes::from(random_bytes(20 * 1024 * 1024, 50));
    let other = Bytes::from(random_bytes(20 * 1024 * 1024, 51));
    let d_big = up.add_blob(REPO, big.clone());
    let d_other = up.add_blob(REPO, other.clone());
    let s = Server::mirror(&up.url(), "  maxsize: 30MiB\n");
    fetch_cached(&s, &d_big).await;
    // Start reading the big blob and stop after the first chunk: the response stays open.
    let r = send(client().get(s.url(&format!("/v2/{REPO}/blobs/{d_big}")))).await;
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // Fill the cache past its bound: the reader holds a read lease on its blob, so it stays. (The 5 ms keep
    // the read and the fill apart on the index's millisecond access clock.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    fetch(&s, &d_other).await;
    assert!(s.fetched_and_cached(&d_other).await, "{}", s.log_text());
    // Prove that an eviction pass ran while the reader held the blob: it steps over the leased
    // blob and takes the other one to get under the bound. The pass the fill itself wakes may
    // still see that blob as being fetched and spare it, so small fills wake more passes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seed = 500;
    while blob_path(&s, &d_other).exists() {
        assert!(
            Instant::now() < deadline,
            "no pass took the blob nobody was reading; log:\n{}",
            s.log_text()
        );
        seed += 1;
        let small = up.add_blob(REPO, Bytes::from(random_bytes(1000, seed)));
        fetch(&s, &small).await;
        // Waits for the fill to land, not for it to stay: while the other blob is still being
        // committed, the fill itself can be a pass's only candidate (the big one is leased).
        assert!(
            s.fetched_and_cached(&small).await,
            "{small} not cached; log:\n{}",
            s.log_text()
        );
    }
    // The counter follows the removal.
    assert!(
        s.metric_reaches("stevedore_evictions_total", &[("reason", "size")], 1.0)
            .await,
        "the eviction was not counted"
    );
    assert!(
        blob_path(&s, &d_big).exists(),
        "a blob being read was evicted"
    );
    let mut got = first.to_vec();
    while let Some(c) = stream.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(digest(&got), d_big);
    // Once the reader is done, the next pass (woken by another fill) may take it: it is the
    // least recently used.
    let third = up.add_blob(REPO, Bytes::from(random_bytes(15 * 1024 * 1024, 52)));
    fetch(&s, &third).await;
    assert!(eventually(Duration::from_secs(10), || !blob_path(&s, &d_big).exists()).await);
}

#[tokio::test]
async fn the_bound_holds_under_concurrent_misses() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let ds: Vec<String> = (0..12)
        .map(|i| up.add_blob(REPO, Bytes::from(random_bytes(200_000, 60 + i))))
        .collect();
    let s = Server::mirror(&up.url(), "  maxsize: 1MB\n");
    let pulls = ds.iter().map(|d| fetch(&s, d));
    let got = futures::future::join_all(pulls).await;
    for (d, b) in ds.iter().zip(&got) {
        assert_eq!(digest(b), *d);
    }
    let mut last = 0.0;
    for _ in 0..200 {
        last = proxied_bytes(&s).await;
        if last <= 1_000_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last <= 1_000_000.0, "cache holds {last} bytes");
    // Clients get their last byte before the blob is durable; once every fetch is committed
    // and the evictor has caught up, the disk holds the bound too.
    let on_disk = || -> u64 {
        ds.iter()
            .filter_map(|d| std::fs::metadata(blob_path(&s, d)).ok())
            .map(|m| m.len())
            .sum()
    };
    let held = eventually(Duration::from_secs(10), || on_disk() <= 1_000_000).await;
    assert!(held, "{} bytes of cached blobs on disk", on_disk());
}

#[tokio::test]
async fn unused_content_expires_after_ttl() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let d = up.add_blob(REPO, Bytes::from(random_bytes(1000, 70)));
    let s = Server::mirror(&up.url(), "  ttl: 1s\n");
    fetch(&s, &d).await;
    assert!(eventually(Duration::from_secs(10), || blob_path(&s, &d).exists()).await);
    // The periodic pass runs every minute; another fill wakes it sooner.
    let d2 = up.add_blob(REPO, Bytes::from(random_bytes(1000, 71)));
    // Not a wait for an event: ageing past the 1 s ttl is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fetch(&s, &d2).await;
    assert!(eventually(Duration::from_secs(10), || !blob_path(&s, &d).exists()).await);
    // At least the expired blob (on a loaded machine the fresh one may have aged too); the
    // counter follows the removal.
    assert!(
        s.metric_reaches("stevedore_evictions_total", &[("reason", "age")], 1.0)
            .await,
        "the expiry was not counted"
    );
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_cli_env(args, &[])
}

#[tokio::test]
async fn gc_removes_what_deleted_manifests_left() {
    let s = Server::start();
    let base = s.url("");
    // Two images sharing a layer.
    let shared = random_bytes(5000, 80);
    let sd = push_blob(&base, "gc/app", &shared).await;
    let (m1, body1) = push_image(&base, "gc/app", "v1", 2, 81).await;
    let (m2, _) = push_image(&base, "gc/app", "v2", 1, 82).await;
    let v1: serde_json::Value = serde_json::from_slice(&body1).unwrap();
    let v1_layers: Vec<String> = v1["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let r = send(client().delete(s.url(&format!("/v2/gc/app/manifests/{m1}")))).await;
    assert_eq!(r.status(), 202);
    let config = s.config_path.to_str().unwrap().to_owned();
    // The server holds the index, so gc asks it through its debug listener.
    let debug = s.debug_addr.clone().unwrap();
    let env = [("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())];
    let run_cli = |args: &[&str]| run_cli_env(args, &env);
    // Dry run: reports, deletes nothing.
    let (code, out, err) = run_cli(&["gc", "--dry-run", "--grace", "0s", &config]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["dry_run"], true);
    // v1's config, its two layers, its manifest, and the unreferenced shared blob.
    assert_eq!(report["blobs_deleted"], 5, "{report}");
    assert!(blob_path(&s, &v1_layers[0]).exists());
    let (code, out, err) = run_cli(&["gc", "--grace", "0s", &config]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["blobs_deleted"], 5, "{report}");
    assert!(report["bytes_freed"].as_u64().unwrap() > 5000);
    for l in &v1_layers {
        assert!(!blob_path(&s, l).exists());
        let r = send(client().get(s.url(&format!("/v2/gc/app/blobs/{l}")))).await;
        assert_eq!(r.status(), 404);
    }
    assert!(!blob_path(&s, &sd).exists());
    assert!(!blob_path(&s, &m1).exists());
    // v2 is whole.
    let r = get(&s.url("/v2/gc/app/manifests/v2"), Some(OCI_MANIFEST)).await;
    assert_eq!(r.headers()["docker-content-digest"], m2.as_str());
    let v2: serde_json::Value = r.json().await.unwrap();
    for l in v2["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        let r = send(client().get(s.url(&format!("/v2/gc/app/blobs/{d}")))).await;
        assert_eq!(digest(&r.bytes().await.unwrap()), d);
    }
    // The default grace spares fresh uploads (a push whose manifest is still to come).
    let fresh = push_blob(&base, "gc/app", &random_bytes(3000, 83)).await;
    let (code, out, _) = run_cli(&["gc", &config]);
    assert_eq!(code, 0);
    assert!(out.contains("\"blobs_deleted\":0"), "{out}");
    assert!(blob_path(&s, &fresh).exists());
}

#[tokio::test]
async fn gc_offline_and_untagged_manifests() {
    let mut s = Server::start();
    let base = s.url("");
    let (m1, _) = push_image(&base, "gc/off", "v1", 1, 90).await;
    // Re-tagging v1 leaves the old manifest untagged.
    let (m2, _) = push_image(&base, "gc/off", "v1", 1, 91).await;
    s.stop();
    let config = s.config_path.to_str().unwrap().to_owned();
    let (code, out, err) = run_cli(&["gc", "--delete-untagged", &config]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["manifests_deleted"], 1, "{report}");
    assert!(!blob_path(&s, &m1).exists());
    assert!(blob_path(&s, &m2).exists());
}

#[tokio::test]
async fn stale_upload_sessions_expire() {
    let s = Server::start_with(Options {
        extra_yaml: "storage:\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1s\n      interval: 1s\n".into(),
        ..Options::default()
    });
    let r = send(client().post(s.url("/v2/up/expire/blobs/uploads/"))).await;
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = client()
        .patch(s.url(&loc))
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut gone = false;
    for _ in 0..100 {
        let r = client().get(s.url(&loc)).send().await.unwrap();
        if r.status() == 404 {
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "stale session was not purged");
    assert_eq!(std::fs::read_dir(s.dir.join("uploads")).unwrap().count(), 0);
}

#[tokio::test]
async fn restart_recovers_a_damaged_store() {
    let mut s = Server::start();
    let base = s.url("");
    let (_, body) = push_image(&base, "rec/app", "v1", 2, 100).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap().to_owned();
    let kept = v["layers"][1]["digest"].as_str().unwrap().to_owned();
    s.kill9();
    // A file lost from disk, a leftover temporary file, an orphan committed file.
    std::fs::remove_file(blob_path(&s, &layer)).unwrap();
    std::fs::write(s.dir.join("tmp/partial"), b"half a blob").unwrap();
    let orphan = random_bytes(777, 101);
    let od = digest(&orphan);
    let op = blob_path(&s, &od);
    std::fs::create_dir_all(op.parent().unwrap()).unwrap();
    std::fs::write(&op, &orphan).unwrap();
    let s2 = Server::start_with(Options {
        data_dir: Some(s.dir.clone()),
        ..Options::default()
    });
    let r = send(client().get(s2.url(&format!("/v2/rec/app/blobs/{layer}")))).await;
    assert_eq!(r.status(), 404, "a lost blob is unknown, not an error");
    let r = send(client().get(s2.url(&format!("/v2/rec/app/blobs/{kept}")))).await;
    assert_eq!(digest(&r.bytes().await.unwrap()), kept);
    assert!(!s.dir.join("tmp/partial").exists());
    assert!(s2.logged("recovered the store").await, "{}", s2.log_text());
    assert_eq!(
        s2.metric("stevedore_storage_blobs", &[("origin", "proxy")])
            .await,
        1.0,
        "the orphan was adopted"
    );
}

#[tokio::test]
async fn verify_finds_and_quarantines_corrupt_blobs() {
    let mut s = Server::start();
    let base = s.url("");
    let good = push_blob(&base, "ver/app", &random_bytes(4000, 110)).await;
    let bad = push_blob(&base, "ver/app", &random_bytes(4000, 111)).await;
    let mut bytes = std::fs::read(blob_path(&s, &bad)).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(blob_path(&s, &bad), bytes).unwrap();
    let config = s.config_path.to_str().unwrap().to_owned();
    let (code, out, _) = run_cli(&["verify", &config]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["checked"], 2);
    assert_eq!(report["corrupt"][0], bad.as_str());
    let (code, _, _) = run_cli(&["verify", "--quarantine", &config]);
    assert_eq!(code, 1);
    assert!(!blob_path(&s, &bad).exists());
    assert!(
        s.dir
            .join("quarantine")
            .join(bad.trim_start_matches("sha256:"))
            .exists()
    );
    let r = send(client().get(s.url(&format!("/v2/ver/app/blobs/{bad}")))).await;
    assert_eq!(r.status(), 404, "a quarantined blob is never served");
    let (code, _, _) = run_cli(&["verify", &config]);
    assert_eq!(code, 0);
    assert!(blob_path(&s, &good).exists());
    s.stop();
}
