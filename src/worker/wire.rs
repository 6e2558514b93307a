//! The byte layout of the worker channels, written by hand so that every
//! field is checked on the way in and nothing is allocated for a payload
//! that is only passed along.
//!
//! Every message is one `Compact` frame (see [`crate::codec`]) whose payload
//! starts with a kind byte:
//!
//! ```text
//!  frame: [varint len][kind][fields ...][payload: postcard bytes of the user's message]
//!
//!  master -> worker   1 Request  id                     payload
//!                     7 Fd       id                     payload   (+ one SCM_RIGHTS fd)
//!                     8 Exit
//!                     9 Failed   id  error-text
//!  worker -> master   2 Reply    id                     payload
//!                     3 Send                            payload
//!                     4 Result                          payload
//!                     5 Log      text
//!                     6 Ask      id  name  key?         payload
//!  master -> fork server  10 Start   seq name key? log-file? options
//!  fork server -> master  11 Started seq pid            (+ the worker's channel fd)
//!                         12 StartFailed seq error-text
//!                         13 Exited  pid status
//!  master -> worker   14 Ping     (a heartbeat)
//!  worker -> master   15 Pong     (its answer)
//!  either way         16 TypeName fingerprint name   (before the first
//!                        message of a type on a channel: see `types.rs`)
//! ```
//!
//! A payload is the message's 8-byte type fingerprint (little endian)
//! followed by its postcard bytes.
//!
//! `id`, `seq`, `pid` and lengths are LEB128 varints; strings are a varint
//! length and UTF-8 bytes; `key?` is a 0/1 byte then a string. A `status` is
//! a zigzag varint: the exit code, or minus the signal number.

use std::fmt;

use crate::codec::{FrameEncoder, HeaderFormat};

/// The largest message on a worker channel. Larger frames are refused by the
/// decoder of either side as hostile.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// One message on a worker channel or the fork-server link, borrowing its
/// variable parts from the frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Envelope<'a> {
    Request {
        id: u64,
        payload: &'a [u8],
    },
    Reply {
        id: u64,
        payload: &'a [u8],
    },
    Send {
        payload: &'a [u8],
    },
    Result {
        payload: &'a [u8],
    },
    Log {
        text: &'a str,
    },
    Ask {
        id: u64,
        name: &'a str,
        key: Option<&'a str>,
        payload: &'a [u8],
    },
    Fd {
        id: u64,
        payload: &'a [u8],
    },
    Exit,
    Failed {
        id: u64,
        error: &'a str,
    },
    Start {
        seq: u64,
        name: &'a str,
        key: Option<&'a str>,
        log_file: Option<&'a str>,
        options: &'a [u8],
    },
    Started {
        seq: u64,
        pid: u32,
    },
    StartFailed {
        seq: u64,
        error: &'a str,
    },
    Exited {
        pid: u32,
        status: i64,
    },
    Ping,
    Pong,
    TypeName {
        fingerprint: u64,
        name: &'a str,
    },
}

/// Why bytes from a worker channel are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The kind byte names no message.
    UnknownKind(u8),
    /// The message ended inside a field.
    Truncated,
    /// A varint ran past 10 bytes or 64 bits.
    BadVarint,
    /// A string field is not UTF-8.
    BadUtf8,
    /// Bytes were left after the last field of a message without payload.
    TrailingBytes,
    /// A number is out of range for its field.
    OutOfRange,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            WireError::Truncated => f.write_str("message truncated inside a field"),
            WireError::BadVarint => f.write_str("malformed varint"),
            WireError::BadUtf8 => f.write_str("string field is not UTF-8"),
            WireError::TrailingBytes => f.write_str("trailing bytes after the last field"),
            WireError::OutOfRange => f.write_str("number out of range"),
        }
    }
}

impl std::error::Error for WireError {}

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

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.bytes.split_first().ok_or(WireError::Truncated)?;
        self.bytes = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && part > 1 {
                return Err(WireError::BadVarint);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::BadVarint)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        u32::try_from(self.varint()?).map_err(|_| WireError::OutOfRange)
    }

    fn str(&mut self) -> Result<&'a str, WireError> {
        let len = usize::try_from(self.varint()?).map_err(|_| WireError::OutOfRange)?;
        if len > self.bytes.len() {
            return Err(WireError::Truncated);
        }
        let (s, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        std::str::from_utf8(s).map_err(|_| WireError::BadUtf8)
    }

    fn opt_str(&mut self) -> Result<Option<&'a str>, WireError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(WireError::OutOfRange),
        }
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }

    fn end(self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

impl<'a> Envelope<'a> {
    fn kind(&self) -> u8 {
        match self {
            Envelope::Request { .. } => 1,
            Envelope::Reply { .. } => 2,
            Envelope::Send { .. } => 3,
            Envelope::Result { .. } => 4,
            Envelope::Log { .. } => 5,
            Envelope::Ask { .. } => 6,
            Envelope::Fd { .. } => 7,
            Envelope::Exit => 8,
            Envelope::Failed { .. } => 9,
            Envelope::Start { .. } => 10,
            Envelope::Started { .. } => 11,
            Envelope::StartFailed { .. } => 12,
            Envelope::Exited { .. } => 13,
            Envelope::Ping => 14,
            Envelope::Pong => 15,
            Envelope::TypeName { .. } => 16,
        }
    }

    /// Appends the message's fields (everything before the payload).
    fn put_fields(&self, out: &mut Vec<u8>) {
        out.push(self.kind());
        match *self {
            Envelope::Request { id, .. } | Envelope::Reply { id, .. } | Envelope::Fd { id, .. } => {
                put_varint(out, id)
            }
            Envelope::Send { .. }
            | Envelope::Result { .. }
            | Envelope::Exit
            | Envelope::Ping
            | Envelope::Pong => {}
            Envelope::Log { text } => put_str(out, text),
            Envelope::Ask { id, name, key, .. } => {
                put_varint(out, id);
                put_str(out, name);
                put_opt_str(out, key);
            }
            Envelope::Failed { id, error } => {
                put_varint(out, id);
                put_str(out, error);
            }
            Envelope::Start {
                seq,
                name,
                key,
                log_file,
                ..
            } => {
                put_varint(out, seq);
                put_str(out, name);
                put_opt_str(out, key);
                put_opt_str(out, log_file);
            }
            Envelope::Started { seq, pid } => {
                put_varint(out, seq);
                put_varint(out, u64::from(pid));
            }
            Envelope::StartFailed { seq, error } => {
                put_varint(out, seq);
                put_str(out, error);
            }
            Envelope::Exited { pid, status } => {
                put_varint(out, u64::from(pid));
                put_varint(out, ((status << 1) ^ (status >> 63)) as u64);
            }
            Envelope::TypeName { fingerprint, name } => {
                put_varint(out, fingerprint);
                put_str(out, name);
            }
        }
    }

    fn payload(&self) -> &'a [u8] {
        match *self {
            Envelope::Request { payload, .. }
            | Envelope::Reply { payload, .. }
            | Envelope::Send { payload }
            | Envelope::Result { payload }
            | Envelope::Ask { payload, .. }
            | Envelope::Fd { payload, .. } => payload,
            Envelope::Start { options, .. } => options,
            _ => &[],
        }
    }

    /// Appends the message as one frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        // Room for the header and fields too: one allocation per frame.
        out.reserve(self.payload().len() + 24);
        let start = out.len();
        self.put_fields(out);
        out.extend_from_slice(self.payload());
        frame_in_place(out, start);
    }

    /// Appends the message as one frame to `out`, with `payload` (the
    /// type fingerprint and postcard encoding of `message`) in place of
    /// the envelope's own.
    pub(crate) fn encode_with<T: serde::Serialize + ?Sized>(
        &self,
        message: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), crate::codec::MessageError> {
        // Most messages are small: one allocation for the frame.
        out.reserve(64);
        let start = out.len();
        self.put_fields(out);
        out.extend_from_slice(&super::types::fingerprint::<T>().to_le_bytes());
        let body = std::mem::take(out);
        match postcard::to_extend(message, body) {
            Ok(body) => *out = body,
            Err(e) => {
                return Err(crate::codec::MessageError::Encode(
                    crate::codec::PostcardError::new(e),
                ));
            }
        }
        frame_in_place(out, start);
        Ok(())
    }

    /// Reads one frame's payload.
    pub(crate) fn decode(frame: &'a [u8]) -> Result<Envelope<'a>, WireError> {
        let mut r = Reader { bytes: frame };
        let kind = r.byte()?;
        let env = match kind {
            1 => Envelope::Request {
                id: r.varint()?,
                payload: r.rest(),
            },
            2 => Envelope::Reply {
                id: r.varint()?,
                payload: r.rest(),
            },
            3 => Envelope::Send { payload: r.rest() },
            4 => Envelope::Result { payload: r.rest() },
            5 => {
                let text = r.str()?;
                r.end()?;
                Envelope::Log { text }
            }
            6 => {
                let (id, name, key) = (r.varint()?, r.str()?, r.opt_str()?);
                Envelope::Ask {
                    id,
                    name,
                    key,
                    payload: r.rest(),
                }
            }
            7 => Envelope::Fd {
                id: r.varint()?,
                payload: r.rest(),
            },
            8 => {
                r.end()?;
                Envelope::Exit
            }
            9 => {
                let (id, error) = (r.varint()?, r.str()?);
                r.end()?;
                Envelope::Failed { id, error }
            }
            10 => {
                let (seq, name, key, log_file) =
                    (r.varint()?, r.str()?, r.opt_str()?, r.opt_str()?);
                Envelope::Start {
                    seq,
                    name,
                    key,
                    log_file,
                    options: r.rest(),
                }
            }
            11 => {
                let (seq, pid) = (r.varint()?, r.u32()?);
                r.end()?;
                Envelope::Started { seq, pid }
            }
            12 => {
                let (seq, error) = (r.varint()?, r.str()?);
                r.end()?;
                Envelope::StartFailed { seq, error }
            }
            13 => {
                let pid = r.u32()?;
                let z = r.varint()?;
                r.end()?;
                Envelope::Exited {
                    pid,
                    status: ((z >> 1) as i64) ^ -((z & 1) as i64),
                }
            }
            14 => {
                r.end()?;
                Envelope::Ping
            }
            15 => {
                r.end()?;
                Envelope::Pong
            }
            16 => {
                let (fingerprint, name) = (r.varint()?, r.str()?);
                r.end()?;
                Envelope::TypeName { fingerprint, name }
            }
            k => return Err(WireError::UnknownKind(k)),
        };
        Ok(env)
    }
}

/// Puts a Compact frame header in front of the body written at
/// `out[start..]`, moving the body up only when the header needs more than
/// the one byte most messages need.
fn frame_in_place(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    // MAX_MESSAGE is far below what a Compact header can announce; larger
    // bodies are the caller's bug, caught by the peer's decoder limit.
    let header = FrameEncoder::new(HeaderFormat::Compact)
        .with_max_frame_len(usize::MAX)
        .header(len)
        .expect("a Compact header can announce any usize length");
    let h = header.as_bytes();
    out.splice(start..start, h.iter().copied());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameDecoder;

    fn round_trip(env: Envelope<'_>) {
        let mut wire = Vec::new();
        env.encode(&mut wire);
        let mut frames = Vec::new();
        FrameDecoder::new(HeaderFormat::Compact)
            .decode(&wire, |f| frames.push(f.to_vec()))
            .unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(Envelope::decode(&frames[0]).unwrap(), env);
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Envelope::Request {
            id: 1 << 40,
            payload: b"abc",
        });
        round_trip(Envelope::Reply {
            id: 0,
            payload: &[],
        });
        round_trip(Envelope::Send { payload: &[9; 300] });
        round_trip(Envelope::Result { payload: b"r" });
        round_trip(Envelope::Log {
            text: "hello ünïcode",
        });
        round_trip(Envelope::Ask {
            id: 5,
            name: "w",
            key: Some("k"),
            payload: b"p",
        });
        round_trip(Envelope::Ask {
            id: 5,
            name: "w",
            key: None,
            payload: b"",
        });
        round_trip(Envelope::Fd {
            id: 3,
            payload: b"x",
        });
        round_trip(Envelope::Exit);
        round_trip(Envelope::Ping);
        round_trip(Envelope::Pong);
        round_trip(Envelope::TypeName {
            fingerprint: u64::MAX,
            name: "my_app::Check",
        });
        round_trip(Envelope::Failed {
            id: 8,
            error: "boom",
        });
        round_trip(Envelope::Start {
            seq: 2,
            name: "n",
            key: None,
            log_file: Some("/tmp/l"),
            options: b"o",
        });
        round_trip(Envelope::Started {
            seq: 2,
            pid: 4_000_000,
        });
        round_trip(Envelope::StartFailed {
            seq: 2,
            error: "no",
        });
        round_trip(Envelope::Exited { pid: 7, status: -9 });
        round_trip(Envelope::Exited { pid: 7, status: 3 });
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert_eq!(Envelope::decode(&[]), Err(WireError::Truncated));
        assert_eq!(Envelope::decode(&[99]), Err(WireError::UnknownKind(99)));
        assert_eq!(Envelope::decode(&[1, 0x80]), Err(WireError::Truncated));
        assert_eq!(
            Envelope::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(WireError::BadVarint)
        );
        assert_eq!(Envelope::decode(&[5, 10, b'a']), Err(WireError::Truncated));
        assert_eq!(Envelope::decode(&[5, 1, 0xff]), Err(WireError::BadUtf8));
        assert_eq!(Envelope::decode(&[8, 0]), Err(WireError::TrailingBytes));
        assert_eq!(
            Envelope::decode(&[6, 1, 1, b'n', 2]),
            Err(WireError::OutOfRange)
        );
        assert_eq!(
            Envelope::decode(&[11, 1, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(WireError::OutOfRange)
        );
        // Every prefix of a valid message is either valid or an error.
        let mut wire = Vec::new();
        Envelope::Start {
            seq: 300,
            name: "name",
            key: Some("key"),
            log_file: None,
            options: b"opts",
        }
        .encode(&mut wire);
        for cut in 0..wire.len() {
            let _ = Envelope::decode(&wire[1..cut.max(1)]);
        }
    }
}
