//! `storage.s3` against a real S3-compatible store (SeaweedFS on loopback): the backend
//! contract, pushes and pulls through the registry (streamed and redirected to presigned
//! URLs), large blobs in multipart uploads, and a `kill -9` in the middle of one.

use crate::common::s3::{BUCKET, SeaweedFs};
use crate::common::{Server, client, digest, eventually, random_bytes};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[tokio::test]
async fn backend_keeps_the_contract_on_seaweedfs() {
    let weed = SeaweedFs::start();
    let local = tempfile::tempdir().unwrap();
    stevedore::storage::contract::check_s3(&weed.config("contract"), local.path()).await;
    // A multipart upload that completed left no marker and no pending upload.
    assert!(
        weed.filer_tree("/buckets/stevedore/contract/stevedore/multipart/")
            .is_empty()
    );
    assert!(
        weed.filer_entries("/buckets/stevedore/.uploads/")
            .is_empty()
    );
}

/// A stevedore on the bucket under `root`, its local cache in `cache`.
pub(crate) fn start(
    weed: &SeaweedFs,
    root: &str,
    cache: &Path,
    extra: &str,
) -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: debug\n  formatter: json\nhttp:\n  addr: 127.0.0.1:0\n  debug:\n    addr: 127.0.0.1:0\n{}    chunksize: 5MiB\n    cachedirectory: {}\n  delete:\n    enabled: true\n{extra}",
        weed.storage_yaml(root, ""),
        cache.display()
    );
    let path = tmp.path().join("config.yml");
    std::fs::write(&path, config).unwrap();
    (Server::spawn(&path, &[], cache.to_path_buf()), tmp)
}

pub(crate) fn blob_object(root: &str, d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap();
    format!(
        "/buckets/{BUCKET}/{root}/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    )
}

async fn push(base: &str, repo: &str, data: Vec<u8>) -> reqwest::Response {
    let d = digest(&data);
    client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn blobs_go_to_the_bucket_and_come_back_streamed_or_redirected() {
    let weed = SeaweedFs::start();
    let cache = tempfile::tempdir().unwrap();
    let (server, _cfg) = start(
        &weed,
        "streamed",
        cache.path(),
        "  redirect:\n    disable: true\n",
    );
    let base = server.url("");
    let small = random_bytes(1000, 1);
    // Over chunksize (5MiB): a multipart upload of three parts.
    let large = random_bytes((11 << 20) + 17, 2);
    for data in [&small, &large] {
        let r = push(&base, "team/app", data.clone()).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let d = digest(data);
        let tree = weed.filer_tree(&format!("/buckets/{BUCKET}/streamed/"));
        assert!(tree.contains(&blob_object("streamed", &d)), "{tree:?}");
        // No blob file on the local disk: the bucket holds it.
        let local: Vec<PathBuf> = crate::common::api::files_under(cache.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&d[7..]))
            .collect();
        assert!(local.is_empty(), "{local:?}");
        let url = server.url(&format!("/v2/team/app/blobs/{d}"));
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap() == data[..], "streamed body");
        let r = client()
            .get(&url)
            .header("range", "bytes=5242870-5242889")
            .send()
            .await
            .unwrap();
        if data.len() > 5242890 {
            assert_eq!(r.status(), 206);
            assert_eq!(r.bytes().await.unwrap(), &data[5242870..5242890]);
        }
    }
    assert!(
        weed.filer_entries("/buckets/stevedore/.uploads/")
            .is_empty()
    );
    drop(server);

    // The same bucket prefix with redirects on: a GET is sent to a presigned URL.
    let cache = tempfile::tempdir().unwrap();
    let (server, _cfg) = start(&weed, "redirected", cache.path(), "");
    let base = server.url("");
    let r = push(&base, "app", large.clone()).await;
    assert_eq!(r.status(), 201);
    let d = digest(&large);
    let r = client()
        .get(server.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let location = crate::common::api::header(&r, "location").expect("location");
    assert!(location.starts_with(&weed.endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let body = reqwest::get(&location).await.unwrap();
    assert_eq!(body.status(), 200);
    assert!(body.bytes().await.unwrap() == large[..], "presigned body");
    // HEAD answers itself; an unknown blob is still BLOB_UNKNOWN, not a redirect.
    let r = client()
        .head(server.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(server.url(&format!("/v2/app/blobs/{}", digest(b"nothing"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn kill_9_during_a_multipart_upload_leaves_nothing_visible() {
    let weed = SeaweedFs::start();
    let cache = tempfile::tempdir().unwrap();
    let (mut server, _cfg) = start(
        &weed,
        "killed",
        cache.path(),
        "  redirect:\n    disable: true\n",
    );
    let base = server.url("");
    let data = random_bytes(160 << 20, 3);
    let d = digest(&data);
    let pushing = tokio::spawn(async move { push(&base, "app", data).await });
    let markers = format!("/buckets/{BUCKET}/killed/stevedore/multipart/");
    assert!(
        eventually(Duration::from_secs(60), || !weed
            .filer_tree(&markers)
            .is_empty())
        .await,
        "no multipart upload was started"
    );
    server.kill9();
    let _ = pushing.await;
    // Parts may have arrived, but the blob's key does not exist.
    let tree = weed.filer_tree(&format!("/buckets/{BUCKET}/killed/"));
    assert!(!tree.contains(&blob_object("killed", &d)), "{tree:?}");
    assert!(
        !weed.filer_tree(&markers).is_empty(),
        "the marker outlives the kill"
    );

    // The node comes back on its cache directory: it aborts what it left.
    let (server, _cfg) = start(
        &weed,
        "killed",
        cache.path(),
        "  redirect:\n    disable: true\n",
    );
    assert!(
        eventually(Duration::from_secs(30), || weed
            .filer_tree(&markers)
            .is_empty())
        .await,
        "the stale multipart marker was not cleaned up"
    );
    assert!(
        eventually(Duration::from_secs(30), || weed
            .filer_entries("/buckets/stevedore/.uploads/")
            .is_empty())
        .await,
        "the incomplete multipart upload was not aborted: {:?}",
        weed.filer_entries("/buckets/stevedore/.uploads/")
    );
    let r = client()
        .get(server.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_blob_whose_digest_is_known_goes_up_while_it_arrives() {
    const PART: usize = 5 << 20;
    let weed = SeaweedFs::start();
    let cache = tempfile::tempdir().unwrap();
    let (server, _cfg) = start(
        &weed,
        "early",
        cache.path(),
        "  redirect:\n    disable: true\n",
    );
    let data = random_bytes(4 * PART + 1234, 21);
    let d = digest(&data);
    // `POST ?digest=` with a body that arrives in two halves.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let url = server.url(&format!("/v2/app/blobs/uploads/?digest={d}"));
    let pushing = tokio::spawn(async move {
        client()
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
            )))
            .send()
            .await
    });
    // (Three parts: the writer tells the follower what is in the file every 4 MiB.)
    let half = 3 * PART;
    tx.send(Ok(data[..half].to_vec())).await.unwrap();
    // Two whole parts are in: they are in the bucket's multipart upload before the rest
    // of the body is sent, and the blob's key does not exist yet.
    let uploads = format!("/buckets/{BUCKET}/.uploads/");
    let parts = || {
        weed.filer_tree(&uploads)
            .into_iter()
            .filter(|p| p.ends_with(".part"))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(30), || parts() >= 2).await,
        "parts did not go up while the body arrived: {:?}",
        weed.filer_tree(&uploads)
    );
    let tree = weed.filer_tree(&format!("/buckets/{BUCKET}/early/"));
    assert!(!tree.contains(&blob_object("early", &d)), "{tree:?}");
    tx.send(Ok(data[half..].to_vec())).await.unwrap();
    drop(tx);
    let r = pushing.await.unwrap().unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let tree = weed.filer_tree(&format!("/buckets/{BUCKET}/early/"));
    assert!(tree.contains(&blob_object("early", &d)), "{tree:?}");
    assert!(
        weed.filer_entries(&uploads).is_empty(),
        "{:?}",
        weed.filer_tree(&uploads)
    );
    let r = client()
        .get(server.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), data.len(), "pulled length");
    let first_diff = got.iter().zip(&data).position(|(a, b)| a != b);
    assert!(
        first_diff.is_none(),
        "pulled body differs from byte {first_diff:?}"
    );

    // A body that does not match its digest: the upload is aborted, nothing is visible.
    let wrong = digest(b"not these bytes");
    let r = client()
        .post(server.url(&format!("/v2/app/blobs/uploads/?digest={wrong}")))
        .header("content-type", "application/octet-stream")
        .body(random_bytes(2 * PART + 7, 22))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{}", r.text().await.unwrap());
    assert!(
        eventually(Duration::from_secs(30), || weed
            .filer_entries(&uploads)
            .is_empty())
        .await,
        "the mismatched upload was not aborted: {:?}",
        weed.filer_tree(&uploads)
    );
    let tree = weed.filer_tree(&format!("/buckets/{BUCKET}/early/"));
    assert!(!tree.contains(&blob_object("early", &wrong)), "{tree:?}");
}
