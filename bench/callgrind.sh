#!/usr/bin/env bash
# bench/callgrind.sh — user-space instructions per keep-alive request of mtls-shield, counted by
# valgrind's callgrind: repeatable for the same binary and inputs whatever else the machine is
# doing, so a lever's effect can be read on a shared machine where wall-clock figures move ±15%.
#
#   bench/callgrind.sh                      # access log off, then on
#   BIN=/path/to/mtls-shield bench/callgrind.sh
#   N1=1000 N2=6000 bench/callgrind.sh      # request counts of the two dumps
#   PROTO=h2 LOGS=off bench/callgrind.sh    # one h2 stream (4 connections x 25 streams)
#
# Run it on a quiet machine: the figure is repeatable, but work that scales with wall time
# rather than with requests (the watchdog's 5 ms look at a connection that keeps upstream
# connections) is stretched by valgrind's slowdown and by a busy machine. Two runs of one
# binary here differ by under 0.5% when quiet, and by about 2.5% beside a `cargo test`.
#
# Method: the shield runs under callgrind with instrumentation off until a warm-up is done;
# then two oha runs on 8 fresh connections each (4 for h2; with CloudFront's headers), of N1 and of
# N2 - N1 requests, each in its own dump. Both hold the same 8 handshakes, so the difference
# of the dumps over the difference of the request counts is the cost of one keep-alive
# request, with start-up, handshakes and warm-up left out. Prints one line per log setting; with ANNOTATE=1 also
# the top functions of the marginal run (needs the binary built with debug line tables:
# `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release`).
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
BIN="${BIN:-$REPO_DIR/target/release/mtls-shield}"
OHA="${OHA:-$(command -v oha || echo "$BENCH_DIR/.tools/bin/oha")}"
N1="${N1:-1000}"
N2="${N2:-6000}"
# PROTO=h2 measures an h2 stream instead: 4 connections x 25 concurrent streams, as compare.sh's
# h2 phase, so the per-stream cost (framing, flow control, flushes) is what the figure holds.
export PROTO="${PROTO:-http1}"
if [ "$PROTO" = h2 ]; then CONNS=4; PROTO_ARGS=(--http2 -p 25); else CONNS=8; PROTO_ARGS=(--http-version 1.1); fi
RUN="$BENCH_DIR/.run/callgrind"
PORT_UP="${PORT_UP:-18580}"
PORT="${PORT:-18581}"
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 1; }
[ -x "$OHA" ] || { echo "oha not found: run bench/compare.sh once (it installs it), or set OHA" >&2; exit 1; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || {
  echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is needed (the upstream): apt-get install -y nginx" >&2; exit 1; }

rm -rf "$RUN"; mkdir -p "$RUN"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The upstream: nginx answering a small JSON body, like compare.sh's.
mkdir -p "$RUN/nginx"
cat > "$RUN/nginx/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $RUN/nginx/pid; error_log $RUN/nginx/error.log warn;
events { worker_connections 1024; }
http { access_log off;
  server { listen 127.0.0.1:$PORT_UP; keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{"ok":true,"note":"small fixed body"}'; } } }
EOF
nginx -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" & PIDS+=($!)

"$BIN" gen-certs --out "$RUN/pki" >/dev/null
HEADERS=(-H "User-Agent: Amazon CloudFront"
  -H "Via: 1.1 0123456789abcdef0123456789abcdef.cloudfront.net (CloudFront)"
  -H "X-Amz-Cf-Id: AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrSt"
  -H "X-Forwarded-For: 203.0.113.7" -H "Accept-Encoding: gzip"
  -H "CloudFront-Viewer-Country: US" -H "CloudFront-Is-Desktop-Viewer: true")

measure() { # measure off|on -> prints the marginal instructions per request
  local log=$1 conf="$RUN/shield-$1.toml" out="$RUN/cg-$1"
  local access=false level='"warn,mtls_shield::app=info,mtls_shield::cli=info"'
  [ "$log" = on ] && { access=true; level='"info"'; }
  cat > "$conf" <<EOF
[listener]
address = "127.0.0.1:$PORT"
certificate = "pki/server.pem"
private_key = "pki/server.key"
[client_auth]
truststore = "pki/truststore.pem"
[upstream]
url = "http://127.0.0.1:$PORT_UP"
[log]
level = $level
access_log = $access
[runtime]
worker_threads = 1
EOF
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.%p" \
    "$BIN" run --config "$conf" 2>"$RUN/shield-$log.log" & local vg=$!
  PIDS+=("$vg")
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  local load=("$OHA" --no-tui -c "$CONNS" "${PROTO_ARGS[@]}" "${HEADERS[@]}"
    --cacert "$RUN/pki/ca.pem" --cert "$RUN/pki/client.pem" --key "$RUN/pki/client.key"
    "https://localhost:$PORT/")
  "${load[@]}" -n 200 >/dev/null                  # warm-up: handshakes, pools, caches
  callgrind_control -i on "$vg" >/dev/null 2>&1
  callgrind_control -z "$vg" >/dev/null 2>&1
  "${load[@]}" -n "$N1" >/dev/null
  callgrind_control -d "n1" "$vg" >/dev/null 2>&1
  "${load[@]}" -n "$((N2 - N1))" >/dev/null
  callgrind_control -d "n2" "$vg" >/dev/null 2>&1
  kill "$vg"; wait "$vg" 2>/dev/null || true
  local files=("$out".*.*)
  # Each dump holds the events since the previous one; sum the totals per dump.
  local i1 i2
  i1=$(grep -h '^summary:\|^totals:' "${files[0]}" | head -1 | awk '{print $2}')
  i2=$(grep -h '^summary:\|^totals:' "${files[1]}" | head -1 | awk '{print $2}')
  # Each dump is one fresh oha run: its 8 handshakes (H) plus its requests (n r):
  # I1 = H + N1 r and I2 = H + (N2 - N1) r, so r = (I2 - I1) / (N2 - 2 N1) leaves H out.
  python3 - "$log" "$N1" "$N2" "$i1" "$i2" "$CONNS" <<'PY'
import sys
log, n1, n2, i1, i2, conns = sys.argv[1], *map(float, sys.argv[2:])
r = (i2 - i1) / (n2 - 2 * n1)
h = i1 - n1 * r
print(f"{__import__('os').environ['PROTO']} access log {log}: {r:,.0f} instructions per request "
      f"(handshakes: {h / conns:,.0f} each; raw {i2 / (n2 - n1):,.0f} per request of the second run)")
PY
  if [ "${ANNOTATE:-0}" = 1 ] && command -v callgrind_annotate >/dev/null; then
    callgrind_annotate --inclusive=no "${files[1]}" 2>/dev/null | sed -n '1,40p'
  fi
}

for log in ${LOGS:-off on}; do measure "$log"; done
