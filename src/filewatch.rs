//! Watching files for changes: EventMachine's `watch_file` with
//! `file_modified`, `file_moved` and `file_deleted`.
//!
//! This module owns file watches: one descriptor per watched path (an
//! inotify instance on Linux; on the BSDs and macOS a kqueue of its own
//! watching `EVFILT_VNODE` on the file, opened for that), watched by the
//! reactor like any other descriptor (see [`crate::watch`]), its events
//! decoded by `packet-sys` and handed to a [`FileWatcher`]. It never reads
//! or writes the watched file.
//!
//! ```
//! use packet::filewatch::{FileWatch, FileWatcher};
//! use packet::Reactor;
//!
//! struct Tail;
//! impl FileWatcher for Tail {
//!     fn file_modified(&mut self, w: &mut FileWatch<'_>) {
//!         w.reactor().stop();
//!     }
//! }
//!
//! let path = std::env::temp_dir().join(format!("packet-doc-{}.log", std::process::id()));
//! std::fs::write(&path, b"")?;
//! let p = path.clone();
//! Reactor::run(move |r| {
//!     r.watches().watch_file(&p, Tail)?;
//!     std::fs::write(&p, b"a line\n")?; // the change is seen on the first turn
//!     Ok(())
//! })?;
//! std::fs::remove_file(&path)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use packet_sys::{filewatch, FileEvent, PathWatch};

use crate::reactor::Reactor;
use crate::watch::{Watch, WatchId, Watcher, Watches};

/// Identifies a file watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileWatchId(WatchId);

/// Callbacks of a file watch; all optional.
pub trait FileWatcher: 'static {
    /// The file's contents changed.
    fn file_modified(&mut self, w: &mut FileWatch<'_>) {
        let _ = w;
    }

    /// The file was renamed or moved (the watch follows it).
    fn file_moved(&mut self, w: &mut FileWatch<'_>) {
        let _ = w;
    }

    /// The file was deleted; the watch ends after this.
    fn file_deleted(&mut self, w: &mut FileWatch<'_>) {
        let _ = w;
    }

    /// The watch ended: the file was deleted, `unwatch_file` was called, or
    /// the reactor stopped.
    fn unbind(&mut self, w: &mut FileWatch<'_>) {
        let _ = w;
    }
}

/// The file watch whose callback is running, with the reactor.
pub struct FileWatch<'a> {
    w: &'a mut Watch<'a>,
    path: &'a Path,
}

impl FileWatch<'_> {
    /// The watched path, as given.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// This watch's id.
    pub fn id(&self) -> FileWatchId {
        FileWatchId(self.w.id())
    }

    /// The reactor.
    pub fn reactor(&mut self) -> &mut Reactor {
        self.w.reactor()
    }

    /// Ends the watch after this callback; `unbind` follows.
    pub fn stop_watching(&mut self) {
        let id = self.id();
        self.w.reactor().watches().unwatch_file(id);
    }
}

struct FileWatchHandler {
    watcher: Box<dyn FileWatcher>,
    path: PathBuf,
    events: Vec<FileEvent>,
    /// The file's descriptor where the watch lives on it (kqueue).
    _file: Option<OwnedFd>,
}

impl FileWatchHandler {
    fn call(
        &mut self,
        w: &mut Watch<'_>,
        f: impl FnOnce(&mut dyn FileWatcher, &mut FileWatch<'_>),
    ) {
        let mut inner = w.reborrow();
        f(
            self.watcher.as_mut(),
            &mut FileWatch {
                w: &mut inner,
                path: &self.path,
            },
        );
    }
}

impl Watcher for FileWatchHandler {
    fn notify_readable(&mut self, w: &mut Watch<'_>) {
        let Some(fd) = w.fd() else { return };
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let _ = filewatch::read_events(fd, &mut events);
        for &event in &events {
            match event {
                FileEvent::Modified => self.call(w, |h, fw| h.file_modified(fw)),
                FileEvent::Moved => self.call(w, |h, fw| h.file_moved(fw)),
                FileEvent::Deleted => self.call(w, |h, fw| h.file_deleted(fw)),
                FileEvent::Attributes => {}
                FileEvent::Ended => {
                    if let Ok(fd) = w.detach() {
                        drop(fd);
                    }
                    break;
                }
            }
            if w.fd().is_none() {
                break;
            }
        }
        self.events = events;
    }

    fn unbind(&mut self, w: &mut Watch<'_>) {
        self.call(w, |h, fw| h.unbind(fw));
    }
}

impl Watches<'_> {
    /// Watches the file at `path` for changes (EventMachine's
    /// `watch_file`).
    ///
    /// # Errors
    /// The path does not exist or cannot be opened (BSD); the user's
    /// inotify watch limit is reached (Linux).
    pub fn watch_file(
        &mut self,
        path: impl AsRef<Path>,
        watcher: impl FileWatcher,
    ) -> io::Result<FileWatchId> {
        let path = path.as_ref().to_path_buf();
        let PathWatch { events, file } = filewatch::watch_path(&path)?;
        let handler = FileWatchHandler {
            watcher: Box::new(watcher),
            path,
            events: Vec::new(),
            _file: file,
        };
        Ok(FileWatchId(self.watch(events, handler, true, false)?))
    }

    /// Ends file watch `id`; its `unbind` follows.
    pub fn unwatch_file(&mut self, id: FileWatchId) {
        if let Ok(fd) = self.detach(id.0) {
            drop(fd);
        }
    }
}
