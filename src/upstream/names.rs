//! Names and URLs: checking repository names, references and queries before they go into
//! a URL; the upstream's base URL; token scopes; redirect targets and the same-origin rule
//! that decides whether Authorization may be sent.

use super::error::UpstreamError;
use http::Uri;

/// `repository:<repo>:pull`, with Docker Hub's `library/` for single-component names.
pub fn pull_scope(repo: &str, docker_hub: bool) -> String {
    if docker_hub && !repo.contains('/') {
        format!("repository:library/{repo}:pull")
    } else {
        format!("repository:{repo}:pull")
    }
}

/// Splits the configured URL into the base string and its parsed form.
pub fn parse_base(remote_url: &str) -> Result<(String, Uri), UpstreamError> {
    let trimmed = remote_url.trim().trim_end_matches('/');
    let uri = parse_url(trimmed)?;
    if uri.query().is_some() {
        return Err(UpstreamError::Invalid(format!(
            "upstream URL {remote_url:?} must not have a query"
        )));
    }
    Ok((trimmed.to_string(), uri))
}

/// An absolute http(s) URL.
pub fn parse_url(url: &str) -> Result<Uri, UpstreamError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| UpstreamError::Invalid(format!("bad URL {url:?}")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(UpstreamError::Invalid(format!(
            "URL {url:?} is not an absolute http(s) URL"
        )));
    }
    Ok(uri)
}

pub fn is_docker_hub(uri: &Uri) -> bool {
    matches!(
        uri.host().map(str::to_ascii_lowercase).as_deref(),
        Some("registry-1.docker.io") | Some("index.docker.io") | Some("docker.io")
    )
}

/// Same scheme, host and port (default ports filled in).
pub fn same_origin(a: &Uri, b: &Uri) -> bool {
    let port = |u: &Uri| {
        u.port_u16().unwrap_or(if u.scheme_str() == Some("https") {
            443
        } else {
            80
        })
    };
    a.scheme_str() == b.scheme_str()
        && matches!((a.host(), b.host()), (Some(x), Some(y)) if x.eq_ignore_ascii_case(y))
        && port(a) == port(b)
}

/// The URL a Location header points to, relative to the URL that answered.
pub fn resolve_location(current: &Uri, location: &str) -> Result<Uri, UpstreamError> {
    let location = location.trim();
    let scheme = current.scheme_str().unwrap_or("https");
    let authority = current.authority().map(|a| a.as_str()).unwrap_or("");
    let has_scheme = location.split_once(':').is_some_and(|(s, _)| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let absolute = if has_scheme {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = current.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{authority}{dir}/{location}")
    };
    parse_url(&absolute)
}

/// Repository names: `/`-separated components of `[a-z0-9._-]`, none empty, `.` or `..`.
pub fn check_repo(repo: &str) -> Result<(), UpstreamError> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    if repo.len() <= 255 && repo.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(UpstreamError::Invalid(format!(
            "bad repository name {repo:?}"
        )))
    }
}

/// Tags and digests: `[A-Za-z0-9._:+=-]`, at most 256 characters, not `.` or `..`.
pub fn check_reference(reference: &str) -> Result<(), UpstreamError> {
    let ok = !reference.is_empty()
        && reference.len() <= 256
        && reference != "."
        && reference != ".."
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:+=-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(UpstreamError::Invalid(format!(
            "bad reference {reference:?}"
        )))
    }
}

/// Tag list queries: printable ASCII without spaces or `#`.
pub fn check_query(query: &str) -> Result<(), UpstreamError> {
    let ok = query.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
    if ok {
        Ok(())
    } else {
        Err(UpstreamError::Invalid(format!("bad query {query:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn origins() {
        assert!(same_origin(
            &uri("https://a.io/x"),
            &uri("https://A.io:443/y")
        ));
        assert!(!same_origin(&uri("https://a.io/x"), &uri("http://a.io/x")));
        assert!(!same_origin(
            &uri("http://127.0.0.1:5/"),
            &uri("http://localhost:5/")
        ));
        assert!(!same_origin(&uri("http://a:1/"), &uri("http://a:2/")));
    }

    #[test]
    fn locations() {
        let cur = uri("https://reg.io/v2/a/blobs/sha256:1");
        assert_eq!(
            resolve_location(&cur, "https://cdn.io/x?sig=1")
                .unwrap()
                .to_string(),
            "https://cdn.io/x?sig=1"
        );
        assert_eq!(
            resolve_location(&cur, "/cdn/1").unwrap().to_string(),
            "https://reg.io/cdn/1"
        );
        assert_eq!(
            resolve_location(&cur, "//cdn.io/y").unwrap().to_string(),
            "https://cdn.io/y"
        );
        assert_eq!(
            resolve_location(&cur, "z").unwrap().to_string(),
            "https://reg.io/v2/a/blobs/z"
        );
        assert!(resolve_location(&cur, "ftp://x/y").is_err());
    }

    #[test]
    fn names() {
        assert!(check_repo("library/alpine").is_ok());
        assert!(check_repo("a/b-c/d_e.f").is_ok());
        for bad in ["", "/a", "a/", "a//b", "A", "a/../b", "a?b", "a b", "a#b"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert!(check_reference("latest").is_ok());
        assert!(check_reference("sha256:abc").is_ok());
        for bad in ["", "..", "a/b", "a?b", "a b"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
        assert!(check_query("n=10&last=x").is_ok());
        assert!(check_query("n=1 0").is_err());
        assert!(check_query("a#b").is_err());
    }

    #[test]
    fn base_urls() {
        let (base, u) = parse_base("https://registry-1.docker.io/").unwrap();
        assert_eq!(base, "https://registry-1.docker.io");
        assert!(is_docker_hub(&u));
        let (base, u) = parse_base("http://127.0.0.1:1234/prefix").unwrap();
        assert_eq!(base, "http://127.0.0.1:1234/prefix");
        assert!(!is_docker_hub(&u));
        assert!(parse_base("registry-1.docker.io").is_err());
        assert!(parse_base("ftp://x").is_err());
        assert!(parse_base("http://x/?q").is_err());
        assert_eq!(pull_scope("alpine", true), "repository:library/alpine:pull");
        assert_eq!(pull_scope("alpine", false), "repository:alpine:pull");
    }
}
