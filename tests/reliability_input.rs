//! Bad input from peers, over real sockets: announced sizes that are never
//! sent, payloads that are not the expected type, descriptors passed to a
//! connection that does not take any. Errors name the problem, only the
//! offending connection closes, and nothing is allocated for what was
//! only announced. (`tests/objects.rs` covers a 4 GiB header and a bad
//! payload with the stream going on, `tests/line.rs` over-long lines, the
//! fuzz targets the parsers themselves.)
//!
//! A binary of its own: it measures the process's memory and descriptors,
//! so its tests run one at a time.

mod util;

use std::io::{IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::sync::{mpsc, Mutex, MutexGuard};

use packet::codec::{FrameError, MessageError};
use packet::objects::{ObjectHandler, ObjectProtocol};
use packet::{CloseReason, Connection, Handler};
use serde::{Deserialize, Serialize};
use util::{client, spawn_reactor, IO_TIMEOUT};

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Msg {
    Ping(u32),
    Pong(u32),
}

/// Answers pings; reports every error and every close.
struct Pinger(mpsc::Sender<String>);

impl Handler for Pinger {
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("unbind: {reason}"));
    }
}

impl ObjectHandler for Pinger {
    type Message = Msg;
    fn receive_object(&mut self, conn: &mut Connection<'_>, msg: Msg) {
        if let Msg::Ping(n) = msg {
            conn.send_object(&Msg::Pong(n)).unwrap();
        }
    }
    fn message_error(&mut self, _conn: &mut Connection<'_>, error: MessageError) {
        let _ = self.0.send(format!("message: {error}"));
    }
    fn frame_error(&mut self, _conn: &mut Connection<'_>, error: FrameError) {
        let _ = self.0.send(format!("frame: {error}"));
    }
}

fn compact_header(len: u64) -> Vec<u8> {
    packet::codec::FrameEncoder::new(packet::codec::HeaderFormat::Compact)
        .with_max_frame_len(usize::MAX)
        .header(len as usize)
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// Sends a ping and waits for its pong.
fn ping(c: &mut std::net::TcpStream, n: u32) {
    let mut wire = Vec::new();
    packet::codec::encode_message(&Msg::Ping(n), &mut wire).unwrap();
    c.write_all(&wire).unwrap();
    let mut decoder = packet::codec::MessageDecoder::<Msg>::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.is_empty() {
        let k = c.read(&mut buf).unwrap();
        assert!(k > 0, "closed early");
        decoder.decode(&buf[..k], |m| got.push(m.unwrap())).unwrap();
    }
    assert_eq!(got, [Msg::Pong(n)]);
}

#[test]
fn announced_but_unsent_messages_cost_only_the_bytes_that_arrived() {
    let _serial = serial();
    const CONNS: usize = 100;
    // Just under the default 16 MiB limit: accepted as a header, so the
    // decoder waits for the payload.
    const ANNOUNCED: u64 = 16 * 1024 * 1024 - 1;
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || {
            ObjectProtocol::new(Pinger(tx.clone()))
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let addr = server.value;
    let mut probe = client(addr);
    ping(&mut probe, 0);
    let (vm_before, rss_before) = (util::status_kib("VmSize:"), util::status_kib("VmRSS:"));

    let mut liars: Vec<_> = (0..CONNS).map(|_| client(addr)).collect();
    for c in &mut liars {
        let mut wire = compact_header(ANNOUNCED);
        wire.extend_from_slice(&[0u8; 1000]);
        c.write_all(&wire).unwrap();
    }
    // The probe's ping is read after the liars' bytes (they were ready
    // first), so once it is answered the server holds every partial frame.
    ping(&mut probe, 1);
    let (vm_after, rss_after) = (util::status_kib("VmSize:"), util::status_kib("VmRSS:"));
    println!(
        "{CONNS} connections announcing {ANNOUNCED} bytes each ({} MiB in all): \
         VmSize {vm_before} -> {vm_after} KiB, VmRSS {rss_before} -> {rss_after} KiB",
        (CONNS as u64 * ANNOUNCED) >> 20
    );
    // Reserving the announced sizes would add 1.6 GiB of address space;
    // what arrived is 100 KB. (The bound leaves room for a few of glibc's
    // 64 MiB per-thread arenas, which any thread of the test harness may
    // open meanwhile.)
    assert!(
        vm_after <= vm_before + 512 * 1024,
        "address space grew from {vm_before} KiB to {vm_after} KiB"
    );
    assert!(rss_after <= rss_before + 8 * 1024);

    // Over the limit: refused with an error naming both sizes, and only
    // that connection closes.
    let mut over = client(addr);
    over.write_all(&compact_header(16 * 1024 * 1024 + 1))
        .unwrap();
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        "frame: frame header announces 16777217 bytes, over the maximum frame length of 16777216 bytes"
    );
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        "unbind: closed locally"
    );
    let mut b = [0u8; 1];
    assert!(matches!(over.read(&mut b), Ok(0) | Err(_)), "closed");
    // A payload that is not a `Msg`: reported, the stream goes on.
    let mut wire = Vec::new();
    packet::codec::encode_frame(packet::codec::HeaderFormat::Compact, &[9, 9, 9], &mut wire)
        .unwrap();
    probe.write_all(&wire).unwrap();
    let e = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(
        e.starts_with("message: cannot deserialize message: "),
        "{e}"
    );
    ping(&mut probe, 2);

    // The liars hang up: each is an ordinary close; nothing else happened.
    drop(liars);
    for _ in 0..CONNS {
        assert_eq!(
            rx.recv_timeout(IO_TIMEOUT).unwrap(),
            "unbind: closed by peer"
        );
    }
    ping(&mut probe, 3);
    server.stop();
}

#[test]
fn descriptors_passed_to_a_connection_that_takes_none_are_not_kept() {
    let _serial = serial();
    let path = std::env::temp_dir().join(format!("packet-input-{}.sock", std::process::id()));
    let p = path.clone();
    let server = spawn_reactor(move |r| {
        r.start_unix_server(&p, || util::Echo)?;
        Ok(())
    });
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let files: Vec<std::fs::File> = (0..packet_sys::MAX_FDS_PER_MESSAGE)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    // One plain round trip first: the server has accepted its end.
    c.write_all(b"hi").unwrap();
    let mut hi = [0u8; 2];
    c.read_exact(&mut hi).unwrap();
    let before = util::open_fds();
    for round in 0..100u32 {
        let msg = format!("round {round:03}");
        let n = packet_sys::Socket::view(c.as_fd())
            .write_vectored_with_fds(&[IoSlice::new(msg.as_bytes())], &fds)
            .unwrap();
        assert_eq!(n, msg.len());
        let mut echo = vec![0u8; msg.len()];
        c.read_exact(&mut echo).unwrap();
        assert_eq!(echo, msg.as_bytes());
    }
    // 1,600 descriptors crossed the socket; the server (same process) got
    // to keep none of them: the kernel discards descriptors a plain read
    // does not ask for.
    assert_eq!(util::open_fds(), before);
    server.stop();
}
