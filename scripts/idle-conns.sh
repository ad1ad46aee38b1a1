#!/usr/bin/env bash
# Memory per idle keep-alive client connection: builds switchyard and examples/idle_conns.rs,
# raises the fd limit, and lets the example open IDLE_CONNS (10,000) connections through it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Usage: scripts/idle-conns.sh [N] [idle_conns options: --split --sources K --steps S ...]
N=${1:-${IDLE_CONNS:-10000}}
shift $(($# > 0 ? 1 : 0))
cd "$ROOT"
cargo build --release --quiet --bin switchyard --example idle_conns
# The example holds the N client ends (or, with --split, a child process of it does), switchyard
# N + its upstreams; the example raises its own soft limit to the hard one.
ulimit -n $((2 * N + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((N + 512)) ]; then
    echo "ulimit -n is $(ulimit -n): too low for $N connections" >&2
    exit 1
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
"$TARGET/examples/idle_conns" "$TARGET/switchyard" "$N" "$@"
