//! Worker processes, over real forks and socketpairs.
//!
//! `harness = false`: every fork server is started at the top of `main`,
//! while the process is still single-threaded; tests run one after another
//! and may start threads afterwards. Each test gets a worker system of its
//! own. The closing line counts passes and failures for CI.

mod util;

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use packet::worker::{
    DecodeReply, FromWorker, Replier, RestartPolicy, Worker, WorkerContext, WorkerError,
    WorkerExit, WorkerId, WorkerMessage, WorkerProxy, WorkerRegistry, WorkerReply, WorkerSpec,
    WorkerStatus, Workers,
};
use packet::{Connection, Handler, Reactor, Reply};
use util::{pattern, IO_TIMEOUT};

// ----- worker types -----

/// An answer type only the `typed` worker uses: the master knows its name
/// only because the worker's channel told it.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Answer(u32);

/// A request type only the master uses.
#[derive(serde::Serialize, serde::Deserialize)]
struct Greeting {
    text: String,
}

/// Expects a `u32` and answers `Answer(n)`, or the text of its decode
/// error.
struct Typed;
impl Worker for Typed {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        match msg.decode::<u32>() {
            Ok(n) => ctx.send_data(&Answer(n)).unwrap(),
            Err(e) => ctx.send_data(&e.to_string()).unwrap(),
        }
    }
}

/// Replies with the bytes it was sent.
struct Echo;
impl Worker for Echo {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let data: Vec<u8> = msg.decode().unwrap();
        ctx.send_data(&data).unwrap();
    }
}

/// Replies with its key.
struct Key;
impl Worker for Key {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, _msg: WorkerMessage) {
        let key = ctx.worker_key().map(str::to_string);
        let opts: String = ctx.options().unwrap_or_default();
        ctx.send_data(&(key, opts)).unwrap();
    }
}

/// Replies `id` after `ms` milliseconds: replies come back out of order.
struct Sleepy;
impl Worker for Sleepy {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let (id, ms): (u64, u64) = msg.decode().unwrap();
        let replier: Replier = ctx.replier().unwrap();
        ctx.reactor()
            .add_timer(Duration::from_millis(ms), move |r| {
                replier.reply(r, &id).unwrap()
            });
    }
}

/// Asks the echo worker on behalf of its asker (worker to worker).
#[derive(Default)]
struct Relay {
    waiting: Vec<Replier>,
}
impl Worker for Relay {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let data: Vec<u8> = msg.decode().unwrap();
        self.waiting.push(ctx.replier().unwrap());
        ctx.ask_worker("echo", None, &data).unwrap();
    }
    fn worker_receive(&mut self, ctx: &mut WorkerContext<'_, '_>, reply: WorkerReply) {
        let data: Vec<u8> = reply.unwrap().decode().unwrap();
        let replier = self.waiting.remove(0);
        replier
            .reply(ctx.reactor(), &(String::from("relayed"), data))
            .unwrap();
    }
}

/// Counts requests and publishes the count as its result.
#[derive(Default)]
struct Status {
    count: u64,
}
impl Worker for Status {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, _msg: WorkerMessage) {
        self.count += 1;
        ctx.update_result(&self.count).unwrap();
        ctx.log(&format!("count is {}", self.count));
        ctx.send_data(&self.count).unwrap();
    }
}

/// Adopts passed client sockets and answers on them itself.
struct Adopt;
impl Worker for Adopt {
    fn receive_data(&mut self, _ctx: &mut WorkerContext<'_, '_>, _msg: WorkerMessage) {}
    fn receive_fd(&mut self, ctx: &mut WorkerContext<'_, '_>, fd: OwnedFd, msg: WorkerMessage) {
        let greeting: String = msg.decode().unwrap();
        let pid = std::process::id();
        ctx.reactor().attach(fd, Served { greeting, pid }).unwrap();
    }
}

struct Served {
    greeting: String,
    pid: u32,
}
impl Handler for Served {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let text = format!(
            "{} from {}: {}",
            self.greeting,
            self.pid,
            String::from_utf8_lossy(data)
        );
        conn.send_data(text.as_bytes());
    }
}

/// Exits before saying anything.
struct DiesInInit;
impl Worker for DiesInInit {
    fn worker_init(&mut self, _ctx: &mut WorkerContext<'_, '_>) {
        packet_sys::process::exit_immediately(3);
    }
    fn receive_data(&mut self, _ctx: &mut WorkerContext<'_, '_>, _msg: WorkerMessage) {}
}

/// Answers with a frame header announcing 4 GiB, then garbage.
struct Garbage;
impl Worker for Garbage {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, _msg: WorkerMessage) {
        ctx.send_raw(&[0x80, 0x80, 0x80, 0x80, 0x10, 1, 2, 3]);
    }
}

/// Prints what it is asked to its standard output (a log file).
struct Printer;
impl Worker for Printer {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let line: String = msg.decode().unwrap();
        println!("{line}");
        ctx.send_data(&()).unwrap();
    }
}

fn printer_log() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("packet-workers-{}-printer.log", std::process::id()))
}

/// Collects log lines it is sent.
struct Logger;
impl Worker for Logger {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let line: String = msg.decode().unwrap();
        ctx.update_result(&line).unwrap();
    }
}

/// A proxy that upper-cases every reply before handing it to the asker.
struct Upcaser;
impl WorkerProxy for Upcaser {
    fn receive_from_worker(
        &mut self,
        reactor: &mut Reactor,
        _worker: &WorkerId,
        message: FromWorker,
    ) {
        if let FromWorker::Reply { id, message } = message {
            let data: Vec<u8> = message.decode().unwrap();
            let up = WorkerMessage::encode(&data.to_ascii_uppercase()).unwrap();
            assert!(reactor.workers().complete_ask(id, Ok(up)));
        }
    }
}

fn registry() -> WorkerRegistry {
    WorkerRegistry::new()
        .register(WorkerSpec::new("echo", || Echo))
        .register(WorkerSpec::new("typed", || Typed))
        .register(WorkerSpec::new("pool", || Echo).pool(3))
        .register(WorkerSpec::new("key", || Key).no_auto_load())
        .register(WorkerSpec::new("sleepy", || Sleepy))
        .register(WorkerSpec::new("relay", Relay::default))
        .register(WorkerSpec::new("status", Status::default))
        .register(WorkerSpec::new("adopt", || Adopt))
        .register(
            WorkerSpec::new("dies", || DiesInInit)
                .no_auto_load()
                .restart(RestartPolicy::OnFailure {
                    max_restarts: 2,
                    within: Duration::from_secs(60),
                }),
        )
        .register(WorkerSpec::new("garbage", || Garbage).restart(RestartPolicy::Never))
        .register(WorkerSpec::new("logger", || Logger))
        .register(WorkerSpec::new("proxied", || Echo).proxy(|| Upcaser))
        .register(WorkerSpec::new("printer", || Printer).log_file(printer_log()))
        .log_worker("logger")
}

// ----- helpers -----

use util::run_with_workers as run;

/// Calls `f` once every named worker is running, so that tests do not race
/// the fork.
fn when_running(
    r: &mut Reactor,
    names: &'static [&'static str],
    f: impl FnOnce(&mut Reactor) + 'static,
) {
    let Some((first, rest)) = names.split_first() else {
        return f(r);
    };
    r.workers()
        .when_running(first, 1, Duration::from_secs(30), move |r, running| {
            assert_eq!(running, 1, "worker {first} did not start within 30 s");
            when_running(r, rest, f);
        })
        .unwrap();
}

/// A line server that asks the echo pool for every line and writes the
/// reply back: the master's half of the seed's "complete case".
struct AskPerLine {
    partial: Vec<u8>,
}
impl Handler for AskPerLine {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            conn.ask_worker("pool", &line).unwrap();
        }
    }
    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        let reply: WorkerReply = reply.take().unwrap();
        let data: Vec<u8> = reply.unwrap().decode().unwrap();
        conn.send_data(&data);
    }
}

// ----- tests -----

fn many_connections_ask_concurrently_and_get_their_own_replies(workers: Workers) {
    let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>();
    run(workers, |r| {
        let server = r.start_server("127.0.0.1:0", || AskPerLine {
            partial: Vec::new(),
        })?;
        let addr = r.server_addr(server)?.as_inet().unwrap();
        let handle = r.handle();
        when_running(r, &["pool"], move |_| {
            std::thread::spawn(move || {
                let clients: Vec<_> = (0..64)
                    .map(|c| {
                        std::thread::spawn(move || -> Result<(), String> {
                            let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                            let mut w = s.try_clone().unwrap();
                            let mut lines = BufReader::new(s);
                            // Pipelined: all lines out before reading.
                            let sent: Vec<String> =
                                (0..25).map(|i| format!("client {c} line {i}\n")).collect();
                            for l in &sent {
                                w.write_all(l.as_bytes()).unwrap();
                            }
                            let mut got = HashSet::new();
                            for _ in 0..sent.len() {
                                let mut l = String::new();
                                lines.read_line(&mut l).map_err(|e| e.to_string())?;
                                got.insert(l);
                            }
                            // Pool instances may answer out of order; every
                            // line must come back to its own client.
                            if got != sent.iter().cloned().collect() {
                                return Err(format!("client {c} got {got:?}"));
                            }
                            Ok(())
                        })
                    })
                    .collect();
                let mut result = Ok(());
                for c in clients {
                    if let Err(e) = c.join().unwrap() {
                        result = Err(e);
                    }
                }
                done_tx.send(result).unwrap();
                handle.stop();
            });
        });
        Ok(())
    });
    done_rx.recv().unwrap().unwrap();
}

fn messages_from_empty_to_one_mebibyte_all_arrive_via_callbacks(workers: Workers) {
    let results = Rc::new(RefCell::new(Vec::new()));
    let out = results.clone();
    let sizes: Vec<usize> = vec![
        0,
        1,
        2,
        127,
        128,
        1000,
        65535,
        65536,
        65537,
        300_000,
        1 << 20,
    ];
    let n = sizes.len() * 8;
    run(workers, move |r| {
        when_running(r, &["echo"], move |r| {
            for round in 0..8u64 {
                for (i, &size) in sizes.iter().enumerate() {
                    let data = pattern(round * 100 + i as u64, size);
                    let expect = data.clone();
                    let out = out.clone();
                    r.workers()
                        .ask_worker_with("echo", None, &expect, move |r, reply| {
                            let got: Vec<u8> = reply.unwrap().decode().unwrap();
                            out.borrow_mut().push(got == data);
                            if out.borrow().len() == n {
                                r.stop();
                            }
                        })
                        .unwrap();
                }
            }
        });
        Ok(())
    });
    assert_eq!(results.borrow().len(), n);
    assert!(
        results.borrow().iter().all(|&ok| ok),
        "an echoed message differs"
    );
}

fn out_of_order_replies_reach_the_right_asker(workers: Workers) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let out = got.clone();
    run(workers, move |r| {
        when_running(r, &["sleepy"], move |r| {
            // Later asks finish first.
            for id in 0..20u64 {
                let out = out.clone();
                r.workers()
                    .ask_worker_with("sleepy", None, &(id, 200 - id * 10), move |r, reply| {
                        let answered: u64 = reply.unwrap().decode().unwrap();
                        out.borrow_mut().push((id, answered));
                        if out.borrow().len() == 20 {
                            r.stop();
                        }
                    })
                    .unwrap();
            }
        });
        Ok(())
    });
    let got = got.borrow();
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|(asked, answered)| asked == answered));
    assert_eq!(
        got[0].0, 19,
        "replies arrived in completion order, not ask order"
    );
}

fn keys_runtime_start_double_start_and_delete(workers: Workers) {
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let out = log.clone();
    run(workers, move |r| {
        // no_auto_load: not running until started.
        assert!(matches!(
            r.workers()
                .ask_worker_with("key", Some("a"), &(), |_, _| {}),
            Err(WorkerError::NotRunning(_))
        ));
        r.workers()
            .start_worker("key", Some("a"), &String::from("opts-a"))
            .unwrap();
        r.workers()
            .start_worker("key", Some("b"), &String::from("opts-b"))
            .unwrap();
        assert!(matches!(
            r.workers().start_worker("key", Some("a"), &()),
            Err(WorkerError::AlreadyRunning(_))
        ));
        assert!(matches!(
            r.workers().start_worker("nope", None, &()),
            Err(WorkerError::NotRegistered(_))
        ));
        for key in ["a", "b"] {
            let out = out.clone();
            r.workers()
                .ask_worker_with("key", Some(key), &(), move |r, reply| {
                    let (k, opts): (Option<String>, String) = reply.unwrap().decode().unwrap();
                    out.borrow_mut().push(format!("{}:{opts}", k.unwrap()));
                    if out.borrow().len() == 2 {
                        // Both answered: delete one, and check it is gone.
                        r.workers().delete_worker("key", Some("a")).unwrap();
                        poll_until_gone(r, out.clone());
                    }
                })
                .unwrap();
        }
        Ok(())
    });
    let mut log = log.borrow().clone();
    log[..2].sort();
    assert_eq!(log, ["a:opts-a", "b:opts-b", "a gone", "b:opts-b"]);
}

fn waiting_for_running_workers_counts_them_and_gives_up_after_within(workers: Workers) {
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let out = log.clone();
    run(workers, move |r| {
        assert!(matches!(
            r.workers()
                .when_running("nope", 1, Duration::from_secs(1), |_, _| {}),
            Err(WorkerError::NotRegistered(_))
        ));
        // The three auto-loaded pool instances: called once all run.
        let o = out.clone();
        r.workers()
            .when_running("pool", 3, Duration::from_secs(30), move |r, n| {
                let pids = r.workers().pids("pool").len();
                o.borrow_mut().push(format!("pool {n} of 3, {pids} pids"));
                // A fourth never comes: called after `within` with three.
                let o2 = o.clone();
                r.workers()
                    .when_running("pool", 4, Duration::from_millis(100), move |r, n| {
                        o2.borrow_mut().push(format!("pool {n} of 4"));
                        stop_at(r, &o2, 3);
                    })
                    .unwrap();
                // Not auto-loaded: called when start_worker's instance runs,
                // long before its 30 s; the 10 s guard stops the test if not.
                let o3 = o.clone();
                r.workers()
                    .when_running("key", 1, Duration::from_secs(30), move |r, n| {
                        o3.borrow_mut().push(format!("key {n} of 1"));
                        stop_at(r, &o3, 3);
                    })
                    .unwrap();
                r.workers()
                    .start_worker("key", Some("k"), &String::new())
                    .unwrap();
                let o4 = o.clone();
                r.add_timer(Duration::from_secs(10), move |r| {
                    o4.borrow_mut().push("guard".into());
                    r.stop();
                });
            })
            .unwrap();
        Ok(())
    });
    let mut log = log.borrow().clone();
    log[1..].sort();
    assert_eq!(log, ["pool 3 of 3, 3 pids", "key 1 of 1", "pool 3 of 4"]);
}

/// Stops the reactor once `log` has `n` entries.
fn stop_at(r: &mut Reactor, log: &RefCell<Vec<String>>, n: usize) {
    if log.borrow().len() == n {
        r.stop();
    }
}

/// Once only worker "b" of "key" runs, asks it and stops.
fn poll_until_gone(r: &mut Reactor, out: Rc<RefCell<Vec<String>>>) {
    let only_b = |r: &mut Reactor| {
        let running: Vec<_> = r
            .workers()
            .pids("key")
            .into_iter()
            .map(|(id, _)| id.key.unwrap())
            .collect();
        (running == ["b"]).then_some(())
    };
    util::when(r, only_b, move |r, ()| {
        out.borrow_mut().push("a gone".into());
        r.workers()
            .ask_worker_with("key", Some("b"), &(), move |r, reply| {
                let (k, opts): (Option<String>, String) = reply.unwrap().decode().unwrap();
                out.borrow_mut().push(format!("{}:{opts}", k.unwrap()));
                r.stop();
            })
            .unwrap();
    });
}

/// Postcard alone would read the worker's `u32`-based answer as an `i32`
/// (42 as 21) and the master's `Greeting` as a `u32`; the fingerprints
/// turn both into errors that name the two types, on either side.
fn a_message_of_the_wrong_type_is_an_error_naming_both_types(workers: Workers) {
    let got: Rc<RefCell<Vec<String>>> = Rc::default();
    let out = got.clone();
    run(workers, move |r| {
        when_running(r, &["typed"], move |r| {
            let (o1, o2, o3) = (out.clone(), out.clone(), out);
            r.workers()
                .ask_worker_with("typed", None, &42u32, move |_, reply| {
                    o1.borrow_mut()
                        .push(reply.decode::<i32>().unwrap_err().to_string());
                })
                .unwrap();
            r.workers()
                .ask_worker_with("typed", None, &42u32, move |_, reply| {
                    o2.borrow_mut()
                        .push(format!("{:?}", reply.decode::<Answer>().unwrap()));
                })
                .unwrap();
            let greeting = Greeting {
                text: String::new(),
            };
            r.workers()
                .ask_worker_with("typed", None, &greeting, move |r, reply| {
                    o3.borrow_mut().push(reply.decode::<String>().unwrap());
                    r.stop();
                })
                .unwrap();
        });
        Ok(())
    });
    assert_eq!(
        *got.borrow(),
        [
            "wrong message type: expected `i32`, got `workers::Answer`",
            "Answer(42)",
            "wrong message type: expected `u32`, got `workers::Greeting`",
        ]
    );
}

fn worker_asks_worker_through_the_master(workers: Workers) {
    let got = Rc::new(RefCell::new(None));
    let out = got.clone();
    run(workers, move |r| {
        when_running(r, &["relay", "echo"], move |r| {
            r.workers()
                .ask_worker_with("relay", None, &b"via relay".to_vec(), move |r, reply| {
                    *out.borrow_mut() = Some(reply.unwrap().decode::<(String, Vec<u8>)>().unwrap());
                    r.stop();
                })
                .unwrap();
        });
        Ok(())
    });
    assert_eq!(
        *got.borrow(),
        Some(("relayed".to_string(), b"via relay".to_vec()))
    );
}

fn results_and_logs_are_kept_by_the_master(workers: Workers) {
    let seen = Rc::new(RefCell::new((0u64, String::new())));
    let out = seen.clone();
    run(workers, move |r| {
        when_running(r, &["status", "logger"], move |r| {
            for _ in 0..3 {
                r.workers().send_to_worker("status", None, &()).unwrap();
            }
            wait_for_result(r, out);
        });
        Ok(())
    });
    let (count, line) = seen.borrow().clone();
    assert_eq!(count, 3);
    assert_eq!(line, "status: count is 3");
}

/// Once the master holds both workers' last results (the count at 3),
/// records them and stops.
fn wait_for_result(r: &mut Reactor, out: Rc<RefCell<(u64, String)>>) {
    let results = |r: &mut Reactor| {
        let count = r
            .workers()
            .result("status", None)
            .map(|m| m.decode::<u64>().unwrap());
        let line = r
            .workers()
            .result("logger", None)
            .map(|m| m.decode::<String>().unwrap());
        match (count, line) {
            (Some(3), Some(line)) if line.ends_with('3') => Some((3, line)),
            _ => None,
        }
    };
    util::when(r, results, move |r, result| {
        *out.borrow_mut() = result;
        r.stop();
    });
}

/// Hands every accepted connection to the adopting worker.
struct HandOff;
impl Handler for HandOff {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        let fd = conn.detach().unwrap();
        conn.reactor()
            .workers()
            .send_fd_to_worker("adopt", None, fd, &String::from("hello"))
            .unwrap();
    }
}

fn passed_client_socket_is_served_by_the_worker(workers: Workers) {
    let (tx, rx) = mpsc::channel();
    run(workers, move |r| {
        let server = r.start_server("127.0.0.1:0", || HandOff)?;
        let addr = r.server_addr(server)?.as_inet().unwrap();
        let handle = r.handle();
        when_running(r, &["adopt"], move |r| {
            let worker_pid = r.workers().pids("adopt")[0].1;
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                c.write_all(b"ping").unwrap();
                let mut buf = [0u8; 128];
                let n = c.read(&mut buf).unwrap();
                tx.send((String::from_utf8_lossy(&buf[..n]).into_owned(), worker_pid))
                    .unwrap();
                handle.stop();
            });
        });
        Ok(())
    });
    let (answer, pid) = rx.recv().unwrap();
    assert_eq!(answer, format!("hello from {pid}: ping"));
    assert_ne!(pid, std::process::id());
}

fn custom_proxy_sees_raw_replies(workers: Workers) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let out = got.clone();
    run(workers, move |r| {
        when_running(r, &["proxied"], move |r| {
            r.workers()
                .ask_worker_with("proxied", None, &b"quiet".to_vec(), move |r, reply| {
                    out.borrow_mut()
                        .extend(reply.unwrap().decode::<Vec<u8>>().unwrap());
                    r.stop();
                })
                .unwrap();
        });
        Ok(())
    });
    assert_eq!(*got.borrow(), b"QUIET");
}

fn kill_9_under_load_fails_asks_and_the_worker_comes_back(workers: Workers) {
    #[derive(Default)]
    struct Tally {
        ok_before: usize,
        died: usize,
        ok_after: usize,
        killed_pid: Option<u32>,
    }
    let tally = Rc::new(RefCell::new(Tally::default()));
    let t = tally.clone();
    run(workers, move |r| {
        when_running(r, &["sleepy"], move |r| {
            r.add_periodic_timer(Duration::from_millis(1), move |r, id| {
                let t2 = t.clone();
                // Each ask takes 20 ms, so some are always in flight.
                let _ =
                    r.workers()
                        .ask_worker_with("sleepy", None, &(0u64, 20u64), move |_, reply| {
                            let mut t = t2.borrow_mut();
                            match (reply, t.killed_pid.is_some()) {
                                (Ok(_), false) => t.ok_before += 1,
                                (Ok(_), true) if t.died > 0 => t.ok_after += 1,
                                (Ok(_), true) => {}
                                // The fork server's report, not the channel's end
                                // of stream, names the cause.
                                (
                                    Err(WorkerError::Died {
                                        exit: WorkerExit::Signaled(9),
                                        ..
                                    }),
                                    _,
                                ) => t.died += 1,
                                // Asks in flight when the test stops the reactor.
                                (Err(WorkerError::Stopping { .. }), _) if t.ok_after >= 20 => {}
                                (Err(e), _) => panic!("unexpected error: {e}"),
                            }
                        });
                let mut tally = t.borrow_mut();
                if tally.ok_before >= 20 && tally.killed_pid.is_none() {
                    let pid = r.workers().pids("sleepy")[0].1;
                    packet_sys::process::kill(pid as i32, 9).unwrap();
                    tally.killed_pid = Some(pid);
                }
                if tally.ok_after >= 20 {
                    r.cancel_timer(id);
                    let new_pid = r.workers().pids("sleepy")[0].1;
                    assert_ne!(Some(new_pid), tally.killed_pid, "a new process serves");
                    r.stop();
                }
            });
        });
        Ok(())
    });
    let t = tally.borrow();
    assert!(t.died > 0, "asks in flight when the worker died must fail");
    assert!(t.ok_after >= 20, "the restarted worker must serve");
}

fn a_worker_dying_in_init_backs_off_and_is_never_given_up(workers: Workers) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let out = seen.clone();
    run(workers, move |r| {
        r.workers().start_worker("dies", None, &()).unwrap();
        // 1 start + 2 quick restarts (its policy), then backing off: the
        // third death waits 5 s, the fourth 10 s.
        watch_backoff(r, out, 3);
        Ok(())
    });
    assert_eq!(
        *seen.borrow(),
        [
            "deaths 3, backing off, in 5s",
            "Some(NotRunning(\"dies\"))",
            "[7]",
            "deaths 4, backing off, in 10s",
        ]
    );
}

/// Looks at worker "dies" every few ms until it backs off after `deaths`
/// deaths; records that, checks asks fail and other workers answer, and
/// once more for the next death (restarted, not given up).
fn watch_backoff(r: &mut Reactor, out: Rc<RefCell<Vec<String>>>, deaths: u32) {
    if let Some(WorkerStatus::Restarting {
        deaths: d,
        backing_off: true,
        restart_in,
        last_exit: WorkerExit::Exited(3),
    }) = r.workers().status("dies", None)
    {
        if d == deaths {
            // Report the delay it was given, in whole seconds.
            let secs = (restart_in.as_millis() as u64).div_ceil(1000);
            out.borrow_mut()
                .push(format!("deaths {d}, backing off, in {secs}s"));
            if deaths == 4 {
                return r.stop();
            }
            out.borrow_mut().push(format!(
                "{:?}",
                r.workers()
                    .ask_worker_with("dies", None, &(), |_, _| {})
                    .err()
            ));
            let o = out.clone();
            r.workers()
                .ask_worker_with("echo", None, &vec![7u8], move |r, reply| {
                    o.borrow_mut()
                        .push(format!("{:?}", reply.unwrap().decode::<Vec<u8>>().unwrap()));
                    watch_backoff(r, o, deaths + 1);
                })
                .unwrap();
            return;
        }
    }
    r.add_timer(Duration::from_millis(5), move |r| {
        watch_backoff(r, out, deaths)
    });
}

fn garbage_from_a_worker_closes_only_its_channel(workers: Workers) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let out = seen.clone();
    run(workers, move |r| {
        when_running(r, &["garbage", "echo"], move |r| {
            let out2 = out.clone();
            r.workers()
                .ask_worker_with("garbage", None, &(), move |r, reply| {
                    out2.borrow_mut()
                        .push(matches!(reply, Err(WorkerError::Died { .. })));
                    let out3 = out2.clone();
                    r.workers()
                        .ask_worker_with("echo", None, &vec![1u8, 2], move |r, reply| {
                            out3.borrow_mut()
                                .push(reply.unwrap().decode::<Vec<u8>>().unwrap() == [1, 2]);
                            r.stop();
                        })
                        .unwrap();
                })
                .unwrap();
        });
        Ok(())
    });
    assert_eq!(*seen.borrow(), [true, true]);
}

fn workers_start_while_other_reactor_threads_are_busy(workers: Workers) {
    // Three reactors serving echo traffic on other threads...
    let servers: Vec<_> = (0..3).map(|_| util::echo_server()).collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.value).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = addrs
        .iter()
        .map(|&a| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let data = pattern(n, 4096);
                    assert!(util::echo_round_trip(util::client(a), data.clone(), false) == data);
                    n += 1;
                }
                n
            })
        })
        .collect();
    // ...while this one starts workers at runtime, many times.
    let started = Rc::new(RefCell::new(0));
    let out = started.clone();
    run(workers, move |r| {
        for i in 0..10 {
            let key = format!("k{i}");
            r.workers()
                .start_worker("key", Some(&key), &String::new())
                .unwrap();
            let out = out.clone();
            r.workers()
                .ask_worker_with("key", Some(&key), &(), move |r, reply| {
                    reply.unwrap();
                    *out.borrow_mut() += 1;
                    if *out.borrow() == 10 {
                        r.stop();
                    }
                })
                .unwrap();
        }
        Ok(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    for s in servers {
        s.stop();
    }
    assert_eq!(*started.borrow(), 10);
    assert!(rounds > 0);
}

/// A graceful stop whose deadline passes with an ask unanswered fails it
/// with `WorkerError::Stopping`, and the stop's report counts it (issue
/// 20: nothing a stop cuts goes unsaid).
fn a_stop_that_fails_an_ask_counts_it_in_its_report(workers: Workers) {
    let heard = Rc::new(RefCell::new(None));
    let out = heard.clone();
    let guard = Rc::new(std::cell::Cell::new(false));
    let fired = guard.clone();
    let mut r = Reactor::new().unwrap();
    r.workers().add(workers).unwrap();
    r.add_timer(Duration::from_secs(60), move |r| {
        fired.set(true);
        r.stop();
    });
    when_running(&mut r, &["adopt"], move |r| {
        // "adopt" never answers a plain message.
        r.workers()
            .ask_worker_with("adopt", None, &(), move |_, reply| {
                *out.borrow_mut() = Some(reply.map(|_| ()));
            })
            .unwrap();
        r.stop_gracefully(Duration::from_millis(200));
    });
    r.run_until_stopped().unwrap();
    assert!(!guard.get(), "test did not finish within 60 s");
    assert!(
        matches!(*heard.borrow(), Some(Err(WorkerError::Stopping { .. }))),
        "{:?}",
        heard.borrow()
    );
    let report = r.stop_report().expect("a report after the run");
    assert_eq!(report.asks_failed, 1, "{report}");
    assert!(!report.is_clean());
    assert!(
        report.to_string().contains("1 ask(s) to workers failed"),
        "{report}"
    );
}

fn worker_output_goes_to_its_log_file(workers: Workers) {
    let _ = std::fs::remove_file(printer_log());
    run(workers, |r| {
        when_running(r, &["printer"], |r| {
            r.workers()
                .ask_worker_with(
                    "printer",
                    None,
                    &String::from("written by the worker"),
                    |r, reply| {
                        reply.unwrap();
                        r.stop();
                    },
                )
                .unwrap();
        });
        Ok(())
    });
    let log = std::fs::read_to_string(printer_log()).unwrap();
    let _ = std::fs::remove_file(printer_log());
    assert_eq!(log, "written by the worker\n");
}

// ----- runner -----

type Test = util::ForkingTest<Workers>;

fn main() {
    let tests: Vec<Test> = vec![
        (
            "many_connections_ask_concurrently_and_get_their_own_replies",
            many_connections_ask_concurrently_and_get_their_own_replies,
        ),
        (
            "messages_from_empty_to_one_mebibyte_all_arrive_via_callbacks",
            messages_from_empty_to_one_mebibyte_all_arrive_via_callbacks,
        ),
        (
            "out_of_order_replies_reach_the_right_asker",
            out_of_order_replies_reach_the_right_asker,
        ),
        (
            "keys_runtime_start_double_start_and_delete",
            keys_runtime_start_double_start_and_delete,
        ),
        (
            "waiting_for_running_workers_counts_them_and_gives_up_after_within",
            waiting_for_running_workers_counts_them_and_gives_up_after_within,
        ),
        (
            "a_message_of_the_wrong_type_is_an_error_naming_both_types",
            a_message_of_the_wrong_type_is_an_error_naming_both_types,
        ),
        (
            "worker_asks_worker_through_the_master",
            worker_asks_worker_through_the_master,
        ),
        (
            "results_and_logs_are_kept_by_the_master",
            results_and_logs_are_kept_by_the_master,
        ),
        (
            "passed_client_socket_is_served_by_the_worker",
            passed_client_socket_is_served_by_the_worker,
        ),
        (
            "custom_proxy_sees_raw_replies",
            custom_proxy_sees_raw_replies,
        ),
        (
            "kill_9_under_load_fails_asks_and_the_worker_comes_back",
            kill_9_under_load_fails_asks_and_the_worker_comes_back,
        ),
        (
            "a_worker_dying_in_init_backs_off_and_is_never_given_up",
            a_worker_dying_in_init_backs_off_and_is_never_given_up,
        ),
        (
            "garbage_from_a_worker_closes_only_its_channel",
            garbage_from_a_worker_closes_only_its_channel,
        ),
        (
            "worker_output_goes_to_its_log_file",
            worker_output_goes_to_its_log_file,
        ),
        (
            "a_stop_that_fails_an_ask_counts_it_in_its_report",
            a_stop_that_fails_an_ask_counts_it_in_its_report,
        ),
        (
            "workers_start_while_other_reactor_threads_are_busy",
            workers_start_while_other_reactor_threads_are_busy,
        ),
    ];
    util::run_forking_tests(tests, || registry().start().expect("start fork server"))
}
