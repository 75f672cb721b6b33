//! VRRP raw sockets: IP protocol 112 on one interface, one address family, multicast or unicast.
//!
//! A [`VrrpSocket`] only moves payload bytes: it neither builds nor parses VRRP. Every datagram it
//! sends leaves with hop limit 255 (and TOS/traffic class CS6 on IPv4, as keepalived sends); an
//! IPv4 datagram's header is built here and sent with `IP_HDRINCL`, as keepalived does, so the
//! kernel neither validates the source address nor derives an IP ID per advert. Every
//! datagram it receives is reported with the source, destination and hop limit the kernel saw, so
//! the caller can apply the RFC 5798 §7.1 checks itself. Nothing received from the network makes
//! it panic: a datagram it cannot make sense of is a [`Received::Malformed`], one from a source that
//! is not a configured unicast peer is a [`Received::UnknownPeer`], and both are for the caller to
//! count. Multicast and unicast sockets on one interface do not see each other's traffic: a
//! unicast socket joins no group and has `IP_MULTICAST_ALL` off, a multicast socket reports
//! datagrams to any other address as [`Received::OtherDestination`], and so does a unicast
//! socket for datagrams to a multicast group. All methods take `&self`, so several virtual
//! routers on one interface share one socket (the keepalived model) and demultiplex by VRID.

use std::collections::BTreeSet;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::SystemTime;

use hav_vrrp::Family;
use hav_vrrp::wire::RecvMeta;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrLike, recvmsg,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use super::batch::{BATCH, Batch};
use super::hold::Program;
use super::{interface_index, setsockopt_raw};

/// IP protocol number of VRRP (RFC 5798 §5.1.1.4).
pub const VRRP_PROTOCOL: i32 = 112;
/// IPv4 multicast group of VRRP (RFC 5798 §5.1.1.2).
pub const VRRP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP (RFC 5798 §5.1.2.2).
pub const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The hop limit every VRRP packet is sent with, and the only one a receiver accepts (§5.1.1.3).
pub const VRRP_HOP_LIMIT: u8 = 255;
/// DSCP CS6 (network control) in the TOS byte, as keepalived marks its adverts.
const TOS_CS6: u8 = 0xc0;
/// The longest IPv4 datagram sent: an Ethernet MTU. The longest VRRP advert (255 addresses
/// and authentication) is 1,056 bytes with its header; a longer payload is refused with
/// `EMSGSIZE`, as the kernel refuses a datagram beyond the interface's MTU.
const DATAGRAM_ROOM: usize = 1500;
/// Size of the ancillary data buffer on receive: two IPv6 cmsgs with headers, with room to spare.
const CMSG_BUFFER_LEN: usize = 128;

/// What a socket is for: one interface, one address family, multicast or unicast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketSpec {
    /// The interface name (e.g. `eth0`); the socket is bound to it with `SO_BINDTODEVICE`.
    pub interface: String,
    /// The address family of the adverts.
    pub family: Family,
    /// Multicast to the VRRP group, or unicast to configured peers.
    pub mode: Mode,
}

/// How adverts travel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mode {
    /// To 224.0.0.18 / ff02::12. `source` picks the source address of outgoing adverts; `None`
    /// lets the kernel choose (the interface's primary IPv4 address, its link-local IPv6 address).
    Multicast {
        /// Source address of outgoing adverts.
        source: Option<IpAddr>,
    },
    /// To each peer in turn, from `source`; datagrams from any other source are reported as
    /// [`Received::UnknownPeer`].
    Unicast {
        /// Source address of outgoing adverts (keepalived's `unicast_src_ip`).
        source: IpAddr,
        /// The peers (keepalived's `unicast_peer`).
        peers: BTreeSet<IpAddr>,
    },
}

/// One thing [`VrrpSocket::recv`] got from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// A datagram to hand to the VRRP decoder.
    Datagram(Datagram),
    /// Unicast mode: a datagram from a source that is not a configured peer (dropped; count it).
    UnknownPeer {
        /// Its source address.
        src: IpAddr,
    },
    /// Not for this socket's routers: in multicast mode, a datagram addressed to something other
    /// than the VRRP group (a unicast advert meant for a unicast-mode socket on the same
    /// interface); in unicast mode, one addressed to a multicast group. Ignore it, or count it
    /// if no socket of the other mode exists on the interface.
    OtherDestination {
        /// Its source address.
        src: IpAddr,
        /// Its destination address.
        dst: IpAddr,
    },
    /// A datagram that could not be read (dropped; count it).
    Malformed {
        /// Its source address, when known.
        src: Option<IpAddr>,
        /// What was wrong.
        reason: MalformedReason,
    },
}

/// A datagram read from a holding socket ([`VrrpSocket::recv_held`], [`VrrpSocket::take_held`]).
#[derive(Debug)]
pub struct Stamped {
    pub received: Received,
    /// When the kernel received it, by the system's wall clock.
    pub arrived: Option<SystemTime>,
    /// How many datagrams the socket has dropped since it opened, its queue being full.
    pub dropped: Option<u32>,
}

/// Why a received datagram was dropped before it reached the VRRP decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedReason {
    /// Larger than the receive buffer.
    Truncated,
    /// IPv4: shorter than its own header, or a header that says otherwise.
    BadIpv4Header,
    /// IPv6: the kernel gave no hop limit or destination (never expected).
    MissingAncillaryData,
}

/// A received VRRP datagram: addresses from the IP layer, and where its payload lies in the
/// caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The IP source, the destination (the VRRP group, or our unicast source) and the IPv4 TTL
    /// or IPv6 hop limit on arrival (anything but 255 must be dropped, §7.1), as the engine
    /// takes them.
    pub meta: RecvMeta,
    /// The VRRP payload inside the buffer passed to [`VrrpSocket::recv`].
    pub payload: Range<usize>,
}

impl Datagram {
    /// The payload bytes in `buf` (the buffer passed to [`VrrpSocket::recv`]).
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.payload.clone()]
    }
}

/// Errors of the VRRP socket layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The interface does not exist.
    #[error("interface {iface}: not found")]
    NoSuchInterface {
        /// Interface name.
        iface: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating the raw socket failed (needs CAP_NET_RAW).
    #[error("interface {iface}: cannot open a raw {family:?} VRRP socket")]
    Open {
        /// Interface name.
        iface: String,
        /// Address family.
        family: Family,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Setting a socket option failed.
    #[error("interface {iface}: cannot set {option}")]
    Option {
        /// Interface name.
        iface: String,
        /// Option name.
        option: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Joining the VRRP multicast group failed.
    #[error("interface {iface}: cannot join the VRRP multicast group {group}")]
    MulticastJoin {
        /// Interface name.
        iface: String,
        /// The group.
        group: IpAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An address in the spec, or a destination, is of the other family.
    #[error("interface {iface}: address {addr} is not of family {family:?}")]
    FamilyMismatch {
        /// Interface name.
        iface: String,
        /// The address.
        addr: IpAddr,
        /// The socket's family.
        family: Family,
    },
    /// Receiving failed.
    #[error("interface {iface}: receive failed")]
    Recv {
        /// Interface name.
        iface: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Sending failed.
    #[error("interface {iface}: sending to {dst} failed")]
    Send {
        /// Interface name.
        iface: String,
        /// Destination.
        dst: IpAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// A raw VRRP socket on one interface. See the module documentation.
///
/// The socket is non-blocking and registered with no reactor: its owner waits for it in an
/// `epoll` of its own ([`VrrpSocket::as_raw_fd`]), so an advert wakes nothing but that wait.
#[derive(Debug)]
pub struct VrrpSocket {
    socket: Socket,
    /// IPv4 adverts leave through a socket of their own that receives nothing
    /// (`IPPROTO_RAW`) and that no `epoll` waits on: the kernel then wakes no waiter when it
    /// frees a sent datagram, as it does on a socket someone waits to read from. IPv6 sends
    /// through `socket`.
    sender: Option<Socket>,
    spec: SocketSpec,
    ifindex: u32,
    id: u64,
    /// The IP ID of the next IPv4 datagram sent (0, once in 65,536, lets the kernel pick one).
    next_ip_id: AtomicU16,
}

/// Tells sockets apart even when a closed one's descriptor number is reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl VrrpSocket {
    /// Opens, configures and (multicast mode) joins the group. Needs CAP_NET_RAW. The socket
    /// lives in the network namespace of the calling thread.
    pub fn open(spec: &SocketSpec) -> Result<Self, SocketError> {
        let iface = spec.interface.as_str();
        let ifindex = interface_index(iface).map_err(|source| SocketError::NoSuchInterface {
            iface: iface.to_owned(),
            source,
        })?;
        check_spec_family(spec)?;
        let domain = match spec.family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(VRRP_PROTOCOL))).map_err(
            |source| SocketError::Open {
                iface: iface.to_owned(),
                family: spec.family,
                source,
            },
        )?;
        let option = |option: &'static str| {
            move |source| SocketError::Option {
                iface: iface.to_owned(),
                option,
                source,
            }
        };
        on_interface(&socket, iface).map_err(|(name, e)| option(name)(e))?;
        match spec.family {
            Family::V4 => configure_v4(&socket, ifindex).map_err(|(name, e)| option(name)(e))?,
            Family::V6 => configure_v6(&socket, ifindex).map_err(|(name, e)| option(name)(e))?,
        }
        let sender = match spec.family {
            Family::V4 => {
                Some(open_sender_v4(iface, ifindex).map_err(|(name, e)| option(name)(e))?)
            }
            Family::V6 => None,
        };
        if let Mode::Multicast { .. } = spec.mode {
            join_group(&socket, spec.family, ifindex).map_err(|source| {
                SocketError::MulticastJoin {
                    iface: iface.to_owned(),
                    group: group(spec.family),
                    source,
                }
            })?;
        }
        Ok(Self {
            socket,
            sender,
            spec: spec.clone(),
            ifindex,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            next_ip_id: AtomicU16::new(1),
        })
    }

    /// The descriptor to wait on (readable when a datagram is queued).
    pub fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Unique among the sockets this process opened, unlike the descriptor number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A socket that holds datagrams for a later read instead of waking anyone: it starts with
    /// a filter that drops everything ([`Program::reject_all`]) until [`VrrpSocket::set_filter`]
    /// lets some in, and stamps each datagram with its arrival ([`VrrpSocket::take_held`]).
    /// Whatever arrived before the filter is read and dropped here.
    pub fn open_holding(spec: &SocketSpec) -> Result<Self, SocketError> {
        let socket = Self::open(spec)?;
        socket.set_filter(&Program::reject_all())?;
        let option = |option: &'static str| {
            move |source| SocketError::Option {
                iface: spec.interface.clone(),
                option,
                source,
            }
        };
        let on: libc::c_int = 1;
        setsockopt_raw(&socket.socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on)
            .map_err(option("SO_TIMESTAMPNS"))?;
        setsockopt_raw(&socket.socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &on)
            .map_err(option("SO_RXQ_OVFL"))?;
        let mut batch = Batch::default();
        while socket.recv_held(&mut batch, BATCH)? > 0 {}
        Ok(socket)
    }

    /// Replaces the socket's filter: from the next datagram on, only what `program` accepts
    /// is queued.
    pub fn set_filter(&self, program: &Program) -> Result<(), SocketError> {
        program
            .attach(&self.socket)
            .map_err(|source| SocketError::Option {
                iface: self.spec.interface.clone(),
                option: "SO_ATTACH_FILTER",
                source,
            })
    }

    /// Reads up to `limit` queued datagrams at once into `batch`, without waiting; how many.
    pub fn recv_held(&self, batch: &mut Batch, limit: usize) -> Result<usize, SocketError> {
        (batch.recv(self.socket.as_raw_fd(), limit)).map_err(|source| SocketError::Recv {
            iface: self.spec.interface.clone(),
            source,
        })
    }

    /// The datagram at `index` of the last read into `batch` (as [`VrrpSocket::try_recv`]
    /// reports it, with when the kernel received it and how many datagrams the socket dropped
    /// for want of room so far), its bytes copied into `buf`.
    pub fn take_held(&self, batch: &Batch, index: usize, buf: &mut [u8]) -> Option<Stamped> {
        let taken = batch.take(index, self.spec.family, buf)?;
        Some(Stamped {
            received: self.classify(taken.raw),
            arrived: taken.arrived,
            dropped: taken.dropped,
        })
    }

    /// What this socket was opened for.
    pub fn spec(&self) -> &SocketSpec {
        &self.spec
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Reads the next queued datagram into `buf` (for IPv4 including its IP header; the payload
    /// range says where the VRRP payload is), or `None` when nothing is queued. A buffer of 1500
    /// bytes holds any advert.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<Received>, SocketError> {
        let read = match self.spec.family {
            Family::V4 => recv_v4(self.socket.as_raw_fd(), buf),
            Family::V6 => recv_v6(self.socket.as_raw_fd(), buf),
        };
        match read {
            Ok(raw) => Ok(Some(self.classify(raw))),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(source) => Err(SocketError::Recv {
                iface: self.spec.interface.clone(),
                source,
            }),
        }
    }

    /// Sends one payload to `dst` (the group, or one peer), from the configured source. The send
    /// never waits: an advert the kernel cannot queue at once (a full send buffer, which a few
    /// dozen bytes a second never fill) is an error for the caller to count, and the next
    /// advert follows one interval later.
    pub fn send_to(&self, dst: IpAddr, payload: &[u8]) -> Result<(), SocketError> {
        let iface = &self.spec.interface;
        let source = match &self.spec.mode {
            Mode::Multicast { source } => *source,
            Mode::Unicast { source, .. } => Some(*source),
        };
        // `open` checked that the source is of the socket's family; check the destination.
        let sent = match (dst, source) {
            (IpAddr::V4(dst), None | Some(IpAddr::V4(_))) if self.spec.family == Family::V4 => {
                let source = match source {
                    Some(IpAddr::V4(source)) => Some(source),
                    _ => None,
                };
                let id = self.next_ip_id.fetch_add(1, Ordering::Relaxed);
                let sender = self.sender.as_ref().unwrap_or(&self.socket);
                send_v4(sender.as_raw_fd(), id, source, dst, payload)
            }
            (IpAddr::V6(dst), None | Some(IpAddr::V6(_))) if self.spec.family == Family::V6 => {
                let source = match source {
                    Some(IpAddr::V6(source)) => Some(source),
                    _ => None,
                };
                send_v6(self.socket.as_raw_fd(), self.ifindex, source, dst, payload)
            }
            _ => {
                return Err(SocketError::FamilyMismatch {
                    iface: iface.clone(),
                    addr: dst,
                    family: self.spec.family,
                });
            }
        };
        sent.map_err(|source| SocketError::Send {
            iface: iface.clone(),
            dst,
            source,
        })
    }

    /// Sends one payload to every destination of the mode: the group, or each unicast peer.
    /// Tries every peer; the first failure is returned after all were tried.
    pub fn send_advert(&self, payload: &[u8]) -> Result<(), SocketError> {
        match &self.spec.mode {
            Mode::Multicast { .. } => self.send_to(group(self.spec.family), payload),
            Mode::Unicast { peers, .. } => {
                let mut first_error = None;
                for peer in peers {
                    if let Err(e) = self.send_to(*peer, payload) {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        }
    }

    fn classify(&self, raw: RawReceived) -> Received {
        let datagram = match raw {
            RawReceived::Ok(datagram) => datagram,
            RawReceived::Malformed { src, reason } => return Received::Malformed { src, reason },
        };
        let RecvMeta { src, dst, .. } = datagram.meta;
        // The group is compared per family, without building an address of each.
        let (to_group, multicast) = match dst {
            IpAddr::V4(dst) => (dst == VRRP_GROUP_V4, dst.is_multicast()),
            IpAddr::V6(dst) => (dst == VRRP_GROUP_V6, dst.is_multicast()),
        };
        match &self.spec.mode {
            Mode::Multicast { .. } if !to_group => Received::OtherDestination { src, dst },
            Mode::Unicast { .. } if multicast => Received::OtherDestination { src, dst },
            Mode::Unicast { peers, .. } if !peers.contains(&src) => Received::UnknownPeer { src },
            _ => Received::Datagram(datagram),
        }
    }
}

/// The VRRP multicast group of a family.
pub fn group(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(VRRP_GROUP_V4),
        Family::V6 => IpAddr::V6(VRRP_GROUP_V6),
    }
}

pub(crate) fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn check_spec_family(spec: &SocketSpec) -> Result<(), SocketError> {
    let addresses: Vec<IpAddr> = match &spec.mode {
        Mode::Multicast { source } => source.iter().copied().collect(),
        Mode::Unicast { source, peers } => std::iter::once(*source)
            .chain(peers.iter().copied())
            .collect(),
    };
    match addresses.into_iter().find(|a| family_of(*a) != spec.family) {
        Some(addr) => Err(SocketError::FamilyMismatch {
            iface: spec.interface.clone(),
            addr,
            family: spec.family,
        }),
        None => Ok(()),
    }
}

type OptionResult = Result<(), (&'static str, io::Error)>;

fn configure_v4(socket: &Socket, ifindex: u32) -> OptionResult {
    // Outgoing datagrams carry the header `ipv4_header` builds: hop limit and TOS are set there.
    setsockopt_raw(
        socket,
        libc::IPPROTO_IP,
        libc::IP_HDRINCL,
        &(1 as libc::c_int),
    )
    .map_err(|e| ("IP_HDRINCL", e))?;
    socket
        .set_multicast_loop_v4(false)
        .map_err(|e| ("IP_MULTICAST_LOOP", e))?;
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex_c(ifindex),
    };
    setsockopt_raw(socket, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn)
        .map_err(|e| ("IP_MULTICAST_IF", e))?;
    // Only the groups joined on this socket, not every group any socket of the host joined.
    socket
        .set_multicast_all_v4(false)
        .map_err(|e| ("IP_MULTICAST_ALL", e))?;
    Ok(())
}

/// The socket IPv4 adverts leave through: `IPPROTO_RAW`, so it sends datagrams whose header
/// the caller built (it implies `IP_HDRINCL`) and receives none, on the interface only, with no
/// copy looped back.
fn open_sender_v4(iface: &str, ifindex: u32) -> Result<Socket, (&'static str, io::Error)> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .map_err(|e| ("socket(IPPROTO_RAW)", e))?;
    on_interface(&socket, iface)?;
    configure_v4(&socket, ifindex)?;
    Ok(socket)
}

/// What every VRRP socket is: non-blocking, closed on exec, and bound to its interface.
fn on_interface(socket: &Socket, iface: &str) -> OptionResult {
    socket
        .set_nonblocking(true)
        .map_err(|e| ("O_NONBLOCK", e))?;
    socket.set_cloexec(true).map_err(|e| ("FD_CLOEXEC", e))?;
    socket
        .bind_device(Some(iface.as_bytes()))
        .map_err(|e| ("SO_BINDTODEVICE", e))
}

fn configure_v6(socket: &Socket, ifindex: u32) -> OptionResult {
    socket
        .set_unicast_hops_v6(VRRP_HOP_LIMIT.into())
        .map_err(|e| ("IPV6_UNICAST_HOPS", e))?;
    socket
        .set_multicast_hops_v6(VRRP_HOP_LIMIT.into())
        .map_err(|e| ("IPV6_MULTICAST_HOPS", e))?;
    socket
        .set_multicast_loop_v6(false)
        .map_err(|e| ("IPV6_MULTICAST_LOOP", e))?;
    socket
        .set_multicast_if_v6(ifindex)
        .map_err(|e| ("IPV6_MULTICAST_IF", e))?;
    socket
        .set_recv_hoplimit_v6(true)
        .map_err(|e| ("IPV6_RECVHOPLIMIT", e))?;
    let on: libc::c_int = 1;
    setsockopt_raw(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &on)
        .map_err(|e| ("IPV6_RECVPKTINFO", e))?;
    socket
        .set_multicast_all_v6(false)
        .map_err(|e| ("IPV6_MULTICAST_ALL", e))?;
    Ok(())
}

fn join_group(socket: &Socket, family: Family, ifindex: u32) -> io::Result<()> {
    match family {
        Family::V4 => {
            socket.join_multicast_v4_n(&VRRP_GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))
        }
        Family::V6 => socket.join_multicast_v6(&VRRP_GROUP_V6, ifindex),
    }
}

fn ifindex_c(ifindex: u32) -> libc::c_int {
    // Kernel interface indexes are positive `int`s, so the conversion never saturates.
    libc::c_int::try_from(ifindex).unwrap_or(libc::c_int::MAX)
}

pub(crate) enum RawReceived {
    Ok(Datagram),
    Malformed {
        src: Option<IpAddr>,
        reason: MalformedReason,
    },
}

/// Reads one IPv4 datagram, header included, with a plain `recv(2)`: the header holds the source,
/// destination and TTL, so no address or control message is asked of the kernel. `MSG_TRUNC`
/// makes it return the datagram's real length, which tells a truncated read.
fn recv_v4(fd: i32, buf: &mut [u8]) -> io::Result<RawReceived> {
    let len = crate::sys::recv(fd, buf, libc::MSG_TRUNC)?;
    if len > buf.len() {
        return Ok(RawReceived::Malformed {
            src: ipv4_source(buf).map(IpAddr::V4),
            reason: MalformedReason::Truncated,
        });
    }
    Ok(raw_v4(&buf[..len]))
}

/// An IPv4 datagram read whole, header included; malformed if its header is not consistent
/// with it (the source, if the kernel read one, still told).
pub(crate) fn raw_v4(packet: &[u8]) -> RawReceived {
    match parse_ipv4_header(packet) {
        Some(datagram) => RawReceived::Ok(datagram),
        None => RawReceived::Malformed {
            src: ipv4_source(packet).map(IpAddr::V4),
            reason: MalformedReason::BadIpv4Header,
        },
    }
}

/// An IPv6 datagram's payload of `len` bytes with the addresses and hop limit the kernel gave
/// beside it; malformed if one is missing.
pub(crate) fn raw_v6(
    src: Option<IpAddr>,
    dst: Option<Ipv6Addr>,
    hop_limit: Option<u8>,
    len: usize,
) -> RawReceived {
    match (src, dst, hop_limit) {
        (Some(src), Some(dst), Some(hop_limit)) => RawReceived::Ok(Datagram {
            meta: RecvMeta {
                src,
                dst: IpAddr::V6(dst),
                hop_limit,
            },
            payload: 0..len,
        }),
        _ => RawReceived::Malformed {
            src,
            reason: MalformedReason::MissingAncillaryData,
        },
    }
}

/// The IPv4 header fields the daemon needs, and where the payload is; `None` if the header is
/// inconsistent with the datagram.
fn parse_ipv4_header(packet: &[u8]) -> Option<Datagram> {
    let first = *packet.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || packet.len() < header_len {
        return None;
    }
    // The payload runs to the end of what the kernel delivered (a reassembled datagram).
    let hop_limit = packet[8];
    let src = ipv4_source(packet)?;
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some(Datagram {
        meta: RecvMeta {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            hop_limit,
        },
        payload: header_len..packet.len(),
    })
}

/// The source address of an IPv4 header, if `packet` is long enough to hold one.
pub(crate) fn ipv4_source(packet: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Reads one IPv6 datagram (payload only) with its hop limit and destination from cmsgs.
fn recv_v6(fd: i32, buf: &mut [u8]) -> io::Result<RawReceived> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg_buffer = [0u8; CMSG_BUFFER_LEN];
    let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg_buffer), MsgFlags::empty())?;
    let src = msg.address.map(|a| IpAddr::V6(a.ip()));
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Ok(RawReceived::Malformed {
            src,
            reason: MalformedReason::Truncated,
        });
    }
    let (mut hop_limit, mut dst) = (None, None);
    for cmsg in msg.cmsgs()? {
        match cmsg {
            ControlMessageOwned::Ipv6HopLimit(limit) => hop_limit = u8::try_from(limit).ok(),
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            _ => {}
        }
    }
    Ok(raw_v6(src, dst, hop_limit, msg.bytes))
}

/// The IPv4 header of an advert from `source` to `dst` carrying `payload_len` bytes: TTL 255,
/// TOS CS6, don't fragment (what the kernel sent before the header was built here). A source of
/// 0.0.0.0 lets the kernel fill in the route's source; it always computes the checksum.
fn ipv4_header(id: u16, source: Option<Ipv4Addr>, dst: Ipv4Addr, payload_len: usize) -> [u8; 20] {
    const DONT_FRAGMENT: u16 = 0x4000;
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    let mut header = [0u8; 20];
    header[0] = 0x45;
    header[1] = TOS_CS6;
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[4..6].copy_from_slice(&id.to_be_bytes());
    header[6..8].copy_from_slice(&DONT_FRAGMENT.to_be_bytes());
    header[8] = VRRP_HOP_LIMIT;
    header[9] = VRRP_PROTOCOL as u8;
    header[12..16].copy_from_slice(&source.unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
    header[16..20].copy_from_slice(&dst.octets());
    header
}

/// One `sendmsg(2)` of the header and the payload in one buffer: the socket has `IP_HDRINCL`,
/// and `SO_BINDTODEVICE` picks the interface. `EMSGSIZE` beyond [`DATAGRAM_ROOM`].
fn send_v4(
    fd: i32,
    id: u16,
    source: Option<Ipv4Addr>,
    dst: Ipv4Addr,
    payload: &[u8],
) -> io::Result<()> {
    let header = ipv4_header(id, source, dst, payload.len());
    let addr = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    // One buffer: the kernel copies and checks each gathered piece on its own. Only the bytes
    // sent are written (a wake-up after a sleep pays for every cache line touched).
    let len = header.len() + payload.len();
    if len > DATAGRAM_ROOM {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    let mut datagram = std::mem::MaybeUninit::<[u8; DATAGRAM_ROOM]>::uninit();
    let start = datagram.as_mut_ptr().cast::<u8>();
    // SAFETY: `header` and `payload` are live and do not overlap the local buffer, whose
    // `DATAGRAM_ROOM` bytes hold both (checked above); the kernel reads only the `len` bytes
    // written.
    unsafe {
        std::ptr::copy_nonoverlapping(header.as_ptr(), start, header.len());
        std::ptr::copy_nonoverlapping(payload.as_ptr(), start.add(header.len()), payload.len());
    }
    let mut iov = [libc::iovec {
        iov_base: start.cast(),
        iov_len: len,
    }];
    send_message(fd, &message(&addr, &mut iov))
}

fn send_v6(
    fd: i32,
    ifindex: u32,
    source: Option<Ipv6Addr>,
    dst: Ipv6Addr,
    payload: &[u8],
) -> io::Result<()> {
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: source.unwrap_or(Ipv6Addr::UNSPECIFIED).octets(),
        },
        ipi6_ifindex: ifindex,
    };
    let scope_id = if needs_scope(dst) { ifindex } else { 0 };
    let addr = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, scope_id));
    send_with_pktinfo(
        fd,
        payload,
        &addr,
        libc::IPPROTO_IPV6,
        libc::IPV6_PKTINFO,
        &info,
    )
}

/// Room for one control message of an `in6_pktinfo`, aligned as `cmsghdr`.
#[repr(C, align(8))]
struct PktinfoSpace([u8; 64]);

/// `sendmsg(2)` of `payload` to `addr` with one control message `level`/`kind` carrying `info`
/// (an `in6_pktinfo`), built on the stack: nix's `sendmsg` allocates its
/// control buffer on every call, and a master calls this for every advert.
fn send_with_pktinfo<A: SockaddrLike, T: Copy>(
    fd: i32,
    payload: &[u8],
    addr: &A,
    level: libc::c_int,
    kind: libc::c_int,
    info: &T,
) -> io::Result<()> {
    const { assert!(std::mem::size_of::<T>() <= 32) };
    let mut space = PktinfoSpace([0; 64]);
    let mut iov = [libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    }];
    let mut msg = message(addr, &mut iov);
    msg.msg_control = space.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes; `T` fits the buffer (asserted).
    let (control_len, cmsg_len) = unsafe {
        (
            libc::CMSG_SPACE(std::mem::size_of::<T>() as u32),
            libc::CMSG_LEN(std::mem::size_of::<T>() as u32),
        )
    };
    msg.msg_controllen = control_len as _;
    // SAFETY: `msg_control` points at an aligned buffer of at least `msg_controllen` bytes, so
    // the first header and its data lie inside it; `info` is plain data of `T`'s size.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = cmsg_len as _;
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(info).cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            std::mem::size_of::<T>(),
        );
    }
    send_message(fd, &msg)
}

/// A `msghdr` to `addr` gathering `iov`, without control data; it borrows both for the send.
fn message<A: SockaddrLike>(addr: &A, iov: &mut [libc::iovec]) -> libc::msghdr {
    // SAFETY: an all-zero `msghdr` is valid (no name, no data, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr().cast_mut().cast();
    msg.msg_namelen = addr.len();
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    msg
}

/// `sendmsg(2)` of a message built by [`message`] whose buffers are still alive.
fn send_message(fd: i32, msg: &libc::msghdr) -> io::Result<()> {
    // SAFETY: the caller's buffers behind every pointer in `msg` outlive the call, and the
    // kernel only reads them.
    unsafe { crate::sys::sendmsg(fd, msg, 0) }.map(drop)
}

/// Link-local unicast and link-local multicast destinations need the interface as scope id.
pub(crate) fn needs_scope(addr: Ipv6Addr) -> bool {
    addr.is_unicast_link_local() || (addr.is_multicast() && addr.segments()[0] & 0x000f == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_header_sent_has_ttl_255_tos_cs6_and_the_addresses() {
        let source = Ipv4Addr::new(198, 51, 100, 11);
        let header = ipv4_header(0x1234, Some(source), VRRP_GROUP_V4, 12);
        assert_eq!(header[0], 0x45, "version 4, 20-byte header");
        assert_eq!(header[1], 0xc0, "TOS CS6");
        assert_eq!(
            u16::from_be_bytes([header[2], header[3]]),
            32,
            "total length"
        );
        assert_eq!(u16::from_be_bytes([header[4], header[5]]), 0x1234, "IP ID");
        assert_eq!(
            u16::from_be_bytes([header[6], header[7]]),
            0x4000,
            "DF, no fragment"
        );
        assert_eq!(header[8], 255, "TTL");
        assert_eq!(header[9], 112, "protocol VRRP");
        assert_eq!(&header[12..16], &source.octets());
        assert_eq!(&header[16..20], &VRRP_GROUP_V4.octets());
        let unset = ipv4_header(1, None, VRRP_GROUP_V4, 12);
        assert_eq!(&unset[12..16], &[0; 4], "the kernel fills in the source");
    }

    #[test]
    fn ipv4_header_fields_and_payload_range() {
        let mut packet = vec![0xa5u8; 28];
        packet[0] = 0x45;
        packet[8] = 64;
        packet[12..16].copy_from_slice(&[198, 51, 100, 1]);
        packet[16..20].copy_from_slice(&[224, 0, 0, 18]);
        let datagram = parse_ipv4_header(&packet).expect("valid header");
        assert_eq!(datagram.meta.src, IpAddr::from([198, 51, 100, 1]));
        assert_eq!(datagram.meta.dst, IpAddr::from([224, 0, 0, 18]));
        assert_eq!(datagram.meta.hop_limit, 64);
        assert_eq!(datagram.payload, 20..28);
    }

    #[test]
    fn ipv4_header_with_options_shifts_payload() {
        let mut packet = vec![0u8; 32];
        packet[0] = 0x46;
        assert_eq!(parse_ipv4_header(&packet).map(|d| d.payload), Some(24..32));
    }

    #[test]
    fn bad_ipv4_headers_are_rejected() {
        assert!(parse_ipv4_header(&[]).is_none());
        assert!(parse_ipv4_header(&[0x45; 19]).is_none());
        assert!(
            parse_ipv4_header(&[0x44; 40]).is_none(),
            "IHL 4 is below the minimum"
        );
        assert!(parse_ipv4_header(&[0x65; 40]).is_none(), "version 6");
        let mut long_ihl = [0u8; 40];
        long_ihl[0] = 0x4f;
        assert!(
            parse_ipv4_header(&long_ihl).is_none(),
            "IHL 15 = 60 bytes > 40 received"
        );
    }

    #[test]
    fn scope_needed_only_for_link_scope() {
        assert!(needs_scope("fe80::1".parse().expect("literal")));
        assert!(needs_scope(VRRP_GROUP_V6));
        assert!(!needs_scope("2001:db8::1".parse().expect("literal")));
        assert!(!needs_scope("ff05::12".parse().expect("literal")));
    }
}
