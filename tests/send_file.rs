//! Files streamed to connections with sendfile.

mod util;

use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc;

use packet::{Connection, Handler};
use util::{client, pattern, spawn_reactor, IO_TIMEOUT};

struct SendsFile {
    path: PathBuf,
    report: mpsc::Sender<usize>,
}

impl Handler for SendsFile {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.send_data(b"HDR");
        conn.send_file(&self.path).unwrap();
        conn.send_data(b"TRL");
        // A file takes no memory in the queue: only the small trailer does.
        let _ = self.report.send(conn.outbound_len());
        conn.close_connection_after_writing();
    }
}

#[test]
fn a_large_file_goes_out_whole_between_the_bytes_around_it() {
    let path = std::env::temp_dir().join(format!("packet-send-file-{}.bin", std::process::id()));
    let content = pattern(21, 24 * 1024 * 1024 + 17);
    std::fs::write(&path, &content).unwrap();
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || SendsFile {
            path: p.clone(),
            report: tx.clone(),
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    // Read only once the socket is full, so the file waits.
    util::wait_until_receive_queue_full(&c);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        rx.recv_timeout(IO_TIMEOUT).unwrap() <= 6,
        "the file was not copied into memory"
    );
    util::assert_file_between_hdr_and_trl(&got, &content);
    server.stop();
}
