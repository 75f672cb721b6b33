//! A TLS server stream that holds no buffer while its connection is idle.
//!
//! Built on rustls's unbuffered connection: the bytes read from the socket, the records waiting
//! to be sent and the decrypted bytes the reader has not taken yet are three `Vec`s of ours, and
//! each is freed as soon as it is empty. A connection between messages therefore keeps only its
//! keys and handshake state. (rustls's buffered connection keeps a 4 KiB receive buffer for the
//! connection's whole life, which is a tenth of what an idle agent costs the coordinator.)
//!
//! Guarantees:
//! - bytes are sent in the order rustls produced them, each exactly once;
//! - a handshake finishes only once rustls says it is no longer handshaking, so the client's
//!   certificate has been verified before [`accept`] returns;
//! - a handshake that fails sends the alert rustls queued for it before the socket is handed
//!   back, and the error is the `rustls::Error` wrapped in an `io::Error` (`InvalidData`);
//! - at most [`MAX_BUFFERED`] received bytes are held (a record, or a handshake message spread
//!   over records); a peer that needs more is an error, never an allocation without bound.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ServerConfig, pki_types::CertificateDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes taken by one socket read. They land on the stack and only what arrived is copied to
/// `received`: a read allocates no room it does not fill (zeroed room for every read, freed
/// once rustls took the bytes, left the heap fragmented across thousands of connections).
const READ_SIZE: usize = 8192;
/// The most received bytes held: a 64 KiB handshake message (rustls's own limit) and the headers
/// of the records it spans.
pub const MAX_BUFFERED: usize = 0x1_0000 + 0x1000;
/// Plaintext taken by one write: four full records.
const MAX_WRITE: usize = 4 * 0x4000;
/// Encrypted bytes waiting for the socket beyond which a write waits for the socket.
const MAX_PENDING: usize = 4 * MAX_WRITE;
/// A TLS 1.3 record's cost beyond its plaintext: header, content type, AEAD tag.
const RECORD_OVERHEAD: usize = 5 + 1 + 16;
/// First guess at a handshake record's size; a larger one is retried at the size it needs.
const HANDSHAKE_RECORD: usize = 512;

/// A server-side TLS connection over TCP.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not consumed yet.
    received: Vec<u8>,
    /// Records produced and not yet written; `sent` of them are.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes not yet read; `taken` of them are.
    plaintext: Vec<u8>,
    taken: usize,
    /// The peer sent close_notify, or closed its side of the socket.
    read_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// rustls reported an error; the connection is over.
    failed: bool,
}

/// What a turn of [`TlsStream::drive`] should do once the connection may send data.
enum Job<'a> {
    /// Nothing: only process what was received and queue what rustls wants to send.
    Process,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where a turn of [`TlsStream::drive`] stopped.
#[derive(Debug, PartialEq)]
enum Turn {
    /// The handshake waits for the peer.
    Handshaking,
    /// The connection carries data; an `Encrypt` job queued this many plaintext bytes.
    Open(usize),
    /// Both sides sent close_notify.
    Closed,
}

/// Runs a TLS handshake as the server on `tcp`. On failure the socket is handed back (after the
/// alert, if rustls queued one, was written to it) so that the caller can close it in order.
pub async fn accept(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
) -> Result<TlsStream, (io::Error, TcpStream)> {
    let conn = match UnbufferedServerConnection::new(config) {
        Ok(conn) => conn,
        Err(e) => return Err((tls_error(e), tcp)),
    };
    let mut stream = TlsStream {
        tcp,
        conn,
        received: Vec::new(),
        outgoing: Vec::new(),
        sent: 0,
        plaintext: Vec::new(),
        taken: 0,
        read_closed: false,
        close_queued: false,
        failed: false,
    };
    match stream.handshake().await {
        Ok(()) => Ok(stream),
        Err(e) => Err((e, stream.tcp)),
    }
}

impl TlsStream {
    /// The certificate chain the client presented, leaf first.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    async fn handshake(&mut self) -> io::Result<()> {
        loop {
            let turn = self.drive(Job::Process);
            // What the turn queued goes out first: on failure it is the alert. A TLS failure is
            // the error reported even if its alert could not be written: it says why.
            let sent = std::future::poll_fn(|cx| self.poll_send(cx)).await;
            let turn = turn?;
            sent?;
            match turn {
                Turn::Open(_) if !self.conn.is_handshaking() => return Ok(()),
                Turn::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
                Turn::Open(_) | Turn::Handshaking => {}
            }
            if std::future::poll_fn(|cx| self.poll_receive(cx)).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the handshake",
                ));
            }
        }
    }

    /// Lets rustls process what was received and queue what it wants sent, until it needs more
    /// from the peer or can take application data; then does `job`. An error leaves the alert
    /// rustls queued for it in `outgoing`, and every later turn fails without asking rustls
    /// (which would process the failed input again).
    fn drive(&mut self, job: Job<'_>) -> io::Result<Turn> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS connection has already failed",
            ));
        }
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.received);
            let turn = match state {
                Err(e) => Some(Err(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => loop {
                    match traffic.next_record() {
                        None => break None,
                        Some(Ok(record)) => {
                            discard += record.discard;
                            self.plaintext.extend_from_slice(record.payload);
                        }
                        Some(Err(e)) => break Some(Err(e)),
                    }
                },
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode_into(&mut self.outgoing, HANDSHAKE_RECORD, |out| {
                        data.encode(out).map_err(encode_needs)
                    })
                    .err()
                    .map(Err)
                }
                // Queued in `outgoing`, which is written in order before anything later.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => Some(Ok(Turn::Closed)),
                Ok(ConnectionState::BlockedHandshake) => Some(Ok(Turn::Handshaking)),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let done = match job {
                        Job::Process => Ok(0),
                        Job::Encrypt(data) => {
                            encode_into(&mut self.outgoing, encrypted_len(data.len()), |out| {
                                traffic.encrypt(data, out).map_err(encrypt_needs)
                            })
                            .map(|()| data.len())
                        }
                        Job::CloseNotify => {
                            self.close_queued = true;
                            encode_into(&mut self.outgoing, RECORD_OVERHEAD + 2, |out| {
                                traffic.queue_close_notify(out).map_err(encrypt_needs)
                            })
                            .map(|()| 0)
                        }
                    };
                    Some(done.map(Turn::Open))
                }
                // Early data is never accepted (the config offers none); any other state is
                // not one this stream knows how to handle.
                Ok(other) => Some(Err(rustls::Error::General(format!(
                    "unexpected TLS connection state {other:?}"
                )))),
            };
            self.discard_received(discard);
            match turn {
                None => continue,
                Some(Ok(turn)) => return Ok(turn),
                Some(Err(e)) => {
                    self.failed = true;
                    self.queue_alert();
                    return Err(tls_error(e));
                }
            }
        }
    }

    /// After an error, queues the alert rustls prepared for it, if any.
    ///
    /// Only what rustls already holds is taken: while it has something to send, a turn hands
    /// that out before it looks at received bytes, so the failed input is not processed again.
    fn queue_alert(&mut self) {
        while self.conn.wants_write() {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.received);
            let Ok(ConnectionState::EncodeTlsData(mut data)) = state else {
                return;
            };
            let encoded = encode_into(&mut self.outgoing, HANDSHAKE_RECORD, |out| {
                data.encode(out).map_err(encode_needs)
            });
            self.discard_received(discard);
            if encoded.is_err() {
                return;
            }
        }
    }

    /// Drops the first `n` received bytes, which rustls has consumed; frees the buffer once
    /// empty.
    fn discard_received(&mut self, n: usize) {
        self.received.drain(..n.min(self.received.len()));
        if self.received.is_empty() {
            self.received = Vec::new();
        }
    }

    /// Writes `outgoing` to the socket until all of it is sent; the buffer is freed then.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads from the socket into `received`; `Ok(0)` is the end of the peer's stream. A poll that
    /// finds nothing to read allocates nothing.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let held = self.received.len();
        if held >= MAX_BUFFERED {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS peer sent a message larger than the stream holds",
            )));
        }
        let room = READ_SIZE.min(MAX_BUFFERED - held);
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            let mut chunk = [0u8; READ_SIZE];
            match self.tcp.try_read(&mut chunk[..room]) {
                Ok(n) => {
                    self.received.extend_from_slice(&chunk[..n]);
                    return Poll::Ready(Ok(n));
                }
                // The readiness was stale; it is cleared, so the next poll waits for new data.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Copies decrypted bytes not yet read into `buf`; frees them once all are read.
    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.plaintext.len() - self.taken);
        buf.put_slice(&self.plaintext[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
    }

    /// Sends what is queued without waiting: a socket that is not ready leaves it for the next
    /// write or flush, and has registered `cx` to be woken when it is.
    fn send_eagerly(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_send(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    fn encrypt(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.outgoing.len() - self.sent >= MAX_PENDING {
            ready!(self.poll_send(cx))?;
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        match self.drive(Job::Encrypt(data)) {
            Ok(Turn::Open(n)) => {
                self.send_eagerly(cx)?;
                Poll::Ready(Ok(n))
            }
            Ok(Turn::Handshaking | Turn::Closed) => {
                Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
            }
            Err(e) => {
                self.send_eagerly(cx)?;
                Poll::Ready(Err(e))
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plaintext.len() {
                this.take_plaintext(buf);
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let turn = this.drive(Job::Process);
            // A key update's answer or a ticket may have been queued; an alert after an error.
            this.send_eagerly(cx)?;
            if turn? == Turn::Closed {
                this.read_closed = true;
            }
            if this.taken < this.plaintext.len() || this.read_closed {
                continue;
            }
            if ready!(this.poll_receive(cx))? == 0 {
                this.read_closed = true;
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.get_mut().encrypt(cx, buf)
    }

    /// Slices are joined into one buffer first, so that an HTTP/2 frame's header and payload
    /// travel in one record rather than two.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        match (nonempty.next(), nonempty.next()) {
            (None, _) => Poll::Ready(Ok(0)),
            (Some(only), None) => this.encrypt(cx, only),
            _ => {
                let total: usize = bufs.iter().map(|b| b.len()).sum();
                let mut joined = Vec::with_capacity(total.min(MAX_WRITE));
                for b in bufs {
                    let room = MAX_WRITE - joined.len();
                    joined.extend_from_slice(&b[..b.len().min(room)]);
                    if joined.len() == MAX_WRITE {
                        break;
                    }
                }
                this.encrypt(cx, &joined)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            // A connection that failed or never opened has no close_notify to send.
            let _ = this.drive(Job::CloseNotify);
            this.close_queued = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// The room a plaintext of `len` bytes takes once encrypted in full records.
fn encrypted_len(len: usize) -> usize {
    len + RECORD_OVERHEAD * len.div_ceil(0x4000).max(1)
}

/// Appends what `encode` writes to `out`, starting with `room` bytes and growing to the size
/// `encode` says it needs (`Err(Some(size))`); `Err(None)` is a failure to encode at all.
fn encode_into(
    out: &mut Vec<u8>,
    mut room: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(needed)) if needed > room => room = needed,
            Err(_) => {
                out.truncate(start);
                return Err(rustls::Error::EncryptError);
            }
        }
    }
}

/// The room an encoding that did not fit needs; `None` if it cannot be encoded at all.
fn encode_needs(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        EncodeError::AlreadyEncoded => None,
    }
}

/// The room an encryption that did not fit needs; `None` if the keys are used up.
fn encrypt_needs(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        EncryptError::EncryptExhausted => None,
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests;
