#!/usr/bin/env bash
# Checks for deploy/: no cluster and no Docker engine needed.
#   bash deploy/check.sh            check (CI); exits non-zero on any failure
#   bash deploy/check.sh --update   also rewrite deploy/k8s/rendered/*.yaml
#
#  1. hadolint on every Dockerfile
#  2. render every overlay with kubectl's built-in kustomize; the rendered
#     output must match deploy/k8s/rendered/ (reviewed, committed manifests),
#     and every image override (overlays', and the README's release step)
#     must take effect
#     the Helm chart is linted and rendered (defaults and ci/*.yaml values)
#     with Helm's own Go SDK, and its image overrides must take effect
#  3. validate every resource against the Kubernetes schemas (1.30 and 1.37,
#     strict) with kubernetes-validate; rendered PyTorchJobs against the CRD
#     schema in deploy/k8s/training/, their pod templates as core/v1 PodTemplateSpec
#  4. checkov on the rendered manifests and the Dockerfiles (every skip is an
#     inline checkov.io/skip annotation with its reason)
#  5. docker-compose files against the Compose Specification
#  6. self-test: known-bad fixtures (tests/deploy/fixtures/) must fail 1-5
#
# Tools are pinned in deploy/check-requirements.txt and installed once into
# deploy/.venv-checks (reinstalled when that file changes).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="deploy/.venv-checks"
REQS="deploy/check-requirements.txt"
OUT="deploy/build/check"  # not a dot-dir: checkov skips hidden paths
RENDERED="deploy/k8s/rendered"
FIXTURES="tests/deploy/fixtures"
K8S_VERSIONS=(--k8s 1.30.0 --k8s 1.37.0)
UPDATE=0
[[ "${1:-}" == "--update" ]] && UPDATE=1

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
start=$SECONDS

# --- tools -------------------------------------------------------------------
stamp="$VENV/.installed-$(sha256sum "$REQS" | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  step "installing check tools into $VENV"
  python="$(command -v python3.11 || command -v python3)"
  [[ -x "$VENV/bin/python" ]] || "$python" -m venv "$VENV"
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS" \
      >"$VENV/install.log" 2>&1; then
    grep -v "^WARNING: Location" "$VENV/install.log" >&2 || true
    fail "could not install the check tools (log: $VENV/install.log)"
  fi
  "$VENV/bin/kubectl" version --client >/dev/null || fail "kubectl did not install"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
BIN="$VENV/bin"
PY="$BIN/python"
export PATH="$ROOT/$BIN:$PATH"
# checkov: no calls home (with --skip-download below).
export BC_SKIP_MAPPING=TRUE

rm -rf "$OUT" && mkdir -p "$OUT/manifests" "$OUT/bad"

# --- 1. Dockerfiles ----------------------------------------------------------
step "hadolint"
mapfile -t dockerfiles < <(find deploy/docker -name 'Dockerfile*' ! -name '*.dockerignore' | sort)
"$BIN/hadolint" --failure-threshold warning "${dockerfiles[@]}"
echo "hadolint: ${#dockerfiles[@]} Dockerfiles clean"

# --- 2. render ---------------------------------------------------------------
step "kustomize render"
stale=0
for overlay in deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "$BIN/kubectl" kustomize "$overlay" > "$OUT/manifests/$name.yaml"
  echo "rendered $name: $(grep -c '^kind:' "$OUT/manifests/$name.yaml") resources"
  if [[ $UPDATE == 1 ]]; then
    mkdir -p "$RENDERED" && cp "$OUT/manifests/$name.yaml" "$RENDERED/$name.yaml"
  elif ! cmp -s "$OUT/manifests/$name.yaml" "$RENDERED/$name.yaml"; then
    diff -u "$RENDERED/$name.yaml" "$OUT/manifests/$name.yaml" | head -40 || true
    echo "deploy/k8s/rendered/$name.yaml is stale: run 'bash deploy/check.sh --update'" >&2
    stale=1
  fi
done
[[ $stale == 0 ]] || fail "rendered manifests out of date"
# Every image override an overlay declares or deploy/README.md documents must change
# the rendered image (kustomize ignores an override whose name matches nothing).
"$PY" deploy/check_overrides.py "$BIN/kubectl"
# The Helm chart: Helm's lint (strict) and render with its defaults and ci/*.yaml,
# image overrides checked; the output joins the manifests validated below.
step "helm chart (deploy/helm/lattice)"
"$PY" deploy/check_helm.py "$OUT/manifests"
# PyTorchJobs through the trainer's renderer: a 2-node GPU job and a 1-node CPU job.
"$PY" -m deploy.render_pytorchjob --job-id example --job-dir /var/lib/lattice/trainer/jobs/example \
  --image registry.example.com/lattice/trainer:0.1.0 \
  --nodes 2 --procs-per-node 8 --gpus-per-node 8 \
  > "$OUT/manifests/pytorchjob-gpu.yaml"
"$PY" -m deploy.render_pytorchjob --job-id example-cpu --job-dir /var/lib/lattice/trainer/jobs/example-cpu \
  --image registry.example.com/lattice/trainer:0.1.0 --procs-per-node 4 \
  > "$OUT/manifests/pytorchjob-cpu.yaml"

# --- 3. schemas --------------------------------------------------------------
step "kubernetes-validate (strict) + PyTorchJob schema"
"$PY" deploy/validate_manifests.py "${K8S_VERSIONS[@]}" \
  "$OUT"/manifests/*.yaml

# --- 4. security scan --------------------------------------------------------
step "checkov"
"$BIN/checkov" --quiet --compact --skip-download --framework kubernetes -d "$OUT/manifests"
"$BIN/checkov" --quiet --compact --skip-download --framework dockerfile -d deploy/docker
echo "checkov: clean (skips are annotated inline with reasons)"

# --- 5. compose --------------------------------------------------------------
step "compose"
"$PY" deploy/validate_compose.py deploy/docker-compose.yml deploy/docker-compose.gpu.yml

# --- 6. the checks can fail --------------------------------------------------
step "self-test: known-bad fixtures must fail"
must_fail() {
  local what="$1"; shift
  if "$@" >"$OUT/bad/last.log" 2>&1; then
    cat "$OUT/bad/last.log" >&2
    fail "$what passed but must fail"
  fi
  echo "ok: $what fails"
}
must_fail "hadolint on bad.Dockerfile" "$BIN/hadolint" "$FIXTURES/bad.Dockerfile"
must_fail "validate bad-deployment.yaml" "$PY" deploy/validate_manifests.py "$FIXTURES/bad-deployment.yaml"
must_fail "validate bad-pytorchjob.yaml" "$PY" deploy/validate_manifests.py "$FIXTURES/bad-pytorchjob.yaml"
must_fail "validate bad-pytorchjob-pod.yaml" "$PY" deploy/validate_manifests.py "$FIXTURES/bad-pytorchjob-pod.yaml"
must_fail "validate unknown-kind.yaml" "$PY" deploy/validate_manifests.py "$FIXTURES/unknown-kind.yaml"
cp "$FIXTURES/privileged-pod.yaml" "$OUT/bad/"
must_fail "checkov on privileged-pod.yaml" \
  "$BIN/checkov" --quiet --compact --skip-download --framework kubernetes -d "$OUT/bad" \
  --check CKV_K8S_16,CKV_K8S_20,CKV_K8S_22,CKV_K8S_23,CKV_K8S_37
must_fail "compose bad-compose.yml" "$PY" deploy/validate_compose.py "$FIXTURES/bad-compose.yml"

echo
echo "deploy checks passed in $((SECONDS - start))s"
