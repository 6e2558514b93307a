//! Key-value server: issue #12's scenario, written against the public API.
//!
//! ```text
//! cargo run --release --example kv_server -- [--port N] [--idle-secs S] [--stats-secs S] [--grace-secs S]
//! ```
//!
//! Listens on 127.0.0.1:11009 (`--port 0` picks a free port) and prints
//! `listening on ADDR` once its two prime workers run. One command a line
//! (`\n` or `\r\n`), one answer a line, in request order even when pipelined:
//!
//! | command | answer |
//! |---|---|
//! | `SET key value` | `OK` (the value is the rest of the line) |
//! | `GET key` | the value, or `NIL` |
//! | `DEL key` | `1` if it was there, else `0` |
//! | `PRIME n` | the n-th prime (`PRIME 1` is 2), 1 <= n <= 2,000,000, computed by a pool of 2 worker processes |
//! | `STATS` | `keys=N conns=M served=K inflight=P` as the line is read: answers written, PRIMEs with the workers |
//! | anything else | `ERR <reason>`; the connection goes on |
//!
//! A line over 64 KiB gets `ERR line too long: ...` after the answers due
//! before it, then the connection closes: the rest of the stream cannot be
//! trusted. A client that half-closes gets every answer, then the close. A
//! connection with nothing moving for `--idle-secs` (60; 0 = never) while no
//! PRIME is out is closed. Every `--stats-secs` (10) a `stats:` line goes to
//! stderr. SIGTERM or SIGINT stops it gracefully: no more accepts, PRIMEs in
//! flight answered and written (those still computing after
//! `--grace-secs`, 10, get an error instead; a second signal stops at
//! once, SIGQUIT gives them 300 s, SIGHUP is ignored), then exit 0.
//!
//! The prime workers keep the library's supervision defaults: one that
//! stops answering its heartbeat for 15 s is killed and replaced (its
//! PRIMEs get `ERR worker prime[N] died before replying (...)`), and a PRIME
//! with no answer in 60 s gets `ERR worker prime[N] did not answer within
//! 60s`.
//!
//! ```text
//! $ exec 3<>/dev/tcp/127.0.0.1/11009   # bash's own TCP client
//! $ printf 'SET a 1\nPRIME 150000\nGET a\n' >&3; head -n 3 <&3
//! OK
//! 2015177
//! 1
//! ```

use packet::line::{LineContext, LineError, LineHandler, LineProtocol};
use packet::worker::{Worker, WorkerContext, WorkerMessage, WorkerRegistry, WorkerSpec};
use packet::{CloseReason, Connection, Handler, Reactor, Reply};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::Duration;

#[path = "common/ordered.rs"]
mod ordered;
// Its `parse_args` is for `[ADDR] [--workers N]`; this server's flags differ.
#[allow(dead_code)]
#[path = "common/pool.rs"]
mod pool;

use ordered::Pipeline;

const WORKER: &str = "prime";
const POOL: usize = 2;
/// The largest n of `PRIME n`: its sieve holds about 17 MB.
const MAX_PRIME_N: u32 = 2_000_000;
/// Answers a connection may owe before it stops reading.
const MAX_IN_FLIGHT: usize = 1024;
/// The longest line, without its `\n` (the line protocol's default).
const MAX_LINE: usize = 64 * 1024;

/// The n-th prime (`nth_prime(1)` is 2), by a sieve of the odd numbers up
/// to Rosser's bound; n above [`MAX_PRIME_N`] is refused.
fn nth_prime(n: u32) -> Result<u64, String> {
    match n {
        1 => return Ok(2),
        2..=MAX_PRIME_N => {}
        _ => return Err(format!("n must be from 1 to {MAX_PRIME_N}")),
    }
    let x = f64::from(n.max(6));
    // p_n < n (ln n + ln ln n) for n >= 6; p_6 = 13 bounds the smaller ones.
    let limit = (x * (x.ln() + x.ln().ln())) as usize;
    let mut composite = vec![false; limit / 2 + 1]; // [i]: is 2i+1 composite
    let mut count = 1; // 2, the only even prime
    for i in 1..composite.len() {
        if !composite[i] {
            let p = 2 * i + 1;
            count += 1;
            if count == n {
                return Ok(p as u64);
            }
            if let Some(multiples) = composite.get_mut(p * p / 2..) {
                multiples.iter_mut().step_by(p).for_each(|c| *c = true);
            }
        }
    }
    Err(format!("no prime #{n} below {limit}"))
}

/// Runs in each worker process: answers `n` with `Ok(p_n)` or `Err(reason)`.
struct PrimeWorker;

impl Worker for PrimeWorker {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, message: WorkerMessage) {
        let n = message.decode::<u32>().map_err(|e| e.to_string());
        let _ = ctx.send_data(&n.and_then(nth_prime)); // always encodes
    }
}

/// What the master does with a request.
enum Action {
    Answer(String),
    Prime(u32),
}

/// What every connection and the stats timer share (one reactor thread).
#[derive(Default)]
struct Store {
    map: HashMap<String, String>,
    served: u64,
    inflight: usize,
}

impl Store {
    fn stats(&self, r: &Reactor) -> String {
        let (keys, conns) = (self.map.len(), r.connection_count());
        format!(
            "keys={keys} conns={conns} served={} inflight={}",
            self.served, self.inflight
        )
    }

    /// Runs a command the master answers itself, or says which prime to ask for.
    fn execute(&mut self, r: &Reactor, line: &[u8]) -> Result<Action, String> {
        let line = std::str::from_utf8(line).map_err(|_| "line is not UTF-8")?;
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let key = || match rest {
            k if !k.is_empty() && !k.contains(char::is_whitespace) => Ok(k),
            _ => Err(format!("usage: {cmd} key")),
        };
        Ok(Action::Answer(match cmd.to_ascii_uppercase().as_str() {
            "SET" => match rest.split_once(' ') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                    self.map.insert(k.to_string(), v.to_string());
                    "OK".into()
                }
                _ => return Err("usage: SET key value".into()),
            },
            "GET" => self
                .map
                .get(key()?)
                .map_or_else(|| "NIL".into(), Clone::clone),
            "DEL" => u8::from(self.map.remove(key()?).is_some()).to_string(),
            "STATS" if rest.is_empty() => self.stats(r),
            "STATS" => return Err("usage: STATS".into()),
            "PRIME" => match rest.parse::<u32>() {
                Ok(n) if (1..=MAX_PRIME_N).contains(&n) => return Ok(Action::Prime(n)),
                _ => return Err(format!("usage: PRIME n, 1 <= n <= {MAX_PRIME_N}")),
            },
            "" => return Err("empty line".into()),
            _ => return Err(format!("unknown command {cmd:?}")),
        }))
    }
}

/// One client: every answer goes through the connection's ordered queue.
struct KvClient {
    store: Rc<RefCell<Store>>,
    idle: Option<Duration>,
    lines: Pipeline,
    /// PRIMEs with the workers; the idle clock is off while there are any.
    primes: usize,
}

impl Handler for KvClient {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_ordered_replies(true);
        conn.set_inactivity_timeout(self.idle);
    }

    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        let text = match reply.take::<String>() {
            // Answered here, in its place among the primes.
            Ok(local) => local,
            Err(reply) => {
                self.primes -= 1;
                self.store.borrow_mut().inflight -= 1;
                if self.primes == 0 {
                    conn.set_inactivity_timeout(self.idle); // restarts the clock
                }
                // The worker's own error, or why no worker answered.
                match reply.decode::<Result<u64, String>>() {
                    Ok(Ok(p)) => p.to_string(),
                    Ok(Err(e)) => format!("ERR {e}"),
                    Err(e) => format!("ERR {e}"),
                }
            }
        };
        conn.send_data(format!("{text}\n").as_bytes());
        self.store.borrow_mut().served += 1;
        self.lines.answered(conn);
    }

    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        self.lines.input_ended(conn); // closes once every answer is written
    }

    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        self.lines.outbound(conn, true);
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        self.lines.outbound(conn, false);
    }

    fn unbind(&mut self, _conn: &mut Connection<'_>, _reason: &CloseReason) {
        // A closed connection's replies are dropped: uncount its PRIMEs.
        self.store.borrow_mut().inflight -= self.primes;
    }
}

impl LineHandler for KvClient {
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.lines.request();
        let action = self.store.borrow_mut().execute(ctx.reactor(), line);
        let answer = match action {
            Ok(Action::Answer(text)) => text,
            Err(e) => format!("ERR {e}"),
            Ok(Action::Prime(n)) => match ctx.ask_worker(WORKER, &n) {
                Ok(_) => {
                    self.primes += 1;
                    self.store.borrow_mut().inflight += 1;
                    ctx.set_inactivity_timeout(None);
                    return self.lines.regulate(ctx);
                }
                Err(e) => format!("ERR {e}"), // not running, or stopping
            },
        };
        ctx.send_local_reply(answer);
        self.lines.regulate(ctx);
    }

    fn line_error(&mut self, ctx: &mut LineContext<'_>, error: LineError) {
        // receive_eof follows: the answers before this one still go out.
        self.lines.request();
        ctx.send_local_reply(format!("ERR {error}"));
    }
}

/// `--port N`, `--idle-secs S`, `--stats-secs S` and `--grace-secs S`,
/// defaults 11009, 60, 10 and 10; exits with a usage line on anything else. No side effects: this
/// runs again in a replacement fork server (see `WorkerRegistry::start`).
fn flags() -> [u64; 4] {
    const NAMES: [&str; 4] = ["--port", "--idle-secs", "--stats-secs", "--grace-secs"];
    let mut values = [11009, 60, 10, 10];
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let at = NAMES.iter().position(|n| *n == pair[0]);
        match (at, pair.get(1).and_then(|v| v.parse().ok())) {
            (Some(i), Some(v)) if i != 0 || v <= 65535 => values[i] = v,
            _ => {
                eprintln!(
                    "usage: kv_server [--port N] [--idle-secs S] [--stats-secs S] [--grace-secs S]"
                );
                std::process::exit(2)
            }
        }
    }
    values
}

fn main() -> io::Result<()> {
    let [port, idle, stats, grace] = flags();
    let idle = (idle > 0).then(|| Duration::from_secs(idle));
    // First thing after the flags: the fork server is forked here.
    let workers = WorkerRegistry::new()
        .register(WorkerSpec::new(WORKER, || PrimeWorker).pool(POOL))
        .start()?;
    Reactor::run(|reactor| {
        reactor.workers().add(workers)?;
        pool::stop_on_signals_within(reactor, Duration::from_secs(grace))?;
        let store = Rc::new(RefCell::new(Store::default()));
        let shared = store.clone();
        let factory = move || {
            let (store, lines) = (shared.clone(), Pipeline::new(MAX_IN_FLIGHT));
            let client = KvClient {
                store,
                idle,
                lines,
                primes: 0,
            };
            LineProtocol::new(client)
                .strip_cr(true)
                .with_max_line_len(MAX_LINE)
        };
        let server = reactor.start_server(("127.0.0.1", port as u16), factory)?;
        reactor.add_periodic_timer(Duration::from_secs(stats.max(1)), move |r, _| {
            eprintln!("stats: {}", store.borrow().stats(r));
        });
        let bound = reactor.server_addr(server)?;
        pool::when_workers_run(reactor, WORKER, POOL, bound)
    })
}
