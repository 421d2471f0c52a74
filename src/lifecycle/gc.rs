//! Garbage collection of pushed content, as distribution's `registry garbage-collect`: mark
//! every blob a manifest of any repository references, then sweep pushed blobs nothing marks.
//! Safe while serving: the mark reads manifests while pushes go on; pushes wait (`Depot::removing`)
//! only while what was pushed meanwhile is marked and the sweep runs. Blobs younger than the
//! grace period (an upload whose manifest has not been pushed yet), pinned blobs (being read)
//! and blobs being fetched are spared. Proxied content is the evictor's business and is left alone.

use crate::clock::now_ms;
use crate::depot::Depot;
use crate::index::{ManifestRecord, Origin};
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, ParsedManifest, RepoName};
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
    depot: &Depot,
    d: &Digest,
    media_type: &str,
) -> Result<Option<(Vec<Digest>, Vec<Digest>)>> {
    let Some(bytes) = depot.store.read_small(d, MAX_MANIFEST_BYTES as u64).await? else {
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

/// A manifest of a repository.
type Key = (RepoName, Digest);

pub async fn collect(
    depot: &Depot,
    options: &GcOptions,
    busy: &(impl Fn(&Digest) -> bool + ?Sized),
) -> Result<GcReport> {
    if depot.store.shared_meta().is_some() {
        // This node's index is a cache of the bucket: a blob another replica pushed would
        // look unreferenced here.
        return Err(crate::error::RegistryError::unsupported(
            "garbage collection of a shared storage.s3 bucket is not run by a replica (its index does not see other replicas' pushes); no blob was deleted",
        ));
    }
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    // Mark, beside pushes: what every manifest that stays references. Reading manifests is
    // the long part, so it runs without the exclusive lock...
    let manifests = depot.index.manifests()?;
    let reached = if options.delete_untagged {
        Some(reachable(depot, &manifests).await?)
    } else {
        None
    };
    let goes = |(repo, digest, rec): &(RepoName, Digest, ManifestRecord)| {
        rec.origin == Origin::Local
            && reached
                .as_ref()
                .is_some_and(|r| !r.contains(&(repo.clone(), digest.clone())))
    };
    let (going, staying): (Vec<_>, Vec<_>) = manifests.iter().cloned().partition(goes);
    let mut marked: HashSet<Digest> = HashSet::new();
    mark(depot, &staying, &mut marked).await?;
    // ...then, exclusively (no push may start relying on a blob until the sweep is done), the
    // manifests pushed meanwhile are marked too, and so are those that were to go but that a
    // tag or a kept index reaches now.
    let _exclusive = depot.removing().await;
    let seen: HashSet<Key> = manifests
        .iter()
        .map(|(r, d, _)| (r.clone(), d.clone()))
        .collect();
    let mut fresh: Vec<_> = depot
        .index
        .manifests()?
        .into_iter()
        .filter(|(r, d, _)| !seen.contains(&(r.clone(), d.clone())))
        .collect();
    mark(depot, &fresh, &mut marked).await?;
    if !going.is_empty() {
        let tagged: HashSet<Key> = depot
            .index
            .tags()?
            .into_iter()
            .map(|(r, _, rec)| (r, rec.digest))
            .collect();
        let (rescued, going): (Vec<_>, Vec<_>) = going
            .into_iter()
            .partition(|(r, d, _)| tagged.contains(&(r.clone(), d.clone())) || marked.contains(d));
        fresh = rescued;
        mark(depot, &fresh, &mut marked).await?;
        report.manifests_deleted = delete_untagged(depot, &going, options.dry_run)?;
    }
    // Sweep.
    let t = now_ms();
    let mut deleted = HashSet::new();
    for (d, rec) in depot.index.blobs()? {
        if rec.origin != Origin::Local || marked.contains(&d) {
            report.blobs_kept += 1;
            continue;
        }
        let used = depot
            .recent_access(&d)
            .unwrap_or(0)
            .max(rec.last_access)
            .max(rec.created);
        if u128::from(t.saturating_sub(used)) < options.grace.as_millis()
            || depot.store.is_being_read(&d)
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
        depot.remove_blob(&d).await?;
        tracing::info!(digest = %d, size = rec.size, "gc deleted");
        deleted.insert(d);
    }
    if !deleted.is_empty() {
        for (r, d) in depot.index.links()? {
            if deleted.contains(&d) {
                depot.index.unlink(&r, &d)?;
                depot.cache.forget_link(&r, &d).await;
            }
        }
    }
    depot.index.flush().await?;
    depot.metrics.gc_runs.inc();
    Ok(report)
}

/// Adds each manifest, and what it references, to `marked`.
async fn mark(
    depot: &Depot,
    manifests: &[(RepoName, Digest, ManifestRecord)],
    marked: &mut HashSet<Digest>,
) -> Result<()> {
    for (_, d, rec) in manifests {
        if let Some((blobs, children)) = references(depot, d, &rec.media_type).await? {
            marked.extend(blobs);
            marked.extend(children);
        }
        marked.insert(d.clone());
    }
    Ok(())
}

/// Manifests reached from a tag (directly, or as a child of a reached index), and referrers
/// of reached manifests, as (repository, digest).
async fn reachable(
    depot: &Depot,
    manifests: &[(RepoName, Digest, ManifestRecord)],
) -> Result<HashSet<Key>> {
    let mut reached: HashSet<Key> = HashSet::new();
    let mut stack: Vec<Key> = depot
        .index
        .tags()?
        .into_iter()
        .map(|(r, _, rec)| (r, rec.digest))
        .collect();
    let records: HashMap<Key, &ManifestRecord> = manifests
        .iter()
        .map(|(r, d, rec)| ((r.clone(), d.clone()), rec))
        .collect();
    while let Some(key) = stack.pop() {
        if !reached.insert(key.clone()) {
            continue;
        }
        let Some(rec) = records.get(&key) else {
            continue;
        };
        if let Some((_, children)) = references(depot, &key.1, &rec.media_type).await? {
            stack.extend(children.into_iter().map(|c| (key.0.clone(), c)));
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
    depot: &Depot,
    going: &[(RepoName, Digest, ManifestRecord)],
    dry_run: bool,
) -> Result<usize> {
    for (repo, digest, _) in going {
        if dry_run {
            tracing::info!(%repo, %digest, "gc would delete untagged manifest");
            continue;
        }
        depot.index.delete_manifest(repo, digest)?;
        tracing::info!(%repo, %digest, "gc deleted untagged manifest");
    }
    Ok(going.len())
}
