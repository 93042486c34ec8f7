#!/usr/bin/env bash
# Make a client-certificate PKI with the openssl CLI (OpenSSL 3.0 or newer).
#
#   certs/openssl-recipe.sh OUTDIR              # CA, server and client certificates
#   certs/openssl-recipe.sh OUTDIR --with-crl   # ... plus client2, revoked in crl.pem
#
# Writes into OUTDIR:
#   ca.pem ca.key              RSA-4096 root CA (10 years)
#   truststore.pem             = ca.pem, for [client_auth] truststore
#   server.pem server.key      RSA-2048, SAN DNS:localhost + IP:127.0.0.1, EKU serverAuth
#   client.pem client.key      RSA-2048, CN=my-client, CA:FALSE, digitalSignature, EKU clientAuth
#   with --with-crl also:
#   client2.pem client2.key    CN=my-client-2, same profile, then revoked
#   crl.pem                    CRL of the CA listing client2 (valid 30 days), for [client_auth] crls
#   ca.cnf index.txt crlnumber the minimal `openssl ca` state that -gencrl needs
#
# certs/README.md shows exactly these commands; keep the two in step.
# The private keys are for development and tests: never commit them (certs/.gitignore).
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [--with-crl]" >&2; exit 64; }
[ $# -ge 1 ] || usage
OUT=$1
WITH_CRL=0
case "${2:-}" in
  "") ;;
  --with-crl) WITH_CRL=1 ;;
  *) usage ;;
esac

if ! openssl version | grep -Eq '^OpenSSL [3-9]\.'; then
  echo "error: needs OpenSSL 3.0 or newer for 'x509 -req -copy_extensions' (found: $(openssl version))" >&2
  exit 1
fi

mkdir -p "$OUT"
cd "$OUT"
# Private keys are written 0600; certificates stay world-readable.
umask 077

# 1. Root CA: RSA-4096, self-signed, may sign certificates and CRLs.
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days 3650 \
  -subj "/O=mtls-shield example/CN=mtls-shield example root CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem
cp ca.pem truststore.pem

# 2. Client certificate: RSA-2048 key, CSR carrying the extensions, signed by the CA.
#    extendedKeyUsage=clientAuth is what CloudFront, rustls and `-purpose sslclient` require.
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out client.key
openssl req -new -key client.key -sha256 \
  -subj "/O=mtls-shield example/CN=my-client" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "keyUsage=critical,digitalSignature" \
  -addext "extendedKeyUsage=clientAuth" \
  -out client.csr
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -CAserial ca.srl \
  -days 365 -sha256 -copy_extensions copyall -out client.pem

# 3. Server certificate for localhost and 127.0.0.1 (a public CA's certificate in production).
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server.key
openssl req -new -key server.key -sha256 \
  -subj "/O=mtls-shield example/CN=localhost" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
  -addext "extendedKeyUsage=serverAuth" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -out server.csr
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAserial ca.srl \
  -days 365 -sha256 -copy_extensions copyall -out server.pem

if [ "$WITH_CRL" = 1 ]; then
  # 4. A second client, revoked, and the CA's CRL. `openssl ca` needs a config and an index.
  openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out client2.key
  openssl req -new -key client2.key -sha256 \
    -subj "/O=mtls-shield example/CN=my-client-2" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=clientAuth" \
    -out client2.csr
  openssl x509 -req -in client2.csr -CA ca.pem -CAkey ca.key -CAserial ca.srl \
    -days 365 -sha256 -copy_extensions copyall -out client2.pem

  cat > ca.cnf <<'EOF'
[ ca ]
default_ca       = CA_default

[ CA_default ]
dir              = .
database         = $dir/index.txt
crlnumber        = $dir/crlnumber
certificate      = $dir/ca.pem
private_key      = $dir/ca.key
new_certs_dir    = $dir
default_md       = sha256
default_crl_days = 30
crl_extensions   = crl_ext
policy           = policy_any

[ policy_any ]
commonName       = supplied

[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF
  : > index.txt
  echo 1000 > crlnumber
  openssl ca -config ca.cnf -revoke client2.pem -crl_reason keyCompromise
  openssl ca -config ca.cnf -gencrl -out crl.pem
fi

rm -f ./*.csr
chmod 0644 ./*.pem

# 5. Check: the chain and the clientAuth purpose, as a TLS server would.
openssl verify -CAfile ca.pem -purpose sslclient client.pem
openssl verify -CAfile ca.pem -purpose sslserver server.pem
if [ "$WITH_CRL" = 1 ]; then
  openssl verify -crl_check -CAfile ca.pem -CRLfile crl.pem -purpose sslclient client.pem
  if openssl verify -crl_check -CAfile ca.pem -CRLfile crl.pem -purpose sslclient client2.pem 2>/dev/null; then
    echo "error: client2.pem should be revoked by crl.pem" >&2
    exit 1
  fi
  echo "client2.pem: revoked (as intended)"
fi

# 6. The two pins for [client_auth.allow]: leaf SHA-256 fingerprint, and SPKI SHA-256 (base64).
echo "fingerprints_sha256 = [\"$(openssl x509 -in client.pem -noout -fingerprint -sha256 | cut -d= -f2)\"]"
echo "spki_sha256 = [\"$(openssl x509 -in client.pem -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | openssl base64 -A)\"]"
