//! A private Docker daemon per test: `dockerd` with its data root, exec root, socket, pid file
//! and daemon config in its own short temporary directory under /tmp (unix socket paths must
//! stay under ~100 bytes), the vfs storage driver and no networking setup, so several can run
//! side by side as root without touching the host's Docker. Stopped with SIGTERM (dockerd then
//! stops the containerd it started) on `stop()` or drop, also when the test panics.

use super::tools::{on_path, run, run_ok, tail, terminate, wait_until};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Checks that `dockerd` and `docker` are installed; a missing one fails `test` with the
/// install hint (scripts/install-test-deps.sh installs Debian's docker.io). It never skips.
pub fn require_daemon(test: &str) {
    assert!(
        on_path("dockerd") && on_path("docker"),
        "{test}: `dockerd`/`docker` not on PATH (scripts/install-test-deps.sh installs docker.io)"
    );
}

/// How to start a daemon.
#[derive(Default)]
pub struct DockerdOptions {
    /// `--insecure-registry` values (host:port): plain HTTP is allowed to them.
    pub insecure_registries: Vec<String>,
    /// `--registry-mirror` URLs, asked first for Docker Hub images.
    pub registry_mirrors: Vec<String>,
}

pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    /// `unix:///…/d.sock`
    pub host: String,
    log_path: PathBuf,
    stopped: bool,
}

impl Dockerd {
    /// Starts dockerd and waits until `docker info` answers.
    pub fn start(opts: DockerdOptions) -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("sd-dk")
            .tempdir_in("/tmp")
            .expect("tempdir under /tmp");
        let p = |name: &str| dir.path().join(name);
        let socket = p("d.sock");
        let host = format!("unix://{}", socket.display());
        assert!(host.len() < 100, "socket path too long: {host}");
        // An empty daemon config, so a host /etc/docker/daemon.json cannot interfere.
        std::fs::write(p("daemon.json"), "{}").expect("daemon.json");
        std::fs::create_dir(p("client")).expect("client config dir");
        let log_path = p("dockerd.log");
        let log = File::create(&log_path).expect("dockerd log");
        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file")
            .arg(p("daemon.json"))
            .arg("--data-root")
            .arg(p("data"))
            .arg("--exec-root")
            .arg(p("exec"))
            .arg("-H")
            .arg(&host)
            .arg("--pidfile")
            .arg(p("d.pid"))
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
            ]);
        for r in &opts.insecure_registries {
            cmd.arg("--insecure-registry").arg(r);
        }
        for m in &opts.registry_mirrors {
            cmd.arg("--registry-mirror").arg(m);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .env_remove("DOCKER_HOST");
        let child = cmd.spawn().expect("spawn dockerd");
        let mut d = Dockerd {
            child,
            dir,
            host,
            log_path,
            stopped: false,
        };
        let mut exited = false;
        let up = wait_until(Duration::from_secs(60), || {
            if let Ok(Some(_)) = d.child.try_wait() {
                exited = true;
                return true;
            }
            d.docker(&["info"]).status.success()
        });
        if !up || exited {
            d.stop();
            panic!(
                "dockerd did not come up ({}); its log:\n{}",
                if exited { "it exited" } else { "timeout" },
                tail(&d.log_text(), 60)
            );
        }
        d
    }

    /// A `docker` command talking to this daemon, with its own (empty) client config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `docker ARGS` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// Runs `docker ARGS`; panics with its output and the daemon's log tail unless it succeeds.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\ndockerd log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log_text(), 30)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The image ID (`sha256:…`, the config digest) of a local image.
    pub fn image_id(&self, reference: &str) -> String {
        self.docker_ok(&["image", "inspect", "--format", "{{.Id}}", reference])
    }

    /// Whether the daemon has an image by that reference.
    pub fn has_image(&self, reference: &str) -> bool {
        self.docker(&["image", "inspect", reference])
            .status
            .success()
    }

    /// Imports a tarball as an image tagged `reference`; returns its image ID.
    pub fn import(&self, tarball: &std::path::Path, reference: &str) -> String {
        let id = self.docker_ok(&["import", &tarball.display().to_string(), reference]);
        assert!(id.starts_with("sha256:"), "docker import printed {id:?}");
        id
    }

    /// The daemon's log, without its gRPC connection chatter.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("module=grpc"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM, wait for dockerd (and the containerd it started) to exit.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if !terminate(&mut self.child, Duration::from_secs(30)) {
            // dockerd was SIGKILLed: its containerd is left behind; end it by its pid file.
            let pidfile = self.dir.path().join("exec/containerd/containerd.pid");
            if let Ok(pid) = std::fs::read_to_string(pidfile) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a small rootfs (two files whose content depends on `seed`) as an uncompressed tar
/// under `dir`; returns its path. `docker import` turns it into a one-layer image.
pub fn rootfs_tarball(dir: &std::path::Path, seed: u64) -> PathBuf {
    let root = dir.join(format!("rootfs-{seed}"));
    std::fs::create_dir_all(root.join("etc")).expect("rootfs dir");
    std::fs::write(root.join("etc/motd"), format!("stevedore e2e {seed}\n")).expect("motd");
    std::fs::write(
        root.join("payload.bin"),
        super::random_bytes(256 * 1024, seed),
    )
    .expect("payload");
    let tarball = dir.join(format!("rootfs-{seed}.tar"));
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    );
    tarball
}
