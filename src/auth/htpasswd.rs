//! Basic authentication against an htpasswd file, as distribution's `auth.htpasswd`: lines of
//! `user:hash` with bcrypt hashes only (`htpasswd -B`); blank lines and `#` comments are
//! skipped. The file is re-read when its modification time, size or inode change (one `stat` per
//! request, on the blocking pool like the reading); if it becomes unreadable the last good
//! contents stay in force.
//!
//! bcrypt is slow on purpose (~50-100 ms at cost 10+), so it runs on the blocking pool, a few
//! at a time, and successful checks are remembered for a few minutes under a SHA-256 of the
//! user, the presented password and the stored hash: a `docker pull` of many layers pays for
//! one bcrypt, and changing a password or removing a user in the file takes effect at once.
//! A user the file does not name is checked against a dummy hash of the file's cost, so the time
//! an answer takes does not tell which users exist.

use super::AuthSetupError;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, SystemTime};

/// How long a successful bcrypt verification is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// What identifies a version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            mtime: m.modified().ok(),
            len: m.len(),
            ino: m.ino(),
        })
    }
}

struct Entries {
    stamp: Stamp,
    /// user → bcrypt hash.
    users: HashMap<String, Arc<str>>,
    /// What an unknown user's password is checked against: a hash of the users' (highest) cost.
    dummy: Arc<str>,
}

impl Entries {
    fn new(stamp: Stamp, users: HashMap<String, Arc<str>>) -> Entries {
        let dummy = dummy_hash(&users);
        Entries {
            stamp,
            users,
            dummy,
        }
    }
}

/// Salt and digest of a bcrypt hash that no password of the file is checked against in earnest:
/// `$2b$<cost>$` in front of it makes a valid hash of any cost.
static DUMMY_TAIL: LazyLock<String> = LazyLock::new(|| {
    let h = bcrypt::hash_with_salt("stevedore: no such user", 4, [0x5a; 16])
        .expect("cost 4 is valid")
        .format_for_version(bcrypt::Version::TwoB);
    h["$2b$04$".len()..].to_owned()
});

/// A dummy hash of the highest cost among `users` (bcrypt's default cost when there are none),
/// so that verifying against it takes as long as verifying a real user.
fn dummy_hash(users: &HashMap<String, Arc<str>>) -> Arc<str> {
    let cost = users
        .values()
        .filter_map(|h| h.get(4..6)?.parse::<u32>().ok())
        .max()
        .unwrap_or(bcrypt::DEFAULT_COST)
        .clamp(4, 31);
    Arc::from(format!("$2b${cost:02}${}", *DUMMY_TAIL))
}

/// A loaded htpasswd file.
pub struct Htpasswd {
    realm: String,
    path: PathBuf,
    entries: Arc<RwLock<Entries>>,
    verified: moka::future::Cache<String, ()>,
    bcrypt_slots: tokio::sync::Semaphore,
    /// bcrypt verifications run (tests).
    bcrypt_runs: AtomicU64,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("realm", &self.realm)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Parses an htpasswd file's text; returns the entries and the users whose hash is not bcrypt.
fn parse(text: &str) -> (HashMap<String, Arc<str>>, Vec<String>) {
    let mut users = HashMap::new();
    let mut not_bcrypt = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            continue;
        };
        if !["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| hash.starts_with(p))
        {
            not_bcrypt.push(user.to_owned());
            continue;
        }
        users.insert(user.to_owned(), Arc::from(hash));
    }
    (users, not_bcrypt)
}

fn read(path: &Path) -> std::io::Result<(Stamp, HashMap<String, Arc<str>>)> {
    let stamp = Stamp::of(path)?;
    let text = std::fs::read_to_string(path)?;
    let (users, not_bcrypt) = parse(&text);
    if !not_bcrypt.is_empty() {
        tracing::warn!(
            path = %path.display(),
            users = ?not_bcrypt,
            "htpasswd entries without a bcrypt hash are ignored (create them with htpasswd -B)"
        );
    }
    Ok((stamp, users))
}

/// Re-reads the file into `entries` when its stamp changed (blocking: `stat`, `read`).
fn reload_if_changed(path: &Path, entries: &RwLock<Entries>) {
    let current = Stamp::of(path);
    let stale = match &current {
        Ok(s) => entries.read().map(|e| e.stamp != *s).unwrap_or(true),
        Err(_) => false,
    };
    if stale {
        match read(path) {
            Ok((stamp, users)) => {
                tracing::info!(path = %path.display(), users = users.len(), "htpasswd file reloaded");
                let fresh = Entries::new(stamp, users);
                if let Ok(mut e) = entries.write() {
                    *e = fresh;
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot re-read the htpasswd file; keeping its previous contents");
            }
        }
    } else if let Err(e) = current {
        tracing::warn!(path = %path.display(), error = %e, "cannot stat the htpasswd file; keeping its previous contents");
    }
}

impl Htpasswd {
    /// Reads the file at `path`; it must exist.
    pub fn open(realm: &str, path: &Path) -> Result<Htpasswd, AuthSetupError> {
        let (stamp, users) = read(path).map_err(|e| AuthSetupError::Htpasswd {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Htpasswd {
            realm: realm.to_owned(),
            path: path.to_owned(),
            entries: Arc::new(RwLock::new(Entries::new(stamp, users))),
            verified: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(VERIFIED_TTL)
                .build(),
            bcrypt_slots: tokio::sync::Semaphore::new(slots),
            bcrypt_runs: AtomicU64::new(0),
        })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The stored hash of `user` (`Err`: the dummy hash, the user is unknown), after
    /// re-reading the file if it changed. The `stat` and the reading run on the blocking pool.
    async fn hash_of(&self, user: &str) -> Result<Arc<str>, Arc<str>> {
        let (path, entries) = (self.path.clone(), self.entries.clone());
        let _ = tokio::task::spawn_blocking(move || reload_if_changed(&path, &entries)).await;
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .users
            .get(user)
            .cloned()
            .ok_or_else(|| entries.dummy.clone())
    }

    /// Checks the base64 `user:password` of a Basic `Authorization` header; returns the user.
    pub async fn authenticate(&self, encoded: &str) -> Result<String, String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "malformed basic credentials".to_owned())?;
        let raw = String::from_utf8(raw).map_err(|_| "malformed basic credentials".to_owned())?;
        let (user, password) = raw
            .split_once(':')
            .ok_or_else(|| "malformed basic credentials".to_owned())?;
        let refused = || format!("wrong user name or password for {user:?}");
        // An unknown user costs a bcrypt all the same.
        let (hash, known) = match self.hash_of(user).await {
            Ok(hash) => (hash, true),
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
            return Ok(user.to_owned());
        }
        let ok = {
            let _slot = self
                .bcrypt_slots
                .acquire()
                .await
                .map_err(|_| "shutting down".to_owned())?;
            self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
            let password = password.to_owned();
            let hash = hash.clone();
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
        };
        if ok && known {
            self.verified.insert(key, ()).await;
            Ok(user.to_owned())
        } else {
            Err(refused())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bcrypt_entries_only() {
        let (users, bad) = parse(
            "# comment\n\nalice:$2y$05$abcdefghijklmnopqrstuuHBcO8m6rV4mGk0u1yYQ1z0k7z2QxJ0a\nbob:{SHA}xyz\ncarol:$apr1$x$y\nnocolon\n",
        );
        assert_eq!(users.len(), 1);
        assert!(users.contains_key("alice"));
        assert_eq!(bad, vec!["bob".to_owned(), "carol".to_owned()]);
    }

    #[tokio::test]
    async fn verifies_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let h = Htpasswd::open("R", &path).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(h.authenticate(&b64("alice:secret")).await.unwrap(), "alice");
        // Cached now, and still right.
        assert_eq!(h.authenticate(&b64("alice:secret")).await.unwrap(), "alice");
        assert!(h.authenticate(&b64("alice:wrong")).await.is_err());
        assert!(h.authenticate(&b64("bob:secret")).await.is_err());
        assert!(h.authenticate("!!!").await.is_err());
        assert!(h.authenticate(&b64("nocolon")).await.is_err());
        // A new password takes effect on the next request, cache or not.
        let hash2 = bcrypt::hash("other", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash2}\nbob:{hash}\n")).unwrap();
        assert!(h.authenticate(&b64("alice:secret")).await.is_err());
        assert_eq!(h.authenticate(&b64("alice:other")).await.unwrap(), "alice");
        assert_eq!(h.authenticate(&b64("bob:secret")).await.unwrap(), "bob");
        // A vanished file keeps the last contents.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(h.authenticate(&b64("bob:secret")).await.unwrap(), "bob");
    }

    #[tokio::test]
    async fn unknown_users_cost_a_bcrypt_of_the_same_cost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("secret", 5).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let h = Htpasswd::open("R", &path).unwrap();
        let dummy = h.entries.read().unwrap().dummy.clone();
        assert!(dummy.starts_with("$2b$05$"), "{dummy}");
        assert!(!bcrypt::verify("", &dummy).unwrap());
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let runs = || h.bcrypt_runs.load(Ordering::Relaxed);
        assert!(h.authenticate(&b64("mallory:secret")).await.is_err());
        assert_eq!(runs(), 1, "no bcrypt for an unknown user");
        assert!(h.authenticate(&b64("alice:wrong")).await.is_err());
        assert_eq!(runs(), 2);
        // A file without users: bcrypt's default cost.
        std::fs::write(&path, "# nobody\n").unwrap();
        let dummy = h.hash_of("alice").await.unwrap_err();
        assert!(
            dummy.starts_with(&format!("$2b${:02}$", bcrypt::DEFAULT_COST)),
            "{dummy}"
        );
    }
}
