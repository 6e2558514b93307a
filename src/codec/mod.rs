//! Length-prefixed framing: Packet's `BinParser`, turned into a zero-copy
//! incremental decoder plus the matching encoder.
//!
//! Every message between the master and its workers travels as a *frame*: a
//! length header followed by exactly that many payload bytes. This module
//! owns three things:
//!
//! * [`FrameDecoder`], which turns a byte stream delivered in arbitrary
//!   chunks into complete frames, in order;
//! * [`FrameEncoder`] / [`encode_frame`], which write frames;
//! * with the `objects` feature (on by default), typed messages on top:
//!   `encode_message` and `MessageDecoder` carry any serde type as a
//!   [postcard](https://docs.rs/postcard) payload inside a Compact frame.
//!
//! What it must never do: perform I/O (it only sees the byte slices the
//! reactor hands it, so it works with any transport), panic on any input,
//! trust a header's length for an allocation, or loop without consuming
//! input. A malformed header is a [`FrameError`], after which the decoder
//! refuses further input until [`FrameDecoder::reset`], because the stream
//! can no longer be split reliably.
//!
//! # Frame layouts
//!
//! Two header formats exist, chosen per decoder and encoder with
//! [`HeaderFormat`].
//!
//! **Classic** is byte-compatible with Ruby Packet: exactly nine ASCII
//! decimal digits, zero-padded, then the payload. The payload is therefore
//! at most 999 999 999 bytes.
//!
//! ```text
//! +-----+-----+-----+-----+-----+-----+-----+-----+-----+-----------------+
//! | '0' | '0' | '0' | '0' | '0' | '0' | '0' | '0' | '5' | h e l l o       |
//! +-----+-----+-----+-----+-----+-----+-----+-----+-----+-----------------+
//!  \________________ 9 ASCII digits, zero-padded ______/ \_ 5 bytes ______/
//! ```
//!
//! ```
//! use packet::codec::{encode_frame, HeaderFormat};
//!
//! let mut out = Vec::new();
//! encode_frame(HeaderFormat::Classic, b"hello", &mut out).unwrap();
//! assert_eq!(out, b"000000005hello");
//! ```
//!
//! **Compact** (the default) is an unsigned LEB128 varint: seven length bits
//! per byte, least significant group first, the top bit set on every byte
//! but the last. Payloads under 128 bytes cost one header byte. Only the
//! shortest encoding is accepted, so every frame has exactly one encoding.
//!
//! ```text
//! len = 5:      +----------+-----------+
//!               | 0 0000101| h e l l o |
//!               +----------+-----------+
//!
//! len = 300 = 0b10_0101100:
//!               +----------+----------+-------------------+
//!               | 1 0101100| 0 0000010| 300 payload bytes |
//!               +----------+----------+-------------------+
//!                 |  \__ low 7 bits   \__ next 7 bits
//!                 \__ 1: more header bytes follow
//! ```
//!
//! ```
//! use packet::codec::{encode_frame, HeaderFormat};
//!
//! let mut out = Vec::new();
//! encode_frame(HeaderFormat::Compact, b"hello", &mut out).unwrap();
//! assert_eq!(out, b"\x05hello");
//!
//! out.clear();
//! encode_frame(HeaderFormat::Compact, &[7u8; 300], &mut out).unwrap();
//! assert_eq!(out[..2], [0b1_0101100, 0b0_0000010]);
//! assert_eq!(out.len(), 2 + 300);
//! ```
//!
//! # Decoding from a `receive_data` callback
//!
//! [`FrameDecoder::decode`] takes each chunk as it arrives and calls a
//! closure once per complete frame. A frame lying wholly inside the chunk is
//! handed out as a slice of that chunk, with no copy; only a frame that
//! straddles chunks is assembled in the decoder's own buffer, whose
//! allocation is kept for the next one.
//!
//! ```
//! use packet::codec::{FrameDecoder, FrameError, HeaderFormat};
//!
//! struct Worker {
//!     frames: FrameDecoder,
//!     received: Vec<String>,
//! }
//!
//! impl Worker {
//!     fn receive_data(&mut self, data: &[u8]) -> Result<(), FrameError> {
//!         // The closure needs `self` while the decoder is borrowed mutably:
//!         // taking the decoder out for the call is free (no allocation) and
//!         // keeps the borrow checker happy.
//!         let mut frames = std::mem::take(&mut self.frames);
//!         let result = frames.decode(data, |frame| {
//!             self.received.push(String::from_utf8_lossy(frame).into_owned())
//!         });
//!         self.frames = frames;
//!         result
//!     }
//! }
//!
//! let mut worker = Worker {
//!     frames: FrameDecoder::new(HeaderFormat::Classic),
//!     received: Vec::new(),
//! };
//! // Chunks split anywhere, even inside a header.
//! worker.receive_data(b"000000005hel").unwrap();
//! worker.receive_data(b"lo0000").unwrap();
//! worker.receive_data(b"00003bye000000000").unwrap();
//! assert_eq!(worker.received, ["hello", "bye", ""]);
//!
//! // A corrupt header is fatal for the stream until `reset`.
//! assert!(worker.receive_data(b"00000x").is_err());
//! assert!(worker.receive_data(b"000000001!").is_err());
//! worker.frames.reset();
//! worker.receive_data(b"000000001!").unwrap();
//! assert_eq!(worker.received.last().unwrap(), "!");
//! ```

mod frame;
#[cfg(feature = "objects")]
mod message;
#[cfg(test)]
mod tests;

pub use frame::{
    encode_frame, FrameDecoder, FrameEncoder, FrameError, FrameHeader, HeaderFormat,
    CLASSIC_HEADER_LEN, CLASSIC_MAX_FRAME_LEN, DEFAULT_MAX_FRAME_LEN, MAX_VARINT_LEN,
};
#[cfg(feature = "objects")]
pub use message::{decode_message, encode_message, MessageDecoder, MessageError, PostcardError};
