//! Reaching a reactor from outside its thread: `ReactorHandle` (stop,
//! schedule a closure) and signals delivered into the loop.
//!
//! This file owns what other threads and signal handlers share with the
//! reactor: the waker, the stop flag and the queue of scheduled closures.
//! Nothing here runs user code in a signal handler or on another thread:
//! both only wake the loop, which runs the callbacks on its own thread.

use super::*;

pub(super) type Remote = Box<dyn FnOnce(&mut Reactor) + Send>;

pub(super) type SignalFn = Box<dyn FnMut(&mut Reactor)>;

/// What other threads share with a reactor.
pub(super) struct Shared {
    pub(super) waker: Waker,
    pub(super) stop: AtomicBool,
    pub(super) queue: Mutex<Vec<Remote>>,
}

/// Controls a reactor from any thread: stop it, or run a closure on it.
#[derive(Clone)]
pub struct ReactorHandle {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorHandle").finish_non_exhaustive()
    }
}

impl ReactorHandle {
    /// Asks the reactor to stop after its current turn. Its connections then
    /// get `unbind` with [`CloseReason::ReactorStopped`].
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        // A wake can only fail if the eventfd is broken; the stop flag is
        // still seen on the reactor's next turn.
        let _ = self.shared.waker.wake();
    }

    /// Runs `f` on the reactor's thread at the start of its next turn.
    pub fn schedule(&self, f: impl FnOnce(&mut Reactor) + Send + 'static) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
        let _ = self.shared.waker.wake();
    }
}

impl Reactor {
    /// A handle for stopping or scheduling work from other threads.
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs `callback` on this reactor's thread each time signal `sig`
    /// arrives (for example [`crate::signal::SIGTERM`]). The signal handler
    /// itself only wakes the loop; nothing runs in signal context. One
    /// reactor per signal: a later `on_signal` for the same signal, on any
    /// reactor, takes it over. The previous action is restored when the
    /// reactor is dropped.
    ///
    /// # Errors
    /// `InvalidInput` for `SIGKILL`, `SIGSTOP` or an invalid number.
    pub fn on_signal(
        &mut self,
        sig: i32,
        callback: impl FnMut(&mut Reactor) + 'static,
    ) -> io::Result<()> {
        packet_sys::signal::watch(sig, &self.shared.waker)?;
        self.signals.retain(|(s, _)| *s != sig);
        self.signals.push((sig, Some(Box::new(callback))));
        Ok(())
    }

    pub(super) fn on_wake(&mut self) {
        self.shared.waker.reset();
        if self.shared.stop.swap(false, Ordering::AcqRel) {
            self.stopped = true;
        }
        let remote =
            std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for f in remote {
            self.next_turn.push(f);
        }
        for i in 0..self.signals.len() {
            let sig = self.signals[i].0;
            if !packet_sys::signal::take_pending(sig) {
                continue;
            }
            let Some(mut callback) = self.signals[i].1.take() else {
                continue;
            };
            callback(self);
            self.run_pending();
            if let Some(slot) = self.signals.iter_mut().find(|(s, _)| *s == sig) {
                slot.1.get_or_insert(callback);
            }
        }
    }
}
