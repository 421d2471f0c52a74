//! Background revalidation of expired tags, single-flight per tag. The first request for an
//! expired tag starts one task that asks the upstream (HEAD; GET and cache if the tag moved)
//! and updates the index; every request for that tag while it runs waits on the same task,
//! each for at most its own budget. The task runs to its end even when every request has
//! given up waiting, so a slow upstream's answer still lands; it is then counted in
//! `stevedore_background_revalidations_total`.

use super::ProxyRepo;
use super::manifests::{ACCEPT, store_fetched};
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
    /// The upstream no longer has the tag; ours was dropped.
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
    let client = &p.upstream.client;
    let up = p.upstream.name.as_str();
    match client
        .head_manifest(&p.remote, job.tag.as_str(), ACCEPT)
        .await
    {
        Ok(head) if head.digest.as_deref() == Some(job.ours.as_str()) => {
            match job
                .registry
                .confirm_cached_tag(&p.local, &job.tag, &job.ours)
            {
                Ok(()) => Revalidated::Current,
                Err(e) => Revalidated::Failed(e),
            }
        }
        Ok(_) => match client
            .get_manifest(&p.remote, job.tag.as_str(), ACCEPT)
            .await
        {
            Ok(fetched) => {
                let stored = store_fetched(
                    &job.registry,
                    &job.metrics,
                    p,
                    fetched,
                    None,
                    Some(&job.tag),
                )
                .await;
                match stored {
                    Ok(m) => {
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

fn gone(job: &Job) -> Revalidated {
    let p = &job.p;
    tracing::info!(repo = %p.local, tag = %job.tag, upstream = p.upstream.name.as_str(), "tag is gone upstream; dropping it");
    match job.registry.drop_cached_tag(&p.local, &job.tag) {
        Ok(_) => Revalidated::Gone,
        Err(e) => Revalidated::Failed(e),
    }
}
