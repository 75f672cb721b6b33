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

use super::plan::Host;
use crate::net::{Datagram, Received, SocketError, SocketSpec, VrrpSocket};

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
}

impl Default for Sockets {
    fn default() -> Self {
        Self {
            open: Vec::new(),
            readable: Vec::new(),
            next: 0,
            generation: 0,
            buf: vec![0u8; 2048].into_boxed_slice(),
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

    /// A socket reported readable and closed since is skipped by [`Sockets::try_next`].
    fn changed(&mut self) {
        self.generation += 1;
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
/// it is drained. The multicast socket takes only what was sent to the group and a unicast
/// socket only what was sent to us, so that an instance never hears one advert twice.
fn read_socket(
    index: usize,
    interface: &str,
    socket: &VrrpSocket,
    buf: &mut [u8],
) -> Option<Inbound> {
    loop {
        let inbound = match socket.try_recv(buf) {
            Ok(None) => return None,
            Ok(Some(Received::Datagram(datagram))) => Inbound::Packet {
                socket: index,
                datagram,
            },
            Ok(Some(Received::UnknownPeer { src })) => {
                tracing::debug!(%interface, %src, "advert from a source that is not a peer dropped");
                Inbound::Dropped {
                    counter: "unicast_unknown_peer",
                }
            }
            // An advert of the other mode: the socket of that mode has it.
            Ok(Some(Received::OtherDestination { .. })) => continue,
            Ok(Some(_)) => Inbound::Dropped {
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
        };
        return Some(inbound);
    }
}
