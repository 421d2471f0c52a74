//! Whole-image maintenance on the debug listener, for the running server (which holds the
//! index lock): `POST /debug/export`, `/debug/import` and `/debug/purge`. Paths in the query
//! are read and written by the server process, on its host. The same operations run in the
//! CLI with the server stopped (`offline_or_server`).

use super::{Body, text};
use crate::bundle::{self, BundleError};
use crate::config::Secret;
use crate::oci::{Reference, RepoName, Tag};
use crate::{App, StartError};
use http::{Response, StatusCode};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The endpoints this file answers (all `POST`, all mutating).
pub const PATHS: &[&str] = &["/debug/export", "/debug/import", "/debug/purge"];

/// A failure, with the status the debug listener answers it with.
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl From<BundleError> for Failure {
    fn from(e: BundleError) -> Failure {
        let status = match &e {
            BundleError::List { .. }
            | BundleError::Incomplete(_)
            | BundleError::Tampered { .. }
            | BundleError::Layout(_) => StatusCode::BAD_REQUEST,
            BundleError::NotFound(_) => StatusCode::NOT_FOUND,
            BundleError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            BundleError::Registry(r) => r.status(),
        };
        Failure {
            status,
            message: e.to_string(),
        }
    }
}

impl From<crate::error::RegistryError> for Failure {
    fn from(e: crate::error::RegistryError) -> Failure {
        BundleError::Registry(e).into()
    }
}

fn bad(message: impl Into<String>) -> Failure {
    Failure {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

fn json(report: &impl serde::Serialize) -> String {
    serde_json::to_string(report).expect("reports serialize")
}

/// `stevedore export`: the listed images into a bundle at `output`.
pub async fn export(
    app: &App,
    list: &Path,
    output: &Path,
    since: Option<&Path>,
) -> Result<String, Failure> {
    let options = bundle::ExportOptions {
        images: bundle::read_list(list)?,
        output: output.to_owned(),
        since: since.map(Path::to_owned),
    };
    Ok(json(&bundle::export(app.registry.clone(), &options).await?))
}

/// `stevedore import`: a bundle's images, as cached content or (`as_pushed`) as pushed.
pub async fn import(app: &App, path: &Path, as_pushed: bool) -> Result<String, Failure> {
    let options = bundle::ImportOptions {
        bundle: path.to_owned(),
        as_pushed,
    };
    Ok(json(&bundle::import(&app.registry, &options).await?))
}

/// `stevedore purge REPO[:TAG]`: drops one image's (or repository's) cached content.
pub async fn purge(app: &App, image: &str, pushed_too: bool) -> Result<String, Failure> {
    let (repo, tag) = parse_image(image).map_err(bad)?;
    let mirror = app.mirror.clone();
    let busy = move |d: &crate::oci::Digest| mirror.as_ref().is_some_and(|m| m.fetching(d));
    Ok(json(
        &app.registry
            .purge(&repo, tag.as_ref(), pushed_too, &busy)
            .await?,
    ))
}

/// `REPO` or `REPO:TAG`.
pub fn parse_image(s: &str) -> Result<(RepoName, Option<Tag>), String> {
    match bundle::parse_name(s) {
        Ok((repo, Reference::Tag(t))) => Ok((repo, Some(t))),
        Ok((_, Reference::Digest(_))) => {
            Err(format!("{s:?}: purge takes REPO or REPO:TAG, not a digest"))
        }
        Err(_) => RepoName::parse(s.strip_prefix("docker.io/").unwrap_or(s))
            .map(|r| (r, None))
            .map_err(|e| format!("{s:?}: {e}")),
    }
}

/// Answers one of `PATHS`.
pub(super) async fn answer(app: &App, path: &str, query: Option<&str>) -> Response<Body> {
    let q = crate::http::handlers::parse_query(query);
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let flag = |k: &str| matches!(get(k), Some("true" | "1"));
    let need = |k: &str| get(k).ok_or_else(|| bad(format!("{path} needs ?{k}=")));
    let result = async {
        match path {
            "/debug/export" => {
                export(
                    app,
                    Path::new(need("list")?),
                    Path::new(need("output")?),
                    get("since").map(Path::new),
                )
                .await
            }
            "/debug/import" => import(app, Path::new(need("bundle")?), flag("pushed")).await,
            _ => purge(app, need("image")?, flag("pushed")).await,
        }
    }
    .await;
    match result {
        Ok(report) => text(StatusCode::OK, "application/json", report),
        Err(f) => text(f.status, "text/plain", format!("{}\n", f.message)),
    }
}

/// Runs a maintenance command on the store itself when no server holds it, else asks the
/// running server's debug listener (`path_and_query`), as `stevedore gc` does.
pub async fn offline_or_server<F, Fut>(
    config: crate::config::Config,
    path_and_query: String,
    offline: F,
) -> Result<String, String>
where
    F: FnOnce(App) -> Fut,
    Fut: Future<Output = Result<String, Failure>>,
{
    let debug_addr = config.http.debug.addr;
    let token = config.http.debug.token.clone();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    match App::open_offline(config, metrics).await {
        Ok(app) => offline(app).await.map_err(|f| f.message),
        Err(StartError::Index {
            source: source @ crate::index::IndexError::Locked(_),
            ..
        }) => match debug_addr {
            Some(addr) => {
                super::post(addr, token.as_ref().map(Secret::expose), &path_and_query).await
            }
            None => Err(format!(
                "{source} (set http.debug.addr so this command can ask the running server, or stop it)"
            )),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// An absolute form of a path given on the command line, for the server to use.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// `path?k=v&…`, with the values encoded.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}
