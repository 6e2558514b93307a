//! Line-based chat: every line a client sends goes to all other clients.
//!
//! ```text
//! cargo run --release --example chat_server [ADDR]
//! ```
//!
//! Listens on 127.0.0.1:11007 unless `ADDR` is given. Lines are split by
//! [`packet::line`]; lines longer than 64 KiB are refused (the client is
//! told and disconnected) so that a client that never sends a newline
//! cannot grow the server's memory. A partial line left when a client
//! leaves is dropped.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::rc::Rc;

use packet::line::{LineContext, LineError, LineHandler, LineProtocol};
use packet::{CloseReason, ConnId, Reactor};

const MAX_LINE: usize = 64 * 1024;

type Room = Rc<RefCell<BTreeSet<ConnId>>>;

struct Member {
    room: Room,
}

impl LineHandler for Member {
    fn post_init(&mut self, ctx: &mut LineContext<'_>) {
        self.room.borrow_mut().insert(ctx.id());
    }

    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        let me = ctx.id();
        let others: Vec<ConnId> = self
            .room
            .borrow()
            .iter()
            .copied()
            .filter(|&m| m != me)
            .collect();
        // The line as it was sent: its `\r`, if any, is kept.
        let msg = [line, b"\n"].concat();
        for other in others {
            ctx.reactor().send_data_to(other, &msg);
        }
    }

    fn line_error(&mut self, ctx: &mut LineContext<'_>, _error: LineError) {
        // The connection is closed once this is written.
        ctx.send_data(b"error: line too long\n");
    }

    fn unbind(&mut self, ctx: &mut LineContext<'_>, _reason: &CloseReason) {
        self.room.borrow_mut().remove(&ctx.id());
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11007".into());
    Reactor::run(|reactor| {
        let room: Room = Rc::default();
        let server = reactor.start_server(addr.as_str(), move || {
            LineProtocol::new(Member { room: room.clone() }).with_max_line_len(MAX_LINE)
        })?;
        println!("listening on {}", reactor.server_addr(server)?);
        Ok(())
    })
}
