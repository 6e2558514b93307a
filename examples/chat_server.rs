//! Line-based chat: every line a client sends goes to all other clients.
//!
//! ```text
//! cargo run --release --example chat_server [ADDR]
//! ```
//!
//! Listens on 127.0.0.1:11007 unless `ADDR` is given. Lines are split by
//! [`packet::line`] and go through a [`packet::channel::Channel`] that
//! every member subscribes to; lines longer than 64 KiB are refused (the client is
//! told and disconnected) so that a client that never sends a newline
//! cannot grow the server's memory. A partial line left when a client
//! leaves is dropped.

use std::io;
use std::rc::Rc;

use packet::channel::{Channel, SubscriptionId};
use packet::line::{LineContext, LineError, LineHandler, LineProtocol};
use packet::{CloseReason, ConnId, Handler, Reactor};

const MAX_LINE: usize = 64 * 1024;

/// What the room's channel carries: a line and who said it, so that the
/// speaker does not hear it back. `Rc` so one copy serves every member.
type Said = (ConnId, Rc<[u8]>);

struct Member {
    room: Channel<Said>,
    subscription: Option<SubscriptionId>,
}

impl Handler for Member {
    fn post_init(&mut self, ctx: &mut LineContext<'_>) {
        let me = ctx.id();
        // Every member subscribes to the room and writes what others say to
        // its own connection.
        self.subscription = Some(self.room.subscribe(move |reactor, (from, line)| {
            if *from != me {
                if let Some(mut conn) = reactor.connection(me) {
                    conn.send_data(line);
                }
            }
        }));
    }
    fn unbind(&mut self, _ctx: &mut LineContext<'_>, _reason: &CloseReason) {
        if let Some(id) = self.subscription.take() {
            self.room.unsubscribe(id);
        }
    }
}

impl LineHandler for Member {
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        // The line as it was sent: its `\r`, if any, is kept.
        let msg: Rc<[u8]> = [line, b"\n"].concat().into();
        let me = ctx.id();
        self.room.push(ctx.reactor(), (me, msg));
    }
    fn line_error(&mut self, ctx: &mut LineContext<'_>, _error: LineError) {
        // The connection is closed once this is written.
        ctx.send_data(b"error: line too long\n");
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11007".into());
    Reactor::run(|reactor| {
        let room: Channel<Said> = Channel::new();
        let server = reactor.start_server(addr.as_str(), move || {
            LineProtocol::new(Member {
                room: room.clone(),
                subscription: None,
            })
            .with_max_line_len(MAX_LINE)
        })?;
        println!("listening on {}", reactor.server_addr(server)?);
        Ok(())
    })
}
