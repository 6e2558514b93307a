#!/bin/bash
# User-space instructions per message of a built tcp_proxy: callgrind's
# total Ir in the proxy over the messages loadgen moved through it
# (bench/callgrind_loadgen.sh) to an echo_server behind it, which runs
# outside valgrind. Instruction counts do not depend on what else the
# machine runs, so two builds can be compared run against run (alternate
# them).
#
#   cargo build --release --example tcp_proxy --example echo_server --example loadgen
#   bench/callgrind_proxy.sh [TREE] [PORT]     # TREE: a checkout, default .
#
# Prints "Ir=... msgs=... per_msg=...". Needs valgrind.
set -euo pipefail
tree=${1:-.}
port=${2:-12310}
upstream=127.0.0.1:$((port + 1))
log=$(mktemp)
"$tree/target/release/examples/echo_server" "$upstream" >"$log" 2>&1 &
echo=$!
trap 'kill "$echo" 2>/dev/null; wait "$echo" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 150); do
    grep -q "listening on" "$log" && break
    sleep 0.2
done
grep -q "listening on" "$log" || { echo "echo_server did not start" >&2; exit 1; }
"$(dirname "$0")/callgrind_loadgen.sh" "$port" \
    "$tree/target/release/examples/tcp_proxy" "127.0.0.1:$port" "$upstream"
