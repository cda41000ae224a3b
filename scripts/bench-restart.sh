#!/usr/bin/env bash
# Restart time of a single node holding N keys (issue 12: 1,000,000 keys ready within 1 s of
# start, 100,000 within 0.3 s). For each N in KEYS: a fresh node takes N new keys (16 B keys,
# 100 B values, `kvcli bench --workload write-new`), is stopped, and is started ROUNDS times;
# each start is timed from the process's launch to the first `/ready` 200 (polled every
# POLL_MS ms). Printed: one line per start, then the median and the worst per N, with the
# snapshot file's size and the entries after it that the start replayed.
#
#   scripts/bench-restart.sh [OUT]
#
# Environment: KEYS ("100000 1000000"), ROUNDS (5), STOP (term: SIGTERM and wait; kill:
# SIGKILL), HTTP_PORT (29081), RAFT_PORT (29001), POLL_MS (5), SKIP_BUILD=1.
# Binaries: ${CARGO_TARGET_DIR:-target}/release/{raftkv,kvcli}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh

out=${1:-bench-restart-$(date -u +%Y%m%dT%H%M%SZ)}
key_counts=${KEYS:-100000 1000000}
rounds=${ROUNDS:-5}
stop_mode=${STOP:-term}
http_port=${HTTP_PORT:-29081}
raft_port=${RAFT_PORT:-29001}
grpc_port=${GRPC_PORT:-29091}
poll_ms=${POLL_MS:-5}

# shellcheck disable=SC2086 # KEYS is a list
require_positive "KEYS, ROUNDS, the ports and POLL_MS" $key_counts "$rounds" "$http_port" "$raft_port" "$poll_ms"
[[ $stop_mode == term || $stop_mode == kill ]] || { echo "STOP must be term or kill, not '$stop_mode'" >&2; exit 2; }
release_binaries
out=$(absolute_dir "$out")
pid=""
cleanup() {
    if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

start_node() { # data_dir log
    "$raftkv" --bootstrap --set "raft.node_id=r1" --set "server.http_addr=127.0.0.1:$http_port" \
        --set "raft.raft_addr=127.0.0.1:$raft_port" --set "server.grpc_addr=127.0.0.1:$grpc_port" \
        --set "storage.data_dir=$1" \
        >>"$2" 2>&1 &
    pid=$!
}

# Seconds (with milliseconds) from now until /ready answers 200, whose body is left in
# $out/ready.json; fails after 120 s.
wait_ready() {
    local begin now
    begin=$(date +%s%N)
    while true; do
        if curl -s -o "$out/ready.json" -w '%{http_code}' "http://127.0.0.1:$http_port/ready" | grep -q 200; then
            now=$(date +%s%N)
            echo "scale=3; ($now - $begin) / 1000000000" | bc
            return 0
        fi
        now=$(date +%s%N)
        if (( now - begin > 120000000000 )); then
            echo "the node was not ready within 120 s" >&2
            return 1
        fi
        sleep "0.00$poll_ms"
    done
}

stop_node() {
    if [[ $stop_mode == kill ]]; then kill -9 "$pid"; else kill "$pid"; fi
    wait "$pid" 2>/dev/null || true
    pid=""
}

summary=$out/summary.md
echo "| keys | snapshot file | entries after it | starts | median ready (s) | worst ready (s) |" >"$summary"
echo "|---|---|---|---|---|---|" >>"$summary"
for keys in $key_counts; do
    data=$out/data-$keys
    log=$out/node-$keys.log
    rm -rf "$data"
    start_node "$data" "$log"
    wait_ready >/dev/null
    echo "loading $keys keys..." >&2
    "$kvcli" --endpoints "http://127.0.0.1:$http_port" bench --workload write-new \
        --concurrency 64 --ops "$keys" >"$out/load-$keys.txt"
    stop_node
    times=()
    for round in $(seq "$rounds"); do
        start_node "$data" "$log"
        t=$(wait_ready)
        times+=("$t")
        # What this start replayed: the entries between the snapshot and what it had applied
        # when it became ready.
        entries_after=$(jq '.applied_index - .snapshot_index' "$out/ready.json")
        echo "keys=$keys round=$round ready_s=$t entries_after_snapshot=$entries_after"
        stop_node
    done
    snapshot=$(ls -1 "$data/snapshots"/snap-*.snap 2>/dev/null | tail -1 || true)
    snapshot_bytes=$( [[ -n $snapshot ]] && stat -c %s "$snapshot" || echo 0 )
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    median=$(echo "$sorted" | sed -n "$(( (rounds + 1) / 2 ))p")
    worst=$(echo "$sorted" | tail -1)
    echo "| $keys | $snapshot_bytes B | $entries_after | $rounds | $median | $worst |" >>"$summary"
    rm -rf "$data"
done
cat "$summary"
