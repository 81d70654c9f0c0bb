//! Unmodified socket programs over xrdma (`xrdma run`: libxrdma_preload.so, xdp) against
//! themselves on the kernel's TCP, on the same veth pair (9000-byte frames) in the same run
//! (`cargo build --release -p xrdma-preload && cargo bench --bench socket_preload`, as
//! root): the figures issue 13 asks for, as ratios xrdma/kernel.
//!
//! - sockperf's TCP ping-pong p50 (64 bytes), by default (sleeping in epoll) and spinning
//!   (non-blocking sockets, zero timeout), and its TCP throughput (64-byte messages);
//! - iperf3's TCP throughput;
//! - redis-benchmark's SET and GET requests per second (`-n 100000 -c 50`);
//! - sockperf's default ping-pong and iperf3 again with one busy loop (`yes`) per core.

mod common;

use std::process::Stdio;
use std::thread;
use std::time::Duration;

use common::{
    Busy, Sockperf, Stack, check_over_xrdma, iperf3_gbps_over, pair_with_mtu, program,
    require_root, sockperf, sockperf_figure,
};
use xrdma_testnet::Topology;

/// redis-benchmark's requests per second for SET and GET, redis-server on host A and the
/// benchmark on host B, both over `stack`.
fn redis_rps(t: &Topology, stack: Stack) -> (f64, f64) {
    let at = t.a().ipv4().to_string();
    let mut server = program(t.a(), stack, "redis-server")
        .args([
            "--port",
            "6390",
            "--bind",
            &at,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is needed: apt-get install redis-server (scripts/setup.sh does)");
    thread::sleep(Duration::from_millis(500));
    let out = program(t.b(), stack, "redis-benchmark")
        .args([
            "-h", &at, "-p", "6390", "-t", "set,get", "-n", "100000", "-c", "50",
        ])
        .arg("--csv")
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    check_over_xrdma(stack, &String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = |test: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("\"{test}\",")))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no {test} in redis-benchmark's output:\n{text}"))
    };
    (rps("SET"), rps("GET"))
}

/// Prints one row: the kernel's figure, xrdma's, and their ratio.
fn row(what: &str, unit: &str, kernel: f64, xrdma: f64) {
    println!(
        "{what:44} {kernel:12.2} {xrdma:12.2} {unit:8} {:6.2}",
        xrdma / kernel
    );
}

/// Measures `f` over the kernel and over xrdma, and prints the row.
fn compare(what: &str, unit: &str, f: impl Fn(Stack) -> f64) {
    let kernel = f(Stack::Kernel);
    let xrdma = f(Stack::Xrdma);
    row(what, unit, kernel, xrdma);
}

fn main() {
    require_root("socket_preload");
    let t = pair_with_mtu(9000);
    println!(
        "{:44} {:>12} {:>12} {:8} {:>6}",
        "", "kernel TCP", "xrdma", "", "ratio"
    );
    let t = &t;
    let pp_p50 = |mode| {
        move |stack| {
            let text = sockperf(t, stack, mode, true, "ping-pong");
            sockperf_figure(&text, "percentile 50.000")
        }
    };
    compare(
        "sockperf ping-pong p50, default",
        "us",
        pp_p50(Sockperf::Default),
    );
    compare(
        "sockperf ping-pong p50, spinning",
        "us",
        pp_p50(Sockperf::Spinning),
    );
    compare("sockperf throughput, 64 B", "msg/s", |stack| {
        let text = sockperf(t, stack, Sockperf::Default, true, "throughput");
        sockperf_figure(&text, "Message Rate is")
    });
    compare("iperf3", "Gb/s", |stack| iperf3_gbps_over(t, stack));
    let (kset, kget) = redis_rps(t, Stack::Kernel);
    let (xset, xget) = redis_rps(t, Stack::Xrdma);
    row("redis-benchmark SET", "req/s", kset, xset);
    row("redis-benchmark GET", "req/s", kget, xget);
    let busy = Busy::start();
    compare(
        "a yes per core: sockperf ping-pong p50, default",
        "us",
        pp_p50(Sockperf::Default),
    );
    compare("a yes per core: iperf3", "Gb/s", |stack| {
        iperf3_gbps_over(t, stack)
    });
    drop(busy);
}
