#!/usr/bin/env bash
# The whole test suite, as the README's quick start gives it and CI runs it:
# installs Prometheus/promtool, nginx, redis-server and chromium when missing, then the
# Rust tests, the rule checks, the packaging checks (image, systemd unit,
# Kubernetes base) and the end-to-end check against a real Prometheus.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Prometheus and promtool (Debian package, installed when missing)"
bash tests/ensure-prometheus.sh

step "nginx (Debian package, installed when missing; tests/tee.rs runs one on loopback)"
bash tests/ensure-nginx.sh

step "redis-server (Debian package, installed when missing; tests/redis_ha.rs and tests/ha.rs run one on loopback)"
bash tests/ensure-redis.sh

step "chromium and playwright-core (Debian package and target/node, installed when missing; tests/status_browser.rs drives the status page)"
bash tests/ensure-chromium.sh

step "cargo test (unit, fixture, end-to-end, budget, secrets, simulator, demo)"
# --show-output prints the figures the budget, probe and seat tests measured.
# Benchmarks are not tests: `cargo bench --bench scrape` prints their figures.
cargo test --lib --bins --tests -- --show-output

step "web config against a real Prometheus (README scrape config: TLS, client certificate, basic auth)"
cargo test --test web_config -- --ignored

step "alert rules and dashboards (promtool check/test rules, dashboard lint)"
bash tests/check-rules.sh

step "container image, systemd unit (buildah and systemd-analyze, installed when missing)"
bash tests/packaging.sh

step "Kubernetes base deploy/kubernetes (kubectl kustomize, kubernetes-validate, PrometheusRule = dashboards/)"
bash tests/kubernetes.sh

step "end to end with a real Prometheus"
cargo build --quiet
BIN="$PWD/target/debug/roomengine-exporter" bash tests/e2e-prometheus.sh

step "all tests passed"
