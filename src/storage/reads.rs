//! Open reads: the blobs being read right now. Eviction and garbage collection skip a blob
//! with an open read, so a blob is never removed from under a reader (an open file would
//! survive the unlink on Unix, but the reader's next request would miss). Not to be confused
//! with pinned images, which users exempt from eviction for good.

use crate::oci::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct OpenReads {
    counts: Arc<Mutex<HashMap<Digest, usize>>>,
}

/// Holds a blob's read open until dropped.
#[derive(Debug)]
pub struct ReadLease {
    reads: OpenReads,
    digest: Digest,
}

impl OpenReads {
    pub fn lease(&self, digest: &Digest) -> ReadLease {
        *self
            .counts
            .lock()
            .expect("open reads poisoned")
            .entry(digest.clone())
            .or_insert(0) += 1;
        ReadLease {
            reads: self.clone(),
            digest: digest.clone(),
        }
    }

    pub fn is_read(&self, digest: &Digest) -> bool {
        self.counts
            .lock()
            .expect("open reads poisoned")
            .contains_key(digest)
    }
}

impl Drop for ReadLease {
    fn drop(&mut self) {
        let mut counts = self.reads.counts.lock().expect("open reads poisoned");
        if let Some(n) = counts.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.digest);
            }
        }
    }
}
