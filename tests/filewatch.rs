//! File watches: modified, moved, deleted, and the end of the watch.

mod util;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use packet::filewatch::{FileWatch, FileWatcher};
use packet::Reactor;

struct Log(Rc<RefCell<Vec<String>>>);

impl FileWatcher for Log {
    fn file_modified(&mut self, _w: &mut FileWatch<'_>) {
        self.0.borrow_mut().push("modified".into());
    }
    fn file_moved(&mut self, _w: &mut FileWatch<'_>) {
        self.0.borrow_mut().push("moved".into());
    }
    fn file_deleted(&mut self, _w: &mut FileWatch<'_>) {
        self.0.borrow_mut().push("deleted".into());
    }
    fn unbind(&mut self, w: &mut FileWatch<'_>) {
        self.0.borrow_mut().push("unbind".into());
        w.reactor().stop();
    }
}

#[test]
fn modified_moved_deleted_then_unbound() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("packet-filewatch-{}.txt", std::process::id()));
    let moved = dir.join(format!("packet-filewatch-{}-moved.txt", std::process::id()));
    std::fs::write(&path, b"start\n").unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let (p, m) = (path.clone(), moved.clone());
    Reactor::run(move |r| {
        r.watches().watch_file(&p, Log(l))?;
        // One change per turn, so each is its own event batch: each timer
        // is set by the one before, so however late they fire, the loop
        // reads the kernel's events of one change before the next.
        let step = Duration::from_millis(20);
        r.add_timer(step, move |r| {
            std::fs::write(&p, b"more\n").unwrap();
            r.add_timer(step, move |r| {
                std::fs::rename(&p, &m).unwrap();
                r.add_timer(step, move |_| std::fs::remove_file(&m).unwrap());
            });
        });
        // A bound, in case the watch never ends.
        r.add_timer(util::IO_TIMEOUT, |r| r.stop());
        Ok(())
    })
    .unwrap();
    let log = log.borrow();
    // A write may be seen as one or several modifications.
    let mut seen: Vec<&str> = log.iter().map(String::as_str).collect();
    seen.dedup();
    assert_eq!(seen, ["modified", "moved", "deleted", "unbind"]);
}

#[test]
fn a_missing_file_is_an_error_and_unwatch_ends_the_watch() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let path = std::env::temp_dir().join(format!("packet-filewatch-{}-2.txt", std::process::id()));
    std::fs::write(&path, b"x").unwrap();
    let p = path.clone();
    Reactor::run(move |r| {
        let missing = r
            .watches()
            .watch_file("/nonexistent/packet/file", Log(l.clone()))
            .unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        let id = r.watches().watch_file(&p, Log(l))?;
        r.watches().unwatch_file(id);
        r.add_timer(util::IO_TIMEOUT, |r| r.stop());
        Ok(())
    })
    .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(*log.borrow(), ["unbind"]);
}
