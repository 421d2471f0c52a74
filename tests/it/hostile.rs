//! Hostile input over raw TCP: malformed request heads, lying or broken bodies, slow clients,
//! path tricks, absurd parameters, and the per-client limits. After each onslaught the server
//! must still answer `GET /v2/`, and nothing may appear outside its storage root.

use crate::common::api::get;
use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Limits made small so the timeouts show within a test.
const FAST_LIMITS: &str = "storage:\n  delete:\n    enabled: true\nhttp:\n  limits:\n    headertimeout: 1s\n    idletimeout: 1s\n    bodytimeout: 1s\n";

fn hostile_server(extra: &str) -> Server {
    Server::start_with(Options {
        extra_yaml: format!("{FAST_LIMITS}{extra}"),
        ..Options::default()
    })
}

/// What came back on a raw connection.
#[derive(Debug)]
struct Reply {
    /// The status of the first response, if any.
    status: Option<u16>,
    text: String,
    /// The server closed the connection (EOF or reset) before `wait` passed.
    closed: bool,
    took: Duration,
}

/// Writes `req` (a write error counts as the server having closed) and reads until the server
/// closes or `wait` passes.
async fn exchange(addr: &str, req: &[u8], wait: Duration) -> Reply {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(req).await;
    read_reply(&mut s, started, wait).await
}

async fn read_reply(s: &mut TcpStream, started: Instant, wait: Duration) -> Reply {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut closed = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    Reply {
        status,
        text,
        closed,
        took: started.elapsed(),
    }
}

/// A refusal: a 4xx answer, or the connection closed without one. Never 2xx or 5xx.
fn assert_refused(what: &str, r: &Reply) {
    match r.status {
        None => assert!(r.closed, "{what}: no answer and not closed: {r:?}"),
        Some(s) => assert!((400..500).contains(&s), "{what}: status {s}: {}", r.text),
    }
}

async fn assert_alive(s: &Server) {
    let r = client().get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the server stopped answering");
}

/// Every path under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn malformed_heads_are_refused() {
    let s = hostile_server("");
    let wait = Duration::from_secs(10);
    let big_header = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let many_headers = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..10_000)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_path = format!(
        "GET /v2/{}/manifests/x HTTP/1.1\r\nHost: x\r\n\r\n",
        "a/".repeat(60 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        ("binary junk", random_bytes(4096, 7)),
        (
            "unknown HTTP version",
            b"GET /v2/ HTTP/9.9\r\n\r\n".to_vec(),
        ),
        ("no path", b"GET HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "NUL in the path",
            b"GET /v2/a\0b/tags/list HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "header without colon",
            b"GET /v2/ HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        ),
        ("100 KB header", big_header.into_bytes()),
        ("10k headers", many_headers.into_bytes()),
        ("120 KB path", long_path.into_bytes()),
    ];
    for (what, req) in &cases {
        let r = exchange(&s.addr, req, wait).await;
        assert_refused(what, &r);
        assert_alive(&s).await;
    }
    // Oversized heads get a proper 431, not just a closed socket.
    let r = exchange(&s.addr, &cases[6].1, wait).await;
    assert_eq!(r.status, Some(431), "{}", r.text);
}

#[tokio::test]
async fn broken_bodies_do_not_hang() {
    let s = hostile_server("");
    let wait = Duration::from_secs(15);
    let d = digest(b"0123456789");

    // Announces 1000 bytes, sends 10, then idles: the body timeout (1s) ends it.
    for (what, head) in [
        (
            "monolithic upload",
            format!("POST /v2/hostile/a/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"),
        ),
        (
            "manifest",
            "PUT /v2/hostile/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1000\r\n\r\n".to_owned(),
        ),
        (
            "chunked upload that stalls",
            format!("POST /v2/hostile/a/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n"),
        ),
    ] {
        let mut req = head.into_bytes();
        req.extend_from_slice(b"0123456789");
        let r = exchange(&s.addr, &req, wait).await;
        assert!(r.closed, "{what}: still open after {:?}: {}", r.took, r.text);
        assert!(r.took < Duration::from_secs(10), "{what}: took {:?}", r.took);
        assert_refused(what, &r);
        assert_alive(&s).await;
    }

    // A PATCH to a real session that stalls is cut off too, and the session survives it.
    let r = send(client().post(s.url("/v2/hostile/a/blobs/uploads/"))).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let path = location
        .split_once("://")
        .map(|(_, r)| &r[r.find('/').unwrap()..])
        .unwrap_or(&location);
    let req = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    let r = exchange(&s.addr, req.as_bytes(), wait).await;
    assert!(r.closed && r.took < Duration::from_secs(10), "{r:?}");
    let status = client().get(s.url(path)).send().await.unwrap();
    assert_eq!(status.status(), 204, "the upload session was lost");

    // Lengths that are not lengths, and bodies that are not chunked encoding.
    let cases = [
        ("negative length", "Content-Length: -1\r\n\r\n"),
        (
            "overflowing length",
            "Content-Length: 99999999999999999999999999\r\n\r\n",
        ),
        (
            "two different lengths",
            "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "length and chunked",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk size garbage",
            "Transfer-Encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk size overflow",
            "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk longer than announced",
            "Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "unknown transfer coding",
            "Transfer-Encoding: gzip\r\n\r\nhello",
        ),
    ];
    for (what, rest) in cases {
        let req =
            format!("POST /v2/hostile/b/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\n{rest}");
        let r = exchange(&s.addr, req.as_bytes(), wait).await;
        assert_refused(what, &r);
        assert!(
            r.took < Duration::from_secs(10),
            "{what}: took {:?}",
            r.took
        );
        assert_alive(&s).await;
    }
    // None of it became a blob.
    let r = send(client().head(s.url(&format!("/v2/hostile/b/blobs/{d}")))).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off() {
    let s = hostile_server("");
    // Connects and says nothing.
    let r = exchange(&s.addr, b"", Duration::from_secs(10)).await;
    assert!(r.closed && r.took < Duration::from_secs(5), "{r:?}");

    // Slowloris: a header byte every 300 ms, never finishing.
    let started = Instant::now();
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for b in b"X-Slow: ".iter().chain([b'a'; 60].iter()).cycle().take(60) {
        // The pacing is the attack under test, not a wait for an event.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if c.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, c.read(&mut probe)).await {
            // A 408 or a plain close, either way the server ended it.
            let _ = n;
            closed = true;
            break;
        }
    }
    assert!(closed, "a slowloris client kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // Idle over a kept-alive connection: a first request, then silence (the idle timeout).
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_reply(&mut c, Instant::now(), Duration::from_secs(10)).await;
    assert_eq!(r.status, Some(200));
    assert!(r.closed && r.took < Duration::from_secs(5), "{r:?}");

    // Slowloris on a kept-alive connection: a first request, then a head that never ends.
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let r = read_reply(&mut c, Instant::now(), Duration::from_secs(10)).await;
    assert_eq!(r.status, Some(200));
    assert!(r.closed && r.took < Duration::from_secs(5), "{r:?}");
    assert_alive(&s).await;
}

/// Issue 13: a fleet's nodes each hold a keep-alive connection. The header timeout times
/// request heads only; an idle connection stays open until `idletimeout` (0 = never).
#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout() {
    let s = Server::start_with(Options {
        extra_yaml: "http:\n  limits:\n    headertimeout: 1s\n    idletimeout: 0s\n".into(),
        ..Options::default()
    });
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Three header timeouts of silence: the window is what is tested, not a wait for an event.
    let r = read_reply(&mut c, Instant::now(), Duration::from_secs(3)).await;
    assert_eq!(r.status, Some(200), "{r:?}");
    assert!(!r.closed, "the idle connection was closed: {r:?}");
    // Still usable, and its next head is timed again.
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    c.write_all(b"GET /v2/ HTTP/1.1\r\n").await.unwrap();
    let r = read_reply(&mut c, Instant::now(), Duration::from_secs(10)).await;
    assert!(r.closed && r.took < Duration::from_secs(5), "{r:?}");
}

#[tokio::test]
async fn path_tricks_stay_inside_the_storage_root() {
    let s = hostile_server("");
    let data = s.dir.clone();
    let parent = data.parent().unwrap().to_path_buf();
    let outside_before = tree(&parent)
        .into_iter()
        .filter(|p| !p.starts_with("data"))
        .collect::<BTreeSet<_>>();
    let (_, _) = push_image(&s.url(""), "real/repo", "v1", 1, 3).await;
    let top_before: BTreeSet<String> = tree(&data)
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();

    let d = digest(b"x");
    let hex = &d["sha256:".len()..];
    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let requests: Vec<(&str, String)> = vec![
        ("GET", "/v2/../../etc/passwd/manifests/x".into()),
        ("GET", "/v2/a/../../../etc/passwd/manifests/latest".into()),
        ("GET", format!("/v2/a%2f..%2fb/blobs/{d}")),
        ("GET", format!("/v2/%2e%2e/%2e%2e/blobs/{d}")),
        ("GET", "/v2/..%2f..%2fetc/tags/list".into()),
        ("GET", "/v2/real/repo/manifests/..%2f..%2f..%2fetc%2fpasswd".into()),
        ("GET", "/v2/real/repo/manifests/%2e%2e".into()),
        ("GET", "/v2/real/repo/manifests/a%00b".into()),
        ("GET", "/v2/real%00/repo/manifests/v1".into()),
        ("GET", format!("/v2/real/repo/blobs/sha256:..%2f..%2f{hex}")),
        ("GET", "/v2/real/repo/blobs/sha256:..".into()),
        ("GET", format!("/v2/real/repo/blobs/sha256%3a{hex}%00")),
        ("GET", "/v2/real/repo/blobs/uploads/..%2f..%2f..%2findex".into()),
        ("DELETE", "/v2/real/repo/blobs/uploads/..%2f..%2fblobs".into()),
        ("PATCH", "/v2/real/repo/blobs/uploads/..".into()),
        (
            "PUT",
            "/v2/real/repo/blobs/uploads/00000000-0000-0000-0000-000000000000?digest=sha256:..%2f..%2f..%2fx".into(),
        ),
        ("POST", "/v2/real/repo/blobs/uploads/?digest=sha256:../../../../tmp/x".into()),
        ("POST", "/v2/real/repo/blobs/uploads/?mount=sha256:../../x&from=../../etc".into()),
        ("PUT", "/v2/real/repo/manifests/..%2f..%2f..%2fescaped".into()),
        ("PUT", "/v2/..%2f..%2fescaped/manifests/v1".into()),
        ("PUT", "/v2/real/../../escaped/manifests/v1".into()),
        ("GET", "/v2/real/repo/referrers/sha256:..%2f..".into()),
    ];
    for (method, path) in &requests {
        let body = if *method == "PUT" || *method == "POST" {
            manifest
        } else {
            ""
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = exchange(&s.addr, req.as_bytes(), Duration::from_secs(10)).await;
        let what = format!("{method} {path}");
        assert!(r.status.is_some(), "{what}: no answer: {r:?}");
        assert_refused(&what, &r);
    }
    assert_alive(&s).await;
    let outside_after = tree(&parent)
        .into_iter()
        .filter(|p| !p.starts_with("data"))
        .collect::<BTreeSet<_>>();
    assert_eq!(
        outside_before, outside_after,
        "files appeared outside the data dir"
    );
    let top_after: BTreeSet<String> = tree(&data)
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(
        top_before, top_after,
        "new entries at the top of the data dir"
    );
    for p in tree(&data) {
        assert!(
            !p.contains("escaped") && !p.contains("passwd") && !p.contains("etc"),
            "suspicious path in the store: {p}"
        );
    }
    // The real image is untouched.
    let r = get(&s.url("/v2/real/repo/manifests/v1"), Some(OCI_MANIFEST)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn absurd_parameters_and_bodies_are_refused() {
    // Default timeouts: the client below reuses its connections.
    let s = Server::start();
    let (_, _) = push_image(&s.url(""), "p/q", "v1", 1, 4).await;
    let layer = random_bytes(1000, 4000);
    let d = digest(&layer);
    let c = client();
    let status = |r: reqwest::Response| r.status().as_u16();

    for q in [
        "n=99999999999999999999",
        "n=-1",
        "n=1e3",
        "n=%00",
        "n=18446744073709551616",
    ] {
        let r = c
            .get(s.url(&format!("/v2/_catalog?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "catalog {q}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "PAGINATION_NUMBER_INVALID");
        let r = c
            .get(s.url(&format!("/v2/p/q/tags/list?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "tags {q}");
    }
    // The largest number is capped, not allocated.
    let r = c
        .get(s.url("/v2/p/q/tags/list?n=18446744073709551615"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 200);
    let r = c
        .get(s.url(&format!("/v2/_catalog?n=1&last={}", "z".repeat(5000))))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 200);

    // Ranges.
    for (range, want) in [
        ("bytes=99999999999999999999999-", 416),
        ("bytes=0-99999999999999999999999", 416),
        ("bytes=18446744073709551615-", 416),
        ("bytes=-18446744073709551615", 206),
        ("bytes=5-1", 416),
        ("bytes=--1", 416),
        ("bytes=0-0-0", 416),
        // An unknown unit is ignored (RFC 9110 §14.2): the whole blob.
        ("lines=0-1", 200),
        ("bytes=0-10", 206),
    ] {
        let r = c
            .get(s.url(&format!("/v2/p/q/blobs/{d}")))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), want, "range {range}");
    }

    // Digests.
    for bad in [
        "sha256:zz".to_owned(),
        "sha256:".to_owned(),
        format!("sha256:{}", "a".repeat(10_000)),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
        format!("SHA256:{}", &d[7..]),
        "sha256".to_owned(),
    ] {
        let r = c
            .get(s.url(&format!("/v2/p/q/blobs/{bad}")))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        assert!(code == 400 || code == 404, "digest {bad:.40}: {code}");
    }

    // Manifests that are not manifests.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let huge = format!("{{\"schemaVersion\":2,\"x\":\"{}\"}}", "a".repeat(5 << 20));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not JSON", b"{not json".to_vec(), 400),
        ("empty", Vec::new(), 400),
        ("deeply nested", deep.into_bytes(), 400),
        ("wrong types", br#"{"schemaVersion":"two","layers":7}"#.to_vec(), 400),
        (
            "bad layer digest",
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"sha256:../../x","size":1},"layers":[]}"#.to_vec(),
            400,
        ),
        (
            "negative size",
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":-1},"layers":[]}"#.to_vec(),
            400,
        ),
        ("over 4 MiB", huge.into_bytes(), 413),
    ];
    for (what, body, want) in cases {
        let sent = c
            .put(s.url("/v2/p/q/manifests/bad"))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) => assert_eq!(
                r.status().as_u16(),
                want,
                "{what}: {}",
                r.text().await.unwrap()
            ),
            // Refused from its Content-Length, before the body was all sent.
            Err(e) => assert!(want == 413 && e.is_request(), "{what}: {e}"),
        }
    }
    let r = c.get(s.url("/v2/p/q/manifests/bad")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_alive(&s).await;
}

#[tokio::test]
async fn a_refusal_that_leaves_the_body_unread_says_it_closes() {
    // Keep-alive clients (Go's, Python's, reqwest's pools) reuse a connection unless told
    // otherwise; a PUT or PATCH sent into one the server closed is not retried.
    let s = Server::start();
    let body = vec![b'a'; 5 << 20];
    let mut head = format!(
        "PUT /v2/p/q/manifests/big HTTP/1.1\r\nHost: x\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body);
    let r = exchange(&s.addr, &head, Duration::from_secs(10)).await;
    assert_eq!(r.status, Some(413), "{}", r.text);
    let head_end = r.text.find("\r\n\r\n").unwrap_or(r.text.len());
    assert!(
        r.text[..head_end]
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        r.text
    );
    assert!(r.closed, "the connection stayed open: {r:?}");
    // A body-less request on a kept-alive connection is not told to close.
    let r = exchange(
        &s.addr,
        b"GET /v2/p/q/manifests/none HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(r.status, Some(404), "{}", r.text);
    assert!(
        !r.text.to_ascii_lowercase().contains("connection: close"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn requests_over_the_rate_get_429() {
    // Default timeouts: a 1 s header timeout would race the client's pooled connections.
    let s = Server::start_with(Options {
        extra_yaml: "http:\n  limits:\n    requestspersecond: 5\n    burst: 5\n".into(),
        ..Options::default()
    });
    let c = client();
    let mut limited = Vec::new();
    let mut ok = 0;
    // All at once, so that a slow machine does not refill the bucket between them.
    let all = futures::future::join_all((0..30).map(|_| c.get(s.url("/v2/")).send())).await;
    for r in all {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => limited.push(r),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 5, "the burst was not allowed: {ok}");
    assert!(!limited.is_empty(), "no request was limited");
    let r = limited.pop().unwrap();
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    // Waiting as told is enough (the wait is the behaviour under test: Retry-After's seconds).
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(c.get(s.url("/v2/")).send().await.unwrap().status(), 200);
    assert!(
        s.metric("stevedore_http_requests_total", &[("status", "429")])
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn connections_over_the_client_limit_are_refused() {
    let s = Server::start_with(Options {
        extra_yaml: "http:\n  limits:\n    maxconnsperclient: 3\n".into(),
        ..Options::default()
    });
    // Three connections that are served (kept alive after a request each).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&s.addr).await.unwrap();
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    // The fourth is told why and closed.
    let r = exchange(
        &s.addr,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r.status, Some(429), "{}", r.text);
    assert!(
        r.text.to_ascii_lowercase().contains("retry-after"),
        "{}",
        r.text
    );
    assert!(r.text.contains("TOOMANYREQUESTS"), "{}", r.text);
    assert!(r.closed, "the refused connection stayed open");
    // Closing one makes room again (the server notices the close asynchronously).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = exchange(
            &s.addr,
            b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        if r.status == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a close: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connections_over_the_total_limit_are_closed() {
    let s = Server::start_with(Options {
        extra_yaml: "http:\n  limits:\n    maxconns: 2\n".into(),
        ..Options::default()
    });
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(&s.addr).await.unwrap();
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let r = exchange(
        &s.addr,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(r.closed && r.status.is_none(), "{r:?}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client()
        .get(s.url("/v2/"))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "no room after closing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `name{labels}` on `/metrics` until it equals `want` (or 20 s pass); returns the last value.
async fn metric_becomes(s: &Server, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = s.metric(name, labels).await;
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_is_still_counted() {
    // An upstream that accepts connections and never answers: the request waits in the handler.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let s = Server::mirror(&format!("http://{hole_addr}"), "");
    let in_flight = "stevedore_http_requests_in_flight";
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(b"GET /v2/library/app/manifests/latest HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(metric_becomes(&s, in_flight, &[], 1.0).await, 1.0);
    drop(c);
    assert_eq!(
        metric_becomes(&s, in_flight, &[], 0.0).await,
        0.0,
        "the gauge did not come back down; log:\n{}",
        s.log_text()
    );
    let cancelled = [("endpoint", "manifest"), ("status", "499")];
    assert_eq!(
        metric_becomes(&s, "stevedore_http_requests_total", &cancelled, 1.0).await,
        1.0
    );
    assert!(
        s.log_text()
            .lines()
            .any(|l| l.contains("stevedore::access") && l.contains("\"status\":499")),
        "no access log line for the cancelled request"
    );
    held.abort();
}

#[tokio::test]
async fn made_up_methods_share_one_metric_label() {
    let s = Server::start();
    for i in 0..8 {
        let req = format!("X-METHOD-{i} /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = exchange(&s.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert_refused("made-up method", &r);
    }
    let text = reqwest::get(s.debug_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("X-METHOD"),
        "a made-up method became a label"
    );
    assert_eq!(
        metric_value(
            &text,
            "stevedore_http_requests_total",
            &[("method", "other")]
        ),
        8.0
    );
    assert_alive(&s).await;
}

#[tokio::test]
async fn a_content_range_ending_at_the_last_u64_is_no_panic() {
    let s = hostile_server("");
    let c = client();
    let r = c
        .post(s.url("/v2/hostile/c/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let url = if location.starts_with('/') {
        s.url(&location)
    } else {
        location
    };
    // Chunked (no Content-Length), so the range is not compared with a length first.
    let pieces: Vec<Result<&'static [u8], std::io::Error>> = vec![Ok(b"abc")];
    let r = c
        .patch(&url)
        .header("content-range", "0-18446744073709551615")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert!(
        r.status().is_success() || r.status() == 416,
        "status {}",
        r.status()
    );
    assert!(!s.log_text().contains("panicked"), "{}", s.log_text());
    assert_alive(&s).await;
}
