//! Pins: blobs being read right now. Eviction and garbage collection skip pinned blobs, so a
//! blob is never removed from under a reader (an open file would survive the unlink on Unix,
//! but the reader's next request would miss).

use crate::oci::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Pins {
    counts: Arc<Mutex<HashMap<Digest, usize>>>,
}

/// Holds a pin until dropped.
#[derive(Debug)]
pub struct PinGuard {
    pins: Pins,
    digest: Digest,
}

impl Pins {
    pub fn pin(&self, digest: &Digest) -> PinGuard {
        *self
            .counts
            .lock()
            .expect("pins poisoned")
            .entry(digest.clone())
            .or_insert(0) += 1;
        PinGuard {
            pins: self.clone(),
            digest: digest.clone(),
        }
    }

    pub fn is_pinned(&self, digest: &Digest) -> bool {
        self.counts
            .lock()
            .expect("pins poisoned")
            .contains_key(digest)
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut counts = self.pins.counts.lock().expect("pins poisoned");
        if let Some(n) = counts.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.digest);
            }
        }
    }
}
