//! RC on a busy machine, next to kernel TCP under the same load (`cargo bench --bench busy`,
//! as root): one busy-loop process (`yes`) per core, and each end of a test its own `xrdma
//! perf` process, as users run them. On one veth pair with 9000-byte frames, idle and then
//! busy:
//!
//! - `rc-send-lat` p50 (64 B, xdp) against sockperf's TCP ping-pong p50, blocking in epoll
//!   as it does by default and spinning;
//! - `rc-write-bw` (64 KiB) over xdp and over udp against iperf3's TCP throughput.
//!
//! Each measurement runs `ROUNDS` times and the median is reported.

mod common;

use common::{
    Backend, Busy, Sockperf, iperf3_gbps, json_field, medians, pair_with_mtu, require_root,
    sockperf_p50, xrdma_cli_over,
};
use xrdma_testnet::Topology;

const ROUNDS: usize = 3;

/// One round: rc-send-lat, sockperf default and spinning, rc-write-bw over xdp and udp,
/// iperf3.
fn row(t: &Topology) -> [f64; 6] {
    let lat = json_field(
        &xrdma_cli_over(t, Backend::Xdp, "rc-send-lat", 64, &[]),
        "lat_us_p50",
    );
    let tcp = sockperf_p50(t, Sockperf::Default, true);
    let tcp_spin = sockperf_p50(t, Sockperf::Spinning, true);
    let xdp = json_field(
        &xrdma_cli_over(t, Backend::Xdp, "rc-write-bw", 65536, &[]),
        "gbps",
    );
    let udp = json_field(
        &xrdma_cli_over(t, Backend::Udp, "rc-write-bw", 65536, &[]),
        "gbps",
    );
    let iperf = iperf3_gbps(t);
    [lat, tcp, tcp_spin, xdp, udp, iperf]
}

/// Prints the ratios of `m` and returns them as JSON fields.
fn report(what: &str, m: [f64; 6]) -> String {
    let [lat, tcp, tcp_spin, xdp, udp, iperf] = m;
    println!(
        "{what}: rc-send-lat 64 B p50 {lat:.2} us; sockperf TCP p50 {tcp:.2} us: ratio {:.2}; spinning {tcp_spin:.2} us: ratio {:.2}",
        lat / tcp,
        lat / tcp_spin
    );
    println!(
        "{what}: rc-write-bw 64 KiB over xdp {xdp:.2} Gb/s, over udp {udp:.2} Gb/s; iperf3 {iperf:.2} Gb/s: ratios {:.2}, {:.2}",
        xdp / iperf,
        udp / iperf
    );
    format!(
        "\"{what}\":{{\"rc_send_lat_p50_us\":{lat:.3},\"sockperf_tcp_p50_us\":{tcp:.3},\"sockperf_tcp_spin_p50_us\":{tcp_spin:.3},\"rc_write_bw_xdp_gbps\":{xdp:.3},\"rc_write_bw_udp_gbps\":{udp:.3},\"iperf3_gbps\":{iperf:.3}}}"
    )
}

fn main() {
    require_root("busy");
    let t = pair_with_mtu(9000);
    let idle = report("idle", medians("idle", ROUNDS, || row(&t)));
    let busy = {
        let _load = Busy::start();
        report("busy", medians("busy", ROUNDS, || row(&t)))
    };
    println!("{{\"bench\":\"busy\",{idle},{busy}}}");
}
