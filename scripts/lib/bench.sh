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
