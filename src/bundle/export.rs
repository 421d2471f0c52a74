//! `stevedore export`: listed images (their listed platforms or every one held, and their
//! referrers) from local content into an OCI image-layout tar. With `since` (the other side's
//! previous bundle, or its `index.json`) the blobs that bundle's images reach are left out,
//! while `index.json` still lists every image. The tar is written next to its destination
//! and renamed into place once complete, so a crash never leaves a half bundle under its name.

use super::{BundleError, LayoutIndex, REF_NAME, REPOSITORY, blob_digest, blob_path};
use crate::oci::image_list::ListEntry;
use crate::oci::{Descriptor, Digest, ParsedManifest, RepoName, media};
use crate::registry::Registry;
use bytes::Bytes;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub images: Vec<ListEntry>,
    pub output: PathBuf,
    /// The other side's previous bundle (a tar) or its `index.json`.
    pub since: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ExportReport {
    pub output: String,
    pub images: Vec<String>,
    pub referrers: usize,
    pub manifests: usize,
    /// Blobs (manifests included) written into the tar.
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs left out because the `since` bundle's images reach them.
    pub skipped_blobs: usize,
    /// Platforms of an index this registry does not hold (only when no platform was listed).
    pub platforms_not_held: Vec<String>,
}

/// What goes into the tar.
#[derive(Default)]
struct Plan {
    index: Vec<Descriptor>,
    manifests: BTreeMap<Digest, Bytes>,
    /// Layer and config blobs, with a repository that may read them and their size.
    blobs: BTreeMap<Digest, (RepoName, u64)>,
    report: ExportReport,
}

#[derive(serde::Deserialize)]
struct Children {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn not_held(what: String) -> BundleError {
    BundleError::NotFound(format!(
        "{what} is not held by this registry (pull it through the mirror first)"
    ))
}

fn descriptor(media_type: &str, d: &Digest, size: usize, repo: &RepoName) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: d.to_string(),
        size: size as i64,
        urls: None,
        annotations: Some(BTreeMap::from([(REPOSITORY.to_owned(), repo.to_string())])),
        artifact_type: None,
        platform: None,
    }
}

impl Plan {
    /// Adds a manifest and what it references; `platforms` filters the children of an index.
    /// Returns its media type and size.
    async fn add(
        &mut self,
        registry: &Registry,
        entry: &ListEntry,
        digest: &Digest,
        referrers: bool,
    ) -> Result<(String, usize), BundleError> {
        let repo = &entry.image.repo;
        let name = entry.image.name();
        let m = registry
            .manifest_by_digest(repo, digest)
            .await?
            .ok_or_else(|| not_held(format!("{name}: manifest {digest}")))?;
        let out = (m.media_type.clone(), m.bytes.len());
        if self.manifests.contains_key(digest) {
            return Ok(out);
        }
        self.manifests.insert(digest.clone(), m.bytes.clone());
        self.report.manifests += 1;
        let parsed = ParsedManifest::parse(&m.bytes, Some(&m.media_type))
            .map_err(|e| BundleError::Layout(format!("stored manifest {digest}: {e}")))?;
        if media::is_index(&parsed.media_type) {
            let children: Children = serde_json::from_slice(&m.bytes)
                .map_err(|e| BundleError::Layout(format!("stored index {digest}: {e}")))?;
            let mut matched = vec![false; entry.platforms.len()];
            for child in &children.manifests {
                let platform = child.platform.clone().unwrap_or_default();
                let wanted: Vec<usize> = (0..entry.platforms.len())
                    .filter(|&i| entry.platforms[i].matches(&platform))
                    .collect();
                if !entry.platforms.is_empty() && wanted.is_empty() {
                    continue;
                }
                let d = Digest::parse(&child.digest)
                    .map_err(|e| BundleError::Layout(format!("index {digest}: {e}")))?;
                let label = format!(
                    "{name}: {}/{} ({d})",
                    platform["os"].as_str().unwrap_or("?"),
                    platform["architecture"].as_str().unwrap_or("?")
                );
                if registry.manifest_by_digest(repo, &d).await?.is_none() {
                    if entry.platforms.is_empty() {
                        self.report.platforms_not_held.push(label);
                        continue;
                    }
                    return Err(not_held(label));
                }
                for i in wanted {
                    matched[i] = true;
                }
                Box::pin(self.add(registry, entry, &d, referrers)).await?;
            }
            if let Some(i) = matched.iter().position(|m| !m) {
                return Err(BundleError::NotFound(format!(
                    "{name}: the index {digest} has no {} manifest",
                    entry.platforms[i]
                )));
            }
        } else {
            for b in &parsed.blobs {
                let size = registry
                    .blob_size(repo, b)
                    .await?
                    .ok_or_else(|| not_held(format!("{name}: blob {b}")))?;
                self.blobs.insert(b.clone(), (repo.clone(), size));
            }
        }
        if referrers {
            for r in registry.referrers(repo, digest, None).await? {
                let Ok(d) = Digest::parse(&r.digest) else {
                    continue;
                };
                if self.manifests.contains_key(&d) {
                    continue;
                }
                // A referrer (signature, SBOM) whose content is not all held is left out,
                // not an error: the image itself is complete without it.
                let mut side = Plan::default();
                match Box::pin(side.add(registry, entry, &d, false)).await {
                    Ok((media_type, size)) => {
                        self.manifests.append(&mut side.manifests);
                        self.blobs.append(&mut side.blobs);
                        self.report.manifests += side.report.manifests;
                        self.report.referrers += 1;
                        let mut desc = descriptor(&media_type, &d, size, repo);
                        desc.artifact_type = r.artifact_type.clone();
                        self.index.push(desc);
                    }
                    Err(e) => {
                        tracing::info!(referrer = %d, error = %e, "export: referrer left out")
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The blobs the other side holds: those named in its previous bundle's tar, and everything
/// the images of its `index.json` reach in this registry.
async fn held_by_other_side(
    registry: &Registry,
    since: &Path,
) -> Result<HashSet<Digest>, BundleError> {
    let path = since.to_owned();
    let (index, mut held) = tokio::task::spawn_blocking(move || read_previous(&path))
        .await
        .map_err(|e| BundleError::Layout(e.to_string()))??;
    for desc in index.manifests {
        let Ok(d) = Digest::parse(&desc.digest) else {
            continue;
        };
        let annotations = desc.annotations.unwrap_or_default();
        let repo = annotations
            .get(REPOSITORY)
            .and_then(|r| RepoName::parse(r).ok())
            .or_else(|| {
                annotations
                    .get(REF_NAME)
                    .and_then(|n| super::parse_name(n).ok())
                    .map(|(r, _)| r)
            });
        match repo {
            Some(repo) => held.extend(registry.reachable(&repo, [d]).await?),
            None => {
                held.insert(d);
            }
        }
    }
    Ok(held)
}

/// A previous bundle's `index.json` and the blobs its tar holds (none when given the
/// `index.json` alone).
fn read_previous(path: &Path) -> Result<(LayoutIndex, HashSet<Digest>), BundleError> {
    // Streamed: a previous bundle can be many GB, and only its entry names and index are read.
    let mut file =
        std::io::BufReader::new(std::fs::File::open(path).map_err(BundleError::io(path))?);
    let first = file
        .fill_buf()
        .map_err(BundleError::io(path))?
        .first()
        .copied();
    if first == Some(b'{') {
        let index = serde_json::from_reader::<_, LayoutIndex>(file).map_err(|e| {
            BundleError::Layout(format!("{}: not an index.json: {e}", path.display()))
        })?;
        return Ok((index, HashSet::new()));
    }
    let mut held = HashSet::new();
    let mut index = None;
    let mut archive = tar::Archive::new(file);
    let bad = |e: std::io::Error| {
        BundleError::Layout(format!(
            "{} is neither an index.json nor a bundle tar: {e}",
            path.display()
        ))
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if name.trim_start_matches("./") == "index.json" {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(bad)?;
            index = Some(
                serde_json::from_slice(&text)
                    .map_err(|e| BundleError::Layout(format!("index.json: {e}")))?,
            );
        } else if let Some(d) = blob_digest(&name) {
            held.insert(d);
        }
    }
    let index = index
        .ok_or_else(|| BundleError::Layout(format!("{} holds no index.json", path.display())))?;
    Ok((index, held))
}

/// Writes the bundle; returns what it holds.
pub async fn export(
    registry: Arc<Registry>,
    options: &ExportOptions,
) -> Result<ExportReport, BundleError> {
    let mut plan = Plan::default();
    for entry in &options.images {
        let name = entry.image.name();
        let (digest, _) = registry
            .resolve(&entry.image.repo, &entry.image.reference)
            .await?
            .ok_or_else(|| not_held(name.clone()))?;
        let (media_type, size) = plan.add(&registry, entry, &digest, true).await?;
        let mut desc = descriptor(&media_type, &digest, size, &entry.image.repo);
        if let Some(a) = desc.annotations.as_mut() {
            a.insert(REF_NAME.to_owned(), name.clone());
        }
        // Images first in index.json, in list order; referrers were pushed as found.
        let images = plan.report.images.len();
        plan.index.insert(images, desc);
        plan.report.images.push(name);
    }
    let held = match &options.since {
        Some(p) => held_by_other_side(&registry, p).await?,
        None => HashSet::new(),
    };
    let index = LayoutIndex {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_owned()),
        manifests: std::mem::take(&mut plan.index),
    };
    let mut report = std::mem::take(&mut plan.report);
    report.output = options.output.display().to_string();
    let planned = plan.manifests.len() + plan.blobs.len();
    let manifests: Vec<(Digest, Bytes)> = plan
        .manifests
        .into_iter()
        .filter(|(d, _)| !held.contains(d))
        .collect();
    let blobs: Vec<(Digest, (RepoName, u64))> = plan
        .blobs
        .into_iter()
        .filter(|(d, _)| !held.contains(d))
        .collect();
    report.blobs = manifests.len() + blobs.len();
    report.skipped_blobs = planned - report.blobs;
    report.bytes = manifests.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
        + blobs.iter().map(|(_, (_, s))| *s).sum::<u64>();
    let output = options.output.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        write_tar(&output, &index, &manifests, &blobs, |repo, d| {
            handle.block_on(registry.open_blob(repo, d))
        })
    })
    .await
    .map_err(|e| BundleError::Layout(format!("writing the bundle: {e}")))??;
    tracing::info!(?report, "bundle exported");
    Ok(report)
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h
}

/// Reads exactly `left` bytes of a blob file, failing (rather than padding) if it is short.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob file is shorter than its record",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn write_tar(
    output: &Path,
    index: &LayoutIndex,
    manifests: &[(Digest, Bytes)],
    blobs: &[(Digest, (RepoName, u64))],
    mut open: impl FnMut(
        &RepoName,
        &Digest,
    ) -> Result<Option<crate::storage::OpenBlob>, crate::error::RegistryError>,
) -> Result<(), BundleError> {
    let partial = PathBuf::from(format!("{}.partial", output.display()));
    let result = (|| -> Result<(), BundleError> {
        let file = std::fs::File::create(&partial).map_err(BundleError::io(&partial))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(256 * 1024, file));
        let mut add = |path: &str, size: u64, data: &mut dyn Read| {
            tar.append_data(
                &mut header(size, 0o644, tar::EntryType::Regular),
                path,
                data,
            )
            .map_err(BundleError::io(&partial))
        };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        add("oci-layout", layout.len() as u64, &mut &layout[..])?;
        let index = serde_json::to_vec(index).expect("index serializes");
        add("index.json", index.len() as u64, &mut index.as_slice())?;
        let algorithms: BTreeSet<&str> = manifests
            .iter()
            .map(|(d, _)| d)
            .chain(blobs.iter().map(|(d, _)| d))
            .map(|d| d.algorithm().name())
            .collect();
        for dir in std::iter::once("blobs/".to_owned())
            .chain(algorithms.iter().map(|a| format!("blobs/{a}/")))
        {
            tar.append_data(
                &mut header(0, 0o755, tar::EntryType::Directory),
                dir,
                std::io::empty(),
            )
            .map_err(BundleError::io(&partial))?;
        }
        for (d, bytes) in manifests {
            tar.append_data(
                &mut header(bytes.len() as u64, 0o644, tar::EntryType::Regular),
                blob_path(d),
                &bytes[..],
            )
            .map_err(BundleError::io(&partial))?;
        }
        for (d, (repo, size)) in blobs {
            let blob = open(repo, d)?.ok_or_else(|| not_held(format!("blob {d}")))?;
            // The lease lives until the blob is in the tar.
            let crate::storage::OpenBlob {
                read,
                lease: _lease,
                ..
            } = blob;
            let mut data = Exact {
                inner: std::io::BufReader::with_capacity(
                    256 * 1024,
                    read.into_blocking_read(*size),
                ),
                left: *size,
            };
            tar.append_data(
                &mut header(*size, 0o644, tar::EntryType::Regular),
                blob_path(d),
                &mut data,
            )
            .map_err(BundleError::io(&partial))?;
        }
        let mut out = tar.into_inner().map_err(BundleError::io(&partial))?;
        out.flush().map_err(BundleError::io(&partial))?;
        let file = out
            .into_inner()
            .map_err(|e| BundleError::io(&partial)(e.into_error()))?;
        file.sync_all().map_err(BundleError::io(&partial))?;
        std::fs::rename(&partial, output).map_err(BundleError::io(output))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
