//! Manifest parsing: enough of an image manifest or index to validate it, find the blobs and
//! manifests it references, and answer the referrers API. The bytes are stored as they came.

use super::digest::Digest;
use super::media;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest manifest accepted, pushed or fetched.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("descriptor has an invalid digest: {0}")]
    BadDescriptor(String),
    #[error("image manifest has no config descriptor")]
    MissingConfig,
}

/// A content descriptor, as in manifests and in the referrers index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What stevedore needs to know of a manifest.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub media_type: String,
    /// Config and layers that must be present in the repository (foreign layers excluded).
    pub blobs: Vec<Digest>,
    /// Child manifests of an index.
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    /// Parses `bytes` sent with `content_type` (which may be absent or generic). The media type is
    /// the Content-Type when it names a manifest type, else the body's `mediaType`, else guessed
    /// from the shape (OCI allows manifests without `mediaType`).
    pub fn parse(
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<ParsedManifest, ManifestError> {
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        let header = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|c| !c.is_empty());
        if let Some(h) = &header
            && (h == media::DOCKER_MANIFEST_V1 || h == media::DOCKER_MANIFEST_V1_SIGNED)
        {
            return Err(ManifestError::UnsupportedMediaType(h.clone()));
        }
        let header_type = header.filter(|h| media::is_manifest_type(h));
        let media_type = match (&header_type, &raw.media_type) {
            (Some(h), Some(b)) if h != b => {
                return Err(ManifestError::MediaTypeMismatch {
                    body: b.clone(),
                    header: h.clone(),
                });
            }
            (Some(h), _) => h.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) if !raw.manifests.is_empty() => media::OCI_INDEX.to_owned(),
            (None, None) => media::OCI_MANIFEST.to_owned(),
        };
        if !media::is_manifest_type(&media_type) {
            return Err(ManifestError::UnsupportedMediaType(media_type));
        }
        if raw.schema_version != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let digest_of = |d: &Descriptor| {
            Digest::parse(&d.digest).map_err(|e| ManifestError::BadDescriptor(e.to_string()))
        };
        let mut blobs = Vec::new();
        let mut manifests = Vec::new();
        if media::is_index(&media_type) {
            for m in &raw.manifests {
                manifests.push(digest_of(m)?);
            }
        } else {
            let config = raw.config.as_ref().ok_or(ManifestError::MissingConfig)?;
            blobs.push(digest_of(config)?);
            for layer in &raw.layers {
                let d = digest_of(layer)?;
                let foreign = layer.media_type == media::DOCKER_FOREIGN_LAYER
                    || layer
                        .media_type
                        .starts_with(media::OCI_NONDISTRIBUTABLE_PREFIX);
                if !foreign {
                    blobs.push(d);
                }
            }
        }
        let subject = raw.subject.as_ref().map(digest_of).transpose()?;
        // The referrers API reports artifactType, else the config's media type for manifests.
        let artifact_type = raw.artifact_type.clone().or_else(|| {
            (!media::is_index(&media_type))
                .then(|| raw.config.as_ref().map(|c| c.media_type.clone()))
                .flatten()
        });
        Ok(ParsedManifest {
            media_type,
            blobs,
            manifests,
            subject,
            artifact_type,
            annotations: raw.annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> String {
        Digest::of(s.as_bytes()).to_string()
    }

    #[test]
    fn image_manifest() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::DOCKER_MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d("c"), "size": 1},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d("l"), "size": 1},
                {"mediaType": media::DOCKER_FOREIGN_LAYER, "digest": d("f"), "size": 1, "urls": ["http://x"]}
            ]
        });
        let m = ParsedManifest::parse(body.to_string().as_bytes(), None).unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST_V2);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.docker.container.image.v1+json")
        );
        let err = ParsedManifest::parse(body.to_string().as_bytes(), Some(media::OCI_MANIFEST));
        assert!(matches!(err, Err(ManifestError::MediaTypeMismatch { .. })));
    }

    #[test]
    fn index_and_subject() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": media::OCI_MANIFEST, "digest": d("a"), "size": 3}],
            "subject": {"mediaType": media::OCI_MANIFEST, "digest": d("s"), "size": 3}
        });
        let m = ParsedManifest::parse(body.to_string().as_bytes(), Some(media::OCI_INDEX)).unwrap();
        assert_eq!(m.media_type, media::OCI_INDEX);
        assert_eq!(m.manifests.len(), 1);
        assert_eq!(m.subject.unwrap().to_string(), d("s"));
    }

    #[test]
    fn invalid_manifests() {
        assert!(matches!(
            ParsedManifest::parse(b"{", None),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            ParsedManifest::parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::MissingConfig | ManifestError::SchemaVersion)
        ));
        let bad = serde_json::json!({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:nothex", "size": 1}});
        assert!(matches!(
            ParsedManifest::parse(bad.to_string().as_bytes(), None),
            Err(ManifestError::BadDescriptor(_))
        ));
        assert!(matches!(
            ParsedManifest::parse(b"{}", Some(media::DOCKER_MANIFEST_V1_SIGNED)),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
    }
}
