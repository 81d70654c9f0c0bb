//! A stream echo server and client over rsockets, written as it would be with
//! `std::net` (only the type names differ).
//!
//! ```text
//! rs_echo server 198.18.0.1:7471            # echoes every connection until it ends
//! rs_echo client 198.18.0.1:7471 [MAX]      # sends 1 B, 4 B, ... up to MAX (1 MiB)
//! ```
//!
//! The client checks every echo byte for byte and prints one line per size; the server
//! prints `listening` once it accepts connections. The interface and backend come from the
//! routing table and `XRDMA_BACKEND` (see `xrdma::rsocket`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use xrdma::rsocket::{RsListener, RsStream};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn serve(addr: SocketAddr) -> Result<()> {
    let listener = RsListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let mut s = stream?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if let Err(e) = s.write_all(&buf[..n]) {
                            eprintln!("rs_echo: write: {e}");
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("rs_echo: read: {e}");
                        return;
                    }
                }
            }
        });
    }
    Ok(())
}

fn pattern(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + salt) as u8).collect()
}

fn client(addr: SocketAddr, max: usize) -> Result<()> {
    let stream = RsStream::connect(addr)?;
    let mut size = 1;
    while size <= max {
        let data = pattern(size, size);
        let start = Instant::now();
        let reader = stream.try_clone()?;
        let expect = data.clone();
        let check = std::thread::spawn(move || -> std::io::Result<bool> {
            let mut got = vec![0u8; expect.len()];
            (&reader).read_exact(&mut got)?;
            Ok(got == expect)
        });
        (&stream).write_all(&data)?;
        if !check.join().map_err(|_| "the reader panicked")?? {
            return Err(format!("the echo of {size} bytes differs").into());
        }
        println!("{size} bytes echoed in {:?}", start.elapsed());
        size *= 4;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    (&stream).read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err("bytes after the end".into());
    }
    println!("ok");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [mode, addr, rest @ ..] if mode == "server" && rest.is_empty() => serve(addr.parse()?),
        [mode, addr, rest @ ..] if mode == "client" && rest.len() <= 1 => {
            let max = rest.first().map_or(Ok(1 << 20), |m| m.parse())?;
            client(addr.parse()?, max)
        }
        _ => Err("usage: rs_echo server ADDR:PORT | rs_echo client ADDR:PORT [MAX]".into()),
    }
}
