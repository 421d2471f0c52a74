//! Basic authentication against an htpasswd file, as distribution's `auth.htpasswd`: lines of
//! `user:hash` with bcrypt hashes only (`htpasswd -B`); blank lines and `#` comments are
//! skipped. The file is re-read when its modification time, size or inode change (one `stat` per
//! request, on the blocking pool like the reading); if it becomes unreadable the last good
//! contents stay in force.
//!
//! Passwords are checked by [`PasswordCheck`] (bcrypt on the blocking pool, successes
//! remembered); a user the file does not name is checked against a dummy hash of the file's
//! cost, so the time an answer takes does not tell which users exist.

use super::AuthSetupError;
use super::password::{self, PasswordCheck};
use base64::Engine as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

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

/// A dummy hash of the highest cost among `users` (bcrypt's default cost when there are none),
/// so that verifying against it takes as long as verifying a real user.
fn dummy_hash(users: &HashMap<String, Arc<str>>) -> Arc<str> {
    let cost = users
        .values()
        .filter_map(|h| password::cost(h))
        .max()
        .unwrap_or(bcrypt::DEFAULT_COST);
    password::dummy_hash(cost)
}

/// A loaded htpasswd file.
pub struct Htpasswd {
    realm: String,
    path: PathBuf,
    entries: Arc<RwLock<Entries>>,
    check: PasswordCheck,
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
        if !password::is_bcrypt(hash) {
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
        Ok(Htpasswd {
            realm: realm.to_owned(),
            path: path.to_owned(),
            entries: Arc::new(RwLock::new(Entries::new(stamp, users))),
            check: PasswordCheck::new(),
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
        // An unknown user costs a bcrypt all the same.
        let hash = self.hash_of(user).await;
        if self.check.check(user, password, hash).await {
            Ok(user.to_owned())
        } else {
            Err(format!("wrong user name or password for {user:?}"))
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
        let runs = || h.check.runs();
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
