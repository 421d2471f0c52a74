//! Writes and reads OCI image layout directories (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) for tests that copy images with skopeo. Layers are real gzip'd tarballs
//! (made with `tar` and `gzip -n`) of random files, with their diff IDs in the image config, so
//! clients that sniff compression or check diff IDs take them as they are.

use super::tools::run_ok;
use super::{OCI_INDEX, OCI_MANIFEST, digest, random_bytes};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

impl Desc {
    pub fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// A layer blob and the digest of its uncompressed tar.
#[derive(Debug, Clone)]
pub struct Layer {
    pub desc: Desc,
    pub diff_id: String,
}

/// An image written into a layout: its manifest, config and layers.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Desc,
    pub config: Desc,
    pub layers: Vec<Layer>,
    pub arch: String,
}

impl Image {
    /// The digests a pull of this image fetches: its manifest, config and layers.
    pub fn digests(&self) -> Vec<&str> {
        [self.manifest.digest.as_str(), self.config.digest.as_str()]
            .into_iter()
            .chain(self.layers.iter().map(|l| l.desc.digest.as_str()))
            .collect()
    }
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    tags: Vec<(Desc, String)>,
}

impl Layout {
    pub fn create(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dirs");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        let l = Layout {
            dir: dir.to_owned(),
            tags: Vec::new(),
        };
        l.write_index();
        l
    }

    /// Stores a blob; returns its descriptor.
    pub fn add_blob(&self, media_type: &str, data: &[u8]) -> Desc {
        let d = digest(data);
        let hex = d.strip_prefix("sha256:").unwrap();
        std::fs::write(self.dir.join("blobs/sha256").join(hex), data).expect("write blob");
        Desc {
            media_type: media_type.into(),
            digest: d,
            size: data.len(),
        }
    }

    /// A gzip'd tar layer holding `files` random files of `file_size` bytes (content from `seed`).
    pub fn add_layer(&self, seed: u64, files: usize, file_size: usize) -> Layer {
        let work = self.dir.join(format!("../layer-work-{seed}"));
        let root = work.join("root");
        std::fs::create_dir_all(root.join("data")).expect("layer dir");
        for i in 0..files {
            std::fs::write(
                root.join(format!("data/file-{seed}-{i}.bin")),
                random_bytes(file_size, seed * 100 + i as u64),
            )
            .expect("layer file");
        }
        let tar = work.join("layer.tar");
        run_ok(
            Command::new("tar")
                .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0"])
                .args(["--numeric-owner", "-C"])
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        run_ok(Command::new("gzip").args(["-n", "-k", "-f"]).arg(&tar));
        let uncompressed = std::fs::read(&tar).expect("read tar");
        let compressed = std::fs::read(work.join("layer.tar.gz")).expect("read tar.gz");
        std::fs::remove_dir_all(&work).expect("clean layer work dir");
        Layer {
            desc: self.add_blob(OCI_LAYER_GZIP, &compressed),
            diff_id: digest(&uncompressed),
        }
    }

    /// A linux/`arch` image of `layers`: writes its config and manifest.
    pub fn add_image(&self, arch: &str, layers: &[Layer]) -> Image {
        let config = serde_json::to_vec(&json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": layers.iter().map(|_| json!({"created": "2024-01-01T00:00:00Z", "created_by": "stevedore e2e"})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let config = self.add_blob(OCI_CONFIG, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": layers.iter().map(|l| l.desc.json()).collect::<Vec<_>>(),
        }))
        .unwrap();
        Image {
            manifest: self.add_blob(OCI_MANIFEST, &manifest),
            config,
            layers: layers.to_vec(),
            arch: arch.into(),
        }
    }

    /// An image index of linux images (one per architecture); returns its descriptor.
    pub fn add_index(&self, images: &[&Image]) -> Desc {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": images.iter().map(|i| {
                let mut d = i.manifest.json();
                d["platform"] = json!({"architecture": i.arch, "os": "linux"});
                d
            }).collect::<Vec<_>>(),
        }))
        .unwrap();
        self.add_blob(OCI_INDEX, &index)
    }

    /// Names `desc` (a manifest or an index) `tag` in `index.json`.
    pub fn tag(&mut self, desc: &Desc, tag: &str) {
        self.tags.push((desc.clone(), tag.into()));
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({
            "schemaVersion": 2,
            "manifests": self.tags.iter().map(|(d, t)| {
                let mut j = d.json();
                j["annotations"] = json!({"org.opencontainers.image.ref.name": t});
                j
            }).collect::<Vec<_>>(),
        });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).unwrap(),
        )
        .expect("index.json");
    }
}

/// The descriptor `index.json` of the layout at `dir` names `tag`.
pub fn tagged(dir: &Path, tag: &str) -> Desc {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    let m = index["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag:?} in {index}"));
    Desc {
        media_type: m["mediaType"].as_str().unwrap_or_default().into(),
        digest: m["digest"].as_str().expect("digest").into(),
        size: m["size"].as_u64().expect("size") as usize,
    }
}

/// Every blob digest under `dir/blobs/sha256`, after checking each file hashes to its name.
pub fn blob_digests(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256")).expect("read blobs dir") {
        let e = e.unwrap();
        let name = format!("sha256:{}", e.file_name().to_string_lossy());
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            digest(&data),
            name,
            "blob {} does not hash to its name",
            name
        );
        out.insert(name);
    }
    out
}

/// A blob's bytes.
pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(dir.join("blobs/sha256").join(hex)).expect("read blob")
}

/// Puts `img` from the layout at `dir` into the fake upstream's `repo`: its config and layers
/// as blobs, its manifest untagged (or tagged `tag`); returns the manifest digest.
pub fn add_to_fake(
    up: &super::fake_upstream::FakeUpstream,
    repo: &str,
    dir: &Path,
    img: &Image,
    tag: Option<&str>,
) -> String {
    for d in std::iter::once(&img.config).chain(img.layers.iter().map(|l| &l.desc)) {
        up.add_blob(repo, read_blob(dir, &d.digest).into());
    }
    up.add_manifest(
        repo,
        tag,
        OCI_MANIFEST,
        read_blob(dir, &img.manifest.digest).into(),
    )
}

/// Builds a one-layer image (a real gzip'd tar) in a layout under `dir` and stores it in the
/// fake upstream `up` as `repo:tag`.
pub fn seed_upstream(
    up: &super::fake_upstream::FakeUpstream,
    dir: &Path,
    repo: &str,
    tag: &str,
    seed: u64,
) -> Image {
    let layout = Layout::create(&dir.join(format!("layout-{seed}")));
    let layer = layout.add_layer(seed, 3, 20_000);
    let image = layout.add_image("amd64", &[layer]);
    let blob = |d: &str| bytes::Bytes::from(read_blob(&layout.dir, d));
    up.add_blob(repo, blob(&image.config.digest));
    for l in &image.layers {
        up.add_blob(repo, blob(&l.desc.digest));
    }
    let d = up.add_manifest(repo, Some(tag), OCI_MANIFEST, blob(&image.manifest.digest));
    assert_eq!(d, image.manifest.digest);
    image
}
