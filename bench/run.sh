#!/usr/bin/env bash
# The benchmark (issues 8, 11, 13): builds the release binaries, then runs the Rust runner
# examples/bench (see the top of examples/bench/main.rs), which measures stevedore against the
# reference registry (docker-registry) with nginx and examples/hello as ceilings and writes
# BENCHMARKS.md. Arguments go to the runner:
#
#   bash bench/run.sh                          # everything (~5 minutes on 2 cores + large cache)
#   bash bench/run.sh --quick --out /tmp/b.md  # a quick check of the bench itself
#   bash bench/run.sh --only blob              # warm blob GETs only
#   bash bench/run.sh --only manifest,idle,tls # only these sections (blob, manifest, idle,
#                                              # push, cold, herd, tls, fleet, s3)
#   bash bench/run.sh large-cache              # the large cache scenario only
#
# BENCH_NO_BUILD=1 uses the binaries already in target/release. The runner also reads
# BENCH_REPS, BENCH_SECS, BENCH_OUT, BENCH_WAN_RATE, BENCH_LARGE_SIZES, BENCH_KEEP, BENCH_ONLY.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    echo "building (release): stevedore and the examples" >&2
    cargo build --release --quiet --bin stevedore --examples
fi
# The idle-connections section holds 10,000 connections (both ends on this machine).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/examples/bench "$@"
