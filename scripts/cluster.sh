#!/usr/bin/env bash
# A local RaftKV cluster on 127.0.0.1: node N serves HTTP on HTTP_BASE+N (8081, 8082, ...),
# gRPC on GRPC_BASE+N (9091, 9092, ...) and Raft on RAFT_BASE+N (7001, 7002, ...).
#   scripts/cluster.sh start|stop|status [DIR]
# Environment: NODES (default 3; 1, 3 and 5 make sense), HTTP_BASE (8080), GRPC_BASE (9090),
# RAFT_BASE (7000), RAFTKV_BIN (target/release/raftkv; start builds it if missing),
# RAFTKV_CLUSTER_DIR (the default DIR, ./cluster-data), START_WAIT and STOP_WAIT (seconds; 30
# and 10); for a cluster started with TLS on (RAFTKV_TLS__* in the environment), SCHEME=https
# and CURL_TLS (curl's certificate flags, e.g. "--cacert C --cert C --key K").
# Data and logs go under DIR; logs are appended across restarts. node1 founds the cluster;
# the others join it through node1's HTTP API on their first start.
#
# start checks that each node really came up (serving HTTP, then ready) and prints the
# error line of any node that did not; it exits non-zero if one failed. stop waits for each
# node to exit, and kills it with SIGKILL (saying so) if it has not within STOP_WAIT.
set -euo pipefail
cd "$(dirname "$0")/.."

command=${1:-status}
dir=${2:-${RAFTKV_CLUSTER_DIR:-./cluster-data}}
bin=${RAFTKV_BIN:-target/release/raftkv}
nodes=${NODES:-3}
http_base=${HTTP_BASE:-8080}
raft_base=${RAFT_BASE:-7000}
grpc_base=${GRPC_BASE:-9090}
start_wait=${START_WAIT:-30}
stop_wait=${STOP_WAIT:-10}
scheme=${SCHEME:-http}
read -r -a curl_tls <<<"${CURL_TLS:-}"

if ! [[ $nodes =~ ^[1-9][0-9]*$ ]]; then
    echo "NODES must be a positive number, not '$nodes'" >&2
    exit 2
fi

http_addr() { echo "127.0.0.1:$((http_base + $1))"; }
raft_addr() { echo "127.0.0.1:$((raft_base + $1))"; }
grpc_addr() { echo "127.0.0.1:$((grpc_base + $1))"; }

# Whether the pid in $1 is a live process (a killed node stays a zombie until it is reaped,
# which can take seconds here, and must count as stopped).
is_running() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null || true)
    [[ -n $stat && $stat != Z* ]]
}

pid_of() {
    local pidfile="$dir/node$1.pid"
    [[ -f $pidfile ]] && cat "$pidfile"
}

# The node's last error line: what it printed before it exited.
last_error() {
    grep -v '^\s*$' "$dir/node$1.log" 2>/dev/null | tail -n 1 || true
}

# Waits until `curl` of node $1's path $2 succeeds; fails early if the process exited.
# Returns 0 (answered), 1 (exited), 2 (timed out).
await_node() {
    local n=$1 path=$2 pid deadline
    pid=$(pid_of "$n")
    deadline=$((SECONDS + start_wait))
    while ((SECONDS < deadline)); do
        if ! is_running "$pid"; then
            return 1
        fi
        if curl -fs "${curl_tls[@]}" --max-time 1 "$scheme://$(http_addr "$n")$path" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    return 2
}

start_node() {
    local n=$1
    local pid
    pid=$(pid_of "$n" || true)
    if [[ -n $pid ]] && is_running "$pid"; then
        echo "node$n already running (pid $pid)"
        return 0
    fi
    # node1 founds the cluster (founding is explicit); the others ask node1 to add them. A
    # node with data restarts from it (a joiner checks that node1 still serves its cluster).
    local join=(--bootstrap)
    if [[ $n != 1 ]]; then
        join=(--join-addr "$scheme://$(http_addr 1)")
    fi
    "$bin" --node-id "node$n" --raft-addr "$(raft_addr "$n")" --http-addr "$(http_addr "$n")" \
        --grpc-addr "$(grpc_addr "$n")" --data-dir "$dir/node$n" "${join[@]}" >>"$dir/node$n.log" 2>&1 &
    echo $! >"$dir/node$n.pid"
    # Serving HTTP means it opened its data directory (the WAL lock included) and started.
    local outcome=0
    await_node "$n" /health || outcome=$?
    case $outcome in
    0) echo "node$n started (pid $!, $scheme://$(http_addr "$n"), log $dir/node$n.log)" ;;
    1)
        echo "node$n FAILED to start: $(last_error "$n")" >&2
        rm -f "$dir/node$n.pid"
        return 1
        ;;
    *)
        echo "node$n does not answer after ${start_wait}s (pid $!); see $dir/node$n.log" >&2
        return 1
        ;;
    esac
}

stop_node() {
    local n=$1 pid deadline
    pid=$(pid_of "$n" || true)
    if [[ -z $pid ]]; then
        return 0
    fi
    if is_running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + stop_wait))
        while is_running "$pid" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if is_running "$pid"; then
            echo "node$n (pid $pid) did not stop within ${stop_wait}s: killing it with SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            while is_running "$pid"; do
                sleep 0.1
            done
        fi
        echo "node$n stopped"
    fi
    rm -f "$dir/node$n.pid"
}

endpoints() {
    local list="" n
    for n in $(seq "$nodes"); do
        list+="${list:+,}$scheme://$(http_addr "$n")"
    done
    echo "$list"
}

case $command in
start)
    if [[ ! -x $bin ]]; then
        cargo build --release --bin raftkv
    fi
    mkdir -p "$dir"
    failed=0
    fresh=0
    [[ -d $dir/node1 ]] || fresh=1
    start_node 1 || failed=1
    # A fresh node1 must lead before the others ask it to add them (a restarting one waits
    # for its peers to have a quorum, so it is not waited for here).
    if ((failed == 0 && fresh == 1)); then
        await_node 1 /ready || true
    fi
    for n in $(seq 2 "$nodes"); do
        start_node "$n" || failed=1
    done
    # Each node is ready once it is a member that knows its leader and has caught up.
    for n in $(seq "$nodes"); do
        pid=$(pid_of "$n" || true)
        [[ -n $pid ]] || continue
        outcome=0
        await_node "$n" /ready || outcome=$?
        case $outcome in
        0) ;;
        1)
            echo "node$n exited: $(last_error "$n")" >&2
            failed=1
            ;;
        *)
            echo "node$n is not ready after ${start_wait}s: $(curl -s "${curl_tls[@]}" --max-time 1 "$scheme://$(http_addr "$n")/ready" || echo unreachable)" >&2
            failed=1
            ;;
        esac
    done
    # A joined node starts as a learner; the leader promotes it once it has caught up.
    deadline=$((SECONDS + start_wait))
    while ((failed == 0)) && ((SECONDS < deadline)); do
        members=$(curl -s "${curl_tls[@]}" --max-time 1 "$scheme://$(http_addr 1)/cluster/nodes" || true)
        if [[ -n $members && $members != *'"role":"learner"'* ]]; then
            break
        fi
        sleep 0.2
    done
    if ((failed == 0)) && [[ ${members:-} == *'"role":"learner"'* ]]; then
        echo "some nodes are still learners after ${start_wait}s: $members" >&2
        failed=1
    fi
    if ((failed)); then
        echo "the cluster did not come up whole; see the logs in $dir" >&2
        exit 1
    fi
    echo "cluster ready; for kvcli: export RAFTKV_ENDPOINTS=$(endpoints)"
    ;;
stop)
    for n in $(seq "$nodes"); do
        stop_node "$n"
    done
    ;;
status)
    for n in $(seq "$nodes"); do
        pid=$(pid_of "$n" || true)
        if [[ -n $pid ]] && is_running "$pid"; then
            echo "node$n: running (pid $pid), ready: $(curl -s "${curl_tls[@]}" --max-time 2 "$scheme://$(http_addr "$n")/ready" || echo unreachable)"
        else
            echo "node$n: stopped"
        fi
    done
    curl -s "${curl_tls[@]}" --max-time 2 "$scheme://$(http_addr 1)/cluster/nodes" && echo || true
    ;;
*)
    echo "usage: $0 start|stop|status [DIR]" >&2
    exit 2
    ;;
esac
