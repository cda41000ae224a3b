#!/usr/bin/env bash
# The growing-keyspace benchmark of issue 12: on a *fresh* cluster, CLIENTS clients write a
# new key per request (`kvcli bench --workload write-new`, 16 B keys, 100 B values) for
# DURATION seconds, with ops/s and p99 per WINDOW seconds. Beside it the script records each
# node's term at the start and at the end (any change is an election), samples each node's
# RSS and data-directory size every SAMPLE seconds, and at the end the RSS, the data-directory
# size and the number of keys. Then it draws all runs in one SVG.
#
#   scripts/bench-growth.sh [OUT]
#
# OUT (default bench-growth-<UTC time>) gets, per run (n1/, n3/, ...):
#   windows.csv  one row per window (kvcli bench --csv)       bench.jsonl  kvcli's JSON lines
#   rss.csv      t_s,node,rss_kb,data_bytes every SAMPLE s    nodes.csv    per node: terms, RSS, data
#   summary.md   the run's table                              bench.err    kvcli's stderr
# and at the top: summary.md (all runs) and growth.svg (ops/s and p99 of every run).
#
# Environment:
#   NODES      cluster sizes to run, one fresh cluster each, in order (default "1 3")
#   DURATION   seconds of load per run (300)          CLIENTS  concurrent clients (64)
#   WINDOW     seconds per reported window (10)       SAMPLE   seconds between RSS samples (10)
#   HTTP_BASE, RAFT_BASE, GRPC_BASE  ports of node N are BASE+N (28080, 27000, 27100: away
#              from cluster.sh's)
#   DATA_PARENT  where the temporary data directories go (default OUT; not a tmpfs: fsync
#                must cost what it costs on the real disk)
#   KEEP_DATA=1  keep the data directories (they are deleted after each run otherwise)
#   COUNT_KEYS=0 skip listing the keys at the end (it reads every key: ~1 min for 5 million)
#   PLOT_TO      also copy growth.svg there (e.g. docs/img/growth-<name>.svg)
#   FREE_MB_MIN  refuse to start a run with less free disk than this, in MiB (2048)
#   SKIP_BUILD=1 use the release binaries as they are
#   PROTOCOL   the clients' protocol: rest (default) or grpc (kvcli's default of 4 HTTP/2
#              connections per endpoint, shared by the clients)
# Binaries: ${CARGO_TARGET_DIR:-target}/release/{raftkv,kvcli}, built first with
# `cargo build --release -p api -p cli`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh

out=${1:-bench-growth-$(date -u +%Y%m%dT%H%M%SZ)}
node_counts=${NODES:-1 3}
duration=${DURATION:-300}
clients=${CLIENTS:-64}
window=${WINDOW:-10}
sample=${SAMPLE:-10}
http_base=${HTTP_BASE:-28080}
raft_base=${RAFT_BASE:-27000}
grpc_base=${GRPC_BASE:-27100}
free_mb_min=${FREE_MB_MIN:-2048}
protocol=${PROTOCOL:-rest}
case $protocol in
rest) kvcli_protocol=http ;;
grpc) kvcli_protocol=grpc ;;
*)
    echo "PROTOCOL must be rest or grpc, not '$protocol'" >&2
    exit 2
    ;;
esac

require_positive "DURATION, CLIENTS, WINDOW, SAMPLE, the port bases and FREE_MB_MIN" \
    "$duration" "$clients" "$window" "$sample" "$http_base" "$raft_base" "$grpc_base" "$free_mb_min"
for n in $node_counts; do
    if ! [[ $n =~ ^[1-9]$ ]]; then
        echo "NODES must list cluster sizes from 1 to 9, not '$n'" >&2
        exit 2
    fi
done

release_binaries
out=$(absolute_dir "$out")
data_parent=${DATA_PARENT:-$out}
mkdir -p "$data_parent"

# State of the run in progress, for the exit trap.
cluster_dir=""
cluster_nodes=""
sampler_pid=""

cleanup() {
    if [[ -n $sampler_pid ]]; then
        kill "$sampler_pid" 2>/dev/null || true
        wait "$sampler_pid" 2>/dev/null || true
        sampler_pid=""
    fi
    if [[ -n $cluster_dir ]]; then
        NODES=$cluster_nodes HTTP_BASE=$http_base RAFT_BASE=$raft_base GRPC_BASE=$grpc_base RAFTKV_BIN=$raftkv \
            scripts/cluster.sh stop "$cluster_dir" >/dev/null || true
        if [[ ${KEEP_DATA:-0} != 1 ]]; then
            rm -rf "$cluster_dir"
        fi
        cluster_dir=""
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
http_url() { echo "http://127.0.0.1:$((http_base + $1))"; }
# Where the load goes: node N's REST or gRPC address, per PROTOCOL.
load_url() {
    if [[ $protocol == grpc ]]; then
        echo "grpc://127.0.0.1:$((grpc_base + $1))"
    else
        http_url "$1"
    fi
}
pid_of() { cat "$cluster_dir/node$1.pid" 2>/dev/null || true; }

# The node's current term from /ready, or "?" when it does not answer.
term_of() {
    local body
    body=$(curl -s --max-time 2 "$(http_url "$1")/ready" || true)
    jq -r '.term // "?"' <<<"$body" 2>/dev/null || echo "?"
}

rss_kb_of() {
    local pid=$1
    [[ -n $pid && -r /proc/$pid/status ]] || { echo ""; return; }
    awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"
}

data_bytes_of() { du -sb "$cluster_dir/node$1" 2>/dev/null | cut -f1; }

# Every SAMPLE seconds until killed: t_s,node,rss_kb,data_bytes of each node.
sampler() {
    local nodes=$1 csv=$2 started=$SECONDS n
    while true; do
        for n in $(seq "$nodes"); do
            echo "$((SECONDS - started)),node$n,$(rss_kb_of "$(pid_of "$n")"),$(data_bytes_of "$n")" >>"$csv"
        done
        sleep "$sample"
    done
}

summary_all=$out/summary.md
{
    echo "### Growing keyspace: $duration s of new-key writes over $protocol, $clients clients ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo
} >"$summary_all"
plot_inputs=()

for nodes in $node_counts; do
    run=$out/n$nodes
    mkdir -p "$run"
    available=$(free_mb "$data_parent")
    if ((available < free_mb_min)); then
        echo "only $available MiB free under $data_parent (FREE_MB_MIN=$free_mb_min): not starting the $nodes-node run" >&2
        exit 1
    fi
    cluster_dir=$(mktemp -d "$data_parent/data-n$nodes.XXXXXX")
    cluster_nodes=$nodes
    echo "== $nodes node(s): fresh cluster in $cluster_dir"
    NODES=$nodes HTTP_BASE=$http_base RAFT_BASE=$raft_base GRPC_BASE=$grpc_base RAFTKV_BIN=$raftkv \
        scripts/cluster.sh start "$cluster_dir"
    endpoints=""
    load_endpoints=""
    for n in $(seq "$nodes"); do
        endpoints+="${endpoints:+,}$(http_url "$n")"
        load_endpoints+="${load_endpoints:+,}$(load_url "$n")"
    done
    declare -A term_start=()
    for n in $(seq "$nodes"); do
        term_start[$n]=$(term_of "$n")
    done

    echo "t_s,node,rss_kb,data_bytes" >"$run/rss.csv"
    sampler "$nodes" "$run/rss.csv" &
    sampler_pid=$!

    echo "== $nodes node(s): $duration s of write-new over $protocol, $clients clients, ${window} s windows"
    bench_status=0
    "$kvcli" --endpoints "$load_endpoints" --json bench --protocol "$kvcli_protocol" --workload write-new \
        --concurrency "$clients" --duration "${duration}s" --window "${window}s" \
        --csv "$run/windows.csv" >"$run/bench.jsonl" 2>"$run/bench.err" || bench_status=$?

    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=""

    report=$(tail -n 1 "$run/bench.jsonl" 2>/dev/null || true)
    # A field of the report, numbers rounded to 3 decimals; "-" when absent.
    field() {
        jq -r "($1) as \$v | if (\$v | type) == \"number\" then (\$v * 1000 | round) / 1000 elif \$v == null then \"-\" else \$v end" \
            <<<"$report" 2>/dev/null || echo "-"
    }
    prefix=$(field .key_prefix)

    elections=0
    echo "node,pid,term_start,term_end,rss_end_kb,rss_peak_kb,data_bytes_end" >"$run/nodes.csv"
    node_rows=""
    for n in $(seq "$nodes"); do
        pid=$(pid_of "$n")
        term_end=$(term_of "$n")
        [[ ${term_start[$n]} == "$term_end" ]] || elections=1
        rss_end=$(rss_kb_of "$pid")
        # the highest of the samples and the value at the end
        rss_peak=$(awk -F, -v node="node$n" -v last="${rss_end:-0}" \
            '$2 == node && $3 > peak { peak = $3 } END { print (last > peak ? last : peak) + 0 }' "$run/rss.csv")
        data_end=$(data_bytes_of "$n")
        echo "node$n,$pid,${term_start[$n]},$term_end,$rss_end,$rss_peak,$data_end" >>"$run/nodes.csv"
        node_rows+="| node$n | ${term_start[$n]} → $term_end | $((${rss_end:-0} / 1024)) MiB (highest seen $((rss_peak / 1024)) MiB) | $((${data_end:-0} / 1048576)) MiB |"$'\n'
    done

    keys="-"
    if [[ ${COUNT_KEYS:-1} == 1 && $prefix != "-" ]]; then
        echo "== counting the keys under $prefix"
        keys=$("$kvcli" --endpoints "$endpoints" --timeout 60s list --prefix "$prefix" | wc -l) || keys="?"
    fi

    {
        echo "#### $nodes node(s)"
        echo
        echo "| figure | value |"
        echo "|---|---|"
        echo "| new-key writes | $(field .ops) in $(field '.elapsed_s | floor') s = $(field '.ops_per_s | floor') ops/s |"
        echo "| keys stored at the end (under $prefix) | $keys |"
        echo "| throughput, last $(field '.windows.trend_span_s') s over first $(field '.windows.trend_span_s') s | $(field '.windows.last_to_first_ratio') ($(field '.windows.last_ops_per_s | floor') / $(field '.windows.first_ops_per_s | floor') ops/s) |"
        echo "| worst window p99 | $(field '.windows.worst_p99_ms') ms (window $(field '.windows.worst_p99_window')) |"
        echo "| whole-run latency | p50 $(field .latency_ms.p50) ms, p99 $(field .latency_ms.p99) ms, max $(field .latency_ms.max) ms |"
        echo "| errors | $(field .errors) $(field '.errors_by_kind | tostring') |"
        echo "| election (a term changed) | $( ((elections)) && echo "**yes**" || echo no) |"
        echo "| load generator CPU | $(field '.cpu.percent_of_one_core | floor') % of one core |"
        echo "| kvcli exit status | $bench_status |"
        echo
        echo "| node | term start → end | RSS at the end | data directory at the end |"
        echo "|---|---|---|---|"
        printf "%s" "$node_rows"
        echo
    } >"$run/summary.md"
    cat "$run/summary.md" >>"$summary_all"
    if [[ -s $run/windows.csv ]]; then
        label="$nodes node"
        ((nodes > 1)) && label+="s"
        plot_inputs+=("$label=$run/windows.csv")
    fi
    cleanup
done

if ((${#plot_inputs[@]} > 0)); then
    "$kvcli" bench plot "${plot_inputs[@]}" --out "$out/growth.svg" --p99-limit-ms 10 \
        --title "New-key writes over $protocol, $clients clients, $duration s, ${window} s windows"
    if [[ -n ${PLOT_TO:-} ]]; then
        mkdir -p "$(dirname "$PLOT_TO")"
        cp "$out/growth.svg" "$PLOT_TO"
    fi
fi
echo "== done: $summary_all"
cat "$summary_all"
