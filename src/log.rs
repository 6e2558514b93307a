//! The library's own diagnostics: lines about events no caller is waiting
//! for (a worker's `log` line without a log worker, a worker closed for a
//! protocol violation, a fork server that had to be replaced).
//!
//! This module owns where those lines go. Library code never writes to
//! standard error itself; it calls the hook the application set with
//! [`set_log_hook`], or, by default, writes the line to standard error. An
//! embedding program can so send them to its own logger, or drop them.
//!
//! The hook is process-wide and is inherited by worker processes (they are
//! forks of a process that had it set), so set it before
//! `WorkerRegistry::start` for the workers to use it too.

use std::sync::RwLock;

type Hook = Box<dyn Fn(&str) + Send + Sync>;

static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Sends every later diagnostic line of the library to `hook` instead of
/// standard error. The line has no trailing newline.
///
/// ```
/// packet::log::set_log_hook(|line| println!("packet: {line}"));
/// ```
pub fn set_log_hook(hook: impl Fn(&str) + Send + Sync + 'static) {
    // A hook that panicked poisoned the lock; replacing it is the fix.
    let mut slot = HOOK.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(Box::new(hook));
}

/// Sends diagnostic lines to standard error again (the default).
pub fn reset_log_hook() {
    let mut slot = HOOK.write().unwrap_or_else(|e| e.into_inner());
    *slot = None;
}

/// Hands one diagnostic line to the hook, or writes it to standard error.
pub(crate) fn line(args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    let slot = HOOK.read().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some(hook) => hook(&text),
        None => {
            use std::io::Write;
            // Nothing sensible is left to do when stderr itself fails.
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}

/// `format!`-style front end of [`line`](fn@line).
macro_rules! log_line {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use log_line;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_hook_gets_each_line_and_reset_restores_stderr() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        super::set_log_hook(move |l| sink.lock().unwrap().push(l.to_string()));
        log_line!("worker {} said {}", "w", 7);
        super::reset_log_hook();
        log_line!("to stderr, not to the hook");
        // Other tests of this binary may log meanwhile: look for ours only.
        let got = got.lock().unwrap();
        assert!(got.iter().any(|l| l == "worker w said 7"), "{got:?}");
        assert!(!got.iter().any(|l| l.starts_with("to stderr")), "{got:?}");
    }
}
