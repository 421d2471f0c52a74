//! `StoreError`: failures of the blob store and upload sessions.

use crate::oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("content digest {actual} does not match the expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content is {actual} bytes, {expected} were announced")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("no space left on device")]
    Full,
    #[error("content exceeds {0} bytes")]
    TooLarge(u64),
    /// Another request wrote to the upload session since this one read it (a race between
    /// replicas): this request's bytes were not kept.
    #[error(
        "upload session {0} was written by another request meanwhile; ask where it stands and resume"
    )]
    UploadMoved(String),
    #[error("storage is read-only")]
    ReadOnly,
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        // ENOSPC and EDQUOT: the disk (or the user's quota) is full.
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(122) {
            StoreError::Full
        } else {
            StoreError::Io(e)
        }
    }
}
