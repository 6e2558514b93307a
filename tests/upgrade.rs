//! Zero-downtime restart over real processes (`packet::upgrade`): socket
//! activation of `http_server` with a listener this test makes, bad
//! `LISTEN_FDS` input, and binary upgrades on `SIGUSR2` under load, failing
//! (a new program that exits, hangs or is missing) and twice in a row.
//!
//! The new processes an upgrade starts are children of the old ones; this
//! test binary makes itself a child subreaper, so that they become its own
//! children when the old ones exit, and it can end and reap them by pid.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use packet_sys::process::{self as sys, ExitStatus, SpawnOptions, Stdio};
use util::example::{binary, Program};
use util::{eventually, is_dead, pattern, send_signal, IO_TIMEOUT};

/// Hang guard for a process to start, hand over or exit.
const BOUND: Duration = Duration::from_secs(60);

/// A process this test started (or that became its child), killed and
/// reaped when dropped if still there.
struct Owned(i32);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = sys::kill(self.0, sys::SIGKILL);
        let _ = sys::wait(self.0);
    }
}

/// A program started with `packet_sys::process::spawn`, which can put
/// descriptors at chosen numbers (std's `Command` cannot without `unsafe`).
struct Spawned {
    pid: Owned,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The thread reading standard error, done at the program's exit.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Spawned {
    /// Starts example `name` with `args`, `fds` at 3, 4, ..., and
    /// `LISTEN_FDS`/`LISTEN_PID` set as systemd sets them (unless `env`
    /// sets them otherwise).
    fn start(name: &str, args: &[&str], fds: &[BorrowedFd<'_>], env: &[(&str, &str)]) -> Spawned {
        Spawned::start_file(&binary(name), args, fds, env)
    }

    /// [`Spawned::start`] for the program file at `program`.
    fn start_file(
        program: &std::path::Path,
        args: &[&str],
        fds: &[BorrowedFd<'_>],
        env: &[(&str, &str)],
    ) -> Spawned {
        let (out, their_out) = UnixStream::pair().unwrap();
        let (err, their_err) = UnixStream::pair().unwrap();
        let mut options = SpawnOptions::new()
            .stdout(Stdio::Fd(their_out.as_fd()))
            .stderr(Stdio::Fd(their_err.as_fd()))
            .env("LISTEN_FDS", fds.len().to_string());
        if !env.iter().any(|(k, _)| *k == "LISTEN_PID") {
            options = options.env_child_pid("LISTEN_PID");
        }
        for (i, fd) in (3..).zip(fds) {
            options = options.map_fd(*fd, i);
        }
        for (k, v) in env {
            options = options.env(*k, *v);
        }
        let mut argv = vec![program.to_str().unwrap()];
        argv.extend(args);
        let pid = Owned(sys::spawn(&argv, &options).unwrap());
        drop((their_out, their_err));
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Spawned {
            pid,
            stdout,
            stderr,
            reader: Some(reader),
        }
    }

    /// Waits for the program to exit; its status (it must exit).
    fn exit_status(&self) -> ExitStatus {
        let mut status = None;
        assert!(
            eventually(BOUND, || {
                status = sys::try_wait(Some(self.pid.0)).unwrap().map(|(_, s)| s);
                status.is_some()
            }),
            "the program did not exit"
        );
        status.unwrap()
    }

    /// Its whole standard error, once every process holding it has exited
    /// (a new process started by an upgrade holds it too).
    fn all_stderr(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.stderr()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

/// One `GET path` on `conn`: the body, `Ok(None)` when the server closed
/// the connection before the first byte of a response, or what went wrong
/// (a reset, a bad status, a body shorter than its `Content-Length`).
/// With `pause`, the body is read 16 KiB at a time with a pause after
/// each, as a slow client would (the download stays in flight longer).
fn get(
    conn: &mut BufReader<TcpStream>,
    path: &str,
    close: bool,
    pause: Option<Duration>,
) -> Result<Option<Vec<u8>>, String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    conn.get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut status = String::new();
    match conn.read_line(&mut status) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(format!("status line: {e}")),
    }
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {status:?}"));
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        match conn.read_line(&mut line) {
            Ok(0) => return Err("truncated: end of stream in the headers".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("truncated: headers: {e}")),
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length = length.ok_or("no Content-Length")?;
    let mut body = vec![0; length];
    let step = if pause.is_some() {
        16 * 1024
    } else {
        length.max(1)
    };
    for chunk in body.chunks_mut(step) {
        conn.read_exact(chunk)
            .map_err(|e| format!("truncated: body of {length} bytes: {e}"))?;
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
    }
    Ok(Some(body))
}

fn connect(addr: &str) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(BufReader::new(s))
}

/// `GET /` on a new connection answers `Hello, World!`.
fn hello(addr: &str) -> Result<(), String> {
    let mut conn = connect(addr).map_err(|e| format!("connect: {e}"))?;
    match get(&mut conn, "/", true, None)? {
        Some(body) if body == b"Hello, World!\n" => Ok(()),
        Some(body) => Err(format!("body {body:?}")),
        None => Err("closed before answering".into()),
    }
}

/// A directory with a 2 MiB file, `big`, to download.
fn site(tag: &str) -> (PathBuf, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("packet-upgrade-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let content = pattern(25, 2 << 20);
    std::fs::write(dir.join("big"), &content).unwrap();
    (dir, content)
}

/// A shell script, made executable, standing for a broken new build.
fn script(tag: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("packet-upgrade-{tag}-{}.sh", std::process::id()));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The pid in the old process's `upgrade: pid N is serving` line, once it
/// is there.
fn handed_over_to(program: &Program, after: usize) -> i32 {
    handed_over_in(|| program.stderr(), after)
}

/// The pid in the `after`th `upgrade: pid N is serving` line of the
/// standard error `lines` gives, once it is there.
fn handed_over_in(lines: impl Fn() -> Vec<String>, after: usize) -> i32 {
    let mut pid = None;
    assert!(
        eventually(BOUND, || {
            pid = lines()
                .iter()
                .filter_map(|l| l.strip_prefix("upgrade: pid "))
                .nth(after)
                .and_then(|l| l.split(' ').next()?.parse().ok());
            pid.is_some()
        }),
        "no hand-over logged: {:?}",
        lines()
    );
    pid.unwrap()
}

fn waits_for_line(program: &Program, part: &str) {
    assert!(
        eventually(BOUND, || program.stderr().iter().any(|l| l.contains(part))),
        "no line with {part:?} in {:?}",
        program.stderr()
    );
}

/// Waits until process `pid` has as many descriptors open as `expected`
/// lists: the server's ends of the test's connections close a little after
/// the test's own.
fn settles_at(pid: i32, expected: &[String]) {
    let mut now = Vec::new();
    assert!(
        eventually(BOUND, || {
            now = fd_list(pid);
            now.len() == expected.len()
        }),
        "process {pid} has {now:?}, not as many as {expected:?}"
    );
}

/// What process `pid` has open: `N -> target` for each descriptor.
fn fd_list(pid: i32) -> Vec<String> {
    let mut list: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map_while(Result::ok)
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    list.sort();
    list
}

fn become_subreaper() {
    assert!(
        sys::set_child_subreaper().unwrap(),
        "needs Linux's subreapers"
    );
}

#[test]
fn socket_activation_serves_on_a_listener_made_by_the_test() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Queued in the kernel before the server exists: served once it adopts
    // the socket.
    let mut early = connect(&addr).unwrap();
    let server = Spawned::start("http_server", &["127.0.0.1:1"], &[listener.as_fd()], &[]);
    drop(listener);
    let said = server
        .stdout
        .recv_timeout(BOUND)
        .expect("no listening line");
    assert_eq!(said, format!("listening on {addr}"));
    assert_eq!(
        get(&mut early, "/", false, None).unwrap().unwrap(),
        b"Hello, World!\n"
    );
    hello(&addr).unwrap();
    // Closed first, so that the stop does not linger on it.
    drop(early);
    send_signal(server.pid.0 as u32, "TERM", false);
    assert_eq!(
        server.exit_status(),
        ExitStatus::Code(0),
        "{}",
        server.stderr()
    );
}

#[test]
fn bad_listen_fds_name_the_descriptor_and_exit_with_an_error() {
    let null = std::fs::File::open("/dev/null").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    // What is wrong, the descriptors at 3.., variables set otherwise than
    // systemd would, and what the server must say.
    type Case<'a> = (
        &'a str,
        Vec<BorrowedFd<'a>>,
        Vec<(&'a str, &'a str)>,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "closed",
            vec![listening.as_fd()],
            vec![("LISTEN_FDS", "2")],
            "fd 4 is not open",
        ),
        ("file", vec![null.as_fd()], vec![], "fd 3 is not a socket"),
        (
            "connected",
            vec![connected.as_fd()],
            vec![],
            "fd 3 is not a listening socket",
        ),
        (
            "another pid",
            vec![listening.as_fd()],
            vec![("LISTEN_PID", "1")],
            "LISTEN_PID=1 is not this process",
        ),
        (
            "malformed",
            vec![listening.as_fd()],
            vec![("LISTEN_FDS", "one")],
            "LISTEN_FDS=\"one\" is malformed",
        ),
    ];
    for (what, fds, env, expected) in cases {
        let mut server = Spawned::start("http_server", &["127.0.0.1:0"], &fds, &env);
        // An error return from main: status 1, not a crash by a signal.
        assert_eq!(server.exit_status(), ExitStatus::Code(1), "{what}");
        let said = server.all_stderr();
        assert!(said.contains(expected), "{what}: {said}");
        assert!(server.stdout.try_recv().is_err(), "{what}: it listened");
    }
}

#[test]
fn an_upgrade_under_load_loses_nothing() {
    become_subreaper();
    let (dir, content) = site("load");
    let mut old = Program::start(
        "http_server",
        &["127.0.0.1:0", "--root", dir.to_str().unwrap()],
    );
    let addr = old.addr.clone();
    let old_pid = old.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sequential = Arc::new(AtomicUsize::new(0));
    let downloads = Arc::new(AtomicUsize::new(0));
    // Set once the old process has logged the hand-over; downloads started
    // before and finished after ran through it.
    let handed = Arc::new(AtomicBool::new(false));
    let spanning = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    // New connection for each request, until stopped.
    let client = {
        let (addr, stop, done, failures) = (
            addr.clone(),
            stop.clone(),
            sequential.clone(),
            failures.clone(),
        );
        std::thread::spawn(move || {
            let mut refused = 0;
            while !stop.load(Ordering::Relaxed) {
                match hello(&addr) {
                    Ok(()) => drop(done.fetch_add(1, Ordering::Relaxed)),
                    Err(e) if e.contains("refused") => refused += 1,
                    Err(e) => failures.lock().unwrap().push(format!("sequential: {e}")),
                }
            }
            refused
        })
    };
    // 20 keep-alive connections downloading the file over and over; a
    // connection the server closes between two responses (the old process
    // draining) is replaced, as HTTP clients do.
    let downloaders: Vec<_> = (0..20)
        .map(|_| {
            let (addr, stop, done, failures, content) = (
                addr.clone(),
                stop.clone(),
                downloads.clone(),
                failures.clone(),
                content.clone(),
            );
            let (handed, spanning) = (handed.clone(), spanning.clone());
            std::thread::spawn(move || {
                let mut reconnects = 0;
                let mut conn = connect(&addr).unwrap();
                // No response yet on this connection: a close now is a
                // request left unanswered, not an idle connection closed.
                let mut fresh = true;
                while !stop.load(Ordering::Relaxed) {
                    let before = !handed.load(Ordering::Relaxed);
                    match get(&mut conn, "/big", false, Some(Duration::from_millis(2))) {
                        Ok(Some(body)) if body == content => {
                            fresh = false;
                            done.fetch_add(1, Ordering::Relaxed);
                            if before && handed.load(Ordering::Relaxed) {
                                spanning.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Some(_)) => failures
                            .lock()
                            .unwrap()
                            .push("download: wrong bytes".into()),
                        Ok(None) if fresh => {
                            failures
                                .lock()
                                .unwrap()
                                .push("download: closed unanswered".into());
                            return reconnects;
                        }
                        Ok(None) => {
                            reconnects += 1;
                            match connect(&addr) {
                                Ok(c) => (conn, fresh) = (c, true),
                                Err(e) => {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("download: connect: {e}"));
                                    return reconnects;
                                }
                            }
                        }
                        Err(e) => {
                            failures.lock().unwrap().push(format!("download: {e}"));
                            return reconnects;
                        }
                    }
                }
                reconnects
            })
        })
        .collect();
    assert!(eventually(BOUND, || sequential.load(Ordering::Relaxed)
        >= 500
        && downloads.load(Ordering::Relaxed) >= 20));
    let before = sequential.load(Ordering::Relaxed);
    send_signal(old_pid, "USR2", false);
    let new_pid = handed_over_to(&old, 0);
    handed.store(true, Ordering::Relaxed);
    let new = Owned(new_pid);
    let status = old.wait_exit(BOUND).expect("the old process did not exit");
    assert_eq!(status.code(), Some(0), "{:?}", old.stderr());
    let at_exit = (
        sequential.load(Ordering::Relaxed),
        downloads.load(Ordering::Relaxed),
    );
    // The new process alone serves from now on.
    assert!(eventually(BOUND, || sequential.load(Ordering::Relaxed)
        >= (at_exit.0 + 500).max(2_000)
        && downloads.load(Ordering::Relaxed) >= at_exit.1 + 20));
    stop.store(true, Ordering::Relaxed);
    let refused = client.join().unwrap();
    let reconnects: usize = downloaders.into_iter().map(|t| t.join().unwrap()).sum();
    let failures = failures.lock().unwrap().clone();
    let (total, fetched) = (
        sequential.load(Ordering::Relaxed),
        downloads.load(Ordering::Relaxed),
    );
    println!(
        "upgrade under load: {total} sequential requests ({before} before the signal, {} after the old process exited), \
         {fetched} downloads of 2 MiB on 20 keep-alive connections ({} of them running through the hand-over; \
         {reconnects} reconnects after a close between responses), \
         {refused} refused, {} failed",
        total - at_exit.0,
        spanning.load(Ordering::Relaxed),
        failures.len()
    );
    assert_eq!(refused, 0);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        spanning.load(Ordering::Relaxed) > 0,
        "no download ran through the hand-over"
    );
    assert!(!is_dead(new_pid as u32));
    send_signal(new_pid as u32, "TERM", false);
    assert_eq!(sys::wait(new.0).unwrap(), ExitStatus::Code(0));
    std::mem::forget(new);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_upgrade_leaves_the_old_process_serving() {
    become_subreaper();
    let exits = script("exits", "exit 3");
    let hangs = script("hangs", "exec sleep 600");
    // The program, the deadline given to it (long where the failure comes
    // first: the test waits for the failure, not for the deadline), and
    // what the old process logs.
    let cases = [
        (
            exits.to_str().unwrap(),
            "30",
            "ended (exit code 3) before it was ready",
        ),
        // Long enough for the second signal below to arrive in time.
        (
            hangs.to_str().unwrap(),
            "5",
            "was not ready within 5s; killed it",
        ),
        (
            "/nonexistent/http_server",
            "30",
            "cannot start the new program",
        ),
    ];
    for (program, deadline, expected) in cases {
        let mut old = Program::start(
            "http_server",
            &[
                "127.0.0.1:0",
                "--upgrade-program",
                program,
                "--upgrade-deadline",
                deadline,
            ],
        );
        let pid = old.child.id();
        let fds = fd_list(pid as i32);
        send_signal(pid, "USR2", false);
        if program == hangs.to_str().unwrap() {
            // A second signal during the upgrade is ignored.
            waits_for_line(&old, "upgrade: started");
            send_signal(pid, "USR2", false);
            waits_for_line(&old, "SIGUSR2: an upgrade is already in progress; ignored");
        }
        waits_for_line(&old, expected);
        waits_for_line(&old, "this process goes on serving");
        hello(&old.addr).unwrap();
        assert!(
            old.child.try_wait().unwrap().is_none(),
            "{program}: the old one exited"
        );
        // The child was reaped and nothing of the attempt is left open.
        assert!(
            util::children_of(pid).is_empty(),
            "{program}: a child is left"
        );
        settles_at(pid as i32, &fds);
        send_signal(pid, "TERM", false);
        assert_eq!(old.wait_exit(BOUND).and_then(|s| s.code()), Some(0));
    }
    let _ = std::fs::remove_file(exits);
    let _ = std::fs::remove_file(hangs);
}

#[test]
fn two_upgrades_in_a_row_leave_one_process_and_no_leaked_descriptor() {
    become_subreaper();
    let mut first = Program::start("http_server", &["127.0.0.1:0", "--threads", "2"]);
    let addr = first.addr.clone();
    let first_pid = first.child.id() as i32;
    let fds = fd_list(first_pid);
    send_signal(first_pid as u32, "USR2", false);
    let second = Owned(handed_over_to(&first, 0));
    assert_eq!(first.wait_exit(BOUND).and_then(|s| s.code()), Some(0));
    hello(&addr).unwrap();
    // The second process logs through the same standard error.
    send_signal(second.0 as u32, "USR2", false);
    let third = Owned(handed_over_to(&first, 1));
    assert_eq!(sys::wait(second.0).unwrap(), ExitStatus::Code(0));
    std::mem::forget(second);
    hello(&addr).unwrap();
    assert!(!is_dead(third.0 as u32));
    // Both listeners (one per reactor thread) came through; nothing else.
    settles_at(third.0, &fds);
    // The two before it exited (reaped above): only the survivor holds
    // the listening sockets.
    assert!(is_dead(first_pid as u32));
    for _ in 0..20 {
        hello(&addr).unwrap();
    }
    send_signal(third.0 as u32, "TERM", false);
    assert_eq!(sys::wait(third.0).unwrap(), ExitStatus::Code(0));
    std::mem::forget(third);
}

/// What the upgrade's `spawn` relies on: descriptors at chosen numbers
/// (the same sockets as the parent's) and `LISTEN_PID` set to the child's
/// own pid, which only the child knows.
#[test]
fn spawn_maps_descriptors_and_sets_the_childs_pid() {
    let (a, _a) = UnixStream::pair().unwrap();
    let (b, _b) = UnixStream::pair().unwrap();
    let (out, their_out) = UnixStream::pair().unwrap();
    let link = |fd: BorrowedFd<'_>| {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    };
    let options = SpawnOptions::new()
        .stdout(Stdio::Fd(their_out.as_fd()))
        .map_fd(a.as_fd(), 5)
        .map_fd(b.as_fd(), 3)
        .env("LISTEN_PID", "stale")
        .env_child_pid("LISTEN_PID");
    let script = "echo \"$LISTEN_PID\"; readlink /proc/self/fd/5 /proc/self/fd/3; \
                  test -e /proc/self/fd/4 && echo 4 is open; exit 0";
    let pid = Owned(sys::spawn(&["/bin/sh", "-c", script], &options).unwrap());
    drop(their_out);
    let mut text = String::new();
    BufReader::new(out).read_to_string(&mut text).unwrap();
    let child = pid.0;
    assert_eq!(sys::wait(pid.0).unwrap(), ExitStatus::Code(0));
    std::mem::forget(pid);
    let expected = format!(
        "{child}\n{}\n{}\n",
        link(a.as_fd()).display(),
        link(b.as_fd()).display()
    );
    // Nothing at 4: only the maps and the standard streams are inherited.
    assert_eq!(text, expected);
}

/// `echo_server` does both too: it serves on a socket the test passes, and
/// hands it over on `SIGUSR2` with an echo in flight on each side.
#[test]
fn echo_server_is_activated_then_upgraded() {
    become_subreaper();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let old = Spawned::start("echo_server", &["127.0.0.1:1"], &[listener.as_fd()], &[]);
    drop(listener);
    let said = old.stdout.recv_timeout(BOUND).expect("no listening line");
    assert_eq!(said, format!("listening on {addr}"));
    let echo = |s: &mut TcpStream, text: &[u8]| {
        s.write_all(text).unwrap();
        let mut got = vec![0; text.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, text);
    };
    // A connection of the old process, open across the hand-over.
    let mut kept = util::client(addr);
    echo(&mut kept, b"before\n");
    send_signal(old.pid.0 as u32, "USR2", false);
    let new = Owned(handed_over_in(|| old.stderr.lock().unwrap().clone(), 0));
    // Served by the new process (or, connecting within microseconds of the
    // log line, by the old one during its settle).
    let mut fresh = util::client(addr);
    echo(&mut fresh, b"after\n");
    drop(fresh);
    // The old process drains: its connection ends in order.
    kept.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    kept.read_to_end(&mut rest).unwrap();
    assert_eq!(old.exit_status(), ExitStatus::Code(0), "{}", old.stderr());
    // Only the new process is left to serve.
    echo(&mut util::client(addr), b"still\n");
    send_signal(new.0 as u32, "TERM", false);
    assert_eq!(sys::wait(new.0).unwrap(), ExitStatus::Code(0));
    std::mem::forget(new);
}

/// A deploy as the README shows it: the program's file is replaced (by a
/// rename, as deploy tools do) while it runs; `SIGUSR2` starts the file now
/// at that path, not the old, deleted one (`/proc/self/exe`). The "new
/// build" here is `echo_server`, so who answers tells them apart.
#[test]
fn an_upgrade_runs_the_file_now_at_the_path_it_was_started_from() {
    become_subreaper();
    let dir = std::env::temp_dir().join(format!("packet-upgrade-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = dir.join("server");
    std::fs::copy(binary("http_server"), &server).unwrap();
    let old = Spawned::start_file(&server, &["127.0.0.1:0"], &[], &[]);
    let said = old.stdout.recv_timeout(BOUND).expect("no listening line");
    let addr = said.strip_prefix("listening on ").unwrap().to_string();
    hello(&addr).unwrap();
    let staged = dir.join("server.new");
    std::fs::copy(binary("echo_server"), &staged).unwrap();
    std::fs::rename(&staged, &server).unwrap();
    send_signal(old.pid.0 as u32, "USR2", false);
    let new = Owned(handed_over_in(|| old.stderr.lock().unwrap().clone(), 0));
    assert_eq!(old.exit_status(), ExitStatus::Code(0), "{}", old.stderr());
    // The echo server answers now, on the same port.
    let mut s = util::client(addr.parse().unwrap());
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut got = [0u8; 18];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
    // Closed first, so that the stop does not linger on it.
    drop(s);
    send_signal(new.0 as u32, "TERM", false);
    assert_eq!(sys::wait(new.0).unwrap(), ExitStatus::Code(0));
    std::mem::forget(new);
    let _ = std::fs::remove_dir_all(dir);
}

/// The `(master, worker pids)` of each `master N, workers: a=P b=Q` line
/// in `lines`.
#[cfg(all(feature = "workers", feature = "line"))]
fn masters(lines: &[String]) -> Vec<(u32, Vec<u32>)> {
    lines
        .iter()
        .filter_map(|l| {
            let (master, workers) = l.strip_prefix("master ")?.split_once(", workers: ")?;
            let pids = workers
                .split(' ')
                .filter_map(|w| w.split_once('=')?.1.parse().ok())
                .collect();
            Some((master.parse().ok()?, pids))
        })
        .collect()
}

/// A master with a worker pool upgrades too (`eval_server`, through
/// `examples/common/pool.rs`): asks on new connections all the way through
/// are answered; the new master reports ready once its own workers run,
/// and the old master's workers end with it.
#[cfg(all(feature = "workers", feature = "line"))]
#[test]
fn a_worker_pool_master_upgrades_with_its_asks_answered() {
    become_subreaper();
    let mut old = Program::start("eval_server", &["127.0.0.1:0"]);
    let addr = old.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let client = {
        let (addr, stop, answered) = (addr.clone(), stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ask = || -> std::io::Result<String> {
                    let mut s = connect(&addr)?;
                    s.get_mut().write_all(b"6*7\n")?;
                    s.get_mut().shutdown(std::net::Shutdown::Write)?;
                    let mut text = String::new();
                    s.read_to_string(&mut text)?;
                    Ok(text)
                };
                match ask() {
                    Ok(text) if text == "42\n" => drop(answered.fetch_add(1, Ordering::Relaxed)),
                    Ok(text) => failures.push(format!("answer {text:?}")),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    assert!(eventually(BOUND, || answered.load(Ordering::Relaxed) >= 200));
    send_signal(old.child.id(), "USR2", false);
    let new = Owned(handed_over_to(&old, 0));
    assert_eq!(
        old.wait_exit(BOUND).and_then(|s| s.code()),
        Some(0),
        "{:?}",
        old.stderr()
    );
    let at_exit = answered.load(Ordering::Relaxed);
    assert!(eventually(BOUND, || answered.load(Ordering::Relaxed) >= at_exit + 200));
    stop.store(true, Ordering::Relaxed);
    let failures = client.join().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let masters = masters(&old.stderr());
    assert_eq!(masters.len(), 2, "{:?}", old.stderr());
    let ((first, old_workers), (second, new_workers)) = (&masters[0], &masters[1]);
    assert_eq!((*first, *second), (old.child.id(), new.0 as u32));
    assert!(!new_workers.is_empty());
    assert!(new_workers.iter().all(|w| !old_workers.contains(w)));
    assert!(
        old_workers.iter().all(|&w| is_dead(w)),
        "an old worker outlived its master"
    );
    println!(
        "worker pool upgrade: {} asks answered, {at_exit} before the old master exited, 0 failed",
        answered.load(Ordering::Relaxed)
    );
    send_signal(new.0 as u32, "TERM", false);
    assert_eq!(sys::wait(new.0).unwrap(), ExitStatus::Code(0));
    std::mem::forget(new);
}
