//! Section 2b (issue 13): many idle keep-alive connections. A stevedore configured for a fleet
//! (`http.limits.maxconns` above the count, no per-client cap: every connection comes from
//! 127.0.0.1) holds `IDLE` connections that each made one request and then say nothing
//! (`loadgen idle`), while `loadgen load` runs the manifest GETs of section 2 beside them;
//! the same runs without them, interleaved, give the rate to compare with. RSS is sampled
//! every 100 ms; at the end every idle connection must still answer (none was closed).

use crate::procs::{self, Kind, Setup};
use crate::stats::{median, number};
use crate::{ACCEPT, Bench, Results, log};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// The idle connections held.
pub const IDLE: u64 = 10_000;

impl Bench<'_> {
    pub fn idle(&self, image: &Path, r: &mut Results) -> Result<(), String> {
        let need = IDLE + 1024; // each end is its own process
        let limit = open_files_limit();
        if limit < need {
            return Err(format!(
                "idle connections: the open-files limit is {limit}, {need} are needed (ulimit -n; bench/run.sh raises it to the hard limit)"
            ));
        }
        let setup = Setup {
            http: format!(
                "limits: {{maxconns: {}, maxconnsperclient: 0}}",
                IDLE + 1024
            ),
            ..Setup::default()
        };
        let st = procs::registry_with(
            Kind::Stevedore,
            &self.bins.stevedore,
            &self.work.join("idle_st"),
            &setup,
        )?;
        self.push_image(&st, "bench/big", image)?;
        let url = format!("{}/v2/bench/big/manifests/v1", st.url);
        let secs = self.o.secs.to_string();
        let rate = || -> Result<f64, String> {
            let line = self.bins.loadgen(&[
                "load", "-c", "64", "-d", &secs, "-m", "GET", "-H", ACCEPT, &url,
            ])?;
            number(&line, "rps")
        };
        log(&format!(
            "2b. {IDLE} idle keep-alive connections: manifest GETs, 64 connections, {} × {}s each with and without them",
            self.o.reps, self.o.secs
        ));
        self.bins.loadgen(&[
            "load", "-c", "64", "-d", "1", "-m", "GET", "-H", ACCEPT, &url,
        ])?;
        let rss_before = procs::status_kb(st.pid(), "VmRSS");
        let mut without = vec![rate()?];
        let mut idle = Command::new(self.bins.examples.join("loadgen"))
            .args([
                "idle",
                "-c",
                &IDLE.to_string(),
                "-m",
                "GET",
                "-H",
                ACCEPT,
                &url,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.work.join("idle.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("loadgen idle: {e}"))?;
        let mut out = BufReader::new(idle.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let opened = number(&line, "open").unwrap_or(0.0);
        log(&format!("   {}", line.trim()));
        let rss_open = procs::status_kb(st.pid(), "VmRSS");
        let mut with = Vec::new();
        let mut rss_max = rss_open;
        for rep in 0..self.o.reps {
            let sampler = procs::RssSampler::start(st.pid());
            with.push(rate()?);
            rss_max = rss_max.max(sampler.stop());
            if rep + 1 < self.o.reps {
                without.push(rate()?);
            }
        }
        // Wake the idle connections: each must still answer.
        let mut stdin = idle.stdin.take().expect("piped");
        let _ = stdin.write_all(b"check\n");
        drop(stdin);
        line.clear();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let _ = idle.wait();
        let held = number(&line, "held").unwrap_or(0.0);
        without.push(rate()?);
        log(&format!(
            "   without: {without:.0?} req/s; with: {with:.0?} req/s; RSS {} → {} MiB (max {} MiB); {}",
            rss_before / 1024,
            rss_open / 1024,
            rss_max / 1024,
            line.trim()
        ));
        r.set("idle.open", opened);
        r.set("idle.held", held);
        r.set("idle.rss", rss_max as f64);
        r.set("idle.rss_before", rss_before as f64);
        r.set("idle.with", median(&with));
        r.set("idle.without", median(&without));
        st.stop();
        Ok(())
    }
}

/// The soft limit on open files (`Max open files` of /proc/self/limits).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}
