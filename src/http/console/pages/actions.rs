//! Placeholder.
use super::super::{Ctx, Form};
use crate::http::body::Body;
use http::{Response, StatusCode};

pub async fn post(ctx: &Ctx<'_>, _name: &str, _form: &Form) -> Response<Body> {
    ctx.refuse(StatusCode::NOT_FOUND, ctx.t("not_found"))
}
