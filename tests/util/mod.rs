//! Helpers shared by the integration tests: reactors on their own threads,
//! an echo handler, and deterministic byte patterns; example programs run
//! as processes (`example`).
#![allow(dead_code)]

pub mod example;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use packet::{Connection, Handler, Reactor, ReactorHandle};

/// Generous bound for any single blocking socket call in a test: far above
/// what loopback needs, only there so a broken reactor fails the test
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A reactor running on its own thread.
pub struct Running<T> {
    pub handle: ReactorHandle,
    pub value: T,
    pub thread: JoinHandle<io::Result<()>>,
}

impl<T> Running<T> {
    /// Stops the reactor and waits for its thread.
    pub fn stop(self) -> T {
        self.handle.stop();
        self.thread
            .join()
            .expect("reactor thread panicked")
            .expect("reactor failed");
        self.value
    }
}

/// Builds a reactor on a new thread, runs `setup` on it, and returns what
/// `setup` returned once the loop is running.
pub fn spawn_reactor<T: Send + 'static>(
    setup: impl FnOnce(&mut Reactor) -> io::Result<T> + Send + 'static,
) -> Running<T> {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut reactor = Reactor::new()?;
        let value = setup(&mut reactor)?;
        tx.send((reactor.handle(), value)).expect("test went away");
        reactor.run_until_stopped()
    });
    let (handle, value) = rx.recv().expect("reactor setup failed");
    Running {
        handle,
        value,
        thread,
    }
}

/// Starts an echo server on an ephemeral loopback port on its own reactor.
pub fn echo_server() -> Running<SocketAddr> {
    spawn_reactor(|r| {
        let id = r.start_server("127.0.0.1:0", || Echo)?;
        Ok(r.server_addr(id)?.as_inet().expect("tcp"))
    })
}

/// Echoes everything, pausing reads while its outbound queue is above the
/// high-water mark (the echo example's backpressure).
pub struct Echo;

impl Handler for Echo {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(data);
    }
    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
    }
    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        conn.resume();
    }
}

/// `len` bytes of a pattern that differs by `seed` and by position, so a
/// lost, duplicated or reordered chunk shows up.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A blocking loopback client with timeouts.
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to test server");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Sends `data` from a second thread while reading the echo on this one,
/// and returns what came back before end of stream or `want` bytes.
pub fn echo_round_trip(stream: TcpStream, data: Vec<u8>, shutdown_after: bool) -> Vec<u8> {
    let want = data.len();
    let mut writer = stream.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        for chunk in data.chunks(7919) {
            writer.write_all(chunk).unwrap();
        }
        if shutdown_after {
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        }
    });
    let mut got = Vec::with_capacity(want);
    let mut reader = stream;
    let mut buf = vec![0u8; 65536];
    while got.len() < want || shutdown_after {
        let n = reader.read(&mut buf).expect("read echo");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    w.join().unwrap();
    got
}

/// The fields of a `/proc/.../stat` line after the command name, so that
/// index 0 is the state (field 3 of proc(5)).
pub fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

/// User plus system CPU time in a `/proc/.../stat` line.
pub fn stat_cpu(stat: &str) -> Duration {
    let f = stat_fields(stat);
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux configuration in use.
    Duration::from_millis(ticks * 10)
}

/// Child processes of process `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        if stat_fields(&stat)
            .get(1)
            .and_then(|pp| pp.parse::<u32>().ok())
            == Some(pid)
        {
            kids.push(p);
        }
    }
    kids
}

/// A named test that gets the system made for it before threads started.
pub type ForkingTest<W> = (&'static str, fn(W));

/// The runner of a `harness = false` test binary whose tests fork: every
/// test's system (`start`, which forks a fork server) is made first, while
/// the process still has one thread; then the tests run one after another
/// (they may start threads), and last the process must have no child left.
/// Arguments that do not start with `-` filter tests by name. Prints the
/// usual closing line and exits with the result.
pub fn run_forking_tests<W>(tests: Vec<ForkingTest<W>>, start: impl Fn() -> W) -> ! {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: Vec<ForkingTest<W>> = tests
        .into_iter()
        .filter(|(n, _)| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str())))
        .collect();
    let systems: Vec<W> = tests.iter().map(|_| start()).collect();
    println!("running {} tests", tests.len());
    let (mut passed, mut failed) = (0, 0);
    for ((name, test), system) in tests.into_iter().zip(systems) {
        let started = std::time::Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(system))) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", started.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    // Every fork server was reaped when its reactor stopped, and every
    // worker by its fork server: nothing of ours is left.
    let left = children_of(std::process::id());
    if left.is_empty() {
        passed += 1;
        println!("test no_child_processes_left ... ok");
    } else {
        failed += 1;
        println!("test no_child_processes_left ... FAILED: {left:?}");
    }
    println!();
    println!(
        "test result: {}. {passed} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

/// Runs a reactor with `workers` attached until `setup`'s work stops it, or
/// fails the test after a generous bound.
#[cfg(feature = "workers")]
pub fn run_with_workers(
    workers: packet::worker::Workers,
    setup: impl FnOnce(&mut Reactor) -> io::Result<()>,
) {
    let timed_out = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = timed_out.clone();
    Reactor::run(|r| {
        r.workers().add(workers)?;
        r.add_timer(Duration::from_secs(60), move |r| {
            flag.set(true);
            r.stop();
        });
        setup(r)
    })
    .unwrap();
    assert!(!timed_out.get(), "test did not finish within 60 s");
}

/// A worker that replies with the number of milliseconds it was sent,
/// after as many milliseconds, on a timer: its reactor stays responsive
/// (to heartbeats, to the channel closing) meanwhile.
#[cfg(feature = "workers")]
pub struct Slow;

#[cfg(feature = "workers")]
impl packet::worker::Worker for Slow {
    fn receive_data(
        &mut self,
        ctx: &mut packet::worker::WorkerContext<'_, '_>,
        msg: packet::worker::WorkerMessage,
    ) {
        let ms: u64 = msg.decode().unwrap();
        let replier = ctx.replier().unwrap();
        ctx.reactor()
            .add_timer(Duration::from_millis(ms), move |r| {
                replier.reply(r, &ms).unwrap()
            });
    }
}

/// A `/proc/self/status` field in KiB (`field` with its colon, such as
/// `"VmRSS:"`).
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in /proc/self/status")
}

/// This process's resident memory in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Descriptors open in this process.
pub fn open_fds() -> usize {
    // The directory listing holds one descriptor of its own.
    std::fs::read_dir("/proc/self/fd").unwrap().count() - 1
}

/// Every process below `pid`: its children, their children, and so on.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        let kids = children_of(p);
        next.extend(&kids);
        all.extend(kids);
    }
    all
}

/// Whether process `pid` is gone: not running, and not a zombie either
/// (a zombie still has its `/proc` entry until it is reaped).
pub fn is_gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether process `pid` no longer runs: gone, or a zombie.
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).first() == Some(&"Z"),
        Err(_) => true,
    }
}

/// Sends signal `sig` (a name such as `"TERM"`) to process `pid`, or to
/// every process of group `pid` with `group`, through kill(1): the tests
/// hold no unsafe code, and `packet_sys::process::kill` refuses groups.
pub fn send_signal(pid: u32, sig: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), "--".into(), target])
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Polls `done` every 10 ms until it holds or `bound` passes; whether it
/// held. For "it eventually happens" checks: `bound` is a generous limit,
/// never a timing assertion.
pub fn eventually(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + bound;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Calls `f` with what `check` returns once it returns something, asking
/// it now and then every 2 ms on the reactor's timers (never blocking the
/// reactor): for tests that wait on the reactor's thread for a state the
/// reactor itself brings about.
pub fn when<T: 'static>(
    r: &mut Reactor,
    mut check: impl FnMut(&mut Reactor) -> Option<T> + 'static,
    f: impl FnOnce(&mut Reactor, T) + 'static,
) {
    match check(r) {
        Some(v) => f(r, v),
        None => {
            r.add_timer(Duration::from_millis(2), move |r| when(r, check, f));
        }
    }
}

/// Polls `rx` from the reactor (never blocking it) and calls `f` with what
/// arrives; panics if the sender went away without sending.
pub fn wait_then<T: 'static>(
    r: &mut Reactor,
    rx: mpsc::Receiver<T>,
    f: impl FnOnce(&mut Reactor, T) + 'static,
) {
    let check = move |_: &mut Reactor| match rx.try_recv() {
        Ok(v) => Some(v),
        Err(mpsc::TryRecvError::Empty) => None,
        Err(mpsc::TryRecvError::Disconnected) => panic!("the sending thread failed"),
    };
    when(r, check, f);
}

/// Calls `f` with the pid of worker `name` once it runs with a process
/// other than `not` (a replacement of a worker that was killed).
#[cfg(feature = "workers")]
pub fn when_worker_runs(
    r: &mut Reactor,
    name: &'static str,
    not: Option<u32>,
    f: impl FnOnce(&mut Reactor, u32) + 'static,
) {
    let check = move |r: &mut Reactor| {
        let pid = r.workers().pids(name).first().map(|&(_, pid)| pid);
        pid.filter(|&pid| Some(pid) != not)
    };
    when(r, check, f);
}

/// Waits until the peer has filled `stream`'s receive queue: it holds data
/// and no more arrives while it is not read (the peer's writes would
/// block, so what the peer sends next waits in its own queue). Returns the
/// bytes queued. Reads nothing (it peeks); bounded by [`IO_TIMEOUT`].
pub fn wait_until_receive_queue_full(stream: &TcpStream) -> usize {
    // Larger than any loopback receive buffer, so a peek sees it all.
    let mut buf = vec![0u8; 64 << 20];
    let mut last = 0;
    let full = eventually(IO_TIMEOUT, || {
        let queued = stream.peek(&mut buf).expect("peek the receive queue");
        let stable = queued > 0 && queued == last;
        last = queued;
        stable
    });
    assert!(full, "the receive queue never stopped growing");
    last
}

/// A blocking pipe, as `std::io::pipe` makes (which needs Rust 1.87; the
/// tests build with the library's rust-version): its read end, then its
/// write end.
pub fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    let (reader, writer) = packet_sys::process::pipe().expect("pipe");
    let blocking = |fd| {
        // O_NONBLOCK is a file status flag: fcntl clears it on any fd, as
        // on the sockets this wrapper is named for.
        let fd = packet_sys::Socket::from(fd);
        fd.set_nonblocking(false).expect("clear O_NONBLOCK");
        std::os::fd::OwnedFd::from(fd)
    };
    (blocking(reader), blocking(writer))
}

/// Asserts `got` is `HDR`, the file's `content`, then `TRL`: what the
/// send-file tests' servers send around a file.
pub fn assert_file_between_hdr_and_trl(got: &[u8], content: &[u8]) {
    assert_eq!(got.len(), content.len() + 6);
    assert!(
        got[..3] == *b"HDR"
            && got[3..got.len() - 3] == content[..]
            && got[got.len() - 3..] == *b"TRL",
        "not HDR, the file, TRL"
    );
}

/// The committed test certificate for "localhost" (`tests/fixtures`, made
/// by scripts/make-test-certs.sh): its DER bytes, a server configuration
/// using it and a client configuration trusting it.
#[cfg(feature = "tls")]
pub fn tls_configs() -> (
    Vec<u8>,
    std::sync::Arc<packet::tls::rustls::ServerConfig>,
    std::sync::Arc<packet::tls::rustls::ClientConfig>,
) {
    use packet::tls::{self, rustls::pki_types::pem::PemObject};
    use tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fixture = |name: &str| format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let cert = CertificateDer::from_pem_file(fixture("localhost.crt"))
        .unwrap()
        .to_vec();
    let key = PrivateKeyDer::from_pem_file(fixture("localhost.key")).unwrap();
    let server = tls::server_config(vec![cert.clone()], key.secret_der().to_vec()).unwrap();
    let client = tls::client_config(std::slice::from_ref(&cert)).unwrap();
    (cert, server, client)
}
