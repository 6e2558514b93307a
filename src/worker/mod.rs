//! Workers: long-running work in child processes, each with its own
//! reactor, talking to the master in framed `serde` messages.
//!
//! This module owns worker processes from registration to reaping: the
//! registry ([`WorkerRegistry`]), the fork server that forks workers, the
//! worker side ([`Worker`], [`WorkerContext`]), and the master side — the
//! per-worker proxy (Packet's `Pimp`; [`WorkerProxy`] for a custom one, the
//! built-in routing otherwise, Packet's `MetaPimp`), asks and their replies,
//! results, logs, fd passing and supervision. It never forks a process that
//! has more than one thread, never blocks the master's reactor, and never
//! lets bytes from a worker panic the master.
//!
//! # How it fits together
//!
//! ```text
//!  main()  WorkerRegistry::new().register(..).start()  <- while single-threaded
//!            │ fork
//!            ├──────────────► fork server (one small blocking loop)
//!            │  link (Unix socket, SCM_RIGHTS)   │ fork per start request
//!  master reactor ◄──── channel (socketpair) ───► worker process: own Reactor,
//!    connections ask_worker / receive_reply         your Worker type
//! ```
//!
//! The fork server is forked before the program starts any thread and forks
//! every worker on request, so a master running many reactor threads never
//! forks itself (ARCHITECTURE.md, "Fork safety"); one that dies is
//! replaced by running the program again in fork-server mode. The fork
//! server and the workers leave SIGINT, SIGTERM, SIGHUP and SIGQUIT to the
//! master, whose [`Reactor::stop_gracefully`] lets asks in flight finish,
//! then stops and reaps them all. Each worker's channel is
//! a socketpair made by the fork server; the master's end travels back to it
//! with `SCM_RIGHTS`.
//!
//! # Supervision and its defaults
//!
//! Every safeguard is on unless a [`WorkerSpec`] turns it off:
//!
//! | safeguard | default | what happens | change it with |
//! |---|---|---|---|
//! | heartbeat | [`DEFAULT_HEARTBEAT`] (15 s) | an instance whose reactor does not answer a ping within it (stopped, hung, blocking its loop) is killed and replaced; its asks fail with [`WorkerError::Died`] and [`WorkerExit::Unresponsive`] | [`WorkerSpec::heartbeat`], [`WorkerSpec::no_heartbeat`] |
//! | ask deadline | [`DEFAULT_ASK_TIMEOUT`] (60 s) | an ask with no reply by then fails with [`WorkerError::Timeout`]; a reply that comes later goes to the log hook | [`WorkerSpec::ask_timeout`], [`WorkerSpec::no_ask_timeout`], or per ask [`WorkerSystem::ask_worker_with_timeout`] |
//! | restarts | [`RestartPolicy::default`]: 5 quick restarts a minute, then backing off | a dead instance is restarted after 100 ms, 200 ms, ... (5 times within a minute), then after 5 s, doubling up to 30 s, and never given up; the state is in [`WorkerSystem::status`] and in the log hook | [`WorkerSpec::restart`] |
//! | fork server | replaced when it dies or its link is garbled | the same quick-then-backing-off schedule; its workers are started again by the new one | — |
//! | channel to a worker | asks refused with [`WorkerError::Busy`] past 16 MiB unsent | a worker that stops reading cannot grow the master | — |
//! | channel from a worker | the worker stops reading requests while more than 1 MiB of its messages are unsent, and hears [`Worker::channel_full`] | a worker that sends faster than the master reads cannot grow its own memory by its replies | [`Worker::channel_full`], [`Worker::channel_drained`] |
//!
//! Processes: the fork server makes itself the subreaper of the processes
//! its workers start (Linux `PR_SET_CHILD_SUBREAPER`), so an orphan of a
//! dead worker is reaped by it, not left to PID 1. The master does not
//! make itself one (it would inherit every orphan of the whole program,
//! which code outside this module may wait for), but it reaps the
//! workers of a dead fork server that are re-parented to it — which
//! happens when the master is PID 1, in a container. A replaced fork
//! server runs this program again from `/proc/self/exe` under the
//! program's own `argv[0]` and name, so `ps` shows the program, not `exe`.
//!
//! # Example
//!
//! ```no_run
//! use packet::worker::{Worker, WorkerContext, WorkerMessage, WorkerRegistry, WorkerSpec};
//! use packet::{Connection, Handler, Reactor, Reply};
//!
//! struct Upcase;
//! impl Worker for Upcase {
//!     fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
//!         let text: String = msg.decode().unwrap_or_default();
//!         let _ = ctx.send_data(&text.to_uppercase()); // replies to the asker
//!     }
//! }
//!
//! struct Client;
//! impl Handler for Client {
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         let line = String::from_utf8_lossy(data).into_owned();
//!         if let Err(e) = conn.ask_worker("upcase", &line) {
//!             conn.send_data(format!("error: {e}\n").as_bytes());
//!         }
//!     }
//!     fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
//!         // One Result: the worker's answer, or why there is none (it
//!         // died, timed out, or answered another type).
//!         match reply.decode::<String>() {
//!             Ok(text) => conn.send_data(text.as_bytes()),
//!             Err(e) => conn.send_data(format!("error: {e}\n").as_bytes()),
//!         }
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     // First thing in main: the fork server is forked here.
//!     let workers = WorkerRegistry::new().register(WorkerSpec::new("upcase", || Upcase)).start()?;
//!     Reactor::run(|reactor| {
//!         reactor.workers().add(workers)?;
//!         reactor.start_server("127.0.0.1:11006", || Client)?;
//!         Ok(())
//!     })
//! }
//! ```

mod fork_server;
mod master;
mod types;
pub(crate) mod wire;

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::MessageError;
use crate::connection::Connection;
use crate::reactor::Reactor;
use crate::ConnId;

pub use master::WorkerSystem;
pub use wire::WireError;

/// How long a worker instance may leave a heartbeat ping unanswered before
/// the master kills and replaces it, unless its spec says otherwise
/// ([`WorkerSpec::heartbeat`], [`WorkerSpec::no_heartbeat`]): 15 s, a
/// quarter of Unicorn's 60 s worker timeout, since a ping is answered by
/// the worker's reactor between callbacks, not at the end of a request.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// How long an ask waits for its reply before it fails with
/// [`WorkerError::Timeout`], unless the spec or the ask says otherwise
/// ([`WorkerSpec::ask_timeout`], [`WorkerSpec::no_ask_timeout`]): 60 s,
/// Unicorn's worker timeout.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(60);

/// Not API: decodes one worker-channel message (a frame's payload) as both
/// ends of a channel do, for the `worker_channel` fuzz target.
#[doc(hidden)]
pub fn fuzz_decode_wire(frame: &[u8]) -> Result<(), WireError> {
    wire::Envelope::decode(frame).map(|_| ())
}

/// What an ask gets back: the worker's reply, or why there is none.
/// [`DecodeReply::decode`] makes it one `Result<T, WorkerError>`; a
/// connection's [`Reply`](crate::Reply) has [`Reply::decode`](crate::Reply::decode).
pub type WorkerReply = Result<WorkerMessage, WorkerError>;

/// Decodes a [`WorkerReply`] (the argument of an
/// [`WorkerSystem::ask_worker_with`] callback or of [`Worker::worker_receive`])
/// in one step.
///
/// ```
/// use packet::worker::{DecodeReply, WorkerMessage, WorkerReply};
///
/// let reply: WorkerReply = Ok(WorkerMessage::encode(&7u64).unwrap());
/// assert_eq!(reply.decode::<u64>().unwrap(), 7);
/// let reply: WorkerReply = Ok(WorkerMessage::encode("seven").unwrap());
/// assert_eq!(
///     reply.decode::<u64>().unwrap_err().to_string(),
///     "wrong message type: expected `u64`, got `String`"
/// );
/// ```
pub trait DecodeReply {
    /// The answer as a `T`, or why there is none: the worker's error, or
    /// [`WorkerError::Message`] when the answer is not a `T`.
    ///
    /// # Errors
    /// See above.
    fn decode<T: DeserializeOwned>(self) -> Result<T, WorkerError>;
}

impl DecodeReply for WorkerReply {
    fn decode<T: DeserializeOwned>(self) -> Result<T, WorkerError> {
        Ok(self?.decode::<T>()?)
    }
}

/// `T`'s name as type errors give it.
/// Sends `data` on connection `id` (a worker's channel, or the connection
/// that asked); `false` when it takes no more output.
fn send_to(reactor: &mut Reactor, id: ConnId, data: &[u8]) -> bool {
    reactor
        .connection(id)
        .is_some_and(|mut c| c.try_send_data(data))
}

pub(crate) fn type_name_of<T: ?Sized>() -> String {
    types::display_name::<T>()
}

/// Identifies one `ask_worker` of a connection: the id of the
/// [`Reply`](crate::Reply) that brings its answer to
/// [`Handler::receive_reply`](crate::Handler::receive_reply), so replies
/// (which arrive in any order unless the connection asked for them in
/// order, or as errors) can be matched to their asks.
pub type AskId = crate::ReplyId;

/// A message to or from a worker: the postcard encoding of some `serde`
/// value, decoded by whoever knows its type.
///
/// Every message carries a fingerprint of the type it was encoded from
/// (8 bytes: a hash of the type's name), checked by
/// [`WorkerMessage::decode`]: postcard is not self-describing, so without
/// it a `u32` read as an `i32` or a `bool` would decode to a wrong value.
/// A mismatch is [`MessageError::WrongType`], naming both types:
///
/// ```
/// use packet::worker::WorkerMessage;
///
/// let answer = WorkerMessage::encode(&42u32).unwrap();
/// assert_eq!(answer.decode::<u32>().unwrap(), 42);
/// let err = answer.decode::<i32>().unwrap_err();
/// assert_eq!(err.to_string(), "wrong message type: expected `i32`, got `u32`");
/// // Types serde encodes alike agree: `&str` and `String`, `&[T]` and
/// // `Vec<T>`, `Box<T>` and `T`.
/// let text = WorkerMessage::encode("hello").unwrap();
/// assert_eq!(text.decode::<String>().unwrap(), "hello");
/// ```
///
/// The fingerprint hashes [`std::any::type_name`], which may change between
/// compiler versions; the master and its workers are one binary (the
/// workers are forks of it), so they always agree. Messages are not meant
/// to be stored or exchanged with other programs.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerMessage {
    // A `Vec`, not a boxed slice: shrinking it to fit would cost a
    // reallocation per message.
    bytes: Vec<u8>,
}

impl WorkerMessage {
    /// Encodes `value`.
    ///
    /// # Errors
    /// The value cannot be serialized by postcard.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<WorkerMessage, MessageError> {
        let mut bytes = Vec::with_capacity(32);
        bytes.extend_from_slice(&types::fingerprint::<T>().to_le_bytes());
        postcard::to_extend(value, bytes)
            .map(|v| WorkerMessage { bytes: v })
            .map_err(|e| MessageError::Encode(crate::codec::PostcardError::new(e)))
    }

    /// Decodes the message as a `T`.
    ///
    /// # Errors
    /// [`MessageError::WrongType`] if it was encoded from another type
    /// (naming both); otherwise the bytes are not a valid `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, MessageError> {
        crate::codec::decode_message(types::check::<T>(&self.bytes)?)
    }

    /// The encoded bytes: the type fingerprint (8 bytes), then the
    /// postcard encoding of the value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> WorkerMessage {
        WorkerMessage {
            bytes: bytes.to_vec(),
        }
    }
}

impl fmt::Debug for WorkerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerMessage({} bytes)", self.bytes.len())
    }
}

/// Why a worker operation failed or an ask got no reply.
#[derive(Debug)]
#[non_exhaustive]
pub enum WorkerError {
    /// No worker of that name was registered.
    NotRegistered(String),
    /// The worker (name and key) is not running.
    NotRunning(String),
    /// `start_worker` for a name and key that already runs: Packet calls a
    /// second fork of one worker "disastrous", so it is refused.
    AlreadyRunning(String),
    /// The worker died or its channel closed before it replied.
    Died {
        /// Which worker.
        worker: WorkerId,
        /// How it ended.
        exit: WorkerExit,
    },
    /// The worker is not reading: its channel holds more than the limit of
    /// unsent messages, so new asks are refused instead of queued.
    Busy(String),
    /// The message could not be encoded, or a reply could not be decoded.
    Message(MessageError),
    /// The worker, or the worker it asked, reported a failure.
    Failed(String),
    /// The registry is not attached to this reactor, or the fork server is
    /// gone.
    NoWorkers,
    /// The reactor is stopping: the ask was made during a graceful stop,
    /// or was still waiting for its reply when the stop's deadline passed
    /// or the reactor stopped.
    Stopping {
        /// The worker asked.
        worker: String,
    },
    /// No reply within the ask's timeout ([`WorkerSpec::ask_timeout`],
    /// [`DEFAULT_ASK_TIMEOUT`] unless set, or the one given to the ask). A
    /// reply that comes later is dropped, with a line to the log hook.
    Timeout {
        /// The worker asked.
        worker: WorkerId,
        /// The timeout that passed.
        after: Duration,
    },
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::NotRegistered(n) => write!(f, "no worker named {n:?} is registered"),
            WorkerError::NotRunning(w) => write!(f, "worker {w} is not running"),
            WorkerError::AlreadyRunning(w) => write!(f, "worker {w} is already running"),
            WorkerError::Died { worker, exit } => {
                write!(f, "worker {worker} died before replying ({exit})")
            }
            WorkerError::Busy(w) => write!(f, "worker {w} is not keeping up: its channel is full"),
            WorkerError::Message(e) => write!(f, "{e}"),
            WorkerError::Failed(e) => write!(f, "worker failed: {e}"),
            WorkerError::NoWorkers => f.write_str("no workers are attached to this reactor"),
            WorkerError::Timeout { worker, after } => {
                write!(f, "worker {worker} did not answer within {after:?}")
            }
            WorkerError::Stopping { worker } => {
                write!(
                    f,
                    "the reactor is stopping: worker {worker} will not answer"
                )
            }
        }
    }
}

impl std::error::Error for WorkerError {}

impl From<MessageError> for WorkerError {
    fn from(e: MessageError) -> Self {
        WorkerError::Message(e)
    }
}

/// How a worker process ended, as the master decided it: the fork
/// server's report of the process's exit wins over what the channel saw,
/// so a worker killed by a signal is reported as such even when its
/// channel's reset arrived first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerExit {
    /// The process exited with this code.
    Exited(i32),
    /// A signal ended the process (9 for `SIGKILL`).
    Signaled(i32),
    /// The channel closed or failed, and no report of the process's exit
    /// came (the fork server was gone, or too slow): what the channel saw.
    ChannelBroke(String),
    /// The worker sent something the wire format does not allow; the
    /// master closed its channel and killed it.
    ProtocolViolation(String),
    /// The fork server could not start the process.
    StartFailed(String),
    /// It did not answer a heartbeat within this long
    /// ([`WorkerSpec::heartbeat`]), so the master killed it.
    Unresponsive(Duration),
    /// The fork server that started it died, which ends its workers too;
    /// the master starts a new fork server, and the workers again.
    ForkServerDied,
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerExit::Exited(code) => write!(f, "exited with code {code}"),
            WorkerExit::Signaled(sig) => write!(f, "killed by signal {sig}"),
            WorkerExit::ChannelBroke(why) => write!(f, "channel broke: {why}"),
            WorkerExit::ProtocolViolation(why) => write!(f, "protocol violation: {why}"),
            WorkerExit::StartFailed(why) => write!(f, "could not start: {why}"),
            WorkerExit::ForkServerDied => f.write_str("its fork server died"),
            WorkerExit::Unresponsive(after) => {
                write!(
                    f,
                    "no answer to a heartbeat within {after:?}, so it was killed"
                )
            }
        }
    }
}

/// Names one running worker: its registered name and, for several instances
/// of one type, its key (Packet's `worker_key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId {
    /// The registered name (Packet's `set_worker_name`).
    pub name: String,
    /// The instance key, `None` for a single instance.
    pub key: Option<String>,
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}[{k}]", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A worker: runs in its own process with its own reactor and answers the
/// master's messages. Packet's `Packet::Worker`.
pub trait Worker: 'static {
    /// The worker process is up and its channel to the master is open.
    /// Start timers, servers or connections here through
    /// [`WorkerContext::reactor`].
    fn worker_init(&mut self, ctx: &mut WorkerContext<'_, '_>) {
        let _ = ctx;
    }

    /// A message from the master (an `ask_worker`, or a `send_to_worker`).
    /// [`WorkerContext::send_data`] during this call replies to the asker.
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, message: WorkerMessage);

    /// A descriptor passed with `send_fd_to_worker` (for example an
    /// accepted client socket, which [`Reactor::attach`] turns into a
    /// connection of this worker's reactor), with its message.
    fn receive_fd(&mut self, ctx: &mut WorkerContext<'_, '_>, fd: OwnedFd, message: WorkerMessage) {
        let _ = (ctx, fd, message);
    }

    /// The reply to this worker's own [`WorkerContext::ask_worker`].
    fn worker_receive(&mut self, ctx: &mut WorkerContext<'_, '_>, reply: WorkerReply) {
        let _ = (ctx, reply);
    }

    /// The master closed the channel or asked the worker to exit; the
    /// worker's reactor stops after this returns and the process exits.
    fn unbind(&mut self, ctx: &mut WorkerContext<'_, '_>) {
        let _ = ctx;
    }

    /// More than [`WORKER_CHANNEL_HIGH_WATER`] of this worker's messages are
    /// waiting to be written to the master, which reads slower than the
    /// worker sends. The worker stops reading requests until
    /// [`Worker::channel_drained`] (so asks wait in the master, which
    /// refuses them with [`WorkerError::Busy`] past its own limit); a worker
    /// that sends on its own (timers, streams) should stop producing here.
    fn channel_full(&mut self, ctx: &mut WorkerContext<'_, '_>) {
        let _ = ctx;
    }

    /// After [`Worker::channel_full`], the unsent messages went below half
    /// the mark: reading requests resumed; a producer may go on.
    fn channel_drained(&mut self, ctx: &mut WorkerContext<'_, '_>) {
        let _ = ctx;
    }
}

/// The high-water mark of a worker's channel to the master, in bytes of
/// unsent messages: past it, [`Worker::channel_full`].
pub const WORKER_CHANNEL_HIGH_WATER: usize = 1024 * 1024;

/// What a worker's callbacks get: its identity and options, its reactor,
/// and the channel to the master.
pub struct WorkerContext<'a, 'r> {
    conn: &'a mut Connection<'r>,
    me: &'a fork_server::WorkerInfo,
    request: Option<u64>,
    next_ask: &'a mut u64,
}

/// The address of one request, to reply to it later (from a timer, after
/// more I/O) with [`Replier::reply`].
#[derive(Debug, Clone, Copy)]
pub struct Replier {
    channel: ConnId,
    id: u64,
}

impl Replier {
    /// Sends `message` as the reply to the request this was made for.
    ///
    /// # Errors
    /// The message cannot be encoded. A closed channel drops it silently:
    /// the master failed the ask already.
    pub fn reply<T: Serialize + ?Sized>(
        self,
        reactor: &mut Reactor,
        message: &T,
    ) -> Result<(), MessageError> {
        let mut out = Vec::new();
        tell_master_type::<T>(&mut out);
        wire::Envelope::Reply {
            id: self.id,
            payload: &[],
        }
        .encode_with(message, &mut out)?;
        send_to(reactor, self.channel, &out);
        Ok(())
    }
}

/// Puts the name of `T` in front of the first message of that type this
/// worker sends, so that the master (and a worker it passes the message
/// on to) can name it in a [`MessageError::WrongType`].
fn tell_master_type<T: ?Sized>(out: &mut Vec<u8>) {
    let fingerprint = types::fingerprint::<T>();
    if types::first_time_to_master(fingerprint) {
        if let Some(name) = types::name_of(fingerprint) {
            wire::Envelope::TypeName {
                fingerprint,
                name: &name,
            }
            .encode(out);
        }
    }
}

impl WorkerContext<'_, '_> {
    fn send<T: Serialize + ?Sized>(
        &mut self,
        env: wire::Envelope<'_>,
        message: &T,
    ) -> Result<(), MessageError> {
        let mut out = Vec::new();
        tell_master_type::<T>(&mut out);
        env.encode_with(message, &mut out)?;
        self.conn.send_data(&out);
        Ok(())
    }

    /// Sends `message` to the master: the reply to the request being
    /// handled, if any (routed back to the connection or callback that
    /// asked), otherwise an unsolicited message for the worker's proxy.
    /// Packet's `Worker#send_data`.
    ///
    /// # Errors
    /// The message cannot be encoded.
    pub fn send_data<T: Serialize + ?Sized>(&mut self, message: &T) -> Result<(), MessageError> {
        match self.request {
            Some(id) => self.send(wire::Envelope::Reply { id, payload: &[] }, message),
            None => self.send(wire::Envelope::Send { payload: &[] }, message),
        }
    }

    /// The request being handled, to reply to it later with
    /// [`Replier::reply`].
    pub fn replier(&self) -> Option<Replier> {
        self.request.map(|id| Replier {
            channel: self.conn.id(),
            id,
        })
    }

    /// Publishes a status or result that the master keeps for this worker
    /// and any connection can read (Packet's `update_result`).
    ///
    /// # Errors
    /// The value cannot be encoded.
    pub fn update_result<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), MessageError> {
        self.send(wire::Envelope::Result { payload: &[] }, value)
    }

    /// Sends a log line to the master, which hands it to the registered log
    /// worker or to its log hook ([`crate::log::set_log_hook`]; standard
    /// error by default), Packet's `Worker#log`.
    pub fn log(&mut self, text: &str) {
        let mut out = Vec::new();
        wire::Envelope::Log { text }.encode(&mut out);
        self.conn.send_data(&out);
    }

    /// Asks another worker, through the master; the reply comes to
    /// [`Worker::worker_receive`].
    ///
    /// # Errors
    /// The message cannot be encoded.
    pub fn ask_worker<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        message: &T,
    ) -> Result<(), MessageError> {
        *self.next_ask += 1;
        let id = *self.next_ask;
        self.send(
            wire::Envelope::Ask {
                id,
                name,
                key,
                payload: &[],
            },
            message,
        )
    }

    /// This worker's registered name.
    pub fn worker_name(&self) -> &str {
        &self.me.id.name
    }

    /// This worker's key, if it runs as one of several instances.
    pub fn worker_key(&self) -> Option<&str> {
        self.me.id.key.as_deref()
    }

    /// The options the worker was started with.
    ///
    /// # Errors
    /// They are not a `T`.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, MessageError> {
        crate::codec::decode_message(types::check::<T>(&self.me.options)?)
    }

    /// The worker's own reactor.
    pub fn reactor(&mut self) -> &mut Reactor {
        self.conn.reactor()
    }

    /// Writes `bytes` on the channel to the master exactly as given, outside
    /// the message format: for tests of how the master copes with a broken
    /// worker.
    #[doc(hidden)]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.conn.send_data(bytes);
    }

    /// Whether the channel to the master holds more unsent messages than
    /// [`WORKER_CHANNEL_HIGH_WATER`] (between [`Worker::channel_full`] and
    /// [`Worker::channel_drained`]).
    pub fn channel_is_full(&self) -> bool {
        self.conn.outbound_len() > WORKER_CHANNEL_HIGH_WATER
    }

    /// Ends the worker: its channel closes once pending replies are written,
    /// and the process exits.
    pub fn exit(&mut self) {
        self.conn.close_connection_after_writing();
    }
}

/// When a worker that died is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never: a dead worker stays dead.
    Never,
    /// After every death it did not ask for, and never given up: a worker
    /// that cannot start (a missing file, a dead dependency) may be able to
    /// later, and a server that stopped restarting would look healthy while
    /// failing every ask. The first `max_restarts` restarts within
    /// `within` are quick — after 100 ms, then twice as long each time —
    /// and each further one backs off: 5 s, doubling up to 30 s, until
    /// deaths older than `within` are forgotten. The state is reported
    /// through the log hook and [`WorkerSystem::status`].
    OnFailure {
        /// Quick restarts within the window before backing off.
        max_restarts: u32,
        /// The window.
        within: Duration,
    },
}

/// The first backed-off restart's delay ([`RestartPolicy::OnFailure`]).
pub const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// The longest delay between restarts ([`RestartPolicy::OnFailure`]).
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where one worker instance is in its life, from
/// [`WorkerSystem::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerStatus {
    /// Its process is being started (asks wait for it).
    Starting,
    /// Its process runs and its channel is open.
    Running {
        /// The process id.
        pid: u32,
    },
    /// It was asked to exit ([`WorkerSystem::delete_worker`]) and is not
    /// restarted.
    Stopping,
    /// It died and is restarted after `restart_in` (asks fail with
    /// [`WorkerError::NotRunning`] meanwhile), or as soon as a fork server
    /// runs again.
    Restarting {
        /// How its last process ended.
        last_exit: WorkerExit,
        /// Deaths within its policy's window, this one included.
        deaths: u32,
        /// Whether the quick restarts are used up and the delay grows
        /// ([`BACKOFF_FIRST`] to [`BACKOFF_MAX`]).
        backing_off: bool,
        /// Time left until the restart.
        restart_in: Duration,
    },
    /// It died and its policy is [`RestartPolicy::Never`]; start it again
    /// with [`WorkerSystem::start_worker`].
    Dead {
        /// How its last process ended.
        last_exit: WorkerExit,
    },
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::OnFailure {
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

/// The master-side object of one worker, when it should not be the
/// built-in routing (Packet's `set_worker_proxy` and `Pimp`). It receives
/// everything its worker sends, raw, and may send to it with
/// [`WorkerSystem::send_to_worker`].
pub trait WorkerProxy: 'static {
    /// Something arrived from the worker.
    fn receive_from_worker(
        &mut self,
        reactor: &mut Reactor,
        worker: &WorkerId,
        message: FromWorker,
    );

    /// The worker's process is running and its channel open.
    fn worker_started(&mut self, reactor: &mut Reactor, worker: &WorkerId) {
        let _ = (reactor, worker);
    }

    /// The worker's process ended or its channel closed, for `exit`.
    fn worker_exited(&mut self, reactor: &mut Reactor, worker: &WorkerId, exit: &WorkerExit) {
        let _ = (reactor, worker, exit);
    }
}

/// A message from a worker, as a [`WorkerProxy`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum FromWorker {
    /// A reply to the request with this id (an ask sent through the proxy's
    /// reactor, whose asker the proxy now has to find itself).
    Reply {
        /// The master's request id.
        id: u64,
        /// The reply.
        message: WorkerMessage,
    },
    /// An unsolicited `send_data`.
    Message(WorkerMessage),
    /// An `update_result`.
    Result(WorkerMessage),
    /// A `log` line.
    Log(String),
}

type WorkerFactory = Box<dyn Fn() -> Box<dyn Worker>>;
type ProxyFactory = Box<dyn Fn() -> Box<dyn WorkerProxy> + Send>;
type MessageHook = Box<dyn FnMut(&mut Reactor, &WorkerId, WorkerMessage) + Send>;

/// How one worker type is run: Packet's class-level `set_worker_name`,
/// `set_no_auto_load`, `set_worker_proxy`, plus pools and restarts.
pub struct WorkerSpec {
    name: String,
    factory: WorkerFactory,
    config: master::SpecConfig,
}

impl WorkerSpec {
    /// A worker type named `name`, made with `factory` in each worker
    /// process.
    pub fn new<W: Worker>(name: &str, factory: impl Fn() -> W + 'static) -> WorkerSpec {
        WorkerSpec {
            name: name.to_string(),
            factory: Box::new(move || Box::new(factory())),
            config: master::SpecConfig::default(),
        }
    }

    /// Runs `n` instances (keys `"0"`..`"n-1"`) and spreads asks without a
    /// key over them, the least busy first.
    pub fn pool(mut self, n: usize) -> WorkerSpec {
        self.config.pool = n.max(1);
        self.config.pooled = true;
        self
    }

    /// Does not start with the reactor; start it with
    /// [`WorkerSystem::start_worker`] (Packet's `set_no_auto_load`).
    pub fn no_auto_load(mut self) -> WorkerSpec {
        self.config.auto_load = false;
        self
    }

    /// What to do when an instance dies (default
    /// [`RestartPolicy::default`]: restart always, quickly 5 times a
    /// minute, backing off after that).
    pub fn restart(mut self, policy: RestartPolicy) -> WorkerSpec {
        self.config.restart = policy;
        self
    }

    /// Fails every ask to this worker that has no reply after `timeout`
    /// with [`WorkerError::Timeout`] (default [`DEFAULT_ASK_TIMEOUT`],
    /// 60 s; [`WorkerSpec::no_ask_timeout`] lets asks wait as long as the
    /// worker lives). An ask can set its own with
    /// [`WorkerSystem::ask_worker_with_timeout`] or
    /// [`Connection::ask_worker_with_timeout`]. The worker is left alone:
    /// see [`WorkerSpec::heartbeat`] for one that is stuck.
    pub fn ask_timeout(mut self, timeout: Duration) -> WorkerSpec {
        self.config.ask_timeout = Some(timeout);
        self
    }

    /// Checks that each instance is alive (Unicorn's `timeout`): the master
    /// pings it every quarter of `timeout` and an instance whose reactor
    /// does not answer within `timeout` — stopped, hung, or blocking its
    /// loop in a long computation — is killed; its asks fail with
    /// [`WorkerError::Died`] and [`WorkerExit::Unresponsive`], and its
    /// restart policy applies. On by default, with [`DEFAULT_HEARTBEAT`]
    /// (15 s).
    ///
    /// The ping is answered by the worker's reactor, so a callback that
    /// blocks for longer than `timeout` gets the worker killed: raise it
    /// for work that blocks, or move such work off the reactor.
    pub fn heartbeat(mut self, timeout: Duration) -> WorkerSpec {
        self.config.heartbeat = Some(timeout);
        self
    }

    /// Turns the heartbeat off: a stopped or hung instance is then never
    /// replaced, and its asks end only by their timeout.
    pub fn no_heartbeat(mut self) -> WorkerSpec {
        self.config.heartbeat = None;
        self
    }

    /// Turns the ask deadline off: asks without a timeout of their own wait
    /// as long as the worker lives (the heartbeat still ends a stuck one).
    pub fn no_ask_timeout(mut self) -> WorkerSpec {
        self.config.ask_timeout = None;
        self
    }

    /// Uses a custom master-side proxy instead of the built-in routing.
    pub fn proxy<P: WorkerProxy>(mut self, factory: impl Fn() -> P + Send + 'static) -> WorkerSpec {
        self.config.proxy = Some(Box::new(move || Box::new(factory())));
        self
    }

    /// Where unsolicited `send_data` messages of this worker go (without a
    /// proxy); by default they are dropped.
    pub fn on_message(
        mut self,
        hook: impl FnMut(&mut Reactor, &WorkerId, WorkerMessage) + Send + 'static,
    ) -> WorkerSpec {
        self.config.on_message = Some(Box::new(hook));
        self
    }

    /// Sends the worker's standard output and error to this file (appended)
    /// instead of the master's.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> WorkerSpec {
        self.config.log_file = Some(path.into());
        self
    }

    /// Options for automatically started instances, read with
    /// [`WorkerContext::options`].
    ///
    /// # Errors
    /// The options cannot be encoded.
    pub fn options<T: Serialize + ?Sized>(
        mut self,
        options: &T,
    ) -> Result<WorkerSpec, MessageError> {
        self.config.options = WorkerMessage::encode(options)?.bytes;
        Ok(self)
    }
}

/// The worker types of a program, registered before anything starts.
/// Registration replaces Packet's `WORKER_ROOT` directory scan.
#[derive(Default)]
pub struct WorkerRegistry {
    specs: Vec<WorkerSpec>,
    log_worker: Option<String>,
}

impl WorkerRegistry {
    /// An empty registry.
    pub fn new() -> WorkerRegistry {
        WorkerRegistry::default()
    }

    /// Adds a worker type.
    pub fn register(mut self, spec: WorkerSpec) -> WorkerRegistry {
        self.specs.push(spec);
        self
    }

    /// Names the worker that receives every worker's `log` lines (as
    /// `String` messages), Packet's `log_worker`.
    pub fn log_worker(mut self, name: &str) -> WorkerRegistry {
        self.log_worker = Some(name.to_string());
        self
    }

    /// Forks the fork server. Call it first thing in `main`, before any
    /// thread is started: a multi-threaded process is never forked.
    ///
    /// If the fork server dies, the master starts this program again in
    /// fork-server mode (`PACKET_FORK_SERVER` in its environment): this
    /// same call then becomes the fork server and never returns. So build
    /// the same registry on every run, and do nothing with side effects
    /// before this call (open files, bind ports, start threads, print):
    /// it would be done again by each replacement fork server.
    ///
    /// # Errors
    /// The process already has several threads, two specs share a name, or
    /// the fork failed.
    pub fn start(self) -> io::Result<Workers> {
        let mut names: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("worker {:?} registered twice", w[0]),
            ));
        }
        fork_server::start(self)
    }
}

/// The started worker system, to hand to one reactor with
/// [`WorkerSystem::add`]. Dropping it unused shuts the fork server
/// down.
pub struct Workers {
    /// `None` once handed to a reactor.
    link: Option<OwnedFd>,
    fork_server: i32,
    specs: Vec<(String, master::SpecConfig)>,
    log_worker: Option<String>,
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("fork_server", &self.fork_server)
            .finish_non_exhaustive()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Never handed to a reactor: closing the link tells the fork server
        // to exit; then it is reaped.
        if let Some(link) = self.link.take() {
            drop(link);
            fork_server::reap(self.fork_server);
        }
    }
}

/// Asking workers from a connection; the replies come to
/// [`Handler::receive_reply`](crate::Handler::receive_reply) (Packet's
/// `worker_receive`) as [`WorkerReply`] values.
impl Connection<'_> {
    /// Asks worker `name` (the least busy instance of a pool); the reply
    /// comes to this handler's `receive_reply` under the id returned here,
    /// its value a [`WorkerReply`]. With
    /// [`Connection::set_ordered_replies`] on, replies come in ask order.
    ///
    /// # Errors
    /// The worker is not registered or not running, its channel is full, or
    /// the message cannot be encoded.
    pub fn ask_worker<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        message: &T,
    ) -> Result<AskId, WorkerError> {
        self.ask_worker_keyed(name, None, message)
    }

    /// Asks instance `key` of worker `name`, as [`Connection::ask_worker`].
    ///
    /// # Errors
    /// As [`Connection::ask_worker`].
    pub fn ask_worker_keyed<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        message: &T,
    ) -> Result<AskId, WorkerError> {
        let payload = WorkerMessage::encode(message)?;
        master::ask_worker_from(self, name, key, payload.as_bytes(), None)
    }
}
