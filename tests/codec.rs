//! The codec as another module of the crate (or a user) sees it.

use std::io;

use packet::codec::{encode_frame, FrameDecoder, FrameEncoder, FrameError, HeaderFormat};

fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn codec_types_cross_threads() {
    // Decoders live in per-connection state that a reactor may move.
    assert_send_sync::<FrameDecoder>();
    assert_send_sync::<FrameEncoder>();
    assert_send_sync::<FrameError>();
    #[cfg(feature = "objects")]
    {
        // Holds no T, so even a !Send message type does not taint it.
        assert_send_sync::<packet::codec::MessageDecoder<std::rc::Rc<u8>>>();
        assert_send_sync::<packet::codec::MessageError>();
    }
}

#[test]
fn frame_error_survives_io_error() {
    let mut decoder = FrameDecoder::new(HeaderFormat::Classic);
    let err = decoder.decode(b"12345678x", |_| {}).unwrap_err();
    let io_err = io::Error::from(err);
    assert_eq!(io_err.kind(), io::ErrorKind::InvalidData);
    let inner = io_err
        .get_ref()
        .and_then(|e| e.downcast_ref::<FrameError>());
    assert_eq!(inner, Some(&err));
}

#[test]
fn ruby_packet_bytes_round_trip() {
    // Bytes as Ruby Packet's BinParser writes them for "hello" and "".
    let wire = b"000000005hello000000000";
    let mut frames = Vec::new();
    FrameDecoder::new(HeaderFormat::Classic)
        .decode(wire, |f| frames.push(f.to_vec()))
        .unwrap();
    assert_eq!(frames, [&b"hello"[..], b""]);
    let mut again = Vec::new();
    for frame in &frames {
        encode_frame(HeaderFormat::Classic, frame, &mut again).unwrap();
    }
    assert_eq!(again, wire);
}
