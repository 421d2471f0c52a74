//! The fleet scenario (issue 16): 33 concurrent cold GETs of one blob spread over three
//! replicas of a mirror (11 each), counting the bytes the upstream sends (countproxy): three
//! stevedores naming each other in `proxy.peers` (target 1.0×), the same three without peers,
//! and three reference registries (distribution's replicas each fetch for themselves).

use crate::procs::{self, Kind, Proc};
use crate::stats::number;
use crate::{Bins, Results, control_line, log};
use std::path::Path;
use std::time::{Duration, Instant};

/// Replicas in the scenario, and GETs sent to each.
const REPLICAS: usize = 3;
pub const PER_REPLICA: usize = 11;
/// GETs in all.
pub const GETS: usize = REPLICAS * PER_REPLICA;

/// Runs the scenario; sets `fleet.{peers,nopeers,ref}` (upstream bytes ÷ blob),
/// `fleetok.*` (whole bodies) and `fleettime.*` (seconds).
pub fn run(
    bins: &Bins,
    work: &Path,
    cp_url: &str,
    cp_ctl: &str,
    digest: &str,
    size: u64,
    r: &mut Results,
) -> Result<(), String> {
    let upstream_bytes = || control_line(cp_ctl).and_then(|l| number(&l, "upstream_to_client"));
    for case in ["peers", "nopeers", "ref"] {
        log(&format!(
            "5. {} concurrent cold GETs of one {} MiB blob over {REPLICAS} replicas ({case})",
            REPLICAS * PER_REPLICA,
            size >> 20
        ));
        let dir = work.join(format!("fleet_{case}"));
        let replicas: Vec<Proc> = match case {
            "ref" => (0..REPLICAS)
                .map(|i| {
                    procs::registry(
                        Kind::Reference,
                        &bins.stevedore,
                        &dir.join(format!("r{i}")),
                        Some(cp_url),
                    )
                })
                .collect::<Result<_, _>>()?,
            _ => {
                let peers = case == "peers";
                let set = procs::replicas(&bins.stevedore, &dir, cp_url, REPLICAS, peers)?;
                if peers {
                    for (_, debug) in &set {
                        wait_peers_up(debug)?;
                    }
                }
                set.into_iter().map(|(p, _)| p).collect()
            }
        };
        let b0 = upstream_bytes()?;
        let t0 = Instant::now();
        let expect = size.to_string();
        let lines: Vec<Result<String, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = replicas
                .iter()
                .map(|p| {
                    let url = format!("{}/v2/bench/herd/blobs/{digest}", p.url);
                    let expect = expect.clone();
                    s.spawn(move || {
                        let n = PER_REPLICA.to_string();
                        bins.loadgen_any(&[
                            "load",
                            "-c",
                            &n,
                            "-n",
                            &n,
                            "-t",
                            "2",
                            "--expect-bytes",
                            &expect,
                            &url,
                        ])
                        .map(|(_, line, _)| line)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("loadgen thread".into())))
                .collect()
        });
        let secs = t0.elapsed().as_secs_f64();
        // The replicas may still be finishing their fetches: wait until the count holds still.
        let mut b1 = upstream_bytes()?;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let b = upstream_bytes()?;
            if b == b1 {
                break;
            }
            b1 = b;
        }
        let mut ok = 0.0;
        for line in lines {
            let line = line?;
            ok += number(&line, "requests")? - number(&line, "errors")?;
        }
        r.set(format!("fleet.{case}"), (b1 - b0) / size as f64);
        r.set(format!("fleetok.{case}"), ok);
        r.set(format!("fleettime.{case}"), secs);
        log(&format!(
            "   upstream sent {:.3}× the blob; {ok}/{} clients got it whole in {secs:.2} s",
            r.get(&format!("fleet.{case}")),
            REPLICAS * PER_REPLICA
        ));
        for p in replicas {
            p.stop();
        }
    }
    Ok(())
}

/// Waits until the replica's `/debug/peers` shows every replica up.
fn wait_peers_up(debug: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = procs::get_text(debug, "/debug/peers", "*/*").unwrap_or_default();
        if text.matches("\"up\":true").count() == REPLICAS {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("replicas do not see each other: {text}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The section printed by `bench fleet`.
pub fn section(r: &Results) -> String {
    let g = |k: &str| r.get(k);
    let n = REPLICAS * PER_REPLICA;
    format!(
        "## Concurrent misses across {REPLICAS} replicas (issue 16)\n\n\
         | {n} cold GETs of one blob, {PER_REPLICA} per replica | upstream bytes ÷ blob | whole bodies | time (s) |\n\
         |---|---|---|---|\n\
         | stevedore, `proxy.peers` | {:.3}× | {}/{n} | {:.2} |\n\
         | stevedore, no peers | {:.3}× | {}/{n} | {:.2} |\n\
         | reference registry | {:.3}× | {}/{n} | {:.2} |\n\n\
         Target: 1.0× with peers ({}).\n",
        g("fleet.peers"),
        g("fleetok.peers"),
        g("fleettime.peers"),
        g("fleet.nopeers"),
        g("fleetok.nopeers"),
        g("fleettime.nopeers"),
        g("fleet.ref"),
        g("fleetok.ref"),
        g("fleettime.ref"),
        if format!("{:.2}", g("fleet.peers")) == "1.00" {
            "met"
        } else {
            "missed"
        },
    )
}
