#!/usr/bin/env bash
# Connection churn at full count: 200,000 connect / 32-byte round trip /
# close cycles against an in-process echo server, then the process's open
# descriptors and RSS are compared with where they were before
# (tests/reliability_churn.rs, which `cargo test` runs with 20,000 cycles
# in a debug build).
#
#   bench/churn.sh                      # 200,000 cycles, release build
#   CHURN_CYCLES=1000000 bench/churn.sh
#
# Prints the test's summary line: cycles, rate, descriptors before and
# after, RSS before and after. Fails if a descriptor leaked or RSS grew by
# more than the test's tolerance (256 KiB).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKET_CHURN_CYCLES=${CHURN_CYCLES:-200000} \
    cargo test --release --quiet --test reliability_churn -- --nocapture 2>&1 |
    grep -E '^churn:|test result|panicked|assert'
