//! Tiny HTTP/1.1 backend for failover tests: answers every request with `200` and the body
//! `<node-name>\n`, then closes the connection, so a client can tell which node answered.
//!
//! Binds `--listen` (default 0.0.0.0:8080, so it answers on any VIP the node holds), and with
//! `--udp` answers each datagram with `<node-name>\n` too (a load-balanced UDP real server). If
//! `HAV_READY_FD` is set, writes `ready <addr>\n` to that fd once listening, then closes it.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
struct Args {
    /// Name returned in every reply body.
    #[arg(long)]
    node: String,
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Also answer every UDP datagram on this address with `<node-name>\n`.
    #[arg(long)]
    udp: Option<SocketAddr>,
    /// Also run a TCP echo service here: each connection is greeted with `<node-name>\n`, then
    /// every byte it sends is sent back (long-lived connections for hand-over tests).
    #[arg(long)]
    echo: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    if let Some(udp) = args.udp {
        let socket = tokio::net::UdpSocket::bind(udp)
            .await
            .with_context(|| format!("bind udp {udp}"))?;
        let name = format!("{}\n", args.node);
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((_, peer)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(name.as_bytes(), peer).await;
            }
        });
    }
    if let Some(echo) = args.echo {
        let echo_listener = TcpListener::bind(echo)
            .await
            .with_context(|| format!("bind echo {echo}"))?;
        let greeting = format!("{}\n", args.node);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = echo_listener.accept().await else {
                    continue;
                };
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    let _ = echo_stream(stream, greeting.as_bytes()).await;
                });
            }
        });
    }
    report_ready(listener.local_addr()?)?;
    let reply: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}\n",
            args.node.len() + 1,
            args.node
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of fds or a connection aborted before accept: keep serving.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, reply)).await;
        });
    }
}

/// Greets, then sends back every byte until the peer closes.
async fn echo_stream(mut stream: TcpStream, greeting: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(greeting).await?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// Reads until the end of the request head, then writes the reply.
async fn answer(mut stream: TcpStream, reply: &[u8]) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    stream.write_all(reply).await?;
    stream.shutdown().await
}

fn report_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let Ok(fd) = std::env::var("HAV_READY_FD") else {
        return Ok(());
    };
    let fd: i32 = fd.parse().context("HAV_READY_FD is not a number")?;
    // SAFETY: the spawner passes us this fd open for writing and nothing else in this process
    // uses it; we take ownership and close it after one line.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    writeln!(pipe, "ready {addr}").context("write readiness")?;
    Ok(())
}
