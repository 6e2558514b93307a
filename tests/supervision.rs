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
