//! `Channel` and `Queue`: delivery order, callbacks that push, pop and
//! unsubscribe, and a broadcast over real loopback connections.

mod util;

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Write};
use std::rc::Rc;
use std::sync::mpsc;

use packet::channel::{Channel, Queue, SubscriptionId};
use packet::{CloseReason, Connection, Handler, Reactor};
use util::{client, spawn_reactor, IO_TIMEOUT};

/// Runs a reactor on this thread with what `setup` queued until something
/// stops it; fails instead of hanging if nothing does.
fn run_bounded(setup: impl FnOnce(&mut Reactor)) {
    run_bounded_on(&mut Reactor::new().unwrap(), setup);
}

fn run_bounded_on(reactor: &mut Reactor, setup: impl FnOnce(&mut Reactor)) {
    let timed_out = Rc::new(Cell::new(false));
    let flag = timed_out.clone();
    reactor.add_timer(IO_TIMEOUT, move |r| {
        flag.set(true);
        r.stop();
    });
    setup(reactor);
    reactor.run_until_stopped().unwrap();
    assert!(!timed_out.get(), "the reactor was not stopped by the test");
}

type Log<T> = Rc<RefCell<Vec<T>>>;

fn log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

#[test]
fn two_subscribers_get_every_message_in_order() {
    let events: Log<(char, u32)> = log();
    run_bounded(|r| {
        let chan: Channel<u32> = Channel::new();
        let a = events.clone();
        chan.subscribe(move |_, &n| a.borrow_mut().push(('a', n)));
        let b = events.clone();
        chan.subscribe(move |r, &n| {
            b.borrow_mut().push(('b', n));
            if n == 99 {
                r.stop();
            }
        });
        assert_eq!(chan.subscriber_count(), 2);
        // Half now, half from a later turn.
        for n in 0..50 {
            chan.push(r, n);
        }
        let later = chan.clone();
        r.next_turn(move |r| {
            for n in 50..100 {
                later.push(r, n);
            }
        });
        assert!(events.borrow().is_empty(), "push must not deliver at once");
    });
    // Every message reaches every subscriber (in subscription order) before
    // the next message is delivered.
    let expect: Vec<(char, u32)> = (0..100).flat_map(|n| [('a', n), ('b', n)]).collect();
    assert_eq!(*events.borrow(), expect);
}

#[test]
fn subscribers_unsubscribe_themselves_and_others_from_callbacks() {
    let got: Rc<RefCell<[Vec<u32>; 4]>> = Rc::default();
    let chan: Channel<u32> = Channel::new();
    let ids: Rc<RefCell<Vec<SubscriptionId>>> = Rc::default();
    run_bounded(|r| {
        // a: leaves after message 1.
        let (g, c, i) = (got.clone(), chan.clone(), ids.clone());
        let a = chan.subscribe(move |_, &n| {
            g.borrow_mut()[0].push(n);
            if n == 1 {
                let me = i.borrow()[0];
                assert!(c.unsubscribe(me));
                assert!(!c.unsubscribe(me), "already unsubscribed");
            }
        });
        // b: removes c (subscribed after it) on message 2.
        let (g, c, i) = (got.clone(), chan.clone(), ids.clone());
        let b = chan.subscribe(move |_, &n| {
            g.borrow_mut()[1].push(n);
            if n == 2 {
                let victim = i.borrow()[2];
                assert!(c.unsubscribe(victim));
            }
        });
        let g = got.clone();
        let c3 = chan.subscribe(move |_, &n| g.borrow_mut()[2].push(n));
        let g = got.clone();
        let d = chan.subscribe(move |r, &n| {
            g.borrow_mut()[3].push(n);
            if n == 4 {
                r.stop();
            }
        });
        ids.borrow_mut().extend([a, b, c3, d]);
        // All pushed before anyone unsubscribes: who gets a message is
        // decided as it is delivered.
        for n in 0..5 {
            chan.push(r, n);
        }
    });
    let got = got.borrow();
    assert_eq!(got[0], [0, 1]);
    assert_eq!(got[1], [0, 1, 2, 3, 4]);
    assert_eq!(got[2], [0, 1], "c was unsubscribed before its turn for 2");
    assert_eq!(got[3], [0, 1, 2, 3, 4]);
    assert_eq!(chan.subscriber_count(), 2);
    // The cycles through captured clones are broken here.
    chan.unsubscribe_all();
    assert_eq!(chan.subscriber_count(), 0);
}

#[test]
fn push_inside_a_callback_is_delivered_after_not_recursively() {
    let events: Log<String> = log();
    run_bounded(|r| {
        let chan: Channel<u32> = Channel::new();
        let depth = Rc::new(Cell::new(0));
        let (e, c, d) = (events.clone(), chan.clone(), depth.clone());
        chan.subscribe(move |r, &n| {
            d.set(d.get() + 1);
            assert_eq!(d.get(), 1, "a subscriber was called recursively");
            e.borrow_mut().push(format!("a{n}<"));
            if n < 3 {
                c.push(r, n + 1);
            }
            e.borrow_mut().push(format!(">a{n}"));
            d.set(d.get() - 1);
        });
        let e = events.clone();
        chan.subscribe(move |r, &n| {
            e.borrow_mut().push(format!("b{n}"));
            if n == 3 {
                r.stop();
            }
        });
        chan.push(r, 0);
        // Pushed before 1 (which a pushes while 0 is delivered): comes first.
        chan.push(r, 100);
    });
    let expect = [
        "a0<", ">a0", "b0", "a100<", ">a100", "b100", "a1<", ">a1", "b1", "a2<", ">a2", "b2",
        "a3<", ">a3", "b3",
    ];
    assert_eq!(*events.borrow(), expect);
}

#[test]
fn pop_gets_exactly_one_message_and_can_be_cancelled() {
    let popped: Log<u32> = log();
    let late: Log<u32> = log();
    let chan: Channel<u32> = Channel::new();
    run_bounded(|r| {
        let p = popped.clone();
        chan.pop(move |_, &n| p.borrow_mut().push(n));
        let cancelled = chan.pop(|_, _| panic!("a cancelled pop was called"));
        assert_eq!(chan.subscriber_count(), 2);
        assert!(chan.unsubscribe(cancelled));
        // Subscribed from a callback: misses the message being delivered,
        // gets the later ones. A pop from a callback gets the next one.
        let (c, l, p) = (chan.clone(), late.clone(), popped.clone());
        let mut joined = false;
        chan.subscribe(move |r, &n| {
            if !joined {
                joined = true;
                let l = l.clone();
                c.subscribe(move |_, &n| l.borrow_mut().push(n));
                let p = p.clone();
                c.pop(move |_, &n| p.borrow_mut().push(n));
            }
            if n == 3 {
                r.stop();
            }
        });
        for n in 0..4 {
            chan.push(r, n);
        }
    });
    assert_eq!(*popped.borrow(), [0, 1]);
    assert_eq!(*late.borrow(), [1, 2, 3]);
    // The two subscribers are left; the pops are gone.
    assert_eq!(chan.subscriber_count(), 2);
    chan.unsubscribe_all();
}

#[test]
fn subscription_ids_belong_to_their_channel() {
    let one: Channel<()> = Channel::new();
    let two: Channel<()> = Channel::new();
    let id = one.subscribe(|_, _| {});
    two.subscribe(|_, _| {});
    assert!(!two.unsubscribe(id));
    assert_eq!(two.subscriber_count(), 1);
    assert!(one.unsubscribe(id));
    assert_eq!(one.subscriber_count(), 0);
}

/// A chat member: subscribes on connect, pushes every line, unsubscribes on
/// close and reports how many members are left.
struct Member {
    room: Channel<Rc<[u8]>>,
    sub: Option<SubscriptionId>,
    partial: Vec<u8>,
    left: mpsc::Sender<usize>,
}

impl Handler for Member {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        let me = conn.id();
        self.sub = Some(self.room.subscribe(move |r, line: &Rc<[u8]>| {
            if let Some(mut conn) = r.connection(me) {
                conn.send_data(line);
            }
        }));
        conn.send_data(b"welcome\n");
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Rc<[u8]> = self.partial.drain(..=end).collect();
            self.room.push(conn.reactor(), line);
        }
    }

    fn unbind(&mut self, _conn: &mut Connection<'_>, _reason: &CloseReason) {
        if let Some(sub) = self.sub.take() {
            assert!(self.room.unsubscribe(sub));
        }
        let _ = self.left.send(self.room.subscriber_count());
    }
}

#[test]
fn connections_broadcast_every_line_to_all_over_tcp() {
    const CLIENTS: usize = 3;
    const LINES: usize = 40;
    let (left_tx, left_rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let room = Channel::new();
        let id = r.start_server("127.0.0.1:0", move || Member {
            room: room.clone(),
            sub: None,
            partial: Vec::new(),
            left: left_tx.clone(),
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    // Everybody is in the room before anybody talks.
    let members: Vec<BufReader<_>> = (0..CLIENTS)
        .map(|_| {
            let mut reader = BufReader::new(client(server.value));
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "welcome\n");
            reader
        })
        .collect();
    let talkers: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, mut reader)| {
            std::thread::spawn(move || {
                let mut out = reader.get_ref().try_clone().unwrap();
                // Several lines per write, and lines split across writes.
                let text: String = (0..LINES)
                    .map(|j| format!("client {i} line {j}\n"))
                    .collect();
                for chunk in text.as_bytes().chunks(29) {
                    out.write_all(chunk).unwrap();
                }
                let mut heard = Vec::new();
                for _ in 0..CLIENTS * LINES {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    heard.push(line);
                }
                heard
            })
        })
        .collect();
    for talker in talkers {
        let heard = talker.join().unwrap();
        // Each sender's lines arrive complete and in the order sent.
        for i in 0..CLIENTS {
            let from_i: Vec<&String> = heard
                .iter()
                .filter(|l| l.starts_with(&format!("client {i} ")))
                .collect();
            let expect: Vec<String> = (0..LINES)
                .map(|j| format!("client {i} line {j}\n"))
                .collect();
            assert_eq!(from_i.len(), LINES);
            assert!(from_i.iter().zip(&expect).all(|(a, b)| *a == b));
        }
    }
    // Disconnecting unsubscribes: the members left see 2, 1, 0.
    server.stop();
    let mut left: Vec<usize> = (0..CLIENTS)
        .map(|_| left_rx.recv_timeout(IO_TIMEOUT).unwrap())
        .collect();
    left.sort_unstable();
    assert_eq!(left, [0, 1, 2]);
}

#[test]
fn queue_serves_pops_waiting_before_pushes_in_order() {
    let served: Log<(u32, char)> = log();
    let q: Queue<char> = Queue::new();
    run_bounded(|r| {
        for popper in 0..3 {
            let s = served.clone();
            q.pop(r, move |r, item| {
                s.borrow_mut().push((popper, item));
                if popper == 2 {
                    r.stop();
                }
            });
        }
        assert_eq!(q.num_waiting(), 3);
        assert!(q.is_empty());
        for item in ['a', 'b', 'c', 'd'] {
            q.push(r, item);
        }
        assert_eq!(q.len(), 4);
        assert!(served.borrow().is_empty(), "served inside push");
    });
    assert_eq!(*served.borrow(), [(0, 'a'), (1, 'b'), (2, 'c')]);
    assert_eq!((q.len(), q.num_waiting()), (1, 0));
}

#[test]
fn queue_serves_pushes_before_pops_in_order_on_a_later_turn() {
    let served: Log<(u32, u32)> = log();
    let q: Queue<u32> = Queue::new();
    run_bounded(|r| {
        for item in 1..=5 {
            q.push(r, item);
        }
        assert_eq!(q.len(), 5);
        for popper in 0..5 {
            let s = served.clone();
            q.pop(r, move |r, item| {
                s.borrow_mut().push((popper, item));
                if popper == 4 {
                    r.stop();
                }
            });
            assert!(served.borrow().is_empty(), "pop called back at once");
        }
        assert_eq!(q.num_waiting(), 5);
    });
    assert_eq!(*served.borrow(), [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
    assert!(q.is_empty());
    assert_eq!(q.num_waiting(), 0);
}

#[test]
fn pop_inside_a_pop_callback_waits_its_turn() {
    let served: Log<(char, u32)> = log();
    run_bounded(|r| {
        let q: Queue<u32> = Queue::new();
        for item in 0..6 {
            q.push(r, item);
        }
        // `a` consumes forever by popping again from its callback; `b` pops
        // once, after a's first pop: it is served before a's second.
        fn consume(q: Queue<u32>, r: &mut Reactor, served: Log<(char, u32)>, depth: Rc<Cell<u32>>) {
            let again = q.clone();
            q.pop(r, move |r, item| {
                depth.set(depth.get() + 1);
                assert_eq!(depth.get(), 1, "pop callback called recursively");
                served.borrow_mut().push(('a', item));
                if item == 5 {
                    r.stop();
                } else {
                    consume(again, r, served, depth.clone());
                }
                depth.set(depth.get() - 1);
            });
        }
        consume(q.clone(), r, served.clone(), Rc::default());
        let s = served.clone();
        q.pop(r, move |_, item| s.borrow_mut().push(('b', item)));
    });
    assert_eq!(
        *served.borrow(),
        [('a', 0), ('b', 1), ('a', 2), ('a', 3), ('a', 4), ('a', 5)]
    );
}

#[test]
fn queue_left_by_a_stopped_reactor_is_served_on_the_next_run() {
    let served: Log<u32> = log();
    let q: Queue<u32> = Queue::new();
    let mut reactor = Reactor::new().unwrap();
    let s = served.clone();
    q.pop(&mut reactor, move |_, item| s.borrow_mut().push(item));
    q.push(&mut reactor, 1);
    // Stopped before its first turn: the queued delivery is dropped.
    reactor.stop();
    reactor.run_until_stopped().unwrap();
    assert!(served.borrow().is_empty());
    assert_eq!((q.len(), q.num_waiting()), (1, 1));
    run_bounded_on(&mut reactor, |r| {
        q.push(r, 2);
        let s = served.clone();
        q.pop(r, move |r, item| {
            s.borrow_mut().push(item);
            r.stop();
        });
    });
    assert_eq!(*served.borrow(), [1, 2]);
}
