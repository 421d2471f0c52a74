//! Test harness: starts the real `stevedore` binary on 127.0.0.1:0 with a config written to a
//! temporary directory, finds its ports from its JSON start-up log line, and stops it on drop.
//! Also small helpers to push blobs and manifests over the API.
#![allow(dead_code)]

pub mod api;
pub mod containerd;
pub mod docker;
pub mod fake_upstream;
pub mod oci_layout;
pub mod receiver;
pub mod redis;
pub mod refreg;
pub mod s3;
pub mod tools;
pub mod webdriver;

use sha2::{Digest as _, Sha256, Sha512};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stevedore");

/// A running stevedore process.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub debug_addr: Option<String>,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// How to start a server.
pub struct Options {
    /// Extra YAML appended to the generated config (which sets version, log, storage root,
    /// http.addr and http.debug).
    pub extra_yaml: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Reuse this data directory (to test restarts).
    pub data_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            extra_yaml: "storage:\n  delete:\n    enabled: true\n".into(),
            env: Vec::new(),
            data_dir: None,
        }
    }
}

impl Server {
    /// A plain private registry with deletes enabled.
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    /// Stevedore with `proxy.remoteurl` set to `upstream` (plus `extra` YAML under `proxy:`).
    pub fn mirror(upstream: &str, proxy_extra: &str) -> Server {
        Server::start_with(Options {
            extra_yaml: format!(
                "storage:\n  delete:\n    enabled: true\nproxy:\n  remoteurl: {upstream}\n{proxy_extra}"
            ),
            ..Options::default()
        })
    }

    pub fn start_with(opts: Options) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("data"));
        let config_path = tmp.path().join("config.yml");
        let config = merge_yaml(
            &format!(
                "version: 0.1\nlog:\n  level: debug\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n  debug:\n    addr: 127.0.0.1:0\n    prometheus:\n      enabled: true\n",
                data.display()
            ),
            &opts.extra_yaml,
        );
        std::fs::write(&config_path, config).expect("write config");
        let mut s = Server::spawn(&config_path, &opts.env, data);
        s._tmp = Some(tmp);
        s
    }

    /// Starts the binary on an existing config file.
    pub fn spawn(config_path: &Path, env: &[(String, String)], dir: PathBuf) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env(
                "STEVEDORE_LOG",
                "debug,sled=warn,hyper=info,h2=info,rustls=info",
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn stevedore");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("stevedore listening")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line.clone());
                }
                log2.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "stevedore did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json start-up line");
        let addr = v["addr"].as_str().expect("addr field").to_owned();
        let debug_addr = v["debug"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Server {
            child,
            addr,
            debug_addr,
            dir,
            config_path: config_path.to_owned(),
            _tmp: None,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn debug_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.debug_addr.as_ref().expect("debug listener"),
            path
        )
    }

    /// The registry's host:port, as image references name it.
    pub fn host(&self) -> &str {
        &self.addr
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (up to 10 s) for `needle` in the server's log: lines reach it through a pipe and a
    /// reader thread, after the response that caused them may already be in the client's hands.
    pub async fn logged(&self, needle: &str) -> bool {
        eventually(Duration::from_secs(10), || self.log_text().contains(needle)).await
    }

    /// Waits (up to 10 s) for the line saying the mirror fetched `digest` and recorded it in the
    /// cache: a client has its last byte before the blob is committed and in the index.
    pub async fn fetched_and_cached(&self, digest: &str) -> bool {
        eventually(Duration::from_secs(10), || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("blob fetched and cached") && l.contains(digest))
        })
        .await
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    /// A metric's value summed over every series whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = reqwest::get(self.debug_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, name, labels)
    }

    /// Waits (up to 10 s) until the metric reaches `min`: a counter follows the event it
    /// counts, a moment later. False if it never does.
    pub async fn metric_reaches(&self, name: &str, labels: &[(&str, &str)], min: f64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric(name, labels).await < min {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sums the samples of `name` in a Prometheus text exposition whose labels include `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_part, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((l, v)) = r.split_once('}') else {
                continue;
            };
            (l, v.trim())
        } else if rest.starts_with(' ') {
            ("", rest.trim())
        } else {
            continue;
        };
        if labels
            .iter()
            .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")))
        {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// Appends `extra` YAML to `base`, merging top-level sections that both define (so a test can
/// add `storage.delete` next to the generated `storage.filesystem`).
fn merge_yaml(base: &str, extra: &str) -> String {
    let mut b: serde_yaml_ng::Value = serde_yaml_ng::from_str(base).unwrap();
    let e: serde_yaml_ng::Value = if extra.trim().is_empty() {
        serde_yaml_ng::Value::Null
    } else {
        serde_yaml_ng::from_str(extra).unwrap()
    };
    merge(&mut b, e);
    serde_yaml_ng::to_string(&b).unwrap()
}

fn merge(a: &mut serde_yaml_ng::Value, b: serde_yaml_ng::Value) {
    match (a, b) {
        (serde_yaml_ng::Value::Mapping(a), serde_yaml_ng::Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, serde_yaml_ng::Value::Null) => {
            let _ = a;
        }
        (a, b) => *a = b,
    }
}

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn digest512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// Deterministic pseudo-random bytes.
/// Runs the `stevedore` binary with `args` and extra environment `env`; returns its exit code,
/// stdout and stderr.
pub fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends a request that must reach the server (any status): the one-line form of
/// `.send().await.unwrap()`.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request
        .send()
        .await
        .expect("request failed to reach the server")
}

/// Pushes a blob with a monolithic POST; returns its digest.
pub async fn push_blob(base: &str, repo: &str, data: &[u8]) -> String {
    push_blob_as(base, repo, data, digest(data)).await
}

/// Pushes `data` monolithically under its sha512 digest; returns the digest.
pub async fn push_blob512(base: &str, repo: &str, data: &[u8]) -> String {
    push_blob_as(base, repo, data, digest512(data)).await
}

/// Pushes `data` the way dockerd does: POST, one PATCH with the whole body (no
/// Content-Range), then an empty `PUT ?digest=`; returns the digest.
pub async fn push_blob_streamed(base: &str, repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let absolute = |location: &str| {
        if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location.to_owned()
        }
    };
    let location = |r: &reqwest::Response| {
        r.headers()["location"]
            .to_str()
            .expect("an ASCII Location")
            .to_owned()
    };
    let r = client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "start upload: {}", r.text().await.unwrap());
    let url = absolute(&location(&r));
    let r = api::send_typed(
        client().patch(url),
        "application/octet-stream",
        data.to_vec(),
    )
    .await;
    assert_eq!(r.status(), 202, "patch: {}", r.text().await.unwrap());
    let url = absolute(&location(&r));
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = client()
        .put(format!("{url}{sep}digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "finish upload: {}",
        r.text().await.unwrap()
    );
    d
}

/// Pushes `data` with a monolithic POST under digest `d`; returns `d`.
async fn push_blob_as(base: &str, repo: &str, data: &[u8], d: String) -> String {
    let r = api::send_typed(
        client().post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}")),
        "application/octet-stream",
        data.to_vec(),
    )
    .await;
    assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap());
    d
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An image manifest body naming a config and layers (digest, size).
pub fn image_manifest(
    media_type: &str,
    config: (&str, usize),
    layers: &[(&str, usize)],
) -> Vec<u8> {
    let (config_type, layer_type) = if media_type == DOCKER_MANIFEST {
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    };
    serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": layer_type, "digest": d, "size": s})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Pushes a small image (config + `layers` random layers) and tags it; returns the manifest
/// digest and bytes.
pub async fn push_image(
    base: &str,
    repo: &str,
    tag: &str,
    layers: usize,
    seed: u64,
) -> (String, Vec<u8>) {
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let cd = push_blob(base, repo, &config).await;
    let mut ls = Vec::new();
    for i in 0..layers {
        let data = random_bytes(1000 + i * 100, seed * 1000 + i as u64);
        let d = push_blob(base, repo, &data).await;
        ls.push((d, data.len()));
    }
    let refs: Vec<(&str, usize)> = ls.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let body = image_manifest(OCI_MANIFEST, (&cd, config.len()), &refs);
    let r = api::send_typed(
        client().put(format!("{base}/v2/{repo}/manifests/{tag}")),
        OCI_MANIFEST,
        body.clone(),
    )
    .await;
    assert_eq!(
        r.status(),
        201,
        "push manifest: {}",
        r.text().await.unwrap()
    );
    (digest(&body), body)
}

/// Waits until `f` returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
