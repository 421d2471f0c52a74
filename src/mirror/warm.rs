//! Warm lists: images fetched into the cache ahead of use (`proxy.warm.file`, at start-up and
//! every `proxy.warm.interval`; `POST /debug/warm` and `stevedore warm FILE` on demand).
//!
//! A list is text, one image a line: `[REGISTRY/]REPO(:TAG|@DIGEST) [OS/ARCH[/VARIANT],…]`,
//! `#` starts a comment (read by `oci::image_list`). The registry picks the upstream as
//! containerd's `ns` does; with none, Docker Hub rules apply (`alpine` is `library/alpine`).
//! Each run re-resolves every tag, so a tag that moved upstream is followed. It is paced for
//! rate-limited upstreams (Docker Hub counts manifest GETs, not HEADs): a tag is HEADed first
//! and its manifest fetched only when that digest is not cached; of an index, only the listed
//! platforms' manifests are fetched (all of them when none is listed); blobs already cached are
//! skipped, the others fetched a few at a time. Everything goes through the mirror's own paths
//! (single-flight, verification, caching, allow/deny), so a warm run and client pulls of the
//! same image share their fetches.

use super::cooldown::{self, Verdict};
use super::{Mirror, ProxyRepo, Scope};
use crate::error::RegistryError;
use crate::index::Origin;
use crate::oci::image_list::{self, ListEntry, Platform};
use crate::oci::{Digest, ParsedManifest, Reference, Tag};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Blobs of one image fetched at once.
const BLOB_CONCURRENCY: usize = 4;

/// What a warm run did, per image and in total.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WarmReport {
    pub images: Vec<ImageReport>,
    pub ok: usize,
    pub failed: usize,
    pub manifests_fetched: u64,
    pub blobs_fetched: u64,
    pub blobs_cached: u64,
    pub bytes_fetched: u64,
    pub seconds: f64,
}

/// What warming one image did.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageReport {
    pub image: String,
    /// What the reference resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Platforms fetched from an index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    pub manifests_fetched: u64,
    pub manifests_cached: u64,
    pub blobs_fetched: u64,
    pub blobs_cached: u64,
    pub bytes_fetched: u64,
    /// The tag moved upstream to a digest `proxy.cooldown` holds back: its previous one was
    /// warmed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a run was started: the `trigger` label of `stevedore_warm_runs_total`.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Start,
    Schedule,
    Request,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Schedule => "schedule",
            Trigger::Request => "request",
        }
    }
}

impl Mirror {
    /// Warms every entry, one image after another; one run at a time per mirror.
    pub async fn warm(&self, entries: &[ListEntry], trigger: Trigger) -> WarmReport {
        let _one_at_a_time = self.warming.lock().await;
        let started = Instant::now();
        self.metrics
            .warm_runs
            .with_label_values(&[trigger.as_str()])
            .inc();
        tracing::info!(
            images = entries.len(),
            trigger = trigger.as_str(),
            "warm run started"
        );
        let mut report = WarmReport::default();
        for e in entries {
            let mut r = ImageReport {
                image: e.image.text.clone(),
                ..ImageReport::default()
            };
            let outcome = self.warm_image(e, &mut r).await;
            if let Err(err) = outcome {
                tracing::warn!(image = %e.image.text, error = %err, "warm: image failed");
                r.error = Some(err.to_string());
                report.failed += 1;
            } else {
                tracing::info!(
                    image = %e.image.text,
                    digest = r.digest.as_deref().unwrap_or_default(),
                    platforms = %r.platforms.join(","),
                    manifests_fetched = r.manifests_fetched,
                    blobs_fetched = r.blobs_fetched,
                    blobs_cached = r.blobs_cached,
                    bytes_fetched = r.bytes_fetched,
                    "warm: image cached"
                );
                report.ok += 1;
            }
            self.metrics
                .warm_images
                .with_label_values(&[if r.error.is_some() { "failed" } else { "ok" }])
                .inc();
            report.manifests_fetched += r.manifests_fetched;
            report.blobs_fetched += r.blobs_fetched;
            report.blobs_cached += r.blobs_cached;
            report.bytes_fetched += r.bytes_fetched;
            report.images.push(r);
        }
        report.seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            ok = report.ok,
            failed = report.failed,
            manifests_fetched = report.manifests_fetched,
            blobs_fetched = report.blobs_fetched,
            blobs_cached = report.blobs_cached,
            bytes_fetched = report.bytes_fetched,
            seconds = report.seconds,
            "warm run finished"
        );
        report
    }

    async fn warm_image(&self, e: &ListEntry, r: &mut ImageReport) -> Result<(), RegistryError> {
        let repo = e.image.hub_repo();
        let registry = e.image.registry.as_deref();
        let scope = self
            .scope(&repo, registry)
            .ok_or_else(|| self.unknown_registry(registry.unwrap_or_default()))?;
        self.check_policy(&scope)?;
        let Scope::Proxy(p) = scope else {
            return Err(RegistryError::new(
                crate::error::ErrorCode::NameUnknown,
                format!("{repo} is not a mirrored repository"),
            ));
        };
        let top = match &e.image.reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => self.warm_tag(&p, t, r).await?,
        };
        r.digest = Some(top.to_string());
        // Fetched already when the tag was resolved with a GET.
        let tag_fetched = r.manifests_fetched > 0;
        let (bytes, fetched) = self.warm_manifest(&p, &top).await?;
        if !tag_fetched {
            r.count_manifest(fetched);
        }
        let top_manifest = parse(&bytes)?;
        let mut blobs: BTreeSet<Digest> = top_manifest.blobs.iter().cloned().collect();
        if !top_manifest.manifests.is_empty() {
            for (child, platform) in select_platforms(&bytes, &e.platforms)? {
                let (bytes, fetched) = self.warm_manifest(&p, &child).await?;
                r.count_manifest(fetched);
                if let Some(p) = platform {
                    r.platforms.push(p);
                }
                blobs.extend(parse(&bytes)?.blobs);
            }
        }
        let results: Vec<Result<Option<u64>, RegistryError>> = futures::stream::iter(blobs)
            .map(|d| {
                let p = &p;
                async move { self.warm_blob(p, &d).await }
            })
            .buffer_unordered(BLOB_CONCURRENCY)
            .collect()
            .await;
        // Every blob's outcome is counted; the first failure is the image's.
        let mut failure = None;
        for res in results {
            match res {
                Err(e) => {
                    failure.get_or_insert(e);
                }
                Ok(Some(size)) => {
                    r.blobs_fetched += 1;
                    r.bytes_fetched += size;
                    self.metrics
                        .warm_blobs
                        .with_label_values(&["fetched"])
                        .inc();
                    self.metrics.warm_bytes.inc_by(size);
                }
                Ok(None) => {
                    r.blobs_cached += 1;
                    self.metrics.warm_blobs.with_label_values(&["cached"]).inc();
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// What the tag names upstream now: a HEAD, and a manifest GET only when that digest is not
    /// cached. The cached tag is pointed at it (a tag pushed here is left alone).
    async fn warm_tag(
        &self,
        p: &ProxyRepo,
        tag: &Tag,
        r: &mut ImageReport,
    ) -> Result<Digest, RegistryError> {
        let ours = self.registry.tag_record(&p.local, tag).await?;
        if let Some(rec) = ours.as_ref().filter(|t| t.origin == Origin::Local) {
            return Ok(rec.digest.clone());
        }
        p.upstream.client.check_available()?;
        let head = match p
            .upstream
            .client
            .head_manifest(&p.remote, tag.as_str(), super::manifests::ACCEPT)
            .await
        {
            Ok(h) => h,
            Err(crate::upstream::UpstreamError::NotFound) => {
                return Err(RegistryError::manifest_unknown(&Reference::Tag(
                    tag.clone(),
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let named = head.digest.as_deref().and_then(|d| Digest::parse(d).ok());
        if let Some(d) = named {
            let ours = ours.map(|t| t.digest);
            let d = match cooldown::check(&self.registry, &self.metrics, p, tag, &d, ours.as_ref())?
            {
                Verdict::Admit => d,
                Verdict::Hold => {
                    r.held = true;
                    ours.expect("only a tag with a digest is held")
                }
            };
            if self
                .registry
                .manifest_by_digest(&p.local, &d)
                .await?
                .is_some()
            {
                self.registry.confirm_cached_tag(&p.local, tag, &d)?;
                super::revalidate::named_again(&self.registry, p, tag);
                return Ok(d);
            }
            if r.held {
                // The held digest was evicted: fetch it by digest (a fetch by tag would meet the
                // cooldown again, with no previous digest to fall back on, and be refused).
                self.fetch(p, &Reference::Digest(d.clone()), Some(&d))
                    .await?;
                r.manifests_fetched += 1;
                self.registry.confirm_cached_tag(&p.local, tag, &d)?;
                super::revalidate::named_again(&self.registry, p, tag);
                return Ok(d);
            }
        }
        let (m, _) = self.fetch(p, &Reference::Tag(tag.clone()), None).await?;
        r.manifests_fetched += 1;
        Ok(m.digest)
    }

    /// A manifest by digest, through the mirror's manifest path; says whether it was fetched.
    async fn warm_manifest(
        &self,
        p: &ProxyRepo,
        d: &Digest,
    ) -> Result<(bytes::Bytes, bool), RegistryError> {
        if let Some(m) = self.registry.manifest_by_digest(&p.local, d).await? {
            return Ok((m.bytes, false));
        }
        let (m, _) = self.get_manifest(p, &Reference::Digest(d.clone())).await?;
        Ok((m.bytes, true))
    }

    /// Caches a blob unless it is cached already; `Some(size)` when it was fetched.
    async fn warm_blob(&self, p: &ProxyRepo, d: &Digest) -> Result<Option<u64>, RegistryError> {
        if self.registry.blob_size(&p.local, d).await?.is_some() {
            return Ok(None);
        }
        let content = self.blob(p, d).await?;
        let size = content.size;
        content
            .finished()
            .await
            .map_err(|e| super::blobs::fetch_error(e, d))?;
        Ok(Some(size))
    }
}

impl ImageReport {
    fn count_manifest(&mut self, fetched: bool) {
        if fetched {
            self.manifests_fetched += 1;
        } else {
            self.manifests_cached += 1;
        }
    }
}

fn parse(bytes: &[u8]) -> Result<ParsedManifest, RegistryError> {
    ParsedManifest::parse(bytes, None).map_err(|e| {
        RegistryError::new(
            crate::error::ErrorCode::ManifestInvalid,
            format!("cached manifest cannot be read: {e}"),
        )
    })
}

/// The children of an index to fetch: those of the listed platforms (each must be there), or
/// every child when none is listed; with their `os/arch[/variant]`.
fn select_platforms(
    index: &[u8],
    wanted: &[Platform],
) -> Result<Vec<(Digest, Option<String>)>, RegistryError> {
    let v: serde_json::Value = serde_json::from_slice(index).unwrap_or_default();
    let children: Vec<(Digest, serde_json::Value)> = v
        .get("manifests")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let d = Digest::parse(c.get("digest")?.as_str()?).ok()?;
            Some((d, c.get("platform").cloned().unwrap_or_default()))
        })
        .collect();
    let label = |p: &serde_json::Value| {
        let f = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        match (f("os"), f("architecture"), f("variant")) {
            (Some(os), Some(a), Some(v)) => Some(format!("{os}/{a}/{v}")),
            (Some(os), Some(a), None) => Some(format!("{os}/{a}")),
            _ => None,
        }
    };
    if wanted.is_empty() {
        return Ok(children
            .iter()
            .map(|(d, p)| (d.clone(), label(p)))
            .collect());
    }
    let mut out = Vec::new();
    for w in wanted {
        let Some((d, p)) = children.iter().find(|(_, p)| w.matches(p)) else {
            return Err(RegistryError::new(
                crate::error::ErrorCode::ManifestUnknown,
                format!("the index has no {w} image"),
            ));
        };
        if !out.iter().any(|(o, _)| o == d) {
            out.push((d.clone(), label(p)));
        }
    }
    Ok(out)
}

/// The report as text: a line per image, then the totals (what `stevedore warm` prints).
pub fn summary(r: &WarmReport) -> String {
    let mut out = String::new();
    for i in &r.images {
        match &i.error {
            Some(e) => out.push_str(&format!("FAILED {}: {e}\n", i.image)),
            None => out.push_str(&format!(
                "ok     {} {}{}{}: {} manifests and {} blobs ({} bytes) fetched, {} manifests and {} blobs cached already\n",
                i.image,
                i.digest.as_deref().unwrap_or_default(),
                if i.platforms.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", i.platforms.join(","))
                },
                if i.held { " (held by proxy.cooldown)" } else { "" },
                i.manifests_fetched,
                i.blobs_fetched,
                i.bytes_fetched,
                i.manifests_cached,
                i.blobs_cached,
            )),
        }
    }
    out.push_str(&format!(
        "{} images warmed, {} failed: {} manifests and {} blobs ({} bytes) fetched, {} blobs cached already, in {:.1} s\n",
        r.ok, r.failed, r.manifests_fetched, r.blobs_fetched, r.bytes_fetched, r.blobs_cached, r.seconds
    ));
    out
}

/// Reads the warm list at `path`.
pub fn read_list(path: &std::path::Path) -> Result<Vec<ListEntry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    image_list::parse_list(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Warms the list at `path` now, then every `interval` (none when zero), until `stop`. The
/// file is read again each time, so edits apply at the next run.
pub async fn schedule(
    mirror: std::sync::Arc<Mirror>,
    path: std::path::PathBuf,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let work = async {
        let mut trigger = Trigger::Start;
        loop {
            match read_list(&path) {
                Ok(entries) => {
                    mirror.warm(&entries, trigger).await;
                }
                Err(e) => tracing::warn!(error = %e, "proxy.warm.file cannot be read; no warm run"),
            }
            if interval.is_zero() {
                return;
            }
            tokio::time::sleep(interval).await;
            trigger = Trigger::Schedule;
        }
    };
    tokio::select! {
        () = work => {},
        () = stop => {},
    }
}
