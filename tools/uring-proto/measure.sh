#!/usr/bin/env bash
# tokio vs io_uring, the same minimal L4 proxy (src/main.rs), next to switchyard's `[[tcp]]`:
# syscalls per request (strace -c -f), user-space instructions per request (callgrind), and
# CPU per request from /proc over interleaved wrk rounds, keep-alive and `Connection: close`.
#
# Usage: tools/uring-proto/measure.sh [switchyard binary]   (needs nginx, wrk, strace, valgrind)
#        UP_SECONDS=5 UP_ROUNDS=3 UP_CONNS=50
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SY=${1:-$ROOT/target/release/switchyard}
SECS=${UP_SECONDS:-5}
ROUNDS=${UP_ROUNDS:-3}
CONNS=${UP_CONNS:-50}
(cd "$HERE" && cargo build --release --quiet)
UP="$HERE/target/release/uring-proto"
WORK=$(mktemp -d /tmp/uring-proto.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
BODY='hello from the backend, a small body of 64 bytes for the bench.'
cat >"$WORK/back.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/back.pid;
error_log $WORK/back.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:19301 reuseport backlog=4096; location / { return 200 '$BODY'; } }
}
CONF
cat >"$WORK/sy.toml" <<CONF
[server]
listen = "127.0.0.1:19310"
workers = 1
access_log = false
[admin]
listen = "127.0.0.1:19311"
[[targets]]
address = "127.0.0.1:19301"
[[tcp]]
listen = "127.0.0.1:19312"
targets = ["127.0.0.1:19301"]
CONF
NCPU=$(nproc)
PROXY_CPU="taskset -c $((NCPU - 1))"
LOAD_CPU="taskset -c 0-$((NCPU > 1 ? NCPU - 2 : 0))"
$LOAD_CPU nginx -p "$WORK" -c "$WORK/back.conf" &
PIDS+=($!)

port_of() { case "$1" in tokio) echo 19320 ;; uring) echo 19321 ;; switchyard) echo 19312 ;; esac; }
start() { # name [wrapper...] -> PID in $P
    local name=$1
    shift
    case "$name" in
        tokio | uring) "$@" "$UP" "$name" "127.0.0.1:$(port_of "$name")" 127.0.0.1:19301 & ;;
        switchyard) RUST_LOG=warn "$@" "$SY" -c "$WORK/sy.toml" & ;;
    esac
    P=$!
    PIDS+=($P)
    for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$(port_of "$name")") 2>/dev/null && return 0; sleep 0.2; done
    echo "$name did not start" >&2
    return 1
}
wrk_run() { # port seconds mode -> requests
    local hdr=()
    [ "$3" = close ] && hdr=(-H 'Connection: close')
    $LOAD_CPU wrk -t1 -c"$CONNS" -d"$2"s "${hdr[@]}" "http://127.0.0.1:$1/" | awk '/requests in/ {print $1}'
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Stops $P and waits until its port is free: the kernel tears an exited process's io_uring
# down after it, listening socket included, and a probe must not reach that one.
stop() { # name
    kill "$P"
    # valgrind does not always end on SIGTERM while the program sleeps in io_uring_enter.
    for _ in $(seq 1 40); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$P" 2>/dev/null || true
    wait "$P" 2>/dev/null || true
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$(port_of "$1")") 2>/dev/null || return 0; sleep 0.05; done
}

echo "uring-proto: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
# --- syscalls per request
for t in tokio uring switchyard; do
    for mode in keepalive close; do
        start "$t" $PROXY_CPU
        port=$(port_of "$t")
        wrk_run "$port" 1 "$mode" >/dev/null
        strace -c -f -p "$P" -o "$WORK/st.txt" 2>/dev/null &
        SPID=$!
        sleep 0.5
        n=$(wrk_run "$port" 3 "$mode")
        kill -INT "$SPID"
        wait "$SPID" 2>/dev/null || true
        # The per-syscall rows' call counts (the total row has no errors column when no call failed).
        calls=$(awk 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ {c += $4} END {print c + 0}' "$WORK/st.txt")
        top=$(awk -v n="$n" 'NR > 2 && $NF != "total" && $NF != "syscall" && $4 ~ /^[0-9]+$/ {printf "%s %.2f, ", $NF, $4 / n}' "$WORK/st.txt" | head -c 200)
        echo "syscalls $t $mode: $(awk -v c="$calls" -v n="$n" 'BEGIN {printf "%.2f", c / n}') per request ($top)"
        stop "$t"
    done
done
# --- user-space instructions per request
for t in tokio uring switchyard; do
    for mode in keepalive close; do
        start "$t" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" 2>/dev/null
        port=$(port_of "$t")
        wrk_run "$port" 2 "$mode" >/dev/null
        callgrind_control -z "$P" >/dev/null 2>&1
        n=$(wrk_run "$port" 4 "$mode")
        callgrind_control -d "$P" >/dev/null 2>&1
        sleep 0.5
        ir=$(callgrind_annotate "$(ls "$WORK"/cg."$P".1)" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        echo "instructions $t $mode: $((ir / n)) per request ($n requests)"
        stop "$t"
        rm -f "$WORK"/cg.*
    done
done
# --- CPU per request, interleaved rounds
declare -A T N
for t in tokio uring switchyard; do start "$t" $PROXY_CPU; eval "PID_$t=$P"; done
for r in $(seq 1 "$ROUNDS"); do
    for mode in keepalive close; do
        for t in tokio uring switchyard; do
            pid=$(eval echo "\$PID_$t")
            a=$(ticks "$pid")
            n=$(wrk_run "$(port_of "$t")" "$SECS" "$mode")
            b=$(ticks "$pid")
            T[$t:$mode]=$((${T[$t:$mode]:-0} + b - a))
            N[$t:$mode]=$((${N[$t:$mode]:-0} + n))
        done
    done
done
HZ=$(getconf CLK_TCK)
for mode in keepalive close; do
    for t in tokio uring switchyard; do
        awk -v t="${T[$t:$mode]}" -v n="${N[$t:$mode]}" -v hz="$HZ" -v s="$SECS" -v r="$ROUNDS" -v name="$t $mode" \
            'BEGIN {printf "cpu %s: %.4f CPU s / 1k req, %.0f req/s\n", name, t / hz / n * 1000, n / (s * r)}'
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
