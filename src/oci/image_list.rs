//! Image lists, the one text format of warm lists (`mirror/warm.rs`) and export lists
//! (`bundle/`): one image a line, `[REGISTRY/]REPO(:TAG|@DIGEST) [OS/ARCH[/VARIANT],…]`, `#`
//! starts a comment, blank lines are skipped. Platforms are separated by commas or spaces; none
//! listed means every platform. `REPO:TAG@DIGEST` is read as the digest (the tag is ignored).
//! A first path part with a `.` or `:`, or `localhost`, is a registry (lowercased; Docker Hub's
//! names are all `docker.io`). What a registry means is the caller's: a warm list picks the
//! upstream by it, an export list refuses any but Docker Hub's. Pure: no I/O.

use super::{Digest, Reference, RepoName, Tag};

/// Registries named as Docker Hub in image references.
const DOCKER_HUB_NAMES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// A platform of a multi-arch index, as `os/arch[/variant]`.
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
            [os, arch] | [os, arch, _] if parts.iter().all(|p| !p.is_empty()) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(format!("platform {s:?} is not os/arch or os/arch/variant")),
        }
    }

    /// Whether an index entry's `platform` object is this platform (a variant left out here
    /// matches any).
    pub fn matches(&self, p: &serde_json::Value) -> bool {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str());
        field("os") == Some(self.os.as_str())
            && field("architecture") == Some(self.architecture.as_str())
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

/// One image reference: `[REGISTRY/]REPO(:TAG|@DIGEST)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// The reference as written.
    pub text: String,
    /// The registry named, if any (lowercased; Docker Hub's names as `docker.io`).
    pub registry: Option<String>,
    /// The repository as written after the registry (no `library/` added).
    pub repo: RepoName,
    pub reference: Reference,
}

impl ImageName {
    /// Parses `[REGISTRY/]REPO(:TAG|@DIGEST)`.
    pub fn parse(image: &str) -> Result<ImageName, String> {
        let bad = |why: String| format!("{image:?}: {why}");
        // `name@digest` (a tag before the digest is ignored), else `name:tag`.
        let (name, reference) = match image.split_once('@') {
            Some((name, d)) => {
                let d = Digest::parse(d).map_err(|e| bad(e.to_string()))?;
                let name = match name.rsplit_once(':') {
                    Some((n, t)) if !t.contains('/') => n,
                    _ => name,
                };
                (name, Reference::Digest(d))
            }
            None => match image.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (
                    n,
                    Reference::Tag(Tag::parse(t).map_err(|e| bad(e.to_string()))?),
                ),
                _ => {
                    return Err(bad(
                        "names no tag or digest (write REPO:TAG or REPO@sha256:…)".to_owned(),
                    ));
                }
            },
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                let r = first.to_ascii_lowercase();
                let r = if DOCKER_HUB_NAMES.contains(&r.as_str()) {
                    "docker.io".to_owned()
                } else {
                    r
                };
                (Some(r), rest)
            }
            _ => (None, name),
        };
        let repo = RepoName::parse(path).map_err(|e| bad(format!("{path:?}: {e}")))?;
        Ok(ImageName {
            text: image.to_owned(),
            registry,
            repo,
            reference,
        })
    }

    /// Whether the registry is Docker Hub, named or implied.
    pub fn is_docker_hub(&self) -> bool {
        self.registry.as_deref().is_none_or(|r| r == "docker.io")
    }

    /// The repository by Docker Hub's rule: on Docker Hub (named or implied), a one-part name is
    /// an official image (`alpine` is `library/alpine`).
    pub fn hub_repo(&self) -> RepoName {
        if self.is_docker_hub() && !self.repo.as_str().contains('/') {
            RepoName::parse(&format!("library/{}", self.repo))
                .expect("library/ and a valid name is a valid name")
        } else {
            self.repo.clone()
        }
    }

    /// `REPO:TAG` or `REPO@DIGEST`, without the registry.
    pub fn name(&self) -> String {
        match &self.reference {
            Reference::Tag(t) => format!("{}:{t}", self.repo),
            Reference::Digest(d) => format!("{}@{d}", self.repo),
        }
    }
}

/// One line of an image list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Its line in the list (from 1).
    pub line: usize,
    pub image: ImageName,
    /// Empty: every platform.
    pub platforms: Vec<Platform>,
}

/// Why an image list cannot be used: its line, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ListError {
    pub line: usize,
    pub message: String,
}

impl ListError {
    pub fn new(line: usize, message: impl Into<String>) -> ListError {
        ListError {
            line,
            message: message.into(),
        }
    }
}

/// Parses an image list (see the module header). An empty list is not an error here.
pub fn parse_list(text: &str) -> Result<Vec<ListEntry>, ListError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| ListError::new(i + 1, message);
        let mut words = line.split_whitespace();
        let image = ImageName::parse(words.next().unwrap_or_default()).map_err(err)?;
        let platforms = words
            .flat_map(|w| w.split(','))
            .filter(|p| !p.is_empty())
            .map(Platform::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        out.push(ListEntry {
            line: i + 1,
            image,
            platforms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_images_and_platforms() {
        let list = parse_list(
            "# comment\n\
             docker.io/library/alpine:3.20 linux/amd64,linux/arm64/v8\n\
             \n\
             alpine:3.19   # trailing comment\n\
             ghcr.io/org/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             127.0.0.1:5000/team/app:v1 linux/amd64 linux/arm64\n\
             INDEX.docker.io/nginx:1@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             localhost-ish/x:1\n",
        )
        .unwrap();
        assert_eq!(list.len(), 6);
        let [a, b, c, d, e, f] = &list[..] else {
            unreachable!()
        };
        assert_eq!(a.line, 2);
        assert_eq!(a.image.registry.as_deref(), Some("docker.io"));
        assert_eq!(a.image.repo.as_str(), "library/alpine");
        assert_eq!(a.image.name(), "library/alpine:3.20");
        assert_eq!(a.platforms.len(), 2);
        assert_eq!(a.platforms[1].to_string(), "linux/arm64/v8");
        assert_eq!(a.platforms[1].variant.as_deref(), Some("v8"));
        assert_eq!((b.line, b.image.registry.as_deref()), (4, None));
        assert_eq!(b.image.repo.as_str(), "alpine");
        assert_eq!(b.image.hub_repo().as_str(), "library/alpine");
        assert_eq!(c.image.registry.as_deref(), Some("ghcr.io"));
        assert_eq!(c.image.repo.as_str(), "org/app");
        assert!(matches!(c.image.reference, Reference::Digest(_)));
        assert_eq!(d.image.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(d.image.hub_repo().as_str(), "team/app");
        assert_eq!(d.platforms.len(), 2);
        assert_eq!(e.image.registry.as_deref(), Some("docker.io"));
        assert_eq!(e.image.hub_repo().as_str(), "library/nginx");
        assert!(matches!(e.image.reference, Reference::Digest(_)));
        assert_eq!(f.image.registry, None);
        assert_eq!(f.image.name(), "localhost-ish/x:1");
        assert!(parse_list("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line) in [
            ("alpine\n", 1),
            ("library/alpine\n", 1),
            ("a:1\nb:2 linux\n", 2),
            ("a/b:1 linux/amd64 extra\n", 1),
            ("a:1 linux//v7\n", 1),
            ("a:1\n\nx@sha256:zz\n", 3),
            ("UPPER/case:1\n", 1),
            ("a:1\nb:Not$A$Tag\n", 2),
        ] {
            let e = parse_list(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
        }
    }

    #[test]
    fn platforms_match_index_entries() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(
            p.matches(&serde_json::json!({"os":"linux","architecture":"arm64","variant":"v8"}))
        );
        assert!(!p.matches(&serde_json::json!({"os":"linux","architecture":"amd64"})));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(
            !v7.matches(&serde_json::json!({"os":"linux","architecture":"arm","variant":"v6"}))
        );
        assert!(v7.matches(&serde_json::json!({"os":"linux","architecture":"arm","variant":"v7"})));
        for bad in ["linux", "linux/", "/amd64", "linux/arm/v7/x"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
