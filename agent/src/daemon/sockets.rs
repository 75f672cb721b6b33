//! The open VRRP sockets, one per [`SocketSpec`], read by the event loop itself.
//!
//! The loop polls every open socket in the same wake-up that handles what it read: no task and
//! no channel sit between the kernel and the engine, so an advert costs one wake-up of the
//! process, and no copy: the engine reads it where the kernel wrote it. Sockets are polled
//! round-robin, so a flood on one cannot starve another.
//!
//! A socket is bound to the index its interface had when it was opened: when the link is deleted
//! and created again (a new index), [`Sockets::close_stale`] closes it, and the next
//! [`Sockets::prepare`] opens a fresh one, which joins the multicast group on the new link.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::task::{Context, Poll};

use hav_vrrp::wire::RecvMeta;

use super::plan::Host;
use crate::net::{Mode, Received, SocketError, SocketSpec, VrrpSocket};

/// What the sockets hand to the loop.
pub enum Inbound {
    Packet {
        interface: Arc<str>,
        meta: RecvMeta,
        /// Where the VRRP payload is in the sockets' buffer ([`Sockets::payload`]); valid until
        /// the next read.
        payload: Range<usize>,
    },
    Dropped {
        counter: &'static str,
    },
}

/// One open socket, shared by the routers that send on it.
#[derive(Clone)]
pub struct OpenSocket {
    pub socket: Arc<VrrpSocket>,
    interface: Arc<str>,
}

/// The sockets the running plan uses.
pub struct Sockets {
    open: HashMap<SocketSpec, OpenSocket>,
    /// Where the next poll starts, for round-robin.
    next: usize,
    buf: Box<[u8]>,
}

impl Default for Sockets {
    fn default() -> Self {
        Self {
            open: HashMap::new(),
            next: 0,
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
    ) -> Result<HashMap<SocketSpec, OpenSocket>, SocketError> {
        let mut prepared = HashMap::new();
        for spec in specs {
            if prepared.contains_key(spec) {
                continue;
            }
            let open = match self.open.get(spec) {
                Some(open) => open.clone(),
                None => OpenSocket {
                    socket: Arc::new(VrrpSocket::open(spec)?),
                    interface: Arc::from(spec.interface.as_str()),
                },
            };
            prepared.insert(spec.clone(), open);
        }
        Ok(prepared)
    }

    /// Makes `prepared` the open set; sockets no longer in it close.
    pub fn replace(&mut self, prepared: HashMap<SocketSpec, OpenSocket>) {
        self.open = prepared;
    }

    /// Closes the sockets whose link is gone or was replaced by one with another index; their
    /// names.
    pub fn close_stale(&mut self, host: &Host) -> Vec<String> {
        let mut closed = Vec::new();
        self.open.retain(|spec, open| {
            let live = host.index_of(&spec.interface) == Some(open.socket.ifindex());
            if !live {
                closed.push(spec.interface.clone());
            }
            live
        });
        closed.sort();
        closed.dedup();
        closed
    }

    /// The bytes of the last [`Inbound::Packet`] read, at its `payload` range.
    pub fn payload(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or_default()
    }

    /// The next datagram of any open socket (round-robin), as [`Sockets::poll_next`].
    pub async fn next(&mut self) -> Inbound {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// What the kernel has queued on any open socket, without waiting; `None` once every socket
    /// is drained.
    pub fn try_next(&mut self) -> Option<Inbound> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_next(&mut cx) {
            Poll::Ready(inbound) => Some(inbound),
            Poll::Pending => None,
        }
    }

    /// Reads the next datagram worth handing to the engine, or registers `cx` with every socket.
    /// The multicast socket takes only what was sent to the group and a unicast socket only what
    /// was sent to us, so that an instance never hears one advert twice.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        let count = self.open.len();
        let start = self.next % count.max(1);
        let sockets = self.open.values().cycle().skip(start).take(count);
        for (step, open) in sockets.enumerate() {
            if let Poll::Ready(inbound) = poll_socket(open, cx, &mut self.buf) {
                self.next = start + step + 1;
                return Poll::Ready(inbound);
            }
        }
        Poll::Pending
    }
}

/// The next datagram of one socket worth handing on; `Pending` once it is drained.
fn poll_socket(open: &OpenSocket, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Inbound> {
    let interface = &open.interface;
    let multicast = matches!(open.socket.spec().mode, Mode::Multicast { .. });
    loop {
        let inbound = match open.socket.poll_recv(cx, buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(Received::Datagram(datagram))) => {
                if datagram.dst.is_multicast() != multicast {
                    continue;
                }
                Inbound::Packet {
                    interface: interface.clone(),
                    meta: RecvMeta {
                        src: datagram.src,
                        dst: datagram.dst,
                        hop_limit: datagram.hop_limit,
                    },
                    payload: datagram.payload,
                }
            }
            Poll::Ready(Ok(Received::UnknownPeer { src })) => {
                tracing::debug!(%interface, %src, "advert from a source that is not a peer dropped");
                Inbound::Dropped {
                    counter: "unicast_unknown_peer",
                }
            }
            // A unicast advert seen by the multicast socket: the unicast socket has it.
            Poll::Ready(Ok(Received::OtherDestination { .. })) => continue,
            Poll::Ready(Ok(_)) => Inbound::Dropped {
                counter: "malformed_datagrams",
            },
            Poll::Ready(Err(error)) => {
                // The socket waits for its next event before it is read again (edge-triggered),
                // and the link watcher closes a socket whose link vanished.
                let error = hav_proto::errors::chain(&error);
                tracing::warn!(%interface, %error, "receive failed");
                Inbound::Dropped {
                    counter: "receive_errors",
                }
            }
        };
        return Poll::Ready(inbound);
    }
}
