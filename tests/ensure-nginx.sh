#!/usr/bin/env bash
# Make sure `nginx` is on PATH (tests/tee.rs runs one on loopback), installing
# Debian's `nginx` package with apt-get when it is missing. Idempotent and
# silent when nginx is already installed.
#
# The Debian package may start its own nginx.service (on :80); that is
# irrelevant: tests/tee.rs runs its own nginx with its own config, prefix and
# free loopback ports.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-nginx: nginx missing and apt-get is not available; install nginx and put it on PATH" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ensure-nginx: not root and sudo is missing; cannot install the nginx package" >&2
        exit 1
    fi
    SUDO=(sudo)
fi

echo "ensure-nginx: installing Debian package 'nginx'" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
# Another apt-get (e.g. ensure-prometheus.sh in a parallel job) may hold the lock: wait for it.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=120 nginx >/dev/null

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "ensure-nginx: 'nginx' still not found after installing the package" >&2
    exit 1
fi
echo "ensure-nginx: $(nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1)" >&2
