//! Shared by the echo and HTTP server examples: `--threads N` reactors
//! sharing one port through `SO_REUSEPORT` (`SO_REUSEPORT_LB` on FreeBSD),
//! the library's stop signals (`Reactor::on_stop_signals`), and
//! zero-downtime restarts (`packet::upgrade`): listeners inherited through
//! `LISTEN_FDS` (systemd's socket activation, or an upgrade) and a binary
//! upgrade on `SIGUSR2`. On macOS, NetBSD and OpenBSD the option does not
//! spread connections, so `--threads` above 1 fails there with
//! `Unsupported` rather than serving from one thread.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use packet::signal::StopAction;
use packet::{Addr, Handler, Reactor, ReactorHandle, ServerId, ServerOptions};

pub use restart::upgrade_arg;
use restart::Inherited;

/// Where a reactor's server listens: a socket to bind, or one inherited.
pub enum Listen {
    /// Bind this address with these options.
    Bind(SocketAddr, ServerOptions),
    /// Serve on this inherited listening socket.
    Adopt(Inherited),
}

impl Listen {
    /// Starts the server, binding or adopting.
    pub fn start<H: Handler>(
        self,
        r: &mut Reactor,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        match self {
            Listen::Bind(addr, options) => r.start_server_with(addr, options, factory),
            Listen::Adopt(l) => restart::adopt(r, l, factory),
        }
    }

    /// [`Listen::start`] with TLS.
    #[cfg(feature = "tls")]
    pub fn start_tls<H: Handler>(
        self,
        r: &mut Reactor,
        config: Arc<packet::tls::rustls::ServerConfig>,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        match self {
            Listen::Bind(addr, options) => {
                r.tls().start_server_with(addr, options, config, factory)
            }
            Listen::Adopt(l) => restart::adopt_tls(r, l, config, factory),
        }
    }
}

/// Zero-downtime restarts with the `upgrade` feature (`packet::upgrade`).
#[cfg(feature = "upgrade")]
mod restart {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use packet::signal::STOP_GRACE;
    use packet::upgrade::{ActivationError, UpgradeOptions, HANDOVER_SETTLE};
    use packet::{Handler, Reactor, ReactorHandle, ServerId};

    use super::lock;

    pub use packet::upgrade::InheritedListener as Inherited;

    /// What tells the previous process that this one serves.
    pub type Ready = Option<packet::upgrade::Inherited>;

    pub fn adopt<H: Handler>(
        r: &mut Reactor,
        l: Inherited,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        r.upgrades().adopt_server(l, factory)
    }

    #[cfg(feature = "tls")]
    pub fn adopt_tls<H: Handler>(
        r: &mut Reactor,
        l: Inherited,
        config: Arc<packet::tls::rustls::ServerConfig>,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        r.tls().adopt_server(l, config, factory)
    }

    /// The listening sockets in `LISTEN_FDS`, each TCP, and what reports
    /// readiness; exits with status 1 and the error (which names the
    /// descriptor) otherwise.
    pub fn from_env() -> (Vec<Inherited>, Ready) {
        let exit_with = |e: ActivationError| -> ! {
            eprintln!("{e}");
            std::process::exit(1);
        };
        let mut inherited = packet::upgrade::listeners_from_env().unwrap_or_else(|e| exit_with(e));
        let listeners = inherited
            .as_mut()
            .map(|i| i.take_listeners())
            .unwrap_or_default();
        if let Some(l) = listeners.iter().find(|l| !l.is_tcp()) {
            exit_with(ActivationError::WrongFamily {
                fd: l.fd(),
                expected: "TCP",
            });
        }
        (listeners, inherited)
    }

    pub fn try_clone(l: &Inherited) -> io::Result<Inherited> {
        l.try_clone()
    }

    /// Tells the previous process, if any, that this one serves.
    pub fn notify_ready(ready: &mut Ready) {
        if let Some(inherited) = ready.as_mut() {
            if let Err(e) = inherited.notify_ready() {
                eprintln!("upgrade: cannot tell the previous process that this one serves: {e}");
            }
        }
    }

    /// The upgrade options given on the command line.
    static UPGRADE: Mutex<(Option<PathBuf>, Option<Duration>)> = Mutex::new((None, None));

    /// Takes `--upgrade-program PATH` or `--upgrade-deadline SECS` (with
    /// its value from `args`) if `arg` is one; whether it was.
    pub fn upgrade_arg(arg: &str, args: &mut impl Iterator<Item = String>) -> bool {
        match arg {
            "--upgrade-program" => {
                let path = args.next().map(PathBuf::from);
                lock(&UPGRADE).0 = Some(path.unwrap_or_else(|| bad_value(arg)));
            }
            "--upgrade-deadline" => {
                let secs = args
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|s| *s > 0.0 && s.is_finite());
                lock(&UPGRADE).1 = Some(Duration::from_secs_f64(
                    secs.unwrap_or_else(|| bad_value(arg)),
                ));
            }
            _ => return false,
        }
        true
    }

    fn bad_value(arg: &str) -> ! {
        eprintln!("{arg} needs a value (a path; a positive number of seconds)");
        std::process::exit(2);
    }

    /// The options of an upgrade asked for now: the command line's, and
    /// the listeners of the other reactors.
    fn options(others: &[OwnedFd]) -> UpgradeOptions {
        let (program, deadline) = lock(&UPGRADE).clone();
        let mut options = UpgradeOptions::new();
        if let Some(program) = program {
            options = options.program(program);
        }
        if let Some(deadline) = deadline {
            options = options.deadline(deadline);
        }
        for fd in others {
            match fd.try_clone() {
                Ok(fd) => options = options.also_pass(fd),
                Err(e) => eprintln!("upgrade: cannot pass a listener: {e}"),
            }
        }
        options
    }

    /// Keeps a copy of `reactor`'s listeners in `passed`, for the upgrade
    /// started on the first reactor to pass them on.
    pub fn keep_for_upgrade(reactor: &mut Reactor, passed: &Mutex<Vec<OwnedFd>>) -> io::Result<()> {
        for fd in reactor.upgrades().server_fds() {
            lock(passed).push(fd.try_clone_to_owned()?);
        }
        Ok(())
    }

    /// Upgrades on `SIGUSR2`, passing this reactor's listeners and
    /// `passed` (the other reactors'); once the new process serves, the
    /// other reactors hand over too.
    pub fn on_upgrade_signal(
        reactor: &mut Reactor,
        others: Arc<Mutex<Vec<ReactorHandle>>>,
        passed: Arc<Mutex<Vec<OwnedFd>>>,
    ) -> io::Result<()> {
        reactor.upgrades().on_signal(
            move |_| options(&lock(&passed)),
            move |_, outcome| {
                if outcome.is_ok() {
                    for h in lock(&others).iter() {
                        h.schedule(|r| r.upgrades().hand_over(HANDOVER_SETTLE, STOP_GRACE));
                    }
                }
            },
        )
    }
}

/// Without the `upgrade` feature (a core-only build) nothing is inherited
/// and `SIGUSR2` keeps its default action.
#[cfg(not(feature = "upgrade"))]
mod restart {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::sync::{Arc, Mutex};

    use packet::{Handler, Reactor, ReactorHandle, ServerId};

    /// No inherited listener can exist.
    pub type Inherited = std::convert::Infallible;
    pub type Ready = ();

    pub fn adopt<H: Handler>(
        _: &mut Reactor,
        l: Inherited,
        _: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        match l {}
    }

    #[cfg(feature = "tls")]
    pub fn adopt_tls<H: Handler>(
        _: &mut Reactor,
        l: Inherited,
        _: Arc<packet::tls::rustls::ServerConfig>,
        _: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        match l {}
    }

    pub fn from_env() -> (Vec<Inherited>, Ready) {
        (Vec::new(), ())
    }

    pub fn try_clone(l: &Inherited) -> io::Result<Inherited> {
        match *l {}
    }

    pub fn notify_ready(_: &mut Ready) {}

    /// The upgrade options are unknown without the feature.
    pub fn upgrade_arg(_: &str, _: &mut impl Iterator<Item = String>) -> bool {
        false
    }

    pub fn keep_for_upgrade(_: &mut Reactor, _: &Mutex<Vec<OwnedFd>>) -> io::Result<()> {
        Ok(())
    }

    pub fn on_upgrade_signal(
        _: &mut Reactor,
        _: Arc<Mutex<Vec<ReactorHandle>>>,
        _: Arc<Mutex<Vec<OwnedFd>>>,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `threads` reactors, each set up by `start` (which starts its
/// server where it is told and returns the bound address), prints
/// `listening on ADDR` once all of them listen, and returns when all have
/// stopped.
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
///
/// Zero-downtime restarts: when `LISTEN_FDS` names listening sockets
/// (systemd's socket activation, or an upgrade), the server adopts them
/// instead of binding `addr`: one reactor per inherited socket, or
/// `threads` if more (they then share the sockets, taken in turn). Every
/// one must be TCP. `SIGUSR2` starts a binary upgrade
/// (`reactor.upgrades().on_signal`): every reactor's listener is passed to
/// the new process (the same executable file, the same arguments, or
/// `--upgrade-program`), and once it serves (within 30 s, or
/// `--upgrade-deadline`) every reactor here stops accepting, serves what
/// it has for a second more, then drains and stops as on `SIGTERM`; if it
/// fails, this process goes on serving.
pub fn serve<F>(addr: SocketAddr, threads: usize, start: F) -> io::Result<()>
where
    F: Fn(&mut Reactor, Listen) -> io::Result<Addr> + Clone + Send + 'static,
{
    // First of all: a closed descriptor the environment names must not
    // have been reused by the reactors' own by the time it is checked.
    let (adopted, mut ready_to_tell) = restart::from_env();
    let threads = threads.max(adopted.len());
    // With inherited sockets, reactor `i` serves on socket `i` modulo
    // their number.
    let mut adopt: Vec<Option<Inherited>> = Vec::new();
    if !adopted.is_empty() {
        for i in 0..threads {
            adopt.push(Some(restart::try_clone(&adopted[i % adopted.len()])?));
        }
    }
    drop(adopted);
    let options = ServerOptions::new().reuse_port(threads > 1);
    let listen = |slot: Option<&mut Option<Inherited>>, addr| match slot.and_then(Option::take) {
        Some(l) => Listen::Adopt(l),
        None => Listen::Bind(addr, options.clone()),
    };
    let mut reactor = Reactor::new()?;
    let bound = start(&mut reactor, listen(adopt.get_mut(0), addr))?;
    let bound = bound.as_inet().ok_or(io::ErrorKind::InvalidInput)?;
    let others = Arc::new(Mutex::new(Vec::<ReactorHandle>::new()));
    // The other reactors' listeners, passed on by an upgrade.
    let passed = Arc::new(Mutex::new(Vec::<OwnedFd>::new()));
    // Every extra reactor listens before `listening on` is printed.
    let ready = Arc::new(Barrier::new(threads));
    let extra: Vec<_> = (1..threads)
        .map(|i| {
            let how = listen(adopt.get_mut(i), bound);
            let start = start.clone();
            let (others, passed, ready) = (others.clone(), passed.clone(), ready.clone());
            std::thread::spawn(move || -> io::Result<bool> {
                let mut reactor = Reactor::new()?;
                if let Err(e) = start(&mut reactor, how) {
                    eprintln!("cannot listen on {bound}: {e}");
                    std::process::exit(1);
                }
                restart::keep_for_upgrade(&mut reactor, &passed)?;
                lock(&others).push(reactor.handle());
                ready.wait();
                reactor.run_until_stopped()?;
                Ok(reactor.stop_report().is_none_or(|r| r.is_clean()))
            })
        })
        .collect();
    ready.wait();
    let handles = others.clone();
    reactor.on_stop_signals(move |_, action| {
        for h in lock(&handles).iter() {
            match action {
                StopAction::Graceful(within) => h.schedule(move |r| r.stop_gracefully(within)),
                StopAction::Immediate => h.stop(),
                _ => {}
            }
        }
    })?;
    restart::on_upgrade_signal(&mut reactor, others, passed)?;
    println!("listening on {bound}");
    restart::notify_ready(&mut ready_to_tell);
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
