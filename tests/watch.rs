//! Watched descriptors: level-triggered notifications, toggling, detach.

mod util;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use packet::watch::{Watch, Watcher};
use packet::Reactor;

/// Reads one byte per notification (on purpose less than is there), and
/// records what it saw and when it was unbound.
struct Slow {
    stream: UnixStream,
    log: Rc<RefCell<Vec<String>>>,
}

impl Watcher for Slow {
    fn notify_readable(&mut self, w: &mut Watch<'_>) {
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(1) => {
                self.log.borrow_mut().push((b[0] as char).to_string());
                if b[0] == b'!' {
                    // Hand the descriptor back; unbind follows.
                    let fd = w.detach().unwrap();
                    self.log
                        .borrow_mut()
                        .push(format!("detached {}", w.fd().is_none()));
                    drop(fd);
                    w.reactor().stop();
                }
            }
            other => self.log.borrow_mut().push(format!("read {other:?}")),
        }
    }
    fn unbind(&mut self, _w: &mut Watch<'_>) {
        self.log.borrow_mut().push("unbind".into());
    }
}

#[test]
fn level_triggered_reads_partial_input_on_later_turns_then_detaches() {
    let (mut a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let fd: OwnedFd = b.try_clone().unwrap().into();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    Reactor::run(move |r| {
        r.watches()
            .watch(fd, Slow { stream: b, log: l }, true, false)?;
        // Four bytes in one write: an edge-triggered watch would hear of
        // them once; a level-triggered one until all are read.
        a.write_all(b"abc!")?;
        Ok(())
    })
    .unwrap();
    assert_eq!(
        *log.borrow(),
        ["a", "b", "c", "!", "detached true", "unbind"]
    );
}

/// Writes a fixed number of chunks when writable, then turns writable
/// notification off.
struct Writer {
    stream: UnixStream,
    left: usize,
    log: Rc<RefCell<Vec<String>>>,
}

impl Watcher for Writer {
    fn notify_writable(&mut self, w: &mut Watch<'_>) {
        self.stream.write_all(b"x").unwrap();
        self.left -= 1;
        if self.left == 0 {
            w.set_notify_writable(false).unwrap();
            self.log.borrow_mut().push("off".into());
            let id = w.id();
            // Nothing more may arrive: stop on the next turn.
            w.reactor()
                .add_timer(std::time::Duration::from_millis(20), move |r| {
                    assert!(r.watches().detach(id).is_ok());
                    r.stop();
                });
        }
    }
    fn unbind(&mut self, _w: &mut Watch<'_>) {
        self.log.borrow_mut().push("unbind".into());
    }
}

#[test]
fn writable_notifications_stop_when_turned_off() {
    let (mut a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let fd: OwnedFd = b.try_clone().unwrap().into();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    Reactor::run(move |r| {
        r.watches().watch(
            fd,
            Writer {
                stream: b,
                left: 5,
                log: l,
            },
            false,
            true,
        )?;
        Ok(())
    })
    .unwrap();
    let mut got = [0u8; 8];
    a.set_nonblocking(true).unwrap();
    let n = a.read(&mut got).unwrap();
    assert_eq!(&got[..n], b"xxxxx", "exactly five notifications");
    assert_eq!(*log.borrow(), ["off", "unbind"]);
}

#[test]
fn watches_end_with_the_reactor_and_regular_files_are_refused() {
    let (_a, b) = UnixStream::pair().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    Reactor::run(move |r| {
        let file: OwnedFd = std::fs::File::open("/proc/self/status")?.into();
        let e = r
            .watches()
            .watch(
                file,
                Slow {
                    stream: b.try_clone()?,
                    log: l.clone(),
                },
                true,
                false,
            )
            .unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(1),
            "epoll refuses regular files with EPERM"
        );
        r.watches().watch(
            b.into(),
            Slow {
                stream: UnixStream::pair()?.0,
                log: l,
            },
            true,
            false,
        )?;
        r.add_timer(std::time::Duration::from_millis(10), |r| r.stop());
        Ok(())
    })
    .unwrap();
    assert_eq!(*log.borrow(), ["unbind"]);
}
