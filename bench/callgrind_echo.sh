#!/bin/bash
# User-space instructions per echoed message of a built core-only
# echo_server: callgrind's total Ir over the messages loadgen moved
# (bench/callgrind_loadgen.sh). Instruction counts do not depend on what
# else the machine runs, so two builds can be compared run against run
# (alternate them).
#
#   cargo build --release --no-default-features --example echo_server
#   cargo build --release --example loadgen
#   bench/callgrind_echo.sh [TREE] [PORT]     # TREE: a checkout, default .
#   LOADGEN_ARGS="--conns 4 --size 16384 --depth 4" bench/callgrind_echo.sh
#
# Prints "Ir=... msgs=... per_msg=...". Needs valgrind.
set -euo pipefail
tree=${1:-.}
port=${2:-12210}
exec "$(dirname "$0")/callgrind_loadgen.sh" "$port" \
    "$tree/target/release/examples/echo_server" "127.0.0.1:$port"
