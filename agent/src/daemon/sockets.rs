//! The open VRRP sockets, one per [`SocketSpec`], read by the event loop itself.
//!
//! The loop waits for them in its own `epoll` ([`super::poller`]) and reads them in the same
//! wake-up that hands what it read to the engine: no task and no channel sit between the kernel
//! and the engine, so an advert costs one wake-up of the process, and no copy: the engine reads
//! it where the kernel wrote it. Readiness is level-triggered: each socket `epoll` reports
//! [readable](Sockets::mark_readable) is read once, and one that holds more is reported by the
//! next wait. So an advert costs one read (no second one to find the socket drained), and a
//! flood on one socket cannot starve another.
//!
//! A socket is bound to the index its interface had when it was opened: when the link is deleted
//! and created again (a new index), [`Sockets::close_stale`] closes it, and the next
//! [`Sockets::prepare`] opens a fresh one, which joins the multicast group on the new link.

use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;

use std::time::Instant;

use hav_vrrp::engine::Steady;

use super::held::{ArrivalClock, Drain};
use super::plan::Host;
use crate::net::batch::{BATCH, Batch};
use crate::net::hold::{Program, Template};
use crate::net::socket::{family_of, group};
use crate::net::{Datagram, Mode, Received, SocketError, SocketSpec, VrrpSocket};

/// What the sockets hand to the loop.
pub enum Inbound {
    Packet {
        /// The socket it came from, for [`Sockets::packet`]; valid until the open set changes.
        socket: usize,
        /// Its payload lies in the sockets' buffer ([`Sockets::packet`]) until the next read.
        datagram: Datagram,
    },
    Dropped {
        counter: &'static str,
    },
}

/// The sockets the running plan uses.
pub struct Sockets {
    /// A list, not a map: every advert's lookups walk it (a handful of entries, no hashing).
    open: Vec<(SocketSpec, Arc<VrrpSocket>)>,
    /// The sockets (by [`VrrpSocket::id`]) reported readable by the last wait and not read yet.
    readable: Vec<u64>,
    /// Where the next read starts, for round-robin.
    next: usize,
    /// Moves whenever the open set changes, so the loop's `epoll` follows it.
    generation: u64,
    buf: Box<[u8]>,
    held: Held,
}

/// Where a steady advert's repeats are held ([`super::held`]).
#[derive(Default)]
struct Held {
    /// The key of the steady advert the filters were last set for.
    following: Option<u64>,
    holding: Option<Holding>,
    /// The holding sockets, by the spec of the open socket each serves; kept between holds.
    sockets: Vec<(SocketSpec, VrrpSocket)>,
    clock: ArrivalClock,
    /// The datagrams of the drain's last read, and the next one to hand on.
    batch: Batch,
    next: usize,
    /// Whether the last read filled the batch: the queue may hold more.
    more: bool,
}

struct Holding {
    /// The holding socket's index in [`Held::sockets`].
    hold: usize,
    /// The open socket whose spec the holding socket has: its datagrams count as that one's.
    serves: usize,
    /// The open sockets that drop the repeats, by id.
    wake: Vec<u64>,
    /// The filters let everything wake the loop again; what was held is still to be read.
    released: bool,
    /// The holding socket's filter could not be reset: it closes once read.
    close: bool,
}

impl Default for Sockets {
    fn default() -> Self {
        Self {
            open: Vec::new(),
            readable: Vec::new(),
            next: 0,
            generation: 0,
            buf: vec![0u8; 2048].into_boxed_slice(),
            held: Held::default(),
        }
    }
}

impl Sockets {
    /// The sockets for `specs`: the open ones reused, the others opened now. Nothing changes
    /// here until [`Sockets::replace`]; on an error the newly opened ones are closed again.
    pub fn prepare<'a>(
        &self,
        specs: impl IntoIterator<Item = &'a SocketSpec>,
    ) -> Result<HashMap<SocketSpec, Arc<VrrpSocket>>, SocketError> {
        let mut prepared = HashMap::new();
        for spec in specs {
            if prepared.contains_key(spec) {
                continue;
            }
            let socket = match self.open.iter().find(|(open, _)| open == spec) {
                Some((_, socket)) => socket.clone(),
                None => Arc::new(VrrpSocket::open(spec)?),
            };
            prepared.insert(spec.clone(), socket);
        }
        Ok(prepared)
    }

    /// Makes `prepared` the open set; sockets no longer in it close.
    pub fn replace(&mut self, prepared: HashMap<SocketSpec, Arc<VrrpSocket>>) {
        self.open = prepared.into_iter().collect();
        self.changed();
    }

    /// A socket reported readable and closed since is skipped by [`Sockets::try_next`]. What
    /// was held is forgotten (the daemon reads it first): the next turn holds again if the
    /// engine still has a steady advert.
    fn changed(&mut self) {
        self.generation += 1;
        if let Err(error) = self.release() {
            let error = hav_proto::errors::chain(&error);
            tracing::warn!(%error, "cannot let repeats wake the loop again");
        }
        self.held.holding = None;
        self.held.following = None;
        let open = &self.open;
        (self.held.sockets).retain(|(spec, _)| open.iter().any(|(kept, _)| kept == spec));
    }

    /// The key of the steady advert the filters were last set for.
    pub fn following(&self) -> Option<u64> {
        self.held.following
    }

    /// Whether repeats are held, or held ones are still to be read.
    pub fn holding(&self) -> bool {
        self.held.holding.is_some()
    }

    /// Holds the repeats of the engine's steady advert, if any, on the sockets of its interface
    /// and family; whether it does. The previous hold must have been released and read. A
    /// template no program can express, or no open socket for it, holds nothing.
    pub fn follow(&mut self, steady: Option<Steady<'_>>) -> Result<bool, SocketError> {
        self.held.following = steady.map(|steady| steady.key);
        let Some(steady) = steady else {
            return Ok(false);
        };
        let family = family_of(steady.meta.src);
        let to_group = steady.meta.dst == group(family);
        let ours = |spec: &SocketSpec| spec.interface == steady.interface && spec.family == family;
        let Some(serves) = self.open.iter().position(|(spec, _)| {
            ours(spec) && matches!(spec.mode, Mode::Multicast { .. }) == to_group
        }) else {
            return Ok(false);
        };
        let template = Template {
            meta: steady.meta,
            payload: steady.payload,
        };
        let (Some(wake), Some(hold)) = (Program::all_but(template), Program::only(template)) else {
            return Ok(false);
        };
        let spec = &self.open[serves].0;
        let hold_index = match self.held.sockets.iter().position(|(held, _)| held == spec) {
            Some(index) => index,
            None => {
                let socket = VrrpSocket::open_holding(spec)?;
                self.held.sockets.push((spec.clone(), socket));
                self.held.sockets.len() - 1
            }
        };
        // The wake filters first: a repeat in between reaches no socket, as if lost on the
        // wire, rather than two.
        let mut wakes = Vec::new();
        let mut result = Ok(());
        for (_, socket) in self.open.iter().filter(|(spec, _)| ours(spec)) {
            result = socket.set_filter(&wake);
            if result.is_err() {
                break;
            }
            wakes.push(socket.id());
        }
        if result.is_ok() {
            result = self.held.sockets[hold_index].1.set_filter(&hold);
        }
        self.held.clock.mark();
        self.held.holding = Some(Holding {
            hold: hold_index,
            serves,
            wake: wakes,
            released: false,
            close: false,
        });
        match result {
            Ok(()) => Ok(true),
            Err(error) => {
                // Best effort back to waking on everything; the error reported is the first.
                // Nothing is held for this key: the next steady advert tries again.
                let key = self.held.following;
                let _ = self.release();
                self.held.following = key;
                Err(error)
            }
        }
    }

    /// Lets every datagram wake the loop again, until the next [`Sockets::follow`]; what was
    /// held stays to be read ([`Sockets::next_held`]).
    pub fn release(&mut self) -> Result<(), SocketError> {
        // The next turn sets the filters again for whatever the engine holds steady then.
        self.held.following = None;
        let Some(holding) = &mut self.held.holding else {
            return Ok(());
        };
        if std::mem::replace(&mut holding.released, true) {
            return Ok(());
        }
        // The holding socket first: a repeat in between reaches no socket rather than two.
        let mut result = match self.held.sockets.get(holding.hold) {
            Some((_, socket)) => socket.set_filter(&Program::reject_all()),
            None => Ok(()),
        };
        for (_, socket) in
            (self.open.iter()).filter(|(_, socket)| holding.wake.contains(&socket.id()))
        {
            let set = socket.set_filter(&Program::accept_all());
            result = result.and(set);
        }
        // A holding socket that might still take repeats is closed once read.
        holding.close = result.is_err();
        result
    }

    /// Starts reading what was held, for a turn at `now`.
    pub fn begin_drain(&mut self, now: Instant) -> Drain {
        self.held.next = self.held.batch.len();
        self.held.more = true;
        self.held.clock.begin(now)
    }

    /// Ends a drain.
    pub fn end_drain(&mut self, drain: Drain) {
        self.held.clock.end(drain);
    }

    /// The next held datagram, in arrival order, with the time it counts as heard at; `None`
    /// once the holding socket is drained (and, released, the hold is over).
    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    pub fn next_held(&mut self, drain: &mut Drain) -> Option<(Inbound, Instant)> {
        let Held {
            holding,
            sockets,
            clock,
            batch,
            next,
            more,
            ..
        } = &mut self.held;
        let active = holding.as_ref()?;
        let (index, released, close) = (active.hold, active.released, active.close);
        let Some((spec, socket)) = sockets.get(index) else {
            *holding = None;
            return None;
        };
        loop {
            if *next >= batch.len() {
                if !*more {
                    break;
                }
                match socket.recv_held(batch, BATCH) {
                    Ok(count) => {
                        *next = 0;
                        // A batch not filled took the whole queue: no read to find it empty.
                        *more = count == BATCH;
                        if count == 0 {
                            break;
                        }
                    }
                    Err(error) => {
                        *more = false;
                        let inbound = inbound(active.serves, &spec.interface, Err(error));
                        return inbound.map(|inbound| (inbound, drain.now()));
                    }
                }
            }
            let taken = *next;
            *next += 1;
            let Some(stamped) = socket.take_held(batch, taken, &mut self.buf) else {
                continue;
            };
            let at = clock.arrival(drain, stamped.arrived, stamped.dropped);
            if let Some(inbound) = inbound(active.serves, &spec.interface, Ok(stamped.received)) {
                return Some((inbound, at));
            }
        }
        if released {
            *holding = None;
            if close {
                sockets.remove(index);
            }
        }
        None
    }

    fn sockets(&self) -> impl Iterator<Item = &Arc<VrrpSocket>> {
        self.open.iter().map(|(_, socket)| socket)
    }

    /// Moves whenever the open set changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every open socket's id and descriptor, for the loop's `epoll`.
    pub fn descriptors(&self) -> impl Iterator<Item = (u64, RawFd)> + '_ {
        (self.sockets()).map(|socket| (socket.id(), socket.as_raw_fd()))
    }

    /// `epoll` reported the socket with this descriptor readable.
    pub fn mark_readable(&mut self, fd: RawFd) {
        let Some(socket) = self.sockets().find(|socket| socket.as_raw_fd() == fd) else {
            return;
        };
        let id = socket.id();
        if !self.readable.contains(&id) {
            self.readable.push(id);
        }
    }

    /// Closes the sockets whose link is gone or was replaced by one with another index; their
    /// names.
    pub fn close_stale(&mut self, host: &Host) -> Vec<String> {
        let mut closed = Vec::new();
        self.open.retain(|(spec, socket)| {
            let live = host.index_of(&spec.interface) == Some(socket.ifindex());
            if !live {
                closed.push(spec.interface.clone());
            }
            live
        });
        if !closed.is_empty() {
            self.changed();
        }
        closed.sort();
        closed.dedup();
        closed
    }

    /// The interface and the bytes of the last [`Inbound::Packet`] read, from its `socket` and
    /// `payload` range.
    pub fn packet(&self, socket: usize, payload: Range<usize>) -> (&str, &[u8]) {
        let interface = self
            .open
            .get(socket)
            .map_or("", |(spec, _)| &spec.interface);
        (interface, self.buf.get(payload).unwrap_or_default())
    }

    /// Whether a socket the last wait reported readable is still to be read.
    pub fn any_readable(&self) -> bool {
        !self.readable.is_empty()
    }

    /// The next datagram of a socket the last wait reported readable, each such socket read
    /// once (in no particular order); `None` once every one was.
    pub fn try_next(&mut self) -> Option<Inbound> {
        while let Some(id) = self.readable.pop() {
            let index = self.open.iter().position(|(_, socket)| socket.id() == id);
            if let Some(inbound) = index.and_then(|index| self.read(index)) {
                return Some(inbound);
            }
        }
        None
    }

    /// The next datagram queued on any open socket, reported readable or not (round-robin):
    /// what arrived while the loop was late; `None` once every socket is drained.
    pub fn try_next_queued(&mut self) -> Option<Inbound> {
        let count = self.open.len();
        let start = self.next % count.max(1);
        for step in 0..count {
            let index = (start + step) % count;
            if let Some(inbound) = self.read(index) {
                self.next = index + 1;
                return Some(inbound);
            }
        }
        None
    }

    fn read(&mut self, index: usize) -> Option<Inbound> {
        let (spec, socket) = self.open.get(index)?;
        read_socket(index, &spec.interface, socket, &mut self.buf)
    }
}

/// The next datagram of one socket (at `index` in the open list) worth handing on; `None` once
/// it is drained.
fn read_socket(
    index: usize,
    interface: &str,
    socket: &VrrpSocket,
    buf: &mut [u8],
) -> Option<Inbound> {
    loop {
        let received = socket.try_recv(buf).transpose()?;
        if let Some(inbound) = inbound(index, interface, received) {
            return Some(inbound);
        }
    }
}

/// What a read of the socket at `index` hands on; `None` for what it skips. The multicast
/// socket takes only what was sent to the group and a unicast socket only what was sent to us,
/// so that an instance never hears one advert twice.
#[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
fn inbound(
    index: usize,
    interface: &str,
    received: Result<Received, SocketError>,
) -> Option<Inbound> {
    Some(match received {
        Ok(Received::Datagram(datagram)) => Inbound::Packet {
            socket: index,
            datagram,
        },
        Ok(Received::UnknownPeer { src }) => {
            tracing::debug!(%interface, %src, "advert from a source that is not a peer dropped");
            Inbound::Dropped {
                counter: "unicast_unknown_peer",
            }
        }
        // An advert of the other mode: the socket of that mode has it.
        Ok(Received::OtherDestination { .. }) => return None,
        Ok(_) => Inbound::Dropped {
            counter: "malformed_datagrams",
        },
        Err(error) => {
            // The read took the socket's pending error, so it does not make the socket
            // readable again; the link watcher closes a socket whose link vanished.
            let error = hav_proto::errors::chain(&error);
            tracing::warn!(%interface, %error, "receive failed");
            Inbound::Dropped {
                counter: "receive_errors",
            }
        }
    })
}
