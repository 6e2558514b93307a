//! Example programs run as a user runs them: built by cargo (`binary`),
//! started as a process of their own on a free port, and killed by their
//! pid when done.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{eventually, IO_TIMEOUT};

/// The example's binary, from the target directory of the build that made
/// this test (`target/<profile>/examples/NAME`).
///
/// `cargo test` builds most examples as plain programs there already, but
/// one with tests of its own (`test = true`) only as a test harness. So the
/// first call in a test binary runs `cargo build --examples` once, for this
/// package with the test's own profile, features and target directory: a
/// no-op when everything is built, otherwise it builds the missing
/// programs against the library this test was built with (no second
/// project, no second copy of the dependencies). `cargo test` has released
/// the target directory's lock by the time the tests run.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(build_examples);
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing after cargo build --examples (does example {name} need a feature this test lacks?)",
        path.display()
    );
    path
}

/// Builds every example this test's features allow; where they are.
fn build_examples() -> PathBuf {
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile directory above {}", exe.display()),
    };
    let status = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--examples",
            "-p",
            env!("CARGO_PKG_NAME"),
        ])
        .args(["--profile", profile, "--no-default-features", "--features"])
        .arg(features().join(","))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --examples failed");
    profile_dir.join("examples")
}

/// The package's features this test was built with: Cargo.toml's
/// `[features]`, `default` included (`--all-features` turns it on, and it
/// is part of what cargo tells builds apart), kept in step with it (a feature left out here would only
/// make the examples' build compile the library a second time).
fn features() -> Vec<&'static str> {
    macro_rules! enabled {
        ($($f:literal),*) => {
            [$((cfg!(feature = $f), $f)),*]
                .into_iter()
                .filter_map(|(on, f)| on.then_some(f))
                .collect()
        };
    }
    enabled!(
        "default",
        "channel",
        "datagram",
        "defer",
        "filewatch",
        "line",
        "objects",
        "process",
        "proxy",
        "upgrade",
        "watch",
        "workers",
        "tls"
    )
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
        Program::start_with_stdin(name, args, Stdio::inherit())
    }

    /// [`Program::start`] with `stdin` as its standard input
    /// (`Stdio::piped()` leaves the pipe in `child.stdin`).
    pub fn start_with_stdin(name: &str, args: &[&str], stdin: Stdio) -> Program {
        let mut child = Command::new(binary(name))
            .args(args)
            .stdin(stdin)
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
