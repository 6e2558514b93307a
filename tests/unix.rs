//! Unix-domain servers and clients.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;

use packet::{Connection, Handler};
use util::{pattern, spawn_reactor, Echo};

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("packet-test-{}-{name}.sock", std::process::id()))
}

#[test]
fn unix_server_echoes_and_removes_its_socket_file_when_stopped() {
    let path = socket_path("echo");
    let p = path.clone();
    let server = spawn_reactor(move |r| {
        r.start_unix_server(&p, || Echo)?;
        Ok(())
    });
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    let data = pattern(5, 200_000);
    let mut writer = c.try_clone().unwrap();
    let d = data.clone();
    let w = std::thread::spawn(move || writer.write_all(&d).unwrap());
    let mut got = vec![0u8; data.len()];
    c.read_exact(&mut got).unwrap();
    w.join().unwrap();
    assert!(got == data);
    server.stop();
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let path = socket_path("stale");
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let p = path.clone();
    let server = spawn_reactor(move |r| {
        r.start_unix_server(&p, || Echo)?;
        Ok(())
    });
    let mut c = UnixStream::connect(&path).unwrap();
    c.write_all(b"ok").unwrap();
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
    server.stop();
}

struct Ask(mpsc::Sender<Vec<u8>>, Vec<u8>);

impl Handler for Ask {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        assert!(matches!(
            conn.peer_addr().unwrap(),
            packet::Addr::Unix(Some(_))
        ));
        conn.send_data(b"over unix");
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.1.extend_from_slice(data);
        if self.1.len() == 9 {
            let _ = self.0.send(self.1.clone());
            conn.close_connection();
        }
    }
}

#[test]
fn reactor_connects_to_a_unix_server() {
    let path = socket_path("client");
    let p = path.clone();
    let server = spawn_reactor(move |r| {
        r.start_unix_server(&p, || Echo)?;
        Ok(())
    });
    let (tx, rx) = mpsc::channel();
    let client = spawn_reactor(move |r| {
        r.connect_unix(&path, Ask(tx, Vec::new()))?;
        Ok(())
    });
    assert_eq!(rx.recv_timeout(util::IO_TIMEOUT).unwrap(), b"over unix");
    client.stop();
    server.stop();
}
