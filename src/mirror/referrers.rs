//! Referrers of proxied manifests (signatures, SBOMs, attestations): the upstream's list —
//! its referrers API, or, when that answers 404, the `sha256-<hex>` tag scheme's index —
//! cached for `proxy.tagttl`, merged with the referrers known here (pushed, or cached when a
//! referring manifest was pulled through), then filtered by `artifactType`. The referring
//! manifests themselves are pulled through by digest like any other manifest.
//!
//! When the upstream cannot be asked, a cached list is used whatever its age; else the local
//! referrers alone, marked so; else the upstream's error.

use super::{Mirror, ProxyRepo};
use crate::error::RegistryError;
use crate::oci::{Descriptor, Digest, media};
use crate::upstream::UpstreamError;
use std::collections::HashSet;
use std::sync::Arc;

type Result<T> = std::result::Result<T, RegistryError>;

/// The referrers of a proxied manifest.
pub struct Referrers {
    pub manifests: Vec<Descriptor>,
    /// True when the upstream's list could not be had: only local referrers are listed.
    pub local_only: bool,
}

/// Upstream referrer lists by "<local repository>@<subject digest>".
pub(super) type Lists = super::lists::UpstreamLists<Vec<Descriptor>>;

impl Mirror {
    /// Referrers of `subject` in a proxied repository, of one artifact type if given.
    pub async fn referrers(
        &self,
        p: &ProxyRepo,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        let local = self.registry.referrers(&p.local, subject, None).await?;
        let (upstream, local_only) = match self.upstream_referrers(p, subject).await {
            Ok(list) => (list, false),
            Err(e) if !local.is_empty() => {
                tracing::info!(
                    upstream = p.upstream.name,
                    repo = %p.local,
                    error = %e,
                    "upstream referrers unavailable: listing local referrers only"
                );
                (Arc::default(), true)
            }
            Err(e) => return Err(e.into()),
        };
        let mut seen = HashSet::new();
        let manifests = local
            .into_iter()
            .chain(upstream.iter().cloned())
            .filter(|d| seen.insert(d.digest.clone()))
            .filter(|d| artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)))
            .collect();
        Ok(Referrers {
            manifests,
            local_only,
        })
    }

    /// The upstream's referrers of `subject`, from the cache while younger than
    /// `proxy.tagttl` (or at any age when the upstream cannot be asked).
    async fn upstream_referrers(
        &self,
        p: &ProxyRepo,
        subject: &Digest,
    ) -> std::result::Result<Arc<Vec<Descriptor>>, UpstreamError> {
        let ttl = self.options.tag_ttl;
        let key = format!("{}@{}", p.local, subject.as_str());
        let cached = self.referrer_lists.get(&key);
        if let Some((age, list)) = &cached
            && *age < ttl
        {
            return Ok(list.clone());
        }
        let list = match self.ask_upstream(p, subject).await {
            Ok(list) => Arc::new(list),
            Err(e) if e.is_unavailable() => match cached {
                Some((_, list)) => {
                    tracing::info!(upstream = p.upstream.name, repo = %p.local, error = %e, "upstream referrers unavailable: serving the cached list");
                    return Ok(list);
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        self.referrer_lists.insert(key, list.clone(), ttl);
        Ok(list)
    }

    /// The referrers API, else (404, or 400/405 from registries that route it nowhere) the
    /// `sha256-<hex>` tag's index; no such tag: none.
    async fn ask_upstream(
        &self,
        p: &ProxyRepo,
        subject: &Digest,
    ) -> std::result::Result<Vec<Descriptor>, UpstreamError> {
        let client = &p.upstream.client;
        match client.get_referrers(&p.remote, subject.as_str()).await {
            Ok(bytes) => return parse_index(&bytes),
            Err(UpstreamError::NotFound | UpstreamError::Status(400 | 405, _)) => {}
            Err(e) => return Err(e),
        }
        let tag = format!("{}-{}", subject.algorithm().name(), subject.hex());
        tracing::debug!(upstream = p.upstream.name, repo = %p.local, tag, "no upstream referrers API: trying the tag scheme");
        match client
            .get_manifest(&p.remote, &tag, &[media::OCI_INDEX])
            .await
        {
            Ok(m) => parse_index(&m.bytes),
            Err(UpstreamError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// The `manifests` of an image index.
fn parse_index(bytes: &[u8]) -> std::result::Result<Vec<Descriptor>, UpstreamError> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let index: Index = serde_json::from_slice(bytes)
        .map_err(|e| UpstreamError::Invalid(format!("referrers index: {e}")))?;
    Ok(index
        .manifests
        .into_iter()
        .filter(|d| Digest::parse(&d.digest).is_ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_parsing() {
        let d = format!("sha256:{}", "a".repeat(64));
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1,"artifactType":"x"}},{{"mediaType":"m","digest":"bad","size":1}}]}}"#
        );
        let list = parse_index(body.as_bytes()).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].artifact_type.as_deref(), Some("x"));
        assert!(parse_index(b"{}").unwrap().is_empty());
        assert!(parse_index(b"<html>").is_err());
    }
}
