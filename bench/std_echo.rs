//! Std-only blocking echo server: the size baseline of `bench/compare.sh`
//! (its `size` part builds it with `rustc -O` and strips it).
//!
//! ```text
//! rustc -O --edition 2021 bench/std_echo.rs -o bench/build/std_echo
//! bench/build/std_echo [ADDR]
//! ```
//!
//! One thread per connection, `TCP_NODELAY`, one 64 KiB buffer per
//! connection; prints `listening on ADDR` once bound.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11006".to_string());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                thread::spawn(move || serve(stream));
            }
            Err(e) => eprintln!("std_echo: accept: {e}"),
        }
    }
    Ok(())
}
