//! A private `redis-server` for tests: its own 127.0.0.1 port (chosen by port 0) and temp dir
//! (an append-only file there, so a restart keeps the data), stopped when dropped. Needs the
//! Debian `redis-server` package.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    child: Child,
    pub port: u16,
    dir: Option<tempfile::TempDir>,
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
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
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
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.contains("Ready to accept connections")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!("redis-server did not start on port {port}");
        }
        Redis {
            child,
            port,
            dir: Some(dir),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
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
