#!/usr/bin/env bash
# Makes the TLS tests' certificate: tests/fixtures/localhost.crt, a
# self-signed certificate for "localhost" (and 127.0.0.1, ::1), and its
# private key, tests/fixtures/localhost.key, both PEM. The files are
# committed: the tests load them, so no test build needs a certificate
# generator (rcgen, and ring with it, in every example's build).
#
# Valid for 100 years from the day it is run; run it again only to change
# the certificate. Needs openssl(1).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/fixtures
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/localhost.key.tmp" -out "$dir/localhost.crt" \
    -days 36500 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth,clientAuth"
# PKCS#8, the form rustls's key parser and pki-types take.
openssl pkcs8 -topk8 -nocrypt -in "$dir/localhost.key.tmp" -out "$dir/localhost.key"
rm -f "$dir/localhost.key.tmp"
openssl x509 -in "$dir/localhost.crt" -noout -subject -enddate
