//! The OCI / Docker vocabulary as validated types: digests, repository names, tags and references,
//! media types, manifest parsing, and image lists (warm and export lists). Pure functions only:
//! no I/O, no HTTP types, no storage.

pub mod digest;
pub mod glob;
pub mod image_list;
pub mod manifest;
pub mod media;
pub mod name;

pub use digest::{Algorithm, Digest, DigestError, DigestHasher, Sha256Hasher};
pub use manifest::{Descriptor, ManifestError, ParsedManifest};
pub use name::{NameError, Reference, RepoName, Tag};
