//! A datagram echo server and client over rsockets, written as it would be with
//! `std::net::UdpSocket` (only the type name differs).
//!
//! ```text
//! rs_dgram_ping server 198.18.0.1:7472      # echoes every datagram to its sender
//! rs_dgram_ping client 198.18.0.1:7472      # pings with every size up to the limit
//! ```
//!
//! The client binds the wildcard address, so that the interface comes from the routing
//! table, and sends every size from 1 B to the largest datagram the path takes, then a
//! thousand datagrams of mixed sizes, checking each echo byte for byte. Datagrams may be
//! lost, as UDP's: a ping with no answer within a second is sent again. It then checks
//! that one byte more is refused (EMSGSIZE) and prints `ok`. The server prints
//! `bound to ADDR` once it receives.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use xrdma::rsocket::RsDatagram;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Sends of one ping before the client gives up.
const TRIES: usize = 10;

fn serve(addr: SocketAddr) -> Result<()> {
    let socket = RsDatagram::bind(addr)?;
    println!("bound to {}", socket.local_addr()?);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], from)?;
    }
}

fn pattern(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + salt * 7) as u8).collect()
}

/// Sends `data` to `to` until its echo comes back; stale echoes of earlier pings are
/// skipped.
fn ping(socket: &RsDatagram, to: SocketAddr, data: &[u8]) -> Result<()> {
    let mut buf = vec![0u8; 4096];
    for _ in 0..TRIES {
        socket.send_to(data, to)?;
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from == to && buf[..n] == *data => return Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Err(format!("no echo of {} bytes after {TRIES} tries", data.len()).into())
}

fn client(server: SocketAddr) -> Result<()> {
    let any: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = RsDatagram::bind(SocketAddr::new(any, 0))?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let max = socket.max_payload_to(server)?;
    let start = Instant::now();
    for size in 1..=max {
        ping(&socket, server, &pattern(size, size))?;
    }
    println!(
        "every size from 1 to {max} bytes echoed in {:?}",
        start.elapsed()
    );
    let start = Instant::now();
    for i in 0..1000 {
        let size = 1 + (i * 389) % max;
        ping(&socket, server, &pattern(size, i))?;
    }
    println!("1000 mixed datagrams echoed in {:?}", start.elapsed());
    match socket.send_to(&vec![0u8; max + 1], server) {
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {}
        other => return Err(format!("{} bytes: {other:?}, not EMSGSIZE", max + 1).into()),
    }
    println!("ok");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [mode, addr] if mode == "server" => serve(addr.parse()?),
        [mode, addr] if mode == "client" => client(addr.parse()?),
        _ => Err("usage: rs_dgram_ping server ADDR:PORT | rs_dgram_ping client ADDR:PORT".into()),
    }
}
