//! Typed objects over a connection: EventMachine's `ObjectProtocol` and
//! Packet's `send_object`.
//!
//! This module owns the glue between a byte stream and typed messages: an
//! [`ObjectHandler`] receives whole `serde` values instead of bytes, and
//! [`Connection::send_object`] sends one. Each object is one `Compact`
//! frame holding its postcard encoding (see [`crate::codec`]). Nothing here
//! buffers more than one frame, and a frame is never longer than the
//! decoder's limit (16 MiB by default). [`Connection::pause`] takes effect
//! at once: the objects of the same read that follow the one whose
//! callback paused are held and delivered after the resume.
//!
//! ```
//! use packet::objects::{ObjectHandler, ObjectProtocol};
//! use packet::{Connection, Handler, Reactor};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! enum Msg { Ping(u32), Pong(u32) }
//!
//! struct Server;
//! impl Handler for Server {}
//! impl ObjectHandler for Server {
//!     type Message = Msg;
//!     fn receive_object(&mut self, conn: &mut Connection<'_>, msg: Msg) {
//!         if let Msg::Ping(n) = msg {
//!             conn.send_object(&Msg::Pong(n)).unwrap();
//!         }
//!     }
//! }
//!
//! struct Client;
//! impl Handler for Client {
//!     fn connection_completed(&mut self, conn: &mut Connection<'_>) {
//!         conn.send_object(&Msg::Ping(7)).unwrap();
//!     }
//! }
//! impl ObjectHandler for Client {
//!     type Message = Msg;
//!     fn receive_object(&mut self, conn: &mut Connection<'_>, msg: Msg) {
//!         assert_eq!(msg, Msg::Pong(7));
//!         conn.reactor().stop();
//!     }
//! }
//!
//! Reactor::run(|r| {
//!     let server = r.start_server("127.0.0.1:0", || ObjectProtocol::new(Server))?;
//!     let addr = r.server_addr(server)?.as_inet().unwrap();
//!     r.connect(addr, ObjectProtocol::new(Client))?;
//!     Ok(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{encode_message, FrameError, MessageDecoder, MessageError};
use crate::connection::{Connection, Handler, Layer};

/// A handler that receives typed objects, in place of bytes.
///
/// Its [`Handler`] methods (`post_init`, `receive_eof`, `receive_reply`,
/// `unbind`, ...) are called as for any handler, through
/// [`ObjectProtocol`]; its `receive_data` is not.
pub trait ObjectHandler: Handler {
    /// The type of the objects the peer sends.
    type Message: DeserializeOwned;

    /// One whole object arrived.
    fn receive_object(&mut self, conn: &mut Connection<'_>, message: Self::Message);

    /// A frame arrived whose payload is not a `Self::Message`. The stream is
    /// still in sync, so the default ignores it; the connection is closed
    /// only for a broken frame (see [`ObjectHandler::frame_error`]).
    fn message_error(&mut self, conn: &mut Connection<'_>, error: MessageError) {
        let _ = (conn, error);
    }

    /// The byte stream is not a stream of frames (a bad header, or a frame
    /// over the limit). Nothing after it can be trusted: the connection is
    /// closed after this returns.
    fn frame_error(&mut self, conn: &mut Connection<'_>, error: FrameError) {
        let _ = (conn, error);
    }
}

/// Wraps an [`ObjectHandler`] as a connection's handler: decodes frames as
/// they arrive, in any chunks, hands out whole objects, and passes every
/// other callback through (see [`Layer`]).
pub struct ObjectProtocol<H: ObjectHandler> {
    handler: H,
    decoder: MessageDecoder<H::Message>,
    /// Objects of a read not delivered because the handler paused the
    /// connection before them (a pause takes effect at once), and the
    /// stream's error if one came after them.
    held: VecDeque<Result<H::Message, MessageError>>,
    held_error: Option<FrameError>,
    /// The layer state lent to the handler: objects have none.
    no_state: (),
}

impl<H: ObjectHandler> ObjectProtocol<H> {
    /// Wraps `handler` with the default frame limit (16 MiB).
    pub fn new(handler: H) -> Self {
        ObjectProtocol {
            handler,
            decoder: MessageDecoder::new(),
            held: VecDeque::new(),
            held_error: None,
            no_state: (),
        }
    }

    /// Wraps `handler`, refusing frames longer than `max` bytes.
    pub fn with_max_frame_len(handler: H, max: usize) -> Self {
        ObjectProtocol {
            handler,
            decoder: MessageDecoder::new().with_max_frame_len(max),
            held: VecDeque::new(),
            held_error: None,
            no_state: (),
        }
    }

    /// The wrapped handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }
}

impl<H: ObjectHandler> Layer for ObjectProtocol<H> {
    type Inner = H;
    type State = ();

    fn parts(&mut self) -> (&mut H, &mut ()) {
        (&mut self.handler, &mut self.no_state)
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let ObjectProtocol {
            handler,
            decoder,
            held,
            held_error,
            ..
        } = self;
        let result = decoder.decode(data, |msg| {
            if held.is_empty() && !conn.is_paused() {
                deliver(handler, conn, msg);
            } else {
                held.push_back(msg);
            }
        });
        if let Err(e) = result {
            if held.is_empty() {
                handler.frame_error(conn, e);
                conn.close_connection();
            } else {
                *held_error = Some(e);
            }
        }
    }

    fn deliver_held(&mut self, conn: &mut Connection<'_>) {
        while !conn.is_paused() {
            let Some(msg) = self.held.pop_front() else {
                break;
            };
            deliver(&mut self.handler, conn, msg);
        }
        if self.held.is_empty() {
            // Give back the memory of a large batch.
            self.held = VecDeque::new();
            if let Some(e) = self.held_error.take() {
                self.handler.frame_error(conn, e);
                conn.close_connection();
            }
        }
    }

    fn reset(&mut self) {
        self.decoder.reset();
        self.held = VecDeque::new();
        self.held_error = None;
    }
}

fn deliver<H: ObjectHandler>(
    handler: &mut H,
    conn: &mut Connection<'_>,
    msg: Result<H::Message, MessageError>,
) {
    match msg {
        Ok(m) => handler.receive_object(conn, m),
        Err(e) => handler.message_error(conn, e),
    }
}

impl Connection<'_> {
    /// Sends `message` as one frame for an [`ObjectProtocol`] peer (Packet's
    /// `send_object`).
    ///
    /// # Errors
    /// The value cannot be serialized or its encoding exceeds the frame
    /// limit; nothing is sent then.
    pub fn send_object<T: Serialize + ?Sized>(&mut self, message: &T) -> Result<(), MessageError> {
        let mut buf = Vec::new();
        encode_message(message, &mut buf)?;
        self.send_data(&buf);
        Ok(())
    }
}
