# Set-up shared by the benchmark scripts (scripts/bench-*.sh), sourced by them, not run.
# After `release_binaries`, $raftkv and $kvcli name the release binaries to use.

# Exits 2, naming WHAT, unless every following argument is a positive whole number.
#   require_positive "ROUNDS and DUR" "$rounds" "$dur"
require_positive() {
    local what=$1 number
    shift
    for number in "$@"; do
        [[ $number =~ ^[1-9][0-9]*$ ]] || { echo "$what must be positive whole numbers, not '$number'" >&2; exit 2; }
    done
}

# Builds raftkv and kvcli in release mode (unless SKIP_BUILD=1) under ${CARGO_TARGET_DIR:-target},
# sets $raftkv and $kvcli to them, and exits 1 if either is missing.
release_binaries() {
    local target_dir=${CARGO_TARGET_DIR:-target} bin
    raftkv=$target_dir/release/raftkv
    kvcli=$target_dir/release/kvcli
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        cargo build --release -p api -p cli
    fi
    for bin in "$raftkv" "$kvcli"; do
        [[ -x $bin ]] || { echo "no binary at $bin" >&2; exit 1; }
    done
}

# Creates directory $1 and prints its absolute path.
absolute_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

# Appends one run's summary (kvcli bench's --json answer, or the etcd load generator's) to
# $out/runs.jsonl as {label, ops_per_s, errors, p50_ms, p99_ms, cpu_us_per_op}, and prints it
# as a line (cpu_us_per_op is null unless the caller added it to JSON).
#   record LABEL JSON
record() {
    local label=$1 line
    line=$(echo "$2" | jq -c --arg name "$label" '{"label": $name, "ops_per_s": .ops_per_s,
        "errors": .errors, "p50_ms": (.p50_ms // .latency_ms.p50),
        "p99_ms": (.p99_ms // .latency_ms.p99), "cpu_us_per_op": .cpu_us_per_op}')
    echo "$line" >>"$out/runs.jsonl"
    echo "$line" | jq -r '"\(.label): \(.ops_per_s | floor) ops/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, errors \(.errors)"
        + if .cpu_us_per_op then ", CPU \(.cpu_us_per_op | floor) µs/op" else "" end'
}
