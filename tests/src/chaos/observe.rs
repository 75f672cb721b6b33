//! What the soak sees, recorded as it happens, for the invariants to judge afterwards.
//!
//! - Client: every VIP probed with a new TCP connection every few milliseconds
//!   ([`crate::probe::ProbeStream`]); samples are put back into start order per VIP and folded
//!   into outage episodes (first failed attempt to first answer), so nothing grows with time.
//! - Holders: which node namespaces hold each VIP, from netlink address events (subscribed before
//!   the first dump, so nothing is missed); a dump every second catches events the kernel dropped
//!   (a difference seen twice in a row is recorded and counted as `reconciled`).
//! - Exits: every daemon process is watched through a pidfd; an exit the harness did not announce
//!   with [`Recorder::expect_exit`] beforehand is an unexpected exit.
//! - Changes: every record above, and every write to a log in the lab's log directory (the
//!   daemons log each transition), bumps a generation counter that [`Recorder::wait_change`]
//!   waits on, so waits for kernel or daemon state wake on events, with a short backstop.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::blind::{BlindCause, BlindSpan, PROBER_SILENCE, StallMonitor};
use crate::netns::{Namespace, NetnsError, address_of, is_deprecated, pidfd_open};
use crate::probe::{ProbeConfig, ProbeError, ProbeStream, Sample, StreamSample};

/// A client outage of one VIP: from the start of the first failed attempt to the completion of
/// the first attempt, started after it, that got an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    pub vip: usize,
    pub first_failed_sent: Instant,
    /// When the first failed attempt gave up: it was in flight from `first_failed_sent` to here.
    pub first_failed_done: Instant,
    pub last_failed_done: Instant,
    /// Completion of the first answered attempt; `None` while the VIP is still unreachable.
    pub recovered: Option<Instant>,
    pub failed: u32,
    /// Failed attempts that the other end reset (a TCP RST).
    pub resets: u32,
    pub first_error: ProbeError,
    /// The node that answered before and after (indexes of [`crate::chaos::cluster::Meta`]).
    pub answered_before: Option<usize>,
    pub answered_after: Option<usize>,
}

impl Episode {
    /// A connection that was in flight when the client's ARP entry moved to the new holder,
    /// reset by it (an established TCP connection cannot follow a VIP to another host): at most
    /// two failed attempts, all reset, with the answering node changing across them.
    pub fn is_handover_reset(&self) -> bool {
        self.failed <= 2
            && self.resets == self.failed
            && self.answered_before.is_some()
            && self.answered_after.is_some()
            && self.answered_before != self.answered_after
    }

    /// Whether the first failed attempt was in flight at some point of `[from, to]`: an attempt
    /// started just before a fault and lost to it belongs to that fault.
    pub fn began_within(&self, from: Instant, to: Instant) -> bool {
        self.first_failed_sent <= to && self.first_failed_done >= from
    }

    pub fn outage(&self) -> Option<Duration> {
        self.recovered
            .map(|r| r.saturating_duration_since(self.first_failed_sent))
    }
}

/// A VIP appearing on or leaving a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderEvent {
    pub at: Instant,
    pub vip: usize,
    pub node: usize,
    pub present: bool,
    /// Found by a periodic dump, not by an event (the kernel dropped the event): `at` is late
    /// by up to two dump periods.
    pub reconciled: bool,
}

/// The node answering a VIP changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerChange {
    pub at: Instant,
    pub vip: usize,
    pub from: Option<usize>,
    pub to: usize,
}

/// A daemon process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    pub at: Instant,
    pub node: usize,
    pub generation: u32,
    /// Announced by the harness before it signalled the process.
    pub expected: bool,
    /// `exit 0`, `killed by SIGUSR2`, ...
    pub status: String,
    /// The end of the process's log, for unexpected exits.
    pub log_tail: String,
}

/// Everything recorded, for the invariants.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    pub episodes: Vec<Episode>,
    pub holder_events: Vec<HolderEvent>,
    pub answer_changes: Vec<AnswerChange>,
    pub exits: Vec<ExitEvent>,
    /// Per VIP: attempts and failed attempts.
    pub probes: Vec<(u64, u64)>,
    /// Problems of the observers themselves (netlink streams ending, ...).
    pub harness_errors: Vec<String>,
    /// When the harness could not see (prober silences, host stalls), in time order.
    pub blind: Vec<BlindSpan>,
}

#[derive(Debug, Default)]
struct VipProbes {
    next_seq: u64,
    pending: BTreeMap<u64, Sample>,
    open: Option<Episode>,
    last_answer: Option<(usize, Instant)>,
    attempts: u64,
    failures: u64,
    /// When the last attempt (in start order) started.
    last_sent: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    names: HashMap<String, usize>,
    probes: Vec<VipProbes>,
    holders: Vec<BTreeSet<usize>>,
    /// Per (node, vip): a difference a dump found once, with when.
    suspect: HashMap<(usize, usize), Instant>,
    holder_events: Vec<HolderEvent>,
    episodes: Vec<Episode>,
    answer_changes: Vec<AnswerChange>,
    exits: Vec<ExitEvent>,
    expected_exits: HashSet<(usize, u32)>,
    harness_errors: Vec<String>,
    blind: Vec<BlindSpan>,
}

impl State {
    fn bump(&mut self) {
        self.generation += 1;
    }

    fn on_sample(&mut self, target: usize, seq: u64, sample: Sample) -> bool {
        let Some(vip) = self.probes.get_mut(target) else {
            return false;
        };
        vip.pending.insert(seq, sample);
        let mut changed = false;
        while let Some(sample) = vip.pending.remove(&vip.next_seq) {
            vip.next_seq += 1;
            vip.attempts += 1;
            // All targets start together: the first one's starts tell the prober's silences.
            if target == 0
                && let Some(previous) = vip.last_sent
                && sample.sent.saturating_duration_since(previous) > PROBER_SILENCE
            {
                self.blind.push(BlindSpan {
                    from: previous,
                    to: sample.sent,
                    cause: BlindCause::ProberSilent,
                });
            }
            vip.last_sent = Some(vip.last_sent.map_or(sample.sent, |l| l.max(sample.sent)));
            match sample.outcome {
                Err(error) => {
                    vip.failures += 1;
                    let reset = u32::from(error == ProbeError::Reset);
                    match &mut vip.open {
                        Some(episode) => {
                            episode.failed += 1;
                            episode.resets += reset;
                            episode.last_failed_done = sample.done;
                        }
                        None => {
                            vip.open = Some(Episode {
                                vip: target,
                                first_failed_sent: sample.sent,
                                first_failed_done: sample.done,
                                last_failed_done: sample.done,
                                recovered: None,
                                failed: 1,
                                resets: reset,
                                first_error: error,
                                answered_before: vip.last_answer.map(|(n, _)| n),
                                answered_after: None,
                            });
                            changed = true;
                        }
                    }
                }
                Ok(name) => {
                    let node = self.names.get(&name).copied();
                    if let Some(mut episode) = vip.open.take() {
                        episode.recovered = Some(sample.done);
                        episode.answered_after = node;
                        self.episodes.push(episode);
                        changed = true;
                    }
                    if let Some(node) = node {
                        let previous = vip.last_answer.map(|(n, _)| n);
                        if previous != Some(node) {
                            self.answer_changes.push(AnswerChange {
                                at: sample.done,
                                vip: target,
                                from: previous,
                                to: node,
                            });
                            changed = true;
                        }
                        vip.last_answer = Some((node, sample.done));
                    }
                }
            }
        }
        changed
    }

    fn set_holder(
        &mut self,
        at: Instant,
        vip: usize,
        node: usize,
        present: bool,
        reconciled: bool,
    ) {
        let Some(holders) = self.holders.get_mut(vip) else {
            return;
        };
        let changed = if present {
            holders.insert(node)
        } else {
            holders.remove(&node)
        };
        if changed {
            self.holder_events.push(HolderEvent {
                at,
                vip,
                node,
                present,
                reconciled,
            });
        }
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The shared record; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// How long a wait for a change sleeps at most before its caller looks again (for state that
/// changes without an event the recorder sees, e.g. a status socket).
pub const BACKSTOP: Duration = Duration::from_millis(250);

impl Recorder {
    /// A recorder for `vips` VIPs and the nodes named `names` (as their httpd answers).
    pub fn new(vips: usize, names: &[String]) -> Recorder {
        let state = State {
            names: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            probes: (0..vips).map(|_| VipProbes::default()).collect(),
            holders: vec![BTreeSet::new(); vips],
            ..State::default()
        };
        Recorder {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the record is still consistent.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self, mut state: MutexGuard<'_, State>) {
        state.bump();
        drop(state);
        self.shared.changed.notify_all();
    }

    /// The change counter; pass it to [`Recorder::wait_change`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Waits until something changed after `generation` was read, or `timeout` passed.
    pub fn wait_change(&self, generation: u64, timeout: Duration) {
        let state = self.lock();
        let _ = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.generation == generation);
    }

    /// Wakes the waiters (something the recorder does not see itself changed).
    pub fn notify(&self) {
        let state = self.lock();
        self.changed(state);
    }

    fn on_sample(&self, sample: StreamSample) {
        let mut state = self.lock();
        if state.on_sample(sample.target, sample.seq, sample.sample) {
            self.changed(state);
        }
    }

    /// Announces that the harness is about to end generation `generation` of `node`'s daemon.
    pub fn expect_exit(&self, node: usize, generation: u32) {
        self.lock().expected_exits.insert((node, generation));
    }

    /// The exit of generation `generation` of `node`'s daemon, if it ended.
    pub fn exited(&self, node: usize, generation: u32) -> Option<ExitEvent> {
        self.lock()
            .exits
            .iter()
            .find(|e| e.node == node && e.generation == generation)
            .cloned()
    }

    /// Adds the end of the log to a recorded exit (the owner of the process reads it).
    pub fn add_log_tail(&self, node: usize, generation: u32, tail: String) {
        let mut state = self.lock();
        if let Some(exit) = state
            .exits
            .iter_mut()
            .find(|e| e.node == node && e.generation == generation)
        {
            exit.log_tail = tail;
        }
    }

    fn on_exit(&self, node: usize, generation: u32, at: Instant, status: String) {
        let mut state = self.lock();
        let expected = state.expected_exits.contains(&(node, generation));
        state.exits.push(ExitEvent {
            at,
            node,
            generation,
            expected,
            status,
            log_tail: String::new(),
        });
        self.changed(state);
    }

    /// The nodes holding `vip` now.
    pub fn holders(&self, vip: usize) -> BTreeSet<usize> {
        self.lock().holders.get(vip).cloned().unwrap_or_default()
    }

    /// The node that answered the last successful attempt on `vip`, and when.
    pub fn last_answer(&self, vip: usize) -> Option<(usize, Instant)> {
        self.lock().probes.get(vip).and_then(|p| p.last_answer)
    }

    /// Whether `vip` is in an outage now (its last attempt failed).
    pub fn in_outage(&self, vip: usize) -> bool {
        self.lock()
            .probes
            .get(vip)
            .is_some_and(|p| p.open.is_some())
    }

    /// Records a problem of the observers themselves.
    pub fn harness_error(&self, what: String) {
        let mut state = self.lock();
        state.harness_errors.push(what);
        self.changed(state);
    }

    /// Records a span in which the harness could not see.
    pub fn blind_span(&self, span: BlindSpan) {
        let mut state = self.lock();
        state.blind.push(span);
        self.changed(state);
    }

    fn holder_event(&self, vip: usize, node: usize, present: bool) {
        let mut state = self.lock();
        state.suspect.remove(&(node, vip));
        state.set_holder(Instant::now(), vip, node, present, false);
        self.changed(state);
    }

    /// Compares a dump of `node`'s VIPs with the record. With `initial` the dump is taken as
    /// is; later, a difference is applied only when the previous dump saw it too (a single one
    /// is an event still on its way).
    fn reconcile(&self, node: usize, present: &BTreeSet<usize>, initial: bool) {
        let mut state = self.lock();
        let now = Instant::now();
        let mut changed = false;
        for vip in 0..state.holders.len() {
            let recorded = state.holders[vip].contains(&node);
            let dumped = present.contains(&vip);
            if recorded == dumped {
                state.suspect.remove(&(node, vip));
                continue;
            }
            if initial {
                state.set_holder(now, vip, node, dumped, false);
                changed = true;
            } else if let Some(since) = state.suspect.remove(&(node, vip)) {
                state.set_holder(since, vip, node, dumped, true);
                changed = true;
            } else {
                state.suspect.insert((node, vip), now);
            }
        }
        if changed {
            self.changed(state);
        }
    }

    /// A copy of everything recorded; episodes still open are included with `recovered: None`.
    pub fn snapshot(&self) -> Observations {
        let state = self.lock();
        let mut episodes = state.episodes.clone();
        episodes.extend(state.probes.iter().filter_map(|p| p.open.clone()));
        Observations {
            episodes,
            holder_events: state.holder_events.clone(),
            answer_changes: state.answer_changes.clone(),
            exits: state.exits.clone(),
            probes: state
                .probes
                .iter()
                .map(|p| (p.attempts, p.failures))
                .collect(),
            harness_errors: state.harness_errors.clone(),
            blind: {
                let mut blind = state.blind.clone();
                blind.sort_by_key(|s| s.from);
                blind
            },
        }
    }
}

/// One node namespace whose VIPs are watched.
#[derive(Debug, Clone)]
pub struct WatchedNode<'a> {
    pub namespace: &'a Namespace,
    pub node: usize,
}

struct Watched {
    node: usize,
    generation: u32,
    pidfd: OwnedFd,
}

/// The running observers; stopped (threads joined) on drop.
pub struct Observers {
    recorder: Recorder,
    prober: Option<ProbeStream>,
    stop: Arc<AtomicBool>,
    stop_watchers: tokio::sync::watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    watcher_threads: Vec<JoinHandle<Result<(), NetnsError>>>,
    registry: Arc<Mutex<Vec<Watched>>>,
    wake: OwnedFd,
    _stalls: StallMonitor,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers").finish_non_exhaustive()
    }
}

impl Observers {
    /// Starts the holder watchers (returns once each is subscribed and has its first dump),
    /// the exit monitor and the log watcher. The prober starts with [`Observers::start_probing`].
    pub fn start(
        recorder: Recorder,
        nodes: &[WatchedNode<'_>],
        vips: &[IpAddr],
        log_dir: &Path,
    ) -> Result<Observers, NetnsError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_watchers, _) = tokio::sync::watch::channel(false);
        let (wake_read, wake) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("pipe2", io::Error::from(e)))?;
        let registry = Arc::new(Mutex::new(Vec::new()));
        let mut observers = Observers {
            recorder: recorder.clone(),
            prober: None,
            stop: stop.clone(),
            stop_watchers,
            threads: Vec::new(),
            watcher_threads: Vec::new(),
            registry: registry.clone(),
            wake,
            _stalls: StallMonitor::start(recorder.clone())
                .map_err(|e| io_err("spawn stall monitor", e))?,
        };
        let vip_index: HashMap<IpAddr, usize> =
            vips.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        for watched in nodes {
            let (recorder, vip_index, ready) =
                (recorder.clone(), vip_index.clone(), ready_tx.clone());
            let (node, stop) = (watched.node, observers.stop_watchers.subscribe());
            let namespace = watched.namespace.name().to_owned();
            let thread = watched.namespace.in_thread(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| io_err(format!("runtime in {namespace}"), e))?;
                let result = runtime.block_on(watch_holders(
                    &namespace, node, &vip_index, &recorder, stop, &ready,
                ));
                if let Err(e) = &result {
                    let _ = ready.send(Err(e.to_string()));
                    recorder.harness_error(format!("holder watcher in {namespace}: {e}"));
                }
                result
            })?;
            observers.watcher_threads.push(thread);
        }
        drop(ready_tx);
        for _ in nodes {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    return Err(NetnsError::Netlink {
                        namespace: "holder watcher".into(),
                        reason,
                    });
                }
                Err(_) => {
                    return Err(NetnsError::Timeout {
                        what: "the holder watchers to subscribe".into(),
                        timeout: Duration::from_secs(10),
                    });
                }
            }
        }
        {
            let (recorder, stop) = (recorder.clone(), stop.clone());
            observers.threads.push(
                std::thread::Builder::new()
                    .name("chaos-exits".into())
                    .spawn(move || exit_monitor(&registry, &wake_read, &recorder, &stop))
                    .map_err(|e| io_err("spawn exit monitor", e))?,
            );
        }
        {
            let inotify = watch_log_dir(log_dir)?;
            let (recorder, stop) = (recorder.clone(), stop.clone());
            observers.threads.push(
                std::thread::Builder::new()
                    .name("chaos-logs".into())
                    .spawn(move || log_watcher(&inotify, &recorder, &stop))
                    .map_err(|e| io_err("spawn log watcher", e))?,
            );
        }
        Ok(observers)
    }

    /// Starts probing every VIP (index order) from `client`.
    pub fn start_probing(
        &mut self,
        client: &Namespace,
        targets: &[SocketAddr],
        interval: Duration,
    ) -> Result<(), NetnsError> {
        let configs = targets
            .iter()
            .map(|t| {
                let mut config = ProbeConfig::new(*t);
                config.interval = interval;
                config
            })
            .collect();
        let recorder = self.recorder.clone();
        self.prober = Some(ProbeStream::start(
            client,
            configs,
            Arc::new(move |sample| recorder.on_sample(sample)),
        )?);
        Ok(())
    }

    /// Stops the prober (attempts in flight complete and are recorded).
    pub fn stop_probing(&mut self) {
        if let Some(prober) = self.prober.take() {
            prober.stop();
        }
    }

    /// Watches generation `generation` of `node`'s daemon, process `pid` (a child of this
    /// process, not yet reaped).
    pub fn register_process(
        &self,
        node: usize,
        generation: u32,
        pid: u32,
    ) -> Result<(), NetnsError> {
        let pidfd = pidfd_open(pid).map_err(|e| io_err(format!("pidfd_open {pid}"), e))?;
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Watched {
                node,
                generation,
                pidfd,
            });
        // Wake the monitor so it polls the new pidfd too.
        let _ = nix::unistd::write(&self.wake, &[1]);
        Ok(())
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        self.stop_probing();
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_watchers.send(true);
        let _ = nix::unistd::write(&self.wake, &[1]);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for thread in self.watcher_threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn io_err(what: impl Into<String>, source: io::Error) -> NetnsError {
    NetnsError::Io {
        what: what.into(),
        source,
    }
}

/// Receive buffer of a holder watcher's netlink socket, bytes (the kernel caps it at
/// `net.core.rmem_max`).
const HOLDER_EVENTS_BUFFER: usize = 4 << 20;

async fn watch_holders(
    namespace: &str,
    node: usize,
    vips: &HashMap<IpAddr, usize>,
    recorder: &Recorder,
    mut stop: tokio::sync::watch::Receiver<bool>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<(), NetnsError> {
    use rtnetlink::MulticastGroup;
    let (mut connection, handle, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .map_err(|e| io_err(format!("netlink socket in {namespace}"), e))?;
    {
        use rtnetlink::sys::AsyncSocket;
        // Room for the events of hundreds of VIPs added at once (a node taking over many
        // instances), so the kernel drops none of them; the periodic dump still catches any.
        let _ = connection
            .socket_mut()
            .socket_ref()
            .set_rx_buf_sz(HOLDER_EVENTS_BUFFER);
    }
    tokio::spawn(connection);
    // Subscribed before this first dump: a change during the dump is still seen as an event.
    recorder.reconcile(node, &dump_vips(&handle, namespace, vips).await?, true);
    let _ = ready.send(Ok(()));
    let mut dumps = tokio::time::interval(Duration::from_secs(1));
    dumps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    dumps.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            event = events.next() => {
                let Some((message, _)) = event else {
                    return Err(NetnsError::Netlink {
                        namespace: namespace.to_owned(),
                        reason: "address event stream ended".into(),
                    });
                };
                let rtnetlink::packet_core::NetlinkPayload::InnerMessage(inner) = message.payload
                else {
                    continue;
                };
                let (address, present) = match &inner {
                    // A deprecated VIP is one handed over and kept only for its connections.
                    RouteNetlinkMessage::NewAddress(m) => (address_of(m), !is_deprecated(m)),
                    RouteNetlinkMessage::DelAddress(m) => (address_of(m), false),
                    _ => continue,
                };
                if let Some(&vip) = address.and_then(|a| vips.get(&a)) {
                    recorder.holder_event(vip, node, present);
                }
            }
            _ = dumps.tick() => {
                let present = dump_vips(&handle, namespace, vips).await?;
                recorder.reconcile(node, &present, false);
            }
        }
    }
}

async fn dump_vips(
    handle: &rtnetlink::Handle,
    namespace: &str,
    vips: &HashMap<IpAddr, usize>,
) -> Result<BTreeSet<usize>, NetnsError> {
    let mut dump = handle.address().get().execute();
    let mut present = BTreeSet::new();
    while let Some(message) = dump.next().await {
        let message = message.map_err(|e| NetnsError::Netlink {
            namespace: namespace.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(&vip) = address_of(&message).and_then(|a| vips.get(&a))
            && !is_deprecated(&message)
        {
            present.insert(vip);
        }
    }
    Ok(present)
}

fn exit_monitor(
    registry: &Mutex<Vec<Watched>>,
    wake: &OwnedFd,
    recorder: &Recorder,
    stop: &AtomicBool,
) {
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // Entries are removed only by this thread, so the raw fds stay valid while polling.
        let watched: Vec<(usize, u32, i32)> = registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|w| (w.node, w.generation, w.pidfd.as_raw_fd()))
            .collect();
        let mut fds: Vec<libc::pollfd> = std::iter::once(wake.as_raw_fd())
            .chain(watched.iter().map(|w| w.2))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a valid array of `count` pollfds that outlives the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), count, 1000) };
        if rc < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 64];
            let _ = nix::unistd::read(wake, &mut buf);
        }
        let now = Instant::now();
        let ended: Vec<usize> = fds[1..]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .map(|(i, _)| i)
            .collect();
        if ended.is_empty() {
            continue;
        }
        let mut registry = registry.lock().unwrap_or_else(|e| e.into_inner());
        for i in ended {
            let (node, generation, _) = watched[i];
            let Some(position) = registry
                .iter()
                .position(|w| w.node == node && w.generation == generation)
            else {
                continue;
            };
            let entry = registry.swap_remove(position);
            let status = describe_wait(waitid(
                Id::PIDFd(entry.pidfd.as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ));
            recorder.on_exit(node, generation, now, status);
        }
    }
}

fn describe_wait(status: nix::Result<WaitStatus>) -> String {
    match status {
        Ok(WaitStatus::Exited(_, code)) => format!("exit {code}"),
        Ok(WaitStatus::Signaled(_, signal, _)) => format!("killed by {signal}"),
        Ok(other) => format!("{other:?}"),
        // Already reaped by its owner (an expected kill): the status went with it.
        Err(nix::errno::Errno::ECHILD) => "reaped".into(),
        Err(e) => format!("unknown ({e})"),
    }
}

fn watch_log_dir(dir: &Path) -> Result<nix::sys::inotify::Inotify, NetnsError> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    std::fs::create_dir_all(dir).map_err(|e| io_err(format!("create {}", dir.display()), e))?;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| io_err("inotify_init", e.into()))?;
    inotify
        .add_watch(dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE)
        .map_err(|e| io_err(format!("inotify watch {}", dir.display()), e.into()))?;
    Ok(inotify)
}

fn log_watcher(inotify: &nix::sys::inotify::Inotify, recorder: &Recorder, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match crate::netns::poll_readable(inotify.as_fd().as_raw_fd(), Duration::from_millis(500)) {
            Ok(true) => {
                while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
                recorder.notify();
            }
            Ok(false) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(base: Instant, sent_ms: u64, done_ms: u64, node: Option<&str>) -> Sample {
        Sample {
            sent: base + Duration::from_millis(sent_ms),
            done: base + Duration::from_millis(done_ms),
            outcome: node.map(str::to_owned).ok_or(ProbeError::ConnectTimeout),
        }
    }

    #[test]
    fn samples_completing_out_of_order_fold_into_one_episode_in_start_order() {
        let recorder = Recorder::new(1, &["a".into(), "b".into()]);
        let t = Instant::now();
        let mut state = recorder.lock();
        state.on_sample(0, 0, sample(t, 0, 1, Some("a")));
        // Attempt 1 times out after 100 ms; attempts 2 and 3 complete before it.
        state.on_sample(0, 2, sample(t, 10, 110, None));
        state.on_sample(0, 3, sample(t, 15, 116, Some("b")));
        assert!(state.episodes.is_empty(), "attempt 1 still pending");
        state.on_sample(0, 1, sample(t, 5, 105, None));
        assert_eq!(state.episodes.len(), 1);
        let episode = &state.episodes[0];
        assert_eq!(episode.failed, 2);
        assert_eq!(episode.outage(), Some(Duration::from_millis(111)));
        assert_eq!(
            (episode.answered_before, episode.answered_after),
            (Some(0), Some(1))
        );
        assert_eq!(state.answer_changes.len(), 2);
        assert_eq!(state.probes[0].attempts, 4);
    }

    #[test]
    fn a_gap_between_the_first_targets_attempt_starts_is_a_prober_silence() {
        let recorder = Recorder::new(2, &["a".into()]);
        let t = Instant::now();
        let mut state = recorder.lock();
        for (seq, sent) in [(0, 0), (1, 5), (2, 10), (3, 1010), (4, 1015)] {
            state.on_sample(0, seq, sample(t, sent, sent + 1, Some("a")));
            // The second target's gaps are the same ticks: not counted twice.
            state.on_sample(1, seq, sample(t, sent, sent + 1, Some("a")));
        }
        assert_eq!(state.blind.len(), 1);
        let span = state.blind[0];
        assert_eq!(
            (span.from, span.to, span.cause),
            (
                t + Duration::from_millis(10),
                t + Duration::from_millis(1010),
                BlindCause::ProberSilent
            )
        );
    }

    #[test]
    fn a_dump_difference_counts_only_when_seen_twice() {
        let recorder = Recorder::new(2, &["a".into()]);
        recorder.reconcile(0, &BTreeSet::from([1]), true);
        assert_eq!(recorder.holders(1), BTreeSet::from([0]));
        // The VIP left; the event is on its way: one dump sees it first.
        recorder.reconcile(0, &BTreeSet::new(), false);
        assert_eq!(recorder.holders(1), BTreeSet::from([0]));
        recorder.holder_event(1, 0, false);
        recorder.reconcile(0, &BTreeSet::new(), false);
        let snapshot = recorder.snapshot();
        assert!(snapshot.holder_events.iter().all(|e| !e.reconciled));
        // An event the kernel dropped: two dumps in a row disagree with the record.
        recorder.reconcile(0, &BTreeSet::from([0]), false);
        recorder.reconcile(0, &BTreeSet::from([0]), false);
        let snapshot = recorder.snapshot();
        let last = snapshot.holder_events.last().expect("an event");
        assert!(last.reconciled && last.present && last.vip == 0);
    }

    #[test]
    fn exits_are_expected_only_when_announced_first() {
        let recorder = Recorder::new(0, &[]);
        recorder.expect_exit(0, 1);
        recorder.on_exit(0, 1, Instant::now(), "exit 0".into());
        recorder.on_exit(1, 1, Instant::now(), "killed by SIGUSR2".into());
        assert!(recorder.exited(0, 1).is_some_and(|e| e.expected));
        assert!(recorder.exited(1, 1).is_some_and(|e| !e.expected));
        assert!(recorder.exited(1, 2).is_none());
    }
}
