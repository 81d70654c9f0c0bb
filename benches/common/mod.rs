//! What the benchmarks share: `xrdma perf` runs between the two test hosts in this process,
//! sockperf's ping-pong and iperf3's throughput on the same hosts, and medians.
// Each bench compiles this module and uses part of it.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use xrdma::perf::{self, Options, Role, Test};
use xrdma_testnet::{Host, Topology};
use xrdma_verbs::net::{BackendConfig, udp::UdpConfig, xdp::XdpConfig};

/// Messages per latency test.
pub const LAT_ITERS: u64 = 20_000;
/// Seconds per bandwidth test.
pub const BW_SECONDS: u64 = 3;

/// Exits saying why unless this runs as root (namespaces, XDP and AF_XDP need it).
pub fn require_root(bench: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{bench}: needs root (network namespaces, XDP, AF_XDP); run it as root");
        std::process::exit(1);
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Medians of `rounds` rounds of `row`, each round printed as it comes, under `what`.
pub fn medians<const N: usize>(
    what: &str,
    rounds: usize,
    mut row: impl FnMut() -> [f64; N],
) -> [f64; N] {
    let rows: Vec<[f64; N]> = (0..rounds)
        .map(|round| {
            let r = row();
            println!("{what} round {round}: {r:.2?}");
            r
        })
        .collect();
    std::array::from_fn(|i| median(rows.iter().map(|r| r[i]).collect()))
}

/// Two test hosts on one veth pair whose links carry `mtu`-byte packets.
pub fn pair_with_mtu(mtu: u32) -> Topology {
    Topology::builder()
        .mtu(mtu)
        .pair()
        .unwrap_or_else(|e| panic!("cannot build the MTU {mtu} hosts: {e}"))
}

/// One `xrdma perf` run of `test` with `size`-byte messages over `xdp`, server on host A,
/// client on host B, in this process.
pub fn xrdma_perf(t: &Topology, test: Test, size: usize) -> perf::Report {
    xrdma_perf_over(t, Backend::Xdp, test, size)
}

/// Which backend [`xrdma_perf_over`] runs on.
#[derive(Clone, Copy)]
pub enum Backend {
    /// AF_XDP.
    Xdp,
    /// Kernel UDP with GSO and GRO.
    Udp,
}

/// [`xrdma_perf`] over `backend`.
pub fn xrdma_perf_over(t: &Topology, backend: Backend, test: Test, size: usize) -> perf::Report {
    let latency = test.name().ends_with("-lat");
    let opts = |host: &Host, role| Options {
        test,
        role,
        backend: match backend {
            Backend::Xdp => BackendConfig::Xdp(XdpConfig::new(host.iface())),
            Backend::Udp => BackendConfig::Udp(UdpConfig::new(host.iface())),
        },
        size,
        iters: latency.then_some(LAT_ITERS),
        duration: (!latency).then_some(Duration::from_secs(BW_SECONDS)),
        oob_port: perf::DEFAULT_OOB_PORT,
        cm_port: perf::DEFAULT_CM_PORT,
        timeout: Duration::from_secs(20),
        polling_time: None,
    };
    let server_opts = opts(t.a(), Role::Server);
    let client_opts = opts(t.b(), Role::Client(IpAddr::V4(t.a().ipv4())));
    thread::scope(|s| {
        let server = s.spawn(|| {
            t.a()
                .ns()
                .run(|| perf::run(&server_opts).expect("perf server"))
        });
        let report = t
            .b()
            .ns()
            .run(|| perf::run(&client_opts).expect("perf client"));
        server.join().unwrap();
        report
    })
}

/// How sockperf waits for a message.
#[derive(Clone, Copy)]
pub enum Sockperf {
    /// Its default: epoll with a 10 ms timeout, so an idle CPU sleeps between messages.
    Default,
    /// Non-blocking sockets polled with a zero timeout: it spins, as xrdma's tests do.
    Spinning,
}

impl Sockperf {
    fn args(self) -> &'static [&'static str] {
        match self {
            Sockperf::Default => &[],
            Sockperf::Spinning => &["--nonblocked", "--timeout", "0"],
        }
    }
}

/// Whose TCP a socket program's runs over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// The kernel's.
    Kernel,
    /// xrdma's, over xdp: the program run by `xrdma run` (libxrdma_preload.so).
    Xrdma,
}

/// `program` on `host`, over `stack`. Over xrdma its connections are checked to have gone
/// over xrdma (see [`check_over_xrdma`]).
pub fn program(host: &Host, stack: Stack, program: &str) -> std::process::Command {
    match stack {
        Stack::Kernel => host.ns().command(program),
        Stack::Xrdma => {
            let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/release/libxrdma_preload.so");
            assert!(
                lib.exists(),
                "{} missing: build it first (cargo build --release -p xrdma-preload)",
                lib.display()
            );
            host.xrdma_run(env!("CARGO_BIN_EXE_xrdma").as_ref(), &lib, &[], program)
        }
    }
}

/// Fails unless a client's output under `xrdma run --debug` says it connected over xrdma
/// (a server not yet listening on xrdma would have left it on kernel TCP).
pub fn check_over_xrdma(stack: Stack, output: &str) {
    if stack == Stack::Xrdma {
        assert!(
            output
                .lines()
                .any(|l| l.starts_with("xrdma: connect to") && l.ends_with(": xrdma")),
            "the client did not connect over xrdma:\n{output}"
        );
    }
}

/// sockperf ping-pong p50 with 64-byte messages (one-way, as sockperf reports it) between
/// the two hosts, over UDP or (`tcp`) TCP.
pub fn sockperf_p50(t: &Topology, mode: Sockperf, tcp: bool) -> f64 {
    let text = sockperf(t, Stack::Kernel, mode, tcp, "ping-pong");
    sockperf_figure(&text, "percentile 50.000")
}

/// What sockperf's client (`test`: ping-pong or throughput, 64-byte messages, 3 s)
/// printed, between the two hosts over `stack`, over UDP or (`tcp`) TCP.
pub fn sockperf(t: &Topology, stack: Stack, mode: Sockperf, tcp: bool, test: &str) -> String {
    let at = SocketAddr::new(IpAddr::V4(t.a().ipv4()), 11111);
    let proto: &[&str] = if tcp { &["--tcp"] } else { &[] };
    let mut server = program(t.a(), stack, "sockperf")
        .args(["server", "-i", &at.ip().to_string(), "-p", "11111"])
        .args(proto)
        .args(mode.args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sockperf is needed: apt-get install sockperf (scripts/setup.sh does)");
    thread::sleep(Duration::from_millis(500));
    let out = program(t.b(), stack, "sockperf")
        .args([
            test,
            "-i",
            &at.ip().to_string(),
            "-p",
            "11111",
            "-m",
            "64",
            "-t",
            "3",
        ])
        .args(proto)
        .args(mode.args())
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    check_over_xrdma(stack, &text);
    text
}

/// The number after the last `=` or `is` on the first line of sockperf's `text` that
/// holds `label`.
pub fn sockperf_figure(text: &str, label: &str) -> f64 {
    text.lines()
        .find(|l| l.contains(label))
        .and_then(|l| {
            let after = l.rsplit(['=']).next()?;
            let after = after.rsplit(" is ").next()?;
            after.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {label:?} in sockperf output:\n{text}"))
}

/// iperf3's TCP throughput from host B to host A over `BW_SECONDS`, in Gbit/s.
pub fn iperf3_gbps(t: &Topology) -> f64 {
    iperf3_gbps_over(t, Stack::Kernel)
}

/// [`iperf3_gbps`] over `stack`.
pub fn iperf3_gbps_over(t: &Topology, stack: Stack) -> f64 {
    let at = t.a().ipv4().to_string();
    let mut server = program(t.a(), stack, "iperf3")
        .args(["-s", "-1", "-B", &at, "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 is needed: apt-get install iperf3 (scripts/setup.sh does)");
    thread::sleep(Duration::from_millis(500));
    let out = program(t.b(), stack, "iperf3")
        .args(["-c", &at, "-p", "5201", "-J", "-t", &BW_SECONDS.to_string()])
        .output()
        .unwrap();
    let _ = server.wait();
    check_over_xrdma(stack, &String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // The JSON's end.sum_received.bits_per_second.
    let at = text
        .find("\"sum_received\"")
        .and_then(|i| text[i..].find("\"bits_per_second\"").map(|j| i + j))
        .unwrap_or_else(|| panic!("no sum_received in iperf3 output:\n{text}"));
    let rest = &text[at + "\"bits_per_second\":".len()..];
    let end = rest.find([',', '}', '\n']).unwrap();
    rest[..end].trim().parse::<f64>().unwrap() / 1e9
}

/// One run of the `xrdma` command's `perf test`, server on host A and client on host B, each
/// its own process (as rsockets need: one service thread and one set of devices per
/// process), with `args` on both sides; returns the client's JSON report.
pub fn xrdma_cli(t: &Topology, test: &str, size: usize, args: &[&str]) -> String {
    xrdma_cli_over(t, Backend::Xdp, test, size, args)
}

/// [`xrdma_cli`] over `backend`.
pub fn xrdma_cli_over(
    t: &Topology,
    backend: Backend,
    test: &str,
    size: usize,
    args: &[&str],
) -> String {
    let exe = env!("CARGO_BIN_EXE_xrdma");
    let backend = match backend {
        Backend::Xdp => "xdp",
        Backend::Udp => "udp",
    };
    let latency = test.ends_with("-lat");
    let count: Vec<String> = if latency {
        vec!["--iters".into(), LAT_ITERS.to_string()]
    } else {
        vec!["--duration".into(), BW_SECONDS.to_string()]
    };
    let mut server = t
        .a()
        .ns()
        .command(exe)
        .args([
            "perf",
            test,
            "--server",
            "--backend",
            backend,
            "--iface",
            t.a().iface(),
        ])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("xrdma perf server");
    let out = t
        .b()
        .ns()
        .command(exe)
        .args(["perf", test, "--connect", &t.a().ipv4().to_string()])
        .args(["--backend", backend, "--iface", t.b().iface(), "--json"])
        .args(["--size", &size.to_string()])
        .args(&count)
        .args(args)
        .output()
        .expect("xrdma perf client");
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "xrdma perf {test}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().last().unwrap_or_default().to_string()
}

/// A number of a JSON report.
pub fn json_field(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

/// One `yes > /dev/null` per core while it lives: a machine whose cores are all taken.
pub struct Busy(Vec<std::process::Child>);

impl Busy {
    pub fn start() -> Busy {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        Busy(
            (0..cores)
                .map(|_| {
                    std::process::Command::new("yes")
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("yes")
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
