//! Content-addressed blob storage: the only code that touches blob files. `BlobStore` is the
//! handle everything above holds; it puts a local staging tier in front of a `BlobBackend`,
//! the seam where committed blobs live. The filesystem (`FsBackend`) is the backend today; an
//! object store can sit beside it (see `backend.rs` for what one must provide). Layout under
//! the root directory:
//!
//! ```text
//! blobs/sha256/<2 hex>/<64 hex>   committed blobs and manifests, named by their digest (FsBackend)
//! blobs/sha512/<2 hex>/<128 hex>  the same for sha512 digests (each algorithm apart)
//! quarantine/<hex>                blobs `stevedore verify` found not to match their name
//! tmp/                            blobs being written (fetched from upstream, or small puts)
//! uploads/<id>/data, info.json    push upload sessions (with `storage.s3` they live in the
//!                                 bucket instead: `s3/uploads.rs`)
//! ```
//!
//! Invariant: a committed blob always hashes to its name. Writes are staged in `tmp/` behind a
//! delete-on-drop guard, the digest is computed while streaming, and only a `Verified` blob
//! reaches the backend, which makes it durable (files: fsync, rename, fsync the directory).
//! With `storage.s3`, the bucket also holds the repository metadata (`SharedMeta`: links,
//! tags, cached markers), which the registry writes through and reads through.
//! Nothing outside this module sees a path: reads hand out a `BlobRead` (a local file, or a
//! stream of byte ranges), writes a `BlobWriter`, blobs still arriving a `GrowingFile`.

mod backend;
mod blobs;
#[doc(hidden)]
pub mod contract;
mod error;
mod fs;
mod meta;
mod read;
mod reads;
mod s3;
mod staging;
mod uploads;

pub use backend::{BlobBackend, BlobRead, RangeSource};
pub use blobs::{BlobStore, OpenBlob};
pub use error::StoreError;
pub use fs::FsBackend;
pub use meta::SharedMeta;
pub use read::{CHUNK_SIZE, FileChunks, read_at};
pub use reads::{OpenReads, ReadLease};
pub use s3::{BucketBlob, BucketKey, Lease, LeaseError, Link, LinkKind, S3Backend};
pub use staging::{BlobWriter, GrowingFile, Lander, Staging, Verified};
pub use uploads::{AppendError, UploadInfo, UploadSession, Uploads};
