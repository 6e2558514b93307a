//! Example programs run as a user runs them: built here, started as a
//! process of their own on a free port, and killed by their pid when done.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{eventually, IO_TIMEOUT};

/// The example's binary. `cargo test` builds examples that have tests of
/// their own only as test harnesses, so the program itself is built here,
/// once per test binary, into a target directory of its own (no wait on
/// the lock of the build that runs this test).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
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
    built.push((name.to_string(), path.clone()));
    path
}

/// A running example server; killed (by its pid, SIGKILL) when dropped if
/// it is still running. Its workers and fork server die with it
/// (`PR_SET_PDEATHSIG`).
pub struct Program {
    pub child: Child,
    /// Where it listens, from its `listening on ADDR` line.
    pub addr: String,
    /// Its standard error so far, line by line.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Program {
    /// Starts example `name` with `args` and waits (up to [`IO_TIMEOUT`])
    /// for the `listening on ADDR` line it prints once bound and its
    /// workers run. Its output is read on threads of its own until it
    /// exits, so it never blocks on a full pipe.
    pub fn start(name: &str, args: &[&str]) -> Program {
        let mut child = Command::new(binary(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (err, lines) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut program = Program {
            child,
            addr: String::new(),
            stderr,
        };
        program.addr = rx
            .recv_timeout(IO_TIMEOUT)
            .expect("the server never said where it listens");
        program
    }

    /// A client connected to the server, with [`IO_TIMEOUT`] on each read
    /// and write.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// Sends `input`, half-closes, and reads until the server closes.
    pub fn exchange(&self, input: &[u8]) -> Vec<String> {
        let mut s = self.connect();
        s.write_all(input).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines().map(str::to_string).collect()
    }

    /// The lines of standard error so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `bound` for the process to exit; its status, or `None`
    /// if it still runs.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let mut status = None;
        eventually(bound, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
