//! Datagram rsockets between two namespaced hosts, over `xdp` and over `udp`: the
//! `rs_dgram_ping` example's client pings the server with every size up to the limit the
//! path sets (1016 bytes behind a 1500-byte MTU), from a wildcard address.
//!
//! Needs root (namespaces, AF_XDP); fails saying so without it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use xrdma_testnet::{Host, Topology, built, wait_or_kill};

const PORT: u16 = 7472;
const WAIT: Duration = Duration::from_secs(120);

fn example() -> std::path::PathBuf {
    built("examples/rs_dgram_ping")
}

/// `rs_dgram_ping server` on `host`, once it is bound.
fn server(host: &Host, backend: &str) -> Child {
    let mut child = host
        .ns()
        .command(example())
        .args(["server", &format!("{}:{PORT}", host.ipv4())])
        .env("XRDMA_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting rs_dgram_ping server (cargo builds it with the tests)");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("bound to"),
        "rs_dgram_ping server said {line:?}"
    );
    child
}

fn ping(backend: &str) {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let mut srv = server(t.b(), backend);
    let client = t
        .a()
        .ns()
        .command(example())
        .args(["client", &format!("{}:{PORT}", t.b().ipv4())])
        .env("XRDMA_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_or_kill(client, WAIT, "rs_dgram_ping client");
    let _ = srv.kill();
    let _ = srv.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{backend}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("from 1 to 1016 bytes echoed"), "{stdout}");
}

#[test]
fn ping_of_every_size_over_xdp() {
    ping("xdp");
}

#[test]
fn ping_of_every_size_over_udp() {
    ping("udp");
}
