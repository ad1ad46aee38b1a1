#!/usr/bin/env bash
# Regenerates src/etcd/gen/ (the etcd v3 messages and gRPC clients) from proto/ with
# tools/etcd-proto-gen (tonic-prost-build + protox: pure Rust, no protoc). Run it after
# changing proto/ or the generator, and commit the result; tests/etcd_proto.rs fails while
# the committed files differ from what this produces.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/src/etcd/gen"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/etcd-proto-gen}" \
  cargo run --quiet --locked --manifest-path "$root/tools/etcd-proto-gen/Cargo.toml" -- --out "$tmp"
# Replace the whole directory, so a file the generator no longer writes does not linger.
rm -rf "$out"
mkdir -p "$out"
cp "$tmp"/*.rs "$out"/
echo "regenerated $(ls "$out" | wc -l) files in src/etcd/gen/"
