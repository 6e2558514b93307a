//! The eval server example, run as a user runs it: a process of its own
//! with its pool of workers, a client that pipelines lines and half-closes.
//! Checks the answers come back in line order (the pool answers out of
//! order), errors keep their place, and the connection closes only after
//! the last answer.
//!
//! The test builds the example itself (see `example`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The example's binary. `cargo test` builds examples that have tests of
/// their own only as test harnesses, so the program itself is built here,
/// once, into a target directory of its own (no wait on the lock of the
/// build that runs this test).
fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("example-bins");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--quiet", "--locked", "--example", name])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --example {name} failed");
    let path = target.join("debug").join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing after the build",
        path.display()
    );
    *built = Some(path.clone());
    path
}

/// The server, started on a free port; killed (by its pid) when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(workers: usize) -> Server {
        let mut child = Command::new(example("eval_server"))
            .args(["127.0.0.1:0", "--workers", &workers.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        // Printed once bound and the pool runs.
        let addr = out
            .lines()
            .map(Result::unwrap)
            .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
            .expect("the server never said where it listens");
        Server { child, addr }
    }

    /// Sends `input`, half-closes, and reads until the server closes.
    fn exchange(&self, input: &[u8]) -> Vec<String> {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(input).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines().map(str::to_string).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pipelined_lines_are_answered_in_order_after_a_half_close() {
    let server = Server::start(2);
    let mut input = Vec::new();
    for i in 0..500 {
        input.extend_from_slice(format!("{i}*{i}\n").as_bytes());
    }
    input.extend_from_slice(b"1/0\r\n(2+3)*4\n");
    let got = server.exchange(&input);
    let mut want: Vec<String> = (0..500u64).map(|i| (i * i).to_string()).collect();
    want.push("error: division by zero".into());
    want.push("20".into());
    assert_eq!(got, want);
}

#[test]
fn a_line_too_long_is_answered_after_the_lines_before_it_then_closes() {
    let server = Server::start(2);
    let mut input = b"1+1\n2+2\n".to_vec();
    input.extend(vec![b'1'; 70_000]);
    input.extend_from_slice(b"\n3+3\n");
    let got = server.exchange(&input);
    assert_eq!(got, ["2", "4", "error: line longer than 65536 bytes"]);
}
