//! Load generator for echo servers, built on the `packet` reactor.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:11006 \
//!     --conns 50 --size 64 --depth 16 --secs 5
//! cargo run --release --example loadgen -- --mode rate --conns 50 --secs 5
//! ```
//!
//! Echo mode (the default) opens `--conns` connections and keeps `--depth`
//! messages of `--size` bytes in flight on each: after connecting it sends
//! `depth` messages, and every time one whole echoed message is back it
//! records that message's latency (send to complete receipt) and sends the
//! next. Every message carries a pattern derived from the connection index
//! and its sequence number, and every echoed byte is checked against it, so
//! lost, duplicated, reordered or corrupted bytes count as `errors`.
//!
//! Rate mode (`--mode rate`, or `--connect-rate`) runs `--conns` slots that
//! each repeat: connect, one-byte round trip, close. Its latency is from the
//! `connect` call to the echoed byte.
//!
//! After `--warmup` seconds (not measured) the run is measured for `--secs`
//! seconds; then no new message is sent, messages in flight are drained
//! (at most `--drain` seconds, after which they count as errors) and the
//! connections are closed. The last line on stdout is the result:
//!
//! ```text
//! msgs_per_s=N MB_per_s=N p50_us=N p99_us=N errors=N     (echo mode)
//! conns_per_s=N p50_us=N p99_us=N errors=N               (rate mode)
//! ```
//!
//! `MB_per_s` is echoed payload, one direction, in 10^6 bytes per second.
//! A line starting with `loadgen:` on stderr gives the totals (including
//! warm-up and drain) and the load generator's own CPU use, so that a
//! benchmark can tell a saturated client from a slow server. The exit
//! status is 1 if there were errors or no message completed, 2 for bad
//! arguments.
//!
//! Each `--threads` thread runs its own reactor with its share of the
//! connections; one is the default and is enough to saturate one server
//! core with pipelined echo traffic.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use packet::{CloseReason, Connection, Handler, Reactor};

const USAGE: &str = "usage: loadgen [--addr HOST:PORT] [--conns N] [--size BYTES] [--depth N] \
[--secs S] [--warmup S] [--drain S] [--threads N] [--mode echo|rate | --connect-rate]";

/// The period of the pattern: a prime, so that two messages of one
/// connection have the same bytes only if their sequence numbers are a
/// multiple of it apart.
const PERIOD: usize = 65_521;

/// Bytes past the period kept in the table (the pattern repeated), so that
/// a batch of consecutive messages is one contiguous slice of it.
const MAX_BATCH: usize = 1 << 20;

/// Unexpected closes reported on stderr per thread before going quiet.
const MAX_LOGGED: u32 = 5;

// ----- configuration -----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Echo,
    Rate,
}

#[derive(Clone, Debug)]
struct Config {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    depth: usize,
    secs: f64,
    warmup: f64,
    drain: f64,
    threads: usize,
    mode: Mode,
}

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        addr: "127.0.0.1:11006".parse().expect("valid default address"),
        conns: 50,
        size: 64,
        depth: 16,
        secs: 5.0,
        warmup: 0.0,
        drain: 2.0,
        threads: 1,
        mode: Mode::Echo,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if name == "--help" || name == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if name == "--connect-rate" {
            cfg.mode = Mode::Rate;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        let bad = |what: &str| format!("{name}: {what}, got {value:?}");
        match name.as_str() {
            "--addr" => {
                cfg.addr = value
                    .parse()
                    .map_err(|_| bad("expected an IP address and port"))?;
            }
            "--conns" => cfg.conns = positive(&value).ok_or_else(|| bad("expected N > 0"))?,
            "--size" => cfg.size = positive(&value).ok_or_else(|| bad("expected N > 0"))?,
            "--depth" => cfg.depth = positive(&value).ok_or_else(|| bad("expected N > 0"))?,
            "--threads" => cfg.threads = positive(&value).ok_or_else(|| bad("expected N > 0"))?,
            "--secs" => cfg.secs = seconds(&value, false).ok_or_else(|| bad("expected S > 0"))?,
            "--warmup" => {
                cfg.warmup = seconds(&value, true).ok_or_else(|| bad("expected S >= 0"))?
            }
            "--drain" => cfg.drain = seconds(&value, true).ok_or_else(|| bad("expected S >= 0"))?,
            "--mode" => {
                cfg.mode = match value.as_str() {
                    "echo" => Mode::Echo,
                    "rate" | "connect-rate" => Mode::Rate,
                    _ => return Err(bad("expected echo or rate")),
                }
            }
            _ => return Err(format!("unknown option {name}")),
        }
    }
    if cfg.size > 64 << 20 {
        return Err("--size: at most 64 MiB".into());
    }
    cfg.threads = cfg.threads.min(cfg.conns);
    Ok(cfg)
}

fn positive(s: &str) -> Option<usize> {
    s.parse().ok().filter(|&n| n > 0)
}

fn seconds(s: &str, zero_ok: bool) -> Option<f64> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (*v > 0.0 || (zero_ok && *v == 0.0)) && *v < 1e6)
}

// ----- message pattern -----

/// Pseudo-random bytes with period [`PERIOD`]. Connection `conn` sends the
/// pattern as one stream from [`pattern_start`] on: message `seq` starts
/// at `(start + seq * size) % PERIOD`. Neighbouring messages therefore
/// differ, so any shift, loss, duplication, reordering or corruption of
/// echoed bytes shows up as a mismatch; and the messages of a batch are one
/// contiguous slice, sent without copying them together first.
fn pattern_table(size: usize, depth: usize) -> Arc<[u8]> {
    let extra = size.max(size.saturating_mul(depth).min(MAX_BATCH));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut table: Vec<u8> = (0..PERIOD)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect();
    table.reserve(extra);
    for i in 0..extra {
        table.push(table[i % PERIOD]);
    }
    table.into()
}

/// Where connection (or rate slot) `conn` starts in the pattern.
fn pattern_start(conn: u64) -> usize {
    (conn.wrapping_mul(0x9E37_79B9) % PERIOD as u64) as usize
}

// ----- latency histogram -----

/// Linear sub-buckets per power of two: values are kept to within 1/32
/// (reported at the bucket's midpoint, so within about 1.6%).
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A log-linear histogram of nanosecond values.
#[derive(Clone)]
struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = (v >> shift) as usize & (SUB - 1);
        ((shift as usize + 1) << SUB_BITS) + sub
    }

    /// The lowest value and the width of bucket `i`.
    fn bucket(i: usize) -> (u64, u64) {
        if i < SUB {
            return (i as u64, 1);
        }
        let shift = (i >> SUB_BITS) - 1;
        let sub = (i & (SUB - 1)) as u64;
        ((SUB as u64 + sub) << shift, 1 << shift)
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// The value below which a fraction `q` of the samples fall (0 when
    /// empty).
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = Self::bucket(i);
                return (low + width / 2).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

// ----- per-thread state -----

/// Points of the run, in nanoseconds since `base`.
#[derive(Clone, Copy)]
struct Timing {
    base: Instant,
    /// End of warm-up: measuring starts.
    start: u64,
    /// Measuring ends; no new messages or connections after this.
    end: u64,
}

impl Timing {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn in_window(&self, t: u64) -> bool {
        t >= self.start && t < self.end
    }
}

/// What one thread counted.
struct Stats {
    hist: Histogram,
    /// Messages (or connections) completed inside the window.
    window: u64,
    /// Completed over the whole run.
    total: u64,
    errors: u64,
    logged: u32,
    /// Connections (or rate slots) still running.
    open: usize,
}

impl Stats {
    fn error(&mut self, what: std::fmt::Arguments<'_>) {
        self.errors += 1;
        if self.logged < MAX_LOGGED {
            self.logged += 1;
            eprintln!("loadgen: error: {what}");
        }
    }
}

/// Shared by the handlers of one reactor thread.
struct Shared {
    cfg: Config,
    table: Arc<[u8]>,
    timing: Timing,
    stats: RefCell<Stats>,
}

impl Shared {
    /// A connection or slot finished for good; the last one stops the
    /// reactor.
    fn finished(&self, conn: &mut Connection<'_>) {
        let mut stats = self.stats.borrow_mut();
        stats.open -= 1;
        if stats.open == 0 {
            conn.reactor().stop();
        }
    }
}

// ----- echo mode -----

struct EchoClient {
    sh: Rc<Shared>,
    idx: u64,
    /// Next sequence number to send, and the next expected back.
    send_seq: u64,
    recv_seq: u64,
    /// Bytes of message `recv_seq` received so far.
    recv_off: usize,
    /// Message `recv_seq` had a wrong byte.
    corrupt: bool,
    /// Send times of the messages in flight, by `seq % depth`.
    sent_at: Box<[u64]>,
    /// Where in the pattern message `send_seq` starts, and where the next
    /// expected byte is (both below `PERIOD`).
    send_pos: usize,
    recv_pos: usize,
    /// Messages of this batch not yet handed to `send_data`: a slice of
    /// the table.
    batch_start: usize,
    batch_len: usize,
    /// Finished sending: closed by us, expectedly.
    done: bool,
    /// An error was counted for this connection already.
    failed: bool,
}

impl EchoClient {
    fn new(sh: Rc<Shared>, idx: u64) -> EchoClient {
        let depth = sh.cfg.depth;
        EchoClient {
            sh,
            idx,
            send_seq: 0,
            recv_seq: 0,
            recv_off: 0,
            corrupt: false,
            sent_at: vec![0; depth].into_boxed_slice(),
            send_pos: pattern_start(idx),
            recv_pos: pattern_start(idx),
            batch_start: 0,
            batch_len: 0,
            done: false,
            failed: false,
        }
    }

    /// Adds message `send_seq` to the batch that [`EchoClient::flush`]
    /// sends with one `send_data` (one syscall, and no copy at all for
    /// batches that `send_data` writes at once).
    fn send_message(&mut self, conn: &mut Connection<'_>, now: u64) {
        let size = self.sh.cfg.size;
        // The batch ends where message `send_seq` starts, modulo the
        // period; the table repeats the pattern past it.
        if self.batch_len > 0 && self.batch_start + self.batch_len + size <= self.sh.table.len() {
            self.batch_len += size;
        } else {
            self.flush(conn);
            self.batch_start = self.send_pos;
            self.batch_len = size;
        }
        self.send_pos = (self.send_pos + size) % PERIOD;
        let slot = (self.send_seq % self.sent_at.len() as u64) as usize;
        self.sent_at[slot] = now;
        self.send_seq += 1;
    }

    fn flush(&mut self, conn: &mut Connection<'_>) {
        if self.batch_len > 0 {
            let end = self.batch_start + self.batch_len;
            conn.send_data(&self.sh.table[self.batch_start..end]);
            self.batch_len = 0;
        }
    }

    fn fail(&mut self, conn: &mut Connection<'_>, what: std::fmt::Arguments<'_>) {
        self.sh.stats.borrow_mut().error(what);
        self.failed = true;
        conn.close_connection();
    }
}

impl Handler for EchoClient {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        let now = self.sh.timing.now();
        if now >= self.sh.timing.end {
            self.done = true;
            conn.close_connection();
            return;
        }
        for _ in 0..self.sh.cfg.depth {
            self.send_message(conn, now);
        }
        self.flush(conn);
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, mut data: &[u8]) {
        if self.failed {
            return;
        }
        let sh = Rc::clone(&self.sh);
        let timing = sh.timing;
        let size = sh.cfg.size;
        let now = timing.now();
        let sending = now < timing.end;
        let mut stats = sh.stats.borrow_mut();
        while !data.is_empty() {
            if self.recv_seq == self.send_seq {
                drop(stats);
                let (n, idx) = (data.len(), self.idx);
                return self.fail(conn, format_args!("conn {idx}: {n} bytes not sent"));
            }
            // Within the table: recv_pos < PERIOD and take <= size.
            let take = data.len().min(size - self.recv_off);
            let pos = self.recv_pos;
            if data[..take] != sh.table[pos..pos + take] {
                self.corrupt = true;
            }
            data = &data[take..];
            self.recv_off += take;
            self.recv_pos = (pos + take) % PERIOD;
            if self.recv_off < size {
                break;
            }
            let slot = (self.recv_seq % self.sent_at.len() as u64) as usize;
            let latency = now.saturating_sub(self.sent_at[slot]);
            if self.corrupt {
                self.corrupt = false;
                stats.error(format_args!(
                    "conn {}: message {} echoed wrong (lost, reordered or corrupt bytes)",
                    self.idx, self.recv_seq
                ));
            }
            self.recv_seq += 1;
            self.recv_off = 0;
            stats.total += 1;
            if timing.in_window(now) {
                stats.window += 1;
                stats.hist.record(latency);
            }
            if sending {
                self.send_message(conn, now);
            }
        }
        drop(stats);
        self.flush(conn);
        if !sending && self.recv_seq == self.send_seq {
            self.done = true;
            conn.close_connection();
        }
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        if !self.done && !self.failed {
            let in_flight = self.send_seq - self.recv_seq;
            self.sh.stats.borrow_mut().error(format_args!(
                "conn {}: {reason} with {in_flight} messages in flight",
                self.idx
            ));
        }
        self.sh.finished(conn);
    }
}

// ----- rate mode -----

/// One slot: connect, send one byte, wait for it, close, repeat.
struct Dialer {
    sh: Rc<Shared>,
    slot: u64,
    seq: u64,
    /// When `connect` was called.
    started: u64,
    echoed: bool,
    failed: bool,
}

impl Dialer {
    fn byte(&self) -> u8 {
        self.sh.table[(pattern_start(self.slot) + self.seq as usize) % PERIOD]
    }
}

impl Handler for Dialer {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.send_data(&[self.byte()]);
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        if self.failed {
            return;
        }
        if self.echoed || data != [self.byte()] {
            let n = data.len();
            self.sh.stats.borrow_mut().error(format_args!(
                "slot {}: wrong echo ({n} bytes) on connection {}",
                self.slot, self.seq
            ));
            self.failed = true;
            conn.close_connection();
            return;
        }
        self.echoed = true;
        let timing = self.sh.timing;
        let now = timing.now();
        let mut stats = self.sh.stats.borrow_mut();
        stats.total += 1;
        if timing.in_window(now) {
            stats.window += 1;
            stats.hist.record(now.saturating_sub(self.started));
        }
        drop(stats);
        conn.close_connection();
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let clean = self.echoed && matches!(reason, CloseReason::Local);
        if !clean && !self.failed {
            self.sh.stats.borrow_mut().error(format_args!(
                "slot {}: connection {} ended before its echo: {reason}",
                self.slot, self.seq
            ));
        }
        let now = self.sh.timing.now();
        if now < self.sh.timing.end && !matches!(reason, CloseReason::ReactorStopped) {
            let next = Dialer {
                sh: Rc::clone(&self.sh),
                slot: self.slot,
                seq: self.seq + 1,
                started: now,
                echoed: false,
                failed: false,
            };
            let addr = self.sh.cfg.addr;
            match conn.reactor().connect(addr, next) {
                Ok(_) => return,
                Err(e) => self
                    .sh
                    .stats
                    .borrow_mut()
                    .error(format_args!("slot {}: cannot connect: {e}", self.slot)),
            }
        }
        self.sh.finished(conn);
    }
}

// ----- threads -----

/// Runs one reactor with connections `first, first + stride, ...` below
/// `cfg.conns` until they all finish or the drain deadline passes.
fn run_thread(
    cfg: Config,
    table: Arc<[u8]>,
    timing: Timing,
    first: usize,
    stride: usize,
) -> io::Result<Stats> {
    let mut reactor = Reactor::new()?;
    let sh = Rc::new(Shared {
        cfg: cfg.clone(),
        table,
        timing,
        stats: RefCell::new(Stats {
            hist: Histogram::new(),
            window: 0,
            total: 0,
            errors: 0,
            logged: 0,
            open: 0,
        }),
    });
    for idx in (first..cfg.conns).step_by(stride) {
        let sh2 = Rc::clone(&sh);
        let started = match cfg.mode {
            Mode::Echo => reactor.connect(cfg.addr, EchoClient::new(sh2, idx as u64)),
            Mode::Rate => reactor.connect(
                cfg.addr,
                Dialer {
                    sh: sh2,
                    slot: idx as u64,
                    seq: 0,
                    started: timing.now(),
                    echoed: false,
                    failed: false,
                },
            ),
        };
        let mut stats = sh.stats.borrow_mut();
        match started {
            Ok(_) => stats.open += 1,
            Err(e) => stats.error(format_args!("conn {idx}: cannot connect: {e}")),
        }
    }
    let open = sh.stats.borrow().open;
    if open > 0 {
        // The reactor has no timers yet: a watchdog thread stops it if the
        // server stops answering, and messages still in flight then count
        // as errors.
        let handle = reactor.handle();
        let deadline =
            timing.base + Duration::from_nanos(timing.end) + Duration::from_secs_f64(cfg.drain);
        let (finished_tx, finished_rx) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let wait = deadline.saturating_duration_since(Instant::now());
            if let Err(mpsc::RecvTimeoutError::Timeout) = finished_rx.recv_timeout(wait) {
                eprintln!("loadgen: drain deadline passed, stopping");
                handle.stop();
            }
        });
        let result = reactor.run_until_stopped();
        drop(finished_tx);
        let _ = watchdog.join();
        result?;
    }
    drop(reactor);
    let sh = Rc::try_unwrap(sh).unwrap_or_else(|_| unreachable!("handlers outlived the reactor"));
    Ok(sh.stats.into_inner())
}

/// User plus system CPU time of the live threads of this process, in
/// seconds: their run time from `/proc/self/task/*/schedstat`, in
/// nanoseconds (falls back to [`cpu_seconds_total`] where schedstat is
/// missing). Threads that ended are not counted, so this is for samples
/// taken while the reactor threads run; a thread that ends between the
/// listing and the read is skipped, not a reason to switch to the
/// tick-based total (mixing the two made a window's CPU negative).
fn cpu_seconds_live() -> f64 {
    let from_schedstat = || -> Option<u64> {
        let mut total = 0u64;
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(total)
    };
    match from_schedstat() {
        Some(ns) if ns > 0 => ns as f64 / 1e9,
        _ => cpu_seconds_total(),
    }
}

/// User plus system CPU time of this process, ended threads included:
/// `utime + stime` from `/proc/self/stat`, in USER_HZ ticks (100 a
/// second on Linux).
fn cpu_seconds_total() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    // Fields 14 and 15; `rest` starts at field 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) as f64 / 100.0,
        _ => f64::NAN,
    }
}

fn main() {
    let cfg = match parse_args() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let table = pattern_table(cfg.size, cfg.depth);
    let base = Instant::now();
    let start = Duration::from_secs_f64(cfg.warmup);
    let end = start + Duration::from_secs_f64(cfg.secs);
    let timing = Timing {
        base,
        start: start.as_nanos() as u64,
        end: end.as_nanos() as u64,
    };

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let threads: Vec<_> = (0..cfg.threads)
        .map(|first| {
            let (cfg, table, done_tx) = (cfg.clone(), Arc::clone(&table), done_tx.clone());
            std::thread::spawn(move || {
                let stride = cfg.threads;
                let r = run_thread(cfg, table, timing, first, stride);
                let _ = done_tx.send(());
                r
            })
        })
        .collect();
    drop(done_tx);

    // Own CPU use over the measured window, sampled from this otherwise
    // idle thread.
    let mut running = cfg.threads;
    let mut samples = [(base, 0.0); 2];
    for (sample, at) in samples.iter_mut().zip([base + start, base + end]) {
        while running > 0 {
            let wait = at.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            match done_rx.recv_timeout(wait) {
                Ok(()) => running -= 1,
                Err(_) => break,
            }
        }
        *sample = (Instant::now(), cpu_seconds_live());
    }

    let mut hist = Histogram::new();
    let (mut window, mut total, mut errors) = (0u64, 0u64, 0u64);
    for t in threads {
        match t.join() {
            Ok(Ok(stats)) => {
                hist.merge(&stats.hist);
                window += stats.window;
                total += stats.total;
                errors += stats.errors;
            }
            Ok(Err(e)) => {
                eprintln!("loadgen: reactor failed: {e}");
                errors += 1;
            }
            Err(_) => {
                eprintln!("loadgen: a reactor thread panicked");
                errors += 1;
            }
        }
    }
    let wall = base.elapsed().as_secs_f64();
    let cpu_total = cpu_seconds_total();
    let window_wall = samples[1].0.duration_since(samples[0].0).as_secs_f64();
    let window_cpu = samples[1].1 - samples[0].1;
    let cpu_pct = if window_wall > 0.0 {
        100.0 * window_cpu / window_wall
    } else {
        0.0
    };
    let per_s = window as f64 / cfg.secs;
    let us = |ns: u64| ns as f64 / 1000.0;
    eprintln!(
        "loadgen: mode={:?} threads={} total={total} window={window} wall_s={wall:.2} \
         cpu_s={cpu_total:.2} window_cpu_pct={cpu_pct:.1} cpu_ns_per_op={:.0} \
         p90_us={:.1} p999_us={:.1} max_us={:.1} mean_us={:.1}",
        cfg.mode,
        cfg.threads,
        if window > 0 {
            window_cpu * 1e9 / window as f64
        } else {
            0.0
        },
        us(hist.quantile(0.90)),
        us(hist.quantile(0.999)),
        us(hist.max),
        hist.mean() / 1000.0,
    );
    let (p50, p99) = (us(hist.quantile(0.50)), us(hist.quantile(0.99)));
    match cfg.mode {
        Mode::Echo => println!(
            "msgs_per_s={per_s:.0} MB_per_s={:.1} p50_us={p50:.1} p99_us={p99:.1} errors={errors}",
            per_s * cfg.size as f64 / 1e6
        ),
        Mode::Rate => {
            println!("conns_per_s={per_s:.0} p50_us={p50:.1} p99_us={p99:.1} errors={errors}")
        }
    }
    if errors > 0 || window == 0 {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut prev_end = 0;
        for i in 0..BUCKETS {
            let (low, width) = Histogram::bucket(i);
            assert_eq!(low, prev_end, "bucket {i}");
            assert_eq!(Histogram::index(low), i);
            assert_eq!(Histogram::index(low + (width - 1)), i);
            assert!(width == 1 || width * (SUB as u64) <= low);
            prev_end = low.wrapping_add(width);
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_within_two_percent() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0), (1.0, 1_000_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
    }

    #[test]
    fn pattern_repeats_and_neighbouring_messages_differ() {
        for (size, depth) in [(64, 16), (16 << 10, 4), (100_000, 2)] {
            let table = pattern_table(size, depth);
            assert!(table.len() >= PERIOD + size);
            assert!((PERIOD..table.len()).all(|i| table[i] == table[i - PERIOD]));
            let mut pos = pattern_start(3);
            for _ in 0..200 {
                let next = (pos + size) % PERIOD;
                assert_ne!(table[pos..pos + size], table[next..next + size]);
                pos = next;
            }
        }
    }
}
