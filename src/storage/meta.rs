//! `SharedMeta`: repository metadata kept in a shared bucket (`storage.s3`), so that the
//! bucket, not a node's index, is the source of truth and replicas on one bucket see each
//! other's pushes. Distribution's layout (link files hold `<alg>:<hex>`, no newline), so a
//! distribution pointed at the same bucket reads what stevedore wrote:
//!
//! ```text
//! docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link                 blob visible in repo
//! docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link    manifest of repo
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link       tag → digest
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link  tag history
//! docker/registry/v2/repositories/<name>/_manifests/referrers/<subject alg>/<subject hex>/<alg>/<hex>/link
//!                                  manifest <alg>:<hex> of repo names the subject (stevedore's:
//!                                  distribution 2.8 has no referrers API)
//! stevedore/cached/<alg>/<hex>     this blob was fetched from an upstream (cache content);
//!                                  absent = pushed content
//! ```
//!
//! The filesystem backend has none (`BlobStore::shared_meta` is `None`): its index is the
//! only truth. Each request to the bucket is counted in
//! `stevedore_bucket_metadata_operations_total`. Must not: know the index, decide what a
//! record means for the API (that is `registry`'s), or delete blob data.

use super::{S3Backend, StoreError};
use crate::oci::{Digest, RepoName, Tag};
use bytes::Bytes;
use prometheus::IntCounterVec;
use std::sync::{Arc, OnceLock};

const REPOS: &str = "docker/registry/v2/repositories";

#[derive(Debug, Clone)]
pub struct SharedMeta {
    s3: S3Backend,
    ops: Arc<OnceLock<IntCounterVec>>,
}

fn digest_path(d: &Digest) -> String {
    format!("{}/{}", d.algorithm().name(), d.hex())
}

fn layer_link(repo: &RepoName, d: &Digest) -> String {
    format!("{REPOS}/{repo}/_layers/{}/link", digest_path(d))
}

fn revision_link(repo: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOS}/{repo}/_manifests/revisions/{}/link",
        digest_path(d)
    )
}

fn referrers_dir(repo: &RepoName, subject: &Digest) -> String {
    format!(
        "{REPOS}/{repo}/_manifests/referrers/{}",
        digest_path(subject)
    )
}

fn referrer_link(repo: &RepoName, subject: &Digest, d: &Digest) -> String {
    format!("{}/{}/link", referrers_dir(repo, subject), digest_path(d))
}

fn tags_dir(repo: &RepoName) -> String {
    format!("{REPOS}/{repo}/_manifests/tags")
}

fn tag_dir(repo: &RepoName, tag: &Tag) -> String {
    format!("{}/{tag}", tags_dir(repo))
}

fn cached_marker(d: &Digest) -> String {
    format!("stevedore/cached/{}", digest_path(d))
}

impl SharedMeta {
    pub(super) fn new(s3: S3Backend) -> SharedMeta {
        SharedMeta {
            s3,
            ops: Arc::default(),
        }
    }

    /// Counts this bucket's metadata requests in `counter` (labels: op, outcome).
    pub fn count_in(&self, counter: IntCounterVec) {
        let _ = self.ops.set(counter);
    }

    fn counted<T>(&self, op: &str, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(c) = self.ops.get() {
            let outcome = if r.is_ok() { "ok" } else { "error" };
            c.with_label_values(&[op, outcome]).inc();
        }
        r
    }

    async fn read(&self, key: &str) -> Result<Option<(Bytes, u64)>, StoreError> {
        self.counted("read", self.s3.read_small_object(key).await)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.counted("read", self.s3.object_exists(key).await)
    }

    async fn write(&self, key: &str, body: impl Into<Bytes>) -> Result<(), StoreError> {
        self.counted("write", self.s3.write_small_object(key, body.into()).await)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.counted("delete", self.s3.delete_object(key).await)
    }

    async fn list_dir(&self, key: &str) -> Result<(Vec<String>, Vec<String>), StoreError> {
        self.counted("list", self.s3.list_dir(key).await)
    }

    async fn write_link(&self, key: &str, d: &Digest) -> Result<(), StoreError> {
        self.write(key, d.as_str().as_bytes().to_vec()).await
    }

    /// The digest a link file names, with when it was written; `None` when absent.
    async fn read_link(&self, key: &str) -> Result<Option<(Digest, u64)>, StoreError> {
        let Some((body, modified)) = self.read(key).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&body);
        match Digest::parse(text.trim()) {
            Ok(d) => Ok(Some((d, modified))),
            Err(e) => Err(StoreError::Io(std::io::Error::other(format!(
                "bucket link {key} does not hold a digest ({e})"
            )))),
        }
    }

    // ---- blob links

    /// Whether blob `d` is visible in `repo` (its `_layers` link exists).
    pub async fn layer_linked(&self, repo: &RepoName, d: &Digest) -> Result<bool, StoreError> {
        self.exists(&layer_link(repo, d)).await
    }

    /// Makes blob `d` visible in `repo`.
    pub async fn link_layer(&self, repo: &RepoName, d: &Digest) -> Result<(), StoreError> {
        self.write_link(&layer_link(repo, d), d).await
    }

    /// Removes `repo`'s link to blob `d`; whether it was there.
    pub async fn unlink_layer(&self, repo: &RepoName, d: &Digest) -> Result<bool, StoreError> {
        let key = layer_link(repo, d);
        let had = self.exists(&key).await?;
        if had {
            self.delete(&key).await?;
        }
        Ok(had)
    }

    // ---- manifests

    /// Whether manifest `d` is a revision of `repo`.
    pub async fn has_revision(&self, repo: &RepoName, d: &Digest) -> Result<bool, StoreError> {
        self.exists(&revision_link(repo, d)).await
    }

    /// Records manifest `d` as a revision of `repo` (its bytes are a committed blob).
    pub async fn add_revision(&self, repo: &RepoName, d: &Digest) -> Result<(), StoreError> {
        self.write_link(&revision_link(repo, d), d).await
    }

    /// Removes manifest `d` from `repo`; whether it was there.
    pub async fn remove_revision(&self, repo: &RepoName, d: &Digest) -> Result<bool, StoreError> {
        let key = revision_link(repo, d);
        let had = self.exists(&key).await?;
        if had {
            self.delete(&key).await?;
        }
        Ok(had)
    }

    // ---- referrers

    /// Records that manifest `d` of `repo` names `subject`.
    pub async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        d: &Digest,
    ) -> Result<(), StoreError> {
        self.write_link(&referrer_link(repo, subject, d), d).await
    }

    /// Removes the record that manifest `d` of `repo` names `subject`.
    pub async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        d: &Digest,
    ) -> Result<(), StoreError> {
        self.delete(&referrer_link(repo, subject, d)).await
    }

    /// The manifests of `repo` recorded as naming `subject` (one listing).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Digest>, StoreError> {
        let keys = self.counted(
            "list",
            self.s3.list_below(&referrers_dir(repo, subject)).await,
        )?;
        Ok(keys
            .iter()
            .filter_map(|k| {
                let (alg, rest) = k.split_once('/')?;
                let hex = rest.strip_suffix("/link")?;
                Digest::parse(&format!("{alg}:{hex}")).ok()
            })
            .collect())
    }

    // ---- tags

    /// What `tag` of `repo` points at, with when it was last pointed (seconds since the
    /// epoch); `None` when there is no such tag.
    pub async fn tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        self.read_link(&format!("{}/current/link", tag_dir(repo, tag)))
            .await
    }

    /// Points `tag` of `repo` at `d`: the history entry first, then `current` (distribution's
    /// order), so a reader never finds a current digest missing from the history.
    pub async fn set_tag(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> Result<(), StoreError> {
        let dir = tag_dir(repo, tag);
        self.write_link(&format!("{dir}/index/{}/link", digest_path(d)), d)
            .await?;
        self.write_link(&format!("{dir}/current/link"), d).await
    }

    /// Removes `tag` of `repo` (its current link first, then its history); whether it was
    /// there.
    pub async fn remove_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        let dir = tag_dir(repo, tag);
        let current = format!("{dir}/current/link");
        let had = self.exists(&current).await?;
        self.delete(&current).await?;
        let rest = self.counted("list", self.s3.list_below(&dir).await)?;
        for key in rest {
            self.delete(&format!("{dir}/{key}")).await?;
        }
        Ok(had)
    }

    /// The tags of `repo`, sorted; `None` when the bucket has no such repository. A tag is
    /// one with a `current` link (one listing of the tags' objects: a store that keeps
    /// empty directories, or a delete half done, shows no tag that is not there).
    pub async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StoreError> {
        let objects = self.counted("list", self.s3.list_below(&tags_dir(repo)).await)?;
        let mut tags: Vec<String> = objects
            .iter()
            .filter_map(|k| k.strip_suffix("/current/link"))
            .filter(|t| !t.contains('/'))
            .map(str::to_owned)
            .collect();
        if tags.is_empty() {
            let (dirs, files) = self.list_dir(&format!("{REPOS}/{repo}")).await?;
            if dirs.is_empty() && files.is_empty() {
                return Ok(None);
            }
        }
        tags.sort();
        Ok(Some(tags))
    }

    /// Every repository in the bucket, sorted: a walk of the `repositories/` directories (one
    /// listing per directory, not per object), as distribution's catalog does.
    pub async fn repositories(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(name) = pending.pop() {
            let dir = if name.is_empty() {
                REPOS.to_owned()
            } else {
                format!("{REPOS}/{name}")
            };
            let (dirs, _) = self.list_dir(&dir).await?;
            for child in dirs {
                if child == "_layers" || child == "_manifests" {
                    if !name.is_empty() && out.last() != Some(&name) {
                        out.push(name.clone());
                    }
                } else if !child.starts_with('_') {
                    pending.push(if name.is_empty() {
                        child
                    } else {
                        format!("{name}/{child}")
                    });
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    // ---- cached markers

    /// Whether blob `d` was fetched from an upstream (cache content) rather than pushed.
    pub async fn is_cached(&self, d: &Digest) -> Result<bool, StoreError> {
        self.exists(&cached_marker(d)).await
    }

    /// Marks blob `d` as fetched from an upstream.
    pub async fn mark_cached(&self, d: &Digest) -> Result<(), StoreError> {
        self.write(&cached_marker(d), Bytes::new()).await
    }

    /// Marks blob `d` as pushed content (its cached marker goes).
    pub async fn mark_pushed(&self, d: &Digest) -> Result<(), StoreError> {
        self.delete(&cached_marker(d)).await
    }
}
