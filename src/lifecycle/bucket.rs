//! Garbage collection and eviction of a shared bucket (`storage.s3`), as one job: run by
//! `stevedore gc` (a CronJob) or by a replica's periodic task, while the replicas serve. Only
//! the holder of the bucket's lease (`stevedore/gc/lease`) works; the lease is renewed as the
//! run goes and checked before every delete, so a run that lost it (it stalled past the
//! lease's ttl and another took over) stops before deleting anything more.
//!
//! Mark, from the bucket alone: every repository's manifest revision links and tags name the
//! manifests; their blobs and child manifests are referenced. Then:
//! - pushed content (no `stevedore/cached/` marker), two-phase: a blob no manifest references
//!   is recorded as a candidate (`stevedore/gc/candidates/`) with the time it was first seen
//!   so, and deleted only by a later run once `grace` has passed since then *and* since its
//!   last write, link or recorded access — so a push in flight (blobs up, manifest not yet)
//!   loses nothing;
//! - cached content (marked), least recently used first by the access records the replicas
//!   write, down to `proxy.maxsize` (and anything unused for `proxy.ttl`); never what a pushed
//!   manifest or a pinned tag (`proxy.pin`) reaches, nor what was used in the last
//!   `recent` (reads not yet recorded).
//!
//! Before deleting, the links are listed once more and manifests that appeared meanwhile are
//! marked too. A deleted blob's links (layer, revision, tag index, referrer record, a tag
//! whose current manifest it was), marker and candidate record go with it; objects of
//! chunked pushes that no blob name points at (`S3Backend::orphans`) go once older than the
//! grace. Replicas forget a deleted blob when they next find it gone from the bucket
//! (`Registry::open_blob`). Must not: touch any node's local index, or delete anything in a
//! dry run.

use super::evict::Pinned;
use crate::clock::now_ms;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, ParsedManifest, RepoName, Tag};
use crate::storage::{
    BlobStore, BucketKey, Lease, LeaseError, Link, LinkKind, S3Backend, StoreError,
};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Clone)]
pub struct BucketGcOptions {
    /// Report what would go; write and delete nothing (and take no lease).
    pub dry_run: bool,
    /// Sweep unreferenced pushed blobs (two-phase).
    pub collect: bool,
    /// Evict cached content by size and age.
    pub evict: bool,
    /// See `storage.maintenance.gc.grace`.
    pub grace: Duration,
    pub lease_ttl: Duration,
    /// `proxy.maxsize`: bytes of cached content to keep at most.
    pub max_size: Option<u64>,
    /// `proxy.ttl`: cached content unused this long goes; zero keeps it.
    pub max_age: Duration,
    /// Cached content used this recently stays whatever the size (its reads may not be
    /// recorded yet).
    pub recent: Duration,
    pub pinned: Option<Pinned>,
    /// Who runs (named in the lease).
    pub holder: String,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct BucketGcReport {
    pub dry_run: bool,
    pub blobs: usize,
    pub manifests: usize,
    pub referenced: usize,
    /// Unreferenced pushed blobs seen so for the first time (recorded as candidates).
    pub new_candidates: usize,
    /// Candidates kept until their grace has passed.
    pub pending_candidates: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    pub cached_blobs: usize,
    pub cached_bytes: u64,
    pub evicted: usize,
    pub evicted_bytes: u64,
    pub links_deleted: usize,
    /// Objects of chunked pushes that no name points at, older than the grace.
    pub orphans_deleted: usize,
    pub access_records_merged: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BucketGcError {
    #[error("storage.s3 is not configured: the bucket job needs a shared bucket")]
    NoBucket,
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    #[error("stored manifest {0} does not parse ({1}); stopped before deleting anything")]
    Manifest(Digest, String),
}

type Result<T> = std::result::Result<T, BucketGcError>;

/// The lease, renewed every third of its ttl, and checked before each delete.
struct Keeper<'a> {
    bucket: &'a S3Backend,
    lease: Option<Lease>,
    ttl: Duration,
    renewed: std::time::Instant,
}

impl Keeper<'_> {
    /// Renews when due; fails when the lease was lost or is about to lapse.
    async fn check(&mut self) -> Result<()> {
        let Some(lease) = self.lease.as_mut() else {
            return Ok(());
        };
        if self.renewed.elapsed() >= self.ttl / 3 {
            self.bucket.renew_lease(lease, self.ttl).await?;
            self.renewed = std::time::Instant::now();
        }
        // A delete must not start in the lease's last sixth.
        if now_ms() + (self.ttl / 6).as_millis() as u64 >= lease.expires() {
            return Err(LeaseError::Lost.into());
        }
        Ok(())
    }

    async fn release(mut self) {
        if let Some(lease) = self.lease.take()
            && let Err(e) = self.bucket.release_lease(lease).await
        {
            tracing::warn!(error = %e, "releasing the maintenance lease failed; it lapses by itself");
        }
    }
}

/// What the bucket holds, listed once.
struct Snapshot {
    blobs: HashMap<Digest, (u64, u64)>,
    links: Vec<Link>,
    cached: HashMap<Digest, (BucketKey, u64)>,
}

async fn snapshot(bucket: &S3Backend) -> Result<Snapshot> {
    // Links before blobs: a blob pushed meanwhile is younger than the grace anyway, and a
    // link listed before its blob is never mistaken for one to nothing.
    let links = bucket.links().await?;
    let blobs = bucket
        .blobs()
        .await?
        .into_iter()
        .map(|b| (b.digest, (b.size, b.modified)))
        .collect();
    let cached = bucket
        .cached_markers()
        .await?
        .into_iter()
        .map(|(d, k, m)| (d, (k, m)))
        .collect();
    Ok(Snapshot {
        blobs,
        links,
        cached,
    })
}

/// Manifests and what each references (blobs and child manifests), read once each.
#[derive(Default)]
struct References {
    of: HashMap<Digest, Vec<Digest>>,
}

impl References {
    /// Reads `roots` and their child manifests (those not read yet).
    async fn read(
        &mut self,
        store: &BlobStore,
        roots: impl IntoIterator<Item = Digest>,
    ) -> Result<()> {
        let mut todo: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = todo.pop() {
            if self.of.contains_key(&d) {
                continue;
            }
            let refs = match store.read_small(&d, MAX_MANIFEST_BYTES as u64).await {
                // A link to nothing references nothing.
                Ok(None) => Vec::new(),
                Ok(Some(bytes)) => match ParsedManifest::parse(&bytes, None) {
                    Ok(p) => {
                        todo.extend(p.manifests.iter().cloned());
                        p.blobs.into_iter().chain(p.manifests).collect()
                    }
                    Err(e) => return Err(BucketGcError::Manifest(d, e.to_string())),
                },
                Err(StoreError::TooLarge(_)) => {
                    return Err(BucketGcError::Manifest(d, "larger than a manifest".into()));
                }
                Err(e) => return Err(e.into()),
            };
            self.of.insert(d, refs);
        }
        Ok(())
    }

    /// `roots` and everything they reach.
    fn reach(&self, roots: impl IntoIterator<Item = Digest>) -> HashSet<Digest> {
        let mut out = HashSet::new();
        let mut todo: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = todo.pop() {
            if !out.insert(d.clone()) {
                continue;
            }
            if let Some(refs) = self.of.get(&d) {
                todo.extend(refs.iter().cloned());
            }
        }
        out
    }
}

/// A manifest a link names: a revision, or a tag's current manifest.
struct Root {
    repo: String,
    /// The tag and its `current/link`, for a tag.
    tag: Option<(String, BucketKey)>,
    digest: Digest,
}

/// The manifests the links name. Tags are read (a GET each).
async fn roots(bucket: &S3Backend, links: &[Link]) -> Result<Vec<Root>> {
    use futures::{StreamExt, TryStreamExt};
    let mut out: Vec<Root> = links
        .iter()
        .filter_map(|l| match &l.kind {
            LinkKind::Revision(d) => Some(Root {
                repo: l.repo.clone(),
                tag: None,
                digest: d.clone(),
            }),
            _ => None,
        })
        .collect();
    let tags: Vec<_> = links
        .iter()
        .filter_map(|l| match &l.kind {
            LinkKind::TagCurrent(t) => Some((l.repo.clone(), t.clone(), l.key.clone())),
            _ => None,
        })
        .collect();
    let keys: Vec<BucketKey> = tags.iter().map(|(_, _, k)| k.clone()).collect();
    let targets: Vec<Option<Digest>> = futures::stream::iter(keys)
        .map(|k| {
            let bucket = bucket.clone();
            async move { bucket.read_link(&k).await }
        })
        .buffered(8)
        .try_collect()
        .await?;
    for ((repo, tag, key), target) in tags.into_iter().zip(targets) {
        if let Some(digest) = target {
            out.push(Root {
                repo,
                tag: Some((tag, key)),
                digest,
            });
        }
    }
    Ok(out)
}

/// The manifests of the tags `proxy.pin` names.
fn pinned_roots(roots: &[Root], pinned: &Option<Pinned>) -> Vec<Digest> {
    let Some(pinned) = pinned else {
        return Vec::new();
    };
    roots
        .iter()
        .filter_map(|r| {
            let repo = RepoName::parse(&r.repo).ok()?;
            let tag = Tag::parse(&r.tag.as_ref()?.0).ok()?;
            pinned(&repo, &tag).then(|| r.digest.clone())
        })
        .collect()
}

/// Runs the job once on the bucket of `store`.
pub async fn run(store: &BlobStore, options: &BucketGcOptions) -> Result<BucketGcReport> {
    let bucket = store.bucket().ok_or(BucketGcError::NoBucket)?;
    let lease = if options.dry_run {
        None
    } else {
        Some(
            bucket
                .acquire_lease(&options.holder, options.lease_ttl)
                .await?,
        )
    };
    let mut keeper = Keeper {
        bucket,
        lease,
        ttl: options.lease_ttl,
        renewed: std::time::Instant::now(),
    };
    let result = work(store, bucket, options, &mut keeper).await;
    keeper.release().await;
    let report = result?;
    tracing::info!(?report, "bucket maintenance done");
    Ok(report)
}

/// What is to go, and why.
struct Going {
    digest: Digest,
    size: u64,
    cached: bool,
}

async fn work(
    store: &BlobStore,
    bucket: &S3Backend,
    options: &BucketGcOptions,
    keeper: &mut Keeper<'_>,
) -> Result<BucketGcReport> {
    let started = now_ms();
    let mut report = BucketGcReport {
        dry_run: options.dry_run,
        ..Default::default()
    };
    let snap = snapshot(bucket).await?;
    let (access, records) = bucket.access_times().await?;
    let candidates = bucket.candidates().await?;
    keeper.check().await?;
    // Mark.
    let named = roots(bucket, &snap.links).await?;
    let mut refs = References::default();
    let all_roots: HashSet<Digest> = named.iter().map(|r| r.digest.clone()).collect();
    refs.read(store, all_roots.iter().cloned()).await?;
    keeper.check().await?;
    let referenced = refs.reach(all_roots.iter().cloned());
    // What pushed manifests (and pinned tags) reach is never evicted.
    let kept_cached = refs.reach(
        all_roots
            .iter()
            .filter(|d| !snap.cached.contains_key(*d))
            .cloned()
            .chain(pinned_roots(&named, &options.pinned)),
    );
    report.blobs = snap.blobs.len();
    report.manifests = refs.of.len();
    report.referenced = referenced.len();
    // The last sign of life of each blob: its write, a link to it, a recorded access (a
    // cached marker is written with its blob, so says nothing more).
    let mut active: HashMap<Digest, u64> = HashMap::new();
    let mut bump = |d: &Digest, t: u64| {
        let e = active.entry(d.clone()).or_insert(t);
        *e = (*e).max(t);
    };
    for (d, (_, modified)) in &snap.blobs {
        bump(d, *modified);
    }
    for l in &snap.links {
        if let LinkKind::Layer(d) = &l.kind {
            bump(d, l.modified);
        }
    }
    for (d, t) in &access {
        bump(d, *t);
    }
    let now = now_ms();
    let aged =
        |since: u64, limit: Duration| u128::from(now.saturating_sub(since)) >= limit.as_millis();
    let mut going: Vec<Going> = Vec::new();
    // Pushed content: two-phase.
    if options.collect {
        let mut unreferenced = HashSet::new();
        for (d, (size, _)) in &snap.blobs {
            if snap.cached.contains_key(d) || referenced.contains(d) {
                continue;
            }
            unreferenced.insert(d.clone());
            match candidates.get(d) {
                None => {
                    report.new_candidates += 1;
                    if !options.dry_run {
                        keeper.check().await?;
                        bucket.put_candidate(d, now).await?;
                    }
                }
                Some(first) if aged(*first, options.grace) && aged(active[d], options.grace) => {
                    going.push(Going {
                        digest: d.clone(),
                        size: *size,
                        cached: false,
                    });
                }
                Some(_) => report.pending_candidates += 1,
            }
        }
        // Candidates referenced again, marked cached, or gone are forgotten.
        if !options.dry_run {
            for d in candidates.keys().filter(|d| !unreferenced.contains(*d)) {
                keeper.check().await?;
                bucket.remove_candidate(d).await?;
            }
        }
    }
    // Cached content: least recently used first.
    let mut cached: Vec<(Digest, u64, u64)> = snap
        .cached
        .keys()
        .filter_map(|d| {
            snap.blobs
                .get(d)
                .map(|(size, _)| (d.clone(), *size, active[d]))
        })
        .collect();
    report.cached_blobs = cached.len();
    report.cached_bytes = cached.iter().map(|(_, s, _)| s).sum();
    if options.evict && (options.max_size.is_some() || !options.max_age.is_zero()) {
        cached.sort_by_key(|(d, _, used)| (*used, d.as_str().to_owned()));
        let mut total = report.cached_bytes;
        for (d, size, used) in cached {
            let big = options.max_size.is_some_and(|max| total > max);
            let old = !options.max_age.is_zero() && aged(used, options.max_age);
            if (!big && !old) || !aged(used, options.recent) {
                break;
            }
            if kept_cached.contains(&d) {
                continue;
            }
            total = total.saturating_sub(size);
            going.push(Going {
                digest: d,
                size,
                cached: true,
            });
        }
    }
    // A second look at the links: manifests put since the mark keep what they reference,
    // and a blob linked since is in use.
    if !going.is_empty() {
        let seen: HashSet<&BucketKey> = snap.links.iter().map(|l| &l.key).collect();
        let links = bucket.links().await?;
        let fresh: Vec<Link> = links
            .into_iter()
            .filter(|l| !seen.contains(&l.key) || l.modified >= started)
            .collect();
        let fresh_roots: Vec<Digest> = roots(bucket, &fresh)
            .await?
            .into_iter()
            .map(|r| r.digest)
            .collect();
        refs.read(store, fresh_roots.iter().cloned()).await?;
        let now_referenced = refs.reach(fresh_roots);
        let relinked: HashSet<&Digest> = fresh
            .iter()
            .filter_map(|l| match &l.kind {
                LinkKind::Layer(d) => Some(d),
                _ => None,
            })
            .collect();
        going.retain(|g| !now_referenced.contains(&g.digest) && !relinked.contains(&g.digest));
    }
    // Sweep.
    let mut links_of: HashMap<&Digest, Vec<&BucketKey>> = HashMap::new();
    let tag_targets: HashMap<&BucketKey, &Digest> = named
        .iter()
        .filter_map(|r| Some((&r.tag.as_ref()?.1, &r.digest)))
        .collect();
    for l in &snap.links {
        let d = match &l.kind {
            LinkKind::Layer(d)
            | LinkKind::Revision(d)
            | LinkKind::TagIndex(_, d)
            | LinkKind::Referrer(d) => Some(d),
            LinkKind::TagCurrent(_) => tag_targets.get(&l.key).copied(),
            LinkKind::Session(_) => None,
        };
        if let Some(d) = d {
            links_of.entry(d).or_default().push(&l.key);
        }
    }
    let mut deleted: HashSet<Digest> = HashSet::new();
    for g in &going {
        if g.cached {
            report.evicted += 1;
            report.evicted_bytes += g.size;
        } else {
            report.blobs_deleted += 1;
            report.bytes_freed += g.size;
        }
        if options.dry_run {
            tracing::info!(digest = %g.digest, size = g.size, cached = g.cached, "would delete");
            continue;
        }
        keeper.check().await?;
        store.delete(&g.digest).await?;
        tracing::info!(digest = %g.digest, size = g.size, cached = g.cached, "deleted from the bucket");
        for key in links_of.get(&g.digest).into_iter().flatten() {
            bucket.remove(key).await?;
            report.links_deleted += 1;
        }
        if let Some((marker, _)) = snap.cached.get(&g.digest) {
            bucket.remove(marker).await?;
        }
        if !g.cached {
            bucket.remove_candidate(&g.digest).await?;
        }
        deleted.insert(g.digest.clone());
    }
    // Leftovers of an interrupted run, older than the grace: links and markers to nothing.
    for l in &snap.links {
        let d = match &l.kind {
            LinkKind::Layer(d) | LinkKind::Revision(d) | LinkKind::Referrer(d) => d,
            _ => continue,
        };
        if snap.blobs.contains_key(d) || deleted.contains(d) || !aged(l.modified, options.grace) {
            continue;
        }
        report.links_deleted += 1;
        if !options.dry_run {
            keeper.check().await?;
            bucket.remove(&l.key).await?;
        }
    }
    for (d, (marker, modified)) in &snap.cached {
        if !snap.blobs.contains_key(d) && aged(*modified, options.grace) && !options.dry_run {
            keeper.check().await?;
            bucket.remove(marker).await?;
        }
    }
    // Objects of chunked pushes never named (a crash between completing and naming one), or
    // whose name went first in a delete that was cut off.
    // An object whose session was still there when the links were listed is a push being
    // finished (completed, not yet named): its session goes only after it is named.
    let sessions: HashSet<&str> = snap
        .links
        .iter()
        .filter_map(|l| match &l.kind {
            LinkKind::Session(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    for (session, object, modified) in bucket.orphans().await? {
        if !aged(modified, options.grace) || sessions.contains(session.as_str()) {
            continue;
        }
        report.orphans_deleted += 1;
        if !options.dry_run {
            keeper.check().await?;
            bucket.remove(&object).await?;
            tracing::info!(%object, "removed an object no blob name points at");
        }
    }
    // The access records read are merged into the summary (of blobs still there).
    if !options.dry_run {
        let kept: HashMap<Digest, u64> = access
            .into_iter()
            .filter(|(d, _)| snap.blobs.contains_key(d) && !deleted.contains(d))
            .collect();
        keeper.check().await?;
        bucket.compact_access(&kept, &records).await?;
        report.access_records_merged = records.len();
    }
    Ok(report)
}
