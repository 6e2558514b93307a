//! The eval server example, run as a user runs it: a process of its own
//! with its pool of workers, a client that pipelines lines and half-closes.
//! Checks the answers come back in line order (the pool answers out of
//! order), errors keep their place, and the connection closes only after
//! the last answer.
//!
//! The example is built by cargo (see `util::example::binary`).

mod util;

use util::example::Program;

fn start(workers: usize) -> Program {
    Program::start(
        "eval_server",
        &["127.0.0.1:0", "--workers", &workers.to_string()],
    )
}

#[test]
fn pipelined_lines_are_answered_in_order_after_a_half_close() {
    let server = start(2);
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
    let server = start(2);
    let mut input = b"1+1\n2+2\n".to_vec();
    input.extend(vec![b'1'; 70_000]);
    input.extend_from_slice(b"\n3+3\n");
    let got = server.exchange(&input);
    assert_eq!(got, ["2", "4", "error: line longer than 65536 bytes"]);
}
