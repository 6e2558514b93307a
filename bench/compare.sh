#!/usr/bin/env bash
# packet's benchmark suite, one command:
#
#   bench/compare.sh                                  # the default parts, about 10 minutes
#   BENCH_PARTS="echo http" bench/compare.sh          # some parts
#   BENCH_SECS=10 BENCH_ROUNDS=9 bench/compare.sh     # longer, steadier
#   BENCH_PARTS=echo BENCH_SCENARIOS="a d" bench/compare.sh
#   BENCH_PARTS=https BENCH_ROUNDS=1 BENCH_SECS=1 BENCH_HTTP_WARMUP=0 \
#     bench/compare.sh                                # smallest run of a part
#
# Parts (BENCH_PARTS, default "echo http scaling size"):
#   echo     examples/echo_server against bench/c_echo.c (twice: c and c2,
#            two processes of the same server, whose gap is the noise of
#            the run), an EventMachine echo server (bench/em_echo.rb) and
#            one on the original Ruby Packet 0.1.15, unmodified
#            (bench/packet_rb_echo.rb; the gem is installed with gem
#            install, and when that fails the row says "skipped" and why),
#            driven by examples/loadgen, scenarios a-d.
#   http     examples/http_server against nginx (one worker) and thin (one
#            process, bench/thin/config.ru), driven by wrk.
#   https    (not in the default) http_server --tls (the tls feature)
#            against nginx with TLS (bench/nginx-tls.conf.in: one worker,
#            the same certificate, TLS 1.3 and TLS_AES_256_GCM_SHA384 like
#            rustls's choice, a session cache like rustls's default).
#            Cases (BENCH_HTTPS_CASES): keepalive, requests/s by wrk; full,
#            handshakes/s by openssl s_time -new (never resumes, so every
#            handshake is a full one); resumed, by s_time -reuse (every
#            connection resumes one session; the share resumed is counted
#            and shown). Each with the server's CPU per request/handshake.
#   scaling  echo_server and http_server with 1 and 2 reactor threads, server
#            and load generator sharing the CPUs of BENCH_SCALING_CPUS.
#   size     stripped release sizes (echo_server with and without default
#            features, a std-only blocking echo server) and crate counts.
#   profile  (not in the default) A/B of the release profile in Cargo.toml
#            against Cargo's defaults (lto off, 16 codegen units): echo
#            scenario a and binary sizes.
#
# Every server runs pinned to BENCH_SERVER_CPU (0) and the load generator to
# BENCH_LOADGEN_CPU (1). Each (round, case) runs every server in turn, the
# order alternating between rounds, each on a fresh process (so peak RSS is
# per run) and its own port. Tables give the median over the rounds, and as
# ratio rows "packet / PEER" the median over the rounds of the ratio within
# each round (both ran back to back, so drift in the load of the machine
# cancels out better than in a ratio of medians).
#
# Environment (defaults in brackets):
#   BENCH_PARTS ["echo http scaling size"]
#   BENCH_SECS [2] (wrk: rounded up to whole seconds)  BENCH_WARMUP [0.5]
#   BENCH_ROUNDS [5]  BENCH_SCALING_ROUNDS [5]
#   BENCH_SCENARIOS ["a b c d"]  BENCH_SERVERS ["packet c c2 em packet-rb"]
#   BENCH_HTTP_SERVERS ["packet nginx thin"]  BENCH_HTTP_CONNS [50]
#   BENCH_HTTP_WARMUP [1] (seconds of wrk before each measured run; 0: none)
#   BENCH_HTTPS_CASES ["keepalive full resumed"]  BENCH_TLS_CLIENTS [4]
#     (s_time processes at once)
#   BENCH_SERVER_CPU [0]  BENCH_LOADGEN_CPU [1]  BENCH_LOADGEN_THREADS [1]
#   BENCH_SCALING_CPUS [$BENCH_SERVER_CPU,$BENCH_LOADGEN_CPU]
#   BENCH_PROFILE_SCENARIOS ["a"]
#   BENCH_PORT [21006] (server i listens on BENCH_PORT + i; http + 10,
#     scaling + 20)
#   BENCH_ALT_SERVER [unset] (echo server "alt": another echo_server build)
#   BENCH_NICE [0] (e.g. -10 on a machine shared with other work; no help
#     across sessions when kernel.sched_autogroup_enabled=1)
#   BENCH_SKIP_BUILD [unset]
#   BENCH_OUT [latest] (results/$BENCH_OUT.md, .csv, -size.csv, -*.svg)
#   BENCH_CHARTS [1] (0: no charts, no matplotlib)
#   BENCH_PACKET_GEM [unset] (a packet-0.1.15.gem file to install from)
#
# Output: a Markdown table per case on stdout, and a progress line per run
# on stderr (the case, the server, round k of n, seconds since the start);
# all tables, preceded by a summary and the charts, in
# bench/results/latest.md; every run's raw numbers in
# bench/results/latest.csv, the sizes in bench/results/latest-size.csv, and
# charts drawn from latest.csv by bench/charts.py (matplotlib) beside them:
# latest-ratios.svg, -cpu.svg, -p99.svg, -rss.svg (BENCH_OUT renames them).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/bench/build
RESULTS=$ROOT/bench/results

PARTS=${BENCH_PARTS:-${BENCH_SUITES:-echo http scaling size}}
SECS=${BENCH_SECS:-2}
WARMUP=${BENCH_WARMUP:-0.5}
ROUNDS=${BENCH_ROUNDS:-5}
SCALING_ROUNDS=${BENCH_SCALING_ROUNDS:-5}
SCENARIOS=${BENCH_SCENARIOS:-a b c d}
SERVERS=${BENCH_SERVERS:-packet c c2 em packet-rb}
HTTP_SERVERS=${BENCH_HTTP_SERVERS:-packet nginx thin}
HTTP_CONNS=${BENCH_HTTP_CONNS:-50}
HTTP_WARMUP=${BENCH_HTTP_WARMUP:-1}
HTTPS_CASES=${BENCH_HTTPS_CASES:-keepalive full resumed}
TLS_CLIENTS=${BENCH_TLS_CLIENTS:-4}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
LOADGEN_CPU=${BENCH_LOADGEN_CPU:-1}
LOADGEN_THREADS=${BENCH_LOADGEN_THREADS:-1}
SCALING_CPUS=${BENCH_SCALING_CPUS:-$SERVER_CPU,$LOADGEN_CPU}
PROFILE_SCENARIOS=${BENCH_PROFILE_SCENARIOS:-a}
BASE_PORT=${BENCH_PORT:-21006}
NICE=${BENCH_NICE:-0}
OUT=${BENCH_OUT:-latest}
CHARTS=${BENCH_CHARTS:-1}
OURS=packet
# wrk takes whole seconds.
WRK_SECS=$(awk -v s="$SECS" 'BEGIN { n = int(s); if (n < s) n++; if (n < 1) n = 1; print n }')

LOADGEN=$ROOT/target/release/examples/loadgen
ECHO_SERVER=$ROOT/target/release/examples/echo_server
HTTP_SERVER=$ROOT/target/release/examples/http_server
# Built with the tls feature in a target of its own, so that the other
# parts keep measuring the default build.
TLS_TARGET=$BUILD/target-tls
HTTPS_SERVER=$TLS_TARGET/release/examples/http_server
SIZE_TARGET=$BUILD/target-size
PROFILE_BASE_TARGET=$BUILD/target-profile-base
RUN_DIR=$(mktemp -d /tmp/packet-bench.XXXXXX)
RAW=$RUN_DIR/raw.csv
SIZES=$RUN_DIR/sizes.csv
TABLES=$RUN_DIR/tables.md
SUMMARY=$RUN_DIR/summary.md

# ----- processes: everything started is tracked by PID and stopped on exit -----

PIDS=()

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

alive() { # pid -> whether it runs (a zombie does not)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

descendants() { # pid -> its child processes, grandchildren, ... one a line
    local c
    for c in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$c"
        descendants "$c"
    done
}

# SIGTERM, up to 5 s to exit, then SIGKILL for it and the processes it
# started (nginx's worker); reaped with wait.
stop_pid() {
    local pid=$1 kids _
    kids=$(descendants "$pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        alive "$pid" || break
        sleep 0.05
    done
    if alive "$pid"; then
        echo "   !! process $pid ignored SIGTERM for 5 s; SIGKILL" >&2
        # shellcheck disable=SC2086 # one PID a word
        kill -KILL "$pid" $kids 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        stop_pid "$p"
    done
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

has_part() { [[ " $PARTS " == *" $1 "* ]]; }

# ----- tools -----

APT_UPDATED=
apt_install() { # debian-package...
    [[ $(id -u) == 0 ]] || die "missing: install $* (Debian packages)"
    echo "== installing $*"
    if [[ -z $APT_UPDATED ]]; then
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

need() { # command debian-package
    command -v "$1" >/dev/null 2>&1 && return 0
    apt_install "$2"
    command -v "$1" >/dev/null 2>&1 || die "could not install $2"
}

need_eventmachine() {
    ruby -e 'require "eventmachine"' 2>/dev/null && return 0
    apt_install ruby-eventmachine
    ruby -e 'require "eventmachine"' || die "could not install ruby-eventmachine"
}

# The original Ruby Packet, pinned, from RubyGems (BENCH_PACKET_GEM: a
# packet-0.1.15.gem file to install from instead). When it cannot be had
# the echo part runs without it and says why in its tables
# (PACKET_RB_SKIP), rather than stopping the whole run.
PACKET_RB_SKIP=
PACKET_RB_VERSION=0.1.15
packet_rb_loads() {
    ruby -e "gem 'packet', '$PACKET_RB_VERSION'; require 'packet'" >"$BUILD/packet-rb-load.log" 2>&1
}
need_packet_rb() {
    need ruby ruby
    need gem ruby
    mkdir -p "$BUILD"
    packet_rb_loads && return 0
    local log=$BUILD/packet-rb-install.log why install=(gem install --no-document packet -v "$PACKET_RB_VERSION")
    [[ -z ${BENCH_PACKET_GEM:-} ]] || install=(gem install --no-document --local "$BENCH_PACKET_GEM")
    echo "== installing the Ruby gem packet $PACKET_RB_VERSION (${install[*]})"
    timeout 300 "${install[@]}" >"$log" 2>&1 || true
    if packet_rb_loads; then
        return 0
    elif grep -qE 'Unable to download|SocketError|getaddrinfo|Errno::E' "$log"; then
        why=$(grep -m 1 -oE '(SocketError|Errno::E[A-Z]+)[^(]*(\([^)]*\))?' "$log" |
            sed -E 's/ to [^ ]+:[0-9]+//' | tr -s ' \n' ' ' | cut -c 1-120)
        PACKET_RB_SKIP="RubyGems is not reachable from this machine (${install[*]}: ${why% })"
    elif grep -q . "$log" && ! grep -qi "successfully installed" "$log"; then
        # The first lines of gem's complaint, without addresses.
        PACKET_RB_SKIP="${install[*]} failed: $(head -n 3 "$log" |
            sed -E -e 's#[a-z]+://[^ )]*##g' -e 's/^ERROR: *//' | tr -s ' \n' ' ' | cut -c 1-200)"
    else
        why=$(grep -m 1 -i error "$BUILD/packet-rb-load.log" | cut -c 1-200)
        PACKET_RB_SKIP="packet $PACKET_RB_VERSION does not load on ruby $(ruby -e 'print RUBY_VERSION'): $why"
    fi
    PACKET_RB_SKIP=${PACKET_RB_SKIP%% }
    echo "!! packet-rb skipped: $PACKET_RB_SKIP (log: bench/build/packet-rb-install.log)" >&2
    SERVERS=$(tr ' ' '\n' <<<"$SERVERS" | grep -vx packet-rb | tr '\n' ' ')
}

# matplotlib for bench/charts.py: the first python3 that has it, else
# Debian's python3-matplotlib (for /usr/bin/python3), else PyPI's with pip.
CHART_PY=
need_charts() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import matplotlib' 2>/dev/null; then
            CHART_PY=$py
            return 0
        fi
    done
    if [[ $(id -u) == 0 ]]; then
        apt_install python3-matplotlib
        if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
            CHART_PY=/usr/bin/python3
            return 0
        fi
    fi
    need python3 python3
    echo "== installing matplotlib (pip --user)"
    python3 -m pip install --quiet --user matplotlib >/dev/null 2>&1 ||
        python3 -m pip install --quiet --user --break-system-packages matplotlib >/dev/null 2>&1 || true
    python3 -c 'import matplotlib' 2>/dev/null || die "could not install matplotlib (python3-matplotlib or pip)"
    CHART_PY=python3
}

build() {
    need taskset util-linux
    need pgrep procps
    need cargo cargo
    local examples=()
    if has_part echo || has_part scaling || has_part profile; then
        examples+=(--example echo_server --example loadgen)
    fi
    if has_part http || has_part scaling; then
        examples+=(--example http_server)
        need wrk wrk
    fi
    if has_part echo && [[ " $SERVERS " == *" em "* ]]; then
        need ruby ruby
        need_eventmachine
    fi
    if has_part echo && [[ " $SERVERS " == *" packet-rb "* ]]; then
        need_packet_rb
    fi
    if has_part echo && [[ " $SERVERS " == *" c "* || " $SERVERS " == *" c2 "* ]]; then
        need gcc gcc
    fi
    if has_part https; then
        need wrk wrk
        need nginx nginx
        need openssl openssl
    fi
    if has_part http; then
        [[ " $HTTP_SERVERS " != *" nginx "* ]] || need nginx nginx
        [[ " $HTTP_SERVERS " != *" thin "* ]] || need thin thin
    fi
    if has_part size || has_part profile; then
        need strip binutils
    fi
    [[ $CHARTS == 0 ]] || need_charts
    [[ -z ${BENCH_SKIP_BUILD:-} ]] || return 0
    if ((${#examples[@]})); then
        echo "== building ${examples[*]} (release)"
        cargo build --release --quiet "${examples[@]}"
    fi
    if has_part https; then
        echo "== building http_server with the tls feature (release, $TLS_TARGET)"
        CARGO_TARGET_DIR=$TLS_TARGET cargo build --release --quiet --features tls --example http_server
    fi
    if has_part echo && [[ " $SERVERS " == *" c "* || " $SERVERS " == *" c2 "* ]]; then
        echo "== building c_echo (gcc -O2)"
        mkdir -p "$BUILD"
        gcc -O2 -Wall -Wextra -o "$BUILD/c_echo" bench/c_echo.c
    fi
}

# ----- servers (add one: a case here, and its name in BENCH_SERVERS or
# BENCH_HTTP_SERVERS) -----

CMD=()
READY_LINE=0
server_cmd() { # kind(echo|http) name port threads -> CMD, READY_LINE
    local addr=127.0.0.1:$3 threads=$4
    READY_LINE=1 # the server prints "listening on" once every thread is ready
    case $1:$2 in
    echo:packet) CMD=("$ECHO_SERVER" "$addr" --threads "$threads") ;;
    # c2: the same C server as c, a process of its own: how far two runs
    # of one server differ in a round is the noise band of the ratios.
    echo:c | echo:c2) CMD=("$BUILD/c_echo" "$addr") ;;
    echo:em) CMD=(ruby "$ROOT/bench/em_echo.rb" 127.0.0.1 "$3") ;;
    echo:packet-rb) CMD=(ruby "$ROOT/bench/packet_rb_echo.rb" 127.0.0.1 "$3") ;;
    # Another build of an echo server taking ADDR:PORT (say, echo_server
    # from a branch that changes the reactor), for an A/B run:
    #   BENCH_ALT_SERVER=/other/target/release/examples/echo_server \
    #   BENCH_PARTS=echo BENCH_SERVERS="packet alt c" bench/compare.sh
    echo:alt)
        [[ -n ${BENCH_ALT_SERVER:-} ]] || die "server alt needs BENCH_ALT_SERVER=/path/to/binary"
        CMD=("$BENCH_ALT_SERVER" "$addr")
        ;;
    # echo_server built with Cargo's default release profile (part profile).
    echo:base) CMD=("$BUILD/echo_server-base" "$addr") ;;
    http:packet) CMD=("$HTTP_SERVER" "$addr" --threads "$threads") ;;
    http:nginx)
        local dir=$RUN_DIR/nginx-$3
        mkdir -p "$dir/tmp" "$dir/logs"
        sed -e "s/@PORT@/$3/" -e "s/@WORKERS@/$threads/" "$ROOT/bench/nginx.conf.in" >"$dir/nginx.conf"
        CMD=(nginx -p "$dir" -c "$dir/nginx.conf" -e stderr)
        READY_LINE=0
        ;;
    https:packet) CMD=("$HTTPS_SERVER" "$addr" --threads "$threads" --tls "$TLS_CERT" "$TLS_KEY") ;;
    https:nginx)
        local dir=$RUN_DIR/nginx-tls-$3
        mkdir -p "$dir/tmp" "$dir/logs"
        sed -e "s/@PORT@/$3/" -e "s/@WORKERS@/$threads/" -e "s|@CERT@|$TLS_CERT|" -e "s|@KEY@|$TLS_KEY|" \
            "$ROOT/bench/nginx-tls.conf.in" >"$dir/nginx.conf"
        CMD=(nginx -p "$dir" -c "$dir/nginx.conf" -e stderr)
        READY_LINE=0
        ;;
    http:thin)
        ((threads == 1)) || die "thin runs as one process"
        CMD=(thin start -R "$ROOT/bench/thin/config.ru" -a 127.0.0.1 -p "$3" -e production)
        READY_LINE=0
        ;;
    *) die "unknown $1 server '$2' (echo: packet c c2 em packet-rb alt base; http: packet nginx thin; https: packet nginx)" ;;
    esac
}

SERVER_PID=
start_server() { # kind name port threads cpus
    local log=$RUN_DIR/server-$1-$2.log
    server_cmd "$1" "$2" "$3" "$4"
    nice -n "$NICE" taskset -c "$5" "${CMD[@]}" >"$log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local _
    for _ in $(seq 600); do
        if listening "$3" && { ((READY_LINE == 0)) || grep -q '^listening on' "$log"; }; then
            return 0
        fi
        alive "$SERVER_PID" || die "server $2 exited: $(cat "$log")"
        sleep 0.05
    done
    die "server $2 is not listening on port $3 after 30 s: $(cat "$log")"
}

listening() { # port -> whether a socket listens on 127.0.0.1:port
    local hex
    hex=$(printf '0100007F:%04X' "$1")
    awk -v a="$hex" '$2 == a && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp
}

cpu_ns() { # pid -> CPU time (user + system, all threads) in nanoseconds
    # utime + stime of /proc/PID/stat are the scheduler's exact run time
    # rounded to 10 ms ticks; /proc/PID/task/*/schedstat has the same run
    # time in ns, which matters for runs of a few hundred ticks.
    local f t=0 run rest stat fields
    for f in /proc/"$1"/task/*/schedstat; do
        read -r run rest <"$f" 2>/dev/null || continue
        t=$((t + run))
    done
    if ((t == 0)); then
        stat=$(<"/proc/$1/stat")
        read -r -a fields <<<"${stat##*) }"
        t=$(((fields[11] + fields[12]) * 10000000))
    fi
    echo "$t"
}

tree_cpu_ns() { # pid -> CPU time of it and its descendants (nginx master + worker)
    local p t=0 kids
    mapfile -t kids < <(descendants "$1")
    for p in "$1" "${kids[@]}"; do
        t=$((t + $(cpu_ns "$p")))
    done
    echo "$t"
}

tree_peak_rss_kb() { # pid -> sum of VmHWM of it and its descendants
    local p t=0 v kids
    mapfile -t kids < <(descendants "$1")
    for p in "$1" "${kids[@]}"; do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

core_busy_ticks() { # -> busy ticks (all but idle and iowait) of the two bench CPUs
    awk -v a="cpu$SERVER_CPU" -v b="cpu$LOADGEN_CPU" '
        $1 == a || $1 == b { t += $2 + $3 + $4 + $7 + $8 + $9 }
        END { print t + 0 }' /proc/stat
}

CHILD_TICKS=0
children_ticks() { # -> CHILD_TICKS: CPU ticks of this shell's reaped children (cutime + cstime)
    # Not called in $(...): that subshell's children are not this shell's.
    local stat fields
    read -r stat <"/proc/$BASHPID/stat"
    read -r -a fields <<<"${stat##*) }"
    CHILD_TICKS=$((fields[13] + fields[14]))
}

kv() { # key line -> value of key=value in line
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

# ----- load generators: set G_* from one run -----

G_LINE='' G_RATE='' G_P50='' G_P99='' G_ERR='' G_TOTAL='' G_TICKS='' G_RC=0 G_RESUMED=''
# G_RESUMED: % of the connections that resumed a TLS session (s_time only)

# The generator's CPU time comes from its rusage (this shell's cutime and
# cstime once it is reaped, 10 ms ticks) over its whole run, for loadgen and
# wrk alike: loadgen's own window_cpu_pct has come out negative with
# --threads 2 on the loaded machine.
gen_loadgen() { # port cpus threads args...
    local port=$1 cpus=$2 threads=$3 c0 c1
    shift 3
    G_RC=0
    children_ticks
    c0=$CHILD_TICKS
    nice -n "$NICE" taskset -c "$cpus" "$LOADGEN" --addr "127.0.0.1:$port" "$@" \
        --secs "$SECS" --warmup "$WARMUP" --threads "$threads" \
        >"$RUN_DIR/gen.out" 2>"$RUN_DIR/gen.err" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid" || G_RC=$?
    forget_pid "$pid"
    children_ticks
    c1=$CHILD_TICKS
    local err
    G_LINE=$(tail -n 1 "$RUN_DIR/gen.out")
    err=$(grep '^loadgen: mode=' "$RUN_DIR/gen.err" | tail -n 1 || true)
    G_RATE=$(kv msgs_per_s "$G_LINE")
    [[ -n $G_RATE ]] || G_RATE=$(kv conns_per_s "$G_LINE")
    G_P50=$(kv p50_us "$G_LINE")
    G_P99=$(kv p99_us "$G_LINE")
    G_ERR=$(kv errors "$G_LINE")
    G_TOTAL=$(kv total "$err")
    G_TICKS=$((c1 - c0))
}

# What wrk asks for: the scheme, and extra arguments (a header).
WRK_SCHEME=http
WRK_ARGS=()

wrk_warmup() { # port cpus threads -- a run whose numbers are thrown away
    ((HTTP_WARMUP > 0)) || return 0
    nice -n "$NICE" taskset -c "$2" wrk -t"$3" -c"$HTTP_CONNS" -d"${HTTP_WARMUP}s" ${WRK_ARGS[@]+"${WRK_ARGS[@]}"} \
        "$WRK_SCHEME://127.0.0.1:$1/" >/dev/null 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid" || true
    forget_pid "$pid"
}

gen_wrk() { # port cpus threads
    local port=$1 cpus=$2 threads=$3 c0 c1
    G_RC=0
    children_ticks
    c0=$CHILD_TICKS
    nice -n "$NICE" taskset -c "$cpus" wrk -t"$threads" -c"$HTTP_CONNS" -d"${WRK_SECS}s" --latency \
        ${WRK_ARGS[@]+"${WRK_ARGS[@]}"} "$WRK_SCHEME://127.0.0.1:$port/" >"$RUN_DIR/gen.out" 2>"$RUN_DIR/gen.err" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid" || G_RC=$?
    forget_pid "$pid"
    children_ticks
    c1=$CHILD_TICKS
    local o=$RUN_DIR/gen.out
    G_RATE=$(awk '$1 == "Requests/sec:" { print $2 }' "$o")
    G_TOTAL=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$o")
    G_P50=$(wrk_latency_us 50% "$o")
    G_P99=$(wrk_latency_us 99% "$o")
    G_ERR=$(awk '/^ *Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { e += $NF } END { print e + 0 }' "$o")
    G_TICKS=$((c1 - c0))
    G_LINE="requests_per_s=${G_RATE:-?} total=${G_TOTAL:-?} p50_us=${G_P50:-?} p99_us=${G_P99:-?} errors=${G_ERR:-?}"
    [[ $G_RC == 0 ]] || G_ERR=$((${G_ERR:-0} + 1))
}

# openssl s_time: each process makes one connection at a time (TCP, TLS
# handshake, GET /, read to the close) for WRK_SECS; CLIENTS of them run at
# once so that the server sees concurrent handshakes. "new" never offers a
# session (every handshake full); "reuse" resumes the session of its first
# connection every time. s_time prints a mark per connection, r for a
# resumed one: they give G_RESUMED. No latency percentiles.
gen_stime() { # port cpus clients new|reuse
    local port=$1 cpus=$2 clients=$3 mode=$4 c0 c1 t0 t1 k pid pids=()
    G_RC=0
    children_ticks
    c0=$CHILD_TICKS
    t0=$(date +%s.%N)
    for k in $(seq "$clients"); do
        nice -n "$NICE" taskset -c "$cpus" openssl s_time -connect "127.0.0.1:$port" "-$mode" -time "$WRK_SECS" \
            -www / -tls1_3 -ciphersuites "$TLS_SUITE" >"$RUN_DIR/gen-$k.out" 2>"$RUN_DIR/gen-$k.err" &
        pids+=("$!")
        PIDS+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || G_RC=$?
        forget_pid "$pid"
    done
    t1=$(date +%s.%N)
    children_ticks
    c1=$CHILD_TICKS
    cat "$RUN_DIR"/gen-*.err >"$RUN_DIR/gen.err"
    local stats
    stats=$(awk -v t0="$t0" -v t1="$t1" '
        / connections in .* real seconds/ { n += $1 }
        /^[*r123]+$/ { all += length($0); r += gsub(/r/, "") }
        END { printf "%d %.1f %.1f\n", n, (t1 > t0 ? n / (t1 - t0) : 0), (all > 0 ? 100 * r / all : 0) }' \
        "$RUN_DIR"/gen-*.out)
    read -r G_TOTAL G_RATE G_RESUMED <<<"$stats"
    rm -f "$RUN_DIR"/gen-*.out "$RUN_DIR"/gen-*.err
    G_P50='' G_P99=''
    G_ERR=$(grep -ci 'error' "$RUN_DIR/gen.err" || true)
    ((G_TOTAL > 0)) || G_ERR=$((G_ERR + 1))
    [[ $G_RC == 0 ]] || G_ERR=$((G_ERR + 1))
    G_TICKS=$((c1 - c0))
    G_LINE="handshakes_per_s=$G_RATE total=$G_TOTAL resumed_pct=$G_RESUMED errors=$G_ERR"
}

wrk_latency_us() { # "50%" file -> that percentile of wrk --latency in µs
    awk -v p="$1" '$1 == p {
        v = $2
        if (v ~ /us$/) { sub(/us$/, "", v); m = 1 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); m = 1000 }
        else if (v ~ /m$/) { sub(/m$/, "", v); m = 60e6 }
        else { sub(/s$/, "", v); m = 1e6 }
        printf "%.1f\n", v * m }' "$2"
}

# ----- one measured run -----

# Starts a fresh server, runs the generator, appends one line to $RAW.
#   run_one part case label round port kind name threads server-cpus gen gen-cpus gen-threads [loadgen args...]
# gen is loadgen (server CPU per op over the whole loadgen run, warm-up and
# drain included, over all ops of that run) or wrk (after a separate warm-up
# run; CPU per request over the measured run only).
run_one() {
    local part=$1 case=$2 label=$3 round=$4 port=$5 kind=$6 name=$7 threads=$8 scpus=$9
    local gen=${10} gcpus=${11} gthreads=${12}
    shift 12
    start_server "$kind" "$name" "$port" "$threads" "$scpus"
    local spid=$SERVER_PID t0 t1 busy0 busy1 start end
    [[ $gen == wrk ]] && wrk_warmup "$port" "$gcpus" "$gthreads"
    t0=$(tree_cpu_ns "$spid")
    busy0=$(core_busy_ticks)
    start=$(date +%s.%N)
    G_RESUMED=''
    case $gen in
    loadgen) gen_loadgen "$port" "$gcpus" "$gthreads" "$@" ;;
    wrk) gen_wrk "$port" "$gcpus" "$gthreads" ;;
    stime) gen_stime "$port" "$gcpus" "$gthreads" "$@" ;;
    esac
    end=$(date +%s.%N)
    alive "$spid" || die "server $label died during $part $case: $(cat "$RUN_DIR/server-$kind-$name.log")"
    t1=$(tree_cpu_ns "$spid")
    busy1=$(core_busy_ticks)
    local rss
    rss=$(tree_peak_rss_kb "$spid")
    stop_pid "$spid"

    if [[ $G_RC != 0 ]]; then
        echo "   !! $gen exit $G_RC against $label: $G_LINE" >&2
        sed 's/^/   !! /' "$RUN_DIR/gen.err" | head -n 8 >&2
    fi
    # Load of other processes on the two bench CPUs during the run: their
    # busy time less the server's and the generator's own. High values mean
    # a noisy run.
    awk -v part="$part" -v s="$case" -v srv="$label" -v r="$round" -v rate="${G_RATE:-0}" \
        -v p50="${G_P50:-0}" -v p99="${G_P99:-0}" -v e="${G_ERR:-1}" \
        -v ns=$((t1 - t0)) -v total="${G_TOTAL:-0}" -v start="$start" -v end="$end" \
        -v rss="${rss:-0}" -v rc="$G_RC" -v busy=$((busy1 - busy0)) -v gticks="${G_TICKS:-0}" \
        -v resumed="$G_RESUMED" 'BEGIN {
            wall = end - start
            cpu_us = total > 0 ? ns / 1000 / total : 0
            srv_pct = wall > 0 ? ns / 1e7 / wall : 0
            gpct = wall > 0 ? gticks / wall : 0
            gus = total > 0 ? gticks * 1e4 / total : 0
            others = wall > 0 ? (busy - ns / 1e7 - gticks) / (2 * wall) : 0
            if (others < 0) others = 0
            printf "%s,%s,%s,%s,%s,%s,%s,%s,%.3f,%.1f,%s,%.1f,%s,%s,%.1f,%.3f,%s\n", part, s, srv, r, rate, p50, p99, e, cpu_us, srv_pct, rss, gpct, total, rc, others, gus, resumed
        }' >>"$RAW"
    printf '   %-10s round %s: %s | server cpu %s ms, %s cpu %s ticks\n' \
        "$label" "$round" "$G_LINE" "$(((t1 - t0) / 1000000))" "$gen" "${G_TICKS:-?}"
}

# ----- report -----

# CSV columns (latest.csv)
C_RATE=5 C_P50=6 C_P99=7 C_CPU=9 C_PCT=10 C_RSS=11 C_GPCT=12 C_OTHER=15 C_GCPU=16 C_RESUMED=17
CSV_HEADER="part,case,server,round,rate,p50_us,p99_us,errors,server_cpu_us_per_op,server_cpu_pct,peak_rss_kb,gen_cpu_pct,total_ops,gen_rc,other_load_pct,gen_cpu_us_per_op,resumed_pct"

median() { # numbers on stdin
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print 0 } else if (NR % 2) { print v[(NR + 1) / 2] }
        else { print (v[NR / 2] + v[NR / 2 + 1]) / 2 } }'
}

column_median() { # part case server column
    awk -F, -v p="$1" -v s="$2" -v srv="$3" -v c="$4" '$1 == p && $2 == s && $3 == srv { print $c }' "$RAW" | median
}

paired_ratio() { # part case column num den -> median over rounds of num / den
    awk -F, -v p="$1" -v s="$2" -v c="$3" -v o="$4" -v b="$5" '
        $1 == p && $2 == s && $3 == o { x[$4] = $c }
        $1 == p && $2 == s && $3 == b { y[$4] = $c }
        END { for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r] }' "$RAW" | median
}

fmt_1() { [[ $1 == n/a ]] && echo n/a || printf '%.1f' "$1"; }
fmt_ratio() { awk -v x="$1" 'BEGIN { print (x > 0 ? sprintf("%.2f", x) : "n/a") }'; }
ok() { # value op(>= or <=) threshold -> PASS or FAIL (FAIL when there is no value)
    awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN {
        pass = x > 0 && (op == ">=" ? x >= t : x <= t)
        print (pass ? "PASS" : "FAIL") }'
}

table_head() { # unit generator
    echo "| server | $1s/s | p50 µs | p99 µs | server CPU µs/$1 | server CPU % | peak RSS KiB | $2 CPU % | $2 CPU µs/$1 | other load % | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

table_row() { # part case server [shown name]
    local c v=()
    for c in $C_RATE $C_P50 $C_P99 $C_CPU $C_PCT $C_RSS $C_GPCT $C_GCPU $C_OTHER; do
        v+=("$(column_median "$1" "$2" "$3" "$c")")
    done
    # No latency from the client (s_time): n/a rather than 0.
    local i
    for i in 1 2; do
        awk -v x="${v[i]}" 'BEGIN { exit !(x > 0) }' || v[i]=n/a
    done
    printf '| %s | %.0f | %s | %s | %.3f | %.0f | %.0f | %.0f | %.3f | %.0f | %s |\n' "${4:-$3}" "${v[0]}" \
        "$(fmt_1 "${v[1]}")" "$(fmt_1 "${v[2]}")" "${v[@]:3}" \
        "$(awk -F, -v p="$1" -v s="$2" -v srv="$3" '$1 == p && $2 == s && $3 == srv { t += $8 } END { print t + 0 }' "$RAW")" # errors
}

ratio_row() { # part case num den [label]
    printf '| **%s** | **%s** | %s | **%s** | **%s** | | %s | | | | |\n' "${5:-$3 / $4}" \
        "$(fmt_ratio "$(paired_ratio "$1" "$2" $C_RATE "$3" "$4")")" \
        "$(fmt_ratio "$(paired_ratio "$1" "$2" $C_P50 "$3" "$4")")" \
        "$(fmt_ratio "$(paired_ratio "$1" "$2" $C_P99 "$3" "$4")")" \
        "$(fmt_ratio "$(paired_ratio "$1" "$2" $C_CPU "$3" "$4")")" \
        "$(fmt_ratio "$(paired_ratio "$1" "$2" $C_RSS "$3" "$4")")"
}

# What runs now, for the progress line on stderr (set by each part before
# calling rounds).
CASE_NAME=
T_START=$SECONDS
progress() { # server round rounds
    printf '>> [%d s] %s: %s, round %s of %s\n' $((SECONDS - T_START)) "$CASE_NAME" "$1" "$2" "$3" >&2
}

# Runs every server of a list per round, alternating the order.
rounds() { # rounds servers(space separated) callback(server round index)
    local n=$1 servers=$2 cb=$3 round order server i s
    for round in $(seq "$n"); do
        if ((round % 2)); then
            order=$servers
        else
            order=$(tr ' ' '\n' <<<"$servers" | tac | tr '\n' ' ')
        fi
        for server in $order; do
            i=0
            for s in $servers; do
                [[ $s == "$server" ]] && break
                i=$((i + 1))
            done
            progress "$server" "$round" "$n"
            "$cb" "$server" "$round" "$i"
        done
    done
}

# ----- part echo -----

scenario_title() {
    case $1 in
    a) echo "(a) 50 connections, 64 B messages, depth 16" ;;
    b) echo "(b) 500 connections, 32 B messages, depth 1" ;;
    c) echo "(c) 4 connections, 16 KiB messages, depth 4" ;;
    d) echo "(d) connection rate: 50 slots of connect, 1 B round trip, close" ;;
    *) die "unknown scenario '$1'" ;;
    esac
}

scenario_args() {
    case $1 in
    a) echo "--conns 50 --size 64 --depth 16" ;;
    b) echo "--conns 500 --size 32 --depth 1" ;;
    c) echo "--conns 4 --size 16384 --depth 4" ;;
    d) echo "--mode rate --conns 50" ;;
    esac
}

ECHO_PART="echo" # the part name in the CSV (part profile reuses echo_run)
echo_run() { # server round index
    local args
    read -r -a args <<<"$(scenario_args "$SCEN")"
    run_one "$ECHO_PART" "$SCEN" "$1" "$2" $((BASE_PORT + $3)) echo "$1" 1 "$SERVER_CPU" \
        loadgen "$LOADGEN_CPU" "$LOADGEN_THREADS" "${args[@]}"
}

report_echo() { # part scenario servers
    local part=$1 scen=$2 servers=$3 unit=msg server
    [[ $scen == d ]] && unit=conn
    echo
    echo "### $part $(scenario_title "$scen")"
    echo
    echo "loadgen $(scenario_args "$scen") --secs $SECS --warmup $WARMUP; median of $ROUNDS rounds"
    echo
    table_head "$unit" loadgen
    for server in $servers; do
        table_row "$part" "$scen" "$server"
    done
    if [[ $part == echo && -n $PACKET_RB_SKIP ]]; then
        echo "| packet-rb | skipped: $PACKET_RB_SKIP | | | | | | | | | |"
    fi
    [[ " $servers " == *" $OURS "* ]] || return 0
    for server in $servers; do
        [[ $server == "$OURS" || $server == c2 ]] || ratio_row "$part" "$scen" "$OURS" "$server"
    done
    if [[ " $servers " == *" c "* && " $servers " == *" c2 "* ]]; then
        ratio_row "$part" "$scen" c2 c "c2 / c (noise: the same C server twice)"
    fi
    [[ " $servers " == *" c "* ]] || return 0
    local rate p99 cpu
    rate=$(paired_ratio "$part" "$scen" $C_RATE "$OURS" c)
    p99=$(paired_ratio "$part" "$scen" $C_P99 "$OURS" c)
    cpu=$(paired_ratio "$part" "$scen" $C_CPU "$OURS" c)
    echo
    if [[ $scen == a ]]; then
        echo "- issue target (a): msgs/s ratio $(fmt_ratio "$rate") >= 0.90: $(ok "$rate" ">=" 0.90);" \
            "p99 ratio $(fmt_ratio "$p99") <= 1.2: $(ok "$p99" "<=" 1.2)"
    fi
    echo "- later target: rate ratio $(fmt_ratio "$rate") >= 0.95: $(ok "$rate" ">=" 0.95);" \
        "CPU per op ratio $(fmt_ratio "$cpu") <= 1.05: $(ok "$cpu" "<=" 1.05)"
}

part_echo() {
    [[ -x $LOADGEN ]] || die "loadgen not built"
    echo "== part echo: servers [$SERVERS] on CPU $SERVER_CPU, loadgen on CPU $LOADGEN_CPU," \
        "${SECS}s + ${WARMUP}s warm-up per run, $ROUNDS rounds"
    local scen
    for scen in $SCENARIOS; do
        echo "== echo $(scenario_title "$scen")"
        SCEN=$scen CASE_NAME="echo $(scenario_title "$scen")"
        rounds "$ROUNDS" "$SERVERS" echo_run
        report_echo "$ECHO_PART" "$scen" "$SERVERS" | tee -a "$TABLES"
    done
    {
        echo "| echo scenario | packet msgs/s | packet / c msgs/s | c2 / c msgs/s (noise) | packet / c CPU per op | packet / em msgs/s | packet / em CPU per op | packet-rb / c msgs/s | other load % |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        local rb
        for scen in $SCENARIOS; do
            rb=$(fmt_ratio "$(paired_ratio echo "$scen" $C_RATE packet-rb c)")
            [[ -z $PACKET_RB_SKIP ]] || rb=skipped
            printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %.0f |\n' "$(scenario_title "$scen")" \
                "$(column_median echo "$scen" "$OURS" $C_RATE)" \
                "$(fmt_ratio "$(paired_ratio echo "$scen" $C_RATE "$OURS" c)")" \
                "$(fmt_ratio "$(paired_ratio echo "$scen" $C_RATE c2 c)")" \
                "$(fmt_ratio "$(paired_ratio echo "$scen" $C_CPU "$OURS" c)")" \
                "$(fmt_ratio "$(paired_ratio echo "$scen" $C_RATE "$OURS" em)")" \
                "$(fmt_ratio "$(paired_ratio echo "$scen" $C_CPU "$OURS" em)")" \
                "$rb" "$(column_median echo "$scen" "$OURS" $C_OTHER)"
        done
        echo
        [[ -z $PACKET_RB_SKIP ]] || printf -- '- packet-rb (the Ruby gem packet %s): skipped: %s\n\n' "$PACKET_RB_VERSION" "$PACKET_RB_SKIP"
    } >>"$SUMMARY"
}

# ----- part http -----

http_run() { # server round index
    run_one http hello "$1" "$2" $((BASE_PORT + 10 + $3)) http "$1" 1 "$SERVER_CPU" \
        wrk "$LOADGEN_CPU" 1
}

part_http() {
    echo "== part http: servers [$HTTP_SERVERS] on CPU $SERVER_CPU, wrk -t1 -c$HTTP_CONNS on CPU $LOADGEN_CPU," \
        "${WRK_SECS}s after ${HTTP_WARMUP}s warm-up per run, $ROUNDS rounds"
    CASE_NAME="http GET / (wrk -c$HTTP_CONNS)"
    rounds "$ROUNDS" "$HTTP_SERVERS" http_run
    local server rate cpu
    {
        echo
        echo "### http: GET / answered 'Hello, World!' and a newline (text/plain), keep-alive"
        echo
        echo "wrk -t1 -c$HTTP_CONNS -d${WRK_SECS}s --latency after a ${HTTP_WARMUP}s wrk warm-up; median of $ROUNDS rounds;" \
            "nginx: one worker, CPU and peak RSS are master + worker (shared pages counted twice);" \
            "thin: one process, \`-e production\`; wrk CPU from its rusage (10 ms ticks)"
        echo
        table_head req wrk
        for server in $HTTP_SERVERS; do
            table_row http hello "$server"
        done
        if [[ " $HTTP_SERVERS " == *" $OURS "* ]]; then
            for server in $HTTP_SERVERS; do
                [[ $server == "$OURS" ]] || ratio_row http hello "$OURS" "$server"
            done
        fi
        if [[ " $HTTP_SERVERS " == *" $OURS "* && " $HTTP_SERVERS " == *" nginx "* ]]; then
            rate=$(paired_ratio http hello $C_RATE "$OURS" nginx)
            cpu=$(paired_ratio http hello $C_CPU "$OURS" nginx)
            echo
            echo "- target: requests/s ratio to nginx $(fmt_ratio "$rate") >= 0.95: $(ok "$rate" ">=" 0.95);" \
                "CPU per request ratio $(fmt_ratio "$cpu") <= 1.1: $(ok "$cpu" "<=" 1.1)"
        fi
    } | tee -a "$TABLES"
    {
        echo "| http (wrk -t1 -c$HTTP_CONNS) | requests/s | p50 µs | p99 µs | CPU µs/req | peak RSS KiB | packet / it: req/s | packet / it: CPU per req |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        for server in $HTTP_SERVERS; do
            local r c
            if [[ $server == "$OURS" ]]; then
                r=1.00 c=1.00
            else
                r=$(fmt_ratio "$(paired_ratio http hello $C_RATE "$OURS" "$server")")
                c=$(fmt_ratio "$(paired_ratio http hello $C_CPU "$OURS" "$server")")
            fi
            printf '| %s | %.0f | %.0f | %.0f | %.2f | %.0f | %s | %s |\n' "$server" \
                "$(column_median http hello "$server" $C_RATE)" "$(column_median http hello "$server" $C_P50)" \
                "$(column_median http hello "$server" $C_P99)" "$(column_median http hello "$server" $C_CPU)" \
                "$(column_median http hello "$server" $C_RSS)" "$r" "$c"
        done
        echo
    } >>"$SUMMARY"
}

# ----- part https -----

TLS_CERT=
TLS_KEY=
HTTPS_CASE=keepalive
# The cipher suite both servers are held to (rustls's first choice).
TLS_SUITE=TLS_AES_256_GCM_SHA384
https_run() { # server round index
    local port=$((BASE_PORT + 30 + $3))
    case $HTTPS_CASE in
    keepalive) run_one https keepalive "$1" "$2" "$port" https "$1" 1 "$SERVER_CPU" wrk "$LOADGEN_CPU" 1 ;;
    full) run_one https full "$1" "$2" "$port" https "$1" 1 "$SERVER_CPU" stime "$LOADGEN_CPU" "$TLS_CLIENTS" new ;;
    resumed) run_one https resumed "$1" "$2" "$port" https "$1" 1 "$SERVER_CPU" stime "$LOADGEN_CPU" "$TLS_CLIENTS" reuse ;;
    esac
}

# The TLS version, cipher suite and key exchange a server negotiates with
# OpenSSL's client (wrk's and s_time's library), to show both sides of the
# comparison agree.
negotiated() { # server port
    start_server https "$1" "$2" 1 "$SERVER_CPU"
    local spid=$SERVER_PID
    timeout 10 openssl s_client -connect "127.0.0.1:$2" -brief </dev/null 2>&1 |
        awk -F': *' '/^Protocol version/ { v = $2 } /^Ciphersuite/ { c = $2 }
            /^Server Temp Key/ { k = $2 } END { print v " " c " " k }'
    stop_pid "$spid"
}

https_title() {
    case $1 in
    keepalive) echo "GET / over TLS, keep-alive connections" ;;
    full) echo "full handshakes: a new connection and a GET / per handshake, never resumed (openssl s_time -new)" ;;
    resumed) echo "resumed handshakes: a new connection and a GET / per handshake, resuming one session (openssl s_time -reuse)" ;;
    esac
}

https_driver() {
    case $1 in
    keepalive) echo "wrk -t1 -c$HTTP_CONNS -d${WRK_SECS}s --latency after a ${HTTP_WARMUP}s wrk warm-up" ;;
    *) echo "$TLS_CLIENTS x openssl s_time -$([[ $1 == full ]] && echo new || echo reuse) -time $WRK_SECS -www / -tls1_3" \
        "-ciphersuites $TLS_SUITE at once (one connection at a time each; no latency figures)" ;;
    esac
}

part_https() {
    TLS_CERT=$RUN_DIR/tls-cert.pem
    TLS_KEY=$RUN_DIR/tls-key.pem
    # One certificate for both servers: ECDSA P-256, as rcgen and most
    # sites use.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null
    local servers="$OURS nginx" server
    echo "== part https: servers [$servers] on CPU $SERVER_CPU, cases [$HTTPS_CASES], clients on CPU $LOADGEN_CPU," \
        "${WRK_SECS}s per run, $ROUNDS rounds"
    local agreed="" sep=""
    for server in $servers; do
        agreed+="$sep$server: $(negotiated "$server" $((BASE_PORT + 39)))"
        sep=", "
    done
    WRK_SCHEME=https WRK_ARGS=()
    for HTTPS_CASE in $HTTPS_CASES; do
        CASE_NAME="https $HTTPS_CASE"
        echo "== https: $(https_title "$HTTPS_CASE")"
        rounds "$ROUNDS" "$servers" https_run
    done
    WRK_SCHEME=http
    {
        for HTTPS_CASE in $HTTPS_CASES; do
            local unit=req
            [[ $HTTPS_CASE == keepalive ]] || unit=handshake
            echo
            echo "### https: $(https_title "$HTTPS_CASE")"
            echo
            echo "$(https_driver "$HTTPS_CASE"); median of $ROUNDS rounds;" \
                "negotiated with openssl s_client: $agreed;" \
                "nginx: one worker, session cache on, stateless tickets off (bench/nginx-tls.conf.in);" \
                "packet: rustls's default ServerConfig (in-memory session cache, stateful TLS 1.3 tickets)"
            echo
            table_head "$unit" "$([[ $HTTPS_CASE == keepalive ]] && echo wrk || echo s_time)"
            for server in $servers; do
                table_row https "$HTTPS_CASE" "$server"
            done
            ratio_row https "$HTTPS_CASE" "$OURS" nginx
            if [[ $HTTPS_CASE != keepalive ]]; then
                echo
                for server in $servers; do
                    echo "- $server: $(column_median https "$HTTPS_CASE" "$server" $C_RESUMED)% of the connections resumed (s_time's r marks; median of the rounds)"
                done
            fi
        done
        echo
        if [[ " $HTTPS_CASES " == *" keepalive "* ]]; then
            local rate
            rate=$(paired_ratio https keepalive $C_RATE "$OURS" nginx)
            echo "- target: keep-alive requests/s ratio to nginx $(fmt_ratio "$rate") >= 0.90: $(ok "$rate" ">=" 0.90);" \
                "handshakes/s reported, no target"
        fi
    } | tee -a "$TABLES"
    {
        echo "| https, against nginx with TLS | packet/s | nginx/s | packet / nginx: rate | packet CPU µs/op | nginx CPU µs/op | packet / nginx: CPU per op | resumed % (packet; nginx) |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        for HTTPS_CASE in $HTTPS_CASES; do
            local res=""
            [[ $HTTPS_CASE == keepalive ]] ||
                res="$(column_median https "$HTTPS_CASE" "$OURS" $C_RESUMED); $(column_median https "$HTTPS_CASE" nginx $C_RESUMED)"
            printf '| %s | %.0f | %.0f | %s | %.2f | %.2f | %s | %s |\n' \
                "$([[ $HTTPS_CASE == keepalive ]] && echo "keep-alive requests (wrk -c$HTTP_CONNS)" || echo "$HTTPS_CASE handshakes (s_time x$TLS_CLIENTS)")" \
                "$(column_median https "$HTTPS_CASE" "$OURS" $C_RATE)" "$(column_median https "$HTTPS_CASE" nginx $C_RATE)" \
                "$(fmt_ratio "$(paired_ratio https "$HTTPS_CASE" $C_RATE "$OURS" nginx)")" \
                "$(column_median https "$HTTPS_CASE" "$OURS" $C_CPU)" "$(column_median https "$HTTPS_CASE" nginx $C_CPU)" \
                "$(fmt_ratio "$(paired_ratio https "$HTTPS_CASE" $C_CPU "$OURS" nginx)")" "$res"
        done
        echo
    } >>"$SUMMARY"
}

# ----- part scaling -----

# Configurations: label -> server threads, server CPUs, generator CPUs and
# threads. "pinned" is the setup of the other parts; "shared" puts server
# and generator on the same CPUs and lets the scheduler place them.
scaling_config() { # label -> CFG_THREADS CFG_SCPUS CFG_GCPUS CFG_GTHREADS CFG_NAME
    case $1 in
    t1-pinned) CFG_NAME=packet CFG_THREADS=1 CFG_SCPUS=$SERVER_CPU CFG_GCPUS=$LOADGEN_CPU CFG_GTHREADS=1 ;;
    t1-shared) CFG_NAME=packet CFG_THREADS=1 CFG_SCPUS=$SCALING_CPUS CFG_GCPUS=$SCALING_CPUS CFG_GTHREADS=2 ;;
    t2-shared) CFG_NAME=packet CFG_THREADS=2 CFG_SCPUS=$SCALING_CPUS CFG_GCPUS=$SCALING_CPUS CFG_GTHREADS=2 ;;
    nginx-w2-shared) CFG_NAME=nginx CFG_THREADS=2 CFG_SCPUS=$SCALING_CPUS CFG_GCPUS=$SCALING_CPUS CFG_GTHREADS=2 ;;
    *) die "unknown scaling configuration $1" ;;
    esac
}

scaling_describe() {
    case $1 in
    t1-pinned) echo "1 reactor thread on CPU $SERVER_CPU, generator (1 thread) on CPU $LOADGEN_CPU" ;;
    t1-shared) echo "1 reactor thread, server and generator (2 threads) both on CPUs $SCALING_CPUS" ;;
    t2-shared) echo "2 reactor threads (SO_REUSEPORT), server and generator (2 threads) both on CPUs $SCALING_CPUS" ;;
    nginx-w2-shared) echo "nginx with 2 workers, server and wrk (2 threads) both on CPUs $SCALING_CPUS (reference)" ;;
    esac
}

SCALING_KIND=
scaling_run() { # config round index
    scaling_config "$1"
    if [[ $SCALING_KIND == echo ]]; then
        local args
        read -r -a args <<<"$(scenario_args a)"
        run_one scaling echo-a "$1" "$2" $((BASE_PORT + 20 + $3)) echo "$CFG_NAME" "$CFG_THREADS" "$CFG_SCPUS" \
            loadgen "$CFG_GCPUS" "$CFG_GTHREADS" "${args[@]}"
    else
        run_one scaling http "$1" "$2" $((BASE_PORT + 20 + $3)) http "$CFG_NAME" "$CFG_THREADS" "$CFG_SCPUS" \
            wrk "$CFG_GCPUS" "$CFG_GTHREADS"
    fi
}

part_scaling() {
    local configs case unit gen
    echo "== part scaling: 1 and 2 reactor threads, $SCALING_ROUNDS rounds"
    for SCALING_KIND in echo http; do
        if [[ $SCALING_KIND == echo ]]; then
            configs="t1-pinned t1-shared t2-shared" case=echo-a unit=msg gen=loadgen
            echo "== scaling: echo_server, scenario (a)"
        else
            configs="t1-pinned t1-shared t2-shared"
            [[ " $HTTP_SERVERS " != *" nginx "* ]] || configs+=" nginx-w2-shared"
            case=http unit=req gen=wrk
            echo "== scaling: http_server, wrk -c$HTTP_CONNS"
        fi
        CASE_NAME="scaling $case"
        rounds "$SCALING_ROUNDS" "$configs" scaling_run
        {
            echo
            if [[ $SCALING_KIND == echo ]]; then
                echo "### scaling: echo_server, scenario $(scenario_title a)"
                echo
                echo "loadgen $(scenario_args a) --secs $SECS --warmup $WARMUP (--threads 1 pinned, 2 shared); median of $SCALING_ROUNDS rounds"
            else
                echo "### scaling: http_server, GET / hello"
                echo
                echo "wrk -c$HTTP_CONNS -d${WRK_SECS}s (-t1 pinned, -t2 shared); median of $SCALING_ROUNDS rounds"
            fi
            echo
            local c
            for c in $configs; do
                echo "- $c: $(scaling_describe "$c")"
            done
            echo
            table_head "$unit" "$gen"
            for c in $configs; do
                table_row scaling "$case" "$c"
            done
            ratio_row scaling "$case" t2-shared t1-shared "2 threads / 1 thread (shared CPUs)"
            ratio_row scaling "$case" t2-shared t1-pinned "2 threads shared / 1 thread pinned"
        } | tee -a "$TABLES"
    done
    {
        echo "| scaling (server and generator share CPUs $SCALING_CPUS) | 1 thread pinned | 1 thread shared | 2 threads shared | 2 / 1 threads (shared) | server CPU % (2 threads) | generator CPU % (2 threads) |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        for case in echo-a http; do
            printf '| %s | %.0f | %.0f | %.0f | %s | %.0f | %.0f |\n' "$case" \
                "$(column_median scaling "$case" t1-pinned $C_RATE)" \
                "$(column_median scaling "$case" t1-shared $C_RATE)" \
                "$(column_median scaling "$case" t2-shared $C_RATE)" \
                "$(fmt_ratio "$(paired_ratio scaling "$case" $C_RATE t2-shared t1-shared)")" \
                "$(column_median scaling "$case" t2-shared $C_PCT)" \
                "$(column_median scaling "$case" t2-shared $C_GPCT)"
        done
        echo
    } >>"$SUMMARY"
}

# ----- part size -----

stripped_size() { # binary -> bytes once stripped of all symbols
    strip --strip-all -o "$RUN_DIR/stripped" "$1"
    stat -c %s "$RUN_DIR/stripped"
}

crate_count() { # cargo tree arguments... -> distinct crates listed
    cargo tree --quiet --prefix none "$@" | awk 'NF { print $1, $2 }' | sort -u | wc -l
}

size_row() { # name how binary [target-bytes]
    local s full
    full=$(stat -c %s "$3")
    s=$(stripped_size "$3")
    echo "$1,$2,$full,$s" >>"$SIZES"
    awk -v n="$1" -v h="$2" -v f="$full" -v s="$s" -v t="${4:-}" 'BEGIN {
        target = t == "" ? "" : sprintf("<= %d KiB: %s", t / 1024, s <= t ? "PASS" : "FAIL")
        printf "| %s | %s | %.0f | **%.0f** | %s |\n", n, h, f / 1024, s / 1024, target }'
}

part_size() {
    echo "== part size"
    local profile
    profile=$(awk '/^\[profile.release\]/ { on = 1; next } /^\[/ { on = 0 } on && NF && !/^#/ { printf "%s%s", sep, $0; sep = ", " }' Cargo.toml)
    if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
        echo "== building echo_server --no-default-features (release, target dir bench/build/target-size)"
        CARGO_TARGET_DIR=$SIZE_TARGET cargo build --release --quiet --no-default-features --example echo_server
        echo "== building echo_server, http_server (release, default features)"
        cargo build --release --quiet --example echo_server --example http_server
        echo "== building bench/std_echo.rs (rustc -O)"
        mkdir -p "$BUILD"
        rustc -O --edition 2021 bench/std_echo.rs -o "$BUILD/std_echo"
    fi
    echo "name,built_with,bytes,stripped_bytes" >"$SIZES"
    {
        echo
        echo "### size: release binaries, stripped (\`strip --strip-all\`)"
        echo
        echo "[profile.release]: $profile; rustc $(rustc --version | awk '{ print $2 }')"
        echo
        echo "| binary | built with | KiB | KiB stripped | target |"
        echo "|---|---|---:|---:|---|"
        size_row "echo_server (core only)" "cargo build --release --no-default-features --example echo_server" \
            "$SIZE_TARGET/release/examples/echo_server" 409600
        size_row "echo_server (default features)" "cargo build --release --example echo_server" "$ECHO_SERVER"
        size_row "http_server (default features)" "cargo build --release --example http_server" "$HTTP_SERVER"
        size_row "std_echo (bench/std_echo.rs: std only and blocking)" "rustc -O --edition 2021" "$BUILD/std_echo"
        echo
        local nd d ndl dl
        nd=$(crate_count -e normal -p packet-reactor --no-default-features)
        d=$(crate_count -e normal -p packet-reactor)
        ndl=$(crate_count -e normal,no-proc-macro -p packet-reactor --no-default-features)
        dl=$(crate_count -e normal,no-proc-macro -p packet-reactor)
        echo "| features | crates in \`cargo tree -e normal -p packet-reactor\` (packet included) | of them linked (\`-e normal,no-proc-macro\`) |"
        echo "|---|---:|---:|"
        echo "| --no-default-features | $nd | $ndl |"
        echo "| default (workers, objects) | $d | $dl |"
        echo "crates,no-default-features,$nd,$ndl" >>"$SIZES"
        echo "crates,default,$d,$dl" >>"$SIZES"
    } | tee -a "$TABLES"
    awk -F, -v t=409600 'BEGIN {
            print "| binary | stripped KiB |"
            print "|---|---:|" }
        $1 != "crates" && NR > 1 && $1 !~ /^http/ {
            printf "| %s | %.0f%s |\n", $1, $4 / 1024, NR == 2 ? (($4 <= t) ? " (<= 400: PASS)" : " (<= 400: FAIL)") : "" }
        $1 == "crates" { c[$2] = $3 " (" $4 " linked)" }
        END {
            printf "| crates, --no-default-features | %s |\n", c["no-default-features"]
            printf "| crates, default features | %s |\n\n", c["default"] }' "$SIZES" >>"$SUMMARY"
}

# ----- part profile -----

part_profile() {
    echo "== part profile: Cargo.toml's [profile.release] against Cargo's defaults (lto off, 16 codegen units)"
    if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
        echo "== building echo_server with Cargo's default release profile (bench/build/target-profile-base)"
        # Cargo.toml's profile overridden back to Cargo's defaults; the
        # features-off build first, each copied out of the target dir.
        CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
            CARGO_TARGET_DIR=$PROFILE_BASE_TARGET cargo build --release --quiet --no-default-features --example echo_server
        cp "$PROFILE_BASE_TARGET/release/examples/echo_server" "$BUILD/echo_server-base-nd"
        CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
            CARGO_TARGET_DIR=$PROFILE_BASE_TARGET cargo build --release --quiet --example echo_server
        cp "$PROFILE_BASE_TARGET/release/examples/echo_server" "$BUILD/echo_server-base"
        echo "== building echo_server --no-default-features (release, bench/build/target-size)"
        CARGO_TARGET_DIR=$SIZE_TARGET cargo build --release --quiet --no-default-features --example echo_server
        need gcc gcc
        gcc -O2 -Wall -Wextra -o "$BUILD/c_echo" bench/c_echo.c
    fi
    local ECHO_PART=profile scen
    for scen in $PROFILE_SCENARIOS; do
        echo "== profile A/B: $(scenario_title "$scen")"
        SCEN=$scen CASE_NAME="profile $(scenario_title "$scen")"
        rounds "$ROUNDS" "packet base c" echo_run
        {
            report_echo profile "$scen" "packet base c" | grep -v target
            echo
            echo "- packet: [profile.release] of Cargo.toml; base: Cargo's defaults (lto off, codegen-units 16)"
        } | tee -a "$TABLES"
    done
    {
        echo "| echo scenario | packet / base msgs/s | packet / base CPU per op | packet / c CPU per op | base / c CPU per op | other load % |"
        echo "|---|---:|---:|---:|---:|---:|"
        for scen in $PROFILE_SCENARIOS; do
            printf '| %s | %s | %s | %s | %s | %.0f |\n' "$(scenario_title "$scen")" \
                "$(fmt_ratio "$(paired_ratio profile "$scen" $C_RATE "$OURS" base)")" \
                "$(fmt_ratio "$(paired_ratio profile "$scen" $C_CPU "$OURS" base)")" \
                "$(fmt_ratio "$(paired_ratio profile "$scen" $C_CPU "$OURS" c)")" \
                "$(fmt_ratio "$(paired_ratio profile "$scen" $C_CPU base c)")" \
                "$(column_median profile "$scen" "$OURS" $C_OTHER)"
        done
        echo
        echo "| stripped echo_server | Cargo's defaults (base), KiB | Cargo.toml's profile, KiB |"
        echo "|---|---:|---:|"
        printf '| default features | %.0f | %.0f |\n' "$(($(stripped_size "$BUILD/echo_server-base") / 1024))" \
            "$(($(stripped_size "$ECHO_SERVER") / 1024))"
        printf '| --no-default-features | %.0f | %.0f |\n' "$(($(stripped_size "$BUILD/echo_server-base-nd") / 1024))" \
            "$(($(stripped_size "$SIZE_TARGET/release/examples/echo_server") / 1024))"
        echo
    } >>"$SUMMARY"
    {
        echo
        echo "### profile: stripped sizes, Cargo.toml's [profile.release] against Cargo's defaults"
        echo
        echo "| echo_server | Cargo's defaults, KiB | Cargo.toml's profile, KiB |"
        echo "|---|---:|---:|"
        printf '| default features | %.0f | %.0f |\n' "$(($(stripped_size "$BUILD/echo_server-base") / 1024))" \
            "$(($(stripped_size "$ECHO_SERVER") / 1024))"
        printf '| --no-default-features | %.0f | %.0f |\n' "$(($(stripped_size "$BUILD/echo_server-base-nd") / 1024))" \
            "$(($(stripped_size "$SIZE_TARGET/release/examples/echo_server") / 1024))"
    } | tee -a "$TABLES"
}

# The charts' section of the report: the ratios shown, the others linked
# (all beside the report, so the links are relative).
charts_section() { # paths, one a line
    local c name
    echo
    echo "## Charts"
    echo
    for c in $1; do
        name=${c##*/}
        case $name in
        *-ratios.svg) echo "![throughput relative to the reference server]($name)" && echo ;;
        esac
    done
    for c in $1; do
        name=${c##*/}
        case $name in
        *-ratios.svg) echo "- [$name]($name): rates as a multiple of the C server (echo) and nginx (HTTP, HTTPS), with the c2 / c noise band" ;;
        *-cpu.svg) echo "- [$name]($name): server CPU time per message, request or handshake" ;;
        *-p99.svg) echo "- [$name]($name): p99 latency" ;;
        *-rss.svg) echo "- [$name]($name): peak RSS of the server" ;;
        esac
    done
    echo
}

# ----- main -----

main() {
    local part
    for part in $PARTS; do
        declare -F "part_$part" >/dev/null || die "unknown part '$part' (echo http https scaling size profile)"
    done
    build
    local cpus
    cpus=$(nproc)
    ((cpus >= 2)) || echo "warning: $cpus CPU(s); server and load generator share a core" >&2
    echo "$CSV_HEADER" >"$RAW"
    : >"$TABLES"
    : >"$SUMMARY"
    local t0=$SECONDS
    for part in $PARTS; do
        "part_$part"
    done
    mkdir -p "$RESULTS"
    cp "$RAW" "$RESULTS/$OUT.csv"
    local charts=""
    if [[ $CHARTS != 0 ]]; then
        echo "== charts (bench/charts.py)"
        # Charts of the CSV just written, so that a report and its charts
        # always show the same run.
        if ! charts=$("$CHART_PY" bench/charts.py "$RESULTS/$OUT.csv" \
            --title "$(date -u '+%Y-%m-%d %H:%M UTC'), ${SECS}s runs, median of $ROUNDS rounds"); then
            echo "compare.sh: no charts (bench/charts.py failed)" >&2
            charts=""
        fi
    fi
    {
        echo "# Benchmark results"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), parts: $PARTS, $((SECONDS - t0)) s"
        echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1), kernel $(uname -r)"
        echo "- servers pinned to CPU $SERVER_CPU, the load generator (loadgen, $LOADGEN_THREADS thread; wrk -t1) to CPU $LOADGEN_CPU" \
            "(except the shared configurations of the scaling part); ${SECS}s measured per run; median of $ROUNDS rounds" \
            "($SCALING_ROUNDS for scaling), servers alternating; ratio rows: median over rounds of the ratio within a round" \
            "(packet / PEER: above 1 for rates and below 1 for CPU and latency is packet ahead); nice $NICE"
        echo "- server CPU per op = server CPU time over the generator's run / ops completed in that run;" \
            "server CPU = user+system run time of all its threads and processes (schedstat, ns); server CPU % over the same run (100 = one CPU);" \
            "peak RSS = VmHWM of a fresh server process (summed over its processes);" \
            "other load % = busy time of the two bench CPUs not used by server or generator (noise indicator, 100 = both CPUs fully taken)"
        echo
        echo "## Summary"
        echo
        cat "$SUMMARY"
        [[ -z $charts ]] || charts_section "$charts"
        echo "## Tables"
        cat "$TABLES"
    } >"$RESULTS/$OUT.md"
    if has_part size; then
        cp "$SIZES" "$RESULTS/$OUT-size.csv"
    fi
    echo
    local written="bench/results/$OUT.md, bench/results/$OUT.csv" c
    has_part size && written+=", bench/results/$OUT-size.csv"
    for c in $charts; do
        written+=", bench/results/${c##*/}"
    done
    echo "== written: $written ($((SECONDS - t0)) s)"
}

main "$@"
