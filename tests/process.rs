//! Child processes through the reactor: popen, system, watch_process, and
//! spawn itself. Real programs (`sh`, `cat`, `echo`, `true`, `sleep`),
//! started from the default multi-threaded test harness, which is what
//! spawn's fork safety is for.

mod util;

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::mpsc;

use packet::process::{
    spawn, ExitStatus, Output, PopenOptions, ProcessContext, ProcessHandler, SpawnOptions, Stderr,
    SIGKILL,
};
use packet::{CloseReason, Reactor};
use util::{spawn_reactor, IO_TIMEOUT};

/// What `process_exited` reported, with everything read before it.
#[derive(Debug)]
struct Ended {
    pid: i32,
    output: Vec<u8>,
    status: Option<ExitStatus>,
    reason: String,
}

/// Collects output and reports the end; `on_start` runs in `post_init`.
struct Report {
    pid: i32,
    output: Vec<u8>,
    on_start: fn(&mut ProcessContext<'_>),
    tx: mpsc::Sender<Ended>,
}

impl Report {
    fn new(tx: mpsc::Sender<Ended>, on_start: fn(&mut ProcessContext<'_>)) -> Report {
        Report {
            pid: 0,
            output: Vec::new(),
            on_start,
            tx,
        }
    }
}

impl ProcessHandler for Report {
    fn post_init(&mut self, p: &mut ProcessContext<'_>) {
        self.pid = p.pid();
        (self.on_start)(p);
    }
    fn receive_data(&mut self, _p: &mut ProcessContext<'_>, data: &[u8]) {
        self.output.extend_from_slice(data);
    }
    fn process_exited(
        &mut self,
        _: &mut Reactor,
        status: Option<ExitStatus>,
        reason: &CloseReason,
    ) {
        let _ = self.tx.send(Ended {
            pid: self.pid,
            output: std::mem::take(&mut self.output),
            status,
            reason: reason.to_string(),
        });
    }
}

/// Runs `argv` with a [`Report`] handler on a reactor thread and waits for
/// its end.
fn run_to_end(argv: &'static [&'static str], on_start: fn(&mut ProcessContext<'_>)) -> Ended {
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        r.processes().popen(argv, Report::new(tx, on_start))?;
        Ok(())
    });
    let ended = rx.recv_timeout(IO_TIMEOUT).expect("process_exited");
    running.stop();
    ended
}

/// Whether `pid` is gone entirely: exited and reaped (no zombie).
fn reaped(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

const MIB: usize = 1024 * 1024;

/// Writes a payload to `cat` in chunks as the queue drains, then closes
/// its stdin; reads the echo back as it comes.
struct Pump {
    data: Vec<u8>,
    sent: usize,
    got: Vec<u8>,
    tx: mpsc::Sender<(Vec<u8>, Option<ExitStatus>, String)>,
}

/// The outbound high-water mark Pump keeps under.
const PUMP_HIGH: usize = 128 * 1024;

impl Pump {
    fn pump(&mut self, p: &mut ProcessContext<'_>) {
        while self.sent < self.data.len() {
            let end = (self.sent + 32 * 1024).min(self.data.len());
            p.send_data(&self.data[self.sent..end]);
            self.sent = end;
            if p.outbound_len() > PUMP_HIGH {
                // outbound_drained comes back for the rest.
                return;
            }
        }
        p.close_write();
    }
}

impl ProcessHandler for Pump {
    fn post_init(&mut self, p: &mut ProcessContext<'_>) {
        p.set_high_water_mark(PUMP_HIGH);
        self.pump(p);
    }
    fn outbound_drained(&mut self, p: &mut ProcessContext<'_>) {
        self.pump(p);
    }
    fn receive_data(&mut self, _p: &mut ProcessContext<'_>, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn process_exited(
        &mut self,
        _: &mut Reactor,
        status: Option<ExitStatus>,
        reason: &CloseReason,
    ) {
        let _ = self
            .tx
            .send((std::mem::take(&mut self.got), status, reason.to_string()));
    }
}

#[test]
fn popen_cat_echoes_a_mebibyte_byte_exact_then_exits_0_after_close_write() {
    let data = util::pattern(1, MIB);
    let (tx, rx) = mpsc::channel();
    let payload = data.clone();
    let running = spawn_reactor(move |r| {
        let pump = Pump {
            data: payload,
            sent: 0,
            got: Vec::new(),
            tx,
        };
        r.processes().popen(["cat"], pump)?;
        Ok(())
    });
    let (got, status, reason) = rx.recv_timeout(IO_TIMEOUT).expect("process_exited");
    running.stop();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "cat's output differs from its input");
    assert_eq!(status, Some(ExitStatus::Code(0)));
    assert_eq!(reason, "closed by peer");
}

#[test]
fn the_exit_code_is_reported() {
    let ended = run_to_end(&["sh", "-c", "exit 7"], |_| {});
    assert_eq!(ended.status, Some(ExitStatus::Code(7)));
    assert_eq!(ended.reason, "closed by peer");
    assert!(reaped(ended.pid));
}

#[test]
fn output_written_after_the_process_exited_still_arrives_before_process_exited() {
    // The shell exits at once; its background child holds stdout a while
    // longer: exit first, end of stream after.
    let ended = run_to_end(&["sh", "-c", "(sleep 0.2; echo late) & echo early"], |_| {});
    assert_eq!(ended.output, b"early\nlate\n");
    assert_eq!(ended.status, Some(ExitStatus::Code(0)));
}

#[test]
fn a_missing_program_is_an_error_from_popen_not_a_hang() {
    let mut r = Reactor::new().unwrap();
    let (tx, _rx) = mpsc::channel();
    // Not in PATH: found out before any fork.
    let e = r
        .processes()
        .popen(["packet-no-such-program"], Report::new(tx.clone(), |_| {}))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("packet-no-such-program"), "{e}");
    // A path: execve fails in the child, which reports it through the pipe.
    let e = r
        .processes()
        .popen(
            ["/nonexistent/packet-prog"],
            Report::new(tx.clone(), |_| {}),
        )
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("/nonexistent/packet-prog"), "{e}");
    // Not executable: EACCES from execve.
    let e = r
        .processes()
        .popen(["/etc/passwd"], Report::new(tx, |_| {}))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    assert_eq!(r.connection_count(), 0);
}

#[test]
fn a_killed_child_reports_the_signal_and_leaves_no_zombie() {
    let ended = run_to_end(&["sleep", "30"], |p| p.kill(SIGKILL).unwrap());
    assert_eq!(ended.status, Some(ExitStatus::Signal(SIGKILL)));
    assert!(reaped(ended.pid), "pid {} left as a zombie", ended.pid);
}

#[test]
fn closing_the_connection_first_does_not_kill_and_the_child_is_still_reaped() {
    // The close comes at once; the process ends on its own later.
    let ended = run_to_end(&["sleep", "0.2"], |p| p.close_connection());
    assert_eq!(ended.status, Some(ExitStatus::Code(0)), "not killed");
    assert_eq!(ended.reason, "closed locally");
    assert!(reaped(ended.pid), "pid {} left as a zombie", ended.pid);
}

#[test]
fn stderr_merged_and_environment_set() {
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        let options = PopenOptions::new()
            .stderr(Stderr::Merge)
            .env("PACKET_TEST_VAR", "forty-two");
        r.processes().popen_with(
            ["sh", "-c", "echo out; echo $PACKET_TEST_VAR >&2"],
            &options,
            Report::new(tx, |_| {}),
        )?;
        Ok(())
    });
    let ended = rx.recv_timeout(IO_TIMEOUT).expect("process_exited");
    running.stop();
    assert_eq!(ended.output, b"out\nforty-two\n");
}

/// Runs `system_with` on a reactor thread and returns what it called back
/// with.
fn system(argv: &'static [&'static str], limit: usize) -> (Output, Option<ExitStatus>) {
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        r.processes()
            .system_with(argv, &PopenOptions::new(), limit, move |_, out, status| {
                let _ = tx.send((out, status));
            })?;
        Ok(())
    });
    let got = rx.recv_timeout(IO_TIMEOUT).expect("system callback");
    running.stop();
    got
}

#[test]
fn system_collects_output_and_status() {
    let (out, status) = system(&["sh", "-c", "echo out; exit 2"], usize::MAX);
    assert_eq!(out.bytes, b"out\n");
    assert!(!out.truncated);
    assert_eq!(status, Some(ExitStatus::Code(2)));
}

#[test]
fn system_closes_stdin_so_a_reader_ends() {
    let (out, status) = system(&["cat"], usize::MAX);
    assert!(out.bytes.is_empty());
    assert_eq!(status, Some(ExitStatus::Code(0)));
}

#[test]
fn system_caps_output_and_lets_the_command_finish() {
    // 2000 lines of 11 bytes: 22,000 bytes, capped at 1000.
    let (out, status) = system(
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do echo 0123456789; i=$((i+1)); done",
        ],
        1000,
    );
    assert_eq!(out.bytes.len(), 1000);
    assert!(out.truncated);
    assert_eq!(&out.bytes[..11], b"0123456789\n");
    assert_eq!(status, Some(ExitStatus::Code(0)), "ran to its end");
}

/// What `watch_process` reports for `pid`, from a reactor of its own.
fn watched_exit(pid: i32) -> Option<ExitStatus> {
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        r.processes().watch_process(pid, move |_, status| {
            let _ = tx.send(status);
        })?;
        Ok(())
    });
    let status = rx.recv_timeout(IO_TIMEOUT).expect("watch_process callback");
    running.stop();
    status
}

#[test]
fn watch_process_reaps_our_child_with_its_status() {
    let pid = spawn(&["sh", "-c", "exit 5"], &SpawnOptions::new()).unwrap();
    let status = watched_exit(pid);
    assert_eq!(status, Some(ExitStatus::Code(5)));
    assert!(reaped(pid));
}

#[test]
fn watch_process_on_an_exited_pid_reports_no_status() {
    let pid = spawn(&["true"], &SpawnOptions::new()).unwrap();
    packet_sys::process::wait(pid).unwrap();
    let status = watched_exit(pid);
    assert_eq!(status, None);
}

#[test]
fn watch_process_sees_a_process_that_is_not_our_child_exit() {
    // The shell prints its background child's pid and exits: that sleep is
    // then nobody's child here (it is reparented).
    let (out, status) = system(&["sh", "-c", "sleep 0.2 >/dev/null & echo $!"], 100);
    assert_eq!(status, Some(ExitStatus::Code(0)));
    let pid: i32 = std::str::from_utf8(&out.bytes)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = watched_exit(pid);
    assert_eq!(status, None, "not ours: exited, no status");
}

#[test]
fn unwatch_process_cancels_the_callback() {
    let pid = spawn(&["sleep", "30"], &SpawnOptions::new()).unwrap();
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        let id = r.processes().watch_process(pid, move |_, status| {
            let _ = tx.send(status);
        })?;
        Ok((
            r.processes().unwatch_process(id),
            r.processes().unwatch_process(id),
        ))
    });
    let (first, second) = running.value;
    assert!(first && !second);
    packet_sys::process::kill(pid, SIGKILL).unwrap();
    assert_eq!(
        packet_sys::process::wait(pid).unwrap(),
        ExitStatus::Signal(SIGKILL),
        "the cancelled watch did not reap it"
    );
    running.stop();
    assert!(rx.try_recv().is_err(), "no callback after unwatch");
}

/// The descriptors open in this process.
fn open_fds() -> BTreeSet<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether descriptor `fd` of this process lacks close-on-exec (was
/// inherited from whoever started the tests, not made here).
fn inheritable(fd: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).is_ok_and(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| i64::from_str_radix(f.trim(), 8).ok())
            .is_some_and(|flags| flags & 0o2000000 == 0)
    })
}

#[test]
fn a_spawned_program_holds_only_its_standard_streams_of_ours() {
    // `; true` keeps dash from exec'ing ls in place of itself, so $$ is the
    // shell, which has no directory open while ls lists its descriptors.
    let (out, status) = system(&["sh", "-c", "ls /proc/$$/fd; true"], 4096);
    assert_eq!(status, Some(ExitStatus::Code(0)));
    let theirs: BTreeSet<i32> = std::str::from_utf8(&out.bytes)
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(theirs.is_superset(&BTreeSet::from([0, 1, 2])), "{theirs:?}");
    let leaked: Vec<i32> = theirs
        .into_iter()
        .filter(|&fd| fd > 2 && !inheritable(fd))
        .collect();
    assert!(
        leaked.is_empty(),
        "descriptors leaked into the child: {leaked:?}"
    );
}

/// Starts `left` more `true`s, one after another, each from the end of the
/// one before; reports every pid when done.
struct Chain {
    left: usize,
    pids: Vec<i32>,
    tx: mpsc::Sender<io::Result<Vec<i32>>>,
}

fn start_next(r: &mut Reactor, mut chain: Chain) {
    if chain.left == 0 {
        let _ = chain.tx.send(Ok(chain.pids));
        return;
    }
    chain.left -= 1;
    struct Step(Option<Chain>);
    impl ProcessHandler for Step {
        fn post_init(&mut self, p: &mut ProcessContext<'_>) {
            if let Some(chain) = &mut self.0 {
                chain.pids.push(p.pid());
            }
        }
        fn process_exited(&mut self, r: &mut Reactor, status: Option<ExitStatus>, _: &CloseReason) {
            let Some(chain) = self.0.take() else { return };
            if status != Some(ExitStatus::Code(0)) {
                let _ = chain.tx.send(Err(io::Error::other(format!("{status:?}"))));
                return;
            }
            start_next(r, chain);
        }
    }
    let tx = chain.tx.clone();
    if let Err(e) = r.processes().popen(["true"], Step(Some(chain))) {
        let _ = tx.send(Err(e));
    }
}

#[test]
fn many_popens_leave_no_descriptors_and_no_zombies_behind() {
    const RUNS: usize = 50;
    let before = open_fds().len();
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        start_next(
            r,
            Chain {
                left: RUNS,
                pids: Vec::new(),
                tx,
            },
        );
        Ok(())
    });
    let pids = rx
        .recv_timeout(IO_TIMEOUT)
        .expect("chain finished")
        .expect("every run exited 0");
    running.stop();
    assert_eq!(pids.len(), RUNS);
    let zombies: Vec<i32> = pids.into_iter().filter(|&pid| !reaped(pid)).collect();
    assert!(zombies.is_empty(), "not reaped: {zombies:?}");
    // Other tests run meanwhile and hold a few descriptors of their own; a
    // leak of even one per run would show as RUNS more.
    let after = open_fds().len();
    assert!(
        after <= before + 16,
        "{before} descriptors before {RUNS} popens, {after} after"
    );
}
