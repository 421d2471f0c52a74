//! The maintenance page (administrators): garbage collection (the button runs a dry run; its
//! report offers the real run), evicting a cached image, warming an image from upstream.

use super::super::{Ctx, fmt};
use crate::http::body::Body;
use crate::index::Origin;
use http::{Response, StatusCode};
use maud::html;

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
                div.card {
                    h2 { (ctx.t("evict")) }
                    form method="post" action="/ui/actions/evict" {
                        (ctx.csrf_field())
                        label for="evict-image" { (ctx.t("warm.image")) } br;
                        input #evict-image type="text" name="image" required;
                        " " button.danger type="submit" { (ctx.t("evict")) }
                    }
                }
                div.card {
                    h2 { (ctx.t("warm")) }
                    form method="post" action="/ui/actions/warm" {
                        (ctx.csrf_field())
                        label for="warm-image" { (ctx.t("warm.image")) } br;
                        input #warm-image type="text" name="image" required;
                        " " button type="submit" { (ctx.t("warm")) }
                    }
                }
            }
        }
    };
    ctx.page("/ui/maintenance", ctx.t("nav.maintenance"), content)
}
