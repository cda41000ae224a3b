#!/usr/bin/env bash
# Compares two (or more) raftkv binaries on the same machine in the same run: each round starts
# a fresh cluster of NODES nodes for each binary in turn, drives it with the same kvcli
# (`bench --workload write-new`, new keys on every write, 64 clients), and prints its ops/s and
# the servers' own CPU time per 1,000 writes (summed over the cluster's processes, read from
# /proc). On a shared, noisy machine throughput moves by tens of percent between runs minutes
# apart; CPU per write moves far less, so a change that made the node slower shows there first.
#
#   scripts/bench-ab.sh BIN_A BIN_B [BIN...]
#
# Environment:
#   NODES      1 or 3 (default 1)
#   DURATION   seconds of load per run (default 20)
#   ROUNDS     rounds; each runs every binary once, in the order given (default 3)
#   HTTP_BASE  node i serves HTTP on HTTP_BASE+i and Raft on HTTP_BASE+10+i (default 29280)
#   DATA_DIR   where the temporary data directories go (default a fresh one under /tmp)
# kvcli: ${CARGO_TARGET_DIR:-target}/release/kvcli, built first unless SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh

nodes=${NODES:-1}
duration=${DURATION:-20}
rounds=${ROUNDS:-3}
http_base=${HTTP_BASE:-29280}
require_positive "NODES, DURATION, ROUNDS and HTTP_BASE" "$nodes" "$duration" "$rounds" "$http_base"
[[ $nodes == 1 || $nodes == 3 ]] || { echo "NODES must be 1 or 3, not $nodes" >&2; exit 2; }
(($# >= 2)) || { echo "usage: scripts/bench-ab.sh BIN_A BIN_B [BIN...]" >&2; exit 2; }
for bin in "$@"; do
    [[ -x $bin ]] || { echo "no binary at $bin" >&2; exit 1; }
done
release_binaries
data_parent=${DATA_DIR:-$(mktemp -d)}

pids=()
stop_nodes() {
    if ((${#pids[@]})); then
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    pids=()
}
trap stop_nodes EXIT

# Waits until URL answers 200, for at most 30 s.
wait_ready() {
    local url=$1 tries=0
    until [[ $(curl -s -o /dev/null -w '%{http_code}' "$url" || true) == 200 ]]; do
        ((++tries < 300)) || { echo "no answer from $url within 30 s" >&2; exit 1; }
        sleep 0.1
    done
}

# The CPU time (in clock ticks) the cluster's processes used so far.
cluster_ticks() {
    local sum=0 pid
    for pid in "${pids[@]}"; do
        sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$sum"
}

ticks_per_second=$(getconf CLK_TCK)
endpoints=$(for i in $(seq 1 "$nodes"); do printf 'http://127.0.0.1:%d,' $((http_base + i)); done)
endpoints=${endpoints%,}
printf '%-40s %5s %10s %22s\n' binary round ops/s "server CPU ms/1k ops"
for round in $(seq 1 "$rounds"); do
    for bin in "$@"; do
        dir=$data_parent/run
        rm -rf "$dir"
        for i in $(seq 1 "$nodes"); do
            how=(--bootstrap)
            ((i == 1)) || how=(--join-addr "http://127.0.0.1:$((http_base + 1))")
            # A binary from before the gRPC API does not take its address.
            grpc=()
            if "$bin" --help | grep -q -- --grpc-addr; then
                grpc=(--grpc-addr "127.0.0.1:$((http_base + 20 + i))")
            fi
            "$bin" "${how[@]}" "${grpc[@]}" --set "raft.node_id=n$i" \
                --set "server.http_addr=127.0.0.1:$((http_base + i))" \
                --set "raft.raft_addr=127.0.0.1:$((http_base + 10 + i))" \
                --set "storage.data_dir=$dir/n$i" >"$data_parent/n$i.log" 2>&1 &
            pids+=($!)
            wait_ready "http://127.0.0.1:$((http_base + i))/ready"
        done
        # Every node a voter before the load starts (joiners are promoted once caught up).
        until [[ $(curl -s "http://127.0.0.1:$((http_base + 1))/cluster/nodes" |
            grep -o '"role":"\(leader\|follower\)"' | wc -l) == "$nodes" ]]; do
            sleep 0.2
        done
        before=$(cluster_ticks)
        ops=$("$kvcli" --endpoints "$endpoints" bench --workload write-new --concurrency 64 \
            --duration "${duration}s" | awk '/^ops/ {print $2}')
        after=$(cluster_ticks)
        stop_nodes
        rm -rf "$dir"
        printf '%-40s %5d %10d %22d\n' "$bin" "$round" $((ops / duration)) \
            $(((after - before) * 1000 * 1000 / ticks_per_second / ops))
    done
done
