//! The incremental decoder, fed arbitrary bytes in arbitrary chunks, must
//! agree with a byte-at-a-time reference decoder written from the format
//! description, and what it accepts must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packet::codec::{FrameDecoder, FrameEncoder, FrameError, HeaderFormat};
use packet_fuzz::FrameInput;

/// What the reference makes of a whole stream.
struct Reference<'a> {
    frames: Vec<&'a [u8]>,
    /// End of the last complete frame.
    accepted: usize,
    /// The error and the offset of the byte that revealed it.
    error: Option<(FrameError, usize)>,
    /// The stream ends inside a frame.
    partial: bool,
}

/// Deliberately naive: one byte at a time, no fast paths.
fn reference(format: HeaderFormat, max: usize, stream: &[u8]) -> Reference<'_> {
    let mut out = Reference {
        frames: Vec::new(),
        accepted: 0,
        error: None,
        partial: false,
    };
    let mut i = 0;
    loop {
        let start = i;
        let mut len: u64 = 0;
        let mut header_bytes = 0;
        loop {
            let Some(&b) = stream.get(i) else {
                out.partial = i > start;
                return out;
            };
            let fail = |e| Some((e, i));
            match format {
                HeaderFormat::Classic => {
                    if !b.is_ascii_digit() {
                        out.error = fail(FrameError::InvalidDigit {
                            byte: b,
                            position: header_bytes,
                        });
                        return out;
                    }
                    len = len * 10 + u64::from(b - b'0');
                    header_bytes += 1;
                    if header_bytes == 9 {
                        break;
                    }
                }
                HeaderFormat::Compact => {
                    if header_bytes == 9 && b > 1 {
                        out.error = fail(FrameError::VarintOverflow);
                        return out;
                    }
                    len |= u64::from(b & 0x7f) << (7 * header_bytes);
                    header_bytes += 1;
                    if b & 0x80 == 0 {
                        if b == 0 && header_bytes > 1 {
                            out.error = fail(FrameError::VarintOverlong);
                            return out;
                        }
                        break;
                    }
                }
            }
            i += 1;
        }
        if len > max as u64 {
            out.error = Some((FrameError::FrameTooLong { len, max }, i));
            return out;
        }
        i += 1;
        let end = i + len as usize;
        let Some(frame) = stream.get(i..end) else {
            out.partial = true;
            return out;
        };
        out.frames.push(frame);
        out.accepted = end;
        i = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = FrameInput::parse(data) else {
        return;
    };
    let expect = reference(input.format, input.max, input.stream);

    let mut decoder = FrameDecoder::new(input.format).with_max_frame_len(input.max);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut offset = 0;
    let mut error = None;
    for chunk in input.chunks() {
        if let Err(e) = decoder.decode(chunk, |f| frames.push(f.to_vec())) {
            error = Some((e, offset, offset + chunk.len()));
            break;
        }
        // Growth is paid for by bytes that arrived, not by headers' claims
        // (allowing for the decoder's cache-line alignment padding).
        assert!(decoder.buffer_capacity() <= 2 * (input.stream.len() + 64));
        offset += chunk.len();
    }

    assert_eq!(frames, expect.frames);
    match (error, expect.error) {
        (None, None) => assert_eq!(decoder.has_partial_frame(), expect.partial),
        (Some((got, from, to)), Some((want, at))) => {
            assert_eq!(got, want);
            // Reported on the chunk holding the offending byte.
            assert!(
                from <= at && at < to,
                "error at {at}, reported on {from}..{to}"
            );
            // And sticky.
            assert_eq!(
                decoder.decode(b"\x00", |_| panic!("frame after error")),
                Err(got)
            );
        }
        (got, want) => panic!("decoder error {got:?}, reference error {want:?}"),
    }

    // The accepted frames are exactly the accepted prefix, re-encoded.
    let encoder = FrameEncoder::new(input.format).with_max_frame_len(input.max);
    let mut wire = Vec::new();
    for frame in &frames {
        encoder
            .encode(frame, &mut wire)
            .expect("accepted frame must be encodable");
    }
    assert_eq!(wire, &input.stream[..expect.accepted]);
});
