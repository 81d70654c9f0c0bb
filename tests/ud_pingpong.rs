//! examples/ud_pingpong between two namespaced hosts, as a user runs rdma-core's
//! ibv_ud_pingpong: xdp on both ends, xdp against udp, with and without completion events.

use std::path::PathBuf;
use std::process::Stdio;

use xrdma_testnet::Topology;

/// The example binary, built by `cargo test` next to this test's own binary.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = target.join("examples").join("ud_pingpong");
    assert!(
        path.exists(),
        "{} missing: cargo test builds the examples",
        path.display()
    );
    path
}

fn run(t: &Topology, server_backend: &str, client_backend: &str, extra: &[&str], port: u16) {
    let (a, b) = (t.a(), t.b());
    let port = port.to_string();
    let server = a
        .ns()
        .command(example())
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
        .command(example())
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
        let size: usize = extra
            .iter()
            .position(|a| *a == "-s")
            .map_or(1024, |i| extra[i + 1].parse().unwrap());
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
    run(&t, "xdp", "xdp", &[], 18601);
    run(&t, "xdp", "xdp", &["-e"], 18602);
    run(&t, "udp", "xdp", &["-e"], 18603);
    run(&t, "xdp", "udp", &["-s", "64"], 18604);
}
