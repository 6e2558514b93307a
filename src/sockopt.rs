//! Socket details of a connection: options, TCP keep-alive, and half-close
//! (EventMachine's `get_sock_opt`/`set_sock_opt`, `enable_keepalive`, and the
//! `close_write` it never merged).
//!
//! This module owns nothing but the calls: option values live in the
//! kernel. It never changes an option the reactor relies on behind its back
//! (non-blocking mode is not offered here).

use std::io;
use std::time::Duration;

use crate::connection::Connection;

/// Option levels and names for [`Connection::get_sock_opt`] and
/// [`Connection::set_sock_opt`].
pub use packet_sys::sockopt::{
    IPPROTO_TCP, SOL_SOCKET, SO_KEEPALIVE, SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF, TCP_NODELAY,
};

impl Connection<'_> {
    /// Reads an integer socket option, such as `(SOL_SOCKET, SO_RCVBUF)`.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection; `ENOPROTOOPT`.
    pub fn get_sock_opt(&self, level: i32, name: i32) -> io::Result<i32> {
        self.reactor.conn_socket(self.id)?.int_option(level, name)
    }

    /// Sets an integer socket option, such as `(IPPROTO_TCP, TCP_NODELAY)`.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection; `ENOPROTOOPT`, `EINVAL`.
    pub fn set_sock_opt(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        self.reactor
            .conn_socket(self.id)?
            .set_int_option(level, name, value)
    }

    /// Turns on TCP keep-alive probes: the first after `idle` without
    /// traffic, then every `interval`, giving up (and ending the connection
    /// with an error) after `count` unanswered ones.
    ///
    /// # Errors
    /// `NotConnected`; `EOPNOTSUPP` for a Unix-domain connection.
    pub fn enable_keepalive(
        &self,
        idle: Duration,
        interval: Duration,
        count: u32,
    ) -> io::Result<()> {
        self.reactor
            .conn_socket(self.id)?
            .set_keepalive(Some((idle, interval, count)))
    }

    /// Turns TCP keep-alive probes off.
    ///
    /// # Errors
    /// As [`Connection::enable_keepalive`].
    pub fn disable_keepalive(&self) -> io::Result<()> {
        self.reactor.conn_socket(self.id)?.set_keepalive(None)
    }

    /// Half-closes the connection: once every queued byte is written, the
    /// write side is shut down (`shutdown(SHUT_WR)`, the peer reads end of
    /// stream) while reading goes on. Later `send_data` is dropped. The
    /// connection ends when the peer closes its side.
    pub fn close_write(&mut self) {
        self.reactor.close_write(self.id);
    }
}
