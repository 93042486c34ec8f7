#!/usr/bin/env bash
# TLS scan of a running mtls-shield with sslyze (issue 5).
#
# Generates a dev PKI (`mtls-shield gen-certs`), starts the proxy on a free loopback port,
# scans it with sslyze presenting the generated client certificate (--cert/--key: the
# listener refuses every handshake without one), and fails unless:
#   - only TLS 1.2 and 1.3 are accepted (SSL 2/3, TLS 1.0/1.1 refused);
#   - every accepted TLS 1.2 suite is AEAD with forward secrecy (ECDHE/DHE + GCM/ChaCha20);
#   - heartbleed, ROBOT, OpenSSL CCS injection and insecure renegotiation checks pass;
#   - TLS compression is off.
#
# Environment:
#   MTLS_SHIELD_BIN  the binary to scan (default: build target/release/mtls-shield)
#   SSLYZE_VERSION   the sslyze release to install from PyPI (default: pinned below)
#   SCAN_KEEP=1      keep the work folder (certs, config, logs, sslyze JSON)
# sslyze is installed into a virtualenv under target/ (reused on the next run), so nothing
# is installed system-wide. Needs python3 with venv; on Debian: apt-get install python3-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

SSLYZE_VERSION="${SSLYZE_VERSION:-6.3.1}"
BIN="${MTLS_SHIELD_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=target/release/mtls-shield
fi
[ -x "$BIN" ] || { echo "scan: $BIN is not an executable" >&2; exit 2; }

work="$(mktemp -d)"
proxy_pid=""
cleanup() {
  if [ -n "$proxy_pid" ]; then kill "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; fi
  if [ "${SCAN_KEEP:-0}" = 1 ]; then echo "scan: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- sslyze in a private virtualenv ------------------------------------------------------
venv="target/sslyze-venv-$SSLYZE_VERSION"
if ! "$venv/bin/python" -c "import sslyze" 2>/dev/null; then
  echo "scan: installing sslyze $SSLYZE_VERSION into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    if command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      python3 -m venv "$venv"
    else
      echo "scan: python3 -m venv failed; install python3-venv" >&2; exit 2
    fi
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "sslyze==$SSLYZE_VERSION"
fi

# --- a running instance ------------------------------------------------------------------
"$BIN" gen-certs --out "$work/certs" >/dev/null
cat > "$work/mtls-shield.toml" <<EOF
[listener]
address = "127.0.0.1:0"
certificate = "certs/server.pem"
private_key = "certs/server.key"

[client_auth]
truststore = "certs/truststore.pem"

[upstream]
# Nothing listens here: the scan is about TLS; requests would get 502.
url = "http://127.0.0.1:9"
EOF
"$BIN" run --config "$work/mtls-shield.toml" 2>"$work/proxy.log" &
proxy_pid=$!
port=""
for _ in $(seq 1 200); do
  port="$(sed -n 's/.* listening address=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/proxy.log" | head -n1)"
  [ -n "$port" ] && break
  kill -0 "$proxy_pid" 2>/dev/null || { cat "$work/proxy.log" >&2; echo "scan: proxy exited" >&2; exit 1; }
  sleep 0.05
done
[ -n "$port" ] || { cat "$work/proxy.log" >&2; echo "scan: proxy did not start listening" >&2; exit 1; }
echo "scan: mtls-shield listening on 127.0.0.1:$port (pid $proxy_pid)"

# --- scan --------------------------------------------------------------------------------
# The server certificate is for localhost; connect to 127.0.0.1 with SNI localhost.
"$venv/bin/python" -m sslyze \
  --cert "$work/certs/client.pem" --key "$work/certs/client.key" --keyform PEM --mozilla_config disable \
  --sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 \
  --heartbleed --robot --openssl_ccs --reneg --compression --fallback \
  --json_out "$work/sslyze.json" --quiet \
  "localhost:$port{127.0.0.1}"

# --- verdict -----------------------------------------------------------------------------
"$venv/bin/python" - "$work/sslyze.json" <<'PY'
import json, sys

doc = json.load(open(sys.argv[1]))
results = doc["server_scan_results"]
if len(results) != 1 or results[0]["scan_status"] != "COMPLETED":
    sys.exit(f"scan: sslyze could not connect: {json.dumps(results)[:2000]}")
r = results[0]["scan_result"]
failures = []

def result(name):
    attempt = r[name]
    if attempt["status"] != "COMPLETED":
        failures.append(f"{name}: {attempt['status']} {attempt.get('error_reason')} {attempt.get('error_trace', '')[-500:]}")
        return None
    return attempt["result"]

def accepted(name):
    res = result(name)
    return [] if res is None else [s["cipher_suite"]["name"] for s in res["accepted_cipher_suites"]]

for old in ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites", "tls_1_1_cipher_suites"):
    suites = accepted(old)
    if suites:
        failures.append(f"{old}: accepted {suites}")
    print(f"{old:24} refused" if not suites else f"{old:24} ACCEPTED {suites}")

tls12 = accepted("tls_1_2_cipher_suites")
tls13 = accepted("tls_1_3_cipher_suites")
print(f"{'tls_1_2_cipher_suites':24} {tls12}")
print(f"{'tls_1_3_cipher_suites':24} {tls13}")
if not tls13:
    failures.append("TLS 1.3 is not offered")
for s in tls12:
    fs = "_ECDHE_" in s or "_DHE_" in s
    aead = "_GCM_" in s or "CHACHA20_POLY1305" in s or s.endswith("_CCM") or "_CCM_" in s
    if not (fs and aead):
        failures.append(f"TLS 1.2 suite without AEAD and forward secrecy: {s}")

hb = result("heartbleed")
if hb is not None:
    print(f"{'heartbleed':24} vulnerable={hb['is_vulnerable_to_heartbleed']}")
    if hb["is_vulnerable_to_heartbleed"]:
        failures.append("vulnerable to heartbleed")

robot = result("robot")
if robot is not None:
    print(f"{'robot':24} {robot['robot_result']}")
    if robot["robot_result"] not in ("NOT_VULNERABLE_NO_ORACLE", "NOT_VULNERABLE_RSA_NOT_SUPPORTED"):
        failures.append(f"ROBOT: {robot['robot_result']}")

ccs = result("openssl_ccs_injection")
if ccs is not None:
    print(f"{'openssl_ccs_injection':24} vulnerable={ccs['is_vulnerable_to_ccs_injection']}")
    if ccs["is_vulnerable_to_ccs_injection"]:
        failures.append("vulnerable to OpenSSL CCS injection")

reneg = result("session_renegotiation")
if reneg is not None:
    dos = reneg["is_vulnerable_to_client_renegotiation_dos"]
    secure = reneg["supports_secure_renegotiation"]
    print(f"{'session_renegotiation':24} client_renegotiation_dos={dos} secure_renegotiation_signalled={secure}")
    # rustls never renegotiates; it signals RFC 5746 support so that clients know that no
    # insecure (pre-RFC 5746) renegotiation can happen.
    if dos:
        failures.append("accepts client-initiated renegotiation")
    if not secure:
        failures.append("does not signal secure renegotiation (RFC 5746)")

comp = result("tls_compression")
if comp is not None:
    print(f"{'tls_compression':24} supported={comp['supports_compression']}")
    if comp["supports_compression"]:
        failures.append("TLS compression is on (CRIME)")

fb = result("tls_fallback_scsv")
if fb is not None:
    print(f"{'tls_fallback_scsv':24} supported={fb['supports_fallback_scsv']}")

if failures:
    print("scan: FAILED")
    for f in failures:
        print("  - " + f)
    sys.exit(1)
print("scan: OK (TLS 1.2/1.3 only, AEAD+FS suites, no heartbleed/ROBOT/CCS/insecure renegotiation, no compression)")
PY
