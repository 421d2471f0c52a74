//! The registry's metadata in sled: repositories, tags, manifests, which repository may see
//! which blob, blob records (size, origin, last access) and referrers. This is the only module
//! that imports sled; its types never leave it, so the engine can be replaced here alone.
//!
//! Keys are `repo \0 rest` (names and tags cannot contain NUL), so a prefix scan of a repository
//! yields its tags in lexical order. Values are JSON.

use crate::oci::{Descriptor, Digest, RepoName, Tag};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::Path;

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
    #[serde(default)]
    pub subject: Option<String>,
}

/// What a tag points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: String,
    pub origin: Origin,
    /// When a proxied tag was last confirmed with the upstream (seconds since the epoch).
    #[serde(default)]
    pub checked: u64,
}

pub struct Index {
    db: sled::Db,
    repos: sled::Tree,
    tags: sled::Tree,
    manifests: sled::Tree,
    links: sled::Tree,
    blobs: sled::Tree,
    referrers: sled::Tree,
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn decode<T: DeserializeOwned>(v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| IndexError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("index records serialize")
}

/// The part of `key` after its `prefix`, as text.
fn suffix(key: &[u8], prefix_len: usize) -> String {
    String::from_utf8_lossy(&key[prefix_len..]).into_owned()
}

impl Index {
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
        Ok(Index {
            repos: db.open_tree("repos")?,
            tags: db.open_tree("tags")?,
            manifests: db.open_tree("manifests")?,
            links: db.open_tree("links")?,
            blobs: db.open_tree("blobs")?,
            referrers: db.open_tree("referrers")?,
            db,
        })
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

    fn add_repo(&self, repo: &RepoName) -> Result<()> {
        self.repos.insert(repo.as_str(), &[])?;
        Ok(())
    }

    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        Ok(self.repos.contains_key(repo.as_str())?)
    }

    /// Up to `n` repository names after `last`, in lexical order.
    pub fn list_repos(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let start = last.map(|l| format!("{l}\0")).unwrap_or_default();
        self.repos
            .range(start.as_bytes()..)
            .take(n)
            .map(|kv| Ok(suffix(&kv?.0, 0)))
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
        self.blobs.fetch_and_update(digest.as_str(), |old| {
            let mut rec = record.clone();
            if let Some(old) = old.and_then(|o| decode::<BlobRecord>(o).ok()) {
                if old.origin == Origin::Local {
                    rec.origin = Origin::Local;
                }
                rec.created = old.created.min(rec.created);
            }
            Some(encode(&rec))
        })?;
        Ok(())
    }

    pub fn touch_blob(&self, digest: &Digest, now: u64) -> Result<()> {
        self.blobs.fetch_and_update(digest.as_str(), |old| {
            let mut rec: BlobRecord = decode(old?).ok()?;
            rec.last_access = rec.last_access.max(now);
            Some(encode(&rec))
        })?;
        Ok(())
    }

    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        self.blobs.remove(digest.as_str())?;
        Ok(())
    }

    /// Every blob record.
    pub fn blobs(&self) -> Result<Vec<(Digest, BlobRecord)>> {
        let mut out = Vec::new();
        for kv in self.blobs.iter() {
            let (k, v) = kv?;
            let d =
                Digest::parse(&suffix(&k, 0)).map_err(|e| IndexError::Corrupt(e.to_string()))?;
            out.push((d, decode(&v)?));
        }
        Ok(out)
    }

    // ---- links: which repository may see which blob

    pub fn link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.links
            .insert(key(&[repo.as_str(), digest.as_str()]), &[])?;
        self.add_repo(repo)
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
    pub fn links(&self) -> Result<Vec<(String, String)>> {
        self.links
            .iter()
            .map(|kv| {
                let k = suffix(&kv?.0, 0);
                let (r, d) = k.split_once('\0').unwrap_or((&k, ""));
                Ok((r.to_owned(), d.to_owned()))
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

    /// Records a manifest of `repo` (and its referrer entry when it has a subject). A manifest
    /// once local stays local.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        record: &ManifestRecord,
        referrer: Option<&Descriptor>,
    ) -> Result<()> {
        let k = key(&[repo.as_str(), digest.as_str()]);
        self.manifests.fetch_and_update(&k, |old| {
            let mut rec = record.clone();
            if let Some(old) = old.and_then(|o| decode::<ManifestRecord>(o).ok())
                && old.origin == Origin::Local
            {
                rec.origin = Origin::Local;
            }
            Some(encode(&rec))
        })?;
        if let (Some(subject), Some(desc)) = (&record.subject, referrer) {
            self.referrers.insert(
                key(&[repo.as_str(), subject, digest.as_str()]),
                encode(desc),
            )?;
        }
        self.add_repo(repo)
    }

    /// Removes a manifest, the tags that point at it and its referrer entry.
    pub fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let Some(old) = self
            .manifests
            .remove(key(&[repo.as_str(), digest.as_str()]))?
        else {
            return Ok(false);
        };
        let old: ManifestRecord = decode(&old)?;
        if let Some(subject) = &old.subject {
            self.referrers
                .remove(key(&[repo.as_str(), subject, digest.as_str()]))?;
        }
        let prefix = key(&[repo.as_str(), ""]);
        for kv in self.tags.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let t: TagRecord = decode(&v)?;
            if t.digest == digest.as_str() {
                self.tags.remove(k)?;
            }
        }
        Ok(true)
    }

    /// Every (repository, manifest digest, record).
    pub fn manifests(&self) -> Result<Vec<(String, String, ManifestRecord)>> {
        self.manifests
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let k = suffix(&k, 0);
                let (r, d) = k.split_once('\0').unwrap_or((&k, ""));
                Ok((r.to_owned(), d.to_owned(), decode(&v)?))
            })
            .collect()
    }

    // ---- tags

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>> {
        self.tags
            .get(key(&[repo.as_str(), tag.as_str()]))?
            .map(|v| decode(&v))
            .transpose()
    }

    pub fn set_tag(&self, repo: &RepoName, tag: &Tag, record: &TagRecord) -> Result<()> {
        self.tags
            .insert(key(&[repo.as_str(), tag.as_str()]), encode(record))?;
        self.add_repo(repo)
    }

    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        Ok(self
            .tags
            .remove(key(&[repo.as_str(), tag.as_str()]))?
            .is_some())
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
            out.push(suffix(&k, prefix.len()));
        }
        Ok(out)
    }

    /// Every (repository, tag, record).
    pub fn tags(&self) -> Result<Vec<(String, String, TagRecord)>> {
        self.tags
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let k = suffix(&k, 0);
                let (r, t) = k.split_once('\0').unwrap_or((&k, ""));
                Ok((r.to_owned(), t.to_owned(), decode(&v)?))
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
            digest: Digest::of(b"m").to_string(),
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
}
