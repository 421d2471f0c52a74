//! The S3 section (issue 16): stevedore and the reference registry with their blobs in a
//! SeaweedFS bucket (`weed mini` on loopback, started here as the integration tests start it),
//! next to the same two on the filesystem, measured in the same run: warm blob GETs (hyper
//! loadgen, 1 and 8 connections) streamed through the registry (`storage.redirect.disable:
//! true`); the same GETs answered with a redirect to a presigned URL of the bucket (curl
//! following it, with curl streamed through beside it); and the cold pull of a mirror over
//! loopback. The reference is distribution 2.8's `s3-aws` driver on the same bucket under
//! its own `rootdirectory`.
//!
//! Must not: start or stop the filesystem registries (the caller's), or touch the upstream.

use crate::procs::{self, Kind, Proc, Setup};
use crate::stats::{fixed, median, number, percent, ratio};
use crate::{Bench, MIB, Opts, Results, log};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "stevedore-bench";
const SECRET_KEY: &str = "stevedore-bench-secret";
const REGION: &str = "us-east-1";

/// The registries compared: stevedore and the reference, each on the filesystem and on S3.
const STORES: [&str; 4] = ["stfs", "sts3", "reffs", "refs3"];

/// `storage` keys for one registry on the bucket under `root`; `redirect` false streams blob
/// GETs through the registry.
fn storage(kind: Kind, endpoint: &str, root: &str, dir: &Path, redirect: bool) -> String {
    let cache = match kind {
        // stevedore's local cache (index, staging, upload sessions) in front of the bucket
        Kind::Stevedore => format!(", cachedirectory: {}/data", dir.display()),
        Kind::Reference => String::new(),
    };
    format!(
        "s3: {{region: {REGION}, regionendpoint: {endpoint}, bucket: {BUCKET}, \
         accesskey: {ACCESS_KEY}, secretkey: {SECRET_KEY}, rootdirectory: {root}, \
         secure: false, v4auth: true, chunksize: 10485760{cache}}}\n  \
         redirect: {{disable: {}}}",
        !redirect
    )
}

/// Runs the section; `st` and `refr` are the filesystem registries holding `bench/big`,
/// `remote` the upstream (countproxy over loopback) holding `bench/cold`.
pub fn run(
    b: &Bench<'_>,
    st: &Proc,
    refr: &Proc,
    big: &Path,
    digest: &str,
    remote: &str,
    r: &mut Results,
) -> Result<(), String> {
    let o = b.o;
    let dir = b.work.join("s3");
    log("6. S3: starting SeaweedFS (weed mini)");
    let weed = procs::weed(&dir.join("weed"), BUCKET, ACCESS_KEY, SECRET_KEY)?;
    // `keep`: a restart on the same local directory and bucket prefix.
    let start = |kind, name: &str, redirect: bool, keep: bool| {
        let d = dir.join(name);
        let setup = Setup {
            storage: storage(kind, &weed.url, &format!("/{name}"), &d, redirect),
            keep,
            ..Setup::default()
        };
        procs::registry_with(kind, &b.bins.stevedore, &d, &setup)
    };
    let sts3 = start(Kind::Stevedore, "sts3", false, false)?;
    let refs3 = start(Kind::Reference, "refs3", false, false)?;
    log(&format!(
        "   pushing the {} MiB blob to both through S3",
        o.big / MIB
    ));
    for p in [&sts3, &refs3] {
        b.push_image(p, "bench/big", big)?;
    }
    let path = format!("/v2/bench/big/blobs/{digest}");
    let servers: [(&str, &Proc); 4] = [
        ("stfs", st),
        ("sts3", &sts3),
        ("reffs", refr),
        ("refs3", &refs3),
    ];
    warm(b, &servers, &path, r)?;
    // Redirects: two more registries on the bucket, pushed to with redirects off (a push
    // checks its blob with HEAD, which a redirecting registry answers 307), then restarted on
    // the same stores with storage.redirect on (a stevedore's local cache directory is its
    // own: two cannot share one).
    let mut redirecting = Vec::new();
    for (kind, name) in [(Kind::Stevedore, "sts3r"), (Kind::Reference, "refs3r")] {
        let p = start(kind, name, false, false)?;
        b.push_image(&p, "bench/big", big)?;
        p.stop();
        redirecting.push(start(kind, name, true, true)?);
    }
    let (stredir, refredir) = (&redirecting[0], &redirecting[1]);
    let curl_servers: [(&str, &Proc); 3] =
        [("sts3", &sts3), ("sts3r", stredir), ("refs3r", refredir)];
    redirects(b, &curl_servers, &path, r)?;
    drop((sts3, refs3, redirecting));
    cold(b, &weed.url, remote, r)?;
    weed.stop();
    Ok(())
}

/// Warm blob GETs, hyper loadgen: 1 connection × 4 GETs and 8 connections × 1 GET each,
/// repetitions interleaved over the servers; sets `s3blob{1,8}.{server}` (GB/s, median).
fn warm(
    b: &Bench<'_>,
    servers: &[(&str, &Proc)],
    path: &str,
    r: &mut Results,
) -> Result<(), String> {
    let big = b.o.big.to_string();
    log(&format!(
        "6. S3: warm blob GET, {} MiB, hyper loadgen, 1 and 8 connections, {}×, interleaved: {:?}",
        b.o.big / MIB,
        b.o.reps,
        servers.iter().map(|s| s.0).collect::<Vec<_>>()
    ));
    for (_, p) in servers {
        let url = format!("{}{path}", p.url);
        b.bins
            .loadgen(&["load", "-c", "1", "-n", "1", "--expect-bytes", &big, &url])?;
    }
    let mut runs: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for _ in 0..b.o.reps {
        for (s, p) in servers {
            let url = format!("{}{path}", p.url);
            for n in [1u64, 8] {
                let gets = if n == 1 { 4 } else { n };
                let (n_s, gets_s) = (n.to_string(), gets.to_string());
                let t = if n == 1 { "1" } else { "2" };
                let args = [
                    "load",
                    "-c",
                    &n_s,
                    "-n",
                    &gets_s,
                    "-t",
                    t,
                    "--expect-bytes",
                    &big,
                    &url,
                ];
                let t0 = Instant::now();
                let line = b.bins.loadgen(&args)?;
                let secs = t0.elapsed().as_secs_f64();
                let bytes = number(&line, "bytes")?;
                if bytes as u64 != b.o.big * gets {
                    return Err(format!("{s}: {bytes} bytes from {url}"));
                }
                runs.entry(format!("s3blob{n}.{s}"))
                    .or_default()
                    .push(bytes / 1e9 / secs);
            }
        }
    }
    for (k, v) in &runs {
        r.set(k.clone(), median(v));
    }
    for (s, _) in servers {
        log(&format!(
            "   {s}: 1 connection {:.2?} GB/s; 8 connections {:.2?} GB/s",
            runs[&format!("s3blob1.{s}")],
            runs[&format!("s3blob8.{s}")]
        ));
    }
    Ok(())
}

/// Blob GETs with curl following redirects (`-L`): 1 process × 4 GETs and 8 processes × 1
/// GET; sets `s3curl{1,8}.{server}` (GB/s, median).
fn redirects(
    b: &Bench<'_>,
    servers: &[(&str, &Proc)],
    path: &str,
    r: &mut Results,
) -> Result<(), String> {
    log(&format!(
        "6. S3: blob GET with curl -L (redirect to a presigned URL, and streamed), {}×: {:?}",
        b.o.reps,
        servers.iter().map(|s| s.0).collect::<Vec<_>>()
    ));
    for (_, p) in servers {
        curl_gets(&format!("{}{path}", p.url), 1, 1, b.o.big)?;
    }
    let mut runs: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for _ in 0..b.o.reps {
        for (s, p) in servers {
            for (n, gets) in [(1, 4), (8, 1)] {
                let gbps = curl_gets(&format!("{}{path}", p.url), n, gets, b.o.big)?;
                runs.entry(format!("s3curl{n}.{s}")).or_default().push(gbps);
            }
        }
    }
    for (k, v) in &runs {
        r.set(k.clone(), median(v));
    }
    for (s, _) in servers {
        log(&format!(
            "   {s}: 1 connection {:.2?} GB/s; 8 connections {:.2?} GB/s",
            runs[&format!("s3curl1.{s}")],
            runs[&format!("s3curl8.{s}")]
        ));
    }
    Ok(())
}

/// `procs` curl processes at once, each GETting `url` `gets` times (one keep-alive
/// connection to each host, redirects followed); checks every status and size; GB/s.
fn curl_gets(url: &str, procs: usize, gets: usize, size: u64) -> Result<f64, String> {
    let t0 = Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|_| {
            let mut cmd = Command::new("curl");
            cmd.args(["-sSL", "-w", "%{http_code} %{size_download}\\n"]);
            for _ in 0..gets {
                cmd.args(["-o", "/dev/null", url]);
            }
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("curl: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut bytes = 0u64;
    for child in children {
        let out = child.wait_with_output().map_err(|e| format!("curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let ok = text.lines().filter(|l| *l == format!("200 {size}")).count();
        if !out.status.success() || ok != gets {
            return Err(format!(
                "curl -L {url}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        bytes += size * gets as u64;
    }
    Ok(bytes as f64 / 1e9 / t0.elapsed().as_secs_f64())
}

/// The cold pull over loopback (manifest + 3 blobs) straight from the upstream and through a
/// fresh mirror of each kind on each store, `reps + 2` times (each mirror S3-backed under a
/// new `rootdirectory`, so the bucket never has the image); sets `s3cold.{server}` (s,
/// median) with `up` for the direct pull.
fn cold(b: &Bench<'_>, endpoint: &str, remote: &str, r: &mut Results) -> Result<(), String> {
    let reps = b.o.reps + 2;
    log(&format!(
        "6. S3: cold pull (loopback; {} MiB): straight from the upstream and through mirrors on the filesystem and on S3, {reps}×",
        b.o.layers.iter().sum::<u64>() / MIB
    ));
    let pull = |base: &str| -> Result<f64, String> {
        let line = b.bins.loadgen(&["pull", base, "bench/cold", "v1"])?;
        number(&line, "seconds")
    };
    pull(remote)?;
    let mut t: std::collections::HashMap<&str, Vec<f64>> = Default::default();
    for rep in 0..reps {
        t.entry("up").or_default().push(pull(remote)?);
        for s in STORES {
            let kind = if s.starts_with("st") {
                Kind::Stevedore
            } else {
                Kind::Reference
            };
            let d = b.work.join(format!("s3/cold_{s}"));
            let setup = Setup {
                remote: Some(remote),
                storage: if s.ends_with("s3") {
                    storage(kind, endpoint, &format!("/cold-{s}-{rep}"), &d, false)
                } else {
                    String::new()
                },
                ..Setup::default()
            };
            let m = procs::registry_with(kind, &b.bins.stevedore, &d, &setup)?;
            t.entry(s).or_default().push(pull(&m.url)?);
            m.stop();
        }
    }
    for (s, v) in &t {
        r.set(format!("s3cold.{s}"), median(v));
        log(&format!("   {s}: total {v:.3?} s"));
    }
    Ok(())
}

/// The report's lines: measurement | stevedore | reference | ceiling | ratios | ≥ ref.
pub fn rows(o: &Opts, r: &Results) -> Vec<[String; 6]> {
    let g = |k: &str| r.get(k);
    let better = |higher: bool, st: f64, rf: f64| {
        let ok = if higher { st >= rf } else { st <= rf };
        if ok { "✓" } else { "✗" }.to_owned()
    };
    let mut rows = Vec::new();
    for n in [1, 8] {
        let k = |s: &str| g(&format!("s3blob{n}.{s}"));
        let conns = connections(n);
        rows.push([
            format!(
                "S3 (SeaweedFS): warm blob GET, {} MiB, hyper loadgen, {conns}, streamed through (GB/s)",
                o.big / MIB
            ),
            fixed(k("sts3"), 2),
            fixed(k("refs3"), 2),
            format!("{} (stevedore, filesystem)", fixed(k("stfs"), 2)),
            format!(
                "{}× ref; {}% of stevedore on the filesystem; reference on the filesystem {}",
                fixed(ratio(k("sts3"), k("refs3")), 2),
                percent(k("sts3"), k("stfs")),
                fixed(k("reffs"), 2)
            ),
            better(true, k("sts3"), k("refs3")),
        ]);
    }
    for n in [1, 8] {
        let k = |s: &str| g(&format!("s3curl{n}.{s}"));
        let conns = connections(n);
        rows.push([
            format!(
                "S3 (SeaweedFS): blob GET, {} MiB, curl -L, {conns}, redirect to a presigned URL (GB/s)",
                o.big / MIB
            ),
            fixed(k("sts3r"), 2),
            fixed(k("refs3r"), 2),
            format!("{} (stevedore streamed, curl)", fixed(k("sts3"), 2)),
            format!("{}× ref", fixed(ratio(k("sts3r"), k("refs3r")), 2)),
            better(true, k("sts3r"), k("refs3r")),
        ]);
    }
    let k = |s: &str| g(&format!("s3cold.{s}"));
    rows.push([
        format!(
            "S3 (SeaweedFS): cold pull, {} MiB image, loopback: total (s)",
            o.layers.iter().sum::<u64>() / MIB
        ),
        fixed(k("sts3"), 3),
        fixed(k("refs3"), 3),
        format!("{} (upstream)", fixed(k("up"), 3)),
        format!(
            "{} / {}× upstream; filesystem: {} s / {} s",
            fixed(ratio(k("sts3"), k("up")), 2),
            fixed(ratio(k("refs3"), k("up")), 2),
            fixed(k("stfs"), 3),
            fixed(k("reffs"), 3)
        ),
        better(false, k("sts3"), k("refs3")),
    ]);
    rows
}

fn connections(n: u64) -> String {
    if n == 1 {
        "1 connection".to_owned()
    } else {
        format!("{n} connections")
    }
}
