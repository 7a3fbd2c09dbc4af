#!/usr/bin/env bash
# Make sure Debian's `chromium` is installed (tests/status_browser.rs drives
# the status page in it, headless) and that the Node driver for it,
# playwright-core, sits in target/node (npm install there; never committed).
# Idempotent and silent when both are already there.
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium chromium
    if ! command -v chromium >/dev/null 2>&1; then
        echo "ensure-chromium: 'chromium' still not found after installing the package" >&2
        exit 1
    fi
    echo "ensure-chromium: $(chromium --version 2>/dev/null)" >&2
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install chromium nodejs npm
fi
node_dir="$(cd "$(dirname "$0")/.." && pwd)/target/node"
if [ ! -f "$node_dir/node_modules/playwright-core/package.json" ]; then
    mkdir -p "$node_dir"
    echo "ensure-chromium: installing playwright-core into $node_dir" >&2
    # The browser is Debian's; playwright-core downloads none.
    (cd "$node_dir" && npm install --no-save --no-audit --no-fund --silent playwright-core@1 >/dev/null)
fi
