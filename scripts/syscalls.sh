#!/usr/bin/env bash
# Syscalls per proxied request, counted by `strace -c -f` attached to switchyard under a fixed
# wrk load (the same backends and config as scripts/callgrind.sh). The count per request is
# nearly fixed by the code path; only epoll_wait varies a little with how events batch.
#
# Usage: scripts/syscalls.sh [switchyard binary] [keepalive|close|l4|l4-close|h2c]   (needs strace, nginx, wrk)
# h2c: a fixed number of prior-knowledge HTTP/2 requests from h2load (SC_H2_REQUESTS, 4
# connections x 25 streams like the bench and scripts/callgrind.sh).
#        SC_TABLE=1 scripts/syscalls.sh ...   also prints strace's table per syscall
#        SC_WORKERS=2 scripts/syscalls.sh ...   switchyard with `workers = 2`
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/switchyard}
MODE=${2:-keepalive}
for t in strace:strace nginx:nginx wrk:wrk h2load:nghttp2-client; do
    command -v "${t%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${t#*:}" >&2
done
WORK=$(mktemp -d /tmp/switchyard-sc.XXXXXX)
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
    server { listen 127.0.0.1:19201; location / { return 200 'hello from the backend, a small body of 64 bytes for the bench.'; } }
    server { listen 127.0.0.1:19202; location / { return 200 'hello from the backend, a small body of 64 bytes for the bench.'; } }
}
CONF
cat >"$WORK/sy.toml" <<CONF
[server]
listen = "127.0.0.1:19210"
workers = ${SC_WORKERS:-1}
access_log = false
[admin]
listen = "127.0.0.1:19211"
[[targets]]
address = "127.0.0.1:19201"
[[targets]]
address = "127.0.0.1:19202"
[[tcp]]
listen = "127.0.0.1:19212"
targets = ["127.0.0.1:19201", "127.0.0.1:19202"]
CONF
nginx -p "$WORK" -c "$WORK/back.conf" &
PIDS+=($!)
RUST_LOG=warn "$BIN" -c "$WORK/sy.toml" 2>"$WORK/sy.log" &
SP=$!
PIDS+=($SP)
for _ in $(seq 1 150); do (exec 3<>/dev/tcp/127.0.0.1/19210) 2>/dev/null && break; sleep 0.1; done
PORT=19210
HDR=()
case "$MODE" in *close) HDR=(-H 'Connection: close') ;; esac
case "$MODE" in l4*) PORT=19212 ;; esac
h2() { h2load -t1 -c4 -m25 -n "$1" "http://127.0.0.1:$PORT/"; }
if [ "$MODE" = h2c ]; then h2 1000 >/dev/null; else wrk -t1 -c10 -d1s "${HDR[@]}" "http://127.0.0.1:$PORT/" >/dev/null; fi
strace ${SC_STRACE:--c} -f -p "$SP" -o "$WORK/strace.txt" 2>/dev/null &
ST=$!
PIDS+=($ST)
sleep 1
if [ "$MODE" = h2c ]; then
    N=$(h2 "${SC_H2_REQUESTS:-6000}" | awk '/^requests:/ {print $8}')
else
    N=$(wrk -t1 -c10 -d3s "${HDR[@]}" "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
fi
kill -INT "$ST"
wait "$ST" 2>/dev/null || true
CALLS=$(awk '$NF == "total" {print $(NF-2)}' "$WORK/strace.txt")
echo "$(basename "$BIN") $MODE: $N requests, $CALLS syscalls, $(awk -v c="$CALLS" -v n="$N" 'BEGIN {printf "%.2f", c / n}') syscalls/request"
if [ -n "${SC_TABLE:-}" ]; then
    awk -v n="$N" 'NR > 2 && $NF != "total" && $1 !~ /^-/ {
        calls = ($4 ~ /^[0-9]+$/ && NF >= 6) ? $4 : $4; printf "  %-16s %8.3f/request\n", $NF, $4 / n }' "$WORK/strace.txt"
fi
