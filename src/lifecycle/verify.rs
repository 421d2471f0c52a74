//! Re-hashes every committed blob and reports (or quarantines) those whose bytes no longer
//! match their name: disk corruption, or a hand edit. Works on files alone and opens the store
//! read-only (it never sweeps `tmp/` or `uploads/`), so it can run beside a serving registry; a
//! quarantined blob's index record is dropped lazily when the registry next fails to open it.

use crate::storage::{BlobStore, StoreError};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub bytes: u64,
    pub corrupt: Vec<String>,
    pub quarantined: usize,
}

pub async fn verify(root: &Path, quarantine: bool) -> Result<VerifyReport, StoreError> {
    let store = BlobStore::open_read_only(root).await?;
    let mut report = VerifyReport::default();
    for (d, size) in store.list().await? {
        let Some(actual) = store.rehash(&d).await? else {
            continue;
        };
        report.checked += 1;
        report.bytes += size;
        if actual == d {
            continue;
        }
        tracing::warn!(digest = %d, %actual, "blob does not match its digest");
        report.corrupt.push(d.to_string());
        if quarantine && store.quarantine(&d).await? {
            report.quarantined += 1;
        }
    }
    Ok(report)
}
