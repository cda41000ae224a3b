#!/usr/bin/env bash
# The Compose test (issue 17): deployments/docker/docker-compose.yml's 3 nodes behind HAProxy,
# on images built here without a registry (deployments/docker/build-local.sh), through faults:
#
#   1. writes through HAProxy; the leader's container stopped; writes go on; it is started
#      again and catches up (it holds every acknowledged write, read from its local state);
#   2. a partition: the leader's container disconnected from the network; writes go on; it is
#      reconnected and catches up;
#   3. a rolling restart of all three nodes, one at a time, each back to /ready before the
#      next, under a continuous write loop;
#   4. the cluster the seed's environment variables start (the Compose file itself) has 3
#      members in GET /cluster/nodes, at the start and at the end.
#
# Every write HAProxy acknowledged (200) is recorded, and at the end each one must be present
# with its value, read linearizably through HAProxy and from each node's local state.
# Containers, volumes, network and the test's image are removed at the end, even on failure.
#
#   deployments/test.sh
#
# Environment:
#   RAFTKV_BIN_DIR   directory with already built raftkv and kvcli (e.g. target/debug); by
#                    default build-local.sh uses (or builds) the release binaries
#   RAFTKV_HAPROXY_IMAGE  an HAProxy image to use instead of building one from Debian's haproxy
#   KEEP=1           leave the cluster running at the end (for a look; remove it with the
#                    docker-compose command printed)
#
# Needs root (or a user allowed to use Docker), curl and python3. docker.io and docker-compose
# are installed with apt-get when missing, and dockerd is started when it is not running.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
compose_dir="$here/docker"
started=$(date +%s)

say() { printf '[%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
die() { say "FAIL: $*"; exit 1; }

as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

# ---- prerequisites ------------------------------------------------------------------------
for tool in curl python3; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null; then
    say "installing Debian's docker.io and docker-compose"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || die "the Docker daemon is not running (start it, or run this as root)"
    say "starting dockerd (log: /tmp/raftkv-test-dockerd.log); it keeps running afterwards"
    nohup dockerd >/tmp/raftkv-test-dockerd.log 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || die "dockerd did not start: see /tmp/raftkv-test-dockerd.log"
fi

# ---- the deployment -------------------------------------------------------------------------
project="raftkv-test-$$-$(date +%s)"
work=$(mktemp -d "/tmp/$project.XXXX")
free_ports() {
    python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'
}
read -r lb_port port1 port2 port3 < <(free_ports)
export RAFTKV_LB_PORT=$lb_port RAFTKV_NODE1_PORT=$port1 RAFTKV_NODE2_PORT=$port2 RAFTKV_NODE3_PORT=$port3
export RAFTKV_IMAGE="raftkv-test:$project"
lb="http://127.0.0.1:$lb_port"
declare -A node_port=([node1]=$port1 [node2]=$port2 [node3]=$port3)
compose=(docker-compose --project-directory "$compose_dir" -f "$compose_dir/docker-compose.yml" -p "$project")
network="${project//[^a-z0-9_-]/}_raftkv"
writer_pid=

# A writer a failed check left running (it ran in the check's subshell).
stop_stray_writer() {
    touch "$work/stop"
    if [[ -s $work/writer.pid ]]; then
        kill "$(cat "$work/writer.pid")" 2>/dev/null || true
        rm -f "$work/writer.pid"
    fi
}

cleanup() {
    local status=$?
    stop_stray_writer
    if ((status != 0)); then
        say "the nodes' last log lines:"
        "${compose[@]}" logs --no-color --tail 15 node1 node2 node3 2>&1 | cut -c1-400 || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then
        say "KEEP=1: left running; remove with: RAFTKV_IMAGE=$RAFTKV_IMAGE ${compose[*]} down -v"
    else
        "${compose[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
        docker rmi "$RAFTKV_IMAGE" >/dev/null 2>&1 || true
        rm -rf "$work"
    fi
    say "total time $(($(date +%s) - started))s"
}
trap cleanup EXIT

say "building the images ($RAFTKV_IMAGE${RAFTKV_BIN_DIR:+ from $RAFTKV_BIN_DIR})"
images=(raftkv)
if [[ -z ${RAFTKV_HAPROXY_IMAGE:-} ]]; then
    export RAFTKV_HAPROXY_IMAGE=raftkv-local/haproxy:latest
    images+=(haproxy)
fi
"$compose_dir/build-local.sh" "${images[@]}" >"$work/build.log" 2>&1 ||
    { tail -n 20 "$work/build.log"; die "the images did not build (above)"; }

say "starting project $project: HAProxy on $lb, nodes on ports $port1 $port2 $port3"
"${compose[@]}" up -d --no-build node1 node2 node3 haproxy >"$work/up.log" 2>&1 ||
    { cat "$work/up.log"; die "docker-compose up failed"; }

# ---- helpers ----------------------------------------------------------------------------------
# A JSON answer's field, or nothing when the request failed.
json_field() { # URL FIELD
    curl -sf --max-time 5 "$1" 2>/dev/null |
        python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$2" 2>/dev/null || true
}
container_of() { "${compose[@]}" ps -q "$1"; }
is_ready() { curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:${node_port[$1]}/ready"; }
wait_ready() { # NODE TIMEOUT
    local deadline=$(($(date +%s) + $2))
    until is_ready "$1"; do
        (($(date +%s) < deadline)) || return 1
        sleep 0.5
    done
}
leader() { json_field "$lb/cluster/leader" id; }
wait_leader() { # TIMEOUT: prints the leader's id
    local deadline=$(($(date +%s) + $1)) id
    while :; do
        id=$(leader)
        [[ -n $id ]] && { printf '%s\n' "$id"; return 0; }
        (($(date +%s) < deadline)) || return 1
        sleep 0.5
    done
}

# Writes keys PHASE-<n> through HAProxy until $work/stop exists, one at a time; each write
# answered 200 is appended to $work/acked.PHASE as "key value", each other answer counted.
writer() { # PHASE
    local phase=$1 n=0 key value code
    while [[ ! -e $work/stop ]]; do
        n=$((n + 1))
        key=$(printf '%s-%06d' "$phase" "$n")
        value="$key-$RANDOM"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT \
            -H 'Content-Type: application/octet-stream' --data-binary "$value" "$lb/keys/$key" || true)
        if [[ $code == 200 ]]; then
            printf '%s %s\n' "$key" "$value" >>"$work/acked.$phase"
        else
            printf '%s %s\n' "$key" "$code" >>"$work/failed.$phase"
        fi
    done
}
start_writer() {
    rm -f "$work/stop"
    : >"$work/acked.$1"
    : >"$work/failed.$1"
    writer "$1" &
    writer_pid=$!
    printf '%s\n' "$writer_pid" >"$work/writer.pid"
}
stop_writer() {
    touch "$work/stop"
    wait "$writer_pid" || true
    writer_pid=
    rm -f "$work/writer.pid"
}
acked() { wc -l <"$work/acked.$1"; }
failed() { wc -l <"$work/failed.$1"; }
# Waits until PHASE has N more acknowledged writes than now (TIMEOUT seconds).
wait_progress() { # PHASE N TIMEOUT
    local target=$(($(acked "$1") + $2)) deadline=$(($(date +%s) + $3))
    until (($(acked "$1") >= target)); do
        (($(date +%s) < deadline)) || return 1
        sleep 0.2
    done
}

# Checks that every write in the acked files is present with its value at BASE_URL, listing
# the keys (linearizable, or from the node's local state with stale). Prints what is missing.
check_present() { # BASE_URL CONSISTENCY
    cat "$work"/acked.* | python3 -c '
import json, sys, urllib.parse, urllib.request
base, consistency = sys.argv[1], sys.argv[2]
want = dict(line.split(" ", 1) for line in sys.stdin.read().splitlines())
have, after = {}, None
while True:
    query = {"prefix": "p", "limit": "10000", "consistency": consistency}
    if after is not None:
        query["after"] = after
    url = base + "/keys?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as answer:
        page = json.load(answer)
    for kv in page["kvs"]:
        have[kv["key"]] = kv["value"]
    if not page.get("more"):
        break
    after = page["next"]
missing = [k for k in want if k not in have]
wrong = [k for k in want if k in have and have[k] != want[k]]
print(f"{len(want)} acknowledged, {len(missing)} missing, {len(wrong)} with another value"
      + (f" (first missing: {sorted(missing)[:5]})" if missing else "")
      + (f" (first wrong: {sorted(wrong)[:5]})" if wrong else ""))
sys.exit(1 if missing or wrong else 0)' "$1" "$2"
}
# Waits until NODE's local state holds every acknowledged write (TIMEOUT seconds).
wait_caught_up() { # NODE TIMEOUT
    local deadline=$(($(date +%s) + $2))
    until check_present "http://127.0.0.1:${node_port[$1]}" stale >"$work/catchup" 2>&1; do
        (($(date +%s) < deadline)) || { cat "$work/catchup"; return 1; }
        sleep 0.5
    done
}
# The members GET /cluster/nodes lists, with their roles ("node1=leader node2=follower ...").
members() {
    curl -sf --max-time 5 "$lb/cluster/nodes" | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
print(" ".join(sorted(n["id"] + "=" + n["role"] for n in nodes)))'
}

declare -a results=()
record() { # STATUS TEXT
    results+=("$1  $2")
    say "$1: $2"
}
# Runs a check in a subshell with errexit on; a failing step fails the check, not the run.
run_check() { # NAME FUNCTION
    local status
    set +e
    (
        set -e
        "$2"
    )
    status=$?
    set -e
    if ((status == 0)); then
        record PASS "$1: $(cat "$work/detail" 2>/dev/null)"
    else
        record FAIL "$1: $(cat "$work/detail" 2>/dev/null)"
    fi
    stop_stray_writer
    rm -f "$work/detail"
    ((status == 0)) || heal
}
# After a failed check: every node running and on the network again, so that the next check
# tests what it names, not this failure's leftovers (a stopped or cut-off container).
heal() {
    local node container
    for node in node1 node2 node3; do
        container=$(container_of "$node") || continue
        [[ -n $container ]] || continue
        docker start "$container" >/dev/null 2>&1 || true
        # As Compose attached it; an error here is a container already on the network.
        docker network connect --alias "$node" "$network" "$container" >/dev/null 2>&1 || true
    done
    for node in node1 node2 node3; do
        wait_ready "$node" 60 || say "after a failed check, $node is not ready within 60 s"
    done
}
detail() { printf '%s\n' "$*" >"$work/detail"; }

# ---- 4 (first half): the seed's variables form a cluster of three --------------------------
check_formed() {
    detail "the cluster did not form within 90 s"
    for node in node1 node2 node3; do wait_ready "$node" 90; done
    local deadline=$(($(date +%s) + 30)) got=
    until [[ $got =~ ^node1=(leader|follower)\ node2=(leader|follower)\ node3=(leader|follower)$ ]]; do
        (($(date +%s) < deadline)) || { detail "GET /cluster/nodes: '$got', not 3 voters"; return 1; }
        sleep 0.5
        got=$(members || true)
    done
    detail "all 3 ready and members ($got) in $(($(date +%s) - started))s since the start"
}

# ---- 1: the leader's container stopped and started again ----------------------------------
check_leader_stop() {
    start_writer p1
    detail "no writes acknowledged through HAProxy"
    wait_progress p1 20 30
    local old
    old=$(wait_leader 10)
    local container
    container=$(container_of "$old")
    say "stopping the leader $old"
    local t0
    t0=$(date +%s)
    docker stop -t 30 "$container" >/dev/null
    local before
    before=$(acked p1)
    detail "no writes acknowledged within 30 s of stopping the leader $old"
    wait_progress p1 20 30
    local new
    new=$(wait_leader 10)
    say "writes go on: $(($(acked p1) - before)) acknowledged since $old stopped, new leader $new"
    local during=$(($(acked p1) - before))
    docker start "$container" >/dev/null
    detail "$old not ready within 60 s of its start"
    wait_ready "$old" 60
    wait_progress p1 10 30
    stop_writer
    detail "$old did not catch up within 30 s"
    wait_caught_up "$old" 30
    detail "leader $old stopped, $during writes acknowledged meanwhile (new leader $new), restarted and caught up in $(($(date +%s) - t0))s; p1: $(acked p1) acknowledged, $(failed p1) refused or timed out"
}

# ---- 2: a partition ----------------------------------------------------------------------------
check_partition() {
    start_writer p2
    detail "no writes acknowledged through HAProxy"
    wait_progress p2 20 30
    local cut container
    cut=$(wait_leader 10)
    container=$(container_of "$cut")
    say "disconnecting the leader $cut from $network"
    local t0
    t0=$(date +%s)
    docker network disconnect "$network" "$container"
    local before
    before=$(acked p2)
    detail "no writes acknowledged within 30 s of cutting $cut off"
    wait_progress p2 20 30
    local new
    new=$(wait_leader 10)
    [[ $new != "$cut" ]] || { detail "HAProxy still names the cut-off $cut as leader"; return 1; }
    local during=$(($(acked p2) - before))
    say "writes go on: $during acknowledged, new leader $new; reconnecting $cut"
    # As Compose attached it: the service name is how the others and HAProxy find it.
    docker network connect --alias "$cut" "$network" "$container"
    detail "$cut not ready within 60 s of reconnecting"
    wait_ready "$cut" 60
    wait_progress p2 10 30
    stop_writer
    detail "$cut did not catch up within 30 s"
    wait_caught_up "$cut" 30
    detail "leader $cut cut off, $during writes acknowledged meanwhile (new leader $new), reconnected and caught up in $(($(date +%s) - t0))s; p2: $(acked p2) acknowledged, $(failed p2) refused or timed out"
}

# ---- 3: a rolling restart under writes ------------------------------------------------------
check_rolling_restart() {
    start_writer p3
    detail "no writes acknowledged through HAProxy"
    wait_progress p3 10 30
    local t0 node
    t0=$(date +%s)
    for node in node1 node2 node3; do
        say "restarting $node ($(acked p3) acknowledged so far)"
        docker restart -t 30 "$(container_of "$node")" >/dev/null
        detail "$node not ready within 60 s of its restart"
        wait_ready "$node" 60
    done
    detail "no writes acknowledged after the last restart"
    wait_progress p3 10 30
    stop_writer
    detail "the nodes did not all catch up within 30 s"
    for node in node1 node2 node3; do wait_caught_up "$node" 30; done
    detail "node1, node2, node3 restarted one at a time in $(($(date +%s) - t0))s under writes; p3: $(acked p3) acknowledged, $(failed p3) refused or timed out"
}

# ---- the end: every acknowledged write present, 3 members ----------------------------------
check_all_present() {
    local out node
    detail "through HAProxy (linearizable): $(check_present "$lb" linearizable 2>&1 || true)"
    out=$(check_present "$lb" linearizable)
    for node in node1 node2 node3; do
        detail "on $node (local state): $(check_present "http://127.0.0.1:${node_port[$node]}" stale 2>&1 || true)"
        check_present "http://127.0.0.1:${node_port[$node]}" stale >/dev/null
    done
    detail "$out; the same on each node's local state"
}
check_members_end() {
    local got
    got=$(members || true)
    detail "GET /cluster/nodes: '$got'"
    [[ $got =~ ^node1=(leader|follower)\ node2=(leader|follower)\ node3=(leader|follower)$ ]]
}

run_check "4. the seed's variables start 3 members" check_formed
if [[ ${results[0]} == PASS* ]]; then
    run_check "1. leader stopped and restarted" check_leader_stop
    run_check "2. partition and reconnect" check_partition
    run_check "3. rolling restart, 0 lost writes" check_rolling_restart
    run_check "every acknowledged write present" check_all_present
    run_check "4. 3 members at the end" check_members_end
fi

printf '\n==== Compose test summary (%ss) ====\n' "$(($(date +%s) - started))"
failures=0
for line in "${results[@]}"; do
    printf '%s\n' "$line"
    [[ $line == PASS* ]] || failures=$((failures + 1))
done
if ((failures == 0)); then
    printf 'PASS: %d checks\n' "${#results[@]}"
else
    printf 'FAIL: %d of %d checks failed\n' "$failures" "${#results[@]}"
    exit 1
fi
