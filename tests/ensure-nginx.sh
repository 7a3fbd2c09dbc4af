#!/usr/bin/env bash
# Make sure `nginx` is installed (tests/tee.rs runs one on loopback), with
# Debian's `nginx` package when it is missing. Idempotent and silent when
# nginx is already there.
#
# The Debian package may start its own nginx.service (on :80); that is
# irrelevant: tests/tee.rs runs its own nginx with its own config, prefix and
# free loopback ports.
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

if have_nginx; then
    exit 0
fi
apt_install nginx nginx
if ! have_nginx; then
    echo "ensure-nginx: 'nginx' still not found after installing the package" >&2
    exit 1
fi
echo "ensure-nginx: $(PATH="$PATH:/usr/sbin" nginx -v 2>&1)" >&2
