//! `auth.builtin` (issue 15): stevedore as its own token server. The token flow over HTTP
//! (challenge, token endpoint, scopes intersected with roles, Basic on the API, a token
//! surviving a restart), the first admin's password (from a file, the environment, or
//! generated and logged), the `stevedore user`/`role` CLI with the server stopped and through
//! the debug listener while it runs, and real clients: `skopeo login` + copy as a `write-all`
//! user, a `read-all` user refused push, anonymous pull allowed per glob, `docker login` +
//! push + pull through a private dockerd, and `podman login`. Missing tools fail with an
//! install hint.

use crate::common::api::header;
use crate::common::docker::{Dockerd, DockerdOptions, require_daemon, rootfs_tarball};
use crate::common::oci_layout::Layout;
use crate::common::tools::{require, run, skopeo, skopeo_ok};
use crate::common::*;
use base64::Engine as _;
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ADMIN_PW: &str = "admin-password-1";

/// A configuration with `auth.builtin` (and `extra` under it) in `dir`, data in `dir/data`.
fn config(dir: &Path, builtin_extra: &str) -> PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!(
            "version: 0.1\nlog:\n  level: debug\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n  debug:\n    addr: 127.0.0.1:0\nauth:\n  builtin:\n    expiration: 1h\n{builtin_extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// A server with `auth.builtin` whose first admin's password is [`ADMIN_PW`].
fn server(dir: &Path) -> Server {
    let cfg = config(dir, "");
    Server::spawn(
        &cfg,
        &[(
            "REGISTRY_AUTH_BUILTIN_FIRSTADMIN_PASSWORD".into(),
            ADMIN_PW.into(),
        )],
        dir.join("data"),
    )
}

/// Where the CLI finds the registry: its configuration, and the running server's debug
/// listener (the configuration says port 0).
struct Target<'a> {
    cfg: &'a Path,
    debug: Option<String>,
}

fn target<'a>(cfg: &'a Path, s: Option<&Server>) -> Target<'a> {
    Target {
        cfg,
        debug: s.and_then(|s| s.debug_addr.clone()),
    }
}

/// Runs `stevedore ARGS --config CFG [--addr DEBUG]` (password on stdin when given);
/// (status, out, err).
fn cli(t: &Target<'_>, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--config").arg(t.cfg);
    if let Some(a) = &t.debug {
        cmd.arg("--addr").arg(a);
    }
    cmd.env_remove("REGISTRY_CONFIGURATION_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_ok(t: &Target<'_>, args: &[&str], stdin: Option<&str>) -> String {
    let (code, out, err) = cli(t, args, stdin);
    assert_eq!(code, 0, "stevedore {args:?}:\n{out}\n{err}");
    out
}

/// `stevedore user add NAME --role ROLE` with `password` on stdin.
fn add_user(t: &Target<'_>, name: &str, role: &str, password: &str) {
    cli_ok(
        t,
        &["user", "add", name, "--role", role],
        Some(&format!("{password}\n")),
    );
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// GET /auth/token as `who` (user, password) for `scopes`: (status, body).
async fn token_response(s: &Server, who: Option<(&str, &str)>, scopes: &[&str]) -> (u16, Value) {
    let mut url = s.url("/auth/token?service=stevedore");
    for sc in scopes {
        url.push_str("&scope=");
        url.push_str(&sc.replace(':', "%3A").replace(' ', "%20"));
    }
    let mut req = client().get(url);
    if let Some((u, p)) = who {
        req = req.header("authorization", basic(u, p));
    }
    let r = send(req).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn token(s: &Server, who: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let (status, v) = token_response(s, who, scopes).await;
    assert_eq!(status, 200, "token for {who:?} {scopes:?}: {v}");
    v["token"].as_str().expect("token").to_owned()
}

/// The `access` claim of a token (not verified: the server does that).
fn access(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&raw).unwrap()["access"].clone()
}

async fn get_with(url: &str, auth: Option<String>) -> reqwest::Response {
    let mut req = client().get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    send(req).await
}

fn bearer(t: &str) -> Option<String> {
    Some(format!("Bearer {t}"))
}

#[tokio::test]
async fn token_flow_scopes_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = server(tmp.path());
    let origin = format!("http://{}", s.host());

    // The challenge names this server's token endpoint.
    let r = get_with(&s.url("/v2/"), None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate").unwrap(),
        format!("Bearer realm=\"{origin}/auth/token\",service=\"stevedore\"")
    );
    let r = get_with(&s.url("/v2/a/b/tags/list"), None).await;
    assert_eq!(
        header(&r, "www-authenticate").unwrap(),
        format!(
            "Bearer realm=\"{origin}/auth/token\",service=\"stevedore\",scope=\"repository:a/b:pull\""
        )
    );

    // The answer has what docker, containerd and skopeo read.
    let (status, v) = token_response(
        &s,
        Some(("admin", ADMIN_PW)),
        &["repository:a/b:pull,push", "registry:catalog:*"],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 3600);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'), "{v}");
    let admin = v["token"].as_str().unwrap().to_owned();
    assert_eq!(get_with(&s.url("/v2/"), bearer(&admin)).await.status(), 200);
    push_image_as(&s, &admin, "a/b", "v1").await;
    assert_eq!(
        get_with(&s.url("/v2/_catalog"), bearer(&admin))
            .await
            .status(),
        200
    );

    // Wrong passwords and unknown users get no token.
    for who in [("admin", "wrong-password"), ("nobody", ADMIN_PW)] {
        let (status, _) = token_response(&s, Some(who), &[]).await;
        assert_eq!(status, 401, "{who:?}");
    }
    let (status, v) = token_response(&s, None, &["bogus"]).await;
    assert_eq!(status, 400, "{v}");
    let r = send(client().get(s.url("/auth/token?service=elsewhere"))).await;
    assert_eq!(r.status(), 400);

    // A token for pull only does not push: 401 insufficient_scope.
    let pull = token(&s, Some(("admin", ADMIN_PW)), &["repository:a/b:pull"]).await;
    let r = send(
        client()
            .post(s.url("/v2/a/b/blobs/uploads/"))
            .header("authorization", format!("Bearer {pull}")),
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\""),
    );
    // Basic credentials on the API work too (curl -u).
    let r = get_with(&s.url("/v2/a/b/tags/list"), Some(basic("admin", ADMIN_PW))).await;
    assert_eq!(r.status(), 200);
    let r = get_with(&s.url("/v2/a/b/tags/list"), Some(basic("admin", "nope"))).await;
    assert_eq!(r.status(), 401);
    // A forged token is refused.
    let mut forged = admin.clone();
    forged.pop();
    assert_eq!(
        get_with(&s.url("/v2/"), bearer(&forged)).await.status(),
        401
    );

    // The signing key is kept (0600): a token outlives a restart.
    let key = tmp.path().join("data/token-signing-key.pem");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    s.stop();
    let s = server(tmp.path());
    let r = get_with(&s.url("/v2/a/b/manifests/v1"), bearer(&admin)).await;
    assert_eq!(r.status(), 200);
}

/// Pushes a one-layer image to `repo:tag` with a bearer token.
async fn push_image_as(s: &Server, t: &str, repo: &str, tag: &str) {
    let auth = format!("Bearer {t}");
    let put_blob = |data: Vec<u8>| {
        let d = digest(&data);
        let url = s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}"));
        let auth = auth.clone();
        async move {
            let r = send(
                client()
                    .post(url)
                    .header("authorization", auth)
                    .header("content-type", "application/octet-stream")
                    .body(data.clone()),
            )
            .await;
            assert_eq!(r.status(), 201, "push blob");
            (d, data.len())
        }
    };
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let (cd, cl) = put_blob(config).await;
    let (ld, ll) = put_blob(random_bytes(2000, 7)).await;
    let body = image_manifest(OCI_MANIFEST, (&cd, cl), &[(&ld, ll)]);
    let r = send(
        client()
            .put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("authorization", auth)
            .header("content-type", OCI_MANIFEST)
            .body(body),
    )
    .await;
    assert_eq!(r.status(), 201, "push manifest");
}

#[tokio::test]
async fn roles_decide_what_tokens_grant() {
    let tmp = tempfile::tempdir().unwrap();
    let s = server(tmp.path());
    let cfg_path = tmp.path().join("config.yml");
    let cfg = target(&cfg_path, Some(&s));
    // Through the debug listener: the server holds the index.
    add_user(&cfg, "rita", "read-all", "reader-pw-1");
    add_user(&cfg, "will", "write-all", "writer-pw-1");
    cli_ok(&cfg, &["role", "add", "team"], None);
    cli_ok(
        &cfg,
        &["role", "grant", "team", "team/*", "pull,push,delete"],
        None,
    );
    add_user(&cfg, "tina", "team", "team-pw-12");

    let asked = [
        "repository:team/app:pull,push,delete",
        "repository:other:pull,push",
        "registry:catalog:*",
    ];
    let grants = |t: &str| {
        let a = access(t);
        a.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["name"].as_str().unwrap(),
                    e["actions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect::<Vec<_>>()
    };
    let rita = token(&s, Some(("rita", "reader-pw-1")), &asked).await;
    assert_eq!(grants(&rita), ["team/app:pull", "other:pull", "catalog:*"]);
    let will = token(&s, Some(("will", "writer-pw-1")), &asked).await;
    assert_eq!(
        grants(&will),
        ["team/app:pull,push", "other:pull,push", "catalog:*"]
    );
    let tina = token(&s, Some(("tina", "team-pw-12")), &asked).await;
    assert_eq!(
        grants(&tina),
        ["team/app:pull,push,delete", "other:", "catalog:"]
    );
    // Nothing for anonymous until the anonymous role grants it, then pull only.
    let anon = token(&s, None, &["repository:pub/x:pull,push"]).await;
    assert_eq!(grants(&anon), ["pub/x:"]);
    cli_ok(&cfg, &["role", "grant", "anonymous", "pub/*", "pull"], None);
    let anon = token(
        &s,
        None,
        &["repository:pub/x:pull,push", "repository:priv:pull"],
    )
    .await;
    assert_eq!(grants(&anon), ["pub/x:pull", "priv:"]);

    // A read-all user's push is refused with UNAUTHORIZED (insufficient_scope).
    let r = send(
        client()
            .post(s.url("/v2/team/app/blobs/uploads/"))
            .header("authorization", format!("Bearer {rita}")),
    )
    .await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED", "{v}");

    // Anonymous pull per glob, with the anonymous token or no credentials at all.
    // (A token is for what it was asked for: `will`'s first one names no pub/x.)
    let will = token(
        &s,
        Some(("will", "writer-pw-1")),
        &["repository:pub/x:pull,push repository:other:pull,push"],
    )
    .await;
    push_image_as(&s, &will, "pub/x", "v1").await;
    push_image_as(&s, &will, "other", "v1").await;
    let anon = token(&s, None, &["repository:pub/x:pull"]).await;
    assert_eq!(
        get_with(&s.url("/v2/pub/x/manifests/v1"), bearer(&anon))
            .await
            .status(),
        200
    );
    assert_eq!(
        get_with(&s.url("/v2/pub/x/manifests/v1"), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        get_with(&s.url("/v2/other/manifests/v1"), None)
            .await
            .status(),
        401
    );
    assert_eq!(get_with(&s.url("/v2/_catalog"), None).await.status(), 401);

    // A deleted user gets no new token; a revoked rule stops granting.
    cli_ok(&cfg, &["user", "del", "rita"], None);
    assert_eq!(
        token_response(&s, Some(("rita", "reader-pw-1")), &[])
            .await
            .0,
        401
    );
    cli_ok(&cfg, &["role", "revoke", "anonymous", "pub/*"], None);
    assert_eq!(
        get_with(&s.url("/v2/pub/x/manifests/v1"), None)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn cli_round_trip_offline_then_online() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = config(tmp.path(), "");
    let cfg = target(&cfg_path, None);
    let pwfile = tmp.path().join("alice.pw");
    std::fs::write(&pwfile, "alice-password\n").unwrap();
    // Server stopped: the CLI opens the index itself.
    cli_ok(
        &cfg,
        &[
            "user",
            "add",
            "alice",
            "--role",
            "write-all",
            "--password-file",
            pwfile.to_str().unwrap(),
        ],
        None,
    );
    cli_ok(&cfg, &["role", "add", "ci"], None);
    cli_ok(&cfg, &["role", "grant", "ci", "ci/**", "push,pull"], None);
    cli_ok(&cfg, &["user", "grant", "alice", "ci"], None);
    assert_eq!(
        cli_ok(&cfg, &["user", "list"], None),
        "alice\twrite-all,ci\n"
    );
    // Refusals name the problem and change nothing.
    for (args, stdin, needle) in [
        (vec!["user", "add", "alice"], Some("another-pw\n"), "exists"),
        (vec!["user", "add", "bob"], Some("short\n"), "at least 8"),
        (
            vec!["user", "add", "bob", "--role", "nope"],
            Some("long-enough\n"),
            "no role",
        ),
        (
            vec!["role", "grant", "read-all", "*", "push"],
            None,
            "built-in",
        ),
        (
            vec!["role", "grant", "ci", "*", "write"],
            None,
            "not an action",
        ),
        (
            vec!["role", "grant", "anonymous", "*", "push"],
            None,
            "only grant pull",
        ),
        (vec!["role", "del", "ci"], None, "held by alice"),
        (vec!["user", "del", "nobody"], None, "no user"),
    ] {
        let (code, _, err) = cli(&cfg, &args, stdin);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(
        cli_ok(&cfg, &["user", "list"], None),
        "alice\twrite-all,ci\n"
    );

    // First start: users exist but no admin, so one is created with a generated password,
    // printed to the log once.
    let s = Server::spawn(&cfg_path, &[], tmp.path().join("data"));
    let cfg = target(&cfg_path, Some(&s));
    assert!(s.logged("created the first admin").await);
    let line = s
        .log_text()
        .lines()
        .find(|l| l.contains("created the first admin"))
        .unwrap()
        .to_owned();
    let v: Value = serde_json::from_str(&line).unwrap();
    let generated = v["fields"]["password"]
        .as_str()
        .or(v["password"].as_str())
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    assert!(line.contains("stevedore user passwd"), "{line}");
    token(&s, Some(("admin", &generated)), &[]).await;
    token(&s, Some(("alice", "alice-password")), &[]).await;

    // Server running: the same commands go through its debug listener.
    cli_ok(
        &cfg,
        &["user", "passwd", "alice"],
        Some("alice-new-password\n"),
    );
    assert_eq!(
        token_response(&s, Some(("alice", "alice-password")), &[])
            .await
            .0,
        401
    );
    token(&s, Some(("alice", "alice-new-password")), &[]).await;
    cli_ok(
        &cfg,
        &["user", "passwd", "admin"],
        Some("admin-changed-1\n"),
    );
    token(&s, Some(("admin", "admin-changed-1")), &[]).await;
    let roles = cli_ok(&cfg, &["role", "list"], None);
    assert!(roles.contains("read-all\tbuilt-in\t*=pull\n"), "{roles}");
    assert!(roles.contains("ci\tcustom\tci/**=pull,push\n"), "{roles}");
    let (code, _, err) = cli(&cfg, &["user", "del", "admin"], None);
    assert_ne!(code, 0);
    assert!(err.contains("last admin"), "{err}");
    cli_ok(&cfg, &["user", "revoke", "alice", "ci"], None);
    cli_ok(&cfg, &["role", "del", "ci"], None);
    let users = cli_ok(&cfg, &["user", "list"], None);
    assert_eq!(users, "admin\tadmin\nalice\twrite-all\n");
    // The generated password is not logged again at the next start.
    drop(s);
    let s = Server::spawn(&cfg_path, &[], tmp.path().join("data"));
    token(&s, Some(("admin", "admin-changed-1")), &[]).await;
    assert!(!s.log_text().contains("created the first admin"));
}

#[tokio::test]
async fn first_admin_password_from_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("admin.pw");
    std::fs::write(&file, "from-a-file-pw\n").unwrap();
    let cfg = config(
        tmp.path(),
        &format!(
            "    firstadmin:\n      username: root\n      passwordfile: {}\n",
            file.display()
        ),
    );
    let s = Server::spawn(&cfg, &[], tmp.path().join("data"));
    token(&s, Some(("root", "from-a-file-pw")), &[]).await;
    assert!(!s.log_text().contains("from-a-file-pw"), "password logged");
    assert_eq!(
        token_response(&s, Some(("admin", "from-a-file-pw")), &[])
            .await
            .0,
        401
    );
    // The environment (here a _FILE variable) gives it too.
    let tmp2 = tempfile::tempdir().unwrap();
    let cfg2 = config(tmp2.path(), "");
    let s2 = Server::spawn(
        &cfg2,
        &[(
            "REGISTRY_AUTH_BUILTIN_FIRSTADMIN_PASSWORD_FILE".into(),
            file.display().to_string(),
        )],
        tmp2.path().join("data"),
    );
    token(&s2, Some(("admin", "from-a-file-pw")), &[]).await;
    // A password too short to keep stops start-up with a message naming it.
    let tmp3 = tempfile::tempdir().unwrap();
    let cfg3 = config(tmp3.path(), "");
    let out = Command::new(BIN)
        .args(["serve", cfg3.to_str().unwrap()])
        .env("REGISTRY_AUTH_BUILTIN_FIRSTADMIN_PASSWORD", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("first admin") && err.contains("at least 8"),
        "{err}"
    );
}

/// A skopeo-readable OCI layout with one image tagged `v1`.
fn layout(dir: &Path, seed: u64) -> String {
    let mut l = Layout::create(dir);
    let layers: Vec<_> = (0..2).map(|i| l.add_layer(seed + i, 2, 10_000)).collect();
    let img = l.add_image("amd64", &layers);
    l.tag(&img.manifest, "v1");
    format!("oci:{}:v1", dir.display())
}

#[tokio::test]
async fn skopeo_login_push_pull_by_role() {
    require("skopeo", "skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let s = server(tmp.path());
    let cfg_path = tmp.path().join("config.yml");
    let cfg = target(&cfg_path, Some(&s));
    add_user(&cfg, "will", "write-all", "writer-pw-1");
    add_user(&cfg, "rita", "read-all", "reader-pw-1");
    cli_ok(&cfg, &["role", "grant", "anonymous", "pub/*", "pull"], None);
    let host = s.host().to_owned();
    let (w, r, a) = (
        tmp.path().join("w"),
        tmp.path().join("r"),
        tmp.path().join("a"),
    );
    for d in [&w, &r, &a] {
        std::fs::create_dir(d).unwrap();
    }
    let src = layout(&tmp.path().join("src"), 40);

    // Wrong password: no login.
    let out = skopeo(
        &w,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "will",
            "-p",
            "wrong-password",
            &host,
        ],
    );
    assert!(!out.status.success());
    skopeo_ok(
        &w,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "will",
            "-p",
            "writer-pw-1",
            &host,
        ],
    );
    for repo in ["team/app", "pub/app"] {
        skopeo_ok(
            &w,
            &[
                "copy",
                "--dest-tls-verify=false",
                &src,
                &format!("docker://{host}/{repo}:v1"),
            ],
        );
    }
    let back = tmp.path().join("back");
    skopeo_ok(
        &w,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/team/app:v1"),
            &format!("oci:{}:v1", back.display()),
        ],
    );

    // read-all: pulls, and its push is refused.
    skopeo_ok(
        &r,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "rita",
            "-p",
            "reader-pw-1",
            &host,
        ],
    );
    skopeo_ok(
        &r,
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/team/app:v1"),
        ],
    );
    let out = skopeo(
        &r,
        &[
            "copy",
            "--dest-tls-verify=false",
            &src,
            &format!("docker://{host}/team/other:v1"),
        ],
    );
    assert!(!out.status.success(), "a read-all user pushed");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("unauthorized") || err.contains("denied"),
        "{err}"
    );

    // Anonymous: pub/* pulls, the rest does not.
    skopeo_ok(
        &a,
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/pub/app:v1"),
        ],
    );
    let out = skopeo(
        &a,
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/team/app:v1"),
        ],
    );
    assert!(!out.status.success(), "anonymous pulled team/app");
}

#[tokio::test]
async fn docker_and_podman_login_then_push_and_pull() {
    require_daemon("docker_and_podman_login_then_push_and_pull");
    let tmp = tempfile::tempdir().unwrap();
    let s = server(tmp.path());
    let cfg_path = tmp.path().join("config.yml");
    let cfg = target(&cfg_path, Some(&s));
    add_user(&cfg, "will", "write-all", "writer-pw-1");
    let host = s.host().to_owned();
    let d = Dockerd::start(DockerdOptions {
        insecure_registries: vec![host.clone()],
        ..Default::default()
    });
    let image = format!("{host}/team/app:v1");
    d.import(&rootfs_tarball(tmp.path(), 3), &image);
    let out = d.docker(&["push", &image]);
    assert!(!out.status.success(), "docker pushed without logging in");

    let mut login = d.command(&["login", "-u", "will", "--password-stdin", &host]);
    login
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"writer-pw-1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.docker_ok(&["push", &image]);
    d.docker_ok(&["image", "rm", &image]);
    d.docker_ok(&["pull", &image]);
    assert!(d.has_image(&image));

    // podman logs in with the same protocol (its own auth file).
    require("podman", "podman");
    let authfile = tmp.path().join("podman-auth.json");
    let podman_login = |password: &str| {
        run(Command::new("podman").args([
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            "-u",
            "will",
            "-p",
            password,
            &host,
        ]))
    };
    let out = podman_login("writer-pw-1");
    assert!(
        out.status.success(),
        "podman login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman_login("not-the-password");
    assert!(
        !out.status.success(),
        "podman login with a wrong password worked"
    );
}

#[tokio::test]
async fn console_users_and_roles_pages() {
    use crate::console::Browser;
    let tmp = tempfile::tempdir().unwrap();
    let s = server(tmp.path());
    let mut admin = Browser::new(&s);
    admin.login("admin", ADMIN_PW).await;
    let page = admin.get("/ui/users").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("href=\"/ui/roles\""), "no nav entry");
    let csrf = page.csrf();

    // Add a user with write-all; it logs in at the token endpoint at once.
    let r = admin
        .post(
            "/ui/accounts",
            &[
                ("csrf", &csrf),
                ("op", "user-add"),
                ("name", "will"),
                ("password", "writer-pw-1"),
                ("role", "write-all"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/ui/users"));
    let t = token(&s, Some(("will", "writer-pw-1")), &["repository:x:push"]).await;
    assert_eq!(access(&t)[0]["actions"], serde_json::json!(["push"]));
    assert!(admin.get("/ui/users").await.body.contains("will"));
    // Without the CSRF field nothing happens.
    let r = admin
        .post("/ui/accounts", &[("op", "user-del"), ("name", "will")])
        .await;
    assert_eq!(r.status, 403);
    token(&s, Some(("will", "writer-pw-1")), &[]).await;

    // A role with a rule, given to the user.
    for form in [
        vec![("op", "role-add"), ("name", "team")],
        vec![
            ("op", "role-grant"),
            ("name", "team"),
            ("repository", "team/*"),
            ("action", "pull"),
            ("action", "delete"),
        ],
        vec![("op", "user-grant"), ("name", "will"), ("role", "team")],
    ] {
        let mut f = vec![("csrf", csrf.as_str())];
        f.extend(form);
        let r = admin.post("/ui/accounts", &f).await;
        assert_eq!(r.status, 303, "{f:?}: {}", r.body);
    }
    let roles = admin.get("/ui/roles").await;
    assert!(roles.body.contains("team/*"), "{}", roles.body);
    let t = token(
        &s,
        Some(("will", "writer-pw-1")),
        &["repository:team/a:delete"],
    )
    .await;
    assert_eq!(access(&t)[0]["actions"], serde_json::json!(["delete"]));
    // Refusals keep the rules: the last admin stays, built-in roles do not change.
    let r = admin
        .post(
            "/ui/accounts",
            &[("csrf", &csrf), ("op", "user-del"), ("name", "admin")],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("last admin"), "{}", r.body);
    let r = admin
        .post(
            "/ui/accounts",
            &[
                ("csrf", &csrf),
                ("op", "role-grant"),
                ("name", "read-all"),
                ("repository", "*"),
                ("action", "push"),
            ],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Not an admin: no users page; anonymous: to the login.
    let mut will = Browser::new(&s);
    will.login("will", "writer-pw-1").await;
    assert_eq!(will.get("/ui/users").await.status, 403);
    assert!(
        !will
            .get("/ui/repos")
            .await
            .body
            .contains("href=\"/ui/users\"")
    );
    let r = Browser::new(&s).get("/ui/roles").await;
    assert!(
        r.location().is_some_and(|l| l.starts_with("/ui/login")),
        "{}",
        r.status
    );

    // A new password logs the user out and the old one stops working.
    let r = admin
        .post(
            "/ui/accounts",
            &[
                ("csrf", &csrf),
                ("op", "user-passwd"),
                ("name", "will"),
                ("password", "writer-pw-2"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        token_response(&s, Some(("will", "writer-pw-1")), &[])
            .await
            .0,
        401
    );
    token(&s, Some(("will", "writer-pw-2")), &[]).await;
    let r = will.get("/ui/repos").await;
    assert!(
        r.location().is_some_and(|l| l.starts_with("/ui/login")),
        "session kept"
    );
}
