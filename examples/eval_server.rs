//! Eval server: the seed README's "complete case", with a safe evaluator.
//!
//! ```text
//! cargo run --release --example eval_server [ADDR] [--workers N]
//! ```
//!
//! Listens on 127.0.0.1:11006 unless `ADDR` is given and prints
//! `listening on ADDR` once the server is bound and its workers run. For
//! every line a client sends, the master asks a pool of `eval_worker`
//! processes (2 unless `--workers N`) to evaluate it as an arithmetic
//! expression, and writes back the result and a newline, or
//! `error: <reason>` and a newline. SIGTERM or SIGINT (Ctrl-C, also sent to
//! the whole process group) stops it gracefully: lines being evaluated are
//! answered (or get `error: the reactor is stopping: ...` after 30 s;
//! SIGQUIT gives them 300 s, a second SIGTERM stops at once), then the
//! workers and the fork server exit and are reaped. SIGHUP is ignored.
//! SIGUSR2 upgrades the binary (README, "Operations"; `examples/common/pool.rs`):
//! the new master gets the listener, reports ready once its own workers
//! run, and this one drains as on SIGTERM. A listener in `LISTEN_FDS`
//! (socket activation) is served instead of binding `ADDR`.
//!
//! The workers run with the library's supervision defaults
//! (`packet::worker::DEFAULT_HEARTBEAT`, 15 s, and
//! `DEFAULT_ASK_TIMEOUT`, 60 s): a worker that hangs or is stopped is
//! killed and replaced within about 20 s, and the lines it held get
//! `error: worker eval_worker[N] died before replying (...)`; a worker that
//! keeps dying is restarted with a growing delay, never given up.
//!
//! # The expression language
//!
//! ```text
//! expr    := term (('+' | '-') term)*
//! term    := unary (('*' | '/' | '%') unary)*
//! unary   := ('+' | '-')* primary
//! primary := number | '(' expr ')'
//! number  := digits ['.' [digits]] [exponent] | '.' digits [exponent]
//! exponent:= ('e' | 'E') ['+' | '-'] digits
//! ```
//!
//! - Whitespace is ignored; a trailing `\r` (CRLF clients) is dropped.
//! - The usual precedence: unary signs bind tightest, then `* / %`, then
//!   `+ -`; binary operators are left-associative (`10-4-3` is `3`).
//! - Arithmetic is IEEE double precision (`f64`): integers are exact up to
//!   2^53. `/` is true division (`10/4` is `2.5`).
//! - `%` is the floored modulo of Ruby and Python: the result has the sign
//!   of the divisor (`-7 % 3` is `2`, `7 % -3` is `-2`, `5.5 % 2` is `1.5`).
//! - Division or modulo by zero is `error: division by zero`; a result or
//!   literal that is not a finite number (`1e308*10`, `1e999`) is an error.
//! - Results are printed in their shortest exact form: whole numbers without
//!   a decimal point (`14`, and `0` for `-0`), others like `2.5` or
//!   `0.30000000000000004`; magnitudes of 1e21 and above or below 1e-6 in
//!   exponent notation (`1e21`, `1.5e-7`).
//! - Syntax errors name the problem and its position (1-based, in
//!   characters): `error: unexpected character 'f' at position 1`. A syntax
//!   error anywhere wins over an arithmetic error (`1/0 +` is a syntax
//!   error).
//!
//! Nothing is executed but arithmetic: the evaluator is a pure function. It
//! cannot overflow its stack: parentheses nest at most [`MAX_DEPTH`] deep
//! and unary signs are folded in a loop. A line is at most [`MAX_LINE`]
//! bytes: a longer one, or a client sending that many bytes without a
//! newline, gets an error and its connection is closed, so no client can
//! grow the server's memory.
//!
//! # How the master keeps replies in order
//!
//! A pool answers out of order (the least busy instance gets each line),
//! but the client must get its answers in line order. The client's
//! connection asks for its replies in order
//! ([`Connection::set_ordered_replies`]), so each answer waits for those
//! of the lines before it; an error the master produces itself (a worker
//! that is down, a line too long) is filed through the same queue
//! ([`Connection::send_local_reply`]), so it keeps its place too.
//!
//! Reading pauses while [`MAX_IN_FLIGHT`] lines are with the workers and
//! while the client does not read its answers (the outbound queue is over
//! its high-water mark). A client that shuts
//! down its side right after sending (a script, `tests/eval_server.rs`) still gets every answer: the
//! connection stays open after the end of its input until the last one is
//! written. A last line without a newline is not evaluated.

use packet::line::{LineContext, LineError, LineHandler, LineProtocol};
use packet::worker::{Worker, WorkerContext, WorkerMessage, WorkerRegistry, WorkerSpec};
use packet::{Connection, Handler, Reactor, Reply};
use std::fmt;
use std::io;

#[path = "common/ordered.rs"]
mod ordered;
#[path = "common/pool.rs"]
mod pool;

use ordered::Pipeline;

/// The worker's registered name, as in the seed (`set_worker_name :eval_worker`).
const WORKER: &str = "eval_worker";

/// How deep parentheses may nest.
pub const MAX_DEPTH: usize = 256;

/// The longest line accepted, in bytes, without its newline.
pub const MAX_LINE: usize = 64 * 1024;

/// Lines of one connection that may be with the workers at once.
pub const MAX_IN_FLIGHT: usize = 128;

// ----- the evaluator: a pure function -----

/// Why an expression has no value.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// Nothing but whitespace.
    Empty,
    /// The line is not UTF-8.
    InvalidUtf8,
    /// A character that is no part of the language.
    UnexpectedChar {
        /// The character.
        ch: char,
        /// Its 1-based position.
        pos: usize,
    },
    /// A number that does not parse (`1e`, `.`).
    MalformedNumber {
        /// Its text.
        text: String,
        /// Its 1-based position.
        pos: usize,
    },
    /// A number literal too large to represent (`1e999`).
    NumberTooLarge {
        /// Its text.
        text: String,
        /// Its 1-based position.
        pos: usize,
    },
    /// The grammar wanted `expected` where `found` is.
    Expected {
        /// What would have fit.
        expected: &'static str,
        /// What is there (`end of line`, `'*'`, `number '2'`).
        found: String,
        /// Its 1-based position.
        pos: usize,
    },
    /// A `(` without its `)`.
    Unclosed {
        /// Where the `(` is.
        open: usize,
        /// What is where the `)` should be.
        found: String,
        /// Its 1-based position.
        pos: usize,
    },
    /// A `)` without a `(`.
    Unmatched {
        /// Its 1-based position.
        pos: usize,
    },
    /// Parentheses nested deeper than [`MAX_DEPTH`].
    TooDeep {
        /// The position of the first `(` past the limit.
        pos: usize,
    },
    /// Division or modulo by zero.
    DivisionByZero,
    /// A result that is not a finite number.
    NotFinite,
    /// A line longer than [`MAX_LINE`] bytes.
    LineTooLong,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Empty => f.write_str("empty expression"),
            EvalError::InvalidUtf8 => f.write_str("the line is not valid UTF-8"),
            EvalError::UnexpectedChar { ch, pos } => {
                write!(f, "unexpected character {ch:?} at position {pos}")
            }
            EvalError::MalformedNumber { text, pos } => {
                write!(f, "malformed number '{text}' at position {pos}")
            }
            EvalError::NumberTooLarge { text, pos } => {
                write!(f, "number '{text}' at position {pos} is too large")
            }
            EvalError::Expected {
                expected,
                found,
                pos,
            } => write!(f, "expected {expected} at position {pos}, found {found}"),
            EvalError::Unclosed { open, found, pos } => write!(
                f,
                "expected ')' at position {pos} to close '(' at position {open}, found {found}"
            ),
            EvalError::Unmatched { pos } => write!(f, "unmatched ')' at position {pos}"),
            EvalError::TooDeep { pos } => write!(
                f,
                "parentheses nested deeper than {MAX_DEPTH} levels at position {pos}"
            ),
            EvalError::DivisionByZero => f.write_str("division by zero"),
            EvalError::NotFinite => f.write_str("result is not a finite number (overflow)"),
            EvalError::LineTooLong => write!(f, "line longer than {MAX_LINE} bytes"),
        }
    }
}

impl std::error::Error for EvalError {}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Num(f64),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Open,
    Close,
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    /// 0-based index of its first character.
    start: usize,
    /// 0-based index past its last character.
    end: usize,
}

struct Parser<'a> {
    src: &'a [char],
    /// Where the lexer goes on.
    at: usize,
    peeked: Option<Token>,
    depth: usize,
    /// The first arithmetic error; reported only if the syntax is correct.
    deferred: Option<EvalError>,
}

impl Parser<'_> {
    fn lex(&mut self) -> Result<Token, EvalError> {
        let src = self.src;
        while self.at < src.len() && src[self.at].is_whitespace() {
            self.at += 1;
        }
        let start = self.at;
        let Some(&c) = src.get(start) else {
            return Ok(Token {
                kind: Kind::End,
                start,
                end: start,
            });
        };
        let single = |kind| Token {
            kind,
            start,
            end: start + 1,
        };
        let token = match c {
            '+' => single(Kind::Plus),
            '-' => single(Kind::Minus),
            '*' => single(Kind::Star),
            '/' => single(Kind::Slash),
            '%' => single(Kind::Percent),
            '(' => single(Kind::Open),
            ')' => single(Kind::Close),
            '0'..='9' | '.' => return self.number(start),
            ch => return Err(EvalError::UnexpectedChar { ch, pos: start + 1 }),
        };
        self.at = token.end;
        Ok(token)
    }

    fn number(&mut self, start: usize) -> Result<Token, EvalError> {
        let src = self.src;
        let digits = |mut i: usize| {
            while i < src.len() && src[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        let int_end = digits(start);
        let mut end = int_end;
        let mut valid = int_end > start;
        if src.get(end) == Some(&'.') {
            let frac_end = digits(end + 1);
            valid |= frac_end > end + 1;
            end = frac_end;
        }
        if valid && matches!(src.get(end), Some('e' | 'E')) {
            let mut i = end + 1;
            if matches!(src.get(i), Some('+' | '-')) {
                i += 1;
            }
            let exp_end = digits(i);
            valid = exp_end > i;
            end = if valid { exp_end } else { i };
        }
        let text: String = src[start..end].iter().collect();
        if !valid {
            return Err(EvalError::MalformedNumber {
                text,
                pos: start + 1,
            });
        }
        let value: f64 = text.parse().map_err(|_| EvalError::MalformedNumber {
            text: text.clone(),
            pos: start + 1,
        })?;
        if !value.is_finite() {
            return Err(EvalError::NumberTooLarge {
                text,
                pos: start + 1,
            });
        }
        self.at = end;
        Ok(Token {
            kind: Kind::Num(value),
            start,
            end,
        })
    }

    fn peek(&mut self) -> Result<Token, EvalError> {
        match self.peeked {
            Some(t) => Ok(t),
            None => {
                let t = self.lex()?;
                self.peeked = Some(t);
                Ok(t)
            }
        }
    }

    fn bump(&mut self) {
        self.peeked = None;
    }

    /// How a token is named in an error.
    fn describe(&self, t: Token) -> String {
        match t.kind {
            Kind::End => "end of line".to_string(),
            Kind::Num(_) => {
                let text: String = self.src[t.start..t.end].iter().collect();
                format!("number '{text}'")
            }
            _ => format!("'{}'", self.src[t.start]),
        }
    }

    fn expected(&self, expected: &'static str, t: Token) -> EvalError {
        EvalError::Expected {
            expected,
            found: self.describe(t),
            pos: t.start + 1,
        }
    }

    /// Keeps the first arithmetic error, and goes on parsing with NaN.
    fn check(&mut self, value: f64) -> f64 {
        if !value.is_finite() && self.deferred.is_none() {
            self.deferred = Some(EvalError::NotFinite);
        }
        value
    }

    fn expr(&mut self) -> Result<f64, EvalError> {
        let mut value = self.term()?;
        loop {
            let op = self.peek()?.kind;
            if !matches!(op, Kind::Plus | Kind::Minus) {
                return Ok(value);
            }
            self.bump();
            let rhs = self.term()?;
            value = self.check(if op == Kind::Plus {
                value + rhs
            } else {
                value - rhs
            });
        }
    }

    fn term(&mut self) -> Result<f64, EvalError> {
        let mut value = self.unary()?;
        loop {
            let op = self.peek()?.kind;
            if !matches!(op, Kind::Star | Kind::Slash | Kind::Percent) {
                return Ok(value);
            }
            self.bump();
            let rhs = self.unary()?;
            if op != Kind::Star && rhs == 0.0 {
                self.deferred.get_or_insert(EvalError::DivisionByZero);
                value = f64::NAN;
                continue;
            }
            value = self.check(match op {
                Kind::Star => value * rhs,
                Kind::Slash => value / rhs,
                _ => floored_mod(value, rhs),
            });
        }
    }

    /// Signs are folded in a loop: `------1` costs no stack.
    fn unary(&mut self) -> Result<f64, EvalError> {
        let mut negate = false;
        loop {
            match self.peek()?.kind {
                Kind::Plus => self.bump(),
                Kind::Minus => {
                    negate = !negate;
                    self.bump();
                }
                _ => break,
            }
        }
        let value = self.primary()?;
        Ok(if negate { -value } else { value })
    }

    fn primary(&mut self) -> Result<f64, EvalError> {
        let t = self.peek()?;
        match t.kind {
            Kind::Num(v) => {
                self.bump();
                Ok(v)
            }
            Kind::Open => {
                if self.depth == MAX_DEPTH {
                    return Err(EvalError::TooDeep { pos: t.start + 1 });
                }
                self.depth += 1;
                self.bump();
                let value = self.expr()?;
                let close = self.peek()?;
                if close.kind != Kind::Close {
                    return Err(EvalError::Unclosed {
                        open: t.start + 1,
                        found: self.describe(close),
                        pos: close.start + 1,
                    });
                }
                self.bump();
                self.depth -= 1;
                Ok(value)
            }
            _ => Err(self.expected("a number or '('", t)),
        }
    }
}

/// Ruby's and Python's `%`: the remainder of floored division, with the
/// sign of the divisor. `b` is not zero.
pub fn floored_mod(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r != 0.0 && (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

/// Evaluates one expression (see the module docs for the language).
///
/// # Errors
/// Any [`EvalError`] but [`EvalError::InvalidUtf8`] and
/// [`EvalError::LineTooLong`], which concern the raw line.
pub fn evaluate(input: &str) -> Result<f64, EvalError> {
    let src: Vec<char> = input.chars().collect();
    if src.iter().all(|c| c.is_whitespace()) {
        return Err(EvalError::Empty);
    }
    let mut p = Parser {
        src: &src,
        at: 0,
        peeked: None,
        depth: 0,
        deferred: None,
    };
    let value = p.expr()?;
    let t = p.peek()?;
    match t.kind {
        Kind::End => {}
        Kind::Close => return Err(EvalError::Unmatched { pos: t.start + 1 }),
        _ => return Err(p.expected("an operator or end of line", t)),
    }
    match p.deferred {
        Some(e) => Err(e),
        None => Ok(value),
    }
}

/// Formats a finite result: the shortest text that reads back as the same
/// number, without a decimal point when whole, `0` for `-0`, and in
/// exponent notation from 1e21 up and below 1e-6.
pub fn format_number(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    let abs = x.abs();
    if (1e-6..1e21).contains(&abs) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// The reply to one raw line (without its newline): the result, or
/// `error: <reason>`.
pub fn answer(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let result = if line.len() > MAX_LINE {
        Err(EvalError::LineTooLong)
    } else {
        std::str::from_utf8(line)
            .map_err(|_| EvalError::InvalidUtf8)
            .and_then(evaluate)
    };
    match result {
        Ok(v) => format_number(v),
        Err(e) => format!("error: {e}"),
    }
}

// ----- the worker -----

/// Evaluates the lines it is asked; runs in each worker process.
struct EvalWorker;

impl Worker for EvalWorker {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, message: WorkerMessage) {
        let reply = match message.decode::<Vec<u8>>() {
            Ok(line) => answer(&line),
            Err(e) => format!("error: bad request: {e}"),
        };
        // Only an encoding failure can happen here, and a String encodes.
        let _ = ctx.send_data(&reply);
    }
}

// ----- the master -----

/// The master's handler of one client: every line goes to the pool, and
/// the answers go back in line order.
struct EvalClient {
    lines: Pipeline,
}

impl Handler for EvalClient {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_ordered_replies(true);
    }

    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        // A worker's answer or one made here; an error is this line's
        // (the worker died or is not keeping up).
        let text = reply
            .decode::<String>()
            .unwrap_or_else(|e| format!("error: {e}"));
        conn.send_data(format!("{text}\n").as_bytes());
        self.lines.answered(conn);
    }

    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        // Answers still due go out before the close.
        self.lines.input_ended(conn);
    }

    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        self.lines.outbound(conn, true);
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        self.lines.outbound(conn, false);
    }
}

impl LineHandler for EvalClient {
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.lines.request();
        if let Err(e) = ctx.ask_worker(WORKER, &line.to_vec()) {
            // Not running (restarting after a crash), busy, ...
            ctx.send_local_reply(format!("error: {e}"));
        }
        self.lines.regulate(ctx);
    }

    fn line_error(&mut self, ctx: &mut LineContext<'_>, _error: LineError) {
        // The input ends here (receive_eof follows); the answers to the
        // lines before it still go out first.
        self.lines.request();
        ctx.send_local_reply(format!("error: {}", EvalError::LineTooLong));
    }
}

/// A client's handler: lines of at most [`MAX_LINE`] bytes, `\r\n` or `\n`.
fn eval_client() -> LineProtocol<EvalClient> {
    let lines = Pipeline::new(MAX_IN_FLIGHT);
    LineProtocol::new(EvalClient { lines })
        .strip_cr(true)
        .with_max_line_len(MAX_LINE)
}

fn main() -> io::Result<()> {
    let (addr, n) = pool::parse_args("eval_server", "127.0.0.1:11006");
    let mut listening = pool::Listening::from_env();
    let workers = WorkerRegistry::new()
        .register(WorkerSpec::new(WORKER, || EvalWorker).pool(n))
        .start()?;
    Reactor::run(|reactor| {
        reactor.workers().add(workers)?;
        pool::stop_on_signals(reactor)?;
        let server = listening.start(reactor, addr.as_str(), eval_client)?;
        let bound = reactor.server_addr(server)?;
        // Asks made before the workers run wait for them.
        pool::when_workers_run_then(reactor, WORKER, n, bound, listening)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        match evaluate(input) {
            Ok(v) => format_number(v),
            Err(e) => panic!("{input:?} failed: {e}"),
        }
    }

    fn err(input: &str) -> EvalError {
        match evaluate(input) {
            Ok(v) => panic!("{input:?} gave {v}, expected an error"),
            Err(e) => e,
        }
    }

    fn msg(input: &str) -> String {
        err(input).to_string()
    }

    #[test]
    fn the_briefs_examples() {
        assert_eq!(answer(b"2+3*4"), "14");
        assert_eq!(answer(b"10/4"), "2.5");
        assert_eq!(answer(b"10/5"), "2");
        assert_eq!(answer(b"1/0"), "error: division by zero");
        assert_eq!(
            answer(b"foo"),
            "error: unexpected character 'f' at position 1"
        );
        assert_eq!(answer(b""), "error: empty expression");
        assert_eq!(answer(b"-0"), "0");
    }

    #[test]
    fn numbers() {
        assert_eq!(ok("1"), "1");
        assert_eq!(ok("0"), "0");
        assert_eq!(ok("007"), "7");
        assert_eq!(ok("2.5"), "2.5");
        assert_eq!(ok(".5"), "0.5");
        assert_eq!(ok("5."), "5");
        assert_eq!(ok("1e3"), "1000");
        assert_eq!(ok("1E3"), "1000");
        assert_eq!(ok("2.5e-1"), "0.25");
        assert_eq!(ok("1e+2"), "100");
        assert_eq!(ok(".5e1"), "5");
        assert_eq!(ok("1.e2"), "100");
        assert_eq!(ok("9007199254740992"), "9007199254740992");
        // Underflow to zero is a finite result.
        assert_eq!(ok("1e-400"), "0");
    }

    #[test]
    fn malformed_numbers() {
        assert_eq!(msg("."), "malformed number '.' at position 1");
        assert_eq!(msg("1e"), "malformed number '1e' at position 1");
        assert_eq!(msg("2+1e+"), "malformed number '1e+' at position 3");
        assert_eq!(msg(".e5"), "malformed number '.' at position 1");
        assert_eq!(msg("1e999"), "number '1e999' at position 1 is too large");
        // A second decimal point starts another number.
        assert_eq!(
            msg("1.2.3"),
            "expected an operator or end of line at position 4, found number '.3'"
        );
    }

    #[test]
    fn precedence() {
        assert_eq!(ok("2+3*4"), "14");
        assert_eq!(ok("2*3+4"), "10");
        assert_eq!(ok("(2+3)*4"), "20");
        assert_eq!(ok("2*(3+4)"), "14");
        assert_eq!(ok("1+6/3"), "3");
        assert_eq!(ok("1+7%4"), "4");
        assert_eq!(ok("10-2*3"), "4");
        assert_eq!(ok("2+3*4-5/5"), "13");
    }

    #[test]
    fn left_associativity() {
        assert_eq!(ok("10-4-3"), "3");
        assert_eq!(ok("100/10/5"), "2");
        assert_eq!(ok("2*3%4"), "2");
        assert_eq!(ok("7%4*2"), "6");
        assert_eq!(ok("20%7%4"), "2");
        assert_eq!(ok("8/4*2"), "4");
        assert_eq!(ok("1-1+1"), "1");
    }

    #[test]
    fn unary_signs() {
        assert_eq!(ok("-1"), "-1");
        assert_eq!(ok("+1"), "1");
        assert_eq!(ok("--1"), "1");
        assert_eq!(ok("---1"), "-1");
        assert_eq!(ok("- - - -1"), "1");
        assert_eq!(ok("+-+-1"), "1");
        assert_eq!(ok("2--3"), "5");
        assert_eq!(ok("2---3"), "-1");
        assert_eq!(ok("2*-3"), "-6");
        assert_eq!(ok("-2*-3"), "6");
        assert_eq!(ok("-(2+3)"), "-5");
        assert_eq!(ok("-(-(-(1)))"), "-1");
        // Signs bind tighter than %, as in Ruby and Python: (-3) % 2.
        assert_eq!(ok("-3%2"), "1");
        // A long chain costs no recursion.
        let chain = format!("{}1", "-".repeat(100_001));
        assert_eq!(ok(&chain), "-1");
        let chain = format!("{}1", "-".repeat(100_000));
        assert_eq!(ok(&chain), "1");
    }

    #[test]
    fn true_division() {
        assert_eq!(ok("10/4"), "2.5");
        assert_eq!(ok("1/3"), "0.3333333333333333");
        assert_eq!(ok("-7/2"), "-3.5");
        assert_eq!(ok("10/5"), "2");
    }

    #[test]
    fn floored_modulo() {
        assert_eq!(ok("7%3"), "1");
        assert_eq!(ok("-7%3"), "2");
        assert_eq!(ok("7%-3"), "-2");
        assert_eq!(ok("-7%-3"), "-1");
        assert_eq!(ok("6%3"), "0");
        assert_eq!(ok("-6%3"), "0");
        assert_eq!(ok("5.5%2"), "1.5");
        assert_eq!(ok("-0.5%1"), "0.5");
        assert_eq!(ok("0%5"), "0");
    }

    #[test]
    fn division_by_zero() {
        assert_eq!(err("1/0"), EvalError::DivisionByZero);
        assert_eq!(err("1%0"), EvalError::DivisionByZero);
        assert_eq!(err("0/0"), EvalError::DivisionByZero);
        assert_eq!(err("1/(2-2)"), EvalError::DivisionByZero);
        assert_eq!(err("1/-0"), EvalError::DivisionByZero);
        assert_eq!(err("5%0.0"), EvalError::DivisionByZero);
        assert_eq!(err("1/0*0+3"), EvalError::DivisionByZero);
        assert_eq!(answer(b"1 % 0"), "error: division by zero");
        // A syntax error later in the line wins.
        assert_eq!(
            msg("1/0+"),
            "expected a number or '(' at position 5, found end of line"
        );
    }

    #[test]
    fn non_finite_results() {
        assert_eq!(err("1e308*10"), EvalError::NotFinite);
        assert_eq!(err("-1e308-1e308"), EvalError::NotFinite);
        assert_eq!(err("1e300/1e-300"), EvalError::NotFinite);
        assert_eq!(err("(1e308*10)-(1e308*10)"), EvalError::NotFinite);
        assert_eq!(
            answer(b"1e308+1e308"),
            "error: result is not a finite number (overflow)"
        );
        // Exactly representable extremes are fine.
        assert_eq!(ok("1e308"), "1e308");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_number(14.0), "14");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(-2.5), "-2.5");
        assert_eq!(ok("0.1+0.2"), "0.30000000000000004");
        assert_eq!(ok("0*-1"), "0");
        assert_eq!(ok("-0*5"), "0");
        assert_eq!(ok("1e20"), "100000000000000000000");
        assert_eq!(ok("1e21"), "1e21");
        assert_eq!(ok("-1.5e21"), "-1.5e21");
        assert_eq!(ok("0.000001"), "0.000001");
        assert_eq!(ok("0.00000015"), "1.5e-7");
        assert_eq!(
            ok("123456789012345678901234567890"),
            "1.2345678901234568e29"
        );
    }

    #[test]
    fn whitespace() {
        assert_eq!(ok(" 2 + 3 * 4 "), "14");
        assert_eq!(ok("\t2\t*\t3"), "6");
        assert_eq!(ok("( 1 )"), "1");
        assert_eq!(answer(b"2+2\r"), "4");
        assert_eq!(err("   "), EvalError::Empty);
        assert_eq!(answer(b"\r"), "error: empty expression");
        assert_eq!(
            msg("1 2"),
            "expected an operator or end of line at position 3, found number '2'"
        );
    }

    #[test]
    fn syntax_errors_name_the_problem_and_position() {
        assert_eq!(msg("foo"), "unexpected character 'f' at position 1");
        assert_eq!(msg("2+x"), "unexpected character 'x' at position 3");
        assert_eq!(msg("2 ^ 3"), "unexpected character '^' at position 3");
        assert_eq!(msg("1x"), "unexpected character 'x' at position 2");
        assert_eq!(
            msg("2+"),
            "expected a number or '(' at position 3, found end of line"
        );
        assert_eq!(
            msg("*2"),
            "expected a number or '(' at position 1, found '*'"
        );
        assert_eq!(
            msg("2*/3"),
            "expected a number or '(' at position 3, found '/'"
        );
        assert_eq!(
            msg("()"),
            "expected a number or '(' at position 2, found ')'"
        );
        assert_eq!(
            msg("(1"),
            "expected ')' at position 3 to close '(' at position 1, found end of line"
        );
        assert_eq!(
            msg("((1)"),
            "expected ')' at position 5 to close '(' at position 1, found end of line"
        );
        assert_eq!(
            msg("(1 2)"),
            "expected ')' at position 4 to close '(' at position 1, found number '2'"
        );
        assert_eq!(msg("1)"), "unmatched ')' at position 2");
        assert_eq!(
            msg(")"),
            "expected a number or '(' at position 1, found ')'"
        );
        assert_eq!(
            msg("2(3)"),
            "expected an operator or end of line at position 2, found '('"
        );
        // Positions count characters, not bytes.
        assert_eq!(msg("é+1"), "unexpected character 'é' at position 1");
        assert_eq!(msg("1+é"), "unexpected character 'é' at position 3");
        assert_eq!(msg("1 + 2²"), "unexpected character '²' at position 6");
        // No code is run: anything but arithmetic is a syntax error.
        assert_eq!(
            msg("system('ls')"),
            "unexpected character 's' at position 1"
        );
        assert_eq!(answer(b"\xff\xfe"), "error: the line is not valid UTF-8");
    }

    #[test]
    fn the_leftmost_error_wins() {
        assert_eq!(msg("1/0 + x"), "unexpected character 'x' at position 7");
        assert_eq!(msg("x + 1e"), "unexpected character 'x' at position 1");
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let nested = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(ok(&nested(MAX_DEPTH)), "1");
        assert_eq!(
            err(&nested(MAX_DEPTH + 1)),
            EvalError::TooDeep { pos: MAX_DEPTH + 1 }
        );
        assert_eq!(
            msg(&nested(MAX_DEPTH + 1)),
            "parentheses nested deeper than 256 levels at position 257"
        );
        // Far deeper input, as long as a line may be, fails the same way
        // instead of overflowing the stack.
        let deep = "(".repeat(MAX_LINE);
        assert_eq!(err(&deep), EvalError::TooDeep { pos: MAX_DEPTH + 1 });
        // Depth is nesting, not the number of parentheses.
        let wide = vec!["(1)"; 1000].join("+");
        assert_eq!(ok(&wide), "1000");
        let mixed = format!("{}-1{}", "(-".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(ok(&mixed), "-1");
    }

    #[test]
    fn long_lines() {
        let long = vec![b'1'; MAX_LINE + 1];
        assert_eq!(answer(&long), "error: line longer than 65536 bytes");
        // A long, valid sum just under the limit.
        let sum = vec!["1"; MAX_LINE / 2].join("+");
        assert!(sum.len() <= MAX_LINE);
        assert_eq!(answer(sum.as_bytes()), (MAX_LINE / 2).to_string());
    }
}
