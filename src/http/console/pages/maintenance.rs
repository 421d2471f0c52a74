//! Placeholder.
use super::super::Ctx;
use crate::http::body::Body;
use http::Response;

pub fn get(ctx: &Ctx<'_>) -> Response<Body> {
    ctx.page("/ui/maintenance", ctx.t("nav.maintenance"), maud::html! {})
}
