#!/usr/bin/env bash
# Make sure `redis-server` and `nginx` are on PATH (tests/redis_ha.rs runs
# them on loopback ports of its own), installing Debian's `redis-server` and
# `nginx` packages with apt-get when either is missing. Idempotent and silent
# when both are already installed.
#
# The packages may try to start their own services (redis on :6379, nginx on
# :80); the tests never use those: each starts its own on a free port.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 && command -v nginx >/dev/null 2>&1; then
    exit 0
fi
# nginx lives in /usr/sbin, which a non-root PATH may lack.
if command -v redis-server >/dev/null 2>&1 && [ -x /usr/sbin/nginx ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-services: redis-server/nginx missing and apt-get is not available;" >&2
    echo "ensure-services: install Redis (redis-server) and nginx and put them on PATH" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ensure-services: not root and sudo is missing; cannot install redis-server and nginx" >&2
        exit 1
    fi
    SUDO=(sudo)
fi

echo "ensure-services: installing Debian packages 'redis-server' and 'nginx'" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server nginx >/dev/null

for tool in redis-server /usr/sbin/nginx; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ensure-services: '$tool' still not there after installing the packages" >&2
        exit 1
    fi
done
echo "ensure-services: $(redis-server --version | head -n1); $(/usr/sbin/nginx -v 2>&1)" >&2
