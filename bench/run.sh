#!/usr/bin/env bash
# Issue 8's benchmark: stevedore against the reference registry (distribution 2.8,
# `docker-registry`) on this machine, in one run, with the machine's own ceilings (nginx
# sendfile for blob throughput, examples/hello for requests/s), and issue 11's "large cache"
# scenario (examples/largecache: 100k and 1M index entries). Writes BENCHMARKS.md.
#
#   bash bench/run.sh                 # ~5 minutes on 2 cores, plus the large cache (minutes)
#   bash bench/run.sh large-cache     # only the large cache scenario: prints its section
#   BENCH_REPS=5 BENCH_SECS=8 bash bench/run.sh
#
# Environment: BENCH_REPS (repetitions per measurement, median reported; default 3),
# BENCH_SECS (seconds per manifest request run; default 4), BENCH_OUT (default
# BENCHMARKS.md in the repository root), BENCH_WAN_RATE (bytes/s of the simulated link to the
# upstream for the second cold-pull figure; default 100000000), BENCH_KEEP=1 keeps the temp dir, BENCH_NO_BUILD=1
# uses the binaries already in target/release, BENCH_LARGE_SIZES (index entries of the large
# cache scenario; default "100000 1000000"). BENCH_ONLY=blob runs only the warm blob GETs
# (stevedore, reference, nginx) and prints their lines (and writes them to BENCH_OUT if set)
# instead of writing BENCHMARKS.md.
# Needs: cargo, curl, docker-registry, nginx (Debian nginx-light will do), wrk (optional),
# sha256sum, ss, awk.
# Everything listens on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REPS=${BENCH_REPS:-3}
SECS=${BENCH_SECS:-4}
WAN_RATE=${BENCH_WAN_RATE:-100000000}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
ONLY=${BENCH_ONLY:-}
[[ -z $ONLY || $ONLY == blob ]] || { echo "BENCH_ONLY: only 'blob' is known" >&2; exit 2; }
WORK=$(mktemp -d /tmp/stevedore-bench.XXXXXX)
MiB=1048576
BIG=$((256 * MiB))   # warm blob GET and push
HERD=$((100 * MiB))  # concurrent cold misses
LAYERS=($((40 * MiB)) $((16 * MiB)) $((8 * MiB)))  # the cold-pull image (64 MiB)
ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json'
MT_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
TICK=$(getconf CLK_TCK)

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6g\", $* }"; }
fmt() { awk -v v="$1" -v p="${2:-2}" 'BEGIN { printf "%.*f", p, v }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
# true when $1 $2 $3 holds numerically, e.g. `holds 1.2 '>=' 1`
holds() { awk -v a="$1" -v b="$3" "BEGIN { exit !(a $2 b) }"; }
mark() { if holds "$@"; then echo ✓; else echo ✗; fi; }

taken=" "
free_port() {
    local p
    while :; do
        # below the ephemeral range (32768+), so no outgoing connection holds it
        p=$((15000 + RANDOM % 17000))
        [[ $taken == *" $p "* ]] && continue
        ss -Htan "sport = :$p" | grep -q . && continue
        taken+="$p "
        echo "$p"
        return
    done
}

wait_http() { # URL [PID]: until it answers (any status) or 30 s pass, or PID exits
    local i
    for i in $(seq 300); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        if [[ -n ${2:-} ]] && ! kill -0 "$2" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

wait_line() { # FILE N: until FILE has N lines
    local i
    for i in $(seq 300); do
        [[ -f $1 && $(wc -l <"$1") -ge $2 ]] && return 0
        sleep 0.1
    done
    die "$1 stayed short"
}

cpu_ticks() { # PID...: utime+stime of the processes, in clock ticks
    local t=0 p
    for p in "$@"; do
        t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$t"
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# ---------------------------------------------------------------- large cache (issue 11)
LARGE_SIZES=${BENCH_LARGE_SIZES:-100000 1000000}
large_cache() { # prints the markdown section of the large cache scenario
    local line rows=""
    # shellcheck disable=SC2086
    while read -r line; do
        rows+="| $(kv entries "$line") | $(kv write_s "$line") | $(kv startup_ms "$line") | $(kv scrape_ms "$line") | $(kv evict_idle_ms "$line") | $(kv evict_ms "$line") ($(kv evicted "$line") blobs) | $(kv full_scan_ms "$line") |"
        rows+=$'\n'
    done < <("$ROOT/target/release/examples/largecache" $LARGE_SIZES)
    cat <<EOF
## Large cache (issue 11)

\`examples/largecache\`: N blob records (90% cached, 10% pushed, each linked to a repository)
written through the index API, then: start-up = reopening the index (one pass that counts the
running totals); scrape = the storage gauges from the running totals plus encoding \`/metrics\`
(median of 21); eviction = a pass with nothing to evict, and a pass over a cache made 1 MB
too big (it walks the access-ordered tree, oldest first, and stops); full scan = reading every
blob record once, which each scrape and each eviction pass did before. Milliseconds unless noted.

| entries | write (s) | start-up | scrape | eviction, idle | eviction pass | full scan |
|---:|---:|---:|---:|---:|---:|---:|
${rows%$'\n'}
EOF
}
if [[ ${1:-} == large-cache ]]; then
    [[ ${BENCH_NO_BUILD:-0} == 1 ]] || cargo build --release --quiet --example largecache
    large_cache
    exit 0
fi

# ---------------------------------------------------------------- build
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building (release): stevedore and the examples"
    cargo build --release --quiet --bin stevedore --examples
fi
# What was measured: the tree as it stands now (the build above), or a prebuilt binary.
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || REV+=" with uncommitted changes"
if [[ ${BENCH_NO_BUILD:-0} == 1 ]]; then
    REV="binary built $(date -u -r target/release/stevedore '+%Y-%m-%d %H:%M UTC') (HEAD now: $REV)"
fi
BIN=$ROOT/target/release
LOADGEN=$BIN/examples/loadgen

# ---------------------------------------------------------------- servers
registry_config() { # KIND DIR PORT [REMOTE]: same keys for both servers
    mkdir -p "$2"
    {
        echo "version: 0.1"
        echo "log: {level: warn, accesslog: {disabled: true}}"
        echo "storage:"
        echo "  filesystem: {rootdirectory: $2/data}"
        echo "  delete: {enabled: true}"
        echo "  cache: {blobdescriptor: inmemory}"
        echo "http: {addr: 127.0.0.1:$3, secret: bench-secret}"
        if [[ -n ${4:-} ]]; then echo "proxy: {remoteurl: $4}"; fi
    } >"$2/config.yml"
}

# start_registry KIND NAME [REMOTE] → sets PID_<NAME> and URL_<NAME>
start_registry() {
    local kind=$1 name=$2 remote=${3:-} port dir pid
    local try
    dir=$WORK/$name
    for try in 1 2 3; do
        port=$(free_port)
        rm -rf "$dir"
        registry_config "$kind" "$dir" "$port" "$remote"
        case $kind in
        stevedore) "$BIN/stevedore" serve "$dir/config.yml" >"$dir/log" 2>&1 & pid=$! ;;
        reference) docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 & pid=$! ;;
        esac
        PIDS+=("$pid")
        printf -v "PID_$name" %s "$pid"
        printf -v "URL_$name" %s "http://127.0.0.1:$port"
        wait_http "http://127.0.0.1:$port/v2/" "$pid" && return 0
        log "$kind ($name) did not start on port $port (try $try): $(tail -3 "$dir/log")"
        stop_pid "$pid"
    done
    die "$kind ($name) would not start"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- API helpers
sha() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

location() { # headers file → absolute Location
    local l
    l=$(awk 'tolower($1) == "location:" { print $2 }' "$1" | tr -d '\r' | tail -1)
    [[ -n $l ]] || die "no Location in $(head -1 "$1")"
    [[ $l == http* ]] || l=$2$l
    echo "$l"
}

with_query() { if [[ $1 == *\?* ]]; then echo "$1&$2"; else echo "$1?$2"; fi; }

post_upload() { # BASE REPO → upload URL
    local h=$WORK/h.$$
    curl -sSf -X POST -D "$h" -o /dev/null "$1/v2/$2/blobs/uploads/"
    location "$h" "$1"
}

put_blob() { # BASE REPO FILE DIGEST: POST then PUT ?digest= with the whole body
    local loc
    loc=$(post_upload "$1" "$2")
    curl -sSf -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' \
        -T "$3" -o /dev/null "$(with_query "$loc" "digest=$4")"
}

push_single_post() { # BASE REPO FILE DIGEST: one POST ?digest= carrying the body → HTTP code
    curl -sS -X POST -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$3" \
        --request-target "/v2/$2/blobs/uploads/?digest=$4" -o /dev/null -w '%{http_code}' "$1/"
}

push_chunked() { # BASE REPO FILE DIGEST CHUNKDIR: POST, PATCH per chunk, PUT ?digest=
    local loc h=$WORK/h.$$ off=0 c n
    loc=$(post_upload "$1" "$2")
    for c in "$5"/c*; do
        n=$(stat -c %s "$c")
        curl -sSf -X PATCH -D "$h" -o /dev/null -H 'Expect:' \
            -H 'Content-Type: application/octet-stream' \
            -H "Content-Range: $off-$((off + n - 1))" -T "$c" "$loc"
        loc=$(location "$h" "$1")
        off=$((off + n))
    done
    curl -sSf -X PUT -o /dev/null -H 'Content-Length: 0' "$(with_query "$loc" "digest=$4")"
}

blob_size() { # BASE REPO DIGEST → Content-Length of a HEAD (0 if absent)
    curl -s -I "$1/v2/$2/blobs/$3" | awk 'tolower($1) == "content-length:" { gsub("\r", ""); n = $2 } / 200 / { ok = 1 } END { print ok ? n : 0 }'
}

# make_image DIR LAYERSIZE... → DIR/config.json, DIR/l<i>, DIR/manifest.json, DIR/digests
make_image() {
    local dir=$1 i=0 size d cfg layers="" sep=""
    shift
    mkdir -p "$dir"
    : >"$dir/digests"
    for size in "$@"; do
        head -c "$size" /dev/urandom >"$dir/l$i"
        d=$(sha "$dir/l$i")
        echo "l$i $d $size" >>"$dir/digests"
        layers+="$sep{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"size\":$size,\"digest\":\"$d\"}"
        sep=,
        i=$((i + 1))
    done
    printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]},"bench":"%s"}' \
        "$(basename "$dir")-$RANDOM" >"$dir/config.json"
    cfg=$(sha "$dir/config.json")
    echo "config.json $cfg $(stat -c %s "$dir/config.json")" >>"$dir/digests"
    printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%s,"digest":"%s"},"layers":[%s]}' \
        "$MT_MANIFEST" "$(stat -c %s "$dir/config.json")" "$cfg" "$layers" >"$dir/manifest.json"
}

push_image() { # BASE REPO TAG DIR
    local f d s
    while read -r f d s; do put_blob "$1" "$2" "$4/$f" "$d"; done <"$4/digests"
    curl -sSf -X PUT -H "Content-Type: $MT_MANIFEST" --data-binary "@$4/manifest.json" \
        -o /dev/null "$1/v2/$2/manifests/$3"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- test data
log "test data: random blobs in $WORK"
make_image "$WORK/big" "$BIG"
BIG_DIGEST=$(awk '$1 == "l0" { print $2 }' "$WORK/big/digests")
if [[ $ONLY != blob ]]; then
make_image "$WORK/cold" "${LAYERS[@]}"
make_image "$WORK/herd" "$HERD"
HERD_DIGEST=$(awk '$1 == "l0" { print $2 }' "$WORK/herd/digests")
# Push payloads: the big blob with a distinct first line, one per (mode, repetition), so no
# push finds its blob already stored; the same bytes go to both servers.
for mode in mono chunked; do
    for r in $(seq "$REPS"); do
        f=$WORK/push-$mode-$r
        { printf 'bench %-8s %05d\n' "$mode" "$r"; tail -c $((BIG - 21)) "$WORK/big/l0"; } >"$f"
        echo "$(sha "$f")" >"$f.digest"
        if [[ $mode == chunked ]]; then
            mkdir -p "$f.chunks"
            split -b $((16 * MiB)) -d -a 3 "$f" "$f.chunks/c"
        fi
    done
done
fi

# ---------------------------------------------------------------- start everything
log "starting: stevedore and reference (plain), upstream, countproxy, nginx, hello"
start_registry stevedore st
start_registry reference ref
if [[ $ONLY != blob ]]; then
start_registry reference up

"$BIN/examples/countproxy" 127.0.0.1:0 "${URL_up#http://}" 127.0.0.1:0 >"$WORK/countproxy.addr" 2>"$WORK/countproxy.log" &
PIDS+=("$!")
wait_line "$WORK/countproxy.addr" 2
URL_cp=http://$(sed -n 1p "$WORK/countproxy.addr")
URL_cpctl=http://$(sed -n 2p "$WORK/countproxy.addr")
upstream_bytes() { kv upstream_to_client "$(curl -sSf "$URL_cpctl/")"; }
"$BIN/examples/countproxy" 127.0.0.1:0 "${URL_up#http://}" 127.0.0.1:0 "$WAN_RATE" >"$WORK/wan.addr" 2>"$WORK/wan.log" &
PIDS+=("$!")
wait_line "$WORK/wan.addr" 2
URL_wan=http://$(sed -n 1p "$WORK/wan.addr")

"$BIN/examples/hello" 127.0.0.1:0 >"$WORK/hello.addr" 2>&1 &
PID_hello=$!
PIDS+=("$PID_hello")
wait_line "$WORK/hello.addr" 1
URL_hello=http://$(sed -n 1p "$WORK/hello.addr")
fi

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
{
    echo "daemon off; master_process on; worker_processes auto;"
    [[ $(id -u) == 0 ]] && echo "user root;"
    echo "pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log warn;"
    echo "events { worker_connections 1024; }"
    echo "http {"
    echo "  access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;"
    for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $WORK/nginx/$t;"; done
    echo "  server { listen 127.0.0.1:$NGINX_PORT; location = /blob { alias $WORK/big/l0; } }"
    echo "}"
} >"$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" &
PID_nginx=$!
PIDS+=("$PID_nginx")
URL_nginx=http://127.0.0.1:$NGINX_PORT
wait_http "$URL_nginx/blob" "$PID_nginx" || die "nginx did not start: $(tail -3 "$WORK/nginx/error.log")"

log "pushing the test images (same bytes to both servers and to the upstream)"
push_image "$URL_st" bench/big v1 "$WORK/big"
push_image "$URL_ref" bench/big v1 "$WORK/big"
if [[ $ONLY != blob ]]; then
    push_image "$URL_up" bench/cold v1 "$WORK/cold"
    push_image "$URL_up" bench/herd v1 "$WORK/herd"
fi
for s in st ref; do
    u=URL_$s
    [[ $(blob_size "${!u}" bench/big "$BIG_DIGEST") == "$BIG" ]] || die "$s lacks the big blob"
done

declare -A R  # results: R[metric.server]

# ---------------------------------------------------------------- report helpers
mib() { fmt "$(calc "$1 / 1024")" 1; }
frac() { fmt "$(calc "100 * $1 / $2")" 0; }
better() { # higher|lower ST REF → ✓ when stevedore is at least as good
    if [[ $1 == higher ]]; then mark "$2" '>=' "$3"; else mark "$2" '<=' "$3"; fi
}
# row: what | stevedore | reference | ceiling | st/ref, fractions | ≥ ref
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
target() { T+=("- $1 $2"); }
blob_rows() { # the warm blob lines: throughput per client and connections, CPU per GB per client
    local c n conns
    for c in "${BLOB_CLIENTS[@]}"; do
        for n in "${BLOB_CONNS[@]}"; do
            conns="$n connections"
            [[ $n == 1 ]] && conns="1 connection"
            row "warm blob GET, 256 MiB, $(client_name "$c"), $conns (GB/s)" "$(fmt "${R[blob$n.$c.st]}")" \
                "$(fmt "${R[blob$n.$c.ref]}")" "$(fmt "${R[blob$n.$c.nginx]}") (nginx)" \
                "$(fmt "$(calc "${R[blob$n.$c.st]} / ${R[blob$n.$c.ref]}")")× ref; $(frac "${R[blob$n.$c.st]}" "${R[blob$n.$c.nginx]}")% / $(frac "${R[blob$n.$c.ref]}" "${R[blob$n.$c.nginx]}")% of nginx" \
                "$(better higher "${R[blob$n.$c.st]}" "${R[blob$n.$c.ref]}")"
        done
    done
    for c in "${BLOB_CLIENTS[@]}"; do
        row "server CPU per GB served, warm blob GETs, $(client_name "$c") (s/GB)" "$(fmt "${R[cpugb.$c.st]}" 3)" \
            "$(fmt "${R[cpugb.$c.ref]}" 3)" "$(fmt "${R[cpugb.$c.nginx]}" 3) (nginx)" \
            "$(fmt "$(calc "${R[cpugb.$c.st]} / ${R[cpugb.$c.ref]}")")× ref" \
            "$(better lower "${R[cpugb.$c.st]}" "${R[cpugb.$c.ref]}")"
    done
}
blob_targets() { # issue 13: ≥ 1.0× the reference and ≥ 95% of nginx on every line; CPU ≤ 0.5× ref
    local c n x y conns
    for c in "${BLOB_CLIENTS[@]}"; do
        for n in "${BLOB_CONNS[@]}"; do
            conns="$n connection$([[ $n == 1 ]] || echo s)"
            x=$(calc "${R[blob$n.$c.st]} / ${R[blob$n.$c.ref]}")
            y=$(calc "${R[blob$n.$c.st]} / ${R[blob$n.$c.nginx]}")
            if holds "$x" '>=' 1 && holds "$y" '>=' 0.95; then m=✓; else m=✗; fi
            target "$m" "warm blob GET, $(client_name "$c"), $conns: ≥ 1.0× the reference and ≥ 95% of nginx: $(fmt "$x")×, $(frac "${R[blob$n.$c.st]}" "${R[blob$n.$c.nginx]}")%"
        done
        x=$(calc "${R[cpugb.$c.st]} / ${R[cpugb.$c.ref]}")
        target "$(mark "$x" '<=' 0.5)" "server CPU per GB ≤ half the reference's, $(client_name "$c"): $(fmt "$x")×"
    done
}

# ---------------------------------------------------------------- 1. warm blob GET
# Three clients (issue 13): examples/loadgen's hyper client, which drains a socket faster than
# most clients; curl; and loadgen's Go-style client (`--read-size 32768`: reads the body the way
# Go's net/http under io.Copy does, as dockerd, containerd and skopeo do). Each at 1 connection
# (4 GETs on one keep-alive connection) and 8 connections (8 GETs at once, one per connection).
# Repetitions are interleaved (nginx, stevedore, reference, then again) so that whatever else
# runs on the machine weighs on all three alike.
BLOB_CLIENTS=(loadgen curl go)
BLOB_CONNS=(1 8)
client_name() {
    case $1 in
    loadgen) echo "hyper loadgen" ;;
    curl) echo "curl" ;;
    go) echo "Go-style client, 32 KiB reads" ;;
    esac
}
nginx_pids() { echo "$PID_nginx" $(cat "/proc/$PID_nginx/task/$PID_nginx/children" 2>/dev/null); }
blob_url() {
    case $1 in
    nginx) echo "$URL_nginx/blob" ;;
    st) echo "$URL_st/v2/bench/big/blobs/$BIG_DIGEST" ;;
    ref) echo "$URL_ref/v2/bench/big/blobs/$BIG_DIGEST" ;;
    esac
}
server_pids() {
    case $1 in
    nginx) nginx_pids ;;
    *) p=PID_$1 && echo "${!p}" ;;
    esac
}
get_blobs() { # CLIENT CONNS URL → bytes received in all (dies on a short or failed GET)
    local client=$1 n=$2 url=$3 gets threads i pids=() got=0 b
    gets=$((n == 1 ? 4 : n))
    threads=$((n == 1 ? 1 : 2))
    case $client in
    loadgen) kv bytes "$("$LOADGEN" -c "$n" -n "$gets" -t "$threads" --expect-bytes "$BIG" "$url")" ;;
    go) kv bytes "$("$LOADGEN" -c "$n" -n "$gets" -t "$threads" --read-size 32768 --expect-bytes "$BIG" "$url")" ;;
    curl)
        if ((n == 1)); then
            # one curl, one keep-alive connection, $gets transfers
            local args=()
            for i in $(seq "$gets"); do args+=(-o /dev/null "$url"); done
            curl -sSf -w '%{size_download}\n' "${args[@]}" >"$WORK/curl.0"
        else
            for i in $(seq "$n"); do
                curl -sSf -w '%{size_download}\n' -o /dev/null "$url" >"$WORK/curl.$i" &
                pids+=("$!")
            done
            for i in "${pids[@]}"; do wait "$i" || die "curl GET of $url failed"; done
        fi
        while read -r b; do
            [[ $b == "$BIG" ]] || die "curl got $b bytes of $url"
            got=$((got + b))
        done < <(cat "$WORK"/curl.*)
        rm -f "$WORK"/curl.*
        echo "$got"
        ;;
    esac
}
declare -A ticks served gbps
log "1. warm blob GET: 256 MiB; ${BLOB_CLIENTS[*]}; 1 connection × 4 GETs and 8 connections × 1 GET; $REPS× each, interleaved"
for s in nginx st ref; do
    # warm-up (also fills the page cache)
    "$LOADGEN" -c 1 -n 1 --expect-bytes "$BIG" "$(blob_url "$s")" >/dev/null
    for c in "${BLOB_CLIENTS[@]}"; do
        ticks[$c.$s]=0 served[$c.$s]=0
        for n in "${BLOB_CONNS[@]}"; do gbps[$c.$n.$s]=""; done
    done
done
for r in $(seq "$REPS"); do
    for s in nginx st ref; do
        for c in "${BLOB_CLIENTS[@]}"; do
            for n in "${BLOB_CONNS[@]}"; do
                # shellcheck disable=SC2046
                c0=$(cpu_ticks $(server_pids "$s"))
                t0=$(now)
                bytes=$(get_blobs "$c" "$n" "$(blob_url "$s")")
                t1=$(now)
                # shellcheck disable=SC2046
                ticks[$c.$s]=$((${ticks[$c.$s]} + $(cpu_ticks $(server_pids "$s")) - c0))
                [[ $bytes == $((BIG * (n == 1 ? 4 : n))) ]] || die "$c from $s: $bytes bytes"
                served[$c.$s]=$((${served[$c.$s]} + bytes))
                gbps[$c.$n.$s]+=" $(calc "$bytes / 1e9 / ($t1 - $t0)")"
            done
        done
    done
done
for s in nginx st ref; do
    for c in "${BLOB_CLIENTS[@]}"; do
        for n in "${BLOB_CONNS[@]}"; do
            # shellcheck disable=SC2086
            R[blob$n.$c.$s]=$(median ${gbps[$c.$n.$s]})
        done
        R[cpugb.$c.$s]=$(calc "${ticks[$c.$s]} / $TICK / (${served[$c.$s]} / 1e9)")
        log "   $s, $c: 1 connection${gbps[$c.1.$s]} GB/s; 8 connections${gbps[$c.8.$s]} GB/s; $(fmt "${R[cpugb.$c.$s]}" 3) CPU s/GB"
    done
done

if [[ $ONLY == blob ]]; then
    ROWS=() T=()
    blob_rows
    blob_targets
    {
        echo "Blob lines only (BENCH_ONLY=blob), $(date -u '+%Y-%m-%d %H:%M UTC'), stevedore $REV;"
        echo "load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        echo "| measurement | stevedore | reference | ceiling | ratios | ≥ ref |"
        echo "|---|---:|---:|---:|---|:-:|"
        printf '%s\n' "${ROWS[@]}"
        echo
        printf '%s\n' "${T[@]}"
    } | tee "${BENCH_OUT:-/dev/null}"
    exit 0
fi

# ---------------------------------------------------------------- 2. manifests
sample_rss() { # PID OUTFILE: max VmRSS (kB) while the sampler runs
    local max=0 v
    while kill -0 "$1" 2>/dev/null; do
        v=$(status_kb "$1" VmRSS 2>/dev/null || echo 0)
        ((v > max)) && max=$v && echo "$max" >"$2"
        sleep 0.1
    done
}
echo 0 >"$WORK/rss.st"
echo 0 >"$WORK/rss.ref"
sample_rss "$PID_st" "$WORK/rss.st" &
SAMPLER_st=$!
sample_rss "$PID_ref" "$WORK/rss.ref" &
SAMPLER_ref=$!
PIDS+=("$SAMPLER_st" "$SAMPLER_ref")
manifest_url() {
    local u=URL_$1
    echo "${!u}/v2/bench/big/manifests/v1"
}
declare -A rps p50 p99 wrks
log "2. manifests by tag: HEAD and GET, 64 connections, $REPS × ${SECS}s each, interleaved (hello, stevedore, reference)"
for s in hello st ref; do
    for m in HEAD GET; do
        "$LOADGEN" -c 64 -d 1 -m "$m" -H "$ACCEPT" "$(manifest_url "$s")" >/dev/null  # warm-up
        rps[$m.$s]="" p50[$m.$s]="" p99[$m.$s]=""
    done
    wrks[$s]=""
done
for r in $(seq "$REPS"); do
    for s in hello st ref; do
        for m in HEAD GET; do
            o=$("$LOADGEN" -c 64 -d "$SECS" -m "$m" -H "$ACCEPT" "$(manifest_url "$s")")
            rps[$m.$s]+=" $(kv rps "$o")" p50[$m.$s]+=" $(kv p50_us "$o")" p99[$m.$s]+=" $(kv p99_us "$o")"
        done
        if [[ $r == 1 ]] && command -v wrk >/dev/null; then
            o=$(wrk -t 1 -c 64 -d "${SECS}s" -H "$ACCEPT" "$(manifest_url "$s")" 2>&1 || true)
            wrks[$s]=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$o")
        fi
    done
done
for s in hello st ref; do
    for m in HEAD GET; do
        # shellcheck disable=SC2086
        R[rps$m.$s]=$(median ${rps[$m.$s]})
        # shellcheck disable=SC2086
        R[p50$m.$s]=$(median ${p50[$m.$s]})
        # shellcheck disable=SC2086
        R[p99$m.$s]=$(median ${p99[$m.$s]})
        log "   $s $m:${rps[$m.$s]} req/s; p50 ${R[p50$m.$s]} µs, p99 ${R[p99$m.$s]} µs"
    done
    if [[ -n ${wrks[$s]} ]]; then
        R[wrk.$s]=${wrks[$s]}
        log "   $s wrk GET: ${R[wrk.$s]} req/s"
    fi
done
stop_pid "$SAMPLER_st"
stop_pid "$SAMPLER_ref"
R[rss64.st]=$(cat "$WORK/rss.st")
R[rss64.ref]=$(cat "$WORK/rss.ref")

# ---------------------------------------------------------------- 5. push
for s in st ref; do
    u=URL_$s
    base=${!u}
    # Does a single POST ?digest= with the body work here (distribution 2.8 ignores it)?
    head -c 4096 /dev/urandom >"$WORK/probe"
    code=$(push_single_post "$base" bench/probe "$WORK/probe" "$(sha "$WORK/probe")")
    if [[ $code == 201 ]]; then R[monomode.$s]="POST ?digest="; else R[monomode.$s]="POST + PUT ?digest= (POST ?digest= → $code)"; fi
    log "5. push 256 MiB ($s): monolithic [${R[monomode.$s]}], chunked (16 MiB PATCHes)"
    mono=() chunked=()
    for r in $(seq "$REPS"); do
        f=$WORK/push-mono-$r
        d=$(cat "$f.digest")
        t0=$(now)
        if [[ $code == 201 ]]; then
            [[ $(push_single_post "$base" "bench/push-mono-$r" "$f" "$d") == 201 ]] || die "$s: monolithic push failed"
        else
            put_blob "$base" "bench/push-mono-$r" "$f" "$d"
        fi
        t1=$(now)
        [[ $(blob_size "$base" "bench/push-mono-$r" "$d") == "$BIG" ]] || die "$s: pushed blob missing"
        mono+=("$(calc "$BIG / 1e6 / ($t1 - $t0)")")
        f=$WORK/push-chunked-$r
        d=$(cat "$f.digest")
        t0=$(now)
        push_chunked "$base" "bench/push-chunked-$r" "$f" "$d" "$f.chunks"
        t1=$(now)
        [[ $(blob_size "$base" "bench/push-chunked-$r" "$d") == "$BIG" ]] || die "$s: pushed blob missing"
        chunked+=("$(calc "$BIG / 1e6 / ($t1 - $t0)")")
    done
    R[pushmono.$s]=$(median "${mono[@]}")
    R[pushchunked.$s]=$(median "${chunked[@]}")
    log "   monolithic ${mono[*]} MB/s; chunked ${chunked[*]} MB/s"
done

# ---------------------------------------------------------------- 3. cold pull
pull() { # BASE → "total_seconds ttfb_of_largest_blob"
    local base=$1 t0 t1 f d s pids=() i=0
    t0=$(now)
    curl -sSf -H "$ACCEPT" -o "$WORK/pulled.json" "$base/v2/bench/cold/manifests/v1"
    while read -r f d s; do
        curl -sSf -o /dev/null -w '%{http_code} %{size_download} %{time_starttransfer}\n' \
            "$base/v2/bench/cold/blobs/$d" >"$WORK/pull.$i" &
        pids+=("$!")
        i=$((i + 1))
    done <"$WORK/cold/digests"
    for p in "${pids[@]}"; do wait "$p" || die "a blob GET failed at $base"; done
    t1=$(now)
    i=0
    while read -r f d s; do
        read -r code got _ <"$WORK/pull.$i"
        [[ $code == 200 && $got == "$s" ]] || die "$base: $f came back $code with $got bytes"
        i=$((i + 1))
    done <"$WORK/cold/digests"
    # the largest blob is l0
    echo "$(calc "$t1 - $t0") $(awk '{ print $3 }' "$WORK/pull.0")"
}
hwm_mirror_st=0 hwm_mirror_ref=0
COLD_REPS=$((REPS + 2))
# Two links to the upstream: loopback (the mirror's own overhead at its worst: the upstream is
# faster than a disk write), and a simulated WAN (countproxy pacing all upstream bytes to
# $WAN_RATE B/s). "Straight from the upstream" goes over the same link.
for link in lo wan; do
    if [[ $link == lo ]]; then direct=$URL_up remote=$URL_cp; else direct=$URL_wan remote=$URL_wan; fi
    log "3. cold pull ($link; manifest + 3 blobs, 64 MiB): straight from the upstream and through each mirror, $COLD_REPS×"
    pull "$direct" >/dev/null  # warm the upstream's page cache
    pt_up=() pf_up=() pt_st=() pf_st=() pt_ref=() pf_ref=()
    for r in $(seq "$COLD_REPS"); do
        read -r t f < <(pull "$direct")
        pt_up+=("$t") pf_up+=("$f")
        for s in st ref; do
            kind=stevedore
            [[ $s == ref ]] && kind=reference
            start_registry "$kind" "mirror_$s" "$remote"
            p=PID_mirror_$s u=URL_mirror_$s
            read -r t f < <(pull "${!u}")
            h=$(status_kb "${!p}" VmHWM)
            if [[ $s == st ]]; then
                pt_st+=("$t") pf_st+=("$f")
                ((h > hwm_mirror_st)) && hwm_mirror_st=$h
            else
                pt_ref+=("$t") pf_ref+=("$f")
                ((h > hwm_mirror_ref)) && hwm_mirror_ref=$h
            fi
            stop_pid "${!p}"
        done
    done
    for s in up st ref; do
        t="pt_$s[@]" f="pf_$s[@]"
        R[coldtotal$link.$s]=$(median "${!t}")
        R[coldttfb$link.$s]=$(median "${!f}")
        log "   $s: total ${!t} s; first byte of the largest blob ${!f} s"
    done
    for s in st ref; do
        R[coldratio$link.$s]=$(calc "${R[coldtotal$link.$s]} / ${R[coldtotal$link.up]}")
        R[ttfbratio$link.$s]=$(calc "${R[coldttfb$link.$s]} / ${R[coldttfb$link.up]}")
    done
done

# ---------------------------------------------------------------- 4. concurrent misses
for s in st ref; do
    kind=stevedore
    [[ $s == ref ]] && kind=reference
    log "4. 32 concurrent cold GETs of one 100 MiB blob through $kind"
    start_registry "$kind" "herd_$s" "$URL_cp"
    p=PID_herd_$s u=URL_herd_$s
    b0=$(upstream_bytes)
    t0=$(now)
    pids=()
    for i in $(seq 32); do
        curl -sS -o /dev/null -w '%{http_code} %{size_download}\n' \
            "${!u}/v2/bench/herd/blobs/$HERD_DIGEST" >"$WORK/herd.$s.$i" &
        pids+=("$!")
    done
    for q in "${pids[@]}"; do wait "$q" || true; done
    t1=$(now)
    sleep 0.5
    b1=$(upstream_bytes)
    ok=$(cat "$WORK"/herd."$s".* | awk -v n="$HERD" '$1 == 200 && $2 == n' | wc -l)
    R[herd.$s]=$(calc "($b1 - $b0) / $HERD")
    R[herdok.$s]=$ok
    R[herdtime.$s]=$(calc "$t1 - $t0")
    h=$(status_kb "${!p}" VmHWM)
    if [[ $s == st ]]; then ((h > hwm_mirror_st)) && hwm_mirror_st=$h; else ((h > hwm_mirror_ref)) && hwm_mirror_ref=$h; fi
    stop_pid "${!p}"
    log "   upstream sent $(fmt "${R[herd.$s]}" 3)× the blob; $ok/32 clients got it whole in $(fmt "${R[herdtime.$s]}") s"
done

# ---------------------------------------------------------------- 6. memory
for s in st ref; do
    p=PID_$s
    R[hwm.$s]=$(status_kb "${!p}" VmHWM)
done
R[hwmmirror.st]=$hwm_mirror_st
R[hwmmirror.ref]=$hwm_mirror_ref

# ---------------------------------------------------------------- report
ROWS=()
blob_rows
for m in HEAD GET; do
    row "manifest $m by tag, 64 conns (req/s)" "$(fmt "${R[rps$m.st]}" 0)" "$(fmt "${R[rps$m.ref]}" 0)" \
        "$(fmt "${R[rps$m.hello]}" 0) (hello)" \
        "$(fmt "$(calc "${R[rps$m.st]} / ${R[rps$m.ref]}")" 1)× ref; $(frac "${R[rps$m.st]}" "${R[rps$m.hello]}")% / $(frac "${R[rps$m.ref]}" "${R[rps$m.hello]}")% of hello" \
        "$(better higher "${R[rps$m.st]}" "${R[rps$m.ref]}")"
    row "manifest $m p50 / p99 (ms)" "$(fmt "$(calc "${R[p50$m.st]} / 1000")") / $(fmt "$(calc "${R[p99$m.st]} / 1000")")" \
        "$(fmt "$(calc "${R[p50$m.ref]} / 1000")") / $(fmt "$(calc "${R[p99$m.ref]} / 1000")")" \
        "$(fmt "$(calc "${R[p50$m.hello]} / 1000")") / $(fmt "$(calc "${R[p99$m.hello]} / 1000")") (hello)" "" \
        "$(better lower "${R[p99$m.st]}" "${R[p99$m.ref]}")"
done
if [[ -n ${R[wrk.st]:-} ]]; then
    row "manifest GET, wrk cross-check (req/s)" "$(fmt "${R[wrk.st]}" 0)" "$(fmt "${R[wrk.ref]}" 0)" \
        "$(fmt "${R[wrk.hello]}" 0) (hello)" "$(frac "${R[wrk.st]}" "${R[wrk.hello]}")% / $(frac "${R[wrk.ref]}" "${R[wrk.hello]}")% of hello" \
        "$(better higher "${R[wrk.st]}" "${R[wrk.ref]}")"
fi
for link in lo wan; do
    if [[ $link == lo ]]; then what="loopback"; else what="$(fmt "$(calc "$WAN_RATE / 1e6")" 0) MB/s link"; fi
    row "cold pull, 64 MiB image, $what: total (s)" "$(fmt "${R[coldtotal$link.st]}" 3)" "$(fmt "${R[coldtotal$link.ref]}" 3)" \
        "$(fmt "${R[coldtotal$link.up]}" 3) (upstream)" "$(fmt "${R[coldratio$link.st]}") / $(fmt "${R[coldratio$link.ref]}")× upstream" \
        "$(better lower "${R[coldtotal$link.st]}" "${R[coldtotal$link.ref]}")"
    row "cold pull, $what: first byte of the 40 MiB blob (ms)" "$(fmt "$(calc "${R[coldttfb$link.st]} * 1000")" 1)" \
        "$(fmt "$(calc "${R[coldttfb$link.ref]} * 1000")" 1)" "$(fmt "$(calc "${R[coldttfb$link.up]} * 1000")" 1) (upstream)" \
        "$(fmt "${R[ttfbratio$link.st]}") / $(fmt "${R[ttfbratio$link.ref]}")× upstream" \
        "$(better lower "${R[coldttfb$link.st]}" "${R[coldttfb$link.ref]}")"
done
row "32 concurrent cold GETs of 100 MiB: upstream bytes ÷ blob" "$(fmt "${R[herd.st]}" 3)×" "$(fmt "${R[herd.ref]}" 3)×" "1.000×" \
    "${R[herdok.st]}/32 and ${R[herdok.ref]}/32 whole; $(fmt "${R[herdtime.st]}") s / $(fmt "${R[herdtime.ref]}") s" \
    "$(better lower "${R[herd.st]}" "${R[herd.ref]}")"
row "push 256 MiB monolithic (MB/s)" "$(fmt "${R[pushmono.st]}" 0)" "$(fmt "${R[pushmono.ref]}" 0)" "" \
    "stevedore: ${R[monomode.st]}; reference: ${R[monomode.ref]}" "$(better higher "${R[pushmono.st]}" "${R[pushmono.ref]}")"
row "push 256 MiB chunked, 16 MiB PATCHes (MB/s)" "$(fmt "${R[pushchunked.st]}" 0)" "$(fmt "${R[pushchunked.ref]}" 0)" "" "" \
    "$(better higher "${R[pushchunked.st]}" "${R[pushchunked.ref]}")"
row "peak RSS, plain registry, whole run (MiB)" "$(mib "${R[hwm.st]}")" "$(mib "${R[hwm.ref]}")" "" "VmHWM; the reference is Go (GC heap)" \
    "$(better lower "${R[hwm.st]}" "${R[hwm.ref]}")"
row "peak RSS, mirror, cold pulls and 32 misses (MiB)" "$(mib "${R[hwmmirror.st]}")" "$(mib "${R[hwmmirror.ref]}")" "" "VmHWM, max over the mirror instances" \
    "$(better lower "${R[hwmmirror.st]}" "${R[hwmmirror.ref]}")"
row "RSS at 64 connections (MiB)" "$(mib "${R[rss64.st]}")" "$(mib "${R[rss64.ref]}")" "" "max VmRSS during the manifest runs" \
    "$(better lower "${R[rss64.st]}" "${R[rss64.ref]}")"

TABLE=$(
    echo "| measurement | stevedore | reference | ceiling | ratios | ≥ ref |"
    echo "|---|---:|---:|---:|---|:-:|"
    printf '%s\n' "${ROWS[@]}"
)

# targets
worse=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$7 ~ /✗/ { gsub(/^ +| +$/, "", $2); printf "%s%s", sep, $2; sep = "; " }')
T=()
if [[ -z $worse ]]; then target ✓ "at least as good as the reference on every line"; else target ✗ "at least as good as the reference on every line (worse on: $worse)"; fi
for m in HEAD GET; do
    x=$(calc "${R[rps$m.st]} / ${R[rps$m.ref]}")
    target "$(mark "$x" '>=' 10)" "manifest $m req/s ≥ 10× the reference: $(fmt "$x" 1)×"
    x=$(calc "${R[rps$m.st]} / ${R[rps$m.hello]}")
    target "$(mark "$x" '>=' 0.5)" "manifest $m req/s ≥ half the minimal-hyper ceiling: $(frac "${R[rps$m.st]}" "${R[rps$m.hello]}")%"
done
blob_targets
target "$(mark "${R[coldratiowan.st]}" '<=' 1.05)" "cold pull within 5% of pulling straight from the upstream, over a $(fmt "$(calc "$WAN_RATE / 1e6")" 0) MB/s link: $(fmt "${R[coldratiowan.st]}")× (first byte of the largest blob: $(fmt "${R[ttfbratiowan.st]}")×)"
target "$(mark "${R[coldratiolo.st]}" '<=' 1.05)" "cold pull within 5% of pulling straight from the upstream, over loopback: $(fmt "${R[coldratiolo.st]}")× (first byte of the largest blob: $(fmt "${R[ttfbratiolo.st]}")×)"
target "$(mark "$(fmt "${R[herd.st]}")" '==' 1)" "exactly 1.0× upstream bytes under 32 concurrent misses: $(fmt "${R[herd.st]}" 3)×"
target "$(mark "${R[rss64.st]}" '<' 65536)" "memory under 64 MiB at 64 connections: $(mib "${R[rss64.st]}") MiB"
TARGETS=$(printf '%s\n' "${T[@]}")

echo
echo "$TABLE"
echo
echo "$TARGETS"
log "large cache scenario: $LARGE_SIZES index entries"
LARGE=$(large_cache)

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cat >"$OUT" <<EOF
# Benchmarks

Produced by \`bash bench/run.sh\` (issue 8) on $(date -u '+%Y-%m-%d %H:%M UTC'); every figure below
comes from that one run. Re-run it to refresh this file; it is not part of the test suite.

## Machine and versions

- $(nproc) CPUs: $cpu; $mem of memory; $(uname -sr)
- load average (1, 5, 15 min) when the run started: $LOAD_START; when it ended: $(cut -d' ' -f1-3 /proc/loadavg)
  (the first is taken after this script's build, before its test data; the second includes
  this run's own load generator and servers. Other processes on the machine add noise.)
- $(rustc --version); stevedore $REV, release profile
- reference: $(docker-registry --version 2>&1 | head -1)
- $(nginx -v 2>&1 | head -1); $(curl --version | head -1 | cut -d' ' -f1,2)

## Results

Medians of $REPS repetitions after a warm-up. "≥ ref": ✓ when stevedore is at least as
good as the reference registry on that line.

$TABLE

## Targets (issue 8)

$TARGETS

$LARGE

## How it was measured

Everything runs on 127.0.0.1 of this one machine, the load generator included, so client and
server share the $(nproc) CPUs; the ceilings are measured the same way in the same run, and the
fractions are what to compare across machines.

- Servers: stevedore and the reference registry with the same config.yml keys (filesystem
  storage in a temp dir, in-memory blob descriptor cache, access log off, log level warn); as
  plain registries for the warm and push lines, as mirrors (\`proxy.remoteurl\`) of a third
  process, the reference registry as the upstream, for the cold lines. Test data are random
  blobs pushed over the API, the same bytes to each server.
- Warm blob GET: the 256 MiB blob with three clients: \`examples/loadgen\` (hyper HTTP/1.1
  client draining the body), curl, and \`loadgen --read-size 32768\` (reads the body the way
  Go's net/http under io.Copy does, as dockerd, containerd and skopeo do); one connection × 4
  GETs, and 8 connections × 1 GET each, timed as a whole (GB = 10^9 bytes). Ceiling: nginx
  (sendfile, worker_processes auto) serving the same file.
- Manifests: \`examples/loadgen\`, 64 keep-alive connections, $SECS s per run, the manifest by
  tag with a Docker/OCI Accept header; p50/p99 from an HDR histogram. Ceiling:
  \`examples/hello\`, a minimal hyper server (same builder as stevedore) answering a fixed body.
  wrk (1 thread, 64 connections, GET only: it hangs on HEAD) as a cross-check.
- Cold pull: GET the manifest, then its config and 3 layers (40 + 16 + 8 MiB) in parallel with
  curl; total wall time and curl's time to first byte of the 40 MiB blob; median of $((REPS + 2)).
  Each repetition starts a fresh mirror with an empty store; "upstream" is the same pull
  straight from the upstream over the same link. Two links: loopback (the upstream is faster
  than the mirror's disk; the mirrors reach it through countproxy), and a simulated
  $(fmt "$(calc "$WAN_RATE / 1e6")" 0) MB/s link (countproxy pacing everything the upstream sends, all connections
  together; the direct pull goes through it too).
- Concurrent misses: a fresh mirror, 32 curl GETs of one uncached 100 MiB blob at once;
  \`examples/countproxy\` between the mirror and the upstream counts the bytes the upstream sent.
- Push: a distinct 256 MiB blob per repetition. Monolithic: one \`POST ?digest=\` carrying the
  body where the server supports it; distribution 2.8 ignores \`?digest=\` on POST (answers 202
  and drops the body), so for it the monolithic form is POST then \`PUT ?digest=\` with the body.
  Chunked: POST, 16 PATCHes of 16 MiB with Content-Range, then \`PUT ?digest=\`.
- Memory: VmHWM (peak RSS) from /proc/PID/status; at 64 connections: the highest VmRSS sampled
  every 100 ms during the manifest runs.
- CPU per GB: utime + stime from /proc/PID/stat (÷ CLK_TCK = $TICK) before and after the warm
  blob GETs, over the bytes served (warm-up included); nginx's counts its workers.
EOF
log "wrote $OUT"
