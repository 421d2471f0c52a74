//! Start-up recovery after a crash (or any stop), run only by the server holding the index
//! lock: temporary files are removed, upload sessions without their files are removed,
//! index records whose files are missing are dropped, and committed files the index does not
//! know are adopted. Files under `blobs/` are only ever created by a verified rename, so an
//! unknown one is a complete blob whose index record was lost.
//!
//! On a shared bucket (`storage.s3`) only the local leftovers go: the bucket is the truth and
//! other replicas write to it, so a blob this node does not know is not its to adopt (it
//! would take another node's push for cache content) and nothing in it is deleted; what the
//! index lacks is read through from the bucket when asked for, and a record whose blob is
//! gone is dropped when a read finds it so.

use crate::clock::now_ms;
use crate::depot::Depot;
use crate::index::{BlobRecord, Origin};
use crate::oci::Digest;
use std::collections::HashSet;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub removed_temporary_files: usize,
    pub dropped_blob_records: usize,
    pub dropped_manifests: usize,
    pub adopted_files: usize,
}

pub async fn recover(depot: &Depot) -> Result<RecoveryReport, crate::error::RegistryError> {
    let mut report = RecoveryReport {
        removed_temporary_files: depot.store.remove_temporary_files().await?,
        ..RecoveryReport::default()
    };
    if depot.store.shared_meta().is_some() {
        if report != RecoveryReport::default() {
            tracing::info!(?report, "recovered the local cache after an unclean stop");
        }
        return Ok(report);
    }
    let files = depot.store.list().await?;
    let on_disk: HashSet<&Digest> = files.iter().map(|(d, _)| d).collect();
    let records = depot.index.blobs()?;
    let known: HashSet<&Digest> = records.iter().map(|(d, _)| d).collect();
    for (d, _) in &records {
        if !on_disk.contains(d) {
            depot.index.remove_blob(d)?;
            report.dropped_blob_records += 1;
        }
    }
    let t = now_ms();
    for (d, size) in &files {
        if !known.contains(d) {
            depot.index.put_blob(
                d,
                &BlobRecord {
                    size: *size,
                    origin: Origin::Proxy,
                    created: t,
                    last_access: t,
                },
            )?;
            report.adopted_files += 1;
        }
    }
    for (r, d, _) in depot.index.manifests()? {
        if !on_disk.contains(&d) {
            depot.index.delete_manifest(&r, &d)?;
            report.dropped_manifests += 1;
        }
    }
    if report != RecoveryReport::default() {
        tracing::info!(?report, "recovered the store after an unclean stop");
        depot.index.flush().await?;
    }
    Ok(report)
}
