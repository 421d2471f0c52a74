//! Air-gap bundles: `stevedore export` writes listed images (their listed platforms, and their
//! referrers) from local content to an OCI image-layout tar that skopeo and oras read;
//! `stevedore import` verifies every blob of such a tar, streamed, and only then adopts its
//! content as cached (or pushed). Works on `Registry` operations only; the tar format is the
//! `tar` crate's. Never on a request's path: run by the CLI with the server stopped, or by the
//! running server on its debug listener (`http/debug/content.rs`).

pub mod export;
pub mod import;

use crate::error::RegistryError;
use crate::oci::image_list::{self, ImageName, ListEntry, ListError};
use crate::oci::{Digest, Reference, RepoName};

pub use export::{ExportOptions, ExportReport, export};
pub use import::{ImportOptions, ImportReport, import};

/// The annotation skopeo (`oci-archive:FILE:NAME`) and oras look images up by.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The repository a descriptor of a bundle's `index.json` belongs to (referrers have no
/// `ref.name`, so the repository is said here for every entry).
pub const REPOSITORY: &str = "dev.stevedore.repository";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path} line {line}: {message}")]
    List {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("the bundle is incomplete: {0}")]
    Incomplete(String),
    #[error(
        "the bundle is damaged: {entry} does not match its digest (its bytes hash to {actual}); nothing was imported"
    )]
    Tampered { entry: String, actual: Digest },
    #[error("the bundle is not an OCI image layout: {0}")]
    Layout(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

impl BundleError {
    fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
        move |source| BundleError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A reference (`REPO:TAG`, `REPO@DIGEST`) as this registry names the repository: a `docker.io/`
/// prefix is dropped, as stevedore's Docker Hub mirror names repositories without it; any other
/// registry is refused, as export reads only this registry's content.
pub fn parse_name(s: &str) -> Result<(RepoName, Reference), String> {
    let image = ImageName::parse(s)?;
    match image.registry.as_deref() {
        None | Some("docker.io") => Ok((image.repo, image.reference)),
        Some(r) => Err(format!(
            "{s:?} names the registry {r}; write the repository as this registry serves it"
        )),
    }
}

/// Reads an export list (the format of `oci::image_list`; registries as `parse_name` takes them).
pub fn read_list(path: &std::path::Path) -> Result<Vec<ListEntry>, BundleError> {
    let text = std::fs::read_to_string(path).map_err(BundleError::io(path))?;
    parse_list(&path.display().to_string(), &text)
}

pub fn parse_list(path: &str, text: &str) -> Result<Vec<ListEntry>, BundleError> {
    let err = |e: ListError| BundleError::List {
        path: path.to_owned(),
        line: e.line,
        message: e.message,
    };
    let entries = image_list::parse_list(text).map_err(err)?;
    for e in &entries {
        parse_name(&e.image.text).map_err(|m| err(ListError::new(e.line, m)))?;
    }
    if entries.is_empty() {
        return Err(err(ListError::new(0, "lists no image")));
    }
    Ok(entries)
}

/// `blobs/<algorithm>/<hex>`: where a blob sits in an image layout.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// The digest a `blobs/<algorithm>/<hex>` path names.
pub fn blob_digest(path: &str) -> Option<Digest> {
    let rest = path
        .strip_prefix("./")
        .unwrap_or(path)
        .strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// A bundle's `index.json` as written (and the subset read back).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<crate::oci::Descriptor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lists_take_only_this_registrys_names() {
        let l = parse_list(
            "l",
            "library/alpine:3.20 linux/amd64\ndocker.io/team/app:1\nalpine:3\n",
        )
        .unwrap();
        assert_eq!(l[1].image.repo.as_str(), "team/app");
        assert_eq!(l[2].image.repo.as_str(), "alpine");
        let e = parse_list("l", "a/b:1\nghcr.io/x/y:1\n").unwrap_err();
        assert!(
            e.to_string().starts_with("l line 2: ") && e.to_string().contains("ghcr.io"),
            "{e}"
        );
        let e = parse_list("l", "a/b:1 linux\n").unwrap_err();
        assert!(e.to_string().starts_with("l line 1: "), "{e}");
        assert!(parse_list("l", "# nothing\n").is_err());
        assert_eq!(
            parse_name("docker.io/library/alpine:3").unwrap().0.as_str(),
            "library/alpine"
        );
    }

    #[test]
    fn blob_paths_round_trip() {
        let d = Digest::of(b"x");
        assert_eq!(blob_digest(&blob_path(&d)), Some(d.clone()));
        assert_eq!(blob_digest(&format!("./{}", blob_path(&d))), Some(d));
        assert_eq!(blob_digest("index.json"), None);
    }
}
