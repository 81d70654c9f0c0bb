//! Stream rsockets between two namespaced hosts, over `xdp` and over `udp`: the
//! `rs_echo` example's client checks the echo of every size from 1 B to 1 MiB.
//!
//! Needs root (namespaces, AF_XDP); fails saying so without it.

mod common;

use std::time::Duration;

fn echo(backend: &str) {
    let out = common::example_between_hosts(
        "rs_echo",
        7471,
        backend,
        "listening",
        Duration::from_secs(120),
    );
    assert!(out.contains("1048576 bytes echoed"), "{out}");
}

#[test]
fn echo_of_every_size_over_xdp() {
    echo("xdp");
}

#[test]
fn echo_of_every_size_over_udp() {
    echo("udp");
}
