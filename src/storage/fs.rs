//! `FsBackend`: committed blobs as files under `<root>/blobs/<algorithm>/<2 hex>/<hex>`. A
//! commit is fsync, rename from the staging directory (on the same filesystem), fsync of the
//! shard directory; a quarantined blob moves to `<root>/quarantine/<hex>`.

use super::{BlobBackend, BlobRead, StoreError, Verified};
use crate::oci::{Algorithm, Digest};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct FsBackend {
    blobs: PathBuf,
    quarantine: PathBuf,
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

impl FsBackend {
    /// The backend under `root`; touches nothing.
    pub fn at(root: &Path) -> FsBackend {
        FsBackend {
            blobs: root.join("blobs"),
            quarantine: root.join("quarantine"),
        }
    }

    /// Creates the directories of every algorithm.
    pub async fn create(&self) -> Result<(), StoreError> {
        for algorithm in Algorithm::ALL {
            tokio::fs::create_dir_all(self.blobs.join(algorithm.name())).await?;
        }
        Ok(())
    }

    /// Fails unless the store exists.
    pub async fn exists(&self) -> Result<(), StoreError> {
        tokio::fs::metadata(&self.blobs).await?;
        Ok(())
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }
}

impl BlobBackend for FsBackend {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(self.path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open(&self, digest: &Digest) -> Result<Option<(BlobRead, u64)>, StoreError> {
        let path = self.path(digest);
        blocking(move || match std::fs::File::open(path) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(Some((BlobRead::File(f), len)))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn commit(&self, blob: Verified) -> Result<(), StoreError> {
        let dest = self.path(blob.digest());
        blocking(move || {
            commit_blocking(blob.path(), &dest)?;
            blob.consumed();
            Ok(())
        })
        .await
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        match tokio::fs::remove_file(self.path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let blobs = self.blobs.clone();
        blocking(move || {
            let mut out = Vec::new();
            for algorithm in Algorithm::ALL {
                list_algorithm(&blobs, algorithm, &mut out)?;
            }
            Ok(out)
        })
        .await
    }

    async fn quarantine(&self, digest: &Digest) -> Result<bool, StoreError> {
        tokio::fs::create_dir_all(&self.quarantine).await?;
        match tokio::fs::rename(self.path(digest), self.quarantine.join(digest.hex())).await {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Appends the committed blobs of one algorithm (`<blobs>/<algorithm>/<2 hex>/<hex>`) to `out`.
fn list_algorithm(
    blobs: &Path,
    algorithm: Algorithm,
    out: &mut Vec<(Digest, u64)>,
) -> std::io::Result<()> {
    let dir = blobs.join(algorithm.name());
    let shards = match std::fs::read_dir(&dir) {
        Ok(s) => s,
        Err(e) if not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for shard in shards {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(shard.path())? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Ok(d) = Digest::parse(&format!("{algorithm}:{name}")) {
                out.push((d, entry.metadata()?.len()));
            }
        }
    }
    Ok(())
}

/// fsync `src`, rename it to `dest` (creating the shard directory), fsync the directory.
fn commit_blocking(src: &Path, dest: &Path) -> Result<(), StoreError> {
    std::fs::File::open(src)?.sync_all()?;
    let dir = dest.parent().expect("blob paths have a shard directory");
    std::fs::create_dir_all(dir)?;
    // A blob already there has these very bytes (both were verified against the name): keep
    // it rather than replace a file that readers may have open.
    if dest.exists() {
        std::fs::remove_file(src)?;
        return Ok(());
    }
    std::fs::rename(src, dest)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
