//! The backend contract, written against the public selector API only, so
//! that the same tests run on epoll here and unchanged on kqueue.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use packet_sys::{Events, Interest, Selector, Trigger, Waker};

/// A hang guard only: every wait below returns at the first event.
const GUARD: Duration = Duration::from_secs(20);
/// How long a wait that must see nothing waits.
const QUIET: Duration = Duration::from_millis(100);

/// Waits until an event for `token` arrives; returns the events of that wait.
fn wait_for(sel: &Selector, events: &mut Events, token: u64) -> Vec<packet_sys::Event> {
    let start = Instant::now();
    loop {
        sel.wait(events, Some(GUARD)).unwrap();
        let mine: Vec<_> = events.iter().filter(|e| e.token() == token).collect();
        if !mine.is_empty() {
            return mine;
        }
        assert!(start.elapsed() < GUARD, "no event for token {token:#x}");
    }
}

fn tokens_of_quiet_wait(sel: &Selector, events: &mut Events) -> Vec<u64> {
    sel.wait(events, Some(QUIET)).unwrap();
    events.iter().map(|e| e.token()).collect()
}

#[test]
fn a_hang_up_is_reported_without_read_interest() {
    let sel = Selector::new().unwrap();
    let mut events = Events::with_capacity(8);
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    sel.register(a.as_fd(), 3, Interest::WRITABLE).unwrap();
    let first = wait_for(&sel, &mut events, 3);
    assert!(first.iter().any(|e| e.is_writable()), "{first:?}");
    assert!(!first.iter().any(|e| e.is_read_closed()), "{first:?}");
    drop(b);
    let closed = wait_for(&sel, &mut events, 3);
    assert!(
        closed.iter().any(|e| e.is_read_closed() || e.is_error()),
        "the peer is gone, yet only {closed:?}"
    );
}

#[test]
fn data_without_read_interest_is_not_reported() {
    let sel = Selector::new().unwrap();
    let mut events = Events::with_capacity(8);
    let (a, mut b) = UnixStream::pair().unwrap();
    sel.register(a.as_fd(), 4, Interest::WRITABLE).unwrap();
    wait_for(&sel, &mut events, 4);
    b.write_all(b"not asked for").unwrap();
    let seen: Vec<_> = {
        sel.wait(&mut events, Some(QUIET)).unwrap();
        events.iter().collect()
    };
    assert!(
        !seen.iter().any(|e| e.is_readable()),
        "readable reported without read interest: {seen:?}"
    );
}

#[test]
fn tokens_come_back_whole_with_their_generation_and_the_waker_keeps_all_ones() {
    let sel = Selector::new().unwrap();
    let mut events = Events::with_capacity(8);
    let (a, mut b) = UnixStream::pair().unwrap();
    let token = (0x0123_4567u64 << 32) | 5;
    sel.register(a.as_fd(), token, Interest::READABLE).unwrap();
    b.write_all(b"x").unwrap();
    assert!(wait_for(&sel, &mut events, token)[0].is_readable());

    // A new token for the same fd: its events carry the new one only.
    let renamed = (0x0123_4568u64 << 32) | 5;
    sel.reregister(a.as_fd(), renamed, Interest::READABLE)
        .unwrap();
    b.write_all(b"y").unwrap();
    wait_for(&sel, &mut events, renamed);
    assert!(!events.iter().any(|e| e.token() == token), "{events:?}");

    let waker = Waker::new(&sel, u64::MAX).unwrap();
    waker.wake().unwrap();
    let woke = wait_for(&sel, &mut events, u64::MAX);
    assert!(woke[0].is_readable(), "{woke:?}");
    waker.reset();
}

#[test]
fn reregistering_changes_the_triggering_both_ways() {
    let sel = Selector::new().unwrap();
    let mut events = Events::with_capacity(8);
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"pending").unwrap();

    sel.register_with(a.as_fd(), 9, Interest::READABLE, Trigger::Level)
        .unwrap();
    wait_for(&sel, &mut events, 9);
    wait_for(&sel, &mut events, 9); // level: again, nothing was read

    sel.reregister_with(a.as_fd(), 9, Interest::READABLE, Trigger::Edge)
        .unwrap();
    // Re-arming reports what is pending once, then nothing until new data.
    wait_for(&sel, &mut events, 9);
    assert!(
        !tokens_of_quiet_wait(&sel, &mut events).contains(&9),
        "still level-triggered after reregister_with(Edge)"
    );
    b.write_all(b"more").unwrap();
    wait_for(&sel, &mut events, 9);

    sel.reregister_with(a.as_fd(), 9, Interest::READABLE, Trigger::Level)
        .unwrap();
    wait_for(&sel, &mut events, 9);
    wait_for(&sel, &mut events, 9);
}

#[test]
fn regular_files_and_directories_are_refused_as_not_pollable() {
    let file = std::fs::File::open("/proc/self/status")
        .or_else(|_| std::fs::File::open(std::env::current_exe().unwrap()))
        .unwrap();
    let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
    for fd in [file.as_fd(), dir.as_fd()] {
        let e = packet_sys::check_pollable(fd).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }
    let (a, _b) = UnixStream::pair().unwrap();
    packet_sys::check_pollable(a.as_fd()).unwrap();
}
