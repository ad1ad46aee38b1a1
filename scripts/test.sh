#!/usr/bin/env bash
# The whole test suite, from a bare machine: installs the external counterparts the black-box
# tests talk to (when missing, and only then), builds a Python venv with the pinned client
# libraries, and runs `cargo test`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, each with what its tests use it for. Installed with
# --no-install-recommends; each package's hard dependencies were read from `apt-cache depends`
# (none of them needs a recommended package to run headless).
need=()
command -v promtool >/dev/null || need+=(prometheus)          # promtool check metrics
command -v chromium >/dev/null || need+=(chromium)            # status page, headless
command -v etcd >/dev/null || need+=(etcd-server)             # fleet tests
command -v etcdctl >/dev/null || need+=(etcd-client)          # fleet tests
command -v pebble >/dev/null || need+=(pebble)                # ACME server (+ pebble-challtestsrv)
command -v h2load >/dev/null || need+=(nghttp2-client)        # HTTP/2 load
command -v curl >/dev/null || need+=(curl)                    # curl as an independent client
command -v openssl >/dev/null || need+=(openssl)              # test certificates, s_client
command -v systemd-analyze >/dev/null || need+=(systemd)      # verifies deploy/switchyard.service
command -v md5sum >/dev/null || need+=(coreutils)             # the demo test's shard check
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then need+=(python3-venv); fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing ${need[*]}; run as root or install them (Debian package names)" >&2
    exit 1
  fi
  echo "test.sh: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python clients (h2, grpcio) in a venv under target/, so nothing is installed system-wide.
py=target/pyenv
want="h2==4.4.1 grpcio==1.85.3 grpcio-tools==1.85.1 protobuf==7.36.2"
if [ ! -x "$py/bin/python" ] || [ "$(cat "$py/.wanted" 2>/dev/null)" != "$want" ]; then
  rm -rf "$py"
  python3 -m venv "$py"
  # shellcheck disable=SC2086
  "$py/bin/pip" install -q --disable-pip-version-check $want
  echo "$want" > "$py/.wanted"
fi
export SWITCHYARD_PYTHON="$PWD/$py/bin/python"

cargo test "$@"
