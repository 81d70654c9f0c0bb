//! examples/ud_pingpong and examples/rc_pingpong between two namespaced hosts, as a user
//! runs rdma-core's ibv_ud_pingpong and ibv_rc_pingpong: xdp on both ends, xdp against udp,
//! with and without completion events.

use std::process::Stdio;

use xrdma_testnet::{Topology, built};

/// Runs example `name` as server on host A and client on host B; checks both print
/// rdma-core's address and result lines.
fn run(name: &str, t: &Topology, backends: (&str, &str), extra: &[&str], port: u16) {
    let (server_backend, client_backend) = backends;
    let (a, b) = (t.a(), t.b());
    let port = port.to_string();
    let server = a
        .ns()
        .command(built(&format!("examples/{name}")))
        .args([
            "-d",
            a.iface(),
            "--backend",
            server_backend,
            "-p",
            &port,
            "-n",
            "500",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = b
        .ns()
        .command(built(&format!("examples/{name}")))
        .args([
            "-d",
            b.iface(),
            "--backend",
            client_backend,
            "-p",
            &port,
            "-n",
            "500",
        ])
        .args(extra)
        .arg(a.ipv4().to_string())
        .output()
        .unwrap();
    let server = server.wait_with_output().unwrap();
    for (who, out) in [("server", &server), ("client", &client)] {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{who} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("  local address:  LID 0x0000, QPN 0x"),
            "{who}: {text}"
        );
        assert!(
            lines[1].starts_with("  remote address: LID 0x0000, QPN 0x"),
            "{who}: {text}"
        );
        let default_size = if name == "rc_pingpong" { 4096 } else { 1024 };
        let size: usize = extra
            .iter()
            .position(|a| *a == "-s")
            .map_or(default_size, |i| extra[i + 1].parse().unwrap());
        let bytes = format!("{} bytes in ", size * 500 * 2);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&bytes) && l.ends_with(" Mbit/sec")),
            "{who}: {text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("500 iters in ") && l.ends_with(" usec/iter")),
            "{who}: {text}"
        );
    }
}

#[test]
fn ud_pingpong_runs_between_two_hosts() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    run("ud_pingpong", &t, ("xdp", "xdp"), &[], 18601);
    run("ud_pingpong", &t, ("xdp", "xdp"), &["-e"], 18602);
    run("ud_pingpong", &t, ("udp", "xdp"), &["-e"], 18603);
    run("ud_pingpong", &t, ("xdp", "udp"), &["-s", "64"], 18604);
}

#[test]
fn rc_pingpong_runs_between_two_hosts() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    run("rc_pingpong", &t, ("xdp", "xdp"), &[], 18605);
    run(
        "rc_pingpong",
        &t,
        ("xdp", "xdp"),
        &["-e", "-s", "65536"],
        18606,
    );
    run("rc_pingpong", &t, ("udp", "xdp"), &["-e"], 18607);
    run(
        "rc_pingpong",
        &t,
        ("xdp", "udp"),
        &["-s", "1", "-m", "256"],
        18608,
    );
}
