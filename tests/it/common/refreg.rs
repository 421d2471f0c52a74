//! The distribution reference registry (`docker-registry serve`, Debian package
//! `docker-registry`) as a real upstream: filesystem storage in a temporary directory, listening
//! on a free 127.0.0.1 port, stopped (SIGTERM, then SIGKILL) on `stop()` or drop.

use super::tools::{free_port, http_status, tail, terminate, wait_until};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = "docker-registry";

pub struct RefRegistry {
    child: Child,
    /// host:port
    pub addr: String,
    log_path: PathBuf,
    stopped: bool,
    _dir: tempfile::TempDir,
}

impl RefRegistry {
    /// Starts the registry and waits until `GET /v2/` answers (200, or 401 with `auth`).
    pub fn start() -> RefRegistry {
        RefRegistry::start_with("")
    }

    /// [`RefRegistry::start`] with `extra` YAML (top-level sections other than `version`,
    /// `log`, `storage` and `http`, e.g. `auth` or `notifications`) appended to its config.
    pub fn start_with(extra: &str) -> RefRegistry {
        super::tools::require(BIN, "docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        // The port is picked before the registry binds it; retry if someone else took it.
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let config = dir.path().join("config.yml");
            let data = dir.path().join("data");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra}",
                    data.display()
                ),
            )
            .expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = File::create(&log_path).expect("registry log");
            let mut cmd = Command::new(BIN);
            cmd.arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log);
            // The registry overlays REGISTRY_* variables on its config; keep ours only.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let mut child = cmd.spawn().expect("spawn docker-registry");
            let mut exited = false;
            let up = wait_until(Duration::from_secs(20), || {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    return true;
                }
                // 401 with an `auth` block: serving all the same.
                matches!(http_status(&addr, "/v2/"), Some(200 | 401))
            });
            let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if up && !exited {
                return RefRegistry {
                    child,
                    addr,
                    log_path,
                    stopped: false,
                    _dir: dir,
                };
            }
            terminate(&mut child, Duration::from_secs(5));
            if !log_text.contains("address already in use") {
                panic!(
                    "docker-registry did not start on {addr}:\n{}",
                    tail(&log_text, 40)
                );
            }
        }
        panic!("docker-registry: no free port after 5 attempts");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM and wait; afterwards nothing listens on `addr`.
    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            terminate(&mut self.child, Duration::from_secs(10));
        }
    }
}

impl Drop for RefRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
