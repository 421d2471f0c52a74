//! BENCHMARKS.md: the results table, the targets, the large cache section and the text around
//! them, in the form `bench/run.sh` has always written; and what the run measured (the commit,
//! the machine, the versions).

use crate::stats::{fixed, number, percent, ratio};
use crate::{BLOB_CLIENTS, BLOB_CONNS, Bins, MIB, Opts, Results, client_name};
use std::path::Path;
use std::process::Command;

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn utc_now() -> String {
    output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
}

/// The commit measured: `git rev-parse --short HEAD`, plus "dirty" when the tree has
/// uncommitted changes; with `--prebuilt`, when the binary was built.
pub fn revision(root: &Path, bins: &Bins, prebuilt: bool) -> String {
    let git = |args: &[&str]| Command::new("git").arg("-C").arg(root).args(args).output();
    let mut rev = match git(&["rev-parse", "--short", "HEAD"]) {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    };
    if git(&["diff", "--quiet", "HEAD"]).is_ok_and(|o| !o.status.success()) {
        rev.push_str(" dirty");
    }
    if prebuilt {
        let built = output(
            Command::new("date")
                .args(["-u", "+%Y-%m-%d %H:%M UTC", "-r"])
                .arg(&bins.stevedore),
        );
        rev = format!("binary built {built} (HEAD now: {rev})");
    }
    rev
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

/// ✓ when stevedore is at least as good as the reference.
fn better(higher: bool, st: f64, rf: f64) -> &'static str {
    mark(if higher { st >= rf } else { st <= rf })
}

fn tls_name(proto: &str) -> &'static str {
    if proto == "h2" { "h2" } else { "HTTP/1.1" }
}

fn mib(kb: f64) -> String {
    fixed(kb / 1024.0, 1)
}

fn ms(secs: f64) -> String {
    fixed(secs * 1000.0, 1)
}

/// Rows of the results table and lines of the targets list.
#[derive(Default)]
struct Report {
    rows: Vec<String>,
    targets: Vec<String>,
}

impl Report {
    /// what | stevedore | reference | ceiling | st/ref, fractions | ≥ ref
    fn row(&mut self, cells: [&str; 6]) {
        self.rows.push(format!("| {} |", cells.join(" | ")));
    }

    fn target(&mut self, ok: bool, text: &str) {
        self.targets.push(format!("- {} {text}", mark(ok)));
    }

    fn table(&self) -> String {
        let mut t = String::from(
            "| measurement | stevedore | reference | ceiling | ratios | ≥ ref |\n|---|---:|---:|---:|---|:-:|",
        );
        for r in &self.rows {
            t.push('\n');
            t.push_str(r);
        }
        t
    }

    /// The warm blob lines: throughput per client and connections, CPU per GB per client.
    fn blob_rows(&mut self, o: &Opts, r: &Results) {
        let big = o.big / MIB;
        for c in BLOB_CLIENTS {
            for n in BLOB_CONNS {
                let g = |s: &str| r.get(&format!("blob{n}.{c}.{s}"));
                let (st, rf, ng) = (g("st"), g("ref"), g("nginx"));
                let conns = if n == 1 {
                    "1 connection".to_owned()
                } else {
                    format!("{n} connections")
                };
                self.row([
                    &format!(
                        "warm blob GET, {big} MiB, {}, {conns} (GB/s)",
                        client_name(c)
                    ),
                    &fixed(st, 2),
                    &fixed(rf, 2),
                    &format!("{} (nginx)", fixed(ng, 2)),
                    &format!(
                        "{}× ref; {}% / {}% of nginx",
                        fixed(ratio(st, rf), 2),
                        percent(st, ng),
                        percent(rf, ng)
                    ),
                    better(true, st, rf),
                ]);
            }
        }
        for c in BLOB_CLIENTS {
            let g = |s: &str| r.get(&format!("cpugb.{c}.{s}"));
            let (st, rf, ng) = (g("st"), g("ref"), g("nginx"));
            self.row([
                &format!(
                    "server CPU per GB served, warm blob GETs, {} (s/GB)",
                    client_name(c)
                ),
                &fixed(st, 3),
                &fixed(rf, 3),
                &format!("{} (nginx)", fixed(ng, 3)),
                &format!("{}× ref", fixed(ratio(st, rf), 2)),
                better(false, st, rf),
            ]);
        }
    }

    /// Issue 13: ≥ 1.0× the reference and ≥ 95% of nginx on every line; CPU ≤ 0.5× the
    /// reference's.
    fn blob_targets(&mut self, r: &Results) {
        for c in BLOB_CLIENTS {
            for n in BLOB_CONNS {
                let g = |s: &str| r.get(&format!("blob{n}.{c}.{s}"));
                let (x, y) = (ratio(g("st"), g("ref")), ratio(g("st"), g("nginx")));
                let conns = if n == 1 {
                    "1 connection".to_owned()
                } else {
                    format!("{n} connections")
                };
                self.target(
                    x >= 1.0 && y >= 0.95,
                    &format!(
                        "warm blob GET, {}, {conns}: ≥ 1.0× the reference and ≥ 95% of nginx: {}×, {}%",
                        client_name(c),
                        fixed(x, 2),
                        percent(g("st"), g("nginx"))
                    ),
                );
            }
            let x = ratio(
                r.get(&format!("cpugb.{c}.st")),
                r.get(&format!("cpugb.{c}.ref")),
            );
            self.target(
                x <= 0.5,
                &format!(
                    "server CPU per GB ≤ half the reference's, {}: {}×",
                    client_name(c),
                    fixed(x, 2)
                ),
            );
        }
    }
}

impl Report {
    fn manifest_rows(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        for m in ["HEAD", "GET"] {
            let (st, rf, hello) = (
                g(&format!("rps{m}.st")),
                g(&format!("rps{m}.ref")),
                g(&format!("rps{m}.hello")),
            );
            self.row([
                &format!("manifest {m} by tag, 64 conns (req/s)"),
                &fixed(st, 0),
                &fixed(rf, 0),
                &format!("{} (hello)", fixed(hello, 0)),
                &format!(
                    "{}× ref; {}% / {}% of hello",
                    fixed(ratio(st, rf), 1),
                    percent(st, hello),
                    percent(rf, hello)
                ),
                better(true, st, rf),
            ]);
            let lat = |s: &str| {
                format!(
                    "{} / {}",
                    fixed(g(&format!("p50_us{m}.{s}")) / 1000.0, 2),
                    fixed(g(&format!("p99_us{m}.{s}")) / 1000.0, 2)
                )
            };
            self.row([
                &format!("manifest {m} p50 / p99 (ms)"),
                &lat("st"),
                &lat("ref"),
                &format!("{} (hello)", lat("hello")),
                "",
                better(
                    false,
                    g(&format!("p99_us{m}.st")),
                    g(&format!("p99_us{m}.ref")),
                ),
            ]);
        }
        if r.n.contains_key("wrk.st") && r.n.contains_key("wrk.ref") {
            let (st, rf, hello) = (g("wrk.st"), g("wrk.ref"), g("wrk.hello"));
            self.row([
                "manifest GET, wrk cross-check (req/s)",
                &fixed(st, 0),
                &fixed(rf, 0),
                &format!("{} (hello)", fixed(hello, 0)),
                &format!("{}% / {}% of hello", percent(st, hello), percent(rf, hello)),
                better(true, st, rf),
            ]);
        }
    }

    fn cold_rows(&mut self, o: &Opts, r: &Results) {
        let g = |k: &str| r.get(k);
        let image = o.layers.iter().sum::<u64>() / MIB;
        let wan = format!("{} MB/s link", fixed(o.wan_rate as f64 / 1e6, 0));
        for link in ["lo", "wan"] {
            let what = if link == "lo" {
                "loopback".to_owned()
            } else {
                wan.clone()
            };
            let k = |m: &str, s: &str| g(&format!("{m}{link}.{s}"));
            self.row([
                &format!("cold pull, {image} MiB image, {what}: total (s)"),
                &fixed(k("coldtotal", "st"), 3),
                &fixed(k("coldtotal", "ref"), 3),
                &format!("{} (upstream)", fixed(k("coldtotal", "up"), 3)),
                &format!(
                    "{} / {}× upstream",
                    fixed(k("coldratio", "st"), 2),
                    fixed(k("coldratio", "ref"), 2)
                ),
                better(false, k("coldtotal", "st"), k("coldtotal", "ref")),
            ]);
            self.row([
                &format!(
                    "cold pull, {what}: first byte of the {} MiB blob (ms)",
                    o.layers[0] / MIB
                ),
                &ms(k("coldttfb", "st")),
                &ms(k("coldttfb", "ref")),
                &format!("{} (upstream)", ms(k("coldttfb", "up"))),
                &format!(
                    "{} / {}× upstream",
                    fixed(k("ttfbratio", "st"), 2),
                    fixed(k("ttfbratio", "ref"), 2)
                ),
                better(false, k("coldttfb", "st"), k("coldttfb", "ref")),
            ]);
            if link == "lo" && r.n.contains_key("coldcpulo.st") {
                self.cold_cpu_row(image, r);
            }
        }
    }

    /// What bounds a cold pull over loopback: every process on the machine shares its CPUs, so
    /// a pull cannot take less than the CPU time the machine spent on it ÷ the CPUs.
    fn cold_cpu_row(&mut self, image: u64, r: &Results) {
        let g = |k: &str| r.get(k);
        let cpus = cpus() as f64;
        let (st, rf, up) = (g("coldcpulo.st"), g("coldcpulo.ref"), g("coldcpulo.up"));
        self.row([
            "cold pull, loopback: CPU time of the whole machine per pull (ms)",
            &fixed(st, 0),
            &fixed(rf, 0),
            &format!("{} (upstream)", fixed(up, 0)),
            &format!(
                "÷ {cpus} CPUs: {} / {} / {} s; SHA-256 of the {image} MiB on one core: {} ms",
                fixed(st / cpus / 1000.0, 3),
                fixed(rf / cpus / 1000.0, 3),
                fixed(up / cpus / 1000.0, 3),
                fixed(g("coldsha256"), 0)
            ),
            better(false, st, rf),
        ]);
    }

    fn herd_rows(&mut self, o: &Opts, r: &Results) {
        let g = |k: &str| r.get(k);
        self.row([
            &format!(
                "32 concurrent cold GETs of {} MiB: upstream bytes ÷ blob",
                o.herd / MIB
            ),
            &format!("{}×", fixed(g("herd.st"), 3)),
            &format!("{}×", fixed(g("herd.ref"), 3)),
            "1.000×",
            &format!(
                "{}/32 and {}/32 whole; {} s / {} s",
                g("herdok.st"),
                g("herdok.ref"),
                fixed(g("herdtime.st"), 2),
                fixed(g("herdtime.ref"), 2)
            ),
            better(false, g("herd.st"), g("herd.ref")),
        ]);
    }

    fn push_rows(&mut self, o: &Opts, r: &Results) {
        let g = |k: &str| r.get(k);
        let big = o.big / MIB;
        let text = |k: &str| r.text.get(k).cloned().unwrap_or_default();
        self.row([
            &format!("push {big} MiB monolithic (MB/s)"),
            &fixed(g("pushmono.st"), 0),
            &fixed(g("pushmono.ref"), 0),
            "",
            &format!(
                "stevedore: {}; reference: {}",
                text("monomode.st"),
                text("monomode.ref")
            ),
            better(true, g("pushmono.st"), g("pushmono.ref")),
        ]);
        self.row([
            &format!(
                "push {big} MiB chunked, {} MiB PATCHes (MB/s)",
                o.chunk / MIB
            ),
            &fixed(g("pushchunked.st"), 0),
            &fixed(g("pushchunked.ref"), 0),
            "",
            "",
            better(true, g("pushchunked.st"), g("pushchunked.ref")),
        ]);
    }

    fn memory_rows(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        for (what, k, note) in [
            (
                "peak RSS, plain registry, whole run (MiB)",
                "hwm",
                "VmHWM; the reference is Go (GC heap)",
            ),
            (
                "peak RSS, mirror, cold pulls and 32 misses (MiB)",
                "hwmmirror",
                "VmHWM, max over the mirror instances",
            ),
            (
                "RSS at 64 connections (MiB)",
                "rss64",
                "max VmRSS during the manifest runs",
            ),
        ] {
            let (st, rf) = (g(&format!("{k}.st")), g(&format!("{k}.ref")));
            self.row([what, &mib(st), &mib(rf), "", note, better(false, st, rf)]);
        }
    }

    fn manifest_targets(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        for m in ["HEAD", "GET"] {
            let (st, rf, hello) = (
                g(&format!("rps{m}.st")),
                g(&format!("rps{m}.ref")),
                g(&format!("rps{m}.hello")),
            );
            let x = ratio(st, rf);
            self.target(
                x >= 10.0,
                &format!("manifest {m} req/s ≥ 10× the reference: {}×", fixed(x, 1)),
            );
            self.target(
                ratio(st, hello) >= 0.5,
                &format!(
                    "manifest {m} req/s ≥ half the minimal-hyper ceiling: {}%",
                    percent(st, hello)
                ),
            );
            self.target(
                ratio(st, hello) >= 0.75,
                &format!(
                    "manifest {m} by tag ≥ 75% of the minimal-hyper ceiling (issue 13): {}%",
                    percent(st, hello)
                ),
            );
        }
    }

    fn cold_targets(&mut self, o: &Opts, r: &Results) {
        let g = |k: &str| r.get(k);
        let wan = format!("{} MB/s link", fixed(o.wan_rate as f64 / 1e6, 0));
        for (link, what) in [
            ("wan", format!("over a {wan}")),
            ("lo", "over loopback".to_owned()),
        ] {
            let x = g(&format!("coldratio{link}.st"));
            self.target(
                x <= 1.05,
                &format!(
                    "cold pull within 5% of pulling straight from the upstream, {what}: {}× (first byte of the largest blob: {}×)",
                    fixed(x, 2),
                    fixed(g(&format!("ttfbratio{link}.st")), 2)
                ),
            );
        }
        let (x, t) = (g("coldratiolo.st"), g("ttfbratiolo.st"));
        self.target(
            x <= 1.5 && t <= 1.2,
            &format!(
                "cold pull over loopback ≤ 1.5× a direct pull, first byte of the largest blob ≤ 1.2× (issue 13): {}×, {}×",
                fixed(x, 2),
                fixed(t, 2)
            ),
        );
    }

    /// Section 2b: RSS and the manifest rate beside `IDLE` idle keep-alive connections.
    fn idle_rows(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        let n = crate::idle::IDLE;
        self.row([
            &format!("RSS holding {n} idle keep-alive connections (MiB)"),
            &mib(g("idle.rss")),
            "",
            "",
            &format!(
                "max VmRSS; {} MiB before; {} opened, {} still answering at the end",
                mib(g("idle.rss_before")),
                g("idle.open"),
                g("idle.held")
            ),
            "",
        ]);
        let (with, without) = (g("idle.with"), g("idle.without"));
        self.row([
            &format!("manifest GET by tag, 64 conns, beside {n} idle connections (req/s)"),
            &fixed(with, 0),
            "",
            &format!("{} (without them)", fixed(without, 0)),
            &format!("{}% of the rate without them", percent(with, without)),
            "",
        ]);
    }

    fn idle_targets(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        let n = crate::idle::IDLE;
        let all = g("idle.open") >= n as f64 && g("idle.held") >= n as f64;
        self.target(
            all && g("idle.rss") < 128.0 * 1024.0,
            &format!(
                "{n} idle keep-alive connections held with RSS under 128 MiB (issue 13): {} of {n} held, {} MiB",
                g("idle.held"),
                mib(g("idle.rss"))
            ),
        );
        let x = ratio(g("idle.with"), g("idle.without"));
        self.target(
            x >= 0.9,
            &format!(
                "manifest GETs beside them ≥ 90% of the rate without them (issue 13): {}%",
                percent(g("idle.with"), g("idle.without"))
            ),
        );
    }

    /// Section 7: blob and manifest GETs over HTTPS, HTTP/1.1 and h2.
    fn tls_rows(&mut self, o: &Opts, r: &Results) {
        let g = |k: &str| r.get(k);
        for (proto, _) in crate::tls::TLS_PROTOCOLS {
            let name = tls_name(proto);
            let (st, rf) = (
                g(&format!("tlsblob.{proto}.st")),
                g(&format!("tlsblob.{proto}.ref")),
            );
            self.row([
                &format!(
                    "HTTPS {name}: warm blob GET, {} MiB, 1 connection (GB/s)",
                    o.big / MIB
                ),
                &fixed(st, 2),
                &fixed(rf, 2),
                "",
                &format!("{}× ref", fixed(ratio(st, rf), 2)),
                better(true, st, rf),
            ]);
        }
        for (proto, _) in crate::tls::TLS_PROTOCOLS {
            let name = tls_name(proto);
            let (st, rf) = (
                g(&format!("tlsmanifest.{proto}.st")),
                g(&format!("tlsmanifest.{proto}.ref")),
            );
            self.row([
                &format!("HTTPS {name}: manifest GET by tag, 64 conns (req/s)"),
                &fixed(st, 0),
                &fixed(rf, 0),
                "",
                &format!("{}× ref", fixed(ratio(st, rf), 1)),
                better(true, st, rf),
            ]);
        }
    }

    fn tls_targets(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        for (what, key) in [("blob", "tlsblob"), ("manifest", "tlsmanifest")] {
            for (proto, _) in crate::tls::TLS_PROTOCOLS {
                let x = ratio(
                    g(&format!("{key}.{proto}.st")),
                    g(&format!("{key}.{proto}.ref")),
                );
                self.target(
                    x >= 1.0,
                    &format!(
                        "HTTPS {}, {what} GETs ≥ 1.0× the reference over HTTPS (issue 13): {}×",
                        tls_name(proto),
                        fixed(x, 2)
                    ),
                );
            }
        }
    }

    fn herd_targets(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        self.target(
            fixed(g("herd.st"), 2) == "1.00",
            &format!(
                "exactly 1.0× upstream bytes under 32 concurrent misses: {}×",
                fixed(g("herd.st"), 3)
            ),
        );
    }

    /// Issue 16: concurrent misses across 3 replicas, upstream bytes ÷ blob.
    fn fleet_rows(&mut self, o: &Opts, r: &Results) {
        let g = |k: &str| r.get(k);
        let n = crate::fleet::GETS;
        self.row([
            &format!(
                "{n} concurrent cold GETs of {} MiB over 3 replicas: upstream bytes ÷ blob",
                o.herd / MIB
            ),
            &format!("{}×", fixed(g("fleet.peers"), 3)),
            &format!("{}×", fixed(g("fleet.ref"), 3)),
            "1.000×",
            &format!(
                "stevedore without `proxy.peers`: {}×; {}/{n} and {}/{n} whole; {} s / {} s",
                fixed(g("fleet.nopeers"), 3),
                g("fleetok.peers"),
                g("fleetok.ref"),
                fixed(g("fleettime.peers"), 2),
                fixed(g("fleettime.ref"), 2)
            ),
            better(false, g("fleet.peers"), g("fleet.ref")),
        ]);
    }

    fn fleet_targets(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        let n = crate::fleet::GETS;
        self.target(
            fixed(g("fleet.peers"), 2) == "1.00" && g("fleetok.peers") == n as f64,
            &format!(
                "exactly 1.0× upstream bytes for {n} concurrent misses across 3 replicas, every body whole (issue 16): {}×, {}/{n}",
                fixed(g("fleet.peers"), 3),
                g("fleetok.peers")
            ),
        );
    }

    /// Issue 16: S3-backed warm and cold lines, the filesystem's beside them (`s3.rs`).
    fn s3_rows(&mut self, o: &Opts, r: &Results) {
        for row in crate::s3::rows(o, r) {
            self.row(row.each_ref().map(String::as_str));
        }
    }

    fn memory_targets(&mut self, r: &Results) {
        let g = |k: &str| r.get(k);
        self.target(
            g("rss64.st") < 65536.0,
            &format!(
                "memory under 64 MiB at 64 connections: {} MiB",
                mib(g("rss64.st"))
            ),
        );
    }

    /// ✓ or ✗ on "≥ ref" for every row: one target.
    fn every_line(&mut self) {
        let worse: Vec<String> = self
            .rows
            .iter()
            .filter(|row| row.trim_end_matches(" |").ends_with('✗'))
            .filter_map(|row| row.split('|').nth(1).map(|c| c.trim().to_owned()))
            .collect();
        if worse.is_empty() {
            self.target(true, "at least as good as the reference on every line");
        } else {
            self.target(
                false,
                &format!(
                    "at least as good as the reference on every line (worse on: {})",
                    worse.join("; ")
                ),
            );
        }
    }
}

/// The results table and the targets list.
pub fn results(o: &Opts, r: &Results) -> (String, String) {
    let mut rep = Report::default();
    rep.blob_rows(o, r);
    rep.manifest_rows(r);
    rep.idle_rows(r);
    rep.cold_rows(o, r);
    rep.herd_rows(o, r);
    rep.push_rows(o, r);
    rep.memory_rows(r);
    rep.tls_rows(o, r);
    rep.fleet_rows(o, r);
    rep.s3_rows(o, r);
    rep.every_line();
    rep.manifest_targets(r);
    rep.blob_targets(r);
    rep.cold_targets(o, r);
    rep.herd_targets(r);
    rep.memory_targets(r);
    rep.idle_targets(r);
    rep.tls_targets(r);
    rep.fleet_targets(r);
    (rep.table(), rep.targets.join("\n"))
}

/// `--only`: the lines and targets of the sections that ran, with what was measured.
pub fn partial(o: &Opts, r: &Results, rev: &str, load_start: &str) -> String {
    let mut rep = Report::default();
    for section in crate::SECTIONS.iter().filter(|s| o.wants(s)) {
        match *section {
            "blob" => {
                rep.blob_rows(o, r);
                rep.blob_targets(r);
            }
            "manifest" => {
                rep.manifest_rows(r);
                rep.manifest_targets(r);
            }
            "idle" => {
                rep.idle_rows(r);
                rep.idle_targets(r);
            }
            "push" => rep.push_rows(o, r),
            "cold" => {
                rep.cold_rows(o, r);
                rep.cold_targets(o, r);
            }
            "herd" => {
                rep.herd_rows(o, r);
                rep.herd_targets(r);
            }
            "tls" => {
                rep.tls_rows(o, r);
                rep.tls_targets(r);
            }
            "fleet" => {
                rep.fleet_rows(o, r);
                rep.fleet_targets(r);
            }
            _ => rep.s3_rows(o, r),
        }
    }
    format!(
        "Sections {} only (--only), {}, stevedore {rev};\nload average (1, 5, 15 min) at the start: {load_start}; at the end: {}\n\n{}\n\n{}\n",
        o.only.join(", "),
        utc_now(),
        loadavg(),
        rep.table(),
        rep.targets.join("\n")
    )
}

/// The large cache section (issue 11), from `examples/largecache SIZES`.
pub fn large_cache(bins: &Bins, sizes: &[u64]) -> Result<String, String> {
    let out = Command::new(bins.examples.join("largecache"))
        .args(sizes.iter().map(u64::to_string))
        .output()
        .map_err(|e| format!("largecache: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "largecache: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f = |k: &str| crate::stats::field(line, k).unwrap_or("?").to_owned();
        number(line, "entries")?;
        rows.push(format!(
            "| {} | {} | {} | {} | {} | {} ({} blobs) | {} |",
            f("entries"),
            f("write_s"),
            f("startup_ms"),
            f("scrape_ms"),
            f("evict_idle_ms"),
            f("evict_ms"),
            f("evicted"),
            f("full_scan_ms")
        ));
    }
    Ok(format!(
        "## Large cache (issue 11)

`examples/largecache`: N blob records (90% cached, 10% pushed, each linked to a repository)
written through the index API, then: start-up = reopening the index (one pass that counts the
running totals); scrape = the storage gauges from the running totals plus encoding `/metrics`
(median of 21); eviction = a pass with nothing to evict, and a pass over a cache made 1 MB
too big (it walks the access-ordered tree, oldest first, and stops); full scan = reading every
blob record once, which each scrape and each eviction pass did before. Milliseconds unless noted.

| entries | write (s) | start-up | scrape | eviction, idle | eviction pass | full scan |
|---:|---:|---:|---:|---:|---:|---:|
{}
",
        rows.join("\n")
    ))
}

/// The CPUs this process may run on.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn machine() -> (usize, String, String) {
    let cpus = cpus();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|v| v.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(String::new, |kb| format!("{:.1} GiB", kb / 1048576.0));
    (cpus, cpu, mem)
}

/// The whole of BENCHMARKS.md.
pub fn document(
    o: &Opts,
    rev: &str,
    load_start: &str,
    table: &str,
    targets: &str,
    large: &str,
) -> String {
    let (cpus, cpu, mem) = machine();
    let uname = output(Command::new("uname").arg("-sr"));
    let rustc = output(Command::new("rustc").arg("--version"));
    let reference = output(Command::new("docker-registry").arg("--version"));
    let nginx = output(Command::new("nginx").arg("-v"));
    let weed = output(Command::new("weed").arg("version"));
    let curl: String = output(Command::new("curl").arg("--version"))
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let quick = if o.quick {
        "\n\n**Quick mode (`--quick`): one repetition, small blobs and short runs, to check the bench\nitself; not figures to compare.**"
    } else {
        ""
    };
    let reps = o.reps;
    let secs = o.secs;
    let big = o.big / MIB;
    let tick = crate::procs::clock_ticks();
    let tick_ms = fixed(1000.0 / tick, 0);
    let layers = o.layers.map(|l| (l / MIB).to_string()).join(" + ");
    let cold_reps = crate::cold_reps(o);
    let wan = fixed(o.wan_rate as f64 / 1e6, 0);
    let herd = o.herd / MIB;
    let chunk = o.chunk / MIB;
    let chunks = o.big.div_ceil(o.chunk);
    let (fleet, per) = (crate::fleet::GETS, crate::fleet::PER_REPLICA);
    format!(
        "# Benchmarks

Produced by `bash bench/run.sh` (the runner `examples/bench`; issue 8) on {now};
every figure below comes from that one run. Re-run it to refresh this file; it is not part of
the test suite.{quick}

## Machine and versions

- {cpus} CPUs: {cpu}; {mem} of memory; {uname}
- load average (1, 5, 15 min) when the run started: {load_start}; when it ended: {load_end}
  (the first is taken after the build, before the test data; the second includes
  this run's own load generator and servers. Other processes on the machine add noise.)
- {rustc}; stevedore {rev}, release profile
- reference: {reference}
- {nginx}; {curl}; SeaweedFS `weed` {weed}

## Results

Medians of {reps} repetitions after a warm-up. \"≥ ref\": ✓ when stevedore is at least as
good as the reference registry on that line.

{table}

## Targets (issues 8, 13 and 16)

{targets}

{large}
## How it was measured

Everything runs on 127.0.0.1 of this one machine, the load generator included, so client and
server share the {cpus} CPUs; the ceilings are measured the same way in the same run, and the
fractions are what to compare across machines. `examples/bench` starts the servers and runs the
rounds interleaved; every request is made by `examples/loadgen` (its subcommands `load`, `push-image`,
`push-blob`, `pull`) or by curl.

- Servers: stevedore and the reference registry with the same config.yml keys (filesystem
  storage in a temp dir, in-memory blob descriptor cache, access log off, log level warn); as
  plain registries for the warm and push lines, as mirrors (`proxy.remoteurl`) of a third
  process, the reference registry as the upstream, for the cold lines. Test data are random
  blobs pushed over the API, the same bytes to each server.
- Warm blob GET: the {big} MiB blob with three clients: `loadgen load` (hyper HTTP/1.1
  client draining the body), curl (`loadgen load --client curl`), and `loadgen load --client go`
  (reads the body the way Go's net/http under io.Copy does, 32 KiB reads, as dockerd, containerd
  and skopeo do); one connection × 4 GETs, and 8 connections × 1 GET each, timed as a whole
  (GB = 10^9 bytes). Ceiling: nginx (sendfile, worker_processes auto) serving the same file.
- Manifests: `loadgen load`, 64 keep-alive connections, {secs} s per run, the manifest by
  tag with a Docker/OCI Accept header; p50/p99 from an HDR histogram. Ceiling:
  `examples/hello`, a minimal hyper server (same builder as stevedore) answering a fixed body.
  wrk (1 thread, 64 connections, GET only: it hangs on HEAD) as a cross-check.
- Cold pull (`loadgen pull`): GET the manifest, then its config and 3 layers ({layers} MiB) in
  parallel, each on its own connection; total wall time and the time to first byte of the
  {l0} MiB blob (its request to its response head); median of {cold_reps} on each link. The
  machine's CPU time per pull is the busy time of all CPUs in /proc/stat (clock ticks of
  {tick_ms} ms) across the pull: every process and kernel thread, the load generator's start
  included. Divided by the CPUs it is the least time a pull that keeps them all busy can take.
  The SHA-256 figure hashes as many bytes as the image has, in 1 MiB steps, on one core of this
  machine (best of 3).
  Each repetition starts a fresh mirror with an empty store; \"upstream\" is the same pull
  straight from the upstream over the same link. Two links: loopback (the upstream is faster
  than the mirror's disk; the mirrors reach it directly, as the direct pull does), and a simulated
  {wan} MB/s link (countproxy pacing everything the upstream sends, all connections
  together; the direct pull goes through it too).
- Concurrent misses: a fresh mirror, 32 GETs (`loadgen load -c 32 -n 32`) of one uncached
  {herd} MiB blob at once; `examples/countproxy` between the mirror and the upstream counts the
  bytes the upstream sent.
- Concurrent misses across 3 replicas (issue 16): three fresh stevedores naming each other in
  `proxy.peers` (static list, probes every 100 ms; the GETs start once each sees all three up),
  {fleet} GETs of the uncached {herd} MiB blob at once, {per} to each replica (`loadgen load` per
  replica, all started together), bytes counted by the same countproxy. Beside them: the same
  three without `proxy.peers`, and three reference registries, each a mirror with its own
  filesystem store (distribution has no shared state between replicas: sharing one store
  would not make them fetch once).
- S3 (issue 16): SeaweedFS (`weed mini`, the version in the machine list) on loopback, one
  bucket; stevedore (`storage.s3`, local `cachedirectory`) and the reference (distribution's
  `s3-aws` driver: `regionendpoint`, `secure: false`, `v4auth`) each under its own
  `rootdirectory`, `chunksize` 10 MiB. Streamed lines: `storage.redirect.disable: true`, the
  blob read from the bucket by the registry on every GET (stevedore keeps no blob on local
  disk with S3); the same hyper client lines as the filesystem's, run interleaved with the
  filesystem registries above. Redirect lines: two more registries with redirects on, the
  client answered 307 to a presigned URL and served by SeaweedFS; curl `-L` (1 process × 4
  GETs; 8 processes × 1 GET), beside curl on the streaming stevedore. Cold pull: as above
  over loopback, each repetition a fresh mirror under a new `rootdirectory` (the bucket never
  holds the image), beside fresh filesystem mirrors in the same rounds.
- Push (`loadgen push-blob`, timed from the first request to the last answer): a distinct {big} MiB
  blob per repetition. Monolithic: one `POST ?digest=` carrying the body where the server
  supports it; distribution 2.8 ignores `?digest=` on POST (answers 202 and drops the body), so
  for it the monolithic form is POST then `PUT ?digest=` with the body. Chunked: POST, {chunks}
  PATCHes of {chunk} MiB with Content-Range, then `PUT ?digest=`.
- Idle connections: a separate stevedore (`http.limits: {{maxconns: 11024, maxconnsperclient:
  0}}`, as a fleet's mirror would be configured: every connection comes from 127.0.0.1) holds
  10,000 keep-alive connections from `loadgen idle`, each after one manifest GET, silent
  meanwhile; the manifest GET runs above, with and without them, interleaved; at the end every
  idle connection must still answer a request.
- HTTPS: a self-signed ECDSA certificate for 127.0.0.1 made for the run (rcgen); both registries
  restarted on their stores with `http.tls`; `loadgen load` over rustls (TLS 1.3), HTTP/1.1 or h2
  by ALPN: the blob 1 connection × 4 GETs, the manifest 64 connections for {secs} s.
- Memory: VmHWM (peak RSS) from /proc/PID/status; at 64 connections: the highest VmRSS sampled
  every 100 ms during the manifest runs.
- CPU per GB: utime + stime from /proc/PID/stat (÷ CLK_TCK = {tick}) before and after the warm
  blob GETs, over the bytes served (warm-up excluded); nginx's counts its workers.
",
        now = utc_now(),
        load_end = loadavg(),
        l0 = o.layers[0] / MIB,
    )
}
