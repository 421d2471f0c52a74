//! Placeholder.
use super::super::Ctx;
use crate::http::body::Body;
use http::Response;

pub async fn get(ctx: &Ctx<'_>) -> Response<Body> {
    ctx.page("/ui/repos", ctx.t("repo"), maud::html! {})
}
