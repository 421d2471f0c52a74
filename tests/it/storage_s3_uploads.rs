//! Upload sessions in the bucket (`storage.s3`): two replicas on one bucket (separate local
//! directories, no `http.secret`: they share the upload-URL key the bucket keeps) continue
//! each other's chunked pushes — also after the one
//! that started it was `kill -9`ed, in the middle of a request — a wrong digest at the final
//! PUT aborts the multipart upload, and a chunk at the wrong offset is a 416 on either replica.
//! The blob is pulled through the replica that finished the push: which repository holds a
//! blob is in that replica's own index until repository links live in the bucket too.

use crate::common::s3::{BUCKET, SeaweedFs};
use crate::common::{Server, client, digest, random_bytes};
use crate::storage_s3::blob_object;
use std::path::Path;
use std::time::Duration;

/// chunksize of these replicas: parts are 5 MiB.
const PART: usize = 5 << 20;

/// A replica on the bucket under `root`, its local directory `cache`.
fn replica(weed: &SeaweedFs, root: &str, cache: &Path) -> (Server, tempfile::TempDir) {
    replica_with(weed, root, cache, "")
}

/// [`replica`] with more `storage:` keys (indented by two spaces).
fn replica_with(
    weed: &SeaweedFs,
    root: &str,
    cache: &Path,
    storage_extra: &str,
) -> (Server, tempfile::TempDir) {
    let extra = format!("  redirect:\n    disable: true\n{storage_extra}");
    crate::storage_s3::start(weed, root, cache, &extra)
}

/// Two replicas on one bucket prefix.
struct Pair {
    a: Server,
    b: Server,
    _dirs: Vec<tempfile::TempDir>,
}

fn pair(weed: &SeaweedFs, root: &str) -> Pair {
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, ta) = replica(weed, root, ca.path());
    let (b, tb) = replica(weed, root, cb.path());
    Pair {
        a,
        b,
        _dirs: vec![ca, cb, ta, tb],
    }
}

/// The path and query of an upload `Location` (the same on every replica).
fn session_path(r: &reqwest::Response) -> String {
    let loc = crate::common::api::header(r, "location").expect("location");
    match loc.find("/v2/") {
        Some(i) => loc[i..].to_owned(),
        None => panic!("odd location {loc}"),
    }
}

async fn start_upload(server: &Server, repo: &str) -> String {
    let r = client()
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    session_path(&r)
}

/// PATCHes `data` at `start` to `server`; the response.
async fn patch(server: &Server, path: &str, start: usize, data: &[u8]) -> reqwest::Response {
    client()
        .patch(server.url(path))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{start}-{}", start + data.len() - 1),
        )
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

/// A PATCH that must be accepted: the next session path and the offset it reports.
async fn patch_ok(server: &Server, path: &str, start: usize, data: &[u8]) -> String {
    let r = patch(server, path, start, data).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let range = crate::common::api::header(&r, "range").expect("range");
    assert_eq!(range, format!("0-{}", start + data.len() - 1));
    session_path(&r)
}

fn with_digest(path: &str, d: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}digest={d}")
}

/// An empty final PUT naming digest `d`, which must commit the blob.
async fn finish_ok(server: &Server, path: &str, d: &str) {
    let r = client()
        .put(server.url(&with_digest(path, d)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn status(server: &Server, path: &str) -> reqwest::Response {
    client().get(server.url(path)).send().await.unwrap()
}

async fn pull(server: &Server, repo: &str, d: &str) -> Vec<u8> {
    let r = client()
        .get(server.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

/// Objects of upload sessions left under `root`.
fn session_objects(weed: &SeaweedFs, root: &str) -> Vec<String> {
    weed.filer_tree(&format!(
        "/buckets/{BUCKET}/{root}/docker/registry/v2/repositories/"
    ))
    .into_iter()
    .filter(|p| p.contains("/_uploads/"))
    .collect()
}

/// The name that says the object of session `id` holds blob `d`.
pub(crate) fn blob_name(root: &str, d: &str, id: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap();
    format!(
        "/buckets/{BUCKET}/{root}/stevedore/blobs/sha256/{}/{hex}/{id}",
        &hex[..2]
    )
}

/// Multipart uploads SeaweedFS still holds (it keeps them under the bucket's `.uploads/`).
fn pending_multipart(weed: &SeaweedFs) -> Vec<String> {
    weed.filer_entries(&format!("/buckets/{BUCKET}/.uploads/"))
}

#[tokio::test]
async fn a_chunked_push_started_on_one_replica_is_finished_on_another() {
    let weed = SeaweedFs::start();
    let p = pair(&weed, "pair");
    let data = random_bytes(2 * PART + 3 * 1024 * 1024 + 77, 11);
    let d = digest(&data);
    let path = start_upload(&p.a, "team/app").await;
    // A tail only (no whole part yet), kept in the bucket: B continues it.
    let (c1, c2, c3) = (3 << 20, 9 << 20, data.len());
    let path = patch_ok(&p.a, &path, 0, &data[..c1]).await;
    assert!(
        session_objects(&weed, "pair")
            .iter()
            .any(|o| o.contains("/tail/")),
        "{:?}",
        session_objects(&weed, "pair")
    );
    // B fills the first part and keeps a new tail; A sends the rest.
    let path = patch_ok(&p.b, &path, c1, &data[c1..c2]).await;
    let path = patch_ok(&p.a, &path, c2, &data[c2..c3]).await;
    // Both replicas report where the session stands.
    for server in [&p.a, &p.b] {
        let r = status(server, &path).await;
        assert_eq!(r.status(), 204);
        assert_eq!(
            crate::common::api::header(&r, "range").unwrap(),
            format!("0-{}", data.len() - 1)
        );
    }
    // A chunk that does not start where the session stands is a 416 on either replica,
    // and changes nothing.
    for server in [&p.a, &p.b] {
        let r = patch(server, &path, 5, b"late").await;
        assert_eq!(r.status(), 416, "{}", r.text().await.unwrap());
    }
    // B finishes with an empty PUT; both serve it (A learns the repository link from the
    // bucket).
    finish_ok(&p.b, &path, &d).await;
    // The completed multipart upload stays where its parts went, named for its digest:
    // nothing was copied to distribution's key.
    let tree = weed.filer_tree(&format!("/buckets/{BUCKET}/pair/"));
    assert!(!tree.contains(&blob_object("pair", &d)), "{tree:?}");
    let objects = weed.filer_entries(&format!("/buckets/{BUCKET}/pair/stevedore/objects/"));
    assert_eq!(objects.len(), 1, "{tree:?}");
    assert!(
        tree.contains(&blob_name("pair", &d, &objects[0])),
        "{tree:?}"
    );
    assert!(pull(&p.b, "team/app", &d).await == data, "pulled through B");
    assert!(pull(&p.a, "team/app", &d).await == data, "pulled through A");
    assert!(
        session_objects(&weed, "pair").is_empty(),
        "{:?}",
        session_objects(&weed, "pair")
    );
    assert!(pending_multipart(&weed).is_empty());
    // The session is gone on both.
    for server in [&p.a, &p.b] {
        assert_eq!(status(server, &path).await.status(), 404);
    }

    // A small chunked push (no whole part): started on B, finished on A with a body.
    let small = random_bytes(1000, 12);
    let ds = digest(&small);
    let path = start_upload(&p.b, "team/app").await;
    let path = patch_ok(&p.b, &path, 0, &small[..400]).await;
    let r = client()
        .put(p.a.url(&with_digest(&path, &ds)))
        .header("content-range", format!("400-{}", small.len() - 1))
        .body(small[400..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert!(pull(&p.a, "team/app", &ds).await == small);
    assert!(session_objects(&weed, "pair").is_empty());

    // Cancelled on the other replica: gone everywhere, its multipart upload aborted.
    let path = start_upload(&p.a, "team/app").await;
    let path = patch_ok(&p.a, &path, 0, &data[..PART + 10]).await;
    let r = client().delete(p.b.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(status(&p.a, &path).await.status(), 404);
    assert!(session_objects(&weed, "pair").is_empty());
    assert!(pending_multipart(&weed).is_empty());
}

#[tokio::test]
async fn a_session_survives_a_kill_9_of_the_replica_that_started_it() {
    let weed = SeaweedFs::start();
    let mut p = pair(&weed, "killed");
    let data = random_bytes(3 * PART + 12345, 13);
    let d = digest(&data);
    let path = start_upload(&p.a, "app").await;
    let first = PART + (1 << 20);
    let path = patch_ok(&p.a, &path, 0, &data[..first]).await;
    // A second chunk is streaming into A when A is killed: it never answers.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let url = p.a.url(&path);
    let total = data.len();
    let streaming = tokio::spawn(async move {
        client()
            .patch(url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{first}-{}", total - 1))
            .body(reqwest::Body::wrap_stream(futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
            )))
            .send()
            .await
    });
    tx.send(Ok(data[first..first + PART + 100].to_vec()))
        .await
        .unwrap();
    // Wait until A sent a part of this chunk (its second part of the session).
    assert!(
        crate::common::eventually(Duration::from_secs(30), || {
            p.a.log_text()
                .matches("upload part sent to the bucket")
                .count()
                >= 2
        })
        .await,
        "A never sent the part: {}",
        p.a.log_text()
    );
    p.a.kill9();
    drop(tx);
    let _ = streaming.await;
    // B knows where the session stands: after the last request A acknowledged.
    let r = status(&p.b, &path).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        crate::common::api::header(&r, "range").unwrap(),
        format!("0-{}", first - 1)
    );
    // B continues from there and finishes; the blob is whole.
    let path = patch_ok(&p.b, &path, first, &data[first..]).await;
    finish_ok(&p.b, &path, &d).await;
    assert!(pull(&p.b, "app", &d).await == data);
    assert!(session_objects(&weed, "killed").is_empty());
    assert!(pending_multipart(&weed).is_empty());
}

#[tokio::test]
async fn a_wrong_digest_at_the_final_put_aborts_the_multipart_upload() {
    let weed = SeaweedFs::start();
    let p = pair(&weed, "wrong");
    let data = random_bytes(2 * PART + 999, 14);
    let path = start_upload(&p.a, "app").await;
    let path = patch_ok(&p.a, &path, 0, &data).await;
    assert!(
        !pending_multipart(&weed).is_empty(),
        "parts went up while the bytes arrived"
    );
    let wrong = digest(b"something else");
    let r = client()
        .put(p.b.url(&with_digest(&path, &wrong)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("DIGEST_INVALID"));
    let tree = weed.filer_tree(&format!("/buckets/{BUCKET}/wrong/"));
    assert!(!tree.contains(&blob_object("wrong", &wrong)), "{tree:?}");
    assert!(
        !tree.contains(&blob_object("wrong", &digest(&data))),
        "{tree:?}"
    );
    assert!(session_objects(&weed, "wrong").is_empty(), "{tree:?}");
    assert!(
        weed.filer_entries(&format!("/buckets/{BUCKET}/wrong/stevedore/objects/"))
            .is_empty(),
        "{tree:?}"
    );
    assert!(
        pending_multipart(&weed).is_empty(),
        "{:?}",
        pending_multipart(&weed)
    );
    assert_eq!(status(&p.a, &path).await.status(), 404);
}

#[tokio::test]
async fn two_replicas_racing_on_one_session_leave_it_whole() {
    let weed = SeaweedFs::start();
    let p = pair(&weed, "race");
    let path = start_upload(&p.a, "app").await;
    // Both replicas get a different first chunk at offset 0 at once: one is kept, the
    // other is refused with a 416 (it lost the conditional write, or came second).
    let (one, two) = (random_bytes(PART + 4321, 21), random_bytes(PART + 4321, 22));
    let (ra, rb) = tokio::join!(patch(&p.a, &path, 0, &one), patch(&p.b, &path, 0, &two));
    let (sa, sb) = (ra.status().as_u16(), rb.status().as_u16());
    let winner = match (sa, sb) {
        (202, 416) => &one,
        (416, 202) => &two,
        other => panic!("expected one 202 and one 416, got {other:?}"),
    };
    let next = session_path(if sa == 202 { &ra } else { &rb });
    let d = digest(winner);
    finish_ok(&p.a, &next, &d).await;
    assert!(
        pull(&p.a, "app", &d).await == *winner,
        "the winner's bytes, whole"
    );
    assert!(session_objects(&weed, "race").is_empty());
    assert!(pending_multipart(&weed).is_empty());
}

#[tokio::test]
async fn upload_purging_aborts_stale_sessions_in_the_bucket() {
    let weed = SeaweedFs::start();
    let cache = tempfile::tempdir().unwrap();
    let (a, _cfg) = replica(&weed, "purged", cache.path());
    let path = start_upload(&a, "app").await;
    patch_ok(&a, &path, 0, &random_bytes(PART + 10, 23)).await;
    assert!(!pending_multipart(&weed).is_empty());
    assert!(!session_objects(&weed, "purged").is_empty());
    // Another replica with upload purging (age 1s) aborts and removes it.
    let other = tempfile::tempdir().unwrap();
    let (_c, _cfg) = replica_with(
        &weed,
        "purged",
        other.path(),
        "  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1s\n      interval: 1s\n",
    );
    assert!(
        crate::common::eventually(Duration::from_secs(30), || session_objects(&weed, "purged")
            .is_empty()
            && pending_multipart(&weed).is_empty())
        .await,
        "left: {:?} {:?}",
        session_objects(&weed, "purged"),
        pending_multipart(&weed)
    );
    assert_eq!(status(&a, &path).await.status(), 404);
}
