//! A stream rsocket carries 1 GiB intact between two hosts joined by a switch that drops 5 %
//! of RoCEv2 packets at random (both ways), over `xdp` and over `udp`: the receiver's
//! CRC-32 of the stream is the sender's.
//!
//! Both hosts' sockets live in one process, each test in a child process of its own (the
//! backend is set once per process). Needs root (namespaces, AF_XDP, nftables).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use xrdma_rsocket::{Backend, Builder, Settings, configure};
use xrdma_testnet::{Loss, Topology};

mod common;

use common::{alone, connect, listen, open_devices};

const GIB: usize = 1 << 30;
/// Each write, and the receiver's reads.
const CHUNK: usize = 1 << 20;
const PORT: u16 = 7473;
/// A hung child is killed after this: far beyond what the transfer needs.
const DEADLINE: Duration = Duration::from_secs(600);

/// Pseudo-random bytes, `CHUNK` of them plus a window the chunks start at different places
/// in, so that no two neighbouring chunks are the same and a chunk lost, repeated or out of
/// order changes the checksum.
fn pattern() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; CHUNK + 4096];
    for word in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    buf
}

/// Chunk `i` of the stream.
fn chunk(pattern: &[u8], i: usize) -> &[u8] {
    let start = (i * 61) % 4096;
    &pattern[start..start + CHUNK]
}

fn a_gib_through_loss(backend: Backend) {
    configure(Settings {
        backend: Some(backend),
        ..Settings::default()
    })
    .unwrap();
    let t = Topology::switched(2, Loss::udp_port(0.05, 4791))
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    open_devices(t.hosts());
    let builder = Builder::new();
    let listener = listen(t.b(), PORT, &builder);
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0usize;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return (total, crc.finalize()),
                n => {
                    crc.update(&buf[..n]);
                    total += n;
                }
            }
        }
    });
    let to = SocketAddr::new(t.b().ipv4().into(), PORT);
    let mut s = connect(t.a(), to, &builder);
    let pattern = pattern();
    let mut crc = crc32fast::Hasher::new();
    let started = Instant::now();
    for i in 0..GIB / CHUNK {
        let c = chunk(&pattern, i);
        crc.update(c);
        s.write_all(c).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let (got, got_crc) = receiver.join().unwrap();
    let elapsed = started.elapsed();
    let sent_crc = crc.finalize();
    let dropped = t.drop_counter().unwrap();
    println!(
        "{backend:?}: 1 GiB in {elapsed:.2?} ({:.2} Gb/s); the switch dropped {dropped} packets",
        8.0 * GIB as f64 / 1e9 / elapsed.as_secs_f64()
    );
    assert_eq!(got, GIB, "bytes received");
    assert_eq!(
        got_crc, sent_crc,
        "CRC-32 received {got_crc:08x}, sent {sent_crc:08x}"
    );
    assert!(
        dropped > 0,
        "the switch dropped nothing: the test tested no loss"
    );
}

#[test]
fn a_gib_arrives_intact_through_5_percent_loss_over_xdp() {
    alone(
        "a_gib_arrives_intact_through_5_percent_loss_over_xdp",
        DEADLINE,
        || a_gib_through_loss(Backend::Xdp),
    );
}

#[test]
fn a_gib_arrives_intact_through_5_percent_loss_over_udp() {
    alone(
        "a_gib_arrives_intact_through_5_percent_loss_over_udp",
        DEADLINE,
        || a_gib_through_loss(Backend::Udp),
    );
}
