//! Proxied manifests: cache hit, tag revalidation, upstream fetch, stale serving.

use super::{Mirror, ProxyRepo};
use crate::error::RegistryError;
use crate::index::Origin;
use crate::metrics::{Kind, Outcome, Source};
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, ParsedManifest, Reference, Tag, media};
use crate::registry::{Manifest, now};
use crate::upstream::UpstreamError;

type Result<T> = std::result::Result<T, RegistryError>;

/// What we ask upstreams for: every manifest type we can store, indexes first, so that
/// multi-arch images are cached whole.
const ACCEPT: &[&str] = media::MANIFEST_TYPES;

impl Mirror {
    /// A manifest of a proxied repository, with where it came from.
    pub async fn get_manifest(
        &self,
        p: &ProxyRepo,
        reference: &Reference,
    ) -> Result<(Manifest, Source)> {
        let up = p.upstream.name.as_str();
        // Fast path: a digest we have, or a tag pushed here or still fresh.
        if let Some(found) = self.cached(p, reference).await? {
            return Ok(found);
        }
        let (_guard, waited) = self
            .manifest_locks
            .lock(format!("{}\0{}", p.local, reference))
            .await;
        if waited && let Some((m, source)) = self.cached(p, reference).await? {
            self.metrics
                .cache_lookup(Kind::Manifest, up, Outcome::Coalesced);
            return Ok((m, source));
        }
        match reference {
            Reference::Digest(d) => self.fetch(p, reference, Some(d), None).await,
            Reference::Tag(t) => self.revalidate(p, t).await,
        }
    }

    /// Answers from the cache alone when no upstream question is due.
    async fn cached(
        &self,
        p: &ProxyRepo,
        reference: &Reference,
    ) -> Result<Option<(Manifest, Source)>> {
        let up = p.upstream.name.as_str();
        let reg = &self.registry;
        match reference {
            Reference::Digest(d) => {
                let Some(m) = reg.manifest_by_digest(&p.local, d).await? else {
                    return Ok(None);
                };
                self.metrics.cache_lookup(Kind::Manifest, up, Outcome::Hit);
                Ok(Some((m, Source::Cache)))
            }
            Reference::Tag(t) => {
                let Some(rec) = reg.index.tag(&p.local, t)? else {
                    return Ok(None);
                };
                let fresh = now().saturating_sub(rec.checked) < self.options.tag_ttl.as_secs();
                if rec.origin != Origin::Local && !fresh {
                    return Ok(None);
                }
                let Some(m) = reg.manifest_by_digest(&p.local, &rec.digest).await? else {
                    return Ok(None);
                };
                if rec.origin == Origin::Local {
                    return Ok(Some((m, Source::Local)));
                }
                self.metrics.cache_lookup(Kind::Manifest, up, Outcome::Hit);
                Ok(Some((m, Source::Cache)))
            }
        }
    }

    /// A tag we have not confirmed lately: a HEAD upstream decides whether ours is current.
    async fn revalidate(&self, p: &ProxyRepo, tag: &Tag) -> Result<(Manifest, Source)> {
        let up = p.upstream.name.as_str();
        let reference = Reference::Tag(tag.clone());
        let ours = self.registry.get_manifest(&p.local, &reference).await?;
        let Some(ours) = ours else {
            return self.fetch(p, &reference, None, Some(tag)).await;
        };
        match p
            .upstream
            .client
            .head_manifest(&p.remote, tag.as_str(), ACCEPT)
            .await
        {
            Ok(head) if head.digest.as_deref() == Some(ours.digest.as_str()) => {
                self.registry.index.set_tag(
                    &p.local,
                    tag,
                    &crate::index::TagRecord {
                        digest: ours.digest.clone(),
                        origin: Origin::Proxy,
                        checked: now(),
                    },
                )?;
                self.metrics.cache_lookup(Kind::Manifest, up, Outcome::Hit);
                Ok((ours, Source::Cache))
            }
            Ok(_) => self.fetch(p, &reference, None, Some(tag)).await,
            Err(UpstreamError::NotFound) => {
                tracing::info!(repo = %p.local, %tag, upstream = up, "tag is gone upstream; dropping it");
                self.registry.index.delete_tag(&p.local, tag)?;
                Err(RegistryError::manifest_unknown(&reference))
            }
            Err(e) => {
                tracing::warn!(repo = %p.local, %tag, upstream = up, error = %e, "upstream unavailable; serving the cached tag");
                self.metrics.stale(Kind::Manifest, up);
                self.metrics.cache_lookup(Kind::Manifest, up, Outcome::Hit);
                Ok((ours, Source::Cache))
            }
        }
    }

    /// GETs a manifest upstream, verifies and caches it.
    async fn fetch(
        &self,
        p: &ProxyRepo,
        reference: &Reference,
        expected: Option<&Digest>,
        tag: Option<&Tag>,
    ) -> Result<(Manifest, Source)> {
        let up = p.upstream.name.as_str();
        self.metrics.cache_lookup(Kind::Manifest, up, Outcome::Miss);
        let fetched = match p
            .upstream
            .client
            .get_manifest(&p.remote, reference.as_str(), ACCEPT)
            .await
        {
            Ok(f) => f,
            Err(UpstreamError::NotFound) => return Err(RegistryError::manifest_unknown(reference)),
            Err(e) => return Err(e.into()),
        };
        if fetched.bytes.len() > MAX_MANIFEST_BYTES {
            return Err(UpstreamError::TooLarge.into());
        }
        let digest = Digest::of(&fetched.bytes);
        if let Some(expected) = expected
            && *expected != digest
        {
            self.metrics.verify_failures.inc();
            return Err(RegistryError::new(
                crate::error::ErrorCode::Unavailable,
                format!("upstream sent a manifest with digest {digest} for {expected}; not cached"),
            ));
        }
        let parsed =
            ParsedManifest::parse(&fetched.bytes, fetched.media_type.as_deref()).map_err(|e| {
                RegistryError::new(
                    crate::error::ErrorCode::Unavailable,
                    format!("upstream sent a manifest stevedore cannot use: {e}"),
                )
            })?;
        self.registry
            .store_manifest(
                &p.local,
                &digest,
                &parsed,
                fetched.bytes.clone(),
                Origin::Proxy,
                tag,
                now(),
            )
            .await?;
        // The blobs this manifest names may be served to this repository once fetched.
        for b in &parsed.blobs {
            self.registry.index.link(&p.local, b)?;
        }
        Ok((
            Manifest {
                digest,
                media_type: parsed.media_type,
                bytes: fetched.bytes,
            },
            Source::Upstream,
        ))
    }
}

impl Mirror {
    /// Tags of a proxied repository, as the upstream lists them.
    pub async fn list_tags(
        &self,
        p: &ProxyRepo,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>> {
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("n", &n.to_string());
            if let Some(last) = last {
                q.append_pair("last", last);
            }
            q.finish()
        };
        match p.upstream.client.list_tags(&p.remote, Some(&query)).await {
            Ok((bytes, _link)) => {
                #[derive(serde::Deserialize)]
                struct TagList {
                    tags: Option<Vec<String>>,
                }
                let list: TagList = serde_json::from_slice(&bytes).map_err(|e| {
                    RegistryError::new(
                        crate::error::ErrorCode::Unavailable,
                        format!("upstream sent a tag list stevedore cannot read: {e}"),
                    )
                })?;
                let mut tags = list.tags.unwrap_or_default();
                tags.truncate(n);
                Ok(tags)
            }
            Err(UpstreamError::NotFound) => Err(RegistryError::name_unknown(&p.local)),
            Err(e) => Err(e.into()),
        }
    }
}
