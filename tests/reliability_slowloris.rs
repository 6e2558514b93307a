//! Slowloris: thousands of clients that open a connection and trickle a
//! byte now and then, never finishing a request, against a server with an
//! inactivity timeout. The timeouts reclaim every one of them, and clients
//! that do finish their requests keep being served meanwhile.
//!
//! An inactivity timeout only measures silence: a client that trickles a
//! byte more often than the timeout is active, and it is not reclaimed by
//! it (EventMachine's `comm_inactivity_timeout` works the same way). The
//! second test shows the tool for that case — a per-request deadline from
//! `add_timer` — reclaiming such clients.
//!
//! A binary of its own: it raises the process's descriptor limit, and
//! counts the process's descriptors.
//!
//! Run alone: `cargo test --all-features --test reliability_slowloris`.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use packet::{CloseReason, Connection, Handler};
use util::{spawn_reactor, IO_TIMEOUT};

/// How each connection of the server ended.
#[derive(Default)]
struct Stats {
    /// Answered a whole request and closed after writing.
    served: AtomicUsize,
    /// Closed by the inactivity timeout.
    idle: AtomicUsize,
    /// Closed by the request deadline.
    deadline: AtomicUsize,
    /// Anything else, with the reason.
    other: std::sync::Mutex<Vec<String>>,
}

/// A line server: answers the first line with itself and closes. A request
/// is complete at its `\n`; until then the connection costs the bytes
/// received so far.
struct LineOnce {
    stats: Arc<Stats>,
    idle: Duration,
    /// Close a connection whose request is not complete by then.
    deadline: Option<Duration>,
    partial: Vec<u8>,
    answered: bool,
}

impl Handler for LineOnce {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_inactivity_timeout(Some(self.idle));
        if let Some(limit) = self.deadline {
            let id = conn.id();
            // The connection may be gone by then: its id no longer names
            // one, and there is nothing to close.
            conn.reactor().add_timer(limit, move |r| {
                if let Some(mut conn) = r.connection(id) {
                    conn.close_connection();
                }
            });
        }
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        if self.answered {
            return;
        }
        self.partial.extend_from_slice(data);
        if let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            conn.send_data(&self.partial[..=end]);
            conn.close_connection_after_writing();
            self.answered = true;
        }
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        match reason {
            CloseReason::Local if self.answered => &self.stats.served,
            CloseReason::Local => &self.stats.deadline,
            CloseReason::InactivityTimeout => &self.stats.idle,
            other => {
                self.stats.other.lock().unwrap().push(other.to_string());
                return;
            }
        }
        .fetch_add(1, Ordering::SeqCst);
    }
}

fn server(idle: Duration, deadline: Option<Duration>) -> (util::Running<SocketAddr>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let s = stats.clone();
    let running = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || LineOnce {
            stats: s.clone(),
            idle,
            deadline,
            partial: Vec::new(),
            answered: false,
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    (running, stats)
}

fn connections(handle: &packet::ReactorHandle) -> usize {
    let (tx, rx) = mpsc::channel();
    handle.schedule(move |r| tx.send(r.connection_count()).unwrap());
    rx.recv_timeout(IO_TIMEOUT).unwrap()
}

/// Well-behaved clients, one request per connection, until `stop`;
/// returns how many were answered. Any request that is not answered fails
/// the test.
fn good_clients(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut served = 0;
        while !stop.load(Ordering::SeqCst) || served == 0 {
            let mut c = TcpStream::connect(addr).expect("a good client connects");
            c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let line = format!("GET /{served} while the slowloris runs\n");
            c.write_all(line.as_bytes()).unwrap();
            let mut answer = Vec::new();
            c.read_to_end(&mut answer)
                .expect("a good client is answered");
            assert_eq!(answer, line.as_bytes(), "good client {served}");
            served += 1;
            // A steady stream of requests, not a flood of its own.
            std::thread::sleep(Duration::from_millis(1));
        }
        served
    })
}

/// Opens `n` connections that each send one byte.
fn open_slow_clients(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(addr).expect("a slow client connects");
            c.write_all(b"G").unwrap();
            c.set_nonblocking(true).unwrap();
            c
        })
        .collect()
}

/// Every `every`, sends one more byte on each open slow client, and drops
/// those the server has closed; returns once all are closed.
fn trickle_until_closed(mut open: Vec<TcpStream>, every: Duration, bound: Duration) {
    let started = Instant::now();
    while !open.is_empty() {
        assert!(
            started.elapsed() < bound,
            "{} slow clients still open after {bound:?}",
            open.len()
        );
        std::thread::sleep(every);
        open.retain_mut(|c| {
            let mut b = [0u8; 16];
            match c.read(&mut b) {
                // Closed by the server (a reset if a byte crossed the close).
                Ok(0) => false,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Still open: one more byte of a request that never ends.
                    let _ = c.write(b"E");
                    true
                }
                Ok(n) => panic!("a slow client got an answer: {:?}", &b[..n]),
                Err(e) => panic!("slow client: {e}"),
            }
        });
    }
}

/// The tests count the process's descriptors: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Raises the soft descriptor limit to the hard one; returns it.
fn raise_fd_limit() -> usize {
    let (_, hard) = packet_sys::process::nofile_limit().unwrap();
    packet_sys::process::set_nofile_soft_limit(hard).unwrap();
    usize::try_from(hard).unwrap_or(usize::MAX)
}

#[test]
fn inactivity_timeouts_reclaim_two_thousand_slowloris_connections() {
    let _serial = serial();
    // Each slow client costs two descriptors here (its end and the
    // server's); a machine whose hard limit cannot hold 2,000 of them
    // (besides the good clients' and the harness's) runs fewer.
    let limit = raise_fd_limit();
    let slow_count = 2000.min(limit.saturating_sub(256) / 2);
    assert!(slow_count >= 100, "descriptor limit {limit} is too low");
    if slow_count < 2000 {
        println!("slowloris: hard descriptor limit {limit}: {slow_count} slow clients, not 2000");
    }
    let fds_before = util::open_fds();
    let idle = Duration::from_millis(1500);
    let (running, stats) = server(idle, None);
    let addr = running.value;

    let stop = Arc::new(AtomicBool::new(false));
    let good = good_clients(addr, stop.clone());
    let slow = open_slow_clients(addr, slow_count);
    // One byte every 2.5 s: slower than the 1.5 s timeout.
    trickle_until_closed(slow, Duration::from_millis(2500), Duration::from_secs(120));
    stop.store(true, Ordering::SeqCst);
    let served = good.join().expect("every good client was served");

    assert_eq!(
        stats.idle.load(Ordering::SeqCst),
        slow_count,
        "reclaimed by the timeout"
    );
    assert_eq!(stats.deadline.load(Ordering::SeqCst), 0);
    assert_eq!(*stats.other.lock().unwrap(), Vec::<String>::new());
    assert_eq!(stats.served.load(Ordering::SeqCst), served);
    assert_eq!(connections(&running.handle), 0);
    println!(
        "slowloris: {slow_count} slow clients reclaimed, {served} good clients served meanwhile"
    );
    running.stop();
    assert_eq!(util::open_fds(), fds_before, "every descriptor is closed");
}

#[test]
fn a_request_deadline_reclaims_clients_that_trickle_faster_than_the_timeout() {
    const SLOW: usize = 200;
    let _serial = serial();
    raise_fd_limit();
    // The timeout is eight times the trickle's pace, so only a client
    // starved of CPU for two seconds falls to it; the deadline comes after
    // three timeouts' worth of trickling.
    let (running, stats) = server(Duration::from_secs(2), Some(Duration::from_secs(6)));
    let addr = running.value;
    let stop = Arc::new(AtomicBool::new(false));
    let good = good_clients(addr, stop.clone());
    let slow = open_slow_clients(addr, SLOW);
    // A byte every 250 ms keeps each connection active: the inactivity
    // timeout alone would keep them for as long as they trickle.
    trickle_until_closed(slow, Duration::from_millis(250), Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let served = good.join().expect("every good client was served");
    let (deadline, idle) = (
        stats.deadline.load(Ordering::SeqCst),
        stats.idle.load(Ordering::SeqCst),
    );
    // Normally all by the deadline; a client starved of CPU for two
    // seconds on a loaded machine may be reclaimed by the timeout instead.
    assert_eq!(deadline + idle, SLOW);
    assert!(deadline > 0, "the deadline reclaimed none");
    assert_eq!(*stats.other.lock().unwrap(), Vec::<String>::new());
    assert_eq!(stats.served.load(Ordering::SeqCst), served);
    println!("trickle: {deadline} reclaimed by the deadline, {idle} by the timeout; {served} good clients served");
    running.stop();
}
