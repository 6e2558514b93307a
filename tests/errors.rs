//! Errors name what failed (issue 23): the address of a bind or connect,
//! the path of a file, and a send to a closed connection is not silent;
//! and a client reconnects after a delay with its handler's state.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use packet::{Backoff, CloseReason, Connection, Handler, Reactor};

/// Stops a test's reactor if it hangs; the test's assertions then fail.
const HANG_GUARD: Duration = Duration::from_secs(30);

struct Quiet;
impl Handler for Quiet {}

/// A loopback address nothing listens on (bound, then released).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn a_port_in_use_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut r = Reactor::new().unwrap();
    let err = r.start_server(addr, || Quiet).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot listen on {addr}: ")),
        "{text}"
    );
    // The OS error is still there, as the source.
    let source = std::error::Error::source(&err).map(|s| s.to_string());
    assert!(source.is_some_and(|s| text.ends_with(&s)), "{text}");
}

#[test]
fn a_unix_socket_in_a_missing_directory_names_the_path() {
    let path = "/nonexistent-packet-test-dir/server.sock";
    let mut r = Reactor::new().unwrap();
    let err = r.start_unix_server(path, || Quiet).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen on {path}: ")),
        "{err}"
    );
}

/// A close reason's message, and its error's kind if it has one.
type Reasons = Rc<RefCell<Vec<(String, Option<io::ErrorKind>)>>>;

/// Records why its connection ended, and stops the reactor.
struct Record {
    reasons: Reasons,
}
impl Handler for Record {
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let kind = match reason {
            CloseReason::ConnectFailed(e) => Some(e.kind()),
            _ => None,
        };
        self.reasons.borrow_mut().push((reason.to_string(), kind));
        conn.reactor().stop();
    }
}

#[test]
fn a_refused_connect_names_the_address() {
    let addr = free_addr();
    let reasons: Reasons = Rc::default();
    let record = Record {
        reasons: reasons.clone(),
    };
    Reactor::run(move |r| {
        r.add_timer(HANG_GUARD, |r| r.stop());
        r.connect(addr, record)?;
        Ok(())
    })
    .unwrap();
    let reasons = reasons.borrow();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    let (text, kind) = &reasons[0];
    assert_eq!(*kind, Some(io::ErrorKind::ConnectionRefused), "{text}");
    assert!(
        text.starts_with(&format!("cannot connect to {addr}: ")),
        "{text}"
    );
}

/// Sends after closing itself, then a file that does not exist.
struct SendsAfterClose {
    file_error: Rc<RefCell<Option<io::Error>>>,
}
impl Handler for SendsAfterClose {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        let missing = "/nonexistent-packet-test-dir/file.txt";
        *self.file_error.borrow_mut() = conn.send_file(missing).err();
        conn.close_connection();
        conn.send_data(b"1234567");
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, _reason: &CloseReason) {
        conn.send_data(b"12345678901");
        conn.reactor().stop();
    }
}

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[test]
fn data_sent_after_close_is_logged_and_a_missing_file_is_named() {
    packet::log::set_log_hook(|line| LOG.lock().unwrap().push(line.to_string()));
    let file_error = Rc::new(RefCell::new(None));
    let handler = SendsAfterClose {
        file_error: file_error.clone(),
    };
    Reactor::run(move |r| {
        r.add_timer(HANG_GUARD, |r| r.stop());
        let server = r.start_server("127.0.0.1:0", || Quiet)?;
        let addr = r.server_addr(server)?.as_inet().unwrap();
        r.connect(addr, handler)?;
        Ok(())
    })
    .unwrap();
    let err = file_error.borrow_mut().take().expect("send_file failed");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(
        err.to_string()
            .starts_with("cannot open /nonexistent-packet-test-dir/file.txt: "),
        "{err}"
    );
    let log = LOG.lock().unwrap();
    // One line for the run of two sends to the same closed connection.
    let drops: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("sent after it closed were dropped"))
        .collect();
    assert_eq!(drops.len(), 1, "{log:?}");
    assert!(
        drops[0].starts_with("connection #") && drops[0].contains(": 7 bytes sent"),
        "{log:?}"
    );
}

/// Greets and hangs up; its own `reconnect_after` must be refused.
struct Greeter {
    refused: Rc<RefCell<Vec<String>>>,
}
impl Handler for Greeter {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.send_data(b"hello\n");
        conn.close_connection_after_writing();
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, _reason: &CloseReason) {
        if let Err(e) = conn.reconnect_after(Duration::from_millis(1)) {
            self.refused.borrow_mut().push(e.to_string());
        }
    }
}

/// Keeps connecting to `addr`: refused twice (then it starts the server
/// there), greeted three times. Its counters survive every reconnect.
struct Persistent {
    addr: SocketAddr,
    retry: Backoff,
    refusals: u32,
    greetings: u32,
    refused_by_accepted: Rc<RefCell<Vec<String>>>,
    done: Rc<RefCell<(u32, u32)>>,
}
impl Handler for Persistent {
    fn connection_completed(&mut self, _conn: &mut Connection<'_>) {
        self.retry.reset();
    }
    fn receive_data(&mut self, _conn: &mut Connection<'_>, data: &[u8]) {
        assert_eq!(data, b"hello\n");
        self.greetings += 1;
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        if let CloseReason::ConnectFailed(_) = reason {
            self.refusals += 1;
            if self.refusals == 2 {
                let refused = self.refused_by_accepted.clone();
                conn.reactor()
                    .start_server(self.addr, move || Greeter {
                        refused: refused.clone(),
                    })
                    .unwrap();
            }
        }
        *self.done.borrow_mut() = (self.refusals, self.greetings);
        if self.greetings == 3 {
            conn.reactor().stop();
        } else {
            conn.reconnect_after(self.retry.next_delay()).unwrap();
        }
    }
}

#[test]
fn reconnect_after_keeps_the_handler_and_its_address() {
    let addr = free_addr();
    let done = Rc::new(RefCell::new((0, 0)));
    let refused = Rc::new(RefCell::new(Vec::new()));
    let client = Persistent {
        addr,
        retry: Backoff::new(Duration::from_millis(5), Duration::from_millis(50)),
        refusals: 0,
        greetings: 0,
        refused_by_accepted: refused.clone(),
        done: done.clone(),
    };
    Reactor::run(move |r| {
        r.add_timer(HANG_GUARD, |r| r.stop());
        r.connect(addr, client)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(*done.borrow(), (2, 3));
    let refused = refused.borrow();
    assert!(!refused.is_empty());
    assert!(
        refused
            .iter()
            .all(|e| e.contains("was accepted, not connected: it cannot reconnect")),
        "{refused:?}"
    );
}

#[test]
fn backoff_doubles_up_to_its_maximum_and_starts_over() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
    let bases = [100, 200, 400, 500, 500];
    for base in bases {
        let d = b.next_delay();
        let base = Duration::from_millis(base);
        assert!(d <= base && d >= base * 3 / 4, "{d:?} for {base:?}");
    }
    b.reset();
    let d = b.next_delay();
    assert!(d <= Duration::from_millis(100) && d >= Duration::from_millis(75));
}

#[cfg(feature = "tls")]
#[test]
fn tls_files_are_named_in_their_errors() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let cert = format!("{dir}/localhost.crt");
    let missing = format!("{dir}/missing.key");
    let err = packet::tls::server_config_from_pem_files(&cert, &missing).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read the TLS private key from {missing}: ")),
        "{err}"
    );
    let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let err = packet::tls::server_config_from_pem_files(not_pem, &missing).unwrap_err();
    assert!(
        err.to_string() == format!("no certificate in {not_pem}"),
        "{err}"
    );
}
