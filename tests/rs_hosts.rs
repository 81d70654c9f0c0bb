//! Stream rsockets between two namespaced hosts, over `xdp` and over `udp`: the
//! `rs_echo` example's client checks the echo of every size from 1 B to 1 MiB.
//!
//! Needs root (namespaces, AF_XDP); fails saying so without it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use xrdma_testnet::{Host, Topology, built, wait_or_kill};

const PORT: u16 = 7471;
const WAIT: Duration = Duration::from_secs(120);

fn example() -> std::path::PathBuf {
    built("examples/rs_echo")
}

/// `rs_echo server` on `host`, once it listens.
fn server(host: &Host, backend: &str) -> Child {
    let mut child = host
        .ns()
        .command(example())
        .args(["server", &format!("{}:{PORT}", host.ipv4())])
        .env("XRDMA_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting rs_echo server (cargo builds it with the tests)");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening"),
        "rs_echo server said {line:?}"
    );
    child
}

fn echo(backend: &str) {
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
    let out = wait_or_kill(client, WAIT, "rs_echo client");
    let _ = srv.kill();
    let _ = srv.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{backend}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1048576 bytes echoed"), "{stdout}");
}

#[test]
fn echo_of_every_size_over_xdp() {
    echo("xdp");
}

#[test]
fn echo_of_every_size_over_udp() {
    echo("udp");
}
