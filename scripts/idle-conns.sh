#!/usr/bin/env bash
# Memory per idle keep-alive client connection: builds switchyard and examples/idle_conns.rs,
# raises the fd limit, and lets the example open IDLE_CONNS (10,000) connections through it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${IDLE_CONNS:-10000}
cd "$ROOT"
cargo build --release --quiet --bin switchyard --example idle_conns
# Both ends of each connection live in this one example process: it needs N fds, switchyard
# N + its upstreams.
ulimit -n $((2 * N + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((N + 512)) ]; then
    echo "ulimit -n is $(ulimit -n): too low for $N connections" >&2
    exit 1
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
"$TARGET/examples/idle_conns" "$TARGET/switchyard" "$N"
