#!/usr/bin/env bash
# Issue 11's "done when": a release build from a clean target directory succeeds while any use
# of protoc would break it. PROTOC, and `protoc` first on PATH, are a program that records
# its call and exits 1; the build must pass and the record must not exist. A full release
# build: about 9 minutes on a loaded 2-core machine. CHECK_TARGET_DIR overrides the fresh
# target directory (it is emptied first).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
marker="$work/protoc-was-called"
mkdir "$work/bin"
printf '#!/bin/sh\necho "protoc $*" >>"%s"\nexit 1\n' "$marker" >"$work/bin/protoc"
chmod +x "$work/bin/protoc"
# The fake must really fail, or the check proves nothing.
if "$work/bin/protoc" --version >/dev/null 2>&1 || [ ! -e "$marker" ]; then
  echo "check-no-protoc: the failing protoc stand-in does not work" >&2
  exit 1
fi
rm -f "$marker"
target="${CHECK_TARGET_DIR:-$work/target}"
rm -rf "$target"
start=$(date +%s)
(
  cd "$root"
  unset PROTOC_INCLUDE
  PROTOC="$work/bin/protoc" PATH="$work/bin:$PATH" CARGO_TARGET_DIR="$target" \
    cargo build --release --locked
)
if [ -e "$marker" ]; then
  echo "check-no-protoc: FAILED, the build called protoc:" >&2
  cat "$marker" >&2
  exit 1
fi
"$target/release/switchyard" check -c "$root/config.toml" >/dev/null
echo "check-no-protoc: ok, clean release build without protoc in $(($(date +%s) - start)) s"
