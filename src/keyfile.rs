//! Small secrets stevedore generates once and keeps under the data root (the upload-URL key,
//! `auth.builtin`'s token signing key): read if present, else created with mode 0600 and
//! written atomically (temporary file, fsync, rename), so a crash never leaves half a key.
//! Nothing else: what a key means is its user's business.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The file's bytes when it exists and `usable` accepts them; else `create()`'s bytes, written
/// to `path` first. Returns the bytes and whether they were just created.
pub fn read_or_create(
    path: &Path,
    usable: impl Fn(&[u8]) -> bool,
    create: impl FnOnce() -> std::io::Result<Vec<u8>>,
) -> std::io::Result<(Vec<u8>, bool)> {
    match std::fs::read(path) {
        Ok(bytes) if usable(&bytes) => return Ok((bytes, false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes = create()?;
    write_private(path, &bytes)?;
    Ok((bytes, true))
}

/// Writes `bytes` to `path` with mode 0600, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn creates_once_private_then_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let (a, new) = read_or_create(&p, |b| b.len() == 3, || Ok(b"abc".to_vec())).unwrap();
        assert!(new);
        assert_eq!(a, b"abc");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, new) = read_or_create(&p, |b| b.len() == 3, || Ok(b"xyz".to_vec())).unwrap();
        assert!(!new);
        assert_eq!(b, b"abc");
        // An unusable file is replaced.
        let (c, new) = read_or_create(&p, |b| b.len() == 4, || Ok(b"wxyz".to_vec())).unwrap();
        assert!(new);
        assert_eq!(c, b"wxyz");
    }
}
