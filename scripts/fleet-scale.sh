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
PROBES=${FLEET_PROBES:-3}
GAP=${FLEET_GAP:-1}
POLL_MS=${FLEET_POLL_MS:-10}
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
    if [ -n "${ETCD_TMPFS:-}" ]; then rm -rf "$ETCD_TMPFS"; fi
}
trap cleanup EXIT INT TERM

if [ -z "${FLEET_NOBUILD:-}" ]; then
    (cd "$ROOT" && nice cargo build --release --quiet)
fi
SY_BIN=${FLEET_BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard"}
BEFORE_BIN=${FLEET_BEFORE_BIN:-$SY_BIN}
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

# The stdlib-only helper: a backend, the seeding of the registry through etcd's JSON gateway,
# and the propagation probe (one keep-alive connection and one thread per replica).
cat >"$WORK/helper.py" <<'EOF'
import base64, calendar, http.client, json, os, re, resource, selectors, socket, sys, time
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
    class Server(ThreadingHTTPServer):
        # The first routed request of every replica connects here at about the same moment:
        # with the default listen backlog of 5, SYNs beyond it were dropped and retried by
        # the kernel after 1 s (then 3 s), which the probe counted as propagation.
        request_queue_size = 1024
        daemon_threads = True
    Server(("127.0.0.1", port), H).serve_forever()

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

def cpu_ns(pids):
    # Every thread's run time (schedstat is in ns, finer than /proc/PID/stat's ticks).
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass
    return total

def propagate(admin_port, back_port, name, ports, limit, poll_ms, pids, detail):
    # One keep-alive connection per replica, all driven by this one thread (selectors, raw
    # HTTP/1.1): each asks for the new service's path again poll_ms after its last answer,
    # until it answers 200. One thread keeps the probe's own CPU small: the probe shares the
    # replicas' cores, and fifty Python threads polling every 2 ms took more CPU than the
    # fifty rebuilds they timed. Prints p50 and max ms from the POST until routed, the POST's
    # own answer time, the wall clock of the POST (for the log breakdown), the replicas' and
    # this probe's CPU ms over the propagation.
    ports = [int(p) for p in ports.split(",")]
    pids = [int(p) for p in pids.split(",")]
    n = len(ports)
    req = ("GET /%s/x HTTP/1.1\r\nHost: probe\r\n\r\n" % name).encode()
    seen = [None] * n
    # Per replica: requests sent, errors, the slowest answer (ms) and when it was sent.
    stats = [[0, 0, 0.0, 0.0] for _ in ports]
    socks = [None] * n
    bufs = [b""] * n
    sent_at = [0.0] * n
    due = [0.0] * n  # when to send next; 0 = waiting for an answer
    sel = selectors.DefaultSelector()
    def connect(i):
        if socks[i] is not None:
            sel.unregister(socks[i]); socks[i].close()
        s = socket.create_connection(("127.0.0.1", ports[i]), timeout=2)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks[i] = s
        bufs[i] = b""
        sel.register(s, selectors.EVENT_READ, i)
    for i in range(n):
        connect(i)
    def send(i, now):
        sent_at[i] = now
        due[i] = 0.0
        stats[i][0] += 1
        try:
            socks[i].send(req)
        except OSError:
            stats[i][1] += 1
            connect(i)
            due[i] = now + poll_ms / 1000.0
    def answer(i):
        # A complete answer in bufs[i]: its status, or None while incomplete.
        head, sep, rest = bufs[i].partition(b"\r\n\r\n")
        if not sep:
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        if len(rest) < length:
            return None
        bufs[i] = rest[length:]
        return int(head.split(b" ", 2)[1])
    body = json.dumps({"service": name, "url": "http://127.0.0.1:%d" % back_port,
                       "routes": [{"path": "/%s/*" % name}]})
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    c.connect()
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    rep0 = cpu_ns(pids)
    wall0 = time.time()
    t0 = time.monotonic()
    for i in range(n):
        send(i, t0)
    c.request("POST", "/internal/register-service", body, {"Content-Type": "application/json"})
    post = None
    # The POST's answer is read blocking only once it is there (its socket joins the loop).
    sel.register(c.sock, selectors.EVENT_READ, -1)
    left = n
    while left and time.monotonic() - t0 < limit:
        now = time.monotonic()
        pending = [d for d in due if d > 0]
        wait = max(0.0, min(pending) - now) if pending else 0.05
        for key, _ in sel.select(min(wait, 0.05)):
            i = key.data
            if i < 0:
                sel.unregister(c.sock)
                r = c.getresponse(); r.read()
                post = time.monotonic() - t0
                if r.status != 200:
                    sys.exit("registration failed: %d" % r.status)
                continue
            try:
                data = socks[i].recv(65536)
            except OSError:
                data = b""
            now = time.monotonic()
            if not data:
                stats[i][1] += 1
                connect(i)
                due[i] = now + poll_ms / 1000.0
                continue
            bufs[i] += data
            status = answer(i)
            if status is None:
                continue
            took = now - sent_at[i]
            if took * 1000 > stats[i][2]:
                stats[i][2] = took * 1000
                stats[i][3] = (sent_at[i] - t0) * 1000
            if status == 200:
                seen[i] = now - t0
                left -= 1
                sel.unregister(socks[i])
            else:
                due[i] = now + poll_ms / 1000.0
        now = time.monotonic()
        for i in range(n):
            if seen[i] is None and 0 < due[i] <= now:
                send(i, now)
    if post is None:
        r = c.getresponse(); r.read()
        post = time.monotonic() - t0
    rep1 = cpu_ns(pids)
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    own = (own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime) * 1000
    with open(detail, "w") as f:
        for i, port in enumerate(ports):
            f.write("replica %d port %d routed %s ms; %d requests, %d errors, slowest %.0f ms sent at %.0f ms\n"
                    % (i, port, "never" if seen[i] is None else "%.0f" % (seen[i] * 1000), *stats[i]))
    missing = sum(1 for s in seen if s is None)
    ok = sorted(s for s in seen if s is not None)
    if missing or not ok:
        print("%d of %d replicas never routed it within %.0f s" % (missing, n, limit))
        sys.exit(1)
    print("%.0f %.0f %.0f %.3f %.1f %.0f" % (ok[len(ok) // 2] * 1000, ok[-1] * 1000, post * 1000,
                                           wall0, (rep1 - rep0) / 1e6, own))

def breakdown(wall0, logs):
    # From each replica's log: when its table for the new service was swapped in (the
    # timestamp of its "table rebuilt in N ms" line, ms after the POST) and when that rebuild
    # started (the same less N). Prints min, p50 and max of each.
    line = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z .*table rebuilt in ([0-9.]+) ms")
    starts, dones = [], []
    for path in logs:
        last = None
        with open(path, errors="replace") as f:
            for l in f:
                m = line.match(l)
                if m:
                    last = m
        if last is None:
            continue
        ts = calendar.timegm(time.strptime(last.group(1), "%Y-%m-%dT%H:%M:%S")) + int(last.group(2)) / 1000
        done = (ts - wall0) * 1000
        if done < -5:
            continue  # a rebuild from before the POST (start-up)
        dones.append(done)
        starts.append(done - float(last.group(3)))
    def pm(v):
        v = sorted(v)
        return "%.0f %.0f %.0f" % (v[0], v[(len(v) - 1) // 2], v[-1]) if v else "- - -"
    print(pm(starts), pm(dones))

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "backend":
        backend(int(sys.argv[2]))
    elif cmd == "seed":
        seed(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "propagate":
        propagate(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6]),
                  float(sys.argv[7]), sys.argv[8], sys.argv[9])
    elif cmd == "breakdown":
        breakdown(float(sys.argv[2]), sys.argv[3:])
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
# etcd's WAL fsyncs so far: "seconds count".
etcd_fsync() {
    curl -sf "$ETCD/metrics" | awk '$1 == "etcd_disk_wal_fsync_duration_seconds_sum" {s = $2}
        $1 == "etcd_disk_wal_fsync_duration_seconds_count" {c = $2} END {printf "%.6f %d", s, c}'
}
# The replicas' whole-prefix reads so far (switchyard_store_full_loads_total), summed.
full_loads() { # admin port...
    local p t=0 v
    for p in "$@"; do
        v=$(curl -sf "http://127.0.0.1:$p/metrics" | awk '$1 == "switchyard_store_full_loads_total" {printf "%d", $2}')
        t=$((t + ${v:-0}))
    done
    echo $t
}
etcd_sent() { curl -sf "$ETCD/metrics" | awk '$1 == "etcd_network_client_grpc_sent_bytes_total" {printf "%.0f", $2}'; }

# etcd's data on tmpfs by default: this machine's disk is shared with other jobs' builds, and
# its fsync (every etcd write waits for one) took 95 ms on average with tails past 1 s there,
# which would time the disk, not the fleet (etcd asks for fsync p99 < 10 ms). FLEET_ETCD_DIR=
# a directory on disk measures with it; each probe reports etcd's mean fsync either way.
if [ -z "${FLEET_ETCD_DIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    FLEET_ETCD_DIR=$(mktemp -d /dev/shm/switchyard-fleet-etcd.XXXXXX)
    ETCD_TMPFS=$FLEET_ETCD_DIR
fi
ETCD_DIR=${FLEET_ETCD_DIR:-$WORK}/etcd
etcd --name scale --data-dir "$ETCD_DIR" \
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
PROBES_TSV="$WORK/probes.tsv"
FAILED=0
: >"$RESULTS"
: >"$PROBES_TSV"
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
    # Propagation, FLEET_PROBES times (a new service each, FLEET_GAP s apart): from the POST
    # on replica 0 until every replica routes it. The breakdown from the replicas' logs: when
    # each started and finished its rebuild for that event, in ms after the POST.
    local k logs=() admins=() load pp50 pmax post wall0 cpu own smin s50 smax dmin d50 dmax fs0 fc0 fs1 fc1 fsync loads0 loads1
    for i in $(seq 0 $((REPLICAS - 1))); do
        logs+=("$WORK/$mode/r$i/out.log")
        admins+=($((BASE + 101 + 2 * i)))
    done
    for k in $(seq 1 "$PROBES"); do
        load=$(cut -d' ' -f1 /proc/loadavg)
        loads0=$(full_loads "${admins[@]}")
        read -r fs0 fc0 <<<"$(etcd_fsync)"
        if ! prop=$(python3 "$WORK/helper.py" propagate "$((BASE + 101))" "$BACK_PORT" "probe-$mode-$k" \
            "$(IFS=,; echo "${ports[*]}")" 5 "$POLL_MS" "$(IFS=,; echo "${REPLICA_PIDS[*]}")" "$WORK/$mode/probe-$k.txt"); then
            echo "  $mode probe $k: $prop" >&2
            FAILED=1
            continue
        fi
        read -r fs1 fc1 <<<"$(etcd_fsync)"
        fsync=$(awk -v a="$fs0" -v b="$fs1" -v x="$fc0" -v y="$fc1" 'BEGIN {printf "%.1f", (y > x) ? (b - a) / (y - x) * 1000 : 0}')
        sleep 0.5
        read -r pp50 pmax post wall0 cpu own <<<"$prop"
        read -r smin s50 smax dmin d50 dmax <<<"$(python3 "$WORK/helper.py" breakdown "$wall0" "${logs[@]}")"
        loads1=$(full_loads "${admins[@]}")
        echo "  $mode probe $k (load $load): routed everywhere p50/max $pp50/$pmax ms; POST answered" \
            "in $post ms; rebuilds started min/p50/max $smin/$s50/$smax ms, swapped in $dmin/$d50/$dmax ms;" \
            "whole-prefix reads by the replicas $((loads1 - loads0));" \
            "replicas' CPU $cpu ms ($(awk -v c="$cpu" -v n="$REPLICAS" 'BEGIN {printf "%.1f", c / n}') per replica)," \
            "the probe's own $own ms; etcd's mean fsync $fsync ms" >&2
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$pp50" "$pmax" "$post" "$smax" \
            "$dmax" "$cpu" "$own" "$load" "$k" "$fsync" "$smin" $((loads1 - loads0)) >>"$PROBES_TSV"
        sleep "$GAP"
    done
    # Each replica's own time to rebuild its table for the last event (its info log line).
    rebuild=$(for i in $(seq 0 $((REPLICAS - 1))); do
        grep -o 'table rebuilt in [0-9.]* ms' "$WORK/$mode/r$i/out.log" | tail -1 | awk '{print $4}' || true
    done | sort -n | awk '{v[NR] = $1} END {if (NR) printf "%s %s", v[int((NR + 1) / 2)], v[NR]; else print "- -"}')
    prop="$(awk -F'\t' -v m="$mode" '$1 == m {print $2}' "$PROBES_TSV" | sort -n |
        awk '{v[NR] = $1} END {printf "%s", NR ? v[int((NR + 1) / 2)] : "-"}')"
    prop="$prop $(awk -F'\t' -v m="$mode" '$1 == m {print $3}' "$PROBES_TSV" | sort -n | tail -1)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" $((b1 - b0)) $((e1 - e0)) $((s1 - s0)) "$prop" "$rebuild" >>"$RESULTS"
    echo "  $mode: etcd sent $((b1 - b0)) bytes in ${MEASURE}s; propagation p50 (median of probes)/max (worst probe) ms: $prop;" \
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
echo
echo "| mode | probe | load | POST answered ms | first rebuild started ms | last rebuild started ms | last swapped in ms | last replica routes it ms | p50 routes it ms | whole-prefix reads | replicas' CPU ms | probe's CPU ms | etcd fsync ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $10, $9, $4, $12, $5, $6, $3, $2, $13, $7, $8, $11}' "$PROBES_TSV"
exit "$FAILED"
