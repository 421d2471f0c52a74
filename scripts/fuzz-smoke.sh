#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECS seconds each (default 20), starting from
# the seeds in fuzz/seeds/<target>/, with libFuzzer and AddressSanitizer. That needs a nightly
# toolchain; without one this runs the stable smoke loop (tests/it/fuzz_smoke.rs) instead.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script; reproduce it with
#   cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>
# Not run by CI (.ci/run); CI runs tests/it/fuzz_smoke.rs as part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECS:-20}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-smoke: no nightly toolchain; running the stable loop instead" >&2
    cd ..
    exec env FUZZ_SMOKE_SECS="$secs" FUZZ_SMOKE_ITERS=100000000 cargo test --test it fuzz_smoke::
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=$(cargo +nightly fuzz list)
# One build for all targets (debug assertions on, optimised).
cargo +nightly fuzz build -O --debug-assertions
for t in $targets; do
    mkdir -p "corpus/$t"
    echo "--- fuzz $t for ${secs}s"
    cargo +nightly fuzz run -O --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzz-smoke: $(echo "$targets" | wc -w) targets, ${secs}s each, no crash"
