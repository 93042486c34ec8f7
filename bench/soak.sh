#!/usr/bin/env bash
# Soak: mixed good and hostile traffic against mtls-shield for SOAK_SECONDS (default 600),
# reporting the proxy's RSS and open file descriptors at the start and the end; fails
# unless they are flat, the process is alive and every good request was answered.
#
#   bench/soak.sh                      # 10 minutes
#   SOAK_SECONDS=60 bench/soak.sh      # a short run
#
# Good traffic: Python clients with the client certificate (keep-alive GETs, 64 KiB POSTs,
# fresh connections) and, when found, `oha` at OHA_QPS (default 100) requests/s. Hostile:
# handshakes without a certificate, plain HTTP, slowloris headers, silent and half-open TLS
# connections, 200 KB request heads. See bench/soak.py.
#
# Environment: MTLS_SHIELD_BIN (default: build target/release/mtls-shield), OHA (path to
# oha; default bench/.tools/bin/oha or oha on PATH; OHA=none to skip), OHA_QPS,
# SOAK_SAMPLE (seconds between samples, 10), SOAK_RSS_SLACK_KIB (8192), SOAK_FD_SLACK (4).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${MTLS_SHIELD_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=target/release/mtls-shield
fi
if [ -z "${OHA:-}" ]; then
  if [ -x bench/.tools/bin/oha ]; then OHA=bench/.tools/bin/oha
  elif command -v oha >/dev/null 2>&1; then OHA="$(command -v oha)"
  else OHA=""; fi
fi
[ "${OHA:-}" = none ] && OHA=""

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # file sed-expression what
  local v=""
  for _ in $(seq 1 200); do
    v="$(sed -n "$2" "$1" | head -n1)"
    [ -n "$v" ] && { echo "$v"; return 0; }
    sleep 0.05
  done
  echo "soak: $3 did not start:" >&2; cat "$1" >&2; return 1
}

python3 bench/soak.py upstream >"$work/upstream.out" 2>&1 &
pids+=($!)
upstream="$(wait_for "$work/upstream.out" 's/^upstream \(.*\)$/\1/p' upstream)"

"$BIN" gen-certs --out "$work/certs" >/dev/null
cat > "$work/mtls-shield.toml" <<TOML
[listener]
address = "127.0.0.1:0"
certificate = "certs/server.pem"
private_key = "certs/server.key"
# Short timeouts, so hostile connections come and go many times during the run.
handshake_timeout = "2s"
header_read_timeout = "2s"
idle_timeout = "5s"
max_connections = 500
max_header_bytes = 16384
max_request_body_bytes = 1048576

[client_auth]
truststore = "certs/truststore.pem"

[upstream]
url = "http://$upstream"
pool_idle_timeout = "2s"

[admin]
address = "127.0.0.1:0"

[log]
level = "info"
access_log = false
TOML
"$BIN" run --config "$work/mtls-shield.toml" 2>"$work/proxy.log" &
proxy_pid=$!
pids+=("$proxy_pid")
# The bound addresses come from the start-up log lines.
addr="$(wait_for "$work/proxy.log" 's/.* listening address=\([0-9.:]*\) .*/\1/p' mtls-shield)"
admin="$(wait_for "$work/proxy.log" 's/.*admin listening address=\([0-9.:]*\).*/\1/p' "admin listener")"

SOAK_ADDR="$addr" SOAK_ADMIN="$admin" SOAK_PID="$proxy_pid" SOAK_CERTS="$work/certs" OHA="$OHA" \
  python3 bench/soak.py
