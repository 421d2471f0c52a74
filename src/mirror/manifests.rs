//! Proxied manifests: cache hit, tag revalidation within a budget, upstream fetch, stale
//! serving (counted by reason).

use super::cooldown;
use super::peering;
use super::revalidate::{self, Revalidated};
use super::{Mirror, ProxyRepo};
use crate::clock::now_secs;
use crate::error::RegistryError;
use crate::index::Origin;
use crate::metrics::{Metrics, ObjectKind, Outcome, Source};
use crate::notify::{Action, Event, Notifier, Target};
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Algorithm, Digest, ParsedManifest, Reference, Tag, media};
use crate::registry::{Manifest, Registry};
use crate::upstream::{FetchedManifest, UpstreamError};
use std::time::Duration;

type Result<T> = std::result::Result<T, RegistryError>;

/// What we ask upstreams for: every manifest type we can store, indexes first, so that
/// multi-arch images are cached whole.
pub(super) const ACCEPT: &[&str] = media::MANIFEST_TYPES;

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
        // An expired tag we hold: revalidated within a short budget, else served as it is.
        if let Reference::Tag(t) = reference
            && let Some(ours) = self.registry.get_manifest(&p.local, reference).await?
        {
            return self.revalidate(p, t, ours).await;
        }
        let (_guard, waited) = self
            .manifest_locks
            .lock(format!("{}\0{}", p.local, reference))
            .await;
        if waited && let Some((m, source)) = self.cached(p, reference).await? {
            self.metrics
                .cache_lookup(ObjectKind::Manifest, up, Outcome::Coalesced);
            return Ok((m, source));
        }
        match reference {
            Reference::Digest(d) => self.fetch(p, reference, Some(d)).await,
            Reference::Tag(_) => self.fetch(p, reference, None).await,
        }
    }

    /// Whether the upstream answered 404 for this tag the last time it was asked (the cached
    /// tag is then still served, and the response says so).
    pub fn upstream_gone(&self, p: &ProxyRepo, reference: &Reference) -> bool {
        let Reference::Tag(t) = reference else {
            return false;
        };
        self.registry
            .tag_notes(&p.local, t)
            .is_ok_and(|n| n.upstream_gone.is_some())
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
                self.metrics
                    .cache_lookup(ObjectKind::Manifest, up, Outcome::Hit);
                Ok(Some((m, Source::Cache)))
            }
            Reference::Tag(t) => {
                let Some(rec) = reg.tag_record(&p.local, t).await? else {
                    return Ok(None);
                };
                let fresh = now_secs().saturating_sub(rec.checked) < self.options.tag_ttl.as_secs();
                if rec.origin != Origin::Local && !fresh {
                    return Ok(None);
                }
                let Some(m) = reg.manifest_by_digest(&p.local, &rec.digest).await? else {
                    return Ok(None);
                };
                if rec.origin == Origin::Local {
                    return Ok(Some((m, Source::Local)));
                }
                self.metrics
                    .cache_lookup(ObjectKind::Manifest, up, Outcome::Hit);
                Ok(Some((m, Source::Cache)))
            }
        }
    }

    /// A tag we hold but have not confirmed lately. The upstream is asked (a HEAD, then a GET
    /// if the tag moved) by a background check shared by every request for the tag; a request
    /// waits for it at most `proxy.revalidatetimeout`, then gets our copy. When the upstream
    /// cannot be asked at all (offline, breaker open) our copy is served at once.
    async fn revalidate(
        &self,
        p: &ProxyRepo,
        tag: &Tag,
        ours: Manifest,
    ) -> Result<(Manifest, Source)> {
        let up = p.upstream.name.as_str();
        if let Err(e) = p.upstream.client.check_available() {
            return Ok(self.serve_stale(p, tag, ours, &e));
        }
        let check = revalidate::join_or_start(
            &self.revalidations,
            revalidate::Job {
                registry: self.registry.clone(),
                metrics: self.metrics.clone(),
                peering: self.peering.clone(),
                notifier: self.options.notifier.clone(),
                p: p.clone(),
                tag: tag.clone(),
                ours: ours.digest.clone(),
            },
        );
        let mut rx = check.subscribe();
        // A check some request already gave up on has used its budget: no second wait.
        let budget = if check.abandoned() && rx.borrow().is_none() {
            Duration::ZERO
        } else {
            self.options.revalidate_timeout
        };
        let waited = tokio::time::timeout(budget, rx.wait_for(Option::is_some))
            .await
            .map(|r| r.map(|a| a.clone()));
        let answer = match waited {
            Err(_) => {
                check.abandon();
                self.note_stale(p, tag, &ours, "timeout");
                self.metrics
                    .cache_lookup(ObjectKind::Manifest, up, Outcome::Hit);
                tracing::info!(repo = %p.local, %tag, upstream = up, budget_ms = self.options.revalidate_timeout.as_millis() as u64, "upstream slow to revalidate the tag; serving the cached tag, the check goes on in the background");
                return Ok((ours, Source::Cache));
            }
            Ok(Err(_)) => None,
            Ok(Ok(a)) => a,
        };
        let reference = Reference::Tag(tag.clone());
        match answer {
            Some(Revalidated::Current | Revalidated::Held) => {
                self.metrics
                    .cache_lookup(ObjectKind::Manifest, up, Outcome::Hit);
                Ok((ours, Source::Cache))
            }
            Some(Revalidated::Moved) => {
                self.metrics
                    .cache_lookup(ObjectKind::Manifest, up, Outcome::Miss);
                match self.registry.get_manifest(&p.local, &reference).await? {
                    Some(m) => Ok((m, Source::Upstream)),
                    None => Err(RegistryError::manifest_unknown(&reference)),
                }
            }
            // Kept and served, marked (see `upstream_gone`).
            Some(Revalidated::Gone) => {
                self.note_stale(p, tag, &ours, "not_found");
                self.metrics
                    .cache_lookup(ObjectKind::Manifest, up, Outcome::Hit);
                Ok((ours, Source::Cache))
            }
            Some(Revalidated::Unavailable(e)) => Ok(self.serve_stale(p, tag, ours, &e)),
            Some(Revalidated::Failed(e)) => Err(e),
            None => Ok(self.serve_stale(
                p,
                tag,
                ours,
                &UpstreamError::Invalid("revalidation ended without an answer".into()),
            )),
        }
    }

    /// Our copy of a tag the upstream could not confirm, counted by why.
    fn serve_stale(
        &self,
        p: &ProxyRepo,
        tag: &Tag,
        ours: Manifest,
        e: &UpstreamError,
    ) -> (Manifest, Source) {
        let up = p.upstream.name.as_str();
        let reason = stale_reason(e);
        match e {
            // Said once, when the breaker opened or the mirror went offline.
            UpstreamError::Offline | UpstreamError::CircuitOpen { .. } => {
                tracing::debug!(repo = %p.local, %tag, upstream = up, reason, "serving the cached tag: {e}")
            }
            _ => {
                tracing::warn!(repo = %p.local, %tag, upstream = up, error = %e, "upstream unavailable; serving the cached tag")
            }
        }
        self.note_stale(p, tag, &ours, reason);
        self.metrics
            .cache_lookup(ObjectKind::Manifest, up, Outcome::Hit);
        (ours, Source::Cache)
    }

    /// Counts a stale serve of `ours` for `reason` and sends `stale.served`.
    fn note_stale(&self, p: &ProxyRepo, tag: &Tag, ours: &Manifest, reason: &str) {
        let up = p.upstream.name.as_str();
        self.metrics.stale(ObjectKind::Manifest, up, reason);
        let notifier = &self.options.notifier;
        if notifier.wants(Action::StaleServed) {
            let mut target = Target::cached(
                up,
                p.local.as_str(),
                &ours.media_type,
                Some(ours.digest.clone()),
                ours.bytes.len() as u64,
            );
            target.tag = Some(tag.to_string());
            target.reason = Some(reason.to_owned());
            notifier.publish(Event::cache(Action::StaleServed, target));
        }
    }

    /// GETs a manifest upstream, verifies and caches it.
    pub(super) async fn fetch(
        &self,
        p: &ProxyRepo,
        reference: &Reference,
        expected: Option<&Digest>,
    ) -> Result<(Manifest, Source)> {
        let up = p.upstream.name.as_str();
        self.metrics
            .cache_lookup(ObjectKind::Manifest, up, Outcome::Miss);
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        // Under a cooldown a HEAD comes first: a digest too young to serve costs no pull.
        let mut admitted = None;
        if let Some(t) = tag
            && !p.upstream.cooldown.is_zero()
        {
            match p
                .upstream
                .client
                .head_manifest(&p.remote, t.as_str(), ACCEPT)
                .await
            {
                Ok(head) => {
                    if let Some(d) = head.digest.as_deref().and_then(|d| Digest::parse(d).ok()) {
                        cooldown::check(&self.registry, &self.metrics, p, t, &d, None)?;
                        admitted = Some(d);
                    }
                }
                Err(UpstreamError::NotFound) => {
                    return Err(RegistryError::manifest_unknown(reference));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let peering = self.peering.as_ref();
        let fetched = match peering::get_manifest(peering, p, reference.as_str(), ACCEPT).await {
            Ok(f) => f,
            Err(UpstreamError::NotFound) => return Err(RegistryError::manifest_unknown(reference)),
            Err(e) => return Err(e.into()),
        };
        // The tag may have moved between the HEAD and the GET.
        if let Some(t) = tag
            && !p.upstream.cooldown.is_zero()
        {
            let d = Digest::of(&fetched.bytes);
            if admitted.as_ref() != Some(&d) {
                cooldown::check(&self.registry, &self.metrics, p, t, &d, None)?;
            }
        }
        let m = store_fetched(
            &self.registry,
            &self.metrics,
            &self.options.notifier,
            p,
            fetched,
            expected,
            tag,
        )
        .await?;
        if let Some(t) = tag {
            revalidate::named_again(&self.registry, p, t);
        }
        Ok((m, Source::Upstream))
    }
}

/// The `stevedore_stale_serves_total` reason for an upstream failure.
fn stale_reason(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Timeout(_) => "timeout",
        UpstreamError::Connect(_) => "unreachable",
        UpstreamError::CircuitOpen { .. } => "breaker_open",
        UpstreamError::Offline => "offline",
        UpstreamError::TooManyRequests { .. } => "429",
        UpstreamError::Status(code, _) if *code >= 500 => "5xx",
        _ => "error",
    }
}

/// Verifies a manifest fetched upstream and caches it (under `tag` if given), with links to
/// the blobs it names.
pub(super) async fn store_fetched(
    registry: &Registry,
    metrics: &Metrics,
    notifier: &Notifier,
    p: &ProxyRepo,
    fetched: FetchedManifest,
    expected: Option<&Digest>,
    tag: Option<&Tag>,
) -> Result<Manifest> {
    if fetched.bytes.len() > MAX_MANIFEST_BYTES {
        return Err(UpstreamError::TooLarge.into());
    }
    // Asked by digest, the bytes are checked in the algorithm asked for.
    let algorithm = expected.map_or(Algorithm::Sha256, Digest::algorithm);
    let digest = Digest::of_with(algorithm, &fetched.bytes);
    if let Some(expected) = expected
        && *expected != digest
    {
        metrics.verify_failures.inc();
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
    registry
        .store_manifest(
            &p.local,
            &digest,
            &parsed,
            fetched.bytes.clone(),
            Origin::Proxy,
            tag,
            now_secs(),
        )
        .await?;
    // The blobs this manifest names may be served to this repository once fetched.
    for b in &parsed.blobs {
        registry.link_blob(&p.local, b).await?;
    }
    if notifier.wants(Action::CacheFill) {
        let mut target = Target::cached(
            &p.upstream.name,
            p.local.as_str(),
            &parsed.media_type,
            Some(digest.clone()),
            fetched.bytes.len() as u64,
        );
        target.tag = tag.map(Tag::to_string);
        notifier.publish(Event::cache(Action::CacheFill, target));
    }
    Ok(Manifest {
        digest,
        media_type: parsed.media_type,
        bytes: fetched.bytes,
    })
}
