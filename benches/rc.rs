//! RC against the kernel's TCP, on the same veth pair in the same run (`cargo bench --bench
//! rc`, as root), the three figures issue 4 asks for:
//!
//! - `rc-send-lat` p50 (64 B) against sockperf's TCP ping-pong p50, twice: sockperf as it
//!   runs by default (blocking in epoll) and spinning (`--nonblocked --timeout 0`), the
//!   like-for-like figure, since xrdma's latency tests spin;
//! - `rc-write-bw` with 64 KiB messages against iperf3's TCP throughput;
//! - `rc-send-bw`'s message rate with 64 B SENDs against `ud-bw`'s;
//! - `rc-write-bw` against iperf3 again on a pair with 9000-byte jumbo frames, where RoCE's
//!   path MTU is 4096 (each packet two AF_XDP frames), a quarter of the packets per byte;
//! - on both links, `rc-write-bw` over the `udp` backend too (kernel UDP with GSO and GRO),
//!   against the same iperf3 run.
//!
//! Each measurement runs `ROUNDS` times, alternating, and the median is reported.

mod common;

use common::{
    Backend, Sockperf, iperf3_gbps, median, pair_with_mtu, require_root, sockperf_p50, xrdma_perf,
    xrdma_perf_over,
};
use xrdma::perf::Test;
use xrdma_testnet::Topology;

const ROUNDS: usize = 3;

fn main() {
    require_root("rc");
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let mut rows: Vec<[f64; 8]> = Vec::new();
    for round in 0..ROUNDS {
        let lat = xrdma_perf(&t, Test::RcSendLat, 64)
            .latency_us(50.0)
            .unwrap();
        let tcp = sockperf_p50(&t, Sockperf::Default, true);
        let tcp_spin = sockperf_p50(&t, Sockperf::Spinning, true);
        let write = xrdma_perf(&t, Test::RcWriteBw, 65536).gbps();
        let udp_write = xrdma_perf_over(&t, Backend::Udp, Test::RcWriteBw, 65536).gbps();
        let iperf = iperf3_gbps(&t);
        let send_rate = xrdma_perf(&t, Test::RcSendBw, 64).msg_rate();
        let ud_rate = xrdma_perf(&t, Test::UdBw, 64).msg_rate();
        println!(
            "round {round}: rc-send-lat p50 {lat:.2} us, sockperf TCP {tcp:.2} us, spinning \
             {tcp_spin:.2} us; rc-write-bw {write:.2} Gb/s (udp {udp_write:.2}), iperf3 \
             {iperf:.2} Gb/s; rc-send-bw {send_rate:.0} msg/s, ud-bw {ud_rate:.0} msg/s"
        );
        rows.push([
            lat, tcp, tcp_spin, write, iperf, send_rate, ud_rate, udp_write,
        ]);
    }
    let m = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    let (lat, tcp, tcp_spin, write, iperf, send_rate, ud_rate, udp_write) =
        (m(0), m(1), m(2), m(3), m(4), m(5), m(6), m(7));
    println!(
        "rc-send-lat 64 B p50 over xdp: {lat:.2} us; kernel TCP ping-pong (sockperf) p50: {tcp:.2} us; ratio {:.2}",
        lat / tcp
    );
    println!(
        "rc-send-lat 64 B p50 over xdp: {lat:.2} us; spinning sockperf TCP p50: {tcp_spin:.2} us; ratio {:.2}",
        lat / tcp_spin
    );
    println!(
        "rc-write-bw 64 KiB over xdp: {write:.2} Gb/s; kernel TCP (iperf3): {iperf:.2} Gb/s; ratio {:.2}",
        write / iperf
    );
    println!(
        "rc-write-bw 64 KiB over udp (GSO/GRO): {udp_write:.2} Gb/s; kernel TCP (iperf3): {iperf:.2} Gb/s; ratio {:.2}",
        udp_write / iperf
    );
    println!(
        "rc-send-bw 64 B over xdp: {send_rate:.0} msg/s; ud-bw: {ud_rate:.0} msg/s; ratio {:.2}",
        send_rate / ud_rate
    );
    let jumbo = pair_with_mtu(9000);
    let mut jumbo_rows = Vec::new();
    for round in 0..ROUNDS {
        let write = xrdma_perf(&jumbo, Test::RcWriteBw, 65536).gbps();
        let udp_write = xrdma_perf_over(&jumbo, Backend::Udp, Test::RcWriteBw, 65536).gbps();
        let iperf = iperf3_gbps(&jumbo);
        println!(
            "MTU 9000 round {round}: rc-write-bw {write:.2} Gb/s (udp {udp_write:.2}), iperf3 {iperf:.2} Gb/s"
        );
        jumbo_rows.push([write, iperf, udp_write]);
    }
    let jm = |i: usize| median(jumbo_rows.iter().map(|r| r[i]).collect());
    let (jwrite, jiperf, judp) = (jm(0), jm(1), jm(2));
    println!(
        "rc-write-bw 64 KiB over xdp, link MTU 9000 (path MTU 4096): {jwrite:.2} Gb/s; kernel TCP (iperf3): {jiperf:.2} Gb/s; ratio {:.2}",
        jwrite / jiperf
    );
    println!(
        "rc-write-bw 64 KiB over udp (GSO/GRO), link MTU 9000: {judp:.2} Gb/s; kernel TCP (iperf3): {jiperf:.2} Gb/s; ratio {:.2}",
        judp / jiperf
    );
    println!(
        "{{\"bench\":\"rc\",\"rc_send_lat_p50_us\":{lat:.3},\"sockperf_tcp_p50_us\":{tcp:.3},\"rc_send_lat_ratio\":{:.3},\"sockperf_tcp_spin_p50_us\":{tcp_spin:.3},\"rc_send_lat_spin_ratio\":{:.3},\"rc_write_bw_gbps\":{write:.3},\"iperf3_gbps\":{iperf:.3},\"rc_write_bw_ratio\":{:.3},\"rc_send_bw_msg_rate\":{send_rate:.0},\"ud_bw_msg_rate\":{ud_rate:.0},\"rc_send_bw_ratio\":{:.3},\"mtu9000_rc_write_bw_gbps\":{jwrite:.3},\"mtu9000_iperf3_gbps\":{jiperf:.3},\"mtu9000_rc_write_bw_ratio\":{:.3},\"udp_rc_write_bw_gbps\":{udp_write:.3},\"udp_rc_write_bw_ratio\":{:.3},\"mtu9000_udp_rc_write_bw_gbps\":{judp:.3},\"mtu9000_udp_rc_write_bw_ratio\":{:.3}}}",
        lat / tcp,
        lat / tcp_spin,
        write / iperf,
        send_rate / ud_rate,
        jwrite / jiperf,
        udp_write / iperf,
        judp / jiperf
    );
}
