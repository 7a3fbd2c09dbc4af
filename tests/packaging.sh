#!/usr/bin/env bash
# Checks of the packaged installs, offline:
#   1. packaging/build-image.sh builds the image (buildah, private vfs storage)
#      and writes it as an OCI archive;
#   2. the archive's root filesystem: no shell, no package manager, nothing
#      but the binary, its libraries and /etc; ownership and modes;
#   3. the image config: non-root user, ports, entrypoint and cmd, labels;
#   4. the exporter runs from the unpacked root filesystem as the image's user
#      (chroot): --version, --config.check on the shipped config (and on the
#      Kubernetes example overlay's), and the demo serving
#      roomengine_room_members, stopped cleanly by SIGTERM;
#   5. packaging/roomengine-exporter.service: systemd-analyze verify with no
#      warning (alone and with the packaging/credentials.conf drop-in),
#      security exposure at most 2.0, the settings docs/install.md relies on.
# Installs buildah and systemd (for systemd-analyze) with apt-get when missing.
# The last line is "N passed, N failed".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ "$(id -u)" -ne 0 ]; then
    echo "packaging: needs root (buildah without a container runtime, chroot --userspec)" >&2
    exit 1
fi
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    echo "packaging: installing Debian packages: ${missing[*]}" >&2
    env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

TMP=$(mktemp -d)
DEMO_PID=""
cleanup() {
    if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill "$DEMO_PID" 2>/dev/null || true
        wait "$DEMO_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=tests/results.sh
. "$ROOT/tests/results.sh"
finish() { echo "packaging: $passed passed, $failed failed, $skipped skipped"; [ "$failed" -eq 0 ]; exit; }

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
TAG=localhost/roomengine-exporter:test

# 1. Build, in a storage of our own: the host's image store is left alone, and
# vfs works on any file system (overlay may not nest).
cat >"$TMP/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$TMP/storage/graph"
runroot = "$TMP/storage/run"
CONF
rc=0
start=$(date +%s)
CONTAINERS_STORAGE_CONF=$TMP/storage.conf packaging/build-image.sh --tag "$TAG" \
    --oci-archive "$TMP/image.tar" >"$TMP/build.log" 2>&1 || rc=$?
secs=$(($(date +%s) - start))
indent <"$TMP/build.log"
[ -s "$TMP/image.tar" ] || { echo "    no OCI archive written"; rc=1; }
result "packaging/build-image.sh --oci-archive (${secs}s, archive $(du -h "$TMP/image.tar" 2>/dev/null | cut -f1))" "$rc"
[ "$rc" -eq 0 ] || finish

# Unpack the archive with tar and python alone: index -> manifest -> config
# and layers, applied in order (whiteouts honoured).
mkdir -p "$TMP/oci" "$TMP/rootfs"
tar -xf "$TMP/image.tar" -C "$TMP/oci"
rc=0
python3 - "$TMP/oci" "$TMP/rootfs" "$TMP/config.json" "$TMP/layers.txt" <<'PY' || rc=$?
import json, os, shutil, subprocess, sys
oci, rootfs, config_out, layers_out = sys.argv[1:]
blob = lambda d: os.path.join(oci, "blobs", *d.split(":", 1))
index = json.load(open(os.path.join(oci, "index.json")))
manifests = index.get("manifests", [])
if len(manifests) != 1:
    sys.exit(f"index.json lists {len(manifests)} manifests, expected 1")
manifest = json.load(open(blob(manifests[0]["digest"])))
shutil.copy(blob(manifest["config"]["digest"]), config_out)
sizes = []
for layer in manifest["layers"]:
    mt = layer["mediaType"]
    if not mt.startswith("application/vnd.oci.image.layer.v1.tar"):
        sys.exit(f"unexpected layer media type {mt}")
    flag = "-xzf" if mt.endswith("+gzip") else "-xf"
    members = subprocess.run(["tar", "-tf", blob(layer["digest"])] if flag == "-xf" else
                             ["tar", "-tzf", blob(layer["digest"])], check=True,
                             capture_output=True, text=True).stdout.split()
    for m in members:   # whiteouts: a file deleted by this layer
        base = os.path.basename(m.rstrip("/"))
        if base.startswith(".wh."):
            target = os.path.join(rootfs, os.path.dirname(m), base[4:])
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.remove(target)
    subprocess.run(["tar", "--numeric-owner", "--exclude=.wh.*", flag, blob(layer["digest"]), "-C", rootfs], check=True)
    sizes.append(layer["size"])
open(layers_out, "w").write(f"{len(sizes)} layer(s), {sum(sizes)} bytes compressed\n")
PY
du_rootfs=$(du -sh "$TMP/rootfs" | cut -f1)
result "unpack the OCI archive with tar ($(cat "$TMP/layers.txt" 2>/dev/null), root filesystem $du_rootfs)" "$rc"
[ "$rc" -eq 0 ] || finish
R=$TMP/rootfs

# 2. The root filesystem.
rc=0
for f in bin/sh usr/bin/sh bin/bash bin/busybox; do
    if [ -e "$R/$f" ] || [ -L "$R/$f" ]; then echo "    /$f exists: the image must have no shell"; rc=1; fi
done
found=$(cd "$R" && find . \( -name sh -o -name bash -o -name dash -o -name ash -o -name busybox \
    -o -name apt -o -name apt-get -o -name dpkg -o -name apk -o -name rpm -o -name dnf -o -name yum \
    -o -name microdnf -o -name pip -o -name python3 \) -print)
if [ -n "$found" ]; then echo "    shell or package manager in the image: $found"; rc=1; fi
# Every file is the exporter, a shared object it links, or a file of /etc.
libs=$(ldd target/release/roomengine-exporter | awk '$2 == "=>" && $3 ~ /^\// { print "."$3 } $1 ~ /^\// { print "."$1 }' | sort -u)
want=$(printf '%s\n' ./usr/bin/roomengine-exporter ./etc/passwd ./etc/group ./etc/nsswitch.conf \
    ./etc/roomengine-exporter/exporter.yaml $libs | sort -u)
got=$(cd "$R" && find . -type f -o -type l | sort)
if [ "$got" != "$want" ]; then
    echo "    files in the image differ from the binary + its libraries + /etc:"
    diff <(echo "$want") <(echo "$got") | indent; rc=1
fi
perm() { stat -c '%u:%g %a' "$R/$1"; }
[ "$(perm tmp)" = "0:0 1777" ] || { echo "    /tmp is $(perm tmp), expected 0:0 1777"; rc=1; }
[ "$(perm var/lib/roomengine-exporter)" = "65532:65532 755" ] || \
    { echo "    /var/lib/roomengine-exporter is $(perm var/lib/roomengine-exporter), expected 65532:65532 755"; rc=1; }
[ "$(perm usr/bin/roomengine-exporter)" = "0:0 755" ] || \
    { echo "    /usr/bin/roomengine-exporter is $(perm usr/bin/roomengine-exporter), expected 0:0 755"; rc=1; }
for d in . etc usr usr/bin var var/lib; do
    [ "$(stat -c %u "$R/$d")" = 0 ] || { echo "    /$d is owned by uid $(stat -c %u "$R/$d"), expected root"; rc=1; }
done
grep -qx 'nonroot:x:65532:65532:roomengine-exporter:/var/lib/roomengine-exporter:/sbin/nologin' "$R/etc/passwd" \
    || { echo "    /etc/passwd lacks the nonroot user 65532"; rc=1; }
cmp -s "$R/etc/roomengine-exporter/exporter.yaml" packaging/exporter.yaml \
    || { echo "    /etc/roomengine-exporter/exporter.yaml is not packaging/exporter.yaml"; rc=1; }
result "root filesystem: no shell, no package manager, $(wc -l <<<"$got") files (binary, $(wc -l <<<"$libs") libraries, /etc), owners and modes" "$rc"

# 3. The image config.
rc=0
python3 - "$TMP/config.json" "$VERSION" "$(git rev-parse HEAD 2>/dev/null || echo unknown)" <<'PY' || rc=$?
import json, sys
cfg, version, revision = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
c = cfg.get("config", {})
errors = []
user = c.get("User", "")
if user != "65532:65532":
    errors.append(f"User is {user!r}, expected '65532:65532' (non-root)")
ports = sorted(c.get("ExposedPorts", {}))
if ports != ["39180/tcp", "39182/tcp"]:
    errors.append(f"ExposedPorts {ports}, expected 39180/tcp 39182/tcp")
if c.get("Entrypoint") != ["/usr/bin/roomengine-exporter"]:
    errors.append(f"Entrypoint {c.get('Entrypoint')}")
if c.get("Cmd") != ["--config.file", "/etc/roomengine-exporter/exporter.yaml"]:
    errors.append(f"Cmd {c.get('Cmd')}")
labels = c.get("Labels") or {}
want = {"org.opencontainers.image.title": "roomengine-exporter", "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision, "org.opencontainers.image.licenses": "Apache-2.0"}
for k, v in want.items():
    if labels.get(k) != v:
        errors.append(f"label {k} is {labels.get(k)!r}, expected {v!r}")
for k in ("org.opencontainers.image.created", "org.opencontainers.image.description"):
    if labels.get(k, "unknown") == "unknown":
        errors.append(f"label {k} missing")
if cfg.get("os") != "linux":
    errors.append(f"os {cfg.get('os')}")
for e in errors:
    print(f"    {e}")
print(f"    User {user}, ports {' '.join(ports)}, {c.get('Entrypoint')} {c.get('Cmd')}, {len(labels)} labels")
sys.exit(1 if errors else 0)
PY
result "image config: user, exposed ports, entrypoint and cmd, OCI labels" "$rc"

# 4. Run it from the root filesystem, as the image's user. env -i: only what
# the image gives (PATH) and what a user passes.
# As a runtime would: the image config's user and entrypoint.
in_image() { env -i PATH=/usr/bin "$@"; }
USERSPEC=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["User"])' "$TMP/config.json")
run_as=("$(command -v chroot)" --userspec="$USERSPEC" "$R" /usr/bin/roomengine-exporter)

rc=0
out=$(in_image "${run_as[@]}" --version 2>&1) || rc=$?
indent <<<"$out"
[ "$out" = "roomengine-exporter $VERSION" ] || { echo "    expected 'roomengine-exporter $VERSION'"; rc=1; }
result "--version in the image as $USERSPEC" "$rc"

# --config.check of a shipped configuration: exit 0 and its one-line summary.
config_check() { # name command...
    local name=$1 rc=0 out
    shift
    out=$(env -i PATH=/usr/bin ROOMENGINE_SECRET_KEY=test-secret-key ROOMENGINE_CALLBACK_TOKEN=test-token \
        "$@" --config.check 2>&1) || rc=$?
    indent <<<"$out"
    result "$name" "$rc"
}
config_check "--config.check in the image on its /etc/roomengine-exporter/exporter.yaml (packaging/exporter.yaml)" \
    "${run_as[@]}" --config.file /etc/roomengine-exporter/exporter.yaml
config_check "--config.check on deploy/overlay-example/exporter.yaml" \
    "$ROOT/target/release/roomengine-exporter" --config.file "$ROOT/deploy/overlay-example/exporter.yaml"

rc=0
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A simple command in the background (no function, no subshell): $! is the exporter.
env -i PATH=/usr/bin "${run_as[@]}" demo --web.listen-address "127.0.0.1:$PORT" >"$TMP/demo.log" 2>&1 &
DEMO_PID=$!
members=0
ready=000
for _ in $(seq 1 150); do   # 30 s: the demo's first pass takes about a second
    ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/-/ready" 2>/dev/null || true)
    if [ "$ready" = 200 ] && body=$(curl -fsS "http://127.0.0.1:$PORT/metrics" 2>/dev/null); then
        members=$(grep -c '^roomengine_room_members{' <<<"$body" || true)
        [ "$members" -gt 0 ] && break
    fi
    kill -0 "$DEMO_PID" 2>/dev/null || break
    sleep 0.2
done
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$DEMO_PID/status" 2>/dev/null || echo "gone")
[ "$members" -gt 0 ] || { echo "    no roomengine_room_members lines on /metrics within 30 s (/-/ready $ready); demo log:"; tail -n 20 "$TMP/demo.log" | indent; rc=1; }
[ "$uid" = 65532 ] || { echo "    the demo runs as uid $uid, expected 65532"; rc=1; }
healthy=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/-/healthy" || true)
[ "$healthy" = 200 ] || { echo "    /-/healthy answered $healthy, expected 200"; rc=1; }
exit_code=0
kill -TERM "$DEMO_PID" 2>/dev/null || true
wait "$DEMO_PID" 2>/dev/null || exit_code=$?
DEMO_PID=""
[ "$exit_code" -eq 0 ] || { echo "    the demo exited $exit_code on SIGTERM, expected 0; log:"; tail -n 20 "$TMP/demo.log" | indent; rc=1; }
result "demo in the image as $USERSPEC: /-/ready $ready, $members roomengine_room_members series on /metrics, /-/healthy $healthy, exit $exit_code on SIGTERM" "$rc"

# 5. The systemd unit. verify needs ExecStart to exist: a copy of the unit
# points it at a copy of the binary; the shipped unit keeps /usr/local/bin.
UNIT=packaging/roomengine-exporter.service
mkdir -p "$TMP/unit" "$TMP/bin"
cp target/release/roomengine-exporter "$TMP/bin/"
sed "s#/usr/local/bin/roomengine-exporter#$TMP/bin/roomengine-exporter#" "$UNIT" >"$TMP/unit/roomengine-exporter.service"
rc=0
out=$(systemd-analyze verify "$TMP/unit/roomengine-exporter.service" 2>&1) || rc=$?
if [ -n "$out" ]; then indent <<<"$out"; rc=1; fi   # verify exits 0 on unknown keys: any output is a failure
result "systemd-analyze verify $UNIT (no output)" "$rc"

# The same with the credentials drop-in (verify reads the unit's .d/ beside it).
mkdir -p "$TMP/unit/roomengine-exporter.service.d"
cp packaging/credentials.conf "$TMP/unit/roomengine-exporter.service.d/"
rc=0
out=$(systemd-analyze verify "$TMP/unit/roomengine-exporter.service" 2>&1) || rc=$?
if [ -n "$out" ]; then indent <<<"$out"; rc=1; fi
result "systemd-analyze verify $UNIT + packaging/credentials.conf drop-in (no output)" "$rc"
rm -r "$TMP/unit/roomengine-exporter.service.d"

rc=0
out=$(systemd-analyze security --offline=true --threshold=20 "$TMP/unit/roomengine-exporter.service" 2>&1) || rc=$?
level=$(grep -o 'Overall exposure level for roomengine-exporter.service: [0-9.]* [A-Z]*' <<<"$out" | sed 's/.*: //')
[ "$rc" -eq 0 ] || grep -E '^✗' <<<"$out" | indent
result "systemd-analyze security: exposure ${level:-?} (at most 2.0)" "$rc"

rc=0
for line in 'ExecStart=/usr/local/bin/roomengine-exporter --config.file /etc/roomengine-exporter/exporter.yaml' \
    'ExecReload=/bin/kill -HUP $MAINPID' 'Restart=on-failure' 'DynamicUser=yes' \
    'StateDirectory=roomengine-exporter' 'EnvironmentFile=/etc/roomengine-exporter/secret.env' \
    'LimitNOFILE=65536' 'ProtectSystem=strict' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=' \
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallFilter=@system-service' 'MemoryDenyWriteExecute=yes'; do
    grep -qxF "$line" "$UNIT" || { echo "    $UNIT lacks: $line"; rc=1; }
done
state_dir=$(sed -n 's#^  state_file: \(.*\)/[^/]*$#\1#p' packaging/exporter.yaml)
[ "$state_dir" = /var/lib/roomengine-exporter ] || \
    { echo "    packaging/exporter.yaml callbacks.state_file is in '$state_dir', not StateDirectory /var/lib/roomengine-exporter"; rc=1; }
result "unit settings: ExecStart, reload, restart, dynamic user, state directory = callbacks.state_file's, secrets file, hardening" "$rc"

finish
