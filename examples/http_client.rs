//! The seed's simple HTTP client.
//!
//! ```text
//! cargo run --release --example http_client -- HOST:PORT /path
//! ```
//!
//! Connects, sends a `GET`, prints the response as it arrives and exits when
//! the server closes the connection.

use std::io::{self, Write};

use packet::{CloseReason, Connection, Handler, Reactor};

struct Get {
    host: String,
    path: String,
    failed: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Handler for Get {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.path, self.host
        );
        conn.send_data(request.as_bytes());
    }

    fn receive_data(&mut self, _conn: &mut Connection<'_>, data: &[u8]) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(data);
        let _ = out.flush();
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        if !reason.is_clean() {
            eprintln!("http_client: {reason}");
            self.failed.set(true);
        }
        conn.reactor().stop();
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(host), path) = (args.next(), args.next().unwrap_or_else(|| "/".into())) else {
        eprintln!("usage: http_client HOST:PORT [/path]");
        std::process::exit(2);
    };
    let failed = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = failed.clone();
    Reactor::run(|reactor| {
        let name = host
            .rsplit_once(':')
            .map_or(host.as_str(), |(h, _)| h)
            .to_string();
        reactor.connect(
            host.as_str(),
            Get {
                host: name,
                path,
                failed: flag,
            },
        )?;
        Ok(())
    })?;
    if failed.get() {
        std::process::exit(1);
    }
    Ok(())
}
