//! Connection churn: many connect / round trip / close cycles against an
//! echo server leave no descriptor and no memory behind.
//!
//! A binary of its own: it counts the whole process's descriptors
//! (`/proc/self/fd`) and resident memory, which other tests running in
//! parallel would disturb. `cargo test` runs [`DEFAULT_CYCLES`] cycles;
//! `PACKET_CHURN_CYCLES=200000` (what `bench/churn.sh` sets, in release
//! mode) runs the full count.

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Instant;

use util::{echo_server, IO_TIMEOUT};

/// Cycles per `cargo test` run: enough to show a per-connection leak of a
/// descriptor (20,000 of them) or of a few dozen bytes (hundreds of KiB),
/// short enough for a debug build on two shared cores.
const DEFAULT_CYCLES: usize = 20_000;

/// Client threads: the machine has two cores, one of them for the server.
const CLIENT_THREADS: usize = 2;

/// The measured cycles run in this many rounds, resident memory read after
/// each.
const ROUNDS: usize = 5;

/// A leak grows resident memory in every round, by the same amount: 16
/// bytes a cycle are 62 KiB a round of 4,000 cycles (the default), 625 KiB
/// at the bench's count. Allocator caches and the slab's high-water
/// capacity grow it in steps, in some rounds, by however much the timing
/// of a busy machine lets connections pile up; a round that grows by less
/// than this shows memory is not leaking.
const LEAK_KIB_PER_ROUND: u64 = 48;

/// `n` cycles of: connect, send 32 bytes, read the echo, close.
fn cycles(addr: SocketAddr, n: usize, seed: u64) {
    let mut buf = [0u8; 32];
    for i in 0..n {
        let msg = util::pattern(seed.wrapping_mul(1_000_003) + i as u64, 32);
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        c.write_all(&msg).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf[..], msg[..], "cycle {i}: echo differs");
    }
}

fn churn(addr: SocketAddr, n: usize) {
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let share = n / CLIENT_THREADS + usize::from(t < n % CLIENT_THREADS);
            std::thread::spawn(move || cycles(addr, share, t as u64))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Waits until the server has seen every client close (its connection
/// count is 0), asking its own thread.
fn wait_for_no_connections(server: &util::Running<SocketAddr>) {
    let mut open = 0;
    let closed = util::eventually(IO_TIMEOUT, || {
        let (tx, rx) = mpsc::channel();
        server
            .handle
            .schedule(move |r| tx.send(r.connection_count()).unwrap());
        open = rx.recv_timeout(IO_TIMEOUT).unwrap();
        open == 0
    });
    assert!(closed, "{open} connections still open on the server");
}

#[test]
fn connect_round_trip_close_cycles_leave_no_descriptors_or_memory_behind() {
    let n: usize = std::env::var("PACKET_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let server = echo_server();
    let addr = server.value;

    // Warm-up: thread stacks, the server's slab and the allocator's pools
    // reach their working size.
    churn(addr, 2_000);
    wait_for_no_connections(&server);
    let (fds_before, rss_before) = (util::open_fds(), util::rss_kib());

    let started = Instant::now();
    let mut rss = vec![rss_before];
    for round in 0..ROUNDS {
        churn(addr, n / ROUNDS + usize::from(round < n % ROUNDS));
        wait_for_no_connections(&server);
        rss.push(util::rss_kib());
    }
    let took = started.elapsed();
    let fds_after = util::open_fds();
    let growth: Vec<i64> = rss.windows(2).map(|w| w[1] as i64 - w[0] as i64).collect();

    println!(
        "churn: {n} cycles in {took:.2?} ({:.0}/s); fds {fds_before} -> {fds_after}; \
         RSS {rss_before} KiB -> {} KiB, by round {growth:?} KiB",
        n as f64 / took.as_secs_f64(),
        rss[ROUNDS]
    );
    assert_eq!(fds_after, fds_before, "descriptors leaked");
    assert!(
        growth.iter().any(|&g| g < LEAK_KIB_PER_ROUND as i64),
        "RSS grew in every one of {ROUNDS} rounds of {} cycles: {growth:?} KiB",
        n / ROUNDS
    );
    // The server still serves.
    cycles(addr, 10, 99);
    server.stop();
}
