//! The bucket as the one maintenance job sees it (issue 16, `S3-LAYOUT.md`): the lease that
//! lets one run at a time work on a bucket, listings of the repository links, cached-content
//! markers, gc candidates and the access records serving replicas write, and the deletes of
//! what a run collects. Keys under `<root>`:
//!
//! ```text
//! stevedore/gc/lease                      {"holder", "expires", "acquired"}: conditional writes only
//! stevedore/gc/candidates/<alg>/<hex>     an unreferenced pushed blob, {"first_seen"} (ms)
//! stevedore/gc/access                     last accesses merged by earlier runs {"<digest>": ms}
//! stevedore/access/<node>/<ms>-<uuid>     one replica's accesses of one interval {"<digest>": ms}
//! ```
//!
//! Decides nothing (what to mark, sweep or evict is `lifecycle::bucket`'s); keeps object_store
//! inside `storage/s3/`. The lease is taken with `PutMode::Create` and renewed, taken over
//! (once expired) and released with `PutMode::Update` on the ETag read, so two runs can never
//! both believe they hold it.

use super::{S3Backend, not_found, s3_err};
use crate::oci::{Algorithm, Digest};
use crate::storage::StoreError;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use std::collections::HashMap;
use std::time::Duration;

const REPOSITORIES: &str = "docker/registry/v2/repositories";
const LEASE: &str = "stevedore/gc/lease";
const CANDIDATES: &str = "stevedore/gc/candidates";
const ACCESS_SUMMARY: &str = "stevedore/gc/access";
const ACCESS: &str = "stevedore/access";
const CACHED: &str = "stevedore/cached";

/// An object of the bucket, named by its key under the root directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKey(String);

impl BucketKey {
    pub(super) fn new(rel: String) -> BucketKey {
        BucketKey(rel)
    }
}

impl std::fmt::Display for BucketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob in the bucket: size and when its object was last written (ms).
#[derive(Debug, Clone)]
pub struct BucketBlob {
    pub digest: Digest,
    pub size: u64,
    pub modified: u64,
}

/// One link file under `repositories/`.
#[derive(Debug, Clone)]
pub struct Link {
    pub repo: String,
    pub kind: LinkKind,
    pub key: BucketKey,
    /// When the link was written (ms).
    pub modified: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// `_layers/<alg>/<hex>/link`: the blob is visible in the repository.
    Layer(Digest),
    /// `_manifests/revisions/<alg>/<hex>/link`: the manifest is in the repository.
    Revision(Digest),
    /// `_manifests/tags/<tag>/current/link`: the tag's manifest is in the link's body.
    TagCurrent(String),
    /// `_manifests/tags/<tag>/index/<alg>/<hex>/link`: the tag pointed at the digest once.
    TagIndex(String, Digest),
    /// `_manifests/referrers/<subject alg>/<subject hex>/<alg>/<hex>/link`: manifest `<alg>:<hex>`
    /// names the subject (goes with that manifest; references nothing).
    Referrer(Digest),
    /// `_uploads/<uuid>/state`: a push upload session under way (its object, if completed,
    /// is not yet named).
    Session(String),
}

/// Who holds the bucket's maintenance lease, and until when.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LeaseRecord {
    holder: String,
    /// Unix ms after which anyone may take it over.
    expires: u64,
    acquired: u64,
}

/// The maintenance lease, held.
#[derive(Debug)]
pub struct Lease {
    record: LeaseRecord,
    version: UpdateVersion,
}

impl Lease {
    pub fn holder(&self) -> &str {
        &self.record.holder
    }

    /// Unix ms at which the lease lapses unless renewed.
    pub fn expires(&self) -> u64 {
        self.record.expires
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the maintenance lease is held by {holder} until {until} (unix ms); try again later")]
    Held { holder: String, until: u64 },
    #[error("the maintenance lease was taken over by another run")]
    Lost,
    #[error("the object store does not support conditional writes (If-None-Match / If-Match)")]
    Unsupported,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn lease_err(e: object_store::Error) -> LeaseError {
    match e {
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            LeaseError::Lost
        }
        object_store::Error::NotImplemented { .. } => LeaseError::Unsupported,
        e => LeaseError::Store(s3_err(e)),
    }
}

pub(super) fn modified_ms(meta: &object_store::ObjectMeta) -> u64 {
    u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0)
}

/// `<alg>/<hex>` as a digest.
fn digest_of(alg: &str, hex: &str) -> Option<Digest> {
    Algorithm::ALL.iter().find(|a| a.name() == alg)?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// The link a key under `repositories/` is (its path parts below that prefix).
fn parse_link(parts: &[&str]) -> Option<(String, LinkKind)> {
    let at = parts
        .iter()
        .position(|p| *p == "_layers" || *p == "_manifests" || *p == "_uploads")?;
    if at == 0 {
        return None;
    }
    let repo = parts[..at].join("/");
    let kind = match &parts[at..] {
        ["_layers", alg, hex, "link"] => LinkKind::Layer(digest_of(alg, hex)?),
        ["_manifests", "revisions", alg, hex, "link"] => LinkKind::Revision(digest_of(alg, hex)?),
        ["_manifests", "tags", tag, "current", "link"] => LinkKind::TagCurrent((*tag).to_owned()),
        ["_manifests", "tags", tag, "index", alg, hex, "link"] => {
            LinkKind::TagIndex((*tag).to_owned(), digest_of(alg, hex)?)
        }
        ["_uploads", id, "state"] => LinkKind::Session((*id).to_owned()),
        ["_manifests", "referrers", salg, shex, alg, hex, "link"] => {
            digest_of(salg, shex)?;
            LinkKind::Referrer(digest_of(alg, hex)?)
        }
        _ => return None,
    };
    Some((repo, kind))
}

impl S3Backend {
    /// `rest` relative to the root, when `key` is under it.
    fn relative(&self, key: &Key) -> Option<String> {
        let k = key.as_ref();
        if self.inner.root.is_empty() {
            return Some(k.to_owned());
        }
        k.strip_prefix(&self.inner.root)?
            .strip_prefix('/')
            .map(str::to_owned)
    }

    /// Every object under `prefix` (relative to the root) with its relative key.
    async fn objects(&self, prefix: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let mut list = self.inner.store.list(Some(&self.key(prefix)));
        let mut out = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(s3_err)?;
            if let Some(rel) = self.relative(&meta.location) {
                out.push((rel, meta.size, modified_ms(&meta)));
            }
        }
        Ok(out)
    }

    /// A small object whole; `None` when absent.
    async fn get_small(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        match self.inner.store.get(&self.key(rel)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(s3_err)?)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// This node's name (kept in its local directory): a run's lease holder and the writer
    /// of its access records.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Takes the bucket's maintenance lease for `ttl`, unless another holder's has not
    /// expired.
    pub async fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        let key = self.key(LEASE);
        let now = crate::clock::now_ms();
        let record = LeaseRecord {
            holder: holder.to_owned(),
            expires: now + ttl.as_millis() as u64,
            acquired: now,
        };
        let body = serde_json::to_vec(&record).expect("a lease serializes");
        let mode = match self.inner.store.get(&key).await {
            Err(e) if not_found(&e) => PutMode::Create,
            Err(e) => return Err(LeaseError::Store(s3_err(e))),
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(s3_err)?;
                // An unreadable lease is treated as expired (nobody can be relying on it).
                if let Ok(old) = serde_json::from_slice::<LeaseRecord>(&bytes)
                    && old.expires > now
                    && old.holder != holder
                {
                    return Err(LeaseError::Held {
                        holder: old.holder,
                        until: old.expires,
                    });
                }
                PutMode::Update(version)
            }
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self.inner.store.put_opts(&key, body.into(), opts).await {
            Ok(r) => Ok(Lease {
                record,
                version: r.into(),
            }),
            // Another run wrote it between the read and the write: it holds it now.
            Err(e) => match lease_err(e) {
                LeaseError::Lost => {
                    let held = self.get_small(LEASE).await?;
                    let old = held.and_then(|b| serde_json::from_slice::<LeaseRecord>(&b).ok());
                    Err(LeaseError::Held {
                        holder: old
                            .as_ref()
                            .map_or("another run".into(), |o| o.holder.clone()),
                        until: old.map_or(0, |o| o.expires),
                    })
                }
                other => Err(other),
            },
        }
    }

    /// Extends a held lease to `ttl` from now; `Lost` when another run took it over.
    pub async fn renew_lease(&self, lease: &mut Lease, ttl: Duration) -> Result<(), LeaseError> {
        let mut record = lease.record.clone();
        record.expires = crate::clock::now_ms() + ttl.as_millis() as u64;
        self.write_lease(lease, record).await
    }

    /// Gives the lease up (it is written as expired, so the next run takes it at once).
    pub async fn release_lease(&self, mut lease: Lease) -> Result<(), LeaseError> {
        let mut record = lease.record.clone();
        record.expires = 0;
        self.write_lease(&mut lease, record).await
    }

    async fn write_lease(&self, lease: &mut Lease, record: LeaseRecord) -> Result<(), LeaseError> {
        let body = serde_json::to_vec(&record).expect("a lease serializes");
        let opts = PutOptions {
            mode: PutMode::Update(lease.version.clone()),
            ..Default::default()
        };
        let r = self
            .inner
            .store
            .put_opts(&self.key(LEASE), body.into(), opts)
            .await
            .map_err(lease_err)?;
        lease.version = r.into();
        lease.record = record;
        Ok(())
    }

    /// Every committed blob with its size and last write.
    pub async fn blobs(&self) -> Result<Vec<BucketBlob>, StoreError> {
        let mut out = Vec::new();
        for (rel, size, modified) in self.objects("docker/registry/v2/blobs").await? {
            let parts: Vec<&str> = rel.split('/').collect();
            // docker/registry/v2/blobs/<algorithm>/<2 hex>/<hex>/data
            if let [_, _, _, _, alg, _, hex, "data"] = parts.as_slice()
                && let Some(digest) = digest_of(alg, hex)
            {
                out.push(BucketBlob {
                    digest,
                    size,
                    modified,
                });
            }
        }
        let at_layout: std::collections::HashSet<Digest> =
            out.iter().map(|b| b.digest.clone()).collect();
        for (digest, size, modified) in self.named_blobs().await? {
            if !at_layout.contains(&digest) {
                out.push(BucketBlob {
                    digest,
                    size,
                    modified,
                });
            }
        }
        Ok(out)
    }

    /// Every link file of every repository (layer, manifest revision and tag links).
    pub async fn links(&self) -> Result<Vec<Link>, StoreError> {
        let mut out = Vec::new();
        for (rel, _, modified) in self.objects(REPOSITORIES).await? {
            let Some(rest) = rel
                .strip_prefix(REPOSITORIES)
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            if let Some((repo, kind)) = parse_link(&parts) {
                out.push(Link {
                    repo,
                    kind,
                    key: BucketKey(rel),
                    modified,
                });
            }
        }
        Ok(out)
    }

    /// The digest a link file names (`<alg>:<hex>`); `None` when absent or unreadable.
    pub async fn read_link(&self, key: &BucketKey) -> Result<Option<Digest>, StoreError> {
        Ok(self
            .get_small(&key.0)
            .await?
            .and_then(|b| Digest::parse(std::str::from_utf8(&b).ok()?.trim()).ok()))
    }

    /// Blobs marked as cached content (fetched from an upstream), with the marker's write
    /// time.
    pub async fn cached_markers(&self) -> Result<Vec<(Digest, BucketKey, u64)>, StoreError> {
        let mut out = Vec::new();
        for (rel, _, modified) in self.objects(CACHED).await? {
            let parts: Vec<&str> = rel.split('/').collect();
            if let [_, _, alg, hex] = parts.as_slice()
                && let Some(d) = digest_of(alg, hex)
            {
                out.push((d, BucketKey(rel), modified));
            }
        }
        Ok(out)
    }

    fn candidate_key(d: &Digest) -> String {
        format!("{CANDIDATES}/{}/{}", d.algorithm().name(), d.hex())
    }

    /// The unreferenced pushed blobs earlier runs recorded, with when each was first seen so.
    pub async fn candidates(&self) -> Result<HashMap<Digest, u64>, StoreError> {
        let mut out = HashMap::new();
        for (rel, _, modified) in self.objects(CANDIDATES).await? {
            let parts: Vec<&str> = rel.split('/').collect();
            let [_, _, _, alg, hex] = parts.as_slice() else {
                continue;
            };
            let Some(d) = digest_of(alg, hex) else {
                continue;
            };
            let first_seen = self
                .get_small(&rel)
                .await?
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["first_seen"].as_u64())
                .unwrap_or(modified);
            out.insert(d, first_seen);
        }
        Ok(out)
    }

    /// Records `d` as unreferenced since `first_seen`.
    pub async fn put_candidate(&self, d: &Digest, first_seen: u64) -> Result<(), StoreError> {
        let body = serde_json::json!({ "first_seen": first_seen }).to_string();
        self.inner
            .store
            .put(&self.key(&Self::candidate_key(d)), Bytes::from(body).into())
            .await
            .map_err(s3_err)?;
        Ok(())
    }

    /// Forgets `d` as a candidate.
    pub async fn remove_candidate(&self, d: &Digest) -> Result<(), StoreError> {
        self.remove(&BucketKey(Self::candidate_key(d))).await
    }

    /// Deletes one object (a link, a marker); absent is fine.
    pub async fn remove(&self, key: &BucketKey) -> Result<(), StoreError> {
        self.remove_object(&self.key(&key.0)).await
    }

    /// Writes this node's access record: the last access (ms) of each digest served since
    /// its previous one.
    pub async fn put_access_record(
        &self,
        accesses: &HashMap<Digest, u64>,
    ) -> Result<(), StoreError> {
        let body: HashMap<&str, u64> = accesses.iter().map(|(d, t)| (d.as_str(), *t)).collect();
        let key = format!(
            "{ACCESS}/{}/{}-{}",
            self.inner.node,
            crate::clock::now_ms(),
            uuid::Uuid::new_v4().simple()
        );
        let body = serde_json::to_vec(&body).expect("a record serializes");
        self.inner
            .store
            .put(&self.key(&key), body.into())
            .await
            .map_err(s3_err)?;
        Ok(())
    }

    /// Every access record the replicas wrote (not yet merged), and the summary of those
    /// merged before: the last access of each digest, and the records read.
    pub async fn access_times(&self) -> Result<(HashMap<Digest, u64>, Vec<BucketKey>), StoreError> {
        let mut times = HashMap::new();
        let mut merge = |bytes: Option<Bytes>| {
            let Some(map) =
                bytes.and_then(|b| serde_json::from_slice::<HashMap<String, u64>>(&b).ok())
            else {
                return;
            };
            for (d, t) in map {
                if let Ok(d) = Digest::parse(&d) {
                    let e = times.entry(d).or_insert(t);
                    *e = (*e).max(t);
                }
            }
        };
        merge(self.get_small(ACCESS_SUMMARY).await?);
        let records: Vec<String> = self
            .objects(ACCESS)
            .await?
            .into_iter()
            .map(|(rel, _, _)| rel)
            .collect();
        let bodies: Vec<Option<Bytes>> = futures::stream::iter(records.clone())
            .map(|rel| {
                let bucket = self.clone();
                async move { bucket.get_small(&rel).await }
            })
            .buffered(8)
            .try_collect()
            .await?;
        for b in bodies {
            merge(b);
        }
        Ok((times, records.into_iter().map(BucketKey).collect()))
    }

    /// Replaces the access summary with `times`, then deletes the records merged into it.
    pub async fn compact_access(
        &self,
        times: &HashMap<Digest, u64>,
        merged: &[BucketKey],
    ) -> Result<(), StoreError> {
        let body: HashMap<&str, u64> = times.iter().map(|(d, t)| (d.as_str(), *t)).collect();
        let body = serde_json::to_vec(&body).expect("a summary serializes");
        self.inner
            .store
            .put(&self.key(ACCESS_SUMMARY), body.into())
            .await
            .map_err(s3_err)?;
        futures::stream::iter(merged.to_vec())
            .map(|k| {
                let bucket = self.clone();
                async move { bucket.remove(&k).await }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_parsed_from_their_keys() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        let cases = [
            (
                format!("team/app/_layers/sha256/{hex}/link"),
                Some(("team/app", LinkKind::Layer(d.clone()))),
            ),
            (
                format!("app/_manifests/revisions/sha256/{hex}/link"),
                Some(("app", LinkKind::Revision(d.clone()))),
            ),
            (
                "a/b/c/_manifests/tags/v1/current/link".to_owned(),
                Some(("a/b/c", LinkKind::TagCurrent("v1".into()))),
            ),
            (
                format!("app/_manifests/tags/v1/index/sha256/{hex}/link"),
                Some(("app", LinkKind::TagIndex("v1".into(), d.clone()))),
            ),
            (
                format!("app/_manifests/referrers/sha256/{hex}/sha256/{hex}/link"),
                Some(("app", LinkKind::Referrer(d.clone()))),
            ),
            (format!("app/_uploads/{hex}/startedat"), None),
            (
                format!("app/_uploads/{hex}/state"),
                Some(("app", LinkKind::Session(hex.clone()))),
            ),
            (format!("_layers/sha256/{hex}/link"), None),
            ("app/_layers/sha256/zz/link".to_owned(), None),
        ];
        for (key, want) in cases {
            let parts: Vec<&str> = key.split('/').collect();
            let got = parse_link(&parts);
            assert_eq!(
                got.as_ref().map(|(r, k)| (r.as_str(), k.clone())),
                want,
                "{key}"
            );
        }
    }
}
