//! `rs_echo` on tokio: a stream echo server and client over rsockets, written as it would
//! be with `tokio::net` (only the type names differ). Built with `--features tokio`.
//!
//! ```text
//! rs_tokio_echo server 198.18.0.1:7471            # echoes every connection until it ends
//! rs_tokio_echo client 198.18.0.1:7471 [MAX]      # sends 1 B, 4 B, ... up to MAX (1 MiB)
//! ```
//!
//! The server serves every connection in a task of its own; the client writes and reads
//! each size at once, checks the echo byte for byte and prints one line per size. The
//! interface and backend come from the routing table and `XRDMA_BACKEND` (see
//! `xrdma::rsocket`).

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xrdma::rsocket::tokio::{RsListener, RsStream};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = RsListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (mut s, peer) = listener.accept().await?;
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            if let Err(e) = tokio::io::copy(&mut r, &mut w).await {
                eprintln!("rs_tokio_echo: {peer}: {e}");
            }
            let _ = w.shutdown().await;
        });
    }
}

fn pattern(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + salt) as u8).collect()
}

async fn client(addr: SocketAddr, max: usize) -> Result<()> {
    let (mut r, mut w) = RsStream::connect(addr).await?.into_split();
    let mut size = 1;
    while size <= max {
        let data = pattern(size, size);
        let mut got = vec![0u8; size];
        let start = Instant::now();
        let (wrote, read) = tokio::join!(w.write_all(&data), r.read_exact(&mut got));
        wrote?;
        read?;
        if got != data {
            return Err(format!("the echo of {size} bytes differs").into());
        }
        println!("{size} bytes echoed in {:?}", start.elapsed());
        size *= 4;
    }
    w.shutdown().await?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await?;
    if !rest.is_empty() {
        return Err("bytes after the end".into());
    }
    println!("ok");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [mode, addr, rest @ ..] if mode == "server" && rest.is_empty() => {
            serve(addr.parse()?).await
        }
        [mode, addr, rest @ ..] if mode == "client" && rest.len() <= 1 => {
            let max = rest.first().map_or(Ok(1 << 20), |m| m.parse())?;
            client(addr.parse()?, max).await
        }
        _ => Err(
            "usage: rs_tokio_echo server ADDR:PORT | rs_tokio_echo client ADDR:PORT [MAX]".into(),
        ),
    }
}
