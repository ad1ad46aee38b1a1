#!/usr/bin/env bash
# Side-by-side load test on loopback: switchyard vs HAProxy vs nginx (and direct-to-backend)
# over the same two nginx backends, interleaved rounds, one table with ratios to HAProxy.
# Scenarios: plain HTTP/1.1 (l7-*), L4 (l4-*), HTTPS (tls-keepalive; tls-new: a new TLS 1.3
# connection with a full handshake per request), HTTP/2 (h2-tls over TLS with ALPN, h2c
# cleartext with prior knowledge), all to HTTP/1.1 backends, ECDSA P-256 certificate.
# Large bodies (big-down: a 1 MiB response, big-up: a 1 MiB upload; "big" selects both) over
# HTTP/1.1 with Content-Length, keep-alive, BENCH_BIG_CONNS (8) connections; HAProxy runs with
# `option splice-auto`, nginx streams (no temp files). CPU s / 1k req is there CPU s per GiB.
# l4-big: the 1 MiB response through the L4 listeners (HAProxy `mode tcp` with splice-auto).
#
# Usage: scripts/bench.sh            (BENCH_SECONDS=5 BENCH_ROUNDS=3 BENCH_CONNS=50)
#        BENCH_SCENARIOS="l7-keepalive l4-keepalive" scripts/bench.sh
#        BENCH_SCENARIOS="tls-keepalive tls-new h2-tls h2c" scripts/bench.sh   (TLS and HTTP/2)
#        BENCH_H2_CONNS=4 BENCH_H2_STREAMS=25 (h2load: 100 streams in flight over 4 connections)
#        BENCH_TLS_NEW_PROCS=8 (parallel `openssl s_time -new` clients for tls-new)
#        BENCH_TARGETS="switchyard haproxy" BENCH_PIN=0 BENCH_NOBUILD=1 scripts/bench.sh
#        BENCH_BASELINE=/tmp/switchyard-before scripts/bench.sh   (adds target "baseline": an
#        older switchyard binary measured in the same rounds, for before/after numbers)
#        BENCH_PGO=1 scripts/bench.sh   (adds target "switchyard-pgo": the profile-guided build
#        of scripts/pgo-build.sh, in the baseline's slot; with BENCH_NOBUILD=1 an existing
#        target/pgo/release/switchyard is used as it is)
#        BENCH_WORKERS=2 scripts/bench.sh   (every proxy with N event loops: switchyard
#        `workers = N`, HAProxy `nbthread N`, nginx `worker_processes N`; with N > 1 the proxies
#        get the last N cores, or all cores when there are no more than N, shared with the load)
# Everything listens on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail

SECONDS_PER_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-50}
PIN=${BENCH_PIN:-1}
SCENARIOS=${BENCH_SCENARIOS:-"l7-keepalive l7-close l4-keepalive l4-close tls-keepalive tls-new h2-tls h2c"}
H2_CONNS=${BENCH_H2_CONNS:-4}
H2_STREAMS=${BENCH_H2_STREAMS:-25}
TLS_NEW_PROCS=${BENCH_TLS_NEW_PROCS:-8}
BIG_CONNS=${BENCH_BIG_CONNS:-8}
WORKERS=${BENCH_WORKERS:-1}
SCENARIOS=$(for s in $SCENARIOS; do [ "$s" = big ] && echo big-down big-up || echo "$s"; done | xargs)
TARGETS=${BENCH_TARGETS:-"direct switchyard haproxy nginx"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The name the baseline slot is reported under.
BL_NAME=baseline
if [ "${BENCH_PGO:-0}" = 1 ]; then
    PGO_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/pgo/release/switchyard"
    if [ -z "${BENCH_NOBUILD:-}" ] || [ ! -x "$PGO_BIN" ]; then
        PGO_BIN=$("$ROOT/scripts/pgo-build.sh" | tail -n 1)
    fi
    BENCH_BASELINE=$PGO_BIN
    BL_NAME=switchyard-pgo
fi
if [ -n "${BENCH_BASELINE:-}" ] && [[ " $TARGETS " != *" baseline "* ]]; then
    TARGETS="baseline $TARGETS"
fi
BASE_PORT=${BENCH_BASE_PORT:-18080}
WORK=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
RAW="$WORK/raw.tsv"

BACK1=$((BASE_PORT + 1))
BACK2=$((BASE_PORT + 2))
SY_HTTP=$((BASE_PORT + 10))
SY_ADMIN=$((BASE_PORT + 11))
SY_TCP=$((BASE_PORT + 12))
SY_TLS=$((BASE_PORT + 13))
HA_HTTP=$((BASE_PORT + 20))
HA_TCP=$((BASE_PORT + 22))
HA_TLS=$((BASE_PORT + 23))
HA_H2C=$((BASE_PORT + 24))
NG_HTTP=$((BASE_PORT + 30))
NG_TCP=$((BASE_PORT + 32))
NG_TLS=$((BASE_PORT + 33))
NG_H2C=$((BASE_PORT + 34))
BL_HTTP=$((BASE_PORT + 40))
BL_ADMIN=$((BASE_PORT + 41))
BL_TCP=$((BASE_PORT + 42))
BL_TLS=$((BASE_PORT + 43))

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

# shellcheck source=scripts/loopback-lib.sh
. "$ROOT/scripts/loopback-lib.sh"
need nginx:nginx haproxy:haproxy wrk:wrk taskset:util-linux h2load:nghttp2-client openssl:openssl curl:curl
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
if [ "$PIN" = 1 ] && [ "$NCPU" -gt "$WORKERS" ]; then
    PROXY_CPU="taskset -c $((NCPU - WORKERS))-$((NCPU - 1))"
    LOAD_CPU="taskset -c 0-$((NCPU - WORKERS - 1))"
else
    PROXY_CPU=""
    LOAD_CPU=""
fi

# The big-down body, served by the backends from a file (sendfile), and the big-up request.
backend_files "$WORK"

# --- one ECDSA P-256 certificate for every TLS listener (HAProxy wants cert and key in one file).
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/both.pem"

# --- backends: two nginx instances, one worker each, answering a fixed small body.
for port in $BACK1 $BACK2; do
    d="$WORK/back$port"
    mkdir -p "$d"
    backend_conf "$WORK" "$d" "$port"
    $LOAD_CPU nginx -p "$d" -c "$d/nginx.conf" >"$d/out.log" 2>&1 &
    PIDS+=($!)
done

# --- switchyard: one worker, no access log.
mkdir -p "$WORK/sy"
cat >"$WORK/sy/config.toml" <<EOF
[server]
listen = "127.0.0.1:$SY_HTTP"
workers = $WORKERS
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

[tls]
listen = "127.0.0.1:$SY_TLS"
min_version = "1.3"

[[tls.certificates]]
cert = "$WORK/tls/cert.pem"
key = "$WORK/tls/key.pem"
EOF
RUST_LOG=warn $PROXY_CPU "$SY_BIN" -c "$WORK/sy/config.toml" >"$WORK/sy/out.log" 2>&1 &
SY_PID=$!
PIDS+=($SY_PID)
BL_PID=""
if [ -n "${BENCH_BASELINE:-}" ]; then
    mkdir -p "$WORK/bl"
    sed -e "s/:$SY_HTTP\"/:$BL_HTTP\"/; s/:$SY_ADMIN\"/:$BL_ADMIN\"/; s/:$SY_TCP\"/:$BL_TCP\"/" \
        -e "s/:$SY_TLS\"/:$BL_TLS\"/" \
        "$WORK/sy/config.toml" >"$WORK/bl/config.toml"
    RUST_LOG=warn $PROXY_CPU "$BENCH_BASELINE" -c "$WORK/bl/config.toml" >"$WORK/bl/out.log" 2>&1 &
    BL_PID=$!
    PIDS+=($BL_PID)
fi

# --- HAProxy: one thread, round robin, keep-alive and connection reuse towards the servers.
mkdir -p "$WORK/ha"
cat >"$WORK/ha/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 6000
    log stderr format raw local0 err
defaults
    option splice-auto
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    maxconn 6000
frontend fe_http
    mode http
    bind 127.0.0.1:$HA_HTTP
    bind 127.0.0.1:$HA_TLS ssl crt $WORK/tls/both.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
    bind 127.0.0.1:$HA_H2C proto h2
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
master_process $([ "$WORKERS" -gt 1 ] && echo on || echo off);
worker_processes $WORKERS;
pid $WORK/ng/nginx.pid;
error_log $WORK/ng/error.log warn;
events { worker_connections 8000; }
worker_rlimit_nofile 16384;
http {
    access_log off;
    keepalive_requests 1000000;
    # Large bodies are streamed both ways, as switchyard and HAProxy do, not spooled to disk.
    client_max_body_size 4m;
    proxy_request_buffering off;
    proxy_max_temp_file_size 0;
    upstream be {
        server 127.0.0.1:$BACK1;
        server 127.0.0.1:$BACK2;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NG_HTTP backlog=4096;
        listen 127.0.0.1:$NG_TLS ssl http2 backlog=4096;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    # nginx 1.22 speaks cleartext HTTP/2 (prior knowledge) only on a port of its own.
    server {
        listen 127.0.0.1:$NG_H2C http2 backlog=4096;
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
for p in $BACK1 $BACK2 $SY_HTTP $SY_TCP $SY_TLS $HA_HTTP $HA_TCP $HA_TLS $HA_H2C $NG_HTTP $NG_TLS $NG_H2C; do
    wait_port "$p"
done
[ -n "$BL_PID" ] && wait_port "$BL_HTTP" && wait_port "$BL_TCP"
[ -n "$STREAM_MOD" ] && wait_port "$NG_TCP"

# CPU ticks (utime + stime) of a process and its children (nginx's workers under its master
# with BENCH_WORKERS > 1); wrk's -d bounds each run, so this brackets it.
ticks() {
    local p t=0
    for p in "$1" $(cat "/proc/$1/task/"*/children 2>/dev/null); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
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
    case "$1" in
        tls-* | h2-tls)
            case "$2" in
                switchyard) echo "$SY_TLS" ;; baseline) echo "$BL_TLS" ;;
                haproxy) echo "$HA_TLS" ;; nginx) echo "$NG_TLS" ;; *) echo "" ;;
            esac
            return 0 ;;
        h2c)
            case "$2" in
                switchyard) echo "$SY_HTTP" ;; baseline) echo "$BL_HTTP" ;;
                haproxy) echo "$HA_H2C" ;; nginx) echo "$NG_H2C" ;; *) echo "" ;;
            esac
            return 0 ;;
        l4-*) l4=1 ;;
    esac
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

# One measured run with the load generator the scenario needs; sets RPS REQS P50 P99 ERRS
# (latencies empty where the tool gives no percentiles).
#   wrk:     plain and TLS HTTP/1.1, keep-alive or `Connection: close` (l7-*, l4-*, tls-keepalive)
#   s_time:  tls-new. wrk and h2load resume TLS sessions when they reconnect (checked against
#            nginx's $ssl_session_reused); `openssl s_time -new` never does, so every
#            connection is a full handshake. It is sequential, hence several in parallel.
#   h2load:  h2-tls / h2c, H2_CONNS connections x H2_STREAMS concurrent streams.
load() { # scenario port seconds
    local hdr=() out i t0 t1 total=0 pids=()
    RPS="" REQS="" P50="" P99="" ERRS=""
    case "$1" in
        tls-new)
            t0=$(date +%s.%N)
            for i in $(seq 1 "$TLS_NEW_PROCS"); do
                $LOAD_CPU openssl s_time -connect "127.0.0.1:$2" -new -tls1_3 -www /bench \
                    -time "$3" >"$WORK/stime.$i" 2>&1 &
                pids+=($!)
            done
            wait "${pids[@]}" || true
            t1=$(date +%s.%N)
            for i in $(seq 1 "$TLS_NEW_PROCS"); do
                n=$(awk '/connections in .* real seconds/ {print $1}' "$WORK/stime.$i")
                total=$((total + ${n:-0}))
                bpc=$(awk '/bytes read per connection/ {print $(NF-4)}' "$WORK/stime.$i")
            done
            [ "$total" -gt 0 ] || { ERRS="s_time: $(head -c 300 "$WORK/stime.1")"; return 0; }
            REQS=$total
            RPS=$(awk -v n="$total" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", n / (b - a)}')
            # A 200 with the 64-byte body is ~200 bytes; an error page would differ.
            [ "${bpc:-0}" -ge 150 ] || ERRS="only ${bpc:-0} bytes per connection "
            ;;
        h2-tls | h2c)
            local scheme=https
            [ "$1" = h2c ] && scheme=http
            out=$($LOAD_CPU h2load -t 1 -c "$H2_CONNS" -m "$H2_STREAMS" -D "$3" \
                "$scheme://127.0.0.1:$2/bench" 2>&1) || true
            RPS=$(awk '/^finished in/ {print $4}' <<<"$out")
            REQS=$(awk '/^requests:/ {print $8}' <<<"$out")
            ERRS=$(awk '/^requests:/ && ($10 + $12 + $14) > 0 {printf "%s failed, %s errored, %s timeout ", $10, $12, $14}
                /^status codes:/ && ($5 + $7 + $9) > 0 {printf "non-2xx: %s ", $5 + $7 + $9}' <<<"$out")
            [ -n "$RPS" ] || ERRS="h2load: $(head -c 300 <<<"$out")"
            ;;
        *)
            local url="http://127.0.0.1:$2/bench" conns=$CONNS
            case "$1" in *-close) hdr=(-H 'Connection: close') ;; esac
            case "$1" in tls-*) url="https://127.0.0.1:$2/bench" ;; esac
            case "$1" in
                big-down | l4-big) url="http://127.0.0.1:$2/big" conns=$BIG_CONNS ;;
                big-up) url="http://127.0.0.1:$2/upload" conns=$BIG_CONNS hdr=(-s "$WORK/upload.lua") ;;
            esac
            out=$($LOAD_CPU wrk -t 1 -c "$conns" -d "${3}s" --latency "${hdr[@]}" "$url" 2>&1) || true
            RPS=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
            REQS=$(awk '/requests in/ {print $1}' <<<"$out")
            P50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
            P99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
            ERRS=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
            [ -n "$RPS" ] || ERRS="wrk: $(head -c 300 <<<"$out")"
            ;;
    esac
}

run_one() { # round scenario target
    local port pid t0 t1
    port=$(port_of "$2" "$3")
    [ -z "$port" ] && return 0
    pid=$(pid_of "$3")
    t0=0
    [ -n "$pid" ] && t0=$(ticks "$pid")
    load "$2" "$port" "$SECONDS_PER_RUN"
    t1=0
    [ -n "$pid" ] && t1=$(ticks "$pid")
    if [ -z "$RPS" ]; then
        echo "load failed for $2 $3: $ERRS" >&2
        return 0
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$RPS" "${P50:-0}" "${P99:-0}" \
        $((t1 - t0)) "$REQS" "$ERRS" >>"$RAW"
    printf '  round %s %-13s %-10s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %s ticks %s\n' \
        "$1" "$2" "$3" "$RPS" "${P50:-0}" "${P99:-0}" $((t1 - t0)) "$ERRS" >&2
}

# Each TLS / HTTP/2 listener answers 200 to the request its scenario sends, or the scenario is
# skipped for it (a proxy without the feature); the negotiated protocol is printed.
preflight() { # scenario port -> 0 if usable
    local r
    case "$1" in
        tls-*) r=$(curl -sk --tlsv1.3 --http1.1 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$2/bench") ;;
        h2-tls) r=$(curl -sk --http2 -o /dev/null -w '%{http_code} %{http_version}' "https://127.0.0.1:$2/bench") ;;
        h2c) r=$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version}' "http://127.0.0.1:$2/bench") ;;
        *) return 0 ;;
    esac
    case "$1:$r" in
        tls-*:200 | h2-tls:"200 2" | h2c:"200 2") ;;
        *) echo "bench: $1 on port $2 answered '$r'; skipped" >&2; return 1 ;;
    esac
    if [ "$1" = tls-new ]; then
        # s_time sends a bare `GET /bench HTTP/1.0` without Host: it must be answered 200 too.
        r=$(printf 'GET /bench HTTP/1.0\r\n\r\n' | timeout 5 openssl s_client -quiet -tls1_3 \
            -connect "127.0.0.1:$2" 2>/dev/null | head -1 | tr -d '\r')
        case "$r" in *" 200"*) ;; *) echo "bench: tls-new on $2 answered '$r'; skipped" >&2; return 1 ;; esac
    fi
    return 0
}
SKIP=" "
for s in $SCENARIOS; do
    for t in $TARGETS; do
        port=$(port_of "$s" "$t")
        [ -n "$port" ] || continue
        preflight "$s" "$port" || SKIP="$SKIP$s:$t "
    done
done
if [ -n "$(printf '%s' "$SCENARIOS" | grep -E 'tls|h2-tls')" ]; then
    for t in $TARGETS; do
        port=$(port_of tls-keepalive "$t")
        [ -n "$port" ] || continue
        echo "bench: $t TLS: $(echo | timeout 5 openssl s_client -connect "127.0.0.1:$port" 2>/dev/null |
            awk '/^New,/ {v = $2 " " $NF} /Server Temp Key/ {sub(/.*Key: /, ""); k = $0}
                /Peer signature type/ {sig = $NF} END {print v, "key exchange", k, "signature", sig}')" >&2
    done
fi

echo "bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "bench: ${ROUNDS} rounds x ${SECONDS_PER_RUN}s, wrk -t1 -c${CONNS}, pinned=${PIN}, workers=${WORKERS}" >&2
# A short warm-up so the first measured round does not pay for connection pools and page faults.
for s in $SCENARIOS; do
    for t in $TARGETS; do
        port=$(port_of "$s" "$t")
        [ -n "$port" ] && [[ "$SKIP" != *" $s:$t "* ]] && load "$s" "$port" 1 >/dev/null 2>&1 || true
    done
done
: >"$RAW"
for r in $(seq 1 "$ROUNDS"); do
    for s in $SCENARIOS; do
        for t in $TARGETS; do
            [[ "$SKIP" == *" $s:$t "* ]] || run_one "$r" "$s" "$t"
        done
    done
done

# One table: medians over rounds for req/s and latencies; CPU over the summed rounds.
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F'\t' -v hz="$HZ" -v bl="$BL_NAME" '
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
    printf "| scenario | proxy | req/s | p50 ms | p99 ms | CPU s / 1k req | req/s vs HAProxy | p99 vs HAProxy | CPU vs HAProxy | CPU vs nginx |\n"
    printf "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
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
        g = parts[1] SUBSEP "nginx"
        cg = (g in cpu && cpu[g] > 0 && cpu[k] >= 0) ? sprintf("%.2f", cpu[k] / cpu[g]) : "-"
        cs = cpu[k] >= 0 ? sprintf("%.4f", cpu[k]) : "-"
        l50 = q50[k] > 0 ? sprintf("%.3f", q50[k]) : "-"; l99 = q99[k] > 0 ? sprintf("%.3f", q99[k]) : "-"
        name = parts[2] == "baseline" ? bl : parts[2]
        printf "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |%s\n", parts[1], name, m[k], l50, l99, cs, rr, pr, cr, cg, (k in errs) ? " errors: " errs[k] : ""
    }
}' "$RAW"
if [ -n "${BENCH_RAW_OUT:-}" ]; then cp "$RAW" "$BENCH_RAW_OUT"; fi
