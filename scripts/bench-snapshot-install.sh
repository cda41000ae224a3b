#!/usr/bin/env bash
# A follower installs a large snapshot while the cluster takes writes (issue 12: "a follower
# installing a 1 GiB snapshot keeps answering heartbeats (no election)").
#
# Steps: a fresh 3-node cluster; node3 is stopped; the other two take SIZE_MB of new keys
# (VALUE_BYTES each), so the leader snapshots and compacts its log far past node3; then a
# write load starts (LOAD_CLIENTS clients, new keys, LOAD_S seconds) and node3 restarts: the
# leader must send it the whole state. Printed: how long node3 took to be ready, the snapshot it
# installed (from its log), every node's term before and after (any change is an election),
# the load's errors and p99 per window, and node3's RSS before and at its highest.
#
#   scripts/bench-snapshot-install.sh [OUT]
#
# Environment: SIZE_MB (1100), VALUE_BYTES (1000), LOAD_CLIENTS (16), LOAD_S (90),
# HTTP_BASE (29180), RAFT_BASE (29170), SKIP_BUILD=1, KEEP_DATA=1.
# Binaries: ${CARGO_TARGET_DIR:-target}/release/{raftkv,kvcli}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh

out=${1:-bench-snapshot-install-$(date -u +%Y%m%dT%H%M%SZ)}
size_mb=${SIZE_MB:-1100}
value_bytes=${VALUE_BYTES:-1000}
load_clients=${LOAD_CLIENTS:-16}
load_s=${LOAD_S:-90}
http_base=${HTTP_BASE:-29180}
raft_base=${RAFT_BASE:-29170}
grpc_base=${GRPC_BASE:-29190}

require_positive "SIZE_MB, VALUE_BYTES, LOAD_CLIENTS, LOAD_S and the ports" \
    "$size_mb" "$value_bytes" "$load_clients" "$load_s" "$http_base" "$raft_base"
release_binaries
out=$(absolute_dir "$out")
dir=$out/cluster
cluster() { NODES=3 HTTP_BASE=$http_base RAFT_BASE=$raft_base GRPC_BASE=$grpc_base RAFTKV_BIN=$raftkv scripts/cluster.sh "$@" "$dir"; }
load_pid=""
sampler_pid=""
cleanup() {
    for pid in $load_pid $sampler_pid; do kill "$pid" 2>/dev/null || true; done
    cluster stop >/dev/null 2>&1 || true
    # node3 may run outside cluster.sh's pid file
    [[ -f $out/node3.pid ]] && kill -9 "$(cat "$out/node3.pid")" 2>/dev/null || true
    if [[ ${KEEP_DATA:-0} != 1 ]]; then rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

url() { echo "http://127.0.0.1:$((http_base + $1))"; }
term_of() { curl -s --max-time 2 "$(url "$1")/ready" | jq -r '.term // "?"' 2>/dev/null || echo "?"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

rm -rf "$dir"
cluster start >"$out/cluster.txt"
endpoints_12="$(url 1),$(url 2)"
echo "== stopping node3"
kill -TERM "$(cat "$dir/node3.pid")"
while kill -0 "$(cat "$dir/node3.pid")" 2>/dev/null; do sleep 0.1; done

keys=$((size_mb * 1024 * 1024 / (value_bytes + 16)))
echo "== loading $keys keys of $value_bytes B (~$size_mb MiB) into node1 and node2"
"$kvcli" --endpoints "$endpoints_12" bench --workload write-new --concurrency 64 \
    --value-size "$value_bytes" --ops "$keys" >"$out/load.txt"
tail -n 4 "$out/load.txt"
leader_snapshot=$(ls -1 "$dir/node1/snapshots"/snap-*.snap "$dir/node2/snapshots"/snap-*.snap 2>/dev/null | xargs -r stat -c %s | sort -n | tail -1)
echo "largest snapshot file on node1/node2: ${leader_snapshot:-0} B"

term1_before=$(term_of 1)
term2_before=$(term_of 2)
echo "== $load_s s of new-key writes ($load_clients clients) while node3 restarts"
"$kvcli" --endpoints "$endpoints_12,$(url 3)" --json bench --workload write-new \
    --concurrency "$load_clients" --duration "${load_s}s" --window 5s \
    --csv "$out/windows.csv" >"$out/during.jsonl" 2>"$out/during.err" &
load_pid=$!
sleep 5
"$raftkv" --node-id node3 --raft-addr "127.0.0.1:$((raft_base + 3))" --http-addr "127.0.0.1:$((http_base + 3))" \
    --grpc-addr "127.0.0.1:$((grpc_base + 3))" \
    --data-dir "$dir/node3" --join-addr "$(url 1)" >>"$dir/node3.log" 2>&1 &
node3=$!
echo "$node3" >"$out/node3.pid"
started=$(date +%s%N)
rss_start=0
rss_peak=0
ready_s=""
while kill -0 "$node3" 2>/dev/null; do
    rss=$(rss_kb "$node3")
    ((rss_start == 0)) && rss_start=$rss
    ((rss > rss_peak)) && rss_peak=$rss
    if [[ -z $ready_s ]] && curl -fs --max-time 1 "$(url 3)/ready" >/dev/null 2>&1; then
        ready_s=$(echo "scale=2; ($(date +%s%N) - $started) / 1000000000" | bc)
        echo "node3 ready after $ready_s s"
    fi
    if [[ -n $ready_s ]] && ! kill -0 "$load_pid" 2>/dev/null; then break; fi
    sleep 0.5
done
wait "$load_pid" || true
load_pid=""
terms_after="$(term_of 1) $(term_of 2) $(term_of 3)"

{
    echo "| figure | value |"
    echo "|---|---|"
    echo "| leader's snapshot file | ${leader_snapshot:-0} B |"
    echo "| node3 installed | $(grep -o 'restored a snapshot from the leader.*' "$dir/node3.log" | tail -1 | tr -d '\033' | cut -c1-160) |"
    echo "| node3 ready after restart | ${ready_s:-never} s |"
    echo "| terms before (node1 node2) | $term1_before $term2_before |"
    echo "| terms after (node1 node2 node3) | $terms_after |"
    echo "| node3 RSS at start / highest | $((rss_start / 1024)) / $((rss_peak / 1024)) MiB |"
    echo "| load during the install | $(tail -n 1 "$out/during.jsonl" | jq -r '"\(.ops) ops, \(.errors) errors, p99 \(.latency_ms.p99) ms, max \(.latency_ms.max) ms"' 2>/dev/null) |"
    echo "| worst 5 s window p99 | $(tail -n +2 "$out/windows.csv" | cut -d, -f7 | sort -g | tail -1) ms |"
} | tee "$out/summary.md"
