#!/usr/bin/env bash
# Validate deploy/kubernetes: schemas, then what mtls-shield itself relies on.
#
#   bash .ci/k8s-validate.sh
#
# 1. Schema: kubernetes-validate (PyPI), which ships the Kubernetes JSON schemas inside the wheel, so
#    nothing is downloaded at run time (when run as root, step 1 runs in a network namespace with no
#    network, to prove it). Strict mode (unknown fields are errors), against Kubernetes 1.30, the oldest
#    release with the preStop `sleep` action, and 1.37.
# 2. Fit: .ci/k8s_check.py parses every YAML document (PyYAML) and the TOML config inside the
#    ConfigMaps, and checks probes vs the admin address, mounts vs the config's file paths,
#    terminationGracePeriodSeconds vs preStop + shutdown_timeout, reload.watch_interval, the security
#    context, and the Service/PDB/HPA wiring.
# 3. If a binary is at $MTLS_SHIELD_BIN (default target/release/mtls-shield, else target/debug), every
#    ConfigMap's config also goes through `mtls-shield check`, with its certificate paths pointed at a
#    PKI made by certs/openssl-recipe.sh --with-crl.
# 4. If kubectl is on PATH, `kubectl kustomize deploy/kubernetes` must render.
#
# Needs: python3 (3.11+) with venv, openssl; pip reaches PyPI. As root on Debian, missing packages are
# installed with apt-get. Tools go to the venv target/ci-venv (CI_VENV overrides).
set -euo pipefail
CI_NAME=k8s-validate
# shellcheck source=.ci/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$CI_REPO"
DIR=deploy/kubernetes

ci_step "install kubernetes-validate and PyYAML into $CI_VENV"
ci_venv "kubernetes-validate==1.37.0" "PyYAML>=6"

ci_step "schema validation (strict)"
mapfile -t FILES < <(find "$DIR" -name '*.yaml' ! -name kustomization.yaml | sort)
[ "${#FILES[@]}" -gt 0 ] || ci_die "no manifests under $DIR"
OFFLINE=()
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
  OFFLINE=(unshare -n)
  echo "(running without network: unshare -n)"
fi
for v in 1.30.0 1.37.0; do
  "${OFFLINE[@]}" "$CI_VENV/bin/kubernetes-validate" --strict --kubernetes-version "$v" "${FILES[@]}" ||
    ci_die "schema validation failed against Kubernetes $v"
done

ci_step "fit with mtls-shield (.ci/k8s_check.py)"
CHECK_ARGS=()
BIN=${MTLS_SHIELD_BIN:-}
if [ -z "$BIN" ]; then
  for b in target/release/mtls-shield target/debug/mtls-shield; do
    if [ -x "$b" ]; then BIN=$b; break; fi
  done
fi
if [ -n "$BIN" ]; then
  [ -x "$BIN" ] || ci_die "MTLS_SHIELD_BIN=$BIN is not an executable"
  ci_need openssl
  PKI=$(mktemp -d "${TMPDIR:-/tmp}/mtls-shield-k8s-pki.XXXXXX")
  trap 'rm -rf "$PKI"' EXIT
  certs/openssl-recipe.sh "$PKI" --with-crl >/dev/null 2>&1 || ci_die "certs/openssl-recipe.sh failed"
  CHECK_ARGS=(--bin "$BIN" --pki "$PKI")
  echo "(also running $BIN check on each config)"
else
  echo "(no mtls-shield binary built: skipping \`mtls-shield check\` of the ConfigMaps)"
fi
"$CI_VENV/bin/python" .ci/k8s_check.py "${CHECK_ARGS[@]}" "$DIR" || ci_die "manifests do not fit mtls-shield"

ci_step "kustomize"
if command -v kubectl >/dev/null; then
  kubectl kustomize "$DIR" >/dev/null || ci_die "kubectl kustomize $DIR failed"
  echo "kubectl kustomize $DIR: renders"
else
  echo "(kubectl not installed: skipped)"
fi

echo
echo "k8s-validate: OK"
