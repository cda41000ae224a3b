#!/usr/bin/env bash
# New-key writes, RaftKV beside etcd in one run (issue 12): for each cluster size in PHASES, a
# fresh etcd cluster (Debian's etcd-server, started by ../shared/bench/etcd/etcd_cluster.sh)
# and a fresh RaftKV cluster (scripts/cluster.sh) run side by side; each round drives both, one
# after the other, with the same wrk load: W2, 64 connections, a new 16-byte key and a 100-byte
# value per request (../shared/bench/wrk/etcd_put.lua, raftkv_put.lua), DUR seconds each, to
# the leader. The stores grow by every round's keys, as a user's do. Prints one line per round
# and system (ops/s, p50, p99, errors) and the RaftKV/etcd ratio of each round; the wrk JSON
# lines go to OUT/wrk.jsonl.
#
#   scripts/bench-vs-etcd.sh [OUT]
#
# Environment: PHASES ("three single"), ROUNDS (3), DUR (15), SHARED (../shared: the team's
# bench folder beside the project), SKIP_BUILD=1. Needs etcd (apt-get install -y etcd-server),
# wrk and python3; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh
root=$(pwd)

out=${1:-bench-vs-etcd-$(date -u +%Y%m%dT%H%M%SZ)}
phases=${PHASES:-three single}
rounds=${ROUNDS:-3}
dur=${DUR:-15}
shared=$(cd "${SHARED:-../shared}" && pwd)
bench=$shared/bench
require_positive "ROUNDS and DUR" "$rounds" "$dur"
for tool in etcd wrk python3 jq; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y etcd-server wrk jq)" >&2; exit 1; }
done
release_binaries
out=$(absolute_dir "$out")
export ETCDBENCH_DIR=$out/etcd
export RAFTKV_BIN=$raftkv
raftkv_dir=$out/raftkv
raftkv_nodes=""

cleanup() {
    (cd "$bench/etcd" && ./etcd_cluster.sh stop >/dev/null 2>&1) || true
    if [[ -n $raftkv_nodes ]]; then
        NODES=$raftkv_nodes HTTP_BASE=26080 RAFT_BASE=26000 GRPC_BASE=26100 scripts/cluster.sh stop "$raftkv_dir" >/dev/null 2>&1 || true
    fi
    rm -rf "$ETCDBENCH_DIR/data" "$raftkv_dir"
}
trap cleanup EXIT

# The HTTP address of the RaftKV leader, as node 1 knows it.
raftkv_leader() {
    local addr
    addr=$(curl -s "http://127.0.0.1:26081/cluster/leader" | jq -r '.http_addr // empty')
    echo "http://${addr:-127.0.0.1:26081}"
}

# One wrk run: LABEL URL SCRIPT; appends wrk's JSON line (with the label) to wrk.jsonl and
# prints a summary line.
run() {
    local label=$1 url=$2 script=$3 line
    wrk -t2 -c64 -d2s -s "$bench/wrk/$script" "$url" >/dev/null # warm-up, not recorded
    line=$(wrk -t2 -c64 -d"${dur}s" --latency -s "$bench/wrk/$script" "$url" | grep '^{' | tail -1)
    line=$(echo "$line" | jq -c --arg name "$label" '. + {"label": $name}')
    echo "$line" >>"$out/wrk.jsonl"
    echo "$line" | jq -r '"\(.label): \(.ops_per_s) ops/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, errors \(.errors + .socket_errors)"'
}

for phase in $phases; do
    case $phase in
        three) nodes=3 ;;
        single) nodes=1 ;;
        *) echo "PHASES lists three and single, not '$phase'" >&2; exit 2 ;;
    esac
    (cd "$bench/etcd" && ./etcd_cluster.sh start "$phase")
    rm -rf "$raftkv_dir"
    raftkv_nodes=$nodes
    NODES=$nodes HTTP_BASE=26080 RAFT_BASE=26000 GRPC_BASE=26100 scripts/cluster.sh start "$raftkv_dir" >/dev/null
    for round in $(seq "$rounds"); do
        if [[ $phase == three ]]; then
            etcd_url=$(cd "$bench/etcd" && python3 leader.py | cut -d' ' -f2)
        else
            etcd_url=http://127.0.0.1:32379
        fi
        run "${nodes}n-W2-etcd-r$round" "$etcd_url" etcd_put.lua
        run "${nodes}n-W2-raftkv-r$round" "$(raftkv_leader)" raftkv_put.lua
    done
    (cd "$bench/etcd" && ./etcd_cluster.sh stop)
    NODES=$nodes HTTP_BASE=26080 RAFT_BASE=26000 GRPC_BASE=26100 scripts/cluster.sh stop "$raftkv_dir" >/dev/null
    raftkv_nodes=""
    rm -rf "$ETCDBENCH_DIR/data" "$raftkv_dir"
done
echo "wrk JSON lines: $out/wrk.jsonl"
# RaftKV's new-key writes over etcd's, per cluster size and round.
python3 - "$out/wrk.jsonl" <<'PY'
import json, re, sys
rounds = {}
for line in open(sys.argv[1]):
    row = json.loads(line)
    size, system, number = re.match(r"(\d+n)-W2-(etcd|raftkv)-r(\d+)", row["label"]).groups()
    rounds.setdefault((size, int(number)), {})[system] = row["ops_per_s"]
print("| nodes | round | etcd ops/s | RaftKV ops/s | RaftKV / etcd |")
print("|---|---|---|---|---|")
for (size, number), ops in sorted(rounds.items()):
    if "etcd" in ops and "raftkv" in ops:
        print(f"| {size} | {number} | {ops['etcd']:,.0f} | {ops['raftkv']:,.0f} | {ops['raftkv'] / ops['etcd']:.2f}x |")
PY
