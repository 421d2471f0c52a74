//! Logging in and out, and the language switch. The login form carries a CSRF token too: a
//! visitor gets an anonymous session for it, and a successful login replaces that session
//! with a new id (no session fixation).

use super::super::respond::{self, local_path};
use super::super::session::{LANG_COOKIE, session_cookie};
use super::super::{Ctx, Form, Lang, Who};
use crate::http::body::Body;
use http::{Response, StatusCode};
use maud::html;

/// The login form (`error`: what went wrong with the last try).
pub fn form(ctx: &Ctx<'_>, error: Option<&str>) -> Response<Body> {
    let supported = ctx.app.auth.as_ref().is_some_and(|a| a.supports_login());
    if ctx.app.auth.is_none() || matches!(ctx.who, Who::User { .. }) {
        return respond::redirect("/ui/repos", &[]);
    }
    // A visitor without a session gets one, for the form's CSRF token.
    let mut cookies = Vec::new();
    let fresh;
    let csrf = match &ctx.session {
        Some((_, s)) => s.csrf.clone(),
        None => {
            fresh = ctx.console.sessions.create(None);
            cookies.push(session_cookie(Some(&fresh.0), ctx.secure));
            fresh.1.csrf.clone()
        }
    };
    let next = ctx
        .query("next")
        .and_then(local_path)
        .unwrap_or("/ui/repos");
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let content = html! {
        div.card.login {
            @if let Some(e) = error { div.error { (e) } }
            @if !supported {
                div.notice { (ctx.t("login.unsupported")) }
            } @else {
                @if ctx.query("next").is_some() && error.is_none() {
                    p.muted { (ctx.t("login.needed")) }
                }
                form method="post" action="/ui/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    label for="user" { (ctx.t("login.user")) }
                    input #user type="text" name="user" autocomplete="username" required autofocus;
                    label for="password" { (ctx.t("login.password")) }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    button type="submit" { (ctx.t("login")) }
                }
            }
        }
    };
    ctx.page_with(status, "", ctx.t("login"), content, &cookies)
}

/// `POST /ui/login`: checks the name and password with the configured auth.
pub async fn login(ctx: &Ctx<'_>, form_in: &Form) -> Response<Body> {
    let Some(auth) = &ctx.app.auth else {
        return respond::redirect("/ui/repos", &[]);
    };
    let user = form_in.get("user").unwrap_or("").trim();
    let password = form_in.get("password").unwrap_or("");
    match auth.check_password(user, password).await {
        Ok(who) => {
            let name = who.name().unwrap_or(user).to_owned();
            if let Some((old, _)) = &ctx.session {
                ctx.console.sessions.remove(old);
            }
            let (id, _) = ctx.console.sessions.create(Some(name.clone()));
            tracing::info!(user = %name, "console login");
            let next = form_in
                .get("next")
                .and_then(local_path)
                .unwrap_or("/ui/repos");
            respond::redirect(next, &[session_cookie(Some(&id), ctx.secure)])
        }
        Err(e) => {
            tracing::info!(user, error = %e, "console login refused");
            let msg = if auth.supports_login() {
                ctx.t("login.failed")
            } else {
                ctx.t("login.unsupported")
            };
            form(ctx, Some(msg))
        }
    }
}

/// `POST /ui/logout`.
pub fn logout(ctx: &Ctx<'_>) -> Response<Body> {
    if let Some((id, _)) = &ctx.session {
        ctx.console.sessions.remove(id);
    }
    respond::redirect("/ui/login", &[session_cookie(None, ctx.secure)])
}

/// `GET /ui/lang?l=…&back=…`: remembers the language in a cookie and goes back.
pub fn lang(ctx: &Ctx<'_>) -> Response<Body> {
    let lang = ctx.query("l").and_then(Lang::from_code).unwrap_or(Lang::En);
    let back = ctx
        .query("back")
        .and_then(local_path)
        .unwrap_or("/ui/repos");
    let secure = if ctx.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{LANG_COOKIE}={}; Path=/ui; SameSite=Strict; Max-Age=31536000{secure}",
        lang.code()
    );
    respond::redirect(back, &[cookie])
}
