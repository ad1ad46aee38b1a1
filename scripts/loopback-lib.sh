# Sourced by scripts/bench.sh and scripts/pgo-build.sh: the tools they install when missing
# and the loopback nginx backends both load through, so that the profile-guided build trains
# on the backends the bench measures against.

# need CMD:PACKAGE ...: installs from Debian the packages of the commands that are missing
# (extra apt-get flags in NEED_APT_FLAGS).
need() {
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        # Debian's postinst would start the system services; they must not take our ports.
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        fi
        apt-get update -qq >&2
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${NEED_APT_FLAGS:-} "${missing[@]}" >&2
    fi
}

BODY='hello from the backend, a small body of 64 bytes for the bench.'

# backend_files WORK: the 1 MiB file the backends serve as /big and wrk's script for the
# 1 MiB upload (WORK/upload.lua).
backend_files() {
    head -c 1048576 /dev/urandom >"$1/big.bin"
    # nginx workers run unprivileged: they must reach the file (mktemp -d is 0700).
    chmod 711 "$1" && chmod 644 "$1/big.bin"
    cat >"$1/upload.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("u", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
}

# backend_conf WORK DIR PORT: an nginx config in DIR/nginx.conf, one worker on 127.0.0.1:PORT
# answering BODY, /big from WORK/big.bin (sendfile) and /upload (the whole body read).
backend_conf() {
    local work=$1 d=$2 port=$3
    cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    sendfile on;
    client_max_body_size 4m;
    client_body_buffer_size 2m;
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location / { return 200 '$BODY'; }
        location = /big { alias $work/big.bin; default_type application/octet-stream; }
        # Reads the whole body into memory, then answers from a subrequest without it (a bare
        # return would answer first and leave the body to a lingering close).
        location = /upload {
            proxy_pass http://127.0.0.1:$port/uploaded;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
        location = /uploaded { return 200 'ok'; }
    }
}
EOF
}
