//! Stream rsockets against the kernel's TCP and against bare RC, on the same veth pair in
//! the same run (`cargo bench --bench rs`, as root), the figures issue 11 asks for:
//!
//! - `rs-lat` p50 (64 B) against sockperf's TCP ping-pong p50, both spinning (rsocket's
//!   polling time made long, sockperf `--nonblocked --timeout 0`) and both as they run by
//!   default (rsocket polls 10 µs then sleeps; sockperf blocks in epoll);
//! - `rs-bw` with 64 KiB writes against `rc-write-bw` with 64 KiB messages (what the
//!   socket layer costs) and against iperf3's TCP throughput;
//! - all of it on a link with 9000-byte frames and on one with 1500-byte frames;
//! - `rs-lat` and `rs-bw` again with one busy-loop process (`yes`) per core, against
//!   sockperf and iperf3 under the same load.
//!
//! Each measurement runs `ROUNDS` times, alternating, and the median is reported.

mod common;

use common::{
    Busy, Sockperf, iperf3_gbps, json_field, medians, pair_with_mtu, require_root, sockperf_p50,
    xrdma_cli, xrdma_perf,
};
use xrdma::perf::Test;
use xrdma_testnet::Topology;

const ROUNDS: usize = 3;
/// A polling time no wait outlasts (microseconds): the socket spins.
const SPIN: &[&str] = &["--polling-time", "1000000"];

fn rs_lat(t: &Topology, args: &[&str]) -> f64 {
    json_field(&xrdma_cli(t, "rs-lat", 64, args), "lat_us_p50")
}

fn rs_bw(t: &Topology) -> f64 {
    json_field(&xrdma_cli(t, "rs-bw", 65536, &[]), "gbps")
}

fn link(mtu: u32) -> String {
    let t = pair_with_mtu(mtu);
    let [spin, tcp_spin, lat, tcp] = medians(&format!("MTU {mtu} latency"), ROUNDS, || {
        [
            rs_lat(&t, SPIN),
            sockperf_p50(&t, Sockperf::Spinning, true),
            rs_lat(&t, &[]),
            sockperf_p50(&t, Sockperf::Default, true),
        ]
    });
    let [bw, write, iperf] = medians(&format!("MTU {mtu} bandwidth"), ROUNDS, || {
        [
            rs_bw(&t),
            xrdma_perf(&t, Test::RcWriteBw, 65536).gbps(),
            iperf3_gbps(&t),
        ]
    });
    println!(
        "MTU {mtu}: rs-lat 64 B p50 spinning {spin:.2} us, sockperf TCP spinning {tcp_spin:.2} us: ratio {:.2}",
        spin / tcp_spin
    );
    println!(
        "MTU {mtu}: rs-lat 64 B p50 default {lat:.2} us, sockperf TCP default {tcp:.2} us: ratio {:.2}",
        lat / tcp
    );
    println!(
        "MTU {mtu}: rs-bw 64 KiB {bw:.2} Gb/s, rc-write-bw {write:.2} Gb/s: ratio {:.2}; iperf3 {iperf:.2} Gb/s: ratio {:.2}",
        bw / write,
        bw / iperf
    );
    format!(
        "\"mtu{mtu}\":{{\"rs_lat_spin_p50_us\":{spin:.3},\"sockperf_tcp_spin_p50_us\":{tcp_spin:.3},\"rs_lat_p50_us\":{lat:.3},\"sockperf_tcp_p50_us\":{tcp:.3},\"rs_bw_gbps\":{bw:.3},\"rc_write_bw_gbps\":{write:.3},\"iperf3_gbps\":{iperf:.3}}}"
    )
}

fn busy() -> String {
    let t = pair_with_mtu(9000);
    let _load = Busy::start();
    let [lat, tcp, bw, iperf] = medians("busy", ROUNDS, || {
        [
            rs_lat(&t, &[]),
            sockperf_p50(&t, Sockperf::Default, true),
            rs_bw(&t),
            iperf3_gbps(&t),
        ]
    });
    println!(
        "busy, MTU 9000: rs-lat 64 B p50 {lat:.2} us, sockperf TCP {tcp:.2} us: ratio {:.2}; rs-bw 64 KiB {bw:.2} Gb/s, iperf3 {iperf:.2} Gb/s: ratio {:.2}",
        lat / tcp,
        bw / iperf
    );
    format!(
        "\"busy\":{{\"rs_lat_p50_us\":{lat:.3},\"sockperf_tcp_p50_us\":{tcp:.3},\"rs_bw_gbps\":{bw:.3},\"iperf3_gbps\":{iperf:.3}}}"
    )
}

fn main() {
    require_root("rs");
    let jumbo = link(9000);
    let small = link(1500);
    let busy = busy();
    println!("{{\"bench\":\"rs\",{jumbo},{small},{busy}}}");
}
