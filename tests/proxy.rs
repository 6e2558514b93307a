//! Proxying between connections: both directions, byte counts, and a slow
//! target that must not grow memory.

mod util;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use packet::{CloseReason, ConnId, Connection, Handler};
use util::{client, echo_round_trip, echo_server, pattern, spawn_reactor, IO_TIMEOUT};

const BUFSIZE: usize = 128 * 1024;

/// One side of a proxied pair (the shape of examples/tcp_proxy.rs), which
/// reports the bytes it proxied when it ends.
struct Side {
    upstream: Option<SocketAddr>,
    peer: Option<ConnId>,
    report: mpsc::Sender<(bool, u64)>,
    /// Every connection the proxy made, for the queue sampler.
    ids: Rc<RefCell<Vec<ConnId>>>,
}

impl Handler for Side {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        let Some(upstream) = self.upstream else {
            return;
        };
        let me = conn.id();
        let up = conn
            .reactor()
            .connect(
                upstream,
                Side {
                    upstream: None,
                    peer: Some(me),
                    report: self.report.clone(),
                    ids: self.ids.clone(),
                },
            )
            .unwrap();
        self.peer = Some(up);
        self.ids.borrow_mut().extend([me, up]);
        conn.proxy_incoming_to(up, BUFSIZE).unwrap();
        conn.reactor()
            .connection(up)
            .unwrap()
            .proxy_incoming_to(me, BUFSIZE)
            .unwrap();
    }
    fn receive_data(&mut self, _conn: &mut Connection<'_>, _data: &[u8]) {
        panic!("a proxied connection's data must not reach receive_data");
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, _reason: &CloseReason) {
        let _ = self
            .report
            .send((self.upstream.is_some(), conn.proxied_bytes()));
        if let Some(peer) = self.peer {
            if let Some(mut peer) = conn.reactor().connection(peer) {
                peer.close_connection_after_writing();
            }
        }
    }
}

fn proxy_to(upstream: SocketAddr) -> (util::Running<SocketAddr>, mpsc::Receiver<(bool, u64)>) {
    let (tx, rx) = mpsc::channel();
    let proxy = spawn_reactor(move |r| {
        let ids = Rc::new(RefCell::new(Vec::new()));
        let id = r.start_server("127.0.0.1:0", move || Side {
            upstream: Some(upstream),
            peer: None,
            report: tx.clone(),
            ids: ids.clone(),
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    (proxy, rx)
}

#[test]
fn bytes_flow_both_ways_through_the_proxy_byte_exact() {
    let upstream = echo_server();
    let (proxy, _rx) = proxy_to(upstream.value);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = proxy.value;
            std::thread::spawn(move || {
                let data = pattern(300 + i, 3_000_000);
                let got = echo_round_trip(client(addr), data.clone(), false);
                assert!(
                    got == data,
                    "client {i}: the echo through the proxy differs"
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    proxy.stop();
    upstream.stop();
}

/// Sends a fixed amount as soon as connected, then closes after writing.
struct Firehose(usize);

impl Handler for Firehose {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.set_high_water_mark(usize::MAX);
        conn.send_data(&pattern(5, self.0));
        conn.close_connection_after_writing();
    }
}

const TOTAL: usize = 40 * 1024 * 1024;

#[test]
fn a_slow_reader_behind_the_proxy_bounds_its_queue_and_gets_every_byte() {
    let upstream = spawn_reactor(|r| {
        let id = r.start_server("127.0.0.1:0", || Firehose(TOTAL))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let upstream_addr = upstream.value;
    slow_reader_behind(move |report, ids| Side {
        upstream: Some(upstream_addr),
        peer: None,
        report,
        ids,
    });
    upstream.stop();
}

/// The source of a proxy that `splice` cannot read: a Unix socket that
/// may carry descriptors. A thread writes `TOTAL` bytes into its other end
/// and closes it.
struct FromDescriptorSocket {
    report: mpsc::Sender<(bool, u64)>,
    ids: Rc<RefCell<Vec<ConnId>>>,
}

impl Handler for FromDescriptorSocket {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut theirs = theirs;
            theirs.write_all(&pattern(5, TOTAL)).unwrap();
        });
        let me = conn.id();
        let source = conn
            .reactor()
            .attach_receiving_fds(
                ours.into(),
                Side {
                    upstream: None,
                    peer: Some(me),
                    report: self.report.clone(),
                    ids: self.ids.clone(),
                },
            )
            .unwrap();
        self.ids.borrow_mut().extend([me, source]);
        conn.reactor()
            .connection(source)
            .unwrap()
            .proxy_incoming_to(me, BUFSIZE)
            .unwrap();
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, _reason: &CloseReason) {
        // The client side reports as it does in `Side`.
        let _ = self.report.send((true, conn.proxied_bytes()));
    }
}

#[test]
fn a_slow_reader_behind_a_copying_proxy_bounds_its_queue_and_gets_every_byte() {
    slow_reader_behind(|report, ids| FromDescriptorSocket { report, ids });
}

/// Runs a proxy whose accepted connections are made by `front`, then
/// reads slowly from it: the client must get exactly `TOTAL` pattern bytes
/// and an end of stream, the source side must report it proxied them all,
/// and no connection of the proxy may queue much more than `BUFSIZE`.
fn slow_reader_behind<H: Handler>(
    front: impl Fn(mpsc::Sender<(bool, u64)>, Rc<RefCell<Vec<ConnId>>>) -> H + Send + 'static,
) {
    let (tx, rx) = mpsc::channel();
    let (max_tx, max_rx) = mpsc::channel();
    let proxy = spawn_reactor(move |r| {
        let ids = Rc::new(RefCell::new(Vec::new()));
        let seen = ids.clone();
        let id = r.start_server("127.0.0.1:0", move || front(tx.clone(), ids.clone()))?;
        // Sample the largest outbound queue any connection of the proxy
        // holds, every millisecond.
        let mut max = 0usize;
        r.add_periodic_timer(Duration::from_millis(1), move |r, _| {
            for &c in seen.borrow().iter() {
                max = max.max(r.connection(c).map_or(0, |c| c.outbound_len()));
            }
            let _ = max_tx.send(max);
        });
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(proxy.value);
    // Do not read until the socket is full: the proxy must then stop
    // reading its source.
    util::wait_until_receive_queue_full(&c);
    let mut got = Vec::with_capacity(TOTAL);
    c.read_to_end(&mut got).unwrap();
    // Our end of stream ends the proxy's lingering close now, not after
    // its 5 s of quiet.
    drop(c);
    assert_eq!(got.len(), TOTAL);
    assert!(got == pattern(5, TOTAL));
    // Both sides ended; the source side proxied everything.
    let mut counts: Vec<(bool, u64)> = vec![
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
    ];
    counts.sort();
    assert_eq!(counts, vec![(false, TOTAL as u64), (true, 0)]);
    let max = max_rx.try_iter().last().unwrap();
    // The queue never holds much more than the proxy's bufsize plus one
    // step (splice moves data in the kernel and queues nothing at all).
    assert!(
        max <= BUFSIZE + 128 * 1024,
        "a proxy queue reached {max} bytes"
    );
    proxy.stop();
}

/// A proxied connection's end of stream goes to its handler's
/// `receive_eof`, as on any connection (issue 21: the proxy used to close
/// it by itself), which here reports the bytes proxied and closes.
#[test]
fn the_end_of_a_proxied_stream_goes_to_receive_eof() {
    struct Sink;
    impl Handler for Sink {}
    struct Front {
        upstream: SocketAddr,
        eof: mpsc::Sender<u64>,
    }
    impl Handler for Front {
        fn post_init(&mut self, conn: &mut Connection<'_>) {
            let up = conn.reactor().connect(self.upstream, Sink).unwrap();
            conn.proxy_incoming_to(up, BUFSIZE).unwrap();
        }
        fn receive_eof(&mut self, conn: &mut Connection<'_>) {
            self.eof.send(conn.proxied_bytes()).unwrap();
            conn.close_connection_after_writing();
        }
    }
    let (tx, eof) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        let sink = r.start_server("127.0.0.1:0", || Sink)?;
        let upstream = r.server_addr(sink)?.as_inet().expect("tcp");
        let front = r.start_server("127.0.0.1:0", move || Front {
            upstream,
            eof: tx.clone(),
        })?;
        Ok(r.server_addr(front)?.as_inet().expect("tcp"))
    });
    let mut c = client(running.value);
    c.write_all(b"abc").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(eof.recv_timeout(IO_TIMEOUT), Ok(3), "receive_eof ran");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    running.stop();
}

/// `stop_proxying` while the target cannot take more (its peer does not
/// read): the bytes the proxy already took from the source, in the pipe
/// or the target's queue, still reach the target, in order, and every
/// byte after them goes to the source's own `receive_data`. Nothing is
/// lost or duplicated at the switch.
#[test]
fn stop_proxying_delivers_what_was_taken_and_hands_the_rest_to_receive_data() {
    const TOTAL: usize = 4 * 1024 * 1024;
    type Shared<T> = Rc<RefCell<T>>;
    /// The upstream's accepted side: paused until the proxy stopped.
    struct Sink {
        me: Shared<Option<ConnId>>,
        got: Vec<u8>,
        done: mpsc::Sender<(&'static str, Vec<u8>)>,
    }
    impl Handler for Sink {
        fn post_init(&mut self, conn: &mut Connection<'_>) {
            *self.me.borrow_mut() = Some(conn.id());
            conn.pause();
        }
        fn receive_data(&mut self, _conn: &mut Connection<'_>, data: &[u8]) {
            self.got.extend_from_slice(data);
        }
        fn receive_eof(&mut self, conn: &mut Connection<'_>) {
            let _ = self.done.send(("sink", std::mem::take(&mut self.got)));
            conn.close_connection();
        }
    }
    struct Up;
    impl Handler for Up {}
    /// The proxy's accepted side: proxies to the sink until the proxied
    /// count stops growing for five ticks, then takes the stream itself.
    struct Front {
        upstream: SocketAddr,
        sink: Shared<Option<ConnId>>,
        up: Option<ConnId>,
        rest: Vec<u8>,
        done: mpsc::Sender<(&'static str, Vec<u8>)>,
    }
    impl Handler for Front {
        fn post_init(&mut self, conn: &mut Connection<'_>) {
            let up = conn.reactor().connect(self.upstream, Up).unwrap();
            self.up = Some(up);
            conn.proxy_incoming_to(up, BUFSIZE).unwrap();
            let (me, sink, done) = (conn.id(), self.sink.clone(), self.done.clone());
            let (mut last, mut still) = (0, 0);
            conn.reactor()
                .add_periodic_timer(Duration::from_millis(10), move |r, timer| {
                    let Some(mut front) = r.connection(me) else {
                        r.cancel_timer(timer);
                        return;
                    };
                    let proxied = front.proxied_bytes();
                    still = if proxied == last { still + 1 } else { 0 };
                    last = proxied;
                    if proxied == 0 || still < 5 {
                        return;
                    }
                    front.stop_proxying();
                    let _ = done.send(("proxied", proxied.to_string().into_bytes()));
                    r.cancel_timer(timer);
                    if let Some(mut sink) = sink.borrow().and_then(|id| r.connection(id)) {
                        sink.resume();
                    }
                });
        }
        fn receive_data(&mut self, _conn: &mut Connection<'_>, data: &[u8]) {
            self.rest.extend_from_slice(data);
        }
        fn receive_eof(&mut self, conn: &mut Connection<'_>) {
            let _ = self.done.send(("front", std::mem::take(&mut self.rest)));
            if let Some(mut up) = self.up.and_then(|id| conn.reactor().connection(id)) {
                up.close_connection_after_writing();
            }
            conn.close_connection_after_writing();
        }
    }
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        let me = Rc::new(RefCell::new(None));
        let (sink_me, sink_tx) = (me.clone(), tx.clone());
        let sink = r.start_server("127.0.0.1:0", move || Sink {
            me: sink_me.clone(),
            got: Vec::new(),
            done: sink_tx.clone(),
        })?;
        let upstream = r.server_addr(sink)?.as_inet().expect("tcp");
        let front = r.start_server("127.0.0.1:0", move || Front {
            upstream,
            sink: me.clone(),
            up: None,
            rest: Vec::new(),
            done: tx.clone(),
        })?;
        Ok(r.server_addr(front)?.as_inet().expect("tcp"))
    });
    let stream = pattern(9, TOTAL);
    let mut c = client(running.value);
    c.write_all(&stream).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut parts = std::collections::HashMap::new();
    for _ in 0..3 {
        let (name, bytes) = rx.recv_timeout(IO_TIMEOUT).expect("all three parts");
        parts.insert(name, bytes);
    }
    drop(c);
    let proxied: usize = String::from_utf8(parts["proxied"].clone())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        proxied > 0 && proxied < TOTAL,
        "stopped after {proxied} bytes"
    );
    assert_eq!(
        parts["sink"].len(),
        proxied,
        "the target got what was taken"
    );
    assert!(parts["sink"] == stream[..proxied], "in order");
    assert_eq!(parts["front"].len(), TOTAL - proxied);
    assert!(
        parts["front"] == stream[proxied..],
        "the rest went to receive_data"
    );
    running.stop();
}
