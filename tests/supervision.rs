//! Supervision defaults, as a user meets them: `eval_server` started with
//! no options, one of its workers stopped with SIGSTOP. Its default
//! heartbeat (15 s) kills and replaces the stopped worker, so every line
//! gets its answer or an error line; before, the client waited as long as
//! the stop lasted.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use util::example::Program;

/// The bound for "answers or fails every ask" with the defaults:
/// the heartbeat's 15 s plus up to two ping rounds, with room to spare.
const BOUND: Duration = Duration::from_secs(30);

#[test]
fn eval_server_with_defaults_answers_every_line_while_a_worker_is_stopped() {
    let server = Program::start("eval_server", &["127.0.0.1:0"]);
    // "master PID, workers: eval_worker[0]=PID eval_worker[1]=PID"
    let workers = util::eventually(util::IO_TIMEOUT, || {
        server.stderr().iter().any(|l| l.contains("workers: "))
    });
    assert!(workers, "no worker pids in {:?}", server.stderr());
    let line = server
        .stderr()
        .into_iter()
        .find(|l| l.contains("workers: "))
        .unwrap();
    let pids: Vec<i32> = line
        .split_whitespace()
        .filter_map(|w| w.split_once('=').and_then(|(_, p)| p.parse().ok()))
        .collect();
    assert_eq!(pids.len(), 2, "{line}");
    packet_sys::process::kill(pids[1], packet_sys::process::SIGSTOP).unwrap();
    let stopped_at = Instant::now();

    let mut client = server.connect();
    client.set_read_timeout(Some(BOUND * 2)).unwrap();
    let input: String = (0..400).map(|i| format!("{i}+{i}\n")).collect();
    client.write_all(input.as_bytes()).unwrap();
    let mut reader = BufReader::new(client);
    let (mut answered, mut failed) = (0, 0);
    for i in 0..400 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line == (2 * i).to_string() {
            answered += 1;
        } else {
            assert!(line.starts_with("error: "), "line {i}: {line:?}");
            failed += 1;
        }
    }
    let took = stopped_at.elapsed();
    println!("{answered} answered, {failed} errors, all within {took:?} of the SIGSTOP");
    assert!(
        failed > 0,
        "the stopped worker's lines cannot have been answered"
    );
    assert!(
        took < BOUND,
        "the last line came {took:?} after the SIGSTOP"
    );
    // The stopped worker was killed by the heartbeat (reaped by its fork
    // server), not left stopped.
    assert!(
        util::eventually(util::IO_TIMEOUT, || util::is_gone(pids[1] as u32)),
        "the stopped worker {} is still there",
        pids[1]
    );
}

/// The children of process `pid`, by their pids in this (the host's)
/// namespace.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// `unshare` can make a PID namespace here (root, or a kernel and setup
/// that allow it), so a program can be PID 1.
fn can_be_pid_1() -> bool {
    std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_pid_1_master_reaps_the_workers_of_a_dead_fork_server() {
    use std::process::{Command, Stdio};
    if !can_be_pid_1() {
        // Documented in RELIABILITY.md: needs a PID namespace.
        println!("skipped: unshare --pid is not allowed here");
        return;
    }
    let bin = util::example::binary("eval_server");
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(&bin)
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = unshare.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("no listening line").unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let ends = Ends(unshare);
    // unshare → master (PID 1 inside) → fork server → 2 workers.
    let master = children(ends.0.id())[0];
    let server = children(master)[0];
    let workers = children(server);
    assert_eq!(workers.len(), 2, "workers of {server}: {workers:?}");
    packet_sys::process::kill(server as i32, packet_sys::process::SIGKILL).unwrap();
    // The workers die with their fork server and are re-parented to the
    // master, PID 1 of its namespace: it reaps them, no zombie is left.
    for w in &workers {
        assert!(
            util::eventually(util::IO_TIMEOUT, || util::is_gone(*w)),
            "worker {w} of the dead fork server is left: {}",
            std::fs::read_to_string(format!("/proc/{w}/stat")).unwrap_or_default()
        );
    }
    assert!(util::eventually(util::IO_TIMEOUT, || util::is_gone(server)));
    // A new fork server and workers answer.
    let mut client = std::net::TcpStream::connect(&addr).unwrap();
    client.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    let mut answer = String::new();
    let answered = util::eventually(util::IO_TIMEOUT, || {
        client.write_all(b"20+22\n").unwrap();
        answer.clear();
        BufReader::new(&client).read_line(&mut answer).unwrap();
        answer == "42\n"
    });
    assert!(answered, "last answer {answer:?}");
    println!("old workers {workers:?} reaped by the PID-1 master {master}");
}

/// Kills the `unshare` process tree when the test ends: the master (its
/// child) is PID 1 of the namespace, whose death ends every process in it.
struct Ends(std::process::Child);
impl Drop for Ends {
    fn drop(&mut self) {
        for pid in children(self.0.id()) {
            let _ = packet_sys::process::kill(pid as i32, packet_sys::process::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
