//! The console's actions (`POST /ui/actions/<name>`, CSRF already checked by dispatch): delete
//! a tag or a manifest (where the viewer's role allows deletes on the repository and
//! `storage.delete.enabled`), and, for administrators, garbage collection (a dry run first,
//! whose report offers the real run), evicting a cached image, and warming one from upstream.
//! Each runs the same operation the API or the debug listener runs; none is reachable by GET.

use super::super::respond;
use super::super::{Ctx, Form, fmt};
use super::repo::enc;
use crate::auth::Action;
use crate::http::body::Body;
use crate::oci::{Digest, Reference, RepoName, Tag};
use http::{Response, StatusCode};
use maud::html;

pub async fn post(ctx: &Ctx<'_>, name: &str, form: &Form) -> Response<Body> {
    match name {
        "delete-tag" | "delete-manifest" => delete(ctx, name == "delete-tag", form).await,
        "gc" | "evict" | "warm" if !ctx.is_admin() => {
            ctx.refuse(StatusCode::FORBIDDEN, ctx.t("forbidden"))
        }
        "gc" => gc(ctx, form).await,
        "evict" => evict(ctx, form).await,
        "warm" => warm(ctx, form).await,
        _ => ctx.refuse(StatusCode::NOT_FOUND, ctx.t("not_found")),
    }
}

async fn delete(ctx: &Ctx<'_>, tag: bool, form: &Form) -> Response<Body> {
    let repo = match RepoName::parse(form.get("name").unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return ctx.refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if !ctx.may(&repo, Action::Delete) {
        return ctx.refuse(StatusCode::FORBIDDEN, ctx.t("forbidden"));
    }
    let reference = if tag {
        Tag::parse(form.get("tag").unwrap_or(""))
            .map(Reference::Tag)
            .map_err(|e| e.to_string())
    } else {
        Digest::parse(form.get("digest").unwrap_or(""))
            .map(Reference::Digest)
            .map_err(|e| e.to_string())
    };
    let reference = match reference {
        Ok(r) => r,
        Err(e) => return ctx.refuse(StatusCode::BAD_REQUEST, &e),
    };
    match ctx.app.registry.delete_manifest(&repo, &reference).await {
        Ok(_tags) => {
            tracing::info!(user = ?ctx.who, repository = %repo, reference = %reference, "console: deleted");
            respond::redirect(
                &format!("/ui/repo?name={}&done=deleted", enc(repo.as_str())),
                &[],
            )
        }
        Err(e) => ctx.refuse(e.status(), &e.to_string()),
    }
}

async fn gc(ctx: &Ctx<'_>, form: &Form) -> Response<Body> {
    let dry_run = !form.flag("run");
    let untagged = form.flag("untagged");
    let options = crate::lifecycle::GcOptions {
        dry_run,
        delete_untagged: untagged,
        grace: std::time::Duration::from_secs(600),
    };
    let report = match ctx.app.gc(&options).await {
        Ok(r) => r,
        Err(e) => return ctx.refuse(e.status(), &e.to_string()),
    };
    tracing::info!(user = ?ctx.who, dry_run, untagged, "console: gc");
    let content = html! {
        div.card {
            table {
                tr { th { (ctx.t(if dry_run { "gc.would_free" } else { "gc.freed" })) } td { (fmt::bytes(report.bytes_freed)) } }
                tr { th { "blobs" } td { (report.blobs_deleted) } }
                tr { th { "manifests" } td { (report.manifests_deleted) } }
                tr { th { "kept" } td { (report.blobs_kept) } }
            }
        }
        @if dry_run {
            form method="post" action="/ui/actions/gc" {
                (ctx.csrf_field())
                input type="hidden" name="run" value="1";
                @if untagged { input type="hidden" name="untagged" value="1"; }
                button.danger type="submit" { (ctx.t("gc.run")) }
            }
        } @else {
            div.ok { (ctx.t("gc.freed")) ": " (fmt::bytes(report.bytes_freed)) }
        }
    };
    ctx.page("/ui/maintenance", ctx.t("gc.report"), content)
}

async fn evict(ctx: &Ctx<'_>, form: &Form) -> Response<Body> {
    let image = form.get("image").unwrap_or("").trim();
    let (repo, tag) = match crate::http::debug::content::parse_image(image) {
        Ok(x) => x,
        Err(e) => return ctx.refuse(StatusCode::BAD_REQUEST, &e),
    };
    let mirror = ctx.app.mirror.clone();
    let busy = move |d: &Digest| mirror.as_ref().is_some_and(|m| m.fetching(d));
    match ctx
        .app
        .registry
        .purge(&repo, tag.as_ref(), false, &busy)
        .await
    {
        Ok(r) => {
            tracing::info!(user = ?ctx.who, image, bytes = r.bytes_freed, "console: evicted");
            respond::redirect(
                &format!("/ui/repo?name={}&done=evicted", enc(repo.as_str())),
                &[],
            )
        }
        Err(e) => ctx.refuse(e.status(), &e.to_string()),
    }
}

async fn warm(ctx: &Ctx<'_>, form: &Form) -> Response<Body> {
    let Some(mirror) = ctx.app.mirror.clone() else {
        return ctx.refuse(StatusCode::NOT_FOUND, ctx.t("dash.no_mirror"));
    };
    let image = form.get("image").unwrap_or("").trim();
    let entries = match crate::oci::image_list::parse_list(image) {
        Ok(e) if !e.is_empty() => e,
        Ok(_) => return ctx.refuse(StatusCode::BAD_REQUEST, ctx.t("warm.image")),
        Err(e) => return ctx.refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let report = mirror
        .warm(&entries, crate::mirror::warm::Trigger::Request)
        .await;
    tracing::info!(user = ?ctx.who, image, ok = report.ok, "console: warm");
    let content = html! {
        @if report.failed == 0 {
            div.ok { (ctx.t("warm.done")) " " (fmt::bytes(report.bytes_fetched)) }
        }
        table {
            thead { tr { th { "image" } th { (ctx.t("digest")) } th { (ctx.t("platforms")) } th.num { (ctx.t("dash.fetched")) } th { (ctx.t("error")) } } }
            tbody {
                @for i in &report.images {
                    tr {
                        td.mono { (i.image) }
                        td.mono { (i.digest.as_deref().map(fmt::short_digest).unwrap_or("—")) }
                        td { (i.platforms.join(", ")) }
                        td.num { (fmt::bytes(i.bytes_fetched)) }
                        td { @if let Some(e) = &i.error { span.error { (ctx.t("warm.failed")) ": " (e) } } }
                    }
                }
            }
        }
    };
    let status = if report.failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    ctx.page_with(status, "/ui/maintenance", ctx.t("warm"), content, &[])
}
