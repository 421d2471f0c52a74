//! The page frame every console page shares: head (the embedded stylesheet only), navigation,
//! who is logged in with the logout form, the language switch, and the footer.

use super::{Ctx, Who};
use maud::{DOCTYPE, Markup, html};

/// Navigation entries: (path, message key, admin only).
pub const NAV: &[(&str, &str, bool)] = &[
    ("/ui/repos", "nav.repos", false),
    ("/ui/dashboard", "nav.dashboard", false),
    ("/ui/maintenance", "nav.maintenance", true),
    ("/ui/users", "nav.users", true),
    ("/ui/roles", "nav.roles", true),
];

/// The whole document around `content`; `current` is the nav path to highlight.
pub fn page(ctx: &Ctx<'_>, current: &str, title: &str, content: Markup) -> Markup {
    let other = ctx.lang.other();
    let back = form_urlencoded::byte_serialize(ctx.here.as_bytes()).collect::<String>();
    let lang_link = format!("/ui/lang?l={}&back={back}", other.code());
    html! {
        (DOCTYPE)
        html lang=(ctx.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (ctx.t("app")) }
                link rel="stylesheet" href="/ui/static/console.css";
            }
            body {
                header {
                    a.brand href="/ui/repos" { "stevedore" }
                    nav {
                        @for (path, key, admin) in NAV {
                            @if !*admin || ctx.is_admin() {
                                a class=[(current == *path).then_some("current")] href=(path) { (ctx.t(key)) }
                            }
                        }
                    }
                    div.who {
                        a href=(lang_link) title=(ctx.t("lang.switch")) { (other.name()) }
                        @match &ctx.who {
                            Who::User { name, admin } => {
                                span { (ctx.t("login.as")) " " strong { (name) } " (" (ctx.t(if *admin { "role.admin" } else { "role.viewer" })) ")" }
                                form method="post" action="/ui/logout" {
                                    (ctx.csrf_field())
                                    button type="submit" { (ctx.t("logout")) }
                                }
                            }
                            Who::Anonymous => {
                                a href="/ui/login" { (ctx.t("login")) }
                            }
                            Who::Open => {}
                        }
                    }
                }
                main {
                    @if ctx.who == Who::Open {
                        div.notice { (ctx.t("open.notice")) }
                    }
                    h1 { (title) }
                    (content)
                }
                footer { "stevedore " (env!("CARGO_PKG_VERSION")) }
            }
        }
    }
}
