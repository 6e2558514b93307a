//! Replies routed back to the connection that asked: the core service that
//! worker asks (and anything else that completes later) deliver through.
//!
//! This module owns reply ids, the [`Reply`] envelope handed to
//! [`Handler::receive_reply`](crate::Handler::receive_reply), and the
//! per-connection queue that puts replies back in ask order for a
//! connection that asked for it ([`Connection::set_ordered_replies`]).
//! It never calls a handler itself: the reactor hands out the ids and
//! queues each reply (`reactor/replies.rs`), delivers it once no
//! callback is running, counts the replies each connection is owed (a
//! draining connection waits for them, `reactor/ending.rs`), and drops the
//! replies of a connection that closed with a line to the log hook.
//!
//! [`Connection::set_ordered_replies`]: crate::Connection::set_ordered_replies

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;

/// Identifies one expected reply of a connection (a worker ask's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyId(pub(super) u64);

impl fmt::Display for ReplyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reply {}", self.0)
    }
}

/// A reply delivered to [`Handler::receive_reply`](crate::Handler::receive_reply):
/// the id it was expected under and a value whose type the sender chose
/// (a worker ask's is a `worker::WorkerReply`).
pub struct Reply {
    id: ReplyId,
    value: Box<dyn Any>,
}

impl Reply {
    pub(super) fn new(id: ReplyId, value: Box<dyn Any>) -> Reply {
        Reply { id, value }
    }

    /// The id this reply was expected under (what `ask_worker` returned).
    pub fn id(&self) -> ReplyId {
        self.id
    }

    /// Whether the value is a `T`.
    pub fn is<T: Any>(&self) -> bool {
        self.value.is::<T>()
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.value.downcast_ref()
    }

    /// Takes the value out as a `T`.
    ///
    /// # Errors
    /// The value is of another type; the reply is handed back whole.
    pub fn take<T: Any>(self) -> Result<T, Reply> {
        match self.value.downcast::<T>() {
            Ok(v) => Ok(*v),
            Err(value) => Err(Reply { id: self.id, value }),
        }
    }
}

#[cfg(feature = "workers")]
impl Reply {
    /// The answer as a `T`, with whatever went wrong in one error: the
    /// worker died, timed out or failed, the reactor is stopping, or the
    /// answer is of another type ([`MessageError::WrongType`], naming
    /// both). The common case of [`Handler::receive_reply`]:
    ///
    /// ```no_run
    /// # use packet::{Connection, Handler, Reply};
    /// # struct Client;
    /// impl Handler for Client {
    ///     fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
    ///         match reply.decode::<String>() {
    ///             Ok(text) => conn.send_data(format!("{text}\n").as_bytes()),
    ///             // e.g. "worker count[1] died before replying (killed by signal 9)"
    ///             Err(e) => conn.send_data(format!("error: {e}\n").as_bytes()),
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// It decodes a worker's answer (a [`WorkerReply`]), and takes an
    /// answer made on the master ([`Connection::send_local_reply`], or
    /// [`Connection::send_reply`](crate::Connection::send_reply)) that is a `T` or a `Result<T, WorkerError>`
    /// as it is, so both kinds of answer are read alike.
    ///
    /// # Errors
    /// See above; [`WorkerError::Message`](crate::worker::WorkerError::Message)
    /// holds the type errors.
    ///
    /// [`Handler::receive_reply`]: crate::Handler::receive_reply
    /// [`MessageError::WrongType`]: crate::codec::MessageError::WrongType
    /// [`WorkerReply`]: crate::worker::WorkerReply
    /// [`Connection::send_local_reply`]: crate::Connection::send_local_reply
    pub fn decode<T: serde::de::DeserializeOwned + Any>(
        self,
    ) -> Result<T, crate::worker::WorkerError> {
        use crate::worker::{WorkerError, WorkerReply};
        let other = match self.take::<WorkerReply>() {
            Ok(answer) => return Ok(answer?.decode::<T>()?),
            Err(other) => other,
        };
        let other = match other.take::<T>() {
            Ok(value) => return Ok(value),
            Err(other) => other,
        };
        match other.take::<Result<T, WorkerError>>() {
            Ok(result) => result,
            Err(_) => Err(WorkerError::Message(
                crate::codec::MessageError::WrongType {
                    expected: crate::worker::type_name_of::<T>(),
                    got: "a reply value that is neither a worker's answer nor a `Result` of the expected type"
                        .to_string(),
                },
            )),
        }
    }
}

impl crate::Connection<'_> {
    /// Answers this connection from the master, in its place among the
    /// replies it is still owed: the value comes to
    /// [`Handler::receive_reply`](crate::Handler::receive_reply) like a
    /// worker's answer, after every reply expected before it when
    /// [`Connection::set_ordered_replies`](crate::Connection::set_ordered_replies)
    /// is on (a `STATS` line between two asks is answered between their
    /// answers). `Reply::decode` (the `workers` feature) reads a `T` sent
    /// here as it reads a worker's `T`. The same as
    /// [`Connection::expect_reply`](crate::Connection::expect_reply) then
    /// [`Connection::send_reply`](crate::Connection::send_reply).
    pub fn send_local_reply(&mut self, value: impl Any) -> ReplyId {
        let reply = self.expect_reply();
        self.send_reply(reply, value);
        reply
    }

    /// Promises this connection a reply: its
    /// [`Handler::receive_reply`](crate::Handler::receive_reply) gets
    /// whatever [`Connection::send_reply`](crate::Connection::send_reply)
    /// sends under the returned id — later, from wherever the answer comes
    /// (a timer, a thread pool's result, another connection), through
    /// [`Reactor::connection`](crate::Reactor::connection). Worker asks call this. With
    /// [`Connection::set_ordered_replies`](crate::Connection::set_ordered_replies)
    /// on, replies are delivered in the order of these calls.
    pub fn expect_reply(&mut self) -> ReplyId {
        self.reactor.expect_reply(self.id)
    }

    /// Withdraws a promise made with
    /// [`Connection::expect_reply`](crate::Connection::expect_reply) that
    /// will not be kept (the ask failed before it was sent), so that
    /// ordered replies behind it are not held back.
    pub fn cancel_reply(&mut self, reply: ReplyId) {
        self.reactor.cancel_reply(self.id, reply);
    }

    /// Delivers `value` to this connection's
    /// [`Handler::receive_reply`](crate::Handler::receive_reply) under
    /// `reply` (from
    /// [`Connection::expect_reply`](crate::Connection::expect_reply)) as
    /// soon as no callback is running — and, for an ordered connection,
    /// once every reply expected before it was delivered. A connection that
    /// drains (after the peer's end of stream, or in a graceful stop) stays
    /// open for the replies it was promised. A connection that has closed
    /// meanwhile has no reply to take: [`Reactor::connection`](crate::Reactor::connection) returns
    /// `None` for it.
    pub fn send_reply(&mut self, reply: ReplyId, value: impl Any) {
        self.reactor.send_reply(self.id, reply, value);
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The replies one ordered connection expects, oldest first, each with its
/// value once it came.
#[derive(Default)]
pub(super) struct InOrder {
    slots: VecDeque<(ReplyId, Option<Box<dyn Any>>)>,
}

impl InOrder {
    pub(super) fn expect(&mut self, id: ReplyId) {
        self.slots.push_back((id, None));
    }

    /// Files `value` under `id`.
    ///
    /// # Errors
    /// `id` is not expected here (it was expected before ordering was
    /// turned on, or is delivered twice): the value is handed back.
    pub(super) fn fill(&mut self, id: ReplyId, value: Box<dyn Any>) -> Result<(), Box<dyn Any>> {
        match self.slots.iter_mut().find(|(i, v)| *i == id && v.is_none()) {
            Some(slot) => {
                slot.1 = Some(value);
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Forgets `id` (its ask failed before it was sent).
    pub(super) fn cancel(&mut self, id: ReplyId) {
        self.slots.retain(|(i, _)| *i != id);
    }

    /// The replies at the front that are complete, in order.
    pub(super) fn pop_ready(&mut self) -> Option<Reply> {
        match self.slots.front() {
            Some((_, Some(_))) => {
                let (id, value) = self.slots.pop_front()?;
                value.map(|v| Reply::new(id, v))
            }
            _ => None,
        }
    }

    /// Every complete reply, in order, leaving the incomplete ones to be
    /// delivered as they come (ordering turned off).
    pub(super) fn drain_ready(self) -> impl Iterator<Item = Reply> {
        self.slots
            .into_iter()
            .filter_map(|(id, v)| v.map(|v| Reply::new(id, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(r: Reply) -> u32 {
        r.take::<u32>().unwrap()
    }

    #[test]
    fn replies_leave_in_the_order_they_were_expected() {
        let mut q = InOrder::default();
        for i in 1..=3 {
            q.expect(ReplyId(i));
        }
        assert!(q.fill(ReplyId(3), Box::new(30u32)).is_ok());
        assert!(q.pop_ready().is_none(), "3 must wait for 1 and 2");
        assert!(q.fill(ReplyId(1), Box::new(10u32)).is_ok());
        assert_eq!(q.pop_ready().map(value), Some(10));
        assert!(q.pop_ready().is_none());
        assert!(q.fill(ReplyId(2), Box::new(20u32)).is_ok());
        assert_eq!(q.pop_ready().map(value), Some(20));
        assert_eq!(q.pop_ready().map(value), Some(30));
        assert!(q.pop_ready().is_none() && q.slots.is_empty());
    }

    #[test]
    fn unknown_duplicate_and_cancelled_ids() {
        let mut q = InOrder::default();
        q.expect(ReplyId(1));
        q.expect(ReplyId(2));
        assert!(q.fill(ReplyId(9), Box::new(0u32)).is_err());
        assert!(q.fill(ReplyId(2), Box::new(2u32)).is_ok());
        assert!(
            q.fill(ReplyId(2), Box::new(2u32)).is_err(),
            "delivered twice"
        );
        q.cancel(ReplyId(1));
        assert_eq!(q.pop_ready().map(value), Some(2));
        q.expect(ReplyId(3));
        q.expect(ReplyId(4));
        assert!(q.fill(ReplyId(4), Box::new(4u32)).is_ok());
        let left: Vec<u32> = q.drain_ready().map(value).collect();
        assert_eq!(left, [4]);
    }

    #[test]
    fn take_of_the_wrong_type_gives_the_reply_back() {
        let r = Reply::new(ReplyId(5), Box::new("text"));
        assert!(r.is::<&str>());
        let r = r.take::<u32>().unwrap_err();
        assert_eq!(r.id(), ReplyId(5));
        assert_eq!(r.get::<&str>(), Some(&"text"));
    }
}
