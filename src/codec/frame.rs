//! The frame codec proper: headers, the incremental decoder, the encoder.

use std::fmt;
use std::io;

/// Default maximum payload length of a frame: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Length of a [`HeaderFormat::Classic`] header: nine ASCII digits.
pub const CLASSIC_HEADER_LEN: usize = 9;

/// Largest payload a [`HeaderFormat::Classic`] header can announce.
pub const CLASSIC_MAX_FRAME_LEN: usize = 999_999_999;

/// Longest [`HeaderFormat::Compact`] header: a LEB128 varint carrying 64
/// bits needs ten bytes.
pub const MAX_VARINT_LEN: usize = 10;

/// How a frame announces the length of its payload.
///
/// See the [module documentation](super) for the byte layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HeaderFormat {
    /// Nine zero-padded ASCII decimal digits, as Ruby Packet's `BinParser`
    /// writes them (`000000005hello`).
    Classic,
    /// An unsigned LEB128 varint in its shortest form: one byte for payloads
    /// under 128 bytes.
    #[default]
    Compact,
}

impl HeaderFormat {
    /// Number of header bytes this format spends on a payload of `len`
    /// bytes (whether or not `len` is within any maximum).
    ///
    /// ```
    /// use packet::codec::HeaderFormat;
    ///
    /// assert_eq!(HeaderFormat::Classic.header_len(5), 9);
    /// assert_eq!(HeaderFormat::Compact.header_len(127), 1);
    /// assert_eq!(HeaderFormat::Compact.header_len(128), 2);
    /// ```
    pub const fn header_len(self, len: usize) -> usize {
        match self {
            HeaderFormat::Classic => CLASSIC_HEADER_LEN,
            HeaderFormat::Compact => {
                let bits = usize::BITS - (len | 1).leading_zeros();
                bits.div_ceil(7) as usize
            }
        }
    }
}

/// A framing error: the input (or, when encoding, the payload) cannot be
/// framed.
///
/// Decoding errors are fatal for the stream: once [`FrameDecoder::decode`]
/// has returned one, it returns the same error for every later chunk until
/// [`FrameDecoder::reset`]. Converts into an [`io::Error`] of kind
/// [`io::ErrorKind::InvalidData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameError {
    /// A header announced a payload longer than the decoder's maximum frame
    /// length.
    FrameTooLong {
        /// The length the header announced.
        len: u64,
        /// The decoder's maximum frame length.
        max: usize,
    },
    /// A Classic header contained something other than an ASCII digit.
    InvalidDigit {
        /// The offending byte.
        byte: u8,
        /// Its position within the header, 0 to 8.
        position: u8,
    },
    /// A Compact header was longer than needed for its value (a final byte
    /// of zero after the first), which would give one length two encodings.
    VarintOverlong,
    /// A Compact header ran past ten bytes or past 64 bits.
    VarintOverflow,
    /// The encoder was given a payload longer than its maximum frame length
    /// (for Classic, never more than [`CLASSIC_MAX_FRAME_LEN`]).
    PayloadTooLong {
        /// The payload's length.
        len: usize,
        /// The longest payload the encoder accepts.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::FrameTooLong { len, max } => write!(
                f,
                "frame header announces {len} bytes, over the maximum frame length of {max} bytes"
            ),
            FrameError::InvalidDigit { byte, position } => write!(
                f,
                "classic frame header byte {position} is {byte:#04x}, not an ASCII digit"
            ),
            FrameError::VarintOverlong => {
                f.write_str("compact frame header is not the shortest encoding of its length")
            }
            FrameError::VarintOverflow => {
                f.write_str("compact frame header is longer than 10 bytes or exceeds 64 bits")
            }
            FrameError::PayloadTooLong { len, max } => write!(
                f,
                "payload of {len} bytes is over the maximum frame length of {max} bytes"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for io::Error {
    fn from(err: FrameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

/// Where the decoder stands between two calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a header. `count` header bytes have been seen (0 at a frame
    /// boundary) and `acc` is what they add up to so far.
    Header { count: u8, acc: u64 },
    /// A frame is being assembled in the straddle buffer: its payload
    /// starts after `pad` filler bytes and is complete when the buffer holds
    /// `end` bytes.
    Body { pad: usize, end: usize },
    /// A header was malformed; input is refused until `reset`.
    Failed(FrameError),
}

const BOUNDARY: State = State::Header { count: 0, acc: 0 };

/// Cache line size: the alignment that matters to memcpy.
const ALIGN: usize = 64;

/// Outcome of feeding one header byte.
enum Step {
    More { count: u8, acc: u64 },
    Done(usize),
}

/// Incremental frame decoder: feed it chunks, get complete frames.
///
/// Frames lying wholly inside a chunk are lent straight out of it. A frame
/// that straddles chunks is assembled in an internal buffer that grows only
/// as its bytes arrive (never to the announced length up front; at most
/// twice what has arrived, plus under 64 bytes of cache-line alignment) and
/// whose allocation is reused by later frames.
///
/// ```
/// use packet::codec::{encode_frame, FrameDecoder, HeaderFormat};
///
/// let mut stream = Vec::new();
/// for msg in [&b"ping"[..], b"", b"pong"] {
///     encode_frame(HeaderFormat::Compact, msg, &mut stream).unwrap();
/// }
///
/// let mut decoder = FrameDecoder::default();
/// let mut got = Vec::new();
/// // One byte at a time is slow but legal.
/// for byte in stream.chunks(1) {
///     decoder.decode(byte, |frame| got.push(frame.to_vec())).unwrap();
/// }
/// assert_eq!(got, [&b"ping"[..], b"", b"pong"]);
/// assert!(!decoder.has_partial_frame());
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    format: HeaderFormat,
    max_len: usize,
    state: State,
    /// Assembles frames that straddle chunks; empty between frames.
    buf: Vec<u8>,
}

impl Default for FrameDecoder {
    /// A [`HeaderFormat::Compact`] decoder with [`DEFAULT_MAX_FRAME_LEN`].
    fn default() -> Self {
        FrameDecoder::new(HeaderFormat::Compact)
    }
}

impl FrameDecoder {
    /// A decoder for `format` with the default maximum frame length,
    /// [`DEFAULT_MAX_FRAME_LEN`]. Allocates nothing until a frame straddles
    /// two chunks.
    pub const fn new(format: HeaderFormat) -> Self {
        FrameDecoder {
            format,
            max_len: DEFAULT_MAX_FRAME_LEN,
            state: BOUNDARY,
            buf: Vec::new(),
        }
    }

    /// Sets the maximum payload length; a header announcing more is a
    /// [`FrameError::FrameTooLong`].
    pub const fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_len = max;
        self
    }

    /// The header format this decoder reads.
    pub const fn format(&self) -> HeaderFormat {
        self.format
    }

    /// The maximum payload length this decoder accepts.
    pub const fn max_frame_len(&self) -> usize {
        self.max_len
    }

    /// True when input has stopped inside a frame (in its header or its
    /// payload): if the stream ends now, it ends with a truncated frame.
    pub const fn has_partial_frame(&self) -> bool {
        !matches!(self.state, BOUNDARY | State::Failed(_))
    }

    /// Forgets any partial frame and any error, ready for a new stream. The
    /// buffer's allocation is kept.
    pub fn reset(&mut self) {
        self.state = BOUNDARY;
        self.buf.clear();
    }

    /// Bytes currently allocated for assembling straddling frames; the
    /// decoder's only heap memory.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives back memory held for straddling frames beyond `capacity` bytes,
    /// e.g. after an unusually large frame on a long-lived connection.
    pub fn shrink_buffer_to(&mut self, capacity: usize) {
        self.buf.shrink_to(capacity);
    }

    /// Feeds `chunk`, calling `on_frame` with the payload of each frame it
    /// completes, in stream order. A trailing partial frame is kept for the
    /// next call.
    ///
    /// On a malformed header, the frames before it have already been
    /// delivered and the error is returned; from then on every call returns
    /// the same error without reading its chunk, until [`reset`].
    ///
    /// The slice given to `on_frame` is borrowed from `chunk` when the frame
    /// lies wholly inside it, and from the decoder's buffer otherwise; copy
    /// it if it must outlive the call.
    ///
    /// [`reset`]: FrameDecoder::reset
    pub fn decode<F>(&mut self, chunk: &[u8], mut on_frame: F) -> Result<(), FrameError>
    where
        F: FnMut(&[u8]),
    {
        let rest = match self.state {
            BOUNDARY => chunk,
            State::Failed(err) => return Err(err),
            State::Header { .. } => match self.header_slow(chunk)? {
                None => return Ok(()),
                Some((len, body)) => match self.body(len, body, &mut on_frame) {
                    Some(rest) => rest,
                    None => return Ok(()),
                },
            },
            State::Body { pad, end } => match self.straddle(pad, end, chunk, &mut on_frame) {
                Some(rest) => rest,
                None => return Ok(()),
            },
        };
        match self.format {
            HeaderFormat::Compact => self.frames_compact(rest, &mut on_frame),
            HeaderFormat::Classic => self.frames_classic(rest, &mut on_frame),
        }
    }

    /// The hot loop for Compact streams, entered at a frame boundary.
    fn frames_compact<F>(&mut self, mut rest: &[u8], on_frame: &mut F) -> Result<(), FrameError>
    where
        F: FnMut(&[u8]),
    {
        let max = self.max_len;
        while let Some((&first, after)) = rest.split_first() {
            let (len, body) = if first < 0x80 {
                let len = usize::from(first);
                if len > max {
                    return Err(self.fail(FrameError::FrameTooLong {
                        len: u64::from(first),
                        max,
                    }));
                }
                (len, after)
            } else {
                match self.header_slow(rest)? {
                    Some(header) => header,
                    None => return Ok(()),
                }
            };
            rest = match self.body(len, body, on_frame) {
                Some(rest) => rest,
                None => return Ok(()),
            };
        }
        Ok(())
    }

    /// The hot loop for Classic streams, entered at a frame boundary.
    fn frames_classic<F>(&mut self, mut rest: &[u8], on_frame: &mut F) -> Result<(), FrameError>
    where
        F: FnMut(&[u8]),
    {
        let max = self.max_len;
        while !rest.is_empty() {
            let (len, body) = match parse_classic(rest) {
                Some((value, body)) => match usize::try_from(value) {
                    Ok(len) if len <= max => (len, body),
                    _ => return Err(self.fail(FrameError::FrameTooLong { len: value, max })),
                },
                // Too short for a whole header, or not all digits: the
                // byte-wise path keeps the partial header or finds the bad
                // byte.
                None => match self.header_slow(rest)? {
                    Some(header) => header,
                    None => return Ok(()),
                },
            };
            rest = match self.body(len, body, on_frame) {
                Some(rest) => rest,
                None => return Ok(()),
            };
        }
        Ok(())
    }

    /// Hands out a frame of `len` bytes starting at `body` if it is all
    /// there and returns what follows it; otherwise starts assembling it and
    /// returns `None` (the chunk is used up).
    #[inline(always)]
    fn body<'c, F>(&mut self, len: usize, body: &'c [u8], on_frame: &mut F) -> Option<&'c [u8]>
    where
        F: FnMut(&[u8]),
    {
        match body.split_at_checked(len) {
            Some((frame, rest)) => {
                on_frame(frame);
                Some(rest)
            }
            None => {
                // Start the frame at the same offset within a cache line as
                // its bytes in the chunk. Later chunks then usually line up
                // too (they follow on in memory, or are whole reads into one
                // aligned buffer), and memcpy runs measurably faster when
                // source and destination are mutually aligned.
                let want = body.as_ptr() as usize % ALIGN;
                let have = self.buf.as_ptr() as usize % ALIGN;
                // A length this close to usize::MAX cannot be assembled
                // anyway, but `pad + len` must not overflow.
                let pad = if len <= usize::MAX - ALIGN {
                    (want + ALIGN - have) % ALIGN
                } else {
                    0
                };
                let end = pad + len;
                self.buf.clear();
                self.buf.resize(pad, 0);
                self.state = State::Body { pad, end };
                self.straddle(pad, end, body, on_frame)
            }
        }
    }

    /// Adds the next bytes of the straddling frame that occupies
    /// `buf[pad..end]`; hands it out once complete and returns the rest of
    /// the chunk.
    fn straddle<'c, F>(
        &mut self,
        pad: usize,
        end: usize,
        chunk: &'c [u8],
        on_frame: &mut F,
    ) -> Option<&'c [u8]>
    where
        F: FnMut(&[u8]),
    {
        let have = self.buf.len();
        let need = end.saturating_sub(have);
        let (part, rest) = chunk.split_at(need.min(chunk.len()));
        let want = have + part.len();
        if want > self.buf.capacity() {
            // Doubling keeps the number of reallocations logarithmic when a
            // big frame trickles in; the cap at the frame's end keeps a
            // lying header from reserving more than the bytes actually sent
            // justify.
            let target = want.max(have.saturating_mul(2)).min(end);
            self.buf.reserve_exact(target - have);
        }
        // One copy, into capacity that was never zeroed.
        self.buf.extend_from_slice(part);
        if self.buf.len() < end {
            return None;
        }
        on_frame(self.buf.get(pad..).unwrap_or_default());
        self.buf.clear();
        self.state = BOUNDARY;
        Some(rest)
    }

    /// Reads header bytes one at a time, continuing from the saved header
    /// state. Returns the payload length and the bytes after the header, or
    /// `None` after saving the state if `bytes` ends inside the header.
    fn header_slow<'c>(
        &mut self,
        bytes: &'c [u8],
    ) -> Result<Option<(usize, &'c [u8])>, FrameError> {
        let (mut count, mut acc) = match self.state {
            State::Header { count, acc } => (count, acc),
            _ => (0, 0),
        };
        let mut rest = bytes;
        while let Some((&byte, after)) = rest.split_first() {
            rest = after;
            match header_step(self.format, self.max_len, count, acc, byte) {
                Ok(Step::More { count: c, acc: a }) => (count, acc) = (c, a),
                Ok(Step::Done(len)) => {
                    self.state = BOUNDARY;
                    return Ok(Some((len, rest)));
                }
                Err(err) => return Err(self.fail(err)),
            }
        }
        self.state = State::Header { count, acc };
        Ok(None)
    }

    #[cold]
    fn fail(&mut self, err: FrameError) -> FrameError {
        self.state = State::Failed(err);
        self.buf.clear();
        err
    }
}

/// Feeds one header byte to a header of which `count` bytes, adding up to
/// `acc`, were already read. This is the definition of both header formats;
/// the fast paths must agree with it.
fn header_step(
    format: HeaderFormat,
    max: usize,
    count: u8,
    acc: u64,
    byte: u8,
) -> Result<Step, FrameError> {
    let acc = match format {
        HeaderFormat::Classic => {
            if !byte.is_ascii_digit() {
                return Err(FrameError::InvalidDigit {
                    byte,
                    position: count,
                });
            }
            // Nine digits stay below 10^9: no overflow possible.
            let acc = acc * 10 + u64::from(byte - b'0');
            if usize::from(count) + 1 < CLASSIC_HEADER_LEN {
                return Ok(Step::More {
                    count: count + 1,
                    acc,
                });
            }
            acc
        }
        HeaderFormat::Compact => {
            // The tenth byte holds bit 63 only, and must be the last.
            if usize::from(count) == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(FrameError::VarintOverflow);
            }
            let acc = acc | (u64::from(byte & 0x7f) << (7 * u32::from(count)));
            if byte & 0x80 != 0 {
                return Ok(Step::More {
                    count: count + 1,
                    acc,
                });
            }
            if byte == 0 && count > 0 {
                return Err(FrameError::VarintOverlong);
            }
            acc
        }
    };
    match usize::try_from(acc) {
        Ok(len) if len <= max => Ok(Step::Done(len)),
        _ => Err(FrameError::FrameTooLong { len: acc, max }),
    }
}

/// Parses a whole Classic header at the start of `bytes` if there is one
/// and it is all digits; `None` otherwise (the byte-wise path then decides).
#[inline(always)]
fn parse_classic(bytes: &[u8]) -> Option<(u64, &[u8])> {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let (header, rest) = bytes.split_first_chunk::<CLASSIC_HEADER_LEN>()?;
    let [d0, d1, d2, d3, d4, d5, d6, d7, d8] = *header;
    // The next frame's position waits on this value, so its latency is what
    // bounds a stream of small frames. The last eight digits are checked and
    // converted together in one register (SWAR, digit d1 in the lowest
    // byte), and the first digit's term is computed alongside.
    let word = u64::from_le_bytes([d1, d2, d3, d4, d5, d6, d7, d8]);
    // Each byte must be 0x30..=0x3F, and still be so after adding 6
    // (which rules out 0x3A..=0x3F without carrying into the next byte).
    let all_digits =
        word & HIGH == ZEROS && word.wrapping_add(0x0606_0606_0606_0606) & HIGH == ZEROS;
    if !all_digits || !d0.is_ascii_digit() {
        return None;
    }
    let digits = word - ZEROS;
    // Neighbouring digits into pairs (in bytes 0, 2, 4, 6), then all four
    // pairs at once with two multiplications whose products meet in the
    // upper half.
    let pairs = digits.wrapping_mul(10).wrapping_add(digits >> 8);
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    let eight = (pairs & MASK)
        .wrapping_mul(100 | (1_000_000 << 32))
        .wrapping_add(((pairs >> 16) & MASK).wrapping_mul(1 | (10_000 << 32)))
        >> 32;
    let value = u64::from(d0 - b'0') * 100_000_000 + (eight & 0xFFFF_FFFF);
    Some((value, rest))
}

/// A frame header ready to be written in front of its payload, e.g. with a
/// vectored write that sends a large payload without copying it.
///
/// ```
/// use packet::codec::{FrameEncoder, HeaderFormat};
///
/// let header = FrameEncoder::new(HeaderFormat::Classic).header(42).unwrap();
/// assert_eq!(header.as_bytes(), b"000000042");
/// let header = FrameEncoder::new(HeaderFormat::Compact).header(42).unwrap();
/// assert_eq!(header.as_bytes(), [42]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    bytes: [u8; MAX_VARINT_LEN],
    len: u8,
}

impl FrameHeader {
    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl AsRef<[u8]> for FrameHeader {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Writes frames in one [`HeaderFormat`], refusing payloads over a maximum
/// length so that the peer's decoder (configured alike) never rejects them.
///
/// ```
/// use packet::codec::{FrameEncoder, FrameError, HeaderFormat};
///
/// let encoder = FrameEncoder::new(HeaderFormat::Classic).with_max_frame_len(4);
/// let mut out = Vec::new();
/// encoder.encode(b"ping", &mut out).unwrap();
/// assert_eq!(out, b"000000004ping");
/// assert_eq!(
///     encoder.encode(b"hello", &mut out),
///     Err(FrameError::PayloadTooLong { len: 5, max: 4 })
/// );
/// assert_eq!(out, b"000000004ping"); // untouched on error
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameEncoder {
    format: HeaderFormat,
    max_len: usize,
}

impl Default for FrameEncoder {
    /// A [`HeaderFormat::Compact`] encoder with [`DEFAULT_MAX_FRAME_LEN`].
    fn default() -> Self {
        FrameEncoder::new(HeaderFormat::Compact)
    }
}

impl FrameEncoder {
    /// An encoder for `format` with the default maximum frame length,
    /// [`DEFAULT_MAX_FRAME_LEN`].
    pub const fn new(format: HeaderFormat) -> Self {
        FrameEncoder {
            format,
            max_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Sets the maximum payload length. Classic frames are further limited
    /// to [`CLASSIC_MAX_FRAME_LEN`] whatever this says.
    pub const fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_len = max;
        self
    }

    /// The header format this encoder writes.
    pub const fn format(&self) -> HeaderFormat {
        self.format
    }

    /// The longest payload this encoder accepts, taking the Classic limit
    /// into account.
    pub const fn max_frame_len(&self) -> usize {
        match self.format {
            HeaderFormat::Classic if self.max_len > CLASSIC_MAX_FRAME_LEN => CLASSIC_MAX_FRAME_LEN,
            _ => self.max_len,
        }
    }

    /// The header for a payload of `len` bytes.
    pub fn header(&self, len: usize) -> Result<FrameHeader, FrameError> {
        let max = self.max_frame_len();
        if len > max {
            return Err(FrameError::PayloadTooLong { len, max });
        }
        let mut bytes = [0u8; MAX_VARINT_LEN];
        let header_len = match self.format {
            HeaderFormat::Classic => {
                let (first, rest) = classic_digits(len);
                bytes[0] = first;
                for (byte, digit) in bytes[1..].iter_mut().zip(rest.to_le_bytes()) {
                    *byte = digit;
                }
                CLASSIC_HEADER_LEN
            }
            HeaderFormat::Compact => {
                let mut rest = len as u64;
                let mut count = 0;
                for byte in bytes.iter_mut() {
                    count += 1;
                    if rest < 0x80 {
                        *byte = rest as u8;
                        break;
                    }
                    // Low seven bits and the continuation bit.
                    *byte = rest as u8 | 0x80;
                    rest >>= 7;
                }
                count
            }
        };
        Ok(FrameHeader {
            bytes,
            // At most MAX_VARINT_LEN.
            len: header_len as u8,
        })
    }

    /// Appends one frame carrying `payload` to `out`. On error `out` is left
    /// as it was.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let len = payload.len();
        let max = self.max_frame_len();
        if len > max {
            return Err(FrameError::PayloadTooLong { len, max });
        }
        out.reserve(MAX_VARINT_LEN + len);
        // Written straight from registers: going through a header array
        // cost more than the rest of encoding a small frame (byte stores
        // read back as words stall store forwarding).
        match self.format {
            HeaderFormat::Classic => {
                let (first, rest) = classic_digits(len);
                out.push(first);
                out.extend_from_slice(&rest.to_le_bytes());
            }
            HeaderFormat::Compact => {
                let mut rest = len as u64;
                while rest >= 0x80 {
                    out.push(rest as u8 | 0x80);
                    rest >>= 7;
                }
                out.push(rest as u8);
            }
        }
        out.extend_from_slice(payload);
        Ok(())
    }
}

/// The nine ASCII digits of a Classic header for `len` (at most
/// [`CLASSIC_MAX_FRAME_LEN`]): the first, and the other eight as a
/// little-endian word.
fn classic_digits(len: usize) -> (u8, u64) {
    // Both casts are lossless within the Classic maximum.
    let first = (len / 100_000_000) as u8;
    (b'0' + first, eight_digits((len % 100_000_000) as u32))
}

/// The eight decimal digits of `n` (below 10^8), zero-padded, as ASCII in a
/// little-endian word: the most significant digit in the lowest byte.
fn eight_digits(n: u32) -> u64 {
    let n = u64::from(n);
    // Split in halves in two 32-bit lanes, then each lane in two 16-bit
    // lanes (by 100), then each of those in two bytes (by 10). The
    // multiply-shift divisions are exact for the ranges involved
    // (below 10^4 and below 100), and the lanes never carry into each other.
    let halves = (n / 10_000) | ((n % 10_000) << 32);
    let hundreds = ((halves * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let quads = hundreds | ((halves - hundreds * 100) << 16);
    let tens = ((quads * 103) >> 10) & 0x000F_000F_000F_000F;
    let digits = tens | ((quads - tens * 10) << 8);
    digits + 0x3030_3030_3030_3030
}

/// Appends one frame carrying `payload` to `out`, in `format`, with the
/// default maximum frame length. On error `out` is left as it was.
///
/// ```
/// use packet::codec::{encode_frame, HeaderFormat};
///
/// let mut out = Vec::new();
/// encode_frame(HeaderFormat::Classic, b"", &mut out).unwrap();
/// encode_frame(HeaderFormat::Compact, b"", &mut out).unwrap();
/// assert_eq!(out, b"000000000\x00");
/// ```
pub fn encode_frame(
    format: HeaderFormat,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    FrameEncoder::new(format).encode(payload, out)
}
