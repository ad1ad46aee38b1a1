#!/usr/bin/env bash
# Fleet convergence: a real etcd and 3 switchyard replicas on loopback, 100 registrations
# spread over the replicas, and the time from each POST until every replica routes it
# (p50 / p99 / max). Needs etcd-server, etcd-client and protobuf-compiler from apt.
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in etcd etcdctl protoc; do
  command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install etcd-server etcd-client protobuf-compiler" >&2; exit 1; }
done
cargo test --release --test fleet -- --ignored --nocapture convergence_figures 2>&1 | grep -E "fleet convergence|test result"
