//! Hot tags: (repository, tag) → the manifest the tag resolved to, so that a GET or HEAD by tag
//! (what every `docker pull` starts with) is answered without reading the index. Each entry
//! keeps the index's tags generation it was read at and is used only while the generation is
//! unchanged: any write to tags or manifests makes every entry stale at once. Bounded: when
//! full, it starts over. It reads nothing itself; `Registry::get_manifest` fills it.

use super::Manifest;
use crate::oci::{RepoName, Tag};
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries kept at most.
const CAPACITY: usize = 4096;

/// How often, at most, a hit says the manifest was used (its access time, for eviction).
const TOUCH_EVERY_MS: u64 = 1000;

struct Entry {
    generation: u64,
    manifest: Manifest,
    /// When a hit last said so (ms since the epoch).
    touched: AtomicU64,
}

#[derive(Default)]
pub struct HotTags {
    by_repo: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    repos: HashMap<RepoName, HashMap<Tag, Entry>>,
    len: usize,
}

impl HotTags {
    /// The manifest `tag` resolved to at `generation`, if that is the generation it was read
    /// at; with whether its use should be noted now (at most every `TOUCH_EVERY_MS`).
    pub fn get(&self, repo: &RepoName, tag: &Tag, generation: u64) -> Option<(Manifest, bool)> {
        let inner = self.by_repo.read().ok()?;
        let e = inner.repos.get(repo)?.get(tag)?;
        if e.generation != generation {
            return None;
        }
        let now = crate::clock::now_ms();
        let touch = now.saturating_sub(e.touched.load(Ordering::Relaxed)) >= TOUCH_EVERY_MS;
        if touch {
            e.touched.store(now, Ordering::Relaxed);
        }
        Some((e.manifest.clone(), touch))
    }

    /// Keeps what `tag` resolved to after reading the index at `generation`.
    pub fn insert(&self, repo: &RepoName, tag: &Tag, generation: u64, m: Manifest) {
        let Ok(mut inner) = self.by_repo.write() else {
            return;
        };
        if inner.len >= CAPACITY {
            inner.repos.clear();
            inner.len = 0;
        }
        let tags = inner.repos.entry(repo.clone()).or_default();
        let e = Entry {
            generation,
            manifest: m,
            touched: AtomicU64::new(crate::clock::now_ms()),
        };
        if tags.insert(tag.clone(), e).is_none() {
            inner.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn manifest(n: u8) -> Manifest {
        Manifest {
            digest: Digest::of_with(crate::oci::Algorithm::Sha256, &[n]),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: bytes::Bytes::from(vec![n]),
        }
    }

    #[test]
    fn an_entry_holds_for_its_generation_only() {
        let hot = HotTags::default();
        let (r, t) = (RepoName::parse("a/b").unwrap(), Tag::parse("v1").unwrap());
        assert!(hot.get(&r, &t, 0).is_none());
        hot.insert(&r, &t, 3, manifest(1));
        let (m, touch) = hot.get(&r, &t, 3).unwrap();
        assert_eq!(m.bytes, manifest(1).bytes);
        assert!(!touch, "just noted by the read that filled it");
        assert!(hot.get(&r, &t, 4).is_none(), "stale after a write");
        hot.insert(&r, &t, 4, manifest(2));
        assert_eq!(hot.get(&r, &t, 4).unwrap().0.bytes, manifest(2).bytes);
        assert!(hot.get(&r, &Tag::parse("v2").unwrap(), 4).is_none());
    }

    #[test]
    fn it_is_bounded() {
        let hot = HotTags::default();
        let r = RepoName::parse("a").unwrap();
        for i in 0..CAPACITY + 10 {
            hot.insert(&r, &Tag::parse(&format!("t{i}")).unwrap(), 0, manifest(0));
        }
        assert!(hot.by_repo.read().unwrap().len <= CAPACITY);
    }
}
