//! A connection's state, typed: where it is in its life ([`Phase`]), what
//! kind of descriptor it is ([`Transport`]), how far its write side is shut
//! ([`WriteSide`]), and the orthogonal readiness bits ([`Flags`]).
//!
//! This file owns the rules between those: which phase may follow which,
//! and what each phase allows (reading, taking new output). It never does
//! I/O; `conn_io.rs` asks it.

use bitflags::bitflags;

/// Where a connection is in its life. Phases only move forward:
/// `Connecting → Open → Draining → Closing → Lingering → Closed` (a
/// connection may skip any of them; any of them may go straight to
/// `Closed`). The lingering close and the draining stop are described in
/// `ending.rs`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Phase {
    /// A connect is in progress. `close_after_writing` records a
    /// `close_connection_after_writing` made before it completed.
    Connecting { close_after_writing: bool },
    /// Reading and writing.
    Open,
    /// Still takes output, reads no more: closes (lingering) once the
    /// outbound queue is written and every reply the connection is owed
    /// was delivered. A graceful stop, and a peer's end of stream by
    /// default, put connections here.
    Draining,
    /// Closes (lingering) once the outbound queue is empty; takes no new
    /// output; reads no more.
    Closing,
    /// Everything written and the write side shut: input is read and
    /// discarded until the peer's end of stream or the linger deadline, so
    /// that the close sends no reset that would destroy what the peer has
    /// not read yet.
    Lingering,
    /// A close is queued: no I/O and no callback but `unbind`.
    Closed,
}

/// What the descriptor is, fixed when the connection is made: it decides
/// the system calls used on it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Transport {
    /// TCP: always registered for writable edges, `TCP_NODELAY` set.
    Tcp,
    /// A Unix-domain stream socket.
    Unix,
    /// A Unix-domain socket whose reads collect passed descriptors
    /// (`SCM_RIGHTS`).
    UnixWithFds,
    /// The library's own channel (to a worker process): as `UnixWithFds`,
    /// but not counted by `connection_count`.
    Channel,
    /// A pipe, terminal or other non-socket: plain `read` and `write`.
    Pipe,
}

/// How far `close_write` has gone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum WriteSide {
    Open,
    /// Shut it once the queue drains; no new output is taken.
    ShutWhenDrained,
    /// Shut (the peer saw end of stream).
    Shut,
}

bitflags! {
    /// Bits that hold in any phase, independent of each other.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(super) struct Flags: u16 {
        /// The socket may have unread input (an edge was seen and not
        /// drained).
        const READ_READY = 1 << 0;
        /// The peer shut down its side; reads go on until they return 0.
        const RDHUP = 1 << 1;
        /// End of stream was read.
        const EOF_READ = 1 << 2;
        /// The user paused reading.
        const PAUSED = 1 << 3;
        /// The kernel send buffer is full; wait for the next writable edge.
        const WRITE_BLOCKED = 1 << 4;
        /// `EPOLLOUT` is in the registration. Always for TCP; for Unix
        /// sockets and pipes only while connecting or while a write is
        /// blocked, because their peers raise a writable edge on every read
        /// they make, which would wake the loop once per message for
        /// nothing.
        const WANT_WRITE = 1 << 5;
        /// `outbound_full` was reported and `outbound_drained` not yet.
        const ABOVE_HIGH = 1 << 6;
        /// A feature's hooks take over parts of its I/O (`ext.rs`); its
        /// writes all go through the outbound queue.
        const HOOKED = 1 << 7;
        /// On the carry-over list (`Reactor::ready`): its one read of a
        /// turn comes from there, so it is listed once and read once per
        /// turn however many events it gets (`conn_io.rs`, `carry`).
        const QUEUED = 1 << 8;
        /// `WriteSide::ShutWhenDrained` (two bits for the three sides, kept
        /// here so that the record stays at 48 bytes; `Flags::write_side`).
        const SHUT_WHEN_DRAINED = 1 << 9;
        /// `WriteSide::Shut`.
        const WRITE_SHUT = 1 << 10;
    }
}

impl Flags {
    /// The write side these bits record.
    // Always inlined: compared with a constant it is one mask test (the
    // hot path's `takes_output` and `check_water` ask).
    #[inline(always)]
    pub(super) fn write_side(self) -> WriteSide {
        // At most one of the two is set (`set_write_side`): this order
        // makes `== ShutWhenDrained` one bit test.
        if self.contains(Flags::SHUT_WHEN_DRAINED) {
            WriteSide::ShutWhenDrained
        } else if self.contains(Flags::WRITE_SHUT) {
            WriteSide::Shut
        } else {
            WriteSide::Open
        }
    }

    /// Records `side` (sides only move forward, see `WriteSide`).
    pub(super) fn set_write_side(&mut self, side: WriteSide) {
        self.remove(Flags::SHUT_WHEN_DRAINED | Flags::WRITE_SHUT);
        match side {
            WriteSide::Open => {}
            WriteSide::ShutWhenDrained => self.insert(Flags::SHUT_WHEN_DRAINED),
            WriteSide::Shut => self.insert(Flags::WRITE_SHUT),
        }
    }
}

impl Transport {
    /// Whether reads collect passed descriptors.
    pub(super) fn receives_fds(self) -> bool {
        matches!(self, Transport::UnixWithFds | Transport::Channel)
    }
}

impl Phase {
    pub(super) fn is_connecting(self) -> bool {
        matches!(self, Phase::Connecting { .. })
    }

    /// A close was asked for, or has begun: no new reads.
    pub(super) fn is_ending(self) -> bool {
        matches!(
            self,
            Phase::Draining
                | Phase::Closing
                | Phase::Lingering
                | Phase::Closed
                | Phase::Connecting {
                    close_after_writing: true
                }
        )
    }

    /// Closes when the queue drains (`close_connection_after_writing`,
    /// or end of stream read by a handler that said nothing more).
    pub(super) fn closes_when_drained(self) -> bool {
        self.is_ending() && !matches!(self, Phase::Closed | Phase::Lingering)
    }

    /// The phase after a graceful stop or a peer's end of stream: keep
    /// writing what is owed, then close. A close asked already stays.
    pub(super) fn drain(self) -> Phase {
        match self {
            Phase::Connecting { .. } => Phase::Connecting {
                close_after_writing: true,
            },
            Phase::Open => Phase::Draining,
            ended => ended,
        }
    }

    /// The phase after `close_connection_after_writing`.
    pub(super) fn close_after_writing(self) -> Phase {
        match self {
            Phase::Connecting { .. } => Phase::Connecting {
                close_after_writing: true,
            },
            Phase::Open | Phase::Draining => Phase::Closing,
            ended => ended,
        }
    }

    /// The phase once a connect completed.
    pub(super) fn connected(self) -> Phase {
        match self {
            Phase::Connecting {
                close_after_writing: false,
            } => Phase::Open,
            Phase::Connecting {
                close_after_writing: true,
            } => Phase::Closing,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_asked_while_connecting_waits_for_the_connect() {
        let p = Phase::Connecting {
            close_after_writing: false,
        }
        .close_after_writing();
        assert!(p.is_connecting());
        assert!(p.closes_when_drained());
        assert_eq!(p.connected(), Phase::Closing);
    }

    #[test]
    fn phases_never_move_back() {
        assert_eq!(Phase::Closed.close_after_writing(), Phase::Closed);
        assert_eq!(Phase::Closed.connected(), Phase::Closed);
        assert_eq!(Phase::Closing.connected(), Phase::Closing);
        assert_eq!(Phase::Open.close_after_writing(), Phase::Closing);
        assert!(!Phase::Closed.closes_when_drained());
        assert!(Phase::Closed.is_ending());
        assert!(!Phase::Open.is_ending());
        assert_eq!(Phase::Open.drain(), Phase::Draining);
        assert_eq!(Phase::Closing.drain(), Phase::Closing);
        assert_eq!(Phase::Lingering.drain(), Phase::Lingering);
        assert!(Phase::Draining.closes_when_drained());
        assert!(!Phase::Lingering.closes_when_drained());
        assert!(Phase::Lingering.is_ending());
        assert_eq!(Phase::Lingering.close_after_writing(), Phase::Lingering);
    }
}

#[cfg(test)]
mod size {
    /// An idle connection's user-space cost is its slab entry: keep the
    /// record at 48 bytes (bench/README.md, "Memory per connection").
    #[test]
    fn an_idle_connection_record_stays_small() {
        assert_eq!(std::mem::size_of::<super::super::Conn>(), 48);
        assert_eq!(std::mem::size_of::<super::super::Source>(), 48);
        assert_eq!(crate::slab::entry_size::<super::super::Source>(), 56);
    }
}
