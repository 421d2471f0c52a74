//! Basic authentication against an htpasswd file, as distribution's `auth.htpasswd`: lines of
//! `user:hash` with bcrypt hashes only (`htpasswd -B`); blank lines and `#` comments are
//! skipped. The file is re-read when its modification time, size or inode change (one `stat` per
//! request); if it becomes unreadable the last good contents stay in force.
//!
//! bcrypt is slow on purpose (~50-100 ms at cost 10+), so it runs on the blocking pool, a few
//! at a time, and successful checks are remembered for a few minutes under a SHA-256 of the
//! user, the presented password and the stored hash: a `docker pull` of many layers pays for
//! one bcrypt, and changing a password or removing a user in the file takes effect at once.

use super::AuthSetupError;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
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
}

/// A loaded htpasswd file.
pub struct Htpasswd {
    realm: String,
    path: PathBuf,
    entries: RwLock<Entries>,
    verified: moka::future::Cache<String, ()>,
    bcrypt_slots: tokio::sync::Semaphore,
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
            entries: RwLock::new(Entries { stamp, users }),
            verified: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(VERIFIED_TTL)
                .build(),
            bcrypt_slots: tokio::sync::Semaphore::new(slots),
        })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The stored hash of `user`, after re-reading the file if it changed.
    fn hash_of(&self, user: &str) -> Option<Arc<str>> {
        let current = Stamp::of(&self.path);
        let stale = match &current {
            Ok(s) => self.entries.read().map(|e| e.stamp != *s).unwrap_or(true),
            Err(_) => false,
        };
        if stale {
            match read(&self.path) {
                Ok((stamp, users)) => {
                    tracing::info!(path = %self.path.display(), users = users.len(), "htpasswd file reloaded");
                    if let Ok(mut e) = self.entries.write() {
                        *e = Entries { stamp, users };
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot re-read the htpasswd file; keeping its previous contents");
                }
            }
        } else if let Err(e) = current {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot stat the htpasswd file; keeping its previous contents");
        }
        self.entries.read().ok()?.users.get(user).cloned()
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
        let hash = self.hash_of(user).ok_or_else(refused)?;
        let key = {
            let mut h = Sha256::new();
            for part in [user.as_bytes(), password.as_bytes(), hash.as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            hex::encode(h.finalize())
        };
        if self.verified.get(&key).await.is_some() {
            return Ok(user.to_owned());
        }
        let ok = {
            let _slot = self
                .bcrypt_slots
                .acquire()
                .await
                .map_err(|_| "shutting down".to_owned())?;
            let password = password.to_owned();
            let hash = hash.clone();
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
        };
        if ok {
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
}
