//! Workers that misbehave: one that stops reading its channel (asks to it
//! fail with `WorkerError::Busy` past the channel limit, the master's
//! memory stays bounded and it goes on serving), and ones that break the
//! wire protocol with well-framed messages the master must refuse.
//! `tests/workers.rs` covers kill -9 mid-request, death in `worker_init`,
//! a garbage frame header announcing 4 GiB, and leftover processes.
//!
//! `harness = false`, as `tests/workers.rs`: the fork servers start at the
//! top of `main` while the process is single-threaded, and the tests run
//! one after another.

mod util;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use packet::worker::{
    Worker, WorkerContext, WorkerError, WorkerExit, WorkerId, WorkerMessage, WorkerRegistry,
    WorkerSpec, Workers,
};
use packet::Reactor;
use serde::{Deserialize, Serialize};
use util::pattern;

#[derive(Serialize, Deserialize, Debug)]
enum Cmd {
    /// Reply with these bytes.
    Echo(Vec<u8>),
    /// Block inside this callback for good: the worker stops reading its
    /// channel (a worker stuck in a long computation). The test ends it
    /// with SIGKILL.
    Hang,
}

/// Echoes, or hangs on request.
struct Stuck;
impl Worker for Stuck {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        match msg.decode::<Cmd>() {
            Ok(Cmd::Echo(data)) => ctx.send_data(&data).unwrap(),
            Ok(Cmd::Hang) => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
            Err(e) => panic!("bad command: {e}"),
        }
    }
}

/// Replies with the raw bytes it was given (a message of the user's type,
/// so any bytes go): a well-formed Compact frame whose contents break the
/// wire format.
struct Raw;
impl Worker for Raw {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let bytes: Vec<u8> = msg.decode().unwrap();
        ctx.send_raw(&bytes);
    }
}

/// Replies with the raw bytes it was given, then ends its process once
/// they are written: a frame cut short by the worker's exit.
struct RawThenExit;
impl Worker for RawThenExit {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let bytes: Vec<u8> = msg.decode().unwrap();
        ctx.send_raw(&bytes);
        ctx.exit();
    }
}

/// Replies plainly.
struct Echo;
impl Worker for Echo {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let data: Vec<u8> = msg.decode().unwrap();
        ctx.send_data(&data).unwrap();
    }
}

fn registry() -> WorkerRegistry {
    WorkerRegistry::new()
        .register(WorkerSpec::new("stuck", || Stuck))
        .register(WorkerSpec::new("raw", || Raw))
        .register(WorkerSpec::new("cut", || RawThenExit))
        .register(WorkerSpec::new("echo", || Echo))
}

// ----- helpers (as in tests/workers.rs) -----

use util::run_with_workers as run;

use util::when_worker_runs as when_running;

// ----- tests -----

#[derive(Default)]
struct StuckLog {
    accepted: usize,
    busy: Vec<String>,
    rss_growth_kib: u64,
    echo_other_worker: bool,
    tcp_served: bool,
    died: Vec<WorkerError>,
    ok_while_stuck: usize,
    served_after_restart: bool,
}

fn a_worker_that_stops_reading_makes_asks_busy_and_the_master_stays_up(workers: Workers) {
    const ASK: usize = 1024 * 1024;
    let log = Rc::new(RefCell::new(StuckLog::default()));
    let out = log.clone();
    run(workers, move |r| {
        let echo_server = r.start_server("127.0.0.1:0", || util::Echo)?;
        let echo_addr = r.server_addr(echo_server)?.as_inet().unwrap();
        when_running(r, "stuck", None, move |r, stuck_pid| {
            when_running(r, "echo", None, move |r, _| {
                r.workers()
                    .send_to_worker("stuck", None, &Cmd::Hang)
                    .unwrap();
                let before = util::rss_kib();
                // 1 MiB asks until the master refuses them: the worker reads
                // none, so they pile up in the channel's outbound queue.
                for i in 0..64u64 {
                    let out2 = out.clone();
                    let asked = r.workers().ask_worker_with(
                        "stuck",
                        None,
                        &Cmd::Echo(pattern(i, ASK)),
                        move |_, reply| match reply {
                            Ok(_) => out2.borrow_mut().ok_while_stuck += 1,
                            Err(e) => out2.borrow_mut().died.push(e),
                        },
                    );
                    match asked {
                        Ok(()) => out.borrow_mut().accepted += 1,
                        Err(e @ WorkerError::Busy(_)) => {
                            out.borrow_mut().busy.push(e.to_string());
                            break;
                        }
                        Err(e) => panic!("ask {i}: {e}"),
                    }
                }
                // Still refused, not queued.
                for _ in 0..3 {
                    match r
                        .workers()
                        .ask_worker_with("stuck", None, &Cmd::Echo(vec![1]), |_, _| {
                            panic!("a refused ask must not be answered")
                        }) {
                        Err(e @ WorkerError::Busy(_)) => out.borrow_mut().busy.push(e.to_string()),
                        other => panic!("expected Busy, got {other:?}"),
                    }
                }
                out.borrow_mut().rss_growth_kib = util::rss_kib().saturating_sub(before);

                // The master goes on: another worker answers, and a TCP
                // client of the same reactor is served.
                let out2 = out.clone();
                r.workers()
                    .ask_worker_with("echo", None, &b"other".to_vec(), move |_, reply| {
                        let got: Vec<u8> = reply.unwrap().decode().unwrap();
                        out2.borrow_mut().echo_other_worker = got == b"other";
                    })
                    .unwrap();
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let data = pattern(5, 100_000);
                    let got = util::echo_round_trip(util::client(echo_addr), data.clone(), false);
                    tx.send(got == data).unwrap();
                });
                let out2 = out.clone();
                wait_then(r, rx, move |r, served| {
                    out2.borrow_mut().tcp_served = served;
                    // End the stuck worker: every ask it holds fails, and
                    // it is restarted (default policy) and serves again.
                    packet_sys::process::kill(stuck_pid as i32, 9).unwrap();
                    let out3 = out2.clone();
                    when_running(r, "stuck", Some(stuck_pid), move |r, _| {
                        r.workers()
                            .ask_worker_with(
                                "stuck",
                                None,
                                &Cmd::Echo(vec![7; 3]),
                                move |r, reply| {
                                    let got: Vec<u8> = reply.unwrap().decode().unwrap();
                                    out3.borrow_mut().served_after_restart = got == [7; 3];
                                    r.stop();
                                },
                            )
                            .unwrap();
                    });
                });
            });
        });
        Ok(())
    });
    let log = log.borrow();
    println!(
        "  stuck worker: {} asks of 1 MiB accepted, then Busy ({:?}); master RSS grew {} KiB",
        log.accepted,
        log.busy.first(),
        log.rss_growth_kib
    );
    assert!(!log.busy.is_empty(), "asks were never refused");
    assert!(
        log.busy.iter().all(|b| b.contains("stuck")),
        "{:?}",
        log.busy
    );
    // 16 MiB of unsent asks is the channel limit; a few more fit in the
    // kernel's socket buffers.
    assert!(log.accepted < 24, "{} asks of 1 MiB accepted", log.accepted);
    assert!(
        log.rss_growth_kib < 48 * 1024,
        "master RSS grew {} KiB",
        log.rss_growth_kib
    );
    assert!(log.echo_other_worker, "the other worker answered");
    assert!(log.tcp_served, "the TCP client was served");
    assert_eq!(log.ok_while_stuck, 0);
    assert_eq!(log.died.len(), log.accepted, "every accepted ask failed");
    // Killed while stopped with unread input: its channel is reset before
    // the fork server's report arrives, and the report still decides.
    let stuck = WorkerId {
        name: "stuck".into(),
        key: None,
    };
    assert!(
        log.died.iter().all(|e| matches!(e,
            WorkerError::Died { worker, exit: WorkerExit::Signaled(9) } if *worker == stuck)),
        "{:?}",
        log.died
    );
    assert!(log.served_after_restart, "the restarted worker serves");
}

use util::wait_then;

/// A Compact frame holding `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    packet::codec::encode_frame(packet::codec::HeaderFormat::Compact, body, &mut out).unwrap();
    out
}

fn protocol_violations_close_only_that_channel(workers: Workers) {
    // Well-framed messages a worker must not send: an unknown kind, a kind
    // only the master sends (Exit), a reply whose fields are truncated, a
    // log line that is not UTF-8, and a frame cut short by the worker's
    // exit. Each ask fails with `Died`; the echo worker, asked after each,
    // still answers.
    let cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("raw", frame(&[200])),
        ("raw", frame(&[8])),
        ("raw", frame(&[2, 0x80])),
        ("raw", frame(&[5, 2, 0xff, 0xfe])),
        ("cut", {
            // A header announcing 60 MiB (under the channel's 64 MiB
            // limit) and 1 KiB of it, then the process exits.
            let mut v = Vec::new();
            let mut len = 60u64 << 20;
            while len >= 0x80 {
                v.push(len as u8 | 0x80);
                len >>= 7;
            }
            v.push(len as u8);
            v.extend_from_slice(&[0u8; 1024]);
            v
        }),
    ];
    let results = Rc::new(RefCell::new(Vec::new()));
    let out = results.clone();
    run(workers, move |r| {
        when_running(r, "echo", None, move |r, _| {
            next_case(r, cases, out);
        });
        Ok(())
    });
    let results = results.borrow();
    assert_eq!(results.len(), 5);
    for (i, (reply, echo)) in results.iter().enumerate() {
        println!("  violation {i}: the ask got {reply:?}; echo answered: {echo}");
        // The last case's worker exits by itself mid-frame.
        let cause = if i < 4 {
            "Died(protocol violation: "
        } else {
            "Died(exited with code 0)"
        };
        assert!(reply.starts_with(cause), "case {i}: {reply}");
        assert!(echo, "case {i}: the other worker stopped answering");
    }
}

/// Runs the violations one after another, each against a running
/// (possibly restarted) instance.
fn next_case(
    r: &mut Reactor,
    mut cases: Vec<(&'static str, Vec<u8>)>,
    out: Rc<RefCell<Vec<(String, bool)>>>,
) {
    if cases.is_empty() {
        r.stop();
        return;
    }
    let (name, bytes) = cases.remove(0);
    when_running(r, name, None, move |r, _| {
        r.workers()
            .ask_worker_with(name, None, &bytes, move |r, reply| {
                let what = match reply {
                    Ok(m) => format!("Ok({m:?})"),
                    Err(WorkerError::Died { exit, .. }) => format!("Died({exit})"),
                    Err(e) => format!("{e:?}"),
                };
                r.workers()
                    .ask_worker_with("echo", None, &b"still".to_vec(), move |r, reply| {
                        let ok = reply.is_ok_and(|m| m.decode::<Vec<u8>>().unwrap() == b"still");
                        out.borrow_mut().push((what, ok));
                        next_case(r, cases, out);
                    })
                    .unwrap();
            })
            .unwrap();
    });
}

// ----- runner (as in tests/workers.rs) -----

type Test = util::ForkingTest<Workers>;

fn main() {
    let tests: Vec<Test> = vec![
        (
            "a_worker_that_stops_reading_makes_asks_busy_and_the_master_stays_up",
            a_worker_that_stops_reading_makes_asks_busy_and_the_master_stays_up,
        ),
        (
            "protocol_violations_close_only_that_channel",
            protocol_violations_close_only_that_channel,
        ),
    ];
    util::run_forking_tests(tests, || registry().start().expect("start fork server"))
}
