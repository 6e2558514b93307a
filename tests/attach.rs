//! Attaching descriptors that are not sockets: pipes.

mod util;

use std::io::{Read, Write};
use std::sync::mpsc;

use packet::{CloseReason, Connection, Handler};
use util::{spawn_reactor, IO_TIMEOUT};

/// Collects what it reads and reports it with the close reason.
struct Collect(Vec<u8>, mpsc::Sender<(Vec<u8>, String)>);

impl Handler for Collect {
    fn receive_data(&mut self, _conn: &mut Connection<'_>, data: &[u8]) {
        self.0.extend_from_slice(data);
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self
            .1
            .send((std::mem::take(&mut self.0), reason.to_string()));
    }
}

#[test]
fn a_pipes_read_end_delivers_data_then_peer_closed() {
    let (reader, writer) = util::pipe();
    let mut writer = std::fs::File::from(writer);
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        r.attach(reader, Collect(Vec::new(), tx))?;
        Ok(())
    });
    let data = util::pattern(9, 300_000);
    writer.write_all(&data).unwrap();
    drop(writer);
    let (got, reason) = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(got == data);
    assert_eq!(reason, "closed by peer");
    running.stop();
}

/// Writes a payload as soon as attached, and keeps writing when drained.
struct Pour(mpsc::Sender<(Vec<u8>, String)>);

impl Handler for Pour {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.send_data(b"through the pipe");
    }
    fn receive_data(&mut self, _conn: &mut Connection<'_>, _data: &[u8]) {}
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send((Vec::new(), reason.to_string()));
    }
}

#[test]
fn a_pipes_write_end_sends_and_a_gone_reader_is_an_error_not_sigpipe() {
    let (reader, writer) = util::pipe();
    let mut reader = std::fs::File::from(reader);
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        let id = r.attach(writer, Pour(tx))?;
        // Later, write again after the reader is gone: EPIPE, no signal.
        r.add_timer(std::time::Duration::from_millis(200), move |r| {
            if let Some(mut conn) = r.connection(id) {
                conn.send_data(&[0u8; 100_000]);
            }
        });
        Ok(())
    });
    let mut buf = [0u8; 16];
    reader.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"through the pipe");
    drop(reader);
    let (_, reason) = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(
        reason, "closed by peer",
        "EPIPE ends the connection; the process lives"
    );
    running.stop();
}
