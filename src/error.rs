//! `RegistryError`: what the API layer answers when something fails, as an OCI error code, an
//! HTTP status and a message. Every lower layer's error (`StoreError`, `IndexError`,
//! `UpstreamError`, `NameError`, …) is mapped here, once. Turning it into a response is the
//! HTTP layer's job (`http::response::error`).

use crate::auth::AuthError;
use crate::index::IndexError;
use crate::oci::{DigestError, ManifestError, NameError};
use crate::storage::StoreError;
use crate::upstream::UpstreamError;
use http::StatusCode;
use serde::Serialize;

/// The error codes of the OCI distribution spec, plus distribution's extras.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    RangeInvalid,
    PaginationNumberInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
    StorageFull,
    Unknown,
}

impl ErrorCode {
    /// Every code, so that the error counter exists from start-up for each. A new variant
    /// belongs here too (the test `all_codes_are_listed` stops compiling until it is).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BlobUnknown,
        ErrorCode::BlobUploadInvalid,
        ErrorCode::BlobUploadUnknown,
        ErrorCode::DigestInvalid,
        ErrorCode::ManifestBlobUnknown,
        ErrorCode::ManifestInvalid,
        ErrorCode::ManifestUnknown,
        ErrorCode::NameInvalid,
        ErrorCode::NameUnknown,
        ErrorCode::SizeInvalid,
        ErrorCode::TagInvalid,
        ErrorCode::RangeInvalid,
        ErrorCode::PaginationNumberInvalid,
        ErrorCode::Unauthorized,
        ErrorCode::Denied,
        ErrorCode::Unsupported,
        ErrorCode::TooManyRequests,
        ErrorCode::Unavailable,
        ErrorCode::StorageFull,
        ErrorCode::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::StorageFull => "UNKNOWN",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::TagInvalid
            | ErrorCode::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Overrides `code.status()` where the spec asks for another status (413, 416…).
    pub status: Option<StatusCode>,
    /// Extra response headers (Retry-After, WWW-Authenticate).
    pub headers: Vec<(http::HeaderName, String)>,
    /// Where the upload the request was about stands, when the failure concerns it (a chunk
    /// that does not start at the upload's end): the HTTP layer states it in headers.
    pub upload: Option<UploadPosition>,
}

/// Where an upload session stands: its id and the bytes it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPosition {
    pub id: String,
    pub offset: u64,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RegistryError {
        RegistryError {
            code,
            message: message.into(),
            detail: None,
            status: None,
            headers: Vec::new(),
            upload: None,
        }
    }

    /// Says where the upload stands (see `upload`).
    pub fn at_upload(mut self, position: UploadPosition) -> RegistryError {
        self.upload = Some(position);
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> RegistryError {
        self.detail = Some(detail);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> RegistryError {
        self.status = Some(status);
        self
    }

    pub fn with_header(
        mut self,
        name: http::HeaderName,
        value: impl Into<String>,
    ) -> RegistryError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.status())
    }

    pub fn blob_unknown(digest: &impl std::fmt::Display) -> RegistryError {
        RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .detail(serde_json::json!({ "digest": digest.to_string() }))
    }

    pub fn manifest_unknown(reference: &impl std::fmt::Display) -> RegistryError {
        RegistryError::new(ErrorCode::ManifestUnknown, "manifest unknown")
            .detail(serde_json::json!({ "reference": reference.to_string() }))
    }

    pub fn name_unknown(name: &impl std::fmt::Display) -> RegistryError {
        RegistryError::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .detail(serde_json::json!({ "name": name.to_string() }))
    }

    pub fn upload_unknown() -> RegistryError {
        RegistryError::new(
            ErrorCode::BlobUploadUnknown,
            "blob upload unknown to registry",
        )
    }

    pub fn unsupported(message: impl Into<String>) -> RegistryError {
        RegistryError::new(ErrorCode::Unsupported, message)
    }

    pub fn internal(message: impl Into<String>) -> RegistryError {
        RegistryError::new(ErrorCode::Unknown, message)
    }

    /// The JSON body of the spec's error envelope.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            errors: [Entry<'a>; 1],
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<&'a serde_json::Value>,
        }
        serde_json::to_vec(&Envelope {
            errors: [Entry {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        })
        .expect("error envelope serializes")
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for RegistryError {}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::InvalidName(_) | NameError::NameTooLong => {
                RegistryError::new(ErrorCode::NameInvalid, e.to_string())
            }
            NameError::InvalidTag(_) => RegistryError::new(ErrorCode::TagInvalid, e.to_string()),
            NameError::Digest(d) => d.into(),
        }
    }
}

impl From<DigestError> for RegistryError {
    fn from(e: DigestError) -> Self {
        RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<ManifestError> for RegistryError {
    fn from(e: ManifestError) -> Self {
        RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DigestMismatch { expected, actual } => {
                RegistryError::new(ErrorCode::DigestInvalid, "provided digest did not match uploaded content")
                    .detail(serde_json::json!({ "expected": expected.to_string(), "actual": actual.to_string() }))
            }
            StoreError::SizeMismatch { expected, actual } => RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("provided length {expected} did not match content length {actual}"),
            ),
            StoreError::Full => RegistryError::new(
                ErrorCode::StorageFull,
                "no space left on the registry's storage device",
            ),
            StoreError::TooLarge(limit) => RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("content is larger than the limit of {limit} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            StoreError::UploadMoved(_) => {
                RegistryError::new(ErrorCode::RangeInvalid, e.to_string())
            }
            StoreError::ReadOnly => RegistryError::unsupported(
                "the registry is in read-only mode (storage.maintenance.readonly)",
            ),
            StoreError::Io(_) => RegistryError::internal(format!("storage error: {e}")),
        }
    }
}

impl From<AuthError> for RegistryError {
    fn from(e: AuthError) -> Self {
        let detail = e.detail();
        let err = match e {
            AuthError::Unauthorized {
                reason, challenge, ..
            } => RegistryError::new(ErrorCode::Unauthorized, reason)
                .with_header(http::header::WWW_AUTHENTICATE, challenge.to_string()),
            AuthError::Denied { reason, .. } => RegistryError::new(ErrorCode::Denied, reason),
            AuthError::Unavailable(reason) => RegistryError::internal(reason),
        };
        match detail {
            Some(d) => err.detail(d),
            None => err,
        }
    }
}

impl From<IndexError> for RegistryError {
    fn from(e: IndexError) -> Self {
        RegistryError::internal(format!("index error: {e}"))
    }
}

impl From<UpstreamError> for RegistryError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::NotFound => {
                RegistryError::new(ErrorCode::NameUnknown, "not found upstream")
            }
            UpstreamError::Unauthorized(m) => RegistryError::new(
                ErrorCode::Unauthorized,
                format!("upstream refused our credentials: {m}"),
            ),
            UpstreamError::Denied(m) => {
                RegistryError::new(ErrorCode::Denied, format!("upstream denied access: {m}"))
            }
            UpstreamError::TooManyRequests { retry_after } => {
                let err = RegistryError::new(
                    ErrorCode::TooManyRequests,
                    "upstream rate limit reached and the content is not cached",
                );
                match retry_after {
                    Some(r) => err.with_header(http::header::RETRY_AFTER, r),
                    None => err,
                }
            }
            UpstreamError::TooLarge => RegistryError::new(
                ErrorCode::ManifestInvalid,
                "upstream manifest is larger than 4 MiB",
            ),
            UpstreamError::Offline => RegistryError::new(
                ErrorCode::Unavailable,
                "the mirror is offline (proxy.offline) and the content is not cached",
            ),
            UpstreamError::CircuitOpen {
                retry_after_secs,
                last_error,
            } => RegistryError::new(
                ErrorCode::Unavailable,
                format!(
                    "upstream is failing and the content is not cached; last error: {last_error}; next attempt in {retry_after_secs}s"
                ),
            )
            .with_header(http::header::RETRY_AFTER, retry_after_secs.to_string()),
            other => RegistryError::new(
                ErrorCode::Unavailable,
                format!("upstream unavailable and the content is not cached: {other}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_spec_json() {
        let e = RegistryError::blob_unknown(&"sha256:x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["detail"]["digest"], "sha256:x");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }
    #[test]
    fn all_codes_are_listed() {
        // Exhaustive: a new variant stops this compiling until it is in `ALL` and here.
        fn index(c: ErrorCode) -> usize {
            match c {
                ErrorCode::BlobUnknown => 0,
                ErrorCode::BlobUploadInvalid => 1,
                ErrorCode::BlobUploadUnknown => 2,
                ErrorCode::DigestInvalid => 3,
                ErrorCode::ManifestBlobUnknown => 4,
                ErrorCode::ManifestInvalid => 5,
                ErrorCode::ManifestUnknown => 6,
                ErrorCode::NameInvalid => 7,
                ErrorCode::NameUnknown => 8,
                ErrorCode::SizeInvalid => 9,
                ErrorCode::TagInvalid => 10,
                ErrorCode::RangeInvalid => 11,
                ErrorCode::PaginationNumberInvalid => 12,
                ErrorCode::Unauthorized => 13,
                ErrorCode::Denied => 14,
                ErrorCode::Unsupported => 15,
                ErrorCode::TooManyRequests => 16,
                ErrorCode::Unavailable => 17,
                ErrorCode::StorageFull => 18,
                ErrorCode::Unknown => 19,
            }
        }
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(index(*c), i, "{}", c.as_str());
        }
        assert_eq!(ErrorCode::ALL.len(), 20);
    }
}
