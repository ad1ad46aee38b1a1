#!/usr/bin/env bash
# The release binary built with profile-guided optimization: an instrumented build runs a
# short loopback load through two nginx backends (the bench's scenarios: HTTP/1.1 keep-alive
# and close, a 1 MiB answer and a 1 MiB upload, L4, h2c, HTTPS and HTTP/2 over TLS), and the
# second build lays out and inlines the code by what that load ran. On the HTTP/2 path it
# cuts the instructions per request by a fifth and the instruction-cache misses by more than
# half (docs/performance.md, "HTTP/2, fourth pass"). `cargo build --release` stays the plain
# build; this is the one to run where CPU per request matters, and the one to benchmark.
#
# Usage: scripts/pgo-build.sh          -> target/pgo/release/switchyard
#        PGO_SECONDS=3 (seconds per load step), PGO_PORT_PREFIX=197 (ports PREFIX01..PREFIX13)
# Needs cargo and, installed when missing: llvm-profdata of rustc's LLVM major version
# (rustup's llvm-tools, or Debian's llvm-N), and Debian's nginx, wrk, nghttp2-client (h2load)
# and openssl.
# Everything listens on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${PGO_SECONDS:-3}
P=${PGO_PORT_PREFIX:-197}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PROF="$TARGET/pgo-profile"

# shellcheck source=scripts/loopback-lib.sh
. "$ROOT/scripts/loopback-lib.sh"
# llvm-N recommends its -dev package, which llvm-profdata does not need.
NEED_APT_FLAGS=--no-install-recommends

# llvm-profdata must read what rustc's own LLVM wrote: the same major version.
# Looked for as Debian's llvm-N, rustup's llvm-tools component, or a plain llvm-profdata;
# then rustup is asked for llvm-tools, then Debian for llvm-N.
LLVM=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
RUSTUP_PROFDATA="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata"
find_profdata() {
    local c
    for c in "llvm-profdata-$LLVM" "$RUSTUP_PROFDATA" llvm-profdata; do
        if command -v "$c" >/dev/null 2>&1 && "$c" --version 2>/dev/null | grep -q "LLVM version $LLVM\."; then
            echo "$c"
            return
        fi
    done
}
PROFDATA=$(find_profdata)
if [ -z "$PROFDATA" ] && command -v rustup >/dev/null 2>&1; then
    rustup component add llvm-tools >/dev/null 2>&1 || true
    PROFDATA=$(find_profdata)
fi
if [ -z "$PROFDATA" ]; then
    need "llvm-profdata-$LLVM:llvm-$LLVM"
    PROFDATA=$(find_profdata)
fi
[ -n "$PROFDATA" ] || { echo "pgo: no llvm-profdata for LLVM $LLVM (rustc's)" >&2; exit 1; }
need nginx:nginx wrk:wrk h2load:nghttp2-client openssl:openssl

rm -rf "$PROF"
mkdir -p "$PROF"
echo "pgo: instrumented build" >&2
# Build scripts are instrumented too and write their own profiles into the directory given
# here; the load run below names its file itself, and only that one is used.
(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$PROF/build" CARGO_TARGET_DIR="$TARGET/pgo-gen" \
    cargo build --release --quiet --bin switchyard)

WORK=$(mktemp -d /tmp/switchyard-pgo.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
backend_files "$WORK"
# The bench's two backends (`loopback-lib.sh`), so that the load runs what the bench measures.
for port in ${P}01 ${P}02; do
    mkdir -p "$WORK/back$port"
    backend_conf "$WORK" "$WORK/back$port" "$port"
    nginx -p "$WORK/back$port" -c "$WORK/back$port/nginx.conf" >"$WORK/back$port/out.log" 2>&1 &
    PIDS+=($!)
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
cat >"$WORK/config.toml" <<CONF
[server]
listen = "127.0.0.1:${P}10"
workers = 1
access_log = false

[admin]
listen = "127.0.0.1:${P}11"

[[targets]]
address = "127.0.0.1:${P}01"

[[targets]]
address = "127.0.0.1:${P}02"

[[tcp]]
listen = "127.0.0.1:${P}13"
targets = ["127.0.0.1:${P}01", "127.0.0.1:${P}02"]

[tls]
listen = "127.0.0.1:${P}12"

[[tls.certificates]]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
CONF
LLVM_PROFILE_FILE="$PROF/load-%p.profraw" RUST_LOG=warn "$TARGET/pgo-gen/release/switchyard" \
    -c "$WORK/config.toml" >"$WORK/sy.log" 2>&1 &
SP=$!
PIDS+=($SP)
up=""
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${P}10") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/${P}01") 2>/dev/null; then
        up=1
        break
    fi
    sleep 0.1
done
[ -n "$up" ] || { echo "pgo: switchyard or the backends did not come up" >&2; cat "$WORK/sy.log" >&2; exit 1; }
echo "pgo: load (${SECS}s per step)" >&2
wrk -t1 -c10 -d"${SECS}s" "http://127.0.0.1:${P}10/" >/dev/null
wrk -t1 -c10 -d1s -H 'Connection: close' "http://127.0.0.1:${P}10/" >/dev/null
wrk -t1 -c8 -d1s "http://127.0.0.1:${P}10/big" >/dev/null
wrk -t1 -c8 -d1s -s "$WORK/upload.lua" "http://127.0.0.1:${P}10/upload" >/dev/null
wrk -t1 -c10 -d1s "http://127.0.0.1:${P}13/" >/dev/null
h2load -t1 -c4 -m25 -D "$SECS" "http://127.0.0.1:${P}10/" >/dev/null
h2load -t1 -c4 -m25 -D "$SECS" "https://127.0.0.1:${P}12/" >/dev/null
wrk -t1 -c10 -d"${SECS}s" "https://127.0.0.1:${P}12/" >/dev/null
# The profile is written when the process exits (SIGTERM: drain, then a normal exit).
kill -TERM "$SP"
wait "$SP" || { echo "pgo: the instrumented switchyard did not exit cleanly" >&2; exit 1; }
shopt -s nullglob
raw=("$PROF"/load-*.profraw)
[ ${#raw[@]} -gt 0 ] || { echo "pgo: the load run wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$PROF/merged.profdata" "${raw[@]}"
# Named by its content: cargo keys its artifacts on RUSTFLAGS, so a new profile rebuilds every
# crate with it (under one path, the dependencies would keep the last profile's code).
sum=$(cksum <"$PROF/merged.profdata" | cut -d' ' -f1)
mv "$PROF/merged.profdata" "$PROF/switchyard-$sum.profdata"

echo "pgo: optimized build" >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-use=$PROF/switchyard-$sum.profdata" CARGO_TARGET_DIR="$TARGET/pgo" \
    cargo build --release --quiet --bin switchyard)
echo "$TARGET/pgo/release/switchyard"
