//! Outbound buffering: the bytes a connection could not write yet.
//!
//! This module owns the per-connection queue of unwritten bytes. It never
//! touches a socket itself (the caller passes the write function), never
//! holds memory while empty (an idle connection's queue is one null
//! pointer), and never reorders bytes.
//!
//! Small writes are coalesced into the last chunk so that a burst of tiny
//! `send_data` calls becomes one `writev` piece; large writes get a chunk of
//! their own so they are copied once. The queue is flushed with vectored
//! writes of up to [`MAX_IOVECS`] pieces.
//!
//! It also keeps the total of unwritten bytes held by every queue of the
//! thread (one reactor runs on one thread): the reactor's outbound budget
//! (`Reactor::set_outbound_budget`) is checked against it. Every change of
//! a queue's length, its clearing and its drop (a connection closed,
//! lingering or not) adjust the total, so it cannot drift.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// Chunks below this capacity are grown rather than followed by a new chunk
/// when more bytes arrive: 16 KiB is the size at which one more `writev`
/// piece costs less than the copy into an existing chunk would.
const COALESCE_LIMIT: usize = 16 * 1024;

/// The first chunk's minimum capacity, so a few small writes in a row do not
/// reallocate each time.
const MIN_CHUNK: usize = 4 * 1024;

/// Pieces handed to one `writev`. Beyond 64 the syscall costs more in
/// iovec set-up than it saves; the kernel's own limit is 1024.
pub(crate) const MAX_IOVECS: usize = 64;

/// Descriptors passed with one write; more wait for the next write.
const FDS_PER_WRITE: usize = 4;

thread_local! {
    /// Unwritten bytes over every queue of this thread.
    // Clippy 1.85 (rust-version) flags this initializer although it is
    // const; later releases do not.
    #[allow(clippy::missing_const_for_thread_local)]
    static QUEUED: Cell<usize> = const { Cell::new(0) };
}

/// Unwritten bytes held in memory by every outbound queue of this thread.
pub(crate) fn queued_total() -> usize {
    QUEUED.with(Cell::get)
}

fn count(add: usize, sub: usize) {
    QUEUED.with(|q| q.set(q.get() + add - sub));
}

/// Bytes (and descriptors to pass) waiting to be written, in order.
#[derive(Default)]
pub(crate) struct OutBuf {
    queue: Option<Box<Queue>>,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of `chunks[0]` already written.
    head: usize,
    /// Unwritten bytes over all chunks.
    len: usize,
    /// Descriptors to pass (`SCM_RIGHTS`), each with the number of queued
    /// bytes ahead of it. A descriptor goes out with the first write that
    /// reaches its position (or an earlier one), so the peer holds it no
    /// later than the bytes queued after it.
    fds: VecDeque<(usize, OwnedFd)>,
    /// Files to send, each with the number of queued bytes ahead of it.
    files: VecDeque<(usize, FileSegment)>,
}

/// Part of a file waiting to be sent.
struct FileSegment {
    file: File,
    offset: u64,
    remaining: u64,
}

/// Where a flush writes: a connection's socket (or pipe).
pub(crate) trait Sink {
    /// Writes from `bufs`, passing `fds` with the first byte.
    fn write(&mut self, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize>;
    /// Writes up to `len` bytes of `file` from `offset`.
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize>;
}

/// The queue's bytes handed to a filter's consumer (TLS's record writer,
/// a user filter's encoder) instead of a socket: up to `budget` bytes, a
/// file's part read into `file_buf` first. `take` returns how much it took
/// (less when it is full). Descriptors cannot pass through a filter: a
/// queue holding one fails, rather than losing it in silence.
pub(crate) struct FilterSink<'a, T: FnMut(&[u8]) -> io::Result<usize>> {
    pub(crate) take: T,
    pub(crate) budget: usize,
    pub(crate) file_buf: &'a mut Vec<u8>,
}

impl<T: FnMut(&[u8]) -> io::Result<usize>> Sink for FilterSink<'_, T> {
    fn write(&mut self, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        if !fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "descriptors cannot be passed through a filter (TLS, say)",
            ));
        }
        let mut total = 0;
        for b in bufs {
            if self.budget == 0 {
                break;
            }
            let piece = &b[..b.len().min(self.budget)];
            let n = (self.take)(piece)?;
            total += n;
            self.budget -= n;
            if n < piece.len() {
                break;
            }
        }
        if total == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(total)
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let want = len.min(self.budget);
        if want == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.file_buf.resize(want, 0);
        let n = file.read_at(&mut self.file_buf[..want], offset)?;
        if n == 0 {
            return Ok(0);
        }
        let taken = (self.take)(&self.file_buf[..n])?;
        self.budget -= taken;
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }
}

/// Bytes of a file sent per `sendfile` call: large enough to fill a socket
/// buffer, small enough that one connection does not hog a turn.
const FILE_STEP: usize = 1024 * 1024;

impl OutBuf {
    /// Unwritten bytes held in memory (files waiting to be sent are not
    /// counted: they take no memory).
    pub(crate) fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len)
    }

    /// Whether a file waits to be sent.
    pub(crate) fn holds_files(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| !q.files.is_empty())
    }

    /// Whether nothing (no bytes, file or descriptor) is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_none()
    }

    fn queue(&mut self) -> &mut Queue {
        self.queue.get_or_insert_with(Box::default)
    }

    /// Appends `data` after everything already queued.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        count(data.len(), 0);
        let q = self.queue();
        q.len += data.len();
        if let Some(last) = q.chunks.back_mut() {
            if last.len() < COALESCE_LIMIT
                && last.len() + data.len() <= COALESCE_LIMIT.max(last.capacity())
            {
                last.extend_from_slice(data);
                return;
            }
        }
        let mut chunk = Vec::with_capacity(data.len().max(MIN_CHUNK));
        chunk.extend_from_slice(data);
        q.chunks.push_back(chunk);
    }

    /// Queues `fd` to be passed along with the bytes pushed after it (at
    /// least one byte must follow: a descriptor cannot travel alone).
    pub(crate) fn push_fd(&mut self, fd: OwnedFd) {
        let q = self.queue();
        q.fds.push_back((q.len, fd));
    }

    /// Queues `len` bytes of `file` from `offset`, to be sent after the
    /// bytes queued so far and before those queued later, without reading
    /// them into memory (`sendfile`).
    pub(crate) fn push_file(&mut self, file: File, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let q = self.queue();
        q.files.push_back((
            q.len,
            FileSegment {
                file,
                offset,
                remaining: len,
            },
        ));
    }

    /// Writes as much as `sink` takes — bytes in vectored calls, files with
    /// `sendfile` — until the queue is empty, the sink takes less than it
    /// was offered (the socket's buffer is full: trying again would only
    /// cost an `EAGAIN`), or it fails. Returns the bytes written; a
    /// `WouldBlock` after some progress is reported as `Ok` with that
    /// progress, and the queue keeps the rest.
    pub(crate) fn flush(&mut self, sink: &mut impl Sink) -> io::Result<usize> {
        let mut total = 0;
        while let Some(q) = self
            .queue
            .as_mut()
            .filter(|q| q.len > 0 || !q.files.is_empty())
        {
            // Bytes queued ahead of the next file go first, and only those.
            let limit = q.files.front().map_or(usize::MAX, |(at, _)| *at);
            let step = if limit == 0 {
                let (_, seg) = q.files.front_mut().expect("limit 0 means a file is first");
                let want = seg.remaining.min(FILE_STEP as u64) as usize;
                match sink.send_file(&seg.file, seg.offset, want) {
                    // The file ended early (truncated meanwhile): what is
                    // left of it is gone; the bytes after it still go.
                    Ok(0) => {
                        q.files.pop_front();
                        continue;
                    }
                    Ok(n) => {
                        seg.offset += n as u64;
                        seg.remaining -= n as u64;
                        if seg.remaining == 0 {
                            q.files.pop_front();
                        }
                        Ok((n, want))
                    }
                    Err(e) => Err(e),
                }
            } else {
                let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                let mut offered = 0;
                for (i, chunk) in q.chunks.iter().take(MAX_IOVECS).enumerate() {
                    let piece = if i == 0 { &chunk[q.head..] } else { &chunk[..] };
                    let piece = &piece[..piece.len().min(limit - offered)];
                    iov[i] = IoSlice::new(piece);
                    offered += piece.len();
                    count += 1;
                    if offered == limit {
                        break;
                    }
                }
                let mut fds = [None; FDS_PER_WRITE];
                let mut nfds = 0;
                for (slot, (at, fd)) in fds.iter_mut().zip(q.fds.iter()) {
                    if *at >= offered {
                        break;
                    }
                    *slot = Some(fd.as_fd());
                    nfds += 1;
                }
                let fds: Vec<BorrowedFd<'_>> = fds[..nfds].iter().flatten().copied().collect();
                match sink.write(&iov[..count], &fds) {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket accepted no bytes",
                    )),
                    Ok(n) => {
                        drop(fds);
                        // Sent descriptors leave the queue; the rest, and
                        // the files, move closer.
                        // pop_front, not drain(..nfds): VecDeque's Drain
                        // links 1 KB of drop code for a handful of fds.
                        for _ in 0..nfds {
                            q.fds.pop_front();
                        }
                        for (at, _) in q.fds.iter_mut() {
                            *at = at.saturating_sub(n);
                        }
                        for (at, _) in q.files.iter_mut() {
                            *at = at.saturating_sub(n);
                        }
                        self.consume(n);
                        Ok((n, offered))
                    }
                    Err(e) => Err(e),
                }
            };
            match step {
                Ok((n, offered)) => {
                    total += n;
                    if n < offered {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => break,
                Err(e) => return Err(e),
            }
            self.release_if_empty();
        }
        self.release_if_empty();
        Ok(total)
    }

    fn release_if_empty(&mut self) {
        if self
            .queue
            .as_ref()
            .is_some_and(|q| q.chunks.is_empty() && q.fds.is_empty() && q.files.is_empty())
        {
            // Release everything after a burst: an idle connection keeps no
            // buffer memory.
            self.queue = None;
        }
    }

    /// Drops the first `n` queued bytes (they were written).
    fn consume(&mut self, mut n: usize) {
        let Some(q) = self.queue.as_mut() else { return };
        count(0, n.min(q.len));
        q.len -= n.min(q.len);
        while n > 0 {
            let Some(front) = q.chunks.front() else { break };
            let left = front.len() - q.head;
            if n < left {
                q.head += n;
                return;
            }
            n -= left;
            q.head = 0;
            q.chunks.pop_front();
        }
        self.release_if_empty();
    }

    /// Forgets every queued byte, file and descriptor.
    pub(crate) fn clear(&mut self) {
        count(0, self.len());
        self.queue = None;
    }
}

impl Drop for OutBuf {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink made of a write closure; files are read and written through
    /// it too.
    struct F<W>(W);

    impl<W: FnMut(&[IoSlice<'_>], &[BorrowedFd<'_>]) -> io::Result<usize>> Sink for F<W> {
        fn write(&mut self, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
            (self.0)(bufs, fds)
        }
        fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; len];
            let n = file.read_at(&mut buf, offset)?;
            (self.0)(&[IoSlice::new(&buf[..n])], &[])
        }
    }

    /// A sink that takes at most `limit` bytes per call, then blocks after
    /// `calls` calls.
    struct Limited {
        out: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl Limited {
        fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.limit - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.limit {
                    break;
                }
            }
            Ok(n)
        }
    }

    #[test]
    fn small_writes_coalesce_into_one_piece() {
        let mut b = OutBuf::default();
        for i in 0..100u8 {
            b.push(&[i; 10]);
        }
        assert_eq!(b.len(), 1000);
        assert_eq!(b.queue.as_ref().unwrap().chunks.len(), 1);
        let mut pieces = 0;
        let n = b
            .flush(&mut F(|iov: &[IoSlice<'_>], _: &[BorrowedFd<'_>]| {
                pieces = iov.len();
                Ok(iov.iter().map(|s| s.len()).sum())
            }))
            .unwrap();
        assert_eq!((n, pieces), (1000, 1));
        assert!(b.is_empty());
    }

    #[test]
    fn partial_writes_keep_order_and_release_memory_when_drained() {
        let mut b = OutBuf::default();
        let mut expect = Vec::new();
        for i in 0..50u32 {
            let piece: Vec<u8> = (0..(i * 997 % 40_000)).map(|x| (x + i) as u8).collect();
            expect.extend_from_slice(&piece);
            b.push(&piece);
        }
        assert_eq!(b.len(), expect.len());
        let mut sink = Limited {
            out: Vec::new(),
            limit: 3001,
            calls: usize::MAX,
        };
        // Each short write means "full": one call per flush.
        let n = b
            .flush(&mut F(|iov: &[IoSlice<'_>], _: &[BorrowedFd<'_>]| {
                sink.write(iov)
            }))
            .unwrap();
        assert_eq!(n, 3001);
        assert_eq!(b.len(), expect.len() - n);
        while !b.is_empty() {
            b.flush(&mut F(|iov: &[IoSlice<'_>], _: &[BorrowedFd<'_>]| {
                sink.write(iov)
            }))
            .unwrap();
        }
        assert_eq!(sink.out, expect);
        assert!(b.is_empty() && b.queue.is_none());
    }

    #[test]
    fn descriptors_go_with_the_write_that_reaches_their_position() {
        let mut b = OutBuf::default();
        b.push(&[1; 100]);
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        b.push_fd(OwnedFd::from(x));
        b.push(&[2; 100]);
        let mut seen = Vec::new();
        // The first write is offered all 200 bytes, which reach position
        // 100: the descriptor goes with it even though only 50 bytes are
        // taken (the peer gets it early, never late).
        let n = b
            .flush(&mut F(|iov: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]| {
                seen.push(fds.len());
                Ok(iov.iter().map(|s| s.len()).sum::<usize>().min(50))
            }))
            .unwrap();
        assert_eq!(n, 50);
        assert_eq!(seen, vec![1]);
        seen.clear();
        b.flush(&mut F(|iov: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]| {
            seen.push(fds.len());
            Ok(iov.iter().map(|s| s.len()).sum())
        }))
        .unwrap();
        assert_eq!(seen, vec![0], "already sent");
        assert!(b.is_empty());
    }

    #[test]
    fn files_go_between_the_bytes_around_them_in_order() {
        let path = std::env::temp_dir().join(format!("packet-buffer-{}.bin", std::process::id()));
        let content: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mut b = OutBuf::default();
        b.push(b"head:");
        b.push_file(File::open(&path).unwrap(), 10, 40_000);
        b.push(b":tail");
        assert_eq!(b.len(), 10, "file bytes take no memory");
        let mut out = Vec::new();
        // A sink that takes at most 7000 bytes per call.
        while !b.is_empty() {
            b.flush(&mut F(|iov: &[IoSlice<'_>], _: &[BorrowedFd<'_>]| {
                let mut n = 0;
                for s in iov {
                    let take = s.len().min(7000 - n);
                    out.extend_from_slice(&s[..take]);
                    n += take;
                }
                Ok(n)
            }))
            .unwrap();
        }
        let _ = std::fs::remove_file(&path);
        let expect = [&b"head:"[..], &content[10..40_010], b":tail"].concat();
        assert!(out == expect);
        assert!(b.queue.is_none());
    }

    #[test]
    fn would_block_without_progress_is_an_error_and_keeps_data() {
        let mut b = OutBuf::default();
        b.push(b"abc");
        let e = b
            .flush(&mut F(|_: &[IoSlice<'_>], _: &[BorrowedFd<'_>]| {
                Err(io::ErrorKind::WouldBlock.into())
            }))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(b.len(), 3);
    }
}
