//! A minimal SMTP client (RFC 5321, no TLS, no authentication): one message per connection,
//! to a relay that accepts mail from this host, as keepalived sends its alerts.
//!
//! Guarantees: every step (name resolution, connect, each reply) is bounded by the configured
//! timeout, so a send ends within a bounded time; a reply is read to at most [`MAX_REPLY`] bytes;
//! the message is sent with CRLF line ends and dot-stuffed (RFC 5321 section 4.5.2), so no line
//! of a body can end the DATA early. Errors say at which step the exchange failed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hav_proto::config::{MailAddress, SmtpHost, SmtpServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The longest reply accepted (a multi-line EHLO answer is a few hundred bytes).
pub const MAX_REPLY: usize = 16 * 1024;

/// One message for [`send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The name given in EHLO (a host name, already checked).
    pub helo: &'a str,
    pub from: &'a MailAddress,
    pub to: &'a [MailAddress],
    /// Headers and body, lines separated by `\n` or `\r\n`.
    pub message: &'a str,
}

/// The step an exchange failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Resolve,
    Connect,
    Greeting,
    Ehlo,
    MailFrom,
    RcptTo,
    Data,
    Message,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Resolve => "resolving the server",
            Step::Connect => "connecting",
            Step::Greeting => "the greeting",
            Step::Ehlo => "EHLO/HELO",
            Step::MailFrom => "MAIL FROM",
            Step::RcptTo => "RCPT TO",
            Step::Data => "DATA",
            Step::Message => "the message",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpError {
    #[error("{server}: timed out at {step} after {timeout:?}")]
    Timeout {
        server: String,
        step: Step,
        timeout: Duration,
    },
    #[error("{server}: {step}: {source}")]
    Io {
        server: String,
        step: Step,
        #[source]
        source: io::Error,
    },
    #[error("{server}: {step} refused: {code} {text}")]
    Refused {
        server: String,
        step: Step,
        code: u16,
        text: String,
    },
    #[error("{server}: {step}: malformed reply {reply:?}")]
    Malformed {
        server: String,
        step: Step,
        reply: String,
    },
    #[error("{server}: resolves to no address")]
    NoAddress { server: String },
}

/// A reply: its code and the text of its last line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: u16,
    text: String,
}

/// Sends one message through `server`; each step bounded by `timeout`.
pub async fn send(
    server: &SmtpServer,
    timeout: Duration,
    envelope: &Envelope<'_>,
) -> Result<(), SmtpError> {
    let name = server.to_string();
    let mut session = Session {
        server: name.clone(),
        timeout,
        stream: None,
    };
    let addresses: Vec<SocketAddr> = match &server.host {
        SmtpHost::Address(address) => vec![SocketAddr::new(*address, server.port)],
        SmtpHost::Name(host) => session
            .bounded(
                Step::Resolve,
                tokio::net::lookup_host((host.as_str(), server.port)),
            )
            .await?
            .collect(),
    };
    let mut last_error = SmtpError::NoAddress { server: name };
    let mut connected = None;
    for address in addresses {
        match session
            .bounded(Step::Connect, TcpStream::connect(address))
            .await
        {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(error) => last_error = error,
        }
    }
    let Some(stream) = connected else {
        return Err(last_error);
    };
    session.stream = Some(BufReader::new(stream));
    session.exchange(envelope).await
}

struct Session {
    server: String,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
}

impl Session {
    async fn exchange(&mut self, envelope: &Envelope<'_>) -> Result<(), SmtpError> {
        self.expect(Step::Greeting, &[220]).await?;
        self.command(Step::Ehlo, &format!("EHLO {}", envelope.helo))
            .await?;
        if let Err(error) = self.expect(Step::Ehlo, &[250]).await {
            // A server that knows only RFC 821 refuses EHLO; HELO is its greeting.
            if !matches!(
                error,
                SmtpError::Refused {
                    code: 500..=504,
                    ..
                }
            ) {
                return Err(error);
            }
            self.command(Step::Ehlo, &format!("HELO {}", envelope.helo))
                .await?;
            self.expect(Step::Ehlo, &[250]).await?;
        }
        self.command(Step::MailFrom, &format!("MAIL FROM:<{}>", envelope.from))
            .await?;
        self.expect(Step::MailFrom, &[250]).await?;
        for recipient in envelope.to {
            self.command(Step::RcptTo, &format!("RCPT TO:<{recipient}>"))
                .await?;
            self.expect(Step::RcptTo, &[250, 251]).await?;
        }
        self.command(Step::Data, "DATA").await?;
        self.expect(Step::Data, &[354]).await?;
        self.write(Step::Message, data_block(envelope.message).as_bytes())
            .await?;
        self.expect(Step::Message, &[250]).await?;
        // The message is accepted; how QUIT goes changes nothing.
        if self.command(Step::Message, "QUIT").await.is_ok() {
            let _ = self.expect(Step::Message, &[221]).await;
        }
        Ok(())
    }

    async fn bounded<T>(
        &self,
        step: Step,
        future: impl Future<Output = io::Result<T>>,
    ) -> Result<T, SmtpError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(SmtpError::Io {
                server: self.server.clone(),
                step,
                source,
            }),
            Err(_) => Err(SmtpError::Timeout {
                server: self.server.clone(),
                step,
                timeout: self.timeout,
            }),
        }
    }

    async fn command(&mut self, step: Step, line: &str) -> Result<(), SmtpError> {
        self.write(step, format!("{line}\r\n").as_bytes()).await
    }

    async fn write(&mut self, step: Step, bytes: &[u8]) -> Result<(), SmtpError> {
        let timeout = self.timeout;
        let server = self.server.clone();
        let Some(stream) = self.stream.as_mut() else {
            return Err(not_connected(server, step));
        };
        match tokio::time::timeout(timeout, async {
            stream.get_mut().write_all(bytes).await?;
            stream.get_mut().flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(SmtpError::Io {
                server,
                step,
                source,
            }),
            Err(_) => Err(SmtpError::Timeout {
                server,
                step,
                timeout,
            }),
        }
    }

    /// Reads one reply (all its lines) and checks its code.
    async fn expect(&mut self, step: Step, accepted: &[u16]) -> Result<(), SmtpError> {
        let timeout = self.timeout;
        let server = self.server.clone();
        let Some(stream) = self.stream.as_mut() else {
            return Err(not_connected(server, step));
        };
        let reply = match tokio::time::timeout(timeout, read_reply(stream)).await {
            Ok(Ok(Ok(reply))) => reply,
            Ok(Ok(Err(reply))) => {
                return Err(SmtpError::Malformed {
                    server,
                    step,
                    reply,
                });
            }
            Ok(Err(source)) => {
                return Err(SmtpError::Io {
                    server,
                    step,
                    source,
                });
            }
            Err(_) => {
                return Err(SmtpError::Timeout {
                    server,
                    step,
                    timeout,
                });
            }
        };
        if accepted.contains(&reply.code) {
            Ok(())
        } else {
            Err(SmtpError::Refused {
                server,
                step,
                code: reply.code,
                text: reply.text,
            })
        }
    }
}

fn not_connected(server: String, step: Step) -> SmtpError {
    SmtpError::Io {
        server,
        step,
        source: io::Error::from(io::ErrorKind::NotConnected),
    }
}

/// Reads the lines of one reply: `DDD-text` continues, `DDD text` (or `DDD`) ends it. The inner
/// `Err` is a malformed reply, as received.
async fn read_reply(stream: &mut BufReader<TcpStream>) -> io::Result<Result<Reply, String>> {
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let read = (&mut *stream)
            .take((MAX_REPLY - total) as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        total += read;
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        if total > MAX_REPLY {
            return Ok(Err(format!("{}…", &line[..line.len().min(80)])));
        }
        let code = line
            .get(..3)
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u16>().ok());
        let Some(code) = code else {
            return Ok(Err(line.to_owned()));
        };
        match line.as_bytes().get(3) {
            Some(b'-') => continue,
            None | Some(b' ') => {
                return Ok(Ok(Reply {
                    code,
                    text: line.get(4..).unwrap_or_default().to_owned(),
                }));
            }
            Some(_) => return Ok(Err(line.to_owned())),
        }
    }
}

/// The message as DATA sends it: CRLF line ends, a leading dot doubled, ended by `.` alone.
pub fn data_block(message: &str) -> String {
    let mut block = String::with_capacity(message.len() + 16);
    for line in message.lines() {
        if line.starts_with('.') {
            block.push('.');
        }
        block.push_str(line);
        block.push_str("\r\n");
    }
    block.push_str(".\r\n");
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn data_is_dot_stuffed_with_crlf() {
        assert_eq!(
            data_block("Subject: x\n\n.hidden\nline\r\n"),
            "Subject: x\r\n\r\n..hidden\r\nline\r\n.\r\n"
        );
    }

    /// A scripted server on loopback: answers each command with the next canned reply and
    /// returns what it received.
    async fn scripted(
        replies: &'static [&'static str],
    ) -> (SmtpServer, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut received = Vec::new();
            for reply in replies {
                socket.write_all(reply.as_bytes()).await.expect("reply");
                let mut buffer = [0u8; 4096];
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => received.extend_from_slice(&buffer[..read]),
                }
            }
            String::from_utf8_lossy(&received).into_owned()
        });
        let server = SmtpServer {
            host: SmtpHost::Address("127.0.0.1".parse().expect("address")),
            port,
        };
        (server, task)
    }

    fn addresses() -> (MailAddress, Vec<MailAddress>) {
        (
            MailAddress::new("hav@example.net").expect("valid"),
            vec![MailAddress::new("ops@example.net").expect("valid")],
        )
    }

    #[tokio::test]
    async fn a_server_refusing_the_recipient_fails_at_rcpt_to() {
        let (server, received) = scripted(&[
            "220 mx ESMTP\r\n",
            "250-mx\r\n250 8BITMIME\r\n",
            "250 ok\r\n",
            "550 no such user\r\n",
        ])
        .await;
        let (from, to) = addresses();
        let envelope = Envelope {
            helo: "lb1.example.net",
            from: &from,
            to: &to,
            message: "Subject: x\n\nbody\n",
        };
        let error = send(&server, Duration::from_secs(5), &envelope)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                error,
                SmtpError::Refused {
                    step: Step::RcptTo,
                    code: 550,
                    ..
                }
            ),
            "{error}"
        );
        let received = received.await.expect("server");
        assert!(received.starts_with("EHLO lb1.example.net\r\nMAIL FROM:<hav@example.net>\r\nRCPT TO:<ops@example.net>\r\n"), "{received:?}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_at_the_greeting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = SmtpServer {
            host: SmtpHost::Address("127.0.0.1".parse().expect("address")),
            port,
        };
        let (from, to) = addresses();
        let envelope = Envelope {
            helo: "lb1",
            from: &from,
            to: &to,
            message: "x",
        };
        let error = send(&server, Duration::from_millis(200), &envelope)
            .await
            .expect_err("silent");
        assert!(
            matches!(
                error,
                SmtpError::Timeout {
                    step: Step::Greeting,
                    ..
                }
            ),
            "{error}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn nothing_listening_fails_at_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let server = SmtpServer {
            host: SmtpHost::Address("127.0.0.1".parse().expect("address")),
            port,
        };
        let (from, to) = addresses();
        let envelope = Envelope {
            helo: "lb1",
            from: &from,
            to: &to,
            message: "x",
        };
        let error = send(&server, Duration::from_secs(2), &envelope)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                error,
                SmtpError::Io {
                    step: Step::Connect,
                    ..
                }
            ),
            "{error}"
        );
    }
}
