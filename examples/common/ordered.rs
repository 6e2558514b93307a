//! Shared by the examples that answer pipelined lines in request order
//! (eval_server, kv_server): what their handlers count so that a client
//! that half-closes gets every answer before the close, and so that a
//! client that sends without reading cannot grow the server's memory.
//!
//! The connection asks for its replies in order
//! (`Connection::set_ordered_replies`); an answer the master makes itself
//! goes through the same queue (`Connection::send_local_reply`), so it
//! keeps its request's place behind answers still with the workers.

use packet::Connection;

/// The answers one connection owes, and whether it reads more.
pub struct Pipeline {
    /// Requests whose answer is not written yet.
    owed: usize,
    /// Stop reading at this many owed answers.
    limit: usize,
    /// The client is not reading: the outbound queue is over its mark.
    outbound_full: bool,
    /// No more requests will come (end of stream, or a line too long).
    input_ended: bool,
}

impl Pipeline {
    /// Reads while fewer than `limit` answers are owed.
    pub fn new(limit: usize) -> Pipeline {
        Pipeline {
            owed: 0,
            limit,
            outbound_full: false,
            input_ended: false,
        }
    }

    /// A request came whose answer is owed (asked of a worker, or made
    /// here with `Connection::send_local_reply`).
    pub fn request(&mut self) {
        self.owed += 1;
    }

    /// An answer was written.
    pub fn answered(&mut self, conn: &mut Connection<'_>) {
        self.owed -= 1;
        self.regulate(conn);
    }

    /// The client's input ended (`receive_eof`): close once nothing is owed.
    pub fn input_ended(&mut self, conn: &mut Connection<'_>) {
        self.input_ended = true;
        self.regulate(conn);
    }

    /// `outbound_full` (`true`) or `outbound_drained` (`false`).
    pub fn outbound(&mut self, conn: &mut Connection<'_>, full: bool) {
        self.outbound_full = full;
        self.regulate(conn);
    }

    /// Closes once nothing is owed after the input ended; otherwise reads
    /// only while few answers are owed and the client reads its answers.
    pub fn regulate(&self, conn: &mut Connection<'_>) {
        if self.input_ended && self.owed == 0 {
            conn.close_connection_after_writing();
        } else if self.owed >= self.limit || self.outbound_full {
            conn.pause();
        } else if !self.input_ended {
            conn.resume();
        }
    }
}
