//! Arbitrary bytes into the typed message decoder: errors are fine, panics
//! and allocations out of proportion to the input are not (run with
//! `-rss_limit_mb` / `-malloc_limit_mb`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use packet::codec::{decode_message, encode_message, MessageDecoder, MessageError};
use packet_fuzz::FuzzMsg;

/// Whatever decodes must survive a round trip through the encoder.
fn check(message: Result<FuzzMsg, MessageError>) {
    if let Ok(message) = message {
        let mut wire = Vec::new();
        encode_message(&message, &mut wire).expect("a decoded message re-encodes");
        let mut again = Vec::new();
        MessageDecoder::<FuzzMsg>::new()
            .decode(&wire, |m| again.push(m))
            .expect("an encoded message is well framed");
        assert_eq!(again, [Ok(message)]);
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: bit 0 picks a bare payload (reaches postcard directly) or
    // a framed stream; the rest of it is where the stream is split.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(decode_message::<FuzzMsg>(rest));
        return;
    }
    let (a, b) = rest.split_at(usize::from(mode >> 1).min(rest.len()));
    let mut decoder = MessageDecoder::<FuzzMsg>::new();
    for chunk in [a, b] {
        if decoder.decode(chunk, check).is_err() {
            break;
        }
    }
});
