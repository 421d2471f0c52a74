//! Helpers for end-to-end tests that drive external programs (skopeo, dockerd, the reference
//! registry): finding them on PATH, running them with their output captured, picking a free
//! port, polling with a deadline, and stopping a child politely (SIGTERM, then SIGKILL); and
//! the `weed mini` command line (shared with the bench, which includes this file).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Whether `prog` is an executable file in a directory on PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| is_executable(&d.join(prog))))
        .unwrap_or(false)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Panics with an install hint unless `prog` is on PATH.
pub fn require(prog: &str, package: &str) {
    assert!(
        on_path(prog),
        "`{prog}` is not on PATH: install the Debian package `{package}` (see .ci/run)"
    );
}

/// A port that was free a moment ago on 127.0.0.1 (bound to port 0, then released). Another
/// process may take it before the caller binds it, so callers retry on "address in use".
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Runs `cmd` to completion with stdout and stderr captured.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, panics (showing both streams) unless it exits 0; returns trimmed stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes; returns its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Sends SIGTERM to `child` and waits up to `grace` for it to exit, then SIGKILLs it.
/// Returns true when it exited on SIGTERM.
pub fn terminate(child: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if wait_until(grace, || matches!(child.try_wait(), Ok(Some(_)))) {
        return true;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// The status code of a plain `GET path` to `addr` (host:port), or None when nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `skopeo --insecure-policy ARGS` with an empty registries.conf (no mirrors or aliases) and
/// its auth file under `tmp`.
fn skopeo_command(tmp: &Path, args: &[&str]) -> Command {
    let conf = tmp.join("registries.conf");
    if !conf.exists() {
        std::fs::write(&conf, "").expect("registries.conf");
    }
    let mut cmd = Command::new("skopeo");
    cmd.env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env("REGISTRY_AUTH_FILE", tmp.join("auth.json"))
        .args(["--insecure-policy", "--command-timeout", "120s"])
        .args(args);
    cmd
}

/// Runs skopeo (see [`skopeo_command`]); the output, whatever it is.
pub fn skopeo(tmp: &Path, args: &[&str]) -> Output {
    run(&mut skopeo_command(tmp, args))
}

/// Runs skopeo, panics unless it succeeds; its trimmed stdout.
pub fn skopeo_ok(tmp: &Path, args: &[&str]) -> String {
    run_ok(&mut skopeo_command(tmp, args))
}

/// Whether `child` prints a line containing `ready` on its stdout (which must be piped) within
/// `timeout`. The rest of its output is drained in the background, so it never blocks on a
/// full pipe.
pub fn stdout_says(child: &mut Child, ready: &'static str, timeout: Duration) -> bool {
    use std::io::{BufRead, BufReader};
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.contains(ready)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(timeout).is_ok()
}

/// `weed mini` (SeaweedFS: master, volume, filer and S3 gateway in one process) on 127.0.0.1
/// with its data in `dir`: S3 on port `s3`, the filer on `filer`, every other port its own free
/// port, `bucket` created at start (asynchronously: wait for the filer to list it), volumes of
/// `volume_mb` MB. The caller sets the credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`) and waits for "components are running and ready" on stdout.
pub fn weed_mini(dir: &Path, bucket: &str, s3: u16, filer: u16, volume_mb: u64) -> Command {
    let mut cmd = Command::new("weed");
    cmd.arg("mini")
        .arg(format!("-dir={}", dir.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
        .args(["-webdav=false", "-admin.ui=false"])
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
        .arg(format!("-master.volumeSizeLimitMB={volume_mb}"))
        .arg(format!("-bucket={bucket}"))
        .arg(format!("-s3.port={s3}"))
        .arg(format!("-filer.port={filer}"));
    for flag in [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port.grpc",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "debug.port",
    ] {
        cmd.arg(format!("-{flag}={}", free_port()));
    }
    cmd.current_dir(dir);
    cmd
}
