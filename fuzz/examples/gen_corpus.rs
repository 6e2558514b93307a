//! Writes the committed seed corpora: `cargo run --example gen_corpus` in
//! `fuzz/`. Seeds are named `seed-*` so that only they are tracked.

use std::fs;
use std::path::Path;

use packet::codec::{
    encode_frame, encode_message, FrameDecoder, FrameEncoder, HeaderFormat, DEFAULT_MAX_FRAME_LEN,
};
use packet_fuzz::{sample_messages, FrameInput, FuzzMsg, Level, MAX_MAX};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let frames_dir = root.join("frame_decoder");
    let messages_dir = root.join("message_decode");
    fs::create_dir_all(&frames_dir).unwrap();
    fs::create_dir_all(&messages_dir).unwrap();

    for format in [HeaderFormat::Classic, HeaderFormat::Compact] {
        let tag = format!("{format:?}").to_lowercase();
        let input = |max, chunk_lens, stream| {
            FrameInput {
                format,
                max,
                chunk_lens,
                stream,
            }
            .to_bytes()
        };
        // Edge lengths, whole and split across chunks.
        let mut stream = Vec::new();
        for len in [0usize, 1, 127, 128, 129, 5] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            encode_frame(format, &payload, &mut stream).unwrap();
        }
        write(
            &frames_dir,
            &format!("{tag}-edges"),
            &input(MAX_MAX, &[], &stream),
        );
        write(
            &frames_dir,
            &format!("{tag}-edges-bytewise"),
            &input(MAX_MAX, &[1], &stream),
        );
        write(
            &frames_dir,
            &format!("{tag}-edges-split"),
            &input(200, &[3, 0, 50, 7], &stream),
        );
        // A frame of exactly the max, then one over it.
        let mut stream = Vec::new();
        let enc = FrameEncoder::new(format).with_max_frame_len(128);
        enc.encode(&[0xaa; 128], &mut stream).unwrap();
        stream.extend_from_slice(FrameEncoder::new(format).header(129).unwrap().as_bytes());
        write(
            &frames_dir,
            &format!("{tag}-max"),
            &input(128, &[100], &stream),
        );
        // Garbage after a valid frame.
        let mut stream = Vec::new();
        encode_frame(format, b"ok", &mut stream).unwrap();
        stream.extend_from_slice(b"00x\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f");
        write(
            &frames_dir,
            &format!("{tag}-garbage"),
            &input(MAX_MAX, &[2, 5], &stream),
        );
    }
    // A Classic header announcing the largest frame Ruby can frame.
    let huge = FrameInput {
        format: HeaderFormat::Classic,
        max: MAX_MAX,
        chunk_lens: &[],
        stream: b"999999999",
    };
    write(&frames_dir, "classic-999999999", &huge.to_bytes());

    // Messages: each alone as a bare payload, and all as one framed stream.
    let mut stream = Vec::new();
    for (i, message) in sample_messages().iter().enumerate() {
        let mut wire = Vec::new();
        encode_message(message, &mut wire).unwrap();
        let mut bare = vec![0u8];
        FrameDecoder::default()
            .decode(&wire, |payload| bare.extend_from_slice(payload))
            .unwrap();
        write(&messages_dir, &format!("bare-{i}"), &bare);
        stream.extend_from_slice(&wire);
    }
    // Headers alone announcing 999 999 999 bytes and one over the default
    // maximum: nothing may be allocated for them.
    let mut header = vec![1u8];
    let unlimited = FrameEncoder::new(HeaderFormat::Compact).with_max_frame_len(usize::MAX);
    header.extend_from_slice(unlimited.header(999_999_999).unwrap().as_bytes());
    write(&messages_dir, "header-999999999", &header);
    header.truncate(1);
    header.extend_from_slice(
        unlimited
            .header(DEFAULT_MAX_FRAME_LEN + 1)
            .unwrap()
            .as_bytes(),
    );
    write(&messages_dir, "header-over-max", &header);
    // Messages whose payloads are 0, 127 and 128 bytes long, the edges of
    // the one-byte header.
    let mut edges = vec![1u8];
    encode_frame(HeaderFormat::Compact, &[], &mut edges).unwrap();
    for target in [127, 128] {
        let message = (0..)
            .map(|n| FuzzMsg::Log {
                level: Level::Info,
                text: "y".repeat(n),
                flag: false,
                ch: 'a',
            })
            .find(|m| postcard_len(m) == target)
            .unwrap();
        encode_message(&message, &mut edges).unwrap();
    }
    write(&messages_dir, "edges", &edges);

    let mut framed = vec![1 | (7 << 1)];
    framed.extend_from_slice(&stream);
    write(&messages_dir, "stream", &framed);
}

fn postcard_len(message: &FuzzMsg) -> usize {
    let mut wire = Vec::new();
    encode_message(message, &mut wire).unwrap();
    let mut len = 0;
    FrameDecoder::default()
        .decode(&wire, |payload| len = payload.len())
        .unwrap();
    len
}
