#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind under a fixed wrk load:
# deterministic where wall-clock numbers on a shared 2-core machine are not.
#
# Usage: scripts/callgrind.sh [switchyard binary] [keepalive|close|l4|l4-close|h2c]
#        scripts/callgrind.sh /usr/sbin/haproxy h2c   (HAProxy counted the same way; L7 modes)
#        (needs valgrind, nginx, wrk; h2c needs h2load)
# h2c: a fixed number of prior-knowledge HTTP/2 requests from h2load (CG_H2_REQUESTS, 4
# connections x 25 streams like the bench) to the same HTTP/1.1 backends. It uses ports of its
# own (192xx instead of 191xx), so it can run next to the HTTP/1 modes; CG_PORT_PREFIX picks
# other ports.
# CG_WORKERS=2: switchyard with `workers = 2` (callgrind runs the threads one at a time, so
# this counts the work of both event loops, not their parallelism).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/switchyard}
MODE=${2:-keepalive}
H2_REQUESTS=${CG_H2_REQUESTS:-6000}
# CG_PORT_PREFIX: three digits, the ports used are PREFIX01..PREFIX12 (two runs side by side
# need different prefixes).
P=${CG_PORT_PREFIX:-191}
[ "$MODE" = h2c ] && [ -z "${CG_PORT_PREFIX:-}" ] && P=192
for t in valgrind:valgrind nginx:nginx wrk:wrk h2load:nghttp2-client; do
    command -v "${t%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${t#*:}" >&2
done
WORK=$(mktemp -d /tmp/switchyard-cg.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
cat >"$WORK/back.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/back.pid;
error_log $WORK/back.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:${P}01; location / { return 200 'hello from the backend, a small body of 64 bytes for the bench.'; } }
    server { listen 127.0.0.1:${P}02; location / { return 200 'hello from the backend, a small body of 64 bytes for the bench.'; } }
}
CONF
cat >"$WORK/sy.toml" <<CONF
[server]
listen = "127.0.0.1:${P}10"
workers = ${CG_WORKERS:-1}
access_log = false
[admin]
listen = "127.0.0.1:${P}11"
[[targets]]
address = "127.0.0.1:${P}01"
[[targets]]
address = "127.0.0.1:${P}02"
[[tcp]]
listen = "127.0.0.1:${P}12"
targets = ["127.0.0.1:${P}01", "127.0.0.1:${P}02"]
CONF
nginx -p "$WORK" -c "$WORK/back.conf" &
PIDS+=($!)
if [ "$(basename "$BIN")" = haproxy ]; then
    # The yardstick: HAProxy on the same listeners and backends (one thread, connection reuse),
    # counted the same way. `scripts/callgrind.sh /usr/sbin/haproxy h2c` (or keepalive, close).
    cat >"$WORK/ha.cfg" <<CONF
global
    nbthread 1
    maxconn 6000
defaults
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    maxconn 6000
frontend fe
    mode http
    bind 127.0.0.1:${P}10 $([ "$MODE" = h2c ] && echo "proto h2")
    option http-keep-alive
    default_backend be
backend be
    mode http
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:${P}01
    server b2 127.0.0.1:${P}02
CONF
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" "$BIN" -db -f "$WORK/ha.cfg" 2>"$WORK/vg.log" &
else
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" "$BIN" -c "$WORK/sy.toml" 2>"$WORK/vg.log" &
fi
SP=$!
PIDS+=($SP)
for _ in $(seq 1 150); do (exec 3<>/dev/tcp/127.0.0.1/${P}10) 2>/dev/null && break; sleep 0.2; done
PORT=${P}10
HDR=()
case "$MODE" in *close) HDR=(-H 'Connection: close') ;; esac
case "$MODE" in l4*) PORT=${P}12 ;; esac
if [ "$MODE" = h2c ]; then
    h2() { h2load -t1 -c4 -m25 -n "$1" "http://127.0.0.1:$PORT/"; }
    h2 1000 >/dev/null
    callgrind_control -z "$SP" >/dev/null 2>&1
    N=$(h2 "$H2_REQUESTS" | awk '/^requests:/ {print $8}')
else
    wrk -t1 -c10 -d2s "${HDR[@]}" "http://127.0.0.1:$PORT/" >/dev/null
    callgrind_control -z "$SP" >/dev/null 2>&1
    N=$(wrk -t1 -c10 -d4s "${HDR[@]}" "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
fi
callgrind_control -d "$SP" >/dev/null 2>&1
sleep 0.5
F=$(ls "$WORK"/cg."$SP".1)
IR=$(callgrind_annotate "$F" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$(basename "$BIN") $MODE: $N requests, $IR instructions, $((IR / N)) instructions/request"
if [ -n "${CG_KEEP:-}" ]; then cp "$F" "$CG_KEEP"; fi
