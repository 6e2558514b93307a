//! The fork server and the worker processes it forks.
//!
//! [`start`] forks the fork server from the still single-threaded master.
//! The fork server is a small blocking loop — `poll` on its link to the
//! master and on one pidfd per child — that forks a worker for each
//! `Start` request, sends the master's end of the worker's socketpair back
//! over the link, reaps children as they exit and reports each exit. When
//! the link closes (the master stopped or died) it waits a grace period for
//! its workers to exit, kills what is left, reaps everything and exits, so
//! no orphan or zombie outlives the master.
//!
//! A worker process is a fork of the fork server: single-threaded, with a
//! fresh reactor of its own. It closes the fork server's descriptors first
//! and runs until its channel to the master closes.
//!
//! A fork server that dies is replaced by [`respawn`]: the master, maybe
//! multi-threaded by then, cannot fork a copy of itself, so it starts its
//! own executable again (fork + exec, which is safe in any process) with
//! [`FORK_SERVER_ENV`] naming the inherited link; the program's
//! `WorkerRegistry::start` at the top of `main` sees it and becomes the
//! fork server instead of returning (CPython's forkserver, Chromium's
//! zygote).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use packet_sys::process::{self, Fork, PollFd};
use packet_sys::Socket;

use super::wire::{Envelope, MAX_MESSAGE};
use super::{Worker, WorkerContext, WorkerId, WorkerMessage, WorkerRegistry, Workers};
use crate::codec::{FrameDecoder, HeaderFormat};
use crate::connection::{CloseReason, Connection, Handler};
use crate::log::log_line;
use crate::reactor::Reactor;

/// How long the fork server lets its workers finish once the master is gone
/// before it kills them.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How often a fork server that is a subreaper looks for orphans to reap.
const ORPHAN_POLL: Duration = Duration::from_secs(1);

/// Set in the environment of a fork server started by [`respawn`]: the
/// number of its inherited link, a comma, and the master's pid.
const FORK_SERVER_ENV: &str = "PACKET_FORK_SERVER";

/// Forks the fork server and returns the master's side of the link; or,
/// in a program started by [`respawn`], runs the fork server and never
/// returns.
pub(super) fn start(registry: WorkerRegistry) -> io::Result<Workers> {
    if let Some(value) = std::env::var_os(FORK_SERVER_ENV) {
        // Not for the workers' own children, should they run programs.
        std::env::remove_var(FORK_SERVER_ENV);
        serve_respawned(registry, &value.to_string_lossy());
    }
    let (master_end, server_end) = Socket::pair()?;
    let master = process::getpid();
    match process::fork_single_threaded()? {
        Fork::Child => {
            become_helper_of(master);
            drop(master_end);
            // Whatever the master had open (listeners, files, other
            // workers' links) must not live on in the fork server and the
            // workers it forks.
            let keep = [std::os::fd::AsRawFd::as_raw_fd(&server_end)];
            process::run_clean_child(&keep, move || serve(server_end, factories(registry)))
        }
        Fork::Parent(pid) => {
            drop(server_end);
            let specs = registry
                .specs
                .into_iter()
                .map(|s| (s.name, s.config))
                .collect();
            Ok(Workers {
                link: Some(master_end.into()),
                fork_server: pid,
                specs,
                log_worker: registry.log_worker,
            })
        }
    }
}

/// This program was started by [`respawn`] to be a fork server: become
/// one, on the link named by `value` ([`FORK_SERVER_ENV`]).
fn serve_respawned(registry: WorkerRegistry, value: &str) -> ! {
    let parsed = value
        .split_once(',')
        .and_then(|(fd, master)| Some((fd.parse().ok()?, master.parse().ok()?)));
    let Some((fd, master)) = parsed else {
        log_line!("[workers] malformed {FORK_SERVER_ENV}={value:?}; exiting");
        process::exit_immediately(2)
    };
    become_helper_of(master);
    // Started from /proc/self/exe: named after the program, not `exe`.
    if let Some(name) = std::env::args_os().next() {
        let name = std::path::Path::new(&name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = process::set_process_name(&name);
    }
    let link = match process::take_inherited_fd(fd) {
        Ok(fd) => Socket::from(fd),
        Err(e) => {
            log_line!("[workers] the fork server's link {fd} is not open: {e}");
            process::exit_immediately(2)
        }
    };
    let keep = [std::os::fd::AsRawFd::as_raw_fd(&link)];
    process::run_clean_child(&keep, move || serve(link, factories(registry)))
}

fn factories(registry: WorkerRegistry) -> Vec<(String, super::WorkerFactory)> {
    registry
        .specs
        .into_iter()
        .map(|s| (s.name, s.factory))
        .collect()
}

/// Starts a new fork server for a master that may run many threads: this
/// program's own executable again, told by [`FORK_SERVER_ENV`] to become
/// a fork server in `WorkerRegistry::start`. Returns the master's side of
/// its link and its pid.
pub(super) fn respawn() -> io::Result<(OwnedFd, i32)> {
    let (master_end, server_end) = Socket::pair()?;
    // /proc/self/exe is the running binary even if its path was replaced
    // or removed since it started.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let exe = std::ffi::OsString::from("/proc/self/exe");
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let exe = std::env::current_exe()?.into_os_string();
    // The same arguments, so that whatever `main` does with them before
    // `start` goes the same way; argv[0] too, which `ps` shows.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv = if argv.is_empty() {
        vec![exe.clone()]
    } else {
        argv
    };
    let value = format!(
        "{},{}",
        std::os::fd::AsRawFd::as_raw_fd(&server_end),
        process::getpid()
    );
    let options = process::SpawnOptions::new()
        .program(exe)
        .env(FORK_SERVER_ENV, value)
        .pass_fd(server_end.as_fd());
    let pid = process::spawn(&argv, &options)?;
    Ok((master_end.into(), pid))
}

struct Child {
    pid: i32,
    /// An exit descriptor (`pidfd`); `None` where none could be had: then
    /// the loop polls with a timeout and reaps by `waitpid`.
    pidfd: Option<OwnedFd>,
}

/// A start request, copied out of the frame it came in.
struct StartRequest {
    seq: u64,
    id: WorkerId,
    log_file: Option<String>,
    options: Vec<u8>,
}

/// The first thing a fork server or a worker does after its fork: signals
/// sent to the whole process group (Ctrl-C, `timeout`, systemd stopping a
/// unit) are ignored, because the master stops everything in order when it
/// gets them; and the process dies with `parent` rather than outlive it as
/// an orphan (`process::die_with_parent`: `PR_SET_PDEATHSIG` on Linux,
/// `PROC_PDEATHSIG_CTL` on FreeBSD, the parent's `NOTE_EXIT` elsewhere).
fn become_helper_of(parent: i32) {
    if process::ignore_group_signals().is_err() {
        process::exit_immediately(1);
    }
    if !process::die_with_parent(parent).unwrap_or(true) {
        // The parent died before it could be watched.
        process::exit_immediately(0);
    }
}

fn serve(link: Socket, factories: Vec<(String, super::WorkerFactory)>) -> ! {
    // Blocking: this process has nothing else to do while a write waits,
    // and reads only follow a poll that found input.
    if link.set_nonblocking(false).is_err() {
        process::exit_immediately(1);
    }
    // A process a worker starts and leaves behind when it dies is
    // re-parented here, not to PID 1, and reaped below: nothing of the
    // worker system is left as a zombie for the life of a PID-1 master.
    let subreaper = process::set_child_subreaper().unwrap_or(false);
    let mut children: Vec<Child> = Vec::new();
    let mut decoder = FrameDecoder::new(HeaderFormat::Compact).with_max_frame_len(MAX_MESSAGE);
    let mut buf = vec![0u8; 64 * 1024];
    let mut link_open = true;
    let mut give_up_at: Option<Instant> = None;
    let me = process::getpid();
    loop {
        if !link_open && children.is_empty() {
            process::exit_immediately(0);
        }
        let needs_timer = children.iter().any(|c| c.pidfd.is_none()) || give_up_at.is_some();
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(children.len() + 1);
        if link_open {
            fds.push(PollFd::readable(link.as_fd()));
        }
        for c in children.iter().filter_map(|c| c.pidfd.as_ref()) {
            fds.push(PollFd::readable(c.as_fd()));
        }
        // Orphans have no pidfd: a subreaper looks for them every second.
        let timeout = if needs_timer {
            Some(Duration::from_millis(100))
        } else {
            subreaper.then_some(ORPHAN_POLL)
        };
        let link_ready = match process::poll(&mut fds, timeout) {
            Ok(_) => link_open && fds[0].is_ready(),
            Err(_) => false,
        };
        drop(fds);

        // Reap whatever exited — workers, and orphans re-parented here —
        // and tell the master how each worker ended.
        loop {
            let (pid, status) = match process::try_wait(None) {
                Ok(Some(reaped)) => reaped,
                Ok(None) => break,
                // No child at all: none of the list is ours any more.
                Err(_) => {
                    children.clear();
                    break;
                }
            };
            let Some(at) = children.iter().position(|c| c.pid == pid) else {
                continue; // an orphan: nobody to tell
            };
            children.swap_remove(at);
            if link_open {
                let status = match status {
                    process::ExitStatus::Code(c) => i64::from(c),
                    process::ExitStatus::Signal(s) => -i64::from(s),
                };
                let mut out = Vec::new();
                Envelope::Exited {
                    pid: pid as u32,
                    status,
                }
                .encode(&mut out);
                let _ = write_all(&link, &out, None);
            }
        }

        if let Some(at) = give_up_at {
            if Instant::now() >= at {
                for c in &children {
                    let _ = process::kill(c.pid, libc_sigkill());
                }
            }
        }
        if !link_ready {
            continue;
        }

        let n = match link.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            link_open = false;
            give_up_at = Some(Instant::now() + EXIT_GRACE);
            continue;
        }
        let mut requests = Vec::new();
        let decoded = decoder.decode(&buf[..n], |frame| {
            if let Ok(Envelope::Start {
                seq,
                name,
                key,
                log_file,
                options,
            }) = Envelope::decode(frame)
            {
                requests.push(StartRequest {
                    seq,
                    id: WorkerId {
                        name: name.to_string(),
                        key: key.map(str::to_string),
                    },
                    log_file: log_file.map(str::to_string),
                    options: options.to_vec(),
                });
            }
        });
        if decoded.is_err() {
            // The master speaks garbage: nothing sensible is left to do.
            link_open = false;
            give_up_at = Some(Instant::now() + EXIT_GRACE);
            continue;
        }
        for req in requests {
            let Some((_, factory)) = factories.iter().find(|(n, _)| *n == req.id.name) else {
                let error = format!("no worker named {:?} is registered", req.id.name);
                reply(
                    &link,
                    Envelope::StartFailed {
                        seq: req.seq,
                        error: &error,
                    },
                    None,
                );
                continue;
            };
            let (master_end, worker_end) = match Socket::pair() {
                Ok(p) => p,
                Err(e) => {
                    reply(
                        &link,
                        Envelope::StartFailed {
                            seq: req.seq,
                            error: &e.to_string(),
                        },
                        None,
                    );
                    continue;
                }
            };
            match process::fork_single_threaded() {
                Ok(Fork::Child) => {
                    become_helper_of(me);
                    // Nothing of the fork server's may stay open here.
                    drop(link);
                    drop(children);
                    drop(master_end);
                    run_worker(factory(), req, worker_end)
                }
                Ok(Fork::Parent(pid)) => {
                    drop(worker_end);
                    let pidfd = pidfd(pid);
                    children.push(Child { pid, pidfd });
                    reply(
                        &link,
                        Envelope::Started {
                            seq: req.seq,
                            pid: pid as u32,
                        },
                        Some(master_end),
                    );
                }
                Err(e) => reply(
                    &link,
                    Envelope::StartFailed {
                        seq: req.seq,
                        error: &e.to_string(),
                    },
                    None,
                ),
            }
        }
    }
}

/// A descriptor readable once child `pid` exits: a pidfd on Linux, a
/// kqueue watching `EVFILT_PROC`/`NOTE_EXIT` on the BSDs and macOS
/// (`process::exit_watch`), so the loop sleeps in `poll` instead of waking
/// every 100 ms to try `waitpid`. `None` (a kernel without pidfds, or a
/// child already gone, which macOS's kqueue refuses with `ESRCH`) falls
/// back to that polling, which reaps it on the next tick.
fn pidfd(pid: i32) -> Option<OwnedFd> {
    process::exit_watch(pid).ok()
}

fn libc_sigkill() -> i32 {
    9
}

fn reply(link: &Socket, env: Envelope<'_>, fd: Option<Socket>) {
    let mut out = Vec::new();
    env.encode(&mut out);
    let _ = write_all(link, &out, fd.as_ref());
    // The fd was duplicated into the master by the kernel; ours closes here.
}

/// Writes all of `bytes` on the blocking link, passing `fd` with the first
/// byte.
fn write_all(link: &Socket, mut bytes: &[u8], fd: Option<&Socket>) -> io::Result<()> {
    let mut fd = fd.map(|s| s.as_fd());
    while !bytes.is_empty() {
        let fds: Vec<_> = fd.take().into_iter().collect();
        let n = link.write_vectored_with_fds(&[IoSlice::new(bytes)], &fds)?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Who a worker process is.
pub(crate) struct WorkerInfo {
    pub(crate) id: WorkerId,
    pub(crate) options: Vec<u8>,
}

/// Runs one worker process to the end.
fn run_worker(worker: Box<dyn Worker>, req: StartRequest, channel: Socket) -> ! {
    if let Some(path) = &req.log_file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => {
                let _ = process::redirect_stdout_stderr(file.as_fd());
            }
            Err(e) => log_line!("worker {}: cannot open log file {path}: {e}", req.id),
        }
    }
    let info = WorkerInfo {
        id: req.id,
        options: req.options,
    };
    let code = match Reactor::new() {
        Ok(mut reactor) => {
            let side = WorkerSide {
                worker,
                info,
                decoder: FrameDecoder::new(HeaderFormat::Compact).with_max_frame_len(MAX_MESSAGE),
                fds: VecDeque::new(),
                next_ask: 0,
            };
            match reactor.extensions().attach_channel(channel.into(), side) {
                Ok(id) => {
                    if let Some(mut c) = reactor.connection(id) {
                        c.set_high_water_mark(super::WORKER_CHANNEL_HIGH_WATER);
                    }
                    match reactor.run_until_stopped() {
                        Ok(()) => 0,
                        Err(_) => 1,
                    }
                }
                Err(_) => 1,
            }
        }
        Err(_) => 1,
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    process::exit_immediately(code)
}

/// The worker process's end of its channel: decodes the master's messages
/// and calls the [`Worker`].
struct WorkerSide {
    worker: Box<dyn Worker>,
    info: WorkerInfo,
    decoder: FrameDecoder,
    /// Descriptors received and not yet matched with their `Fd` message.
    fds: VecDeque<OwnedFd>,
    next_ask: u64,
}

impl WorkerSide {
    fn ctx<'a, 'r>(
        conn: &'a mut Connection<'r>,
        info: &'a WorkerInfo,
        request: Option<u64>,
        next_ask: &'a mut u64,
    ) -> WorkerContext<'a, 'r> {
        WorkerContext {
            conn,
            me: info,
            request,
            next_ask,
        }
    }
}

impl Handler for WorkerSide {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        let mut ctx = Self::ctx(conn, &self.info, None, &mut self.next_ask);
        self.worker.worker_init(&mut ctx);
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.fds.extend(conn.take_received_fds());
        let WorkerSide {
            worker,
            info,
            decoder,
            fds,
            next_ask,
        } = self;
        let mut broken: Option<String> = None;
        let result = decoder.decode(data, |frame| {
            if broken.is_some() {
                return;
            }
            let env = match Envelope::decode(frame) {
                Ok(env) => env,
                Err(e) => {
                    broken = Some(format!("bad message from master: {e}"));
                    return;
                }
            };
            match env {
                Envelope::Request { id, payload } => {
                    let request = (id != 0).then_some(id);
                    let mut ctx = Self::ctx(conn, info, request, next_ask);
                    worker.receive_data(&mut ctx, WorkerMessage::from_slice(payload));
                }
                Envelope::Fd { id, payload } => match fds.pop_front() {
                    Some(fd) => {
                        let request = (id != 0).then_some(id);
                        let mut ctx = Self::ctx(conn, info, request, next_ask);
                        worker.receive_fd(&mut ctx, fd, WorkerMessage::from_slice(payload));
                    }
                    None => broken = Some("descriptor message without a descriptor".into()),
                },
                Envelope::Reply { payload, .. } => {
                    let mut ctx = Self::ctx(conn, info, None, next_ask);
                    worker.worker_receive(&mut ctx, Ok(WorkerMessage::from_slice(payload)));
                }
                Envelope::Failed { error, .. } => {
                    let mut ctx = Self::ctx(conn, info, None, next_ask);
                    worker.worker_receive(
                        &mut ctx,
                        Err(super::WorkerError::Failed(error.to_string())),
                    );
                }
                Envelope::TypeName { fingerprint, name } => super::types::learn(fingerprint, name),
                Envelope::Exit => conn.close_connection_after_writing(),
                // Answered by the reactor, not the worker: a worker whose
                // loop turns is alive, even inside a long ask.
                Envelope::Ping => {
                    let mut out = Vec::new();
                    Envelope::Pong.encode(&mut out);
                    conn.send_data(&out);
                }
                other => broken = Some(format!("unexpected message from master: {other:?}")),
            }
        });
        if let Err(e) = result {
            broken = Some(format!("bad frame from master: {e}"));
        }
        if let Some(why) = broken {
            log_line!("worker {}: {why}; exiting", self.info.id);
            conn.close_connection();
        }
    }

    /// The master reads slower than this worker sends: stop reading its
    /// requests, so replies stop piling up here.
    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
        let mut ctx = Self::ctx(conn, &self.info, None, &mut self.next_ask);
        self.worker.channel_full(&mut ctx);
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        conn.resume();
        let mut ctx = Self::ctx(conn, &self.info, None, &mut self.next_ask);
        self.worker.channel_drained(&mut ctx);
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, _reason: &CloseReason) {
        let mut ctx = Self::ctx(conn, &self.info, None, &mut self.next_ask);
        self.worker.unbind(&mut ctx);
        ctx.reactor().stop();
    }
}

/// Reaps the fork server after its link closed: it exits once its workers
/// have, within its own grace period; past that it is killed.
pub(super) fn reap(pid: i32) {
    let deadline = Instant::now() + EXIT_GRACE + Duration::from_secs(2);
    loop {
        match process::try_wait(Some(pid)) {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => {
                let _ = process::kill(pid, libc_sigkill());
                let _ = process::wait(pid);
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
