//! A private containerd per test: its root, state, socket and config in its own short temporary
//! directory under /tmp (unix socket paths must stay under ~100 bytes), the CRI plugin off, so
//! several can run side by side as root without touching the host's containerd. `ctr` talks to
//! it with `--hosts-dir` pointing at a `certs.d`-style directory the test writes. Stopped with
//! SIGTERM on `stop()` or drop, also when the test panics.

use super::tools::{on_path, run, tail, terminate, wait_until};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Checks that `containerd` and `ctr` are installed; a missing one fails `test` with the
/// install hint (scripts/install-test-deps.sh installs Debian's containerd). It never skips.
pub fn require_daemon(test: &str) {
    assert!(
        on_path("containerd") && on_path("ctr"),
        "{test}: `containerd`/`ctr` not on PATH (scripts/install-test-deps.sh installs containerd)"
    );
}

pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    log_path: PathBuf,
    stopped: bool,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers.
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("sd-ctd")
            .tempdir_in("/tmp")
            .expect("tempdir under /tmp");
        let p = |name: &str| dir.path().join(name);
        let socket = p("c.sock");
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long: {}",
            socket.display()
        );
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n",
            p("root").display().to_string(),
            p("state").display().to_string(),
            socket.display().to_string(),
            p("t.sock").display().to_string(),
        );
        std::fs::write(p("config.toml"), config).expect("containerd config");
        let log_path = p("containerd.log");
        let log = File::create(&log_path).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(p("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut c = Containerd {
            child,
            dir,
            socket,
            log_path,
            stopped: false,
        };
        let mut exited = false;
        let up = wait_until(Duration::from_secs(60), || {
            if let Ok(Some(_)) = c.child.try_wait() {
                exited = true;
                return true;
            }
            c.ctr(&["version"]).status.success()
        });
        if !up || exited {
            c.stop();
            panic!(
                "containerd did not come up ({}); its log:\n{}",
                if exited { "it exited" } else { "timeout" },
                tail(&c.log_text(), 60)
            );
        }
        c
    }

    /// A directory for the test's files (e.g. a hosts dir), removed with the daemon's.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `ctr ARGS` against this daemon.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE"))
    }

    /// Runs `ctr ARGS`; panics with its output and the daemon's log tail unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\nstdout tail:\n{}\nstderr:\n{}\ncontainerd log tail:\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), 6),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log_text(), 30)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `ctr content fetch` of `reference` (its linux/amd64 image) with the hosts directory
    /// `hosts`; panics unless it succeeds.
    pub fn fetch_ok(&self, hosts: &Path, reference: &str) -> String {
        let hosts = hosts.display().to_string();
        self.ctr_ok(&[
            "content",
            "fetch",
            "--hosts-dir",
            &hosts,
            "--platform",
            "linux/amd64",
            reference,
        ])
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, wait for containerd to exit.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        terminate(&mut self.child, Duration::from_secs(30));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `<hosts_dir>/<registry>/hosts.toml` naming `mirror` (a URL) for pull and resolve,
/// with `server` as the fallback containerd uses when the mirror fails.
pub fn write_hosts_toml(hosts_dir: &Path, registry: &str, mirror: &str, server: &str) {
    let dir = hosts_dir.join(registry);
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = {server:?}\n\n[host.{mirror:?}]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .expect("hosts.toml");
}
