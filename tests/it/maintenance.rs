//! Maintenance commands beside a running server: `verify` and `gc` (dry run and real) while a
//! cold pull of a large blob from a paced upstream and a chunked push are in flight must not
//! touch the server's temporary files or upload sessions; the debug listener's mutating
//! endpoint needs its token.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream, Fault};
use crate::common::*;
use bytes::Bytes;
use futures::StreamExt;
use sha2::Digest as _;
use std::time::Duration;

const REPO: &str = "library/big";

fn blob_path(s: &Server, d: &str) -> std::path::PathBuf {
    let hex = d.trim_start_matches("sha256:");
    s.dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

fn dir_entries(p: &std::path::Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn verify_and_gc_beside_a_cold_pull_and_a_chunked_push() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let big = Bytes::from(random_bytes(50 * 1024 * 1024, 4242));
    let bd = up.add_blob(REPO, big.clone());
    // About 8 MB/s: the pull takes several seconds, long enough for the commands to run.
    up.set_fault(Fault::Slow {
        chunk: 256 * 1024,
        delay: Duration::from_millis(30),
    });
    let s = Server::mirror(&up.url(), "");

    // The cold pull, streamed and hashed by the client.
    let url = s.url(&format!("/v2/{REPO}/blobs/{bd}"));
    let pull = tokio::spawn(async move {
        let r = client().get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut body = r.bytes_stream();
        let mut h = sha2::Sha256::new();
        let mut n = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("the pull's body completes");
            n += chunk.len();
            h.update(&chunk);
        }
        (n, format!("sha256:{}", hex::encode(h.finalize())))
    });

    // A chunked push, half done.
    let layer = random_bytes(3 * 1024 * 1024, 4343);
    let ld = digest(&layer);
    let (first, second) = layer.split_at(layer.len() / 2);
    let r = send(client().post(s.url("/v2/team/push/blobs/uploads/"))).await;
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = client()
        .patch(s.url(&loc))
        .header("content-range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();

    // The fetch is writing its temporary file.
    assert!(
        eventually(Duration::from_secs(10), || dir_entries(&s.dir.join("tmp"))
            > 0)
        .await,
        "no temporary file of the cold pull; log:\n{}",
        s.log_text()
    );
    assert_eq!(dir_entries(&s.dir.join("uploads")), 1);

    let config = s.config_path.to_str().unwrap().to_owned();
    let debug = s.debug_addr.clone().unwrap();
    let env = [("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())];
    let (code, out, err) = run_cli_env(&["verify", &config], &env);
    assert_eq!(code, 0, "verify: {out}{err}");
    let (code, out, err) = run_cli_env(&["gc", "--dry-run", &config], &env);
    assert_eq!(code, 0, "gc --dry-run: {out}{err}");
    let (code, out, err) = run_cli_env(&["gc", &config], &env);
    assert_eq!(code, 0, "gc: {out}{err}");
    assert!(out.contains("\"blobs_deleted\":0"), "{out}");
    assert!(
        !pull.is_finished(),
        "the upstream was not paced slowly enough for the test to mean anything"
    );
    assert!(dir_entries(&s.dir.join("tmp")) > 0, "tmp/ was swept");
    assert_eq!(dir_entries(&s.dir.join("uploads")), 1, "uploads/ was swept");

    // The push completes.
    let r = client()
        .patch(s.url(&loc))
        .header(
            "content-range",
            format!("{}-{}", first.len(), layer.len() - 1),
        )
        .body(second.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = client()
        // The upload URL carries its signed state as a query already.
        .put(s.url(&format!(
            "{loc}{}digest={ld}",
            if loc.contains('?') { '&' } else { '?' }
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = send(client().get(s.url(&format!("/v2/team/push/blobs/{ld}")))).await;
    assert_eq!(digest(&r.bytes().await.unwrap()), ld);

    // The pull completes and is cached, from exactly one upstream fetch.
    let (n, got) = pull.await.unwrap();
    assert_eq!((n, got.as_str()), (big.len(), bd.as_str()));
    assert!(
        eventually(Duration::from_secs(30), || blob_path(&s, &bd).exists()).await,
        "the pulled blob was not cached; log:\n{}",
        s.log_text()
    );
    up.set_fault(Fault::None);
    let r = send(client().get(s.url(&format!("/v2/{REPO}/blobs/{bd}")))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest(&r.bytes().await.unwrap()), bd);
    assert_eq!(up.requests("GET", &format!("/blobs/{bd}")), 1);
    assert!(
        !s.log_text().contains("No such file or directory"),
        "{}",
        s.log_text()
    );
}

#[tokio::test]
async fn the_debug_gc_endpoint_needs_the_configured_token() {
    let token = "s3cret-debug-token";
    let s = Server::start_with(Options {
        env: vec![("REGISTRY_HTTP_DEBUG_TOKEN".into(), token.into())],
        ..Options::default()
    });
    let url = s.debug_url("/debug/gc?dryrun=true");
    let r = client().post(&url).send().await.unwrap();
    assert_eq!(r.status(), 403, "no token");
    let r = client()
        .post(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "wrong token");
    let r = client().post(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // `stevedore gc` reads the token from the same configuration.
    let config = s.config_path.to_str().unwrap().to_owned();
    let debug = s.debug_addr.clone().unwrap();
    let env = [
        ("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str()),
        ("REGISTRY_HTTP_DEBUG_TOKEN", token),
    ];
    let (code, out, err) = run_cli_env(&["gc", "--dry-run", &config], &env);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run_cli_env(
        &["gc", "--dry-run", &config],
        &[("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())],
    );
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
}
