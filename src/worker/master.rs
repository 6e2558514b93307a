//! The master's side of the workers: starting them through the fork
//! server, routing asks and replies, results and logs (Packet's `MetaPimp`,
//! or a user's [`WorkerProxy`]), and supervising — failing the asks of a
//! worker that died and restarting it.
//!
//! The state lives in the reactor (`Reactor::workers`) and is taken out for
//! the duration of each operation. User code — handlers, callbacks, proxies
//! — is never called while it is out: operations return `Delivery`s that
//! run once the state is back, so user code may ask workers again.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::wire::{Envelope, MAX_MESSAGE};
use super::{
    send_to, AskId, FromWorker, MessageHook, ProxyFactory, RestartPolicy, WorkerError, WorkerExit,
    WorkerId, WorkerMessage, WorkerProxy, WorkerReply, WorkerStatus, Workers,
};
use crate::codec::{FrameDecoder, HeaderFormat};
use crate::connection::{CloseReason, ConnId, Connection, Handler};
use crate::log::log_line;
use crate::reactor::{Extension, Reactor, StopHold, TimerId};
use crate::slab::IdMap;

/// Unsent bytes a worker's channel may hold before asks to it are refused
/// with [`WorkerError::Busy`]: a worker that stops reading cannot grow the
/// master's memory past this.
const CHANNEL_LIMIT: usize = 16 * 1024 * 1024;

/// The first quick restart's delay; each further one waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// How long a worker's end waits for the fork server's report of how its
/// process ended, after its channel closed first. The report normally
/// follows within a millisecond; this bounds the wait if it never comes.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(1);

/// How often a graceful stop looks whether the asks in flight are done.
const DRAIN_CHECK: Duration = Duration::from_millis(5);

/// The master-side settings of one registered worker type.
pub(crate) struct SpecConfig {
    pub(crate) pool: usize,
    pub(crate) pooled: bool,
    pub(crate) auto_load: bool,
    pub(crate) restart: RestartPolicy,
    pub(crate) proxy: Option<ProxyFactory>,
    pub(crate) on_message: Option<MessageHook>,
    pub(crate) log_file: Option<PathBuf>,
    pub(crate) options: Vec<u8>,
    pub(crate) ask_timeout: Option<Duration>,
    pub(crate) heartbeat: Option<Duration>,
}

impl Default for SpecConfig {
    fn default() -> Self {
        SpecConfig {
            pool: 1,
            pooled: false,
            auto_load: true,
            restart: RestartPolicy::default(),
            proxy: None,
            on_message: None,
            log_file: None,
            options: WorkerMessage::encode(&())
                .expect("`()` encodes")
                .as_bytes()
                .to_vec(),
            ask_timeout: Some(super::DEFAULT_ASK_TIMEOUT),
            heartbeat: Some(super::DEFAULT_HEARTBEAT),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Asked the fork server; asks queue in `backlog`.
    Starting,
    Running,
    /// `delete_worker` was called: no restart.
    Stopping,
    /// Waiting for a restart timer, or for a fork server to start it.
    Restarting,
    /// Dead until started again (restart policy `Never`).
    Dead,
}

struct Instance {
    state: State,
    pid: Option<u32>,
    channel: Option<ConnId>,
    /// Frames for the worker sent before its channel exists.
    backlog: Vec<u8>,
    /// The message types whose names this process was told (in the
    /// channel or the backlog), so that its type errors name them.
    told: super::types::FingerprintSet,
    last_told: u64,
    outstanding: usize,
    restarts: VecDeque<Instant>,
    options: Vec<u8>,
    proxy: Option<Box<dyn WorkerProxy>>,
    /// How the process ended, once the fork server said, or what the
    /// master decided before killing it (a protocol violation).
    exit: Option<WorkerExit>,
    /// The channel closed before that report: why (see
    /// [`Master::channel_lost`]).
    closed: Option<String>,
    /// When the heartbeat ping now unanswered was sent.
    ping_sent: Option<Instant>,
    /// The fork server that started the process ([`Master::generation`]).
    server: u64,
    /// While [`State::Restarting`]: when the restart is due, and whether
    /// the quick restarts were used up.
    restart_at: Option<(Instant, bool)>,
}

type ReplyCallback = Box<dyn FnOnce(&mut Reactor, WorkerReply)>;

/// Who waits for the reply to an ask.
enum Asker {
    /// A connection's `ask_worker`: the reply goes to its `receive_reply`
    /// under the id the connection expects it as.
    Conn(ConnId, AskId),
    Callback(ReplyCallback),
    /// Another worker's `ask_worker`: the reply goes back on its channel
    /// under its own id.
    Worker {
        channel: ConnId,
        id: u64,
    },
    /// Nobody: `send_to_worker`.
    Nobody,
}

struct Ask {
    worker: WorkerId,
    asker: Asker,
    /// When it fails with [`WorkerError::Timeout`], and its timeout.
    deadline: Option<(Instant, Duration)>,
}

/// What to do with user code once the state is back in the reactor.
enum Delivery {
    Reply(Asker, WorkerReply),
    Proxy(WorkerId, ProxyEvent),
    Hook(WorkerId, WorkerMessage),
    Log(WorkerId, String),
    /// A [`WorkerSystem::when_running`] callback, with the count.
    Running(RunningFn, usize),
}

type RunningFn = Box<dyn FnOnce(&mut Reactor, usize)>;

/// A [`WorkerSystem::when_running`] callback waiting for `count`
/// instances of worker `name`.
struct RunningWaiter {
    id: u64,
    name: String,
    count: usize,
    timer: TimerId,
    callback: RunningFn,
}

enum ProxyEvent {
    Message(FromWorker),
    Started,
    Exited(WorkerExit),
}

pub(crate) struct Master {
    link: Option<ConnId>,
    fork_server: i32,
    specs: Vec<(String, SpecConfig)>,
    log_worker: Option<String>,
    instances: HashMap<WorkerId, Instance>,
    by_channel: IdMap<ConnId, WorkerId>,
    starts: IdMap<u64, WorkerId>,
    next_seq: u64,
    next_id: u64,
    asks: IdMap<u64, Ask>,
    results: HashMap<WorkerId, WorkerMessage>,
    shutting_down: bool,
    /// A graceful stop waits for the asks in flight: new asks are refused
    /// and dead workers are not restarted.
    draining: bool,
    /// Turns taken among equally busy pool instances.
    turn: usize,
    waiters: Vec<RunningWaiter>,
    next_waiter: u64,
    /// The one timer that fails asks past their deadline, and when it
    /// fires: the earliest deadline when it was armed. One timer for all
    /// asks, re-armed only when it fires or an earlier deadline comes, so
    /// an ask costs no timer operation.
    sweep: Option<(Instant, TimerId)>,
    /// Counts the fork servers started: which one a worker belongs to.
    generation: u64,
    /// When the fork server was replaced, within the last minute.
    respawns: VecDeque<Instant>,
    /// Replaced fork servers not reaped yet (killed, so soon).
    dead_servers: Vec<i32>,
    /// A backed-off fork server start is waiting for its timer.
    respawn_pending: bool,
    /// Workers of dead fork servers that may be re-parented to the master
    /// (when it is PID 1), with when to stop looking for them.
    orphans: Vec<(i32, Instant)>,
}

impl Drop for Master {
    fn drop(&mut self) {
        // The link connection is closed by now (the reactor closes every
        // connection before dropping this), so the fork server is winding
        // down its workers; reap it, and any replaced one (killed already).
        if self.fork_server > 0 {
            super::fork_server::reap(self.fork_server);
        }
        for pid in self.dead_servers.drain(..) {
            let _ = packet_sys::process::wait(pid);
        }
    }
}

impl Master {
    /// Instances of worker `name` running now.
    fn running(&self, name: &str) -> usize {
        self.instances
            .iter()
            .filter(|(id, i)| id.name == name && i.state == State::Running)
            .count()
    }

    /// Hands over the [`WorkerSystem::when_running`] callbacks for
    /// `name` whose count is reached.
    fn wake_waiters(&mut self, reactor: &mut Reactor, name: &str, out: &mut Vec<Delivery>) {
        let running = self.running(name);
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &self.waiters[i];
            if w.name == name && running >= w.count {
                let w = self.waiters.swap_remove(i);
                reactor.cancel_timer(w.timer);
                out.push(Delivery::Running(w.callback, running));
            } else {
                i += 1;
            }
        }
    }

    fn spec(&self, name: &str) -> Option<&SpecConfig> {
        self.specs.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    fn spec_mut(&mut self, name: &str) -> Option<&mut SpecConfig> {
        self.specs
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// The instance an ask for `name`/`key` goes to, and the worker type's
    /// ask timeout (found on the way, so an ask looks its spec up once).
    /// A pool picks the least
    /// busy instance, and takes turns among equally busy ones (asks that
    /// expect no reply, and passed descriptors, never count as busy).
    /// `running_only`: a descriptor can only go to an instance whose
    /// channel exists.
    fn pick(
        &mut self,
        name: &str,
        key: Option<&str>,
        running_only: bool,
    ) -> Result<(WorkerId, Option<Duration>), WorkerError> {
        let spec = self
            .spec(name)
            .ok_or_else(|| WorkerError::NotRegistered(name.to_string()))?;
        let timeout = spec.ask_timeout;
        let live = |i: &Instance| match i.state {
            State::Running => true,
            State::Starting => !running_only,
            _ => false,
        };
        if key.is_none() && spec.pooled {
            let mut candidates: Vec<(&WorkerId, usize)> = self
                .instances
                .iter()
                .filter(|(id, i)| id.name == name && live(i))
                .map(|(id, i)| (id, i.outstanding))
                .collect();
            let least = candidates
                .iter()
                .map(|c| c.1)
                .min()
                .ok_or_else(|| WorkerError::NotRunning(name.to_string()))?;
            candidates.retain(|c| c.1 == least);
            candidates.sort();
            self.turn = self.turn.wrapping_add(1);
            return Ok((candidates[self.turn % candidates.len()].0.clone(), timeout));
        }
        let id = WorkerId {
            name: name.to_string(),
            key: key.map(str::to_string),
        };
        match self.instances.get(&id) {
            Some(i) if live(i) => Ok((id, timeout)),
            _ => Err(WorkerError::NotRunning(id.to_string())),
        }
    }

    fn start_instance(
        &mut self,
        reactor: &mut Reactor,
        id: WorkerId,
        options: Vec<u8>,
    ) -> Result<(), WorkerError> {
        let link = self.link.ok_or(WorkerError::NoWorkers)?;
        let spec = self
            .spec(&id.name)
            .ok_or_else(|| WorkerError::NotRegistered(id.name.clone()))?;
        let log_file = spec
            .log_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let proxy = spec.proxy.as_ref().map(|f| f());
        self.next_seq += 1;
        let seq = self.next_seq;
        let mut frame = Vec::new();
        Envelope::Start {
            seq,
            name: &id.name,
            key: id.key.as_deref(),
            log_file: log_file.as_deref(),
            options: &options,
        }
        .encode(&mut frame);
        if !send_to(reactor, link, &frame) {
            return Err(WorkerError::NoWorkers);
        }
        self.starts.insert(seq, id.clone());
        let inst = self.instances.entry(id).or_insert_with(|| Instance {
            state: State::Starting,
            pid: None,
            channel: None,
            backlog: Vec::new(),
            told: Default::default(),
            last_told: 0,
            outstanding: 0,
            restarts: VecDeque::new(),
            options: Vec::new(),
            proxy: None,
            exit: None,
            closed: None,
            ping_sent: None,
            server: 0,
            restart_at: None,
        });
        inst.state = State::Starting;
        // The previous process's late exit report must not be taken for
        // the new one's.
        inst.pid = None;
        inst.options = options;
        inst.exit = None;
        inst.closed = None;
        inst.ping_sent = None;
        inst.restart_at = None;
        if inst.proxy.is_none() {
            inst.proxy = proxy;
        }
        Ok(())
    }

    // Each argument is one independent part of an ask; bundling them would
    // only move the list into a struct built at each of the four callers.
    #[allow(clippy::too_many_arguments)]
    fn ask(
        &mut self,
        reactor: &mut Reactor,
        asker: Asker,
        name: &str,
        key: Option<&str>,
        payload: &[u8],
        fd: Option<OwnedFd>,
        timeout: Option<Duration>,
    ) -> Result<u64, (WorkerError, Asker)> {
        if self.draining || self.shutting_down {
            let worker = name.to_string();
            return Err((WorkerError::Stopping { worker }, asker));
        }
        let (id, spec_timeout) = match self.pick(name, key, fd.is_some()) {
            Ok(picked) => picked,
            Err(e) => return Err((e, asker)),
        };
        let timeout = timeout.or(spec_timeout);
        let inst = self.instances.get_mut(&id).expect("picked instances exist");
        if let Some(ch) = inst.channel {
            if reactor.connection(ch).map_or(0, |c| c.outbound_len()) > CHANNEL_LIMIT {
                return Err((WorkerError::Busy(id.to_string()), asker));
            }
        } else if inst.backlog.len() > CHANNEL_LIMIT {
            return Err((WorkerError::Busy(id.to_string()), asker));
        }
        let ask_id = if matches!(asker, Asker::Nobody) {
            0
        } else {
            self.next_id += 1;
            self.next_id
        };
        let mut frame = Vec::new();
        // An fd cannot wait in the backlog: such an ask fails below
        // without sending, so it tells no name.
        let may_send = inst.channel.is_some() || fd.is_none();
        if let Some(fingerprint) = super::types::fingerprint_of(payload).filter(|_| may_send) {
            // Most workers get one type: the last one is checked first.
            let new = inst.last_told != fingerprint && inst.told.insert(fingerprint);
            inst.last_told = fingerprint;
            if new {
                if let Some(name) = super::types::name_of(fingerprint) {
                    Envelope::TypeName {
                        fingerprint,
                        name: &name,
                    }
                    .encode(&mut frame);
                }
            }
        }
        match fd {
            Some(_) => Envelope::Fd {
                id: ask_id,
                payload,
            }
            .encode(&mut frame),
            None => Envelope::Request {
                id: ask_id,
                payload,
            }
            .encode(&mut frame),
        }
        match (inst.channel, fd) {
            (Some(ch), Some(fd)) => {
                if let Some(mut c) = reactor.connection(ch) {
                    c.send_fd(fd);
                }
                send_to(reactor, ch, &frame);
            }
            (Some(ch), None) => {
                send_to(reactor, ch, &frame);
            }
            (None, Some(_)) => return Err((WorkerError::NotRunning(id.to_string()), asker)),
            (None, None) => inst.backlog.extend_from_slice(&frame),
        }
        if ask_id != 0 {
            inst.outstanding += 1;
            let deadline = timeout.map(|t| (reactor.now() + t, t));
            self.asks.insert(
                ask_id,
                Ask {
                    worker: id,
                    asker,
                    deadline,
                },
            );
            if let Some((due, _)) = deadline {
                self.arm_sweep(reactor, due);
            }
        }
        Ok(ask_id)
    }

    /// A frame arrived from worker `from`.
    fn incoming(
        &mut self,
        reactor: &mut Reactor,
        from: &WorkerId,
        env: Envelope<'_>,
        out: &mut Vec<Delivery>,
    ) -> Result<(), String> {
        let has_proxy = self.instances.get(from).is_some_and(|i| i.proxy.is_some());
        match env {
            Envelope::Reply { id, payload } => {
                let message = WorkerMessage::from_slice(payload);
                if has_proxy {
                    out.push(Delivery::Proxy(
                        from.clone(),
                        ProxyEvent::Message(FromWorker::Reply { id, message }),
                    ));
                    return Ok(());
                }
                let Some(ask) = self.asks.remove(&id) else {
                    // Its asker stopped waiting: it timed out (its error
                    // went out then), or the reactor is stopping. Not
                    // silently: a late reply may mean work done twice.
                    out.push(Delivery::Log(
                        from.clone(),
                        format!(
                            "a reply ({} bytes) came after its ask timed out or was failed; dropped",
                            payload.len()
                        ),
                    ));
                    return Ok(());
                };
                if let Some(i) = self.instances.get_mut(&ask.worker) {
                    i.outstanding = i.outstanding.saturating_sub(1);
                }
                if let Asker::Conn(conn, _) = ask.asker {
                    if reactor.connection(conn).is_none() {
                        out.push(Delivery::Log(
                            from.clone(),
                            format!(
                                "a reply ({} bytes) came for connection {conn}, which has closed; dropped",
                                payload.len()
                            ),
                        ));
                        return Ok(());
                    }
                }
                out.push(Delivery::Reply(ask.asker, Ok(message)));
            }
            Envelope::TypeName { fingerprint, name } => {
                super::types::learn(fingerprint, name);
            }
            Envelope::Send { payload } => {
                let message = WorkerMessage::from_slice(payload);
                if has_proxy {
                    out.push(Delivery::Proxy(
                        from.clone(),
                        ProxyEvent::Message(FromWorker::Message(message)),
                    ));
                } else {
                    out.push(Delivery::Hook(from.clone(), message));
                }
            }
            Envelope::Result { payload } => {
                let message = WorkerMessage::from_slice(payload);
                if has_proxy {
                    out.push(Delivery::Proxy(
                        from.clone(),
                        ProxyEvent::Message(FromWorker::Result(message.clone())),
                    ));
                }
                self.results.insert(from.clone(), message);
            }
            Envelope::Log { text } => {
                if has_proxy {
                    out.push(Delivery::Proxy(
                        from.clone(),
                        ProxyEvent::Message(FromWorker::Log(text.to_string())),
                    ));
                } else if let Some(log_worker) = self.log_worker.clone().filter(|n| *n != from.name)
                {
                    let line = format!("{from}: {text}");
                    let payload = WorkerMessage::encode(&line).map_err(|e| e.to_string())?;
                    if self
                        .ask(
                            reactor,
                            Asker::Nobody,
                            &log_worker,
                            None,
                            payload.as_bytes(),
                            None,
                            None,
                        )
                        .is_err()
                    {
                        out.push(Delivery::Log(from.clone(), text.to_string()));
                    }
                } else {
                    out.push(Delivery::Log(from.clone(), text.to_string()));
                }
            }
            Envelope::Ask {
                id,
                name,
                key,
                payload,
            } => {
                let Some(channel) = self.instances.get(from).and_then(|i| i.channel) else {
                    return Ok(());
                };
                if let Err((e, _)) = self.ask(
                    reactor,
                    Asker::Worker { channel, id },
                    name,
                    key,
                    payload,
                    None,
                    None,
                ) {
                    let mut frame = Vec::new();
                    Envelope::Failed {
                        id,
                        error: &e.to_string(),
                    }
                    .encode(&mut frame);
                    send_to(reactor, channel, &frame);
                }
            }
            Envelope::Pong => {
                if let Some(i) = self.instances.get_mut(from) {
                    i.ping_sent = None;
                }
            }
            other => return Err(format!("message not allowed from a worker: kind {other:?}")),
        }
        Ok(())
    }

    /// Worker `id`'s channel closed. A process that died (killed, crashed)
    /// closes its channel at the moment the fork server's pidfd fires, and
    /// the channel's end of stream often arrives first: then the end waits
    /// for the fork server's report (at most [`EXIT_REPORT_WAIT`]), so that
    /// askers and proxies learn "killed by signal 9", not "connection reset
    /// by peer". Asks made meanwhile wait in the backlog and fail with it.
    fn channel_lost(
        &mut self,
        reactor: &mut Reactor,
        id: &WorkerId,
        why: String,
        out: &mut Vec<Delivery>,
    ) {
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        let reporter_alive = self.link.is_some() && inst.server == self.generation;
        let pid = match inst.pid {
            Some(pid)
                if inst.exit.is_none()
                    && reporter_alive
                    && matches!(inst.state, State::Starting | State::Running) =>
            {
                pid
            }
            _ => return self.channel_closed(reactor, id, why, out),
        };
        if self.shutting_down {
            return self.channel_closed(reactor, id, why, out);
        }
        if let Some(ch) = inst.channel.take() {
            self.by_channel.remove(&ch);
        }
        inst.closed = Some(why);
        let id = id.clone();
        reactor.add_timer(EXIT_REPORT_WAIT, move |r| {
            let mut out = Vec::new();
            with_master(r, |m, r| {
                let inst = m.instances.get_mut(&id)?;
                // A restarted instance has another pid, and its own wait.
                if inst.pid == Some(pid) {
                    let why = inst.closed.take()?;
                    m.channel_closed(r, &id, why, &mut out);
                }
                Some(())
            });
            deliver(r, out);
        });
    }

    /// Worker `id`'s channel closed: fail its asks, tell its proxy, and
    /// restart it if its policy says so.
    fn channel_closed(
        &mut self,
        reactor: &mut Reactor,
        id: &WorkerId,
        why: String,
        out: &mut Vec<Delivery>,
    ) {
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        if let Some(ch) = inst.channel.take() {
            self.by_channel.remove(&ch);
        }
        inst.backlog.clear();
        inst.told.clear();
        inst.last_told = 0;
        inst.outstanding = 0;
        let reason = inst.exit.clone().unwrap_or(WorkerExit::ChannelBroke(why));
        let failed: Vec<u64> = self
            .asks
            .iter()
            .filter(|(_, a)| a.worker == *id)
            .map(|(k, _)| *k)
            .collect();
        for ask_id in failed {
            if let Some(ask) = self.asks.remove(&ask_id) {
                let err = WorkerError::Died {
                    worker: id.clone(),
                    exit: reason.clone(),
                };
                out.push(Delivery::Reply(ask.asker, Err(err)));
            }
        }
        let inst = self.instances.get_mut(id).expect("checked above");
        if inst.proxy.is_some() {
            out.push(Delivery::Proxy(
                id.clone(),
                ProxyEvent::Exited(reason.clone()),
            ));
        }
        if inst.state == State::Stopping || self.shutting_down || self.draining {
            if !self.shutting_down {
                self.instances.remove(id);
            }
            return;
        }
        let policy = self
            .spec(&id.name)
            .map_or(RestartPolicy::Never, |s| s.restart);
        let inst = self.instances.get_mut(id).expect("checked above");
        let RestartPolicy::OnFailure {
            max_restarts,
            within,
        } = policy
        else {
            inst.state = State::Dead;
            out.push(Delivery::Log(
                id.clone(),
                format!("died ({reason}); its restart policy is Never"),
            ));
            return;
        };
        let now = reactor.now();
        forget_before(&mut inst.restarts, now, within);
        let (delay, backing_off) = restart_delay(inst.restarts.len(), max_restarts);
        inst.restarts.push_back(now);
        inst.state = State::Restarting;
        inst.restart_at = Some((now + delay, backing_off));
        if backing_off {
            out.push(Delivery::Log(
                id.clone(),
                format!(
                    "died ({reason}) {} times within {within:?}; backing off: restarting in {delay:?}",
                    inst.restarts.len()
                ),
            ));
        }
        let id = id.clone();
        reactor.add_timer(delay, move |r| {
            with_master(r, |m, r| m.restart_due(r, &id));
        });
    }

    /// A restart timer fired for `id`: start it, unless it was deleted or
    /// started meanwhile, or the reactor stops. Without a fork server it
    /// waits for the next one ([`Master::respawn_fork_server`]).
    fn restart_due(&mut self, reactor: &mut Reactor, id: &WorkerId) {
        let Some(inst) = self.instances.get(id) else {
            return;
        };
        if inst.state != State::Restarting || self.shutting_down || self.draining {
            return;
        }
        if self.link.is_none() {
            return;
        }
        let options = inst.options.clone();
        if let Err(e) = self.start_instance(reactor, id.clone(), options) {
            // The link refused the request: it is closing, and its unbind
            // brings a new fork server, which starts this one.
            log_line!("[{id}] cannot be restarted now: {e}");
            if let Some(i) = self.instances.get_mut(id) {
                i.state = State::Restarting;
            }
        }
    }
}

/// Drops the times older than `within` from the front of `times`.
fn forget_before(times: &mut VecDeque<Instant>, now: Instant, within: Duration) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) > within)
    {
        times.pop_front();
    }
}

/// The delay before restart number `done + 1` within the window, and
/// whether it is backed off: `quick` restarts after 100 ms, 200 ms, ...,
/// then [`super::BACKOFF_FIRST`] doubling up to [`super::BACKOFF_MAX`].
fn restart_delay(done: usize, quick: u32) -> (Duration, bool) {
    let quick = quick as usize;
    if done < quick {
        let delay = FIRST_BACKOFF.saturating_mul(1 << done.min(16));
        return (delay.min(super::BACKOFF_FIRST), false);
    }
    let delay = super::BACKOFF_FIRST.saturating_mul(1 << (done - quick).min(16));
    (delay.min(super::BACKOFF_MAX), true)
}

/// Fork servers started quickly within a minute before the master backs
/// off (a program whose `main` does not call `WorkerRegistry::start` first
/// would otherwise be started in a tight loop).
const MAX_RESPAWNS: usize = 5;

/// How soon a killed fork server not reaped yet is looked at again.
const REAP_AGAIN: Duration = Duration::from_millis(10);

/// How long the master looks for the workers of a dead fork server among
/// its own children (they are once re-parented to a PID-1 master).
const ORPHAN_WAIT: Duration = Duration::from_secs(10);

impl Master {
    /// The link to the fork server closed. Unless the reactor is stopping,
    /// the fork server died: reap it, fail the starts it will never
    /// answer, end the workers it started (they die with it where
    /// `PR_SET_PDEATHSIG` exists; their channels are returned to be closed
    /// elsewhere), and start a new fork server, through which the restart
    /// policies bring the workers back.
    fn fork_server_lost(
        &mut self,
        reactor: &mut Reactor,
        reason: &CloseReason,
        out: &mut Vec<Delivery>,
    ) -> Vec<ConnId> {
        self.link = None;
        if self.shutting_down || self.draining {
            return Vec::new();
        }
        let old = std::mem::replace(&mut self.fork_server, 0);
        log_line!("[workers] the fork server {old} is gone ({reason}); starting a new one");
        // It closed the link by dying, or is about to be made to.
        let _ = packet_sys::process::kill(old, packet_sys::process::SIGKILL);
        self.dead_servers.push(old);
        // Its workers die with it (`PR_SET_PDEATHSIG`) and are re-parented
        // to the nearest subreaper or PID 1: when that is the master, it
        // reaps them, or they would stay zombies for its whole life.
        let until = reactor.now() + ORPHAN_WAIT;
        let generation = self.generation;
        self.orphans.extend(
            self.instances
                .values()
                .filter(|i| i.server == generation)
                .filter_map(|i| i.pid)
                .map(|pid| (pid as i32, until)),
        );
        if self.reap_leftovers(reactor.now()) {
            reactor.add_timer(REAP_AGAIN, reap_leftovers);
        }

        let starting: Vec<WorkerId> = self.starts.drain().map(|(_, id)| id).collect();
        let mut orphans = Vec::new();
        let mut waiting = Vec::new();
        for (id, inst) in &mut self.instances {
            if !matches!(
                inst.state,
                State::Starting | State::Running | State::Stopping
            ) {
                continue;
            }
            inst.exit.get_or_insert(WorkerExit::ForkServerDied);
            match inst.channel {
                Some(ch) => orphans.push(ch),
                None if inst.closed.is_some() || starting.contains(id) => waiting.push(id.clone()),
                None => {}
            }
        }
        // Its respawn must be in place before the restart timers fire.
        self.respawn_fork_server(reactor);
        for id in waiting {
            let why = self
                .instances
                .get_mut(&id)
                .and_then(|i| i.closed.take())
                .unwrap_or_else(|| "its fork server died".to_string());
            self.channel_closed(reactor, &id, why, out);
        }
        orphans
    }

    /// Starts a new fork server now, or — after [`MAX_RESPAWNS`] within a
    /// minute — backs off (5 s, doubling up to 30 s) and tries then, never
    /// giving up: meanwhile asks fail with [`WorkerError::NotRunning`] and
    /// the log hook says why.
    fn respawn_fork_server(&mut self, reactor: &mut Reactor) {
        if self.link.is_some() || self.respawn_pending || self.shutting_down || self.draining {
            return;
        }
        let now = reactor.now();
        forget_before(&mut self.respawns, now, Duration::from_secs(60));
        let (delay, backing_off) = restart_delay(self.respawns.len(), MAX_RESPAWNS as u32);
        if backing_off {
            log_line!(
                "[workers] {} fork servers died within a minute; backing off: \
                 starting another in {delay:?} (workers are not running until then)",
                self.respawns.len()
            );
            self.respawn_pending = true;
            reactor.add_timer(delay, |r| {
                with_master(r, |m, r| {
                    m.respawn_pending = false;
                    m.respawn_fork_server(r);
                });
            });
            return;
        }
        self.respawns.push_back(now);
        let started = super::fork_server::respawn().and_then(|(link, pid)| {
            match reactor
                .extensions()
                .attach_channel(link, LinkHandler::new())
            {
                Ok(conn) => Ok((conn, pid)),
                Err(e) => {
                    // The closed link ends it; it is reaped at shutdown.
                    self.dead_servers.push(pid);
                    Err(e)
                }
            }
        });
        match started {
            Ok((conn, pid)) => {
                self.link = Some(conn);
                self.fork_server = pid;
                self.generation += 1;
                // Instances whose restart came due while there was no fork
                // server start now; the others when their timers fire.
                let due: Vec<WorkerId> = self
                    .instances
                    .iter()
                    .filter(|(_, i)| {
                        i.state == State::Restarting && i.restart_at.is_none_or(|(at, _)| at <= now)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in due {
                    self.restart_due(reactor, &id);
                }
            }
            Err(e) => {
                log_line!("[workers] cannot start a new fork server: {e}; trying again");
                self.respawn_fork_server(reactor);
            }
        }
    }

    /// Makes sure the sweep fires by `due`.
    fn arm_sweep(&mut self, reactor: &mut Reactor, due: Instant) {
        if self.sweep.is_some_and(|(at, _)| at <= due) {
            return;
        }
        if let Some((_, timer)) = self.sweep.take() {
            reactor.cancel_timer(timer);
        }
        let timer = reactor.add_timer(due.saturating_duration_since(reactor.now()), |r| {
            let mut out = Vec::new();
            with_master(r, |m, r| {
                m.sweep = None;
                m.expire_asks(r, &mut out);
            });
            deliver(r, out);
        });
        self.sweep = Some((due, timer));
    }

    /// Fails the asks past their deadline with [`WorkerError::Timeout`] and
    /// arms the sweep for the earliest deadline left.
    fn expire_asks(&mut self, reactor: &mut Reactor, out: &mut Vec<Delivery>) {
        let now = reactor.now();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, ask) in &self.asks {
            match ask.deadline {
                Some((due, _)) if due <= now => expired.push(*id),
                Some((due, _)) => next = Some(next.map_or(due, |n| n.min(due))),
                None => {}
            }
        }
        // In the order they were made, so each asker sees its own order.
        expired.sort_unstable();
        for id in expired {
            let Some(ask) = self.asks.remove(&id) else {
                continue;
            };
            if let Some(i) = self.instances.get_mut(&ask.worker) {
                i.outstanding = i.outstanding.saturating_sub(1);
            }
            let after = ask.deadline.map_or(Duration::ZERO, |(_, t)| t);
            let err = WorkerError::Timeout {
                worker: ask.worker,
                after,
            };
            out.push(Delivery::Reply(ask.asker, Err(err)));
        }
        if let Some(due) = next {
            self.arm_sweep(reactor, due);
        }
    }

    /// One heartbeat round: pings each running instance of a worker type
    /// with a heartbeat that has no ping outstanding, and kills each whose
    /// ping has waited longer than its heartbeat's timeout.
    fn heartbeat_tick(&mut self, reactor: &mut Reactor) {
        let now = reactor.now();
        for (id, inst) in &mut self.instances {
            let Some(limit) = self
                .specs
                .iter()
                .find(|(n, _)| *n == id.name)
                .and_then(|(_, c)| c.heartbeat)
            else {
                continue;
            };
            let (State::Running, Some(ch), Some(pid)) = (inst.state, inst.channel, inst.pid) else {
                continue;
            };
            match inst.ping_sent {
                None => {
                    let mut frame = Vec::new();
                    Envelope::Ping.encode(&mut frame);
                    send_to(reactor, ch, &frame);
                    inst.ping_sent = Some(now);
                }
                Some(sent) if now.duration_since(sent) >= limit && inst.exit.is_none() => {
                    log_line!("[{id}] no answer to a heartbeat within {limit:?}: killing it");
                    inst.exit = Some(WorkerExit::Unresponsive(limit));
                    // Its channel closes with the process, which fails its
                    // asks with the reason set here and restarts it.
                    let _ = packet_sys::process::kill(pid as i32, 9);
                }
                Some(_) => {}
            }
        }
    }

    /// Fails every ask still waiting for a reply with
    /// [`WorkerError::Stopping`]: the reactor stops before they can finish.
    /// How many, for the stop's report.
    fn fail_all_asks(&mut self, out: &mut Vec<Delivery>) -> usize {
        for inst in self.instances.values_mut() {
            inst.outstanding = 0;
        }
        let mut asks: Vec<(u64, Ask)> = self.asks.drain().collect();
        // In the order they were made, so each asker sees its own order.
        asks.sort_unstable_by_key(|(id, _)| *id);
        let failed = asks.len();
        for (_, ask) in asks {
            let worker = ask.worker.to_string();
            out.push(Delivery::Reply(
                ask.asker,
                Err(WorkerError::Stopping { worker }),
            ));
        }
        failed
    }
}

/// Reaps the replaced fork servers, and their workers if they became the
/// master's children, that have exited, and looks again soon for those
/// that have not yet (they were killed, so it is a matter of moments);
/// never blocks the reactor.
fn reap_leftovers(reactor: &mut Reactor) {
    let now = reactor.now();
    if with_master(reactor, |m, _| m.reap_leftovers(now)) == Some(true) {
        reactor.add_timer(REAP_AGAIN, reap_leftovers);
    }
}

impl Master {
    /// One round of [`reap_leftovers`]: whether some are left to look at.
    fn reap_leftovers(&mut self, now: Instant) -> bool {
        use packet_sys::process::{process_exists, try_wait};
        self.dead_servers
            .retain(|&pid| matches!(try_wait(Some(pid)), Ok(None)));
        self.orphans
            .retain(|&(pid, until)| match try_wait(Some(pid)) {
                // Re-parented to the master, and still dying.
                Ok(None) => true,
                Ok(Some(_)) => false,
                // Not (yet) the master's child: its fork server may not be
                // reaped yet. Someone else's once that is done, or gone.
                Err(_) => now < until && process_exists(pid),
            });
        !self.dead_servers.is_empty() || !self.orphans.is_empty()
    }
}

/// Runs `f` with the master state taken out of the reactor, then runs the
/// deliveries it produced. `None` when the reactor has no workers.
fn with_master<R>(
    reactor: &mut Reactor,
    f: impl FnOnce(&mut Master, &mut Reactor) -> R,
) -> Option<R> {
    reactor.extensions().with(f)
}

fn deliver(reactor: &mut Reactor, deliveries: Vec<Delivery>) {
    for d in deliveries {
        match d {
            Delivery::Reply(Asker::Conn(conn, ask), reply) => match reactor.connection(conn) {
                Some(mut c) => c.send_reply(ask, reply),
                None => log_line!("{ask} for connection {conn} dropped: it has closed"),
            },
            Delivery::Reply(Asker::Callback(f), reply) => f(reactor, reply),
            Delivery::Reply(Asker::Worker { channel, id }, reply) => {
                let mut frame = Vec::new();
                match &reply {
                    Ok(m) => Envelope::Reply {
                        id,
                        payload: m.as_bytes(),
                    }
                    .encode(&mut frame),
                    Err(e) => Envelope::Failed {
                        id,
                        error: &e.to_string(),
                    }
                    .encode(&mut frame),
                }
                send_to(reactor, channel, &frame);
            }
            Delivery::Reply(Asker::Nobody, _) => {}
            Delivery::Proxy(id, event) => {
                let proxy = with_master(reactor, |m, _| {
                    m.instances.get_mut(&id).and_then(|i| i.proxy.take())
                })
                .flatten();
                let Some(mut proxy) = proxy else { continue };
                match event {
                    ProxyEvent::Message(msg) => proxy.receive_from_worker(reactor, &id, msg),
                    ProxyEvent::Started => proxy.worker_started(reactor, &id),
                    ProxyEvent::Exited(why) => proxy.worker_exited(reactor, &id, &why),
                }
                with_master(reactor, |m, _| {
                    if let Some(i) = m.instances.get_mut(&id) {
                        i.proxy.get_or_insert(proxy);
                    }
                });
            }
            Delivery::Hook(id, msg) => {
                let hook = with_master(reactor, |m, _| {
                    m.spec_mut(&id.name).and_then(|s| s.on_message.take())
                })
                .flatten();
                let Some(mut hook) = hook else { continue };
                hook(reactor, &id, msg);
                with_master(reactor, |m, _| {
                    if let Some(s) = m.spec_mut(&id.name) {
                        s.on_message.get_or_insert(hook);
                    }
                });
            }
            Delivery::Log(id, text) => log_line!("[{id}] {text}"),
            Delivery::Running(callback, running) => callback(reactor, running),
        }
    }
}

/// The master's end of one worker's channel.
struct ChannelHandler {
    worker: WorkerId,
    decoder: FrameDecoder,
}

impl Handler for ChannelHandler {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let worker = &self.worker;
        let mut deliveries = Vec::new();
        let mut broken: Option<String> = None;
        let reactor = conn.reactor();
        let decoded = with_master(reactor, |m, r| {
            self.decoder.decode(data, |frame| {
                if broken.is_some() {
                    return;
                }
                match Envelope::decode(frame) {
                    Ok(env) => {
                        if let Err(e) = m.incoming(r, worker, env, &mut deliveries) {
                            broken = Some(e);
                        }
                    }
                    Err(e) => broken = Some(format!("bad message: {e}")),
                }
            })
        });
        if let Some(Err(e)) = decoded {
            broken = Some(format!("bad frame: {e}"));
        }
        deliver(conn.reactor(), deliveries);
        if let Some(why) = broken {
            // A worker that breaks the protocol is not trusted to exit by
            // itself when its channel closes.
            log_line!("[{}] closing its channel: {why}", self.worker);
            // Askers learn why the worker is gone.
            let pid = with_master(conn.reactor(), |m, _| {
                let inst = m.instances.get_mut(&self.worker)?;
                inst.exit = Some(WorkerExit::ProtocolViolation(why.clone()));
                inst.pid
            })
            .flatten();
            if let Some(pid) = pid {
                let _ = packet_sys::process::kill(pid as i32, 9);
            }
            conn.close_connection();
        }
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let mut deliveries = Vec::new();
        let why = match reason {
            CloseReason::PeerClosed => "channel closed".to_string(),
            other => other.to_string(),
        };
        with_master(conn.reactor(), |m, r| {
            m.channel_lost(r, &self.worker, why, &mut deliveries)
        });
        deliver(conn.reactor(), deliveries);
    }
}

/// The master's end of the link to the fork server.
struct LinkHandler {
    decoder: FrameDecoder,
    fds: VecDeque<OwnedFd>,
}

impl LinkHandler {
    fn new() -> LinkHandler {
        LinkHandler {
            decoder: FrameDecoder::new(HeaderFormat::Compact).with_max_frame_len(MAX_MESSAGE),
            fds: VecDeque::new(),
        }
    }

    /// The fork server's messages in `data`; anything the fork server does
    /// not send ends the list with [`LinkEvent::Garbage`].
    fn events(&mut self, data: &[u8]) -> Vec<LinkEvent> {
        let mut events = Vec::new();
        let fds = &mut self.fds;
        let decoded = self.decoder.decode(data, |frame| {
            if matches!(events.last(), Some(LinkEvent::Garbage(_))) {
                return;
            }
            events.push(match Envelope::decode(frame) {
                Ok(Envelope::Started { seq, pid }) => LinkEvent::Started {
                    seq,
                    pid,
                    fd: fds.pop_front(),
                },
                Ok(Envelope::StartFailed { seq, error }) => LinkEvent::Failed {
                    seq,
                    error: error.to_string(),
                },
                Ok(Envelope::Exited { pid, status }) => LinkEvent::Exited { pid, status },
                Ok(other) => LinkEvent::Garbage(format!("unexpected message {other:?}")),
                Err(e) => LinkEvent::Garbage(format!("bad message: {e}")),
            })
        });
        if let Err(e) = decoded {
            if !matches!(events.last(), Some(LinkEvent::Garbage(_))) {
                events.push(LinkEvent::Garbage(format!("bad frame: {e}")));
            }
        }
        events
    }
}

/// Acts on what came from the fork server. Garbage means the link cannot
/// be trusted any more (a report lost in it would leave a worker never
/// adopted): the link is closed, which replaces the fork server and
/// restarts its workers ([`Master::fork_server_lost`]).
fn link_input(reactor: &mut Reactor, events: Vec<LinkEvent>) {
    let mut deliveries = Vec::new();
    for event in events {
        if let LinkEvent::Garbage(why) = event {
            let link = with_master(reactor, |m, _| {
                let server = m.fork_server;
                log_line!("[workers] the fork server {server} sent garbage ({why}); replacing it");
                m.link
            })
            .flatten();
            if let Some(mut link) = link.and_then(|l| reactor.connection(l)) {
                link.close_connection();
            }
            break;
        }
        with_master(reactor, |m, r| link_event(m, r, event, &mut deliveries));
    }
    deliver(reactor, deliveries);
}

impl Handler for LinkHandler {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.fds.extend(conn.take_received_fds());
        let events = self.events(data);
        link_input(conn.reactor(), events);
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let mut out = Vec::new();
        let orphans = with_master(conn.reactor(), |m, r| {
            m.fork_server_lost(r, reason, &mut out)
        })
        .unwrap_or_default();
        // Closed once the state is back: their unbinds need it.
        for ch in orphans {
            if let Some(mut ch) = conn.reactor().connection(ch) {
                ch.close_connection();
            }
        }
        deliver(conn.reactor(), out);
    }
}

enum LinkEvent {
    Started {
        seq: u64,
        pid: u32,
        fd: Option<OwnedFd>,
    },
    Failed {
        seq: u64,
        error: String,
    },
    Exited {
        pid: u32,
        status: i64,
    },
    /// Bytes the fork server never sends, and why they are wrong.
    Garbage(String),
}

fn link_event(m: &mut Master, r: &mut Reactor, event: LinkEvent, out: &mut Vec<Delivery>) {
    match event {
        LinkEvent::Started { seq, pid, fd } => {
            let Some(id) = m.starts.remove(&seq) else {
                return;
            };
            let Some(fd) = fd else {
                log_line!("[{id}] the fork server sent no channel");
                let _ = packet_sys::process::kill(pid as i32, 9);
                return;
            };
            let Some(inst) = m.instances.get_mut(&id) else {
                return;
            };
            if inst.state != State::Starting {
                // Deleted while starting: dropping the channel ends it.
                if inst.state == State::Stopping {
                    m.instances.remove(&id);
                }
                return;
            }
            let handler = ChannelHandler {
                worker: id.clone(),
                decoder: FrameDecoder::new(HeaderFormat::Compact).with_max_frame_len(MAX_MESSAGE),
            };
            match r.extensions().attach_channel(fd, handler) {
                Ok(ch) => {
                    inst.channel = Some(ch);
                    inst.pid = Some(pid);
                    inst.server = m.generation;
                    inst.state = State::Running;
                    let backlog = std::mem::take(&mut inst.backlog);
                    send_to(r, ch, &backlog);
                    m.by_channel.insert(ch, id.clone());
                    if inst.proxy.is_some() {
                        out.push(Delivery::Proxy(id.clone(), ProxyEvent::Started));
                    }
                    m.wake_waiters(r, &id.name, out);
                }
                Err(e) => {
                    let _ = packet_sys::process::kill(pid as i32, 9);
                    m.channel_closed(r, &id, format!("cannot watch its channel: {e}"), out);
                }
            }
        }
        LinkEvent::Failed { seq, error } => {
            let Some(id) = m.starts.remove(&seq) else {
                return;
            };
            if let Some(inst) = m.instances.get_mut(&id) {
                inst.exit = Some(WorkerExit::StartFailed(error.clone()));
            }
            m.channel_closed(r, &id, error, out);
        }
        LinkEvent::Exited { pid, status } => {
            let how = if status < 0 {
                WorkerExit::Signaled(i32::try_from(-status).unwrap_or(i32::MAX))
            } else {
                WorkerExit::Exited(i32::try_from(status).unwrap_or(i32::MAX))
            };
            let found = m.instances.iter_mut().find(|(_, i)| i.pid == Some(pid));
            let Some((id, inst)) = found else { return };
            // What the master decided before killing it (a protocol
            // violation) says more than the SIGKILL it sent.
            inst.exit.get_or_insert(how);
            // Its channel closed first and is waiting for this report.
            if let Some(why) = inst.closed.take() {
                let id = id.clone();
                m.channel_closed(r, &id, why, out);
            }
        }
        LinkEvent::Garbage(_) => {}
    }
}

/// The reactor's worker system, borrowed for one call:
/// `reactor.workers()`. Starting, stopping and asking workers, their
/// results, process ids and status. Attach one with
/// [`add`](WorkerSystem::add) first; until then every call reports
/// [`WorkerError::NoWorkers`] (or `None`, or nothing).
///
/// Not to be confused with [`Workers`], the started fork server that
/// [`WorkerRegistry::start`](super::WorkerRegistry::start) returns and
/// `add` consumes.
///
/// ```no_run
/// # use packet::Reactor;
/// # use packet::worker::DecodeReply;
/// # fn f(reactor: &mut Reactor) -> Result<(), packet::worker::WorkerError> {
/// reactor.workers().ask_worker_with("upcase", None, "hello", |_, reply| {
///     println!("{:?}", reply.decode::<String>());
/// })?;
/// println!("{} running", reactor.workers().pids("upcase").len());
/// # Ok(()) }
/// ```
pub struct WorkerSystem<'r> {
    reactor: &'r mut Reactor,
}

impl Reactor {
    /// This reactor's worker system: [`WorkerSystem`], Packet's
    /// `start_worker`, `ask_worker`, `delete_worker` and the rest.
    pub fn workers(&mut self) -> WorkerSystem<'_> {
        WorkerSystem { reactor: self }
    }
}

impl Reactor {
    /// An ask whose reply goes to `callback`, with its own timeout or the
    /// worker type's.
    fn ask_callback<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        message: &T,
        timeout: Option<Duration>,
        callback: impl FnOnce(&mut Reactor, WorkerReply) + 'static,
    ) -> Result<(), WorkerError> {
        let payload = WorkerMessage::encode(message)?;
        let asker = Asker::Callback(Box::new(callback));
        self.ask_raw(asker, name, key, payload.as_bytes(), None, timeout)
            .map(|_| ())
    }

    fn ask_raw(
        &mut self,
        asker: Asker,
        name: &str,
        key: Option<&str>,
        payload: &[u8],
        fd: Option<OwnedFd>,
        timeout: Option<Duration>,
    ) -> Result<u64, WorkerError> {
        match with_master(self, |m, r| {
            m.ask(r, asker, name, key, payload, fd, timeout)
        }) {
            None => Err(WorkerError::NoWorkers),
            Some(Ok(id)) => Ok(id),
            Some(Err((e, _))) => Err(e),
        }
    }
}

impl WorkerSystem<'_> {
    /// Attaches the started worker system to this reactor and starts every
    /// worker not marked `no_auto_load` (Packet's pre-forking at start).
    ///
    /// # Errors
    /// The link to the fork server cannot be watched.
    pub fn add(&mut self, mut workers: Workers) -> io::Result<()> {
        let r = &mut *self.reactor;
        let link = workers
            .link
            .take()
            .ok_or_else(|| io::Error::other("workers already attached"))?;
        let link = r.extensions().attach_channel(link, LinkHandler::new())?;
        let specs = std::mem::take(&mut workers.specs);
        let auto: Vec<(WorkerId, Vec<u8>)> = specs
            .iter()
            .filter(|(_, c)| c.auto_load)
            .flat_map(|(name, c)| {
                let keys: Vec<Option<String>> = if c.pooled {
                    (0..c.pool).map(|i| Some(i.to_string())).collect()
                } else {
                    vec![None]
                };
                keys.into_iter().map(move |key| {
                    (
                        WorkerId {
                            name: name.clone(),
                            key,
                        },
                        c.options.clone(),
                    )
                })
            })
            .collect();
        let heartbeat = specs.iter().filter_map(|(_, c)| c.heartbeat).min();
        r.extensions().insert(Master {
            link: Some(link),
            fork_server: std::mem::replace(&mut workers.fork_server, 0),
            specs,
            log_worker: workers.log_worker.take(),
            instances: HashMap::new(),
            by_channel: IdMap::default(),
            starts: IdMap::default(),
            next_seq: 0,
            next_id: 0,
            asks: IdMap::default(),
            results: HashMap::new(),
            shutting_down: false,
            draining: false,
            turn: 0,
            waiters: Vec::new(),
            next_waiter: 0,
            sweep: None,
            generation: 0,
            respawns: VecDeque::new(),
            dead_servers: Vec::new(),
            respawn_pending: false,
            orphans: Vec::new(),
        });
        if let Some(limit) = heartbeat {
            let every = (limit / 4).max(Duration::from_millis(10));
            r.add_periodic_timer(every, |r, _| {
                with_master(r, |m, r| m.heartbeat_tick(r));
            });
        }
        for (id, options) in auto {
            let started = with_master(r, |m, r| m.start_instance(r, id, options));
            if let Some(Err(e)) = started {
                return Err(io::Error::other(e.to_string()));
            }
        }
        Ok(())
    }

    /// Starts worker `name` (instance `key`) now, with `options` (Packet's
    /// `start_worker`), typically one registered `no_auto_load`.
    ///
    /// # Errors
    /// [`WorkerError::AlreadyRunning`] if that name and key run already;
    /// [`WorkerError::NotRegistered`]; [`WorkerError::NoWorkers`].
    pub fn start_worker<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        options: &T,
    ) -> Result<(), WorkerError> {
        let r = &mut *self.reactor;
        let options = WorkerMessage::encode(options)?.as_bytes().to_vec();
        let id = WorkerId {
            name: name.to_string(),
            key: key.map(str::to_string),
        };
        with_master(r, |m, r| {
            if m.spec(name).is_none() {
                return Err(WorkerError::NotRegistered(name.to_string()));
            }
            if m.instances.get(&id).is_some_and(|i| i.state != State::Dead) {
                return Err(WorkerError::AlreadyRunning(id.to_string()));
            }
            if let Some(i) = m.instances.get_mut(&id) {
                i.restarts.clear();
            }
            m.start_instance(r, id, options)
        })
        .unwrap_or(Err(WorkerError::NoWorkers))
    }

    /// Asks worker `name` (instance `key`) to exit cleanly; it is not
    /// restarted. Packet's `delete_worker`.
    ///
    /// # Errors
    /// [`WorkerError::NotRunning`], [`WorkerError::NoWorkers`].
    pub fn delete_worker(&mut self, name: &str, key: Option<&str>) -> Result<(), WorkerError> {
        let r = &mut *self.reactor;
        let id = WorkerId {
            name: name.to_string(),
            key: key.map(str::to_string),
        };
        with_master(r, |m, r| {
            let Some(inst) = m.instances.get_mut(&id) else {
                return Err(WorkerError::NotRunning(id.to_string()));
            };
            match inst.state {
                State::Dead | State::Restarting => {
                    m.instances.remove(&id);
                    return Ok(());
                }
                State::Stopping => return Ok(()),
                State::Starting | State::Running => inst.state = State::Stopping,
            }
            if let Some(ch) = inst.channel {
                let mut frame = Vec::new();
                Envelope::Exit.encode(&mut frame);
                send_to(r, ch, &frame);
            }
            Ok(())
        })
        .unwrap_or(Err(WorkerError::NoWorkers))
    }

    /// Asks worker `name` (any instance of a pool when `key` is `None`)
    /// and calls `callback` with its reply, or with the error that
    /// prevented one (the worker died, for example).
    ///
    /// # Errors
    /// Immediate failures: not registered, not running, busy, or the message
    /// cannot be encoded. `callback` is then not called.
    pub fn ask_worker_with<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        message: &T,
        callback: impl FnOnce(&mut Reactor, WorkerReply) + 'static,
    ) -> Result<(), WorkerError> {
        let r = &mut *self.reactor;
        r.ask_callback(name, key, message, None, callback)
    }

    /// [`WorkerSystem::ask_worker_with`], but `callback` gets
    /// [`WorkerError::Timeout`] if no reply came within `timeout` (instead
    /// of the worker type's [`super::WorkerSpec::ask_timeout`]).
    ///
    /// # Errors
    /// As [`WorkerSystem::ask_worker_with`].
    pub fn ask_worker_with_timeout<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        message: &T,
        timeout: Duration,
        callback: impl FnOnce(&mut Reactor, WorkerReply) + 'static,
    ) -> Result<(), WorkerError> {
        let r = &mut *self.reactor;
        r.ask_callback(name, key, message, Some(timeout), callback)
    }

    /// Sends `message` to worker `name` without waiting for a reply.
    ///
    /// # Errors
    /// As [`WorkerSystem::ask_worker_with`].
    pub fn send_to_worker<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        message: &T,
    ) -> Result<(), WorkerError> {
        let r = &mut *self.reactor;
        let payload = WorkerMessage::encode(message)?;
        r.ask_raw(Asker::Nobody, name, key, payload.as_bytes(), None, None)
            .map(|_| ())
    }

    /// Passes `fd` (for example an accepted client socket) to worker `name`
    /// with `message`; it arrives in [`super::Worker::receive_fd`]. The
    /// pre-fork server pattern.
    ///
    /// # Errors
    /// As [`WorkerSystem::ask_worker_with`]; also [`WorkerError::NotRunning`]
    /// while the worker is still starting.
    pub fn send_fd_to_worker<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        fd: OwnedFd,
        message: &T,
    ) -> Result<(), WorkerError> {
        let r = &mut *self.reactor;
        let payload = WorkerMessage::encode(message)?;
        r.ask_raw(Asker::Nobody, name, key, payload.as_bytes(), Some(fd), None)
            .map(|_| ())
    }

    /// For a [`WorkerProxy`]: delivers `reply` to whoever made ask `id` (the
    /// id in [`FromWorker::Reply`]). Returns `false` if nobody waits for it.
    pub fn complete_ask(&mut self, id: u64, reply: WorkerReply) -> bool {
        let r = &mut *self.reactor;
        let ask = with_master(r, |m, _| {
            let ask = m.asks.remove(&id)?;
            if let Some(i) = m.instances.get_mut(&ask.worker) {
                i.outstanding = i.outstanding.saturating_sub(1);
            }
            Some(ask)
        })
        .flatten();
        match ask {
            Some(ask) => {
                deliver(r, vec![Delivery::Reply(ask.asker, reply)]);
                true
            }
            None => false,
        }
    }

    /// The last result worker `name`/`key` published with
    /// [`super::WorkerContext::update_result`] (Packet's `result_hash`).
    pub fn result(&mut self, name: &str, key: Option<&str>) -> Option<&WorkerMessage> {
        let r = &mut *self.reactor;
        let id = WorkerId {
            name: name.to_string(),
            key: key.map(str::to_string),
        };
        r.extensions().get::<Master>()?.results.get(&id)
    }

    /// The running instances of worker `name` with their process ids.
    pub fn pids(&mut self, name: &str) -> Vec<(WorkerId, u32)> {
        let r = &mut *self.reactor;
        let Some(m) = r.extensions().get::<Master>() else {
            return Vec::new();
        };
        let mut v: Vec<(WorkerId, u32)> = m
            .instances
            .iter()
            .filter(|(id, i)| id.name == name && i.state == State::Running)
            .filter_map(|(id, i)| i.pid.map(|p| (id.clone(), p)))
            .collect();
        v.sort();
        v
    }

    /// Calls `callback` once `count` instances of worker `name` run, or
    /// when `within` has passed, whichever comes first, with the number
    /// running then (below `count` only after `within`). If they already
    /// run it is called on the next turn; if the reactor stops first it is
    /// not called. For a server that announces itself only once its
    /// workers can answer, without polling [`WorkerSystem::pids`].
    ///
    /// ```no_run
    /// # use packet::Reactor;
    /// # use std::time::Duration;
    /// # fn f(reactor: &mut Reactor) -> Result<(), packet::worker::WorkerError> {
    /// reactor.workers().when_running("eval", 4, Duration::from_secs(5), |_, running| {
    ///     if running < 4 {
    ///         eprintln!("only {running} of 4 workers are running");
    ///     }
    ///     println!("ready");
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`WorkerError::NoWorkers`] when no workers are attached,
    /// [`WorkerError::NotRegistered`] for an unknown name.
    pub fn when_running(
        &mut self,
        name: &str,
        count: usize,
        within: Duration,
        callback: impl FnOnce(&mut Reactor, usize) + 'static,
    ) -> Result<(), WorkerError> {
        let r = &mut *self.reactor;
        let m = r
            .extensions()
            .get_mut::<Master>()
            .ok_or(WorkerError::NoWorkers)?;
        if m.spec(name).is_none() {
            return Err(WorkerError::NotRegistered(name.to_string()));
        }
        let running = m.running(name);
        if running >= count {
            r.next_turn(move |r| callback(r, running));
            return Ok(());
        }
        m.next_waiter += 1;
        let id = m.next_waiter;
        let timer = r.add_timer(within, move |r| {
            let waiter = with_master(r, |m, _| {
                let at = m.waiters.iter().position(|w| w.id == id)?;
                let w = m.waiters.swap_remove(at);
                Some((w.callback, m.running(&w.name)))
            })
            .flatten();
            if let Some((callback, running)) = waiter {
                callback(r, running);
            }
        });
        let m = r.extensions().get_mut::<Master>().expect("checked above");
        m.waiters.push(RunningWaiter {
            id,
            name: name.to_string(),
            count,
            timer,
            callback: Box::new(callback),
        });
        Ok(())
    }

    /// The process id of the fork server, if workers are attached and one
    /// runs: `None` while a dead one is being replaced (at once for the
    /// first five within a minute, then after a growing delay, 5 s to
    /// 30 s).
    pub fn fork_server_pid(&mut self) -> Option<i32> {
        let r = &mut *self.reactor;
        r.extensions()
            .get::<Master>()
            .filter(|m| m.link.is_some())
            .map(|m| m.fork_server)
            .filter(|&pid| pid > 0)
    }

    /// Where instance `key` of worker `name` is in its life: running,
    /// restarting (and when, and whether backing off), dead. `None` for an
    /// instance that was never started or was deleted.
    pub fn status(&mut self, name: &str, key: Option<&str>) -> Option<WorkerStatus> {
        let r = &mut *self.reactor;
        let id = WorkerId {
            name: name.to_string(),
            key: key.map(str::to_string),
        };
        let now = r.now();
        let m = r.extensions().get::<Master>()?;
        let inst = m.instances.get(&id)?;
        let last_exit = || {
            inst.exit
                .clone()
                .unwrap_or_else(|| WorkerExit::ChannelBroke("channel closed".to_string()))
        };
        Some(match inst.state {
            State::Starting => WorkerStatus::Starting,
            State::Running => match inst.pid {
                Some(pid) => WorkerStatus::Running { pid },
                None => WorkerStatus::Starting,
            },
            State::Stopping => WorkerStatus::Stopping,
            State::Restarting => {
                let (at, backing_off) = inst.restart_at.unwrap_or((now, false));
                WorkerStatus::Restarting {
                    last_exit: last_exit(),
                    deaths: inst.restarts.len() as u32,
                    backing_off,
                    restart_in: at.saturating_duration_since(now),
                }
            }
            State::Dead => WorkerStatus::Dead {
                last_exit: last_exit(),
            },
        })
    }

    /// Not API: hands `bytes` to the master as if the fork server had sent
    /// them on its link, for tests of a garbled link.
    #[doc(hidden)]
    pub fn inject_fork_server_bytes(&mut self, bytes: &[u8]) {
        let r = &mut *self.reactor;
        if r.extensions().get::<Master>().is_none() {
            return;
        }
        let events = LinkHandler::new().events(bytes);
        link_input(r, events);
    }
}

/// The worker system in a reactor's stop: asks in flight are answered
/// before the channels close, and the fork server and workers are reaped
/// when the master is dropped at the end of the shutdown.
impl Extension for Master {
    /// The worker part of [`Reactor::stop_gracefully`], called before it
    /// closes anything: whether the connections must stay open because asks
    /// are in flight. If so, new asks are refused from now on, and once the
    /// asks in flight are answered — or `within` has passed, failing the
    /// rest with [`WorkerError::Stopping`] — and their replies have been
    /// handed to the askers, `stop_gracefully` is called again for the time
    /// left, which closes every connection: channels too, so workers exit,
    /// the fork server follows, and the reactor's shutdown reaps it.
    fn stop_gracefully(&mut self, r: &mut Reactor, within: Duration) -> StopHold {
        if self.shutting_down {
            return StopHold::Release;
        }
        if self.draining {
            // A second stop while draining: the first one's deadline holds.
            return StopHold::Hold;
        }
        if self.asks.is_empty() {
            self.shutting_down = true;
            return StopHold::Release;
        }
        self.draining = true;
        let deadline = r.now() + within;
        // Set once no ask is left: the next tick, after the replies handed
        // over meanwhile were written to their connections, closes all.
        let mut drained = false;
        r.add_periodic_timer(DRAIN_CHECK, move |r, timer| {
            if drained {
                r.cancel_timer(timer);
                if let Some(m) = r.extensions().get_mut::<Master>() {
                    m.draining = false;
                    m.shutting_down = true;
                }
                let left = deadline.saturating_duration_since(r.now());
                r.stop_gracefully(left);
                return;
            }
            let mut out = Vec::new();
            let now = r.now();
            let mut failed = 0;
            drained = with_master(r, |m, _| {
                if !m.asks.is_empty() && now >= deadline {
                    failed = m.fail_all_asks(&mut out);
                }
                m.asks.is_empty()
            })
            .unwrap_or(true);
            r.extensions().count_failed_asks(failed);
            deliver(r, out);
        });
        StopHold::Hold
    }

    /// Marks the worker system as shutting down, before the reactor closes
    /// every connection: asks still waiting fail with
    /// [`WorkerError::Stopping`] (callbacks hear it now; connections only
    /// if they are still open), and closing channels restarts nothing.
    fn shutdown(&mut self, r: &mut Reactor) {
        let mut out = Vec::new();
        self.shutting_down = true;
        let failed = self.fail_all_asks(&mut out);
        r.extensions().count_failed_asks(failed);
        deliver(r, out);
    }
}

/// An ask from connection `conn`, its reply routed back to it.
pub(super) fn ask_worker_from(
    conn: &mut Connection<'_>,
    name: &str,
    key: Option<&str>,
    payload: &[u8],
    timeout: Option<Duration>,
) -> Result<AskId, WorkerError> {
    // The reply's place in the connection's order is taken now, and given
    // back if the ask is refused.
    let ask = conn.expect_reply();
    let asker = Asker::Conn(conn.id(), ask);
    match conn
        .reactor()
        .ask_raw(asker, name, key, payload, None, timeout)
    {
        Ok(_) => Ok(ask),
        Err(e) => {
            conn.cancel_reply(ask);
            Err(e)
        }
    }
}

impl Connection<'_> {
    /// [`Connection::ask_worker_keyed`], but the reply is
    /// [`WorkerError::Timeout`] if none came within `timeout` (instead of
    /// the worker type's [`super::WorkerSpec::ask_timeout`]).
    ///
    /// # Errors
    /// As [`Connection::ask_worker`].
    pub fn ask_worker_with_timeout<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        key: Option<&str>,
        message: &T,
        timeout: Duration,
    ) -> Result<AskId, WorkerError> {
        let payload = WorkerMessage::encode(message)?;
        ask_worker_from(self, name, key, payload.as_bytes(), Some(timeout))
    }
}
