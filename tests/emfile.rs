//! Running out of descriptors while accepting: the server must neither spin
//! nor stop, keeps serving its clients, and accepts again once descriptors
//! free up. In a test binary of its own because it lowers the process's
//! descriptor limit.

mod util;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use packet_sys::{Addr, Domain, Socket};
use util::IO_TIMEOUT;

/// CPU time (user + system) of a thread, from its already open stat file
/// (no descriptor is needed to read it again).
fn thread_cpu(stat: &File) -> Duration {
    let mut buf = [0u8; 1024];
    let n = stat.read_at(&mut buf, 0).unwrap();
    util::stat_cpu(&String::from_utf8_lossy(&buf[..n]))
}

#[test]
fn accept_survives_descriptor_exhaustion_without_spinning() {
    let server = util::spawn_reactor(|r| {
        let id = r.start_server("127.0.0.1:0", || util::Echo)?;
        let tid = std::fs::read_link("/proc/thread-self").unwrap();
        Ok((
            r.server_addr(id)?.as_inet().unwrap(),
            tid.file_name().unwrap().to_string_lossy().into_owned(),
        ))
    });
    let (addr, tid) = server.value.clone();
    let stat = File::open(format!("/proc/self/task/{tid}/stat")).unwrap();

    let mut first = TcpStream::connect(addr).unwrap();
    first.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    first.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    first.read_exact(&mut buf).unwrap();

    // Client sockets made now, connected only once the process is at its
    // descriptor limit: the handshakes complete in the kernel, and the
    // server's accept fails with EMFILE.
    let late: Vec<Socket> = (0..30)
        .map(|_| Socket::stream(Domain::Ipv4).unwrap())
        .collect();
    let (soft, _) = packet_sys::process::nofile_limit().unwrap();
    packet_sys::process::set_nofile_soft_limit(util::open_fds() as u64).unwrap();
    for s in &late {
        let _ = s.connect(&Addr::Inet(addr)).unwrap();
    }

    // Out of descriptors for a second: the reactor must sleep, not spin.
    // A spinning reactor would use most of the wait, a sleeping one next to
    // nothing; the bound is a share of the wait as it really lasted, so a
    // busy machine that stretches it cannot fail the test.
    let (before, started) = (thread_cpu(&stat), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (used, waited) = (thread_cpu(&stat) - before, started.elapsed());
    assert!(
        used * 4 < waited,
        "reactor used {used:?} of CPU in {waited:?} out of descriptors"
    );

    // The queued clients were shed (closed), not left hanging.
    let mut shed = 0;
    for s in &late {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => shed += 1,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => shed += 1,
            _ => {}
        }
    }
    assert!(shed > 0, "no queued client was shed");

    // The established client is still served.
    first.write_all(b"ok").unwrap();
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");

    // Descriptors free again: new clients are accepted and served.
    drop(late);
    packet_sys::process::set_nofile_soft_limit(soft).unwrap();
    for i in 0..5u8 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        c.write_all(&[i]).unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i);
    }
    server.stop();
}
