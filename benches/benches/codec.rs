//! Frame codec throughput, side by side with a plain memcpy of the same
//! bytes so that the ratio to memory bandwidth is read off one run.
//!
//! `cargo bench --bench codec -- --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use packet::codec::{encode_frame, FrameDecoder, FrameEncoder, HeaderFormat};

/// Input arrives in chunks of this size, like reads from a socket.
const CHUNK: usize = 64 * 1024;

fn stream(format: HeaderFormat, payload_len: usize, total: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31 + 7) as u8).collect();
    let mut out = Vec::with_capacity(total + payload_len + 16);
    while out.len() < total {
        encode_frame(format, &payload, &mut out).unwrap();
    }
    out
}

/// Decodes `input` in `CHUNK`-sized pieces; the per-frame work is cheap but
/// depends on every frame so it cannot be optimised away.
fn decode(decoder: &mut FrameDecoder, input: &[u8]) -> usize {
    let mut acc = 0usize;
    for chunk in input.chunks(CHUNK) {
        decoder
            .decode(chunk, |frame| {
                acc =
                    acc.wrapping_add(frame.len() + usize::from(frame.first().copied().unwrap_or(0)))
            })
            .unwrap();
    }
    acc
}

/// The baseline: the same bytes, in the same chunks, copied into a reused
/// buffer of `buffer` bytes (the size the decoder's straddle buffer reaches).
fn memcpy(dst: &mut Vec<u8>, input: &[u8], buffer: usize) {
    for chunk in input.chunks(CHUNK) {
        if dst.len() + chunk.len() > buffer {
            dst.clear();
        }
        dst.extend_from_slice(chunk);
    }
}

fn bench_case(c: &mut Criterion, name: &str, payload_len: usize, total: usize) {
    let mut group = c.benchmark_group(name);
    let compact = stream(HeaderFormat::Compact, payload_len, total);
    let classic = stream(HeaderFormat::Classic, payload_len, total);

    let buffer = payload_len.max(CHUNK);
    let mut dst = Vec::with_capacity(buffer);
    group.throughput(Throughput::Bytes(compact.len() as u64));
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            memcpy(&mut dst, black_box(&compact), buffer);
            black_box(dst.as_ptr());
        })
    });

    for (format, input) in [
        (HeaderFormat::Compact, &compact),
        (HeaderFormat::Classic, &classic),
    ] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut decoder = FrameDecoder::new(format);
        group.bench_function(format!("{format:?}").to_lowercase(), |b| {
            b.iter(|| black_box(decode(&mut decoder, black_box(input))))
        });
    }
    group.finish();
}

fn small_frames(c: &mut Criterion) {
    bench_case(c, "decode_64B_frames", 64, 4 << 20);
}

fn large_frames(c: &mut Criterion) {
    // Eight frames: source and buffer stay in L3, as a socket read buffer
    // that was just filled would be, so the copy itself is what is measured.
    bench_case(c, "decode_1MiB_frames", 1 << 20, 8 << 20);
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_64B_frames");
    let payload = [0x5au8; 64];
    let frames = 16 * 1024;
    let mut out = Vec::with_capacity(frames * (64 + 9));
    for format in [HeaderFormat::Compact, HeaderFormat::Classic] {
        let encoder = FrameEncoder::new(format);
        group.throughput(Throughput::Bytes(
            (frames * (64 + format.header_len(64))) as u64,
        ));
        group.bench_function(format!("{format:?}").to_lowercase(), |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..frames {
                    encoder.encode(black_box(&payload), &mut out).unwrap();
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, small_frames, large_frames, encode);
criterion_main!(benches);
