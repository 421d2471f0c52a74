//! The base endpoint and the blob endpoints: HEAD/GET (with ranges), DELETE, and the rule that a
//! blob is visible only in the repositories it was pushed or mounted to.

use crate::common::api::*;
use crate::common::*;

#[tokio::test]
async fn base_endpoint_answers_with_the_api_version() {
    let s = Server::start();
    for path in ["/v2/", "/v2"] {
        let r = get(&s.url(path), None).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            header(&r, "docker-distribution-api-version").as_deref(),
            Some("registry/2.0")
        );
    }
    let r = head(&s.url("/v2/"), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    // Error responses carry the version header too.
    let r = get(&s.url("/v2/nope/tags/list"), None).await;
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
}

#[tokio::test]
async fn head_and_get_blob() {
    let s = Server::start();
    let data = random_bytes(3000, 1);
    let d = push_blob(&s.url(""), "blobs/one", &data).await;
    let url = s.url(&format!("/v2/blobs/one/blobs/{d}"));

    let r = head(&url, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("3000"));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");

    let r = get(&url, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("3000"));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn large_blob_streams_byte_exact() {
    // Larger than the store's read chunk, so the body is several chunks.
    let s = Server::start();
    let data = random_bytes(1_300_000, 2);
    let d = push_blob(&s.url(""), "blobs/big", &data).await;
    let url = s.url(&format!("/v2/blobs/big/blobs/{d}"));
    let r = get(&url, None).await;
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert_eq!(digest(&got), d);
    assert_eq!(got.len(), data.len());
    // A range across the chunk boundary.
    let r = client()
        .get(&url)
        .header("range", "bytes=524000-525000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[524_000..=525_000]);
}

async fn ranged(url: &str, range: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("range", range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn blob_ranges() {
    let s = Server::start();
    let data = random_bytes(1000, 3);
    let d = push_blob(&s.url(""), "blobs/ranges", &data).await;
    let url = s.url(&format!("/v2/blobs/ranges/blobs/{d}"));

    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-99", 0, 99),
        ("bytes=900-", 900, 999),
        ("bytes=-10", 990, 999),
        ("bytes=500-5000", 500, 999),
        ("bytes=999-999", 999, 999),
    ];
    for (range, start, end) in cases {
        let r = ranged(&url, range).await;
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            Some(format!("bytes {start}-{end}/1000")),
            "{range}"
        );
        assert_eq!(
            header(&r, "content-length"),
            Some((end - start + 1).to_string()),
            "{range}"
        );
        assert_eq!(
            header(&r, "docker-content-digest").as_deref(),
            Some(d.as_str())
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &data[start..=end],
            "{range}"
        );
    }

    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=10-5", "bytes=-0"] {
        let r = ranged(&url, range).await;
        assert_eq!(
            header(&r, "content-range").as_deref(),
            Some("bytes */1000"),
            "{range}"
        );
        expect_error(r, 416, "RANGE_INVALID").await;
    }
}

#[tokio::test]
async fn empty_blob() {
    let s = Server::start();
    let d = push_blob(&s.url(""), "blobs/empty", b"").await;
    assert_eq!(d, digest(b""));
    let url = s.url(&format!("/v2/blobs/empty/blobs/{d}"));
    let r = head(&url, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("0"));
    let r = get(&url, None).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = ranged(&url, "bytes=0-").await;
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */0"));
    expect_error(r, 416, "RANGE_INVALID").await;
}

#[tokio::test]
async fn unknown_and_invalid_blob_digests() {
    let s = Server::start();
    push_blob(&s.url(""), "blobs/x", b"something").await;
    let missing = digest(b"never pushed");
    let url = s.url(&format!("/v2/blobs/x/blobs/{missing}"));
    let v = expect_error(get(&url, None).await, 404, "BLOB_UNKNOWN").await;
    assert_eq!(v["errors"][0]["detail"]["digest"], missing.as_str());
    let r = head(&url, None).await;
    assert_eq!(r.status(), 404);
    assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");

    for bad in ["sha256:abc", "nocolon"] {
        let r = get(&s.url(&format!("/v2/blobs/x/blobs/{bad}")), None).await;
        expect_error(r, 400, "DIGEST_INVALID").await;
    }
    // A well-formed digest of an algorithm stevedore cannot store names no blob here: the
    // spec's end-2 answers a read with 404 (distribution does the same for sha384).
    let r = get(
        &s.url("/v2/blobs/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e"),
        None,
    )
    .await;
    expect_error(r, 404, "BLOB_UNKNOWN").await;
    // Uppercase hex is not the canonical form of a digest.
    let upper = format!("sha256:{}", missing["sha256:".len()..].to_ascii_uppercase());
    let r = get(&s.url(&format!("/v2/blobs/x/blobs/{upper}")), None).await;
    expect_error(r, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn blobs_are_isolated_per_repository_until_mounted() {
    let s = Server::start();
    let base = s.url("");
    let (manifest, config, layers) = push_image_blobs(&base, "iso/a", OCI_MANIFEST, 1, 4).await;
    let cd = digest(&config);
    let ld = digest(&layers[0]);
    put_manifest_ok(&base, "iso/a", "v1", OCI_MANIFEST, &manifest).await;

    // Repository b cannot see a's blobs, nor use them in a manifest.
    for d in [&cd, &ld] {
        let url = s.url(&format!("/v2/iso/b/blobs/{d}"));
        expect_error(get(&url, None).await, 404, "BLOB_UNKNOWN").await;
        assert_eq!(head(&url, None).await.status(), 404);
    }
    let r = put_manifest(&base, "iso/b", "v1", OCI_MANIFEST, &manifest).await;
    let v = expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(v["errors"][0]["detail"]["digest"], cd.as_str());
    let r = get(&s.url("/v2/iso/b/manifests/v1"), Some(OCI_MANIFEST)).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    // Nor pull a's manifest by digest.
    let r = get(
        &s.url(&format!("/v2/iso/b/manifests/{}", digest(&manifest))),
        Some(OCI_MANIFEST),
    )
    .await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;

    // Mount both blobs into b.
    for d in [&cd, &ld] {
        let r =
            send(client().post(s.url(&format!("/v2/iso/b/blobs/uploads/?mount={d}&from=iso/a"))))
                .await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "location"), Some(format!("/v2/iso/b/blobs/{d}")));
        assert_eq!(
            header(&r, "docker-content-digest").as_deref(),
            Some(d.as_str())
        );
    }
    let r = get(&s.url(&format!("/v2/iso/b/blobs/{ld}")), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), layers[0].as_slice());
    put_manifest_ok(&base, "iso/b", "v1", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn delete_blob_unlinks_it_from_that_repository_only() {
    let s = Server::start();
    let data = random_bytes(700, 5);
    let d = push_blob(&s.url(""), "del/a", &data).await;
    let r =
        send(client().post(s.url(&format!("/v2/del/b/blobs/uploads/?mount={d}&from=del/a")))).await;
    assert_eq!(r.status(), 201);

    let url_a = s.url(&format!("/v2/del/a/blobs/{d}"));
    // Warm any in-memory cache first, so the delete must invalidate it.
    assert_eq!(head(&url_a, None).await.status(), 200);
    let r = client().delete(&url_a).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(head(&url_a, None).await.status(), 404);
    expect_error(get(&url_a, None).await, 404, "BLOB_UNKNOWN").await;
    let r = client().delete(&url_a).send().await.unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;

    let r = get(&s.url(&format!("/v2/del/b/blobs/{d}")), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());

    // del/a can no longer be the source of a mount…
    let r =
        send(client().post(s.url(&format!("/v2/del/c/blobs/uploads/?mount={d}&from=del/a")))).await;
    assert_eq!(r.status(), 202);
    // …until the blob is pushed to it again.
    push_blob(&s.url(""), "del/a", &data).await;
    let r = get(&url_a, None).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
}

/// Reads one HTTP/1.1 response (head and Content-Length body) from `r`.
async fn read_response(r: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut status = 0;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(rest) = line.strip_prefix("HTTP/1.1 ") {
            status = rest[..3].parse().unwrap();
        } else if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.unwrap();
    (status, body)
}

/// Pipelined GETs on one connection, whole and ranged, each answered with its own bytes:
/// zero-copy responses must stay in order behind each other.
#[tokio::test]
async fn pipelined_blob_gets_get_their_own_bytes() {
    use tokio::io::AsyncWriteExt;
    let s = Server::start();
    let base = s.url("");
    let blobs: Vec<Vec<u8>> = (0..4)
        .map(|i| random_bytes(700_000 + i * 333_333, 900 + i as u64))
        .collect();
    let mut ds = Vec::new();
    for b in &blobs {
        ds.push(push_blob(&base, "pipe/line", b).await);
    }
    let mut reqs = String::new();
    for d in &ds {
        reqs.push_str(&format!(
            "GET /v2/pipe/line/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        reqs.push_str(&format!(
            "GET /v2/pipe/line/blobs/{d} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n"
        ));
    }
    let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let mut r = tokio::io::BufReader::new(tcp);
    r.get_mut().write_all(reqs.as_bytes()).await.unwrap();
    for b in &blobs {
        let (status, body) = read_response(&mut r).await;
        assert_eq!(status, 200);
        assert_eq!(digest(&body), digest(b));
        let (status, body) = read_response(&mut r).await;
        assert_eq!(status, 206);
        assert_eq!(body, b[100..200]);
    }
}
