#!/usr/bin/env bash
# Make sure `promtool` and `prometheus` are on PATH, installing Debian's
# `prometheus` package with apt-get when either is missing. Idempotent and
# silent when both are already installed.
#
# The Debian package may start its own prometheus.service (on :9090); that is
# irrelevant to our checks: tests/e2e-prometheus.sh runs its own Prometheus on
# a free loopback port with its own storage directory.
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
    && command -v curl >/dev/null 2>&1; then
    exit 0
fi

apt_install prometheus prometheus curl ca-certificates

for tool in promtool prometheus curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ensure-prometheus: '$tool' still not on PATH after installing the package" >&2
        exit 1
    fi
done
echo "ensure-prometheus: $(prometheus --version 2>&1 | head -n1)" >&2
