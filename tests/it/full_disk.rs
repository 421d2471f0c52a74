//! A full disk: the request that hits it fails with a clear error, nothing partial is kept,
//! what is stored keeps being served, and writes work again once space is freed. Runs on a
//! small tmpfs mounted for the test (needs root, as CI has: without it the tests fail).

use crate::common::api::get;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A size-limited tmpfs, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount(8) is needed");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem with a file until `leave` bytes remain free.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    let avail: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let filler = dir.join("filler");
    let f = std::fs::File::create(&filler).unwrap();
    f.set_len(0).unwrap();
    let mut w = std::io::BufWriter::new(f);
    let chunk = vec![0u8; 64 * 1024];
    let mut left = avail.saturating_sub(leave);
    use std::io::Write;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if w.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = w.flush();
    filler
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[tokio::test]
async fn a_full_disk_fails_cleanly_and_recovers() {
    let fs = SmallFs::mount("48m");
    let s = Server::start_with(Options {
        data_dir: Some(fs.path().join("data")),
        ..Options::default()
    });
    let base = s.url("");
    let (m, _) = push_image(&base, "disk/app", "v1", 2, 1).await;
    let before = random_bytes(1_000_000, 2);
    let bd = push_blob(&base, "disk/app", &before).await;

    let filler = fill(fs.path(), 2 * 1024 * 1024);
    let big = random_bytes(6_000_000, 3);
    let d = digest(&big);
    // Monolithic upload.
    let r = client()
        .post(s.url(&format!("/v2/disk/app/blobs/uploads/?digest={d}")))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no space"),
        "{v}"
    );
    // Chunked upload: the failing chunk is not kept; the session stays resumable.
    let r = send(client().post(s.url("/v2/disk/app/blobs/uploads/"))).await;
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = client()
        .patch(s.url(&loc))
        .header("content-range", format!("0-{}", big.len() - 1))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let r = client().get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["range"],
        "0-0",
        "nothing of the failed chunk is kept"
    );
    // Nothing partial anywhere; what is stored is still served.
    assert!(dir_is_empty(&fs.path().join("data/tmp")));
    let hex = d.trim_start_matches("sha256:");
    assert!(
        !fs.path()
            .join("data/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists()
    );
    let r = send(client().get(s.url(&format!("/v2/disk/app/blobs/{bd}")))).await;
    assert_eq!(digest(&r.bytes().await.unwrap()), bd);
    let r = get(&s.url("/v2/disk/app/manifests/v1"), Some(OCI_MANIFEST)).await;
    assert_eq!(r.headers()["docker-content-digest"], m.as_str());

    // Space comes back: the same pushes work.
    std::fs::remove_file(filler).unwrap();
    let r = client()
        .put(s.url(&format!("{loc}&digest={d}")))
        .header("content-range", format!("0-{}", big.len() - 1))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = send(client().get(s.url(&format!("/v2/disk/app/blobs/{d}")))).await;
    assert_eq!(digest(&r.bytes().await.unwrap()), d);
    let (m2, _) = push_image(&base, "disk/app", "v2", 1, 4).await;
    let r = get(&s.url("/v2/disk/app/manifests/v2"), Some(OCI_MANIFEST)).await;
    assert_eq!(r.headers()["docker-content-digest"], m2.as_str());
    drop(s);
}
