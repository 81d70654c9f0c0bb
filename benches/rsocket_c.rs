//! rdma-core's own rsocket programs over libxrdma.so against themselves on kernel sockets
//! (`-T s`), on the same veth pair (9000-byte frames) in the same run (`cargo build
//! --release -p xrdma-cabi && cargo bench --bench rsocket_c`, as root): the figures issue
//! 12 asks for.
//!
//! - rstream's default run (spinning) and `-T b` (blocking): every row's `usec/xfer` and
//!   `Gb/sec` over xrdma (xdp and udp) next to kernel TCP's, as ratios;
//! - udpong in echo mode (`-C 1000 -S 64 -T e`, spinning): `usec/xfer` against kernel UDP;
//! - rstream `-T b` again with one busy-loop process (`yes`) per core, under the same load.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Busy, pair_with_mtu, require_root};
use xrdma_testnet::{Host, Topology, wait_or_kill};

const TIMEOUT: Duration = Duration::from_secs(300);

/// How a program's sockets go: over xrdma with a backend, or the kernel's (`-T s`).
#[derive(Clone, Copy)]
enum Via {
    Kernel,
    Xrdma(&'static str),
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Kernel => "kernel",
            Via::Xrdma(b) => b,
        }
    }
}

fn library() -> PathBuf {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/libxrdma.so");
    assert!(
        lib.exists(),
        "{} missing: build it first (cargo build --release -p xrdma-cabi)",
        lib.display()
    );
    lib
}

fn command(host: &Host, via: Via, program: &str, args: &[&str]) -> Command {
    let mut cmd = host.ns().command("stdbuf");
    cmd.args(["-oL", program]).args(args);
    match via {
        Via::Kernel => {
            cmd.args(["-T", "s"]);
        }
        Via::Xrdma(backend) => {
            cmd.env("LD_PRELOAD", library())
                .env("XRDMA_IFACE", host.iface())
                .env("XRDMA_BACKEND", backend);
        }
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// The client's result rows (`name -> (Gb/sec, usec/xfer)`) of one run of `program`,
/// server on host A and client on host B. The server is stopped after the client ends.
fn rows(t: &Topology, via: Via, program: &str, args: &[&str]) -> BTreeMap<String, (f64, f64)> {
    let server = command(t.a(), via, program, &[&["-b", "0.0.0.0"], args].concat())
        .spawn()
        .expect("server");
    // Both programs' clients try again until the server answers (rstream's connect is
    // retried here; udpong logs in again every second).
    let dst = t.a().ipv4().to_string();
    let mut out = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        let client = command(t.b(), via, program, &[&["-s", dst.as_str()], args].concat())
            .spawn()
            .expect("client");
        let o = wait_or_kill(client, TIMEOUT, program);
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("usec/xfer") {
            out = Some(o);
            break;
        }
    }
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    let out = out.unwrap_or_else(|| panic!("{program} {args:?} over {} never ran", via.name()));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (name, gbps, usec) = (f.first()?, f.get(f.len().checked_sub(2)?)?, f.last()?);
            Some((name.to_string(), (gbps.parse().ok()?, usec.parse().ok()?)))
        })
        .collect()
}

/// Prints `program args` over the kernel and each backend, row by row, with ratios to
/// the kernel's figures.
fn compare(t: &Topology, what: &str, program: &str, args: &[&str]) {
    let vias = [Via::Kernel, Via::Xrdma("xdp"), Via::Xrdma("udp")];
    let runs: Vec<_> = vias.iter().map(|&v| rows(t, v, program, args)).collect();
    println!("\n{what}: {program} {}", args.join(" "));
    println!(
        "{:10} {:>10} {:>10} {:>6} {:>10} {:>6} | {:>8} {:>8} {:>6} {:>8} {:>6}",
        "row",
        "kernel us",
        "xdp us",
        "ratio",
        "udp us",
        "ratio",
        "kern Gb/s",
        "xdp",
        "ratio",
        "udp",
        "ratio"
    );
    for (name, &(kg, ku)) in &runs[0] {
        let (Some(&(xg, xu)), Some(&(ug, uu))) = (runs[1].get(name), runs[2].get(name)) else {
            continue;
        };
        let r = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:6.2}", a / b)
            } else {
                "     -".into()
            }
        };
        println!(
            "{name:10} {ku:10.2} {xu:10.2} {} {uu:10.2} {} | {kg:8.2} {xg:8.2} {} {ug:8.2} {}",
            r(xu, ku),
            r(uu, ku),
            r(xg, kg),
            r(ug, kg)
        );
    }
}

fn main() {
    require_root("rsocket_c");
    let t = pair_with_mtu(9000);
    compare(&t, "idle, spinning", "rstream", &[]);
    compare(&t, "idle, blocking", "rstream", &["-T", "b"]);
    compare(
        &t,
        "idle, echo, spinning",
        "udpong",
        &["-C", "1000", "-S", "64", "-T", "e"],
    );
    let busy = Busy::start();
    compare(&t, "a yes per core, blocking", "rstream", &["-T", "b"]);
    drop(busy);
}
