//! Bytes on a worker channel, as a broken or hostile process holding one
//! end may send them, into the decoders both ends use: the channel's
//! framing (`Compact`, 64 MiB limit) and the message layout of
//! `src/worker/wire.rs` (through `packet::worker::fuzz_decode_wire`).
//!
//! Input: `[mode] [chunk] [bytes...]`.
//! - mode % 3 == 0: `bytes` is one frame's payload, decoded as a message.
//! - mode % 3 == 1: `bytes` is a channel stream, fed in pieces of `chunk`
//!   bytes (0: at once); every frame is decoded as a message, and the
//!   first error ends the stream, as the master and the worker do.
//! - mode % 3 == 2: a well-formed message is built from `bytes` following
//!   the documented layout; it must decode, every cut inside its fields
//!   must be `Truncated`, and a byte after a message without payload must
//!   be `TrailingBytes`.
//!
//! Errors are fine; panics, an error without a message, and buffering out
//! of proportion to the bytes received are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packet::codec::{FrameDecoder, HeaderFormat};
use packet::worker::{fuzz_decode_wire, WireError};

/// The channel's frame limit (`wire::MAX_MESSAGE`).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

fn check(result: Result<(), WireError>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "{e:?} has no message");
            false
        }
    }
}

fn stream(chunk: usize, bytes: &[u8]) {
    let mut decoder = FrameDecoder::new(HeaderFormat::Compact).with_max_frame_len(MAX_MESSAGE);
    let mut broken = false;
    let mut fed = 0;
    for piece in bytes.chunks(chunk.max(1)) {
        fed += piece.len();
        let framed = decoder.decode(piece, |frame| {
            if !broken && !check(fuzz_decode_wire(frame)) {
                broken = true;
            }
        });
        // What the decoder holds is paid for by bytes received, whatever
        // a header announces (up to 64 MiB here).
        assert!(
            decoder.buffer_capacity() <= 2 * (fed + 64),
            "{} bytes buffered after {fed} received",
            decoder.buffer_capacity()
        );
        if let Err(e) = framed {
            assert!(!e.to_string().is_empty());
            return;
        }
        if broken {
            return;
        }
    }
}

/// Takes values out of the fuzzer's bytes, with zeros once they run out.
struct Source<'a>(&'a [u8]);

impl Source<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u64(&mut self) -> u64 {
        // Mostly small numbers, sometimes any: both widths of varint.
        let width = self.byte() % 9;
        (0..width).fold(0, |v, _| v << 8 | u64::from(self.byte()))
    }
    fn text(&mut self) -> String {
        let len = usize::from(self.byte() % 40);
        let n = len.min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }
    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0).to_vec()
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// A well-formed message: its bytes, how many of them are fields (the
/// rest is payload), and whether it has a payload at all.
fn build(src: &mut Source<'_>) -> (Vec<u8>, usize, bool) {
    let kind = src.byte() % 13 + 1;
    let mut out = vec![kind];
    let opt = |src: &mut Source<'_>| (src.byte() & 1 == 1).then(|| src.text());
    let payload = match kind {
        1 | 2 | 7 => {
            put_varint(&mut out, src.u64());
            true
        }
        3 | 4 => true,
        5 => {
            put_str(&mut out, &src.text());
            false
        }
        6 => {
            put_varint(&mut out, src.u64());
            put_str(&mut out, &src.text());
            put_opt_str(&mut out, opt(src).as_deref());
            true
        }
        8 => false,
        9 | 12 => {
            put_varint(&mut out, src.u64());
            put_str(&mut out, &src.text());
            false
        }
        10 => {
            put_varint(&mut out, src.u64());
            put_str(&mut out, &src.text());
            put_opt_str(&mut out, opt(src).as_deref());
            put_opt_str(&mut out, opt(src).as_deref());
            true
        }
        11 => {
            put_varint(&mut out, src.u64());
            put_varint(&mut out, u64::from(src.u64() as u32));
            false
        }
        13 => {
            put_varint(&mut out, u64::from(src.u64() as u32));
            let status = src.u64() as i64;
            put_varint(&mut out, ((status << 1) ^ (status >> 63)) as u64);
            false
        }
        _ => unreachable!(),
    };
    let fields = out.len();
    if payload {
        out.extend(src.rest());
    }
    (out, fields, payload)
}

fn well_formed(bytes: &[u8]) {
    let (msg, fields, payload) = build(&mut Source(bytes));
    assert_eq!(fuzz_decode_wire(&msg), Ok(()), "well-formed {msg:?}");
    for cut in 0..fields {
        assert_eq!(
            fuzz_decode_wire(&msg[..cut]),
            Err(WireError::Truncated),
            "{msg:?} cut at {cut}"
        );
    }
    if !payload {
        let mut longer = msg.clone();
        longer.push(0);
        assert_eq!(fuzz_decode_wire(&longer), Err(WireError::TrailingBytes));
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, bytes @ ..] = data else {
        return;
    };
    match mode % 3 {
        0 => {
            check(fuzz_decode_wire(bytes));
        }
        1 => stream(
            if *chunk == 0 {
                bytes.len()
            } else {
                usize::from(*chunk)
            },
            bytes,
        ),
        _ => well_formed(bytes),
    }
});
