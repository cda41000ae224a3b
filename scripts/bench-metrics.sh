#!/usr/bin/env bash
# What recording metrics costs (issue 16): two 3-node clusters side by side, one with metrics
# on (the default, scraped on every node every SCRAPE seconds during its runs, as Prometheus
# would) and one with observability.metrics_enabled=false, and each round drives the same
# workloads against each leader in turn, the order alternating between rounds:
#   W2 new-key puts, 64 workers; W3 linearizable gets of 10,000 preloaded keys, 64 workers;
# 16-byte keys, 100-byte values, DUR seconds each, over PROTOCOL (http or grpc). Besides
# throughput and latency, each run records the CPU time the cluster's three processes spent
# per operation (from /proc, user + system): on two shared cores throughput swings by 20%
# between identical runs, while the CPU a request costs is what recording adds to. Prints one
# line per run and a table of medians with "on" against "off"; the JSON lines go to
# OUT/runs.jsonl.
#
#   scripts/bench-metrics.sh [OUT]
#
# Environment: ROUNDS (5), DUR (10), SCRAPE (5), PROTOCOL (http), SKIP_BUILD=1 (use the built
# binaries). Needs jq, curl and python3; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh

out=${1:-bench-metrics-$(date -u +%Y%m%dT%H%M%SZ)}
rounds=${ROUNDS:-5}
dur=${DUR:-10}
scrape=${SCRAPE:-5}
protocol=${PROTOCOL:-http}
require_positive "ROUNDS, DUR and SCRAPE" "$rounds" "$dur" "$scrape"
for tool in jq curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done
release_binaries
out=$(absolute_dir "$out")
on_dir=$out/cluster-on
off_dir=$out/cluster-off
on_ports=(HTTP_BASE=27480 RAFT_BASE=27400 GRPC_BASE=27500)
off_ports=(HTTP_BASE=27680 RAFT_BASE=27600 GRPC_BASE=27700)
off_env=(RAFTKV_OBSERVABILITY__METRICS_ENABLED=false)
cleanup() {
    env "${on_ports[@]}" RAFTKV_BIN="$raftkv" scripts/cluster.sh stop "$on_dir" >/dev/null 2>&1 || true
    env "${off_ports[@]}" "${off_env[@]}" RAFTKV_BIN="$raftkv" \
        scripts/cluster.sh stop "$off_dir" >/dev/null 2>&1 || true
    rm -rf "$on_dir" "$off_dir"
}
trap cleanup EXIT

rm -rf "$on_dir" "$off_dir"
env "${on_ports[@]}" RAFTKV_BIN="$raftkv" scripts/cluster.sh start "$on_dir" >/dev/null
env "${off_ports[@]}" "${off_env[@]}" RAFTKV_BIN="$raftkv" scripts/cluster.sh start "$off_dir" >/dev/null
# The switch really took: the "off" cluster serves no metrics.
curl -sf http://127.0.0.1:27481/metrics >/dev/null
if curl -sf http://127.0.0.1:27681/metrics >/dev/null; then
    echo "the metrics-off cluster serves /metrics: the switch did not take" >&2
    exit 1
fi

leader() { # MODE
    local port=27481
    [[ $1 == off ]] && port=27681
    curl -sf "http://127.0.0.1:$port/cluster/leader" | jq -r --arg p "$protocol" '.[$p + "_addr"]'
}


# CPU ticks (user + system) the cluster in $1 has used so far, over its three processes.
cpu_ticks() {
    local total=0 pid stat
    for pid in $(cat "$1"/node*.pid); do
        stat=$(cut -d' ' -f14,15 "/proc/$pid/stat")
        total=$((total + ${stat% *} + ${stat#* }))
    done
    echo "$total"
}
ticks_per_s=$(getconf CLK_TCK)

run() { # LABEL MODE WORKLOAD
    local scraper=
    if [[ $2 == on ]]; then
        (while true; do
            for port in 27481 27482 27483; do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null || true; done
            sleep "$scrape"
        done) &
        scraper=$!
    fi
    local args=(--endpoints "$protocol://$(leader "$2")" --json bench --protocol "$protocol"
        --workload "$3" --concurrency 64 --duration "${dur}s" --key-size 16 --value-size 100)
    if [[ $3 == read ]]; then
        args+=(--keys 10000 --preload)
    fi
    local dir=$on_dir result before
    [[ $2 == off ]] && dir=$off_dir
    before=$(cpu_ticks "$dir")
    result=$("$kvcli" "${args[@]}" 2>/dev/null)
    local used=$(($(cpu_ticks "$dir") - before))
    result=$(echo "$result" | jq -c --argjson ticks "$used" --argjson hz "$ticks_per_s" \
        '. + {cpu_us_per_op: ($ticks / $hz * 1e6 / ([.ops, 1] | max))}')
    if [[ -n $scraper ]]; then
        kill "$scraper"
        wait "$scraper" 2>/dev/null || true
    fi
    record "$1" "$result"
}

for round in $(seq "$rounds"); do
    order=(on off)
    ((round % 2 == 0)) && order=(off on)
    for mode in "${order[@]}"; do
        run "W2-$mode-r$round" "$mode" write-new
        run "W3-$mode-r$round" "$mode" read
    done
done
echo "JSON lines: $out/runs.jsonl"
python3 - "$out/runs.jsonl" <<'PY'
import sys
sys.path.insert(0, "scripts/lib")
from runs import cell, grouped, med
print("| workload | metrics off ops/s (p99 ms) | metrics on ops/s (p99 ms) | on / off | CPU µs per op, off | on | on / off |")
print("|---|---|---|---|---|---|---|")
for name, modes in sorted(grouped(sys.argv[1]).items()):
    ratio = med(modes["on"], "ops_per_s") / med(modes["off"], "ops_per_s")
    cpu = lambda m: med(modes[m], "cpu_us_per_op")
    print(f"| {name} | {cell(modes['off'])} | {cell(modes['on'])} | {ratio:.3f}x | {cpu('off'):.1f} | {cpu('on'):.1f} | {cpu('on') / cpu('off'):.3f}x |")
PY
