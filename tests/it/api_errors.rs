//! Errors across endpoints: invalid and too-long names (also with `..` and trailing slashes,
//! sent raw), unknown endpoints and methods, deletes when disabled (and enabled through the
//! environment), and the CLI's configuration check.

use crate::common;
use crate::common::api::*;
use crate::common::*;

/// Every repository-scoped endpoint with `name` in it.
fn endpoints(name: &str) -> Vec<(&'static str, String)> {
    let d = digest(b"x");
    vec![
        ("GET", format!("/v2/{name}/tags/list")),
        ("GET", format!("/v2/{name}/manifests/latest")),
        ("HEAD", format!("/v2/{name}/manifests/latest")),
        ("PUT", format!("/v2/{name}/manifests/latest")),
        ("DELETE", format!("/v2/{name}/manifests/{d}")),
        ("GET", format!("/v2/{name}/blobs/{d}")),
        ("HEAD", format!("/v2/{name}/blobs/{d}")),
        ("DELETE", format!("/v2/{name}/blobs/{d}")),
        ("POST", format!("/v2/{name}/blobs/uploads/")),
        (
            "GET",
            format!("/v2/{name}/blobs/uploads/123e4567-e89b-42d3-a456-426614174000"),
        ),
        ("GET", format!("/v2/{name}/referrers/{d}")),
    ]
}

async fn assert_name_invalid_raw(s: &Server, name: &str) {
    for (method, path) in endpoints(name) {
        let (status, headers, body) = raw_request(&s.addr, method, &path).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        if method != "HEAD" {
            let ctype = headers
                .iter()
                .find_map(|h| h.strip_prefix("content-type: "))
                .map(str::to_owned);
            check_envelope(ctype.as_deref(), &body, "NAME_INVALID");
        }
    }
}

#[tokio::test]
async fn invalid_repository_names() {
    let s = Server::start();
    let too_long = "a".repeat(256);
    let long_path = format!("{}/{}", "b".repeat(127), "c".repeat(129));
    for name in [
        "Upper",
        "lower/Upper",
        "a/../b",
        "..",
        "a/./b",
        "a..b",
        "trailing/",
        "a//b",
        "-dash",
        "under___score",
        "a%2Fb",
        "a:b",
        too_long.as_str(),
        long_path.as_str(),
    ] {
        assert_name_invalid_raw(&s, name).await;
    }
    // The same through an HTTP client, with the JSON detail naming the repository.
    let r = get(&s.url("/v2/Foo/tags/list"), None).await;
    let v = expect_error(r, 400, "NAME_INVALID").await;
    assert_eq!(v["errors"][0]["detail"]["name"], "Foo");
    let r = send(client().post(s.url("/v2/Foo/blobs/uploads/"))).await;
    expect_error(r, 400, "NAME_INVALID").await;
    // Nothing was created by any of it.
    let r = get(&s.url("/v2/_catalog"), None).await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!([]));
    assert!(entries(&s.dir.join("uploads")).is_empty());

    // 255 characters is still a valid name.
    let longest = format!("{}/{}", "d".repeat(127), "e".repeat(127));
    assert_eq!(longest.len(), 255);
    push_blob(&s.url(""), &longest, b"ok").await;
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let s = Server::start();
    let r = get(&s.url("/v2/a/unknown/x"), None).await;
    let status = r.status().as_u16();
    assert_eq!(status, 404);
    let r = get(&s.url("/v3/"), None).await;
    assert_eq!(r.status(), 404);
    for (method, path) in [
        ("POST", "/v2/"),
        ("PUT", "/v2/_catalog"),
        ("POST", "/v2/a/manifests/latest"),
        ("PATCH", "/v2/a/manifests/latest"),
        ("POST", "/v2/a/tags/list"),
        (
            "PUT",
            "/v2/a/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("GET", "/v2/a/blobs/uploads/"),
        (
            "DELETE",
            "/v2/a/referrers/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        let r = client()
            .request(method.parse().unwrap(), s.url(path))
            .send()
            .await
            .unwrap();
        expect_error(r, 405, "UNSUPPORTED").await;
    }
}

/// Pushes an image and returns (manifest digest, one layer digest).
async fn seed(base: &str, repo: &str) -> (String, String, Vec<u8>) {
    let (m, _, layers) = push_image_blobs(base, repo, OCI_MANIFEST, 1, 80).await;
    let md = put_manifest_ok(base, repo, "v1", OCI_MANIFEST, &m).await;
    (md, digest(&layers[0]), m)
}

#[tokio::test]
async fn deletes_are_unsupported_unless_enabled() {
    let s = Server::start_with(Options {
        extra_yaml: String::new(),
        ..Default::default()
    });
    let base = s.url("");
    let (md, ld, m) = seed(&base, "err/nodelete").await;
    for path in [
        format!("/v2/err/nodelete/manifests/{md}"),
        "/v2/err/nodelete/manifests/v1".to_owned(),
        format!("/v2/err/nodelete/blobs/{ld}"),
    ] {
        let r = client().delete(s.url(&path)).send().await.unwrap();
        expect_error(r, 405, "UNSUPPORTED").await;
    }
    // Still all there.
    let r = get(&s.url("/v2/err/nodelete/manifests/v1"), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());
    assert_eq!(
        head(&s.url(&format!("/v2/err/nodelete/blobs/{ld}")), None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn env_overlay_enables_deletes() {
    let s = Server::start_with(Options {
        extra_yaml: String::new(),
        env: vec![("REGISTRY_STORAGE_DELETE_ENABLED".into(), "true".into())],
        ..Default::default()
    });
    let base = s.url("");
    let (md, ld, _) = seed(&base, "err/envdelete").await;
    let r = send(client().delete(s.url(&format!("/v2/err/envdelete/blobs/{ld}")))).await;
    assert_eq!(r.status(), 202);
    let r = send(client().delete(s.url(&format!("/v2/err/envdelete/manifests/{md}")))).await;
    assert_eq!(r.status(), 202);
    let r = get(&s.url("/v2/err/envdelete/manifests/v1"), None).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn error_bodies_of_head_requests_are_empty() {
    let s = Server::start();
    let r = head(&s.url("/v2/Bad/manifests/x"), None).await;
    assert_eq!(r.status(), 400);
    assert!(r.bytes().await.unwrap().is_empty());
}

// ---- the CLI

fn config_check(yaml: &str, env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("config").arg("check").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn valid_config() -> String {
    let dir = tempfile::tempdir().unwrap();
    format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
        dir.path().join("data").display()
    )
}

#[test]
fn config_check_accepts_a_valid_file() {
    let out = config_check(&valid_config(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_check_names_an_unknown_key() {
    let yaml = valid_config().replace("  delete:\n", "  delet:\n");
    let out = config_check(&yaml, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.delet"), "{err}");

    let yaml = format!("{}bogus: 1\n", valid_config());
    let out = config_check(&yaml, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn config_check_applies_the_environment() {
    let out = config_check(
        &valid_config(),
        &[("REGISTRY_STORAGE_DELETE_ENABLED", "notabool")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REGISTRY_STORAGE_DELETE_ENABLED") || err.contains("storage.delete.enabled"),
        "{err}"
    );
}

/// Sends `method path` with a `size`-byte body through Python's `http.client`, which writes the
/// whole body before it reads the answer (as `requests` does); returns the status and body, or
/// the exception Python raised.
fn python_send(addr: &str, method: &str, path: &str, size: usize, auth: Option<&str>) -> String {
    const SCRIPT: &str = r#"
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
method, path, size, auth = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
if auth:
    headers["Authorization"] = auth
c = http.client.HTTPConnection(host, int(port), timeout=30)
try:
    c.request(method, path, body=b"{" + b" " * (size - 2) + b"}", headers=headers)
    r = c.getresponse()
    print(r.status, r.read().decode())
except Exception as e:
    print("EXCEPTION", type(e).__name__, e)
"#;
    common::tools::run_ok(std::process::Command::new("python3").args([
        "-c",
        SCRIPT,
        addr,
        method,
        path,
        &size.to_string(),
        auth.unwrap_or(""),
    ]))
}

/// The body `python_send` sends: `size` bytes of JSON-ish text.
fn body_of(size: usize) -> Vec<u8> {
    let mut b = vec![b' '; size];
    b[0] = b'{';
    b[size - 1] = b'}';
    b
}

/// The same with curl, its `Expect: 100-continue` turned off so that it writes first too.
fn curl_send(url: &str, method: &str, body: &std::path::Path) -> String {
    common::tools::run_ok(std::process::Command::new("curl").args([
        "-sS",
        "-X",
        method,
        "-H",
        "Expect:",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", body.display()),
        "-w",
        " %{http_code}",
        url,
    ]))
}

/// A refusal sent before the body was read (issue 18) reaches clients that write their whole
/// body first: the server reads and discards what follows (a lingering close) instead of
/// resetting the connection under them.
#[tokio::test]
async fn early_refusals_reach_clients_that_write_the_whole_body_first() {
    common::tools::require("python3", "python3");
    common::tools::require("curl", "curl");
    common::tools::require("htpasswd", "apache2-utils");
    let size = 6 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let body = tmp.path().join("body");
    std::fs::write(&body, body_of(size)).unwrap();

    let s = Server::start();
    let d = digest(b"x");
    for (method, path, status, code) in [
        (
            "PUT",
            "/v2/a/b/manifests/big".to_owned(),
            413,
            "SIZE_INVALID",
        ),
        (
            "POST",
            "/v2/a/b/blobs/uploads/?digest=sha256:nothex".to_owned(),
            400,
            "DIGEST_INVALID",
        ),
        ("PUT", format!("/v2/a/b/manifests/{d}x"), 400, ""),
    ] {
        let out = python_send(&s.addr, method, &path, size, None);
        assert!(out.starts_with(&status.to_string()), "python {path}: {out}");
        assert!(out.contains(code), "python {path}: {out}");
        let out = curl_send(&s.url(&path), method, &body);
        assert!(out.ends_with(&format!(" {status}")), "curl {path}: {out}");
        assert!(out.contains(code), "curl {path}: {out}");
    }

    // 401 on a push without credentials.
    let htpasswd = tmp.path().join("htpasswd");
    let line =
        common::tools::run_ok(std::process::Command::new("htpasswd").args(["-Bbn", "u", "p"]));
    std::fs::write(&htpasswd, format!("{line}\n")).unwrap();
    let s = Server::start_with(Options {
        extra_yaml: format!(
            "auth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            htpasswd.display()
        ),
        ..Options::default()
    });
    let path = "/v2/a/b/blobs/uploads/?digest=".to_owned() + &digest(&body_of(size));
    let out = python_send(&s.addr, "POST", &path, size, None);
    assert!(out.starts_with("401 "), "python push: {out}");
    assert!(out.contains("UNAUTHORIZED"), "python push: {out}");
    // And the same connection-level behaviour does not get in the way of a good request.
    let out = python_send(&s.addr, "POST", &path, size, Some("Basic dTpw"));
    assert!(
        out.starts_with("201"),
        "python push with credentials: {out}"
    );
}
