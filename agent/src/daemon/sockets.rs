//! The open VRRP sockets, one per [`SocketSpec`], each read by its own task that hands adverts
//! to the event loop.
//!
//! A socket is bound to the index its interface had when it was opened: when the link is deleted
//! and created again (a new index), [`Sockets::close_stale`] closes it, and the next
//! [`Sockets::prepare`] opens a fresh one, which joins the multicast group on the new link.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hav_vrrp::wire::RecvMeta;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::plan::Host;
use crate::net::{Mode, Received, SocketError, SocketSpec, VrrpSocket};

/// What the receive tasks hand to the loop.
pub enum Inbound {
    Packet {
        interface: Arc<str>,
        meta: RecvMeta,
        payload: Vec<u8>,
    },
    Dropped {
        counter: &'static str,
    },
}

/// One open socket and the task reading it; the task stops when the last clone is dropped.
#[derive(Clone)]
pub struct OpenSocket {
    pub socket: Arc<VrrpSocket>,
    _reader: Arc<Reader>,
}

struct Reader(JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The sockets the running plan uses.
pub struct Sockets {
    open: HashMap<SocketSpec, OpenSocket>,
    inbound: mpsc::Sender<Inbound>,
}

impl Sockets {
    pub fn new(inbound: mpsc::Sender<Inbound>) -> Self {
        Self {
            open: HashMap::new(),
            inbound,
        }
    }

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
                None => {
                    let socket = Arc::new(VrrpSocket::open(spec)?);
                    let reader = tokio::spawn(receive(socket.clone(), self.inbound.clone()));
                    OpenSocket {
                        socket,
                        _reader: Arc::new(Reader(reader)),
                    }
                }
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
}

/// Reads one socket forever, handing adverts to the loop. The multicast socket takes only what
/// was sent to the group and a unicast socket only what was sent to us, so that an instance never
/// hears one advert twice.
async fn receive(socket: Arc<VrrpSocket>, inbound: mpsc::Sender<Inbound>) {
    let interface: Arc<str> = Arc::from(socket.spec().interface.as_str());
    let multicast = matches!(socket.spec().mode, Mode::Multicast { .. });
    let mut buf = vec![0u8; 2048];
    loop {
        let message = match socket.recv(&mut buf).await {
            Ok(Received::Datagram(datagram)) => {
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
                    payload: datagram.payload(&buf).to_vec(),
                }
            }
            Ok(Received::UnknownPeer { src }) => {
                tracing::debug!(%interface, %src, "advert from a source that is not a peer dropped");
                Inbound::Dropped {
                    counter: "unicast_unknown_peer",
                }
            }
            // A unicast advert seen by the multicast socket: the unicast socket has it.
            Ok(Received::OtherDestination { .. }) => continue,
            Ok(_) => Inbound::Dropped {
                counter: "malformed_datagrams",
            },
            Err(error) => {
                tracing::warn!(%interface, %error, "receive failed");
                // Rate limit a persistent error (a vanished link) rather than spin; the link
                // watcher closes this socket. Not a synchronisation.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if inbound.send(message).await.is_err() {
            return;
        }
    }
}
