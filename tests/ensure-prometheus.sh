#!/usr/bin/env bash
# Make sure `promtool` and `prometheus` are on PATH, installing Debian's
# `prometheus` package with apt-get when either is missing. Idempotent and
# silent when both are already installed.
#
# The Debian package may start its own prometheus.service (on :9090); that is
# irrelevant to our checks: tests/e2e-prometheus.sh runs its own Prometheus on
# a free loopback port with its own storage directory.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
    && command -v curl >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prometheus: promtool/prometheus missing and apt-get is not available;" >&2
    echo "ensure-prometheus: install Prometheus (promtool + prometheus) and put them on PATH" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ensure-prometheus: not root and sudo is missing; cannot install the prometheus package" >&2
        exit 1
    fi
    SUDO=(sudo)
fi

echo "ensure-prometheus: installing Debian package 'prometheus' (promtool + prometheus)" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
# --no-install-recommends: the recommended node exporter and web assets are not needed.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus curl ca-certificates >/dev/null

for tool in promtool prometheus curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ensure-prometheus: '$tool' still not on PATH after installing the package" >&2
        exit 1
    fi
done
echo "ensure-prometheus: $(prometheus --version 2>&1 | head -n1)" >&2
