//! Workers against stalls and dead helpers, over real processes: asks that
//! outlive their timeout, a worker stopped with SIGSTOP (its asks time out
//! and the heartbeat replaces it), and a fork server killed with SIGKILL
//! (replaced, after which killed workers come back again).
//!
//! `harness = false`, as `tests/workers.rs`: every test's fork server
//! starts at the top of `main` while the process is single-threaded; the
//! tests run one after another.

mod util;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use packet::worker::{
    Worker, WorkerContext, WorkerError, WorkerExit, WorkerMessage, WorkerRegistry, WorkerReply,
    WorkerSpec, Workers,
};
use packet::{Connection, Handler, Reactor, Reply};
use util::run_with_workers as run;
use util::when_worker_runs as when_running;
use util::{wait_then, Slow};

/// The stopped worker's asks time out after this...
const ASK_TIMEOUT: Duration = Duration::from_millis(200);
/// ...well before its heartbeat gives up on it.
const HEARTBEAT: Duration = Duration::from_secs(3);

/// Sends 64 KiB messages of its own to the master as fast as the
/// channel takes them, and no faster: until the channel is full, then
/// again each time it drained.
#[derive(Default)]
struct Flood {
    fulls: u64,
}
impl Flood {
    fn produce(&mut self, ctx: &mut WorkerContext<'_, '_>) {
        let chunk = "x".repeat(64 * 1024);
        while !ctx.channel_is_full() {
            ctx.send_data(&chunk).unwrap();
        }
    }
}
impl Worker for Flood {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, _msg: WorkerMessage) {
        self.produce(ctx);
    }
    fn channel_full(&mut self, _ctx: &mut WorkerContext<'_, '_>) {
        self.fulls += 1;
    }
    fn channel_drained(&mut self, ctx: &mut WorkerContext<'_, '_>) {
        self.produce(ctx);
    }
}

/// Bytes the flooding worker's messages brought to the master.
static FLOODED: AtomicUsize = AtomicUsize::new(0);

fn registry() -> WorkerRegistry {
    WorkerRegistry::new()
        .register(
            WorkerSpec::new("flood", Flood::default).on_message(|_, _, m| {
                FLOODED.fetch_add(m.as_bytes().len(), Ordering::Relaxed);
            }),
        )
        .register(WorkerSpec::new("slow", || Slow))
        .register(
            WorkerSpec::new("watched", || Slow)
                .ask_timeout(ASK_TIMEOUT)
                .heartbeat(HEARTBEAT),
        )
}

/// A reply as a short string, for assertions.
fn show(reply: &WorkerReply) -> String {
    match reply {
        Ok(m) => format!("ok {}", m.decode::<u64>().unwrap()),
        Err(WorkerError::Timeout { after, .. }) => format!("timeout {after:?}"),
        Err(WorkerError::Died { exit, .. }) => format!("died: {exit}"),
        Err(e) => format!("error: {e}"),
    }
}

type Log = Rc<RefCell<Vec<String>>>;

fn ask_into(r: &mut Reactor, name: &str, ms: u64, log: &Log) {
    let log = log.clone();
    r.workers()
        .ask_worker_with(name, None, &ms, move |_, reply| {
            log.borrow_mut().push(show(&reply))
        })
        .unwrap();
}

/// For each line, asks "slow" for two seconds of work with a 50 ms
/// timeout of this ask's own, and writes what came back.
struct AskWithTimeout;
impl Handler for AskWithTimeout {
    fn receive_data(&mut self, conn: &mut Connection<'_>, _data: &[u8]) {
        conn.ask_worker_with_timeout("slow", None, &2000u64, Duration::from_millis(50))
            .unwrap();
    }
    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        let reply: WorkerReply = reply.take().expect("a worker reply");
        conn.send_data(format!("{}\n", show(&reply)).as_bytes());
    }
}

// ----- tests -----

fn an_ask_times_out_with_its_own_timeout_and_its_late_reply_is_dropped(workers: Workers) {
    let log: Log = Rc::default();
    let out = log.clone();
    run(workers, move |r| {
        when_running(r, "slow", None, move |r, _| {
            // Two seconds of work against a 50 ms timeout: Timeout. The
            // ask after it (no timeout on "slow") gets its own reply, not
            // the late one.
            let o = out.clone();
            r.workers()
                .ask_worker_with_timeout(
                    "slow",
                    None,
                    &2000u64,
                    Duration::from_millis(50),
                    move |r, reply| {
                        o.borrow_mut().push(show(&reply));
                        let o = o.clone();
                        r.workers()
                            .ask_worker_with("slow", None, &2500u64, move |r, reply| {
                                o.borrow_mut().push(show(&reply));
                                r.stop();
                            })
                            .unwrap();
                    },
                )
                .unwrap();
        });
        Ok(())
    });
    assert_eq!(*log.borrow(), ["timeout 50ms", "ok 2500"]);
}

fn a_connection_ask_times_out_with_its_own_timeout(workers: Workers) {
    let got = Rc::new(RefCell::new(String::new()));
    let out = got.clone();
    run(workers, move |r| {
        let server = r.start_server("127.0.0.1:0", || AskWithTimeout)?;
        let addr = r.server_addr(server)?.as_inet().unwrap();
        when_running(r, "slow", None, move |r, _| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut stream = util::client(addr);
                stream.write_all(b"go\n").unwrap();
                let mut line = String::new();
                BufReader::new(stream).read_line(&mut line).unwrap();
                tx.send(line).unwrap();
            });
            wait_then(r, rx, move |r, line| {
                *out.borrow_mut() = line;
                r.stop();
            });
        });
        Ok(())
    });
    assert_eq!(*got.borrow(), "timeout 50ms\n");
}

fn a_stopped_worker_times_out_its_asks_and_the_heartbeat_replaces_it(workers: Workers) {
    let log: Log = Rc::default();
    let stopped = Rc::new(RefCell::new(None));
    let (out, gone) = (log.clone(), stopped.clone());
    run(workers, move |r| {
        when_running(r, "watched", None, move |r, pid| {
            // Answered while it runs; stopped once that answer is in.
            let o = out.clone();
            r.workers()
                .ask_worker_with("watched", None, &0u64, move |r, reply| {
                    o.borrow_mut().push(show(&reply));
                    stop_and_ask(r, pid, o);
                })
                .unwrap();
            *gone.borrow_mut() = Some(pid);
        });
        Ok(())
    });
    let log = log.borrow();
    let killed = format!("died: {}", WorkerExit::Unresponsive(HEARTBEAT));
    let timeout = format!("timeout {ASK_TIMEOUT:?}");
    assert_eq!(
        *log,
        [
            "ok 0",
            &timeout,
            &timeout,
            &timeout,
            &killed,
            "after restart: ok 7"
        ],
    );
    // Killed, and reaped by the fork server.
    let pid = stopped.borrow().unwrap();
    assert!(
        util::eventually(Duration::from_secs(30), || util::is_gone(pid)),
        "the stopped worker {pid} is still there"
    );
}

/// Stops worker process `pid`, asks it, and asks again once the heartbeat
/// replaced it.
fn stop_and_ask(r: &mut Reactor, pid: u32, out: Log) {
    packet_sys::process::kill(pid as i32, packet_sys::process::SIGSTOP).unwrap();
    // Asks with the spec's 200 ms timeout fail with Timeout; one with a
    // minute's timeout waits until the heartbeat kills the stopped process,
    // and learns why.
    for _ in 0..3 {
        ask_into(r, "watched", 0, &out);
    }
    let o = out.clone();
    r.workers()
        .ask_worker_with_timeout(
            "watched",
            None,
            &0u64,
            Duration::from_secs(60),
            move |_, reply| o.borrow_mut().push(show(&reply)),
        )
        .unwrap();
    when_running(r, "watched", Some(pid), move |r, _| {
        r.workers()
            .ask_worker_with("watched", None, &7u64, move |r, reply| {
                out.borrow_mut()
                    .push(format!("after restart: {}", show(&reply)));
                r.stop();
            })
            .unwrap();
    });
}

/// Calls `f` with the pid of the fork server once it is not `not`.
fn when_fork_server_is_not(r: &mut Reactor, not: i32, f: impl FnOnce(&mut Reactor, i32) + 'static) {
    util::when(
        r,
        move |r| r.workers().fork_server_pid().filter(|&pid| pid != not),
        f,
    );
}

#[derive(Default)]
struct Replaced {
    old_server: i32,
    new_server: i32,
    old_worker: u32,
    killed_worker: u32,
    answers: Vec<String>,
    back_after_server_kill: Duration,
    back_after_worker_kill: Duration,
    new_name: String,
}

/// What `ps` shows as process `pid`'s name.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

fn a_killed_fork_server_is_replaced_and_killed_workers_come_back(workers: Workers) {
    // The master's note about the replacement goes to the application's
    // log hook, not to stderr.
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = logged.clone();
    packet::log::set_log_hook(move |line| sink.lock().unwrap().push(line.to_string()));
    let seen = Rc::new(RefCell::new(Replaced::default()));
    let out = seen.clone();
    run(workers, move |r| {
        when_running(r, "slow", None, move |r, worker| {
            let server = r.workers().fork_server_pid().unwrap();
            {
                let mut o = out.borrow_mut();
                (o.old_server, o.old_worker) = (server, worker);
            }
            let killed_at = std::time::Instant::now();
            packet_sys::process::kill(server, packet_sys::process::SIGKILL).unwrap();
            when_fork_server_is_not(r, server, move |r, new_server| {
                out.borrow_mut().new_server = new_server;
                // The worker died with its fork server and is started by
                // the new one.
                when_running(r, "slow", Some(worker), move |r, worker| {
                    // Read now, not when its pid is first known: it names
                    // itself after the exec, before it serves a request.
                    out.borrow_mut().new_name = comm(new_server as u32);
                    out.borrow_mut().back_after_server_kill = killed_at.elapsed();
                    let o = out.clone();
                    r.workers()
                        .ask_worker_with("slow", None, &1u64, move |r, reply| {
                            o.borrow_mut().answers.push(show(&reply));
                            // Now a worker of the new fork server dies: it is
                            // reported and restarted as before.
                            let killed_at = std::time::Instant::now();
                            packet_sys::process::kill(worker as i32, packet_sys::process::SIGKILL)
                                .unwrap();
                            o.borrow_mut().killed_worker = worker;
                            when_running(r, "slow", Some(worker), move |r, _| {
                                o.borrow_mut().back_after_worker_kill = killed_at.elapsed();
                                r.workers()
                                    .ask_worker_with("slow", None, &2u64, move |r, reply| {
                                        o.borrow_mut().answers.push(show(&reply));
                                        r.stop();
                                    })
                                    .unwrap();
                            });
                        })
                        .unwrap();
                });
            });
        });
        Ok(())
    });
    packet::log::reset_log_hook();
    let seen = seen.borrow();
    let gone = format!("[workers] the fork server {} is gone", seen.old_server);
    let logged = logged.lock().unwrap();
    assert!(logged.iter().any(|l| l.starts_with(&gone)), "{logged:?}");
    println!(
        "  worker back {:?} after its fork server was killed, {:?} after it was killed itself",
        seen.back_after_server_kill, seen.back_after_worker_kill
    );
    assert_ne!(seen.new_server, seen.old_server);
    // Named after the program, like the master, not `exe`.
    assert_eq!(seen.new_name, comm(std::process::id()));
    assert_eq!(seen.answers, ["ok 1", "ok 2"]);
    // The old fork server was this process's child: reaped, not a zombie.
    assert!(
        util::is_gone(seen.old_server as u32),
        "old fork server left"
    );
    // Its worker was its child, and died with it (reaped by whoever
    // adopted it).
    assert!(
        util::eventually(Duration::from_secs(30), || util::is_dead(seen.old_worker)),
        "the old fork server's worker {} still runs",
        seen.old_worker
    );
    assert!(
        util::eventually(Duration::from_secs(30), || util::is_gone(
            seen.killed_worker
        )),
        "the killed worker {} was not reaped by the new fork server",
        seen.killed_worker
    );
}

fn a_garbled_fork_server_link_is_closed_and_the_fork_server_replaced(workers: Workers) {
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = logged.clone();
    packet::log::set_log_hook(move |line| sink.lock().unwrap().push(line.to_string()));
    let answers: Log = Rc::default();
    let servers = Rc::new(RefCell::new((0, 0)));
    let (out, seen) = (answers.clone(), servers.clone());
    run(workers, move |r| {
        when_running(r, "slow", None, move |r, worker| {
            let old = r.workers().fork_server_pid().unwrap();
            // A frame whose header announces 4 GiB, as if from the fork
            // server.
            r.workers()
                .inject_fork_server_bytes(&[0x80, 0x80, 0x80, 0x80, 0x10, 1, 2, 3]);
            when_fork_server_is_not(r, old, move |r, new| {
                *seen.borrow_mut() = (old, new);
                // Its worker is started again by the new fork server and
                // adopted: it answers.
                when_running(r, "slow", Some(worker), move |r, _| {
                    r.workers()
                        .ask_worker_with("slow", None, &3u64, move |r, reply| {
                            out.borrow_mut().push(show(&reply));
                            r.stop();
                        })
                        .unwrap();
                });
            });
        });
        Ok(())
    });
    packet::log::reset_log_hook();
    let (old, new) = *servers.borrow();
    assert_ne!(old, new);
    assert_eq!(*answers.borrow(), ["ok 3"]);
    let logged = logged.lock().unwrap();
    let garbage = format!("[workers] the fork server {old} sent garbage");
    assert!(logged.iter().any(|l| l.starts_with(&garbage)), "{logged:?}");
    assert!(util::is_gone(old as u32), "old fork server left");
}

/// The high-water mark of process `pid`'s resident memory, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// 128 MiB through the channel, produced only as fast as it drains.
const FLOOD: usize = 128 << 20;
/// Far above what either side needs (a few MiB), far below what an
/// unbounded queue would reach.
const MEMORY_BOUND_KIB: u64 = 64 << 10;

fn a_worker_flooding_the_master_is_held_back_by_its_channel(workers: Workers) {
    // The tests share this process: its peak so far is theirs, not the
    // flood's ("5" resets the peak, proc(5) clear_refs).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let hwm = Rc::new(RefCell::new((0, 0)));
    let out = hwm.clone();
    FLOODED.store(0, Ordering::Relaxed);
    run(workers, move |r| {
        when_running(r, "flood", None, move |r, pid| {
            r.workers().send_to_worker("flood", None, &()).unwrap();
            // A hang guard only: without channel_drained the flood stops
            // after the first mebibyte.
            r.add_timer(Duration::from_secs(60), |r| r.stop());
            watch_flood(r, pid, out);
        });
        Ok(())
    });
    let flooded = FLOODED.load(Ordering::Relaxed);
    assert!(flooded >= FLOOD, "only {flooded} bytes arrived");
    let (master, worker) = *hwm.borrow();
    println!(
        "  {} MiB flooded; peak RSS: master {master} KiB, worker {worker} KiB",
        FLOOD >> 20
    );
    assert!(master < MEMORY_BOUND_KIB, "master peak RSS {master} KiB");
    assert!(worker < MEMORY_BOUND_KIB, "worker peak RSS {worker} KiB");
}

/// Waits (without blocking the reactor) until [`FLOOD`] bytes arrived,
/// then records both peaks and stops.
fn watch_flood(r: &mut Reactor, pid: u32, out: Rc<RefCell<(u64, u64)>>) {
    if FLOODED.load(Ordering::Relaxed) >= FLOOD {
        *out.borrow_mut() = (vm_hwm_kib(std::process::id()), vm_hwm_kib(pid));
        return r.stop();
    }
    r.add_timer(Duration::from_millis(5), move |r| watch_flood(r, pid, out));
}

// ----- runner -----

fn main() {
    let tests: Vec<util::ForkingTest<Workers>> = vec![
        (
            "an_ask_times_out_with_its_own_timeout_and_its_late_reply_is_dropped",
            an_ask_times_out_with_its_own_timeout_and_its_late_reply_is_dropped,
        ),
        (
            "a_connection_ask_times_out_with_its_own_timeout",
            a_connection_ask_times_out_with_its_own_timeout,
        ),
        (
            "a_stopped_worker_times_out_its_asks_and_the_heartbeat_replaces_it",
            a_stopped_worker_times_out_its_asks_and_the_heartbeat_replaces_it,
        ),
        (
            "a_killed_fork_server_is_replaced_and_killed_workers_come_back",
            a_killed_fork_server_is_replaced_and_killed_workers_come_back,
        ),
        (
            "a_garbled_fork_server_link_is_closed_and_the_fork_server_replaced",
            a_garbled_fork_server_link_is_closed_and_the_fork_server_replaced,
        ),
        (
            "a_worker_flooding_the_master_is_held_back_by_its_channel",
            a_worker_flooding_the_master_is_held_back_by_its_channel,
        ),
    ];
    util::run_forking_tests(tests, || registry().start().expect("start fork server"))
}
