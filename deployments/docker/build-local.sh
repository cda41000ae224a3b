#!/usr/bin/env bash
# Builds the Compose deployment's images on a machine that reaches no container registry:
# every image is FROM scratch, holding binaries from this host and the shared libraries they
# load (found with ldd), so nothing is pulled.
#
#   deployments/docker/build-local.sh [raftkv] [haproxy] [prometheus]    (default: raftkv)
#
#   raftkv      the RaftKV image, from deployments/docker/Dockerfile with BASE=local: raftkv
#               and kvcli from RAFTKV_BIN_DIR (default: $CARGO_TARGET_DIR/release, else
#               target/release; built with `cargo build --release -p api -p cli` when missing)
#   haproxy     an image laid out like the upstream haproxy one (config at
#               /usr/local/etc/haproxy/haproxy.cfg, user 99), from Debian's haproxy package
#   prometheus  an image laid out like prom/prometheus (entrypoint /bin/prometheus, config at
#               /etc/prometheus/prometheus.yml, data in /prometheus, user 65534), from
#               Debian's prometheus package
#
# Debian's packages are installed with apt-get when missing (as root, else through sudo).
# Image names: RAFTKV_IMAGE (raftkv:latest), RAFTKV_HAPROXY_IMAGE
# (raftkv-local/haproxy:latest), RAFTKV_PROMETHEUS_IMAGE (raftkv-local/prometheus:latest).
# DOCKER names the docker client to use; by default the first one found that builds with
# BuildKit (a client with buildx, or a 20.10 client with DOCKER_BUILDKIT=1).
# The build contexts are made under target/docker-context/ and hold only what each image needs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
contexts="$repo/target/docker-context"

RAFTKV_IMAGE=${RAFTKV_IMAGE:-raftkv:latest}
RAFTKV_HAPROXY_IMAGE=${RAFTKV_HAPROXY_IMAGE:-raftkv-local/haproxy:latest}
RAFTKV_PROMETHEUS_IMAGE=${RAFTKV_PROMETHEUS_IMAGE:-raftkv-local/prometheus:latest}

say() { printf 'build-local: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# A docker client whose `docker build` runs BuildKit (the Dockerfile's BASE=local path needs
# it: the legacy builder would also build the Rust stage, which pulls an image).
pick_docker() {
    if [[ -n ${DOCKER:-} ]]; then
        printf '%s\n' "$DOCKER"
        return
    fi
    local candidate major
    for candidate in $(type -ap docker) /usr/bin/docker; do
        [[ -x $candidate ]] || continue
        if "$candidate" buildx version >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return
        fi
        major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || true
        # Before Docker 23 the client has BuildKit built in (DOCKER_BUILDKIT=1).
        if [[ $major =~ ^[0-9]+$ ]] && ((major < 23)); then
            printf '%s\n' "$candidate"
            return
        fi
    done
    die "no docker client here builds with BuildKit: install the buildx plugin, or name a Docker 20.10 client with DOCKER=/path/to/docker"
}

apt_install() {
    local cmd=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@")
    command -v apt-get >/dev/null || die "no apt-get here: install $* and run again"
    say "installing Debian's $*"
    if [[ $(id -u) == 0 ]]; then
        apt-get update -q >/dev/null && "${cmd[@]}" >/dev/null
    else
        sudo apt-get update -q >/dev/null && sudo "${cmd[@]}" >/dev/null
    fi
}

# Copies each binary's shared libraries (and the dynamic loader) into ROOTFS at the paths
# ldd resolves them to on this host, where the loader in the image looks for them.
copy_libraries() {
    local rootfs=$1 binary lib
    shift
    for binary in "$@"; do
        ldd "$binary" >/dev/null 2>&1 || continue # a static binary needs nothing
        while read -r lib; do
            cp -L --parents "$lib" "$rootfs/"
        done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
    done
}

# /etc files a scratch image needs: the image's users, and host lookups through /etc/hosts
# and DNS (Docker provides both files' contents at run time).
write_etc() {
    local rootfs=$1 passwd=$2 group=$3
    mkdir -p "$rootfs/etc" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\n%s\n' "$passwd" >"$rootfs/etc/passwd"
    printf 'root:x:0:\n%s\n' "$group" >"$rootfs/etc/group"
    printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
}

new_context() {
    local dir="$contexts/$1"
    rm -rf "$dir"
    mkdir -p "$dir/rootfs"
    printf '%s\n' "$dir"
}

build_raftkv() {
    local bin_dir=${RAFTKV_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
    if [[ ! -x $bin_dir/raftkv || ! -x $bin_dir/kvcli ]]; then
        [[ -z ${RAFTKV_BIN_DIR:-} ]] || die "RAFTKV_BIN_DIR=$RAFTKV_BIN_DIR has no raftkv and kvcli binaries"
        say "no release binaries in $bin_dir: cargo build --release -p api -p cli"
        (cd "$repo" && cargo build --release -p api -p cli)
    fi
    local ctx rootfs
    ctx=$(new_context raftkv)
    rootfs="$ctx/rootfs"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/raftkv" "$ctx/data"
    say "binaries from $bin_dir"
    cp "$bin_dir/raftkv" "$bin_dir/kvcli" "$rootfs/usr/local/bin/"
    # Debug builds carry line tables; the image does not need them.
    if command -v strip >/dev/null; then
        strip --strip-debug "$rootfs/usr/local/bin/raftkv" "$rootfs/usr/local/bin/kvcli"
    fi
    copy_libraries "$rootfs" "$rootfs/usr/local/bin/raftkv" "$rootfs/usr/local/bin/kvcli"
    cp "$here/raftkv.yaml" "$rootfs/etc/raftkv/config.yaml"
    write_etc "$rootfs" 'raftkv:x:10001:10001:RaftKV:/data:/sbin/nologin' 'raftkv:x:10001:'
    say "building $RAFTKV_IMAGE (context $(du -sh "$ctx" | cut -f1))"
    DOCKER_BUILDKIT=1 "$docker" build --build-arg BASE=local -f "$here/Dockerfile" -t "$RAFTKV_IMAGE" "$ctx"
}

build_haproxy() {
    command -v haproxy >/dev/null || apt_install haproxy
    local ctx rootfs haproxy_bin
    haproxy_bin=$(command -v haproxy)
    ctx=$(new_context haproxy)
    rootfs="$ctx/rootfs"
    mkdir -p "$rootfs/usr/local/sbin" "$rootfs/usr/local/etc/haproxy" "$rootfs/var/lib/haproxy"
    cp "$haproxy_bin" "$rootfs/usr/local/sbin/haproxy"
    copy_libraries "$rootfs" "$haproxy_bin"
    write_etc "$rootfs" 'haproxy:x:99:99:haproxy:/var/lib/haproxy:/sbin/nologin' 'haproxy:x:99:'
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
USER 99:99
STOPSIGNAL SIGUSR1
# As the upstream image runs it: master-worker mode, in the foreground.
ENTRYPOINT ["/usr/local/sbin/haproxy", "-W", "-db"]
CMD ["-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF
    say "building $RAFTKV_HAPROXY_IMAGE ($(haproxy -v | head -n 1))"
    DOCKER_BUILDKIT=1 "$docker" build -t "$RAFTKV_HAPROXY_IMAGE" "$ctx"
}

build_prometheus() {
    command -v prometheus >/dev/null || apt_install prometheus
    local ctx rootfs prometheus_bin
    prometheus_bin=$(command -v prometheus)
    ctx=$(new_context prometheus)
    rootfs="$ctx/rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/etc/prometheus" "$ctx/data"
    cp "$prometheus_bin" "$rootfs/bin/prometheus"
    copy_libraries "$rootfs" "$prometheus_bin"
    # Debian's build serves its web pages from here.
    if [[ -d /usr/share/prometheus ]]; then
        cp -r --parents /usr/share/prometheus "$rootfs/"
    fi
    write_etc "$rootfs" 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' 'nogroup:x:65534:'
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
COPY --chown=65534:65534 data/ /prometheus/
USER 65534:65534
WORKDIR /prometheus
VOLUME ["/prometheus"]
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
    say "building $RAFTKV_PROMETHEUS_IMAGE ($(prometheus --version 2>&1 | head -n 1))"
    DOCKER_BUILDKIT=1 "$docker" build -t "$RAFTKV_PROMETHEUS_IMAGE" "$ctx"
}

targets=("$@")
((${#targets[@]})) || targets=(raftkv)
for target in "${targets[@]}"; do
    case $target in
        raftkv | haproxy | prometheus) ;;
        *) die "unknown image '$target': choose raftkv, haproxy or prometheus" ;;
    esac
done
docker=$(pick_docker)
for target in "${targets[@]}"; do
    "build_$target"
done
