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
//! The modules, each owning one concept:
//!
//! | module | owns |
//! |---|---|
//! | `reactor` | the loop, servers, connects, deferred work |
//! | `connection` | the handler callbacks and their context; protocol [`Layer`]s |
//! | `reply` | replies routed back to the connection that asked, in order if asked |
//! | `buffer` | outbound queues |
//! | [`proxy`] | connection-to-connection proxying (`proxy_incoming_to`, splice) |
//! | [`sockopt`] | socket options, keep-alive, half-close |
//! | [`filewatch`] | file change notification (`watch_file`: inotify, `EVFILT_VNODE`) |
//! | [`datagram`] | UDP sockets (`open_datagram_socket`, `send_datagram`) |
//! | [`timer`] | the timer wheel |
//! | [`watch`] | descriptors the user reads and writes (`watch`, `notify_readable`) |
//! | [`codec`] | frames and typed messages |
//! | [`channel`] | in-reactor publish/subscribe (`Channel`) and work queues (`Queue`) |
//! | [`defer`] | blocking work on a thread pool, results back on the reactor (`Defer`) |
//! | [`process`] | child processes: `popen`, `system`, `watch_process` |
//! | [`line`](mod@line) | lines and counted binary blocks over connections (`LineText2`) |
//! | [`objects`] | typed objects over connections (`send_object`) |
//! | [`worker`] | worker processes: fork server, asks, proxies, supervision |
//! | `tls` | TLS with rustls (`start_tls`, `start_tls_server`, `connect_tls`; the `tls` feature) |
//! | [`log`] | where the library's own diagnostic lines go (`set_log_hook`) |
//!
//! All system calls go through the `packet-sys` crate; this crate contains
//! no `unsafe` code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod buffer;
pub mod channel;
pub mod codec;
mod connection;
pub mod datagram;
pub mod defer;
pub mod filewatch;
pub mod line;
pub mod log;
#[cfg(feature = "objects")]
pub mod objects;
pub mod process;
pub mod proxy;
mod reactor;
mod reply;
mod slab;
pub mod sockopt;
#[cfg(test)]
mod test_rng;
pub mod timer;
#[cfg(feature = "tls")]
pub mod tls;
pub mod watch;
#[cfg(feature = "workers")]
pub mod worker;

/// Signal numbers for [`Reactor::on_signal`].
pub mod signal {
    pub use packet_sys::signal::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
}

pub use connection::{CloseReason, ConnId, Connection, Handler, Layer};
pub use packet_sys::Addr;
pub use reactor::{Reactor, ReactorHandle, ServerId, ServerOptions, TimerId};
pub use reply::{Reply, ReplyId};
