//! The cache's life over time: recovery at start-up, eviction of proxied content by size and
//! age, garbage collection of unreferenced pushed blobs, and re-verification of the store.
//! Runs beside request handling; never blocks it, and never removes a blob that is pinned
//! (being read) or still being fetched.

pub mod bucket;
pub mod evict;
pub mod gc;
pub mod pinned;
pub mod recover;
pub mod verify;

pub use bucket::{BucketGcOptions, BucketGcReport};
pub use evict::EvictOptions;
pub use gc::{GcOptions, GcReport};
pub use recover::RecoveryReport;
pub use verify::VerifyReport;
