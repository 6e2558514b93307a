//! Typed objects over TCP: `send_object` and `ObjectProtocol`.

mod util;

use std::io::{Read, Write};
use std::sync::mpsc;

use packet::codec::{encode_frame, FrameError, HeaderFormat, MessageError};
use packet::objects::{ObjectHandler, ObjectProtocol};
use packet::{CloseReason, Connection, Handler};
use serde::{Deserialize, Serialize};
use util::{client, spawn_reactor, IO_TIMEOUT};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Job {
    Add { a: i64, b: i64 },
    Name(String),
    Blob(Vec<u8>),
}

/// Answers every job with its result, and reports errors.
struct Calc(mpsc::Sender<String>);

impl Handler for Calc {
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("unbind: {reason}"));
    }
}

impl ObjectHandler for Calc {
    type Message = Job;
    fn receive_object(&mut self, conn: &mut Connection<'_>, job: Job) {
        let answer = match job {
            Job::Add { a, b } => Job::Add { a: a + b, b: 0 },
            Job::Name(n) => Job::Name(n.to_uppercase()),
            Job::Blob(b) => Job::Blob(b.into_iter().rev().collect()),
        };
        conn.send_object(&answer).unwrap();
    }
    fn message_error(&mut self, _conn: &mut Connection<'_>, error: MessageError) {
        let _ = self.0.send(format!("message: {error}"));
    }
    fn frame_error(&mut self, _conn: &mut Connection<'_>, error: FrameError) {
        let _ = self.0.send(format!("frame: {error}"));
    }
}

fn frames(jobs: &[Job]) -> Vec<u8> {
    let mut wire = Vec::new();
    for j in jobs {
        packet::codec::encode_message(j, &mut wire).unwrap();
    }
    wire
}

fn read_objects(c: &mut std::net::TcpStream, n: usize) -> Vec<Job> {
    let mut decoder = packet::codec::MessageDecoder::<Job>::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.len() < n {
        let k = c.read(&mut buf).unwrap();
        assert!(k > 0, "closed early");
        decoder.decode(&buf[..k], |m| got.push(m.unwrap())).unwrap();
    }
    got
}

#[test]
fn objects_round_trip_in_any_chunking() {
    let (tx, _rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || ObjectProtocol::new(Calc(tx.clone())))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    let jobs = vec![
        Job::Add { a: 2, b: 40 },
        Job::Name("packet".into()),
        Job::Blob((0..200_000u32).map(|i| i as u8).collect()),
    ];
    let wire = frames(&jobs);
    // One byte at a time for the first frames, then the rest at once.
    for b in &wire[..20] {
        c.write_all(std::slice::from_ref(b)).unwrap();
        c.flush().unwrap();
    }
    c.write_all(&wire[20..]).unwrap();
    let got = read_objects(&mut c, 3);
    assert_eq!(got[0], Job::Add { a: 42, b: 0 });
    assert_eq!(got[1], Job::Name("PACKET".into()));
    assert_eq!(
        got[2],
        Job::Blob((0..200_000u32).rev().map(|i| i as u8).collect())
    );
    server.stop();
}

#[test]
fn a_bad_payload_is_reported_and_the_stream_goes_on() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || ObjectProtocol::new(Calc(tx.clone())))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    let mut wire = Vec::new();
    encode_frame(HeaderFormat::Compact, &[0xff, 0xff, 0xff], &mut wire).unwrap();
    wire.extend(frames(&[Job::Name("still here".into())]));
    c.write_all(&wire).unwrap();
    assert!(rx
        .recv_timeout(IO_TIMEOUT)
        .unwrap()
        .starts_with("message: "));
    assert_eq!(read_objects(&mut c, 1), [Job::Name("STILL HERE".into())]);
    server.stop();
}

#[test]
fn an_oversized_frame_closes_only_that_connection() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || {
            ObjectProtocol::with_max_frame_len(Calc(tx.clone()), 1024)
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut bad = client(server.value);
    // A header announcing 4 GiB: refused before anything is allocated.
    bad.write_all(&[0x80, 0x80, 0x80, 0x80, 0x10]).unwrap();
    assert!(rx.recv_timeout(IO_TIMEOUT).unwrap().starts_with("frame: "));
    assert!(rx.recv_timeout(IO_TIMEOUT).unwrap().starts_with("unbind: "));
    let mut buf = [0u8; 8];
    assert!(matches!(bad.read(&mut buf), Ok(0) | Err(_)), "closed");
    // Another client is served as usual.
    let mut good = client(server.value);
    good.write_all(&frames(&[Job::Add { a: 1, b: 1 }])).unwrap();
    assert_eq!(read_objects(&mut good, 1), [Job::Add { a: 2, b: 0 }]);
    server.stop();
}
