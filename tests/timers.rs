//! Timers on a running reactor: order, cancellation, fixed-rate periodic
//! timers, inactivity and connect timeouts, and sleeping while idle.

mod util;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use packet::{CloseReason, Connection, Handler, Reactor, TimerId};
use util::{client, spawn_reactor, IO_TIMEOUT};

#[test]
fn equal_deadlines_fire_in_insertion_order_and_cancel_works_inside_callbacks() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    Reactor::run(move |r| {
        let mut ids = Vec::new();
        for i in 0..20 {
            let l = l.clone();
            ids.push(r.add_timer(Duration::from_millis(30), move |_| l.borrow_mut().push(i)));
        }
        // An earlier timer cancels two of the later ones, and cancelling
        // again (or a fired timer) is a no-op.
        let (a, b) = (ids[3], ids[17]);
        r.add_timer(Duration::from_millis(10), move |r| {
            assert!(r.cancel_timer(a));
            assert!(r.cancel_timer(b));
            assert!(!r.cancel_timer(b));
        });
        let first = ids[0];
        r.add_timer(Duration::from_millis(60), move |r| {
            assert!(!r.cancel_timer(first), "already fired");
            r.stop();
        });
        Ok(())
    })
    .unwrap();
    let expect: Vec<i32> = (0..20).filter(|&i| i != 3 && i != 17).collect();
    assert_eq!(*log.borrow(), expect);
}

#[test]
fn periodic_timer_is_fixed_rate_never_early_and_cancels_itself() {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let c = calls.clone();
    let interval = Duration::from_millis(1);
    Reactor::run(move |r| {
        let start = r.now();
        r.add_periodic_timer(interval, move |r, id: TimerId| {
            let mut calls = c.borrow_mut();
            calls.push(r.now() - start);
            if calls.len() == 1000 {
                assert!(r.cancel_timer(id));
                // Stop a little later, so a wrongly re-armed timer would
                // still get a chance to fire once more.
                r.add_timer(Duration::from_millis(20), |r| r.stop());
            }
        });
        Ok(())
    })
    .unwrap();
    let calls = calls.borrow();
    assert_eq!(calls.len(), 1000);
    for (k, at) in calls.iter().enumerate() {
        // The k-th call (from 0) is due (k+1) intervals after the start;
        // a late loop may skip periods, never fire early.
        assert!(*at >= interval * (k as u32 + 1), "call {k} at {at:?}");
    }
    for w in calls.windows(2) {
        assert!(w[1] > w[0], "no two calls in one period");
    }
}

/// Reports how its connection ended.
struct Watch(mpsc::Sender<String>, Option<Duration>);

impl Handler for Watch {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_inactivity_timeout(self.1);
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(data);
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

#[test]
fn inactivity_timeout_closes_an_idle_connection_and_spares_a_busy_one() {
    let (tx, rx) = mpsc::channel();
    // The busy client round-trips a byte without pause until the idle one
    // is closed: it is spared as long as it is never silent for the whole
    // limit, which takes a pause of seconds in a thread that is runnable
    // all the time. No step waits for a time of its own.
    let limit = Duration::from_secs(3);
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Watch(tx.clone(), Some(limit)))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut idle = client(server.value);
    let mut busy = client(server.value);
    let mut buf = [0u8; 1];
    let closed = loop {
        busy.write_all(b"x").unwrap();
        busy.read_exact(&mut buf).unwrap();
        if let Ok(reason) = rx.try_recv() {
            break reason;
        }
    };
    // The idle one was closed by the server...
    assert_eq!(closed, "inactivity timeout");
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
    // ...and the busy one still echoes.
    busy.write_all(b"y").unwrap();
    busy.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"y");
    assert!(rx.try_recv().is_err(), "the busy connection was closed");
    server.stop();
}

#[test]
fn connect_that_never_completes_times_out() {
    // A listener with a full accept queue: the kernel drops further SYNs,
    // so a new connect to it hangs until our timeout ends it.
    let listener = packet_sys::Socket::stream(packet_sys::Domain::Ipv4).unwrap();
    listener
        .bind(&packet::Addr::Inet("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_inet().unwrap();
    let fillers: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(!fillers.is_empty());
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        r.set_connect_timeout(Some(Duration::from_millis(300)));
        r.connect(addr, Watch(tx, None))?;
        Ok(())
    });
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "connect timed out");
    running.stop();
    drop(listener);
}

/// CPU time (user + system) of one thread, from /proc.
fn thread_cpu(tid: &str) -> Duration {
    util::stat_cpu(&std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap())
}

#[test]
fn an_idle_reactor_sleeps_until_its_next_timer() {
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        let tid = std::fs::read_link("/proc/thread-self").unwrap();
        let tid = tid.file_name().unwrap().to_string_lossy().into_owned();
        let fired = tx.clone();
        r.add_timer(Duration::from_millis(700), move |_| {
            fired.send(String::from("fired")).unwrap()
        });
        Ok(tid)
    });
    let (before, started) = (thread_cpu(&running.value), Instant::now());
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "fired");
    let (used, waited) = (thread_cpu(&running.value) - before, started.elapsed());
    // A loop polling with a fixed tick or spinning would burn a good part
    // of the wait, more of it the idler the machine; a sleeping one uses
    // next to nothing however long the wait lasts. The bound grows with
    // the wait, so a busy machine that stretches it cannot fail the test.
    assert!(
        used * 4 < waited,
        "reactor used {used:?} of CPU while idle for {waited:?}"
    );
    running.stop();
}

/// Times a connection's life from `post_init` to `unbind`.
struct Lifetime(mpsc::Sender<Duration>, Duration, Option<Instant>);

impl Handler for Lifetime {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        self.2 = Some(Instant::now());
        conn.set_inactivity_timeout(Some(self.1));
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, _reason: &CloseReason) {
        let _ = self.0.send(self.2.expect("post_init ran").elapsed());
    }
}

#[test]
fn a_deadline_set_after_a_long_sleep_counts_from_the_wake_not_the_sleep() {
    // The reactor sleeps in the selector with no timer at all, then the
    // connect wakes it. The idle limit must count from then: a clock read
    // before the sleep would put the deadline in the past and close the
    // connection at once. Only a lower bound is asserted, which load cannot
    // break.
    let (tx, rx) = mpsc::channel();
    let limit = Duration::from_millis(400);
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Lifetime(tx.clone(), limit, None))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    std::thread::sleep(Duration::from_millis(900));
    let _idle = client(server.value);
    let lived = rx.recv_timeout(IO_TIMEOUT).unwrap();
    // The wheel counts whole milliseconds.
    assert!(
        lived + Duration::from_millis(1) >= limit,
        "closed after {lived:?}, before its {limit:?} idle limit"
    );
    server.stop();
}
