#!/usr/bin/env bash
# Memory safety of packet-sys, the crate that holds all of packet's
# `unsafe` code: its tests under valgrind memcheck, then under
# AddressSanitizer (with LeakSanitizer) when a nightly toolchain is there.
#
#   scripts/memcheck.sh
#
# Each tool that is missing is skipped with a message saying so, and does
# not fail the script; a tool that finds an error fails it.
#
# packet-sys's own unit tests cover its sockets; its epoll loop, signal
# handler, sendfile, SCM_RIGHTS, UDP, pipe, process (fork, exec, pidfd)
# and inotify code is exercised by the library's integration tests, so a
# set of those runs under both tools too (under valgrind only quick ones
# that move little data: it slows tests 20-50x).
#
# - valgrind: the test binaries of `cargo test -p packet-sys --no-run` and
#   `cargo test --test NAME --no-run` (debug builds), run under memcheck.
#   A memcheck error exits with 99, a failing test with 101; either fails
#   the script. Definite leaks count as errors; memory the test harness
#   keeps for its threads ("possibly lost", "still reachable") does not.
# - AddressSanitizer (with LeakSanitizer): `RUSTFLAGS=-Zsanitizer=address
#   cargo +nightly test -p packet-sys`, then the same for the listed packet
#   tests, in target/asan so as not to disturb the normal build. With
#   nightly's rust-src component std is rebuilt instrumented too
#   (`-Zbuild-std`); without it the workspace's crates are instrumented
#   and std is not, which still checks every access the unsafe code makes.
#
# Environment: MEMCHECK_VALGRIND_TESTS, MEMCHECK_ASAN_TESTS (packet test
# names, space-separated; empty for packet-sys's tests only).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
target=x86_64-unknown-linux-gnu
failed=0
ran=0
# Under valgrind only tests that move little data: the big transfers of
# send_file and signals (and tcp, proxy) outlast their 20 s I/O bounds
# there when the machine is busy. AddressSanitizer runs them.
valgrind_tests=${MEMCHECK_VALGRIND_TESTS-attach datagram filewatch process sockopt unix watch reliability_input}
asan_tests=${MEMCHECK_ASAN_TESTS-attach datagram filewatch process send_file signals sockopt unix watch tcp reliability_input reliability_faults}

# The test binaries a `cargo test ... --no-run` built (its "Executable"
# lines).
executables() {
    cargo test "$@" --no-run 2>&1 | sed -n 's/^ *Executable .*(\(.*\))$/\1/p'
}

echo "== valgrind memcheck: packet-sys tests and packet tests ($valgrind_tests)"
if ! command -v valgrind >/dev/null 2>&1; then
    echo "memcheck: valgrind is not installed; skipped (apt-get install valgrind)"
else
    bins=$(executables -p packet-sys)
    for t in $valgrind_tests; do
        bins="$bins $(executables -p packet-reactor --test "$t")"
    done
    if [ -z "${bins// /}" ]; then
        echo "memcheck: no test binary was built" >&2
        exit 1
    fi
    for bin in $bins; do
        echo "-- valgrind $bin"
        # One test thread: valgrind serialises threads anyway, and output
        # stays readable.
        rc=0
        valgrind --quiet --error-exitcode=99 \
            --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite --track-origins=yes \
            "$bin" --test-threads=1 >"${TMPDIR:-/tmp}/memcheck.$$.log" 2>&1 || rc=$?
        case $rc in
            0) echo "memcheck: no errors ($(grep -c '^test .* ok$' "${TMPDIR:-/tmp}/memcheck.$$.log") tests)" ;;
            99)
                cat "${TMPDIR:-/tmp}/memcheck.$$.log"
                echo "memcheck: $bin: MEMORY ERRORS (above)"
                failed=1
                ;;
            *)
                cat "${TMPDIR:-/tmp}/memcheck.$$.log"
                echo "memcheck: $bin: a test failed under valgrind (exit $rc; above)"
                failed=1
                ;;
        esac
        rm -f "${TMPDIR:-/tmp}/memcheck.$$.log"
    done
    ran=1
fi

echo
echo "== AddressSanitizer: packet-sys tests and packet tests ($asan_tests)"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "asan: no nightly toolchain; skipped (rustup toolchain install nightly)"
else
    build_std=()
    if rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
        build_std=(-Zbuild-std)
        echo "asan: rebuilding std instrumented (-Zbuild-std)"
    else
        echo "asan: nightly has no rust-src component: std is not instrumented, the workspace crates are" \
            "(rustup component add rust-src --toolchain nightly for -Zbuild-std)"
    fi
    # --lib --tests: doctests do not take the sanitizer flags.
    packet_tests=()
    for t in $asan_tests; do
        packet_tests+=(--test "$t")
    done
    asan() {
        RUSTFLAGS="-Zsanitizer=address" \
            ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1" \
            CARGO_TARGET_DIR=target/asan \
            cargo +nightly test ${build_std[@]+"${build_std[@]}"} --target "$target" "$@"
    }
    if asan -p packet-sys --lib --tests &&
        { [ ${#packet_tests[@]} -eq 0 ] || asan -p packet-reactor "${packet_tests[@]}"; }; then
        echo "asan: no errors"
    else
        echo "asan: ERRORS or failing tests (see above)"
        failed=1
    fi
    ran=1
fi

echo
if [ "$failed" -ne 0 ]; then
    echo "memcheck: FAILED"
    exit 1
fi
if [ "$ran" -eq 0 ]; then
    echo "memcheck: no tool available; nothing was checked"
else
    echo "memcheck: ok"
fi
