use super::*;
use crate::test_rng::Rng;

const FORMATS: [HeaderFormat; 2] = [HeaderFormat::Classic, HeaderFormat::Compact];

fn encode_all(format: HeaderFormat, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        encode_frame(format, frame, &mut out).unwrap();
    }
    out
}

/// Feeds `chunks` in order, collecting frames, stopping at the first error.
fn decode_chunks<'a>(
    decoder: &mut FrameDecoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    let mut frames = Vec::new();
    for chunk in chunks {
        if let Err(err) = decoder.decode(chunk, |f| frames.push(f.to_vec())) {
            return (frames, Err(err));
        }
    }
    (frames, Ok(()))
}

fn decode_whole(
    decoder: &mut FrameDecoder,
    bytes: &[u8],
) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    decode_chunks(decoder, [bytes])
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn classic_is_ruby_compatible() {
    let mut out = Vec::new();
    encode_frame(HeaderFormat::Classic, b"hello", &mut out).unwrap();
    assert_eq!(out, b"000000005hello");
    let mut dec = FrameDecoder::new(HeaderFormat::Classic);
    let (frames, res) = decode_whole(&mut dec, b"000000005hello000000012hello world!");
    res.unwrap();
    assert_eq!(frames, [&b"hello"[..], b"hello world!"]);
}

#[test]
fn compact_header_lengths() {
    for (len, header) in [
        (0usize, vec![0u8]),
        (1, vec![1]),
        (127, vec![0x7f]),
        (128, vec![0x80, 0x01]),
        (300, vec![0xac, 0x02]),
        (16_383, vec![0xff, 0x7f]),
        (16_384, vec![0x80, 0x80, 0x01]),
    ] {
        let h = FrameEncoder::default().header(len).unwrap();
        assert_eq!(h.as_bytes(), header, "len {len}");
        assert_eq!(HeaderFormat::Compact.header_len(len), header.len());
    }
    let big = FrameEncoder::default().with_max_frame_len(usize::MAX);
    assert_eq!(big.header(usize::MAX).unwrap().as_bytes(), varint(u64::MAX));
    assert_eq!(HeaderFormat::Compact.header_len(usize::MAX), MAX_VARINT_LEN);
}

#[test]
fn encoder_headers_match_definitions() {
    let classic = FrameEncoder::new(HeaderFormat::Classic).with_max_frame_len(usize::MAX);
    let compact = FrameEncoder::new(HeaderFormat::Compact).with_max_frame_len(usize::MAX);
    let mut rng = Rng(11);
    let mut values: Vec<u64> = (0..100_000).map(|_| rng.next() % 1_000_000_000).collect();
    values.extend((0..10).map(|d| d * 111_111_111));
    values.extend((0..9).flat_map(|e| [10u64.pow(e) - 1, 10u64.pow(e), 10u64.pow(e) + 1]));
    for value in values {
        let len = value as usize;
        assert_eq!(
            classic.header(len).unwrap().as_bytes(),
            format!("{value:09}").as_bytes()
        );
        assert_eq!(compact.header(len).unwrap().as_bytes(), varint(value));
        let wide = rng.next() >> (rng.next() % 64);
        assert_eq!(
            compact.header(wide as usize).unwrap().as_bytes(),
            varint(wide)
        );
    }
}

#[test]
fn classic_fast_path_matches_bytewise() {
    // The SWAR parser against the byte-wise definition, over a spread of
    // values and every digit in every position.
    let mut rng = Rng(7);
    let mut values: Vec<u64> = (0..10).map(|d| d * 111_111_111).collect();
    values.extend((0..20_000).map(|_| rng.next() % 1_000_000_000));
    values.extend([1, 9, 10, 99, 100, 12_345_678, 123_456_789, 999_999_999]);
    for value in values {
        let header = format!("{value:09}");
        let mut dec = FrameDecoder::new(HeaderFormat::Classic).with_max_frame_len(0);
        let (_, res) = decode_whole(&mut dec, header.as_bytes());
        let expect = if value == 0 {
            Ok(())
        } else {
            Err(FrameError::FrameTooLong { len: value, max: 0 })
        };
        assert_eq!(res, expect, "{header}");
        // Byte-wise path: split so the fast path never sees a whole header.
        let mut dec = FrameDecoder::new(HeaderFormat::Classic).with_max_frame_len(0);
        let (_, res) = decode_chunks(&mut dec, [&header.as_bytes()[..1], &header.as_bytes()[1..]]);
        assert_eq!(res, expect, "{header} split");
    }
}

#[test]
fn empty_payload() {
    for format in FORMATS {
        let wire = encode_all(format, &[vec![], vec![], b"x".to_vec(), vec![]]);
        let (frames, res) = decode_whole(&mut FrameDecoder::new(format), &wire);
        res.unwrap();
        assert_eq!(frames, [vec![], vec![], b"x".to_vec(), vec![]]);
    }
}

#[test]
fn empty_chunks_are_harmless() {
    for format in FORMATS {
        let wire = encode_all(format, &[b"abc".to_vec()]);
        let mut dec = FrameDecoder::new(format);
        let (mid, end) = wire.split_at(2);
        let (frames, res) = decode_chunks(&mut dec, [&[][..], mid, &[], &[], end, &[]]);
        res.unwrap();
        assert_eq!(frames, [b"abc".to_vec()]);
    }
}

#[test]
fn max_length_boundary() {
    for format in FORMATS {
        for max in [0usize, 1, 127, 128, 1000] {
            let enc = FrameEncoder::new(format).with_max_frame_len(max);
            let at_max = vec![0xa5; max];
            let mut wire = Vec::new();
            enc.encode(&at_max, &mut wire).unwrap();
            assert_eq!(
                enc.encode(&vec![0; max + 1], &mut wire),
                Err(FrameError::PayloadTooLong { len: max + 1, max })
            );
            // A frame of exactly the max decodes, whole or byte by byte.
            let mut dec = FrameDecoder::new(format).with_max_frame_len(max);
            let (frames, res) = decode_whole(&mut dec, &wire);
            res.unwrap();
            assert_eq!(frames, [&at_max[..]]);
            let (frames, res) = decode_chunks(&mut dec, wire.chunks(1));
            res.unwrap();
            assert_eq!(frames, [&at_max[..]]);

            // One more is refused as soon as the header is complete, before
            // any payload arrives.
            let over = FrameEncoder::new(format).header(max + 1).unwrap();
            let mut dec = FrameDecoder::new(format).with_max_frame_len(max);
            let (frames, res) = decode_whole(&mut dec, over.as_bytes());
            assert!(frames.is_empty());
            assert_eq!(
                res,
                Err(FrameError::FrameTooLong {
                    len: max as u64 + 1,
                    max
                })
            );
        }
    }
}

#[test]
fn default_max_is_16_mib() {
    assert_eq!(DEFAULT_MAX_FRAME_LEN, 16 << 20);
    for format in FORMATS {
        let dec = FrameDecoder::new(format);
        assert_eq!(dec.max_frame_len(), 16 << 20);
        let over = FrameEncoder::new(format)
            .with_max_frame_len(usize::MAX)
            .header((16 << 20) + 1)
            .unwrap();
        let mut dec = FrameDecoder::new(format);
        assert_eq!(
            decode_whole(&mut dec, over.as_bytes()).1,
            Err(FrameError::FrameTooLong {
                len: (16 << 20) + 1,
                max: 16 << 20
            })
        );
    }
}

#[test]
fn classic_encoder_limit() {
    let enc = FrameEncoder::new(HeaderFormat::Classic).with_max_frame_len(usize::MAX);
    assert_eq!(enc.max_frame_len(), CLASSIC_MAX_FRAME_LEN);
    assert_eq!(enc.header(999_999_999).unwrap().as_bytes(), b"999999999");
    assert_eq!(
        enc.header(1_000_000_000),
        Err(FrameError::PayloadTooLong {
            len: 1_000_000_000,
            max: 999_999_999
        })
    );
}

#[test]
fn classic_max_header_never_preallocates() {
    // A header announcing 999 999 999 bytes followed by a few bytes must
    // not make the decoder reserve anything near that.
    let mut dec =
        FrameDecoder::new(HeaderFormat::Classic).with_max_frame_len(CLASSIC_MAX_FRAME_LEN);
    let (frames, res) = decode_whole(&mut dec, b"999999999abc");
    res.unwrap();
    assert!(frames.is_empty());
    assert!(dec.has_partial_frame());
    assert!(
        dec.buffer_capacity() < 1024,
        "capacity {}",
        dec.buffer_capacity()
    );
    for _ in 0..10 {
        dec.decode(&[0; 1000], |_| unreachable!()).unwrap();
    }
    // Twice what arrived, plus alignment padding.
    let capacity = dec.buffer_capacity();
    assert!(capacity <= 2 * (10_003 + 64), "capacity {capacity}");
}

#[test]
fn straddle_buffer_growth_is_bounded_and_reused() {
    let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let wire = encode_all(HeaderFormat::Compact, &[payload.clone(), payload.clone()]);
    let mut dec = FrameDecoder::default();
    let mut seen = 0usize;
    let mut frames = Vec::new();
    for chunk in wire.chunks(777) {
        dec.decode(chunk, |f| frames.push(f.to_vec())).unwrap();
        seen += chunk.len();
        // Never more than twice what has arrived, never more than the frame
        // (give or take the alignment padding).
        assert!(dec.buffer_capacity() <= (2 * seen).max(777) + 2 * 64);
        assert!(dec.buffer_capacity() <= payload.len() + 64);
    }
    assert_eq!(frames, [payload.clone(), payload.clone()]);
    assert!((payload.len()..payload.len() + 64).contains(&dec.buffer_capacity()));
    dec.shrink_buffer_to(0);
    assert_eq!(dec.buffer_capacity(), 0);
}

#[test]
fn header_split_at_every_position() {
    for format in FORMATS {
        for len in [0usize, 1, 5, 127, 128, 300, 16_384, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let wire = encode_all(format, &[payload.clone(), b"next".to_vec()]);
            let header_len = format.header_len(len);
            for a in 0..=header_len + 1 {
                for b in a..=header_len + 1 {
                    let mut dec = FrameDecoder::new(format);
                    let chunks = [&wire[..a], &wire[a..b], &wire[b..]];
                    let (frames, res) = decode_chunks(&mut dec, chunks);
                    res.unwrap();
                    assert_eq!(
                        frames,
                        [payload.clone(), b"next".to_vec()],
                        "{format:?} {len} {a} {b}"
                    );
                    assert!(!dec.has_partial_frame());
                }
            }
        }
    }
}

#[test]
fn many_frames_in_one_chunk_are_borrowed() {
    for format in FORMATS {
        let frames: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; i % 200]).collect();
        let wire = encode_all(format, &frames);
        let mut dec = FrameDecoder::new(format);
        let mut got = Vec::new();
        let range = wire.as_ptr_range();
        dec.decode(&wire, |f| {
            // Borrowed from the chunk, not copied.
            assert!(f.is_empty() || range.contains(&f.as_ptr()));
            got.push(f.to_vec());
        })
        .unwrap();
        assert_eq!(got, frames);
        assert_eq!(
            dec.buffer_capacity(),
            0,
            "nothing straddled, nothing allocated"
        );
    }
}

#[test]
fn one_byte_at_a_time() {
    for format in FORMATS {
        let frames: Vec<Vec<u8>> = [0usize, 1, 127, 128, 129, 1000, 3]
            .iter()
            .map(|&n| (0..n).map(|i| i as u8 ^ 0x5a).collect())
            .collect();
        let wire = encode_all(format, &frames);
        let mut dec = FrameDecoder::new(format);
        let (got, res) = decode_chunks(&mut dec, wire.chunks(1));
        res.unwrap();
        assert_eq!(got, frames);
    }
}

#[test]
fn truncated_stream_reports_partial_frame() {
    for format in FORMATS {
        let wire = encode_all(format, &[b"hello".to_vec()]);
        for cut in 0..wire.len() {
            let mut dec = FrameDecoder::new(format);
            let (frames, res) = decode_whole(&mut dec, &wire[..cut]);
            res.unwrap();
            assert!(frames.is_empty());
            assert_eq!(dec.has_partial_frame(), cut > 0);
        }
    }
}

#[test]
fn garbage_after_valid_frame() {
    let mut dec = FrameDecoder::new(HeaderFormat::Classic);
    let (frames, res) = decode_whole(&mut dec, b"000000002ok0000x0001");
    assert_eq!(frames, [b"ok".to_vec()]);
    assert_eq!(
        res,
        Err(FrameError::InvalidDigit {
            byte: b'x',
            position: 4
        })
    );

    let mut dec = FrameDecoder::default().with_max_frame_len(100);
    let (frames, res) = decode_whole(&mut dec, b"\x02ok\xff\xff\x01");
    assert_eq!(frames, [b"ok".to_vec()]);
    assert_eq!(
        res,
        Err(FrameError::FrameTooLong {
            len: 32767,
            max: 100
        })
    );
}

#[test]
fn classic_non_digit_everywhere() {
    for position in 0..9u8 {
        for byte in [b'/', b':', b' ', b'-', b'+', 0, 0xff, b'a'] {
            let mut header = *b"000000003";
            header[usize::from(position)] = byte;
            let expect = Err(FrameError::InvalidDigit { byte, position });
            let mut dec = FrameDecoder::new(HeaderFormat::Classic);
            assert_eq!(decode_whole(&mut dec, &header).1, expect);
            // Same through the byte-wise path.
            let mut dec = FrameDecoder::new(HeaderFormat::Classic);
            assert_eq!(decode_chunks(&mut dec, header.chunks(1)).1, expect);
            // Reported as soon as the bad byte arrives.
            let mut dec = FrameDecoder::new(HeaderFormat::Classic);
            assert_eq!(
                decode_whole(&mut dec, &header[..=usize::from(position)]).1,
                expect
            );
        }
    }
}

#[test]
fn varint_errors() {
    let unlimited = || FrameDecoder::default().with_max_frame_len(usize::MAX);
    // More than ten bytes.
    let eleven = [0x80u8; 11];
    assert_eq!(
        decode_whole(&mut unlimited(), &eleven).1,
        Err(FrameError::VarintOverflow)
    );
    // Ten bytes whose last carries more than bit 63.
    let mut over = [0xffu8; 10];
    over[9] = 0x02;
    assert_eq!(
        decode_whole(&mut unlimited(), &over).1,
        Err(FrameError::VarintOverflow)
    );
    // u64::MAX itself is representable, and refused only as too long.
    let max = varint(u64::MAX);
    assert_eq!(max.len(), 10);
    let res = decode_whole(&mut FrameDecoder::default(), &max).1;
    assert_eq!(
        res,
        Err(FrameError::FrameTooLong {
            len: u64::MAX,
            max: DEFAULT_MAX_FRAME_LEN
        })
    );
    let mut dec = unlimited();
    assert_eq!(decode_whole(&mut dec, &max).1, Ok(()));
    assert!(dec.has_partial_frame());
    // Over the max.
    let res = decode_whole(
        &mut FrameDecoder::default().with_max_frame_len(127),
        &[0x80, 0x01],
    )
    .1;
    assert_eq!(res, Err(FrameError::FrameTooLong { len: 128, max: 127 }));
    // Overlong: zero as two bytes, 1 as three.
    for bad in [&[0x80u8, 0x00][..], &[0x81, 0x80, 0x00]] {
        assert_eq!(
            decode_whole(&mut unlimited(), bad).1,
            Err(FrameError::VarintOverlong)
        );
        assert_eq!(
            decode_chunks(&mut unlimited(), bad.chunks(1)).1,
            Err(FrameError::VarintOverlong)
        );
    }
}

#[test]
fn error_is_sticky_until_reset() {
    for format in FORMATS {
        let bad: &[u8] = match format {
            HeaderFormat::Classic => b"00000000z",
            HeaderFormat::Compact => &[0xff; 11],
        };
        let good = encode_all(format, &[b"fine".to_vec()]);
        let mut dec = FrameDecoder::new(format).with_max_frame_len(usize::MAX);
        let err = decode_whole(&mut dec, bad).1.unwrap_err();
        for _ in 0..3 {
            let (frames, res) = decode_whole(&mut dec, &good);
            assert!(frames.is_empty());
            assert_eq!(res, Err(err));
            assert!(!dec.has_partial_frame());
        }
        dec.reset();
        let (frames, res) = decode_whole(&mut dec, &good);
        res.unwrap();
        assert_eq!(frames, [b"fine".to_vec()]);
    }
}

#[test]
fn reset_drops_partial_frame() {
    let mut dec = FrameDecoder::default();
    dec.decode(b"\x05he", |_| unreachable!()).unwrap();
    assert!(dec.has_partial_frame());
    dec.reset();
    assert!(!dec.has_partial_frame());
    let (frames, res) = decode_whole(&mut dec, b"\x02hi");
    res.unwrap();
    assert_eq!(frames, [b"hi".to_vec()]);
}

#[test]
fn error_converts_to_io_invalid_data() {
    let err = FrameError::InvalidDigit {
        byte: b'x',
        position: 3,
    };
    assert_eq!(
        err.to_string(),
        "classic frame header byte 3 is 0x78, not an ASCII digit"
    );
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    for err in [
        FrameError::FrameTooLong { len: 9, max: 8 },
        FrameError::VarintOverlong,
        FrameError::VarintOverflow,
        FrameError::PayloadTooLong { len: 9, max: 8 },
    ] {
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn random_round_trip() {
    for format in FORMATS {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ format as u64);
        for _ in 0..2000 {
            let count = rng.index(20);
            let frames: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    // Mostly short payloads, sometimes around the one- and
                    // two-byte varint edges, sometimes large.
                    let len = match rng.index(10) {
                        0 => 120 + rng.index(16),
                        1 => 16_370 + rng.index(30),
                        2 => rng.index(100_000),
                        _ => rng.index(64),
                    };
                    (0..len).map(|_| rng.next() as u8).collect()
                })
                .collect();
            let wire = encode_all(format, &frames);
            // Random chunking, including empty chunks and one-byte runs.
            let mut chunks = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let take = match rng.index(4) {
                    0 => rng.index(3),
                    1 => rng.index(20),
                    2 => rng.index(5000),
                    _ => rng.index(rest.len() + 1),
                }
                .min(rest.len());
                let (chunk, tail) = rest.split_at(take);
                chunks.push(chunk);
                rest = tail;
            }
            let mut dec = FrameDecoder::new(format);
            let (got, res) = decode_chunks(&mut dec, chunks);
            res.unwrap();
            assert_eq!(got, frames);
            assert!(!dec.has_partial_frame());
        }
    }
}

#[cfg(feature = "objects")]
mod objects {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Hello { name: String, pid: u32 },
        Job(u64, Vec<u8>),
        Maybe(Option<Box<Msg>>),
        Quit,
    }

    fn decode_all(
        dec: &mut MessageDecoder<Msg>,
        chunks: &[&[u8]],
    ) -> Vec<Result<Msg, MessageError>> {
        let mut got = Vec::new();
        for chunk in chunks {
            dec.decode(chunk, |m| got.push(m)).unwrap();
        }
        got
    }

    #[test]
    fn round_trip() {
        let msgs = vec![
            Msg::Hello {
                name: "worker".into(),
                pid: 42,
            },
            Msg::Job(7, vec![1; 200]),
            Msg::Job(u64::MAX, vec![9; 70_000]),
            Msg::Maybe(Some(Box::new(Msg::Quit))),
            Msg::Maybe(None),
            Msg::Quit,
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            encode_message(m, &mut wire).unwrap();
        }
        // It is plain Compact framing underneath.
        let mut frames = Vec::new();
        FrameDecoder::default()
            .decode(&wire, |f| frames.push(f.to_vec()))
            .unwrap();
        assert_eq!(frames.len(), msgs.len());
        for (frame, msg) in frames.iter().zip(&msgs) {
            assert_eq!(frame, &postcard::to_allocvec(msg).unwrap());
        }
        for split in [1, 2, 3, 7, 64, 1000, wire.len()] {
            let chunks: Vec<&[u8]> = wire.chunks(split).collect();
            let got = decode_all(&mut MessageDecoder::new(), &chunks);
            let want: Vec<_> = msgs.iter().cloned().map(Ok).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn encode_moves_payload_for_long_headers() {
        // Payloads of 127, 128 and 16 384+ bytes need 1, 2 and 3 header
        // bytes; the in-place move must keep the bytes intact and appending
        // must not disturb what was already in the buffer.
        for n in [0usize, 120, 126, 127, 128, 16_380, 16_384, 20_000] {
            let value = vec![0xabu8; n];
            let mut wire = b"prefix".to_vec();
            encode_message(&value, &mut wire).unwrap();
            assert_eq!(&wire[..6], b"prefix");
            let mut frames = Vec::new();
            FrameDecoder::default()
                .decode(&wire[6..], |f| frames.push(f.to_vec()))
                .unwrap();
            assert_eq!(frames, [postcard::to_allocvec(&value).unwrap()]);
            assert_eq!(decode_message::<Vec<u8>>(&frames[0]), Ok(value));
        }
    }

    #[test]
    fn garbage_frame_then_valid_frame() {
        let mut wire = Vec::new();
        encode_message(&Msg::Quit, &mut wire).unwrap();
        encode_frame(HeaderFormat::Compact, &[0xff, 0xff, 0xff], &mut wire).unwrap(); // bad variant
        encode_frame(HeaderFormat::Compact, &[], &mut wire).unwrap(); // unexpected end
        encode_frame(HeaderFormat::Compact, &[3, 0, 0], &mut wire).unwrap(); // Quit + trailing
        encode_message(
            &Msg::Hello {
                name: "b".into(),
                pid: 1,
            },
            &mut wire,
        )
        .unwrap();
        for split in [1, 4, wire.len()] {
            let chunks: Vec<&[u8]> = wire.chunks(split).collect();
            let got = decode_all(&mut MessageDecoder::new(), &chunks);
            assert_eq!(got.len(), 5);
            assert_eq!(got[0], Ok(Msg::Quit));
            assert!(matches!(got[1], Err(MessageError::Decode(_))));
            assert!(matches!(got[2], Err(MessageError::Decode(_))));
            assert_eq!(got[3], Err(MessageError::TrailingBytes { len: 2 }));
            assert_eq!(
                got[4],
                Ok(Msg::Hello {
                    name: "b".into(),
                    pid: 1
                })
            );
        }
        let err = decode_message::<Msg>(&[9]).unwrap_err();
        assert!(err.to_string().starts_with("cannot deserialize message"));
        assert_eq!(
            std::io::Error::from(err).kind(),
            std::io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn frame_error_is_fatal() {
        let mut dec = MessageDecoder::<Msg>::new().with_max_frame_len(10);
        let mut wire = Vec::new();
        encode_message(&Msg::Job(1, vec![0; 100]), &mut wire).unwrap();
        let res = dec.decode(&wire, |_| unreachable!());
        assert!(matches!(res, Err(FrameError::FrameTooLong { .. })));
        assert_eq!(dec.decode(&[1, 3], |_| unreachable!()), res);
        dec.reset();
        let mut got = Vec::new();
        dec.decode(&[1, 3], |m| got.push(m)).unwrap();
        assert_eq!(got, [Ok(Msg::Quit)]);
    }

    #[test]
    fn unencodable_message_leaves_buffer_alone() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0..3u8).filter(|_| true))
            }
        }
        let mut wire = b"keep".to_vec();
        let err = encode_message(&Unsized, &mut wire).unwrap_err();
        assert!(matches!(err, MessageError::Encode(_)));
        assert_eq!(wire, b"keep");

        let huge = vec![0u8; DEFAULT_MAX_FRAME_LEN];
        let err = encode_message(&huge, &mut wire).unwrap_err();
        assert!(matches!(
            err,
            MessageError::Frame(FrameError::PayloadTooLong { .. })
        ));
        assert_eq!(wire, b"keep");
    }
}
