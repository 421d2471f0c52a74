//! `UpstreamClient` against the fake Docker-Hub-like registry: auth flows, token caching,
//! redirects, faults, caps, timeouts and metrics.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream, Fault};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stevedore::metrics::Metrics;
use stevedore::upstream::{
    BlobResponse, BreakerOptions, ClientOptions, UpstreamClient, UpstreamError,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const NAME: &str = "hub";

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        stall_timeout: Duration::from_millis(500),
        // Faults here are injected on purpose, many in a row: no circuit breaker.
        breaker: BreakerOptions {
            threshold: 0,
            ..BreakerOptions::default()
        },
        ..ClientOptions::default()
    }
}

fn client_with(
    url: &str,
    creds: Option<(&str, &str)>,
    opts: ClientOptions,
) -> (UpstreamClient, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let creds = creds.map(|(u, p)| (u.to_string(), p.into()));
    let client = UpstreamClient::new(NAME, url, creds, opts, metrics.clone()).expect("client");
    (client, metrics)
}

fn client(fake: &FakeUpstream) -> (UpstreamClient, Arc<Metrics>) {
    client_with(&fake.url(), None, options())
}

async fn collect(resp: BlobResponse) -> Result<Vec<u8>, UpstreamError> {
    let mut body = resp.body;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn blob_data(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

fn bearer() -> FakeOptions {
    FakeOptions {
        bearer_auth: true,
        ..FakeOptions::default()
    }
}

fn requests_metric(metrics: &Metrics, op: &str, status: &str) -> u64 {
    metrics
        .upstream_requests
        .with_label_values(&[NAME, op, status])
        .get()
}

#[tokio::test]
async fn anonymous_bearer_flow() {
    let fake = FakeUpstream::start(bearer()).await;
    let body = Bytes::from_static(br#"{"schemaVersion":2}"#);
    let digest = fake.add_manifest("library/alpine", Some("3.20"), OCI_MANIFEST, body.clone());
    let (client, metrics) = client(&fake);

    let m = client
        .get_manifest("library/alpine", "3.20", &[OCI_MANIFEST])
        .await
        .expect("manifest");
    assert_eq!(m.bytes, body);
    assert_eq!(m.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(m.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(
        fake.requests("GET", "/manifests/3.20"),
        2,
        "401, then success"
    );
    assert_eq!(requests_metric(&metrics, "manifest_get", "401"), 1);
    assert_eq!(requests_metric(&metrics, "manifest_get", "200"), 1);
    assert_eq!(requests_metric(&metrics, "token", "200"), 1);
    let received = metrics.upstream_bytes.with_label_values(&[NAME]).get();
    assert_eq!(received, body.len() as u64);

    let log = fake.request_log();
    assert!(log.iter().all(|l| {
        l.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("stevedore/"))
    }));
    let token_request = log.iter().find(|l| l.path.starts_with("/token")).unwrap();
    assert!(token_request.path.contains("service=fake-registry"));
    assert!(
        token_request
            .path
            .contains("scope=repository%3Alibrary%2Falpine%3Apull")
    );
    assert!(
        token_request.authorization.is_none(),
        "anonymous token request"
    );
}

#[tokio::test]
async fn token_is_reused_and_fetched_once_under_concurrency() {
    let fake = FakeUpstream::start(bearer()).await;
    let digest = fake.add_manifest(
        "a/b",
        Some("latest"),
        OCI_MANIFEST,
        Bytes::from_static(b"{}"),
    );
    let blob = fake.add_blob("a/b", blob_data(1000));
    let (client, _) = client(&fake);

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.head_manifest("a/b", "latest", &[OCI_MANIFEST]).await
        }));
    }
    for task in tasks {
        let head = task.await.unwrap().expect("head");
        assert_eq!(head.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(head.size, Some(2));
        assert_eq!(head.media_type.as_deref(), Some(OCI_MANIFEST));
    }
    assert_eq!(fake.token_requests(), 1, "single-flight token fetch");

    for _ in 0..5 {
        client.get_manifest("a/b", &digest, &[]).await.expect("get");
        assert_eq!(
            client.head_blob("a/b", &blob).await.expect("head blob"),
            Some(1000)
        );
    }
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(
        fake.requests("GET", "/manifests/"),
        5,
        "no 401 once the token is cached"
    );

    // Another repository is another scope.
    fake.add_manifest("c/d", Some("x"), OCI_MANIFEST, Bytes::from_static(b"{}"));
    client
        .get_manifest("c/d", "x", &[])
        .await
        .expect("other repo");
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn expired_token_is_refetched() {
    let fake = FakeUpstream::start(FakeOptions {
        bearer_auth: true,
        token_ttl: Duration::from_secs(1),
        ..FakeOptions::default()
    })
    .await;
    fake.add_manifest("a/b", Some("t"), OCI_MANIFEST, Bytes::from_static(b"{}"));
    let (client, _) = client(&fake);
    client.head_manifest("a/b", "t", &[]).await.expect("first");
    // Not a wait for an event: outliving the token's 1 s lifetime is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    client
        .head_manifest("a/b", "t", &[])
        .await
        .expect("after expiry");
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn token_rejected_early_is_dropped_and_refetched_once() {
    let fake = FakeUpstream::start(bearer()).await;
    fake.add_manifest("a/b", Some("t"), OCI_MANIFEST, Bytes::from_static(b"{}"));
    let (client, _) = client(&fake);
    client.head_manifest("a/b", "t", &[]).await.expect("first");
    fake.revoke_tokens();
    client
        .head_manifest("a/b", "t", &[])
        .await
        .expect("after revocation");
    assert_eq!(fake.token_requests(), 2);
    // The new token is cached.
    client.head_manifest("a/b", "t", &[]).await.expect("third");
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn token_endpoint_with_basic_credentials() {
    let fake = FakeUpstream::start(FakeOptions {
        bearer_auth: true,
        basic_credentials: Some(("alice".into(), "s3cret".into())),
        ..FakeOptions::default()
    })
    .await;
    fake.add_manifest("a/b", Some("t"), OCI_MANIFEST, Bytes::from_static(b"{}"));

    let (good, _) = client_with(&fake.url(), Some(("alice", "s3cret")), options());
    good.get_manifest("a/b", "t", &[])
        .await
        .expect("with credentials");
    let token_request = fake
        .request_log()
        .into_iter()
        .find(|l| l.path.starts_with("/token"))
        .unwrap();
    assert_eq!(
        token_request.authorization.as_deref(),
        Some("Basic YWxpY2U6czNjcmV0")
    );

    let (wrong, metrics) = client_with(&fake.url(), Some(("alice", "nope")), options());
    let err = wrong.get_manifest("a/b", "t", &[]).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Unauthorized(_)), "{err:?}");
    assert!(!err.is_unavailable());
    assert_eq!(requests_metric(&metrics, "token", "401"), 1);

    let (anonymous, _) = client(&fake);
    let err = anonymous.get_manifest("a/b", "t", &[]).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Unauthorized(_)), "{err:?}");
}

#[tokio::test]
async fn registry_basic_auth() {
    let fake = FakeUpstream::start(FakeOptions {
        basic_auth: true,
        basic_credentials: Some(("bob".into(), "pw".into())),
        ..FakeOptions::default()
    })
    .await;
    fake.add_manifest("a/b", Some("t"), OCI_MANIFEST, Bytes::from_static(b"{}"));
    let (client, _) = client_with(&fake.url(), Some(("bob", "pw")), options());
    client.head_manifest("a/b", "t", &[]).await.expect("first");
    client.head_manifest("a/b", "t", &[]).await.expect("second");
    assert_eq!(
        fake.requests("HEAD", "/manifests/t"),
        3,
        "Basic sent directly once learned"
    );
    assert_eq!(fake.token_requests(), 0);

    let (anonymous, _) = client_with(&fake.url(), None, options());
    let err = anonymous.head_manifest("a/b", "t", &[]).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Unauthorized(_)), "{err:?}");
}

#[tokio::test]
async fn blob_redirect_to_cdn_without_authorization() {
    let fake = FakeUpstream::start(FakeOptions {
        bearer_auth: true,
        redirect_blobs: true,
        ..FakeOptions::default()
    })
    .await;
    let data = blob_data(300_000);
    let digest = fake.add_blob("a/b", data.clone());
    let (client, metrics) = client(&fake);

    let resp = client.get_blob("a/b", &digest).await.expect("blob");
    assert_eq!(resp.len, Some(data.len() as u64));
    assert_eq!(collect(resp).await.expect("body"), data);
    assert_eq!(fake.requests("GET", "/cdn/"), 1);
    let log = fake.request_log();
    let registry_hit = log
        .iter()
        .find(|l| l.path.contains("/blobs/") && l.authorization.is_some())
        .expect("authorized registry request");
    assert!(
        registry_hit
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Bearer ")
    );
    assert!(
        log.iter()
            .filter(|l| l.path.starts_with("/cdn/"))
            .all(|l| l.authorization.is_none())
    );
    assert_eq!(requests_metric(&metrics, "blob_get", "307"), 1);
    assert_eq!(requests_metric(&metrics, "blob_get", "200"), 1);
    let received = metrics.upstream_bytes.with_label_values(&[NAME]).get();
    assert_eq!(received, data.len() as u64);
}

#[tokio::test]
async fn too_many_requests_passes_retry_after() {
    let fake = FakeUpstream::start(bearer()).await;
    fake.add_manifest("a/b", Some("t"), OCI_MANIFEST, Bytes::from_static(b"{}"));
    fake.set_fault(Fault::TooManyRequests {
        retry_after_secs: 30,
    });
    let (client, metrics) = client(&fake);
    let err = client.get_manifest("a/b", "t", &[]).await.unwrap_err();
    match &err {
        UpstreamError::TooManyRequests { retry_after } => {
            assert_eq!(retry_after.as_deref(), Some("30"))
        }
        other => panic!("expected TooManyRequests, got {other:?}"),
    }
    assert!(err.is_unavailable());
    assert_eq!(requests_metric(&metrics, "manifest_get", "429"), 1);
}

#[tokio::test]
async fn server_error_and_not_found() {
    let fake = FakeUpstream::start(FakeOptions::default()).await;
    let digest = fake.add_blob("a/b", blob_data(10));
    let (client, _) = client(&fake);

    let err = client
        .get_manifest("a/b", "missing", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::NotFound), "{err:?}");
    let err = client.head_blob("a/b", "sha256:00").await.unwrap_err();
    assert!(matches!(err, UpstreamError::NotFound), "{err:?}");
    let err = client.list_tags("nope/nope", None).await.unwrap_err();
    assert!(matches!(err, UpstreamError::NotFound), "{err:?}");

    fake.set_fault(Fault::ServerError);
    let err = client.get_blob("a/b", &digest).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Status(500, _)), "{err:?}");
    assert!(err.is_unavailable());

    fake.set_fault(Fault::None);
    assert_eq!(client.head_blob("a/b", &digest).await.unwrap(), Some(10));
}

#[tokio::test]
async fn truncated_body_is_an_error() {
    let fake = FakeUpstream::start(FakeOptions::default()).await;
    let digest = fake.add_blob("a/b", blob_data(100_000));
    fake.set_fault(Fault::Truncate { after: 1000 });
    let (client, _) = client(&fake);
    let resp = client
        .get_blob("a/b", &digest)
        .await
        .expect("headers arrive");
    assert_eq!(resp.len, Some(100_000));
    let err = collect(resp).await.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Body(m) if m.contains("truncated")),
        "{err:?}"
    );
}

#[tokio::test]
async fn stalled_body_times_out() {
    let fake = FakeUpstream::start(FakeOptions::default()).await;
    let digest = fake.add_blob("a/b", blob_data(100_000));
    fake.set_fault(Fault::Stall { after: 10 });
    let stall = Duration::from_millis(300);
    let (client, _) = client_with(
        &fake.url(),
        None,
        ClientOptions {
            stall_timeout: stall,
            ..options()
        },
    );
    let resp = client
        .get_blob("a/b", &digest)
        .await
        .expect("headers arrive");
    let started = Instant::now();
    let err = collect(resp).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, UpstreamError::Timeout(_)), "{err:?}");
    assert!(err.is_unavailable());
    assert!(took >= stall && took < stall * 4, "took {took:?}");
}

#[tokio::test]
async fn slow_body_within_stall_timeout_is_fine() {
    let fake = FakeUpstream::start(FakeOptions::default()).await;
    let data = blob_data(5000);
    let digest = fake.add_blob("a/b", data.clone());
    fake.set_fault(Fault::Slow {
        chunk: 1000,
        delay: Duration::from_millis(30),
    });
    let (client, _) = client(&fake);
    let resp = client.get_blob("a/b", &digest).await.expect("blob");
    assert_eq!(collect(resp).await.expect("body"), data);
}

#[tokio::test]
async fn corrupt_body_passes_through() {
    let fake = FakeUpstream::start(FakeOptions::default()).await;
    let data = blob_data(4096);
    let digest = fake.add_blob("a/b", data.clone());
    fake.set_fault(Fault::CorruptBody);
    let (client, _) = client(&fake);
    let resp = client.get_blob("a/b", &digest).await.expect("blob");
    let got = collect(resp)
        .await
        .expect("body is read; checking it is the caller's job");
    assert_eq!(got.len(), data.len());
    assert_ne!(got, data);
}

#[tokio::test]
async fn manifest_cap() {
    let fake = FakeUpstream::start(FakeOptions::default()).await;
    let cap = 4 * 1024 * 1024;
    fake.add_manifest(
        "a/b",
        Some("big"),
        OCI_MANIFEST,
        Bytes::from(vec![b' '; cap + 1]),
    );
    fake.add_manifest(
        "a/b",
        Some("max"),
        OCI_MANIFEST,
        Bytes::from(vec![b' '; cap]),
    );
    let (client, _) = client(&fake);
    let err = client.get_manifest("a/b", "big", &[]).await.unwrap_err();
    assert!(matches!(err, UpstreamError::TooLarge), "{err:?}");
    let ok = client
        .get_manifest("a/b", "max", &[])
        .await
        .expect("exactly 4 MiB");
    assert_eq!(ok.bytes.len(), cap);
}

#[tokio::test]
async fn ratelimit_gauge_is_set() {
    let fake = FakeUpstream::start(FakeOptions {
        bearer_auth: true,
        ratelimit_remaining: Some(42),
        ..FakeOptions::default()
    })
    .await;
    fake.add_manifest("a/b", Some("t"), OCI_MANIFEST, Bytes::from_static(b"{}"));
    let (client, metrics) = client(&fake);
    let gauge = metrics
        .upstream_ratelimit_remaining
        .with_label_values(&[NAME]);
    client.head_manifest("a/b", "t", &[]).await.expect("head");
    assert_eq!(gauge.get(), 42, "HEAD does not use a pull");
    client.get_manifest("a/b", "t", &[]).await.expect("get");
    assert_eq!(gauge.get(), 41);
}

#[tokio::test]
async fn tags_list_passthrough_with_link() {
    let fake = FakeUpstream::start(bearer()).await;
    for tag in ["a", "b", "c"] {
        fake.add_manifest(
            "x/y",
            Some(tag),
            OCI_MANIFEST,
            Bytes::from(format!("{{\"t\":\"{tag}\"}}")),
        );
    }
    let (client, _) = client(&fake);
    let (body, link) = client.list_tags("x/y", Some("n=2")).await.expect("tags");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        link.as_deref(),
        Some(r#"</v2/x/y/tags/list?last=b&n=2>; rel="next""#)
    );
    let (body, link) = client.list_tags("x/y", None).await.expect("all tags");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["tags"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(link, None);
}

#[tokio::test]
async fn connection_refused_is_a_quick_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (client, metrics) = client_with(&format!("http://127.0.0.1:{port}"), None, options());
    let started = Instant::now();
    let err = client.head_manifest("a/b", "t", &[]).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    assert!(err.is_unavailable());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(requests_metric(&metrics, "manifest_head", "error"), 1);
}

#[tokio::test]
async fn dropped_connection_is_unavailable() {
    let fake = FakeUpstream::start(FakeOptions::default()).await;
    fake.add_manifest("a/b", Some("t"), OCI_MANIFEST, Bytes::from_static(b"{}"));
    fake.set_fault(Fault::Down);
    let (client, _) = client(&fake);
    let err = client.get_manifest("a/b", "t", &[]).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn silent_server_times_out_on_headers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let timeout = Duration::from_millis(400);
    let (client, _) = client_with(
        &url,
        None,
        ClientOptions {
            timeout,
            ..options()
        },
    );
    let started = Instant::now();
    let err = client.get_manifest("a/b", "t", &[]).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < timeout * 3);
    holder.abort();
}

#[tokio::test]
async fn invalid_input_is_refused_without_network() {
    let fake = FakeUpstream::start(FakeOptions::default()).await;
    let (client, _) = client(&fake);
    for repo in ["", "UPPER/case", "a/../b", "a?b"] {
        let err = client.head_manifest(repo, "t", &[]).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Invalid(_)), "{repo}: {err:?}");
    }
    let err = client.get_blob("a/b", "not-a-digest").await.unwrap_err();
    assert!(matches!(err, UpstreamError::Invalid(_)), "{err:?}");
    assert!(fake.request_log().is_empty());
    let metrics = Arc::new(Metrics::new());
    assert!(UpstreamClient::new("x", "not a url", None, options(), metrics).is_err());
}
