//! Helpers shared by the `api_*` integration tests: reading the spec's error envelope, pushing
//! manifests and upload steps, raw HTTP for paths a URL library would normalise, and looking at
//! the data directory.
#![allow(dead_code)]

use super::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Asserts that `r` is the spec's JSON error envelope with `status` and first code `code`;
/// returns the parsed body.
pub async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    let got = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "status (body: {text})");
    check_envelope(ctype.as_deref(), &text, code)
}

/// Checks an error body: `{"errors":[{"code":…,"message":…,"detail"?:…}]}`.
pub fn check_envelope(content_type: Option<&str>, text: &str, code: &str) -> Value {
    assert_eq!(
        content_type,
        Some("application/json"),
        "error content type (body: {text})"
    );
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let errors = v["errors"].as_array().expect("errors array");
    assert!(!errors.is_empty(), "{text}");
    for e in errors {
        assert!(e["code"].is_string(), "{text}");
        assert!(e["message"].is_string(), "{text}");
    }
    assert_eq!(errors[0]["code"], code, "{text}");
    v
}

pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A `Location` header made absolute against `base`.
pub fn location(base: &str, r: &reqwest::Response) -> String {
    let loc = header(r, "location").expect("Location header");
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc
    } else {
        format!("{base}{loc}")
    }
}

/// `url` with one more query parameter.
pub fn with_query(url: &str, kv: &str) -> String {
    if url.contains('?') {
        format!("{url}&{kv}")
    } else {
        format!("{url}?{kv}")
    }
}

/// Sends `request` with a body of the given media type.
pub async fn send_typed(
    request: reqwest::RequestBuilder,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    send(request.header("content-type", content_type).body(body)).await
}

pub async fn put_manifest(
    base: &str,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &[u8],
) -> reqwest::Response {
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    send_typed(client().put(url), content_type, body.to_vec()).await
}

/// Pushes a manifest and asserts the 201 and its headers; returns its digest.
pub async fn put_manifest_ok(
    base: &str,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &[u8],
) -> String {
    let r = put_manifest(base, repo, reference, content_type, body).await;
    let d = digest(body);
    let status = r.status();
    let hdr = header(&r, "docker-content-digest");
    let loc = header(&r, "location");
    assert_eq!(status, 201, "{}", r.text().await.unwrap());
    assert_eq!(hdr.as_deref(), Some(d.as_str()));
    assert_eq!(loc, Some(format!("/v2/{repo}/manifests/{d}")));
    d
}

/// The closing `PUT ?digest=` of upload `upload`, with `body` as an octet stream and, when given,
/// its `Content-Range`.
pub async fn closing_put(
    upload: &str,
    digest: &str,
    range: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = client()
        .put(with_query(upload, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream");
    if let Some(range) = range {
        req = req.header("content-range", range);
    }
    req.body(body).send().await.unwrap()
}

pub async fn get(url: &str, accept: Option<&str>) -> reqwest::Response {
    let mut req = client().get(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

pub async fn head(url: &str, accept: Option<&str>) -> reqwest::Response {
    let mut req = client().head(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

/// `POST /v2/<repo>/blobs/uploads/`: asserts the 202 and returns the absolute upload URL.
pub async fn start_upload(base: &str, repo: &str) -> String {
    let r = client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    if r.status() != 202 {
        panic!("start upload: {} {}", r.status(), r.text().await.unwrap());
    }
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    assert!(header(&r, "docker-upload-uuid").is_some());
    location(base, &r)
}

/// An image of `layers` random layers and a config, pushed as blobs to `repo`; returns the
/// manifest body (of `media_type`, pretty-printed), the config bytes and the layer bytes.
pub async fn push_image_blobs(
    base: &str,
    repo: &str,
    media_type: &str,
    layers: usize,
    seed: u64,
) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let cd = push_blob(base, repo, &config).await;
    let mut ls = Vec::new();
    for i in 0..layers {
        let data = random_bytes(500 + i * 37, seed * 7919 + i as u64);
        push_blob(base, repo, &data).await;
        ls.push(data);
    }
    let digests: Vec<(String, usize)> = ls.iter().map(|l| (digest(l), l.len())).collect();
    let refs: Vec<(&str, usize)> = digests.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let body = image_manifest(media_type, (&cd, config.len()), &refs);
    (body, config, ls)
}

/// An index (or manifest list) over `children` (media type, digest, size), pretty-printed.
pub fn index_body(media_type: &str, children: &[(&str, &str, usize)]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .enumerate()
        .map(|(i, (mt, d, s))| {
            serde_json::json!({
                "mediaType": mt, "digest": d, "size": s,
                "platform": {"architecture": if i == 0 { "amd64" } else { "arm64" }, "os": "linux"}
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    }))
    .unwrap()
}

/// A raw HTTP/1.1 exchange, for paths that URL libraries would normalise (`..`).
pub async fn raw_request(addr: &str, method: &str, path: &str) -> (u16, Vec<String>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (
        status,
        lines.map(|l| l.to_ascii_lowercase()).collect(),
        body.to_owned(),
    )
}

/// A raw HTTP/1.1 request whose body is written by a background task while the response is
/// read, so that a server that answers before reading the whole body (413) is seen answering,
/// whatever happens to the rest of the body. `chunked` sends the body with chunked encoding
/// instead of a Content-Length.
pub async fn raw_upload(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    chunked: bool,
) -> (u16, Vec<String>, String) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        if chunked {
            for c in body.chunks(64 * 1024) {
                wr.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                    .await?;
                wr.write_all(c).await?;
                wr.write_all(b"\r\n").await?;
            }
            wr.write_all(b"0\r\n\r\n").await?;
        } else {
            wr.write_all(&body).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (status, headers, body_start) = loop {
        let n = rd.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.lines();
            let status: u16 = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .expect("status line");
            break (
                status,
                lines.map(|l| l.to_ascii_lowercase()).collect::<Vec<_>>(),
                end + 4,
            );
        }
    };
    let len: usize = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length on the response");
    while buf.len() < body_start + len {
        let n = rd.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    writer.abort();
    let body = String::from_utf8_lossy(&buf[body_start..body_start + len]).into_owned();
    (status, headers, body)
}

/// The value of `name` (lowercase) among headers from `raw_request`/`raw_upload`.
pub fn raw_header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find_map(|h| h.strip_prefix(name)?.strip_prefix(": "))
}

/// Every file under `dir` (recursively); empty when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Entries directly under `dir`.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// Where the store keeps `digest` (`blobs/<algorithm>/<2 hex>/<hex>`).
pub fn blob_path(root: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    root.join("blobs").join(algorithm).join(&hex[..2]).join(hex)
}
