//! What the stream tests on the simulated network share: its hosts, and a connected pair.
#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use xrdma_rsocket::{Builder, RsListener, RsStream};
use xrdma_verbs::cm::add_device;
use xrdma_verbs::net::sim::{self, SimConfig, SimNetwork};
use xrdma_verbs::verbs::{Context, ContextConfig};

/// The test binary's network, with hosts 198.18.0.1, .2 and .3 (which one test takes down),
/// each a context the connection manager knows.
pub fn net() -> &'static SimNetwork {
    static NET: OnceLock<(SimNetwork, [Context; 3])> = OnceLock::new();
    &NET.get_or_init(|| {
        let net = SimNetwork::new(SimConfig {
            delay: Duration::ZERO,
            ..SimConfig::default()
        });
        let open = |n: u8| {
            let io = net.endpoint(sim::host_addr(n)).unwrap();
            let ctx = Context::new(Box::new(io), ContextConfig::seeded(u64::from(n))).unwrap();
            add_device(&ctx).unwrap();
            ctx
        };
        let hosts = [open(1), open(2), open(3)];
        // Virtual time follows real time, for the CM's and RC's timers.
        let clock = net.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(1));
                clock.advance(Duration::from_millis(1));
            }
        });
        (net, hosts)
    })
    .0
}

/// Hosts 1 and 2, the network made.
pub fn hosts() -> (SocketAddr, SocketAddr) {
    net();
    (sim::host_addr(1), sim::host_addr(2))
}

/// `host`'s address at `port`.
pub fn at(host: SocketAddr, port: u16) -> SocketAddr {
    SocketAddr::new(host.ip(), port)
}

/// A client on host 1 connected to a listener on host 2 at `port`.
pub fn pair(port: u16) -> (RsStream, RsStream, RsListener) {
    let (a, b) = hosts();
    let listener = RsListener::bind(at(b, port)).unwrap();
    let client = Builder::new().bind(at(a, 0)).connect(at(b, port)).unwrap();
    let (server, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), a.ip());
    (client, server, listener)
}

/// `len` bytes of a pattern that differs from one byte to the next.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The events `fd` shows within `ms` milliseconds (`poll(2)` on it alone).
pub fn poll(fd: i32, events: i16, ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
    p.revents
}
