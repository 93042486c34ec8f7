#!/usr/bin/env bash
# Run every shipping check (issue 7 and the certs recipe of issue 2) and print a summary line.
#
#   bash .ci/shipping.sh            # from .ci/run, after `cargo test` has built target/debug/mtls-shield
#
# The binary for the Docker replay and the `check` runs: $MTLS_SHIELD_BIN if set, else the newer of
# target/release/mtls-shield and target/debug/mtls-shield, else docker-recipe.sh builds the release one.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [ -z "${MTLS_SHIELD_BIN:-}" ]; then
  for b in target/release/mtls-shield target/debug/mtls-shield; do
    if [ -x "$b" ] && { [ -z "${MTLS_SHIELD_BIN:-}" ] || [ "$b" -nt "$MTLS_SHIELD_BIN" ]; }; then MTLS_SHIELD_BIN=$b; fi
  done
  [ -z "${MTLS_SHIELD_BIN:-}" ] || export MTLS_SHIELD_BIN
fi
echo "shipping checks with MTLS_SHIELD_BIN=${MTLS_SHIELD_BIN:-<build target/release/mtls-shield>}"
passed=0 failed=0 failures=()
for s in certs-recipe docker-recipe k8s-validate systemd-verify; do
  if bash ".ci/$s.sh"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$s"); fi
done
echo
[ "$failed" = 0 ] || echo "failed: ${failures[*]}"
echo "shipping: $passed passed, $failed failed"
[ "$failed" = 0 ]
