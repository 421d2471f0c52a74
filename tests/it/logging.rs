//! Logs: one JSON access line per request with method, path, status, bytes, duration, cache
//! outcome and upstream; `log.fields` on every line; text format when asked.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::*;
use bytes::Bytes;
use std::time::Duration;

fn access_lines(s: &Server) -> Vec<serde_json::Value> {
    s.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "stevedore::access")
        .collect()
}

#[tokio::test]
async fn access_lines_say_where_bytes_came_from() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let data = Bytes::from(random_bytes(12_345, 1));
    let d = up.add_blob("library/logs", data.clone());
    let s = Server::start_with(Options {
        extra_yaml: format!(
            "log:\n  fields:\n    service: mirror-a\n    env: test\nproxy:\n  remoteurl: {}\n",
            up.url()
        ),
        ..Options::default()
    });
    let url = s.url(&format!("/v2/library/logs/blobs/{d}"));
    let hex = d.trim_start_matches("sha256:").to_owned();
    let cached = s.dir.join("blobs/sha256").join(&hex[..2]).join(&hex);
    for _ in 0..2 {
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap(), data);
        // A client has its last byte before the blob is committed: wait for the cache.
        assert!(eventually(Duration::from_secs(10), || cached.exists()).await);
        // Recorded in the index right after the rename.
        assert!(s.fetched_and_cached(&d).await, "{}", s.log_text());
    }
    let r = send(client().get(s.url("/v2/nope/manifests/x?ns=gcr.io"))).await;
    assert_eq!(r.status(), 404);
    let found = eventually(Duration::from_secs(5), || access_lines(&s).len() >= 3).await;
    assert!(found, "{}", s.log_text());
    let lines = access_lines(&s);
    let blob_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["path"].as_str().unwrap().contains("/blobs/"))
        .collect();
    assert_eq!(blob_lines.len(), 2);
    let upstream = up.url().trim_start_matches("http://").to_owned();
    for (line, cache) in blob_lines.iter().zip(["upstream", "cache"]) {
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes"], "12345");
        assert_eq!(line["cache"], cache, "{line}");
        assert_eq!(line["upstream"], upstream.as_str());
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == 404 && l["upstream"] == "-")
    );
    // Static fields on every line, access lines and others.
    for l in s.log_text().lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert_eq!(v["service"], "mirror-a", "{l}");
        assert_eq!(v["env"], "test", "{l}");
    }
}

#[tokio::test]
async fn configured_headers_are_on_every_response() {
    let s = Server::start_with(Options {
        extra_yaml:
            "http:\n  headers:\n    X-Content-Type-Options: [nosniff]\n    X-Extra: [a, b]\n".into(),
        ..Options::default()
    });
    for path in ["/v2/", "/v2/nope/manifests/x", "/v2/_catalog"] {
        let r = client().get(s.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        let extra: Vec<_> = r
            .headers()
            .get_all("x-extra")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(extra, ["a", "b"], "{path}");
    }
}
