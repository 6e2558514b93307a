//! Runs a command through the reactor, prints its output as it arrives,
//! then how it ended, and exits with its exit code.
//!
//! ```text
//! cargo run --example popen -- CMD [ARGS...]
//! cargo run --example popen                  # sh -c 'echo hello; echo world >&2; exit 3'
//! ```
//!
//! The command's stdin is closed at once (it reads end of file); its stderr
//! is this program's.

use std::cell::Cell;
use std::io::{self, Write};
use std::rc::Rc;

use packet::process::{ExitStatus, ProcessContext, ProcessHandler};
use packet::{CloseReason, Reactor};

struct Print {
    status: Rc<Cell<Option<ExitStatus>>>,
}

impl ProcessHandler for Print {
    fn post_init(&mut self, p: &mut ProcessContext<'_>) {
        p.close_write();
    }

    fn receive_data(&mut self, _p: &mut ProcessContext<'_>, data: &[u8]) {
        let mut out = io::stdout().lock();
        // A closed stdout (`| head`) is not this example's concern.
        let _ = out.write_all(data).and_then(|()| out.flush());
    }

    fn process_exited(
        &mut self,
        reactor: &mut Reactor,
        status: Option<ExitStatus>,
        _reason: &CloseReason,
    ) {
        self.status.set(status);
        reactor.stop();
    }
}

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        argv = ["sh", "-c", "echo hello; echo world >&2; exit 3"]
            .map(String::from)
            .into();
    }
    let status = Rc::new(Cell::new(None));
    let seen = status.clone();
    let ran = Reactor::run(move |reactor| {
        reactor.processes().popen(&argv, Print { status: seen })?;
        Ok(())
    });
    if let Err(e) = ran {
        eprintln!("popen: {e}");
        // What shells exit with for a command they cannot run.
        std::process::exit(127);
    }
    let code = match status.get() {
        Some(ExitStatus::Code(code)) => {
            println!("exit status: {code}");
            code
        }
        Some(ExitStatus::Signal(sig)) => {
            println!("killed by signal {sig}");
            // What shells report for a command a signal ended.
            128 + sig
        }
        None => {
            println!("exit status unknown");
            1
        }
    };
    std::process::exit(code);
}
