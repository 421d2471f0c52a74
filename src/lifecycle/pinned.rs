//! What pinned images (`proxy.pin`) reach: the blobs eviction must step over. Worked out from
//! the index's tags and the stored manifests, once per eviction pass that has work to do.

use crate::depot::Depot;
use crate::error::RegistryError;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, ParsedManifest};
use std::collections::HashSet;

/// The manifests, configs and layers every tag for which `pinned(repo, tag)` holds reaches
/// (child manifests of an index that are not stored are skipped: not cached, nothing to keep).
pub async fn pinned_blobs(
    depot: &Depot,
    pinned: &super::evict::Pinned,
) -> Result<HashSet<Digest>, RegistryError> {
    let mut out = HashSet::new();
    let mut todo: Vec<Digest> = depot
        .index
        .tags()?
        .into_iter()
        .filter(|(repo, tag, _)| pinned(repo, tag))
        .map(|(_, _, rec)| rec.digest)
        .collect();
    while let Some(d) = todo.pop() {
        if !out.insert(d.clone()) {
            continue;
        }
        let Some(bytes) = depot
            .store
            .read_small(&d, MAX_MANIFEST_BYTES as u64)
            .await?
        else {
            continue;
        };
        // Keeping more than needed is harmless; a manifest that does not parse keeps itself.
        if let Ok(p) = ParsedManifest::parse(&bytes, None) {
            out.extend(p.blobs);
            todo.extend(p.manifests);
        }
    }
    Ok(out)
}
