//! Garbage collection and eviction on a shared bucket (issue 16), against a real SeaweedFS:
//! `stevedore gc` runs twice against the bucket two replicas serve from while a loop pulls a
//! pushed and a cached image through both — nothing referenced is lost, an unreferenced pushed
//! blob survives the first run and goes after the grace, a blob uploaded without its manifest
//! survives within the grace, a blob pushed in parts (kept under `stevedore/objects/`, named
//! for its digest) goes with its object, and an object no name points at goes after the
//! grace; the bucket's lease lets one run work at a time (a second gets
//! exit status 75 naming the holder; a crashed holder's lease lapses); cached content over
//! `proxy.maxsize` goes least recently used first, by the access records the replicas wrote;
//! a replica with `storage.maintenance.gc.interval` runs the job itself.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::s3::{BUCKET, SeaweedFs};
use crate::common::{
    BIN, OCI_MANIFEST, Server, client, digest, eventually, image_manifest, push_blob,
    push_blob_streamed, push_image, random_bytes,
};
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The grace of the runs: short, so the test waits it out.
const GRACE: Duration = Duration::from_secs(3);

/// A config file for a replica or a gc run on the bucket under `root`.
fn config_file(weed: &SeaweedFs, root: &str, cache: &Path, extra: &str) -> std::path::PathBuf {
    let config = format!(
        "version: 0.1\nlog:\n  level: debug\n  formatter: json\nhttp:\n  addr: 127.0.0.1:0\n  debug:\n    addr: 127.0.0.1:0\n{}    chunksize: 5MiB\n    cachedirectory: {}\n  redirect:\n    disable: true\n  delete:\n    enabled: true\n  maintenance:\n    gc:\n      accessinterval: 200ms\n      leasettl: 30s\n{extra}",
        weed.storage_yaml(root, ""),
        cache.join("data").display()
    );
    let path = cache.join("config.yml");
    std::fs::write(&path, config).unwrap();
    path
}

fn replica(weed: &SeaweedFs, root: &str, cache: &Path, extra: &str) -> Server {
    let path = config_file(weed, root, cache, extra);
    Server::spawn(&path, &[], cache.join("data"))
}

/// Runs `stevedore <args…> CONFIG` on its own thread; exit status, stdout, stderr.
async fn cli(args: &[&str], config: &Path) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args).arg(config);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A successful run's JSON report.
async fn run_ok(args: &[&str], config: &Path) -> serde_json::Value {
    let (code, out, err) = cli(args, config).await;
    assert_eq!(code, 0, "stevedore {args:?}: {out}\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn blob_object(root: &str, d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap();
    format!(
        "/buckets/{BUCKET}/{root}/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    )
}

fn in_bucket(weed: &SeaweedFs, root: &str, d: &str) -> bool {
    weed.filer_tree(&format!(
        "/buckets/{BUCKET}/{root}/docker/registry/v2/blobs/"
    ))
    .contains(&blob_object(root, d))
}

/// The objects of blobs pushed in parts (`stevedore/objects/<session>`).
fn pushed_objects(weed: &SeaweedFs, root: &str) -> Vec<String> {
    weed.filer_entries(&format!("/buckets/{BUCKET}/{root}/stevedore/objects/"))
}

/// The names under `stevedore/blobs/` that say which object holds `d`.
fn names_of(weed: &SeaweedFs, root: &str, d: &str) -> Vec<String> {
    let hex = d.strip_prefix("sha256:").unwrap();
    weed.filer_entries(&format!(
        "/buckets/{BUCKET}/{root}/stevedore/blobs/sha256/{}/{hex}/",
        &hex[..2]
    ))
}

/// The config, layers and manifest of a small image the fake upstream serves as
/// `repo:tag`; (manifest digest, blob digests).
fn upstream_image(up: &FakeUpstream, repo: &str, tag: &str, seed: u64) -> (String, Vec<String>) {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
    let cd = up.add_blob(repo, Bytes::from(config.clone()));
    let mut blobs = vec![cd.clone()];
    let mut layers = Vec::new();
    for i in 0..2u64 {
        let data = random_bytes(3000 + i as usize, seed * 10 + i);
        let d = up.add_blob(repo, Bytes::from(data.clone()));
        layers.push((d.clone(), data.len()));
        blobs.push(d);
    }
    let refs: Vec<(&str, usize)> = layers.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let body = image_manifest(OCI_MANIFEST, (&cd, config.len()), &refs);
    let md = up.add_manifest(repo, Some(tag), OCI_MANIFEST, Bytes::from(body));
    (md, blobs)
}

/// Pulls `repo:tag` through `base`: the manifest by tag, then every blob it names, each
/// checked against its digest. An error names what failed.
async fn pull(base: &str, repo: &str, tag: &str) -> Result<(), String> {
    let r = client()
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("{repo}:{tag} manifest: {}", r.status()));
    }
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    let m: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap_or("").to_owned()];
    for l in m["layers"].as_array().into_iter().flatten() {
        blobs.push(l["digest"].as_str().unwrap_or("").to_owned());
    }
    for d in blobs {
        let r = client()
            .get(format!("{base}/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!("{repo} blob {d}: {}", r.status()));
        }
        let got = r
            .bytes()
            .await
            .map_err(|e| format!("{repo} blob {d}: {e}"))?;
        if digest(&got) != d {
            return Err(format!("{repo} blob {d}: wrong bytes"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn gc_on_the_shared_bucket_while_two_replicas_serve_loses_nothing_referenced() {
    let weed = SeaweedFs::start();
    let root = "gcserve";
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (cached_md, cached_blobs) = upstream_image(&up, "library/cached", "latest", 7);
    let proxy = format!(
        "proxy:\n  remoteurl: {}\n  localprefixes: [\"local/\"]\n",
        up.url()
    );
    let (dir_a, dir_b, dir_gc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = replica(&weed, root, dir_a.path(), &proxy);
    let b = replica(&weed, root, dir_b.path(), &proxy);
    let gc_config = config_file(&weed, root, dir_gc.path(), &proxy);

    // Pushed through A: an image, and a blob no manifest will ever reference.
    let (md, body) = push_image(&a.url(""), "local/app", "v1", 2, 11).await;
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut pushed: Vec<String> = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    for l in m["layers"].as_array().unwrap() {
        pushed.push(l["digest"].as_str().unwrap().to_owned());
    }
    let orphan = push_blob(&a.url(""), "local/app", &random_bytes(2048, 99)).await;
    // Pushed the way dockerd pushes, over `chunksize`: a named object, also never referenced.
    let parted = push_blob_streamed(&a.url(""), "local/app", &random_bytes(6 << 20, 98)).await;
    let parted_object = pushed_objects(&weed, root);
    assert_eq!(parted_object.len(), 1, "{parted_object:?}");
    assert_eq!(names_of(&weed, root, &parted), parted_object);
    // An object no name points at, as a crash between completing and naming one leaves it.
    weed.put_file(
        &format!("/buckets/{BUCKET}/{root}/stevedore/objects/crashed"),
        b"leftover".to_vec(),
    );
    // Cached through both replicas.
    for s in [&a, &b] {
        pull(&s.url(""), "library/cached", "latest").await.unwrap();
    }
    let mut cached_all = cached_blobs.clone();
    cached_all.push(cached_md.clone());

    // The replicas serve both images in a loop while gc runs.
    let stop = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for base in [a.url(""), b.url("")] {
        let (stop, pulls) = (stop.clone(), pulls.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                pull(&base, "local/app", "v1").await?;
                pull(&base, "library/cached", "latest").await?;
                pulls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    let grace = format!("{}s", GRACE.as_secs());
    let first = run_ok(&["gc", "--grace", &grace], &gc_config).await;
    assert!(first["new_candidates"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(first["blobs_deleted"], 0, "{first}");
    assert!(in_bucket(&weed, root, &orphan), "deleted at its first run");
    assert!(
        !weed
            .filer_tree(&format!(
                "/buckets/{BUCKET}/{root}/stevedore/gc/candidates/"
            ))
            .is_empty(),
        "no candidate recorded"
    );

    // The grace passes; meanwhile a push whose manifest is not there yet starts.
    tokio::time::sleep(GRACE).await;
    let inflight = push_blob(&a.url(""), "local/app", &random_bytes(4096, 100)).await;
    let second = run_ok(&["gc", "--grace", &grace], &gc_config).await;
    assert_eq!(second["blobs_deleted"], 2, "{second}");
    assert_eq!(second["orphans_deleted"], 1, "{second}");
    assert!(
        !in_bucket(&weed, root, &orphan),
        "the orphan outlived the grace"
    );
    assert!(
        names_of(&weed, root, &parted).is_empty() && pushed_objects(&weed, root).is_empty(),
        "the blob pushed in parts, or the unnamed object, outlived the grace: {:?}",
        pushed_objects(&weed, root)
    );
    assert!(
        in_bucket(&weed, root, &inflight),
        "a push in flight lost its blob"
    );
    assert!(
        !weed
            .filer_tree(&format!(
                "/buckets/{BUCKET}/{root}/docker/registry/v2/repositories/local/app/_layers/"
            ))
            .iter()
            .any(|k| k.contains(orphan.strip_prefix("sha256:").unwrap())),
        "the orphan's link outlived it"
    );

    // The loop kept pulling throughout, and every referenced blob is still in the bucket.
    let before = pulls.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(30), || pulls.load(Ordering::Relaxed)
            > before + 2)
        .await,
        "the pull loop stalled"
    );
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap().expect("a pull failed while gc ran");
    }
    for d in pushed.iter().chain(&cached_all).chain([&md]) {
        assert!(in_bucket(&weed, root, d), "{d} was lost");
    }
}

#[tokio::test]
async fn one_run_holds_the_bucket_lease_and_a_crashed_holders_lease_lapses() {
    let weed = SeaweedFs::start();
    let root = "gclease";
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&weed, root, dir.path(), "");
    let holder_dir = tempfile::tempdir().unwrap();
    let s3 = weed.config(root);

    // Two takers at once: exactly one gets it.
    let (x, y) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bx = stevedore::storage::S3Backend::open(&s3, x.path())
        .await
        .unwrap();
    let by = stevedore::storage::S3Backend::open(&s3, y.path())
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    let (rx, ry) = tokio::join!(bx.acquire_lease("x", ttl), by.acquire_lease("y", ttl));
    assert!(rx.is_ok() != ry.is_ok(), "{rx:?} {ry:?}");
    let (winner, lease) = match (rx, ry) {
        (Ok(l), _) => (&bx, l),
        (_, Ok(l)) => (&by, l),
        _ => unreachable!(),
    };
    // gc beside a held lease: exit status 75, naming the holder; nothing done.
    let (code, out, err) = cli(&["gc"], &config).await;
    assert_eq!(code, 75, "{out}\n{err}");
    assert!(
        err.contains(&format!("held by {}", lease.holder())),
        "{err}"
    );
    winner.release_lease(lease).await.unwrap();
    run_ok(&["gc"], &config).await;

    // A holder that crashed (never renews): its lease lapses after its ttl.
    let crashed = stevedore::storage::S3Backend::open(&s3, holder_dir.path())
        .await
        .unwrap();
    let lease = crashed
        .acquire_lease("crashed", Duration::from_secs(2))
        .await
        .unwrap();
    let (code, _, err) = cli(&["evict"], &config).await;
    assert_eq!(code, 75, "{err}");
    let lapsed = lease.expires();
    assert!(
        eventually(Duration::from_secs(10), || stevedore::clock::now_ms()
            > lapsed)
        .await
    );
    run_ok(&["evict"], &config).await;
    // The crashed holder finds it lost the lease when it tries to renew.
    let mut lease = lease;
    assert!(
        crashed
            .renew_lease(&mut lease, Duration::from_secs(2))
            .await
            .is_err(),
        "a lapsed lease was renewed over the new holder"
    );
}

#[tokio::test]
async fn cached_content_over_the_size_limit_goes_least_recently_used_first() {
    let weed = SeaweedFs::start();
    let root = "gcevict";
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let size = 10_000usize;
    let blobs: Vec<(String, Vec<u8>)> = (0..3u64)
        .map(|i| {
            let data = random_bytes(size, 500 + i);
            (up.add_blob("library/lru", Bytes::from(data.clone())), data)
        })
        .collect();
    let proxy = format!("proxy:\n  remoteurl: {}\n", up.url());
    let (dir_a, dir_gc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = replica(&weed, root, dir_a.path(), &proxy);
    let get = |s: &Server, d: &str| {
        let url = s.url(&format!("/v2/library/lru/blobs/{d}"));
        async move {
            let r = client().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        }
    };
    let digests: Vec<String> = blobs.iter().map(|(d, _)| d.clone()).collect();
    // Filled; then read as cache hits 0, 1, 2, and 0 once more: 1 is the least recently used.
    for (d, _) in &blobs {
        get(&a, d).await;
        assert!(a.fetched_and_cached(d).await, "{d} was not cached");
    }
    for (d, data) in &blobs {
        assert_eq!(get(&a, d).await.as_ref(), data.as_slice());
    }
    let last_of_1 = std::time::Instant::now();
    get(&a, &blobs[0].0).await;
    // The replica writes its last access record as it stops.
    a.stop();
    assert!(
        !weed
            .filer_tree(&format!("/buckets/{BUCKET}/{root}/stevedore/access/"))
            .is_empty(),
        "no access record written"
    );
    // Room for two of the three: the least recently used one (1) goes.
    let gc_config = config_file(
        &weed,
        root,
        dir_gc.path(),
        &format!("{proxy}  maxsize: {}\n", 2 * size + size / 2),
    );
    // Used in the last two access intervals (400ms) is spared whatever the size.
    assert!(
        eventually(Duration::from_secs(5), || last_of_1.elapsed()
            > Duration::from_secs(1))
        .await
    );
    let dry = run_ok(&["evict", "--dry-run"], &gc_config).await;
    assert_eq!(dry["evicted"], 1, "{dry}");
    assert!(in_bucket(&weed, root, &digests[1]));
    let report = run_ok(&["evict"], &gc_config).await;
    assert_eq!(report["evicted"], 1, "{report}");
    assert_eq!(report["cached_bytes"], 3 * size as u64, "{report}");
    assert!(
        !in_bucket(&weed, root, &digests[1]),
        "the least recently used stayed: {report}"
    );
    assert!(
        in_bucket(&weed, root, &digests[0]),
        "the most recently used went"
    );
    assert!(in_bucket(&weed, root, &digests[2]));
    // Its marker went with it; the access records were merged into the summary.
    let markers = weed.filer_tree(&format!("/buckets/{BUCKET}/{root}/stevedore/cached/"));
    assert_eq!(markers.len(), 2, "{markers:?}");
    assert!(
        weed.filer_tree(&format!("/buckets/{BUCKET}/{root}/stevedore/access/"))
            .is_empty()
    );
    // Under the limit now: the next run evicts nothing.
    let again = run_ok(&["evict"], &gc_config).await;
    assert_eq!(again["evicted"], 0, "{again}");
}

#[tokio::test]
async fn a_replica_with_an_interval_runs_the_job_itself() {
    let weed = SeaweedFs::start();
    let root = "gcinterval";
    // A replica with its own turn at the job every second, and a 2s grace.
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(&weed, root, dir.path(), "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "      leasettl: 30s\n",
        "      leasettl: 30s\n      interval: 1s\n      grace: 2s\n",
    );
    std::fs::write(&path, text).unwrap();
    let a = Server::spawn(&path, &[], dir.path().join("data"));
    let (md, body) = push_image(&a.url(""), "team/app", "v1", 1, 21).await;
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut kept: Vec<String> = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    kept.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    let orphan = push_blob(&a.url(""), "team/app", &random_bytes(1500, 77)).await;
    assert!(
        eventually(Duration::from_secs(30), || !in_bucket(&weed, root, &orphan)).await,
        "the replica's own runs never collected the orphan"
    );
    kept.push(md);
    for d in &kept {
        assert!(in_bucket(&weed, root, d), "{d} was lost");
    }
    assert!(a.logged("bucket maintenance done").await);
}
