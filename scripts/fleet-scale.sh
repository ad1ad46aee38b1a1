#!/usr/bin/env bash
# Fleet scale at rest: one real etcd, FLEET_SERVICES registered services (1,000) and
# FLEET_REPLICAS switchyard replicas (50) on loopback. For each mode it reports what etcd sends
# its gRPC clients per replica per second while nothing changes (from etcd's own /metrics,
# etcd_network_client_grpc_sent_bytes_total), etcd's and the replicas' CPU over the same window
# (/proc), the time from one new registration's POST until every replica routes it, and each
# replica's own time to rebuild its table for that event (from its log). With 50 replicas on
# a 2-core machine, propagation is bounded by 50 rebuilds sharing 2 cores; on a real fleet each
# replica rebuilds on its own CPU, so the per-replica rebuild time is the figure that carries.
#
# Modes: "before" = every full_refresh_interval reads the whole prefix (the behaviour before
# the cheap check, kept behind SWITCHYARD_FLEET_ALWAYS_FULL_REFRESH=1, or an older binary given
# as FLEET_BEFORE_BIN); "after" = the cheap revision check (store/mirror.rs).
#
# Usage: scripts/fleet-scale.sh
#        FLEET_REPLICAS=50 FLEET_SERVICES=1000 FLEET_REFRESH=1 FLEET_SECONDS=10 \
#        FLEET_MODES="before after" FLEET_NOBUILD=1 scripts/fleet-scale.sh
# Everything listens on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail

REPLICAS=${FLEET_REPLICAS:-50}
SERVICES=${FLEET_SERVICES:-1000}
REFRESH=${FLEET_REFRESH:-1}
MEASURE=${FLEET_SECONDS:-10}
MODES=${FLEET_MODES:-"before after"}
BASE=${FLEET_BASE_PORT:-24000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/switchyard-fleet-scale.XXXXXX)
ETCD_PORT=$BASE
PEER_PORT=$((BASE + 1))
BACK_PORT=$((BASE + 2))
ETCD="http://127.0.0.1:$ETCD_PORT"

for bin in etcd python3 curl; do
    command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install etcd-server python3 curl)" >&2; exit 1; }
done

PIDS=()
REPLICA_PIDS=()
stop_pids() { # pid...
    local p
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        local alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.1
    done
    for p in "$@"; do kill -9 "$p" 2>/dev/null || true; done
}
cleanup() {
    stop_pids "${REPLICA_PIDS[@]}" "${PIDS[@]}" 2>/dev/null || true
    if [ -z "${FLEET_KEEP:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

if [ -z "${FLEET_NOBUILD:-}" ]; then
    (cd "$ROOT" && nice cargo build --release --quiet)
fi
SY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard"
BEFORE_BIN=${FLEET_BEFORE_BIN:-$SY_BIN}
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

# The stdlib-only helper: a backend, the seeding of the registry through etcd's JSON gateway,
# and the propagation probe (one keep-alive connection and one thread per replica).
cat >"$WORK/helper.py" <<'EOF'
import base64, http.client, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def b64(s):
    return base64.b64encode(s.encode()).decode()

def backend(port):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()

def seed(etcd_port, back_port, n):
    c = http.client.HTTPConnection("127.0.0.1", etcd_port, timeout=5)
    size = 0
    for i in range(n):
        name = "svc-%04d" % i
        reg = {"service": name, "url": "http://127.0.0.1:%d" % back_port,
               "routes": [{"path": "/%s/*" % name}, {"path": "/%s-v2/*" % name}]}
        key = "/switchyard/services/" + name
        val = json.dumps(reg)
        size += len(key) + len(val)
        c.request("POST", "/v3/kv/put", json.dumps({"key": b64(key), "value": b64(val)}))
        r = c.getresponse(); r.read()
        if r.status != 200:
            sys.exit("etcd put failed: %d" % r.status)
    print(size)

def propagate(admin_port, back_port, name, ports, limit):
    ports = [int(p) for p in ports.split(",")]
    seen = [None] * len(ports)
    start = threading.Event()
    t0 = [0.0]
    def poll(i, port):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        start.wait()
        while time.monotonic() - t0[0] < limit:
            try:
                c.request("GET", "/%s/x" % name)
                r = c.getresponse(); r.read()
                if r.status == 200:
                    seen[i] = time.monotonic() - t0[0]
                    return
            except Exception:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            time.sleep(0.002)
    threads = [threading.Thread(target=poll, args=(i, p)) for i, p in enumerate(ports)]
    for t in threads:
        t.start()
    body = json.dumps({"service": name, "url": "http://127.0.0.1:%d" % back_port,
                       "routes": [{"path": "/%s/*" % name}]})
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    t0[0] = time.monotonic()
    start.set()
    c.request("POST", "/internal/register-service", body, {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit("registration failed: %d" % r.status)
    for t in threads:
        t.join()
    missing = sum(1 for s in seen if s is None)
    ok = sorted(s for s in seen if s is not None)
    if missing or not ok:
        print("%d of %d replicas never routed it within %.0f s" % (missing, len(ports), limit))
        sys.exit(1)
    print("%.0f %.0f" % (ok[len(ok) // 2] * 1000, ok[-1] * 1000))

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "backend":
        backend(int(sys.argv[2]))
    elif cmd == "seed":
        seed(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "propagate":
        propagate(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6]))
EOF

wait_http() { # url seconds
    local i
    for i in $(seq 1 $(($2 * 10))); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no answer from $1 within $2 s" >&2
    return 1
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sum_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo $t; }
HZ=$(getconf CLK_TCK)
etcd_sent() { curl -sf "$ETCD/metrics" | awk '$1 == "etcd_network_client_grpc_sent_bytes_total" {printf "%.0f", $2}'; }

etcd --name scale --data-dir "$WORK/etcd" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "scale=http://127.0.0.1:$PEER_PORT" >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
PIDS+=($ETCD_PID)
python3 "$WORK/helper.py" backend "$BACK_PORT" &
PIDS+=($!)
wait_http "$ETCD/health" 20
TABLE_BYTES=$(python3 "$WORK/helper.py" seed "$ETCD_PORT" "$BACK_PORT" "$SERVICES")
echo "fleet-scale: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $SERVICES services" \
    "($TABLE_BYTES bytes of keys and values), $REPLICAS replicas, full_refresh_interval = $REFRESH s," \
    "${MEASURE}s at rest per mode" >&2

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
run_mode() { # mode
    local mode=$1 bin=$SY_BIN env=() i port admin ports=() b0 b1 e0 e1 s0 s1 prop rebuild
    if [ "$mode" = before ]; then
        bin=$BEFORE_BIN
        env=(SWITCHYARD_FLEET_ALWAYS_FULL_REFRESH=1)
    fi
    REPLICA_PIDS=()
    for i in $(seq 0 $((REPLICAS - 1))); do
        port=$((BASE + 100 + 2 * i))
        admin=$((port + 1))
        ports+=($port)
        mkdir -p "$WORK/$mode/r$i"
        cat >"$WORK/$mode/r$i/config.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
workers = 1
access_log = false
max_connections = 64

[admin]
listen = "127.0.0.1:$admin"

[gateway]
registration_rate_limit = 100000

[store]
kind = "etcd"
endpoints = ["$ETCD"]
prefix = "/switchyard/"
full_refresh_interval = $REFRESH
EOF
        env "${env[@]}" RUST_LOG=info "$bin" -c "$WORK/$mode/r$i/config.toml" \
            >"$WORK/$mode/r$i/out.log" 2>&1 &
        REPLICA_PIDS+=($!)
    done
    for i in $(seq 0 $((REPLICAS - 1))); do
        wait_http "http://127.0.0.1:$((BASE + 101 + 2 * i))/ready" 60
    done
    sleep 3 # past the start-up loads
    b0=$(etcd_sent); e0=$(ticks "$ETCD_PID"); s0=$(sum_ticks "${REPLICA_PIDS[@]}")
    sleep "$MEASURE"
    b1=$(etcd_sent); e1=$(ticks "$ETCD_PID"); s1=$(sum_ticks "${REPLICA_PIDS[@]}")
    prop=$(python3 "$WORK/helper.py" propagate "$((BASE + 101))" "$BACK_PORT" "probe-$mode" \
        "$(IFS=,; echo "${ports[*]}")" 5) || prop="failed: $prop"
    # Each replica's own time to rebuild its table for that one event (its info log line).
    sleep 0.5
    rebuild=$(for i in $(seq 0 $((REPLICAS - 1))); do
        grep -o 'table rebuilt in [0-9.]* ms' "$WORK/$mode/r$i/out.log" | tail -1 | awk '{print $4}'
    done | sort -n | awk '{v[NR] = $1} END {if (NR) printf "%s %s", v[int((NR + 1) / 2)], v[NR]; else print "- -"}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" $((b1 - b0)) $((e1 - e0)) $((s1 - s0)) "$prop" "$rebuild" >>"$RESULTS"
    echo "  $mode: etcd sent $((b1 - b0)) bytes in ${MEASURE}s; propagation p50/max ms: $prop;" \
        "rebuild per replica p50/max ms: $rebuild" >&2
    stop_pids "${REPLICA_PIDS[@]}"
    REPLICA_PIDS=()
}
for m in $MODES; do run_mode "$m"; done

echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F'\t' -v n="$REPLICAS" -v secs="$MEASURE" -v hz="$HZ" '
{
    bps = $2 / secs / n
    split($5, p, " "); split($6, r, " ")
    rows[NR] = sprintf("| %s | %.0f | %.2f | %.1f%% | %.2f%% | %s | %s | %s | %s |", $1, bps, bps / 1024, \
        $3 / hz / secs * 100, $4 / hz / secs / n * 100, p[1], p[2], r[1], r[2])
    per[$1] = bps
}
END {
    print "| mode | etcd bytes/s per replica | KiB/s per replica | etcd CPU | CPU per replica | propagation p50 ms | propagation max ms | rebuild p50 ms | rebuild max ms |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= NR; i++) print rows[i]
    if (("before" in per) && ("after" in per) && per["after"] > 0)
        printf "\nat rest, after / before: %.4f (%.0fx less)\n", per["after"] / per["before"], per["before"] / per["after"]
}' "$RESULTS"
