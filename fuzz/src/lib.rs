//! What the fuzz targets and the seed generator (`examples/gen_corpus.rs`)
//! must agree on: how an input is laid out and the message type.

use std::collections::BTreeMap;

use packet::codec::HeaderFormat;
use serde::{Deserialize, Serialize};

/// A `frame_decoder` input, split into its parts.
///
/// Layout: `[flags] [max lo] [max hi] [n] [n chunk lengths] [stream...]`.
/// Bit 0 of `flags` picks the format (0 Classic, 1 Compact). The maximum
/// frame length is kept to a few KiB so that "too long" is reachable. The
/// stream is fed in chunks of the given lengths, cycling; a length of 0 is
/// an empty chunk, and no lengths (or only zeros) means one chunk.
#[derive(Debug)]
pub struct FrameInput<'a> {
    pub format: HeaderFormat,
    pub max: usize,
    pub chunk_lens: &'a [u8],
    pub stream: &'a [u8],
}

/// Largest maximum frame length an input can choose.
pub const MAX_MAX: usize = 0x1fff;

impl<'a> FrameInput<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&[flags, lo, hi, n], rest) = data.split_first_chunk::<4>()?;
        let (chunk_lens, stream) = rest.split_at_checked(usize::from(n))?;
        Some(FrameInput {
            format: if flags & 1 == 0 {
                HeaderFormat::Classic
            } else {
                HeaderFormat::Compact
            },
            max: usize::from(u16::from_le_bytes([lo, hi])) & MAX_MAX,
            chunk_lens,
            stream,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let max = u16::try_from(self.max.min(MAX_MAX))
            .unwrap_or(0)
            .to_le_bytes();
        let flags = u8::from(self.format == HeaderFormat::Compact);
        let mut out = vec![flags, max[0], max[1], self.chunk_lens.len() as u8];
        out.extend_from_slice(self.chunk_lens);
        out.extend_from_slice(self.stream);
        out
    }

    /// The chunks to feed, in order; they concatenate to `stream`.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut rest = self.stream;
        if self.chunk_lens.iter().all(|&len| len == 0) {
            return vec![rest];
        }
        let mut chunks = Vec::new();
        for &len in self.chunk_lens.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(usize::from(len).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }
}

/// A message shaped like real master/worker traffic: strings, byte
/// vectors, nested options, maps and enums. Not recursive: postcard has no
/// depth limit, so a recursive type would let input exhaust the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FuzzMsg {
    Hello {
        name: String,
        pid: u32,
        tags: Vec<String>,
    },
    Job {
        id: u64,
        args: Vec<Vec<u8>>,
        env: Option<BTreeMap<String, String>>,
        deadline: Option<(i64, u16)>,
    },
    Done(Result<Vec<i32>, String>),
    Log {
        level: Level,
        text: String,
        flag: bool,
        ch: char,
    },
    Ping(u128),
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// Samples of every variant, for seeds.
pub fn sample_messages() -> Vec<FuzzMsg> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), "/bin".to_string());
    vec![
        FuzzMsg::Hello {
            name: "worker-1".into(),
            pid: 4242,
            tags: vec!["a".into(), "bé".into()],
        },
        FuzzMsg::Job {
            id: u64::MAX,
            args: vec![vec![], vec![0; 130]],
            env: Some(env),
            deadline: Some((-5, 7)),
        },
        FuzzMsg::Job {
            id: 0,
            args: vec![],
            env: None,
            deadline: None,
        },
        FuzzMsg::Done(Ok(vec![1, -1, i32::MIN])),
        FuzzMsg::Done(Err("boom".into())),
        FuzzMsg::Log {
            level: Level::Warn,
            text: "x".repeat(200),
            flag: true,
            ch: '✓',
        },
        FuzzMsg::Ping(u128::MAX),
        FuzzMsg::Quit,
    ]
}
