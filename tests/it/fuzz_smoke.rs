//! The fuzz targets on stable Rust: each target of `stevedore::fuzzing::TARGETS` gets its seeds
//! (`fuzz/seeds/<target>/`) and then mutations of them and random bytes, from a fixed-seed
//! generator, so a failure reproduces. No coverage guidance: this is the cheap always-on half;
//! `scripts/fuzz-smoke.sh` runs the same targets under libFuzzer where nightly is available.
//!
//! Runs `FUZZ_SMOKE_ITERS` inputs per target (default 20000), each target for at most
//! `FUZZ_SMOKE_SECS` seconds (default 3). `FUZZ_SMOKE_SEED` changes the generator's seed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Fragments that matter to these parsers: separators, encodings, numbers at the edges.
const DICTIONARY: &[&[u8]] = &[
    b"..",
    b"/",
    b"%2f",
    b"%2e",
    b"%00",
    b"\0",
    b":",
    b"sha256:",
    b"bytes=",
    b"bytes ",
    b"items=",
    b"0-18446744073709551615",
    b"-",
    b",",
    b"=",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b"null",
    b"18446744073709551615",
    b"99999999999999999999",
    b"-1",
    b"0",
    b"\n",
    b"\r\n",
    b"  ",
    b"&",
    b"*",
    b"<<: ",
    b"!!binary ",
    b"~",
    b"\xff",
    b"\xc3\xa9",
    b"manifests/",
    b"blobs/",
    b"uploads/",
    b"tags/list",
    b"/v2/",
    b"realm=",
    b"Bearer ",
    b"Basic ",
    b"mediaType",
    b"\"digest\":",
    b"\"size\":",
    b"schemaVersion",
    b"http:",
    b"limits:",
    b"tls:",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            2 => {
                let i = rng.below(len + 1);
                let word = DICTIONARY[rng.below(DICTIONARY.len())];
                input.splice(i..i, word.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(16) + 1).min(len);
                input.drain(a..b);
            }
            4 if len > 0 => {
                // Repeat a slice (long runs, deep nesting).
                let a = rng.below(len);
                let b = (a + rng.below(8) + 1).min(len);
                let piece = input[a..b].to_vec();
                let times = 1 + rng.below(200);
                for _ in 0..times {
                    input.splice(b..b, piece.iter().copied());
                }
            }
            5 => input.truncate(rng.below(len + 1)),
            6 if !seeds.is_empty() => {
                // Splice in part of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let a = rng.below(other.len() + 1);
                let b = a + rng.below(other.len() - a + 1);
                let at = rng.below(len + 1);
                input.splice(at..at, other[a..b].iter().copied());
            }
            7 if len > 0 => {
                let i = rng.below(len);
                input[i] = b"0123456789abcdef:/.-_%"[rng.below(22)];
            }
            _ => {
                let n = rng.below(64);
                input.extend((0..n).map(|_| rng.next() as u8));
            }
        }
    }
    input.truncate(64 * 1024);
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(target: &str, f: fn(&[u8])) {
    let seeds = seeds(target);
    let iterations = env_u64("FUZZ_SMOKE_ITERS", 20_000);
    let budget = Duration::from_secs(env_u64("FUZZ_SMOKE_SECS", 3));
    let mut rng = Rng(env_u64("FUZZ_SMOKE_SEED", 0x5EED_u64) | 1);
    let started = Instant::now();
    let check = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
            panic!(
                "fuzz target {target} panicked on input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    };
    for s in &seeds {
        check(s);
    }
    let mut done = 0;
    while done < iterations && started.elapsed() < budget {
        let mut input = match rng.below(10) {
            0 => Vec::new(),
            _ => seeds[rng.below(seeds.len())].clone(),
        };
        mutate(&mut rng, &mut input, &seeds);
        check(&input);
        done += 1;
    }
    eprintln!("{target}: {done} inputs in {:?}", started.elapsed());
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = stevedore::fuzzing::TARGETS.iter().map(|t| t.0).collect();
    assert_eq!(
        names,
        [
            "route",
            "names",
            "manifest",
            "range",
            "config",
            "www_authenticate"
        ]
    );
    for name in names {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.exists(), "no cargo-fuzz target {}", target.display());
    }
}

fn target(name: &str) -> fn(&[u8]) {
    stevedore::fuzzing::TARGETS
        .iter()
        .find(|t| t.0 == name)
        .expect("target")
        .1
}

#[test]
fn route() {
    run("route", target("route"));
}

#[test]
fn names() {
    run("names", target("names"));
}

#[test]
fn manifest() {
    run("manifest", target("manifest"));
}

#[test]
fn range() {
    run("range", target("range"));
}

#[test]
fn config() {
    run("config", target("config"));
}

#[test]
fn www_authenticate() {
    run("www_authenticate", target("www_authenticate"));
}
