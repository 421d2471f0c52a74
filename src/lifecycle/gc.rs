//! Garbage collection of pushed content, as distribution's `registry garbage-collect`: mark
//! every blob a manifest of any repository references, then sweep pushed blobs nothing marks.
//! Safe while serving: blobs younger than the grace period (an upload whose manifest has not
//! been pushed yet), pinned blobs (being read) and blobs being fetched are spared. Proxied
//! content is the evictor's business and is left alone.

use crate::index::Origin;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, ParsedManifest, RepoName};
use crate::registry::{Registry, now_ms};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Also delete manifests no tag reaches (distribution's `--delete-untagged`).
    pub delete_untagged: bool,
    /// Blobs created or used more recently than this are kept.
    pub grace: Duration,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub manifests_deleted: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    pub blobs_kept: usize,
}

type Result<T> = std::result::Result<T, crate::error::RegistryError>;

/// What a stored manifest references: (blobs, child manifests).
async fn references(
    registry: &Registry,
    d: &Digest,
    media_type: &str,
) -> Result<Option<(Vec<Digest>, Vec<Digest>)>> {
    let Some(bytes) = registry
        .store
        .read_small(d, MAX_MANIFEST_BYTES as u64)
        .await?
    else {
        return Ok(None);
    };
    match ParsedManifest::parse(&bytes, Some(media_type)) {
        Ok(p) => Ok(Some((p.blobs, p.manifests))),
        // What it references is unknown, so nothing may be swept.
        Err(e) => Err(crate::error::RegistryError::internal(format!(
            "stored manifest {d} does not parse ({e}); garbage collection stopped before deleting anything"
        ))),
    }
}

pub async fn collect(
    registry: &Registry,
    options: &GcOptions,
    busy: &(impl Fn(&Digest) -> bool + ?Sized),
) -> Result<GcReport> {
    // No push may start relying on a blob between the mark and the sweep.
    let _exclusive = registry.maintenance.write().await;
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    let manifests = registry.index.manifests()?;
    let reached = if options.delete_untagged {
        Some(reachable(registry, &manifests).await?)
    } else {
        None
    };
    if let Some(reached) = &reached {
        report.manifests_deleted = delete_untagged(registry, &manifests, reached, options.dry_run)?;
    }
    // Mark: every manifest that stays, and what it references.
    let mut marked: HashSet<Digest> = HashSet::new();
    for (repo, digest, rec) in &manifests {
        let Ok(d) = Digest::parse(digest) else {
            continue;
        };
        let goes = rec.origin == Origin::Local
            && reached
                .as_ref()
                .is_some_and(|r| !r.contains(&(repo.clone(), digest.clone())));
        if goes {
            continue;
        }
        if let Some((blobs, children)) = references(registry, &d, &rec.media_type).await? {
            marked.extend(blobs);
            marked.extend(children);
        }
        marked.insert(d);
    }
    // Sweep.
    let t = now_ms();
    let mut deleted = HashSet::new();
    for (d, rec) in registry.index.blobs()? {
        if rec.origin != Origin::Local || marked.contains(&d) {
            report.blobs_kept += 1;
            continue;
        }
        let used = registry
            .recent_access(&d)
            .unwrap_or(0)
            .max(rec.last_access)
            .max(rec.created);
        if u128::from(t.saturating_sub(used)) < options.grace.as_millis()
            || registry.store.pins.is_pinned(&d)
            || busy(&d)
        {
            report.blobs_kept += 1;
            continue;
        }
        report.blobs_deleted += 1;
        report.bytes_freed += rec.size;
        if options.dry_run {
            tracing::info!(digest = %d, size = rec.size, "gc would delete");
            continue;
        }
        super::evict::remove_blob(registry, &d).await?;
        tracing::info!(digest = %d, size = rec.size, "gc deleted");
        deleted.insert(d);
    }
    if !deleted.is_empty() {
        for (repo, digest) in registry.index.links()? {
            if let (Ok(r), Ok(d)) = (RepoName::parse(&repo), Digest::parse(&digest))
                && deleted.contains(&d)
            {
                registry.index.unlink(&r, &d)?;
                registry.cache.forget_link(&r, &d).await;
            }
        }
    }
    registry.index.flush().await?;
    registry.metrics.gc_runs.inc();
    Ok(report)
}

/// Tags per repository: repo → digests that tags point at.
fn tagged(registry: &Registry) -> Result<HashMap<String, HashSet<String>>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for (repo, _tag, rec) in registry.index.tags()? {
        out.entry(repo).or_default().insert(rec.digest);
    }
    Ok(out)
}

/// Manifests reached from a tag (directly, or as a child of a reached index), and referrers
/// of reached manifests, as (repository, digest).
async fn reachable(
    registry: &Registry,
    manifests: &[(String, String, crate::index::ManifestRecord)],
) -> Result<HashSet<(String, String)>> {
    let tags = tagged(registry)?;
    let mut reached: HashSet<(String, String)> = HashSet::new();
    let mut stack: Vec<(String, String)> = tags
        .iter()
        .flat_map(|(r, ds)| ds.iter().map(move |d| (r.clone(), d.clone())))
        .collect();
    let records: HashMap<(String, String), &crate::index::ManifestRecord> = manifests
        .iter()
        .map(|(r, d, rec)| ((r.clone(), d.clone()), rec))
        .collect();
    while let Some((repo, digest)) = stack.pop() {
        if !reached.insert((repo.clone(), digest.clone())) {
            continue;
        }
        let (Some(rec), Ok(d)) = (
            records.get(&(repo.clone(), digest.clone())),
            Digest::parse(&digest),
        ) else {
            continue;
        };
        if let Some((_, children)) = references(registry, &d, &rec.media_type).await? {
            stack.extend(children.into_iter().map(|c| (repo.clone(), c.to_string())));
        }
    }
    // Referrers of reached manifests (signatures, SBOMs) live as long as their subject.
    for ((repo, digest), rec) in &records {
        if let Some(subject) = &rec.subject
            && reached.contains(&(repo.clone(), subject.clone()))
        {
            reached.insert((repo.clone(), digest.clone()));
        }
    }
    Ok(reached)
}

fn delete_untagged(
    registry: &Registry,
    manifests: &[(String, String, crate::index::ManifestRecord)],
    reached: &HashSet<(String, String)>,
    dry_run: bool,
) -> Result<usize> {
    let mut n = 0;
    for (repo, digest, rec) in manifests {
        if rec.origin != Origin::Local || reached.contains(&(repo.clone(), digest.clone())) {
            continue;
        }
        n += 1;
        if dry_run {
            tracing::info!(%repo, %digest, "gc would delete untagged manifest");
            continue;
        }
        if let (Ok(r), Ok(d)) = (RepoName::parse(repo), Digest::parse(digest)) {
            registry.index.delete_manifest(&r, &d)?;
            tracing::info!(%repo, %digest, "gc deleted untagged manifest");
        }
    }
    Ok(n)
}
