//! Entry points for the fuzz targets (`fuzz/`) and the stable fuzz smoke test
//! (`tests/it/fuzz_smoke.rs`): each feeds arbitrary input to one of the crate's own parsers and
//! checks what must hold of its result. Not an API: hidden from the docs, free to change.

use crate::config::Config;
use crate::http::range::ByteRange;
use crate::http::route::Endpoint;
use crate::oci::{Digest, ParsedManifest, Reference, RepoName, Tag};

/// `Endpoint::parse` on any method and path; names it extracts come from the path.
pub fn route(method: &[u8], path: &str) {
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    if let Ok(Endpoint::GetManifest { name, .. } | Endpoint::PutManifest { name, .. }) =
        Endpoint::parse(&method, path)
    {
        assert!(path.contains(&name), "{name:?} not in {path:?}");
    }
}

/// Repository names, tags, references and digests: what parses is safe as a path and
/// round-trips.
pub fn names(s: &str) {
    if let Ok(n) = RepoName::parse(s) {
        let n = n.as_str();
        assert_eq!(n, s);
        assert!(n.len() <= crate::oci::name::MAX_NAME_LEN);
        assert!(!n.starts_with('/') && !n.ends_with('/'));
        assert!(n.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        assert!(n.bytes().all(|b| b.is_ascii_graphic()) && !n.contains('\\'));
    }
    if let Ok(t) = Tag::parse(s) {
        assert!(!t.as_str().contains('/') && t.as_str() != "." && t.as_str() != "..");
    }
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.as_str(), s);
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
        assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.as_str(), s);
        assert!(!r.as_str().contains('/'));
    }
}

/// A manifest body with an optional Content-Type: what parses names only valid digests.
pub fn manifest(bytes: &[u8], content_type: Option<&str>) {
    if let Ok(m) = ParsedManifest::parse(bytes, content_type) {
        for d in m.blobs.iter().chain(&m.manifests).chain(&m.subject) {
            assert!(Digest::parse(d.as_str()).is_ok());
        }
    }
}

/// A `Range` header against a blob of `size` bytes: a part is always inside the blob. The same
/// text as an upload's `Content-Range`: what parses is ordered, and the offset arithmetic done
/// on it (length, next offset) is checked, never overflowing.
pub fn range(header: &str, size: u64) {
    if let ByteRange::Part { start, end } = ByteRange::parse(Some(header), size) {
        assert!(
            start <= end && end < size,
            "{header:?} of {size}: {start}-{end}"
        );
    }
    if let Some((start, end)) = crate::http::range::chunk_range(header) {
        assert!(start <= end, "{header:?}: {start}-{end}");
        let len = (end - start).checked_add(1);
        let next = end.checked_add(1);
        assert_eq!(len.is_none(), start == 0 && end == u64::MAX, "{header:?}");
        assert!(next.is_some() || end == u64::MAX, "{header:?}");
    }
}

/// A configuration file: what loads is valid.
pub fn config(text: &str) {
    if let Ok(c) = Config::from_yaml_str(text) {
        assert!(c.validate().is_ok());
    }
}

/// An upstream's `WWW-Authenticate` header value: schemes and parameter names come out
/// lowercase.
pub fn www_authenticate(value: &str) {
    for c in crate::upstream::parse_challenges(value) {
        assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
        for (k, _) in &c.params {
            assert_eq!(*k, k.to_ascii_lowercase());
        }
    }
}

/// Byte-level entry points, one per fuzz target: each splits its input into the arguments of
/// the function above. The fuzz targets and the smoke test call these.
pub mod bytes {
    /// Method, a newline, then the path.
    pub fn route(data: &[u8]) {
        let (method, path) = split_line(data);
        if let Ok(path) = std::str::from_utf8(path) {
            super::route(method, path);
        }
    }

    pub fn names(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            super::names(s);
        }
    }

    /// First byte picks the Content-Type, the rest is the body.
    pub fn manifest(data: &[u8]) {
        const TYPES: &[Option<&str>] = &[
            None,
            Some("application/vnd.oci.image.manifest.v1+json"),
            Some("application/vnd.oci.image.index.v1+json"),
            Some("application/vnd.docker.distribution.manifest.v2+json"),
            Some("application/vnd.docker.distribution.manifest.list.v2+json"),
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            Some("application/json; charset=utf-8"),
            Some(""),
        ];
        let Some((&pick, body)) = data.split_first() else {
            return;
        };
        super::manifest(body, TYPES[usize::from(pick) % TYPES.len()]);
    }

    /// Eight bytes of blob size (little-endian), then the header.
    pub fn range(data: &[u8]) {
        if data.len() < 8 {
            return;
        }
        let (size, header) = data.split_at(8);
        let size = u64::from_le_bytes(size.try_into().expect("eight bytes"));
        if let Ok(h) = std::str::from_utf8(header) {
            super::range(h, size);
        }
    }

    pub fn config(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            super::config(s);
        }
    }

    pub fn www_authenticate(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            super::www_authenticate(s);
        }
    }

    fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
        match data.iter().position(|&b| b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, b"/"),
        }
    }
}

/// A byte-level fuzz entry point.
pub type Target = fn(&[u8]);

/// Every target, by name (the fuzz target and seed directory names).
pub const TARGETS: &[(&str, Target)] = &[
    ("route", bytes::route),
    ("names", bytes::names),
    ("manifest", bytes::manifest),
    ("range", bytes::range),
    ("config", bytes::config),
    ("www_authenticate", bytes::www_authenticate),
];
