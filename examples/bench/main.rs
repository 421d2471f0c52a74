//! The bench runner (issues 8, 11, 13): stevedore against the reference registry
//! (distribution 2.8, `docker-registry`) on this machine, in one run, with the machine's own
//! ceilings (nginx sendfile for blob throughput, `examples/hello` for requests/s), and the
//! "large cache" scenario (`examples/largecache`). Writes BENCHMARKS.md.
//!
//! This file orchestrates: it starts the servers (`procs.rs`), runs the rounds interleaved so
//! that whatever else runs on the machine weighs on every server alike, and writes the report
//! (`report.rs`). The registry protocol and the load are `examples/loadgen`'s subcommands, run
//! as child processes (so their CPU is never counted as a server's); medians and ratios come
//! from `loadgen/stats.rs`. Process helpers (free port, polling, stopping) are the
//! integration tests' `tests/it/common/tools.rs`, included as a module.
//!
//! ```text
//! bash bench/run.sh [ARGS]              # builds (release), then runs this with ARGS
//! bench                                 # everything; ~5 minutes on 2 cores, plus the large cache
//! bench --quick --out /tmp/b.md         # 1 repetition, 32 MiB blobs, 1 s runs, 2000 index entries
//! bench --only blob                     # warm blob GETs only: prints their lines
//! bench --only manifest,idle,tls        # only these sections (blob, manifest, idle, tls,
//!                                       # push, cold, herd, fleet, s3): lines, targets
//! bench large-cache                     # only the large cache scenario: prints its section
//! bench fleet [--quick]                 # only the 3-replica concurrent misses: prints its section
//! bench notify-stall                    # only push/pull latency with a stalled notification receiver (notify.rs)
//! ```
//!
//! Options (environment variable in brackets): `--reps N` [BENCH_REPS] repetitions per
//! measurement, median reported (3); `--secs S` [BENCH_SECS] seconds per manifest run (4);
//! `--out FILE` [BENCH_OUT] (BENCHMARKS.md in the repository root); `--wan-rate B`
//! [BENCH_WAN_RATE] bytes/s of the simulated link to the upstream (100000000);
//! `--large-sizes "N..."` [BENCH_LARGE_SIZES] ("100000 1000000"); `--keep` [BENCH_KEEP=1] keeps
//! the temp dir; `--prebuilt` [BENCH_NO_BUILD=1] says the binaries were not built for this run.
//! Needs: curl, docker-registry, nginx (Debian nginx-light will do), wrk (optional), `weed`
//! (SeaweedFS, for the s3 section: scripts/install-test-deps.sh), and an
//! open-files limit above 11,024 for the idle-connections section (`bench/run.sh` raises
//! the soft limit to the hard one).
//! Everything listens on 127.0.0.1; every process started here is stopped on exit.

#[allow(dead_code)] // the tests use more of it
#[path = "../../tests/it/common/tools.rs"]
mod tools;

#[path = "../loadgen/stats.rs"]
mod stats;

mod fleet;
mod idle;
mod notify;
mod procs;
mod report;
mod s3;
mod tls;

use procs::{Kind, Proc};
use stats::{median, number, ratio};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const MIB: u64 = 1 << 20;
pub const ACCEPT: &str = "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

pub fn log(msg: &str) {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 86400)
        .unwrap_or(0);
    eprintln!("[{:02}:{:02}:{:02}] {msg}", s / 3600, s / 60 % 60, s % 60);
}

/// What to run, from the arguments and the environment.
pub struct Opts {
    pub reps: usize,
    pub secs: f64,
    pub wan_rate: u64,
    pub out: PathBuf,
    /// `--only`: the sections to run (all when empty).
    pub only: Vec<String>,
    pub large_only: bool,
    /// Only the 3-replica scenario (`fleet.rs`).
    pub fleet_only: bool,
    pub notify_only: bool,
    pub quick: bool,
    pub keep: bool,
    pub prebuilt: bool,
    pub large_sizes: Vec<u64>,
    /// Warm blob GET and push.
    pub big: u64,
    /// Concurrent cold misses.
    pub herd: u64,
    /// The cold-pull image's layers.
    pub layers: [u64; 3],
    /// PATCH size of the chunked push.
    pub chunk: u64,
}

/// The sections `--only` can name, in the order they run.
pub const SECTIONS: [&str; 9] = [
    "blob", "manifest", "idle", "push", "cold", "herd", "tls", "fleet", "s3",
];

impl Opts {
    /// Whether the section runs: every one without `--only`.
    pub fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn parse_args(root: &Path) -> Result<Opts, String> {
    let mut o = Opts {
        reps: env_or("BENCH_REPS", 3),
        secs: env_or("BENCH_SECS", 4.0),
        wan_rate: env_or("BENCH_WAN_RATE", 100_000_000),
        out: std::env::var_os("BENCH_OUT")
            .map_or_else(|| root.join("BENCHMARKS.md"), PathBuf::from),
        only: Vec::new(),
        large_only: false,
        fleet_only: false,
        notify_only: false,
        quick: false,
        keep: std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1"),
        prebuilt: std::env::var("BENCH_NO_BUILD").is_ok_and(|v| v == "1"),
        large_sizes: Vec::new(),
        big: 256 * MIB,
        herd: 100 * MIB,
        layers: [40 * MIB, 16 * MIB, 8 * MIB],
        chunk: 16 * MIB,
    };
    let mut large = std::env::var("BENCH_LARGE_SIZES").ok();
    let mut only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let (mut reps, mut secs) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--reps" => reps = Some(value()?.parse().map_err(|e| format!("--reps: {e}"))?),
            "--secs" => secs = Some(value()?.parse().map_err(|e| format!("--secs: {e}"))?),
            "--wan-rate" => {
                o.wan_rate = value()?.parse().map_err(|e| format!("--wan-rate: {e}"))?
            }
            "--out" => o.out = value()?.into(),
            "--only" => only = value()?,
            "--large-sizes" => large = Some(value()?),
            "--keep" => o.keep = true,
            "--prebuilt" => o.prebuilt = true,
            "large-cache" => o.large_only = true,
            "fleet" => o.fleet_only = true,
            "notify-stall" => o.notify_only = true,
            "-h" | "--help" => return Err("see the top of examples/bench/main.rs".into()),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    if o.quick {
        o.reps = 1;
        o.secs = 1.0;
        o.big = 32 * MIB;
        o.herd = 16 * MIB;
        o.layers = [5 * MIB, 2 * MIB, MIB];
        o.chunk = 8 * MIB;
        large.get_or_insert_with(|| "2000".into());
    }
    for w in only.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if !SECTIONS.contains(&w) {
            return Err(format!(
                "--only {w}: the sections are {}",
                SECTIONS.join(", ")
            ));
        }
        o.only.push(w.to_owned());
    }
    o.reps = reps.unwrap_or(o.reps).max(1);
    o.secs = secs.unwrap_or(o.secs);
    o.large_sizes = large
        .as_deref()
        .unwrap_or("100000 1000000")
        .split_whitespace()
        .map(|n| n.parse().map_err(|e| format!("large cache size {n}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(o)
}

/// Paths of the release binaries: this runner sits in target/release/examples.
pub struct Bins {
    pub stevedore: PathBuf,
    pub examples: PathBuf,
}

impl Bins {
    fn find() -> Result<Bins, String> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let examples = me.parent().ok_or("no parent dir")?.to_owned();
        let stevedore = examples.parent().ok_or("no parent dir")?.join("stevedore");
        for p in [&stevedore, &examples.join("loadgen")] {
            if !p.exists() {
                return Err(format!(
                    "{} is missing: build with `bash bench/run.sh`",
                    p.display()
                ));
            }
        }
        Ok(Bins {
            stevedore,
            examples,
        })
    }

    fn example(&self, name: &str) -> Command {
        Command::new(self.examples.join(name))
    }

    /// Runs `loadgen ARGS`; its result line, or an error with its stderr.
    pub fn loadgen(&self, args: &[&str]) -> Result<String, String> {
        let (ok, line, err) = self.loadgen_any(args)?;
        if ok {
            Ok(line)
        } else {
            Err(format!("loadgen {}: {line} {err}", args.join(" ")))
        }
    }

    /// Runs `loadgen ARGS`; (exited 0, stdout, stderr).
    pub fn loadgen_any(&self, args: &[&str]) -> Result<(bool, String, String), String> {
        let out = self
            .example("loadgen")
            .args(args)
            .output()
            .map_err(|e| format!("loadgen: {e}"))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// Results by key (`metric.server`), as the report reads them.
#[derive(Default)]
pub struct Results {
    pub n: HashMap<String, f64>,
    pub text: HashMap<String, String>,
}

impl Results {
    pub fn get(&self, key: &str) -> f64 {
        self.n.get(key).copied().unwrap_or(f64::NAN)
    }
    fn set(&mut self, key: impl Into<String>, v: f64) {
        self.n.insert(key.into(), v);
    }
}

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let result = parse_args(&root).and_then(|o| run(&root, &o));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(root: &Path, o: &Opts) -> Result<(), String> {
    let bins = Bins::find()?;
    if o.large_only {
        print!("{}", report::large_cache(&bins, &o.large_sizes)?);
        return Ok(());
    }
    let rev = report::revision(root, &bins, o.prebuilt);
    let tmp = tempfile::Builder::new()
        .prefix("stevedore-bench.")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let work = tmp.path().to_owned();
    let _keep = if o.keep {
        log(&format!("keeping {}", work.display()));
        std::mem::forget(tmp);
        None
    } else {
        Some(tmp)
    };
    let load_start = report::loadavg();
    if o.notify_only {
        print!("{}", notify::run(&bins, o, &work)?);
        log(&format!(
            "load average: {load_start} at the start, {} at the end",
            report::loadavg()
        ));
        return Ok(());
    }
    let mut r = Results::default();
    let b = Bench {
        o,
        bins: &bins,
        work: &work,
    };

    log(&format!("test data: random blobs in {}", work.display()));
    if o.fleet_only {
        return fleet_only(&b, &work);
    }
    let big = work.join("big");
    b.make_image(&big, &[o.big])?;
    let big_digest = image_digest(&big, "l0")?;
    if o.wants("cold") || o.wants("s3") {
        b.make_image(&work.join("cold"), &o.layers)?;
    }
    if o.wants("herd") || o.wants("fleet") {
        b.make_image(&work.join("herd"), &[o.herd])?;
    }

    log("starting: stevedore and reference (plain)");
    let st = procs::registry(Kind::Stevedore, &bins.stevedore, &work.join("st"), None)?;
    let refr = procs::registry(Kind::Reference, &bins.stevedore, &work.join("ref"), None)?;
    log("pushing the test images (same bytes to both servers and to the upstream)");
    for p in [&st, &refr] {
        b.push_image(p, "bench/big", &big)?;
    }
    if o.wants("blob") {
        log("starting nginx");
        let nginx = procs::nginx(&work.join("nginx"), &big.join("l0"))?;
        let blob_path = format!("/v2/bench/big/blobs/{big_digest}");
        let servers = [
            ("nginx", &nginx, format!("{}/blob", nginx.url)),
            ("st", &st, format!("{}{blob_path}", st.url)),
            ("ref", &refr, format!("{}{blob_path}", refr.url)),
        ];
        b.warm_blobs(&servers, &mut r)?;
        nginx.stop();
    }
    if o.wants("manifest") {
        let (hello, _) = procs::with_addresses(
            bins.example("hello").arg("127.0.0.1:0"),
            1,
            &work.join("hello.log"),
        )?;
        b.manifests(&hello, &st, &refr, &mut r)?;
    }
    if o.wants("idle") {
        b.idle(&big, &mut r)?;
    }
    if o.wants("push") {
        b.push(&st, "st", &big.join("l0"), &mut r)?;
        b.push(&refr, "ref", &big.join("l0"), &mut r)?;
    }
    let mut hwm = HashMap::from([("st", 0u64), ("ref", 0u64)]);
    if o.wants("cold") || o.wants("herd") || o.wants("fleet") || o.wants("s3") {
        let up = procs::registry(Kind::Reference, &bins.stevedore, &work.join("up"), None)?;
        let cp_cmd = |rate: Option<u64>| {
            let mut c = bins.example("countproxy");
            c.args([
                "127.0.0.1:0",
                up.url.trim_start_matches("http://"),
                "127.0.0.1:0",
            ]);
            if let Some(rate) = rate {
                c.arg(rate.to_string());
            }
            c
        };
        let (cp, cp_addrs) =
            procs::with_addresses(&mut cp_cmd(None), 2, &work.join("countproxy.log"))?;
        if o.wants("cold") || o.wants("s3") {
            b.push_image(&up, "bench/cold", &work.join("cold"))?;
        }
        if o.wants("cold") {
            let (wan, _) =
                procs::with_addresses(&mut cp_cmd(Some(o.wan_rate)), 2, &work.join("wan.log"))?;
            b.cold_pull(&up, &wan, &mut hwm, &mut r)?;
        }
        if o.wants("herd") || o.wants("fleet") {
            b.push_image(&up, "bench/herd", &work.join("herd"))?;
            let herd_digest = image_digest(&work.join("herd"), "l0")?;
            if o.wants("herd") {
                b.herd(&cp, &cp_addrs[1], &herd_digest, &mut hwm, &mut r)?;
            }
            if o.wants("fleet") {
                fleet::run(
                    &bins,
                    &work,
                    &cp.url,
                    &cp_addrs[1],
                    &herd_digest,
                    o.herd,
                    &mut r,
                )?;
            }
        }
        if o.wants("s3") {
            s3::run(&b, &st, &refr, &big, &big_digest, &cp.url, &mut r)?;
        }
    }

    // 6. memory
    r.set("hwm.st", procs::status_kb(st.pid(), "VmHWM") as f64);
    r.set("hwm.ref", procs::status_kb(refr.pid(), "VmHWM") as f64);
    r.set("hwmmirror.st", hwm["st"] as f64);
    r.set("hwmmirror.ref", hwm["ref"] as f64);
    drop((st, refr));
    if o.wants("tls") {
        b.tls(&big_digest, &mut r)?;
    }

    if !o.only.is_empty() {
        let text = report::partial(o, &r, &rev, &load_start);
        print!("{text}");
        if std::env::var_os("BENCH_OUT").is_some() || std::env::args().any(|a| a == "--out") {
            std::fs::write(&o.out, text).map_err(|e| format!("{}: {e}", o.out.display()))?;
        }
        return Ok(());
    }
    let (table, targets) = report::results(o, &r);
    println!("\n{table}\n\n{targets}");
    log(&format!(
        "large cache scenario: {:?} index entries",
        o.large_sizes
    ));
    let large = report::large_cache(&bins, &o.large_sizes)?;
    let large = format!("{}\n{large}", fleet::section(&r));
    let doc = report::document(o, &rev, &load_start, &table, &targets, &large);
    std::fs::write(&o.out, doc).map_err(|e| format!("{}: {e}", o.out.display()))?;
    log(&format!("wrote {}", o.out.display()));
    Ok(())
}

/// The digest of `file` in a `make-image` directory.
fn image_digest(dir: &Path, file: &str) -> Result<String, String> {
    let list = std::fs::read_to_string(dir.join("digests")).map_err(|e| e.to_string())?;
    list.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(f, _)| *f == file)
        .and_then(|(_, rest)| rest.split(' ').next())
        .map(str::to_owned)
        .ok_or_else(|| format!("no {file} in {}", dir.display()))
}

/// The three blob clients (issue 13) and the connection counts.
pub const BLOB_CLIENTS: [&str; 3] = ["hyper", "curl", "go"];
pub const BLOB_CONNS: [u64; 2] = [1, 8];

pub fn client_name(c: &str) -> &'static str {
    match c {
        "hyper" => "hyper loadgen",
        "curl" => "curl",
        _ => "Go-style client, 32 KiB reads",
    }
}

pub struct Bench<'a> {
    o: &'a Opts,
    bins: &'a Bins,
    work: &'a Path,
}

impl Bench<'_> {
    pub fn make_image(&self, dir: &Path, sizes: &[u64]) -> Result<(), String> {
        let mut args = vec!["make-image".to_owned(), dir.display().to_string()];
        args.extend(sizes.iter().map(u64::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.bins.loadgen(&args).map(drop)
    }

    pub fn push_image(&self, p: &Proc, repo: &str, dir: &Path) -> Result<(), String> {
        let dir = dir.display().to_string();
        self.bins
            .loadgen(&["push-image", &p.url, repo, "v1", &dir])
            .map(drop)
    }

    /// Section 1: Warm blob GETs: each client at 1 connection (4 GETs on one keep-alive
    /// connection) and 8 connections (8 GETs at once, one per connection), repetitions interleaved
    /// (nginx, stevedore, reference, then again); server CPU per GB per client.
    fn warm_blobs(
        &self,
        servers: &[(&str, &Proc, String); 3],
        r: &mut Results,
    ) -> Result<(), String> {
        let big = self.o.big.to_string();
        log(&format!(
            "1. warm blob GET: {} MiB; {:?}; 1 connection × 4 GETs and 8 connections × 1 GET; {}× each, interleaved",
            self.o.big / MIB,
            BLOB_CLIENTS,
            self.o.reps
        ));
        for (_, _, url) in servers {
            // warm-up (also fills the page cache)
            self.bins
                .loadgen(&["load", "-c", "1", "-n", "1", "--expect-bytes", &big, url])?;
        }
        let mut ticks: HashMap<String, u64> = HashMap::new();
        let mut served: HashMap<String, u64> = HashMap::new();
        let mut gbps: HashMap<String, Vec<f64>> = HashMap::new();
        for _ in 0..self.o.reps {
            for (s, p, url) in servers {
                for c in BLOB_CLIENTS {
                    for n in BLOB_CONNS {
                        let gets = if n == 1 { 4 } else { n };
                        let threads = if n == 1 { "1" } else { "2" };
                        let (n_s, gets_s) = (n.to_string(), gets.to_string());
                        let args = [
                            "load",
                            "--client",
                            c,
                            "-c",
                            &n_s,
                            "-n",
                            &gets_s,
                            "-t",
                            threads,
                            "--expect-bytes",
                            &big,
                            url,
                        ];
                        let c0 = procs::cpu_ticks(&p.pids());
                        let t0 = Instant::now();
                        let line = self.bins.loadgen(&args)?;
                        let secs = t0.elapsed().as_secs_f64();
                        let dt = procs::cpu_ticks(&p.pids()).saturating_sub(c0);
                        let bytes = number(&line, "bytes")? as u64;
                        if bytes != self.o.big * gets {
                            return Err(format!("{c} from {s}: {bytes} bytes"));
                        }
                        *ticks.entry(format!("{c}.{s}")).or_default() += dt;
                        *served.entry(format!("{c}.{s}")).or_default() += bytes;
                        gbps.entry(format!("{c}.{n}.{s}"))
                            .or_default()
                            .push(bytes as f64 / 1e9 / secs);
                    }
                }
            }
        }
        let tick = procs::clock_ticks();
        for (s, _, _) in servers {
            for c in BLOB_CLIENTS {
                for n in BLOB_CONNS {
                    r.set(
                        format!("blob{n}.{c}.{s}"),
                        median(&gbps[&format!("{c}.{n}.{s}")]),
                    );
                }
                let k = format!("{c}.{s}");
                let cpu = ticks[&k] as f64 / tick / (served[&k] as f64 / 1e9);
                r.set(format!("cpugb.{c}.{s}"), cpu);
                log(&format!(
                    "   {s}, {c}: 1 connection {:.2?} GB/s; 8 connections {:.2?} GB/s; {cpu:.3} CPU s/GB",
                    gbps[&format!("{c}.1.{s}")],
                    gbps[&format!("{c}.8.{s}")]
                ));
            }
        }
        Ok(())
    }

    /// Section 2: Manifest HEAD and GET by tag, 64 connections, interleaved (hello, stevedore,
    /// reference); the registries' RSS sampled every 100 ms meanwhile; wrk once as a cross-check.
    fn manifests(
        &self,
        hello: &Proc,
        st: &Proc,
        refr: &Proc,
        r: &mut Results,
    ) -> Result<(), String> {
        let samplers = [
            procs::RssSampler::start(st.pid()),
            procs::RssSampler::start(refr.pid()),
        ];
        let url = |p: &Proc| format!("{}/v2/bench/big/manifests/v1", p.url);
        let servers = [("hello", url(hello)), ("st", url(st)), ("ref", url(refr))];
        let secs = self.o.secs.to_string();
        log(&format!(
            "2. manifests by tag: HEAD and GET, 64 connections, {} × {}s each, interleaved (hello, stevedore, reference)",
            self.o.reps, self.o.secs
        ));
        for (_, u) in &servers {
            for m in ["HEAD", "GET"] {
                self.bins
                    .loadgen(&["load", "-c", "64", "-d", "1", "-m", m, "-H", ACCEPT, u])?;
            }
        }
        let mut runs: HashMap<String, Vec<f64>> = HashMap::new();
        let wrk = tools::on_path("wrk");
        for rep in 0..self.o.reps {
            for (s, u) in &servers {
                for m in ["HEAD", "GET"] {
                    let line = self
                        .bins
                        .loadgen(&["load", "-c", "64", "-d", &secs, "-m", m, "-H", ACCEPT, u])?;
                    for k in ["rps", "p50_us", "p99_us"] {
                        runs.entry(format!("{k}{m}.{s}"))
                            .or_default()
                            .push(number(&line, k)?);
                    }
                }
                if rep == 0 && wrk {
                    let out = Command::new("wrk")
                        .args([
                            "-t",
                            "1",
                            "-c",
                            "64",
                            "-d",
                            &format!("{}s", self.o.secs),
                            "-H",
                            ACCEPT,
                            u,
                        ])
                        .output()
                        .map_err(|e| format!("wrk: {e}"))?;
                    let text = String::from_utf8_lossy(&out.stdout);
                    if let Some(v) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Requests/sec:"))
                        .and_then(|v| v.trim().parse().ok())
                    {
                        r.set(format!("wrk.{s}"), v);
                        log(&format!("   {s} wrk GET: {v} req/s"));
                    }
                }
            }
        }
        for (k, v) in &runs {
            r.set(k.clone(), median(v));
        }
        for (s, _) in &servers {
            for m in ["HEAD", "GET"] {
                log(&format!(
                    "   {s} {m}: {:?} req/s; p50 {} µs, p99 {} µs",
                    runs[&format!("rps{m}.{s}")],
                    r.get(&format!("p50_us{m}.{s}")),
                    r.get(&format!("p99_us{m}.{s}"))
                ));
            }
        }
        for (sampler, s) in samplers.into_iter().zip(["st", "ref"]) {
            r.set(format!("rss64.{s}"), sampler.stop() as f64);
        }
        Ok(())
    }

    /// Section 5: Push: a distinct blob per repetition (the big blob with its own first line),
    /// monolithic (one `POST ?digest=` where the server stores it, else POST + `PUT ?digest=`)
    /// and chunked.
    fn push(&self, p: &Proc, s: &str, file: &Path, r: &mut Results) -> Result<(), String> {
        let line = self.bins.loadgen(&["probe", &p.url])?;
        let code = number(&line, "post_digest_status")?;
        let (mode, what) = if code == 201.0 {
            ("post", "POST ?digest=".to_owned())
        } else {
            (
                "post-put",
                format!("POST + PUT ?digest= (POST ?digest= → {code})"),
            )
        };
        log(&format!(
            "5. push {} MiB ({s}): monolithic [{what}], chunked ({} MiB PATCHes)",
            self.o.big / MIB,
            self.o.chunk / MIB
        ));
        r.text.insert(format!("monomode.{s}"), what);
        let file = file.display().to_string();
        let chunk = self.o.chunk.to_string();
        let (mut mono, mut chunked) = (Vec::new(), Vec::new());
        for rep in 1..=self.o.reps {
            for (m, runs) in [("mono", &mut mono), ("chunked", &mut chunked)] {
                let salt = format!("bench {m:<8} {rep:05}\n");
                let repo = format!("bench/push-{m}-{rep}");
                let mode = if m == "mono" { mode } else { "chunked" };
                let line = self.bins.loadgen(&[
                    "push-blob",
                    "--mode",
                    mode,
                    "--chunk",
                    &chunk,
                    "--salt",
                    &salt,
                    &p.url,
                    &repo,
                    &file,
                ])?;
                runs.push(number(&line, "mbps")?);
            }
        }
        r.set(format!("pushmono.{s}"), median(&mono));
        r.set(format!("pushchunked.{s}"), median(&chunked));
        log(&format!(
            "   monolithic {mono:.0?} MB/s; chunked {chunked:.0?} MB/s"
        ));
        Ok(())
    }

    /// Section 3: Cold pull over two links to the upstream: loopback (the mirror's own overhead
    /// at its worst: the upstream is faster than a disk write), and a simulated WAN (countproxy
    /// pacing all upstream bytes). "Straight from the upstream" goes over the same link. Each
    /// repetition starts a fresh mirror with an empty store.
    fn cold_pull(
        &self,
        up: &Proc,
        wan: &Proc,
        hwm: &mut HashMap<&str, u64>,
        r: &mut Results,
    ) -> Result<(), String> {
        // Each pull also reports the CPU time the whole machine spent during it (all processes
        // and kernel threads, in ms): on loopback a cold pull is bound by the CPUs, not a link.
        let tick_ms = 1000.0 / procs::clock_ticks();
        let pull = |base: &str| -> Result<(f64, f64, f64), String> {
            let busy = procs::machine_busy_ticks();
            let line = self.bins.loadgen(&["pull", base, "bench/cold", "v1"])?;
            let cpu = (procs::machine_busy_ticks() - busy) as f64 * tick_ms;
            Ok((
                number(&line, "seconds")?,
                number(&line, "ttfb_largest")?,
                cpu,
            ))
        };
        r.set("coldsha256", sha256_ms(self.o.layers.iter().sum()));
        for link in ["lo", "wan"] {
            let cold_reps = cold_reps(self.o);
            // On loopback the mirrors reach the upstream directly, as the direct pull does (no
            // counting proxy in between: an extra copy only the mirrors would pay).
            let (direct, remote) = if link == "lo" {
                (&up.url, &up.url)
            } else {
                (&wan.url, &wan.url)
            };
            log(&format!(
                "3. cold pull ({link}; manifest + 3 blobs, {} MiB): straight from the upstream and through each mirror, {cold_reps}×",
                self.o.layers.iter().sum::<u64>() / MIB
            ));
            pull(direct)?; // warm the upstream's page cache
            let mut t: HashMap<&str, Vec<f64>> = HashMap::new();
            let mut f: HashMap<&str, Vec<f64>> = HashMap::new();
            let mut c: HashMap<&str, Vec<f64>> = HashMap::new();
            for _ in 0..cold_reps {
                let (a, b, cpu) = pull(direct)?;
                t.entry("up").or_default().push(a);
                f.entry("up").or_default().push(b);
                c.entry("up").or_default().push(cpu);
                for (s, kind) in [("st", Kind::Stevedore), ("ref", Kind::Reference)] {
                    let dir = self.work.join(format!("mirror_{s}"));
                    let m = procs::registry(kind, &self.bins.stevedore, &dir, Some(remote))?;
                    let (a, b, cpu) = pull(&m.url)?;
                    t.entry(s).or_default().push(a);
                    f.entry(s).or_default().push(b);
                    c.entry(s).or_default().push(cpu);
                    let h = hwm.get_mut(s).expect("st and ref");
                    *h = (*h).max(procs::status_kb(m.pid(), "VmHWM"));
                    m.stop();
                }
            }
            for s in ["up", "st", "ref"] {
                r.set(format!("coldtotal{link}.{s}"), median(&t[s]));
                r.set(format!("coldttfb{link}.{s}"), median(&f[s]));
                r.set(format!("coldcpu{link}.{s}"), median(&c[s]));
                log(&format!(
                    "   {s}: total {:.3?} s; first byte of the largest blob {:.4?} s; machine CPU {:.0?} ms",
                    t[s], f[s], c[s]
                ));
            }
            for s in ["st", "ref"] {
                let k = |m: &str, s: &str| format!("{m}{link}.{s}");
                r.set(
                    k("coldratio", s),
                    ratio(r.get(&k("coldtotal", s)), r.get(&k("coldtotal", "up"))),
                );
                r.set(
                    k("ttfbratio", s),
                    ratio(r.get(&k("coldttfb", s)), r.get(&k("coldttfb", "up"))),
                );
            }
        }
        Ok(())
    }

    /// Section 4: 32 concurrent cold GETs of one blob through a fresh mirror; countproxy counts
    /// what the upstream sent.
    fn herd(
        &self,
        cp: &Proc,
        cp_ctl: &str,
        digest: &str,
        hwm: &mut HashMap<&str, u64>,
        r: &mut Results,
    ) -> Result<(), String> {
        let upstream_bytes = || control_line(cp_ctl).and_then(|l| number(&l, "upstream_to_client"));
        for (s, kind) in [("st", Kind::Stevedore), ("ref", Kind::Reference)] {
            log(&format!(
                "4. 32 concurrent cold GETs of one {} MiB blob through {}",
                self.o.herd / MIB,
                if s == "st" { "stevedore" } else { "reference" }
            ));
            let m = procs::registry(
                kind,
                &self.bins.stevedore,
                &self.work.join(format!("herd_{s}")),
                Some(&cp.url),
            )?;
            let b0 = upstream_bytes()?;
            let url = format!("{}/v2/bench/herd/blobs/{digest}", m.url);
            let herd = self.o.herd.to_string();
            let t0 = Instant::now();
            let (_, line, _) = self.bins.loadgen_any(&[
                "load",
                "-c",
                "32",
                "-n",
                "32",
                "-t",
                "2",
                "--expect-bytes",
                &herd,
                &url,
            ])?;
            let secs = t0.elapsed().as_secs_f64();
            // the mirror may still be finishing its fetch: wait until the count holds still
            let mut b1 = upstream_bytes()?;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let b = upstream_bytes()?;
                if b == b1 {
                    break;
                }
                b1 = b;
            }
            let ok = number(&line, "requests")? - number(&line, "errors")?;
            r.set(format!("herd.{s}"), (b1 - b0) / self.o.herd as f64);
            r.set(format!("herdok.{s}"), ok);
            r.set(format!("herdtime.{s}"), secs);
            let h = hwm.get_mut(s).expect("st and ref");
            *h = (*h).max(procs::status_kb(m.pid(), "VmHWM"));
            m.stop();
            log(&format!(
                "   upstream sent {:.3}× the blob; {ok}/32 clients got it whole in {secs:.2} s",
                r.get(&format!("herd.{s}"))
            ));
        }
        Ok(())
    }
}

/// `bench fleet`: the herd image on a reference upstream behind countproxy, then only the
/// fleet scenario; prints its section.
fn fleet_only(b: &Bench<'_>, work: &Path) -> Result<(), String> {
    let herd = work.join("herd");
    b.make_image(&herd, &[b.o.herd])?;
    let digest = image_digest(&herd, "l0")?;
    let up = procs::registry(Kind::Reference, &b.bins.stevedore, &work.join("up"), None)?;
    b.push_image(&up, "bench/herd", &herd)?;
    let (cp, addrs) = procs::with_addresses(
        b.bins.example("countproxy").args([
            "127.0.0.1:0",
            up.url.trim_start_matches("http://"),
            "127.0.0.1:0",
        ]),
        2,
        &work.join("countproxy.log"),
    )?;
    let mut r = Results::default();
    fleet::run(b.bins, work, &cp.url, &addrs[1], &digest, b.o.herd, &mut r)?;
    print!("{}", fleet::section(&r));
    drop((cp, up));
    Ok(())
}

/// countproxy's control line (`upstream_to_client=.. client_to_upstream=.. connections=..`).
fn control_line(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: countproxy\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    text.lines()
        .find(|l| l.starts_with("upstream_to_client="))
        .map(str::to_owned)
        .ok_or_else(|| format!("countproxy control said {text:?}"))
}

/// Cold pulls on each link: their first bytes scatter over tens of ms on either link, so
/// pulls get three times the repetitions (11 at the default 3).
pub fn cold_reps(o: &Opts) -> usize {
    o.reps * 3 + 2
}

/// Milliseconds one core takes to SHA-256 `bytes` bytes in 1 MiB updates (best of 3): what any
/// mirror that checks a digest before it serves the last byte spends at least on a cold pull.
fn sha256_ms(bytes: u64) -> f64 {
    use sha2::Digest;
    let chunk: Vec<u8> = (0..MIB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let mut h = sha2::Sha256::new();
            for _ in 0..bytes.div_ceil(MIB) {
                h.update(&chunk);
            }
            std::hint::black_box(h.finalize());
            started.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}
