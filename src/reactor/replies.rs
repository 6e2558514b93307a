//! The reactor's side of replies: reply ids handed out, the replies of
//! connections that take them in order, and replies queued for delivery.
//!
//! This file owns the reactor's reply bookkeeping and nothing else: the
//! reply types and the in-order queue are `reply.rs`'s, the count of
//! replies each connection is owed (a draining connection waits for them)
//! is `ending.rs`'s, and delivery is the pending work of `mod.rs`.

use super::*;
use crate::reply::ReplyId;

impl Reactor {
    /// Promises connection `id` a reply: its
    /// [`Handler::receive_reply`] gets
    /// whatever [`Reactor::send_reply`] sends under the returned id. Worker
    /// asks call this; so may any code that answers a connection later (a
    /// thread pool, a timer). With
    /// [`Connection::set_ordered_replies`](crate::Connection::set_ordered_replies)
    /// on, replies are delivered in the order of these calls.
    pub(super) fn expect_reply(&mut self, id: ConnId) -> ReplyId {
        self.last_reply += 1;
        let reply = ReplyId(self.last_reply);
        self.owe_reply(id.0);
        if let Some(q) = self.ordered.get_mut(&id.0) {
            q.expect(reply);
        }
        reply
    }

    /// Withdraws a promise made with [`Reactor::expect_reply`] that will
    /// not be kept (the ask failed before it was sent), so that ordered
    /// replies behind it are not held back.
    pub(super) fn cancel_reply(&mut self, id: ConnId, reply: ReplyId) {
        self.reply_settled(id.0);
        if let Some(q) = self.ordered.get_mut(&id.0) {
            q.cancel(reply);
            self.release_ordered(id.0);
        }
    }

    /// Delivers `value` to connection `id`'s [`Handler::receive_reply`]
    /// under `reply` (from [`Reactor::expect_reply`]) as soon as no
    /// callback is running — and, for an ordered connection, once every
    /// reply expected before it was delivered. A connection that drains
    /// (after the peer's end of stream, or in a graceful stop) stays open
    /// for the replies it was promised. If the connection has closed, the
    /// reply is dropped with a line to the log hook
    /// ([`crate::log::set_log_hook`]).
    pub(super) fn send_reply(&mut self, id: ConnId, reply: ReplyId, value: impl std::any::Any) {
        if self.conn(id.0).is_none() {
            crate::log::line(format_args!(
                "{reply} for connection {id} dropped: it has closed"
            ));
            return;
        }
        let mut value: Box<dyn std::any::Any> = Box::new(value);
        if let Some(q) = self.ordered.get_mut(&id.0) {
            match q.fill(reply, value) {
                Ok(()) => return self.release_ordered(id.0),
                // Expected before ordering was turned on: it has no place
                // in the queue, so it goes now.
                Err(v) => value = v,
            }
        }
        self.pending
            .push_back((id.0, Pending::Reply(Reply::new(reply, value))));
    }

    /// Queues the complete replies at the front of an ordered connection's
    /// queue.
    fn release_ordered(&mut self, token: Token) {
        let Some(q) = self.ordered.get_mut(&token) else {
            return;
        };
        while let Some(reply) = q.pop_ready() {
            self.pending.push_back((token, Pending::Reply(reply)));
        }
    }

    /// See [`Connection::set_ordered_replies`].
    pub(super) fn set_ordered_replies(&mut self, id: ConnId, on: bool) {
        if self.conn(id.0).is_none() {
            return;
        }
        if on {
            self.ordered.entry(id.0).or_default();
        } else if let Some(q) = self.ordered.remove(&id.0) {
            for reply in q.drain_ready() {
                self.pending.push_back((id.0, Pending::Reply(reply)));
            }
        }
    }
}
