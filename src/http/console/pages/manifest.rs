//! A manifest's page (`?name=…&digest=…`): for an image, its config and layers with sizes and
//! media types (and whether each blob is here); for an index, its platforms and which of them
//! are cached; its referrers (signatures, SBOMs, attestations); pulls; delete where allowed.
//! Read from the index and the local store only: a manifest not stored here is said to be so,
//! never fetched.

use super::super::describe::{describe, descriptor_size, platform_text};
use super::super::{Ctx, fmt};
use super::repo::{enc, viewable};
use crate::auth::Action;
use crate::http::body::Body;
use crate::oci::Digest;
use http::{Response, StatusCode};
use maud::html;
use serde_json::Value;

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub async fn get(ctx: &Ctx<'_>) -> Response<Body> {
    let repo = match viewable(ctx) {
        Ok(r) => r,
        Err((status, msg)) => return ctx.refuse(status, &msg),
    };
    let app = ctx.app;
    let index = &app.depot.index;
    let digest = match Digest::parse(ctx.query("digest").unwrap_or("")) {
        Ok(d) => d,
        Err(e) => return ctx.refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let name = repo.as_str();
    let record = index.manifest(&repo, &digest).ok().flatten();
    let described = match &record {
        Some(r) => describe(app, &digest, r.size).await,
        None => None,
    };
    let (Some(record), Some(d)) = (record, described) else {
        return ctx.refuse(StatusCode::NOT_FOUND, ctx.t("manifest.not_stored"));
    };
    let blob_here = |s: &str| {
        Digest::parse(s)
            .ok()
            .and_then(|d| index.blob(&d).ok().flatten())
            .is_some()
    };
    let manifest_here = |s: &str| {
        Digest::parse(s)
            .ok()
            .and_then(|d| index.manifest(&repo, &d).ok().flatten())
            .is_some()
    };
    let referrers = index.referrers(&repo, &digest).unwrap_or_default();
    let pulls = app.depot.pulls(&repo, &digest).unwrap_or_default();
    let deletes = app.config.storage.delete.enabled && ctx.may(&repo, Action::Delete);
    let yes_no = |b: bool| ctx.t(if b { "yes" } else { "no" });
    let link = |child: &str| format!("/ui/manifest?name={}&digest={}", enc(name), enc(child));
    let content = html! {
        p { a href={ "/ui/repo?name=" (enc(name)) } { "← " (name) } }
        table {
            tr { th { (ctx.t("digest")) } td.mono { (digest.as_str()) } }
            tr { th { (ctx.t("media_type")) } td.mono { (record.media_type) } }
            tr { th { (ctx.t("size")) } td { (fmt::bytes(d.size)) } }
            @if !d.platforms.is_empty() {
                tr { th { (ctx.t("platforms")) } td { (d.platforms.join(", ")) } }
            }
            @if let Some(c) = &d.created { tr { th { (ctx.t("created")) } td { (c) } } }
            tr { th { (ctx.t("source")) } td { (ctx.t(if record.origin == crate::index::Origin::Local { "source.pushed" } else { "source.cached" })) } }
            tr { th { (ctx.t("pulls")) } td { (pulls.count) " · " (ctx.t("last_pulled")) ": " (fmt::time_ms(pulls.last).unwrap_or_else(|| ctx.t("never").into())) } }
        }
        @if d.is_index {
            h2 { (ctx.t("platforms")) }
            table {
                thead { tr { th { (ctx.t("platforms")) } th { (ctx.t("digest")) } th { (ctx.t("media_type")) } th.num { (ctx.t("size")) } th { (ctx.t("cached")) } } }
                tbody {
                    @for c in d.json.get("manifests").and_then(Value::as_array).into_iter().flatten() {
                        @let cd = field(c, "digest");
                        @let here = manifest_here(cd);
                        tr {
                            td { (c.get("platform").and_then(platform_text).unwrap_or_else(|| "—".into())) }
                            td.mono { @if here { a href=(link(cd)) { (fmt::short_digest(cd)) } } @else { (fmt::short_digest(cd)) } }
                            td.mono { (field(c, "mediaType")) }
                            td.num { (fmt::bytes(descriptor_size(c))) }
                            td { (yes_no(here)) }
                        }
                    }
                }
            }
        } @else {
            @if let Some(cfg) = d.json.get("config") {
                h2 { (ctx.t("config")) }
                table {
                    thead { tr { th { (ctx.t("digest")) } th { (ctx.t("media_type")) } th.num { (ctx.t("size")) } th { (ctx.t("cached")) } } }
                    tbody { tr {
                        td.mono { (fmt::short_digest(field(cfg, "digest"))) }
                        td.mono { (field(cfg, "mediaType")) }
                        td.num { (fmt::bytes(descriptor_size(cfg))) }
                        td { (yes_no(blob_here(field(cfg, "digest")))) }
                    } }
                }
            }
            h2 { (ctx.t("layers")) }
            table {
                thead { tr { th { "#" } th { (ctx.t("digest")) } th { (ctx.t("media_type")) } th.num { (ctx.t("size")) } th { (ctx.t("cached")) } } }
                tbody {
                    @for (i, l) in d.json.get("layers").and_then(Value::as_array).into_iter().flatten().enumerate() {
                        tr {
                            td.num { (i + 1) }
                            td.mono { (fmt::short_digest(field(l, "digest"))) }
                            td.mono { (field(l, "mediaType")) }
                            td.num { (fmt::bytes(descriptor_size(l))) }
                            td { (yes_no(blob_here(field(l, "digest")))) }
                        }
                    }
                }
            }
        }
        h2 { (ctx.t("referrers")) }
        @if referrers.is_empty() {
            p.muted { (ctx.t("none")) }
        } @else {
            table {
                thead { tr { th { (ctx.t("artifact_type")) } th { (ctx.t("digest")) } th.num { (ctx.t("size")) } } }
                tbody {
                    @for r in &referrers {
                        tr {
                            td.mono { (r.artifact_type.clone().unwrap_or_else(|| r.media_type.clone())) }
                            td.mono { a href=(link(&r.digest)) { (fmt::short_digest(&r.digest)) } }
                            td.num { (fmt::bytes(u64::try_from(r.size).unwrap_or(0))) }
                        }
                    }
                }
            }
        }
        @if deletes {
            h2 { (ctx.t("actions")) }
            form method="post" action="/ui/actions/delete-manifest" {
                (ctx.csrf_field())
                input type="hidden" name="name" value=(name);
                input type="hidden" name="digest" value=(digest.as_str());
                button.danger type="submit" { (ctx.t("delete.manifest")) }
            }
        }
    };
    ctx.page(
        "/ui/repos",
        &format!("{name}@{}", fmt::short_digest(digest.as_str())),
        content,
    )
}
