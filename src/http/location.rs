//! The URLs the API hands out in `Location` headers, and the signed upload state they carry.
//!
//! Base of every `Location` (as distribution does): `http.host` when set; otherwise relative
//! (`relativeurls: true`, or unset: stevedore's default), or absolute from the request
//! (`relativeurls: false`: `X-Forwarded-Proto`/`X-Forwarded-Host`, then `Host`).
//!
//! Upload URLs carry distribution's `_state` parameter: base64url(HMAC-SHA256(secret, json) ‖
//! json) of the session's repository, id and offset, keyed by `http.secret`. A session is only
//! touched through a URL whose state verifies and names it; nothing here touches storage.

use super::handlers::Req;
use crate::error::{ErrorCode, RegistryError};
use crate::oci::RepoName;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

const MAC_LEN: usize = 32;

/// Where `Location` URLs point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlBase {
    /// `/v2/…`.
    Relative,
    /// `http.host` + `/v2/…`.
    Fixed(String),
    /// Scheme and host of each request + `/v2/…`; `tls` is the listener's scheme.
    FromRequest { tls: bool },
}

impl UrlBase {
    pub fn from_config(http: &crate::config::HttpConfig) -> UrlBase {
        match (&http.host, http.relativeurls) {
            (Some(h), relative) => {
                if relative == Some(true) {
                    tracing::warn!(
                        "http.relativeurls is ignored: http.host is set and wins, as in distribution"
                    );
                }
                UrlBase::Fixed(h.trim_end_matches('/').to_owned())
            }
            (None, Some(false)) => UrlBase::FromRequest {
                tls: http.tls.is_some(),
            },
            (None, Some(true) | None) => UrlBase::Relative,
        }
    }

    /// Where notification events' `target.url` points: as distribution, whose default (no
    /// `http.host`, `relativeurls` unset) is absolute from the request, unlike stevedore's
    /// `Location` headers.
    pub fn for_events(http: &crate::config::HttpConfig) -> UrlBase {
        match (&http.host, http.relativeurls) {
            (Some(h), _) => UrlBase::Fixed(h.trim_end_matches('/').to_owned()),
            (None, Some(true)) => UrlBase::Relative,
            (None, _) => UrlBase::FromRequest {
                tls: http.tls.is_some(),
            },
        }
    }

    /// What goes before `/v2/…` in a `Location` answering `req`: `""` for relative URLs.
    pub fn prefix(&self, req: &Req) -> String {
        match self {
            UrlBase::Relative => String::new(),
            UrlBase::Fixed(base) => base.clone(),
            UrlBase::FromRequest { tls } => {
                let first = |name: &str| {
                    req.header(name)
                        .and_then(|v| v.split(',').next())
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                };
                let scheme = match first("x-forwarded-proto") {
                    Some(p) if p.eq_ignore_ascii_case("https") => "https",
                    Some(p) if p.eq_ignore_ascii_case("http") => "http",
                    _ if *tls => "https",
                    _ => "http",
                };
                let host = first("x-forwarded-host")
                    .or_else(|| first("host"))
                    .or(req.authority.as_deref())
                    .filter(|h| valid_host(h));
                match host {
                    Some(h) => format!("{scheme}://{h}"),
                    // Nothing trustworthy to build on: a relative URL still works.
                    None => String::new(),
                }
            }
        }
    }
}

/// A host[:port] safe to put in a header (no path, no spaces, no control characters).
fn valid_host(h: &str) -> bool {
    h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

/// Signs and checks upload state (`http.secret`). Redacted in `Debug`.
#[derive(Clone)]
pub struct UploadKey(Vec<u8>);

impl std::fmt::Debug for UploadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadKey(<redacted>)")
    }
}

/// What an upload URL says about its session (distribution's `blobUploadState`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct UploadState {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "UUID")]
    uuid: String,
    #[serde(rename = "Offset")]
    offset: u64,
}

impl UploadKey {
    pub fn new(secret: &[u8]) -> UploadKey {
        UploadKey(secret.to_vec())
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// The `_state` token of `repo`'s session `id` at `offset`.
    pub fn pack(&self, repo: &RepoName, id: &str, offset: u64) -> String {
        let json = serde_json::to_vec(&UploadState {
            name: repo.to_string(),
            uuid: id.to_owned(),
            offset,
        })
        .expect("upload state serializes");
        let mut mac = self.mac();
        mac.update(&json);
        let mut token = mac.finalize().into_bytes().to_vec();
        token.extend_from_slice(&json);
        base64::engine::general_purpose::URL_SAFE.encode(token)
    }

    /// The upload URL path (with its `_state`) of `repo`'s session `id` at `offset`.
    pub fn upload_path(&self, repo: &RepoName, id: &str, offset: u64) -> String {
        let state: String =
            form_urlencoded::byte_serialize(self.pack(repo, id, offset).as_bytes()).collect();
        format!("/v2/{repo}/blobs/uploads/{id}?_state={state}")
    }

    /// Checks the `_state` of a request on `repo`'s session `id`: a URL without one was not
    /// issued here (`BLOB_UPLOAD_UNKNOWN`); a forged, altered or misplaced one is
    /// `BLOB_UPLOAD_INVALID`, as in distribution.
    pub fn check(
        &self,
        repo: &RepoName,
        id: &str,
        token: Option<&str>,
    ) -> Result<(), RegistryError> {
        let Some(token) = token else {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadUnknown,
                "upload URL without its _state parameter: use the Location the registry returned",
            ));
        };
        let invalid = |why: &str| {
            RegistryError::new(ErrorCode::BlobUploadInvalid, format!("upload state {why}"))
        };
        let raw = LENIENT
            .decode(token)
            .map_err(|_| invalid("is not base64"))?;
        if raw.len() <= MAC_LEN {
            return Err(invalid("is too short"));
        }
        let (tag, json) = raw.split_at(MAC_LEN);
        let mut mac = self.mac();
        mac.update(json);
        mac.verify_slice(tag).map_err(|_| {
            invalid("has a bad signature (forged, altered, or signed with another http.secret)")
        })?;
        let state: UploadState =
            serde_json::from_slice(json).map_err(|_| invalid("is not readable"))?;
        if state.name != repo.as_str() || state.uuid != id {
            return Err(invalid("names another upload"));
        }
        Ok(())
    }
}

/// URL-safe base64, padded or not (distribution pads; some proxies strip `=`).
const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).expect("repo")
    }

    #[test]
    fn state_round_trips_and_refuses_tampering() {
        let key = UploadKey::new(b"k1");
        let r = repo("a/b");
        let t = key.pack(&r, "id-1", 7);
        key.check(&r, "id-1", Some(&t)).expect("own token");
        key.check(&r, "id-1", Some(t.trim_end_matches('=')))
            .expect("unpadded");
        let code = |res: Result<(), RegistryError>| res.expect_err("refused").code;
        assert_eq!(
            code(key.check(&r, "id-1", None)),
            ErrorCode::BlobUploadUnknown
        );
        assert_eq!(
            code(key.check(&r, "id-2", Some(&t))),
            ErrorCode::BlobUploadInvalid
        );
        assert_eq!(
            code(key.check(&repo("a/c"), "id-1", Some(&t))),
            ErrorCode::BlobUploadInvalid
        );
        assert_eq!(
            code(UploadKey::new(b"k2").check(&r, "id-1", Some(&t))),
            ErrorCode::BlobUploadInvalid
        );
        // Flip one byte of the JSON part.
        let mut raw = base64::engine::general_purpose::URL_SAFE
            .decode(&t)
            .expect("b64");
        let last = raw.len() - 2;
        raw[last] ^= 1;
        let bad = base64::engine::general_purpose::URL_SAFE.encode(raw);
        assert_eq!(
            code(key.check(&r, "id-1", Some(&bad))),
            ErrorCode::BlobUploadInvalid
        );
        assert_eq!(
            code(key.check(&r, "id-1", Some("!!"))),
            ErrorCode::BlobUploadInvalid
        );
    }

    #[test]
    fn hosts_are_checked_before_use() {
        assert!(valid_host("reg.example:5000"));
        assert!(valid_host("[::1]:5000"));
        assert!(!valid_host("evil/x"));
        assert!(!valid_host("a b"));
    }
}
