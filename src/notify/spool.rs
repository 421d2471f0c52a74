//! A persistent queue's files: `<root>/notifications/<endpoint>/<seq>.json`, one rendered
//! event each, written to a `.tmp` file, fsynced, renamed and the directory fsynced, so a
//! crash leaves either the whole event or nothing. Dead letters move to `dead/`.
//!
//! Owns those files and nothing else (sled is the index's alone). Blocking I/O: callers run it
//! off the async threads.

use super::format::Rendered;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One queued event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The event's id (`webhook-id`).
    pub id: String,
    /// When it was queued, in milliseconds since the epoch.
    pub queued_ms: u64,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    /// The body (the formats write JSON, so UTF-8).
    pub body: String,
}

impl Stored {
    pub fn new(id: &str, queued: SystemTime, r: &Rendered) -> Stored {
        Stored {
            id: id.to_string(),
            queued_ms: u64::try_from(
                queued
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            content_type: r.content_type.clone(),
            headers: r.headers.clone(),
            body: String::from_utf8_lossy(&r.body).into_owned(),
        }
    }

    pub fn rendered(&self) -> Rendered {
        Rendered {
            content_type: self.content_type.clone(),
            headers: self.headers.clone(),
            body: Bytes::from(self.body.clone()),
        }
    }

    pub fn queued(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.queued_ms)
    }
}

/// One endpoint's spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating) `dir`, drops unfinished `.tmp` files, and returns what it holds, in
    /// queue order. An unreadable file is moved to `dead/` and reported, not fatal.
    pub fn open(dir: &Path) -> io::Result<(Spool, Vec<(u64, Stored)>)> {
        fs::create_dir_all(dir.join("dead"))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            match fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Stored>(&b).map_err(|e| e.to_string()))
            {
                Ok(s) => found.push((seq, s)),
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "unreadable queued notification moved to dead/");
                    let _ = fs::rename(entry.path(), dir.join("dead").join(name));
                }
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        Ok((
            Spool {
                dir: dir.to_path_buf(),
            },
            found,
        ))
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Writes entries durably: each file fsynced and renamed, then the directory fsynced once.
    pub fn write(&self, entries: &[(u64, Stored)]) -> io::Result<()> {
        for (seq, stored) in entries {
            let path = self.path(*seq);
            let tmp = path.with_extension("json.tmp");
            let body = serde_json::to_vec(stored).map_err(io::Error::other)?;
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
        }
        sync_dir(&self.dir)
    }

    /// Removes delivered (or dropped) entries.
    pub fn remove(&self, seqs: &[u64]) -> io::Result<()> {
        for seq in seqs {
            match fs::remove_file(self.path(*seq)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves dead-lettered entries to `dead/`, where they stay for an operator.
    pub fn bury(&self, seqs: &[u64]) -> io::Result<()> {
        for seq in seqs {
            let from = self.path(*seq);
            let to = self
                .dir
                .join("dead")
                .join(from.file_name().unwrap_or_default());
            match fs::rename(&from, &to) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str) -> Stored {
        Stored {
            id: id.into(),
            queued_ms: 5,
            content_type: "application/json".into(),
            headers: vec![("ce-id".into(), id.into())],
            body: "{\"events\":[]}".into(),
        }
    }

    #[test]
    fn entries_survive_a_reopen_in_order_and_leftovers_are_cleaned() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("ep");
        let (spool, found) = Spool::open(&dir).expect("open");
        assert!(found.is_empty());
        spool
            .write(&[(2, stored("b")), (10, stored("c")), (1, stored("a"))])
            .expect("write");
        spool.remove(&[2]).expect("remove");
        spool.bury(&[10]).expect("bury");
        std::fs::write(dir.join("00000000000000000003.json.tmp"), b"half").expect("tmp");
        std::fs::write(dir.join("00000000000000000004.json"), b"{broken").expect("broken");
        let (_, found) = Spool::open(&dir).expect("reopen");
        assert_eq!(found, vec![(1, stored("a"))]);
        assert!(!dir.join("00000000000000000003.json.tmp").exists());
        assert!(dir.join("dead/00000000000000000010.json").exists());
        assert!(dir.join("dead/00000000000000000004.json").exists());
    }
}
