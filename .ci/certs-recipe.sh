#!/usr/bin/env bash
# Check the openssl recipe: certs/README.md shows exactly what certs/openssl-recipe.sh runs, and the
# script makes a PKI that openssl itself accepts (clientAuth purpose, CRL revoking client2 only).
#
#   bash .ci/certs-recipe.sh
#
# Needs: openssl 3.x, python3. Also checks that git tracks no private key and ignores certs/*.key.
set -euo pipefail
CI_NAME=certs-recipe
# shellcheck source=.ci/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$CI_REPO"
ci_need openssl

ci_step "certs/README.md shows the script's commands"
python3 - certs/openssl-recipe.sh certs/README.md <<'PY' || ci_die "certs/README.md and certs/openssl-recipe.sh disagree"
import re, sys
script, readme = (open(p).read() for p in sys.argv[1:3])
def commands(text):
    text = re.sub(r"\\\n\s*", " ", text)                  # join continuation lines
    return [re.sub(r"\s+", " ", l.strip()) for l in text.splitlines() if l.strip().startswith("openssl ")]
def heredoc(text):
    m = re.search(r"<<'EOF'\n(.*?)\nEOF", text, re.S)
    return m.group(1) if m else None
blocks = "\n".join(re.findall(r"```sh\n(.*?)```", readme, re.S))
s, r = commands(script), commands(blocks)
missing = [c for c in s if c not in r]
extra = [c for c in r if c not in s and not c.startswith("openssl x509 -in client.pem -noout")]
bad = False
for c in missing:
    print("in the script, not in the README:", c); bad = True
for c in extra:
    print("in the README, not in the script:", c); bad = True
if heredoc(script) != heredoc(blocks):
    print("the ca.cnf shown in the README differs from the script's"); bad = True
print(f"{len(s)} openssl commands compared")
sys.exit(1 if bad else 0)
PY

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mtls-shield-certs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

ci_step "certs/openssl-recipe.sh OUT"
certs/openssl-recipe.sh "$WORK/plain" >"$WORK/plain.log" 2>&1 || { cat "$WORK/plain.log"; ci_die "recipe failed"; }
for f in ca.pem ca.key server.pem server.key client.pem client.key truststore.pem; do
  [ -s "$WORK/plain/$f" ] || ci_die "missing $f"
done
[ ! -e "$WORK/plain/crl.pem" ] || ci_die "crl.pem written without --with-crl"
[ "$(stat -c %a "$WORK/plain/client.key")" = 600 ] || ci_die "client.key is not 0600"
openssl x509 -in "$WORK/plain/client.pem" -noout -ext extendedKeyUsage | grep -q 'TLS Web Client Authentication' ||
  ci_die "client.pem lacks EKU clientAuth"
openssl x509 -in "$WORK/plain/ca.pem" -noout -text | grep -q 'Public-Key: (4096 bit)' || ci_die "CA key is not RSA-4096"
openssl x509 -in "$WORK/plain/client.pem" -noout -text | grep -q 'Public-Key: (2048 bit)' || ci_die "client key is not RSA-2048"
openssl x509 -in "$WORK/plain/server.pem" -noout -ext subjectAltName | grep -q 'DNS:localhost, IP Address:127.0.0.1' ||
  ci_die "server.pem lacks SAN localhost/127.0.0.1"
echo "ok: files, key sizes, EKU, SAN, key permissions"

ci_step "certs/openssl-recipe.sh OUT --with-crl"
certs/openssl-recipe.sh "$WORK/crl" --with-crl >"$WORK/crl.log" 2>&1 || { cat "$WORK/crl.log"; ci_die "recipe --with-crl failed"; }
cd "$WORK/crl"
openssl verify -crl_check -CAfile ca.pem -CRLfile crl.pem -purpose sslclient client.pem
if openssl verify -crl_check -CAfile ca.pem -CRLfile crl.pem -purpose sslclient client2.pem >/dev/null 2>&1; then
  ci_die "client2.pem is not revoked by crl.pem"
fi
openssl crl -in crl.pem -noout -text | grep -q 'X509v3 CRL Number' || ci_die "crl.pem has no CRL number (rustls-webpki wants a v2 CRL)"
echo "ok: client.pem good, client2.pem revoked, v2 CRL with a CRL number"
cd "$CI_REPO"

ci_step "no private key tracked by git"
if git rev-parse --git-dir >/dev/null 2>&1; then
  git ls-files -z | python3 -c '
import os, re, sys
pem = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE" rb" KEY-----\s+[A-Za-z0-9+/=]{40,}")  # split so this file never matches itself
bad = [f for f in sys.stdin.buffer.read().decode().split("\0") if f and
       (f.endswith((".key", ".p12", ".pfx")) or (os.path.isfile(f) and pem.search(open(f, "rb").read())))]
print("\n".join(bad)); sys.exit(1 if bad else 0)' || ci_die "private key material is tracked by git (above)"
  printf 'dummy\n' >certs/ci-probe.key
  git check-ignore -q certs/ci-probe.key || { rm -f certs/ci-probe.key; ci_die "certs/*.key is not ignored"; }
  rm -f certs/ci-probe.key
  echo "ok"
fi

echo
echo "certs-recipe: OK"
