//! What xrdma's paths cost, measured against baselines on the same veth pair in the same
//! run (`cargo bench --bench path`, as root):
//!
//! - `raw-bw` (64-byte payloads over `xdp`) against a bare xsk-rs loop: the same frames, sent
//!   from a UMEM that is written once and received by libxdp's default program into a socket
//!   that only counts them;
//! - `raw-lat` p50 against the kernel's UDP ping-pong (sockperf, 64 bytes), twice: sockperf
//!   as it runs by default (blocking in epoll) and sockperf spinning (`--nonblocked
//!   --timeout 0`). xrdma's latency tests spin, so the spinning figure is the like-for-like
//!   one; the default one also pays for waking an idle CPU, which on a VM costs tens of µs;
//! - `ud-bw` (64-byte UD SENDs through the verbs) against `raw-bw`, and `ud-lat` p50
//!   against both sockperf figures;
//! - the CPU time an idle context's helper thread uses over 10 s.
//!
//! Each measurement runs `ROUNDS` times, alternating, and the median is reported.

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{BW_SECONDS, Sockperf, median, require_root, sockperf_p50, xrdma_perf};
use xrdma::perf::Test;
use xrdma_testnet::{Host, Topology};
use xrdma_verbs::net::xdp::{XdpConfig, XdpIo, XdpMode, XdpRedirect};
use xrdma_verbs::verbs::{Context, ContextConfig};
use xrdma_verbs::wire::{
    self, BthRepr, DethRepr, EtherType, EthernetRepr, FrameRepr, IpRepr, IpVersion, Ipv4Repr,
    MacAddr, Opcode, Psn, Qkey, Qpn, TransportRepr, UdpRepr,
};
use xsk_rs::config::{BindFlags, SocketConfig, UmemConfig};
use xsk_rs::{Socket, Umem};

const ROUNDS: usize = 3;
const SIZE: usize = 64;

fn main() {
    require_root("path");
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let mut rows: Vec<[f64; 7]> = Vec::new();
    for round in 0..ROUNDS {
        let raw_bw = xrdma_perf(&t, Test::RawBw, SIZE).msg_rate();
        let bare = bare_xsk_bw(&t);
        let raw_lat = xrdma_perf(&t, Test::RawLat, SIZE).latency_us(50.0).unwrap();
        let kernel = sockperf_p50(&t, Sockperf::Default, false);
        let spin = sockperf_p50(&t, Sockperf::Spinning, false);
        let ud_bw = xrdma_perf(&t, Test::UdBw, SIZE).msg_rate();
        let ud_lat = xrdma_perf(&t, Test::UdLat, SIZE).latency_us(50.0).unwrap();
        println!(
            "round {round}: raw-bw {raw_bw:.0} msg/s, bare xsk-rs {bare:.0} msg/s, ud-bw {ud_bw:.0} msg/s; \
             p50 raw-lat {raw_lat:.2} us, ud-lat {ud_lat:.2} us, sockperf UDP {kernel:.2} us, \
             spinning {spin:.2} us"
        );
        rows.push([raw_bw, bare, raw_lat, kernel, ud_bw, ud_lat, spin]);
    }
    let m = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    let (raw_bw, bare, raw_lat, kernel, ud_bw, ud_lat, spin) =
        (m(0), m(1), m(2), m(3), m(4), m(5), m(6));
    let idle = idle_cpu_seconds(&t, Duration::from_secs(10));
    println!(
        "raw-bw {SIZE} B over xdp: {raw_bw:.0} msg/s; bare xsk-rs loop: {bare:.0} msg/s; ratio {:.2}",
        raw_bw / bare
    );
    println!(
        "raw-lat {SIZE} B p50 over xdp: {raw_lat:.2} us; kernel UDP ping-pong (sockperf) p50: {kernel:.2} us; ratio {:.2}",
        raw_lat / kernel
    );
    println!(
        "raw-lat {SIZE} B p50 over xdp: {raw_lat:.2} us; spinning sockperf p50: {spin:.2} us; ratio {:.2}",
        raw_lat / spin
    );
    println!(
        "ud-bw {SIZE} B over xdp: {ud_bw:.0} msg/s; raw-bw: {raw_bw:.0} msg/s; ratio {:.2}",
        ud_bw / raw_bw
    );
    println!(
        "ud-lat {SIZE} B p50 over xdp: {ud_lat:.2} us; sockperf UDP p50: {kernel:.2} us; ratio {:.2}",
        ud_lat / kernel
    );
    println!(
        "ud-lat {SIZE} B p50 over xdp: {ud_lat:.2} us; spinning sockperf p50: {spin:.2} us; ratio {:.2}",
        ud_lat / spin
    );
    println!("idle context over xdp: its helper thread used {idle:.3} s of CPU in 10 s");
    println!(
        "{{\"bench\":\"path\",\"raw_bw_msg_rate\":{raw_bw:.0},\"bare_xsk_msg_rate\":{bare:.0},\"raw_bw_ratio\":{:.3},\"raw_lat_p50_us\":{raw_lat:.3},\"sockperf_udp_p50_us\":{kernel:.3},\"raw_lat_ratio\":{:.3},\"ud_bw_msg_rate\":{ud_bw:.0},\"ud_bw_ratio\":{:.3},\"ud_lat_p50_us\":{ud_lat:.3},\"ud_lat_ratio\":{:.3},\"sockperf_spin_udp_p50_us\":{spin:.3},\"raw_lat_spin_ratio\":{:.3},\"ud_lat_spin_ratio\":{:.3},\"idle_cpu_s_per_10s\":{idle:.4}}}",
        raw_bw / bare,
        raw_lat / kernel,
        ud_bw / raw_bw,
        ud_lat / kernel,
        raw_lat / spin,
        ud_lat / spin
    );
}

/// CPU seconds the helper thread of an idle context (xdp, on host A) uses over `period`.
fn idle_cpu_seconds(t: &Topology, period: Duration) -> f64 {
    let iface = t.a().iface().to_string();
    let ctx = t.a().ns().run(move || {
        let io = XdpIo::open(&XdpConfig::new(iface)).expect("opening xdp");
        Context::new(Box::new(io), ContextConfig::default()).expect("context")
    });
    thread::sleep(Duration::from_millis(200));
    let before = progress_thread_ticks();
    thread::sleep(period);
    let used = progress_thread_ticks() - before;
    drop(ctx);
    // SAFETY: sysconf has no preconditions.
    used as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// utime + stime of this process's helper thread, in clock ticks.
fn progress_thread_ticks() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        if comm.trim() == "xrdma-progress" {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
                .split_whitespace()
                .collect();
            return f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        }
    }
    panic!("no xrdma-progress thread");
}

/// The frame raw-bw sends: Ethernet/IPv4/UDP, BTH, DETH, 64 bytes, ICRC.
fn raw_frame(from: &Host, to: &Host) -> Vec<u8> {
    let transport = TransportRepr {
        deth: Some(DethRepr {
            qkey: Qkey::new(0x1111_1111),
            src_qp: Qpn::new_masked(1),
        }),
        ..TransportRepr::new(BthRepr::new(
            Opcode::UD_SEND_ONLY,
            Qpn::new_masked(1),
            Psn::new_masked(0),
        ))
    };
    let mut t = vec![0u8; 256];
    let len = transport.emit(&[7u8; SIZE], &mut t).unwrap();
    t.truncate(len);
    let repr = FrameRepr {
        eth: EthernetRepr {
            src: MacAddr(from.mac()),
            dst: MacAddr(to.mac()),
            ethertype: EtherType::Ipv4,
        },
        ip: IpRepr::V4(Ipv4Repr {
            src: from.ipv4(),
            dst: to.ipv4(),
            protocol: 17,
            payload_len: 8 + t.len() + 4,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }),
        udp: UdpRepr {
            src_port: 0xc001,
            dst_port: wire::ROCEV2_PORT,
            payload_len: t.len() + 4,
        },
    };
    let header = wire::frame::frame_header_len(IpVersion::V4);
    let mut f = vec![0u8; header + t.len() + 4];
    f[header..header + t.len()].copy_from_slice(&t);
    wire::frame::emit_frame_headers(&repr, &mut f).unwrap();
    wire::frame::seal_frame(&mut f, IpVersion::V4).unwrap();
    f
}

/// Frames per second a bare xsk-rs receiver counts while a bare xsk-rs sender pushes the
/// same prebuilt frame as fast as copy mode takes it.
fn bare_xsk_bw(t: &Topology) -> f64 {
    let frame = raw_frame(t.b(), t.a());
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    thread::scope(|s| {
        let (stop_rx, ready_rx) = (stop.clone(), ready.clone());
        let a_iface = t.a().iface().to_string();
        let receiver = s.spawn(move || {
            t.a().ns().run(move || {
                // The same steering xrdma uses (our XDP program), but nothing else of xrdma:
                // xsk-rs rings, driven directly.
                let name = std::ffi::CString::new(a_iface.clone()).unwrap();
                // SAFETY: `name` is a valid C string.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                let redirect =
                    // The generic hook, which xrdma picks on veth.
                    XdpRedirect::attach(&a_iface, ifindex, 1, wire::ROCEV2_PORT, XdpMode::Skb)
                        .expect("attaching the redirect program");
                let (umem, descs) =
                    Umem::new(UmemConfig::default(), NonZeroU32::new(2048).unwrap(), false)
                        .unwrap();
                let config = SocketConfig::builder()
                    .libxdp_flags(xsk_rs::config::LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                    .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
                    .build();
                // SAFETY: a fresh UMEM, not shared, and program loading is inhibited.
                let (_tx, mut rx, fq_cq) = when_queue_free(|| unsafe {
                    Socket::new(config, &umem, &a_iface.parse().unwrap(), 0)
                })
                .expect("bare receiver socket");
                redirect.insert(0, rx.fd().as_raw_fd()).unwrap();
                let (mut fq, _cq) = fq_cq.unwrap();
                // SAFETY: all 2048 frames (the fill ring's size) go to the fill ring and come
                // back only through RX.
                assert_eq!(unsafe { fq.produce(&descs) }, descs.len());
                let mut got = vec![descs[0]; 256];
                ready_rx.store(true, Ordering::Release);
                let (mut count, mut first, mut last) = (0u64, None, Instant::now());
                while !stop_rx.load(Ordering::Acquire) {
                    // SAFETY: descriptors come off this UMEM's RX ring.
                    let n = unsafe { rx.consume(&mut got) };
                    if n > 0 {
                        last = Instant::now();
                        first.get_or_insert(last);
                        count += n as u64;
                        // SAFETY: the frames just consumed go straight back to the kernel.
                        unsafe { fq.produce(&got[..n]) };
                    } else if fq.needs_wakeup() {
                        fq.wakeup(rx.fd_mut(), 0).unwrap();
                    }
                }
                let secs = first
                    .map(|f| last.duration_since(f).as_secs_f64())
                    .unwrap_or(0.0);
                if secs > 0.0 { count as f64 / secs } else { 0.0 }
            })
        });
        // If the sender panics, the receiver must still stop, or the scope never ends.
        let _stop_receiver = SetOnDrop(&stop);
        while !ready.load(Ordering::Acquire) {
            assert!(!receiver.is_finished(), "the bare receiver ended early");
            thread::sleep(Duration::from_millis(1));
        }
        let b_iface = t.b().iface().to_string();
        t.b().ns().run(|| {
            let frames = 4096u32;
            let (umem, mut descs) = Umem::new(
                UmemConfig::default(),
                NonZeroU32::new(frames).unwrap(),
                false,
            )
            .unwrap();
            let config = SocketConfig::builder()
                .libxdp_flags(xsk_rs::config::LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: a fresh UMEM, not shared; no program is loaded for a send-only socket.
            let (mut tx, _rx, fq_cq) = when_queue_free(|| unsafe {
                Socket::new(config, &umem, &b_iface.parse().unwrap(), 0)
            })
            .expect("bare sender socket");
            let (_fq, mut cq) = fq_cq.unwrap();
            for d in descs.iter_mut() {
                // SAFETY: we own every frame of the fresh UMEM.
                unsafe { umem.data_mut(d).cursor().write_all_bytes(&frame) };
            }
            let mut free: Vec<_> = descs.clone();
            let mut done = vec![descs[0]; frames as usize];
            let end = Instant::now() + Duration::from_secs(BW_SECONDS);
            while Instant::now() < end {
                // SAFETY: completed descriptors are ours again.
                let n = unsafe { cq.consume(&mut done) };
                free.extend_from_slice(&done[..n]);
                if !free.is_empty() {
                    // xsk-rs submits all or nothing: offer what the ring has room for. Every
                    // free descriptor is a written frame of this UMEM that we own.
                    let room = (tx.nb_free(free.len() as u32) as usize).min(free.len());
                    // SAFETY: see above.
                    let sent = unsafe { tx.produce(&free[..room]) };
                    free.drain(..sent);
                }
                tx.wakeup().unwrap();
            }
        });
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Release);
        receiver.join().unwrap()
    })
}

/// Sets its flag when dropped, unwinding included.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `bind` until the queue is free, for up to 2 s. The kernel releases an AF_XDP socket's
/// queue in deferred work after the last close, so a queue that the previous test (in this
/// process) just used can give EBUSY for a moment.
fn when_queue_free<T, E: std::error::Error + 'static>(
    mut bind: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match bind() {
            Err(e) if Instant::now() < deadline && is_busy(&e) => {
                thread::sleep(Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

fn is_busy(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(libc::EBUSY);
        }
        cause = c.source();
    }
    false
}

trait WriteAllBytes {
    fn write_all_bytes(&mut self, bytes: &[u8]);
}

impl WriteAllBytes for xsk_rs::umem::frame::Cursor<'_> {
    fn write_all_bytes(&mut self, bytes: &[u8]) {
        std::io::Write::write_all(self, bytes).unwrap();
    }
}
