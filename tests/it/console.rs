//! The web console (`/ui/`, issue 15): login and logout with htpasswd users and the session
//! cookie's attributes, CSRF refusal, who sees what (anonymous, viewer, admin), the security
//! headers, no outside URL in any page, English and Simplified Chinese, and the pages over
//! content pushed through the API.

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

/// An htpasswd file made by `htpasswd -Bbn`.
fn htpasswd_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
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
    let data = dir.join("data");
    {
        let mut s = Server::start_with(Options {
            data_dir: Some(data.clone()),
            ..Options::default()
        });
        for (i, r) in repos.iter().enumerate() {
            push_image(&s.url(""), r, "v1", 2, i as u64 + 1).await;
        }
        s.stop();
    }
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
