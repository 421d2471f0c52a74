//! The registry's metadata in sled: repositories, tags, manifests, which repository may see
//! which blob, blob records (size, origin, last access), referrers, and the access order of
//! cached blobs. This is the only module that imports sled; its types never leave it, so the
//! engine can be replaced here alone.
//!
//! Keys are `repo \0 rest` (names and tags cannot contain NUL), so a prefix scan of a repository
//! yields its tags in lexical order; digests are stored in their string form (`sha256:…`).
//! Values are JSON. Callers get typed keys and records back (`RepoName`, `Digest`, `Tag`), and
//! a record that does not decode is an `IndexError::Corrupt`, never skipped.
//!
//! Every operation that writes more than one record (a manifest with its blob record, links,
//! referrer and tag; a manifest delete with its tags; a blob record with its place in the
//! access order) is one sled transaction over all trees: a crash leaves all of it or none.
//!
//! Hot-path figures are O(1): the count and bytes of blobs per origin are running totals,
//! counted once when the index opens and then kept by each write; eviction walks the `access`
//! tree (`last access (8 bytes, big-endian) ‖ digest` for cached blobs), oldest first.

use crate::oci::{Descriptor, Digest, RepoName, Tag};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Another process (a running server) holds the index.
    #[error("the index is in use by another process (is the server running?): {0}")]
    Locked(String),
    #[error("index database: {0}")]
    Db(String),
    #[error("index record is corrupt: {0}")]
    Corrupt(String),
}

impl From<sled::Error> for IndexError {
    fn from(e: sled::Error) -> Self {
        IndexError::Db(e.to_string())
    }
}

type Result<T> = std::result::Result<T, IndexError>;
type TxResult<T> = std::result::Result<T, ConflictableTransactionError<IndexError>>;

/// Whether content was pushed here or cached from an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Local,
    Proxy,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Proxy => "proxy",
        }
    }

    fn slot(self) -> usize {
        match self {
            Origin::Local => 0,
            Origin::Proxy => 1,
        }
    }
}

/// A blob (layer, config or manifest bytes) in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub origin: Origin,
    /// Milliseconds since the Unix epoch.
    pub created: u64,
    /// Milliseconds since the Unix epoch.
    pub last_access: u64,
}

/// A manifest of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    pub origin: Origin,
    #[serde(default, with = "digest_opt")]
    pub subject: Option<Digest>,
}

/// What a tag points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    #[serde(with = "digest_str")]
    pub digest: Digest,
    pub origin: Origin,
    /// When a proxied tag was last confirmed with the upstream (seconds since the epoch).
    #[serde(default)]
    pub checked: u64,
}

/// What the mirror remembers of a proxied tag beside its record (`tagnotes` tree): whether
/// the upstream stopped answering for it, and when each digest it named was first seen (the
/// age `proxy.cooldown` is measured by). Kept apart from `TagRecord` so that the tag's record
/// stays what every reader of it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagNotes {
    /// When the upstream first answered 404 for the tag (seconds since the epoch); cleared when
    /// it names the tag again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_gone: Option<u64>,
    /// Digests the upstream named for the tag, with when stevedore first saw each (seconds
    /// since the epoch), newest last; at most `TagNotes::MAX_SEEN`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<SeenDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenDigest {
    #[serde(with = "digest_str")]
    pub digest: Digest,
    pub at: u64,
}

impl TagNotes {
    /// How many first-seen times are kept per tag (the oldest go first).
    pub const MAX_SEEN: usize = 16;

    /// When `digest` was first seen for the tag, recording `now` if it never was.
    pub fn first_seen(&mut self, digest: &Digest, now: u64) -> u64 {
        if let Some(s) = self.seen.iter().find(|s| &s.digest == digest) {
            return s.at;
        }
        self.seen.push(SeenDigest {
            digest: digest.clone(),
            at: now,
        });
        if self.seen.len() > Self::MAX_SEEN {
            self.seen.remove(0);
        }
        now
    }
}

/// Digests in records are their string form.
mod digest_str {
    use crate::oci::Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

mod digest_opt {
    use crate::oci::Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(d.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| Digest::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Count and bytes of the blobs of one origin.
#[derive(Debug, Default)]
struct Total {
    blobs: AtomicU64,
    bytes: AtomicU64,
}

pub struct Index {
    db: sled::Db,
    repos: sled::Tree,
    tags: sled::Tree,
    manifests: sled::Tree,
    links: sled::Tree,
    blobs: sled::Tree,
    referrers: sled::Tree,
    access: sled::Tree,
    /// `repo \0 tag` → `TagNotes` of proxied tags; outside the transactions (advisory).
    tagnotes: sled::Tree,
    /// `auth.builtin`'s users and roles (see "users and roles" below).
    accounts: Accounts,
    /// Console figures (outside the transactions, advisory): `repo \0 digest` → `PullRecord`,
    /// and `pullrank`: `(u64::MAX - count) ‖ repo \0 digest` → `[]`, most pulled first.
    pulls: sled::Tree,
    pullrank: sled::Tree,
    /// Indexed by `Origin::slot`.
    totals: [Total; 2],
    /// Bumped after every write to the tags or manifests trees, so that what was read from
    /// them can be kept in memory and known to be current (see [`Index::tags_generation`]).
    tags_generation: AtomicU64,
}

/// Bumps the tags generation when dropped: after the write it guards, whatever its outcome.
struct TagsChanging<'a>(&'a AtomicU64);

impl Drop for TagsChanging<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn access_key(last_access: u64, digest: &Digest) -> Vec<u8> {
    let mut k = last_access.to_be_bytes().to_vec();
    k.extend_from_slice(digest.as_str().as_bytes());
    k
}

fn decode<T: DeserializeOwned>(v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| IndexError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("index records serialize")
}

fn text(k: &[u8]) -> Result<&str> {
    std::str::from_utf8(k).map_err(|_| IndexError::Corrupt(format!("key {k:?} is not UTF-8")))
}

fn digest_key(k: &[u8]) -> Result<Digest> {
    let s = text(k)?;
    Digest::parse(s).map_err(|e| IndexError::Corrupt(format!("key {s:?}: {e}")))
}

fn repo_key(s: &str) -> Result<RepoName> {
    RepoName::parse(s).map_err(|e| IndexError::Corrupt(format!("repository {s:?}: {e}")))
}

/// A `repo \0 rest` key split in two.
fn pair(k: &[u8]) -> Result<(RepoName, &str)> {
    let s = text(k)?;
    let (r, rest) = s
        .split_once('\0')
        .ok_or_else(|| IndexError::Corrupt(format!("key {s:?} has no repository part")))?;
    Ok((repo_key(r)?, rest))
}

fn parse_digest(s: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| IndexError::Corrupt(format!("digest {s:?}: {e}")))
}

fn abort<T>(r: Result<T>) -> TxResult<T> {
    r.map_err(ConflictableTransactionError::Abort)
}

/// The trees inside one transaction.
struct Tx<'a> {
    repos: &'a TransactionalTree,
    tags: &'a TransactionalTree,
    manifests: &'a TransactionalTree,
    links: &'a TransactionalTree,
    blobs: &'a TransactionalTree,
    referrers: &'a TransactionalTree,
    access: &'a TransactionalTree,
}

/// A blob record before and after a write, for the running totals.
type Change = (Option<BlobRecord>, Option<BlobRecord>);

impl Tx<'_> {
    fn blob(&self, digest: &Digest) -> TxResult<Option<BlobRecord>> {
        match self.blobs.get(digest.as_str())? {
            None => Ok(None),
            Some(v) => abort(decode(&v)).map(Some),
        }
    }

    fn write_blob(
        &self,
        digest: &Digest,
        old: Option<&BlobRecord>,
        new: Option<&BlobRecord>,
    ) -> TxResult<()> {
        if let Some(o) = old.filter(|o| o.origin == Origin::Proxy) {
            self.access.remove(access_key(o.last_access, digest))?;
        }
        match new {
            Some(n) => {
                if n.origin == Origin::Proxy {
                    self.access.insert(access_key(n.last_access, digest), &[])?;
                }
                self.blobs.insert(digest.as_str(), encode(n))?;
            }
            None => {
                self.blobs.remove(digest.as_str())?;
            }
        }
        Ok(())
    }

    /// Records a blob; a blob once local stays local.
    fn put_blob(&self, digest: &Digest, record: &BlobRecord) -> TxResult<Change> {
        let old = self.blob(digest)?;
        let mut rec = record.clone();
        if let Some(old) = &old {
            if old.origin == Origin::Local {
                rec.origin = Origin::Local;
            }
            rec.created = old.created.min(rec.created);
            rec.last_access = old.last_access.max(rec.last_access);
        }
        self.write_blob(digest, old.as_ref(), Some(&rec))?;
        Ok((old, Some(rec)))
    }

    fn link(&self, repo: &RepoName, digest: &Digest) -> TxResult<()> {
        self.links
            .insert(key(&[repo.as_str(), digest.as_str()]), &[])?;
        self.repos.insert(repo.as_str(), &[])?;
        Ok(())
    }
}

impl Index {
    /// Opens the index, taking its lock, and counts the blobs once for the running totals.
    pub fn open(path: &Path) -> Result<Index> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    IndexError::Locked(io.to_string())
                }
                e => e.into(),
            })?;
        let index = Index {
            repos: db.open_tree("repos")?,
            tags: db.open_tree("tags")?,
            manifests: db.open_tree("manifests")?,
            links: db.open_tree("links")?,
            blobs: db.open_tree("blobs")?,
            referrers: db.open_tree("referrers")?,
            access: db.open_tree("access")?,
            tagnotes: db.open_tree("tagnotes")?,
            accounts: Accounts::open(&db)?,
            pulls: db.open_tree("pulls")?,
            pullrank: db.open_tree("pullrank")?,
            totals: Default::default(),
            tags_generation: AtomicU64::new(0),
            db,
        };
        // An index written before the access tree existed gets it built here, once.
        let build_access = index.access.is_empty();
        for kv in index.blobs.iter() {
            let (k, v) = kv?;
            let d = digest_key(&k)?;
            let rec: BlobRecord = decode(&v)?;
            index.account(None, Some(&rec));
            if build_access && rec.origin == Origin::Proxy {
                index.access.insert(access_key(rec.last_access, &d), &[])?;
            }
        }
        Ok(index)
    }

    /// Runs `f` as one transaction over every tree (retried by sled on conflict, so `f` has
    /// no other side effects).
    fn tx<R>(&self, f: impl Fn(&Tx<'_>) -> TxResult<R>) -> Result<R> {
        (
            &self.repos,
            &self.tags,
            &self.manifests,
            &self.links,
            &self.blobs,
            &self.referrers,
            &self.access,
        )
            .transaction(
                |(repos, tags, manifests, links, blobs, referrers, access)| {
                    f(&Tx {
                        repos,
                        tags,
                        manifests,
                        links,
                        blobs,
                        referrers,
                        access,
                    })
                },
            )
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => e.into(),
            })
    }

    /// Applies a committed change of one blob record to the running totals.
    fn account(&self, old: Option<&BlobRecord>, new: Option<&BlobRecord>) {
        if let Some(o) = old {
            let t = &self.totals[o.origin.slot()];
            t.blobs.fetch_sub(1, Ordering::Relaxed);
            t.bytes.fetch_sub(o.size, Ordering::Relaxed);
        }
        if let Some(n) = new {
            let t = &self.totals[n.origin.slot()];
            t.blobs.fetch_add(1, Ordering::Relaxed);
            t.bytes.fetch_add(n.size, Ordering::Relaxed);
        }
    }

    fn accounted<R>(&self, (change, r): (Change, R)) -> R {
        self.account(change.0.as_ref(), change.1.as_ref());
        r
    }

    /// How many blobs of `origin` the store holds, and their bytes: O(1).
    pub fn totals(&self, origin: Origin) -> (u64, u64) {
        let t = &self.totals[origin.slot()];
        (
            t.blobs.load(Ordering::Relaxed),
            t.bytes.load(Ordering::Relaxed),
        )
    }

    /// Makes every write so far durable.
    ///
    /// sled 0.34's `flush_async` deadlocks when called concurrently (its I/O threads all wait
    /// for a stability no thread is left to provide; spacejam/sled#1308, fixed only on an
    /// unreleased branch, and seen here under 8 concurrent manifest pushes). The blocking
    /// `flush`, which writes in the calling thread, runs on tokio's blocking pool instead.
    pub async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| IndexError::Db(format!("flush task failed: {e}")))??;
        Ok(())
    }

    // ---- repositories

    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        Ok(self.repos.contains_key(repo.as_str())?)
    }

    /// Up to `n` repository names after `last`, in lexical order.
    pub fn list_repos(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let start = last.map(|l| format!("{l}\0")).unwrap_or_default();
        self.repos
            .range(start.as_bytes()..)
            .take(n)
            .map(|kv| Ok(text(&kv?.0)?.to_owned()))
            .collect()
    }

    // ---- blobs

    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        self.blobs
            .get(digest.as_str())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Records a blob; a blob once local stays local.
    pub fn put_blob(&self, digest: &Digest, record: &BlobRecord) -> Result<()> {
        let change = self.tx(|t| t.put_blob(digest, record))?;
        self.accounted((change, ()));
        Ok(())
    }

    /// Records a blob and makes it visible to `repo`, together.
    pub fn record_blob(&self, repo: &RepoName, digest: &Digest, record: &BlobRecord) -> Result<()> {
        let change = self.tx(|t| {
            let change = t.put_blob(digest, record)?;
            t.link(repo, digest)?;
            Ok(change)
        })?;
        self.accounted((change, ()));
        Ok(())
    }

    /// Notes a use of a blob at `now` (a later time only): moves it in the access order.
    pub fn touch_blob(&self, digest: &Digest, now: u64) -> Result<()> {
        self.tx(|t| {
            let Some(old) = t.blob(digest)? else {
                return Ok(());
            };
            if old.last_access >= now {
                return Ok(());
            }
            let new = BlobRecord {
                last_access: now,
                ..old.clone()
            };
            t.write_blob(digest, Some(&old), Some(&new))
        })
    }

    /// Drops a blob's record; returns it.
    pub fn remove_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        let old = self.tx(|t| {
            let old = t.blob(digest)?;
            t.write_blob(digest, old.as_ref(), None)?;
            Ok(old)
        })?;
        self.account(old.as_ref(), None);
        Ok(old)
    }

    /// Every blob record. A full scan: for maintenance, never for a request.
    pub fn blobs(&self) -> Result<Vec<(Digest, BlobRecord)>> {
        let mut out = Vec::new();
        for kv in self.blobs.iter() {
            let (k, v) = kv?;
            out.push((digest_key(&k)?, decode(&v)?));
        }
        Ok(out)
    }

    /// Cached (proxied) blobs with their last recorded access, least recently used first.
    /// Lazy: an eviction pass reads only as far as it evicts.
    pub fn cached_by_access(&self) -> impl Iterator<Item = Result<(Digest, u64)>> + '_ {
        self.access.iter().map(|kv| {
            let (k, _) = kv?;
            if k.len() < 8 {
                return Err(IndexError::Corrupt(format!(
                    "access key {k:?} is too short"
                )));
            }
            let (t, d) = k.split_at(8);
            let t = u64::from_be_bytes(t.try_into().expect("8 bytes"));
            Ok((digest_key(d)?, t))
        })
    }

    // ---- links: which repository may see which blob

    pub fn link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.tx(|t| t.link(repo, digest))
    }

    pub fn is_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self
            .links
            .contains_key(key(&[repo.as_str(), digest.as_str()]))?)
    }

    pub fn unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self
            .links
            .remove(key(&[repo.as_str(), digest.as_str()]))?
            .is_some())
    }

    /// Every (repository, blob) link.
    pub fn links(&self) -> Result<Vec<(RepoName, Digest)>> {
        self.links
            .iter()
            .map(|kv| {
                let (k, _) = kv?;
                let (r, d) = pair(&k)?;
                Ok((r, parse_digest(d)?))
            })
            .collect()
    }

    // ---- manifests

    pub fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestRecord>> {
        self.manifests
            .get(key(&[repo.as_str(), digest.as_str()]))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Records a manifest of `repo` in one transaction: its bytes' blob record and link, the
    /// manifest record (a manifest once local stays local), its referrer entry when it has a
    /// subject, and the tag pushed with it.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        blob: &BlobRecord,
        record: &ManifestRecord,
        referrer: Option<&Descriptor>,
        tag: Option<(&Tag, &TagRecord)>,
    ) -> Result<()> {
        let _changing = self.tags_changing();
        let k = key(&[repo.as_str(), digest.as_str()]);
        let change = self.tx(|t| {
            let change = t.put_blob(digest, blob)?;
            t.link(repo, digest)?;
            let mut rec = record.clone();
            if let Some(old) = t.manifests.get(&k)? {
                let old: ManifestRecord = abort(decode(&old))?;
                if old.origin == Origin::Local {
                    rec.origin = Origin::Local;
                }
            }
            t.manifests.insert(k.as_slice(), encode(&rec))?;
            if let (Some(subject), Some(desc)) = (&record.subject, referrer) {
                t.referrers.insert(
                    key(&[repo.as_str(), subject.as_str(), digest.as_str()]),
                    encode(desc),
                )?;
            }
            if let Some((tag, trec)) = tag {
                t.tags
                    .insert(key(&[repo.as_str(), tag.as_str()]), encode(trec))?;
            }
            Ok(change)
        })?;
        self.accounted((change, ()));
        Ok(())
    }

    /// Removes a manifest, the tags that point at it and its referrer entry, together.
    pub fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self.delete_manifest_and_tags(repo, digest)?.is_some())
    }

    /// [`Index::delete_manifest`], saying which tags went with it (in tag order); `None` when
    /// there was no such manifest.
    pub fn delete_manifest_and_tags(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Vec<Tag>>> {
        let _changing = self.tags_changing();
        // A transaction cannot scan: the tags are found first and each is checked again
        // inside it (a tag moved away meanwhile stays).
        let prefix = key(&[repo.as_str(), ""]);
        let mut candidates = Vec::new();
        for kv in self.tags.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let t: TagRecord = decode(&v)?;
            if t.digest == *digest {
                candidates.push(k);
            }
        }
        let mk = key(&[repo.as_str(), digest.as_str()]);
        let removed = self.tx(|t| {
            let Some(old) = t.manifests.remove(mk.as_slice())? else {
                return Ok(None);
            };
            let old: ManifestRecord = abort(decode(&old))?;
            if let Some(subject) = &old.subject {
                t.referrers
                    .remove(key(&[repo.as_str(), subject.as_str(), digest.as_str()]))?;
            }
            let mut removed = Vec::new();
            for k in &candidates {
                if let Some(v) = t.tags.get(k)? {
                    let rec: TagRecord = abort(decode(&v))?;
                    if rec.digest == *digest {
                        t.tags.remove(k.as_ref())?;
                        removed.push(k.clone());
                    }
                }
            }
            Ok(Some(removed))
        })?;
        removed
            .map(|keys| {
                keys.iter()
                    .map(|k| {
                        let (_, t) = pair(k)?;
                        Tag::parse(t).map_err(|e| IndexError::Corrupt(format!("tag {t:?}: {e}")))
                    })
                    .collect()
            })
            .transpose()
    }

    /// Every (repository, manifest digest, record). A full scan: for maintenance only.
    pub fn manifests(&self) -> Result<Vec<(RepoName, Digest, ManifestRecord)>> {
        self.manifests
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let (r, d) = pair(&k)?;
                Ok((r, parse_digest(d)?, decode(&v)?))
            })
            .collect()
    }

    // ---- tags

    /// Changes with every write to the tags or manifests (bumped once the write is done): a
    /// tag resolved after reading generation `g` is still what the index says while the
    /// generation is `g`.
    pub fn tags_generation(&self) -> u64 {
        self.tags_generation.load(Ordering::SeqCst)
    }

    fn tags_changing(&self) -> TagsChanging<'_> {
        TagsChanging(&self.tags_generation)
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>> {
        self.tags
            .get(key(&[repo.as_str(), tag.as_str()]))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Points a tag (of an already recorded manifest) at `record.digest`.
    pub fn set_tag(&self, repo: &RepoName, tag: &Tag, record: &TagRecord) -> Result<()> {
        let _changing = self.tags_changing();
        let k = key(&[repo.as_str(), tag.as_str()]);
        self.tx(|t| {
            t.tags.insert(k.as_slice(), encode(record))?;
            t.repos.insert(repo.as_str(), &[])?;
            Ok(())
        })
    }

    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let _changing = self.tags_changing();
        let k = key(&[repo.as_str(), tag.as_str()]);
        self.tagnotes.remove(k.as_slice())?;
        Ok(self.tags.remove(k)?.is_some())
    }

    /// The mirror's notes on a tag (empty when it has none).
    pub fn tag_notes(&self, repo: &RepoName, tag: &Tag) -> Result<TagNotes> {
        self.tagnotes
            .get(key(&[repo.as_str(), tag.as_str()]))?
            .map(|v| decode(&v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Changes the notes on a tag with `f` (atomically: concurrent updates are retried) and
    /// returns what `f` returned on the update that was kept.
    pub fn update_tag_notes<R>(
        &self,
        repo: &RepoName,
        tag: &Tag,
        f: impl Fn(&mut TagNotes) -> R,
    ) -> Result<R> {
        let k = key(&[repo.as_str(), tag.as_str()]);
        loop {
            let old = self.tagnotes.get(k.as_slice())?;
            let mut notes: TagNotes = old.as_deref().map(decode).transpose()?.unwrap_or_default();
            let r = f(&mut notes);
            let new = (notes != TagNotes::default()).then(|| encode(&notes));
            if new.as_deref() == old.as_deref() {
                return Ok(r); // nothing changed: no write
            }
            if self
                .tagnotes
                .compare_and_swap(k.as_slice(), old, new)?
                .is_ok()
            {
                return Ok(r);
            }
        }
    }

    /// Up to `n` tags of `repo` after `last`, in lexical order.
    pub fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let prefix = key(&[repo.as_str(), ""]);
        let start = match last {
            Some(l) => {
                let mut s = key(&[repo.as_str(), l]);
                s.push(0);
                s
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for kv in self.tags.range(start..) {
            let (k, _) = kv?;
            if !k.starts_with(&prefix) || out.len() >= n {
                break;
            }
            out.push(text(&k[prefix.len()..])?.to_owned());
        }
        Ok(out)
    }

    /// Every (repository, tag, record). A full scan: for maintenance only.
    pub fn tags(&self) -> Result<Vec<(RepoName, Tag, TagRecord)>> {
        self.tags
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let (r, t) = pair(&k)?;
                let t =
                    Tag::parse(t).map_err(|e| IndexError::Corrupt(format!("tag {t:?}: {e}")))?;
                Ok((r, t, decode(&v)?))
            })
            .collect()
    }

    // ---- referrers

    /// Descriptors of the manifests of `repo` whose subject is `subject`.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>> {
        self.referrers
            .scan_prefix(key(&[repo.as_str(), subject.as_str(), ""]))
            .map(|kv| decode(&kv?.1))
            .collect()
    }
}

// ---- users and roles (`auth.builtin`)
//
// Two trees outside the content transactions: `users` (name → `UserRecord`) and `roles`
// (name → `RoleRecord`). What the records mean (built-in roles, globs, who is an admin) is
// `auth::builtin`'s business; here they are only kept, and written together atomically.

/// A user of `auth.builtin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// bcrypt hash of the password.
    pub password: String,
    /// Names of the roles the user holds.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created: u64,
}

/// A role of `auth.builtin`: what it grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    #[serde(default)]
    pub rules: Vec<RoleRule>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created: u64,
}

/// Actions (`pull`, `push`, `delete`) on the repositories matching a glob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRule {
    pub repository: String,
    pub actions: Vec<String>,
}

/// One change of [`Index::write_accounts`]: a record to put, or `None` to remove the name.
pub type AccountChange<'a, T> = (&'a str, Option<&'a T>);

struct Accounts {
    users: sled::Tree,
    roles: sled::Tree,
}

impl Accounts {
    fn open(db: &sled::Db) -> Result<Accounts> {
        Ok(Accounts {
            users: db.open_tree("users")?,
            roles: db.open_tree("roles")?,
        })
    }
}

fn named<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<(String, T)>> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv?;
            Ok((text(&k)?.to_owned(), decode(&v)?))
        })
        .collect()
}

impl Index {
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.accounts
            .users
            .get(name)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<(String, UserRecord)>> {
        named(&self.accounts.users)
    }

    pub fn role(&self, name: &str) -> Result<Option<RoleRecord>> {
        self.accounts
            .roles
            .get(name)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Every stored role, by name.
    pub fn roles(&self) -> Result<Vec<(String, RoleRecord)>> {
        named(&self.accounts.roles)
    }

    /// Writes users and roles in one transaction (all of them or none) and makes it durable.
    pub fn write_accounts(
        &self,
        users: &[AccountChange<'_, UserRecord>],
        roles: &[AccountChange<'_, RoleRecord>],
    ) -> Result<()> {
        (&self.accounts.users, &self.accounts.roles)
            .transaction(|(u, r)| {
                for (tree, changes) in [
                    (
                        u,
                        users
                            .iter()
                            .map(|(n, v)| (*n, v.map(encode)))
                            .collect::<Vec<_>>(),
                    ),
                    (r, roles.iter().map(|(n, v)| (*n, v.map(encode))).collect()),
                ] {
                    for (name, value) in changes {
                        match value {
                            Some(v) => tree.insert(name, v)?,
                            None => tree.remove(name)?,
                        };
                    }
                }
                Ok::<_, ConflictableTransactionError<IndexError>>(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => e.into(),
            })?;
        self.db.flush()?;
        Ok(())
    }
}

// ---- console views (issue 15): one repository's figures, tags with records, pull counts.
// Each reads one repository's keys (or the first entries of a ranked tree), never the whole
// index.

/// One repository's figures for the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSummary {
    pub tags: u64,
    /// Some tag was pushed here / cached from an upstream.
    pub local: bool,
    pub cached: bool,
    /// Bytes of the blobs the repository links (shared blobs count in each repository).
    pub bytes: u64,
    /// Newest creation time of a pushed blob it links (ms since the epoch; 0: none).
    pub last_pushed: u64,
    /// Last pull of one of its manifests (ms since the epoch; 0: never), and their count.
    pub last_pulled: u64,
    pub pulls: u64,
    /// The repository links more blobs than were counted (`bytes` is a lower bound).
    pub partial: bool,
}

/// How often a manifest was pulled (`GET` of its bytes) and when last (ms since the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRecord {
    pub count: u64,
    pub last: u64,
}

/// At most this many linked blobs are counted for a repository's size.
const SUMMARY_LINKS: usize = 20_000;

fn rank_key(count: u64, k: &[u8]) -> Vec<u8> {
    let mut r = (u64::MAX - count).to_be_bytes().to_vec();
    r.extend_from_slice(k);
    r
}

impl Index {
    /// Up to `n` repository names starting with `prefix`, after `last`, in lexical order.
    pub fn repos_with_prefix(
        &self,
        prefix: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>> {
        let start = match last {
            Some(l) if l > prefix => format!("{l}\0"),
            _ => prefix.to_owned(),
        };
        let mut out = Vec::new();
        for kv in self.repos.range(start.as_bytes()..) {
            let (k, _) = kv?;
            if !k.starts_with(prefix.as_bytes()) || out.len() >= n {
                break;
            }
            out.push(text(&k)?.to_owned());
        }
        Ok(out)
    }

    /// `repo`'s figures: its tags, the blobs it links and its pulls.
    pub fn repo_summary(&self, repo: &RepoName) -> Result<RepoSummary> {
        let prefix = key(&[repo.as_str(), ""]);
        let mut s = RepoSummary::default();
        for kv in self.tags.scan_prefix(&prefix) {
            let rec: TagRecord = decode(&kv?.1)?;
            s.tags += 1;
            match rec.origin {
                Origin::Local => s.local = true,
                Origin::Proxy => s.cached = true,
            }
        }
        for (i, kv) in self.links.scan_prefix(&prefix).enumerate() {
            if i >= SUMMARY_LINKS {
                s.partial = true;
                break;
            }
            let (k, _) = kv?;
            let d = parse_digest(text(&k[prefix.len()..])?)?;
            if let Some(b) = self.blob(&d)? {
                s.bytes += b.size;
                if b.origin == Origin::Local {
                    s.last_pushed = s.last_pushed.max(b.created);
                }
            }
        }
        for kv in self.pulls.scan_prefix(&prefix) {
            let p: PullRecord = decode(&kv?.1)?;
            s.pulls += p.count;
            s.last_pulled = s.last_pulled.max(p.last);
        }
        Ok(s)
    }

    /// Up to `n` tags of `repo` after `last`, with their records.
    pub fn tags_of(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(Tag, TagRecord)>> {
        let names = self.list_tags(repo, last, n)?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let t =
                Tag::parse(&name).map_err(|e| IndexError::Corrupt(format!("tag {name:?}: {e}")))?;
            if let Some(rec) = self.tag(repo, &t)? {
                out.push((t, rec));
            }
        }
        Ok(out)
    }

    /// Adds `count` pulls of `digest` in `repo`, the last at `last`.
    pub fn add_pulls(&self, repo: &RepoName, digest: &Digest, count: u64, last: u64) -> Result<()> {
        let k = key(&[repo.as_str(), digest.as_str()]);
        (&self.pulls, &self.pullrank)
            .transaction(|(pulls, rank)| {
                let old: PullRecord = match pulls.get(k.as_slice())? {
                    Some(v) => abort(decode(&v))?,
                    None => PullRecord::default(),
                };
                let new = PullRecord {
                    count: old.count + count,
                    last: old.last.max(last),
                };
                if old.count > 0 {
                    rank.remove(rank_key(old.count, &k))?;
                }
                rank.insert(rank_key(new.count, &k), &[])?;
                pulls.insert(k.as_slice(), encode(&new))?;
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => e.into(),
            })
    }

    /// `digest`'s pulls in `repo`.
    pub fn pulls(&self, repo: &RepoName, digest: &Digest) -> Result<PullRecord> {
        self.pulls
            .get(key(&[repo.as_str(), digest.as_str()]))?
            .map(|v| decode(&v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The `n` most pulled manifests, most pulled first.
    pub fn most_pulled(&self, n: usize) -> Result<Vec<(RepoName, Digest, PullRecord)>> {
        let mut out = Vec::new();
        for kv in self.pullrank.iter().take(n) {
            let (k, _) = kv?;
            let (repo, d) = pair(k.get(8..).unwrap_or_default())?;
            let d = parse_digest(d)?;
            let p = self.pulls(&repo, &d)?;
            out.push((repo, d, p));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn tags_list_in_order_and_paginate() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let r = repo("a/b");
        let other = repo("a/bc");
        let rec = TagRecord {
            digest: Digest::of(b"m"),
            origin: Origin::Local,
            checked: 0,
        };
        for t in ["v2", "latest", "v1"] {
            idx.set_tag(&r, &Tag::parse(t).unwrap(), &rec).unwrap();
        }
        idx.set_tag(&other, &Tag::parse("zzz").unwrap(), &rec)
            .unwrap();
        assert_eq!(idx.list_tags(&r, None, 10).unwrap(), ["latest", "v1", "v2"]);
        assert_eq!(idx.list_tags(&r, Some("latest"), 1).unwrap(), ["v1"]);
        assert_eq!(
            idx.list_tags(&r, Some("v2"), 10).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(idx.list_repos(None, 10).unwrap(), ["a/b", "a/bc"]);
        assert_eq!(idx.list_repos(Some("a/b"), 10).unwrap(), ["a/bc"]);
    }

    #[test]
    fn local_origin_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let d = Digest::of(b"x");
        let mut rec = BlobRecord {
            size: 1,
            origin: Origin::Local,
            created: 5,
            last_access: 5,
        };
        idx.put_blob(&d, &rec).unwrap();
        rec.origin = Origin::Proxy;
        rec.created = 9;
        idx.put_blob(&d, &rec).unwrap();
        let got = idx.blob(&d).unwrap().unwrap();
        assert_eq!(got.origin, Origin::Local);
        assert_eq!(got.created, 5);
    }

    fn rec(size: u64, origin: Origin, t: u64) -> BlobRecord {
        BlobRecord {
            size,
            origin,
            created: t,
            last_access: t,
        }
    }

    #[test]
    fn running_totals_follow_every_write_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        {
            let idx = Index::open(dir.path()).unwrap();
            idx.put_blob(&a, &rec(10, Origin::Proxy, 1)).unwrap();
            idx.put_blob(&b, &rec(20, Origin::Proxy, 2)).unwrap();
            idx.put_blob(&b, &rec(20, Origin::Proxy, 3)).unwrap();
            idx.record_blob(&repo("x/y"), &c, &rec(40, Origin::Local, 4))
                .unwrap();
            assert_eq!(idx.totals(Origin::Proxy), (2, 30));
            // Pushed content adopting a cached blob moves it between the totals.
            idx.put_blob(&a, &rec(10, Origin::Local, 5)).unwrap();
            assert_eq!(idx.totals(Origin::Proxy), (1, 20));
            assert_eq!(idx.totals(Origin::Local), (2, 50));
            assert_eq!(idx.remove_blob(&c).unwrap().unwrap().size, 40);
            assert!(idx.remove_blob(&c).unwrap().is_none());
            assert_eq!(idx.totals(Origin::Local), (1, 10));
        }
        let idx = Index::open(dir.path()).unwrap();
        assert_eq!(idx.totals(Origin::Proxy), (1, 20));
        assert_eq!(idx.totals(Origin::Local), (1, 10));
    }

    #[test]
    fn cached_blobs_come_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let ds: Vec<Digest> = (0..4u8).map(|i| Digest::of(&[i])).collect();
        for (i, d) in ds.iter().enumerate() {
            idx.put_blob(d, &rec(1, Origin::Proxy, 100 + i as u64))
                .unwrap();
        }
        idx.touch_blob(&ds[0], 500).unwrap();
        idx.touch_blob(&ds[2], 50).unwrap(); // older than known: no move
        idx.put_blob(&ds[3], &rec(1, Origin::Local, 600)).unwrap(); // pushed: not evictable
        let order: Vec<(Digest, u64)> = idx.cached_by_access().map(|r| r.unwrap()).collect();
        assert_eq!(
            order,
            [
                (ds[1].clone(), 101),
                (ds[2].clone(), 102),
                (ds[0].clone(), 500)
            ]
        );
        idx.remove_blob(&ds[1]).unwrap();
        assert_eq!(idx.cached_by_access().count(), 2);
    }

    #[test]
    fn a_manifest_comes_and_goes_with_its_tags_links_and_referrer() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let r = repo("a/b");
        let (m, subject) = (Digest::of(b"m"), Digest::of(b"s"));
        let tag = Tag::parse("v1").unwrap();
        let desc: Descriptor = serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m.to_string(),
            "size": 3
        }))
        .unwrap();
        let trec = TagRecord {
            digest: m.clone(),
            origin: Origin::Local,
            checked: 0,
        };
        idx.put_manifest(
            &r,
            &m,
            &rec(3, Origin::Local, 1),
            &ManifestRecord {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 3,
                origin: Origin::Local,
                subject: Some(subject.clone()),
            },
            Some(&desc),
            Some((&tag, &trec)),
        )
        .unwrap();
        assert!(idx.is_linked(&r, &m).unwrap());
        assert_eq!(idx.tag(&r, &tag).unwrap().unwrap().digest, m);
        assert_eq!(idx.referrers(&r, &subject).unwrap().len(), 1);
        assert_eq!(idx.tags().unwrap(), [(r.clone(), tag.clone(), trec)]);
        assert_eq!(
            idx.delete_manifest_and_tags(&r, &m).unwrap(),
            Some(vec![tag.clone()])
        );
        assert!(idx.tag(&r, &tag).unwrap().is_none());
        assert!(idx.referrers(&r, &subject).unwrap().is_empty());
        assert!(!idx.delete_manifest(&r, &m).unwrap());
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        idx.tags
            .insert(key(&["a/b", "v1"]), &b"{\"digest\":\"nope\"}"[..])
            .unwrap();
        assert!(matches!(idx.tags(), Err(IndexError::Corrupt(_))));
        idx.tags.remove(key(&["a/b", "v1"])).unwrap();
        idx.links.insert(&b"no-separator"[..], &[]).unwrap();
        assert!(matches!(idx.links(), Err(IndexError::Corrupt(_))));
    }
}
