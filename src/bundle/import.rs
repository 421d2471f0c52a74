//! `stevedore import`: adopts the images of an OCI image-layout tar. Three steps, so that a
//! damaged bundle leaves nothing behind: (1) every blob entry of the tar is hashed, streamed,
//! and checked against its name, and `index.json` is read; (2) every listed image is walked
//! and each manifest and blob it needs must be in the bundle or already held here (an
//! incremental bundle leaves out what the other side had); (3) only then are the blobs
//! streamed into the store (verified again on the way) and the manifests, links and tags
//! recorded, children before their index. A child manifest of an index absent from both is
//! allowed (a bundle of some platforms of a multi-arch image), as the mirror caches them.

use super::{BundleError, LayoutIndex, REF_NAME, REPOSITORY, blob_digest};
use crate::index::Origin;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, DigestHasher, ParsedManifest, Reference, RepoName, Tag};
use crate::registry::Registry;
use bytes::Bytes;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub bundle: PathBuf,
    /// Adopt as pushed content (never evicted, garbage-collected) instead of cached.
    pub as_pushed: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ImportReport {
    pub bundle: String,
    pub origin: &'static str,
    pub images: Vec<String>,
    pub referrers: usize,
    pub manifests: usize,
    /// Blobs written into the store from the bundle.
    pub blobs_written: usize,
    pub bytes_written: u64,
    /// Blobs the images need that this registry already held.
    pub blobs_present: usize,
    /// Child manifests of an index in neither the bundle nor this registry (platforms left out).
    pub platforms_absent: usize,
}

/// Where a verified blob sits in the tar.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    size: u64,
}

struct Scan {
    layout: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
    blobs: HashMap<Digest, Entry>,
}

fn read_capped(r: &mut impl Read, cap: u64, what: &str) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::new();
    r.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| BundleError::Layout(format!("{what}: {e}")))?;
    if out.len() as u64 > cap {
        return Err(BundleError::Layout(format!(
            "{what} is larger than {cap} bytes"
        )));
    }
    Ok(out)
}

/// Step 1: hashes every blob of the tar (streamed) and reads `oci-layout` and `index.json`.
fn scan(path: &Path) -> Result<Scan, BundleError> {
    let file = std::fs::File::open(path).map_err(BundleError::io(path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(256 * 1024, file));
    let mut out = Scan {
        layout: None,
        index: None,
        blobs: HashMap::new(),
    };
    let bad = |e: std::io::Error| BundleError::Layout(format!("{}: {e}", path.display()));
    let mut buf = vec![0u8; 256 * 1024];
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_owned();
        if name == "oci-layout" {
            out.layout = Some(read_capped(&mut entry, 64 * 1024, "oci-layout")?);
        } else if name == "index.json" {
            out.index = Some(read_capped(
                &mut entry,
                MAX_MANIFEST_BYTES as u64,
                "index.json",
            )?);
        } else if let Some(d) = blob_digest(&name) {
            let at = Entry {
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            let mut hasher = DigestHasher::new(d.algorithm());
            loop {
                let n = entry.read(&mut buf).map_err(bad)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let actual = hasher.finish();
            if actual != d {
                return Err(BundleError::Tampered {
                    entry: name,
                    actual,
                });
            }
            out.blobs.insert(d, at);
        } else if name.starts_with("blobs/") {
            return Err(BundleError::Layout(format!(
                "{name} is not named blobs/<algorithm>/<hex digest>"
            )));
        }
    }
    Ok(out)
}

/// A manifest to record.
struct Record {
    repo: RepoName,
    digest: Digest,
    parsed: ParsedManifest,
    bytes: Bytes,
    tag: Option<Tag>,
}

/// What step 2 found to adopt.
#[derive(Default)]
struct Adoption {
    /// Children before their index.
    manifests: Vec<Record>,
    /// Config and layer blobs per repository, with their size.
    links: BTreeMap<(RepoName, Digest), u64>,
    seen: HashSet<(RepoName, Digest)>,
    report: ImportReport,
}

struct Source<'a> {
    registry: &'a Registry,
    path: &'a Path,
    blobs: &'a HashMap<Digest, Entry>,
}

impl Source<'_> {
    /// A verified blob's bytes from the tar (small: a manifest).
    async fn read(&self, d: &Digest, at: Entry) -> Result<Bytes, BundleError> {
        if at.size > MAX_MANIFEST_BYTES as u64 {
            return Err(BundleError::Layout(format!(
                "manifest {d} is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let mut f = tokio::fs::File::open(self.path)
            .await
            .map_err(BundleError::io(self.path))?;
        f.seek(std::io::SeekFrom::Start(at.offset))
            .await
            .map_err(BundleError::io(self.path))?;
        let mut bytes = vec![0u8; at.size as usize];
        f.read_exact(&mut bytes)
            .await
            .map_err(BundleError::io(self.path))?;
        // Checked in step 1; checked again, as the file may have changed since.
        if Digest::of_with(d.algorithm(), &bytes) != *d {
            return Err(BundleError::Tampered {
                entry: super::blob_path(d),
                actual: Digest::of_with(d.algorithm(), &bytes),
            });
        }
        Ok(Bytes::from(bytes))
    }

    async fn manifest(&self, d: &Digest) -> Result<Option<Bytes>, BundleError> {
        match self.blobs.get(d) {
            Some(at) => self.read(d, *at).await.map(Some),
            None => Ok(self.registry.stored_manifest(d).await?),
        }
    }

    async fn blob_size(&self, d: &Digest) -> Result<Option<u64>, BundleError> {
        match self.blobs.get(d) {
            Some(at) => Ok(Some(at.size)),
            None => Ok(self.registry.stored_size(d).await?),
        }
    }
}

impl Adoption {
    /// Step 2 for one manifest (and, for an index, its children).
    async fn walk(
        &mut self,
        src: &Source<'_>,
        repo: &RepoName,
        digest: &Digest,
        media_type: Option<&str>,
        tag: Option<Tag>,
        name: &str,
    ) -> Result<bool, BundleError> {
        if !self.seen.insert((repo.clone(), digest.clone())) && tag.is_none() {
            return Ok(true);
        }
        let Some(bytes) = src.manifest(digest).await? else {
            return Ok(false);
        };
        let parsed = ParsedManifest::parse(&bytes, media_type)
            .map_err(|e| BundleError::Layout(format!("manifest {digest} of {name}: {e}")))?;
        for child in &parsed.manifests {
            let found = Box::pin(self.walk(src, repo, child, None, None, name)).await?;
            if !found {
                self.report.platforms_absent += 1;
            }
        }
        for b in &parsed.blobs {
            let size = src.blob_size(b).await?.ok_or_else(|| {
                BundleError::Incomplete(format!(
                    "blob {b} of {name} is neither in the bundle nor held by this registry"
                ))
            })?;
            self.links.insert((repo.clone(), b.clone()), size);
        }
        self.report.manifests += 1;
        self.manifests.push(Record {
            repo: repo.clone(),
            digest: digest.clone(),
            parsed,
            bytes,
            tag,
        });
        Ok(true)
    }
}

/// The repository (and tag) an `index.json` entry names.
fn entry_name(
    desc: &crate::oci::Descriptor,
) -> Result<(RepoName, Option<Tag>, String), BundleError> {
    let a = desc.annotations.clone().unwrap_or_default();
    let from_ref = a.get(REF_NAME).map(|n| (n, super::parse_name(n)));
    let tag = match &from_ref {
        Some((_, Ok((_, Reference::Tag(t))))) => Some(t.clone()),
        _ => None,
    };
    let repo = match (a.get(REPOSITORY), &from_ref) {
        (Some(r), _) => RepoName::parse(r)
            .map_err(|e| BundleError::Layout(format!("{REPOSITORY} {r:?}: {e}")))?,
        (None, Some((_, Ok((r, _))))) => r.clone(),
        (None, Some((n, Err(e)))) => {
            return Err(BundleError::Layout(format!(
                "index.json entry {}: {REF_NAME} {n:?} does not name REPO:TAG ({e})",
                desc.digest
            )));
        }
        (None, None) => {
            return Err(BundleError::Layout(format!(
                "index.json entry {} has no {REF_NAME} annotation naming REPO:TAG",
                desc.digest
            )));
        }
    };
    let name = match &tag {
        Some(t) => format!("{repo}:{t}"),
        None => format!("{repo}@{}", desc.digest),
    };
    Ok((repo, tag, name))
}

/// Verifies and adopts a bundle.
pub async fn import(
    registry: &Registry,
    options: &ImportOptions,
) -> Result<ImportReport, BundleError> {
    let path = options.bundle.clone();
    let scanned = tokio::task::spawn_blocking(move || scan(&path))
        .await
        .map_err(|e| BundleError::Layout(format!("reading the bundle: {e}")))??;
    let layout = scanned
        .layout
        .ok_or_else(|| BundleError::Layout("it has no oci-layout file".into()))?;
    let version: serde_json::Value = serde_json::from_slice(&layout)
        .map_err(|e| BundleError::Layout(format!("oci-layout: {e}")))?;
    if version["imageLayoutVersion"].as_str().is_none() {
        return Err(BundleError::Layout(
            "oci-layout has no imageLayoutVersion".into(),
        ));
    }
    let index: LayoutIndex = serde_json::from_slice(
        &scanned
            .index
            .ok_or_else(|| BundleError::Layout("it has no index.json".into()))?,
    )
    .map_err(|e| BundleError::Layout(format!("index.json: {e}")))?;
    let src = Source {
        registry,
        path: &options.bundle,
        blobs: &scanned.blobs,
    };
    // From here to the last record, removals (eviction, purge, gc) wait: what step 2 counts as
    // held here must still be here when step 3 records manifests that reference it.
    let _hold = registry.hold_removals().await;
    let mut adoption = Adoption::default();
    for desc in &index.manifests {
        let (repo, tag, name) = entry_name(desc)?;
        let digest = Digest::parse(&desc.digest)
            .map_err(|e| BundleError::Layout(format!("index.json entry {name}: {e}")))?;
        let is_image = tag.is_some()
            || desc
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(REF_NAME));
        let found = adoption
            .walk(&src, &repo, &digest, Some(&desc.media_type), tag, &name)
            .await?;
        if !found {
            return Err(BundleError::Incomplete(format!(
                "manifest {digest} of {name} is neither in the bundle nor held by this registry"
            )));
        }
        if is_image {
            adoption.report.images.push(name);
        } else {
            adoption.report.referrers += 1;
        }
    }
    // Step 3: blobs in, then records.
    let origin = if options.as_pushed {
        Origin::Local
    } else {
        Origin::Proxy
    };
    let mut report = std::mem::take(&mut adoption.report);
    report.bundle = options.bundle.display().to_string();
    report.origin = origin.as_str();
    let mut written = HashSet::new();
    for (_, d) in adoption.links.keys() {
        if written.contains(d) {
            continue;
        }
        written.insert(d.clone());
        match scanned.blobs.get(d) {
            Some(at) if registry.stored_size(d).await?.is_none() => {
                let mut f = tokio::fs::File::open(&options.bundle)
                    .await
                    .map_err(BundleError::io(&options.bundle))?;
                f.seek(std::io::SeekFrom::Start(at.offset))
                    .await
                    .map_err(BundleError::io(&options.bundle))?;
                // Verified again on the way in: a bundle changed since step 1 is refused
                // here, before any record is written.
                let size = registry.write_blob_from(d, f.take(at.size)).await?;
                report.blobs_written += 1;
                report.bytes_written += size;
            }
            _ => report.blobs_present += 1,
        }
    }
    for ((repo, d), size) in &adoption.links {
        registry.adopt_blob(repo, d, *size, origin).await?;
    }
    let now = crate::clock::now_secs();
    for r in &adoption.manifests {
        registry
            .store_manifest(
                &r.repo,
                &r.digest,
                &r.parsed,
                r.bytes.clone(),
                origin,
                r.tag.as_ref(),
                now,
            )
            .await?;
    }
    registry.flush().await?;
    tracing::info!(?report, "bundle imported");
    Ok(report)
}
