//! Shared by the examples with worker pools (eval_server, fd_passing;
//! kv_server, but for the command line): their command line, their startup
//! line, how they stop, and (with the `upgrade` feature) their zero-downtime
//! restarts: a listener inherited through `LISTEN_FDS` and a binary upgrade
//! on `SIGUSR2`, whose new process brings its own workers while the old
//! master's pool drains with it.

use std::io;
use std::time::Duration;

use packet::signal::STOP_GRACE;
use packet::{Addr, Handler, Reactor, ServerId};

/// `[ADDR] [--workers N]` from the command line: the address (`addr`
/// unless given) and the pool size (2 unless given). Exits with a usage
/// line naming `program` on anything else. Starts no thread: the fork
/// server must be forked before any is.
pub fn parse_args(program: &str, addr: &str) -> (String, usize) {
    let usage = || -> ! {
        eprintln!("usage: {program} [ADDR] [--workers N]");
        std::process::exit(2);
    };
    let (mut addr, mut n) = (addr.to_string(), 2usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => match args.next().and_then(|v| v.parse().ok()) {
                Some(v) if v > 0 => n = v,
                _ => usage(),
            },
            a if a.starts_with('-') => usage(),
            a => addr = a.to_string(),
        }
    }
    (addr, n)
}

/// Where the server listens: on the socket inherited through `LISTEN_FDS`
/// (systemd's socket activation, or an upgrade), or on the address given.
#[derive(Default)]
pub struct Listening {
    #[cfg(feature = "upgrade")]
    listener: Option<packet::upgrade::InheritedListener>,
    /// What tells the previous process, after an upgrade, that this one
    /// serves.
    #[cfg(feature = "upgrade")]
    ready: Option<packet::upgrade::Inherited>,
}

impl Listening {
    /// Reads `LISTEN_FDS`, first thing in `main`: before the workers start,
    /// so that no descriptor of theirs can take a number the variable
    /// names. Exits with status 1 and the error (which names the
    /// descriptor) unless it is one listening TCP socket.
    #[cfg(feature = "upgrade")]
    pub fn from_env() -> Listening {
        let fail = |e: &dyn std::fmt::Display| -> ! {
            eprintln!("{e}");
            std::process::exit(1);
        };
        let Some(mut ready) = packet::upgrade::listeners_from_env().unwrap_or_else(|e| fail(&e))
        else {
            return Listening::default();
        };
        let mut listeners = ready.take_listeners();
        if listeners.len() > 1 {
            fail(&format!(
                "{} listening sockets inherited; this server takes one",
                listeners.len()
            ));
        }
        let listener = listeners.pop();
        if let Some(l) = listener.as_ref().filter(|l| !l.is_tcp()) {
            fail(&packet::upgrade::ActivationError::WrongFamily {
                fd: l.fd(),
                expected: "TCP",
            });
        }
        Listening {
            listener,
            ready: Some(ready),
        }
    }

    /// Without the `upgrade` feature nothing is inherited.
    #[cfg(not(feature = "upgrade"))]
    pub fn from_env() -> Listening {
        Listening::default()
    }

    /// Starts the server on the inherited socket, or on `addr`, and (with
    /// the `upgrade` feature) upgrades on `SIGUSR2`: the new process gets
    /// the listener and starts its own workers; once they run it reports
    /// ready ([`when_workers_run_then`]), and this master stops accepting
    /// and stops gracefully, its asks answered and its workers with it.
    pub fn start<H: Handler>(
        &mut self,
        reactor: &mut Reactor,
        addr: &str,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        #[cfg(feature = "upgrade")]
        {
            reactor
                .upgrades()
                .on_signal(|_| packet::upgrade::UpgradeOptions::new(), |_, _| {})?;
            if let Some(listener) = self.listener.take() {
                return reactor.upgrades().adopt_server(listener, factory);
            }
        }
        reactor.start_server(addr, factory)
    }

    /// Tells the process that started this one by an upgrade, if any, that
    /// this one serves.
    fn ready(self) {
        #[cfg(feature = "upgrade")]
        if let Some(mut ready) = self.ready {
            if let Err(e) = ready.notify_ready() {
                eprintln!("upgrade: cannot tell the previous process that this one serves: {e}");
            }
        }
    }
}

/// Prints `listening on ADDR` once `n` instances of worker `name` run, or
/// after five seconds regardless, saying so; the pids go to stderr.
#[allow(dead_code)] // kv_server's, which inherits no listener
pub fn when_workers_run(
    reactor: &mut Reactor,
    name: &'static str,
    n: usize,
    addr: Addr,
) -> io::Result<()> {
    when_workers_run_then(reactor, name, n, addr, Listening::default())
}

/// [`when_workers_run`], then reports readiness to the process that
/// started this one by an upgrade, if `listening` came from one: the new
/// master serves once its workers run.
pub fn when_workers_run_then(
    reactor: &mut Reactor,
    name: &'static str,
    n: usize,
    addr: Addr,
    listening: Listening,
) -> io::Result<()> {
    let announce = move |r: &mut Reactor, running: usize| {
        if running < n {
            eprintln!("warning: only {running} of {n} workers are running");
        }
        let pids = r.workers().pids(name);
        let pids: Vec<String> = pids.iter().map(|(id, pid)| format!("{id}={pid}")).collect();
        eprintln!("master {}, workers: {}", std::process::id(), pids.join(" "));
        println!("listening on {addr}");
        listening.ready();
    };
    reactor
        .workers()
        .when_running(name, n, Duration::from_secs(5), announce)
        .map_err(io::Error::other)
}

/// The library's stop signals (`Reactor::on_stop_signals`): SIGTERM or
/// SIGINT stop the master gracefully within 30 s (a second one at once),
/// SIGQUIT within 300 s: no more accepts, asks in flight answered (or
/// failed with `WorkerError::Stopping` at the deadline), answers written,
/// then the workers and the fork server stop and are reaped before
/// `Reactor::run` returns. SIGHUP is logged and ignored: the master keeps
/// serving. The workers and the fork server ignore all four (they come to
/// the whole group from a terminal), so Ctrl-C or a hangup loses no ask.
pub fn stop_on_signals(reactor: &mut Reactor) -> io::Result<()> {
    stop_on_signals_within(reactor, STOP_GRACE)
}

/// [`stop_on_signals`], but the first SIGTERM or SIGINT gives the asks in
/// flight `grace` instead of 30 s (`Reactor::set_stop_grace`), for a
/// server whose command line sets it; a second one still stops at once.
pub fn stop_on_signals_within(reactor: &mut Reactor, grace: Duration) -> io::Result<()> {
    reactor.set_stop_grace(grace);
    reactor.on_stop_signals(|_, _| {})
}
