//! Blob uploads: monolithic, POST + PUT, chunked PATCH (ordered and out of order), streamed
//! PATCH, status, cancel, cross-repository mount, and that a digest mismatch leaves nothing.

use crate::common::api::*;
use crate::common::*;

async fn assert_blob(s: &Server, repo: &str, data: &[u8]) {
    let d = digest(data);
    let r = get(&s.url(&format!("/v2/{repo}/blobs/{d}")), None).await;
    assert_eq!(r.status(), 200, "{repo} {d}");
    assert_eq!(r.bytes().await.unwrap().as_ref(), data);
}

#[tokio::test]
async fn monolithic_post_with_digest() {
    let s = Server::start();
    let data = random_bytes(2048, 10);
    let d = digest(&data);
    let r = send_typed(
        client().post(s.url(&format!("/v2/up/mono/blobs/uploads/?digest={d}"))),
        "application/octet-stream",
        data.clone(),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location"),
        Some(format!("/v2/up/mono/blobs/{d}"))
    );
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    let loc = location(&s.url(""), &r);
    let r = get(&loc, None).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    // No session is left behind.
    assert!(entries(&s.dir.join("uploads")).is_empty());
}

#[tokio::test]
async fn post_then_put() {
    let s = Server::start();
    let data = random_bytes(4096, 11);
    let d = digest(&data);
    let upload = start_upload(&s.url(""), "up/two").await;
    let r = closing_put(&upload, &d, None, data.clone()).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location"),
        Some(format!("/v2/up/two/blobs/{d}"))
    );
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_blob(&s, "up/two", &data).await;
    // The session is finished: it is unknown now.
    expect_error(get(&upload, None).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(entries(&s.dir.join("uploads")).is_empty());
}

async fn patch(url: &str, range: Option<&str>, chunk: &[u8]) -> reqwest::Response {
    let mut req = client()
        .patch(url)
        .header("content-type", "application/octet-stream")
        .body(chunk.to_vec());
    if let Some(r) = range {
        req = req.header("content-range", r);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn chunked_upload_with_content_range() {
    let s = Server::start();
    let base = s.url("");
    let data = random_bytes(10_000, 12);
    let d = digest(&data);
    let upload = start_upload(&base, "up/chunked").await;

    let r = patch(&upload, Some("0-3999"), &data[..4000]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-3999"));
    assert!(header(&r, "docker-upload-uuid").is_some());
    let upload = location(&base, &r);

    // Status: 204 with the range received so far.
    let r = get(&upload, None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-3999"));
    assert!(header(&r, "location").is_some());

    // Out of order: a chunk that restarts at 0, and one that skips ahead.
    for range in ["0-999", "5000-5999"] {
        let (a, b) = range.split_once('-').unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        let r = patch(&upload, Some(range), &data[a..=b]).await;
        assert_eq!(header(&r, "range").as_deref(), Some("0-3999"), "{range}");
        expect_error(r, 416, "RANGE_INVALID").await;
    }
    // The refused chunks changed nothing.
    let r = get(&upload, None).await;
    assert_eq!(header(&r, "range").as_deref(), Some("0-3999"));

    let r = patch(&upload, Some("4000-8999"), &data[4000..9000]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-8999"));
    let upload = location(&base, &r);
    // The last chunk comes with the PUT.
    let r = closing_put(&upload, &d, Some("9000-9999"), data[9000..].to_vec()).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_blob(&s, "up/chunked", &data).await;
}

#[tokio::test]
async fn chunked_upload_then_empty_put() {
    let s = Server::start();
    let base = s.url("");
    let data = random_bytes(3000, 13);
    let d = digest(&data);
    let mut upload = start_upload(&base, "up/emptyput").await;
    for (i, c) in data.chunks(1000).enumerate() {
        let range = format!("{}-{}", i * 1000, i * 1000 + c.len() - 1);
        let r = patch(&upload, Some(&range), c).await;
        assert_eq!(r.status(), 202);
        assert_eq!(
            header(&r, "range"),
            Some(format!("0-{}", i * 1000 + c.len() - 1))
        );
        upload = location(&base, &r);
    }
    let r = send(client().put(with_query(&upload, &format!("digest={d}")))).await;
    assert_eq!(r.status(), 201);
    assert_blob(&s, "up/emptyput", &data).await;
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let s = Server::start();
    let base = s.url("");
    let data = random_bytes(300_000, 14);
    let d = digest(&data);
    let upload = start_upload(&base, "up/stream").await;
    // A chunked-encoding body of many pieces, as `docker push` streams a layer.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = data[..250_000]
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = send_typed(
        client().patch(&upload),
        "application/octet-stream",
        reqwest::Body::wrap_stream(futures::stream::iter(pieces)),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-249999"));
    let upload = location(&base, &r);
    // A second streamed PATCH appends.
    let r = patch(&upload, None, &data[250_000..]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-299999"));
    let upload = location(&base, &r);
    let r = send(client().put(with_query(&upload, &format!("digest={d}")))).await;
    assert_eq!(r.status(), 201);
    assert_blob(&s, "up/stream", &data).await;
}

#[tokio::test]
async fn cancel_upload() {
    let s = Server::start();
    let upload = start_upload(&s.url(""), "up/cancel").await;
    let r = patch(&upload, Some("0-99"), &random_bytes(100, 15)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(entries(&s.dir.join("uploads")).len(), 1);

    let r = client().delete(&upload).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(entries(&s.dir.join("uploads")).is_empty());

    expect_error(get(&upload, None).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let r = patch(&upload, None, b"more").await;
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let r = send(client().put(with_query(&upload, &format!("digest={}", digest(b""))))).await;
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let r = client().delete(&upload).send().await.unwrap();
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn unknown_and_path_like_upload_ids() {
    let s = Server::start();
    let base = s.url("");
    let real = start_upload(&base, "up/ids").await;
    // The session id, without the URL's signed `_state`.
    let id = real.rsplit('/').next().unwrap();
    let id = id.split('?').next().unwrap().to_owned();
    let bad_ids = [
        "nope".to_owned(),
        uuid_like(),
        id.to_ascii_uppercase(),
        "..%2F..%2Finfo.json".to_owned(),
        format!("{id}%2F..%2F{id}"),
    ];
    for bad in &bad_ids {
        let url = s.url(&format!("/v2/up/ids/blobs/uploads/{bad}"));
        expect_error(get(&url, None).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
        let r = patch(&url, None, b"x").await;
        expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
        let r = client()
            .put(with_query(&url, &format!("digest={}", digest(b"x"))))
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
        let r = client().delete(&url).send().await.unwrap();
        expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // `..` as the id itself (sent raw: URL libraries would resolve it).
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let path = format!("/v2/up/ids/blobs/uploads/..?digest={}", digest(b""));
        let (status, headers, body) = raw_request(&s.addr, method, &path).await;
        assert_eq!(status, 404, "{method}");
        let ctype = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-type: "))
            .map(str::to_owned);
        check_envelope(ctype.as_deref(), &body, "BLOB_UPLOAD_UNKNOWN");
    }
    // A session belongs to the repository that started it.
    let other = s.url(&format!("/v2/up/other/blobs/uploads/{id}"));
    expect_error(get(&other, None).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let r = client().delete(&other).send().await.unwrap();
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // …and is untouched by all of the above.
    let r = get(&real, None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
}

/// A well-formed UUID that was never issued.
fn uuid_like() -> String {
    "123e4567-e89b-42d3-a456-426614174000".to_owned()
}

#[tokio::test]
async fn mount_falls_back_to_an_upload_when_not_mountable() {
    let s = Server::start();
    let base = s.url("");
    let data = random_bytes(999, 16);
    let d = digest(&data);
    // Not in the source repository (nor anywhere), source missing, source invalid.
    for query in [
        format!("mount={d}&from=up/src"),
        format!("mount={d}"),
        format!("mount={d}&from=Not..Valid"),
    ] {
        let r = send(client().post(s.url(&format!("/v2/up/dst/blobs/uploads/?{query}")))).await;
        assert_eq!(r.status(), 202, "{query}");
        assert!(header(&r, "docker-upload-uuid").is_some());
        let upload = location(&base, &r);
        let r = client()
            .put(with_query(&upload, &format!("digest={d}")))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{query}");
    }
    assert_blob(&s, "up/dst", &data).await;

    // The blob exists in the store now, but up/src still cannot see it: mounting from it
    // must not succeed.
    let r = client()
        .post(s.url(&format!(
            "/v2/up/third/blobs/uploads/?mount={d}&from=up/src"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = head(&s.url(&format!("/v2/up/third/blobs/{d}")), None).await;
    assert_eq!(r.status(), 404);
    // From a repository that has it: 201.
    let r = client()
        .post(s.url(&format!(
            "/v2/up/third/blobs/uploads/?mount={d}&from=up/dst"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_blob(&s, "up/third", &data).await;

    // A malformed mount digest is refused.
    let r =
        send(client().post(s.url("/v2/up/dst/blobs/uploads/?mount=sha256:xyz&from=up/src"))).await;
    expect_error(r, 400, "DIGEST_INVALID").await;
}

/// Nothing of a refused upload may remain: no blob file, no session, no temporary file.
fn assert_nothing_stored(s: &Server, digests: &[&str]) {
    for d in digests {
        assert!(!blob_path(&s.dir, d).exists(), "blob file {d} exists");
    }
    assert_eq!(
        files_under(&s.dir.join("blobs")),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        entries(&s.dir.join("uploads")),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        entries(&s.dir.join("tmp")),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test]
async fn digest_mismatch_on_monolithic_upload_leaves_nothing() {
    let s = Server::start();
    let data = random_bytes(5000, 17);
    let actual = digest(&data);
    let claimed = digest(b"something else");
    let r = client()
        .post(s.url(&format!("/v2/up/bad/blobs/uploads/?digest={claimed}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    for d in [&claimed, &actual] {
        let url = s.url(&format!("/v2/up/bad/blobs/{d}"));
        expect_error(get(&url, None).await, 404, "BLOB_UNKNOWN").await;
    }
    assert_nothing_stored(&s, &[&claimed, &actual]);
}

#[tokio::test]
async fn digest_mismatch_on_final_put_leaves_nothing() {
    let s = Server::start();
    let base = s.url("");
    let data = random_bytes(5000, 18);
    let actual = digest(&data);
    let claimed = digest(b"something else");
    let upload = start_upload(&base, "up/bad2").await;
    let r = patch(&upload, Some("0-2499"), &data[..2500]).await;
    assert_eq!(r.status(), 202);
    let upload = location(&base, &r);
    let r = client()
        .put(with_query(&upload, &format!("digest={claimed}")))
        .body(data[2500..].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    for d in [&claimed, &actual] {
        let url = s.url(&format!("/v2/up/bad2/blobs/{d}"));
        assert_eq!(head(&url, None).await.status(), 404);
    }
    // The session is gone with its data.
    expect_error(get(&upload, None).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_nothing_stored(&s, &[&claimed, &actual]);
}

#[tokio::test]
async fn final_put_needs_a_valid_digest() {
    let s = Server::start();
    let base = s.url("");
    let upload = start_upload(&base, "up/nodigest").await;
    let r = client().put(&upload).body("abc").send().await.unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    let r = client()
        .put(with_query(&upload, "digest=sha256:1234"))
        .body("abc")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    let r = client()
        .post(s.url("/v2/up/nodigest/blobs/uploads/?digest=sha512:abcd"))
        .body("abc")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert!(files_under(&s.dir.join("blobs")).is_empty());
}

#[tokio::test]
async fn uploads_to_the_same_blob_from_two_repositories() {
    let s = Server::start();
    let data = random_bytes(1500, 19);
    for repo in ["up/same1", "up/same2"] {
        push_blob(&s.url(""), repo, &data).await;
    }
    for repo in ["up/same1", "up/same2"] {
        assert_blob(&s, repo, &data).await;
    }
    assert_eq!(files_under(&s.dir.join("blobs")).len(), 1);
}

#[tokio::test]
async fn an_interrupted_patch_can_be_resumed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start();
    let base = s.url("");
    let data = random_bytes(200_000, 20);
    let d = digest(&data);
    let upload = start_upload(&base, "up/resume").await;
    let path = upload.strip_prefix(&base).unwrap().to_owned();

    // Announce the whole blob, send part of it, and hang up.
    let mut conn = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        data.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&data[..120_000]).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;

    // Whatever arrived is kept, and the upload resumes from there.
    let r = get(&upload, None).await;
    assert_eq!(r.status(), 204);
    let range = header(&r, "range").unwrap();
    let end: usize = range.strip_prefix("0-").unwrap().parse().unwrap();
    let offset = if end == 0 { 0 } else { end + 1 };
    assert!(offset <= 120_000, "{range}");
    let r = patch(
        &upload,
        Some(&format!("{offset}-{}", data.len() - 1)),
        &data[offset..],
    )
    .await;
    assert_eq!(r.status(), 202);
    let r = send(client().put(with_query(&upload, &format!("digest={d}")))).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_blob(&s, "up/resume", &data).await;
}

#[tokio::test]
async fn unparseable_content_range_is_refused() {
    let s = Server::start();
    let upload = start_upload(&s.url(""), "up/badrange").await;
    for range in ["bytes abc", "5-2", "-"] {
        let r = patch(&upload, Some(range), b"abc").await;
        expect_error(r, 416, "RANGE_INVALID").await;
    }
    let r = get(&upload, None).await;
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
}

/// The spec's end-6: a closing PUT whose chunk does not start where the upload stands is a 416
/// (with the status headers of a PATCH 416), and the session stays for the client to resume.
#[tokio::test]
async fn closing_put_out_of_order_is_416_and_keeps_the_session() {
    let s = Server::start();
    let base = s.url("");
    let data = random_bytes(10_000, 21);
    let d = digest(&data);
    let upload = start_upload(&base, "up/put416").await;
    let r = patch(&upload, Some("0-3999"), &data[..4000]).await;
    assert_eq!(r.status(), 202);
    let session_location = header(&r, "location").unwrap();
    let upload = location(&base, &r);
    let id = header(&r, "docker-upload-uuid").unwrap();

    // Skipping ahead, and starting over at 0.
    for (a, b) in [(6000usize, 9999usize), (0, 5999)] {
        let r = closing_put(&upload, &d, Some(&format!("{a}-{b}")), data[a..=b].to_vec()).await;
        assert_eq!(header(&r, "range").as_deref(), Some("0-3999"), "{a}-{b}");
        assert_eq!(header(&r, "docker-upload-uuid"), Some(id.clone()));
        // The session's own URL (with its signed state), as the PATCH gave it.
        assert_eq!(header(&r, "location"), Some(session_location.clone()));
        expect_error(r, 416, "RANGE_INVALID").await;
    }
    // Nothing was appended and the session is still there.
    let r = get(&upload, None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-3999"));
    expect_error(
        get(&s.url(&format!("/v2/up/put416/blobs/{d}")), None).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;

    // The client resumes from where the status says and closes the upload.
    let r = closing_put(&upload, &d, Some("4000-9999"), data[4000..].to_vec()).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_blob(&s, "up/put416", &data).await;
}

/// A PUT whose Content-Range disagrees with its Content-Length is refused before anything is
/// appended, like a PATCH.
#[tokio::test]
async fn closing_put_with_range_longer_than_body_is_refused() {
    let s = Server::start();
    let base = s.url("");
    let data = random_bytes(100, 22);
    let upload = start_upload(&base, "up/putlen").await;
    let r = closing_put(&upload, &digest(&data), Some("0-199"), data.clone()).await;
    expect_error(r, 416, "RANGE_INVALID").await;
    let r = get(&upload, None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
}

async fn assert_blob512(s: &Server, repo: &str, data: &[u8]) {
    let d = digest512(data);
    let r = get(&s.url(&format!("/v2/{repo}/blobs/{d}")), None).await;
    assert_eq!(r.status(), 200, "{repo} {d}");
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), data);
    let r = head(&s.url(&format!("/v2/{repo}/blobs/{d}")), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(
        header(&r, "content-length").as_deref(),
        Some(data.len().to_string().as_str())
    );
}

/// sha512 blobs through every way of pushing one: monolithic POST, POST + PUT, chunked PATCHes
/// (with and without `?digest-algorithm=sha512`), and a mount; kept apart from sha256 on disk.
#[tokio::test]
async fn sha512_blobs_push_every_way() {
    let s = Server::start();
    let base = s.url("");

    // Monolithic.
    let mono = random_bytes(3000, 30);
    let d = digest512(&mono);
    let r = send_typed(
        client().post(s.url(&format!("/v2/up/s512/blobs/uploads/?digest={d}"))),
        "application/octet-stream",
        mono.clone(),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(header(&r, "docker-content-digest"), Some(d.clone()));
    assert_eq!(
        header(&r, "location"),
        Some(format!("/v2/up/s512/blobs/{d}"))
    );
    assert_blob512(&s, "up/s512", &mono).await;
    assert!(blob_path(&s.dir, &d).is_file(), "stored under blobs/sha512");
    // The sha256 name of the same bytes is not a blob here.
    expect_error(
        get(
            &s.url(&format!("/v2/up/s512/blobs/{}", digest(&mono))),
            None,
        )
        .await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;

    // POST + PUT with the whole body, the session hashing sha256 as it goes.
    let two = random_bytes(5000, 31);
    let upload = start_upload(&base, "up/s512").await;
    let r = closing_put(&upload, &digest512(&two), None, two.clone()).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(header(&r, "docker-content-digest"), Some(digest512(&two)));
    assert_blob512(&s, "up/s512", &two).await;

    // Chunked, announced with ?digest-algorithm=sha512 and not.
    for (i, announce) in [(0u64, true), (1, false)] {
        let data = random_bytes(9000, 40 + i);
        let query = if announce {
            "?digest-algorithm=sha512"
        } else {
            ""
        };
        let r = send(client().post(s.url(&format!("/v2/up/s512/blobs/uploads/{query}")))).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let mut upload = location(&base, &r);
        for (a, b) in [(0usize, 2999usize), (3000, 5999)] {
            let r = patch(&upload, Some(&format!("{a}-{b}")), &data[a..=b]).await;
            assert_eq!(r.status(), 202);
            upload = location(&base, &r);
        }
        let r = closing_put(
            &upload,
            &digest512(&data),
            Some("6000-8999"),
            data[6000..].to_vec(),
        )
        .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        assert_eq!(header(&r, "docker-content-digest"), Some(digest512(&data)));
        assert_blob512(&s, "up/s512", &data).await;
    }

    // A wrong sha512 is refused and leaves nothing.
    let upload = start_upload(&base, "up/s512").await;
    let r = client()
        .put(with_query(
            &upload,
            &format!("digest={}", digest512(b"something else")),
        ))
        .body(mono.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert!(entries(&s.dir.join("uploads")).is_empty());

    // Mounted into another repository by its sha512 digest.
    let r = client()
        .post(s.url(&format!(
            "/v2/up/s512-other/blobs/uploads/?mount={d}&from=up/s512"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(header(&r, "docker-content-digest"), Some(d.clone()));
    assert_blob512(&s, "up/s512-other", &mono).await;
}

/// A digest algorithm stevedore cannot compute is refused on push with 400 DIGEST_INVALID.
#[tokio::test]
async fn unsupported_digest_algorithm_push_is_400() {
    let s = Server::start();
    let r = send(client().post(s.url("/v2/up/algo/blobs/uploads/?digest-algorithm=sha384"))).await;
    expect_error(r, 400, "DIGEST_INVALID").await;
    let d = format!("sha384:{}", "a".repeat(96));
    let r = client()
        .post(s.url(&format!("/v2/up/algo/blobs/uploads/?digest={d}")))
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert!(entries(&s.dir.join("uploads")).is_empty());
}
