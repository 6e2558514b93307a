#!/usr/bin/env bash
# How long a new user waits (README, "Tests"): a fresh clone of revision
# REV (HEAD unless given) in a temporary directory, with an empty target
# directory of its own, then
#   echo   `cargo run --release --example echo_server`'s build: seconds, and
#          how many crates it compiles
#   tests  the README's test command: its build (--no-run), then the run
#          alone, the build done
#
#   bash scripts/build-times.sh [REV]
#   BUILD_TIMES_PARTS=echo bash scripts/build-times.sh 517c45a
#   BUILD_TIMES_TEST='cargo test --workspace' bash scripts/build-times.sh 517c45a
#
# Wall-clock times of this machine as it is: note its load with the
# figures (the script prints the load average before each part). Needs
# the dependencies' sources (the crates.io index, or cargo's cache).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD}
parts=${BUILD_TIMES_PARTS:-echo tests}
test_cmd=${BUILD_TIMES_TEST:-cargo test --workspace --all-features}
failed_log=${BUILD_TIMES_FAILED_LOG:-${TMPDIR:-/tmp}/build-times-failed.log}
export CARGO_TERM_COLOR=never

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$PWD" "$work/packet"
git -C "$work/packet" checkout -q "$(git rev-parse "$rev")"
cd "$work/packet"
export CARGO_TARGET_DIR="$work/target"
echo "revision $(git rev-parse --short HEAD), $(nproc) CPUs, $(cargo --version)"

# Runs "$@", prints its wall-clock seconds; its output goes to $work/log.
timed() {
    local start end
    start=$(date +%s.%N)
    "$@" >"$work/log" 2>&1 || {
        # The whole log outlives the temporary directory: a failure is
        # worth reading in full.
        cp "$work/log" "$failed_log"
        grep -E '^test .* FAILED|panicked|^failures:' "$work/log" >&2 || true
        tail -n 30 "$work/log" >&2
        echo "failed: $* (whole log: $failed_log)" >&2
        exit 1
    }
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }'
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

for part in $parts; do
    case $part in
    echo)
        echo "load before: $(load)"
        s=$(timed cargo build --release --example echo_server)
        crates=$(grep -c '^ *Compiling ' "$work/log")
        echo "echo_server (cargo build --release --example echo_server): ${s} s, ${crates} crates compiled"
        ;;
    tests)
        echo "load before: $(load)"
        s=$(timed $test_cmd --no-run)
        echo "test build ($test_cmd --no-run): ${s} s"
        echo "load before: $(load)"
        s=$(timed $test_cmd)
        echo "test run ($test_cmd, built): ${s} s; $(grep -c '^test result: ok' "$work/log") test binaries passed"
        ;;
    *)
        echo "unknown part $part (echo, tests)" >&2
        exit 2
        ;;
    esac
done
