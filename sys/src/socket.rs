//! Non-blocking, close-on-exec stream sockets (TCP over IPv4/IPv6, Unix
//! domain) and their addresses.
//!
//! Every socket made here is non-blocking and `CLOEXEC` from birth (atomic
//! `SOCK_NONBLOCK|SOCK_CLOEXEC` where the OS has it), and every write asks
//! the kernel not to raise `SIGPIPE` (`MSG_NOSIGNAL`, or `SO_NOSIGPIPE` on
//! Apple systems), so a peer that went away is an `EPIPE` error, never a
//! dead process.

use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{cvt, cvt_r};

/// The flags of every `send`/`sendmsg` on a socket. `MSG_NOSIGNAL` is a
/// per-call flag (send(2) on Linux and the BSDs); macOS has no such flag
/// and instead gets the per-socket option `SO_NOSIGPIPE` (getsockopt(2) of
/// macOS) on every socket at creation and `accept`, so a socket made
/// outside this module and attached would still raise `SIGPIPE` there (Rust
/// programs ignore it anyway). The same "EPIPE, never a signal" path on
/// Linux: tests/reliability_faults.rs
/// `a_reset_in_the_middle_of_a_large_write_is_an_unbind_not_a_signal` and
/// `a_unix_socket_peer_that_goes_away_mid_write_is_an_unbind_not_a_signal`.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(any(target_os = "macos", target_os = "ios"))]
const SEND_FLAGS: libc::c_int = 0;

/// The address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// `AF_INET`.
    Ipv4,
    /// `AF_INET6`.
    Ipv6,
    /// `AF_UNIX`.
    Unix,
}

impl Domain {
    fn raw(self) -> libc::c_int {
        match self {
            Domain::Ipv4 => libc::AF_INET,
            Domain::Ipv6 => libc::AF_INET6,
            Domain::Unix => libc::AF_UNIX,
        }
    }
}

/// A socket address: TCP/IP or Unix domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix-domain path; `None` for an unnamed or abstract socket.
    Unix(Option<PathBuf>),
}

impl Addr {
    /// The domain a socket for this address needs.
    pub fn domain(&self) -> Domain {
        match self {
            Addr::Inet(SocketAddr::V4(_)) => Domain::Ipv4,
            Addr::Inet(SocketAddr::V6(_)) => Domain::Ipv6,
            Addr::Unix(_) => Domain::Unix,
        }
    }

    /// The IP address and port, if this is a TCP/IP address.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr::Inet(a)
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Inet(a) => a.fmt(f),
            Addr::Unix(Some(p)) => write!(f, "{}", p.display()),
            Addr::Unix(None) => f.write_str("(unnamed)"),
        }
    }
}

/// An owned, non-blocking stream socket.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// A new non-blocking, close-on-exec stream socket.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE` when out of descriptors, `EAFNOSUPPORT`.
    pub fn stream(domain: Domain) -> io::Result<Socket> {
        Socket::new(domain, libc::SOCK_STREAM)
    }

    fn new(domain: Domain, ty: libc::c_int) -> io::Result<Socket> {
        #[cfg(not(any(target_os = "macos", target_os = "ios")))]
        {
            let ty = ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            // SAFETY: socket takes no pointers; the result is checked.
            let fd = cvt(unsafe { libc::socket(domain.raw(), ty, 0) })?;
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Socket { fd })
        }
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        {
            // SAFETY: socket takes no pointers; the result is checked.
            let fd = cvt(unsafe { libc::socket(domain.raw(), ty, 0) })?;
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let s = Socket { fd };
            s.set_cloexec()?;
            s.set_nonblocking(true)?;
            s.setsockopt(libc::SOL_SOCKET, libc::SO_NOSIGPIPE, 1 as libc::c_int)?;
            Ok(s)
        }
    }

    /// A connected pair of non-blocking, close-on-exec Unix stream sockets.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE` when out of descriptors.
    pub fn pair() -> io::Result<(Socket, Socket)> {
        let mut fds = [0 as libc::c_int; 2];
        #[cfg(not(any(target_os = "macos", target_os = "ios")))]
        {
            let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            // SAFETY: `fds` has room for the two descriptors written.
            cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) })?;
        }
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        {
            // SAFETY: `fds` has room for the two descriptors written.
            cvt(unsafe {
                libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr())
            })?;
        }
        // SAFETY: both descriptors are fresh and owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (a, b) = (Socket { fd: a }, Socket { fd: b });
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        for s in [&a, &b] {
            s.set_cloexec()?;
            s.set_nonblocking(true)?;
            s.setsockopt(libc::SOL_SOCKET, libc::SO_NOSIGPIPE, 1 as libc::c_int)?;
        }
        Ok((a, b))
    }

    /// Binds to `addr`.
    ///
    /// # Errors
    /// `EADDRINUSE`, `EACCES`, `EADDRNOTAVAIL`, a Unix path too long.
    pub fn bind(&self, addr: &Addr) -> io::Result<()> {
        let (raw, len) = to_raw(addr)?;
        // SAFETY: `raw` is a valid sockaddr of `len` bytes.
        cvt(unsafe {
            libc::bind(
                self.raw(),
                (&raw as *const libc::sockaddr_storage).cast(),
                len,
            )
        })?;
        Ok(())
    }

    /// Marks the socket as listening with room for `backlog` pending
    /// connections.
    ///
    /// # Errors
    /// `EADDRINUSE` when another socket listens on the port.
    pub fn listen(&self, backlog: i32) -> io::Result<()> {
        // SAFETY: listen takes no pointers.
        cvt(unsafe { libc::listen(self.raw(), backlog) })?;
        Ok(())
    }

    /// Starts connecting to `addr`. `Ok(true)` means connected already,
    /// `Ok(false)` that it is in progress: wait for writability, then ask
    /// [`Socket::take_error`].
    ///
    /// # Errors
    /// Immediate failures such as `ECONNREFUSED` (Unix sockets fail at once)
    /// or `ENETUNREACH`.
    pub fn connect(&self, addr: &Addr) -> io::Result<bool> {
        let (raw, len) = to_raw(addr)?;
        // SAFETY: `raw` is a valid sockaddr of `len` bytes. No EINTR retry:
        // a non-blocking connect interrupted by a signal continues in the
        // background and is reported like EINPROGRESS.
        let r = unsafe {
            libc::connect(
                self.raw(),
                (&raw as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        match cvt(r) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINPROGRESS) | Some(libc::EINTR)
                ) =>
            {
                Ok(false)
            }
            // Unix sockets report a full listen backlog this way.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && addr.domain() == Domain::Unix => {
                Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
            }
            Err(e) => Err(e),
        }
    }

    /// Accepts one pending connection as a non-blocking, close-on-exec
    /// socket.
    ///
    /// # Errors
    /// `WouldBlock` when none is pending; `EMFILE`/`ENFILE` when out of
    /// descriptors; `ECONNABORTED` for a connection reset while queued.
    pub fn accept(&self) -> io::Result<Socket> {
        #[cfg(not(any(target_os = "macos", target_os = "ios")))]
        {
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            // SAFETY: null address pointers are allowed: we do not want the
            // peer address here (it is read on demand with getpeername).
            let fd = cvt_r(|| unsafe {
                libc::accept4(
                    self.raw(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    flags,
                )
            })?;
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Socket { fd })
        }
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        {
            // SAFETY: null address pointers are allowed.
            let fd = cvt_r(|| unsafe {
                libc::accept(self.raw(), std::ptr::null_mut(), std::ptr::null_mut())
            })?;
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let s = Socket { fd };
            s.set_cloexec()?;
            s.set_nonblocking(true)?;
            s.setsockopt(libc::SOL_SOCKET, libc::SO_NOSIGPIPE, 1 as libc::c_int)?;
            Ok(s)
        }
    }

    /// Reads into `buf`; `Ok(0)` is end of stream.
    ///
    /// # Errors
    /// `WouldBlock` when nothing is there; `ECONNRESET`.
    #[inline]
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes.
        let n = cvt_r(|| unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) })?;
        Ok(n as usize)
    }

    /// Reads into the spare capacity of `buf` (between its length and its
    /// capacity) and extends its length by the bytes read; `Ok(0)` is end of
    /// stream, or no spare capacity. Memory no read reaches is never
    /// written, so a large, rarely filled buffer costs address space, not
    /// resident pages.
    ///
    /// # Errors
    /// As [`Socket::read`].
    #[inline]
    pub fn read_into_spare(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is valid for `spare.len()` writable bytes; the
        // kernel only writes to it.
        let n = cvt_r(|| unsafe { libc::read(self.raw(), spare.as_mut_ptr().cast(), spare.len()) })?
            as usize;
        // SAFETY: the kernel initialized the first `n` bytes of the spare
        // capacity, and `n` is at most its length.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Reads into several buffers in one `readv`, filling them in order.
    ///
    /// # Errors
    /// As [`Socket::read`].
    pub fn read_vectored(&self, bufs: &mut [std::io::IoSliceMut<'_>]) -> io::Result<usize> {
        let count = bufs.len().min(iov_max()) as libc::c_int;
        // SAFETY: std guarantees IoSliceMut is ABI-compatible with iovec on
        // unix; each points at writable memory alive for the call.
        let n = cvt_r(|| unsafe {
            libc::readv(self.raw(), bufs.as_ptr() as *const libc::iovec, count)
        })?;
        Ok(n as usize)
    }

    /// Writes from `buf` without raising `SIGPIPE`.
    ///
    /// # Errors
    /// `WouldBlock` when the send buffer is full; `EPIPE`/`ECONNRESET` when
    /// the peer is gone.
    #[inline]
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` readable bytes.
        let n = cvt_r(|| unsafe {
            libc::send(self.raw(), buf.as_ptr().cast(), buf.len(), SEND_FLAGS)
        })?;
        Ok(n as usize)
    }

    /// Writes several buffers in one `sendmsg`, without raising `SIGPIPE`.
    /// At most `IOV_MAX` buffers are looked at.
    ///
    /// # Errors
    /// As [`Socket::write`].
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let count = bufs.len().min(iov_max());
        // SAFETY: all-zero is a valid msghdr (no name, no control data).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        // std guarantees IoSlice is ABI-compatible with iovec on unix; the
        // kernel only reads through this pointer.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = count as _;
        // SAFETY: `msg` points at `count` valid iovecs that outlive the call.
        let n = cvt_r(|| unsafe { libc::sendmsg(self.raw(), &msg, SEND_FLAGS) })?;
        Ok(n as usize)
    }

    /// Like [`Socket::write_vectored`], passing `fds` along with the bytes
    /// (`SCM_RIGHTS`, Unix sockets only). The descriptors travel with the
    /// first byte written; if nothing is written they are not sent.
    ///
    /// # Errors
    /// As [`Socket::write`]; `EINVAL` for more than [`MAX_FDS_PER_MESSAGE`]
    /// descriptors.
    pub fn write_vectored_with_fds(
        &self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if fds.is_empty() {
            return self.write_vectored(bufs);
        }
        if fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many descriptors for one message",
            ));
        }
        let payload = mem::size_of_val(fds) as libc::c_uint;
        // u64 elements keep the buffer aligned for cmsghdr.
        let mut control = [0u64; CONTROL_WORDS];
        // SAFETY: all-zero is a valid msghdr (no name).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(iov_max()) as _;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as _;
        // SAFETY: msg_control points at `control`, which is at least
        // CMSG_SPACE(payload) bytes and aligned, so the first header and its
        // data area lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
        // SAFETY: `msg` points at valid iovecs and control data that outlive
        // the call.
        let n = cvt_r(|| unsafe { libc::sendmsg(self.raw(), &msg, SEND_FLAGS) })?;
        Ok(n as usize)
    }

    /// Reads into the spare capacity of `buf` like
    /// [`Socket::read_into_spare`], and appends any descriptors that came
    /// with the bytes (`SCM_RIGHTS`) to `fds`, close-on-exec.
    ///
    /// # Errors
    /// As [`Socket::read`]; `InvalidData` when the peer sent more
    /// descriptors than fit (the kernel closed the excess; the ones that did
    /// arrive are closed too).
    pub fn read_with_fds(&self, buf: &mut Vec<u8>, fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        let mut control = [0u64; CONTROL_WORDS];
        let spare = buf.spare_capacity_mut();
        let mut iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        // SAFETY: all-zero is a valid msghdr (no name).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        #[cfg(not(any(target_os = "macos", target_os = "ios")))]
        let flags = libc::MSG_CMSG_CLOEXEC;
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        let flags = 0;
        // SAFETY: `msg` points at `buf` and `control`, both writable for the
        // lengths given and alive for the call.
        let n = cvt_r(|| unsafe { libc::recvmsg(self.raw(), &mut msg, flags) })? as usize;
        // SAFETY: the kernel initialized the first `n` bytes of the spare
        // capacity, and `n` is at most its length.
        unsafe { buf.set_len(buf.len() + n) };
        let before = fds.len();
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of
        // well-formed cmsg headers; CMSG_FIRSTHDR/NXTHDR stay inside it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                    let header = data.cast::<u8>().offset_from(cmsg.cast::<u8>()) as usize;
                    let count = ((*cmsg).cmsg_len as usize).saturating_sub(header)
                        / mem::size_of::<libc::c_int>();
                    for i in 0..count {
                        // Each received descriptor is new in this process
                        // and owned by nobody else.
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        for fd in &fds[before..] {
            // SAFETY: F_SETFD takes an int.
            cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            fds.truncate(before);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "peer sent more descriptors than one message may carry",
            ));
        }
        Ok(n)
    }

    /// Writes with plain `write(2)`, for descriptors that are not sockets
    /// (pipes, terminals). Unlike [`Socket::write`] this can raise
    /// `SIGPIPE`; see `signal::ignore_default_sigpipe`.
    ///
    /// # Errors
    /// `WouldBlock` when full; `EPIPE` when the reader is gone.
    pub fn write_plain(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` readable bytes.
        let n = cvt_r(|| unsafe { libc::write(self.raw(), buf.as_ptr().cast(), buf.len()) })?;
        Ok(n as usize)
    }

    /// Writes several buffers with plain `writev(2)`, for descriptors that
    /// are not sockets.
    ///
    /// # Errors
    /// As [`Socket::write_plain`].
    pub fn write_vectored_plain(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let count = bufs.len().min(iov_max()) as libc::c_int;
        // SAFETY: IoSlice is ABI-compatible with iovec; each points at
        // readable memory alive for the call.
        let n = cvt_r(|| unsafe {
            libc::writev(self.raw(), bufs.as_ptr() as *const libc::iovec, count)
        })?;
        Ok(n as usize)
    }

    /// A new non-blocking, close-on-exec datagram (UDP or Unix datagram)
    /// socket.
    ///
    /// # Errors
    /// As [`Socket::stream`].
    pub fn datagram(domain: Domain) -> io::Result<Socket> {
        Socket::new(domain, libc::SOCK_DGRAM)
    }

    /// Receives one datagram into `buf`. Returns the bytes stored, the
    /// sender, and the datagram's full length, which is larger than the
    /// bytes stored when it did not fit (the rest is lost: the caller can
    /// tell, instead of getting silently truncated data).
    ///
    /// # Errors
    /// `WouldBlock` when none is queued.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Addr, usize)> {
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = storage.as_mut_ptr().cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // MSG_TRUNC in the flags makes Linux return the datagram's real
        // length; elsewhere msg_flags still says it was cut.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let flags = libc::MSG_TRUNC;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let flags = 0;
        // SAFETY: `msg` points at `buf` and `storage`, writable for the
        // lengths given and alive for the call.
        let n = cvt_r(|| unsafe { libc::recvmsg(self.raw(), &mut msg, flags) })? as usize;
        let stored = n.min(buf.len());
        let full = if msg.msg_flags & libc::MSG_TRUNC != 0 {
            n.max(buf.len() + 1)
        } else {
            n
        };
        // SAFETY: zero-initialised, then partly written by the kernel.
        let storage = unsafe { storage.assume_init() };
        let from = from_raw(&storage, msg.msg_namelen)?;
        Ok((stored, from, full))
    }

    /// Sends one datagram to `addr`, without raising `SIGPIPE`.
    ///
    /// # Errors
    /// `WouldBlock` when the socket buffer is full; `EMSGSIZE` when too
    /// large; `ECONNREFUSED` reported from an earlier ICMP error.
    pub fn send_to(&self, buf: &[u8], addr: &Addr) -> io::Result<usize> {
        let (raw, len) = to_raw(addr)?;
        // SAFETY: `buf` and `raw` are valid for the lengths given.
        let n = cvt_r(|| unsafe {
            libc::sendto(
                self.raw(),
                buf.as_ptr().cast(),
                buf.len(),
                SEND_FLAGS,
                (&raw as *const libc::sockaddr_storage).cast(),
                len,
            )
        })?;
        Ok(n as usize)
    }

    /// Uses a descriptor owned elsewhere as a [`Socket`] for the length of
    /// the borrow, without taking it over or closing it.
    pub fn view(fd: BorrowedFd<'_>) -> SocketRef<'_> {
        // SAFETY: the Socket is never dropped (ManuallyDrop), so the
        // descriptor is not closed, and SocketRef's lifetime keeps it from
        // outliving the borrow.
        let sock = unsafe {
            Socket {
                fd: OwnedFd::from_raw_fd(fd.as_raw_fd()),
            }
        };
        SocketRef {
            sock: std::mem::ManuallyDrop::new(sock),
            _fd: std::marker::PhantomData,
        }
    }

    /// Sends up to `count` bytes of `file` from `offset` (`sendfile(2)`),
    /// without copying them through user space.
    ///
    /// # Errors
    /// As [`Socket::write`]; `Unsupported` where this OS has no `sendfile`
    /// with Linux's semantics (the caller then reads and writes).
    pub fn send_file(&self, file: BorrowedFd<'_>, offset: u64, count: usize) -> io::Result<usize> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut off = libc::off_t::try_from(offset).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "file offset out of range")
            })?;
            let n = cvt_r(|| {
                // SAFETY: `off` is a live off_t the kernel updates; both fds
                // are open for the call.
                unsafe { libc::sendfile(self.raw(), file.as_raw_fd(), &mut off, count) }
            })?;
            Ok(n as usize)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = (file, offset, count);
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no sendfile on this OS",
            ))
        }
    }

    /// Shuts down one or both directions.
    ///
    /// # Errors
    /// `ENOTCONN` when not connected.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown takes no pointers.
        cvt(unsafe { libc::shutdown(self.raw(), how) })?;
        Ok(())
    }

    /// Bytes written to the socket that the peer has not acknowledged yet
    /// (Linux `SIOCOUTQ`): a lingering close watches it fall to know the
    /// peer is still taking what was sent.
    ///
    /// # Errors
    /// `Unsupported` on systems without the request; otherwise only if the
    /// fd is not a socket.
    pub fn unacknowledged(&self) -> io::Result<usize> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut n: libc::c_int = 0;
            // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int to the live `n`.
            cvt(unsafe { libc::ioctl(self.raw(), libc::TIOCOUTQ, &mut n) })?;
            Ok(n.max(0) as usize)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    /// Takes the pending error (`SO_ERROR`), as after a non-blocking connect.
    ///
    /// # Errors
    /// Only if the fd is not a socket.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let err: libc::c_int = self.getsockopt(libc::SOL_SOCKET, libc::SO_ERROR)?;
        Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
    }

    /// `TCP_NODELAY`: send small writes at once instead of waiting for ACKs
    /// (Nagle), which request/response traffic wants.
    ///
    /// # Errors
    /// `EOPNOTSUPP` on Unix sockets.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.setsockopt(libc::IPPROTO_TCP, libc::TCP_NODELAY, on as libc::c_int)
    }

    /// `SO_REUSEADDR`: rebind a port that has connections in `TIME_WAIT`.
    ///
    /// # Errors
    /// Only if the fd is not a socket.
    pub fn set_reuse_address(&self, on: bool) -> io::Result<()> {
        self.setsockopt(libc::SOL_SOCKET, libc::SO_REUSEADDR, on as libc::c_int)
    }

    /// Several sockets (one per reactor thread) listen on one port and the
    /// kernel spreads connections over them: `SO_REUSEPORT` on Linux and
    /// DragonFly, `SO_REUSEPORT_LB` on FreeBSD (12.0+; its plain
    /// `SO_REUSEPORT` only lets the sockets bind, setsockopt(2)).
    ///
    /// # Errors
    /// `ENOPROTOOPT` on kernels without it. `Unsupported` on macOS, NetBSD
    /// and OpenBSD when `on`: their `SO_REUSEPORT` lets several sockets bind
    /// the port but delivers each connection to one of them only (the last
    /// bound), so the threads would not share the load; saying so beats a
    /// server that silently runs on one thread.
    pub fn set_reuse_port(&self, on: bool) -> io::Result<()> {
        #[cfg(target_os = "freebsd")]
        let option = libc::SO_REUSEPORT_LB;
        #[cfg(not(target_os = "freebsd"))]
        let option = libc::SO_REUSEPORT;
        #[cfg(any(
            target_os = "macos",
            target_os = "ios",
            target_os = "netbsd",
            target_os = "openbsd"
        ))]
        if on {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this OS's SO_REUSEPORT does not spread connections over the listening \
                 sockets: run one reactor thread per port, or one process per port",
            ));
        }
        self.setsockopt(libc::SOL_SOCKET, option, on as libc::c_int)
    }

    /// `SO_LINGER`: `Some(0)` makes `close` send a reset instead of a FIN.
    ///
    /// # Errors
    /// Only if the fd is not a socket.
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        let l = libc::linger {
            l_onoff: linger.is_some() as libc::c_int,
            l_linger: linger.map_or(0, |d| d.as_secs().min(i32::MAX as u64) as libc::c_int),
        };
        self.setsockopt(libc::SOL_SOCKET, libc::SO_LINGER, l)
    }

    /// TCP keep-alive: probe an idle connection after `idle`, every
    /// `interval`, and give up after `count` unanswered probes; `None`
    /// turns probing off.
    ///
    /// # Errors
    /// `EOPNOTSUPP` on non-TCP sockets; `EINVAL` for out-of-range values;
    /// `Unsupported` on OpenBSD for `Some` (no per-socket timing there).
    pub fn set_keepalive(&self, probes: Option<(Duration, Duration, u32)>) -> io::Result<()> {
        let Some((idle, interval, count)) = probes else {
            return self.setsockopt(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 0 as libc::c_int);
        };
        self.set_keepalive_timing(idle, interval, count)?;
        self.setsockopt(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int)
    }

    /// The per-socket keep-alive timing, set before keep-alive is turned on.
    #[cfg(not(target_os = "openbsd"))]
    fn set_keepalive_timing(
        &self,
        idle: Duration,
        interval: Duration,
        count: u32,
    ) -> io::Result<()> {
        let secs = |d: Duration| d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        self.setsockopt(libc::IPPROTO_TCP, libc::TCP_KEEPALIVE, secs(idle))?;
        #[cfg(not(any(target_os = "macos", target_os = "ios")))]
        self.setsockopt(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(idle))?;
        self.setsockopt(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(interval))?;
        self.setsockopt(
            libc::IPPROTO_TCP,
            libc::TCP_KEEPCNT,
            count.min(i32::MAX as u32) as libc::c_int,
        )
    }

    /// OpenBSD has no per-socket keep-alive timing (tcp(4) lists no
    /// `TCP_KEEPIDLE`, `TCP_KEEPINTVL` or `TCP_KEEPCNT`; only the system-wide
    /// `net.inet.tcp.keepidle`/`keepintvl` sysctls): refused rather than
    /// dropped while returning `Ok`, and keep-alive is left as it was.
    #[cfg(target_os = "openbsd")]
    fn set_keepalive_timing(
        &self,
        idle: Duration,
        interval: Duration,
        count: u32,
    ) -> io::Result<()> {
        let _ = (idle, interval, count);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "OpenBSD has no per-socket keep-alive timing: set the net.inet.tcp.keepidle \
             and keepintvl sysctls, and leave keep-alive off in the options",
        ))
    }

    /// Sets an `int` socket option.
    ///
    /// # Errors
    /// `ENOPROTOOPT`/`EINVAL` for an unknown option or value.
    pub fn set_int_option(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        self.setsockopt(level, name, value)
    }

    /// Reads an `int` socket option.
    ///
    /// # Errors
    /// `ENOPROTOOPT` for an unknown option.
    pub fn int_option(&self, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
        self.getsockopt(level, name)
    }

    /// Whether `e` says a descriptor is not a socket (`ENOTSOCK`), as
    /// [`Socket::is_stream`] fails on a file or a pipe.
    pub fn not_a_socket(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::ENOTSOCK)
    }

    /// Whether `e` says a descriptor is not open (`EBADF`).
    pub fn not_open(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::EBADF)
    }

    /// Whether this is a stream socket (`SO_TYPE` is `SOCK_STREAM`).
    ///
    /// # Errors
    /// `ENOTSOCK` when the descriptor is not a socket.
    pub fn is_stream(&self) -> io::Result<bool> {
        Ok(self.getsockopt::<libc::c_int>(libc::SOL_SOCKET, libc::SO_TYPE)? == libc::SOCK_STREAM)
    }

    /// Whether `listen` was called on this socket (`SO_ACCEPTCONN`).
    ///
    /// # Errors
    /// `ENOTSOCK` when the descriptor is not a socket.
    pub fn is_listening(&self) -> io::Result<bool> {
        Ok(self.getsockopt::<libc::c_int>(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0)
    }

    /// The address this socket is bound to.
    ///
    /// # Errors
    /// `ENOBUFS`; only if the fd is broken otherwise.
    pub fn local_addr(&self) -> io::Result<Addr> {
        // SAFETY: getsockname writes at most `len` bytes into `storage`.
        self.name_with(|fd, sa, len| unsafe { libc::getsockname(fd, sa, len) })
    }

    /// The address of the peer.
    ///
    /// # Errors
    /// `ENOTCONN` when not connected.
    pub fn peer_addr(&self) -> io::Result<Addr> {
        // SAFETY: getpeername writes at most `len` bytes into `storage`.
        self.name_with(|fd, sa, len| unsafe { libc::getpeername(fd, sa, len) })
    }

    /// Sets or clears `O_NONBLOCK`.
    ///
    /// # Errors
    /// Only if the fd is broken.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        // SAFETY: F_GETFL takes no pointer.
        let flags = cvt(unsafe { libc::fcntl(self.raw(), libc::F_GETFL) })?;
        let new = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if new != flags {
            // SAFETY: F_SETFL takes an int.
            cvt(unsafe { libc::fcntl(self.raw(), libc::F_SETFL, new) })?;
        }
        Ok(())
    }

    #[cfg(any(target_os = "macos", target_os = "ios"))]
    fn set_cloexec(&self) -> io::Result<()> {
        // SAFETY: F_SETFD takes an int.
        cvt(unsafe { libc::fcntl(self.raw(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
        Ok(())
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn name_with(
        &self,
        f: impl FnOnce(RawFd, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
    ) -> io::Result<Addr> {
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        cvt(f(self.raw(), storage.as_mut_ptr().cast(), &mut len))?;
        // SAFETY: zero-initialised, then partly written by the kernel: every
        // byte is initialised.
        let storage = unsafe { storage.assume_init() };
        from_raw(&storage, len)
    }

    fn setsockopt<T: Copy>(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: T,
    ) -> io::Result<()> {
        // SAFETY: `value` is a live T of the size passed.
        cvt(unsafe {
            libc::setsockopt(
                self.raw(),
                level,
                name,
                (&value as *const T).cast(),
                mem::size_of::<T>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    fn getsockopt<T: Copy>(&self, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
        let mut value = MaybeUninit::<T>::zeroed();
        let mut len = mem::size_of::<T>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `value`.
        cvt(unsafe {
            libc::getsockopt(self.raw(), level, name, value.as_mut_ptr().cast(), &mut len)
        })?;
        // SAFETY: zero-initialised and the options read here are plain ints
        // or structs of ints, for which any bytes are valid.
        Ok(unsafe { value.assume_init() })
    }
}

/// A [`Socket`] view of a descriptor owned elsewhere; see [`Socket::view`].
#[derive(Debug)]
pub struct SocketRef<'a> {
    sock: std::mem::ManuallyDrop<Socket>,
    _fd: std::marker::PhantomData<BorrowedFd<'a>>,
}

impl std::ops::Deref for SocketRef<'_> {
    type Target = Socket;
    fn deref(&self) -> &Socket {
        &self.sock
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<OwnedFd> for Socket {
    /// Adopts an fd that the caller knows to be a socket. It is not made
    /// non-blocking here: use [`Socket::set_nonblocking`].
    fn from(fd: OwnedFd) -> Socket {
        Socket { fd }
    }
}

impl From<Socket> for OwnedFd {
    fn from(s: Socket) -> OwnedFd {
        s.fd
    }
}

impl IntoRawFd for Socket {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

/// Descriptors one message may carry; more is refused on send and treated as
/// hostile on receive.
pub const MAX_FDS_PER_MESSAGE: usize = 16;

/// Control buffer size in u64 words: room for one SCM_RIGHTS header with
/// MAX_FDS_PER_MESSAGE descriptors on every supported OS.
const CONTROL_WORDS: usize = 16;

fn iov_max() -> usize {
    // POSIX guarantees at least 16; Linux and the BSDs have 1024.
    1024
}

/// Lays `addr` out as a `sockaddr` for the kernel.
fn to_raw(addr: &Addr) -> io::Result<(libc::sockaddr_storage, libc::socklen_t)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let len = match addr {
        Addr::Inet(SocketAddr::V4(a)) => {
            // SAFETY: all-zero is a valid sockaddr_in.
            let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                sin.sin_len = mem::size_of::<libc::sockaddr_in>() as u8;
            }
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // sockaddr type.
            unsafe { storage.as_mut_ptr().cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        Addr::Inet(SocketAddr::V6(a)) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                sin6.sin6_len = mem::size_of::<libc::sockaddr_in6>() as u8;
            }
            // SAFETY: as above.
            unsafe {
                storage
                    .as_mut_ptr()
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>()
        }
        Addr::Unix(path) => {
            let path: &Path = path.as_deref().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an unnamed Unix socket address cannot be bound or connected to",
                )
            })?;
            let bytes = path.as_os_str().as_bytes();
            // SAFETY: all-zero is a valid sockaddr_un.
            let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
            // The path needs a terminating NUL inside sun_path.
            if bytes.is_empty() || bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "Unix socket path must be 1 to 107 bytes without NUL",
                ));
            }
            sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
            // `c_char` is `i8` on x86 and `u8` on Arm and others: a byte
            // conversion, not a cast, is right (and lint-clean) on both.
            for (d, s) in sun.sun_path.iter_mut().zip(bytes) {
                *d = libc::c_char::from_ne_bytes([*s]);
            }
            let len = mem::size_of::<libc::sa_family_t>() + offset_pad() + bytes.len() + 1;
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                sun.sun_len = len as u8;
            }
            // SAFETY: as above.
            unsafe { storage.as_mut_ptr().cast::<libc::sockaddr_un>().write(sun) };
            len
        }
    };
    // SAFETY: zero-initialised, then overwritten by a complete sockaddr.
    Ok((unsafe { storage.assume_init() }, len as libc::socklen_t))
}

/// Bytes between the start of `sockaddr_un` and `sun_path` beyond the family
/// field (the BSDs put a length byte first).
const fn offset_pad() -> usize {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        0
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        1
    }
}

/// Reads a kernel-filled `sockaddr` back into an [`Addr`].
fn from_raw(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> io::Result<Addr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // the storage is aligned for it.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(Addr::Inet(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            ))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(Addr::Inet(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))))
        }
        libc::AF_UNIX => {
            // SAFETY: as above, for sockaddr_un.
            let sun =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
            let start = mem::size_of::<libc::sa_family_t>() + offset_pad();
            let path_len = len.saturating_sub(start).min(sun.sun_path.len());
            let raw: Vec<u8> = sun.sun_path[..path_len]
                .iter()
                .map(|&c| c.to_ne_bytes()[0])
                .collect();
            // Unnamed sockets have no path; abstract ones start with NUL.
            if raw.is_empty() || raw[0] == 0 {
                return Ok(Addr::Unix(None));
            }
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            Ok(Addr::Unix(Some(PathBuf::from(
                std::ffi::OsStr::from_bytes(&raw[..end]),
            ))))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unsupported socket address family",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_addresses_round_trip_through_sockaddr() {
        for a in ["127.0.0.1:80", "[::1]:65535", "10.1.2.3:0", "[fe80::1%3]:9"] {
            let addr = Addr::Inet(a.parse().unwrap());
            let (raw, len) = to_raw(&addr).unwrap();
            assert_eq!(from_raw(&raw, len).unwrap(), addr);
        }
    }

    #[test]
    fn unix_path_round_trips_and_bad_paths_are_refused() {
        let addr = Addr::Unix(Some(PathBuf::from("/tmp/x.sock")));
        let (raw, len) = to_raw(&addr).unwrap();
        assert_eq!(from_raw(&raw, len).unwrap(), addr);
        let long = Addr::Unix(Some(PathBuf::from("a".repeat(200))));
        assert_eq!(
            to_raw(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            to_raw(&Addr::Unix(None)).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn pair_carries_bytes_both_ways_and_reports_eof() {
        let (a, b) = Socket::pair().unwrap();
        assert_eq!(a.write(b"ping").unwrap(), 4);
        let mut buf = [0u8; 8];
        assert_eq!(b.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"ping");
        assert_eq!(
            b.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let n = b
            .write_vectored(&[IoSlice::new(b"po"), IoSlice::new(b"ng")])
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(a.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"pong");
        drop(b);
        assert_eq!(a.read(&mut buf).unwrap(), 0);
        // The peer is gone: EPIPE, and no SIGPIPE killing the test.
        assert_eq!(a.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn reads_into_spare_capacity_append_up_to_capacity() {
        let (a, b) = Socket::pair().unwrap();
        let data: Vec<u8> = (0..64).collect();
        a.write(&data).unwrap();
        let mut buf = Vec::with_capacity(5);
        buf.push(b'>');
        // Only the spare bytes are filled; the rest stays queued.
        let spare = buf.capacity() - 1;
        assert_eq!(b.read_into_spare(&mut buf).unwrap(), spare);
        assert_eq!((buf[0], &buf[1..]), (b'>', &data[..spare]));
        buf.clear();
        buf.reserve(64);
        assert_eq!(b.read_into_spare(&mut buf).unwrap(), 64 - spare);
        assert_eq!(buf, &data[spare..]);
        buf.clear();
        assert_eq!(
            b.read_into_spare(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn descriptors_travel_with_bytes_over_a_pair() {
        let (a, b) = Socket::pair().unwrap();
        let (x, y) = Socket::pair().unwrap();
        let n = a
            .write_vectored_with_fds(&[IoSlice::new(b"fd")], &[x.as_fd()])
            .unwrap();
        assert_eq!(n, 2);
        drop(x);
        let mut fds = Vec::new();
        let mut spare = Vec::with_capacity(8);
        assert_eq!(b.read_with_fds(&mut spare, &mut fds).unwrap(), 2);
        assert_eq!((fds.len(), &spare[..]), (1, &b"fd"[..]));
        let mut buf = [0u8; 8];
        // The received fd is the same socket: bytes written to it reach y.
        let x2 = Socket::from(fds.pop().unwrap());
        x2.write(b"hi").unwrap();
        assert_eq!(y.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"hi");
        // Scattered read across two buffers.
        a.write(b"abcdef").unwrap();
        let (mut x1, mut x2) = ([0u8; 2], [0u8; 8]);
        let n = b
            .read_vectored(&mut [
                std::io::IoSliceMut::new(&mut x1),
                std::io::IoSliceMut::new(&mut x2),
            ])
            .unwrap();
        assert_eq!((n, &x1, &x2[..4]), (6, b"ab", &b"cdef"[..]));
        // No descriptors: an ordinary read.
        a.write(b"z").unwrap();
        assert_eq!(b.read_with_fds(&mut spare, &mut fds).unwrap(), 1);
        assert!(fds.is_empty());
        assert_eq!(spare, b"fdz");
    }

    #[test]
    fn datagrams_report_truncation_and_sender() {
        let a = Socket::datagram(Domain::Ipv4).unwrap();
        a.bind(&Addr::Inet("127.0.0.1:0".parse().unwrap())).unwrap();
        let b = Socket::datagram(Domain::Ipv4).unwrap();
        b.bind(&Addr::Inet("127.0.0.1:0".parse().unwrap())).unwrap();
        let to = a.local_addr().unwrap();
        assert_eq!(b.send_to(&[7u8; 100], &to).unwrap(), 100);
        assert_eq!(b.send_to(b"hey", &to).unwrap(), 3);
        let mut small = [0u8; 10];
        let (n, from, full) = a.recv_from(&mut small).unwrap();
        assert_eq!(
            (n, full),
            (10, 100),
            "cut to the buffer, real length reported"
        );
        assert_eq!(from, b.local_addr().unwrap());
        let view = Socket::view(a.as_fd());
        let (n, _, full) = view.recv_from(&mut small).unwrap();
        assert_eq!((&small[..n], full), (&b"hey"[..], 3));
        assert_eq!(
            view.recv_from(&mut small).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn tcp_listen_connect_accept_on_loopback() {
        let l = Socket::stream(Domain::Ipv4).unwrap();
        l.set_reuse_address(true).unwrap();
        l.bind(&Addr::Inet("127.0.0.1:0".parse().unwrap())).unwrap();
        l.listen(16).unwrap();
        let addr = l.local_addr().unwrap();
        let c = Socket::stream(Domain::Ipv4).unwrap();
        let _ = c.connect(&addr).unwrap();
        // Loopback connects complete quickly; poll accept a bounded time.
        let mut accepted = None;
        for _ in 0..1000 {
            match l.accept() {
                Ok(s) => {
                    accepted = Some(s);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        let s = accepted.expect("no connection accepted within a second");
        assert!(c.take_error().unwrap().is_none());
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
        s.set_nodelay(true).unwrap();
        assert_eq!(
            s.int_option(libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap(),
            1
        );
    }
}
