//! Air-gap bundles: `stevedore export` writes listed images (their listed platforms, and their
//! referrers) from local content to an OCI image-layout tar that skopeo and oras read;
//! `stevedore import` verifies every blob of such a tar, streamed, and only then adopts its
//! content as cached (or pushed). Works on `Registry` operations only; the tar format is the
//! `tar` crate's. Never on a request's path: run by the CLI with the server stopped, or by the
//! running server on its debug listener (`http/debug/content.rs`).

pub mod export;
pub mod import;

use crate::error::RegistryError;
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

/// An `os/architecture[/variant]` a list entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _]
                if !os.is_empty() && !arch.is_empty() && parts.iter().all(|p| !p.is_empty()) =>
            {
                Ok(Platform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: parts.get(2).map(|v| v.to_string()),
                })
            }
            _ => Err(format!("platform {s:?} is not os/architecture[/variant]")),
        }
    }

    /// Whether an index entry's `platform` object is this one (no variant asked: any).
    pub fn matches(&self, p: &serde_json::Value) -> bool {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str());
        field("os") == Some(&self.os)
            && field("architecture") == Some(&self.architecture)
            && self
                .variant
                .as_deref()
                .is_none_or(|v| field("variant") == Some(v))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One line of an image list: `REPO:TAG` or `REPO@DIGEST`, then optionally a comma-separated
/// list of platforms (`linux/amd64,linux/arm64/v8`); none means every platform held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repo: RepoName,
    pub reference: Reference,
    pub platforms: Vec<Platform>,
}

impl ImageRef {
    /// `REPO:TAG` or `REPO@DIGEST`, as `ref.name` says it.
    pub fn name(&self) -> String {
        match &self.reference {
            Reference::Tag(t) => format!("{}:{t}", self.repo),
            Reference::Digest(d) => format!("{}@{d}", self.repo),
        }
    }

    /// Parses a reference (`REPO:TAG`, `REPO@DIGEST`; a leading `docker.io/` is dropped, as
    /// stevedore's Docker Hub mirror names repositories without it).
    pub fn parse_name(s: &str) -> Result<(RepoName, Reference), String> {
        let s = s.strip_prefix("docker.io/").unwrap_or(s);
        let (repo, reference) = if let Some((r, d)) = s.split_once('@') {
            (
                r,
                Reference::Digest(Digest::parse(d).map_err(|e| e.to_string())?),
            )
        } else {
            let slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
            match s[slash..].rfind(':') {
                Some(i) => (
                    &s[..slash + i],
                    Reference::parse(&s[slash + i + 1..]).map_err(|e| e.to_string())?,
                ),
                None => {
                    return Err(format!(
                        "{s:?} names no tag or digest (write REPO:TAG or REPO@sha256:…)"
                    ));
                }
            }
        };
        let first = repo.split('/').next().unwrap_or("");
        if first.contains('.') || first.contains(':') || first == "localhost" {
            return Err(format!(
                "{s:?} names a registry host; write the repository as this registry serves it"
            ));
        }
        let repo = RepoName::parse(repo).map_err(|e| format!("{repo:?}: {e}"))?;
        Ok((repo, reference))
    }
}

/// Reads an image list: one image per line, `#` starts a comment, blank lines are skipped.
pub fn read_list(path: &std::path::Path) -> Result<Vec<ImageRef>, BundleError> {
    let text = std::fs::read_to_string(path).map_err(BundleError::io(path))?;
    parse_list(&path.display().to_string(), &text)
}

pub fn parse_list(path: &str, text: &str) -> Result<Vec<ImageRef>, BundleError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| BundleError::List {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().expect("a non-empty line has a word");
        let (repo, reference) = ImageRef::parse_name(name).map_err(err)?;
        let platforms = match words.next() {
            None => Vec::new(),
            Some(p) => p
                .split(',')
                .filter(|p| !p.is_empty())
                .map(Platform::parse)
                .collect::<Result<_, _>>()
                .map_err(err)?,
        };
        if let Some(extra) = words.next() {
            return Err(err(format!(
                "unexpected {extra:?}: a line is REFERENCE [PLATFORM,…]"
            )));
        }
        out.push(ImageRef {
            repo,
            reference,
            platforms,
        });
    }
    if out.is_empty() {
        return Err(BundleError::List {
            path: path.to_owned(),
            line: 0,
            message: "lists no image".into(),
        });
    }
    Ok(out)
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
    fn list_lines() {
        let l = parse_list(
            "l",
            "# images\nlibrary/alpine:3.20 linux/amd64,linux/arm64/v8\n\ndocker.io/team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000  # pinned\nlocalhost-ish/x:1\n",
        )
        .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].name(), "library/alpine:3.20");
        assert_eq!(l[0].platforms[1].variant.as_deref(), Some("v8"));
        assert!(matches!(l[1].reference, Reference::Digest(_)));
        assert_eq!(l[1].repo.as_str(), "team/app");
        for bad in [
            "library/alpine",
            "ghcr.io/x/y:1",
            "a/b:1 linux",
            "a/b:1 linux/amd64 extra",
            "A/b:1",
        ] {
            assert!(parse_list("l", bad).is_err(), "{bad}");
        }
        assert!(parse_list("l", "# nothing\n").is_err());
    }

    #[test]
    fn platforms_match_index_entries() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(
            p.matches(&serde_json::json!({"os":"linux","architecture":"arm64","variant":"v8"}))
        );
        assert!(!p.matches(&serde_json::json!({"os":"linux","architecture":"amd64"})));
        let v = Platform::parse("linux/arm/v7").unwrap();
        assert!(!v.matches(&serde_json::json!({"os":"linux","architecture":"arm","variant":"v6"})));
    }

    #[test]
    fn blob_paths_round_trip() {
        let d = Digest::of(b"x");
        assert_eq!(blob_digest(&blob_path(&d)), Some(d.clone()));
        assert_eq!(blob_digest(&format!("./{}", blob_path(&d))), Some(d));
        assert_eq!(blob_digest("index.json"), None);
    }
}
