# shellcheck shell=bash
# The check runner shared by the deployments' check scripts (deployments/*/check.sh), sourced
# by them, not run: each check is named, run, and reported; the script goes on after a failure
# and `checks_done` ends it with every failure listed.

failed=()

# Runs the command after WHAT and reports it as a check named WHAT.
#   check "promtool check config" promtool check config prometheus.yml
check() {
    local what=$1
    shift
    printf '\n--- %s\n' "$what"
    if "$@"; then
        echo "ok: $what"
    else
        echo "FAILED: $what" >&2
        failed+=("$what")
    fi
}

# Ends the script: exit 1 listing the failed checks, or print that every check of KIND passed.
#   checks_done monitoring
checks_done() {
    if ((${#failed[@]})); then
        printf '\ncheck.sh: %d check(s) FAILED:\n' "${#failed[@]}" >&2
        printf '  %s\n' "${failed[@]}" >&2
        exit 1
    fi
    printf '\ncheck.sh: all %s checks passed\n' "$1"
}
