//! Content-addressed blob storage on the local filesystem: the only code that touches blob
//! files. Layout under the root directory:
//!
//! ```text
//! blobs/sha256/<2 hex>/<64 hex>   committed blobs and manifests, named by their digest
//! blobs/sha512/<2 hex>/<128 hex>  the same for sha512 digests (each algorithm apart)
//! tmp/                            blobs being written (fetched from upstream, or small puts)
//! uploads/<id>/data, info.json    push upload sessions
//! ```
//!
//! Invariant: a file under `blobs/` always hashes to its name. Writes go to a temporary file
//! behind a delete-on-drop guard, the digest is computed while streaming, and only a verified,
//! fsynced file is renamed into place (then the directory is fsynced).

mod blobs;
mod error;
mod pins;
mod read;
mod uploads;

pub use blobs::{BlobStore, BlobWriter};
pub use error::StoreError;
pub use pins::{PinGuard, Pins};
pub use read::{CHUNK_SIZE, FileChunks, read_at};
pub use uploads::{AppendError, UploadInfo, UploadSession, Uploads, hash_file};
