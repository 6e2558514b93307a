//! `packet`: event-driven network programming in the EventMachine style.
//!
//! A [`Reactor`] runs an event loop on one thread. Servers and clients are
//! driven by [`Handler`] objects, one per connection, with Packet's callback
//! names: `post_init`, `connection_completed`, `receive_data`, `unbind`.
//! Every callback gets a [`Connection`] to write (`send_data`), close, pause
//! and reach the reactor.
//!
//! ```
//! use packet::{Connection, Handler, Reactor};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         conn.send_data(data);
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! let server = reactor.start_server("127.0.0.1:0", || Echo)?;
//! println!("listening on {}", reactor.server_addr(server)?);
//! // reactor.run_until_stopped()?;  // serves until stopped
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The core's types are at the crate root: the loop ([`Reactor`],
//! [`ReactorHandle`], servers and timers), the callbacks and their context
//! ([`Handler`], [`Connection`], [`CloseReason`], protocol [`Layer`]s) and
//! replies routed back to the connection that asked ([`Reply`]). Around them
//! the public modules, each owning one concept. The core builds alone
//! (`default-features = false`); every plug-in module is a Cargo feature
//! of the same name (`workers` for `worker`), all of them on by default.
//! Plug-in modules are named in plain text here, as they may be absent.
//!
//! | module | feature | owns |
//! |---|---|---|
//! | [`timer`] | core | the timer wheel |
//! | [`codec`] | core (typed messages: `objects`) | frames and typed messages |
//! | [`sockopt`] | core | socket options, keep-alive, half-close |
//! | [`signal`] | core | signal numbers for [`Reactor::on_signal`] |
//! | [`log`] | core | where the library's own diagnostic lines go (`set_log_hook`) |
//! | [`extend`] | core | extending the reactor: per-reactor state, filters between socket and handler |
//! | `proxy` | `proxy` | connection-to-connection proxying (`proxy_incoming_to`, splice) |
//! | `watch` | `watch` | descriptors the user reads and writes (`watch`, `notify_readable`) |
//! | `filewatch` | `filewatch` (+`watch`) | file change notification (`watch_file`: inotify, `EVFILT_VNODE`) |
//! | `datagram` | `datagram` (+`watch`) | UDP sockets (`open_datagram_socket`, `send_datagram`) |
//! | `process` | `process` (+`watch`) | child processes: `popen`, `system`, `watch_process` |
//! | `channel` | `channel` | in-reactor publish/subscribe (`Channel`) and work queues (`Queue`) |
//! | `defer` | `defer` | blocking work on a thread pool, results back on the reactor (`Defer`) |
//! | `line` | `line` | lines and counted binary blocks over connections (`LineText2`) |
//! | `objects` | `objects` | typed objects over connections (`send_object`) |
//! | `upgrade` | `upgrade` | zero-downtime restart: socket activation (`LISTEN_FDS`, `adopt_server`), binary upgrade on `SIGUSR2` |
//! | `worker` | `workers` (+`objects`) | worker processes: fork server, asks, proxies, supervision |
//! | `tls` | `tls` (off by default) | TLS with rustls (`start_tls`, `tls().start_server`, `tls().connect`) |
//!
//! All system calls go through the `packet-sys` crate; this crate contains
//! no `unsafe` code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod buffer;
#[cfg(feature = "channel")]
pub mod channel;
pub mod codec;
pub(crate) use reactor::connection;
#[cfg(feature = "datagram")]
pub mod datagram;
#[cfg(feature = "defer")]
pub mod defer;
pub use reactor::extend;
#[cfg(feature = "filewatch")]
pub mod filewatch;
#[cfg(feature = "line")]
pub mod line;
pub mod log;
#[cfg(feature = "objects")]
pub mod objects;
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "proxy")]
pub mod proxy;
mod reactor;
pub(crate) use reactor::reply;
mod slab;
pub use reactor::sockopt;
#[cfg(test)]
mod test_rng;
pub mod timer;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "upgrade")]
pub mod upgrade;
#[cfg(feature = "watch")]
pub use reactor::watch;
#[cfg(feature = "workers")]
pub mod worker;

// The README's examples, compiled (and, unless `no_run`, run) by
// `cargo test --doc`, so that they cannot go stale. They use the line
// protocol, typed objects and workers.
#[cfg(all(doctest, feature = "line", feature = "objects", feature = "workers"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Signal numbers for [`Reactor::on_signal`].
pub mod signal {
    pub use crate::reactor::{StopAction, QUIT_GRACE, STOP_GRACE};
    pub use packet_sys::signal::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
}

pub use connection::{Backoff, CloseReason, ConnId, Connection, Handler, Layer};
pub use packet_sys::Addr;
pub use reactor::{
    Linger, Reactor, ReactorHandle, ServerId, ServerOptions, StopReport, TimerId,
    DEFAULT_OUTBOUND_BUDGET,
};
pub use reply::{Reply, ReplyId};
