#!/usr/bin/env bash
# bench/compare.sh — mtls-shield vs nginx vs HAProxy as mTLS-verifying reverse proxies,
# side by side on one machine. One command; see bench/README.md.
#
#   bench/compare.sh                 # full run: 5 rounds, 10 s per load phase, 20,000 idle conns
#   QUICK=1 bench/compare.sh         # smoke run: 1 round, short phases, fewer idle conns
#   SHIELD_BASE_BIN=/path/to/old/mtls-shield bench/compare.sh   # + a "before" shield build
#
# Environment knobs (defaults in brackets, QUICK=1 values after the slash):
#   ROUNDS [5/1]  DURATION seconds per load phase [10/3]  IDLE_CONNS [20000/300]
#   DL_COUNT 100 MiB downloads per round [5/1]  HS_CONNS concurrency of the TLS 1.3
#   handshake phase [32]  HS12_PROCS client processes of the TLS 1.2 handshake phase [8]
#   TARGETS ["mtls-shield nginx haproxy", plus mtls-shield-base after mtls-shield when
#   SHIELD_BASE_BIN is set]  MTLS_SHIELD_BIN (use this binary, never build)
#   SKIP_BUILD=1 (use target/release/mtls-shield as it is)  SHIELD_BASE_BIN (a second
#   mtls-shield binary, target "mtls-shield-base", same config, its own port)
#   PROXY_CPU [1]  LOAD_CPU [0]  BASE_PORT [18080]  RESULTS_DIR [bench/results]
#   MAX_OTHER_PCT [5] % of a CPU used by processes other than the proxy, the upstream, the
#   syslog sink and the load tool that marks a phase disturbed  RETRY_DISTURBED [1] re-runs of
#   a disturbed load phase  QUIET_WAIT [60] seconds to wait for an idle machine before each
#   proxy start and each re-run
#   IDLE_TARGETS [all targets] the targets whose idle (RSS) phase runs
#   VIEWER_PHASE [1] the shield's viewer phase (KAV_VIEWERS [100] viewer chains, KAV_PROCS [8]
#   client processes); 0 skips it
#   SHIELD_CLIENT_AUTH_EXTRA [""] TOML lines added to mtls-shield's [client_auth], e.g.
#   'verified_chain_cache = 0' to measure every handshake verified in full
#   FD_MARGIN [200] file descriptors a proxy needs beyond IDLE_CONNS (listener, upstream pool,
#   logs); the hard open-file limit must be at least IDLE_CONNS + FD_MARGIN
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
  ROUNDS="${ROUNDS:-5}"; DURATION="${DURATION:-10}"; IDLE_CONNS="${IDLE_CONNS:-20000}"; DL_COUNT="${DL_COUNT:-5}"
fi
KA_CONNS=32
HS_CONNS="${HS_CONNS:-32}"
HS12_PROCS="${HS12_PROCS:-8}"
H2_CONNS=4
H2_STREAMS=25
# TLS 1.2 phase: the suite CloudFront negotiates with an origin that has a P-256 certificate.
HS12_CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256
if [[ -n "${TARGETS:-}" ]]; then
  TARGET_LIST="$TARGETS"
elif [[ -n "${SHIELD_BASE_BIN:-}" ]]; then
  TARGET_LIST="mtls-shield mtls-shield-base nginx haproxy"
else
  TARGET_LIST="mtls-shield nginx haproxy"
fi
FD_MARGIN="${FD_MARGIN:-200}"
MAX_OTHER_PCT="${MAX_OTHER_PCT:-5}"      # % of a CPU used by other processes that marks a phase disturbed
RETRY_DISTURBED="${RETRY_DISTURBED:-1}"  # re-run a disturbed load phase this many times
# Targets whose idle phase runs (the longest phase: ~75 s per round at 20,000 connections).
# Default: every target; e.g. IDLE_TARGETS="mtls-shield nginx haproxy" skips the base build's.
IDLE_TARGETS="${IDLE_TARGETS:-$TARGET_LIST}"
QUIET_WAIT="${QUIET_WAIT:-60}"           # before each target and retry, wait up to this long for an idle machine
PROXY_CPU="${PROXY_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
BASE_PORT="${BASE_PORT:-18080}"
PORT_UP=$BASE_PORT
declare -A PORT=([mtls-shield]=$((BASE_PORT + 363)) [nginx]=$((BASE_PORT + 364)) [haproxy]=$((BASE_PORT + 365))
                 [mtls-shield-base]=$((BASE_PORT + 366)))
SYSLOG_PORT=$((BASE_PORT + 367))   # HAProxy's access log goes here (UDP, 127.0.0.1)
BIG_MIB=100
BODY='{"ok":true,"service":"bench-upstream","note":"small fixed JSON body"}'

log() { printf '[compare %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
is_shield() { [[ "$1" == mtls-shield || "$1" == mtls-shield-base ]]; }

for t in $TARGET_LIST; do
  [[ -n "${PORT[$t]:-}" ]] || die "unknown target '$t' (known: mtls-shield mtls-shield-base nginx haproxy)"
done
[[ " $TARGET_LIST " == *" mtls-shield-base "* && -z "${SHIELD_BASE_BIN:-}" ]] \
  && die "target mtls-shield-base needs SHIELD_BASE_BIN=/path/to/an/mtls-shield/binary"

# Room for IDLE_CONNS connections: each proxy holds them all in one process (the idle client
# spreads its side over several processes), plus FD_MARGIN for the listener, the upstream
# pool and the logs. The proxies inherit this limit. Checked first: a run that cannot hold
# its idle connections should fail now, not after the installs.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_NEED=$((IDLE_CONNS + FD_MARGIN))
if (( $(ulimit -n) < FD_NEED )); then
  die "IDLE_CONNS=$IDLE_CONNS needs an open-file limit of at least $FD_NEED per proxy process, but the hard limit here is $(ulimit -Hn) (soft now $(ulimit -n)). Raise the hard limit (as root with CAP_SYS_RESOURCE: 'ulimit -Hn 65536' in the shell that starts this script, or 'prlimit --nofile=65536:65536 --pid \$\$'; or LimitNOFILE= in a systemd unit), or run with IDLE_CONNS=$(( $(ulimit -Hn) - FD_MARGIN )) or fewer."
fi

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
want_base=0
[[ " $TARGET_LIST " == *" mtls-shield-base "* ]] && want_base=1
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
((want_base)) && { [[ -x "$SHIELD_BASE_BIN" ]] || die "SHIELD_BASE_BIN=$SHIELD_BASE_BIN is not an executable file"; }

# ------------------------------------------------------------------ 3. CPUs
if ! taskset -c "$PROXY_CPU" true 2>/dev/null || ! taskset -c "$LOAD_CPU" true 2>/dev/null; then
  log "WARNING: cannot pin to CPUs $PROXY_CPU/$LOAD_CPU; everything runs on CPU 0"
  PROXY_CPU=0; LOAD_CPU=0
fi
ON_PROXY=(taskset -c "$PROXY_CPU")
ON_LOAD=(taskset -c "$LOAD_CPU")
FD_LIMIT=$(ulimit -n)

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
declare -A SBIN=([mtls-shield]="${BIN:-}")
if ((want_base)); then
  cp "$SHIELD_BASE_BIN" "$RUN/mtls-shield-base.bin"
  SBIN[mtls-shield-base]="$RUN/mtls-shield-base.bin"
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

# Viewer certificates (the shield's viewer phase): a P-256 root and issuing CA as a device
# fleet's private CA makes them, and KAV_VIEWERS device certificates. viewers.txt holds each
# device's headers as CloudFront's passthrough mode forwards them (RFC 9440 byte sequences),
# one device per line, tab-separated.
KAV_VIEWERS="${KAV_VIEWERS:-100}"
KAV_PROCS="${KAV_PROCS:-8}"
if ((want_shield)); then
  log "making $KAV_VIEWERS viewer certificates"
  (
    cd "$PKI"
    mkdir -p viewers
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out viewer-root.key
    openssl req -x509 -new -key viewer-root.key -sha256 -days 3650 -subj "/O=fleet/CN=viewer root CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out viewer-root.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out viewer-int.key
    openssl req -new -key viewer-int.key -subj "/O=fleet/CN=viewer issuing CA" -out viewer-int.csr
    printf 'basicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n' > viewer-int.ext
    openssl x509 -req -in viewer-int.csr -CA viewer-root.pem -CAkey viewer-root.key -CAcreateserial \
      -days 1000 -sha256 -extfile viewer-int.ext -out viewer-int.pem 2>/dev/null
    int_b64="$(openssl x509 -in viewer-int.pem -outform DER | base64 -w0)"
    : > viewers.txt
    for i in $(seq "$KAV_VIEWERS"); do
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "viewers/$i.key"
      openssl req -new -key "viewers/$i.key" -subj "/O=fleet/CN=device-$i" -out "viewers/$i.csr"
      printf 'basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\nsubjectAltName = URI:spiffe://fleet.example/device-%s\n' "$i" > "viewers/$i.ext"
      openssl x509 -req -in "viewers/$i.csr" -CA viewer-int.pem -CAkey viewer-int.key -CAcreateserial \
        -days 365 -sha256 -extfile "viewers/$i.ext" -out "viewers/$i.pem" 2>/dev/null
      printf 'Client-Cert: :%s:\tClient-Cert-Chain: :%s:\n' \
        "$(openssl x509 -in "viewers/$i.pem" -outform DER | base64 -w0)" "$int_b64" >> viewers.txt
    done
    openssl verify -CAfile viewer-root.pem -untrusted viewer-int.pem "viewers/1.pem" >/dev/null
  )
  EDGE_FP="$(openssl x509 -in "$PKI/client.pem" -outform DER | sha256sum | cut -c1-64)"
fi

# ------------------------------------------------------------------ 5. configs
# Each proxy gets two configs that differ only in logging: NAME.conf with the access log off
# (every phase but one) and NAME-log.conf with it on at the proxy's usual default (the
# access-log phase).
mk_upstream() {
  local d="$RUN/upstream"; mkdir -p "$d/www" "$d/tmp"
  head -c $((BIG_MIB * 1024 * 1024)) /dev/zero > "$d/www/big.bin"
  head -c 65536 /dev/urandom > "$d/www/64k.bin"
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
    location = /64k { alias $d/www/64k.bin; default_type application/octet-stream; }
    location / { default_type application/json; return 200 '$BODY'; }
  }
}
EOF
}

NGINX_WORKER_CONNS=$(( IDLE_CONNS + 1024 ))
(( NGINX_WORKER_CONNS < 8192 )) && NGINX_WORKER_CONNS=8192
mk_nginx() { # mk_nginx off|log
  local d="$RUN/nginx" conf="$RUN/nginx/nginx.conf" alog="access_log off;"; mkdir -p "$d/tmp"
  if [[ "$1" == log ]]; then
    conf="$d/nginx-log.conf"
    alog="access_log $d/access.log combined;   # nginx's default: unbuffered, combined format"
  fi
  cat > "$conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections $NGINX_WORKER_CONNS; }
http {
  $alog
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
      # Append the peer to an inbound X-Forwarded-For (CloudFront sends one), like the others.
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Client-Cert "Hash=\$ssl_client_fingerprint;Subject=\"\$ssl_client_s_dn\"";
      # Stream large bodies like the other two instead of spooling them to disk.
      proxy_max_temp_file_size 0;
    }
  }
}
EOF
}

# HAProxy reserves about 2 fds per connection (client + server side) and refuses to start
# when maxconn does not fit the fd limit ("strict-limits", on by default). Idle client
# connections use one fd each, so: maxconn for IDLE_CONNS, ulimit-n = the limit we have,
# and "no strict-limits" (it then prints an ALERT about maxsock at start, and runs).
HAPROXY_MAXCONN=$(( IDLE_CONNS + FD_MARGIN ))
mk_haproxy() { # mk_haproxy off|log
  local d="$RUN/haproxy" conf="$RUN/haproxy/haproxy.cfg" glog="" dlog=""; mkdir -p "$d"
  if [[ "$1" == log ]]; then
    conf="$d/haproxy-log.cfg"
    glog="  log 127.0.0.1:$SYSLOG_PORT local0"
    dlog="  log global
  option httplog"
  fi
  cat > "$conf" <<EOF
global
  nbthread 1
  maxconn $HAPROXY_MAXCONN
  ulimit-n $FD_LIMIT
  no strict-limits
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
$glog

defaults
  mode http
$dlog
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

SHIELD_MAX_CONNS=$(( IDLE_CONNS + 5000 ))
(( SHIELD_MAX_CONNS < 25000 )) && SHIELD_MAX_CONNS=25000
mk_shield() { # mk_shield TARGET off|log|viewer|viewer-cold   (mtls-shield and mtls-shield-base: same config but the port)
  local t=$1 d="$RUN/$1" conf="$RUN/$1/shield.toml" level='"warn,mtls_shield::cli=info,mtls_shield::app=info"' alog=false; mkdir -p "$d"
  if [[ "$2" == log ]]; then
    conf="$d/shield-log.toml"; level='"info"'; alog=true
  fi
  [[ "$2" == viewer* ]] && conf="$d/shield-$2.toml"
  cp "$PKI/server.pem" "$PKI/server.key" "$d/"
  cp "$PKI/ca.pem" "$d/truststore.pem"
  cat > "$conf" <<EOF
[listener]
address = "127.0.0.1:${PORT[$t]}"
certificate = "server.pem"
private_key = "server.key"
session_resumption = false
# Idle connections must survive the RSS phase, like nginx/haproxy above.
header_read_timeout = "300s"
idle_timeout = "300s"
# The default (10000) is below the idle phase's connection count.
max_connections = $SHIELD_MAX_CONNS

[client_auth]
truststore = "truststore.pem"
${SHIELD_CLIENT_AUTH_EXTRA:-}

[upstream]
url = "http://127.0.0.1:$PORT_UP"

[log]
# log off: warn, but keep the one-line "listening" startup message (info, from the app
# module; the cli module in builds before the layering change). log on: the defaults, info with the access log, on stderr (redirected to a file).
level = $level
access_log = $alog

[runtime]
worker_threads = 1
EOF
  if [[ "$2" == viewer* ]]; then
    # The viewer phase: the bench client is the edge (CloudFront); requests without viewer
    # headers pass (required = false), so the plain and viewer requests share one process.
    cp "$PKI/viewer-root.pem" "$d/viewer-ca.pem"
    local memo=""
    [[ "$2" == viewer-cold ]] && memo="verified_chain_cache = 0"
    cat >> "$conf" <<EOF

[admin]
address = "127.0.0.1:$(( ${PORT[$t]} + 1000 ))"

[viewer]
truststore = "viewer-ca.pem"
required = false
$memo

[viewer.edges]
fingerprints_sha256 = ["$EDGE_FP"]
EOF
  fi
}

mk_upstream
for t in $TARGET_LIST; do
  case "$t" in
    nginx) mk_nginx off; mk_nginx log ;;
    haproxy) mk_haproxy off; mk_haproxy log ;;
    mtls-shield|mtls-shield-base)
      mk_shield "$t" off; mk_shield "$t" log; mk_shield "$t" viewer; mk_shield "$t" viewer-cold ;;
  esac
done

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

# HAProxy logs by syslog only: a UDP sink on 127.0.0.1 (the load CPU) that appends each
# datagram to a file. Started once; its CPU is left out of "other processes".
SINK_PID=""
SINK_LOG="$RUN/haproxy/syslog.log"
if [[ " $TARGET_LIST " == *" haproxy "* ]]; then
  : > "$SINK_LOG"
  "${ON_LOAD[@]}" "$PY" "$LIB" syslog-sink --port "$SYSLOG_PORT" --out "$SINK_LOG" \
    >"$RUN/haproxy/syslog-sink.out" 2>&1 &
  SINK_PID=$!; STARTED_PIDS+=("$SINK_PID")
  for i in $(seq 50); do grep -q ready "$RUN/haproxy/syslog-sink.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$RUN/haproxy/syslog-sink.out" || die "the syslog sink did not start: $(cat "$RUN/haproxy/syslog-sink.out")"
  log "syslog sink for HAProxy's access log on udp 127.0.0.1:$SYSLOG_PORT -> $SINK_LOG"
fi

# CloudFront-shaped request headers for the keep-alive phases (one set per run: oha sends the
# same headers with every request).
CF_VIA="1.1 $(openssl rand -hex 16).cloudfront.net (CloudFront)"
CF_ID="$(openssl rand -base64 40 | tr '+/' '-_')"   # 56 characters, like X-Amz-Cf-Id
CF_HEADERS=(-H "User-Agent: Amazon CloudFront" -H "Via: $CF_VIA" -H "X-Amz-Cf-Id: $CF_ID"
  -H "X-Forwarded-For: 203.0.113.7" -H "Accept-Encoding: gzip"
  -H "CloudFront-Viewer-Country: US" -H "CloudFront-Is-Desktop-Viewer: true"
  -H "CloudFront-Viewer-Address: 203.0.113.7:443")

# ------------------------------------------------------------------ 7. targets
declare -A TPID
declare -A ALOG   # TARGET -> the file its access log goes to in the log-on instance
start_target() { # start_target NAME [off|log] -> TPID[NAME]
  local t=$1 mode=${2:-off} d="$RUN/$1" pid err
  err="$d/stderr.log"
  case "$t" in
    mtls-shield|mtls-shield-base)
      local conf="$d/shield.toml"
      # log on: the access log is the shield's stderr (its default log), into a file
      if [[ "$mode" == log ]]; then conf="$d/shield-log.toml"; err="$d/access.log"; ALOG[$t]="$err"; fi
      [[ "$mode" == viewer* ]] && conf="$d/shield-$mode.toml"
      : > "$err"
      "${ON_PROXY[@]}" "${SBIN[$t]}" run --config "$conf" >"$d/stdout.log" 2>"$err" &
      pid=$! ;;
    nginx)
      local conf="$d/nginx.conf"
      if [[ "$mode" == log ]]; then conf="$d/nginx-log.conf"; ALOG[$t]="$d/access.log"; : > "$d/access.log"; err="$d/stderr-log.log"; fi
      "${ON_PROXY[@]}" nginx -p "$d" -c "$conf" -e "$d/error.log" >"$d/stdout.log" 2>"$err" &
      pid=$! ;;
    haproxy)
      local conf="$d/haproxy.cfg"
      if [[ "$mode" == log ]]; then conf="$d/haproxy-log.cfg"; ALOG[$t]="$SINK_LOG"; err="$d/stderr-log.log"; fi
      "${ON_PROXY[@]}" haproxy -f "$conf" -db >"$d/stdout.log" 2>"$err" &
      pid=$! ;;
  esac
  STARTED_PIDS+=("$pid"); TPID[$t]=$pid
  if ! wait_port "${PORT[$t]}" 15; then
    log "$t did not start listening on ${PORT[$t]}; its output:"; tail -n 30 "$d"/*.log >&2 || true
    return 1
  fi
  if is_shield "$t"; then
    local i; for i in $(seq 50); do grep -q listening "$err" "$d/stdout.log" && break; sleep 0.1; done
    grep -q listening "$err" "$d/stdout.log" || log "WARNING: $t printed no 'listening' line"
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

tls_record() { # tls_record TARGET CHECK PROTOCOL CIPHER OK
  "$PY" -c 'import json,sys; a=sys.argv; print(json.dumps({"kind":"tls","target":a[1],"check":a[2],"protocol":a[3],"cipher":a[4],"ok":a[5]=="1"}))' \
    "$@" >> "$RAW"
}
tls_parse() { # tls_parse S_CLIENT_OUTPUT -> proto ciph (the caller's locals)
  # "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384" is always printed; the SSL-Session
  # block with "Protocol :" and "Cipher :" only when the server sent a session (ticket).
  proto="$(sed -n 's/^New, \(TLSv[0-9.]*\), Cipher is \(.*\)$/\1/p' <<<"$1" | head -n1)"
  ciph="$(sed -n 's/^New, \(TLSv[0-9.]*\), Cipher is \(.*\)$/\2/p' <<<"$1" | head -n1)"
  [[ -n "$proto" ]] || proto="$(awk '/^ *Protocol *:/ {print $3; exit}' <<<"$1")"
  [[ -n "$ciph" ]] || ciph="$(awk '/^ *Cipher *:/ {print $3; exit}' <<<"$1")"
  return 0
}
tls_check() { # tls_check TARGET ROUND: what each handshake phase negotiates, seen by openssl s_client
  local t=$1 r=$2 out proto ciph ok
  # TLS 1.2 phase: the client offers only TLS 1.2 and only the CloudFront suite.
  out="$(echo | timeout 5 openssl s_client -tls1_2 -cipher "$HS12_CIPHER" -connect "127.0.0.1:${PORT[$t]}" \
    -CAfile "$PKI/ca.pem" -cert "$PKI/client.pem" -key "$PKI/client.key" 2>&1 || true)"
  tls_parse "$out"
  ok=0; [[ "$proto" == TLSv1.2 && "$ciph" == "$HS12_CIPHER" ]] && ok=1
  tls_record "$t" "TLS 1.2 phase (s_client -tls1_2 -cipher $HS12_CIPHER)" "${proto:-none}" "${ciph:-none}" "$ok"
  ((ok)) || note "$t" "$r" "TLS 1.2 check: negotiated '${proto:-none}' '${ciph:-none}', not TLSv1.2 $HS12_CIPHER"
  log "  TLS 1.2 check: ${proto:-none} ${ciph:-none}"
  # TLS 1.3 phase: oha (rustls) offers TLS 1.3 and 1.2 and has no option to force a version;
  # a client offering both must get TLS 1.3 from the server.
  out="$(echo | timeout 5 openssl s_client -connect "127.0.0.1:${PORT[$t]}" \
    -CAfile "$PKI/ca.pem" -cert "$PKI/client.pem" -key "$PKI/client.key" 2>&1 || true)"
  tls_parse "$out"
  ok=0; [[ "$proto" == TLSv1.3 ]] && ok=1
  tls_record "$t" "TLS 1.3 phase (s_client offering 1.2 and 1.3, like oha)" "${proto:-none}" "${ciph:-none}" "$ok"
  ((ok)) || note "$t" "$r" "TLS 1.3 check: a client offering 1.2 and 1.3 got '${proto:-none}'"
  log "  TLS 1.3 check: ${proto:-none} ${ciph:-none}"
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
ka_py_run() { # ka_py_run OUTFILE ARGS... -> the same as oha_run, from lib/benchlib.py ka
  local out=$1; shift
  OHA_CPU=$(run_counted "$out" timeout $((DURATION + 30)) "${ON_LOAD[@]}" "$PY" "$LIB" ka \
    --duration "$DURATION" --ca "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key" "$@")
  if [[ -s "$out" ]]; then OHA_SUMMARY=$(tail -n 1 "$out"); else OHA_SUMMARY='{}'; fi
}
hs_py_run() { # hs_py_run OUTFILE ARGS... -> the same as oha_run, from lib/benchlib.py hs
  local out=$1; shift
  OHA_CPU=$(run_counted "$out" timeout $((DURATION + 30)) "${ON_LOAD[@]}" "$PY" "$LIB" hs \
    --duration "$DURATION" --ca "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key" "$@")
  if [[ -s "$out" ]]; then OHA_SUMMARY=$(tail -n 1 "$out"); else OHA_SUMMARY='{}'; fi
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
  PH_S0=0; [[ -n "$SINK_PID" ]] && PH_S0=$(cpu_of "$SINK_PID")
  PH_B0=$(cpu_busy_s "$PROXY_CPU"); PH_A0=$(all_busy_s); PH_T0=$(now_s)
}
# phase_end PID CLIENT_CPU_S -> PH_CPU (proxy CPU s), PH_USER (its user-space part), PH_BUSY (proxy, % of one CPU),
#   PH_OTHER (CPU used by anything but the proxy, the upstream and the client, % of one CPU),
#   PH_OTHER_PROXY_CPU (anything but the proxy on the proxy's CPU, %)
phase_end() {
  local c1 b1 a1 t1 u1 s1=0 wall
  b1=$(cpu_busy_s "$PROXY_CPU"); a1=$(all_busy_s); t1=$(now_s)
  c1=$(cpu_of "$1"); u1=$(cpu_of "$UP_PID")
  [[ -n "$SINK_PID" ]] && s1=$(cpu_of "$SINK_PID")
  PH_CPU=$(calc "$c1 - $PH_C0")
  PH_USER=$(calc "$(user_cpu_of "$1") - $PH_USER0")
  wall=$(calc "$t1 - $PH_T0")
  PH_BUSY=$(calc "($c1 - $PH_C0) / $wall * 100")
  PH_OTHER_PROXY_CPU=$(calc "max(0.0, ($b1 - $PH_B0) - ($c1 - $PH_C0)) / $wall * 100")
  PH_OTHER=$(calc "max(0.0, ($a1 - $PH_A0) - ($c1 - $PH_C0) - ($u1 - $PH_U0) - ($s1 - $PH_S0) - ${2:-0}) / $wall * 100")
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

LP_PRE=""; LP_POST=""   # optional functions run before/after each attempt of a load phase
load_phase() { # load_phase TARGET ROUND NAME oha|hs ARGS...   sets LP_N LP_RPS LP_P50 LP_P99 PH_CPU PH_USER
  local t=$1 r=$2 name=$3 runner=$4; shift 4
  local pid=${TPID[$t]} s out="$RUN/$t/$runner-$name-r$r.json" attempt err_ok=200
  # oha aborts its in-flight requests at the deadline (one per connection/stream) and counts
  # them as errors; the Python client finishes each connection it started: any error counts.
  [[ "$runner" == hs || "$runner" == ka ]] && err_ok=0
  for attempt in $(seq $((RETRY_DISTURBED + 1))); do
    [[ -n "$LP_PRE" ]] && "$LP_PRE" "$t"
    phase_begin "$pid"
    case "$runner" in
      oha) oha_run "$out" "$@" ;;
      hs) hs_py_run "$out" "$@" ;;
      ka) ka_py_run "$out" "$@" ;;
    esac
    phase_end "$pid" "$OHA_CPU"
    s=$OHA_SUMMARY
    [[ -n "$LP_POST" ]] && "$LP_POST" "$t" "$(jget "$s" responses_2xx)"
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
    note "$t" "$r" "$name: no successful responses; the client said: $(head -c 400 "$out.err" 2>/dev/null) $(echo "$s" | head -c 400)"
  elif [[ "$errs" != null ]] && (( non2xx > 0 || errs > err_ok )); then
    note "$t" "$r" "$name: $errs errors, $non2xx non-2xx ($(jget "$s" error_kinds))"
  fi
  return 0
}
per_unit_us() { calc "None if '$2' == 'null' else ($1) * 1e6 / $2"; } # per_unit_us CPU_S COUNT

IDLE_OPEN_MAX=$(( IDLE_CONNS / 30 ))           # s allowed to open them all (250-400/s seen; slower on a busy machine)
(( IDLE_OPEN_MAX < 120 )) && IDLE_OPEN_MAX=120
IDLE_PER_PROC=4000                               # connections per holder process (fds, and parallel opening)
measure_idle() { # measure_idle TARGET ROUND
  local t=$1 r=$2 pid=${TPID[$t]} d="$RUN/$t" base after ctl out hp line opened alive c0 c1
  sleep 1
  base=$(rss_of "$pid")
  ctl="$d/idle.ctl"; out="$d/idle-r$r.out"; rm -f "$ctl"; mkfifo "$ctl"
  "${ON_LOAD[@]}" "$PY" "$LIB" idle --port "${PORT[$t]}" --count "$IDLE_CONNS" --ca "$PKI/ca.pem" \
    --cert "$PKI/client.pem" --key "$PKI/client.key" --settle 2 --open-max "$IDLE_OPEN_MAX" \
    --hold-max 120 --per-proc "$IDLE_PER_PROC" < "$ctl" > "$out" 2>"$out.err" &
  hp=$!; STARTED_PIDS+=("$hp")
  exec 7>"$ctl"
  local i; for i in $(seq $(( (IDLE_OPEN_MAX + 30) * 10 ))); do
    grep -q '"ready"' "$out" 2>/dev/null && break; kill -0 "$hp" 2>/dev/null || break; sleep 0.1
  done
  line=$(grep '"ready"' "$out" || true)
  if [[ -z "$line" ]]; then
    note "$t" "$r" "idle: the holder did not get ready: $(head -c 400 "$out.err")"
    exec 7>&-; stop_pid "$hp"; emit "$t" "$r" idle_rss_kib_per_conn null; return
  fi
  # Every handshake the client finished must be finished on the proxy's side too (in TLS 1.3
  # the server reads the client's certificate after the client is done): wait until the
  # proxy has been idle for a second (at most 30 s), then read its RSS.
  for i in $(seq 30); do
    c0=$(cpu_of "$pid"); sleep 1; c1=$(cpu_of "$pid")
    awk -v a="$c0" -v b="$c1" 'BEGIN {exit !(b - a < 0.02)}' && break
  done
  after=$(rss_of "$pid")
  echo >&7; exec 7>&-
  for i in $(seq 300); do kill -0 "$hp" 2>/dev/null || break; sleep 0.1; done
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
  emit "$t" "$r" idle_rss_after_kib "$after"
  emit "$t" "$r" idle_conns_alive "$alive"
  log "  idle: $alive conns open ($(jget "$line" procs) client processes), RSS $base -> $after KiB"
  # let the proxy reap the closed connections
  for i in $(seq 30); do
    c0=$(cpu_of "$pid"); sleep 1; c1=$(cpu_of "$pid")
    awk -v a="$c0" -v b="$c1" 'BEGIN {exit !(b - a < 0.02)}' && break
  done
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

warm_up() { # warm_up TARGET: unmeasured keep-alive load (upstream pool, lazy init, page cache)
  timeout 20 "${ON_LOAD[@]}" "$OHA" --no-tui -z 1s -c "$KA_CONNS" --http-version 1.1 --worker-threads 1 \
    --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key" "${CF_HEADERS[@]}" \
    "https://127.0.0.1:${PORT[$1]}/" >/dev/null 2>&1 || true
}

file_lines() { [[ -f "$1" ]] && wc -l < "$1" || echo 0; }
file_bytes() { [[ -f "$1" ]] && stat -c %s "$1" || echo 0; }
# Around each attempt of the access-log phase: the log must grow by about one line per request.
log_pre() { sleep 0.5; AL_L0=$(file_lines "${ALOG[$1]}"); AL_B0=$(file_bytes "${ALOG[$1]}"); }
log_post() { # log_post TARGET RESPONSES
  sleep 0.5   # the syslog sink flushes after 0.2 s without a datagram
  AL_L1=$(file_lines "${ALOG[$1]}"); AL_B1=$(file_bytes "${ALOG[$1]}"); AL_N=$2
}

# The shield's viewer phase: keep-alive requests from the edge, first without viewer headers,
# then each with the next of KAV_VIEWERS viewer chains, on the same process (the ratio of the
# two is the cost of judging a viewer on every request); then, memo off, every request a full
# verification (the first-sight cost). Same Python client for all three.
measure_viewers() { # measure_viewers TARGET ROUND
  local t=$1 r=$2 u="https://127.0.0.1:${PORT[$1]}/" admin="http://127.0.0.1:$(( ${PORT[$1]} + 1000 ))"
  local plain_cpu viewer_cpu cold_cpu v0 v1 code
  wait_quiet
  if ! start_target "$t" viewer; then note "$t" "$r" "did not start with [viewer] (logs in bench/.run/$t)"; return; fi
  v0=$(curl -s "$admin/metrics" | awk '/^mtls_shield_viewer_verifications_total/ {print $2}')
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${CURL_TLS[@]}" \
    -H "$(head -n1 "$PKI/viewers.txt" | cut -f1)" -H "$(head -n1 "$PKI/viewers.txt" | cut -f2)" "$u" || true)"
  [[ "$code" == 200 ]] || { note "$t" "$r" "viewer phase: a good viewer got '$code'"; stop_target "$t"; return; }
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${CURL_TLS[@]}" -H "Client-Cert: :AAAA:" "$u" || true)"
  [[ "$code" == 403 ]] || { note "$t" "$r" "viewer phase: a garbage viewer got '$code', not 403"; stop_target "$t"; return; }
  load_phase "$t" "$r" kav_plain ka --port "${PORT[$t]}" --procs "$KAV_PROCS"
  plain_cpu=$(per_unit_us "$PH_CPU" "$LP_N")
  emit "$t" "$r" kav_plain_cpu_us_per_req "$plain_cpu"
  load_phase "$t" "$r" kav ka --port "${PORT[$t]}" --procs "$KAV_PROCS" --headers "$PKI/viewers.txt"
  v1=$(curl -s "$admin/metrics" | awk '/^mtls_shield_viewer_verifications_total/ {print $2}')
  viewer_cpu=$(per_unit_us "$PH_CPU" "$LP_N")
  emit "$t" "$r" kav_cpu_us_per_req "$viewer_cpu"
  emit "$t" "$r" kav_verifications "$(calc "None if '$v0' == '' or '$v1' == '' else $v1 - $v0")"
  emit "$t" "$r" kav_ratio "$(calc "None if 'null' in ('$viewer_cpu', '$plain_cpu') else $viewer_cpu / $plain_cpu")"
  log "  viewer phase: plain $(fmt3 "$plain_cpu") µs/req, with a viewer chain $(fmt3 "$viewer_cpu") µs/req, $LP_N requests"
  stop_target "$t"
  wait_quiet
  if ! start_target "$t" viewer-cold; then note "$t" "$r" "did not start with the viewer memo off"; return; fi
  load_phase "$t" "$r" kav_cold ka --port "${PORT[$t]}" --procs "$KAV_PROCS" --headers "$PKI/viewers.txt"
  cold_cpu=$(per_unit_us "$PH_CPU" "$LP_N")
  emit "$t" "$r" kav_cold_cpu_us_per_req "$cold_cpu"
  emit "$t" "$r" kav_first_sight_us "$(calc "None if 'null' in ('$cold_cpu', '$plain_cpu') else $cold_cpu - $plain_cpu")"
  log "  viewer phase, memo off: $(fmt3 "$cold_cpu") µs/req (each request a full verification), $LP_N requests"
  stop_target "$t"
}

run_target() { # run_target TARGET ROUND
  local t=$1 r=$2 u="https://127.0.0.1:${PORT[$1]}/" ka_cpu
  log "round $r/$ROUNDS: $t on 127.0.0.1:${PORT[$t]} (CPU $PROXY_CPU)"
  wait_quiet
  if ! start_target "$t" off; then note "$t" "$r" "did not start (logs in bench/.run/$t)"; stop_target "$t" 2>/dev/null || true; return; fi
  # At rest: started, nothing served yet.
  sleep 1
  emit "$t" "$r" rss_rest_kib "$(rss_of "${TPID[$t]}")"
  if ! sanity "$t" "$r"; then stop_target "$t"; return; fi
  ((r == 1)) && tls_check "$t" "$r"
  warm_up "$t"

  if [[ " $IDLE_TARGETS " == *" $t "* ]]; then measure_idle "$t" "$r"; fi

  load_phase "$t" "$r" hs oha -c "$HS_CONNS" --http-version 1.1 --disable-keepalive "$u"
  emit "$t" "$r" hs_cps "$LP_RPS"; emit "$t" "$r" hs_p99_ms "$LP_P99"
  emit "$t" "$r" hs_cpu_us_per_hs "$(per_unit_us "$PH_CPU" "$LP_N")"
  emit "$t" "$r" hs_user_us_per_hs "$(per_unit_us "$PH_USER" "$LP_N")"
  log "  handshakes TLS 1.3: $(fmt0 "$LP_RPS") conn/s, $LP_N handshakes, proxy CPU ${PH_CPU}s"

  load_phase "$t" "$r" hs12 hs --port "${PORT[$t]}" --procs "$HS12_PROCS" --tls 1.2 --cipher "$HS12_CIPHER"
  emit "$t" "$r" hs12_cps "$LP_RPS"; emit "$t" "$r" hs12_p99_ms "$LP_P99"
  emit "$t" "$r" hs12_cpu_us_per_hs "$(per_unit_us "$PH_CPU" "$LP_N")"
  emit "$t" "$r" hs12_user_us_per_hs "$(per_unit_us "$PH_USER" "$LP_N")"
  log "  handshakes TLS 1.2 $HS12_CIPHER: $(fmt0 "$LP_RPS") conn/s, $LP_N handshakes, proxy CPU ${PH_CPU}s (negotiated: $(jget "$OHA_SUMMARY" negotiated))"

  load_phase "$t" "$r" h2 oha -c "$H2_CONNS" -p "$H2_STREAMS" --http2 "$u"
  emit "$t" "$r" h2_rps "$LP_RPS"; emit "$t" "$r" h2_p50_ms "$LP_P50"; emit "$t" "$r" h2_p99_ms "$LP_P99"
  emit "$t" "$r" h2_cpu_us_per_req "$(per_unit_us "$PH_CPU" "$LP_N")"
  log "  h2: $(fmt0 "$LP_RPS") req/s, $LP_N requests, proxy CPU ${PH_CPU}s"

  measure_download "$t" "$r"

  load_phase "$t" "$r" ka64k oha -c "$KA_CONNS" --http-version 1.1 "${CF_HEADERS[@]}" "${u}64k"
  emit "$t" "$r" ka64k_rps "$LP_RPS"
  emit "$t" "$r" ka64k_mb_s "$(calc "None if '$LP_RPS' == 'null' else $LP_RPS * 65536 / 1e6")"
  emit "$t" "$r" ka64k_cpu_us_per_req "$(per_unit_us "$PH_CPU" "$LP_N")"
  log "  keep-alive 64 KiB: $(fmt0 "$LP_RPS") req/s, $LP_N requests, proxy CPU ${PH_CPU}s"

  # Log off, last: the access-log phase below follows it within seconds, so that the
  # log-on minus log-off difference is not a drift of the machine's speed.
  load_phase "$t" "$r" ka oha -c "$KA_CONNS" --http-version 1.1 "${CF_HEADERS[@]}" "$u"
  emit "$t" "$r" ka_rps "$LP_RPS"; emit "$t" "$r" ka_p50_ms "$LP_P50"; emit "$t" "$r" ka_p99_ms "$LP_P99"
  ka_cpu=$(per_unit_us "$PH_CPU" "$LP_N")
  emit "$t" "$r" ka_cpu_us_per_req "$ka_cpu"
  emit "$t" "$r" ka_user_us_per_req "$(per_unit_us "$PH_USER" "$LP_N")"
  log "  keep-alive: $(fmt0 "$LP_RPS") req/s, p50 $(fmt3 "$LP_P50") ms, p99 $(fmt3 "$LP_P99") ms, $LP_N requests, proxy CPU ${PH_CPU}s"

  kill -0 "${TPID[$t]}" 2>/dev/null || note "$t" "$r" "the proxy died during the round (logs in bench/.run/$t)"
  stop_target "$t"

  # Access log on: the same proxy restarted with its log-on config, the same keep-alive load.
  wait_quiet
  if ! start_target "$t" log; then note "$t" "$r" "did not start with its access log on (logs in bench/.run/$t)"; stop_target "$t" 2>/dev/null || true; return; fi
  local body
  body="$(curl -s --max-time 5 "${CURL_TLS[@]}" "$u" || true)"
  [[ "$body" == "$BODY" ]] || { note "$t" "$r" "log on: unexpected response '${body:0:200}'"; stop_target "$t"; return; }
  warm_up "$t"
  LP_PRE=log_pre; LP_POST=log_post
  load_phase "$t" "$r" ka_log oha -c "$KA_CONNS" --http-version 1.1 "${CF_HEADERS[@]}" "$u"
  LP_PRE=""; LP_POST=""
  kill -0 "${TPID[$t]}" 2>/dev/null || note "$t" "$r" "the proxy died during the access-log phase (logs in bench/.run/$t)"
  stop_target "$t"
  local grew=$((AL_L1 - AL_L0)) bytes=$((AL_B1 - AL_B0))
  if ((grew <= 0 || bytes <= 0)); then
    die "access-log phase of $t: its log ${ALOG[$t]} did not grow during the measured phase ($AL_L0 -> $AL_L1 lines, $AL_B0 -> $AL_B1 bytes); the log-on figure would be a broken measurement"
  fi
  emit "$t" "$r" ka_log_rps "$LP_RPS"; emit "$t" "$r" ka_log_p99_ms "$LP_P99"
  local log_cpu
  log_cpu=$(per_unit_us "$PH_CPU" "$LP_N")
  emit "$t" "$r" ka_log_cpu_us_per_req "$log_cpu"
  emit "$t" "$r" ka_log_user_us_per_req "$(per_unit_us "$PH_USER" "$LP_N")"
  emit "$t" "$r" ka_log_cost_us_per_req "$(calc "None if 'null' in ('$log_cpu', '$ka_cpu') else $log_cpu - $ka_cpu")"
  if [[ "$AL_N" != null && "$AL_N" -gt 0 ]]; then
    emit "$t" "$r" ka_log_lines_per_req "$(calc "$grew / $AL_N")"
    emit "$t" "$r" ka_log_bytes_per_req "$(calc "$bytes / $AL_N")"
    if awk -v g="$grew" -v n="$AL_N" 'BEGIN {exit !(g < 0.9 * n || g > 1.1 * n + 100)}'; then
      note "$t" "$r" "ka_log: $grew access-log lines for $AL_N requests"
    fi
  fi
  log "  keep-alive, access log on: $(fmt0 "$LP_RPS") req/s, $LP_N requests, proxy CPU ${PH_CPU}s; log +$grew lines, +$bytes bytes"
  # Keep a sample of the log; drop the rest (~100 bytes per request add up over a run).
  head -n 5 "${ALOG[$t]}" > "$RUN/$t/access-sample-r$r.log" 2>/dev/null || true
  tail -n 5 "${ALOG[$t]}" >> "$RUN/$t/access-sample-r$r.log" 2>/dev/null || true
  : > "${ALOG[$t]}"
  # The base build may predate [viewer]: the phase runs for the shield under test only.
  if [[ "$t" == mtls-shield && "${VIEWER_PHASE:-1}" == 1 ]]; then measure_viewers "$t" "$r"; fi
}

for r in $(seq "$ROUNDS"); do
  for t in $TARGET_LIST; do run_target "$t" "$r"; done
done

# ------------------------------------------------------------------ 8. report
shield_version="n/a"
if ((want_shield)); then
  shield_version="$("$BIN" --version 2>/dev/null | head -n1 || true)"
  shield_version="${shield_version:-mtls-shield} ($BIN_SRC, sha256 $(sha256sum "$BIN" | cut -c1-12), built $(date -u -r "$BIN_SRC" "+%F %H:%M UTC"); git $GIT_AT_START at the start of the run; $SRC_STATE)"
fi
base_version="n/a"
if ((want_base)); then
  base_version="$("${SBIN[mtls-shield-base]}" --version 2>/dev/null | head -n1 || true)"
  base_version="${base_version:-mtls-shield} ($SHIELD_BASE_BIN, sha256 $(sha256sum "${SBIN[mtls-shield-base]}" | cut -c1-12), built $(date -u -r "$SHIELD_BASE_BIN" "+%F %H:%M UTC"))"
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
mem = "?"
for line in open("/proc/meminfo"):
    if line.startswith("MemTotal:"):
        mem = f"{int(line.split()[1]) / 1048576:.0f} GiB"; break
versions = {
    "mtls-shield": """$shield_version""",
    "mtls-shield-base": """$base_version""",
    "nginx": first("nginx -v").replace("nginx version: ", ""),
    "haproxy": first("haproxy -v").replace("HAProxy version ", "").split(" - ")[0],
    "openssl": first("openssl version"),
    "oha": first("'$OHA' --version"),
    "python3 (TLS 1.2 and idle clients, syslog sink)": first("'$PY' --version") + ", " + __import__("ssl").OPENSSL_VERSION,
    "curl": first("curl --version"),
    "rustc": first("rustc --version"),
}
if versions["mtls-shield-base"] == "n/a":
    del versions["mtls-shield-base"]
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "cpu_model": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "os": osname,
    "memory": mem,
    "versions": versions,
    "settings": {
        "rounds": $ROUNDS, "duration_s": $DURATION, "keepalive_conns": $KA_CONNS,
        "handshake_conns_tls13": $HS_CONNS, "handshake_procs_tls12": $HS12_PROCS,
        "tls12_cipher": "$HS12_CIPHER",
        "h2": "$H2_CONNS x $H2_STREAMS", "idle_conns": $IDLE_CONNS, "fd_limit": $FD_LIMIT,
        "downloads": "$DL_COUNT x $BIG_MIB MiB", "quick": $QUICK,
        "targets": "$TARGET_LIST",
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
