//! The maintenance page (administrators): garbage collection (the button runs a dry run; its
//! report offers the real run), evicting a cached image, warming an image from upstream.

use super::super::{Ctx, fmt};
use crate::http::body::Body;
use crate::index::Origin;
use http::{Response, StatusCode};
use maud::html;

/// A card with a form that posts one image name to `/ui/actions/<action>`.
fn image_form(ctx: &Ctx<'_>, action: &'static str, class: &str) -> maud::Markup {
    let id = format!("{action}-image");
    html! {
        div.card {
            h2 { (ctx.t(action)) }
            form method="post" action={ "/ui/actions/" (action) } {
                (ctx.csrf_field())
                label for=(id) { (ctx.t("warm.image")) } br;
                input id=(id) type="text" name="image" required;
                " " button class=(class) type="submit" { (ctx.t(action)) }
            }
        }
    }
}

pub fn get(ctx: &Ctx<'_>) -> Response<Body> {
    if !ctx.is_admin() {
        return ctx.refuse(StatusCode::FORBIDDEN, ctx.t("forbidden"));
    }
    let app = ctx.app;
    let (_, local) = app.depot.index.totals(Origin::Local);
    let (_, cached) = app.depot.index.totals(Origin::Proxy);
    let content = html! {
        div.grid {
            div.card {
                h2 { (ctx.t("gc")) }
                p.muted { (ctx.t("kind.local")) ": " (fmt::bytes(local)) " · " (ctx.t("kind.cached")) ": " (fmt::bytes(cached)) }
                form method="post" action="/ui/actions/gc" {
                    (ctx.csrf_field())
                    label { input type="checkbox" name="untagged" value="1"; " " (ctx.t("gc.untagged")) }
                    p { button type="submit" { (ctx.t("gc.dry")) } }
                }
            }
            @if app.mirror.is_some() {
                (image_form(ctx, "evict", "danger"))
                (image_form(ctx, "warm", ""))
            }
        }
    };
    ctx.page("/ui/maintenance", ctx.t("nav.maintenance"), content)
}
