//! A private `redis-server` for tests: its own 127.0.0.1 port (chosen by port 0) and temp dir
//! (an append-only file there, so a restart keeps the data), stopped when dropped. Needs the
//! Debian `redis-server` package: without it the test using it fails.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    child: Child,
    pub port: u16,
    dir: Option<tempfile::TempDir>,
    /// `redis-cli` arguments for a TLS-only server.
    cli_tls: Vec<String>,
}

/// PEM files (paths) of a TLS-only Redis: its certificate and key, and the CA its clients'
/// certificates must come from.
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    /// A client certificate and key redis-cli uses.
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

/// A Redis killed by [`Redis::kill_keeping_data`]: its port and data, to start again.
pub struct Stopped {
    port: u16,
    dir: tempfile::TempDir,
}

impl Stopped {
    pub fn start(self) -> Redis {
        Redis::start_in(self.port, self.dir)
    }
}

impl Redis {
    /// Starts a redis-server on a free port and waits until it accepts connections.
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Redis::start_on(port)
    }

    /// Starts an empty redis-server on `port` (to bring one back where it was).
    pub fn start_on(port: u16) -> Redis {
        Redis::start_in(port, tempfile::tempdir().expect("tempdir"))
    }

    fn start_in(port: u16, dir: tempfile::TempDir) -> Redis {
        Redis::launch(port, dir, None)
    }

    /// A Redis that speaks only TLS and asks clients for a certificate from `tls.ca`.
    pub fn start_tls(tls: &TlsFiles) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Redis::launch(port, tempfile::tempdir().expect("tempdir"), Some(tls))
    }

    fn launch(port: u16, dir: tempfile::TempDir, tls: Option<&TlsFiles>) -> Redis {
        let mut cmd = Command::new("redis-server");
        let mut cli_tls = Vec::new();
        match tls {
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
            Some(t) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&t.cert)
                    .arg("--tls-key-file")
                    .arg(&t.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&t.ca)
                    .args(["--tls-auth-clients", "yes"]);
                for (flag, path) in [
                    ("--cacert", &t.ca),
                    ("--cert", &t.client_cert),
                    ("--key", &t.client_key),
                ] {
                    cli_tls.push(flag.to_owned());
                    cli_tls.push(path.display().to_string());
                }
                cli_tls.insert(0, "--tls".to_owned());
            }
        }
        let mut child = cmd
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        if !super::tools::stdout_says(
            &mut child,
            "Ready to accept connections",
            Duration::from_secs(20),
        ) {
            let _ = child.kill();
            panic!("redis-server did not start on port {port}");
        }
        Redis {
            child,
            port,
            dir: Some(dir),
            cli_tls,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.cli_tls)
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// SIGSTOP: the server keeps its connections but answers nothing (a hung or
    /// partitioned Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} redis-server");
    }

    /// Kills the server (SIGKILL) and keeps its data for [`Stopped::start`].
    pub fn kill_keeping_data(mut self) -> Stopped {
        self.kill();
        Stopped {
            port: self.port,
            dir: self.dir.take().expect("data dir"),
        }
    }

    /// Kills the server and waits for it to be gone.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.child.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
