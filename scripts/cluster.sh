#!/usr/bin/env bash
# A local 3-node RaftKV cluster on 127.0.0.1: HTTP on 8081-8083, Raft on 7001-7003.
#   scripts/cluster.sh start|stop|status [DIR]
# Data and logs go under DIR (default: ./cluster-data); logs are appended across restarts. node1 founds the cluster; node2 and
# node3 join it through node1's HTTP API on their first start. The binary is
# target/release/raftkv unless RAFTKV_BIN says otherwise (start builds it if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

command=${1:-status}
dir=${2:-${RAFTKV_CLUSTER_DIR:-./cluster-data}}
bin=${RAFTKV_BIN:-target/release/raftkv}

# Whether the pid in $1 is a live process (a killed node stays a zombie until it is reaped,
# which can take seconds here, and must count as stopped).
is_running() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null || true)
    [[ -n $stat && $stat != Z* ]]
}

start_node() {
    local n=$1
    local pidfile="$dir/node$n.pid"
    if [[ -f $pidfile ]] && is_running "$(cat "$pidfile")"; then
        echo "node$n already running (pid $(cat "$pidfile"))"
        return
    fi
    # node1 founds the cluster (founding is explicit); the others ask node1 to add them. A
    # node with data restarts from it (a joiner checks that node1 still serves its cluster).
    local join=(--bootstrap)
    if [[ $n != 1 ]]; then
        join=(--join-addr http://127.0.0.1:8081)
    fi
    "$bin" --node-id "node$n" --raft-addr "127.0.0.1:700$n" --http-addr "127.0.0.1:808$n" \
        --data-dir "$dir/node$n" "${join[@]}" >>"$dir/node$n.log" 2>&1 &
    echo $! >"$pidfile"
    echo "node$n started (pid $!, http://127.0.0.1:808$n, log $dir/node$n.log)"
}

case $command in
start)
    if [[ ! -x $bin ]]; then
        cargo build --release --bin raftkv
    fi
    mkdir -p "$dir"
    start_node 1
    # node1 must lead before the others ask it to add them.
    for _ in $(seq 50); do
        curl -fs http://127.0.0.1:8081/ready >/dev/null 2>&1 && break
        sleep 0.1
    done
    start_node 2
    start_node 3
    ;;
stop)
    for n in 1 2 3; do
        pidfile="$dir/node$n.pid"
        if [[ -f $pidfile ]]; then
            kill -TERM "$(cat "$pidfile")" 2>/dev/null && echo "node$n stopping" || true
            rm -f "$pidfile"
        fi
    done
    ;;
status)
    for n in 1 2 3; do
        pidfile="$dir/node$n.pid"
        if [[ -f $pidfile ]] && is_running "$(cat "$pidfile")"; then
            echo "node$n: running (pid $(cat "$pidfile")), ready: $(curl -s http://127.0.0.1:808$n/ready || echo unreachable)"
        else
            echo "node$n: stopped"
        fi
    done
    curl -s http://127.0.0.1:8081/cluster/nodes && echo || true
    ;;
*)
    echo "usage: $0 start|stop|status [DIR]" >&2
    exit 2
    ;;
esac
