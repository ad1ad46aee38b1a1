#!/usr/bin/env bash
# Side-by-side load test on loopback: switchyard vs HAProxy vs nginx (and direct-to-backend)
# over the same two nginx backends, interleaved rounds, one table with ratios to HAProxy.
#
# Usage: scripts/bench.sh            (BENCH_SECONDS=5 BENCH_ROUNDS=3 BENCH_CONNS=50)
#        BENCH_SCENARIOS="l7-keepalive l4-keepalive" scripts/bench.sh
#        BENCH_TARGETS="switchyard haproxy" BENCH_PIN=0 BENCH_NOBUILD=1 scripts/bench.sh
#        BENCH_BASELINE=/tmp/switchyard-before scripts/bench.sh   (adds target "baseline": an
#        older switchyard binary measured in the same rounds, for before/after numbers)
# Everything listens on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail

SECONDS_PER_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-50}
PIN=${BENCH_PIN:-1}
SCENARIOS=${BENCH_SCENARIOS:-"l7-keepalive l7-close l4-keepalive l4-close"}
TARGETS=${BENCH_TARGETS:-"direct switchyard haproxy nginx"}
if [ -n "${BENCH_BASELINE:-}" ] && [[ " $TARGETS " != *" baseline "* ]]; then
    TARGETS="baseline $TARGETS"
fi
BASE_PORT=${BENCH_BASE_PORT:-18080}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
RAW="$WORK/raw.tsv"

BACK1=$((BASE_PORT + 1))
BACK2=$((BASE_PORT + 2))
SY_HTTP=$((BASE_PORT + 10))
SY_ADMIN=$((BASE_PORT + 11))
SY_TCP=$((BASE_PORT + 12))
HA_HTTP=$((BASE_PORT + 20))
HA_TCP=$((BASE_PORT + 22))
NG_HTTP=$((BASE_PORT + 30))
NG_TCP=$((BASE_PORT + 32))
BL_HTTP=$((BASE_PORT + 40))
BL_ADMIN=$((BASE_PORT + 41))
BL_TCP=$((BASE_PORT + 42))

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    sleep 0.5
    for p in "${PIDS[@]}"; do
        if kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
    done
    if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

need() {
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        # Debian's postinst would start the system services; they must not take our ports.
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        fi
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}
need nginx:nginx haproxy:haproxy wrk:wrk taskset:util-linux
STREAM_MOD=$(ls /usr/lib/nginx/modules/ngx_stream_module.so 2>/dev/null || true)
if [ -z "$STREAM_MOD" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnginx-mod-stream >&2 || true
    STREAM_MOD=$(ls /usr/lib/nginx/modules/ngx_stream_module.so 2>/dev/null || true)
fi

if [ -z "${BENCH_NOBUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
SY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard"

ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

# Two cores: the proxy gets one, the load generator and the backends the other, so that the
# proxy under test never fights wrk for a core and rounds are comparable.
NCPU=$(nproc)
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ]; then
    PROXY_CPU="taskset -c $((NCPU - 1))"
    LOAD_CPU="taskset -c 0-$((NCPU - 2))"
else
    PROXY_CPU=""
    LOAD_CPU=""
fi

BODY='hello from the backend, a small body of 64 bytes for the bench.'

# --- backends: two nginx instances, one worker each, answering a fixed small body.
for port in $BACK1 $BACK2; do
    d="$WORK/back$port"
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location / { return 200 '$BODY'; }
    }
}
EOF
    $LOAD_CPU nginx -p "$d" -c "$d/nginx.conf" >"$d/out.log" 2>&1 &
    PIDS+=($!)
done

# --- switchyard: one worker, no access log.
mkdir -p "$WORK/sy"
cat >"$WORK/sy/config.toml" <<EOF
[server]
listen = "127.0.0.1:$SY_HTTP"
workers = 1
access_log = false
idle_timeout = 60
max_connections = 8000

[admin]
listen = "127.0.0.1:$SY_ADMIN"

[[targets]]
address = "127.0.0.1:$BACK1"

[[targets]]
address = "127.0.0.1:$BACK2"

[[tcp]]
listen = "127.0.0.1:$SY_TCP"
targets = ["127.0.0.1:$BACK1", "127.0.0.1:$BACK2"]
EOF
RUST_LOG=warn $PROXY_CPU "$SY_BIN" -c "$WORK/sy/config.toml" >"$WORK/sy/out.log" 2>&1 &
SY_PID=$!
PIDS+=($SY_PID)
BL_PID=""
if [ -n "${BENCH_BASELINE:-}" ]; then
    mkdir -p "$WORK/bl"
    sed -e "s/:$SY_HTTP\"/:$BL_HTTP\"/; s/:$SY_ADMIN\"/:$BL_ADMIN\"/; s/:$SY_TCP\"/:$BL_TCP\"/" \
        "$WORK/sy/config.toml" >"$WORK/bl/config.toml"
    RUST_LOG=warn $PROXY_CPU "$BENCH_BASELINE" -c "$WORK/bl/config.toml" >"$WORK/bl/out.log" 2>&1 &
    BL_PID=$!
    PIDS+=($BL_PID)
fi

# --- HAProxy: one thread, round robin, keep-alive and connection reuse towards the servers.
mkdir -p "$WORK/ha"
cat >"$WORK/ha/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 6000
    log stderr format raw local0 err
defaults
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    maxconn 6000
frontend fe_http
    mode http
    bind 127.0.0.1:$HA_HTTP
    option http-keep-alive
    default_backend be_http
backend be_http
    mode http
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:$BACK1
    server b2 127.0.0.1:$BACK2
frontend fe_tcp
    mode tcp
    bind 127.0.0.1:$HA_TCP
    default_backend be_tcp
backend be_tcp
    mode tcp
    balance roundrobin
    server b1 127.0.0.1:$BACK1
    server b2 127.0.0.1:$BACK2
EOF
$PROXY_CPU haproxy -db -f "$WORK/ha/haproxy.cfg" >"$WORK/ha/out.log" 2>&1 &
HA_PID=$!
PIDS+=($HA_PID)

# --- nginx as a proxy: one worker, keepalive pool to the upstreams; stream for L4 if loaded.
mkdir -p "$WORK/ng"
NG_STREAM=""
if [ -n "$STREAM_MOD" ]; then
    NG_STREAM="stream {
    upstream st { server 127.0.0.1:$BACK1; server 127.0.0.1:$BACK2; }
    server { listen 127.0.0.1:$NG_TCP; proxy_pass st; }
}"
fi
cat >"$WORK/ng/nginx.conf" <<EOF
${STREAM_MOD:+load_module $STREAM_MOD;}
daemon off;
master_process off;
worker_processes 1;
pid $WORK/ng/nginx.pid;
error_log $WORK/ng/error.log warn;
events { worker_connections 8000; }
worker_rlimit_nofile 16384;
http {
    access_log off;
    keepalive_requests 1000000;
    upstream be {
        server 127.0.0.1:$BACK1;
        server 127.0.0.1:$BACK2;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NG_HTTP backlog=4096;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
$NG_STREAM
EOF
$PROXY_CPU nginx -p "$WORK/ng" -c "$WORK/ng/nginx.conf" >"$WORK/ng/out.log" 2>&1 &
NG_PID=$!
PIDS+=($NG_PID)

wait_port() {
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}
for p in $BACK1 $BACK2 $SY_HTTP $SY_TCP $HA_HTTP $HA_TCP $NG_HTTP; do wait_port "$p"; done
[ -n "$BL_PID" ] && wait_port "$BL_HTTP" && wait_port "$BL_TCP"
[ -n "$STREAM_MOD" ] && wait_port "$NG_TCP"

# CPU ticks (utime + stime) of a process; wrk's -d bounds each run, so this brackets it.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# wrk prints latencies as 812.00us, 1.23ms or 1.01s: to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
        else if (v ~ /m$/) { sub(/m$/, "", v); print v * 60000 }
        else { sub(/s$/, "", v); print v * 1000 }
    }'
}

port_of() { # scenario target -> port ("" when not available)
    local l4=0
    case "$1" in l4-*) l4=1 ;; esac
    case "$2" in
        direct) echo "$BACK1" ;;
        switchyard) [ $l4 = 1 ] && echo "$SY_TCP" || echo "$SY_HTTP" ;;
        baseline) [ $l4 = 1 ] && echo "$BL_TCP" || echo "$BL_HTTP" ;;
        haproxy) [ $l4 = 1 ] && echo "$HA_TCP" || echo "$HA_HTTP" ;;
        nginx) if [ $l4 = 1 ]; then [ -n "$STREAM_MOD" ] && echo "$NG_TCP" || echo ""; else echo "$NG_HTTP"; fi ;;
    esac
}
pid_of() {
    case "$1" in
        switchyard) echo "$SY_PID" ;;
        baseline) echo "$BL_PID" ;;
        haproxy) echo "$HA_PID" ;;
        nginx) echo "$NG_PID" ;;
        *) echo "" ;;
    esac
}

run_one() { # round scenario target
    local port pid hdr=() t0 t1 out rps p50 p99 reqs errs
    port=$(port_of "$2" "$3")
    [ -z "$port" ] && return 0
    pid=$(pid_of "$3")
    case "$2" in *-close) hdr=(-H 'Connection: close') ;; esac
    t0=0
    [ -n "$pid" ] && t0=$(ticks "$pid")
    out=$($LOAD_CPU wrk -t 1 -c "$CONNS" -d "${SECONDS_PER_RUN}s" --latency "${hdr[@]}" \
        "http://127.0.0.1:$port/bench" 2>&1) || true
    t1=0
    [ -n "$pid" ] && t1=$(ticks "$pid")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
    if [ -z "$rps" ]; then
        echo "wrk failed for $2 $3: $out" >&2
        return 0
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rps" "$p50" "$p99" \
        $((t1 - t0)) "$reqs" "$errs" >>"$RAW"
    printf '  round %s %-13s %-10s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %s ticks %s\n' \
        "$1" "$2" "$3" "$rps" "$p50" "$p99" $((t1 - t0)) "$errs" >&2
}

echo "bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "bench: ${ROUNDS} rounds x ${SECONDS_PER_RUN}s, wrk -t1 -c${CONNS}, pinned=${PIN}" >&2
# A short warm-up so the first measured round does not pay for connection pools and page faults.
for s in $SCENARIOS; do
    for t in $TARGETS; do
        port=$(port_of "$s" "$t")
        [ -n "$port" ] && $LOAD_CPU wrk -t 1 -c "$CONNS" -d 1s "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
    done
done
: >"$RAW"
for r in $(seq 1 "$ROUNDS"); do
    for s in $SCENARIOS; do
        for t in $TARGETS; do
            run_one "$r" "$s" "$t"
        done
    done
done

# One table: medians over rounds for req/s and latencies; CPU over the summed rounds.
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F'\t' -v hz="$HZ" '
function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    k = $2 SUBSEP $3
    rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6
    ticks[k] += $7; reqs[k] += $8
    if ($9 != "") errs[k] = errs[k] $9
    if (!(k in seen)) { seen[k] = 1; order[++n] = k }
}
END {
    printf "| scenario | proxy | req/s | p50 ms | p99 ms | CPU s / 1k req | req/s vs HAProxy | p99 vs HAProxy | CPU vs HAProxy |\n"
    printf "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    for (i = 1; i <= n; i++) {
        k = order[i]; split(k, parts, SUBSEP)
        m[k] = median(rps[k]); q50[k] = median(p50[k]); q99[k] = median(p99[k])
        cpu[k] = (parts[2] == "direct" || reqs[k] == 0) ? -1 : ticks[k] / hz / reqs[k] * 1000
    }
    for (i = 1; i <= n; i++) {
        k = order[i]; split(k, parts, SUBSEP); h = parts[1] SUBSEP "haproxy"
        rr = (h in m && m[h] > 0) ? sprintf("%.2f", m[k] / m[h]) : "-"
        pr = (h in q99 && q99[h] > 0) ? sprintf("%.2f", q99[k] / q99[h]) : "-"
        cr = (h in cpu && cpu[h] > 0 && cpu[k] >= 0) ? sprintf("%.2f", cpu[k] / cpu[h]) : "-"
        cs = cpu[k] >= 0 ? sprintf("%.4f", cpu[k]) : "-"
        printf "| %s | %s | %.0f | %.3f | %.3f | %s | %s | %s | %s |%s\n", parts[1], parts[2], m[k], q50[k], q99[k], cs, rr, pr, cr, (k in errs) ? " errors: " errs[k] : ""
    }
}' "$RAW"
if [ -n "${BENCH_RAW_OUT:-}" ]; then cp "$RAW" "$BENCH_RAW_OUT"; fi
