//! The index as a cache in front of a shared bucket (`storage.s3`, `SharedMeta`): what this
//! replica does not know yet is looked up in the bucket and recorded (read-through), and a
//! tag is checked again in the bucket once its local copy is older than
//! `storage.s3.tagrefresh`, so pushes and deletes through other replicas show within that
//! bound; so are a manifest by digest, the referrers of a subject, and the link of a pushed
//! blob to a repository. Writes go to the bucket first (see `Registry`'s push paths), so a record in the
//! index always has its bucket objects behind it. Without a shared bucket nothing here runs.
//! Origin (pushed or cached) comes from the bucket's cached marker; a cached tag's check
//! time is when its link was last written.

use super::{Registry, Result, blob_record};
use crate::clock::now_secs;
use crate::index::{Origin, TagRecord};
use crate::oci::{Digest, ParsedManifest, RepoName, Tag};
use crate::storage::SharedMeta;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// References checked in the bucket at most this many at once are remembered; when full,
/// each is checked again (a request each) and the map starts over.
const CAPACITY: usize = 65_536;

/// When each reference (a tag, or a manifest digest: a tag has no `:`, so the two never
/// meet) was last brought up to date with the bucket.
#[derive(Default)]
pub(super) struct Checked {
    at: Mutex<HashMap<(RepoName, String), Instant>>,
}

impl Checked {
    fn recent(&self, repo: &RepoName, reference: &str, bound: std::time::Duration) -> bool {
        let at = self.at.lock().expect("checked references poisoned");
        at.get(&(repo.clone(), reference.to_owned()))
            .is_some_and(|t| t.elapsed() < bound)
    }

    /// Notes that `reference` of `repo` is as the bucket has it now (checked, or written
    /// here).
    pub(super) fn note(&self, repo: &RepoName, reference: &str) {
        let mut at = self.at.lock().expect("checked references poisoned");
        if at.len() >= CAPACITY {
            at.clear();
        }
        at.insert((repo.clone(), reference.to_owned()), Instant::now());
    }
}

impl Registry {
    /// The shared bucket's metadata, when the store has one.
    pub(super) fn meta(&self) -> Option<&SharedMeta> {
        self.depot.store.shared_meta()
    }

    /// The bucket's metadata when `reference` of `repo` is due for a check (not checked
    /// within `storage.s3.tagrefresh`); `None` without a shared bucket or when not due.
    fn due(&self, repo: &RepoName, reference: &str) -> Option<&SharedMeta> {
        let meta = self.meta()?;
        (!self
            .checked
            .recent(repo, reference, self.options.tag_refresh))
        .then_some(meta)
    }

    /// Brings this replica's record of `tag` up to date with the bucket, unless it was
    /// checked within `storage.s3.tagrefresh`: a tag gone from the bucket goes here too, one
    /// moved is recorded (its manifest read through).
    pub(super) async fn sync_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        let Some(meta) = self.due(repo, tag.as_str()) else {
            return Ok(());
        };
        let local = self.depot.index.tag(repo, tag)?;
        match meta.tag(repo, tag).await? {
            None => {
                if local.is_some() {
                    tracing::debug!(%repo, %tag, "tag gone from the bucket; dropped here");
                    self.depot.index.delete_tag(repo, tag)?;
                }
            }
            Some((d, written)) if local.as_ref().map(|r| &r.digest) != Some(&d) => {
                if !self
                    .read_manifest_through(repo, &d, Some((tag, written)))
                    .await?
                {
                    tracing::warn!(%repo, %tag, digest = %d, "the bucket's tag names a manifest it does not hold; not served");
                    if local.is_some() {
                        self.depot.index.delete_tag(repo, tag)?;
                    }
                }
            }
            Some(_) => {}
        }
        self.checked.note(repo, tag.as_str());
        Ok(())
    }

    /// Drops this replica's record of manifest `d` of `repo` when the bucket no longer has
    /// it (deleted through another replica), unless checked within `storage.s3.tagrefresh`.
    pub(super) async fn sync_manifest(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        let Some(meta) = self.due(repo, d.as_str()) else {
            return Ok(());
        };
        if self.depot.index.manifest(repo, d)?.is_some() && !meta.has_revision(repo, d).await? {
            tracing::debug!(%repo, digest = %d, "manifest gone from the bucket; dropped here");
            self.depot.index.delete_manifest(repo, d)?;
        }
        self.checked.note(repo, d.as_str());
        Ok(())
    }

    /// Drops this replica's link of pushed blob `d` to `repo` when the bucket no longer has
    /// it (unlinked through another replica), unless checked within `storage.s3.tagrefresh`.
    /// Cached content is left alone: clients do not unlink it, and the maintenance job's
    /// removals are found when the blob is found gone.
    pub(super) async fn sync_link(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        if self.meta().is_none() {
            return Ok(());
        }
        // Only links of pushed content are checked (and remembered as checked).
        let pushed = self
            .depot
            .index
            .blob(d)?
            .is_some_and(|rec| rec.origin == Origin::Local);
        if !pushed || !self.depot.index.is_linked(repo, d)? {
            return Ok(());
        }
        // A `@` is in no tag, and this key is not a bare digest: it never meets theirs.
        let key = format!("@{d}");
        let Some(meta) = self.due(repo, &key) else {
            return Ok(());
        };
        if !meta.layer_linked(repo, d).await? && !meta.has_revision(repo, d).await? {
            tracing::debug!(%repo, digest = %d, "blob unlinked in the bucket; unlinked here");
            self.depot.index.unlink(repo, d)?;
            self.depot.cache.forget_link(repo, d).await;
        }
        self.checked.note(repo, &key);
        Ok(())
    }

    /// Brings this replica's referrers of `subject` in `repo` up to date with the bucket,
    /// unless checked within `storage.s3.tagrefresh`: referrers pushed through other
    /// replicas are read through, those deleted there are dropped here.
    pub(super) async fn sync_referrers(&self, repo: &RepoName, subject: &Digest) -> Result<()> {
        if self.meta().is_none() {
            return Ok(());
        }
        // A space is in no tag and no digest: this key never meets theirs.
        let key = format!("referrers {subject}");
        let Some(meta) = self.due(repo, &key) else {
            return Ok(());
        };
        for d in meta.referrers(repo, subject).await? {
            if self.depot.index.manifest(repo, &d)?.is_none() {
                self.read_manifest_through(repo, &d, None).await?;
            }
        }
        for r in self.depot.index.referrers(repo, subject)? {
            if let Ok(d) = Digest::parse(&r.digest) {
                self.sync_manifest(repo, &d).await?;
            }
        }
        self.checked.note(repo, &key);
        Ok(())
    }

    /// The subject a stored manifest names, if any (for removing its bucket record).
    pub(super) async fn subject_of(&self, d: &Digest) -> Result<Option<Digest>> {
        let Some(bytes) = self.stored_manifest(d).await? else {
            return Ok(None);
        };
        Ok(ParsedManifest::parse(&bytes, None)
            .ok()
            .and_then(|p| p.subject))
    }

    /// Records manifest `d` of `repo` from the bucket in the index (with `tag`, last written
    /// at the given time, pointed at it); false when the bucket has no such manifest.
    pub(super) async fn read_manifest_through(
        &self,
        repo: &RepoName,
        d: &Digest,
        tag: Option<(&Tag, u64)>,
    ) -> Result<bool> {
        let Some(meta) = self.meta() else {
            return Ok(false);
        };
        let origin = if meta.is_cached(d).await? {
            Origin::Proxy
        } else {
            Origin::Local
        };
        let tag = tag.map(|(t, written)| {
            let checked = match origin {
                Origin::Local => now_secs(),
                Origin::Proxy => written,
            };
            (
                t,
                TagRecord {
                    digest: d.clone(),
                    origin,
                    checked,
                },
            )
        });
        if self.depot.index.manifest(repo, d)?.is_some() {
            if let Some((t, rec)) = &tag {
                self.depot.index.set_tag(repo, t, rec)?;
            }
            return Ok(true);
        }
        if !meta.has_revision(repo, d).await? {
            return Ok(false);
        }
        let Some(bytes) = self.stored_manifest(d).await? else {
            return Ok(false);
        };
        let parsed = match ParsedManifest::parse(&bytes, None) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%repo, digest = %d, error = %e, "a manifest in the bucket does not parse; not served");
                return Ok(false);
            }
        };
        self.record_manifest(
            repo,
            d,
            &parsed,
            bytes,
            origin,
            tag.as_ref().map(|(t, r)| (*t, r)),
        )
        .await?;
        if origin == Origin::Proxy {
            // As the mirror does when it fetches one: its blobs may be served to this
            // repository once they are here.
            for b in &parsed.blobs {
                self.depot.index.link(repo, b)?;
            }
        }
        tracing::debug!(%repo, digest = %d, ?origin, "manifest read through from the bucket");
        Ok(true)
    }

    /// Records that blob `d` is visible in `repo` when the bucket says so (a blob link, or a
    /// manifest revision: manifests are blobs too); its size, or `None`.
    pub(super) async fn read_link_through(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<Option<u64>> {
        let Some(meta) = self.meta() else {
            return Ok(None);
        };
        if !meta.layer_linked(repo, d).await? && !meta.has_revision(repo, d).await? {
            return Ok(None);
        }
        let Some(size) = self.depot.store.stat(d).await? else {
            return Ok(None);
        };
        let origin = match self.depot.index.blob(d)? {
            Some(rec) => rec.origin,
            None if meta.is_cached(d).await? => Origin::Proxy,
            None => Origin::Local,
        };
        self.depot
            .index
            .record_blob(repo, d, &blob_record(size, origin))?;
        Ok(Some(size))
    }
}
