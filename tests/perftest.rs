//! Debian's perftest (ib_send_lat, ib_write_bw, ...), unmodified, over xrdma: libxrdma.so
//! preloaded under server and client in two namespaced hosts, each program run to its
//! normal result table, on the xdp backend, a subset on udp and across the two.
//!
//! The runs are short (`-n`), and one at a time across this file's tests: every perftest
//! process polls without sleeping, and two pairs at once on a small machine would measure
//! the scheduler. The bandwidth servers leave their QP in RTR (the responder must answer
//! from there); ib_write_lat waits on memory, not on a CQ (the helper thread must write
//! it); ib_send_bw posts every receive with one wr_id.

mod preloaded;

use std::sync::Mutex;

use preloaded::{finish, installed, preloaded, text, wait_listening};
use xrdma_testnet::Topology;

/// One perftest pair at a time (see the module documentation).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Iterations of each run.
const ITERS: u64 = 1000;

/// What a run measures, and so which column of its result row must be positive.
#[derive(Clone, Copy)]
enum Kind {
    /// `#bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%` (usec).
    Latency,
    /// `#bytes #iterations BW_peak BW_average MsgRate` (MB/s, Mpps).
    Bandwidth,
}

/// The numbers of the row under the `#bytes` header of perftest's result table.
fn result_row(stdout: &str) -> Option<Vec<f64>> {
    let mut lines = stdout.lines();
    lines.find(|l| l.trim_start().starts_with("#bytes"))?;
    let row: Vec<f64> = lines
        .next()?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (row.len() >= 5).then_some(row)
}

/// Runs `program args` as server on host A and client on host B (`backends` for each,
/// `port` for perftest's TCP exchange), and checks that both finish and that the client
/// prints its result row: the iterations asked (or more, with several QPs) and a positive
/// latency or bandwidth. Returns the row.
fn run(
    t: &Topology,
    program: &str,
    args: &[&str],
    kind: Kind,
    backends: (&str, &str),
    port: u16,
) -> Vec<f64> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (a, b) = (t.a(), t.b());
    let program = installed(program, "perftest");
    let iters = ITERS.to_string();
    let port_arg = port.to_string();
    let common = ["-x", "0", "-n", &iters, "-p", &port_arg];
    let what = format!("{program} {args:?} {backends:?}");

    let mut cmd = a.ns().command(program);
    cmd.args(common)
        .args(["-d", &format!("xrdma_{}", a.iface())])
        .args(args);
    let server = preloaded(cmd, a.iface(), backends.0).spawn().unwrap();
    wait_listening(a, port);
    let mut cmd = b.ns().command(program);
    cmd.args(common)
        .args(["-d", &format!("xrdma_{}", b.iface())])
        .args(args)
        .arg(a.ipv4().to_string());
    let client = preloaded(cmd, b.iface(), backends.1).spawn().unwrap();
    let client = finish(client, &format!("{what} client"));
    let server = finish(server, &format!("{what} server"));

    for (who, out) in [("server", &server), ("client", &client)] {
        let (stdout, stderr) = text(out);
        assert!(
            out.status.success(),
            "{what} {who} failed ({}):\n{stdout}{stderr}",
            out.status
        );
    }
    let (stdout, stderr) = text(&client);
    let row = result_row(&stdout)
        .unwrap_or_else(|| panic!("{what}: no result row in:\n{stdout}{stderr}"));
    let (column, unit) = match kind {
        Kind::Latency => (4, "usec typical"),
        Kind::Bandwidth => (3, "MB/s average"),
    };
    assert!(row[0] > 0.0, "{what}: message size {} in {row:?}", row[0]);
    assert!(
        row[1] >= ITERS as f64,
        "{what}: {} iterations, want {ITERS}, in {row:?}",
        row[1]
    );
    assert!(
        row[column] > 0.0,
        "{what}: {unit} is {} in {row:?}",
        row[column]
    );
    println!("{what}: {} {unit} ({row:?})", row[column]);
    row
}

fn pair() -> Topology {
    Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"))
}

#[test]
fn perftest_latency_programs_run_over_xdp() {
    let t = pair();
    let xdp = ("xdp", "xdp");
    run(&t, "ib_send_lat", &[], Kind::Latency, xdp, 18701);
    run(&t, "ib_write_lat", &[], Kind::Latency, xdp, 18702);
    run(&t, "ib_read_lat", &[], Kind::Latency, xdp, 18703);
    run(&t, "ib_atomic_lat", &[], Kind::Latency, xdp, 18704);
}

#[test]
fn perftest_bandwidth_programs_run_over_xdp() {
    let t = pair();
    let xdp = ("xdp", "xdp");
    for (program, port) in [
        ("ib_send_bw", 18711),
        ("ib_write_bw", 18712),
        ("ib_read_bw", 18713),
        ("ib_atomic_bw", 18714),
    ] {
        run(&t, program, &[], Kind::Bandwidth, xdp, port);
    }
    // UD: messages of the path MTU, each through an address handle.
    let ud = run(&t, "ib_send_bw", &["-c", "UD"], Kind::Bandwidth, xdp, 18715);
    assert_eq!(ud[0], 1024.0, "UD messages of the 1024-byte path MTU");
    // Eight QPs, eight times the iterations.
    let q8 = run(&t, "ib_write_bw", &["-q", "8"], Kind::Bandwidth, xdp, 18716);
    assert_eq!(q8[1], (8 * ITERS) as f64, "eight QPs' iterations");
}

#[test]
fn perftest_runs_over_udp_and_across_backends() {
    let t = pair();
    let udp = ("udp", "udp");
    run(&t, "ib_send_lat", &[], Kind::Latency, udp, 18721);
    run(&t, "ib_write_lat", &[], Kind::Latency, udp, 18722);
    run(&t, "ib_read_bw", &[], Kind::Bandwidth, udp, 18723);
    run(&t, "ib_send_bw", &[], Kind::Bandwidth, udp, 18724);
    // An xdp server and a udp client carry the same bytes after the UDP header.
    let mixed = ("xdp", "udp");
    run(&t, "ib_write_lat", &[], Kind::Latency, mixed, 18725);
    run(&t, "ib_atomic_lat", &[], Kind::Latency, mixed, 18726);
    run(&t, "ib_write_bw", &[], Kind::Bandwidth, mixed, 18727);
    run(
        &t,
        "ib_send_bw",
        &["-c", "UD"],
        Kind::Bandwidth,
        mixed,
        18728,
    );
}
