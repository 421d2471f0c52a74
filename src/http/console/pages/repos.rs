//! The repositories page: names by prefix search, a page at a time (`?q=…&last=…`), each with
//! whether it holds pushed or cached content, its size, tags, and last push and pull. Only
//! repositories the viewer may pull are listed.

use super::super::{Ctx, fmt};
use crate::auth::Action;
use crate::http::body::Body;
use crate::oci::RepoName;
use http::{Response, StatusCode};
use maud::html;

/// Repositories per page.
pub const PAGE: usize = 50;

pub fn get(ctx: &Ctx<'_>) -> Response<Body> {
    let index = &ctx.app.depot.index;
    let q = ctx.query("q").unwrap_or("").trim().to_owned();
    let last = ctx.query("last").map(str::to_owned);
    let mut rows = Vec::new();
    let mut cursor = last.clone();
    let mut more = false;
    // Names the viewer may not pull are skipped; read on until a page is full.
    'fill: loop {
        let names = match index.repos_with_prefix(&q, cursor.as_deref(), PAGE) {
            Ok(n) => n,
            Err(e) => return ctx.refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        let full = names.len() == PAGE;
        for name in names {
            cursor = Some(name.clone());
            let Ok(repo) = RepoName::parse(&name) else {
                continue;
            };
            if !ctx.may(&repo, Action::Pull) {
                continue;
            }
            if rows.len() == PAGE {
                more = true;
                break 'fill;
            }
            let summary = index.repo_summary(&repo).unwrap_or_default();
            rows.push((repo, summary));
        }
        if !full {
            break;
        }
    }
    let next_last = rows.last().map(|(r, _)| r.as_str().to_owned());
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let content = html! {
        form.card method="get" action="/ui/repos" {
            label for="q" { (ctx.t("search.prefix")) " " }
            input #q type="search" name="q" value=(q);
            " "
            button type="submit" { (ctx.t("search")) }
        }
        @if rows.is_empty() {
            p.muted { (ctx.t("none")) }
        } @else {
            table {
                thead { tr {
                    th { (ctx.t("repo")) }
                    th { (ctx.t("kind")) }
                    th.num { (ctx.t("tags")) }
                    th.num { (ctx.t("size")) }
                    th { (ctx.t("last_pushed")) }
                    th { (ctx.t("last_pulled")) }
                    th.num { (ctx.t("pulls")) }
                } }
                tbody {
                    @for (repo, s) in &rows {
                        tr {
                            td { a href={ "/ui/repo?name=" (enc(repo.as_str())) } { (repo.as_str()) } }
                            td {
                                @match (s.local, s.cached) {
                                    (true, true) => span.badge { (ctx.t("kind.mixed")) },
                                    (true, false) => span.badge.local { (ctx.t("kind.local")) },
                                    (false, true) => span.badge.cached { (ctx.t("kind.cached")) },
                                    (false, false) => span.muted { "—" },
                                }
                            }
                            td.num { (s.tags) }
                            td.num { (fmt::bytes(s.bytes)) @if s.partial { "+" } }
                            td { (fmt::time_ms(s.last_pushed).unwrap_or_else(|| "—".into())) }
                            td { (fmt::time_ms(s.last_pulled).unwrap_or_else(|| ctx.t("never").into())) }
                            td.num { (s.pulls) }
                        }
                    }
                }
            }
        }
        div.pager {
            @if last.is_some() {
                a href={ "/ui/repos?q=" (enc(&q)) } { (ctx.t("first")) }
            }
            @if more {
                @if let Some(l) = &next_last {
                    a href={ "/ui/repos?q=" (enc(&q)) "&last=" (enc(l)) } { (ctx.t("next")) " →" }
                }
            }
        }
    };
    ctx.page("/ui/repos", ctx.t("nav.repos"), content)
}
