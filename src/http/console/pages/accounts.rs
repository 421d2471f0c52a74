//! The users and roles pages (admin only, `auth.builtin`): list users with their roles, add
//! a user, set a password, give and take roles, delete; list roles with their rules, add and
//! delete custom roles and their rules (the `anonymous` role's rules say what may be pulled
//! without a login). Every change is a POST to `/ui/accounts` carrying the CSRF field and an
//! `op`; it becomes the same `AccountOp` the CLI sends (`auth::builtin::manage`), so the
//! console and `stevedore user|role` keep the same rules. Passwords are hashed here.

use super::super::{Ctx, Form, respond};
use crate::auth::builtin::manage::{self, AccountOp};
use crate::auth::builtin::roles;
use crate::http::body::Body;
use http::{Response, StatusCode};
use maud::{Markup, html};

/// Refuses anyone but an admin, and registries whose users are not stevedore's.
fn guard<'a>(ctx: &Ctx<'a>) -> Result<&'a crate::auth::Builtin, (StatusCode, &'static str)> {
    if !ctx.is_admin() {
        return Err((StatusCode::FORBIDDEN, ctx.t("forbidden")));
    }
    ctx.app
        .auth
        .as_ref()
        .and_then(|a| a.builtin())
        .ok_or((StatusCode::NOT_FOUND, ctx.t("acct.not_builtin")))
}

/// Every role a user may be given: the built-in ones, then the stored ones.
fn role_names(ctx: &Ctx<'_>) -> Vec<String> {
    let mut names: Vec<String> = roles::BUILT_IN.iter().map(|r| (*r).to_owned()).collect();
    names.extend(
        ctx.app
            .depot
            .index
            .roles()
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n != roles::ANONYMOUS),
    );
    names
}

fn op_form(ctx: &Ctx<'_>, op: &str, fields: Markup, button: &str) -> Markup {
    html! {
        form.inline method="post" action="/ui/accounts" {
            (ctx.csrf_field())
            input type="hidden" name="op" value=(op);
            (fields)
            button type="submit" { (button) }
        }
    }
}

pub fn users(ctx: &Ctx<'_>) -> Response<Body> {
    if let Err((status, why)) = guard(ctx) {
        return ctx.refuse(status, why);
    }
    let users = match ctx.app.depot.index.users() {
        Ok(u) => u,
        Err(e) => return ctx.refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let all_roles = role_names(ctx);
    let content = html! {
        table {
            thead { tr { th { (ctx.t("login.user")) } th { (ctx.t("nav.roles")) } th { (ctx.t("acct.change")) } } }
            tbody {
                @for (name, u) in &users {
                    tr {
                        td { (name) }
                        td {
                            @for r in &u.roles {
                                span.badge { (r) }
                                (op_form(ctx, "user-revoke", html! {
                                    input type="hidden" name="name" value=(name);
                                    input type="hidden" name="role" value=(r);
                                }, "×"))
                                " "
                            }
                        }
                        td {
                            (op_form(ctx, "user-grant", html! {
                                input type="hidden" name="name" value=(name);
                                select name="role" aria-label=(ctx.t("acct.grant")) {
                                    @for r in &all_roles { option value=(r) { (r) } }
                                }
                            }, ctx.t("acct.grant")))
                            (op_form(ctx, "user-passwd", html! {
                                input type="hidden" name="name" value=(name);
                                input type="password" name="password" autocomplete="new-password" aria-label=(ctx.t("login.password")) required;
                            }, ctx.t("acct.passwd")))
                            (op_form(ctx, "user-del", html! {
                                input type="hidden" name="name" value=(name);
                            }, ctx.t("acct.delete")))
                        }
                    }
                }
            }
        }
        h2 { (ctx.t("acct.user_add")) }
        form.card method="post" action="/ui/accounts" {
            (ctx.csrf_field())
            input type="hidden" name="op" value="user-add";
            label { (ctx.t("login.user")) " " input type="text" name="name" required; }
            " "
            label { (ctx.t("login.password")) " " input type="password" name="password" autocomplete="new-password" required; }
            " "
            @for r in &all_roles {
                label { input type="checkbox" name="role" value=(r); " " (r) } " "
            }
            button type="submit" { (ctx.t("acct.user_add")) }
        }
    };
    ctx.page("/ui/users", ctx.t("nav.users"), content)
}

pub fn roles(ctx: &Ctx<'_>) -> Response<Body> {
    if let Err((status, why)) = guard(ctx) {
        return ctx.refuse(status, why);
    }
    let stored = match ctx.app.depot.index.roles() {
        Ok(r) => r,
        Err(e) => return ctx.refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut rows: Vec<(String, &'static str, crate::index::RoleRecord)> = roles::BUILT_IN
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                "acct.kind.builtin",
                roles::built_in(n).unwrap_or_default(),
            )
        })
        .collect();
    if !stored.iter().any(|(n, _)| n == roles::ANONYMOUS) {
        rows.push((
            roles::ANONYMOUS.to_owned(),
            "acct.kind.anonymous",
            Default::default(),
        ));
    }
    for (n, r) in stored {
        let kind = if n == roles::ANONYMOUS {
            "acct.kind.anonymous"
        } else {
            "acct.kind.custom"
        };
        rows.push((n, kind, r));
    }
    let content = html! {
        p.muted { (ctx.t("acct.anonymous_note")) }
        table {
            thead { tr { th { (ctx.t("acct.role")) } th { (ctx.t("kind")) } th { (ctx.t("acct.rules")) } th { (ctx.t("acct.change")) } } }
            tbody {
                @for (name, kind, record) in &rows {
                    @let fixed = *kind == "acct.kind.builtin";
                    tr {
                        td { (name) }
                        td { (ctx.t(kind)) }
                        td {
                            @for rule in &record.rules {
                                div {
                                    code { (rule.repository) } " " (rule.actions.join(", "))
                                    @if !fixed {
                                        " "
                                        (op_form(ctx, "role-revoke", html! {
                                            input type="hidden" name="name" value=(name);
                                            input type="hidden" name="repository" value=(rule.repository);
                                        }, "×"))
                                    }
                                }
                            }
                        }
                        td {
                            @if !fixed {
                                (op_form(ctx, "role-grant", html! {
                                    input type="hidden" name="name" value=(name);
                                    input type="text" name="repository" placeholder="team/*" aria-label=(ctx.t("acct.glob")) required;
                                    @for a in ["pull", "push", "delete"] {
                                        @if *kind != "acct.kind.anonymous" || a == "pull" {
                                            label { input type="checkbox" name="action" value=(a) checked[a == "pull"]; " " (a) } " "
                                        }
                                    }
                                }, ctx.t("acct.rule_add")))
                                @if *kind == "acct.kind.custom" {
                                    (op_form(ctx, "role-del", html! {
                                        input type="hidden" name="name" value=(name);
                                    }, ctx.t("acct.delete")))
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { (ctx.t("acct.role_add")) }
        form.card method="post" action="/ui/accounts" {
            (ctx.csrf_field())
            input type="hidden" name="op" value="role-add";
            label { (ctx.t("acct.role")) " " input type="text" name="name" required; }
            " "
            button type="submit" { (ctx.t("acct.role_add")) }
        }
    };
    ctx.page("/ui/roles", ctx.t("nav.roles"), content)
}

/// The change a submitted form asks for; `Err` says what is wrong with the form.
fn op_of(form: &Form) -> Result<AccountOp, String> {
    let field = |k: &str| {
        form.get(k)
            .map(str::to_owned)
            .ok_or_else(|| format!("the form has no {k:?}"))
    };
    let many = |k: &str| -> Vec<String> { form.all(k).map(str::to_owned).collect() };
    let hash = || manage::hash_password(&field("password")?).map_err(|e| e.to_string());
    Ok(match form.get("op").unwrap_or("") {
        "user-add" => AccountOp::UserAdd {
            name: field("name")?.trim().to_owned(),
            hash: hash()?,
            roles: many("role"),
        },
        "user-passwd" => AccountOp::UserPasswd {
            name: field("name")?,
            hash: hash()?,
        },
        "user-del" => AccountOp::UserDel {
            name: field("name")?,
        },
        "user-grant" => AccountOp::UserGrant {
            name: field("name")?,
            role: field("role")?,
        },
        "user-revoke" => AccountOp::UserRevoke {
            name: field("name")?,
            role: field("role")?,
        },
        "role-add" => AccountOp::RoleAdd {
            name: field("name")?.trim().to_owned(),
        },
        "role-del" => AccountOp::RoleDel {
            name: field("name")?,
        },
        "role-grant" => AccountOp::RoleGrant {
            name: field("name")?,
            repository: field("repository")?.trim().to_owned(),
            actions: many("action").join(","),
        },
        "role-revoke" => AccountOp::RoleRevoke {
            name: field("name")?,
            repository: field("repository")?,
        },
        other => return Err(format!("unknown operation {other:?}")),
    })
}

/// `POST /ui/accounts`: applies one change, then back to its page.
pub fn post(ctx: &Ctx<'_>, form: &Form) -> Response<Body> {
    let b = match guard(ctx) {
        Ok(b) => b,
        Err((status, why)) => return ctx.refuse(status, why),
    };
    let op = match op_of(form) {
        Ok(op) => op,
        Err(e) => return ctx.refuse(StatusCode::BAD_REQUEST, &e),
    };
    if let Err(e) = b.manage(&op) {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return ctx.refuse(status, &e.to_string());
    }
    // A deleted user, or one whose password changed, is logged out everywhere.
    if let AccountOp::UserDel { name } | AccountOp::UserPasswd { name, .. } = &op {
        ctx.console.sessions.remove_user(name);
    }
    let back = if form.get("op").unwrap_or("").starts_with("role-") {
        "/ui/roles"
    } else {
        "/ui/users"
    };
    respond::redirect(back, &[])
}
