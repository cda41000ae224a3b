#!/usr/bin/env bash
# Static checks of the monitoring files, no cluster needed:
#   1. promtool check config   prometheus/prometheus.yml (and the rule files it names)
#   2. promtool check rules    prometheus/rules/*.yml
#   3. promtool test rules     prometheus/tests/*.yml
#   4. every alert has a unit test where it fires and one where it must not
#   5. the Grafana dashboards: valid JSON, the expected uids, the datasource, job and instance
#      variables, every panel on ${datasource} with at least one PromQL target, ranges written
#      as [$__rate_interval], the instance filter in every expression, and every expression
#      (variables substituted) parsed by promtool.
# Runs every check, prints each failure, and exits non-zero if any failed.
# Needs python3; installs promtool when missing (ensure-prometheus.sh).
# api/tests/monitoring.rs runs this, then checks the same files against a live cluster.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! command -v python3 >/dev/null; then
    echo "check.sh: python3 is needed to check the dashboards" >&2
    exit 1
fi
./ensure-prometheus.sh

# shellcheck source=deployments/lib/checks.sh
. "$here/../lib/checks.sh"

check "promtool check config prometheus/prometheus.yml" \
    promtool check config prometheus/prometheus.yml
check "promtool check rules prometheus/rules/*.yml" \
    promtool check rules prometheus/rules/*.yml
check "promtool test rules prometheus/tests/*.yml" \
    promtool test rules prometheus/tests/*.yml

# Line-based reading of our own two files' layout: `- alert: Name` in the rules, and in the
# tests each `alertname: Name` followed by `exp_alerts: []` (must not fire) or by a list.
check "every alert has a firing and a quiet unit test" python3 - <<'PY'
import glob, re, sys

alerts = []
for path in sorted(glob.glob("prometheus/rules/*.yml")):
    alerts += re.findall(r"^\s*- alert:\s*(\S+)\s*$", open(path).read(), re.M)
firing, quiet = set(), set()
for path in sorted(glob.glob("prometheus/tests/*.yml")):
    lines = [l.strip() for l in open(path) if l.strip() and not l.strip().startswith("#")]
    for i, line in enumerate(lines):
        m = re.match(r"alertname:\s*(\S+)$", line)
        if not m:
            continue
        after = lines[i + 1] if i + 1 < len(lines) else ""
        if re.match(r"exp_alerts:\s*\[\]$", after):
            quiet.add(m.group(1))
        elif re.match(r"exp_alerts:\s*$", after):
            firing.add(m.group(1))
problems = []
if not alerts:
    problems.append("no `- alert:` found under prometheus/rules/")
if len(set(alerts)) != len(alerts):
    problems.append(f"an alert name is used twice: {sorted(alerts)}")
for name in alerts:
    if name not in firing:
        problems.append(f"{name}: no unit test where it fires (exp_alerts with an alert)")
    if name not in quiet:
        problems.append(f"{name}: no unit test where it must not fire (exp_alerts: [])")
for name in sorted((firing | quiet) - set(alerts)):
    problems.append(f"the tests name an alert the rules do not have: {name}")
for p in problems:
    print(p, file=sys.stderr)
if not problems:
    print(f"{len(alerts)} alerts, each tested firing and quiet")
sys.exit(1 if problems else 0)
PY

check "Grafana dashboards" python3 - <<'PY'
import json, os, re, subprocess, sys, tempfile

EXPECTED = ["raftkv-overview", "raftkv-storage", "raftkv-cluster"]
DS_UID = "${datasource}"
problems = []
exprs = []  # (where, PromQL with the variables substituted)

def substitute(expr):
    # What Grafana does before sending a query: the same substitution the live check uses.
    return (expr.replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$job", ".*"))

def panels_of(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])  # the panels of a collapsed row

found = sorted(f for f in os.listdir("grafana/dashboards") if f.endswith(".json"))
if found != sorted(u + ".json" for u in EXPECTED):
    problems.append(f"grafana/dashboards holds {found}, expected one file per uid {EXPECTED}")
for uid in EXPECTED:
    path = f"grafana/dashboards/{uid}.json"
    try:
        d = json.load(open(path))
    except (OSError, ValueError) as e:
        problems.append(f"{path}: not readable JSON: {e}")
        continue
    where = path
    if d.get("uid") != uid:
        problems.append(f"{where}: uid is {d.get('uid')!r}, expected {uid!r}")
    if d.get("id") is not None:
        problems.append(f"{where}: id must be null (Grafana assigns it)")
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        problems.append(f"{where}: schemaVersion {d.get('schemaVersion')!r}, expected 36 or later")
    if not d.get("title"):
        problems.append(f"{where}: no title")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{where}: no `datasource` variable of type datasource listing prometheus data sources")
    for name in ("job", "instance"):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            problems.append(f"{where}: no `{name}` query variable")
            continue
        if v.get("datasource", {}).get("uid") != DS_UID:
            problems.append(f"{where}: variable {name} does not query ${{datasource}}")
        query = v.get("query", {})
        query = query.get("query", "") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query or "")
        if not m:
            problems.append(f"{where}: variable {name}: expected label_values(SELECTOR, LABEL), got {query!r}")
        else:
            exprs.append((f"{where} variable {name}", substitute(m.group(1))))
    if variables.get("instance", {}).get("allValue") != ".*":
        problems.append(f"{where}: the instance variable's All value must be .*")
    ids = set()
    for p in panels_of(d):
        title = p.get("title") or "(untitled)"
        pw = f"{where} panel {p.get('id')} {title!r}"
        if p.get("id") in ids:
            problems.append(f"{pw}: id used twice")
        ids.add(p.get("id"))
        if not p.get("title"):
            problems.append(f"{pw}: no title")
        if "gridPos" not in p:
            problems.append(f"{pw}: no gridPos")
        if p.get("type") == "row":
            if p.get("targets"):
                problems.append(f"{pw}: a row has no queries")
            continue
        pds = p.get("datasource") or {}
        if pds.get("type") != "prometheus" or pds.get("uid") != DS_UID:
            problems.append(f"{pw}: datasource must be {{type: prometheus, uid: {DS_UID}}}, is {pds}")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{pw}: no targets")
        for t in targets:
            tw = f"{pw} target {t.get('refId')}"
            expr = t.get("expr", "")
            if not expr.strip():
                problems.append(f"{tw}: no expr")
                continue
            tds = t.get("datasource")
            if tds is not None and tds != pds:
                problems.append(f"{tw}: datasource {tds} differs from the panel's")
            for rng in re.findall(r"\[([^\]]*)\]", expr):
                if rng != "$__rate_interval":
                    problems.append(f"{tw}: range [{rng}]: use [$__rate_interval]")
            if 'instance=~"$instance"' not in expr:
                problems.append(f"{tw}: the expression ignores the instance variable (instance=~\"$instance\")")
            exprs.append((tw, substitute(expr)))

# promtool parses PromQL in rule files: one recording rule per expression.
with tempfile.TemporaryDirectory() as tmp:
    rules = os.path.join(tmp, "dashboard-exprs.yml")
    with open(rules, "w") as f:
        f.write("groups:\n  - name: dashboard_expressions\n    rules:\n")
        for i, (_, e) in enumerate(exprs):
            f.write(f"      - record: dashboard_expression_{i}\n        expr: {json.dumps(e)}\n")
    out = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
    if out.returncode != 0:
        # promtool names the first bad rule's expression; say which panel it belongs to.
        text = out.stdout + out.stderr
        problems.append("promtool could not parse a dashboard expression:\n" + text.strip())
        for where, e in exprs:
            one = os.path.join(tmp, "one.yml")
            with open(one, "w") as f:
                f.write(f"groups:\n  - name: one\n    rules:\n      - record: one\n        expr: {json.dumps(e)}\n")
            if subprocess.run(["promtool", "check", "rules", one], capture_output=True).returncode != 0:
                problems.append(f"{where}: does not parse: {e}")

for p in problems:
    print(p, file=sys.stderr)
if not problems:
    print(f"{len(EXPECTED)} dashboards, {len(exprs)} expressions parsed")
sys.exit(1 if problems else 0)
PY

checks_done monitoring
