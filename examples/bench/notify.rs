//! The `notify-stall` scenario (issue 14, "never blocks a request"): push and pull latency of
//! stevedore three ways in one run — no notifications; one endpoint whose receiver answers
//! 200 at once; the same endpoint at a receiver that accepts the connection, reads the request
//! and never answers (a stall). Prints BENCHMARKS.md-style lines and a target check.
//!
//! Owns the two receivers (threads in this process, std `TcpListener`s) and the measurement
//! rounds; starting stevedore is `procs.rs`'s, the client side is `loadgen`'s (`push-blob`,
//! `push-image`, `load`). It must not write BENCHMARKS.md (the full run owns that file).
//!
//! The three servers run at the same time and every round measures them one after the other,
//! the order rotating each round, so whatever else runs on the machine weighs on all three.

use crate::procs::{self, Kind, Proc, Setup};
use crate::stats::{fixed, median, number};
use crate::{ACCEPT, Bins, Opts, log};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Pushes per server per round (blob pushes, and image pushes).
const PUSHES: usize = 50;
/// Connections of the pull load.
const CONNS: &str = "8";
/// The layer of the pushed image (bytes); the blob pushes use the same file, salted.
const LAYER: u64 = 64 * 1024;

/// How a receiver treats a delivery.
#[derive(Clone, Copy)]
enum Receiver {
    /// Reads the request, answers `200 OK` at once, keeps the connection.
    Accept,
    /// Reads whatever comes and never answers.
    Stall,
}

/// Starts a receiver thread on 127.0.0.1:0; returns its URL and a counter: requests answered
/// (`Accept`) or connections accepted (`Stall`). The thread (and each connection's thread)
/// lives until the process exits: the runner exits right after this scenario.
fn receiver(mode: Receiver) -> Result<(String, Arc<AtomicU64>), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("receiver: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || match mode {
                Receiver::Accept => answer(conn, &c),
                Receiver::Stall => {
                    c.fetch_add(1, Ordering::Relaxed);
                    std::io::copy(&mut &conn, &mut std::io::sink()).map(drop)
                }
            });
        }
    });
    Ok((format!("http://{addr}/events"), count))
}

/// HTTP/1.1 keep-alive: for each request (head, then `Content-Length` bytes), `200 OK`.
fn answer(mut conn: TcpStream, answered: &AtomicU64) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + len);
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?;
        answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `notifications:` section for one endpoint at `url`. The timeout is longer than the run,
/// so the stalled endpoint's one attempt never ends: its queue fills and then overflows
/// (dropoldest), the worst case for the request path.
fn notifications(url: &str) -> String {
    format!(
        "notifications:\n  endpoints:\n    - name: bench\n      url: {url}\n      \
         timeout: 600s\n      threshold: 5\n      backoff: 1s\n"
    )
}

/// The `q`-quantile of `v` (nearest rank); NaN for none.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// One server's samples: push latencies (s), and per round the pull p50/p99 (µs).
#[derive(Default)]
struct Samples {
    blob_push: Vec<f64>,
    image_push: Vec<f64>,
    manifest: [Vec<f64>; 2],
    blob: [Vec<f64>; 2],
    errors: f64,
}

const SETUPS: [&str; 3] = ["no notifications", "receiver answers", "receiver stalls"];

/// Runs the scenario; returns its text (lines of BENCHMARKS.md's table and the target check).
pub fn run(bins: &Bins, o: &Opts, work: &Path) -> Result<String, String> {
    let image = work.join("notify-image");
    bins.loadgen(&[
        "make-image",
        &image.display().to_string(),
        &LAYER.to_string(),
    ])?;
    let layer = image.join("l0").display().to_string();
    let (accept, answered) = receiver(Receiver::Accept)?;
    let (stall, stalled) = receiver(Receiver::Stall)?;
    let urls = [accept, stall];
    log("notify-stall: starting stevedore ×3 (none, answering receiver, stalled receiver)");
    let servers: Vec<Proc> = [None, Some(&urls[0]), Some(&urls[1])]
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let setup = Setup {
                sections: url.map_or_else(String::new, |u| notifications(u)),
                ..Setup::default()
            };
            let dir = work.join(format!("notify{i}"));
            procs::registry_with(Kind::Stevedore, &bins.stevedore, &dir, &setup)
        })
        .collect::<Result<_, _>>()?;
    for p in &servers {
        bins.loadgen(&[
            "push-image",
            &p.url,
            "bench/notify",
            "v1",
            &image.display().to_string(),
        ])?;
    }
    let digest = std::fs::read_to_string(image.join("digests"))
        .map_err(|e| e.to_string())?
        .lines()
        .find_map(|l| l.strip_prefix("l0 "))
        .and_then(|r| r.split(' ').next())
        .map(str::to_owned)
        .ok_or("no l0 in the image's digests")?;
    let secs = fixed(o.secs, 1);
    let mut s: Vec<Samples> = (0..3).map(|_| Samples::default()).collect();
    log(&format!(
        "notify-stall: {} rounds; each: {PUSHES} blob pushes (64 KiB), {PUSHES} image pushes, \
         manifest GET and blob GET load ({CONNS} conns, {secs} s) per server",
        o.reps
    ));
    for round in 0..o.reps {
        // The order rotates each round, so no setup is always measured last.
        for j in 0..servers.len() {
            let i = (round + j) % servers.len();
            let (p, t) = (&servers[i], &mut s[i]);
            for k in 0..PUSHES {
                let salt = format!("r{round}k{k}");
                let line =
                    bins.loadgen(&["push-blob", "--salt", &salt, &p.url, "bench/notify", &layer])?;
                t.blob_push.push(number(&line, "seconds")?);
                let tag = format!("r{round}k{k}");
                let started = Instant::now();
                bins.loadgen(&[
                    "push-image",
                    &p.url,
                    "bench/notify",
                    &tag,
                    &image.display().to_string(),
                ])?;
                t.image_push.push(started.elapsed().as_secs_f64());
            }
            let targets = [
                (
                    format!("{}/v2/bench/notify/manifests/v1", p.url),
                    &mut t.manifest,
                ),
                (
                    format!("{}/v2/bench/notify/blobs/{digest}", p.url),
                    &mut t.blob,
                ),
            ];
            for (url, out) in targets {
                let args = [
                    "load", "-c", CONNS, "-t", "2", "-d", &secs, "-H", ACCEPT, &url,
                ];
                let line = bins.loadgen(&args)?;
                t.errors += number(&line, "errors")?;
                out[0].push(number(&line, "p50_us")?);
                out[1].push(number(&line, "p99_us")?);
            }
        }
    }
    drop(servers);
    // The stalled server's log (level warn) names its queue overflows.
    let log = std::fs::read_to_string(work.join("notify2/log")).unwrap_or_default();
    let drops: Vec<&str> = log.lines().filter(|l| l.contains("drop")).collect();
    let seen = format!(
        "answering receiver: {} events answered; stalled receiver: {} connections held, \
         {} log lines about dropped events{}",
        answered.load(Ordering::Relaxed),
        stalled.load(Ordering::Relaxed),
        drops.len(),
        drops
            .first()
            .map_or_else(String::new, |l| format!(", first: {}", l.trim())),
    );
    Ok(report(&s, &seen))
}

/// Within the threshold: `x` at most 10% above `base`, or at most 1 ms above it.
fn within(x_ms: f64, base_ms: f64) -> bool {
    x_ms <= base_ms * 1.10 || x_ms <= base_ms + 1.0
}

fn report(s: &[Samples], seen: &str) -> String {
    let ms = |v: f64| fixed(v, 2);
    let mut lines = vec![
        format!(
            "| measurement (ms, p50 / p99) | {} | {} | {} |",
            SETUPS[0], SETUPS[1], SETUPS[2]
        ),
        "|---|---:|---:|---:|".to_owned(),
    ];
    // (name, p50 and p99 in ms for each setup)
    let mut rows: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let push = |v: &[f64]| (quantile(v, 0.5) * 1e3, quantile(v, 0.99) * 1e3);
    rows.push((
        "blob push, 64 KiB, POST + PUT (loadgen push-blob)".into(),
        s.iter().map(|t| push(&t.blob_push)).collect(),
    ));
    rows.push((
        "image push, 64 KiB layer + config + manifest, whole loadgen process".into(),
        s.iter().map(|t| push(&t.image_push)).collect(),
    ));
    let pull = |v: &[Vec<f64>; 2]| (median(&v[0]) / 1e3, median(&v[1]) / 1e3);
    rows.push((
        format!("manifest GET by tag, {CONNS} conns"),
        s.iter().map(|t| pull(&t.manifest)).collect(),
    ));
    rows.push((
        format!("blob GET, 64 KiB, {CONNS} conns"),
        s.iter().map(|t| pull(&t.blob)).collect(),
    ));
    let mut ok = true;
    let mut worst = String::new();
    for (name, v) in &rows {
        let cells: Vec<String> = v
            .iter()
            .map(|(p50, p99)| format!("{} / {}", ms(*p50), ms(*p99)))
            .collect();
        lines.push(format!("| {name} | {} |", cells.join(" | ")));
        let (base, stall) = (v[0].1, v[2].1);
        if !within(stall, base) {
            ok = false;
            worst.push_str(&format!("; {name}: {} vs {} ms", ms(stall), ms(base)));
        }
    }
    let errors: Vec<String> = s.iter().map(|t| t.errors.to_string()).collect();
    lines.push(String::new());
    lines.push(format!(
        "- {} stalled receiver adds no latency: every p99 above within 10% (or 1 ms) of no \
         notifications{worst} (load errors: {})",
        if ok { "✓" } else { "✗" },
        errors.join(" / ")
    ));
    lines.push(format!("- {seen}"));
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_threshold() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert!(quantile(&[], 0.5).is_nan());
        assert!(within(1.9, 1.0)); // 1 ms slack
        assert!(within(21.0, 20.0)); // 5%
        assert!(!within(23.0, 20.0)); // 15% and 3 ms
    }
}
