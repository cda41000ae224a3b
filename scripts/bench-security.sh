#!/usr/bin/env bash
# What authentication and TLS cost (issue 15): two 3-node clusters side by side, one plain and
# one with TLS everywhere (client APIs with mTLS, and peer connections), and each round drives
# the same workloads, one after the other, against the leader: the plain cluster with
# authentication off, then on with a login token (JWT), then on with an API key, then the TLS
# cluster (authentication off):
#   W2 new-key puts, 64 workers; W3 linearizable gets of 10,000 preloaded keys, 64 workers;
# 16-byte keys, 100-byte values, DUR seconds each, over PROTOCOL (http or grpc). Authentication
# is turned on and off at run time between runs (POST /auth/enable, /auth/disable), so the
# three auth modes run on the same nodes with the same data. Prints one line per run and a
# table of medians with each mode's throughput against "off"; the JSON lines go to
# OUT/runs.jsonl. Certificates come from scripts/tls-certs.sh (openssl), under OUT.
#
#   scripts/bench-security.sh [OUT]
#
# Environment: ROUNDS (3), DUR (10), PROTOCOL (http), SKIP_BUILD=1 (use the built binaries).
# Needs jq, curl, openssl and python3; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh

out=${1:-bench-security-$(date -u +%Y%m%dT%H%M%SZ)}
rounds=${ROUNDS:-3}
dur=${DUR:-10}
protocol=${PROTOCOL:-http}
require_positive "ROUNDS and DUR" "$rounds" "$dur"
for tool in jq curl openssl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done
release_binaries
out=$(absolute_dir "$out")
dir=$out/cluster
tls_dir=$out/tls-cluster
certs=$out/certs
ports=(HTTP_BASE=27080 RAFT_BASE=27000 GRPC_BASE=27100)
tls_ports=(HTTP_BASE=27280 RAFT_BASE=27200 GRPC_BASE=27300)
node1=http://127.0.0.1:27081
tls_node1=https://127.0.0.1:27281
FORCE=1 scripts/tls-certs.sh "$certs" >/dev/null
tls_env=(RAFTKV_TLS__ENABLED=true RAFTKV_TLS__ENABLE_MTLS=true RAFTKV_TLS__ENABLE_PEER_TLS=true
    "RAFTKV_TLS__CERT_FILE=$certs/server-cert.pem" "RAFTKV_TLS__KEY_FILE=$certs/server-key.pem"
    "RAFTKV_TLS__CA_FILE=$certs/ca-cert.pem")
tls_curl=(--cacert "$certs/ca-cert.pem" --cert "$certs/client-cert.pem" --key "$certs/client-key.pem")
tls_kvcli=(--ca-cert "$certs/ca-cert.pem" --cert "$certs/client-cert.pem" --key "$certs/client-key.pem")
cleanup() {
    env "${ports[@]}" RAFTKV_BIN="$raftkv" scripts/cluster.sh stop "$dir" >/dev/null 2>&1 || true
    env "${tls_ports[@]}" "${tls_env[@]}" SCHEME=https CURL_TLS="${tls_curl[*]}" RAFTKV_BIN="$raftkv" \
        scripts/cluster.sh stop "$tls_dir" >/dev/null 2>&1 || true
    rm -rf "$dir" "$tls_dir"
}
trap cleanup EXIT

rm -rf "$dir" "$tls_dir"
env "${ports[@]}" RAFTKV_BIN="$raftkv" scripts/cluster.sh start "$dir" >/dev/null
env "${tls_ports[@]}" "${tls_env[@]}" SCHEME=https CURL_TLS="${tls_curl[*]}" RAFTKV_BIN="$raftkv" \
    scripts/cluster.sh start "$tls_dir" >/dev/null
password=bench-admin-password
curl -sf -X POST "$node1/auth/users" \
    -d "{\"username\":\"bench\",\"password\":\"$password\",\"role\":\"admin\"}" >/dev/null
login() {
    curl -sf -X POST "$node1/auth/login" -d "{\"username\":\"bench\",\"password\":\"$password\"}" | jq -r .token
}
curl -sf -X POST "$node1/auth/enable" >/dev/null
token=$(login)
api_key=$(curl -sf -X POST "$node1/auth/apikeys" -H "Authorization: Bearer $token" \
    -d '{"name":"bench","role":"write"}' | jq -r .key)

# Authentication on or off for the next run (MODE: off, jwt or apikey).
set_mode() {
    local want=on
    [[ $1 == off ]] && want=off
    local now
    now=$(curl -sf "$node1/auth/status" | jq -r 'if .enabled then "on" else "off" end')
    if [[ $now != "$want" ]]; then
        if [[ $want == on ]]; then
            curl -sf -X POST "$node1/auth/enable" >/dev/null
        else
            curl -sf -X POST "$node1/auth/disable" -H "Authorization: Bearer $token" >/dev/null
        fi
    fi
}

leader() { # MODE
    if [[ $1 == tls ]]; then
        curl -sf "${tls_curl[@]}" "$tls_node1/cluster/leader" | jq -r --arg p "$protocol" '.[$p + "_addr"]'
    else
        curl -sf "$node1/cluster/leader" -H "Authorization: Bearer $token" | jq -r --arg p "$protocol" '.[$p + "_addr"]'
    fi
}


run() { # LABEL MODE WORKLOAD
    local credential=() scheme=$protocol
    case $2 in
        jwt) credential=(--token "$token") ;;
        apikey) credential=(--api-key "$api_key") ;;
        tls)
            credential=("${tls_kvcli[@]}")
            scheme=${protocol}s
            ;;
    esac
    local args=(--endpoints "$scheme://$(leader "$2")" "${credential[@]}" --json bench
        --protocol "$protocol" --workload "$3" --concurrency 64 --duration "${dur}s"
        --key-size 16 --value-size 100)
    if [[ $3 == read ]]; then
        args+=(--keys 10000 --preload)
    fi
    record "$1" "$("$kvcli" "${args[@]}" 2>/dev/null)"
}

for round in $(seq "$rounds"); do
    for mode in off jwt apikey tls; do
        [[ $mode == tls ]] || set_mode "$mode"
        token=$(login) # a fresh token each round, so none expires mid-run
        run "W2-$mode-r$round" "$mode" write-new
        run "W3-$mode-r$round" "$mode" read
    done
done
echo "JSON lines: $out/runs.jsonl"
python3 - "$out/runs.jsonl" <<'PY'
import sys
sys.path.insert(0, "scripts/lib")
from runs import cell, grouped, med
print("| workload | off ops/s (p99 ms) | JWT ops/s (p99 ms) | API key ops/s (p99 ms) | TLS+mTLS ops/s (p99 ms) | JWT / off | API key / off | TLS / off |")
print("|---|---|---|---|---|---|---|---|")
for name, modes in sorted(grouped(sys.argv[1]).items()):
    off = med(modes["off"], "ops_per_s")
    ratio = lambda m: f"{med(modes[m], 'ops_per_s') / off:.2f}x"
    print(f"| {name} | {cell(modes['off'])} | {cell(modes['jwt'])} | {cell(modes['apikey'])} | {cell(modes['tls'])} | "
          f"{ratio('jwt')} | {ratio('apikey')} | {ratio('tls')} |")
PY
