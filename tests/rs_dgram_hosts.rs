//! Datagram rsockets between two namespaced hosts, over `xdp` and over `udp`: the
//! `rs_dgram_ping` example's client pings the server with every size up to the limit the
//! path sets (1016 bytes behind a 1500-byte MTU), from a wildcard address.
//!
//! Needs root (namespaces, AF_XDP); fails saying so without it.

mod common;

use std::time::Duration;

fn ping(backend: &str) {
    let out = common::example_between_hosts(
        "rs_dgram_ping",
        7472,
        backend,
        "bound to",
        Duration::from_secs(120),
    );
    assert!(out.contains("from 1 to 1016 bytes echoed"), "{out}");
}

#[test]
fn ping_of_every_size_over_xdp() {
    ping("xdp");
}

#[test]
fn ping_of_every_size_over_udp() {
    ping("udp");
}
