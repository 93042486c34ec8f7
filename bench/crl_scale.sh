#!/usr/bin/env bash
# bench/crl_scale.sh — how revocation's cost grows with the CRL, mtls-shield beside nginx in
# the same run (memory at start and after reloads, start-up and reload time, handshake CPU
# with the chain memo off, the accept loop during a reload). See bench/crl_scale.py.
#
#   bench/crl_scale.sh                         # sizes 10, 100,000 and 1,000,000 entries
#   SIZES=10,100000 ROUNDS=3 bench/crl_scale.sh
#   MTLS_SHIELD_BIN=/path/to/mtls-shield bench/crl_scale.sh   # use this binary, never build
#
# Every server binds 127.0.0.1 only; every phase is bounded in time and count.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
if [ -z "${MTLS_SHIELD_BIN:-}" ]; then
  cargo build --release
  MTLS_SHIELD_BIN=target/release/mtls-shield
fi
MTLS_SHIELD_BIN="$(realpath "$MTLS_SHIELD_BIN")" exec python3 bench/crl_scale.py
