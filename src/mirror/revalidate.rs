//! Background revalidation of expired tags, single-flight per tag. The first request for an
//! expired tag starts one task that asks the upstream (HEAD; GET and cache if the tag moved)
//! and updates the index; every request for that tag while it runs waits on the same task,
//! each for at most its own budget. The task runs to its end even when every request has
//! given up waiting, so a slow upstream's answer still lands; it is then counted in
//! `stevedore_background_revalidations_total`.

use super::ProxyRepo;
use super::cooldown::{self, Verdict};
use super::manifests::{ACCEPT, store_fetched};
use super::peering::{self, Peering};
use crate::clock::now_secs;
use crate::error::RegistryError;
use crate::metrics::Metrics;
use crate::oci::{Digest, Tag};
use crate::registry::Registry;
use crate::upstream::UpstreamError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the upstream said about a tag.
#[derive(Debug, Clone)]
pub enum Revalidated {
    /// Our copy is current; the tag is trusted for another `tagttl`.
    Current,
    /// The tag moved; the new manifest is cached and tagged.
    Moved,
    /// The tag moved to a digest younger than the cooldown: ours stands for another `tagttl`.
    Held,
    /// The upstream no longer has the tag; ours is kept (and served, marked) unless purged.
    Gone,
    /// The upstream could not be asked (or refused): our copy stands, unconfirmed.
    Unavailable(UpstreamError),
    /// The tag moved but its new manifest could not be cached.
    Failed(RegistryError),
}

impl Revalidated {
    fn as_str(&self) -> &'static str {
        match self {
            Revalidated::Current => "current",
            Revalidated::Moved => "moved",
            Revalidated::Held => "held",
            Revalidated::Gone => "gone",
            Revalidated::Unavailable(_) | Revalidated::Failed(_) => "failed",
        }
    }
}

/// One revalidation under way.
pub struct Check {
    rx: watch::Receiver<Option<Revalidated>>,
    /// A request stopped waiting: the check finishes in the background.
    abandoned: AtomicBool,
}

impl Check {
    pub fn subscribe(&self) -> watch::Receiver<Option<Revalidated>> {
        self.rx.clone()
    }

    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    /// Whether a request already gave up waiting for this check.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }
}

/// Checks under way, by repository and tag.
pub type Checks = Arc<Mutex<HashMap<String, Arc<Check>>>>;

/// What a check needs.
pub struct Job {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// With `proxy.peers`: the tag's owner replica is asked instead of the upstream.
    pub peering: Option<Peering>,
    pub notifier: Arc<crate::notify::Notifier>,
    pub p: ProxyRepo,
    pub tag: Tag,
    /// The digest our copy of the tag has.
    pub ours: Digest,
}

/// Joins the check of the job's tag under way, or starts one.
pub fn join_or_start(checks: &Checks, job: Job) -> Arc<Check> {
    let key = format!("{}\0{}", job.p.local, job.tag);
    let mut map = checks.lock().expect("revalidation map poisoned");
    if let Some(c) = map.get(&key) {
        return c.clone();
    }
    let (tx, rx) = watch::channel(None);
    let check = Arc::new(Check {
        rx,
        abandoned: AtomicBool::new(false),
    });
    map.insert(key.clone(), check.clone());
    let checks = checks.clone();
    let mine = check.clone();
    tokio::spawn(async move {
        // Leaves the map however the task ends, a panic included.
        let _leave = Leave { checks, key };
        let outcome = run(&job).await;
        if mine.abandoned.load(Ordering::Relaxed) {
            let up = job.p.upstream.name.as_str();
            job.metrics
                .background_revalidations
                .with_label_values(&[up, outcome.as_str()])
                .inc();
            tracing::info!(repo = %job.p.local, tag = %job.tag, upstream = up, outcome = outcome.as_str(), "background revalidation finished");
        }
        let _ = tx.send(Some(outcome));
    });
    check
}

struct Leave {
    checks: Checks,
    key: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Ok(mut m) = self.checks.lock() {
            m.remove(&self.key);
        }
    }
}

async fn run(job: &Job) -> Revalidated {
    let p = &job.p;
    let peering = job.peering.as_ref();
    let up = p.upstream.name.as_str();
    let head = peering::head_manifest(peering, p, job.tag.as_str(), ACCEPT).await;
    let named = head
        .as_ref()
        .ok()
        .and_then(|h| h.digest.as_deref())
        .and_then(|d| Digest::parse(d).ok());
    match head {
        Ok(_) if named.as_ref() == Some(&job.ours) => confirm(job, Revalidated::Current),
        Ok(_) if named.as_ref().is_some_and(|d| held(job, d)) => confirm(job, Revalidated::Held),
        Ok(_) => match peering::get_manifest(peering, p, job.tag.as_str(), ACCEPT).await {
            // The GET may name another digest than the HEAD did (the tag moved in between):
            // only that one is put to the cooldown again.
            Ok(fetched)
                if {
                    let got = Digest::of(&fetched.bytes);
                    named.as_ref() != Some(&got) && held(job, &got)
                } =>
            {
                confirm(job, Revalidated::Held)
            }
            Ok(fetched) => {
                let stored = store_fetched(
                    &job.registry,
                    &job.metrics,
                    &job.notifier,
                    p,
                    fetched,
                    None,
                    Some(&job.tag),
                )
                .await;
                match stored {
                    Ok(m) => {
                        named_again(&job.registry, p, &job.tag);
                        tracing::info!(repo = %p.local, tag = %job.tag, upstream = up, from = %job.ours, to = %m.digest, "tag moved upstream");
                        Revalidated::Moved
                    }
                    Err(e) => Revalidated::Failed(e),
                }
            }
            Err(UpstreamError::NotFound) => gone(job),
            Err(e) => Revalidated::Unavailable(e),
        },
        Err(UpstreamError::NotFound) => gone(job),
        Err(e) => Revalidated::Unavailable(e),
    }
}

/// Our copy stands for another `tagttl`: the upstream names it (`Current`), or names a digest
/// the cooldown holds back (`Held`).
fn confirm(job: &Job, outcome: Revalidated) -> Revalidated {
    let p = &job.p;
    match job
        .registry
        .confirm_cached_tag(&p.local, &job.tag, &job.ours)
    {
        Ok(()) => {
            named_again(&job.registry, p, &job.tag);
            outcome
        }
        Err(e) => Revalidated::Failed(e),
    }
}

/// Whether the cooldown keeps our copy rather than `named`. When the index cannot say how old
/// `named` is, ours is kept: the cooldown fails closed, as on the manifest-fetch path.
fn held(job: &Job, named: &Digest) -> bool {
    let p = &job.p;
    match cooldown::check(
        &job.registry,
        &job.metrics,
        p,
        &job.tag,
        named,
        Some(&job.ours),
    ) {
        Ok(verdict) => matches!(verdict, Verdict::Hold),
        Err(e) => {
            tracing::warn!(repo = %p.local, tag = %job.tag, error = %e, "cooldown: cannot tell the new digest's age; keeping ours");
            true
        }
    }
}

/// The upstream answers 404 for a tag we hold: ours is kept and trusted for another
/// `tagttl` (so the upstream is not asked on every request), and noted as gone upstream.
fn gone(job: &Job) -> Revalidated {
    let p = &job.p;
    let t = now_secs();
    let noted = job.registry.update_tag_notes(&p.local, &job.tag, |n| {
        let first = n.upstream_gone.is_none();
        n.upstream_gone.get_or_insert(t);
        first
    });
    match noted.and_then(|first| {
        job.registry
            .confirm_cached_tag(&p.local, &job.tag, &job.ours)
            .map(|()| first)
    }) {
        Ok(first) => {
            if first {
                tracing::warn!(repo = %p.local, tag = %job.tag, upstream = p.upstream.name.as_str(), digest = %job.ours, "tag is gone upstream; keeping and serving the cached one until it is purged");
            }
            Revalidated::Gone
        }
        Err(e) => Revalidated::Failed(e),
    }
}

/// The upstream named the tag again: whatever 404 it gave before is forgotten.
pub(super) fn named_again(registry: &Registry, p: &ProxyRepo, tag: &Tag) {
    let cleared = registry.update_tag_notes(&p.local, tag, |n| n.upstream_gone.take().is_some());
    if let Ok(true) = cleared {
        tracing::info!(repo = %p.local, %tag, upstream = p.upstream.name.as_str(), "tag is back upstream");
    }
}
