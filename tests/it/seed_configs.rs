//! Issue 18, "the seed guides' config files start verbatim": every `config/seed-*.yml` passes
//! `stevedore config check` and serves; `storage.cache.blobdescriptor: redis` against a real
//! `redis-server` shared by two replicas, including Redis going away mid-run; `http.secret`
//! signing upload URLs (forged or altered ones refused); `http.host` / `http.relativeurls`
//! shaping `Location` headers.

use crate::common;
use crate::common::api as support;
use crate::common::api::send_typed;
use crate::common::api::{expect_error, get, head, header, with_query};
use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::redis::Redis;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn seeds() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(config_dir())
        .expect("config/")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-") && n.ends_with(".yml"))
        })
        .collect();
    v.sort();
    v
}

fn seed(name: &str) -> PathBuf {
    config_dir().join(format!("seed-{name}.yml"))
}

#[test]
fn every_seed_config_passes_config_check() {
    let seeds = seeds();
    assert!(seeds.len() >= 6, "seeds: {seeds:?}");
    for path in seeds {
        let out = Command::new(BIN)
            .args(["config", "check"])
            .arg(&path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("run stevedore config check");
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Environment that points a seed at this machine: loopback ports, a temp root, JSON logs (for
/// the harness), plus `extra`.
fn local_env(root: &Path, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("REGISTRY_LOG_FORMATTER".to_owned(), "json".to_owned()),
        ("REGISTRY_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        (
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".to_owned(),
            root.display().to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

fn htpasswd(dir: &Path) -> PathBuf {
    let path = dir.join("htpasswd");
    let hash = bcrypt::hash("testpassword", 4).expect("bcrypt");
    std::fs::write(&path, format!("testuser:{hash}\n")).expect("write htpasswd");
    path
}

fn authed_client(basic: bool) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    if basic {
        // testuser:testpassword
        h.insert(
            "authorization",
            "Basic dGVzdHVzZXI6dGVzdHBhc3N3b3Jk".parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

/// Pushes a blob in two chunks (following each `Location`) and an image manifest naming it,
/// then pulls both back.
async fn push_and_pull(base: &str, c: &reqwest::Client, repo: &str) {
    let data = random_bytes(70_000, 18);
    let d = digest(&data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "start upload at {base}");
    let mut loc = support::location(base, &r);
    for (i, chunk) in data.chunks(40_000).enumerate() {
        let start = i * 40_000;
        let r = c
            .patch(&loc)
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        loc = support::location(base, &r);
    }
    let r = c
        .put(with_query(&loc, &format!("digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
    let cd = digest(&config);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={cd}"))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let manifest = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&d, data.len())]);
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), manifest);
    let r = c
        .get(format!("{base}/v2/{repo}/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(digest(&r.bytes().await.unwrap()), d);
}

#[tokio::test]
async fn private_registry_seeds_serve_a_push_and_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let pw = htpasswd(tmp.path()).display().to_string();
    // (seed, its environment here, whether it asks for Basic credentials)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, bool);
    let cases: Vec<Case<'_>> = vec![
        (
            "config-example",
            vec![("REGISTRY_AUTH_HTPASSWD_PATH", pw.clone())],
            true,
        ),
        (
            "config-dev",
            vec![("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:0".into())],
            false,
        ),
        // The guide's own environment (TLS left out: tests/it/tls.rs covers it).
        (
            "deploying",
            vec![
                ("REGISTRY_AUTH", "htpasswd".into()),
                ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm".into()),
                ("REGISTRY_AUTH_HTPASSWD_PATH", pw.clone()),
            ],
            true,
        ),
        ("registry-web", vec![], false),
    ];
    for (i, (name, extra, basic)) in cases.into_iter().enumerate() {
        let root = tmp.path().join(format!("root{i}"));
        let s = Server::spawn(&seed(name), &local_env(&root, &extra), root.clone());
        let base = s.url("");
        if basic {
            let r = client().get(s.url("/v2/")).send().await.unwrap();
            assert_eq!(r.status(), 401, "{name}: anonymous /v2/");
        }
        push_and_pull(&base, &authed_client(basic), "seed/app").await;
    }
}

#[tokio::test]
async fn registry_web_token_seed_serves_its_challenge() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // rootcertbundle must be a real certificate: any self-signed one will do.
    let cert = rcgen::generate_simple_self_signed(vec!["test".into()]).unwrap();
    let bundle = tmp.path().join("auth.cert");
    std::fs::write(&bundle, cert.cert.pem()).unwrap();
    let env = local_env(
        &root,
        &[(
            "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE",
            bundle.display().to_string(),
        )],
    );
    let s = Server::spawn(&seed("registry-web-auth"), &env, root.clone());
    let r = client().get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = header(&r, "www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("realm=\"http://localhost:8080/api/auth\"")
            && challenge.contains("service=\"localhost:5000\""),
        "{challenge}"
    );
}

fn fake_image(up: &FakeUpstream, repo: &str) -> (String, String) {
    let config = b"{\"os\":\"linux\"}".to_vec();
    let layer = random_bytes(50_000, 7);
    let cd = up.add_blob(repo, config.clone().into());
    let ld = up.add_blob(repo, layer.clone().into());
    let m = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    let md = up.add_manifest(repo, Some("latest"), OCI_MANIFEST, m.into());
    (md, ld)
}

/// distribution's config-cache.yml (redis, http.secret, proxy) pulls through a fake upstream
/// with its layer info in a real Redis, in distribution's key layout.
#[tokio::test]
async fn cache_seed_pulls_through_with_layer_info_in_redis() {
    let redis = Redis::start();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (md, ld) = fake_image(&up, "library/alpine");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let env = local_env(
        &root,
        &[
            ("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:0".into()),
            ("REGISTRY_PROXY_REMOTEURL", up.url()),
            ("REGISTRY_REDIS_ADDR", redis.addr()),
            // The seed's 10ms suit a local Redis; a loaded CI machine needs more.
            ("REGISTRY_REDIS_READTIMEOUT", "2s".into()),
            ("REGISTRY_REDIS_WRITETIMEOUT", "2s".into()),
            ("REGISTRY_REDIS_DIALTIMEOUT", "2s".into()),
        ],
    );
    let s = Server::spawn(&seed("config-cache"), &env, root.clone());
    let r = get(
        &s.url("/v2/library/alpine/manifests/latest"),
        Some(OCI_MANIFEST),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(md));
    let r = get(&s.url(&format!("/v2/library/alpine/blobs/{ld}")), None).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let key = format!("blobs::{ld}");
    assert!(
        eventually(Duration::from_secs(10), || redis
            .cli(&["HGET", &key, "size"])
            == "50000")
        .await,
        "layer info not in redis; log:\n{}",
        s.log_text()
    );
    assert_eq!(
        redis.cli(&["SISMEMBER", "repository::library/alpine::blobs", &ld]),
        "1"
    );
    // The fixed http.secret is used, not a generated one.
    assert!(!root.join("http-secret").exists());
}

/// Two replicas (each its own storage) share layer info through one Redis; when Redis goes
/// away requests still succeed, and when it is back it is used again.
#[tokio::test]
async fn replicas_share_layer_info_and_survive_redis_going_away() {
    let redis = Redis::start();
    let port = redis.port;
    let yaml = format!(
        "storage:\n  cache:\n    blobdescriptor: redis\nredis:\n  addr: {}\n  dialtimeout: 2s\n  readtimeout: 2s\n  writetimeout: 2s\n",
        redis.addr()
    );
    let opts = || Options {
        extra_yaml: yaml.clone(),
        ..Options::default()
    };
    let a = Server::start_with(opts());
    let b = Server::start_with(opts());
    let (base_a, base_b) = (a.url(""), b.url(""));
    let shared = random_bytes(30_000, 1);
    let d = push_blob(&base_a, "team/a", &shared).await;
    // B holds the same bytes, for another repository only.
    push_blob(&base_b, "other/x", &shared).await;
    assert_eq!(
        redis.cli(&["SISMEMBER", "repository::team/a::blobs", &d]),
        "1"
    );
    assert_eq!(
        redis.cli(&["HGET", &format!("blobs::{d}"), "size"]),
        "30000"
    );
    // B knows team/a holds it from A, through Redis.
    let r = head(&b.url(&format!("/v2/team/a/blobs/{d}")), None).await;
    assert_eq!(
        r.status(),
        200,
        "B did not learn of team/a's blob from redis"
    );
    assert_eq!(header(&r, "content-length").as_deref(), Some("30000"));
    assert!(
        b.metric(
            "stevedore_layer_info_lookups_total",
            &[("outcome", "redis")]
        )
        .await
            >= 1.0
    );
    // A blob B does not hold is not believed, whatever Redis says.
    let only_a = push_blob(&base_a, "team/a", &random_bytes(1000, 2)).await;
    let r = head(&b.url(&format!("/v2/team/a/blobs/{only_a}")), None).await;
    assert_eq!(r.status(), 404);

    // Redis goes away: pushes, pulls and lookups still work (from the local index).
    redis.stop();
    let fresh = random_bytes(20_000, 3);
    let fd = push_blob(&base_a, "team/a", &fresh).await;
    let r = get(&a.url(&format!("/v2/team/a/blobs/{fd}")), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest(&r.bytes().await.unwrap()), fd);
    let (md, _) = push_image(&base_b, "other/y", "v1", 2, 4).await;
    let r = get(&b.url("/v2/other/y/manifests/v1"), Some(OCI_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(md));
    assert!(
        eventually(Duration::from_secs(10), || a
            .log_text()
            .contains("redis unreachable"))
        .await,
        "{}",
        a.log_text()
    );

    // Redis is back (empty): new layer info reaches it again.
    let redis = Redis::start_on(port);
    let mut seed = 100;
    let mut back = false;
    for _ in 0..200 {
        seed += 1;
        let d = push_blob(&base_a, "team/a", &random_bytes(500, seed)).await;
        if redis.cli(&["EXISTS", &format!("blobs::{d}")]) == "1" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "redis not used again; log:\n{}", a.log_text());
    assert!(a.logged("redis is reachable again").await);
}

/// A Redis that hangs (no answer at all) costs each request at most its timeouts.
#[tokio::test]
async fn a_hung_redis_delays_but_never_fails() {
    let redis = Redis::start();
    let s = Server::start_with(Options {
        extra_yaml: format!(
            "storage:\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: redis\nredis:\n  addr: {}\n  dialtimeout: 300ms\n  readtimeout: 300ms\n  writetimeout: 300ms\n",
            redis.addr()
        ),
        ..Options::default()
    });
    let base = s.url("");
    let d = push_blob(&base, "team/a", &random_bytes(4000, 9)).await;
    redis.pause();
    let started = std::time::Instant::now();
    let r = send(client().delete(s.url(&format!("/v2/team/a/blobs/{d}")))).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        head(&s.url(&format!("/v2/team/a/blobs/{d}")), None)
            .await
            .status(),
        404
    );
    let other = push_blob(&base, "team/b", &random_bytes(3000, 10)).await;
    assert_eq!(
        head(&s.url(&format!("/v2/team/b/blobs/{other}")), None)
            .await
            .status(),
        200
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a hung redis cost {:?}",
        started.elapsed()
    );
    assert!(s.logged("redis unreachable").await, "{}", s.log_text());
    redis.resume();
}

/// A link deleted while Redis is down is forgotten there once it is back (with its data), so
/// Redis never vouches for it again.
#[tokio::test]
async fn deletes_missed_by_a_down_redis_are_replayed() {
    let redis = Redis::start();
    let yaml = format!(
        "storage:\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: redis\nredis:\n  addr: {}\n",
        redis.addr()
    );
    let s = Server::start_with(Options {
        extra_yaml: yaml,
        ..Options::default()
    });
    let base = s.url("");
    let d = push_blob(&base, "team/a", &random_bytes(4000, 11)).await;
    assert_eq!(
        redis.cli(&["SISMEMBER", "repository::team/a::blobs", &d]),
        "1"
    );
    let stopped = redis.kill_keeping_data();
    let r = send(client().delete(s.url(&format!("/v2/team/a/blobs/{d}")))).await;
    assert_eq!(r.status(), 202);
    let redis = stopped.start();
    assert_eq!(
        redis.cli(&["SISMEMBER", "repository::team/a::blobs", &d]),
        "1",
        "the restarted redis should still hold the stale link"
    );
    let mut forgotten = false;
    for _ in 0..200 {
        let r = head(&s.url(&format!("/v2/team/a/blobs/{d}")), None).await;
        assert_eq!(r.status(), 404, "a deleted link came back from redis");
        if redis.cli(&["SISMEMBER", "repository::team/a::blobs", &d]) == "0" {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        forgotten,
        "the delete never reached redis; log:\n{}",
        s.log_text()
    );
}

/// PEM files for a TLS Redis and its clients, from a CA made here; `dir` keeps them.
fn tls_files(dir: &Path) -> (common::redis::TlsFiles, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf named like its issuer looks self-issued to OpenSSL.
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test redis CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let issue = |name: &str| {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap().pem();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (cert, key) = issue("server");
    let (client_cert, client_key) = issue("client");
    let (other_cert, other_key) = issue("stevedore");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    (
        common::redis::TlsFiles {
            cert,
            key,
            ca,
            client_cert,
            client_key,
        },
        other_cert,
        other_key,
    )
}

/// `redis.tls`: a TLS-only Redis that wants client certificates; with the certificate the
/// layer info lands there, without it requests still succeed (from the local index).
#[tokio::test]
async fn redis_over_tls_with_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, cert, key) = tls_files(tmp.path());
    let redis = Redis::start_tls(&files);
    let yaml = |client_cert: bool| {
        let mut y = format!(
            "storage:\n  cache:\n    blobdescriptor: redis\nredis:\n  addr: {}\n  dialtimeout: 2s\n  readtimeout: 2s\n  writetimeout: 2s\n  tls:\n    enabled: true\n    clientcas: [{}]\n",
            redis.addr(),
            files.ca.display()
        );
        if client_cert {
            y.push_str(&format!(
                "    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        y
    };
    let s = Server::start_with(Options {
        extra_yaml: yaml(true),
        ..Options::default()
    });
    let d = push_blob(&s.url(""), "tls/app", &random_bytes(2500, 12)).await;
    assert_eq!(
        redis.cli(&["HGET", &format!("blobs::{d}"), "size"]),
        "2500",
        "{}",
        s.log_text()
    );
    assert!(
        !s.log_text().contains("redis unreachable"),
        "{}",
        s.log_text()
    );
    let anonymous = Server::start_with(Options {
        extra_yaml: yaml(false),
        ..Options::default()
    });
    let d2 = push_blob(&anonymous.url(""), "tls/app", &random_bytes(2600, 13)).await;
    assert_eq!(
        head(&anonymous.url(&format!("/v2/tls/app/blobs/{d2}")), None)
            .await
            .status(),
        200
    );
    assert!(
        eventually(Duration::from_secs(10), || anonymous
            .log_text()
            .contains("redis unreachable"))
        .await,
        "{}",
        anonymous.log_text()
    );
    assert_eq!(redis.cli(&["EXISTS", &format!("blobs::{d2}")]), "0");
}

/// A redis block without `blobdescriptor: redis` is accepted, logged as unused, and never
/// dialled.
#[tokio::test]
async fn an_unused_redis_block_is_logged() {
    let s = Server::start_with(Options {
        extra_yaml: "redis:\n  addr: 127.0.0.1:1\n".into(),
        ..Options::default()
    });
    push_image(&s.url(""), "plain/app", "v1", 1, 5).await;
    assert!(
        eventually(Duration::from_secs(10), || s
            .log_text()
            .contains("the redis section is unused"))
        .await,
        "{}",
        s.log_text()
    );
    assert!(!s.log_text().contains("redis unreachable"));
}

// ------------------------------------------------------------- upload URLs

async fn start(base: &str, repo: &str) -> String {
    let r = send(client().post(format!("{base}/v2/{repo}/blobs/uploads/"))).await;
    assert_eq!(r.status(), 202);
    support::location(base, &r)
}

fn state_of(url: &str) -> String {
    url.split_once("_state=")
        .expect("_state in upload URL")
        .1
        .to_owned()
}

#[tokio::test]
async fn forged_and_altered_upload_urls_are_refused() {
    let s = Server::start_with(Options {
        extra_yaml: "http:\n  secret: s3cret-one\n".into(),
        ..Options::default()
    });
    let base = s.url("");
    let url = start(&base, "up/forge").await;
    let path_only = url.split('?').next().unwrap().to_owned();
    // No state: not a URL this registry issued.
    expect_error(get(&path_only, None).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let r = client().patch(&path_only).body("x").send().await.unwrap();
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // A state signed with another secret (a forgery).
    let other = Server::start_with(Options {
        extra_yaml: "http:\n  secret: s3cret-two\n".into(),
        ..Options::default()
    });
    let foreign = start(&other.url(""), "up/forge").await;
    let forged = format!("{path_only}?_state={}", state_of(&foreign));
    expect_error(get(&forged, None).await, 400, "BLOB_UPLOAD_INVALID").await;
    // Altered: one character of the token changed.
    let token = state_of(&url);
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let altered = format!(
        "{path_only}?_state={}",
        chars.into_iter().collect::<String>()
    );
    expect_error(get(&altered, None).await, 400, "BLOB_UPLOAD_INVALID").await;
    let r = send(client().put(with_query(&altered, &format!("digest={}", digest(b""))))).await;
    expect_error(r, 400, "BLOB_UPLOAD_INVALID").await;
    let r = client().delete(&altered).send().await.unwrap();
    expect_error(r, 400, "BLOB_UPLOAD_INVALID").await;
    // A genuine state for another session or repository.
    let second = start(&base, "up/forge").await;
    let swapped = format!("{path_only}?_state={}", state_of(&second));
    expect_error(get(&swapped, None).await, 400, "BLOB_UPLOAD_INVALID").await;
    let elsewhere = url.replace("/up/forge/", "/up/other/");
    expect_error(get(&elsewhere, None).await, 400, "BLOB_UPLOAD_INVALID").await;
    // The session itself is untouched and finishes through its real URL.
    let r = get(&url, None).await;
    assert_eq!(r.status(), 204);
    let r = client()
        .put(with_query(&url, &format!("digest={}", digest(b"ok"))))
        .body("ok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn without_a_secret_a_generated_one_survives_restarts() {
    let s = Server::start();
    let url = start(&s.url(""), "up/keep").await;
    let key = s.dir.join("http-secret");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(s.logged("http.secret is not set").await);
    let mut s = s;
    let dir = s.dir.clone();
    s.stop();
    let s2 = Server::start_with(Options {
        data_dir: Some(dir),
        ..Options::default()
    });
    let url = url.replace(&s.addr, &s2.addr);
    assert_eq!(get(&url, None).await.status(), 204);
}

// ---------------------------------------------------------------- Location

async fn locations(s: &Server, host_header: Option<&str>) -> (String, String, String) {
    let base = s.url("");
    let mut req = client().post(format!("{base}/v2/loc/app/blobs/uploads/"));
    if let Some(h) = host_header {
        req = req
            .header("x-forwarded-host", h)
            .header("x-forwarded-proto", "https");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 202);
    let upload = header(&r, "location").unwrap();
    let d = digest(b"loc");
    let r = client()
        .post(format!("{base}/v2/loc/app/blobs/uploads/?digest={d}"))
        .body("loc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let blob = header(&r, "location").unwrap();
    let m = image_manifest(OCI_MANIFEST, (&d, 3), &[]);
    let r = send_typed(
        client().put(format!("{base}/v2/loc/app/manifests/v1")),
        OCI_MANIFEST,
        m,
    )
    .await;
    assert_eq!(r.status(), 201);
    let manifest = header(&r, "location").unwrap();
    (upload, blob, manifest)
}

#[tokio::test]
async fn location_shapes_follow_host_and_relativeurls() {
    let with = |yaml: &str| {
        Server::start_with(Options {
            extra_yaml: yaml.to_owned(),
            ..Options::default()
        })
    };
    // http.host: absolute under it, whatever the request says.
    let s = with("http:\n  host: https://registry.example.com:8443\n");
    let (u, b, m) = locations(&s, Some("evil.example")).await;
    assert!(
        u.starts_with("https://registry.example.com:8443/v2/loc/app/blobs/uploads/")
            && u.contains("?_state="),
        "{u}"
    );
    assert!(
        b.starts_with("https://registry.example.com:8443/v2/loc/app/blobs/sha256:"),
        "{b}"
    );
    assert!(
        m.starts_with("https://registry.example.com:8443/v2/loc/app/manifests/sha256:"),
        "{m}"
    );
    // relativeurls: true.
    let s = with("http:\n  relativeurls: true\n");
    let (u, b, m) = locations(&s, None).await;
    for l in [&u, &b, &m] {
        assert!(l.starts_with("/v2/loc/app/"), "{l}");
    }
    // relativeurls: false: absolute, from the request (as distribution builds them).
    let s = with("http:\n  relativeurls: false\n");
    let (u, _, m) = locations(&s, None).await;
    assert!(
        u.starts_with(&format!("http://{}/v2/loc/app/blobs/uploads/", s.addr)),
        "{u}"
    );
    assert!(m.starts_with(&format!("http://{}/v2/", s.addr)), "{m}");
    let (u, _, _) = locations(&s, Some("registry.example.org")).await;
    assert!(u.starts_with("https://registry.example.org/v2/"), "{u}");
    // An absolute upload URL works as given.
    let (u, _, _) = locations(&s, None).await;
    assert_eq!(get(&u, None).await.status(), 204);
}
