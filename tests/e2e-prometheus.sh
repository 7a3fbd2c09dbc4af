#!/usr/bin/env bash
# End-to-end check of the dashboards and alerts against a real Prometheus.
#
# On loopback only, in a temporary directory: starts the simulator, the
# exporter polling it, and Prometheus (scrape and evaluation every 2s) loaded
# with dashboards/rules.yml and a test copy of dashboards/alerts.yml whose
# only change is a short `for` on RoomEngineRoomFull. Then:
#   1. the exporter target is up in Prometheus;
#   2. `promtool check metrics` has nothing to say about the exporter's /metrics;
#   3. every query of both dashboards (variables substituted) is valid PromQL
#      and returns data, except the few allowed empty below (each with a reason);
#   4. every rule evaluates without error, and a room set to its MaxMemberCount
#      in the simulator fires RoomEngineRoomFull for exactly that room (every
#      other room it fires for really is full in the simulator);
#   5. everything started here is stopped on exit, failure or not.
#
# Environment: BIN (default target/release/roomengine-exporter, built when
# missing), KEEP_WORKDIR=1 to keep the temp dir (logs, configs) for inspection.
# Needs python3 (standard library only) and curl.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOMS=20
JOB=roomengine
FULL_FOR=4s               # the test copy's `for` for RoomEngineRoomFull

STEP="setup"
PIDS=()
WORK=""
passed=0

say() { echo "e2e: $*"; }

fail() {
    echo "e2e: FAILED at step $STEP: $*" >&2
    exit 1
}

pass() {
    passed=$((passed + 1))
    say "ok   - step $STEP"
}

# shellcheck disable=SC2317  # runs from the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    STEP="5 (stop everything started)"
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "e2e: process $pid is still running" >&2
            rc=1
        fi
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$rc" -ne 0 ]; then
            for log in "$WORK"/*.log; do
                [ -f "$log" ] || continue
                echo "---- last lines of $(basename "$log")" >&2
                tail -n 15 "$log" >&2
            done
        fi
        if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
            echo "e2e: kept $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    if [ "$rc" -eq 0 ]; then
        say "ok   - step 5 (stopped everything started)"
        say "$((passed + 1)) passed, 0 failed"
    else
        say "$passed passed, 1 failed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------- setup
command -v curl >/dev/null || fail "curl is required"
command -v python3 >/dev/null || fail "python3 is required"
"$ROOT/tests/ensure-prometheus.sh" || fail "could not install prometheus/promtool"

if [ -z "${BIN:-}" ]; then
    BIN="$ROOT/target/release/roomengine-exporter"
    if [ ! -x "$BIN" ]; then
        say "building $BIN"
        (cd "$ROOT" && cargo build --release --quiet) || fail "cargo build --release failed"
    fi
fi
[ -x "$BIN" ] || fail "BIN=$BIN is not an executable"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/roomengine-e2e.XXXXXX") || fail "mktemp failed"

# Three free loopback ports (asked of the kernel, released right away).
read -r SIM_PORT EXP_PORT PROM_PORT < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
[ -n "${PROM_PORT:-}" ] || fail "could not pick free ports"
SIM="http://127.0.0.1:$SIM_PORT"
EXP="http://127.0.0.1:$EXP_PORT"
PROM="http://127.0.0.1:$PROM_PORT"

# wait_http URL SECONDS NAME PID: wait for a 200 from URL while PID lives.
wait_http() {
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
        kill -0 "$4" 2>/dev/null || fail "$3 exited early (see $3.log)"
        [ "$SECONDS" -lt "$deadline" ] || fail "$3 not ready at $1 after $2s"
        sleep 0.5
    done
}

STEP="setup (simulator)"
ROOMENGINE_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export ROOMENGINE_SECRET_KEY
# A few injected internal errors (100001) give the error panels something to show.
"$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --rooms "$ROOMS" --seed 1 \
    --sdkappid 1400000000 --identifier administrator \
    --secret-key-env ROOMENGINE_SECRET_KEY --latency 5ms --fault-rate 0.02 \
    >"$WORK/simulator.log" 2>&1 &
PIDS+=($!)
wait_http "$SIM/sim/rooms" 30 simulator "${PIDS[-1]}"

STEP="setup (exporter)"
{
    cat <<EOF
app:
  sdkappid: 1400000000
  identifier: administrator
  secret_key_env: ROOMENGINE_SECRET_KEY
  endpoint: $SIM
  usersig_ttl: 24h
polling:
  interval: 2s
  rate_limit: 50
  timeout: 5s
rooms:
EOF
    for i in $(seq 1 "$ROOMS"); do printf '  - room-%04d\n' "$i"; done
    # Configured but unknown to the simulator: the API answers 100004.
    echo "  - room-destroyed"
} >"$WORK/exporter.yaml"
"$BIN" --config.file "$WORK/exporter.yaml" --web.listen-address "127.0.0.1:$EXP_PORT" \
    >"$WORK/exporter.log" 2>&1 &
PIDS+=($!)
wait_http "$EXP/-/ready" 60 exporter "${PIDS[-1]}"

STEP="setup (prometheus)"
mkdir -p "$WORK/rules" "$WORK/tsdb"
# The test copy of alerts.yml: RoomEngineRoomFull's `for` shortened, nothing else.
python3 - "$ROOT/dashboards/alerts.yml" "$WORK/rules/alerts.yml" "$FULL_FOR" <<'PY' || fail "could not write the test copy of alerts.yml"
import re, sys
src, dst, short = sys.argv[1:]
lines = open(src).read().split("\n")
inside, changed = False, 0
for i, line in enumerate(lines):
    m = re.match(r"\s*- alert:\s*(\S+)", line)
    if m:
        inside = m.group(1) == "RoomEngineRoomFull"
    elif inside and re.match(r"\s+for:\s*\S+\s*$", line):
        lines[i] = re.sub(r"for:\s*\S+", "for: " + short, line)
        changed += 1
if changed != 1:
    sys.exit(f"expected one `for:` in RoomEngineRoomFull, found {changed}")
open(dst, "w").write("\n".join(lines))
PY
diff_lines=$(diff "$ROOT/dashboards/alerts.yml" "$WORK/rules/alerts.yml" | grep -c '^[<>]')
[ "$diff_lines" -eq 2 ] || fail "the test copy of alerts.yml differs in more than the one for: line"
promtool check rules "$WORK/rules/alerts.yml" >/dev/null 2>&1 || fail "the test copy of alerts.yml is invalid"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 2s
rule_files:
  - $WORK/rules/alerts.yml
  - $ROOT/dashboards/rules.yml
scrape_configs:
  - job_name: $JOB
    static_configs:
      - targets: ["127.0.0.1:$EXP_PORT"]
EOF
prometheus --config.file "$WORK/prometheus.yml" --storage.tsdb.path "$WORK/tsdb" \
    --web.listen-address "127.0.0.1:$PROM_PORT" --log.level warn \
    >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "$PROM/-/ready" 60 prometheus "${PIDS[-1]}"
say "simulator $SIM, exporter $EXP, prometheus $PROM, workdir $WORK"

# All HTTP/JSON work below is python3 (stdlib): prom QUERY / sim calls.
export SIM EXP PROM JOB EXP_PORT ROOT
py() { python3 - "$@"; }

# ------------------------------------------------ 1. exporter target is up
STEP="1 (exporter target up in Prometheus)"
py <<'PY' || fail "the exporter target never became up"
import json, os, sys, time, urllib.request
prom, job = os.environ["PROM"], os.environ["JOB"]
deadline, last = time.time() + 40, "no target yet"
while time.time() < deadline:
    with urllib.request.urlopen(f"{prom}/api/v1/targets?state=active", timeout=5) as r:
        targets = json.load(r)["data"]["activeTargets"]
    ours = [t for t in targets if t["labels"].get("job") == job]
    if ours and all(t["health"] == "up" for t in ours):
        print(f"e2e:      target {ours[0]['scrapeUrl']} is up")
        sys.exit(0)
    if ours:
        last = f"health {ours[0]['health']}: {ours[0].get('lastError')}"
    time.sleep(1)
sys.exit(f"e2e:      {last}")
PY
pass

# ---------------------------------------------- 2. promtool check metrics
STEP="2 (promtool check metrics on /metrics)"
curl -fsS --max-time 10 "$EXP/metrics" >"$WORK/metrics.txt" || fail "GET $EXP/metrics failed"
lint=$(promtool check metrics <"$WORK/metrics.txt" 2>&1); rc=$?
if [ "$rc" -ne 0 ] || [ -n "$lint" ]; then
    echo "$lint" | head -n 40 >&2
    fail "promtool check metrics reported problems (exit $rc)"
fi
say "     $(grep -vc '^#' "$WORK/metrics.txt") samples, promtool check metrics: nothing to report"
pass

# ---------------------------------------------- fixtures for steps 3 and 4
# A full room for step 4 (and the capacity panels), a room running past its
# scheduled end with video disabled (schedule and feature panels), and a
# seat-enabled room with every seat taken (seat panels). The first two are
# chosen among rooms well below capacity; PUT freezes a room, so the
# simulator's walk leaves these alone.
STEP="4 (set a room to its capacity)"
TARGET=$(py <<'PY'
import json, os, sys, time, urllib.request
sim = os.environ["SIM"]
with urllib.request.urlopen(f"{sim}/sim/rooms", timeout=5) as r:
    rooms = json.load(r)
calm = [r for r in rooms if r.get("MaxMemberCount", 0) > 0
        and r.get("MemberCount", 0) < 0.8 * r["MaxMemberCount"]]
if len(calm) < 2:
    sys.exit(f"e2e:      need two rooms well below capacity, simulator has {len(calm)}")
full, late = calm[0], calm[1]
def put(room_id, fields):
    req = urllib.request.Request(f"{sim}/sim/rooms/{room_id}", method="PUT",
                                 data=json.dumps(fields).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)
got = put(full["RoomId"], {"MemberCount": full["MaxMemberCount"]})
if got.get("MemberCount") != full["MaxMemberCount"]:
    sys.exit(f"e2e:      PUT did not set MemberCount: {got}")
now = int(time.time())
put(late["RoomId"], {"RoomStatus": "Running", "ScheduleStartTime": now - 7200,
                     "ScheduleEndTime": now - 3600, "IsVideoDisabled": True})
seated = [r for r in rooms if r.get("IsSeatEnabled") and r.get("MaxSeatCount", 0) > 0
          and r["RoomId"] not in (full["RoomId"], late["RoomId"])]
if not seated:
    sys.exit("e2e:      the simulator has no other seat-enabled room")
put(seated[0]["RoomId"], {"SeatsOccupied": seated[0]["MaxSeatCount"]})
print(full["RoomId"], full["MaxMemberCount"], full.get("RoomName", ""), sep="\t")
PY
) || fail "could not set up the simulator rooms"
IFS=$'\t' read -r TARGET_ROOM TARGET_MAX TARGET_NAME <<<"$TARGET"
export TARGET_ROOM TARGET_MAX TARGET_NAME
say "     set $TARGET_ROOM (\"$TARGET_NAME\") to MemberCount = MaxMemberCount = $TARGET_MAX"

# ------------------------------------------------- 3. dashboard queries
STEP="3 (dashboard queries valid and returning data)"
py "$ROOT"/dashboards/*.json <<'PY' || fail "see the queries listed above"
import json, os, re, sys, time, urllib.error, urllib.parse, urllib.request

prom = os.environ["PROM"]

# Panels allowed to return no data, each with the reason. Keyed by
# (dashboard uid, panel title, refId). Anything else must return data.
ALLOWED_EMPTY = {
    ("roomengine-exporter", "Rooms not up", "C"):
        "only existing rooms whose polls keep failing; retries usually hide the injected faults",
}

# Grafana's values for the variables: one concrete job and exporter (regex-
# escaped the way Grafana escapes them for Prometheus), every room, and the
# built-in intervals for a 2s scrape interval.
instance_re = re.sub(r"([.\\+*?()\[\]{}|^$])", r"\\\\\1", f"127.0.0.1:{os.environ['EXP_PORT']}")
VARS = {
    "job": os.environ["JOB"], "instance": instance_re, "room": ".+",
    "__rate_interval": "8s", "__interval": "2s", "__interval_ms": "2000",
    "__range": "5m", "__range_s": "300", "__range_ms": "300000",
}

def substitute(expr):
    def one(m):
        name = m.group(1) or m.group(2)
        if name not in VARS:
            raise KeyError(name)
        return VARS[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)

def query(expr, kind="query"):
    params = {"query": expr}
    if kind == "query_range":
        end = time.time()
        params.update(start=f"{end - 30:.3f}", end=f"{end:.3f}", step="2")
    body = urllib.parse.urlencode(params).encode()
    try:
        with urllib.request.urlopen(f"{prom}/api/v1/{kind}", data=body, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)

checks = []      # (uid, title, refId, expr)
for path in sys.argv[1:]:
    d = json.load(open(path))
    uid = d["uid"]
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", v["query"] if isinstance(v["query"], str) else v["query"]["query"])
        if not m:
            sys.exit(f"e2e:      {uid} variable {v['name']}: not label_values(): {v['query']}")
        checks.append((uid, f"variable ${v['name']}", "-", f"count by ({m.group(2)}) ({m.group(1)})"))
    panels = []
    for p in d["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))
    for p in panels:
        for t in p.get("targets", []):
            checks.append((uid, p["title"], t["refId"], t["expr"]))

pending = []
errors = 0
for uid, title, ref, expr in checks:
    try:
        q = substitute(expr)
    except KeyError as e:
        print(f"e2e:      {uid} / {title} / {ref}: unknown variable ${e.args[0]}")
        errors += 1
        continue
    for kind in ("query", "query_range"):
        res = query(q, kind)
        if res.get("status") != "success":
            print(f"e2e:      {uid} / {title} / {ref}: {kind} error: {res.get('error')}\n{q}")
            errors += 1
            break
    else:
        pending.append((uid, title, ref, q))

# Rates need a few scrapes and recording rules an evaluation: retry empty
# results for a while before calling them empty.
deadline = time.time() + 45
while True:
    still = [c for c in pending if not query(c[3])["data"]["result"]]
    if all(c[:3] in ALLOWED_EMPTY for c in still) or time.time() > deadline:
        break
    pending = still
    time.sleep(2)

allowed_seen = set()
for uid, title, ref, q in still:
    reason = ALLOWED_EMPTY.get((uid, title, ref))
    if reason:
        allowed_seen.add((uid, title, ref))
        print(f"e2e:      allowed empty: {uid} / {title} / {ref}: {reason}")
    else:
        print(f"e2e:      NO DATA: {uid} / {title} / {ref}:\n{q}")
        errors += 1
for key in sorted(set(ALLOWED_EMPTY) - allowed_seen):
    print(f"e2e:      note: allowed-empty {' / '.join(key)} returned data")
print(f"e2e:      {len(checks)} queries, {len(checks) - errors - len(allowed_seen)} with data, "
      f"{len(allowed_seen)} allowed empty, {errors} failing")
sys.exit(1 if errors else 0)
PY
pass

# ---------------------------------------------- 4. RoomEngineRoomFull fires
STEP="4 (rules healthy, RoomEngineRoomFull fires for the full room)"
py <<'PY' || fail "RoomEngineRoomFull did not fire as expected"
import json, os, sys, time, urllib.request
prom, sim = os.environ["PROM"], os.environ["SIM"]
target, name, cap = os.environ["TARGET_ROOM"], os.environ["TARGET_NAME"], os.environ["TARGET_MAX"]

def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)

# No rule may fail to evaluate (e.g. a many-to-many match in a join).
groups = get(f"{prom}/api/v1/rules")["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
broken = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
if broken:
    sys.exit(f"e2e:      rules failing to evaluate: {broken}")
print(f"e2e:      {len(rules)} rules in {len(groups)} groups evaluate without error")

def firing():
    alerts = get(f"{prom}/api/v1/alerts")["data"]["alerts"]
    return {a["labels"]["room_id"]: a for a in alerts
            if a["labels"].get("alertname") == "RoomEngineRoomFull" and a["state"] == "firing"}

deadline = time.time() + 60
while target not in (now := firing()):
    if time.time() > deadline:
        sys.exit(f"e2e:      no firing RoomEngineRoomFull for {target} after 60s; firing: {sorted(now)}")
    time.sleep(1)
alert = now[target]
want = {"severity": "critical", "room_id": target}
if name:
    want["room_name"] = name
bad = {k: (alert["labels"].get(k), v) for k, v in want.items() if alert["labels"].get(k) != v}
if bad:
    sys.exit(f"e2e:      alert labels (got, want): {bad}")
desc = alert["annotations"].get("description", "")
if target not in alert["annotations"].get("summary", "") or f"has {cap} members" not in desc \
        or f"MaxMemberCount is {cap}" not in desc:
    sys.exit(f"e2e:      annotations do not name the room and values: {alert['annotations']}")
print(f"e2e:      firing for {target}: {alert['annotations']['summary']}")

# Every firing room must really be full in the simulator. Other rooms fill
# and empty on their own, and an alert lags the simulator by a poll, a scrape
# and an evaluation, so give a room that just dropped below capacity a few
# seconds to resolve.
deadline = time.time() + 20
while True:
    now = firing()
    rooms = {r["RoomId"]: r for r in get(f"{sim}/sim/rooms")}
    wrong = [rid for rid in now if not (rid in rooms and rooms[rid]["MaxMemberCount"] > 0
                                        and rooms[rid]["MemberCount"] >= rooms[rid]["MaxMemberCount"])]
    if target not in now:
        sys.exit(f"e2e:      the alert for {target} stopped firing")
    if not wrong:
        break
    if time.time() > deadline:
        sys.exit(f"e2e:      firing for rooms that are not full in the simulator: {wrong}")
    time.sleep(1)
others = sorted(set(now) - {target})
print(f"e2e:      firing rooms: {sorted(now)} (all full in the simulator"
      f"{'; ' + str(len(others)) + ' filled up on their own' if others else ''})")
PY
pass

STEP="5 (stop everything started)"
exit 0
