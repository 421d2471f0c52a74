//! A repository's page: its tags, a page at a time (`?name=…&last=…`), each with digest, size,
//! platforms, creation time (image config), whether pushed or cached, last pull and pull count;
//! a delete button where the viewer may delete (and deletes are enabled), and evict for cached
//! tags (administrators). Read from the index and the local store only.

use super::super::describe::describe;
use super::super::{Ctx, fmt};
use crate::auth::Action;
use crate::http::body::Body;
use crate::index::Origin;
use crate::oci::RepoName;
use http::{Response, StatusCode};
use maud::html;

/// Tags per page.
const PAGE: usize = 100;

pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The repository named by `?name=`, if the viewer may see it (else the refusal's status
/// and message).
pub fn viewable(ctx: &Ctx<'_>) -> Result<RepoName, (StatusCode, String)> {
    let name = ctx.query("name").unwrap_or("");
    let repo = RepoName::parse(name).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    if !ctx.may(&repo, Action::Pull) {
        return Err((StatusCode::FORBIDDEN, ctx.t("forbidden").to_owned()));
    }
    match ctx.app.depot.index.repo_exists(&repo) {
        Ok(true) => Ok(repo),
        Ok(false) => Err((StatusCode::NOT_FOUND, ctx.t("not_found").to_owned())),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The message a finished action left in the query (`?done=…`).
pub fn done_notice(ctx: &Ctx<'_>) -> maud::Markup {
    let msg = match ctx.query("done") {
        Some("deleted") => Some(ctx.t("deleted")),
        Some("evicted") => Some(ctx.t("evicted")),
        _ => None,
    };
    html! { @if let Some(m) = msg { div.ok { (m) } } }
}

pub async fn get(ctx: &Ctx<'_>) -> Response<Body> {
    let repo = match viewable(ctx) {
        Ok(r) => r,
        Err((status, msg)) => return ctx.refuse(status, &msg),
    };
    let app = ctx.app;
    let index = &app.depot.index;
    let last = ctx.query("last");
    let tags = match index.tags_of(&repo, last, PAGE + 1) {
        Ok(t) => t,
        Err(e) => return ctx.refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let more = tags.len() > PAGE;
    let deletes = app.config.storage.delete.enabled && ctx.may(&repo, Action::Delete);
    let mut rows = Vec::new();
    for (tag, rec) in tags.into_iter().take(PAGE) {
        let manifest = index.manifest(&repo, &rec.digest).ok().flatten();
        let described = match &manifest {
            Some(m) => describe(app, &rec.digest, m.size).await,
            None => None,
        };
        let pulls = app.depot.pulls(&repo, &rec.digest).unwrap_or_default();
        rows.push((tag, rec, described, pulls));
    }
    let summary = index.repo_summary(&repo).unwrap_or_default();
    let name = repo.as_str();
    let content = html! {
        (done_notice(ctx))
        p.muted {
            (ctx.t("tags")) ": " (summary.tags) " · " (ctx.t("size")) ": " (fmt::bytes(summary.bytes))
            " · " (ctx.t("pulls")) ": " (summary.pulls)
        }
        @if !app.config.storage.delete.enabled && ctx.may(&repo, Action::Delete) {
            p.muted { (ctx.t("delete.disabled")) }
        }
        @if rows.is_empty() {
            p.muted { (ctx.t("none")) }
        } @else {
            table {
                thead { tr {
                    th { (ctx.t("tag")) }
                    th { (ctx.t("digest")) }
                    th.num { (ctx.t("size")) }
                    th { (ctx.t("platforms")) }
                    th { (ctx.t("created")) }
                    th { (ctx.t("source")) }
                    th { (ctx.t("last_pulled")) }
                    th.num { (ctx.t("pulls")) }
                    @if deletes || ctx.is_admin() { th { (ctx.t("actions")) } }
                } }
                tbody {
                    @for (tag, rec, d, pulls) in &rows {
                        tr {
                            td { strong { (tag.as_str()) } }
                            td.mono {
                                a href={ "/ui/manifest?name=" (enc(name)) "&digest=" (enc(rec.digest.as_str())) } {
                                    (fmt::short_digest(rec.digest.as_str()))
                                }
                            }
                            td.num { (d.as_ref().map(|d| fmt::bytes(d.size)).unwrap_or_else(|| "—".into())) }
                            td { (d.as_ref().map(|d| d.platforms.join(", ")).unwrap_or_default()) }
                            td { (d.as_ref().and_then(|d| d.created.clone()).unwrap_or_else(|| "—".into())) }
                            td {
                                @if rec.origin == Origin::Local {
                                    span.badge.local { (ctx.t("source.pushed")) }
                                } @else {
                                    span.badge.cached { (ctx.t("source.cached")) }
                                }
                            }
                            td { (fmt::time_ms(pulls.last).unwrap_or_else(|| ctx.t("never").into())) }
                            td.num { (pulls.count) }
                            @if deletes || ctx.is_admin() {
                                td {
                                    @if deletes {
                                        form.inline method="post" action="/ui/actions/delete-tag" {
                                            (ctx.csrf_field())
                                            input type="hidden" name="name" value=(name);
                                            input type="hidden" name="tag" value=(tag.as_str());
                                            button.danger type="submit" { (ctx.t("delete.tag")) }
                                        }
                                        " "
                                    }
                                    @if ctx.is_admin() && rec.origin == Origin::Proxy {
                                        form.inline method="post" action="/ui/actions/evict" {
                                            (ctx.csrf_field())
                                            input type="hidden" name="image" value={ (name) ":" (tag.as_str()) };
                                            button.plain type="submit" { (ctx.t("evict")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        div.pager {
            @if last.is_some() {
                a href={ "/ui/repo?name=" (enc(name)) } { (ctx.t("first")) }
            }
            @if more {
                @if let Some((t, _, _, _)) = rows.last() {
                    a href={ "/ui/repo?name=" (enc(name)) "&last=" (enc(t.as_str())) } { (ctx.t("next")) " →" }
                }
            }
        }
    };
    ctx.page("/ui/repos", name, content)
}
