#!/usr/bin/env bash
# Static checks of the Kubernetes manifests, no cluster needed:
#   1. every kustomization (base/, founder/, restore/, tls/) names files that exist, and every
#      file here is named by one (a manifest nobody applies is a mistake too);
#   2. every resource file (not the kustomize patches) passes kubernetes-validate --strict
#      against the Kubernetes API schemas of version $KUBERNETES_VERSION: an unknown or
#      misspelt field is an error, not ignored;
#   3. when kubectl is on PATH, each kustomization is rendered (kubectl kustomize, offline)
#      and the rendering validated the same way, which checks the patches as applied.
# Prints each failure and exits non-zero if any check failed. Needs python3; installs
# kubernetes-validate (PyPI; it ships the schemas, so validating needs no network) if missing.
# api/tests/kubernetes.rs runs this, then checks the manifests against the binary's config.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

# The oldest Kubernetes these manifests are for (StatefulSet PVC retention is on from 1.27).
KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.30.0}
# The validator's release: pinned, so that a new release's schemas change nothing unasked.
VALIDATOR=kubernetes-validate==1.37.0

if ! command -v python3 >/dev/null; then
    echo "check.sh: python3 is needed" >&2
    exit 1
fi
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "check.sh: installing $VALIDATOR"
    python3 -m pip install --quiet --disable-pip-version-check "$VALIDATOR" >&2
fi
validate() {
    python3 -m kubernetes_validate --strict --quiet -k "$KUBERNETES_VERSION" "$@"
}

# shellcheck source=deployments/lib/checks.sh
. "$here/../lib/checks.sh"

# Resource files: what the kustomizations list under resources (not patches), as listed
# by the check below; it prints them, one a line, to $resources.
resources=$(mktemp)
trap 'rm -f "$resources"' EXIT

check "the kustomizations name existing files, and every file is named" python3 - "$resources" <<'PY'
import glob, os, sys

import yaml  # kubernetes-validate depends on PyYAML

problems, resources, named = [], [], set()
kustomizations = sorted(glob.glob("*/kustomization.yaml"))
if sorted(os.path.dirname(k) for k in kustomizations) != ["base", "founder", "restore", "tls"]:
    problems.append(f"expected the kustomizations base/, founder/, restore/ and tls/, found {kustomizations}")
for path in kustomizations:
    root = os.path.dirname(path)
    k = yaml.safe_load(open(path))
    if k.get("kind") != "Kustomization":
        problems.append(f"{path}: kind is {k.get('kind')!r}, not Kustomization")
    for entry in k.get("resources", []):
        target = os.path.normpath(os.path.join(root, entry))
        if os.path.isdir(target):
            if not os.path.isfile(os.path.join(target, "kustomization.yaml")):
                problems.append(f"{path}: resource {entry} is a directory without kustomization.yaml")
        elif os.path.isfile(target):
            resources.append(target)
            named.add(target)
        else:
            problems.append(f"{path}: resource {entry} does not exist")
    for patch in k.get("patches", []):
        target = os.path.normpath(os.path.join(root, patch.get("path", "")))
        if not os.path.isfile(target):
            problems.append(f"{path}: patch {patch} does not name an existing file")
        named.add(target)
for manifest in sorted(glob.glob("*/*.yaml")):
    if os.path.basename(manifest) != "kustomization.yaml" and manifest not in named:
        problems.append(f"{manifest} is named by no kustomization")
for p in problems:
    print(p, file=sys.stderr)
open(sys.argv[1], "w").write("".join(r + "\n" for r in resources))
if not problems:
    print(f"{len(kustomizations)} kustomizations, {len(resources)} resource files, {len(named) - len(resources)} patches")
sys.exit(1 if problems else 0)
PY

mapfile -t files <"$resources"
if ((${#files[@]})); then
    check "kubernetes-validate --strict (Kubernetes $KUBERNETES_VERSION): ${files[*]}" \
        validate "${files[@]}"
fi

if command -v kubectl >/dev/null; then
    for k in base founder restore tls; do
        rendered=$(mktemp --suffix=.yaml)
        render_and_validate() {
            kubectl kustomize "$1" >"$2" && validate "$2"
        }
        check "kubectl kustomize $k, validated" render_and_validate "$k" "$rendered"
        rm -f "$rendered"
    done
else
    printf '\n--- kubectl is not on PATH: the kustomizations are not rendered (their files are checked above)\n'
fi

checks_done Kubernetes
