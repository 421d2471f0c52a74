//! Re-hashes every committed blob and reports (or quarantines) those whose bytes no longer
//! match their name: disk corruption, or a hand edit. Works on files alone and opens the store
//! read-only (it never sweeps `tmp/` or `uploads/`), so it can run beside a serving registry; a
//! quarantined blob's index record is dropped lazily when the registry next fails to open it.

use crate::storage::{BlobStore, StoreError, hash_file};
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
    let qdir = root.join("quarantine");
    let mut report = VerifyReport::default();
    for (d, size) in store.list().await? {
        let path = store.path(&d);
        let actual = match hash_file(&path, d.algorithm()).await {
            Ok(a) => a,
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        report.checked += 1;
        report.bytes += size;
        if actual == d {
            continue;
        }
        tracing::warn!(digest = %d, %actual, "blob does not match its digest");
        report.corrupt.push(d.to_string());
        if quarantine {
            tokio::fs::create_dir_all(&qdir).await?;
            tokio::fs::rename(&path, qdir.join(d.hex())).await?;
            report.quarantined += 1;
        }
    }
    Ok(report)
}
