//! How many TCP connections this network namespace holds on given local addresses, from the
//! kernel's socket table (`NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY` dumps of IPv4 and IPv6 TCP
//! sockets). A connection is any TCP socket but a listener, one in TIME-WAIT or one closed: those
//! need no more packets from the peer. IPv4 connections accepted by an IPv6 socket (mapped
//! addresses) count as IPv4.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then a 48-byte socket id.
const REQ_LEN: usize = 8 + 48;
/// `struct inet_diag_msg` up to and including the socket id's addresses.
const MSG_MIN_LEN: usize = 4 + 4 + 32;

/// TCP states (`include/net/tcp_states.h`) that still carry a connection.
const CONNECTED_STATES: [u32; 8] = [
    1,  // ESTABLISHED
    2,  // SYN_SENT
    3,  // SYN_RECV
    4,  // FIN_WAIT1
    5,  // FIN_WAIT2
    8,  // CLOSE_WAIT
    9,  // LAST_ACK
    11, // CLOSING
];

/// The number of TCP connections whose local address is one of `locals`.
pub fn count_tcp_connections(locals: &BTreeSet<IpAddr>) -> io::Result<usize> {
    if locals.is_empty() {
        return Ok(0);
    }
    let socket = open()?;
    let mut count = 0;
    for family in [libc::AF_INET, libc::AF_INET6] {
        count += dump(&socket, family as u8, locals)?;
    }
    Ok(count)
}

fn open() -> io::Result<OwnedFd> {
    super::netlink_socket(NETLINK_SOCK_DIAG)
}

/// One dump of `family`'s TCP sockets; counts those on `locals`.
fn dump(socket: &OwnedFd, family: u8, locals: &BTreeSet<IpAddr>) -> io::Result<usize> {
    let states: u32 = CONNECTED_STATES.iter().fold(0, |mask, s| mask | (1 << s));
    let mut request = Vec::with_capacity(NLMSG_HDR_LEN + REQ_LEN);
    let len = (NLMSG_HDR_LEN + REQ_LEN) as u32;
    request.extend_from_slice(&len.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    request.push(family);
    request.push(libc::IPPROTO_TCP as u8);
    request.push(0); // no extensions
    request.push(0);
    request.extend_from_slice(&states.to_ne_bytes());
    request.extend_from_slice(&[0u8; 48]); // socket id: any
    // SAFETY: sends `request`'s initialised bytes on a netlink socket (to the kernel: the
    // default destination of an unconnected netlink socket is port 0).
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buffer = vec![0u8; 64 * 1024];
    let mut count = 0;
    loop {
        // SAFETY: receives into `buffer`, at most its length.
        let received = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        let mut rest = &buffer[..received as usize];
        while rest.len() >= NLMSG_HDR_LEN {
            let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
            if len < NLMSG_HDR_LEN || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated sock_diag message",
                ));
            }
            let body = &rest[NLMSG_HDR_LEN..len];
            match kind {
                NLMSG_DONE => return Ok(count),
                NLMSG_ERROR => {
                    let code = body
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                        .unwrap_or(0);
                    return Err(io::Error::from_raw_os_error(-code));
                }
                SOCK_DIAG_BY_FAMILY
                    if body.len() >= MSG_MIN_LEN
                        && local_address(body).is_some_and(|a| locals.contains(&a)) =>
                {
                    count += 1;
                }
                _ => {}
            }
            // Messages are 4-byte aligned.
            let advance = (len + 3) & !3;
            rest = rest.get(advance..).unwrap_or(&[]);
        }
    }
}

/// The local address of one `inet_diag_msg` (family at 0, the id's source address at 8).
fn local_address(msg: &[u8]) -> Option<IpAddr> {
    let family = i32::from(msg[0]);
    let src = &msg[8..24];
    if family == libc::AF_INET {
        let octets: [u8; 4] = src[..4].try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(octets)))
    } else if family == libc::AF_INET6 {
        let octets: [u8; 16] = src.try_into().ok()?;
        let v6 = Ipv6Addr::from(octets);
        Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn counts_connections_on_a_local_address_and_not_listeners() {
        // An address of the loopback range no other test uses.
        let listener = TcpListener::bind("127.88.17.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let locals: BTreeSet<IpAddr> = [address.ip()].into();
        let before = count_tcp_connections(&locals).expect("dump");
        let client = TcpStream::connect(address).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        // The accepted end is on that address (the client's source is 127.0.0.1); the
        // listener is not a connection.
        assert_eq!(count_tcp_connections(&locals).expect("dump"), before + 1);
        drop((client, server));
        let other: BTreeSet<IpAddr> = ["127.88.17.2".parse().expect("literal")].into();
        assert_eq!(count_tcp_connections(&other).expect("dump"), 0);
    }
}
