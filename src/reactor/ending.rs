//! How connections end and how a reactor stops: the lingering close, the
//! draining stop with its report, and the stop signals.
//!
//! **Lingering close.** Closing a socket that still has unread input makes
//! the kernel send a reset, which also throws away whatever it had not
//! sent yet: a response followed by a client's next request would be cut.
//! So every close made after writing (`close_connection_after_writing`, a
//! peer's end of stream, the stop) goes, once the outbound queue is
//! written: shut the write side (the peer sees end of stream after the
//! last byte), then read and discard until the peer's own end of stream,
//! then close — bounded by [`Linger`] (nginx's `lingering_close`).
//!
//! **Draining.** A connection that drains (a graceful stop, or the peer's
//! end of stream by default) reads no more but keeps taking output, and
//! closes as above once its queue is written and every reply it is owed
//! ([`Connection::expect_reply`]) was delivered.
//!
//! **The stop.** [`Reactor::stop_gracefully`] closes the servers, drains
//! every connection, and stops once none is left or at its deadline; what
//! the deadline cut is in [`Reactor::stop_report`] and in a log line.
//! [`Reactor::on_stop_signals`] maps the usual signals onto it.
//!
//! This file owns those rules and their side tables (so that a connection
//! that never lingers carries nothing for them); it is called from the
//! queue checks of `conn_io.rs` and the close of `conn.rs`.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::reply::Reply;

/// How long and how much a lingering close waits for the peer's end of
/// stream (see [`Reactor::set_default_linger`]). The defaults are nginx's
/// `lingering_timeout` and `lingering_time`: 5 s of silence, 30 s in all,
/// and at most 16 MiB read and discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// Close after this long with nothing read from the peer and nothing
    /// more of ours acknowledged by it.
    pub quiet: Duration,
    /// Close after this long in all, however busy the peer.
    pub total: Duration,
    /// Close after discarding this many bytes of the peer's input, once
    /// the peer has acknowledged every byte sent to it (before that, only
    /// `quiet` and `total` end the linger).
    pub max_discard: usize,
}

impl Default for Linger {
    fn default() -> Linger {
        Linger {
            quiet: Duration::from_secs(5),
            total: Duration::from_secs(30),
            max_discard: 16 * 1024 * 1024,
        }
    }
}

/// What a graceful stop left undone: the connections its deadline (or a
/// plain [`Reactor::stop`]) closed while they still had output queued or
/// replies owed. Connections that were lingering had written everything
/// and are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopReport {
    /// Connections closed with output queued or replies owed.
    pub connections_cut: usize,
    /// Bytes queued for them and never written.
    pub bytes_cut: u64,
    /// Replies they were still owed.
    pub replies_cut: u64,
    /// Asks to worker processes that the stop failed with
    /// `WorkerError::Stopping` before their replies came (the `workers`
    /// feature): whoever asked heard the error instead of an answer.
    pub asks_failed: u64,
    /// Whether a graceful stop's deadline passed before it was done.
    pub deadline_passed: bool,
}

impl StopReport {
    /// Whether nothing was cut: every connection wrote what it owed and
    /// every ask to a worker was answered.
    pub fn is_clean(&self) -> bool {
        self.connections_cut == 0 && self.asks_failed == 0
    }
}

impl std::fmt::Display for StopReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_clean() {
            return f.write_str("stopped cleanly: nothing was cut");
        }
        f.write_str(if self.deadline_passed {
            "stop deadline passed"
        } else {
            "stopped"
        })?;
        let mut sep = ": ";
        if self.connections_cut > 0 {
            write!(
                f,
                "{sep}cut {} connection(s) with {} byte(s) unwritten and {} reply(ies) owed",
                self.connections_cut, self.bytes_cut, self.replies_cut
            )?;
            sep = "; ";
        }
        if self.asks_failed > 0 {
            write!(f, "{sep}{} ask(s) to workers failed", self.asks_failed)?;
        }
        Ok(())
    }
}

/// What a stop signal asked for (see [`Reactor::on_stop_signals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopAction {
    /// Stop gracefully within this long ([`Reactor::stop_gracefully`]).
    Graceful(Duration),
    /// Stop now ([`Reactor::stop`]).
    Immediate,
    /// Reload was asked (`SIGHUP`); it is logged and otherwise ignored.
    Reload,
}

/// The deadline of a graceful stop on `SIGTERM` or `SIGINT` (nginx's and
/// systemd's usual 30 s class).
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// The deadline of a graceful stop on `SIGQUIT`: long, for a stop that
/// lets even slow downloads finish.
pub const QUIT_GRACE: Duration = Duration::from_secs(300);

/// The state of the ends in progress, kept beside the connections so that
/// their records do not grow (ARCHITECTURE.md, "Ending").
#[derive(Default)]
pub(super) struct Ending {
    /// Replies each connection was promised and not yet delivered; absent
    /// when none.
    pub(super) owed: IdMap<Token, u32>,
    /// Connections in `Phase::Lingering`.
    lingering: IdMap<Token, Lingering>,
    /// Per-connection linger settings that differ from the default.
    linger_of: IdMap<Token, Option<Linger>>,
    /// `None` once turned off with `set_default_linger(None)`.
    default_linger: Option<Linger>,
    default_set: bool,
    /// The graceful stop in progress.
    stopping: Option<Stopping>,
    /// Asks to workers failed by this stop so far (the report's
    /// `asks_failed`).
    asks_failed: u64,
    /// The deadline `SIGTERM` and `SIGINT` give, when not [`STOP_GRACE`].
    stop_grace: Option<Duration>,
    report: Option<StopReport>,
}

struct Lingering {
    reason: CloseReason,
    limits: Linger,
    started_ms: u64,
    last_progress_ms: u64,
    discarded: usize,
    unacked: usize,
    key: Option<TimerKey>,
}

struct Stopping {
    deadline: Instant,
    deadline_passed: bool,
}

impl Reactor {
    /// Sets how closes made after writing linger (see [`Linger`]); `None`
    /// closes at once once written, as plain `close` does (a peer's unread
    /// input then makes the kernel reset the connection).
    pub fn set_default_linger(&mut self, linger: Option<Linger>) {
        self.ending.default_linger = linger;
        self.ending.default_set = true;
    }

    /// Sets how connection `id`'s close lingers, instead of the reactor's
    /// default.
    pub(super) fn set_linger(&mut self, id: ConnId, linger: Option<Linger>) {
        if self.conn(id.0).is_some() {
            self.ending.linger_of.insert(id.0, linger);
        }
    }

    fn linger_for(&self, token: Token) -> Option<Linger> {
        if let Some(l) = self.ending.linger_of.get(&token) {
            return *l;
        }
        if self.ending.default_set {
            self.ending.default_linger
        } else {
            Some(Linger::default())
        }
    }

    /// Stops reading from connection `id` and closes it (lingering) once
    /// every reply it is owed was delivered and everything queued is
    /// written; output is still taken until then. See
    /// [`Connection::close_after_replies`].
    pub(super) fn close_after_replies(&mut self, id: ConnId) {
        let is_current = self.current == Some(id.0);
        let Some(c) = self.conn_mut(id.0) else { return };
        c.phase = c.phase.drain();
        if !is_current {
            self.check_water(id.0);
        }
    }

    /// Whether a graceful stop is in progress (nothing new should start).
    pub(super) fn is_stopping(&self) -> bool {
        self.ending.stopping.is_some()
    }

    /// Whether connection `token` is still owed a reply.
    pub(super) fn owes_replies(&self, token: Token) -> bool {
        !self.ending.owed.is_empty() && self.ending.owed.contains_key(&token)
    }

    /// Whether connection `token` closes as soon as its queue is written
    /// (a secure channel sends its goodbye then): a close after writing was
    /// asked, and a draining connection is owed no reply.
    pub(super) fn closes_once_written(&self, token: Token) -> bool {
        self.conn(token).is_some_and(|c| {
            c.phase.closes_when_drained()
                && !(c.phase == Phase::Draining && self.owes_replies(token))
        })
    }

    /// The queue of a connection that was to close once written is empty:
    /// close it, lingering if it can.
    pub(super) fn close_when_written(&mut self, token: Token) {
        let Some(c) = self.conn(token) else { return };
        if !c.phase.closes_when_drained()
            || (c.phase == Phase::Draining && self.owes_replies(token))
        {
            return;
        }
        // A graceful stop's closes are this side's, as before draining
        // existed: `Local`.
        let reason = if c.flags.contains(Flags::EOF_READ) {
            CloseReason::PeerClosed
        } else {
            CloseReason::Local
        };
        // After the peer's end of stream nothing more can come: no reset
        // to avoid.
        let sockets = matches!(
            c.transport,
            Transport::Tcp | Transport::Unix | Transport::UnixWithFds
        );
        if !sockets || c.flags.contains(Flags::EOF_READ) || c.is_connecting() {
            return self.begin_close(token, reason);
        }
        let Some(limits) = self.linger_for(token) else {
            return self.begin_close(token, reason);
        };
        let now = self.now_ms();
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.flags.write_side() != WriteSide::Shut {
            if let Err(e) = c.sock.shutdown(std::net::Shutdown::Write) {
                return self.begin_close(token, CloseReason::from_io(e));
            }
            c.flags.set_write_side(WriteSide::Shut);
        }
        c.phase = Phase::Lingering;
        // The inactivity limit no longer applies: the linger's does.
        c.set_idle_ms(0);
        let idle_key = c.take_timer_key();
        let unacked = c.sock.unacknowledged().unwrap_or(0);
        if let Some(key) = idle_key {
            self.timers.cancel(key);
        }
        let first = limits.quiet.min(limits.total);
        let key = self
            .timers
            .insert(self.deadline_after(first), TimerTask::Linger(token));
        self.ending.lingering.insert(
            token,
            Lingering {
                reason,
                limits,
                started_ms: now,
                last_progress_ms: now,
                discarded: 0,
                unacked,
                key: Some(key),
            },
        );
        // Input that came while the queue was written was not read: it
        // is discarded now (an edge for it may not come again).
        self.linger_read(token);
    }

    /// Reads and discards what lingering connection `token` has: one
    /// buffer per turn, as any read (fairness; the connection is carried
    /// to the next turn while the socket may hold more), until the socket
    /// is drained, the peer's end of stream (then closes) or the discard
    /// limit (then closes).
    pub(super) fn linger_read(&mut self, token: Token) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let now = self.now_ms();
        let mut reads = 0;
        let ended = loop {
            if reads == 1 {
                self.carry(token);
                break None;
            }
            reads += 1;
            let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
                break None;
            };
            if c.phase != Phase::Lingering {
                break None;
            }
            buf.clear();
            match c.sock.read_into_spare(&mut buf) {
                Ok(0) => {
                    c.flags -= Flags::READ_READY;
                    c.flags |= Flags::EOF_READ;
                    break Some(None);
                }
                Ok(n) => {
                    let Some(l) = self.ending.lingering.get_mut(&token) else {
                        break None;
                    };
                    l.discarded += n;
                    l.last_progress_ms = now;
                    // Past the cap, close only once the peer has every byte
                    // of ours: a close with its input unread sends a reset,
                    // and a reset throws away what our kernel has not sent
                    // yet. Until then the total time bounds the linger.
                    if l.discarded > l.limits.max_discard
                        && c.sock.unacknowledged().map_or(true, |u| u == 0)
                    {
                        break Some(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.flags -= Flags::READ_READY;
                    break None;
                }
                Err(e) => break Some(Some(CloseReason::from_io(e))),
            }
        };
        self.read_buf = buf;
        if let Some(error) = ended {
            self.end_linger(token, error);
        }
    }

    /// Closes lingering connection `token`, with the reason its close was
    /// made for unless `error` says otherwise.
    fn end_linger(&mut self, token: Token, error: Option<CloseReason>) {
        let Some(l) = self.ending.lingering.remove(&token) else {
            return;
        };
        if let Some(key) = l.key {
            self.timers.cancel(key);
        }
        self.begin_close(token, error.unwrap_or(l.reason));
    }

    /// The linger timer of `token` fired: close if the peer was silent for
    /// the quiet time (our bytes it acknowledged count as activity) or the
    /// total time is up; otherwise wait again.
    pub(super) fn linger_timer(&mut self, token: Token) {
        let now = self.now_ms();
        let unacked = match self.conn(token) {
            Some(c) if c.phase == Phase::Lingering => c.sock.unacknowledged().ok(),
            _ => return,
        };
        let Some(l) = self.ending.lingering.get_mut(&token) else {
            return;
        };
        l.key = None;
        if let Some(u) = unacked {
            if u < l.unacked {
                l.last_progress_ms = now;
            }
            l.unacked = u;
        }
        let quiet_end = l.last_progress_ms + l.limits.quiet.as_millis() as u64;
        let total_end = l.started_ms + l.limits.total.as_millis() as u64;
        if now >= quiet_end || now >= total_end {
            // What came last is discarded before the close, which then
            // sends no reset for it.
            self.linger_read(token);
            self.end_linger(token, None);
            return;
        }
        let key = self
            .timers
            .insert(quiet_end.min(total_end), TimerTask::Linger(token));
        if let Some(l) = self.ending.lingering.get_mut(&token) {
            l.key = Some(key);
        }
    }

    /// Connection `token` is being removed: forgets what the side tables
    /// hold for it.
    pub(super) fn forget_ending(&mut self, token: Token) {
        let e = &mut self.ending;
        if !e.owed.is_empty() {
            e.owed.remove(&token);
        }
        if !e.linger_of.is_empty() {
            e.linger_of.remove(&token);
        }
        if !e.lingering.is_empty() {
            if let Some(key) = e.lingering.remove(&token).and_then(|l| l.key) {
                self.timers.cancel(key);
            }
        }
        if self.connections == 0 && self.ending.stopping.is_some() {
            self.stop();
        }
    }

    /// Stops the reactor gracefully: closes every server at once; lets work
    /// that features have in flight for the connections finish (asks to
    /// workers: their replies reach the askers, and those left at `within`
    /// fail with `WorkerError::Stopping`); then drains every connection
    /// (worker channels too, so workers exit and are reaped): it reads no
    /// more, writes what it has queued and what its handler still sends
    /// (a file being streamed, the replies it is owed, a TLS
    /// `close_notify`), then closes lingering. The reactor stops once no
    /// connection is left or `within` has passed, whichever comes first;
    /// what the deadline cut is in [`Reactor::stop_report`] and a log line.
    /// What a server does on `SIGTERM` (see [`Reactor::on_stop_signals`]).
    /// A second call keeps the first deadline.
    pub fn stop_gracefully(&mut self, within: Duration) {
        let now = self.now();
        let first = self.ending.stopping.is_none();
        if first {
            self.ending.stopping = Some(Stopping {
                deadline: now + within,
                deadline_passed: false,
            });
        }
        let deadline = self.ending.stopping.as_ref().map_or(now, |s| s.deadline);
        let left = deadline.saturating_duration_since(now);
        let mut held = false;
        self.each_ext(|ext, r| held |= ext.stop_gracefully(r, left) == StopHold::Hold);
        for token in self.sources.tokens() {
            match self.sources.get(token) {
                Some(Source::Listener(_)) => {
                    self.stop_server(ServerId(token));
                }
                // Connections wait for the work in flight for them; the
                // feature holding the stop calls this again when it is done.
                Some(Source::Conn(_)) if !held => self.close_after_replies(ConnId(token)),
                // Features' descriptors (watches are the user's) end with
                // the stop.
                _ => {}
            }
        }
        if first {
            self.add_timer(left, |r| {
                if let Some(s) = r.ending.stopping.as_mut() {
                    s.deadline_passed = true;
                }
                r.stop();
            });
        }
        if self.connections == 0 {
            self.stop();
        }
    }

    /// What the last stop of this reactor cut, once
    /// [`Reactor::run_until_stopped`] has returned; `None` before.
    pub fn stop_report(&self) -> Option<&StopReport> {
        self.ending.report.as_ref()
    }

    /// Counts what closing the connections at shutdown cuts, discards
    /// their unread input (so that the close sends no reset over what the
    /// peer has yet to read), and logs the cut if a graceful stop was in
    /// progress.
    pub(super) fn end_connections_for_shutdown(&mut self) {
        let mut report = StopReport {
            deadline_passed: self
                .ending
                .stopping
                .as_ref()
                .is_some_and(|s| s.deadline_passed),
            asks_failed: std::mem::take(&mut self.ending.asks_failed),
            ..StopReport::default()
        };
        for token in self.sources.tokens() {
            let Some(c) = self.conn(token) else { continue };
            if c.is_closed() {
                continue;
            }
            if c.phase == Phase::Lingering {
                self.linger_read(token);
                self.end_linger(token, None);
                continue;
            }
            let queued = c.queued()
                + if c.is_hooked() {
                    self.filter_held(token)
                } else {
                    0
                };
            let owed = self.ending.owed.get(&token).copied().unwrap_or(0);
            if (queued > 0 || owed > 0) && c.transport != Transport::Channel {
                report.connections_cut += 1;
                report.bytes_cut += queued as u64;
                report.replies_cut += u64::from(owed);
            }
            self.discard_unread(token);
            self.begin_close(token, CloseReason::ReactorStopped);
        }
        if self.ending.stopping.take().is_some() && !report.is_clean() {
            crate::log::log_line!("{report}");
        }
        self.ending.report = Some(report);
    }

    /// See [`Extensions::count_failed_asks`].
    pub(super) fn count_failed_asks(&mut self, n: usize) {
        self.ending.asks_failed += n as u64;
    }

    /// Reads and drops what connection `token`'s socket holds (a bounded
    /// number of reads), before a close at shutdown.
    fn discard_unread(&mut self, token: Token) {
        let mut buf = std::mem::take(&mut self.read_buf);
        for _ in 0..16 {
            let Some(c) = self.conn(token) else { break };
            if c.flags.contains(Flags::EOF_READ) || c.transport == Transport::Pipe {
                break;
            }
            buf.clear();
            if !matches!(c.sock.read_into_spare(&mut buf), Ok(n) if n > 0) {
                break;
            }
        }
        self.read_buf = buf;
    }

    /// Calls `receive_reply` of connection `token`; the reply back if the
    /// connection has closed (or its handler is out: a callback of it
    /// runs, which cannot happen for deferred work).
    pub(super) fn deliver_reply(&mut self, token: Token, reply: Reply) -> Result<(), Reply> {
        match self.conn(token) {
            Some(c) if c.phase != Phase::Closed && c.handler.is_some() => {}
            _ => return Err(reply),
        }
        self.call(token, |h, c| h.receive_reply(c, reply));
        Ok(())
    }

    /// Replies promised to connection `token`: one more.
    pub(super) fn owe_reply(&mut self, token: Token) {
        if self.conn(token).is_some() {
            *self.ending.owed.entry(token).or_default() += 1;
        }
    }

    /// A reply promised to connection `token` was delivered or withdrawn.
    pub(super) fn reply_settled(&mut self, token: Token) {
        if let Some(n) = self.ending.owed.get_mut(&token) {
            *n -= 1;
            if *n == 0 {
                self.ending.owed.remove(&token);
            }
        }
    }

    /// Sets the deadline of the graceful stop that `SIGTERM` and `SIGINT`
    /// start under [`Reactor::on_stop_signals`] (default [`STOP_GRACE`],
    /// 30 s), for a server whose configuration says how long work in
    /// flight may take to finish. Read when the signal comes, so it may be
    /// set before or after `on_stop_signals`; a second signal still stops
    /// at once, and `SIGQUIT` keeps [`QUIT_GRACE`].
    pub fn set_stop_grace(&mut self, grace: Duration) {
        self.ending.stop_grace = Some(grace);
    }

    /// Handles `SIGTERM`, `SIGINT`, `SIGQUIT` and `SIGHUP` the way nginx
    /// does, then calls `also` with what was done (to pass the stop on to
    /// other reactors, say):
    ///
    /// - `SIGTERM` or `SIGINT`: [`Reactor::stop_gracefully`] within
    ///   [`STOP_GRACE`] (30 s, or what [`Reactor::set_stop_grace`] set);
    ///   the same signal again while it runs stops at once
    ///   ([`StopAction::Immediate`]), as a second Ctrl-C does;
    /// - `SIGQUIT`: a graceful stop within [`QUIT_GRACE`] (300 s);
    /// - `SIGHUP`: reserved for a reload, which the library cannot do: a
    ///   log line, and the reactor goes on ([`StopAction::Reload`]).
    ///
    /// # Errors
    /// As [`Reactor::on_signal`].
    pub fn on_stop_signals(
        &mut self,
        also: impl FnMut(&mut Reactor, StopAction) + 'static,
    ) -> io::Result<()> {
        use packet_sys::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let also = Rc::new(RefCell::new(also));
        for sig in [SIGTERM, SIGINT, SIGQUIT, SIGHUP] {
            let also = also.clone();
            self.on_signal(sig, move |r| {
                let action = match sig {
                    SIGHUP => {
                        crate::log::log_line!(
                            "SIGHUP: reload is not supported; going on as before"
                        );
                        StopAction::Reload
                    }
                    SIGQUIT if r.ending.stopping.is_some() => return,
                    SIGQUIT => StopAction::Graceful(QUIT_GRACE),
                    _ if r.ending.stopping.is_some() => StopAction::Immediate,
                    _ => StopAction::Graceful(r.ending.stop_grace.unwrap_or(STOP_GRACE)),
                };
                match action {
                    StopAction::Graceful(within) => r.stop_gracefully(within),
                    StopAction::Immediate => r.stop(),
                    StopAction::Reload => {}
                }
                (also.borrow_mut())(r, action);
            })?;
        }
        Ok(())
    }
}

impl Connection<'_> {
    /// Stops reading and closes the connection once every reply it is owed
    /// ([`Connection::expect_reply`], every `ask_worker`) was delivered and
    /// everything queued is written, lingering (see [`Linger`]); writes
    /// keep working until then. What [`Handler::receive_eof`] does by
    /// default.
    pub fn close_after_replies(&mut self) {
        self.reactor.close_after_replies(self.id);
    }

    /// Sets how this connection's close lingers (see [`Linger`]); `None`
    /// closes at once once written.
    pub fn set_linger(&mut self, linger: Option<Linger>) {
        self.reactor.set_linger(self.id, linger);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_clean_only_when_nothing_was_cut() {
        let mut r = StopReport::default();
        assert!(r.is_clean());
        assert!(r.to_string().contains("nothing was cut"));
        r.connections_cut = 1;
        r.bytes_cut = 10;
        r.deadline_passed = true;
        assert!(!r.is_clean());
        assert!(r.to_string().starts_with("stop deadline passed"));
        let asks = StopReport {
            asks_failed: 2,
            ..StopReport::default()
        };
        assert!(!asks.is_clean());
        assert_eq!(asks.to_string(), "stopped: 2 ask(s) to workers failed");
    }

    #[test]
    fn linger_defaults_are_the_documented_ones() {
        let l = Linger::default();
        assert_eq!(l.quiet, Duration::from_secs(5));
        assert_eq!(l.total, Duration::from_secs(30));
        assert_eq!(l.max_discard, 16 << 20);
    }
}
