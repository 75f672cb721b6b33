//! One DNS exchange: send a message over UDP (signed with TSIG when a signer is given), accept
//! only an answer from the server with the same id (and, when signed, a valid TSIG over it),
//! and repeat over TCP when the answer is truncated. Nothing here panics on what the network
//! sends: a malformed answer is an error.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::Message;
use hickory_proto::rr::TSigner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::DnsError;

/// The largest UDP answer we read (EDNS is not used, so 512 is the protocol's limit; larger
/// buffers only tolerate servers that ignore that).
const UDP_BUFFER: usize = 4096;

/// Sends `message` to `server` and returns its answer.
pub async fn exchange(
    server: SocketAddr,
    message: &Message,
    signer: Option<&TSigner>,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let answer = tokio::time::timeout(timeout, exchange_udp(server, message, signer))
        .await
        .map_err(|_| DnsError::Timeout { server, timeout })??;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    tokio::time::timeout(timeout, exchange_tcp(server, message, signer))
        .await
        .map_err(|_| DnsError::Timeout { server, timeout })?
}

/// The request bytes and, when signed, the verifier of the answer's TSIG.
fn encode(
    server: SocketAddr,
    message: &Message,
    signer: Option<&TSigner>,
) -> Result<(Vec<u8>, Option<hickory_proto::rr::TSigVerifier>), DnsError> {
    let mut message = message.clone();
    let verifier = match signer {
        Some(signer) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            message
                .finalize(signer, now)
                .map_err(|e| DnsError::Encode(e.to_string()))?
        }
        None => None,
    };
    let bytes = message
        .to_vec()
        .map_err(|e| DnsError::Encode(format!("{e} (to {server})")))?;
    Ok((bytes, verifier))
}

fn decode(
    server: SocketAddr,
    bytes: &[u8],
    verifier: Option<&mut hickory_proto::rr::TSigVerifier>,
) -> Result<Message, DnsError> {
    let bad = |reason: String| DnsError::BadResponse { server, reason };
    match verifier {
        Some(verifier) => verifier
            .verify(bytes)
            .map(|response| response.into_message())
            .map_err(|e| bad(format!("TSIG: {e}"))),
        None => Message::from_vec(bytes).map_err(|e| bad(e.to_string())),
    }
}

async fn exchange_udp(
    server: SocketAddr,
    message: &Message,
    signer: Option<&TSigner>,
) -> Result<Message, DnsError> {
    let io = |source| DnsError::Io { server, source };
    let (bytes, mut verifier) = encode(server, message, signer)?;
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(&bytes).await.map_err(io)?;
    let mut buffer = vec![0u8; UDP_BUFFER];
    loop {
        let len = socket.recv(&mut buffer).await.map_err(io)?;
        let answer = &buffer[..len];
        // A stray datagram with another id is ignored (connected: only the server's port).
        if answer.len() < 2 || answer[..2] != message.metadata.id.to_be_bytes() {
            continue;
        }
        let parsed = Message::from_vec(answer).map_err(|e| DnsError::BadResponse {
            server,
            reason: e.to_string(),
        })?;
        if parsed.metadata.truncation {
            return Ok(parsed);
        }
        return decode(server, answer, verifier.as_mut());
    }
}

async fn exchange_tcp(
    server: SocketAddr,
    message: &Message,
    signer: Option<&TSigner>,
) -> Result<Message, DnsError> {
    let io = |source| DnsError::Io { server, source };
    let (bytes, mut verifier) = encode(server, message, signer)?;
    let length = u16::try_from(bytes.len())
        .map_err(|_| DnsError::Encode(format!("message of {} bytes", bytes.len())))?;
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    stream.write_all(&length.to_be_bytes()).await.map_err(io)?;
    stream.write_all(&bytes).await.map_err(io)?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await.map_err(io)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut answer).await.map_err(io)?;
    decode(server, &answer, verifier.as_mut())
}
