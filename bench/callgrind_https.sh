#!/bin/bash
# User-space instructions of http_server --tls per keep-alive request and
# per MiB of a file: callgrind's total Ir for 1 and 2,001 requests of `/`
# (the difference over 2,000) and for 1 and 21 requests of a 1 MiB file
# (over 20). Counts do not depend on what else the machine runs, so two
# builds compare run against run.
#
#   cargo build --release --features tls --example http_server
#   bench/callgrind_https.sh [BINARY] [PORT]
#
# Prints "per_request=... per_mib=...". Needs valgrind and python3.
set -euo pipefail
bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
binary=${1:-$root/target/release/examples/http_server}
port=${2:-12230}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/site"
head -c 1048576 /dev/urandom >"$work/site/big.bin"
cert=$root/tests/fixtures/localhost.crt
key=$root/tests/fixtures/localhost.key

run() { # COUNT PATH -> total Ir
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$binary" "127.0.0.1:$port" --root "$work/site" --tls "$cert" "$key" \
        >"$work/server.log" 2>&1 &
    local server=$!
    for _ in $(seq 150); do
        grep -q "listening on" "$work/server.log" && break
        sleep 0.2
    done
    grep -q "listening on" "$work/server.log" || { echo "http_server did not start" >&2; kill "$server"; exit 1; }
    python3 "$bench/https_client.py" "$port" "$1" "$2" "$cert" >/dev/null
    kill -TERM "$server"
    wait "$server" || true
    grep -E "^(summary|totals):" "$work/cg.out" | head -1 | awk '{print $2}'
}

small1=$(run 1 /)
small=$(run 2001 /)
big1=$(run 1 /big.bin)
big=$(run 21 /big.bin)
awk -v a="$small1" -v b="$small" -v c="$big1" -v d="$big" \
    'BEGIN { printf "per_request=%.0f per_mib=%.0f\n", (b - a) / 2000, (d - c) / 20 }'
