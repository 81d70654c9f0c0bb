//! `xrdma perf` as a user runs it: the built binary, a server and a client, between two
//! namespaced hosts over `xdp`, and over loopback with `udp`: every test, raw, UD and RC.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use xrdma_testnet::Topology;

const XRDMA: &str = env!("CARGO_BIN_EXE_xrdma");

/// A JSON number field of the last output line.
fn field(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} missing from {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// Runs `server` in the background and `client` to completion, both `xrdma perf` commands
/// with their arguments so far; checks both succeeded and returns the client's JSON line,
/// after checking it as a `test` run of `iters` messages of the default size.
fn run_pair(server: Command, client: Command, test: &str, iters: u64) -> String {
    let size = if test == "rc-atomic-lat" { 8 } else { 64 };
    run_pair_sized(server, client, test, iters, size)
}

/// [`run_pair`] for messages of `size` bytes, which only the client was told.
fn run_pair_sized(
    mut server: Command,
    mut client: Command,
    test: &str,
    iters: u64,
    size: u64,
) -> String {
    let server = server
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = client
        .args(["--iters", &iters.to_string(), "--json"])
        .output()
        .unwrap();
    let json = finish(server, client);
    assert_eq!(field(&json, "size") as u64, size, "{json}");
    if test.ends_with("-lat") {
        check_lat(&json, iters)
    } else {
        check_bw(&json, iters)
    }
    json
}

fn finish(server: Child, client: Output) -> String {
    let server = server.wait_with_output().unwrap();
    // Either side's failure can be the cause of the other's, so show both.
    assert!(
        server.status.success() && client.status.success(),
        "server {}: {}\nclient {}: {}",
        server.status,
        String::from_utf8_lossy(&server.stderr),
        client.status,
        String::from_utf8_lossy(&client.stderr)
    );
    let stdout = String::from_utf8(client.stdout).unwrap();
    let last = stdout.lines().last().unwrap().to_string();
    assert!(
        last.starts_with('{') && last.ends_with('}'),
        "last line is not JSON: {stdout}"
    );
    last
}

/// The tests, and how many messages each runs.
const TESTS: [(&str, u64); 16] = [
    ("raw-lat", 2000),
    ("raw-bw", 100_000),
    ("ud-lat", 2000),
    ("ud-bw", 100_000),
    ("rc-send-lat", 2000),
    ("rc-send-bw", 20_000),
    ("rc-write-lat", 2000),
    ("rc-write-bw", 20_000),
    ("rc-read-lat", 2000),
    ("rc-read-bw", 20_000),
    ("rc-atomic-lat", 2000),
    ("rs-lat", 2000),
    ("rs-bw", 20_000),
    ("rs-dgram-lat", 2000),
    ("tcp-lat", 2000),
    ("tcp-bw", 20_000),
];

fn check_lat(json: &str, iters: u64) {
    assert_eq!(field(json, "iters") as u64, iters, "{json}");
    let (p50, p99) = (field(json, "lat_us_p50"), field(json, "lat_us_p99"));
    assert!(p50 > 0.0 && p50 <= p99, "{json}");
    assert!(field(json, "msg_rate") > 0.0, "{json}");
}

fn check_bw(json: &str, iters: u64) {
    let received = field(json, "iters") as u64;
    assert_eq!(field(json, "sent") as u64, iters, "{json}");
    if ["\"rc-", "\"rs-", "\"tcp-"]
        .iter()
        .any(|t| json.contains(t))
    {
        // RC and the streams over it (and TCP) are reliable: every message arrives.
        assert_eq!(received, iters, "{json}");
    } else {
        // Raw frames and UD are unreliable; the receiver counts what arrived, never more
        // than sent.
        assert!(received > 0 && received <= iters, "{json}");
    }
    assert!(
        field(json, "msg_rate") > 0.0 && field(json, "gbps") > 0.0,
        "{json}"
    );
}

#[test]
fn perf_tests_run_between_two_hosts_over_xdp() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    for (test, iters) in TESTS {
        let mut server = a.ns().command(XRDMA);
        server.args([
            "perf",
            test,
            "--server",
            "--backend",
            "xdp",
            "--iface",
            a.iface(),
            "--timeout",
            "20",
        ]);
        let mut client = b.ns().command(XRDMA);
        client.args([
            "perf",
            test,
            "--connect",
            &a.ipv4().to_string(),
            "--backend",
            "xdp",
        ]);
        client.args(["--iface", b.iface(), "--timeout", "20"]);
        let json = run_pair(server, client, test, iters);
        let backend = if test.starts_with("tcp-") {
            "kernel"
        } else {
            "xdp"
        };
        assert!(
            json.contains(&format!("\"backend\":\"{backend}\"")),
            "{json}"
        );
    }
}

#[test]
fn perf_tests_take_the_clients_message_size_on_a_jumbo_link() {
    // At MTU 9000 the path MTU is 4096 and every full packet spans two UMEM frames.
    let t = Topology::builder()
        .mtu(9000)
        .pair()
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    let sized = [
        ("ud-lat", 1000, 4096),
        ("ud-bw", 20_000, 4096),
        ("rc-send-lat", 1000, 100_000),
        ("rc-send-bw", 500, 1 << 20),
        ("rc-write-bw", 500, 1 << 20),
        ("rc-read-bw", 500, 1 << 20),
    ];
    for (test, iters, size) in sized {
        let mut server = a.ns().command(XRDMA);
        server.args(["perf", test, "--server", "--iface", a.iface()]);
        server.args(["--timeout", "20"]);
        let mut client = b.ns().command(XRDMA);
        client.args(["perf", test, "--connect", &a.ipv4().to_string()]);
        client.args(["--iface", b.iface(), "--timeout", "20"]);
        client.args(["--size", &size.to_string()]);
        run_pair_sized(server, client, test, iters, size);
    }
}

#[test]
fn perf_tests_run_over_loopback_with_udp() {
    // Each test gets its own ports, so it can run beside others; all below Linux's
    // ephemeral range (32768 and up), where another connection's local port could hold one.
    let port = 10000 + (std::process::id() % 20000) as u16;
    for (i, (test, iters)) in TESTS.into_iter().enumerate() {
        let (roce, oob, cm) = (
            (port + 2 * i as u16).to_string(),
            (port + 2 * i as u16 + 1).to_string(),
            (port + 1000 + i as u16).to_string(),
        );
        let common = [
            "--backend",
            "udp",
            "--iface",
            "lo",
            "--port",
            &roce,
            "--oob-port",
            &oob,
            "--cm-port",
            &cm,
            "--timeout",
            "20",
        ];
        let mut server = Command::new(XRDMA);
        server
            .args(["perf", test, "--server", "--addr", "127.0.0.1"])
            .args(common);
        let mut client = Command::new(XRDMA);
        client
            .args([
                "perf",
                test,
                "--connect",
                "127.0.0.1",
                "--addr",
                "127.0.0.2",
            ])
            .args(common);
        let json = run_pair(server, client, test, iters);
        let backend = if test.starts_with("tcp-") {
            "kernel"
        } else {
            "udp"
        };
        assert!(
            json.contains(&format!("\"backend\":\"{backend}\"")),
            "{json}"
        );
    }
}

#[test]
fn perf_rejects_bad_arguments_with_a_clear_message() {
    let out = Command::new(XRDMA)
        .args([
            "perf",
            "raw-lat",
            "--server",
            "--backend",
            "udp",
            "--iface",
            "nosuch0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such interface: nosuch0"));

    let out = Command::new(XRDMA)
        .args([
            "perf",
            "raw-lat",
            "--server",
            "--backend",
            "udp",
            "--iface",
            "lo",
            "--addr",
            "127.0.0.1",
        ])
        .args(["--port", "0", "--size", "100000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exceeds"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(XRDMA)
        .args(["perf", "no-such-test", "--server"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown test"));

    // A client with nobody to talk to gives up after its timeout, saying why.
    let started = std::time::Instant::now();
    let out = Command::new(XRDMA)
        .args([
            "perf",
            "raw-lat",
            "--connect",
            "127.0.0.1",
            "--backend",
            "udp",
            "--iface",
            "lo",
        ])
        .args([
            "--addr",
            "127.0.0.3",
            "--port",
            "0",
            "--oob-port",
            "1",
            "--timeout",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to the perf server"));
    assert!(started.elapsed() < Duration::from_secs(15));
}
