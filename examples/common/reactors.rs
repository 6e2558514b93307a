//! Shared by the echo and HTTP server examples: `--threads N` reactors
//! sharing one port through `SO_REUSEPORT` (`SO_REUSEPORT_LB` on FreeBSD),
//! and the library's stop signals (`Reactor::on_stop_signals`). On macOS,
//! NetBSD and OpenBSD the option does not spread connections, so
//! `--threads` above 1 fails there with `Unsupported` rather than serving
//! from one thread.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use packet::signal::StopAction;
use packet::{Addr, Reactor, ReactorHandle, ServerOptions};

/// Runs `threads` reactors, each set up by `start` (which starts its
/// server on the address and with the options it is given, and returns the
/// bound address), prints `listening on ADDR` once all of them listen, and
/// returns when all have stopped.
///
/// The address is already resolved: resolving a name is the caller's
/// choice, and std's resolver (`getaddrinfo` and its parsing) is about
/// 5 KB of a core-only echo_server that takes numeric addresses.
///
/// This thread runs the first reactor (so one reactor means one thread);
/// the others run on their own threads and listen on the address the first
/// one bound, so port 0 works too. Reactors are not `Send` (handlers need
/// not be), so each thread builds its own and hands back only its
/// `ReactorHandle`. The stop signals reach every reactor with the
/// library's meanings: `SIGTERM`/`SIGINT` drain within 30 s (a second one
/// stops at once), `SIGQUIT` drains within 300 s, `SIGHUP` is logged and
/// ignored. Draining finishes what is owed (file streams included). The
/// process exits with status 1 if a stop cut anything, 0 otherwise.
pub fn serve<F>(addr: SocketAddr, threads: usize, start: F) -> io::Result<()>
where
    F: Fn(&mut Reactor, SocketAddr, ServerOptions) -> io::Result<Addr> + Clone + Send + 'static,
{
    let options = ServerOptions::new().reuse_port(threads > 1);
    let mut reactor = Reactor::new()?;
    let bound = start(&mut reactor, addr, options.clone())?;
    let bound = bound.as_inet().ok_or(io::ErrorKind::InvalidInput)?;
    let others = Arc::new(Mutex::new(Vec::<ReactorHandle>::new()));
    // Every extra reactor listens before `listening on` is printed.
    let ready = Arc::new(Barrier::new(threads));
    let extra: Vec<_> = (1..threads)
        .map(|_| {
            let (options, start) = (options.clone(), start.clone());
            let (others, ready) = (others.clone(), ready.clone());
            std::thread::spawn(move || -> io::Result<bool> {
                let mut reactor = Reactor::new()?;
                if let Err(e) = start(&mut reactor, bound, options) {
                    eprintln!("cannot listen on {bound}: {e}");
                    std::process::exit(1);
                }
                lock(&others).push(reactor.handle());
                ready.wait();
                reactor.run_until_stopped()?;
                Ok(reactor.stop_report().is_none_or(|r| r.is_clean()))
            })
        })
        .collect();
    ready.wait();
    reactor.on_stop_signals(move |_, action| {
        for h in lock(&others).iter() {
            match action {
                StopAction::Graceful(within) => h.schedule(move |r| r.stop_gracefully(within)),
                StopAction::Immediate => h.stop(),
                _ => {}
            }
        }
    })?;
    println!("listening on {bound}");
    reactor.run_until_stopped()?;
    let mut clean = reactor.stop_report().is_none_or(|r| r.is_clean());
    for t in extra {
        clean &= t.join().expect("reactor thread panicked")?;
    }
    if !clean {
        // The library logged what was cut.
        std::process::exit(1);
    }
    Ok(())
}

/// The handles stay usable even if a thread panicked holding the lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
