#!/usr/bin/env bash
# RaftKV's gRPC API beside etcd's, and beside RaftKV's own REST API, in one run (issue 14): for
# each cluster size in PHASES, a fresh etcd cluster (../shared/bench/etcd/etcd_cluster.sh) and a
# fresh RaftKV cluster (scripts/cluster.sh) run side by side, and each round drives all three
# with the same workloads, one after the other, against the leader:
#   W1 new-key puts, 1 worker; W2 new-key puts, 64 workers; W3 linearizable gets of 10,000
#   preloaded keys, 64 workers; W4 stale (etcd: serializable) gets, 64 workers;
# 16-byte keys, 100-byte values, DUR seconds each. etcd is driven by ../shared/bench/etcd-grpc
# (a Rust etcd-client load generator, one HTTP/2 connection per worker), RaftKV by
# `kvcli bench` (--protocol grpc: the workers share GRPC_CONNECTIONS HTTP/2 connections; REST:
# one keep-alive connection per worker), which take turns going first from round to round.
# The single-node phase runs W2 only. Prints one line
# per run and a table of medians with the ratios; the JSON lines go to OUT/runs.jsonl.
#
#   scripts/bench-grpc-vs-etcd.sh [OUT]
#
# Environment: PHASES ("three single"), ROUNDS (3), DUR (10), GRPC_CONNECTIONS (4, kvcli's
# default), SHARED (../shared),
# ETCD_GRPC_BENCH (a built etcdgrpcbench; built under /tmp when unset), SKIP_BUILD=1 (RaftKV's
# binaries). Needs etcd (apt-get install -y etcd-server), jq and python3; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh

out=${1:-bench-grpc-vs-etcd-$(date -u +%Y%m%dT%H%M%SZ)}
phases=${PHASES:-three single}
rounds=${ROUNDS:-3}
dur=${DUR:-10}
shared=$(cd "${SHARED:-../shared}" && pwd)
bench=$shared/bench
require_positive "ROUNDS and DUR" "$rounds" "$dur"
for tool in etcd jq python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y etcd-server jq)" >&2; exit 1; }
done
release_binaries
out=$(absolute_dir "$out")

# etcd's load generator: built outside the workspace (its build script needs protoc, which
# the protoc-bin-vendored crate ships).
etcdbench=${ETCD_GRPC_BENCH:-}
if [[ -z $etcdbench ]]; then
    build=/tmp/etcdgrpcbench-build
    if [[ ! -x $build/target/release/etcdgrpcbench ]]; then
        rm -rf "$build" && cp -r "$bench/etcd-grpc" "$build" && chmod -R u+w "$build"
        (cd "$build" && cargo fetch >/dev/null)
        protoc=$(find ~/.cargo/registry/src -path '*protoc-bin-vendored-linux-x86_64*' -name protoc -type f | head -1)
        chmod +x "$protoc"
        (cd "$build" && PROTOC=$protoc cargo build --release)
    fi
    etcdbench=$build/target/release/etcdgrpcbench
fi

export ETCDBENCH_DIR=$out/etcd
raftkv_dir=$out/raftkv
raftkv_nodes=""
ports=(HTTP_BASE=26080 RAFT_BASE=26000 GRPC_BASE=26100)

cleanup() {
    (cd "$bench/etcd" && ./etcd_cluster.sh stop >/dev/null 2>&1) || true
    if [[ -n $raftkv_nodes ]]; then
        env NODES="$raftkv_nodes" "${ports[@]}" RAFTKV_BIN="$raftkv" scripts/cluster.sh stop "$raftkv_dir" >/dev/null 2>&1 || true
    fi
    rm -rf "$ETCDBENCH_DIR/data" "$raftkv_dir"
}
trap cleanup EXIT

# The leader's address for PROTOCOL (http or grpc), as node 1 knows it.
raftkv_leader() {
    curl -s "http://127.0.0.1:26081/cluster/leader" | jq -r --arg p "$1" '.[$p + "_addr"]'
}

# Records one run's JSON line: LABEL JSON (etcdgrpcbench's or kvcli bench's), normalised to
# label, ops_per_s, p50_ms, p99_ms, errors.

etcd_run() { # LABEL URL MODE WORKERS
    record "$1" "$("$etcdbench" "$2" "$3" "$4" "$dur" 10000 1 | tail -1)"
}

raftkv_run() { # LABEL PROTOCOL WORKLOAD WORKERS
    local endpoint
    endpoint=$(raftkv_leader "$2")
    local args=(--endpoints "$2://$endpoint" --json bench --protocol "$2" --workload "$3"
        --concurrency "$4" --duration "${dur}s" --key-size 16 --value-size 100)
    if [[ $2 == grpc ]]; then
        args+=(--grpc-connections "${GRPC_CONNECTIONS:-4}")
    fi
    if [[ $3 == read || $3 == stale-read ]]; then
        args+=(--keys 10000 --preload)
    fi
    record "$1" "$("$kvcli" "${args[@]}" 2>/dev/null)"
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
    env NODES="$nodes" "${ports[@]}" RAFTKV_BIN="$raftkv" scripts/cluster.sh start "$raftkv_dir" >/dev/null
    if [[ $phase == three ]]; then
        etcd_url=$(cd "$bench/etcd" && python3 leader.py | cut -d' ' -f2)
    else
        etcd_url=http://127.0.0.1:32379
    fi
    # Preload: 64 workers, until all 10,000 keys are written (at most 120 s), no warm-up.
    "$etcdbench" "$etcd_url" preload 64 120 10000 0 >/dev/null
    for round in $(seq "$rounds"); do
        if [[ $phase == three ]]; then
            workloads="W1:put:write-new:1 W2:put:write-new:64 W3:get:read:64 W4:sget:stale-read:64"
        else
            workloads="W2:put:write-new:64"
        fi
        for w in $workloads; do
            IFS=: read -r name etcd_mode raftkv_workload workers <<<"$w"
            etcd_run "${nodes}n-$name-etcd-r$round" "$etcd_url" "$etcd_mode" "$workers"
            # RaftKV's two APIs take turns going first: the one that follows a write workload
            # runs while the node may still be snapshotting and compacting after it.
            protocols="grpc http"
            if ((round % 2 == 0)); then
                protocols="http grpc"
            fi
            for protocol in $protocols; do
                label=$protocol
                [[ $protocol == http ]] && label=rest
                raftkv_run "${nodes}n-$name-$label-r$round" "$protocol" "$raftkv_workload" "$workers"
            done
        done
    done
    (cd "$bench/etcd" && ./etcd_cluster.sh stop)
    env NODES="$nodes" "${ports[@]}" RAFTKV_BIN="$raftkv" scripts/cluster.sh stop "$raftkv_dir" >/dev/null
    raftkv_nodes=""
    rm -rf "$ETCDBENCH_DIR/data" "$raftkv_dir"
done
echo "JSON lines: $out/runs.jsonl"
# Medians per workload and system, and RaftKV's ratios.
python3 - "$out/runs.jsonl" <<'PY'
import json, re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    row = json.loads(line)
    size, name, system = re.match(r"(\d+n)-(W\d)-(etcd|grpc|rest)-r\d+", row["label"]).groups()
    runs.setdefault((size, name), {}).setdefault(system, []).append(row)
def med(rows, field):
    return statistics.median(r[field] for r in rows)
print("| nodes | workload | etcd gRPC ops/s (p99 ms) | RaftKV gRPC ops/s (p99 ms) | RaftKV REST ops/s (p99 ms) | gRPC / etcd | gRPC / REST |")
print("|---|---|---|---|---|---|---|")
for (size, name), systems in sorted(runs.items(), key=lambda kv: (kv[0][0] != "3n", kv[0][1])):
    if not all(s in systems for s in ("etcd", "grpc", "rest")):
        continue
    e, g, r = (systems[s] for s in ("etcd", "grpc", "rest"))
    cell = lambda rows: f"{med(rows, 'ops_per_s'):,.0f} ({med(rows, 'p99_ms'):.2f})"
    print(f"| {size} | {name} | {cell(e)} | {cell(g)} | {cell(r)} | "
          f"{med(g, 'ops_per_s') / med(e, 'ops_per_s'):.2f}x | {med(g, 'ops_per_s') / med(r, 'ops_per_s'):.2f}x |")
PY
