//! Timers on the reactor: one-shot and fixed-rate periodic callbacks,
//! connect timeouts and inactivity timeouts, all in the one wheel
//! (`crate::timer`).
//!
//! This file owns the loop's clock (read once per turn) and what fires
//! when a deadline passes. It never reads the clock itself outside the
//! turn's start, so every callback of a turn sees the same time.

use super::*;

/// What a timer in the wheel does when it fires.
pub(super) enum TimerTask {
    Once(Local),
    /// An entry of `Reactor::periodics`.
    Periodic(Token),
    /// A connection's connect or inactivity timeout.
    Conn(Token),
    /// A lingering close's deadline (`ending.rs`).
    Linger(Token),
}

pub(super) struct Periodic {
    /// `None` while its callback runs.
    pub(super) callback: Option<PeriodicFn>,
    pub(super) interval_ms: u64,
    /// The deadline it was last scheduled for: the next one is a whole
    /// number of intervals later (fixed rate).
    pub(super) due_ms: u64,
    pub(super) key: Option<TimerKey>,
}

/// Identifies a timer, for [`Reactor::cancel_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub(super) TimerRef);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum TimerRef {
    Once(TimerKey),
    Periodic(Token),
}

/// The deadline after `due_ms` for a fixed-rate timer, given that the loop
/// has reached `now_ms`: the next multiple of the interval after the last
/// deadline that is still in the future. A loop that fell behind skips the
/// periods it missed instead of firing them in a burst, and the phase never
/// drifts.
pub(super) fn next_fixed_rate_deadline(due_ms: u64, interval_ms: u64, now_ms: u64) -> u64 {
    let next = due_ms.saturating_add(interval_ms);
    if next > now_ms {
        return next;
    }
    let missed = (now_ms - next) / interval_ms + 1;
    next.saturating_add(missed.saturating_mul(interval_ms))
}

pub(super) type PeriodicFn = Box<dyn FnMut(&mut Reactor, TimerId)>;

impl Reactor {
    /// The loop's time: read at the start of each turn and again after a
    /// wait that may have slept, not at every call, so the callbacks of
    /// one batch see the same instant.
    pub fn now(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.now_ns)
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.now_ns / 1_000_000
    }

    /// The wheel tick at which `after` from the loop's time has passed,
    /// rounded up so that nothing fires early.
    pub(super) fn deadline_after(&self, after: Duration) -> u64 {
        let after_ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        self.now_ns.saturating_add(after_ns).div_ceil(1_000_000)
    }

    /// Runs `f` once, `after` from the loop's current time (never earlier;
    /// at most a millisecond plus scheduling latency later). Timers with the
    /// same deadline fire in the order they were added.
    pub fn add_timer(
        &mut self,
        after: Duration,
        f: impl FnOnce(&mut Reactor) + 'static,
    ) -> TimerId {
        let deadline = self.deadline_after(after);
        TimerId(TimerRef::Once(
            self.timers.insert(deadline, TimerTask::Once(Box::new(f))),
        ))
    }

    /// Runs `f` every `interval` (at least 1 ms) at a fixed rate, as
    /// Packet's periodic timers do: the n-th call is due `n * interval`
    /// after this one was added, however late earlier calls ran. If the loop
    /// falls behind by whole periods, the missed calls are skipped rather
    /// than fired in a burst. `f` gets the timer's id, so it can cancel
    /// itself.
    pub fn add_periodic_timer(
        &mut self,
        interval: Duration,
        f: impl FnMut(&mut Reactor, TimerId) + 'static,
    ) -> TimerId {
        let interval_ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let due_ms = self.deadline_after(interval);
        let token = self.periodics.insert(Periodic {
            callback: Some(Box::new(f)),
            interval_ms,
            due_ms,
            key: None,
        });
        let key = self.timers.insert(due_ms, TimerTask::Periodic(token));
        if let Some(p) = self.periodics.get_mut(token) {
            p.key = Some(key);
        }
        TimerId(TimerRef::Periodic(token))
    }

    /// Cancels a timer. Returns `false`, doing nothing, if it already fired
    /// (one-shot) or was cancelled; a periodic timer may cancel itself from
    /// its own callback.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        match id.0 {
            TimerRef::Once(key) => self.timers.cancel(key).is_some(),
            TimerRef::Periodic(token) => match self.periodics.remove(token) {
                Some(p) => {
                    if let Some(key) = p.key {
                        self.timers.cancel(key);
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Sets how long connect attempts started from now may take before they
    /// end with [`CloseReason::ConnectTimeout`] (default 20 s, as
    /// EventMachine's `pending_connect_timeout`; `None` leaves it to the
    /// kernel).
    pub fn set_connect_timeout(&mut self, limit: Option<Duration>) {
        self.connect_timeout = limit;
    }

    /// Gives the connect of connection `id`, if still in progress, `limit`
    /// from now before it ends with [`CloseReason::ConnectTimeout`]
    /// (EventMachine's `pending_connect_timeout=`, typically set in
    /// `post_init`); `None` removes the limit.
    pub(super) fn set_pending_connect_timeout(&mut self, id: ConnId, limit: Option<Duration>) {
        let deadline = limit.map(|d| self.deadline_after(d));
        let Some(c) = self.conn_mut(id.0) else { return };
        if !c.is_connecting() {
            return;
        }
        if let Some(key) = c.take_timer_key() {
            self.timers.cancel(key);
        }
        if let Some(deadline) = deadline {
            let key = self.timers.insert(deadline, TimerTask::Conn(id.0));
            if let Some(c) = self.conn_mut(id.0) {
                c.set_timer_key(key);
            }
        }
    }

    /// Closes connection `id` with [`CloseReason::InactivityTimeout`] once
    /// no byte has been read from or written to it for `limit`
    /// (EventMachine's `comm_inactivity_timeout`); `None` turns it off.
    /// Limits are kept in whole milliseconds, up to 24 days.
    pub(super) fn set_inactivity_timeout(&mut self, id: ConnId, limit: Option<Duration>) {
        let ms = limit.map_or(0, |d| {
            d.as_millis().clamp(1, u128::from(u32::MAX / 2)) as u32
        });
        let now = self.now_ms() as u32;
        let Some(c) = self.conn_mut(id.0) else { return };
        c.set_idle_ms(ms);
        c.last_activity = now;
        if !c.is_connecting() {
            if let Some(key) = c.take_timer_key() {
                self.timers.cancel(key);
            }
            if ms > 0 {
                self.arm_idle_timer(id.0, now.wrapping_add(ms));
            }
        }
    }

    /// Milliseconds since connection `id` last read or wrote a byte, as of
    /// the loop's time (EventMachine's `get_idle_time`).
    pub(super) fn idle_time(&self, id: ConnId) -> Option<Duration> {
        let now = self.now_ms() as u32;
        self.conn(id.0)
            .map(|c| Duration::from_millis(u64::from(now.wrapping_sub(c.last_activity))))
    }

    /// Files the inactivity check of `token` at the 32-bit loop time `at`.
    pub(super) fn arm_idle_timer(&mut self, token: Token, at: u32) {
        let now = self.now_ms();
        let wait = u64::from(at.wrapping_sub(now as u32));
        let key = self.timers.insert(now + wait, TimerTask::Conn(token));
        if let Some(c) = self.conn_mut(token) {
            c.set_timer_key(key);
        }
    }

    pub(super) fn run_timers(&mut self) {
        let now = self.now_ms();
        while let Some((_, task)) = self.timers.poll(now) {
            match task {
                TimerTask::Once(f) => f(self),
                TimerTask::Periodic(token) => self.fire_periodic(token, now),
                TimerTask::Conn(token) => self.conn_timer(token),
                TimerTask::Linger(token) => self.linger_timer(token),
            }
            self.run_pending();
        }
    }

    pub(super) fn fire_periodic(&mut self, token: Token, now: u64) {
        let Some(p) = self.periodics.get_mut(token) else {
            return;
        };
        let Some(mut callback) = p.callback.take() else {
            return;
        };
        callback(self, TimerId(TimerRef::Periodic(token)));
        // Cancelled from inside its callback: the entry is gone.
        let Some(p) = self.periodics.get_mut(token) else {
            return;
        };
        p.callback = Some(callback);
        p.due_ms = next_fixed_rate_deadline(p.due_ms, p.interval_ms, now);
        let due = p.due_ms;
        let key = self.timers.insert(due, TimerTask::Periodic(token));
        if let Some(p) = self.periodics.get_mut(token) {
            p.key = Some(key);
        }
    }

    pub(super) fn conn_timer(&mut self, token: Token) {
        let now = self.now_ms() as u32;
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        c.take_timer_key();
        if c.is_closed() {
            return;
        }
        if c.is_connecting() {
            self.begin_close(token, CloseReason::ConnectTimeout);
            return;
        }
        let idle_ms = c.idle_ms();
        if idle_ms == 0 {
            return;
        }
        // Activity only stamps the connection; the timer checks the stamp
        // when it fires and re-arms itself for the remainder, so a busy
        // connection costs no timer operation per read or write.
        let idle = now.wrapping_sub(c.last_activity);
        if idle >= idle_ms {
            self.begin_close(token, CloseReason::InactivityTimeout);
        } else {
            let at = c.last_activity.wrapping_add(idle_ms);
            self.arm_idle_timer(token, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_fixed_rate_deadline;

    #[test]
    fn fixed_rate_keeps_phase_and_skips_missed_periods() {
        // On time: exactly one interval later, for 1000 periods: no drift.
        let mut due = 7;
        for k in 1..=1000u64 {
            due = next_fixed_rate_deadline(due, 10, due + 3);
            assert_eq!(due, 7 + 10 * k);
        }
        // Fell behind by 3.5 periods: the missed ones are skipped, the phase
        // kept, and the next deadline is in the future.
        assert_eq!(next_fixed_rate_deadline(100, 10, 135), 140);
        assert_eq!(next_fixed_rate_deadline(100, 10, 110), 120);
        assert_eq!(next_fixed_rate_deadline(100, 10, 109), 110);
        assert_eq!(
            next_fixed_rate_deadline(u64::MAX - 5, 10, u64::MAX - 5),
            u64::MAX
        );
    }
}
