//! The web console (`/ui/`, issue 15): login and logout with htpasswd users and the session
//! cookie's attributes, CSRF refusal, who sees what (anonymous, viewer, admin; htpasswd users
//! and `auth.builtin` roles), the security headers, no outside URL in any page, English and
//! Simplified Chinese, the pages over content pushed through the API, and the whole
//! flow with builtin users in headless Chromium.

use crate::auth_htpasswd::htpasswd_file;
use crate::common::api;
use crate::common::tools::{require, run_ok};
use crate::common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tiny browser: keeps cookies, follows nothing by itself, reads CSRF tokens from forms.
pub struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: HashMap<String, String>,
    accept_language: Option<String>,
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    /// The value of the first `csrf` hidden field.
    pub fn csrf(&self) -> String {
        let i = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field")
            + 19;
        self.body[i..].split('"').next().unwrap().to_owned()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

impl Browser {
    pub fn new(server: &Server) -> Browser {
        Browser {
            base: server.url(""),
            client: client(),
            cookies: HashMap::new(),
            accept_language: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let mut req = req.header("cookie", self.cookie_header());
        if let Some(l) = &self.accept_language {
            req = req.header("accept-language", l);
        }
        let r = req.send().await.expect("console request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        let page = Page {
            status,
            headers,
            body,
        };
        for c in page.set_cookies() {
            let (kv, attrs) = c.split_once(';').unwrap_or((&c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let url = format!("{}{path}", self.base);
        self.send(self.client.get(url)).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let url = format!("{}{path}", self.base);
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Logs in through the form; panics unless it redirects.
    pub async fn login(&mut self, user: &str, password: &str) {
        let form = self.get("/ui/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        let r = self
            .post(
                "/ui/login",
                &[("csrf", &csrf), ("user", user), ("password", password)],
            )
            .await;
        assert_eq!(r.status, 303, "login as {user}: {}", r.body);
    }
}

/// The auth section: htpasswd users alice (admin) and bob (viewer: may not delete).
fn htpasswd_yaml(file: &Path, anonymous: bool) -> String {
    format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n  policy:\n    anonymouspull: {anonymous}\n    rules:\n      - repository: \"*\"\n        delete: [alice]\n",
        file.display()
    )
}

/// Pushes `repos` (tag `v1`) through a server without auth, then restarts the same data with
/// `extra` configuration.
async fn seeded(dir: &Path, repos: &[&str], extra: &str) -> Server {
    seeded_tags(dir, repos, &["v1"], extra).await.0
}

/// As `seeded`, with each of `tags` (a different image each) in every repository; also the
/// manifest digests pushed, in order.
async fn seeded_tags(
    dir: &Path,
    repos: &[&str],
    tags: &[&str],
    extra: &str,
) -> (Server, Vec<String>) {
    let data = dir.join("data");
    let mut digests = Vec::new();
    {
        let mut s = Server::start_with(Options {
            data_dir: Some(data.clone()),
            ..Options::default()
        });
        for (i, r) in repos.iter().enumerate() {
            for (j, t) in tags.iter().enumerate() {
                let seed = (i * 10 + j) as u64 + 1;
                digests.push(push_image(&s.url(""), r, t, 2, seed).await.0);
            }
        }
        s.stop();
    }
    let s = seeded_start(data, extra);
    (s, digests)
}

fn seeded_start(data: PathBuf, extra: &str) -> Server {
    Server::start_with(Options {
        extra_yaml: format!("storage:\n  delete:\n    enabled: true\n{extra}"),
        data_dir: Some(data),
        ..Options::default()
    })
}

/// Asserts the security headers every console page carries.
fn assert_secure_headers(p: &Page, what: &str) {
    let csp = p
        .headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(
        p.headers.get("x-content-type-options").unwrap(),
        "nosniff",
        "{what}"
    );
}

/// Asserts a page names no URL outside the server: no `http://` or `https://` at all (the
/// console's own links are relative), no protocol-relative `//host` in an attribute.
fn assert_no_outside_url(p: &Page, what: &str) {
    for needle in [
        "http://",
        "https://",
        "src=\"//",
        "href=\"//",
        "action=\"//",
    ] {
        assert!(
            !p.body.contains(needle),
            "{what} names an outside URL ({needle}): {}",
            p.body
        );
    }
}

#[tokio::test]
async fn login_logout_csrf_and_roles_with_htpasswd() {
    let tmp = tempfile::tempdir().unwrap();
    let file = htpasswd_file(tmp.path(), &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let s = seeded(tmp.path(), &["team/app"], &htpasswd_yaml(&file, false)).await;

    // Anonymous: every page sends to the login form, which keeps where to come back to.
    let mut anon = Browser::new(&s);
    let r = anon.get("/ui/repos").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), Some("/ui/login?next=%2Fui%2Frepos"));
    let form = anon.get("/ui/login?next=%2Fui%2Frepos").await;
    assert_eq!(form.status, 200);
    assert_secure_headers(&form, "login form");
    assert_no_outside_url(&form, "login form");
    let cookie = form
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("stevedore_session="))
        .expect("a visitor session for the form's CSRF token");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let csrf = form.csrf();

    // CSRF: no token, a wrong token, or no session at all: refused before the password check.
    let r = anon
        .post("/ui/login", &[("user", "alice"), ("password", "alice-pw")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("CSRF"), "{}", r.body);
    let r = anon
        .post(
            "/ui/login",
            &[
                ("csrf", "0000"),
                ("user", "alice"),
                ("password", "alice-pw"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    let mut stranger = Browser::new(&s);
    let r = stranger
        .post(
            "/ui/login",
            &[("csrf", &csrf), ("user", "alice"), ("password", "alice-pw")],
        )
        .await;
    assert_eq!(r.status, 403, "another browser's token");

    // A wrong password: 401 and the form again, with the message.
    let r = anon
        .post(
            "/ui/login",
            &[("csrf", &csrf), ("user", "alice"), ("password", "nope")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Wrong user name or password"), "{}", r.body);

    // The right one: a new session id, back where the visitor wanted to go.
    let before = anon.cookies["stevedore_session"].clone();
    let r = anon
        .post(
            "/ui/login",
            &[
                ("csrf", &csrf),
                ("user", "bob"),
                ("password", "bob-pw"),
                ("next", "/ui/repos"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/ui/repos"));
    assert_ne!(
        anon.cookies["stevedore_session"], before,
        "session id rotates"
    );
    let repos = anon.get("/ui/repos").await;
    assert_eq!(repos.status, 200);
    assert!(repos.body.contains("team/app"), "{}", repos.body);
    assert!(repos.body.contains("bob"), "{}", repos.body);
    assert!(repos.body.contains("viewer"), "{}", repos.body);
    assert!(
        !repos.body.contains("/ui/maintenance"),
        "a viewer has no maintenance page"
    );
    // A next that leaves the console is not followed.
    let mut evil = Browser::new(&s);
    let f = evil.get("/ui/login").await;
    let r = evil
        .post(
            "/ui/login",
            &[
                ("csrf", &f.csrf()),
                ("user", "bob"),
                ("password", "bob-pw"),
                ("next", "//evil.example/ui/"),
            ],
        )
        .await;
    assert_eq!(r.location(), Some("/ui/repos"));

    // alice is an administrator (no rule keeps her from deleting).
    let mut admin = Browser::new(&s);
    admin.login("alice", "alice-pw").await;
    let repos = admin.get("/ui/repos").await;
    assert!(repos.body.contains("administrator"), "{}", repos.body);
    assert!(repos.body.contains("/ui/maintenance"), "{}", repos.body);

    // Logout is a POST with the token; without it, refused.
    let r = anon.post("/ui/logout", &[]).await;
    assert_eq!(r.status, 403);
    let token = anon.get("/ui/repos").await.csrf();
    let r = anon.post("/ui/logout", &[("csrf", &token)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), Some("/ui/login"));
    assert_eq!(anon.get("/ui/repos").await.status, 303, "logged out");
    let r = anon.get("/ui/logout").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn anonymous_browsing_follows_anonymouspull() {
    let tmp = tempfile::tempdir().unwrap();
    let file = htpasswd_file(tmp.path(), &[("alice", "alice-pw")]);
    let s = seeded(tmp.path(), &["pub/app"], &htpasswd_yaml(&file, true)).await;
    let mut anon = Browser::new(&s);
    let r = anon.get("/ui/repos").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("pub/app"));
    assert!(r.body.contains("/ui/login"), "offers the login");
}

#[tokio::test]
async fn pages_are_self_contained_and_speak_two_languages() {
    let tmp = tempfile::tempdir().unwrap();
    let s = seeded(tmp.path(), &["lib/one", "lib/two", "other"], "").await;
    let mut b = Browser::new(&s);
    // No auth: read-only, everyone may browse.
    let r = b.get("/ui/").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), Some("/ui/repos"));
    for path in [
        "/ui/repos",
        "/ui/repos?q=lib/",
        "/ui/dashboard",
        "/ui/login",
    ] {
        let p = b.get(path).await;
        assert!(p.status == 200 || p.status == 303, "{path}: {}", p.status);
        assert_secure_headers(&p, path);
        assert_no_outside_url(&p, path);
    }
    let r = b.get("/ui/repos?q=lib/").await;
    assert!(r.body.contains("lib/one") && r.body.contains("lib/two"));
    assert!(!r.body.contains(">other<"), "prefix search");
    assert!(r.body.contains("read-only"), "the open console says so");
    let css = b.get("/ui/static/console.css").await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(!css.body.contains("url("), "no outside font or image");

    // Chinese by Accept-Language, English by the switch link's cookie.
    b.accept_language = Some("zh-CN,zh;q=0.9,en;q=0.5".into());
    let zh = b.get("/ui/repos").await;
    assert!(zh.body.contains("lang=\"zh-CN\""), "{}", zh.body);
    assert!(zh.body.contains("仓库"));
    let r = b.get("/ui/lang?l=en&back=%2Fui%2Frepos").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), Some("/ui/repos"));
    let en = b.get("/ui/repos").await;
    assert!(en.body.contains("lang=\"en\"") && en.body.contains("Repositories"));
    // An outside `back` is not followed.
    let r = b
        .get("/ui/lang?l=zh&back=https%3A%2F%2Fevil.example%2F")
        .await;
    assert_eq!(r.location(), Some("/ui/repos"));
    // The API is unaffected.
    assert_eq!(
        client().get(s.url("/v2/")).send().await.unwrap().status(),
        200
    );
}

/// Opens `path` and checks what every console page must be.
async fn page_ok(b: &mut Browser, path: &str) -> Page {
    let p = b.get(path).await;
    assert_eq!(p.status, 200, "{path}: {}", p.body);
    assert_secure_headers(&p, path);
    assert_no_outside_url(&p, path);
    p
}

#[tokio::test]
async fn tags_manifests_deletes_and_gc_by_role() {
    let tmp = tempfile::tempdir().unwrap();
    let file = htpasswd_file(tmp.path(), &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let (s, digests) = seeded_tags(
        tmp.path(),
        &["team/app"],
        &["v1", "v2"],
        &htpasswd_yaml(&file, false),
    )
    .await;
    let (v1, v2) = (&digests[0], &digests[1]);
    // A pull through the API is counted (in memory until the next flush; the page adds it).
    let r = client()
        .get(s.url("/v2/team/app/manifests/v1"))
        .basic_auth("alice", Some("alice-pw"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut admin = Browser::new(&s);
    admin.login("alice", "alice-pw").await;
    let repo = page_ok(&mut admin, "/ui/repo?name=team%2Fapp").await;
    for want in ["v1", "v2", "linux/amd64", "pushed", "delete-tag", &v1[..19]] {
        assert!(
            repo.body.contains(want),
            "repo page lacks {want}: {}",
            repo.body
        );
    }
    let row = repo.body.split("<strong>v1</strong>").nth(1).unwrap();
    let row = row.split("</tr>").next().unwrap();
    assert!(
        row.contains("<td class=\"num\">1</td>"),
        "v1 pulled once: {row}"
    );
    let manifest = page_ok(
        &mut admin,
        &format!("/ui/manifest?name=team%2Fapp&digest={v1}"),
    )
    .await;
    for want in [
        "Layers",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.config.v1+json",
        "Referrers",
        "delete-manifest",
    ] {
        assert!(manifest.body.contains(want), "manifest page lacks {want}");
    }
    let missing = admin
        .get(&format!(
            "/ui/manifest?name=team%2Fapp&digest=sha256:{}",
            "0".repeat(64)
        ))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        admin.get("/ui/repo?name=no%2Fsuch").await.status,
        404,
        "an unknown repository"
    );
    page_ok(&mut admin, "/ui/maintenance").await;
    page_ok(&mut admin, "/ui/dashboard").await;
    page_ok(&mut admin, "/ui/repos").await;

    // bob may look but not delete: no button, and the POST is refused.
    let mut viewer = Browser::new(&s);
    viewer.login("bob", "bob-pw").await;
    let repo_b = page_ok(&mut viewer, "/ui/repo?name=team%2Fapp").await;
    assert!(
        !repo_b.body.contains("delete-tag"),
        "no delete for a viewer"
    );
    let token = repo_b.csrf();
    let r = viewer
        .post(
            "/ui/actions/delete-tag",
            &[("csrf", &token), ("name", "team/app"), ("tag", "v2")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(viewer.get("/ui/maintenance").await.status, 403);
    let r = viewer.post("/ui/actions/gc", &[("csrf", &token)]).await;
    assert_eq!(r.status, 403);

    // alice deletes v2: gone from the page and from the API.
    let token = repo.csrf();
    let r = admin
        .post(
            "/ui/actions/delete-tag",
            &[("name", "team/app"), ("tag", "v2")],
        )
        .await;
    assert_eq!(r.status, 403, "no CSRF token");
    let r = admin
        .post(
            "/ui/actions/delete-tag",
            &[("csrf", &token), ("name", "team/app"), ("tag", "v2")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let after = page_ok(&mut admin, r.location().unwrap()).await;
    assert!(after.body.contains("Deleted."));
    assert!(!after.body.contains("<strong>v2</strong>"));
    let r = client()
        .get(s.url("/v2/team/app/manifests/v2"))
        .basic_auth("alice", Some("alice-pw"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // GC: the dry run reports, frees nothing, and offers the real run.
    let r = admin
        .post("/ui/actions/gc", &[("csrf", &token), ("untagged", "1")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Would free"), "{}", r.body);
    assert!(r.body.contains("name=\"run\""));
    let still = client()
        .get(s.url(&format!("/v2/team/app/manifests/{v2}")))
        .basic_auth("alice", Some("alice-pw"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200, "a dry run deletes nothing");
    let r = admin
        .post(
            "/ui/actions/gc",
            &[("csrf", &token), ("untagged", "1"), ("run", "1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Freed"), "{}", r.body);

    // Deleting a manifest by digest.
    let r = admin
        .post(
            "/ui/actions/delete-manifest",
            &[("csrf", &token), ("name", "team/app"), ("digest", v1)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let gone = admin
        .get(&format!("/ui/manifest?name=team%2Fapp&digest={v1}"))
        .await;
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn mirror_dashboard_warm_and_evict_never_ask_upstream_on_a_page() {
    use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
    use bytes::Bytes;
    let up = FakeUpstream::start(FakeOptions {
        ratelimit_remaining: Some(100),
        ..FakeOptions::default()
    })
    .await;
    let repo = "library/app";
    let config = Bytes::from_static(b"{\"architecture\":\"arm64\",\"os\":\"linux\"}");
    let cd = up.add_blob(repo, config.clone());
    let layer = Bytes::from(random_bytes(50_000, 9));
    let ld = up.add_blob(repo, layer.clone());
    let body = Bytes::from(image_manifest(
        DOCKER_MANIFEST,
        (&cd, config.len()),
        &[(&ld, layer.len())],
    ));
    up.add_manifest(repo, Some("1.0"), DOCKER_MANIFEST, body.clone());
    up.add_manifest(repo, Some("2.0"), DOCKER_MANIFEST, body);

    let tmp = tempfile::tempdir().unwrap();
    let file = htpasswd_file(tmp.path(), &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let s = Server::mirror(
        &up.url(),
        &format!("  maxsize: 10MiB\n{}", htpasswd_yaml(&file, false)),
    );
    // Pull twice: a miss, then hits.
    for _ in 0..2 {
        let r = client()
            .get(s.url(&format!("/v2/{repo}/manifests/1.0")))
            .basic_auth("alice", Some("alice-pw"))
            .header("accept", DOCKER_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for (d, data) in [(&ld, &layer), (&cd, &config)] {
            let r = client()
                .get(s.url(&format!("/v2/{repo}/blobs/{d}")))
                .basic_auth("alice", Some("alice-pw"))
                .send()
                .await
                .unwrap();
            assert_eq!(&r.bytes().await.unwrap(), data);
            assert!(s.fetched_and_cached(d).await);
        }
    }

    let mut admin = Browser::new(&s);
    admin.login("alice", "alice-pw").await;
    let asked = up.request_log().len();
    let dash = page_ok(&mut admin, "/ui/dashboard?range=hour").await;
    for want in [
        "<svg",
        "Cache hit ratio",
        "10.0 MiB",
        "Most pulled",
        repo,
        "99",
    ] {
        assert!(
            dash.body.contains(want),
            "dashboard lacks {want}: {}",
            dash.body
        );
    }
    assert!(
        !dash
            .body
            .contains("Cache hit ratio</div><div class=\"stat\">—")
    );
    for range in ["day", "week"] {
        page_ok(&mut admin, &format!("/ui/dashboard?range={range}")).await;
    }
    let page = page_ok(&mut admin, "/ui/repo?name=library%2Fapp").await;
    assert!(page.body.contains("cached") && page.body.contains("linux/arm64"));
    assert!(page.body.contains("/ui/actions/evict"), "admin may evict");
    page_ok(&mut admin, "/ui/repos").await;
    page_ok(&mut admin, "/ui/maintenance").await;
    assert_eq!(
        up.request_log().len(),
        asked,
        "opening pages made upstream requests"
    );

    // Warm 2.0 from upstream, then evict it.
    let token = page.csrf();
    let r = admin
        .post(
            "/ui/actions/warm",
            &[("csrf", &token), ("image", "library/app:2.0")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Warmed."), "{}", r.body);
    let page = page_ok(&mut admin, "/ui/repo?name=library%2Fapp").await;
    assert!(page.body.contains("<strong>2.0</strong>"));
    let r = admin
        .post(
            "/ui/actions/evict",
            &[("csrf", &token), ("image", "library/app:2.0")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = page_ok(&mut admin, r.location().unwrap()).await;
    assert!(page.body.contains("Evicted."));
    assert!(!page.body.contains("<strong>2.0</strong>"));
    assert!(page.body.contains("<strong>1.0</strong>"));

    // A viewer may neither warm nor evict.
    let mut viewer = Browser::new(&s);
    viewer.login("bob", "bob-pw").await;
    let t = viewer.get("/ui/dashboard").await.csrf();
    for action in ["warm", "evict"] {
        let r = viewer
            .post(
                &format!("/ui/actions/{action}"),
                &[("csrf", &t), ("image", "library/app:1.0")],
            )
            .await;
        assert_eq!(r.status, 403, "{action}");
    }
    up.stop().await;
}

#[tokio::test]
async fn the_console_can_live_on_the_debug_listener_or_be_off() {
    let s = Server::start_with(Options {
        extra_yaml: "ui:\n  listener: debug\n".into(),
        ..Options::default()
    });
    let main = client().get(s.url("/ui/repos")).send().await.unwrap();
    assert_eq!(main.status(), 404, "not on the main listener");
    let debug = client().get(s.debug_url("/ui/repos")).send().await.unwrap();
    assert_eq!(debug.status(), 200);
    assert!(debug.headers().contains_key("content-security-policy"));
    drop(s);
    let s = Server::start_with(Options {
        extra_yaml: "ui:\n  enabled: false\n".into(),
        ..Options::default()
    });
    let r = client().get(s.url("/ui/repos")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// Where the browser test leaves its screenshots.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `skopeo ARGS` with an empty registries.conf and its own auth file.
fn skopeo(tmp: &Path, args: &[&str]) {
    let conf = tmp.join("registries.conf");
    if !conf.exists() {
        std::fs::write(&conf, "").unwrap();
    }
    run_ok(
        Command::new("skopeo")
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env("REGISTRY_AUTH_FILE", tmp.join("auth.json"))
            .args(["--insecure-policy", "--command-timeout", "120s"])
            .args(args),
    );
}

/// The whole flow in headless Chromium with JavaScript off, with `auth.builtin` and the first
/// admin's password from `REGISTRY_AUTH_BUILTIN_FIRSTADMIN_PASSWORD`: log in as that admin,
/// create a `write-all` user on the users page, push with `skopeo login` + `skopeo copy` as
/// that user, see the image, its tags and manifest, the dashboard and maintenance pages,
/// delete a tag and see it gone, switch to Chinese, log out. A screenshot of each page is
/// saved (the directory is printed).
#[tokio::test]
async fn browser_flow_in_headless_chromium_without_javascript() {
    use crate::common::oci_layout::Layout;
    use crate::common::webdriver::Driver;
    require("skopeo", "skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let s = Server::start_with(Options {
        extra_yaml:
            "storage:\n  delete:\n    enabled: true\nauth:\n  builtin:\n    expiration: 1h\n".into(),
        env: vec![(
            "REGISTRY_AUTH_BUILTIN_FIRSTADMIN_PASSWORD".into(),
            FIRST_ADMIN_PW.into(),
        )],
        ..Options::default()
    });
    let host = s.host().to_owned();

    let shots = screenshot_dir();
    println!("console screenshots: {}", shots.display());
    let d = Driver::start(false).await;
    let base = s.url("");
    d.goto(&format!("{base}/ui/")).await;
    assert!(
        d.url().await.contains("/ui/login"),
        "sent to the login form"
    );
    d.screenshot(&shots.join("01-login.png")).await;
    d.type_into("#user", "admin").await;
    d.type_into("#password", FIRST_ADMIN_PW).await;
    d.click("button[type=submit]").await;
    d.url_with("/ui/repos").await;
    let src = d.source_with("Logged in as").await;
    assert!(src.contains("administrator"), "{src}");

    // The admin creates `dev` with the write-all role on the users page.
    d.click("a[href='/ui/users']").await;
    d.source_with("name=\"op\" value=\"user-add\"").await;
    d.type_into("form.card input[name='name']", "dev").await;
    d.type_into("form.card input[name='password']", "dev-password-1")
        .await;
    d.click("form.card input[name='role'][value='write-all']")
        .await;
    d.screenshot(&shots.join("02-add-user.png")).await;
    d.click("form.card button[type=submit]").await;
    let src = d.source_with("<td>dev</td>").await;
    assert!(
        src.contains("<span class=\"badge\">write-all</span>"),
        "{src}"
    );
    d.screenshot(&shots.join("03-users.png")).await;

    // dev logs in with skopeo and pushes two tags.
    let dir = t.join("layout");
    let mut l = Layout::create(&dir);
    let layers: Vec<_> = (0..2).map(|i| l.add_layer(40 + i, 2, 30_000)).collect();
    let img = l.add_image("amd64", &layers);
    l.tag(&img.manifest, "v1");
    skopeo(
        t,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "dev",
            "-p",
            "dev-password-1",
            &host,
        ],
    );
    for tag in ["1.0", "latest"] {
        skopeo(
            t,
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}:v1", dir.display()),
                &format!("docker://{host}/team/web:{tag}"),
            ],
        );
    }

    d.click("a[href='/ui/repos']").await;
    let src = d.source_with("team/web").await;
    assert!(src.contains("team/web"), "{src}");
    d.screenshot(&shots.join("04-repositories.png")).await;

    d.click("a[href='/ui/repo?name=team%2Fweb']").await;
    let src = d.source_with("<strong>latest</strong>").await;
    assert!(src.contains("<strong>1.0</strong>") && src.contains("<strong>latest</strong>"));
    assert!(src.contains("linux/amd64"), "{src}");
    d.screenshot(&shots.join("05-tags.png")).await;
    d.click("td.mono a").await;
    let src = d.source_with("Layers").await;
    assert!(src.contains("Layers") && src.contains("tar+gzip"), "{src}");
    d.screenshot(&shots.join("06-manifest.png")).await;

    d.goto(&format!("{base}/ui/dashboard")).await;
    d.screenshot(&shots.join("07-dashboard.png")).await;
    d.goto(&format!("{base}/ui/maintenance")).await;
    d.click("form[action='/ui/actions/gc'] button").await;
    d.source_with("Would free").await;
    d.screenshot(&shots.join("08-gc-dry-run.png")).await;

    // Delete the tag `latest` (the first delete button is 1.0's; pick latest's form).
    d.goto(&format!("{base}/ui/repo?name=team%2Fweb")).await;
    d.click("form[action='/ui/actions/delete-tag']:has(input[value='latest']) button")
        .await;
    let src = d.source_with("Deleted.").await;
    assert!(src.contains("Deleted."), "{src}");
    assert!(!src.contains("<strong>latest</strong>"));
    assert!(src.contains("<strong>1.0</strong>"));
    d.screenshot(&shots.join("09-tag-deleted.png")).await;
    let r = client()
        .get(s.url("/v2/team/web/manifests/latest"))
        .basic_auth("dev", Some("dev-password-1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "gone from the API too");

    // Simplified Chinese, then log out.
    d.click("a[href^='/ui/lang']").await;
    let src = d.source_with("lang=\"zh-CN\"").await;
    assert!(
        src.contains("lang=\"zh-CN\"") && src.contains("删除标签"),
        "{src}"
    );
    d.screenshot(&shots.join("10-chinese.png")).await;
    d.click("form[action='/ui/logout'] button").await;
    d.url_with("/ui/login").await;
    d.goto(&format!("{base}/ui/repos")).await;
    d.url_with("/ui/login").await;

    // The mirror dashboard of a mirror that served an image twice (no auth: read-only).
    let up = crate::common::fake_upstream::FakeUpstream::start(
        crate::common::fake_upstream::FakeOptions {
            ratelimit_remaining: Some(100),
            ..Default::default()
        },
    )
    .await;
    let layer = bytes::Bytes::from(random_bytes(300_000, 5));
    let ld = up.add_blob("library/nginx", layer.clone());
    let config = bytes::Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
    let cd = up.add_blob("library/nginx", config.clone());
    let body = image_manifest(DOCKER_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    up.add_manifest("library/nginx", Some("1.27"), DOCKER_MANIFEST, body.into());
    let m = Server::mirror(&up.url(), "  maxsize: 1GiB\n");
    for _ in 0..3 {
        let r = api::get(
            &m.url("/v2/library/nginx/manifests/1.27"),
            Some(DOCKER_MANIFEST),
        )
        .await;
        assert_eq!(r.status(), 200);
        for dg in [&ld, &cd] {
            let r = client()
                .get(m.url(&format!("/v2/library/nginx/blobs/{dg}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
            assert!(m.fetched_and_cached(dg).await);
        }
    }
    d.goto(&m.url("/ui/dashboard?range=hour")).await;
    let src = d.source_with("library/nginx").await;
    assert!(
        src.contains("<svg") && src.contains("library/nginx"),
        "{src}"
    );
    d.screenshot(&shots.join("11-mirror-dashboard.png")).await;
    d.quit().await;
    up.stop().await;
}

/// The first administrator's password in the builtin tests.
const FIRST_ADMIN_PW: &str = "first-admin-pw-1";

/// `auth.builtin` with the first admin `admin` (password [`FIRST_ADMIN_PW`] from the YAML).
fn builtin_yaml() -> String {
    format!(
        "auth:\n  builtin:\n    expiration: 1h\n    firstadmin:\n      password: {FIRST_ADMIN_PW}\n"
    )
}

/// Adds `name` with `role` through the users page as the logged-in administrator `admin`.
async fn add_user_in_console(admin: &mut Browser, name: &str, password: &str, role: &str) {
    let csrf = admin.get("/ui/users").await.csrf();
    let r = admin
        .post(
            "/ui/accounts",
            &[
                ("csrf", &csrf),
                ("op", "user-add"),
                ("name", name),
                ("password", password),
                ("role", role),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "add {name}: {}", r.body);
}

/// GET of a manifest through the API as `who`: its status.
async fn manifest_status(s: &Server, repo: &str, reference: &str, who: (&str, &str)) -> u16 {
    client()
        .get(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .basic_auth(who.0, Some(who.1))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn builtin_roles_read_all_browses_admin_manages_csrf_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, digests) = seeded_tags(tmp.path(), &["team/app"], &["v1", "v2"], &builtin_yaml()).await;
    let v1 = &digests[0];
    let reader = ("reader", "reader-pw-1");

    // The first admin reaches the users and roles pages and adds a read-all user there.
    let mut admin = Browser::new(&s);
    admin.login("admin", FIRST_ADMIN_PW).await;
    let repos = page_ok(&mut admin, "/ui/repos").await;
    assert!(repos.body.contains("administrator"), "{}", repos.body);
    for link in ["/ui/users", "/ui/roles", "/ui/maintenance"] {
        assert!(repos.body.contains(&format!("href=\"{link}\"")), "{link}");
    }
    let users = page_ok(&mut admin, "/ui/users").await;
    assert!(users.body.contains("write-all") && users.body.contains("read-all"));
    let roles = page_ok(&mut admin, "/ui/roles").await;
    assert!(roles.body.contains("anonymous"), "{}", roles.body);
    add_user_in_console(&mut admin, reader.0, reader.1, "read-all").await;
    assert!(admin.get("/ui/users").await.body.contains(">reader<"));

    // CSRF on the accounts form: no token, a wrong one, another browser's: refused, nothing added.
    let token = admin.get("/ui/users").await.csrf();
    let mut other = Browser::new(&s);
    other.login(reader.0, reader.1).await;
    let others_token = other.get("/ui/repos").await.csrf();
    for csrf in [None, Some("0000"), Some(others_token.as_str())] {
        let mut f = vec![
            ("op", "user-add"),
            ("name", "mallory"),
            ("password", "mallory-pw-1"),
            ("role", "admin"),
        ];
        if let Some(c) = csrf {
            f.push(("csrf", c));
        }
        let r = admin.post("/ui/accounts", &f).await;
        assert_eq!(r.status, 403, "csrf {csrf:?}: {}", r.body);
    }
    assert!(!admin.get("/ui/users").await.body.contains("mallory"));
    // CSRF on a delete too, even for the admin.
    let r = admin
        .post(
            "/ui/actions/delete-tag",
            &[("name", "team/app"), ("tag", "v2")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(manifest_status(&s, "team/app", "v2", reader).await, 200);

    // read-all sees every browse page, without a delete button or the admin links.
    let mut viewer = Browser::new(&s);
    viewer.login(reader.0, reader.1).await;
    let repos = page_ok(&mut viewer, "/ui/repos").await;
    assert!(repos.body.contains("team/app") && repos.body.contains("viewer"));
    for link in ["/ui/users", "/ui/roles", "/ui/maintenance"] {
        assert!(!repos.body.contains(&format!("href=\"{link}\"")), "{link}");
    }
    let repo = page_ok(&mut viewer, "/ui/repo?name=team%2Fapp").await;
    assert!(repo.body.contains("<strong>v2</strong>"), "{}", repo.body);
    assert!(!repo.body.contains("delete-tag"), "no delete for read-all");
    page_ok(
        &mut viewer,
        &format!("/ui/manifest?name=team%2Fapp&digest={v1}"),
    )
    .await;
    page_ok(&mut viewer, "/ui/dashboard").await;

    // ... and 403 on the admin pages and on every delete or GC action, with a valid token.
    for path in ["/ui/users", "/ui/roles", "/ui/maintenance"] {
        assert_eq!(viewer.get(path).await.status, 403, "{path}");
    }
    let token_r = repo.csrf();
    for (action, form) in [
        ("delete-tag", vec![("name", "team/app"), ("tag", "v2")]),
        (
            "delete-manifest",
            vec![("name", "team/app"), ("digest", v1)],
        ),
        ("gc", vec![("untagged", "1"), ("run", "1")]),
    ] {
        let mut f = vec![("csrf", token_r.as_str())];
        f.extend(form);
        let r = viewer.post(&format!("/ui/actions/{action}"), &f).await;
        assert_eq!(r.status, 403, "{action}: {}", r.body);
    }
    let r = viewer
        .post(
            "/ui/accounts",
            &[
                ("csrf", &token_r),
                ("op", "user-grant"),
                ("name", "reader"),
                ("role", "admin"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "read-all grants itself admin: {}", r.body);
    assert_eq!(manifest_status(&s, "team/app", "v2", reader).await, 200);
    assert_eq!(manifest_status(&s, "team/app", v1, reader).await, 200);
    assert_eq!(
        viewer.get("/ui/users").await.status,
        403,
        "still not an admin"
    );

    // The admin's delete, with the token, goes through.
    let r = admin
        .post(
            "/ui/actions/delete-tag",
            &[("csrf", &token), ("name", "team/app"), ("tag", "v2")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(manifest_status(&s, "team/app", "v2", reader).await, 404);
}
