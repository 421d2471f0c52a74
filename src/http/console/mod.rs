//! The web console (`/ui/`, issue 15): server-rendered HTML pages over the registry's index,
//! cache and metrics, on the main listener (or the debug listener, `ui.listener`). It owns the
//! console's routes, its sessions and CSRF checks (`session`), its words (`i18n`), its layout
//! (`layout`), its response headers (`respond`) and the pages (`pages/`). It must not make an
//! upstream request while rendering a page (only the warm action asks an upstream, on a POST),
//! load anything from another origin, or decide permissions itself: the configured
//! `auth::Authenticator` does (`check_password`, `may`, `is_admin`).
//!
//! **Adding a page**: add a variant to [`Route`] and its line in [`Route::parse`], a module
//! under `pages/` with `pub async fn get(ctx: &Ctx<'_>) -> Response<Body>` (render with
//! [`Ctx::page`], which wraps the layout; refuse with [`Ctx::refuse`]), a line in
//! [`dispatch`], its words in `i18n::MESSAGES` (both languages), and, for a nav entry,
//! a line in `layout::NAV`. A form that changes anything is a POST whose handler takes the
//! checked [`Form`] (dispatch has verified its CSRF token already) and includes
//! [`Ctx::csrf_field`] in the `<form>`; admin-only pages check [`Ctx::is_admin`].

mod fmt;
mod i18n;
mod layout;
mod pages;
mod respond;
pub mod session;

pub use i18n::Lang;

use super::body::{self, Body};
use crate::App;
use crate::auth::{Action, Identity};
use crate::oci::RepoName;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use session::{Session, Sessions};

/// Form bodies larger than this are refused.
const MAX_FORM: usize = 64 * 1024;

/// The console's state: its sessions.
pub struct Console {
    pub sessions: Sessions,
}

impl Console {
    pub fn new(config: &crate::config::UiConfig) -> Console {
        Console {
            sessions: Sessions::new(config.sessionttl),
        }
    }
}

/// Whether `path` is the console's.
pub fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The console's pages and actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/ui`, `/ui/`: to the repositories.
    Root,
    Stylesheet,
    LoginForm,
    Login,
    Logout,
    /// `GET /ui/lang?l=zh-CN&back=/ui/…`: switches the language cookie.
    Lang,
    Repos,
    /// `?name=…`
    Repo,
    /// `?name=…&digest=…`
    Manifest,
    Dashboard,
    Maintenance,
    /// `POST /ui/actions/<name>`
    Action(String),
    /// Users and roles (admin, `auth.builtin`): the pages, and `POST /ui/accounts`.
    Users,
    Roles,
    Accounts,
}

impl Route {
    /// The route of a method and path; `Err` is the status to answer (404, 405).
    pub fn parse(method: &Method, path: &str) -> Result<Route, StatusCode> {
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        let need = |ok: bool, r: Route| {
            if ok {
                Ok(r)
            } else {
                Err(StatusCode::METHOD_NOT_ALLOWED)
            }
        };
        match path {
            "/ui" | "/ui/" => need(get, Route::Root),
            "/ui/static/console.css" => need(get, Route::Stylesheet),
            "/ui/login" if post => Ok(Route::Login),
            "/ui/login" => need(get, Route::LoginForm),
            "/ui/logout" => need(post, Route::Logout),
            "/ui/lang" => need(get, Route::Lang),
            "/ui/repos" => need(get, Route::Repos),
            "/ui/repo" => need(get, Route::Repo),
            "/ui/manifest" => need(get, Route::Manifest),
            "/ui/dashboard" => need(get, Route::Dashboard),
            "/ui/maintenance" => need(get, Route::Maintenance),
            "/ui/users" => need(get, Route::Users),
            "/ui/roles" => need(get, Route::Roles),
            "/ui/accounts" => need(post, Route::Accounts),
            _ => match path.strip_prefix("/ui/actions/") {
                Some(a) if !a.is_empty() && !a.contains('/') => {
                    need(post, Route::Action(a.to_owned()))
                }
                _ => Err(StatusCode::NOT_FOUND),
            },
        }
    }

    /// Pages anyone may open (the others need a login, unless anonymous browsing is allowed).
    fn public(&self) -> bool {
        matches!(
            self,
            Route::Stylesheet | Route::LoginForm | Route::Login | Route::Lang | Route::Logout
        )
    }
}

/// Who is looking at the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// No `auth` is configured: anyone may browse, nobody may change anything here.
    Open,
    Anonymous,
    User {
        name: String,
        admin: bool,
    },
}

/// A submitted form whose CSRF token was checked.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key` (checkboxes of one name).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a checkbox `key` was ticked.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "on" | "true"))
    }
}

/// One request as the pages see it.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub console: &'a Console,
    pub lang: Lang,
    pub who: Who,
    /// The session (id, contents), when the request carried a live one.
    pub session: Option<(String, Session)>,
    /// Whether the listener speaks TLS (cookies are then `Secure`).
    pub secure: bool,
    /// The path and query of this request (where the language link comes back to).
    pub here: String,
    pub query: Vec<(String, String)>,
}

impl Ctx<'_> {
    pub fn t(&self, key: &'static str) -> &'static str {
        self.lang.t(key)
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn identity(&self) -> Identity {
        match &self.who {
            Who::User { name, .. } => Identity::User(name.clone()),
            _ => Identity::Anonymous,
        }
    }

    /// Whether the viewer may do `action` on `repo`. Without `auth` the console only reads.
    pub fn may(&self, repo: &RepoName, action: Action) -> bool {
        match (&self.who, &self.app.auth) {
            (Who::Open, _) | (_, None) => action == Action::Pull,
            (_, Some(auth)) => auth.may(&self.identity(), repo, action),
        }
    }

    /// Whether the viewer may run registry-wide actions (GC, evict, warm, users and roles).
    pub fn is_admin(&self) -> bool {
        matches!(self.who, Who::User { admin: true, .. })
    }

    /// The hidden CSRF field every POST form carries.
    pub fn csrf_field(&self) -> maud::Markup {
        let token = self
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.as_str())
            .unwrap_or("");
        maud::html! { input type="hidden" name="csrf" value=(token); }
    }

    /// A page in the layout, 200.
    pub fn page(&self, nav: &str, title: &str, content: maud::Markup) -> Response<Body> {
        self.page_with(StatusCode::OK, nav, title, content, &[])
    }

    pub fn page_with(
        &self,
        status: StatusCode,
        nav: &str,
        title: &str,
        content: maud::Markup,
        cookies: &[String],
    ) -> Response<Body> {
        respond::html(status, layout::page(self, nav, title, content), cookies)
    }

    /// An error page with `status` and a message.
    pub fn refuse(&self, status: StatusCode, message: &str) -> Response<Body> {
        let content = maud::html! { div.error { (message) } };
        self.page_with(status, "", self.t("error"), content, &[])
    }
}

/// Answers a console request. `secure`: the listener speaks TLS.
pub async fn answer(
    app: &App,
    console: &Console,
    req: Request<Incoming>,
    secure: bool,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = super::handlers::parse_query(parts.uri.query());
    let session = session::cookie(&parts.headers, session::SESSION_COOKIE)
        .and_then(|id| console.sessions.get(id).map(|s| (id.to_owned(), s)));
    let lang = session::cookie(&parts.headers, session::LANG_COOKIE)
        .and_then(Lang::from_code)
        .unwrap_or_else(|| {
            Lang::from_accept_language(
                parts
                    .headers
                    .get(http::header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
        });
    let who = match (
        &app.auth,
        session.as_ref().and_then(|(_, s)| s.user.clone()),
    ) {
        (None, _) => Who::Open,
        (Some(auth), Some(name)) => {
            let admin = auth.is_admin(&Identity::User(name.clone()));
            Who::User { name, admin }
        }
        (Some(_), None) => Who::Anonymous,
    };
    let here = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let ctx = Ctx {
        app,
        console,
        lang,
        who,
        session,
        secure,
        here,
        query,
    };
    let route = match Route::parse(&parts.method, &path) {
        Ok(r) => r,
        Err(status) => {
            let msg = if status == StatusCode::NOT_FOUND {
                ctx.t("not_found")
            } else {
                "method not allowed"
            };
            return ctx.refuse(status, msg);
        }
    };
    if !route.public() && !may_browse(&ctx) {
        let next = form_urlencoded::byte_serialize(ctx.here.as_bytes()).collect::<String>();
        return respond::redirect(&format!("/ui/login?next={next}"), &[]);
    }
    let form = if parts.method == Method::POST {
        match read_form(&ctx, body).await {
            Ok(f) => f,
            Err(resp) => return resp,
        }
    } else {
        Form::default()
    };
    dispatch(&ctx, route, form).await
}

/// Whether the viewer may see the browse pages.
fn may_browse(ctx: &Ctx<'_>) -> bool {
    match (&ctx.who, &ctx.app.auth) {
        (Who::Open | Who::User { .. }, _) => true,
        (Who::Anonymous, Some(auth)) => auth.anonymous_browse(),
        (Who::Anonymous, None) => true,
    }
}

/// Reads a POST's form and checks its CSRF token against the session's: a form from another
/// site, a stale page or a missing session is refused (403) before any handler runs.
async fn read_form(ctx: &Ctx<'_>, body: Incoming) -> Result<Form, Response<Body>> {
    let bytes = body::collect_limited(body, MAX_FORM, std::time::Duration::from_secs(30))
        .await
        .map_err(|e| ctx.refuse(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let form = Form(
        form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    );
    let expected = ctx.session.as_ref().map(|(_, s)| s.csrf.as_str());
    match (expected, form.get("csrf")) {
        (Some(want), Some(got)) if session::same_token(want, got) => Ok(form),
        _ => Err(ctx.refuse(StatusCode::FORBIDDEN, ctx.t("csrf.refused"))),
    }
}

async fn dispatch(ctx: &Ctx<'_>, route: Route, form: Form) -> Response<Body> {
    match route {
        Route::Root => respond::redirect("/ui/repos", &[]),
        Route::Stylesheet => respond::stylesheet(),
        Route::LoginForm => pages::login::form(ctx, None),
        Route::Login => pages::login::login(ctx, &form).await,
        Route::Logout => pages::login::logout(ctx),
        Route::Lang => pages::login::lang(ctx),
        Route::Repos => pages::repos::get(ctx),
        Route::Repo => pages::repo::get(ctx).await,
        Route::Manifest => pages::manifest::get(ctx).await,
        Route::Dashboard => pages::dashboard::get(ctx),
        Route::Maintenance => pages::maintenance::get(ctx),
        Route::Action(name) => pages::actions::post(ctx, &name, &form).await,
        Route::Users => pages::accounts::users(ctx),
        Route::Roles => pages::accounts::roles(ctx),
        Route::Accounts => pages::accounts::post(ctx, &form),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let g = Method::GET;
        let p = Method::POST;
        assert_eq!(Route::parse(&g, "/ui/"), Ok(Route::Root));
        assert_eq!(Route::parse(&g, "/ui/repos"), Ok(Route::Repos));
        assert_eq!(Route::parse(&p, "/ui/login"), Ok(Route::Login));
        assert_eq!(Route::parse(&g, "/ui/login"), Ok(Route::LoginForm));
        assert_eq!(
            Route::parse(&g, "/ui/logout"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            Route::parse(&p, "/ui/actions/gc"),
            Ok(Route::Action("gc".into()))
        );
        assert_eq!(
            Route::parse(&g, "/ui/actions/gc"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            Route::parse(&p, "/ui/actions/a/b"),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(Route::parse(&g, "/ui/nope"), Err(StatusCode::NOT_FOUND));
        assert!(owns("/ui") && owns("/ui/x") && !owns("/uix") && !owns("/v2/"));
    }

    /// Every message key a page uses is in the catalogue.
    #[test]
    fn every_used_key_is_translated() {
        let sources = [
            include_str!("layout.rs"),
            include_str!("mod.rs"),
            include_str!("pages/login.rs"),
            include_str!("pages/repos.rs"),
            include_str!("pages/repo.rs"),
            include_str!("pages/manifest.rs"),
            include_str!("pages/dashboard.rs"),
            include_str!("pages/maintenance.rs"),
            include_str!("pages/actions.rs"),
            include_str!("pages/accounts.rs"),
        ];
        for src in sources {
            for piece in src.split(".t(\"").skip(1) {
                let key = piece.split('"').next().unwrap();
                assert!(
                    i18n::MESSAGES.iter().any(|(k, _, _)| *k == key),
                    "message {key:?} is not in the catalogue"
                );
            }
        }
    }
}
