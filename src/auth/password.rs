//! Checking a password against a stored bcrypt hash, for every scheme that keeps hashes
//! (htpasswd files, `auth.builtin`'s users).
//!
//! bcrypt is slow on purpose (~50-100 ms at cost 10+), so it runs on the blocking pool, a few
//! at a time, and successful checks are remembered for a few minutes under a SHA-256 of the
//! user, the presented password and the stored hash: a `docker pull` of many layers pays for
//! one bcrypt, and changing a password or removing a user takes effect at once. A user nobody
//! knows is checked against a dummy hash of the same cost, so the time an answer takes does
//! not tell which users exist. No I/O here but the blocking pool.

use sha2::{Digest as _, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// How long a successful bcrypt verification is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// Salt and digest of a bcrypt hash that no password is checked against in earnest:
/// `$2b$<cost>$` in front of it makes a valid hash of any cost.
static DUMMY_TAIL: LazyLock<String> = LazyLock::new(|| {
    let h = bcrypt::hash_with_salt("stevedore: no such user", 4, [0x5a; 16])
        .expect("cost 4 is valid")
        .format_for_version(bcrypt::Version::TwoB);
    h["$2b$04$".len()..].to_owned()
});

/// The cost of a bcrypt hash (`$2b$10$…` → 10).
pub fn cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

/// Whether `hash` looks like a bcrypt hash.
pub fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| hash.starts_with(p))
        && cost(hash).is_some()
}

/// A dummy hash of bcrypt `cost` (clamped to bcrypt's range): verifying against it takes as
/// long as verifying a real hash of that cost, and never succeeds.
pub fn dummy_hash(cost: u32) -> Arc<str> {
    Arc::from(format!("$2b${:02}${}", cost.clamp(4, 31), *DUMMY_TAIL))
}

/// Verifies passwords against bcrypt hashes, a few at a time, remembering successes.
pub struct PasswordCheck {
    verified: moka::future::Cache<String, ()>,
    slots: tokio::sync::Semaphore,
    /// bcrypt verifications run (tests).
    runs: AtomicU64,
}

impl Default for PasswordCheck {
    fn default() -> Self {
        PasswordCheck::new()
    }
}

impl PasswordCheck {
    pub fn new() -> PasswordCheck {
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        PasswordCheck {
            verified: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(VERIFIED_TTL)
                .build(),
            slots: tokio::sync::Semaphore::new(slots),
            runs: AtomicU64::new(0),
        }
    }

    /// Whether `password` is `user`'s, given the stored `hash` (`Err(dummy)`: the user is
    /// unknown, and `dummy` is checked all the same so that it costs the same time).
    pub async fn check(
        &self,
        user: &str,
        password: &str,
        hash: Result<Arc<str>, Arc<str>>,
    ) -> bool {
        let (hash, known) = match hash {
            Ok(h) => (h, true),
            Err(dummy) => (dummy, false),
        };
        let key = {
            let mut h = Sha256::new();
            for part in [user.as_bytes(), password.as_bytes(), hash.as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            hex::encode(h.finalize())
        };
        if known && self.verified.get(&key).await.is_some() {
            return true;
        }
        let ok = {
            let Ok(_slot) = self.slots.acquire().await else {
                return false;
            };
            self.runs.fetch_add(1, Ordering::Relaxed);
            let password = password.to_owned();
            let hash = hash.clone();
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
        };
        if ok && known {
            self.verified.insert(key, ()).await;
        }
        ok && known
    }

    /// bcrypt verifications run so far.
    #[cfg(test)]
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}
