#!/usr/bin/env bash
# bench/compare.sh — mtls-shield vs nginx vs HAProxy as mTLS-verifying reverse proxies,
# side by side on one machine (issue 6). One command; see bench/README.md.
#
#   bench/compare.sh                 # full run: 3 rounds, 10 s per load phase
#   QUICK=1 bench/compare.sh         # smoke run: 1 round, short phases, fewer idle conns
#
# Environment knobs (defaults in brackets, QUICK=1 values after the slash):
#   ROUNDS [3/1]  DURATION seconds per load phase [10/3]  IDLE_CONNS [2000/300]
#   DL_COUNT 100 MiB downloads per round [5/1]  HS_CONNS concurrency of the handshake
#   phase [32]  TARGETS ["mtls-shield nginx haproxy"]  MTLS_SHIELD_BIN (use this binary,
#   never build)  SKIP_BUILD=1 (use target/release/mtls-shield as it is)
#   PROXY_CPU [1]  LOAD_CPU [0]  BASE_PORT [18080]  RESULTS_DIR [bench/results]
#   MAX_OTHER_PCT [5] % of a CPU used by processes other than the proxy, the upstream and the
#   load tool that marks a phase disturbed  RETRY_DISTURBED [1] re-runs of a disturbed load phase  QUIET_WAIT [60] seconds
#   to wait for an idle machine before each target and each re-run
#   SHIELD_CLIENT_AUTH_EXTRA [""] TOML lines added to mtls-shield's [client_auth], e.g.
#   'verified_chain_cache = 0' to measure every handshake verified in full
#
# Every server binds 127.0.0.1 only; every load phase is bounded in time.
set -euo pipefail
# The whole script is one { ... } block: bash parses it completely before running, so editing
# this file cannot disturb a run in progress.
{

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
LIB="$BENCH_DIR/lib/benchlib.py"
TOOLS="$BENCH_DIR/.tools"
RUN="$BENCH_DIR/.run"
RESULTS="${RESULTS_DIR:-$BENCH_DIR/results}"
PY="${PYTHON:-python3}"

QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
  ROUNDS="${ROUNDS:-1}"; DURATION="${DURATION:-3}"; IDLE_CONNS="${IDLE_CONNS:-300}"; DL_COUNT="${DL_COUNT:-1}"
else
  ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10}"; IDLE_CONNS="${IDLE_CONNS:-2000}"; DL_COUNT="${DL_COUNT:-5}"
fi
KA_CONNS=32
HS_CONNS="${HS_CONNS:-32}"
H2_CONNS=4
H2_STREAMS=25
TARGET_LIST="${TARGETS:-mtls-shield nginx haproxy}"
MAX_OTHER_PCT="${MAX_OTHER_PCT:-5}"      # % of a CPU used by other processes that marks a phase disturbed
RETRY_DISTURBED="${RETRY_DISTURBED:-1}"  # re-run a disturbed load phase this many times
QUIET_WAIT="${QUIET_WAIT:-60}"           # before each target and retry, wait up to this long for an idle machine
PROXY_CPU="${PROXY_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
BASE_PORT="${BASE_PORT:-18080}"
PORT_UP=$BASE_PORT
declare -A PORT=([mtls-shield]=$((BASE_PORT + 363)) [nginx]=$((BASE_PORT + 364)) [haproxy]=$((BASE_PORT + 365)))
BIG_MIB=100
BODY='{"ok":true,"service":"bench-upstream","note":"small fixed JSON body"}'

log() { printf '[compare %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ process bookkeeping
STARTED_PIDS=()
cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 0.3
  for pid in "${STARTED_PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL
  local pid=$1 i
  if ! kill -TERM "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; fi
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${STARTED_PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
}

# ------------------------------------------------------------------ 1. tools
SUDO=""
[[ $EUID -ne 0 ]] && SUDO="sudo"
export PATH="$PATH:/usr/sbin:/sbin"
need_apt=()
command -v nginx   >/dev/null || need_apt+=(nginx)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v ab      >/dev/null || need_apt+=(apache2-utils)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl    >/dev/null || need_apt+=(curl)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v "$PY"   >/dev/null || need_apt+=(python3)
if ((${#need_apt[@]})); then
  log "installing with apt-get: ${need_apt[*]}"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive nice -n 19 $SUDO apt-get install -y -q "${need_apt[@]}" >&2
fi

OHA="$(command -v oha || true)"
[[ -z "$OHA" && -x "$TOOLS/bin/oha" ]] && OHA="$TOOLS/bin/oha"
if [[ -z "$OHA" ]]; then
  log "installing oha with cargo into $TOOLS (cached; takes a few minutes once)"
  mkdir -p "$TOOLS"
  CARGO_TARGET_DIR="$TOOLS/cargo-target" nice -n 19 cargo install oha --locked --root "$TOOLS" >&2
  rm -rf "$TOOLS/cargo-target"
  OHA="$TOOLS/bin/oha"
fi

# ------------------------------------------------------------------ 2. mtls-shield binary
want_shield=0
[[ " $TARGET_LIST " == *" mtls-shield "* ]] && want_shield=1
if [[ -n "${MTLS_SHIELD_BIN:-}" ]]; then
  BIN="$MTLS_SHIELD_BIN"
else
  BIN="$REPO_DIR/target/release/mtls-shield"
  if ((want_shield)) && [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    if [[ ! -x "$BIN" ]] || [[ -n "$(find "$REPO_DIR/src" "$REPO_DIR/Cargo.toml" "$REPO_DIR/Cargo.lock" -newer "$BIN" -print -quit 2>/dev/null)" ]]; then
      log "building mtls-shield (cargo build --release)"
      (cd "$REPO_DIR" && nice -n 19 cargo build --release >&2)
    fi
  fi
fi
((want_shield)) && { [[ -x "$BIN" ]] || die "no mtls-shield binary at $BIN"; }

# ------------------------------------------------------------------ 3. CPUs
if ! taskset -c "$PROXY_CPU" true 2>/dev/null || ! taskset -c "$LOAD_CPU" true 2>/dev/null; then
  log "WARNING: cannot pin to CPUs $PROXY_CPU/$LOAD_CPU; everything runs on CPU 0"
  PROXY_CPU=0; LOAD_CPU=0
fi
ON_PROXY=(taskset -c "$PROXY_CPU")
ON_LOAD=(taskset -c "$LOAD_CPU")
# Room for IDLE_CONNS client sockets (and the proxies inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) > IDLE_CONNS * 2 + 200 )) || log "WARNING: fd limit $(ulimit -n) is low for $IDLE_CONNS idle connections"

# ------------------------------------------------------------------ 4. work dir + PKI
rm -rf "$RUN"   # the last run's configs, PKI and logs stay here until the next run
mkdir -p "$RUN" "$RESULTS"
if ((want_shield)); then
  # Run a copy: a rebuild during the run must not change the binary between rounds.
  cp "$BIN" "$RUN/mtls-shield.bin"
  BIN_SRC="$BIN"; BIN="$RUN/mtls-shield.bin"
  # What the binary was built from, as far as can be told: HEAD now, and whether the sources
  # changed after the build (then the binary is not HEAD's code).
  GIT_AT_START="$(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo "no git")"
  if [[ -n "$(find "$REPO_DIR/src" "$REPO_DIR/Cargo.toml" "$REPO_DIR/Cargo.lock" -newer "$BIN_SRC" -print -quit 2>/dev/null)" ]]; then
    SRC_STATE="sources changed after this build"
  else
    SRC_STATE="no source newer than the binary"
  fi
fi
PKI="$RUN/pki"
mkdir -p "$PKI"
log "making the PKI in $PKI"
(
  cd "$PKI"
  # RSA-4096 root.
  openssl genrsa -out ca.key 4096 2>/dev/null
  openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/O=mtls-shield bench/CN=bench root CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
  # RSA-2048 client certificate with clientAuth: the usual openssl recipe for CloudFront/ALB mTLS.
  openssl genrsa -out client.key 2048 2>/dev/null
  openssl req -new -key client.key -subj "/O=mtls-shield bench/CN=bench-client" -out client.csr
  cat > client.ext <<'EOF'
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -sha256 \
    -extfile client.ext -out client.pem 2>/dev/null
  # P-256 server certificate for 127.0.0.1 and localhost.
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
  openssl req -new -key server.key -subj "/O=mtls-shield bench/CN=localhost" -out server.csr
  cat > server.ext <<'EOF'
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -sha256 \
    -extfile server.ext -out server.pem 2>/dev/null
  cat server.pem server.key > server-with-key.pem   # HAProxy's crt format
  openssl verify -CAfile ca.pem client.pem server.pem >/dev/null
)
CURL_TLS=(--cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key")

# ------------------------------------------------------------------ 5. configs
mk_upstream() {
  local d="$RUN/upstream"; mkdir -p "$d/www" "$d/tmp"
  head -c $((BIG_MIB * 1024 * 1024)) /dev/zero > "$d/www/big.bin"
  cat > "$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/tmp/client; proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi; uwsgi_temp_path $d/tmp/uwsgi; scgi_temp_path $d/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:$PORT_UP;
    location = /big { alias $d/www/big.bin; default_type application/octet-stream; }
    location / { default_type application/json; return 200 '$BODY'; }
  }
}
EOF
}

mk_nginx() {
  local d="$RUN/nginx"; mkdir -p "$d/tmp"
  cat > "$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $d/tmp/client; proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi; uwsgi_temp_path $d/tmp/uwsgi; scgi_temp_path $d/tmp/scgi;
  upstream app {
    server 127.0.0.1:$PORT_UP;
    keepalive 32;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]} ssl http2;
    ssl_certificate $PKI/server.pem;
    ssl_certificate_key $PKI/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate $PKI/ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_cache off;
    ssl_session_tickets off;
    # Equal footing with the other two: no per-connection request cap, idle conns kept.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Client-Cert "Hash=\$ssl_client_fingerprint;Subject=\"\$ssl_client_s_dn\"";
      # Stream large bodies like the other two instead of spooling them to disk.
      proxy_max_temp_file_size 0;
    }
  }
}
EOF
}

# HAProxy wants about 2 fds per connection and refuses to start if it cannot have them.
HAPROXY_MAXCONN=$(( ( $(ulimit -n) - 200 ) / 2 ))
(( HAPROXY_MAXCONN > 20000 )) && HAPROXY_MAXCONN=20000
mk_haproxy() {
  local d="$RUN/haproxy"; mkdir -p "$d"
  cat > "$d/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $HAPROXY_MAXCONN
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 300s
  timeout server 60s
  timeout http-request 300s
  timeout http-keep-alive 300s
  maxconn $HAPROXY_MAXCONN

frontend fe
  bind 127.0.0.1:${PORT[haproxy]} ssl crt $PKI/server-with-key.pem ca-file $PKI/ca.pem verify required ssl-min-ver TLSv1.2 no-tls-tickets alpn h2,http/1.1
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Client-Cert "Hash=%[ssl_c_sha1,hex];Subject=\"%[ssl_c_s_dn]\""
  default_backend app

backend app
  http-reuse always
  server app 127.0.0.1:$PORT_UP
EOF
}

mk_shield() {
  local d="$RUN/mtls-shield"; mkdir -p "$d"
  cp "$PKI/server.pem" "$PKI/server.key" "$d/"
  cp "$PKI/ca.pem" "$d/truststore.pem"
  cat > "$d/shield.toml" <<EOF
[listener]
address = "127.0.0.1:${PORT[mtls-shield]}"
certificate = "server.pem"
private_key = "server.key"
session_resumption = false
# Idle connections must survive the RSS phase, like nginx/haproxy above.
header_read_timeout = "300s"
idle_timeout = "300s"
max_connections = 20000

[client_auth]
truststore = "truststore.pem"
${SHIELD_CLIENT_AUTH_EXTRA:-}

[upstream]
url = "http://127.0.0.1:$PORT_UP"

[log]
# warn, but keep the one-line "listening" startup message (info, from the cli module)
level = "warn,mtls_shield::cli=info"
access_log = false

[runtime]
worker_threads = 1
EOF
}

mk_upstream; mk_nginx; mk_haproxy; mk_shield

wait_port() { # wait_port PORT SECONDS
  local i
  for i in $(seq $(( $2 * 10 ))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------ 6. upstream
log "starting upstream nginx on 127.0.0.1:$PORT_UP (CPU $LOAD_CPU)"
"${ON_LOAD[@]}" nginx -p "$RUN/upstream" -c "$RUN/upstream/nginx.conf" -e "$RUN/upstream/error.log" \
  >"$RUN/upstream/stdout.log" 2>&1 &
UP_PID=$!; STARTED_PIDS+=("$UP_PID")
wait_port "$PORT_UP" 10 || die "upstream did not start: $(cat "$RUN/upstream/error.log")"
[[ "$(curl -s "http://127.0.0.1:$PORT_UP/")" == "$BODY" ]] || die "upstream returns the wrong body"
UP_BASE_RPS="$("${ON_LOAD[@]}" ab -k -q -c "$KA_CONNS" -t 3 -n 10000000 "http://127.0.0.1:$PORT_UP/" 2>/dev/null \
  | awk '/Requests per second/ {print $4}')"
log "upstream alone (ab -k -c $KA_CONNS, same CPU as the load tool): ${UP_BASE_RPS:-?} req/s"

# ------------------------------------------------------------------ 7. targets
declare -A TPID
start_target() { # start_target NAME -> TPID[NAME]
  local t=$1 d="$RUN/$1" pid
  case "$t" in
    mtls-shield)
      : > "$d/stderr.log"
      "${ON_PROXY[@]}" "$BIN" run --config "$d/shield.toml" >"$d/stdout.log" 2>"$d/stderr.log" &
      pid=$! ;;
    nginx)
      "${ON_PROXY[@]}" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d/stdout.log" 2>"$d/stderr.log" &
      pid=$! ;;
    haproxy)
      "${ON_PROXY[@]}" haproxy -f "$d/haproxy.cfg" -db >"$d/stdout.log" 2>"$d/stderr.log" &
      pid=$! ;;
  esac
  STARTED_PIDS+=("$pid"); TPID[$t]=$pid
  if ! wait_port "${PORT[$t]}" 15; then
    log "$t did not start listening on ${PORT[$t]}; its output:"; tail -n 30 "$d"/*.log >&2 || true
    return 1
  fi
  if [[ "$t" == mtls-shield ]]; then
    local i; for i in $(seq 50); do grep -q listening "$d/stderr.log" "$d/stdout.log" && break; sleep 0.1; done
    grep -q listening "$d/stderr.log" "$d/stdout.log" || log "WARNING: mtls-shield printed no 'listening' line"
  fi
  kill -0 "$pid" 2>/dev/null || { log "$t exited"; tail -n 30 "$d"/*.log >&2; return 1; }
}
stop_target() { stop_pid "${TPID[$1]}"; }

RAW="$RUN/raw.jsonl"; : > "$RAW"
emit() { # emit TARGET ROUND METRIC VALUE
  printf '{"target":"%s","round":%s,"metric":"%s","value":%s}\n' "$1" "$2" "$3" "${4:-null}" >> "$RAW"
}
note() { # note TARGET ROUND TEXT
  log "NOTE $1 round $2: $3"
  "$PY" -c 'import json,sys; print(json.dumps({"kind":"note","target":sys.argv[1],"round":sys.argv[2],"text":sys.argv[3]}))' \
    "$1" "$2" "$3" >> "$RAW"
}
cpu_of() { "$PY" "$LIB" cpu "$1"; }
user_cpu_of() { "$PY" "$LIB" cpu-user "$1"; }
rss_of() { "$PY" "$LIB" rss "$1"; }
fmt0() { [[ "$1" == null ]] && echo "-" || printf '%.0f' "$1"; }
fmt3() { [[ "$1" == null ]] && echo "-" || printf '%.3f' "$1"; }
calc() { "$PY" -c "import sys; v=$1; print('null' if v is None else repr(float(v)))" 2>/dev/null || echo null; }

sanity() { # sanity TARGET ROUND -> 0 if the proxy serves the body with a cert and refuses without
  local t=$1 r=$2 url="https://127.0.0.1:${PORT[$t]}/" body code
  body="$(curl -s --max-time 5 "${CURL_TLS[@]}" "$url" || true)"
  [[ "$body" == "$BODY" ]] || { note "$t" "$r" "with a client cert: unexpected response '${body:0:200}'"; return 1; }
  code="$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.pem" "$url" 2>/dev/null || true)"
  [[ "$code" == 200 ]] && { note "$t" "$r" "answered 200 WITHOUT a client certificate"; return 1; }
  # Resumption must be off: a second handshake offering the first one's session (TLS 1.2
  # session ID or ticket, TLS 1.3 ticket) must be a full handshake again.
  local sess="$RUN/$t/sess.pem" v
  for v in -tls1_2 -tls1_3; do
    rm -f "$sess"
    echo | timeout 5 openssl s_client "$v" -connect "127.0.0.1:${PORT[$t]}" -CAfile "$PKI/ca.pem" \
      -cert "$PKI/client.pem" -key "$PKI/client.key" -sess_out "$sess" >/dev/null 2>&1 || true
    [[ -s "$sess" ]] || continue
    if echo | timeout 5 openssl s_client "$v" -connect "127.0.0.1:${PORT[$t]}" -CAfile "$PKI/ca.pem" \
        -cert "$PKI/client.pem" -key "$PKI/client.key" -sess_in "$sess" 2>/dev/null | grep -q '^Reused'; then
      note "$t" "$r" "TLS session resumption (${v#-}) happened although it should be off"
    fi
  done
  return 0
}

run_counted() { # run_counted OUT CMD... -> CMD's stdout in OUT; prints the CPU seconds CMD used
  local out=$1; shift
  ( "$@" > "$out" 2>"$out.err" || true
    # This subshell has reaped CMD (and CMD its children): its cutime+cstime is their CPU.
    awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($14 + $15) / hz}' "/proc/$BASHPID/stat" )
}
oha_run() { # oha_run OUTFILE ARGS... -> OHA_SUMMARY (one JSON line), OHA_CPU (oha's CPU s)
  local out=$1; shift
  OHA_CPU=$(run_counted "$out" timeout $((DURATION + 30)) "${ON_LOAD[@]}" "$OHA" --no-tui \
    --output-format json -z "${DURATION}s" --worker-threads 1 \
    --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key" "$@")
  if [[ -s "$out" ]]; then OHA_SUMMARY=$("$PY" "$LIB" oha "$out"); else OHA_SUMMARY='{}'; fi
}
jget() { "$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); v=d.get(sys.argv[2]); print("null" if v is None else v)' "$1" "$2"; }

cpu_busy_s() { # cpu_busy_s CPU -> user+nice+system+steal seconds of that CPU since boot
  # irq/softirq ticks are left out: the kernel's loopback work for the proxy's own sends lands
  # there, and without CONFIG_IRQ_TIME_ACCOUNTING it is in neither column of the proxy.
  awk -v c="cpu$1" -v hz="$(getconf CLK_TCK)" '$1 == c {print ($2+$3+$4+$9)/hz}' /proc/stat
}
now_s() { date +%s.%N; }
all_busy_s() { awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" {print ($2+$3+$4+$9)/hz}' /proc/stat; }
# Around a measured phase: how busy the proxy was, and whether anything else ran on its CPU.
phase_begin() { # phase_begin PID
  PH_C0=$(cpu_of "$1"); PH_U0=$(cpu_of "$UP_PID"); PH_USER0=$(user_cpu_of "$1")
  PH_B0=$(cpu_busy_s "$PROXY_CPU"); PH_A0=$(all_busy_s); PH_T0=$(now_s)
}
# phase_end PID CLIENT_CPU_S -> PH_CPU (proxy CPU s), PH_USER (its user-space part), PH_BUSY (proxy, % of one CPU),
#   PH_OTHER (CPU used by anything but the proxy, the upstream and the client, % of one CPU),
#   PH_OTHER_PROXY_CPU (anything but the proxy on the proxy's CPU, %)
phase_end() {
  local c1 b1 a1 t1 u1 wall
  b1=$(cpu_busy_s "$PROXY_CPU"); a1=$(all_busy_s); t1=$(now_s)
  c1=$(cpu_of "$1"); u1=$(cpu_of "$UP_PID")
  PH_CPU=$(calc "$c1 - $PH_C0")
  PH_USER=$(calc "$(user_cpu_of "$1") - $PH_USER0")
  wall=$(calc "$t1 - $PH_T0")
  PH_BUSY=$(calc "($c1 - $PH_C0) / $wall * 100")
  PH_OTHER_PROXY_CPU=$(calc "max(0.0, ($b1 - $PH_B0) - ($c1 - $PH_C0)) / $wall * 100")
  PH_OTHER=$(calc "max(0.0, ($a1 - $PH_A0) - ($c1 - $PH_C0) - ($u1 - $PH_U0) - ${2:-0}) / $wall * 100")
  PH_CLIENT=$(calc "${2:-0} / $wall * 100")
}
wait_quiet() { # wait (at most QUIET_WAIT s) for 3 s in a row of an idle machine (< 10% of a CPU)
  local start b0 b1 busy quiet=0 said=0
  start=$(date +%s)
  while :; do
    b0=$(all_busy_s); sleep 1; b1=$(all_busy_s)
    busy=$(calc "($b1 - $b0) * 100")
    if awk -v b="$busy" 'BEGIN {exit !(b < 10)}'; then quiet=$((quiet + 1)); else quiet=0; fi
    ((quiet >= 3)) && return 0
    if (( $(date +%s) - start >= QUIET_WAIT )); then
      log "  the machine is still busy (${busy%.*}% of a CPU used by other processes); going on"
      return 0
    fi
    if ((quiet == 0 && said == 0)); then
      log "  waiting up to ${QUIET_WAIT}s for other processes to quieten (${busy%.*}% of a CPU busy)"; said=1
    fi
  done
}
phase_disturbed() { [[ "$PH_OTHER" != null ]] && awk -v o="$PH_OTHER" -v m="$MAX_OTHER_PCT" 'BEGIN {exit !(o > m)}'; }
phase_record() { # phase_record TARGET ROUND PREFIX
  emit "$1" "$2" "${3}_proxy_busy_pct" "$PH_BUSY"
  emit "$1" "$2" "${3}_client_busy_pct" "$PH_CLIENT"
  emit "$1" "$2" "${3}_other_pct" "$PH_OTHER"
  emit "$1" "$2" "${3}_other_on_proxy_cpu_pct" "$PH_OTHER_PROXY_CPU"
  if phase_disturbed; then
    note "$1" "$2" "$3: other processes used $(printf '%.0f' "$PH_OTHER")% of a CPU during the phase ($(printf '%.0f' "$PH_OTHER_PROXY_CPU")% of the proxy's); this sample is disturbed"
  fi
  return 0
}

load_phase() { # load_phase TARGET ROUND NAME -- OHA ARGS...   sets LP_N LP_RPS LP_P50 LP_P99 PH_CPU
  local t=$1 r=$2 name=$3; shift 4
  local pid=${TPID[$t]} s out="$RUN/$t/oha-$name-r$r.json" attempt
  for attempt in $(seq $((RETRY_DISTURBED + 1))); do
    phase_begin "$pid"
    oha_run "$out" "$@"
    phase_end "$pid" "$OHA_CPU"
    s=$OHA_SUMMARY
    phase_disturbed || break
    if ((attempt <= RETRY_DISTURBED)); then
      log "  $name: disturbed by other processes ($(printf '%.0f' "$PH_OTHER")% of a CPU); running it again"
      wait_quiet
    fi
  done
  phase_record "$t" "$r" "$name"
  local errs non2xx
  LP_N=$(jget "$s" responses_2xx); LP_RPS=$(jget "$s" rps); LP_P50=$(jget "$s" p50_ms); LP_P99=$(jget "$s" p99_ms)
  errs=$(jget "$s" errors); non2xx=$(jget "$s" responses_non2xx)
  if [[ "$LP_N" == null || "$LP_N" == 0 ]]; then
    LP_N=null
    note "$t" "$r" "$name: no successful responses; oha said: $(head -c 400 "$out.err" 2>/dev/null) $(echo "$s" | head -c 400)"
  elif [[ "$errs" != null ]] && (( non2xx > 0 || errs > 200 )); then
    # oha aborts in-flight requests at the deadline (one per connection/stream): not counted.
    note "$t" "$r" "$name: $errs errors, $non2xx non-2xx ($(jget "$s" error_kinds))"
  fi
  return 0
}
per_unit_us() { calc "None if '$2' == 'null' else ($1) * 1e6 / $2"; } # per_unit_us CPU_S COUNT

measure_idle() { # measure_idle TARGET ROUND
  local t=$1 r=$2 pid=${TPID[$t]} d="$RUN/$t" base after ctl out hp line opened alive
  sleep 1
  base=$(rss_of "$pid")
  ctl="$d/idle.ctl"; out="$d/idle-r$r.out"; rm -f "$ctl"; mkfifo "$ctl"
  "${ON_LOAD[@]}" "$PY" "$LIB" idle --port "${PORT[$t]}" --count "$IDLE_CONNS" --ca "$PKI/ca.pem" \
    --cert "$PKI/client.pem" --key "$PKI/client.key" --settle 2 --open-max 120 --hold-max 60 \
    < "$ctl" > "$out" 2>"$out.err" &
  hp=$!; STARTED_PIDS+=("$hp")
  exec 7>"$ctl"
  local i; for i in $(seq 1500); do grep -q '"ready"' "$out" 2>/dev/null && break; kill -0 "$hp" 2>/dev/null || break; sleep 0.1; done
  line=$(grep '"ready"' "$out" || true)
  if [[ -z "$line" ]]; then
    note "$t" "$r" "idle: the holder did not get ready: $(head -c 400 "$out.err")"
    exec 7>&-; stop_pid "$hp"; emit "$t" "$r" idle_rss_kib_per_conn null; return
  fi
  after=$(rss_of "$pid")
  echo >&7; exec 7>&-
  for i in $(seq 100); do kill -0 "$hp" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$hp"
  opened=$(jget "$line" opened); alive=$(jget "$line" alive)
  ((opened < IDLE_CONNS)) && note "$t" "$r" "idle: only $opened of $IDLE_CONNS connections opened ($(jget "$line" first_error))"
  ((alive < opened)) && note "$t" "$r" "idle: $alive of $opened connections still open when measured"
  if ((alive > 0)); then
    emit "$t" "$r" idle_rss_kib_per_conn "$(calc "($after - $base) / $alive")"
  else
    emit "$t" "$r" idle_rss_kib_per_conn null
  fi
  emit "$t" "$r" idle_rss_base_kib "$base"
  log "  idle: $alive conns, RSS $base -> $after KiB"
  sleep 1  # let the proxy reap the closed connections
}

measure_download() { # measure_download TARGET ROUND
  local t=$1 r=$2 pid=${TPID[$t]} url="https://127.0.0.1:${PORT[$t]}/big" args=() i w
  for i in $(seq "$DL_COUNT"); do args+=(-o /dev/null "$url"); done
  local ccpu attempt
  for attempt in $(seq $((RETRY_DISTURBED + 1))); do
    phase_begin "$pid"
    ccpu=$(run_counted "$RUN/$t/curl-r$r.out" timeout $((60 * DL_COUNT)) "${ON_LOAD[@]}" curl -s --http1.1 \
          "${CURL_TLS[@]}" -w '%{http_code} %{size_download} %{time_total}\n' "${args[@]}")
    phase_end "$pid" "$ccpu"
    phase_disturbed || break
    if ((attempt <= RETRY_DISTURBED)); then
      log "  dl: disturbed by other processes ($(printf '%.0f' "$PH_OTHER")% of a CPU); running it again"
      wait_quiet
    fi
  done
  phase_record "$t" "$r" dl
  w=$(cat "$RUN/$t/curl-r$r.out")
  local bytes secs bad
  bytes=$(awk '{s+=$2} END {print s+0}' <<<"$w")
  secs=$(awk '{s+=$3} END {print s+0}' <<<"$w")
  bad=$(awk '$1 != 200' <<<"$w" | wc -l)
  if (( bad > 0 )) || [[ "$bytes" != $((DL_COUNT * BIG_MIB * 1024 * 1024)) ]]; then
    note "$t" "$r" "download: $bad non-200, $bytes bytes received (curl: ${w//$'\n'/; })"
    emit "$t" "$r" dl_mb_s null; emit "$t" "$r" dl_cpu_s_per_gb null; return
  fi
  emit "$t" "$r" dl_mb_s "$(calc "$bytes / 1e6 / $secs")"
  emit "$t" "$r" dl_cpu_s_per_gb "$(calc "$PH_CPU / ($bytes / 1e9)")"
  log "  download: $DL_COUNT x $BIG_MIB MiB in ${secs}s, proxy CPU ${PH_CPU}s"
}

run_target() { # run_target TARGET ROUND
  local t=$1 r=$2 u="https://127.0.0.1:${PORT[$1]}/"
  log "round $r/$ROUNDS: $t on 127.0.0.1:${PORT[$t]} (CPU $PROXY_CPU)"
  wait_quiet
  if ! start_target "$t"; then note "$t" "$r" "did not start (logs in bench/.run/$t)"; stop_target "$t" 2>/dev/null || true; return; fi
  if ! sanity "$t" "$r"; then stop_target "$t"; return; fi
  # Warm-up, unmeasured: upstream pool, lazy init, page cache.
  timeout 20 "${ON_LOAD[@]}" "$OHA" --no-tui -z 1s -c "$KA_CONNS" --http-version 1.1 --worker-threads 1 \
    --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key" "$u" >/dev/null 2>&1 || true

  measure_idle "$t" "$r"

  load_phase "$t" "$r" ka -- -c "$KA_CONNS" --http-version 1.1 "$u"
  emit "$t" "$r" ka_rps "$LP_RPS"; emit "$t" "$r" ka_p50_ms "$LP_P50"; emit "$t" "$r" ka_p99_ms "$LP_P99"
  emit "$t" "$r" ka_cpu_us_per_req "$(per_unit_us "$PH_CPU" "$LP_N")"
  emit "$t" "$r" ka_user_us_per_req "$(per_unit_us "$PH_USER" "$LP_N")"
  log "  keep-alive: $(fmt0 "$LP_RPS") req/s, p50 $(fmt3 "$LP_P50") ms, p99 $(fmt3 "$LP_P99") ms, $LP_N requests, proxy CPU ${PH_CPU}s"

  load_phase "$t" "$r" hs -- -c "$HS_CONNS" --http-version 1.1 --disable-keepalive "$u"
  emit "$t" "$r" hs_cps "$LP_RPS"; emit "$t" "$r" hs_p99_ms "$LP_P99"
  emit "$t" "$r" hs_cpu_us_per_hs "$(per_unit_us "$PH_CPU" "$LP_N")"
  emit "$t" "$r" hs_user_us_per_hs "$(per_unit_us "$PH_USER" "$LP_N")"
  log "  handshakes: $(fmt0 "$LP_RPS") conn/s, $LP_N handshakes, proxy CPU ${PH_CPU}s"

  load_phase "$t" "$r" h2 -- -c "$H2_CONNS" -p "$H2_STREAMS" --http2 "$u"
  emit "$t" "$r" h2_rps "$LP_RPS"; emit "$t" "$r" h2_p50_ms "$LP_P50"; emit "$t" "$r" h2_p99_ms "$LP_P99"
  emit "$t" "$r" h2_cpu_us_per_req "$(per_unit_us "$PH_CPU" "$LP_N")"
  log "  h2: $(fmt0 "$LP_RPS") req/s, $LP_N requests, proxy CPU ${PH_CPU}s"

  measure_download "$t" "$r"

  kill -0 "${TPID[$t]}" 2>/dev/null || note "$t" "$r" "the proxy died during the round (logs in bench/.run/$t)"
  stop_target "$t"
}

for r in $(seq "$ROUNDS"); do
  for t in $TARGET_LIST; do run_target "$t" "$r"; done
done

# ------------------------------------------------------------------ 8. report
shield_version="n/a"
if ((want_shield)); then
  shield_version="$("$BIN" --version 2>/dev/null | head -n1 || true)"
  shield_version="${shield_version:-mtls-shield} (binary built $(date -u -r "$BIN_SRC" "+%F %H:%M UTC"); git $GIT_AT_START at the start of the run; $SRC_STATE)"
fi
"$PY" - "$RUN/meta.json" <<EOF
import json, os, platform, sys, datetime
def first(cmd):
    import subprocess
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception:
        return "?"
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
osname = "?"
try:
    for line in open("/etc/os-release"):
        if line.startswith("PRETTY_NAME="):
            osname = line.split("=", 1)[1].strip().strip('"')
except OSError:
    pass
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "cpu_model": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "os": osname,
    "versions": {
        "mtls-shield": "$shield_version",
        "nginx": first("nginx -v").replace("nginx version: ", ""),
        "haproxy": first("haproxy -v").replace("HAProxy version ", "").split(" - ")[0],
        "openssl": first("openssl version"),
        "oha": first("'$OHA' --version"),
        "rustc": first("rustc --version"),
    },
    "settings": {
        "rounds": $ROUNDS, "duration_s": $DURATION, "keepalive_conns": $KA_CONNS,
        "handshake_conns": $HS_CONNS, "h2": "$H2_CONNS x $H2_STREAMS", "idle_conns": $IDLE_CONNS,
        "downloads": "$DL_COUNT x $BIG_MIB MiB", "quick": $QUICK,
        "upstream_alone_rps": "${UP_BASE_RPS:-?}",
        "mtls_shield_client_auth_extra": "${SHIELD_CLIENT_AUTH_EXTRA:-none (defaults: verified_chain_cache = 1024)}",
    },
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF
"$PY" "$LIB" report --raw "$RAW" --meta "$RUN/meta.json" \
  --out-md "$RESULTS/latest.md" --out-json "$RESULTS/latest.json"
cp "$RAW" "$RESULTS/latest-raw.jsonl"
log "wrote $RESULTS/latest.md and latest.json"
echo
cat "$RESULTS/latest.md"
exit 0
}
