//! Typed messages: serde values as postcard payloads in Compact frames.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use postcard::ser_flavors::Flavor;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(doc)]
use super::frame::DEFAULT_MAX_FRAME_LEN;
use super::frame::{FrameDecoder, FrameEncoder, FrameError, HeaderFormat};

/// Why a typed message could not be encoded or decoded.
///
/// When decoding, each frame's message error is reported on its own and the
/// stream stays in sync: the next frame decodes normally. Converts into an
/// [`io::Error`] of kind [`io::ErrorKind::InvalidData`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// The serialized message is too long for a frame.
    Frame(FrameError),
    /// The value could not be serialized (postcard cannot represent it, e.g.
    /// a sequence of unknown length).
    Encode(PostcardError),
    /// The frame's payload is not a valid encoding of the message type.
    Decode(PostcardError),
    /// The message was decoded but did not use the whole payload, which
    /// means the sender used another message type.
    TrailingBytes {
        /// How many payload bytes were left over.
        len: usize,
    },
    /// The message was encoded from another type than the one it is
    /// decoded as (worker messages carry a type fingerprint; see
    /// [`crate::worker::WorkerMessage`]). Postcard alone would decode it
    /// into a wrong value: a `u32` 42 read as an `i32` is 21.
    WrongType {
        /// The type the receiver asked for.
        expected: String,
        /// The type the sender encoded, by name when this process knows
        /// it, otherwise by its fingerprint.
        got: String,
    },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Frame(err) => write!(f, "cannot frame message: {err}"),
            MessageError::Encode(err) => write!(f, "cannot serialize message: {err}"),
            MessageError::Decode(err) => write!(f, "cannot deserialize message: {err}"),
            MessageError::TrailingBytes { len } => {
                write!(f, "message payload has {len} unused trailing bytes")
            }
            MessageError::WrongType { expected, got } => {
                write!(f, "wrong message type: expected `{expected}`, got `{got}`")
            }
        }
    }
}

impl std::error::Error for MessageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MessageError::Frame(err) => Some(err),
            MessageError::Encode(err) | MessageError::Decode(err) => Some(err),
            MessageError::TrailingBytes { .. } | MessageError::WrongType { .. } => None,
        }
    }
}

impl From<FrameError> for MessageError {
    fn from(err: FrameError) -> Self {
        MessageError::Frame(err)
    }
}

impl From<MessageError> for io::Error {
    fn from(err: MessageError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

/// An error reported by the postcard serializer. Kept opaque so that
/// postcard stays an implementation detail; its `Display` says what went
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostcardError(postcard::Error);

impl fmt::Display for PostcardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for PostcardError {}

impl PostcardError {
    /// Wraps a postcard error for the crate's other message encoders (the
    /// worker channels).
    #[cfg(feature = "workers")]
    pub(crate) fn new(err: postcard::Error) -> Self {
        PostcardError(err)
    }
}

/// Appends the payload straight to the caller's buffer, so that a message
/// is serialized without an intermediate allocation.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Flavor for AppendTo<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `message` to `out` as one Compact frame whose payload is its
/// postcard encoding, limited to [`DEFAULT_MAX_FRAME_LEN`]. On error `out`
/// is left as it was.
///
/// ```
/// use packet::codec::{encode_message, MessageDecoder};
///
/// let mut wire = Vec::new();
/// encode_message(&("job", 7u32), &mut wire).unwrap();
/// assert_eq!(wire, b"\x05\x03job\x07"); // header, then postcard
///
/// let mut decoder = MessageDecoder::<(String, u32)>::new();
/// let mut got = Vec::new();
/// decoder.decode(&wire, |msg| got.push(msg)).unwrap();
/// assert_eq!(got, [Ok(("job".to_string(), 7))]);
/// ```
pub fn encode_message<T>(message: &T, out: &mut Vec<u8>) -> Result<(), MessageError>
where
    T: Serialize + ?Sized,
{
    let start = out.len();
    // The payload length is known only afterwards. Most messages are short,
    // so one header byte is reserved and the payload is moved up in place
    // only when a longer header turns out to be needed.
    out.push(0);
    let payload_start = out.len();
    if let Err(err) = postcard::serialize_with_flavor(message, AppendTo(out)) {
        out.truncate(start);
        return Err(MessageError::Encode(PostcardError(err)));
    }
    let payload_len = out.len() - payload_start;
    let header = match FrameEncoder::new(HeaderFormat::Compact).header(payload_len) {
        Ok(header) => header,
        Err(err) => {
            out.truncate(start);
            return Err(MessageError::Frame(err));
        }
    };
    let header = header.as_bytes();
    let extra = header.len() - 1;
    if extra > 0 {
        out.resize(out.len() + extra, 0);
        out.copy_within(
            payload_start..payload_start + payload_len,
            payload_start + extra,
        );
    }
    out[start..start + header.len()].copy_from_slice(header);
    Ok(())
}

/// Decodes one frame's payload as a `T`, requiring the whole payload to be
/// used.
pub fn decode_message<T: DeserializeOwned>(payload: &[u8]) -> Result<T, MessageError> {
    match postcard::take_from_bytes(payload) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(MessageError::TrailingBytes { len: rest.len() }),
        Err(err) => Err(MessageError::Decode(PostcardError(err))),
    }
}

/// Incremental decoder of typed messages written by [`encode_message`]: a
/// [`FrameDecoder`] for Compact frames with postcard on top.
///
/// A malformed frame header is fatal, as for [`FrameDecoder`]; a payload
/// that is not a valid `T` only yields an `Err` for that message.
///
/// Memory use follows the input: a frame is buffered only as its bytes
/// arrive, and serde caps what a sequence's announced length may
/// preallocate. Postcard has no nesting limit, though, so a *recursive*
/// message type (one containing `Box<Self>`, say) lets a hostile peer
/// exhaust the stack with deeply nested input; keep message types
/// non-recursive or the maximum frame length small.
///
/// ```
/// use packet::codec::{encode_frame, encode_message, HeaderFormat, MessageDecoder};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum Msg {
///     Run { id: u32, args: Vec<String> },
///     Quit,
/// }
///
/// let mut wire = Vec::new();
/// encode_message(&Msg::Run { id: 1, args: vec!["a".into()] }, &mut wire).unwrap();
/// encode_frame(HeaderFormat::Compact, b"\xff garbage", &mut wire).unwrap();
/// encode_message(&Msg::Quit, &mut wire).unwrap();
///
/// let mut decoder = MessageDecoder::<Msg>::new();
/// let mut got = Vec::new();
/// for chunk in wire.chunks(3) {
///     decoder.decode(chunk, |msg| got.push(msg)).unwrap();
/// }
/// assert_eq!(got.len(), 3);
/// assert_eq!(got[0], Ok(Msg::Run { id: 1, args: vec!["a".into()] }));
/// assert!(got[1].is_err());
/// assert_eq!(got[2], Ok(Msg::Quit));
/// ```
pub struct MessageDecoder<T> {
    frames: FrameDecoder,
    // `fn() -> T`: the decoder produces `T`s but holds none, so it is Send
    // and Sync whatever `T` is.
    _message: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for MessageDecoder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageDecoder")
            .field("frames", &self.frames)
            .finish()
    }
}

impl<T> Clone for MessageDecoder<T> {
    fn clone(&self) -> Self {
        MessageDecoder {
            frames: self.frames.clone(),
            _message: PhantomData,
        }
    }
}

impl<T> Default for MessageDecoder<T> {
    fn default() -> Self {
        MessageDecoder::new()
    }
}

impl<T> MessageDecoder<T> {
    /// A decoder with the default maximum frame length,
    /// [`DEFAULT_MAX_FRAME_LEN`].
    pub const fn new() -> Self {
        MessageDecoder {
            frames: FrameDecoder::new(HeaderFormat::Compact),
            _message: PhantomData,
        }
    }

    /// Sets the maximum frame payload length.
    pub fn with_max_frame_len(self, max: usize) -> Self {
        MessageDecoder {
            frames: self.frames.with_max_frame_len(max),
            _message: PhantomData,
        }
    }

    /// The underlying frame decoder, e.g. to check
    /// [`has_partial_frame`](FrameDecoder::has_partial_frame) at end of
    /// stream.
    pub const fn frames(&self) -> &FrameDecoder {
        &self.frames
    }

    /// Forgets any partial frame and any error, ready for a new stream.
    pub fn reset(&mut self) {
        self.frames.reset();
    }
}

impl<T: DeserializeOwned> MessageDecoder<T> {
    /// Feeds `chunk`, calling `on_message` with each message it completes,
    /// or with the error that frame's payload gave. Returns a [`FrameError`]
    /// when the stream itself is corrupt, as [`FrameDecoder::decode`] does.
    pub fn decode<F>(&mut self, chunk: &[u8], mut on_message: F) -> Result<(), FrameError>
    where
        F: FnMut(Result<T, MessageError>),
    {
        self.frames
            .decode(chunk, |payload| on_message(decode_message(payload)))
    }
}
