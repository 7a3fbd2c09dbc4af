#!/usr/bin/env bash
# Make sure `redis-server` is installed (tests/redis_ha.rs runs one on a
# loopback port of its own), with Debian's `redis-server` package when it is
# missing. Idempotent and silent when it is already there.
#
# The Debian package may start its own redis-server.service (on :6379); that
# is irrelevant: the tests run their own with their own port and directory.
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
apt_install redis redis-server
if ! command -v redis-server >/dev/null 2>&1; then
    echo "ensure-redis: 'redis-server' still not found after installing the package" >&2
    exit 1
fi
echo "ensure-redis: $(redis-server --version)" >&2
