//! `auth.htpasswd` (issue 7): a file made by Debian's `htpasswd -B` (apache2-utils), Basic
//! credentials over the API (good, wrong, missing password, unknown user, malformed), the
//! challenge docker login probes for, reloading the file when it changes, and a real client:
//! `skopeo login` then `skopeo copy` in and out with credentials. A missing `htpasswd` or
//! `skopeo` fails the test with an install hint.

use crate::common::oci_layout::{Layout, blob_digests};
use crate::common::tools::{require, run, run_ok};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const REALM: &str = "Stevedore Test Realm";

/// An htpasswd file at `dir/htpasswd` made by `htpasswd -Bbn` for each (user, password).
pub fn htpasswd_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    require("htpasswd", "apache2-utils");
    let mut text = String::new();
    for (u, p) in users {
        text.push_str(&run_ok(Command::new("htpasswd").args(["-Bbn", u, p])));
        text.push('\n');
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, text).unwrap();
    path
}

fn server(htpasswd: &Path) -> Server {
    Server::start_with(Options {
        extra_yaml: format!(
            "storage:\n  delete:\n    enabled: true\nauth:\n  htpasswd:\n    realm: {REALM}\n    path: {}\n",
            htpasswd.display()
        ),
        ..Options::default()
    })
}

async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.expect("JSON error body");
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Asserts `r` is a 401 with the Basic challenge and an UNAUTHORIZED body.
async fn assert_challenged(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Basic realm=\"{REALM}\"").as_str()),
        "{what}"
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED", "{what}");
}

#[tokio::test]
async fn basic_credentials_over_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let file = htpasswd_file(tmp.path(), &[("alice", "s3cret-pw"), ("bob", "hunter2")]);
    let s = server(&file);
    let c = client();
    let base = s.url("/v2/");

    // docker login probes GET /v2/: 401 with the challenge without (or with bad) credentials.
    assert_challenged(c.get(&base).send().await.unwrap(), "no credentials").await;
    for (u, p, what) in [
        ("alice", Some("wrong"), "wrong password"),
        ("alice", Some(""), "empty password"),
        ("alice", None, "missing password"),
        ("nobody", Some("s3cret-pw"), "unknown user"),
    ] {
        assert_challenged(c.get(&base).basic_auth(u, p).send().await.unwrap(), what).await;
    }
    for bad in ["Basic !!notbase64", "Basic YWxpY2U=", "Basic"] {
        let r = c
            .get(&base)
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
    }
    let r = c
        .get(&base)
        .basic_auth("alice", Some("s3cret-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Again (now from the verification cache), and the other user.
    for (u, p) in [("alice", "s3cret-pw"), ("bob", "hunter2")] {
        let r = c.get(&base).basic_auth(u, Some(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{u}");
    }

    // Every endpoint is behind it: pushes and pulls without credentials are refused…
    let data = b"layer bytes".to_vec();
    let d = digest(&data);
    let r = c
        .post(s.url(&format!("/v2/app/blobs/uploads/?digest={d}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_challenged(r, "anonymous push").await;
    let r = c
        .post(s.url(&format!("/v2/app/blobs/uploads/?digest={d}")))
        .basic_auth("alice", Some("s3cret-pw"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let blob = s.url(&format!("/v2/app/blobs/{d}"));
    assert_challenged(c.get(&blob).send().await.unwrap(), "anonymous pull").await;
    // HEAD has no body: the status and the challenge.
    let r = c
        .head(&blob)
        .basic_auth("bob", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c
        .get(&blob)
        .basic_auth("bob", Some("hunter2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    // The catalog: any authenticated user.
    assert_challenged(
        c.get(s.url("/v2/_catalog")).send().await.unwrap(),
        "anonymous catalog",
    )
    .await;
    let r = c
        .get(s.url("/v2/_catalog"))
        .basic_auth("bob", Some("hunter2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["app"]));
}

#[tokio::test]
async fn file_changes_take_effect_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let file = htpasswd_file(tmp.path(), &[("alice", "first")]);
    let s = server(&file);
    let c = client();
    let base = s.url("/v2/");
    let status = |u: &'static str, p: &'static str| {
        let c = c.clone();
        let base = base.clone();
        async move {
            c.get(&base)
                .basic_auth(u, Some(p))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("alice", "first").await, 200);
    assert_eq!(status("carol", "new").await, 401);
    // Change alice's password and add carol, as an operator would.
    run_ok(
        Command::new("htpasswd")
            .arg("-Bb")
            .arg(&file)
            .args(["alice", "second"]),
    );
    run_ok(
        Command::new("htpasswd")
            .arg("-Bb")
            .arg(&file)
            .args(["carol", "new"]),
    );
    assert_eq!(status("carol", "new").await, 200);
    assert_eq!(
        status("alice", "first").await,
        401,
        "the old password (verified and cached before) no longer works"
    );
    assert_eq!(status("alice", "second").await, 200);
    // Remove carol.
    run_ok(Command::new("htpasswd").arg("-D").arg(&file).arg("carol"));
    assert_eq!(status("carol", "new").await, 401);
}

#[test]
fn a_missing_htpasswd_file_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            tmp.path().join("data").display(),
            tmp.path().join("no-such-file").display()
        ),
    )
    .unwrap();
    let out = run(Command::new(BIN).arg("serve").arg(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.htpasswd.path"), "{err}");
}

/// `skopeo ARGS` with an empty registries.conf and its own auth file; returns the output.
fn skopeo(tmp: &Path, args: &[&str]) -> std::process::Output {
    let conf = tmp.join("registries.conf");
    if !conf.exists() {
        std::fs::write(&conf, "").unwrap();
    }
    run(Command::new("skopeo")
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env("REGISTRY_AUTH_FILE", tmp.join("auth.json"))
        .args(["--insecure-policy", "--command-timeout", "120s"])
        .args(args))
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn skopeo_logs_in_and_copies() {
    require("skopeo", "skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let file = htpasswd_file(tmp.path(), &[("alice", "s3cret-pw")]);
    let s = server(&file);
    let host = s.host().to_owned();
    let t = tmp.path();

    let dir = t.join("src-layout");
    let mut l = Layout::create(&dir);
    let layers: Vec<_> = (0..2).map(|i| l.add_layer(70 + i, 2, 20_000)).collect();
    let img = l.add_image("amd64", &layers);
    l.tag(&img.manifest, "v1");
    let src = format!("oci:{}:v1", dir.display());
    let dest = format!("docker://{host}/team/app:v1");

    // A wrong password is refused at login, and without login the copy is refused.
    let out = skopeo(
        t,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "-p",
            "wrong",
            &host,
        ],
    );
    assert!(!out.status.success(), "login with a wrong password worked");
    let out = skopeo(t, &["copy", "--dest-tls-verify=false", &src, &dest]);
    assert!(!out.status.success(), "anonymous copy worked");

    let out = skopeo(
        t,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "-p",
            "s3cret-pw",
            &host,
        ],
    );
    ok(&out, "skopeo login");
    // With the stored login.
    ok(
        &skopeo(t, &["copy", "--dest-tls-verify=false", &src, &dest]),
        "skopeo copy (logged in)",
    );
    ok(&skopeo(t, &["logout", &host]), "skopeo logout");
    // With explicit credentials, out again.
    let back = t.join("back-layout");
    ok(
        &skopeo(
            t,
            &[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                "alice:s3cret-pw",
                &dest,
                &format!("oci:{}:v1", back.display()),
            ],
        ),
        "skopeo copy out with --src-creds",
    );
    assert_eq!(blob_digests(&back), blob_digests(&dir));
    let out = skopeo(
        t,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:wrong",
            &src,
            &format!("docker://{host}/team/app:v2"),
        ],
    );
    assert!(!out.status.success(), "copy with wrong --dest-creds worked");
    ok(
        &skopeo(
            t,
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                "alice:s3cret-pw",
                &src,
                &format!("docker://{host}/team/app:v2"),
            ],
        ),
        "skopeo copy with --dest-creds",
    );
}
