#!/usr/bin/env bash
# Makes sure `prometheus` and `promtool` are on PATH, installing Debian's `prometheus` package
# (which ships both) when either is missing: with apt-get as root, else through sudo.
# Used by check.sh, by api/tests/monitoring.rs (the live check) and by .ci/run.
# Exits non-zero, saying what to do, when they are missing and cannot be installed here.
set -euo pipefail

have_both() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }

if ! have_both; then
    echo "ensure-prometheus: prometheus or promtool is missing; installing Debian's prometheus package" >&2
    if ! command -v apt-get >/dev/null; then
        echo "ensure-prometheus: no apt-get here: install Prometheus 2.x (the prometheus and promtool binaries) and put both on PATH" >&2
        exit 1
    fi
    install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus)
    if [[ $(id -u) == 0 ]]; then
        apt-get update -q && "${install[@]}"
    elif command -v sudo >/dev/null; then
        sudo apt-get update -q && sudo "${install[@]}"
    else
        echo "ensure-prometheus: not root and no sudo: install Debian's prometheus package (apt-get install prometheus) as root" >&2
        exit 1
    fi
    if ! have_both; then
        echo "ensure-prometheus: the prometheus package was installed but prometheus or promtool is still not on PATH" >&2
        exit 1
    fi
fi

# One line each, for the logs of whoever called this.
prometheus --version 2>&1 | head -n 1 >&2
promtool --version 2>&1 | head -n 1 >&2
