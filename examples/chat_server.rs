//! Line-based chat: every line a client sends goes to all other clients.
//!
//! ```text
//! cargo run --release --example chat_server [ADDR]
//! ```
//!
//! Listens on 127.0.0.1:11007 unless `ADDR` is given. Lines longer than
//! 64 KiB are refused (the client is told and disconnected) so that a client
//! that never sends a newline cannot grow the server's memory.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::rc::Rc;

use packet::{CloseReason, ConnId, Connection, Handler, Reactor};

const MAX_LINE: usize = 64 * 1024;

type Room = Rc<RefCell<BTreeSet<ConnId>>>;

struct Member {
    room: Room,
    partial: Vec<u8>,
}

impl Member {
    fn broadcast(&self, conn: &mut Connection<'_>, line: &[u8]) {
        let me = conn.id();
        let others: Vec<ConnId> = self
            .room
            .borrow()
            .iter()
            .copied()
            .filter(|&m| m != me)
            .collect();
        for other in others {
            conn.reactor().send_data_to(other, line);
        }
    }
}

impl Handler for Member {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        self.room.borrow_mut().insert(conn.id());
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(end + 1);
            if self.partial.is_empty() {
                self.broadcast(conn, line);
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                self.broadcast(conn, &whole);
            }
            rest = tail;
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            conn.send_data(b"error: line too long\n");
            conn.close_connection_after_writing();
            return;
        }
        self.partial.extend_from_slice(rest);
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, _reason: &CloseReason) {
        self.room.borrow_mut().remove(&conn.id());
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11007".into());
    Reactor::run(|reactor| {
        let room: Room = Rc::default();
        let server = reactor.start_server(addr.as_str(), move || Member {
            room: room.clone(),
            partial: Vec::new(),
        })?;
        println!("listening on {}", reactor.server_addr(server)?);
        Ok(())
    })
}
