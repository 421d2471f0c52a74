//! `auth.policy` (issue 7, a stevedore extension): anonymous pull with authenticated push,
//! per-repository rules for who may pull, push or delete (403 DENIED for an authenticated user
//! the rules leave out, 401 for anonymous requests), read-only mode on top of auth, a mirror's
//! proxied repositories behind the same pull check, and the config check of a policy without
//! an authentication kind.

use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::tools::{require, run, run_ok};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const ALICE: (&str, &str) = ("alice", "alice-pw");
const BOB: (&str, &str) = ("bob", "bob-pw");

fn htpasswd_file(dir: &Path) -> PathBuf {
    require("htpasswd", "apache2-utils");
    let mut text = String::new();
    for (u, p) in [ALICE, BOB] {
        text.push_str(&run_ok(Command::new("htpasswd").args(["-Bbn", u, p])));
        text.push('\n');
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, text).unwrap();
    path
}

const POLICY: &str = "  policy:
    anonymouspull: true
    rules:
      - repository: team/*
        push: [alice]
        delete: [alice]
      - repository: private/*
        pull: [alice]
";

fn server(htpasswd: &Path, extra: &str) -> Server {
    Server::start_with(Options {
        extra_yaml: format!(
            "storage:\n  delete:\n    enabled: true\n{extra}auth:\n  htpasswd:\n    realm: policy-test\n    path: {}\n{POLICY}",
            htpasswd.display()
        ),
        ..Options::default()
    })
}

type Creds = Option<(&'static str, &'static str)>;

fn with(b: reqwest::RequestBuilder, who: Creds) -> reqwest::RequestBuilder {
    match who {
        Some((u, p)) => b.basic_auth(u, Some(p)),
        None => b,
    }
}

/// Status of a monolithic blob push of `data` to `repo`.
async fn push_blob_as(s: &Server, who: Creds, repo: &str, data: &[u8]) -> u16 {
    let d = digest(data);
    with(
        client().post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}"))),
        who,
    )
    .body(data.to_vec())
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

/// Status and OCI error code of `method path` as `who`.
async fn call(s: &Server, who: Creds, method: reqwest::Method, path: &str) -> (u16, String) {
    let r = with(client().request(method, s.url(path)), who)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (
        status,
        body["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn anonymous_pull_authenticated_push_and_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let s = server(&htpasswd_file(tmp.path()), "");
    let data = b"policy blob".to_vec();
    let d = digest(&data);
    let get = reqwest::Method::GET;

    // Push: alice may push to team/*, bob may not (403, he is known); anonymous gets 401.
    assert_eq!(push_blob_as(&s, Some(ALICE), "team/app", &data).await, 201);
    assert_eq!(push_blob_as(&s, Some(BOB), "team/app", &data).await, 403);
    assert_eq!(push_blob_as(&s, None, "team/app", &data).await, 401);
    // Repositories no rule restricts: any authenticated user.
    assert_eq!(push_blob_as(&s, Some(BOB), "bob/tools", &data).await, 201);
    assert_eq!(push_blob_as(&s, None, "bob/tools", &data).await, 401);
    // private/* restricts pull to alice; a push needs pull too (as in distribution).
    assert_eq!(push_blob_as(&s, Some(BOB), "private/x", &data).await, 403);
    assert_eq!(push_blob_as(&s, Some(ALICE), "private/x", &data).await, 201);

    // Anonymous pull where no rule restricts pull.
    let blob = |repo: &str| format!("/v2/{repo}/blobs/{d}");
    assert_eq!(call(&s, None, get.clone(), &blob("team/app")).await.0, 200);
    assert_eq!(call(&s, None, get.clone(), &blob("bob/tools")).await.0, 200);
    assert_eq!(
        call(&s, None, reqwest::Method::HEAD, &blob("team/app"))
            .await
            .0,
        200
    );
    // …but not of private/*, nor the catalog, nor GET /v2/ (docker login must see a 401).
    assert_eq!(
        call(&s, None, get.clone(), &blob("private/x")).await,
        (401, "UNAUTHORIZED".into())
    );
    assert_eq!(call(&s, None, get.clone(), "/v2/_catalog").await.0, 401);
    assert_eq!(call(&s, None, get.clone(), "/v2/").await.0, 401);
    assert_eq!(call(&s, Some(BOB), get.clone(), "/v2/").await.0, 200);
    // Pull rules for authenticated users.
    assert_eq!(
        call(&s, Some(BOB), get.clone(), &blob("private/x")).await,
        (403, "DENIED".into())
    );
    assert_eq!(
        call(&s, Some(ALICE), get.clone(), &blob("private/x"))
            .await
            .0,
        200
    );

    // Delete: only alice in team/*; anyone authenticated elsewhere.
    let del = reqwest::Method::DELETE;
    assert_eq!(
        call(&s, Some(BOB), del.clone(), &blob("team/app")).await,
        (403, "DENIED".into())
    );
    assert_eq!(call(&s, None, del.clone(), &blob("team/app")).await.0, 401);
    assert_eq!(
        call(&s, Some(ALICE), del.clone(), &blob("team/app"))
            .await
            .0,
        202
    );
    assert_eq!(
        call(&s, Some(BOB), del.clone(), &blob("bob/tools")).await.0,
        202
    );

    // A mount needs pull on the source: bob cannot pull private/x, so he cannot mount from it.
    let mount = format!("/v2/bob/other/blobs/uploads/?mount={d}&from=private/x");
    assert_eq!(
        call(&s, Some(BOB), reqwest::Method::POST, &mount).await,
        (403, "DENIED".into())
    );
    assert_eq!(
        call(&s, Some(ALICE), reqwest::Method::POST, &mount).await.0,
        201
    );
}

#[tokio::test]
async fn read_only_mode_still_refuses_writes_after_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let s = server(
        &htpasswd_file(tmp.path()),
        "  maintenance:\n    readonly:\n      enabled: true\n",
    );
    let data = b"ro".to_vec();
    // Authenticated and allowed by the policy, but the storage is read-only.
    assert_eq!(push_blob_as(&s, Some(ALICE), "team/app", &data).await, 405);
    // Anonymous writes are still asked for credentials first.
    assert_eq!(push_blob_as(&s, None, "team/app", &data).await, 401);
    assert_eq!(
        call(
            &s,
            None,
            reqwest::Method::GET,
            "/v2/team/app/manifests/latest"
        )
        .await
        .0,
        404,
        "anonymous pull still works (nothing is there)"
    );
}

#[tokio::test]
async fn proxied_repositories_are_behind_the_same_pull_check() {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let data = bytes::Bytes::from_static(b"upstream layer");
    let d = up.add_blob("private/img", data.clone());
    let s = server(
        &htpasswd_file(tmp.path()),
        &format!("proxy:\n  remoteurl: {}\n", up.url()),
    );
    let path = format!("/v2/private/img/blobs/{d}");
    let get = reqwest::Method::GET;
    assert_eq!(call(&s, None, get.clone(), &path).await.0, 401);
    assert_eq!(call(&s, Some(BOB), get.clone(), &path).await.0, 403);
    assert_eq!(
        up.requests("GET", &d),
        0,
        "refused requests never reach the upstream"
    );
    let r = with(client().get(s.url(&path)), Some(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), data);
    assert_eq!(up.requests("GET", &d), 1);
    // Cached now: still refused to those the policy leaves out.
    assert_eq!(call(&s, Some(BOB), get.clone(), &path).await.0, 403);
    // A repository no rule restricts: anonymous pull through the mirror.
    let d2 = up.add_blob("library/alpine", bytes::Bytes::from_static(b"alpine"));
    assert_eq!(
        call(&s, None, get, &format!("/v2/library/alpine/blobs/{d2}"))
            .await
            .0,
        200
    );
}

#[test]
fn a_policy_needs_an_authentication_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.yml");
    std::fs::write(
        &config,
        "version: 0.1\nauth:\n  policy:\n    anonymouspull: true\n",
    )
    .unwrap();
    let out = run(Command::new(BIN).args(["config", "check"]).arg(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.policy"), "{err}");
    // With htpasswd it loads (the file need not exist for the check).
    std::fs::write(
        &config,
        format!("version: 0.1\nauth:\n  htpasswd:\n    realm: r\n    path: /nonexistent/htpasswd\n{POLICY}"),
    )
    .unwrap();
    let out = run(Command::new(BIN).args(["config", "check"]).arg(&config));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A rule without a repository is named.
    std::fs::write(
        &config,
        "version: 0.1\nauth:\n  htpasswd:\n    realm: r\n    path: /p\n  policy:\n    rules:\n      - push: [alice]\n",
    )
    .unwrap();
    let out = run(Command::new(BIN).args(["config", "check"]).arg(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.policy.rules[0].repository"), "{err}");
}

/// containerd's `?ns=` sends a name to another registry's cache ("quay.io/<name>"): a user
/// who may push to `team/x` may not push into `quay.io/team/x` that way.
#[tokio::test]
async fn ns_cannot_reach_a_repository_the_rules_do_not_grant() {
    let dir = tempfile::tempdir().unwrap();
    let ht = htpasswd_file(dir.path());
    let quay = FakeUpstream::start(FakeOptions::default()).await;
    let extra = format!(
        "proxy:\n  remoteurl: {}\n  upstreams:\n    - name: quay.io\n      remoteurl: {}\n",
        quay.url(),
        quay.url()
    );
    // Bob may not push under quay.io/*; team/* is alice's; the catch-all lets bob push to bob/*.
    let s = Server::start_with(Options {
        extra_yaml: format!(
            "{extra}auth:\n  htpasswd:\n    realm: ns-test\n    path: {}\n  policy:\n    rules:\n      - repository: quay.io/*\n        push: [alice]\n",
            ht.display()
        ),
        ..Options::default()
    });
    let data = random_bytes(1000, 5);
    let d = digest(&data);
    let plain = client()
        .post(s.url(&format!("/v2/bob/x/blobs/uploads/?digest={d}")))
        .basic_auth(BOB.0, Some(BOB.1))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 201, "bob may push to bob/x");
    let via_ns = client()
        .post(s.url(&format!("/v2/bob/x/blobs/uploads/?digest={d}&ns=quay.io")))
        .basic_auth(BOB.0, Some(BOB.1))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(
        via_ns.status(),
        403,
        "ns=quay.io writes quay.io/bob/x, which bob may not push"
    );
}
