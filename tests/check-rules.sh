#!/usr/bin/env bash
# Static checks of dashboards/: the Prometheus rule files and the Grafana
# dashboards. Needs promtool (installed by tests/ensure-prometheus.sh when
# missing) and python3 (standard library only).
#
#   1. promtool check rules --lint=all on dashboards/*.yml: must pass with no
#      warning at all;
#   2. promtool test rules tests/alerts.test.yml: the alert unit tests;
#   3. the dashboard lint below, on dashboards/*.json.
#
# Exits non-zero when any check fails; the last line is "N passed, N failed".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

"$ROOT/tests/ensure-prometheus.sh" || { echo "check-rules: could not install promtool" >&2; exit 1; }

# shellcheck source=tests/results.sh
. "$ROOT/tests/results.sh"

# 1. Rule files: valid, and not a single lint warning.
out=$(promtool check rules --lint=all --lint-fatal dashboards/*.yml 2>&1); rc=$?
indent <<<"$out"
if [ "$rc" -eq 0 ] && grep -qiE 'warn|lint|duplicate' <<<"$out"; then
    echo "    (promtool printed a warning)"; rc=1
fi
result "promtool check rules dashboards/*.yml" "$rc"

# 2. Alert unit tests.
out=$(promtool test rules tests/alerts.test.yml 2>&1); rc=$?
indent <<<"$out"
result "promtool test rules tests/alerts.test.yml" "$rc"

# 3. Dashboard lint.
python3 - dashboards/*.json <<'PY'
"""Grafana dashboard conventions for this repository.

Every panel: datasource {"type":"prometheus","uid":"${datasource}"}, a unit and
a description; every selector in every query filters on job=~"$job" and
instance=~"$instance"; every range is [$__rate_interval]; a stable uid (the
file name); schemaVersion 39; datasource/job/instance variables (and room on the
rooms dashboard); no overlapping panels; no hard-coded datasource UID anywhere.
"""
import json
import os
import re
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "and", "or", "unless", "offset", "inf", "nan", "start", "end"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


def tokens(expr):
    """PromQL tokens: (kind, text) with kinds str, ident, num, {}, [], punct."""
    i, out = 0, []
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "\"'`":
            j = i + 1
            while j < len(expr) and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            out.append(("str", expr[i:j + 1])); i = j + 1
        elif c in "{[":
            close = "}" if c == "{" else "]"
            j, quote = i + 1, None
            while j < len(expr):
                ch = expr[j]
                if quote:
                    if ch == "\\" and quote != "`":
                        j += 1
                    elif ch == quote:
                        quote = None
                elif ch in "\"'`":
                    quote = ch
                elif ch == close:
                    break
                j += 1
            out.append((c + close, expr[i + 1:j])); i = j + 1
        elif c.isalpha() or c in "_:":
            m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", expr[i:])
            out.append(("ident", m.group(0))); i += len(m.group(0))
        elif c.isdigit() or (c == "." and expr[i + 1:i + 2].isdigit()):
            m = re.match(r"[0-9.]+(e[+-]?[0-9]+)?|0x[0-9a-fA-F]+", expr[i:])
            out.append(("num", m.group(0))); i += len(m.group(0))
        else:
            out.append(("punct", c)); i += 1
    return out


def matchers(body):
    """Label matchers of a {...} body as a set of 'name op "value"' strings."""
    found = set()
    for m in re.finditer(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*,?', body):
        found.add(f"{m.group(1)}{m.group(2)}{m.group(3)}")
    return found


def selectors(expr):
    """Yield (metric name or '', matcher set) for every vector selector in expr."""
    toks = tokens(expr)
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if kind == "ident":
            if text in LABEL_LIST_KEYWORDS and nxt == ("punct", "("):
                depth, i = 0, i + 1           # skip the label list
                while i < len(toks):
                    if toks[i] == ("punct", "("):
                        depth += 1
                    elif toks[i] == ("punct", ")"):
                        depth -= 1
                        if depth == 0:
                            break
                    i += 1
            elif (text in KEYWORDS or nxt == ("punct", "(")
                  or nxt in (("ident", "by"), ("ident", "without"))):
                pass                          # keyword, function or aggregation
            elif nxt[0] == "{}":
                yield text, matchers(nxt[1]); i += 1
            else:
                yield text, set()
        elif kind == "{}":
            yield "", matchers(text)
        i += 1


def ranges(expr):
    return [text for kind, text in tokens(expr) if kind == "[]"]


def rect_overlap(a, b):
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def walk_datasources(node, path, where):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                if isinstance(v, dict):
                    uid = v.get("uid")
                    if uid is not None and uid != "${datasource}":
                        err(where, f"hard-coded datasource uid {uid!r} at {path}/datasource")
                elif isinstance(v, str) and v != "${datasource}":
                    err(where, f"hard-coded datasource {v!r} at {path}/datasource")
            walk_datasources(v, f"{path}/{k}", where)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk_datasources(v, f"{path}/{i}", where)
    elif isinstance(node, str) and "${DS_" in node:
        err(where, f"import-time datasource input {node!r} at {path}")


def lint(path):
    name = os.path.basename(path)
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        err(name, f"not valid JSON: {e}")
        return 0
    expected_uid = name[:-len(".json")]
    if d.get("uid") != expected_uid:
        err(name, f"uid is {d.get('uid')!r}, expected the stable {expected_uid!r}")
    if d.get("id") is not None:
        err(name, "id must be null (Grafana assigns it)")
    if d.get("schemaVersion") != 39:
        err(name, f"schemaVersion is {d.get('schemaVersion')!r}, expected 39")
    if "__inputs" in d:
        err(name, "__inputs present: use the datasource variable instead")
    walk_datasources(d, "", name)

    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err(name, "needs a variable 'datasource' of type datasource, query prometheus")
    wanted = ["job", "instance"] + (["room"] if "rooms" in name else [])
    for v in wanted:
        var = variables.get(v)
        if not var:
            err(name, f"needs a variable {v!r}"); continue
        if var.get("datasource") != DS:
            err(name, f"variable {v!r}: datasource must be {DS}")
        if not (var.get("multi") and var.get("includeAll") and var.get("allValue") == ".+"):
            err(name, f"variable {v!r}: needs multi, includeAll and allValue '.+'")

    panels = []
    for p in d.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))   # panels inside collapsed rows
    ids, rects, checked = set(), [], 0
    for p in panels:
        where = f"{name}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            err(where, "duplicate panel id")
        ids.add(p.get("id"))
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            err(where, "gridPos needs integer x, y, w, h"); continue
        if g["w"] <= 0 or g["h"] <= 0 or g["x"] < 0 or g["x"] + g["w"] > 24:
            err(where, f"gridPos {g} outside the 24-column grid")
        for other, og in rects:
            if rect_overlap(g, og):
                err(where, f"overlaps panel {other!r}")
        rects.append((p.get("title"), g))
        if p.get("type") == "row":
            continue
        checked += 1
        if p.get("datasource") != DS:
            err(where, f"datasource must be {DS}")
        if not (p.get("description") or "").strip():
            err(where, "needs a description")
        if not (p.get("fieldConfig", {}).get("defaults", {}).get("unit") or "").strip():
            err(where, "needs a unit (fieldConfig.defaults.unit)")
        if not p.get("targets"):
            err(where, "has no query")
        for t in p.get("targets", []):
            tw = f"{where} query {t.get('refId')}"
            if t.get("datasource") != DS:
                err(tw, f"datasource must be {DS}")
            expr = t.get("expr") or ""
            if not expr.strip():
                err(tw, "empty expr"); continue
            for metric, ms in selectors(expr):
                for need in ('job=~"$job"', 'instance=~"$instance"'):
                    if need not in ms:
                        err(tw, f"selector {metric or '{...}'} lacks {need}")
            for r in ranges(expr):
                if r.strip() != "$__rate_interval":
                    err(tw, f"range [{r}] must be [$__rate_interval]")
    return checked


total = 0
for path in sys.argv[1:]:
    total += lint(path)
for e in errors:
    print(f"    {e}")
print(f"    {len(sys.argv) - 1} dashboards, {total} panels linted, {len(errors)} problems")
sys.exit(1 if errors else 0)
PY
result "dashboard lint dashboards/*.json" "$?"

echo "check-rules: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
