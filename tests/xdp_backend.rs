//! The `xdp` backend on real hosts: two network namespaces joined by a veth pair.
//!
//! These tests need root (namespaces, BPF, AF_XDP); without it they fail saying so.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use xrdma_testnet::{Host, Topology};
use xrdma_verbs::net::{
    FrameIo, IoMode, NetError, TxMeta, send_copy,
    udp::{UdpConfig, UdpIo},
    xdp::{XdpConfig, XdpIo, XdpMode},
};
use xrdma_verbs::wire;

fn pair() -> Topology {
    Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"))
}

fn open_xdp(host: &Host) -> XdpIo {
    open_xdp_in(host, XdpMode::Auto)
}

fn open_xdp_in(host: &Host, mode: XdpMode) -> XdpIo {
    let iface = host.iface().to_string();
    host.ns()
        .run(move || {
            XdpIo::open(&XdpConfig {
                mode,
                ..XdpConfig::new(iface)
            })
        })
        .unwrap_or_else(|e| panic!("opening xdp ({mode:?}): {e}"))
}

fn open_udp(host: &Host) -> UdpIo {
    let iface = host.iface().to_string();
    host.ns()
        .run(move || UdpIo::open(&UdpConfig::new(iface)))
        .unwrap_or_else(|e| panic!("opening udp: {e}"))
}

fn roce_addr(host: &Host) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(host.ipv4()), wire::ROCEV2_PORT)
}

/// A transport packet: BTH (UD SEND_ONLY, PSN `n`) then `len - 12` bytes derived from `n`.
fn packet(n: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(12) / 4 * 4];
    p[0] = 0x64;
    p[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
    p[9..12].copy_from_slice(&n.to_be_bytes()[1..]);
    for (i, b) in p[12..].iter_mut().enumerate() {
        *b = (n as usize + i) as u8;
    }
    p
}

/// Receives until `n` packets arrived or `timeout` passed.
fn recv_n(io: &mut dyn FrameIo, n: usize, timeout: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    recv_n_batched(io, n, timeout, 64)
}

/// Receives until `n` packets arrived or `timeout` passed, asking for `batch` at a time.
fn recv_n_batched(
    io: &mut dyn FrameIo,
    n: usize,
    timeout: Duration,
    batch: usize,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    while got.len() < n && Instant::now() < deadline {
        io.recv(batch, &mut |m, p| got.push((m.src, p.to_vec())))
            .unwrap();
        if got.len() < n {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    got
}

fn send_all(io: &mut dyn FrameIo, to: SocketAddr, packets: &[Vec<u8>]) {
    for p in packets {
        while !send_copy(io, &TxMeta::to(to, 0xc123), p).unwrap() {
            io.flush().unwrap();
        }
    }
    io.flush().unwrap();
}

#[test]
fn kernel_keeps_answering_ping_and_tcp_on_an_xdp_bound_interface() {
    let t = pair();
    let (a, b) = (t.a(), t.b());
    let mut xdp = open_xdp(a);
    assert_eq!(xdp.link().mode, IoMode::SkbCopy, "the generic hook on veth");

    b.ns()
        .sh(&format!("ping -c 3 -i 0.2 -W 2 {}", a.ipv4()))
        .expect("ping to the xdp-bound host");

    let listen_at = SocketAddr::new(IpAddr::V4(a.ipv4()), 7000);
    let listener = a.ns().run(move || TcpListener::bind(listen_at).unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf[..16]).unwrap();
        buf
    });
    let sent: Vec<u8> = (0..1usize << 20).map(|i| (i * 7) as u8).collect();
    let echoed = b.ns().run(|| {
        let mut c = TcpStream::connect_timeout(&listen_at, Duration::from_secs(5)).unwrap();
        c.write_all(&sent).unwrap();
        let mut e = [0u8; 16];
        c.read_exact(&mut e).unwrap();
        e
    });
    assert_eq!(server.join().unwrap(), sent);
    assert_eq!(&echoed, &sent[..16]);

    // And RoCEv2 still goes to xrdma, not the kernel.
    let mut udp = open_udp(b);
    send_all(&mut udp, roce_addr(a), &[packet(1, 64)]);
    assert_eq!(recv_n(&mut xdp, 1, Duration::from_secs(2)).len(), 1);
}

fn exchange(x: &mut dyn FrameIo, x_addr: SocketAddr, y: &mut dyn FrameIo, y_addr: SocketAddr) {
    one_way(x, x_addr, y, y_addr, "x to y");
    one_way(y, y_addr, x, x_addr, "y to x");
}

/// Sends 600 packets of assorted sizes up to the link's largest and checks each arrives
/// intact, in order, from the right address.
fn one_way(
    from: &mut dyn FrameIo,
    from_addr: SocketAddr,
    to: &mut dyn FrameIo,
    to_addr: SocketAddr,
    what: &str,
) {
    one_way_batched(from, from_addr, to, to_addr, what, 64);
}

/// [`one_way`], the receiver asking for `batch` packets at a time.
fn one_way_batched(
    from: &mut dyn FrameIo,
    from_addr: SocketAddr,
    to: &mut dyn FrameIo,
    to_addr: SocketAddr,
    what: &str,
    batch: usize,
) {
    let ipv6 = to_addr.is_ipv6();
    let largest = from
        .link()
        .max_transport_len(ipv6)
        .min(to.link().max_transport_len(ipv6));
    let sizes = [12, 16, 64, 256, 1024, largest];
    let packets: Vec<Vec<u8>> = (0..600)
        .map(|n| packet(n, sizes[n as usize % sizes.len()]))
        .collect();
    send_all(from, to_addr, &packets);
    let got = recv_n_batched(to, packets.len(), Duration::from_secs(5), batch);
    assert_eq!(
        got.len(),
        packets.len(),
        "{what}: {} of {} arrived",
        got.len(),
        packets.len()
    );
    for ((src, p), want) in got.iter().zip(&packets) {
        assert_eq!(src.ip(), from_addr.ip());
        assert_eq!(p, want);
    }
}

#[test]
fn xdp_and_udp_endpoints_exchange_frames_both_ways() {
    let t = pair();
    let mut x = open_xdp(t.a());
    let mut u = open_udp(t.b());
    exchange(&mut x, roce_addr(t.a()), &mut u, roce_addr(t.b()));
    assert_eq!(x.stats().rx_dropped(), 0);
    assert_eq!(u.stats().rx_dropped(), 0);
}

/// Eight messages' packets as RC segments them: a longer first, equal middles, a shorter last.
fn messages() -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    for _ in 0..8 {
        let n = packets.len() as u32;
        packets.push(packet(n, 1040));
        for k in 1..=60 {
            packets.push(packet(n + k, 1024));
        }
        packets.push(packet(n + 61, 300));
    }
    packets
}

/// Sends `packets` from `from` to `to` and checks they all arrive, in order, unharmed.
fn stream(from: &mut UdpIo, x: &mut XdpIo, to: SocketAddr, packets: &[Vec<u8>]) {
    send_all(from, to, packets);
    let got = recv_n(x, packets.len(), Duration::from_secs(5));
    let s = x.stats();
    assert_eq!(
        got.len(),
        packets.len(),
        "{} of {} arrived; xdp counters: {s:?}",
        got.len(),
        packets.len()
    );
    assert!(
        got.iter().map(|(_, p)| p).eq(packets.iter()),
        "the packets differ or arrived out of order"
    );
    assert_eq!(s.rx_dropped(), 0, "{s:?}");
}

/// Has `x` send `u` one packet from UDP source port `src_port`.
fn hello(x: &mut XdpIo, u: &mut UdpIo, to: SocketAddr, src_port: u16) {
    assert!(send_copy(x, &TxMeta::to(to, src_port), &packet(0, 64)).unwrap());
    x.flush().unwrap();
    assert_eq!(recv_n(u, 1, Duration::from_secs(2)).len(), 1);
}

/// A `udp` endpoint sends GSO messages only to peers that send from the port they are sent
/// to, as kernel sockets do: across a veth such a message arrives whole, which an AF_XDP
/// socket cannot take. And where the kernel cuts one up (here before the veth, whose peer
/// runs an XDP program on the driver hook), it numbers the pieces' IPv4 identifications on
/// from 0; each piece must carry the ICRC of its own header, which an `xdp` endpoint checks,
/// as a RoCE NIC or Linux rxe does.
#[test]
fn udp_gso_goes_only_to_sockets_and_its_pieces_carry_their_own_icrc() {
    let t = pair();
    let mut x = open_xdp_in(t.a(), XdpMode::DriverCopy);
    let packets = messages();

    // An xdp endpoint's QPs send from ports of their own: no GSO to it.
    let mut u = open_udp(t.b());
    assert_eq!(u.link().mode, IoMode::KernelOffload);
    hello(&mut x, &mut u, roce_addr(t.b()), 0xc123);
    stream(&mut u, &mut x, roce_addr(t.a()), &packets);
    assert_eq!(u.stats().tx_gso_sends, 0, "{:?}", u.stats());
    drop(u);

    // Heard from the RoCEv2 port, the peer looks like a socket and gets GSO messages.
    let mut u = open_udp(t.b());
    hello(&mut x, &mut u, roce_addr(t.b()), wire::ROCEV2_PORT);
    stream(&mut u, &mut x, roce_addr(t.a()), &packets);
    assert!(u.stats().tx_gso_sends >= 8, "{:?}", u.stats());
}

#[test]
fn two_xdp_endpoints_exchange_frames_both_ways() {
    let t = pair();
    let mut x = open_xdp(t.a());
    let mut y = open_xdp(t.b());
    exchange(&mut x, roce_addr(t.a()), &mut y, roce_addr(t.b()));
}

/// A veth pair whose links carry `mtu`-byte IP packets.
fn jumbo_pair(mtu: u32) -> Topology {
    Topology::builder()
        .mtu(mtu)
        .pair()
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"))
}

/// Two UMEM frames' worth of a datagram, less the Ethernet header: the most of a jumbo
/// link's MTU an xdp endpoint uses (a frame holds 4096 - 256 bytes of headroom).
const XDP_JUMBO_MTU: u32 = 2 * (4096 - 256) - 14;

#[test]
fn jumbo_frames_span_two_umem_frames_both_ways() {
    let t = jumbo_pair(9000);
    let mut x = open_xdp(t.a());
    let mut y = open_xdp(t.b());
    assert_eq!(x.link().mtu, XDP_JUMBO_MTU);
    assert_eq!(x.link().mode, IoMode::SkbCopy, "the generic hook on veth");
    exchange(&mut x, roce_addr(t.a()), &mut y, roce_addr(t.b()));
    // Asking for one descriptor at a time splits every two-frame datagram across calls.
    one_way_batched(
        &mut x,
        roce_addr(t.a()),
        &mut y,
        roce_addr(t.b()),
        "x to y, one at a time",
        1,
    );
    assert_eq!(x.stats().rx_dropped() + y.stats().rx_dropped(), 0);

    // The kernel's UDP stack on the other side sends and takes them whole.
    drop(y);
    let mut u = open_udp(t.b());
    exchange(&mut x, roce_addr(t.a()), &mut u, roce_addr(t.b()));
    assert_eq!(x.stats().rx_dropped(), 0);
}

#[test]
fn jumbo_frames_work_on_the_driver_hook_too() {
    let t = jumbo_pair(9000);
    let mut x = open_xdp_in(t.a(), XdpMode::DriverCopy);
    assert_eq!(x.link().mode, IoMode::DriverCopy);
    assert_eq!(x.link().mtu, XDP_JUMBO_MTU);
    let mut u = open_udp(t.b());
    exchange(&mut x, roce_addr(t.a()), &mut u, roce_addr(t.b()));
}

#[test]
fn frames_longer_than_the_receive_buffers_are_dropped_and_counted() {
    let t = jumbo_pair(16000);
    let (a, b) = (t.a(), t.b());
    let mut x = open_xdp(a);
    // 15,000 bytes span four UMEM frames; a receiver holds three (a 9000-byte jumbo frame).
    let huge = frame(b, a, &packet(1, 15_000));
    let good = frame(b, a, &packet(2, 5_000));
    inject(b, vec![huge, good]);
    let got = recv_n(&mut x, 1, Duration::from_secs(2));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, packet(2, 5_000));
    std::thread::sleep(Duration::from_millis(100));
    assert!(recv_n(&mut x, 1, Duration::from_millis(200)).is_empty());
    let s = x.stats();
    assert_eq!((s.rx_packets, s.rx_oversize), (1, 1), "{s:?}");
    assert_eq!(s.rx_dropped(), 1, "{s:?}");
}

/// Sends raw Ethernet frames out of `iface` with an AF_PACKET socket.
fn inject(host: &Host, frames: Vec<Vec<u8>>) {
    let iface = host.iface().to_string();
    host.ns().run(move || {
        let name = std::ffi::CString::new(iface).unwrap();
        // SAFETY: plain libc calls on a socket this closure owns; the frame buffers and the
        // sockaddr_ll live across each sendto.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            assert!(ifindex > 0);
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            for f in &frames {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = ifindex as i32;
                sll.sll_halen = 6;
                sll.sll_addr[..6].copy_from_slice(&f[..6]);
                let rc = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    rc,
                    f.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    });
}

/// A well-formed RoCEv2 frame from `from` to `to` carrying `transport`.
fn frame(from: &Host, to: &Host, transport: &[u8]) -> Vec<u8> {
    let repr = wire::FrameRepr {
        eth: wire::EthernetRepr {
            src: wire::MacAddr(from.mac()),
            dst: wire::MacAddr(to.mac()),
            ethertype: wire::EtherType::Ipv4,
        },
        ip: wire::IpRepr::V4(wire::Ipv4Repr {
            src: from.ipv4(),
            dst: to.ipv4(),
            protocol: 17,
            payload_len: 8 + transport.len() + 4,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }),
        udp: wire::UdpRepr {
            src_port: 0xc000,
            dst_port: wire::ROCEV2_PORT,
            payload_len: transport.len() + 4,
        },
    };
    let header = wire::frame::frame_header_len(wire::IpVersion::V4);
    let mut f = vec![0u8; header + transport.len() + 4];
    f[header..header + transport.len()].copy_from_slice(transport);
    wire::frame::emit_frame_headers(&repr, &mut f).unwrap();
    wire::frame::seal_frame(&mut f, wire::IpVersion::V4).unwrap();
    f
}

#[test]
fn malformed_frames_are_dropped_and_counted_and_good_ones_still_arrive() {
    let t = pair();
    let (a, b) = (t.a(), t.b());
    let mut x = open_xdp(a);
    let good = frame(b, a, &packet(1, 64));
    let eth_ip = 14 + 20;

    let mut bad_icrc = good.clone();
    bad_icrc[eth_ip + 8 + 20] ^= 0x40;

    let mut version = packet(2, 64);
    version[1] |= 0x01; // BTH TVer 1
    let version = frame(b, a, &version);

    // IP total length longer than the frame.
    let mut ip_len = good.clone();
    ip_len[14 + 2..14 + 4].copy_from_slice(&((good.len() - 14 + 100) as u16).to_be_bytes());
    let sum = ipv4_checksum(&ip_len[14..34]);
    ip_len[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());

    // UDP length longer than the IP payload.
    let mut udp_len = good.clone();
    udp_len[eth_ip + 4..eth_ip + 6].copy_from_slice(&2000u16.to_be_bytes());

    // Too short to hold a BTH and an ICRC: a 12-byte transport cut to nothing, with the IP
    // and UDP lengths (and the IP checksum) made to agree with what is left.
    let mut short = frame(b, a, &packet(3, 12));
    short.truncate(eth_ip + 8 + 4);
    short[14 + 2..14 + 4].copy_from_slice(&((20 + 8 + 4) as u16).to_be_bytes());
    let sum = ipv4_checksum(&short[14..34]);
    short[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    short[eth_ip + 4..eth_ip + 6].copy_from_slice(&12u16.to_be_bytes());

    inject(
        b,
        vec![bad_icrc, version, ip_len, udp_len, short, good.clone()],
    );
    let got = recv_n(&mut x, 1, Duration::from_secs(2));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, packet(1, 64));
    // Give any straggler a moment, then read the counters.
    std::thread::sleep(Duration::from_millis(100));
    assert!(recv_n(&mut x, 1, Duration::from_millis(200)).is_empty());
    let s = x.stats();
    assert_eq!(s.rx_packets, 1, "{s:?}");
    assert_eq!(s.rx_bad_icrc, 1, "{s:?}");
    assert_eq!(s.rx_unsupported, 1, "{s:?}");
    assert_eq!(s.rx_dropped(), 5, "{s:?}");
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for (i, pair) in header.chunks(2).enumerate() {
        if i == 5 {
            continue; // the checksum field itself
        }
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn opening_reports_missing_interfaces_busy_interfaces_and_missing_privilege() {
    let t = pair();
    let a = t.a();
    let e = a
        .ns()
        .run(|| XdpIo::open(&XdpConfig::new("nosuch0")))
        .err()
        .expect("no such interface");
    assert!(matches!(e, NetError::NoSuchInterface(_)), "{e}");

    let _first = open_xdp(a);
    let iface = a.iface().to_string();
    let e = a
        .ns()
        .run(move || XdpIo::open(&XdpConfig::new(iface)))
        .err()
        .expect("second open must fail");
    assert!(e.to_string().contains("already has an XDP program"), "{e}");

    // A thread that dropped its effective capabilities is what an unprivileged user is.
    let iface = t.b().iface().to_string();
    let e = t
        .b()
        .ns()
        .run(move || {
            drop_effective_capabilities();
            XdpIo::open(&XdpConfig::new(iface))
        })
        .err()
        .expect("unprivileged open must fail");
    assert!(matches!(e, NetError::NotPermitted(_)), "{e}");
    assert!(e.to_string().contains("root"), "{e}");
}

#[test]
fn driver_hook_mode_works_too() {
    // On veth the automatic mode takes the generic hook; the driver's is there if asked for.
    let t = pair();
    let mut x = open_xdp_in(t.a(), XdpMode::DriverCopy);
    assert_eq!(x.link().mode, IoMode::DriverCopy);
    let mut u = open_udp(t.b());
    exchange(&mut x, roce_addr(t.a()), &mut u, roce_addr(t.b()));
}

/// Clears this thread's effective capability set (capabilities are per thread on Linux).
fn drop_effective_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget/capset with a version-3 header and two data words, as the ABI wants.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        for d in &mut data {
            d.effective = 0;
        }
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

#[test]
fn ipv6_frames_flow_between_xdp_and_udp() {
    let t = Topology::builder()
        .ipv6(true)
        .pair()
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    let (a6, b6) = (a.ipv6().unwrap(), b.ipv6().unwrap());
    let mut x = open_xdp(a);
    let b_iface = b.iface().to_string();
    let mut u = b
        .ns()
        .run(move || {
            UdpIo::open(&UdpConfig {
                addr: Some(IpAddr::V6(b6)),
                ..UdpConfig::new(b_iface)
            })
        })
        .unwrap();
    let x_addr = SocketAddr::new(IpAddr::V6(a6), wire::ROCEV2_PORT);
    let u_addr = SocketAddr::new(IpAddr::V6(b6), wire::ROCEV2_PORT);
    exchange(&mut x, x_addr, &mut u, u_addr);
    assert_eq!(x.stats().rx_dropped() + u.stats().rx_dropped(), 0);
}

#[test]
fn every_active_queue_gets_a_socket() {
    let t = Topology::builder()
        .rx_queues(2)
        .pair()
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let mut x = open_xdp(t.a());
    let active = t
        .a()
        .ns()
        .sh(&format!(
            "ls /sys/class/net/{}/queues | grep -c rx-",
            t.a().iface()
        ))
        .unwrap();
    assert_eq!(
        x.link().queues.to_string(),
        active.trim(),
        "one socket per active receive queue"
    );
    let mut u = open_udp(t.b());
    exchange(&mut x, roce_addr(t.a()), &mut u, roce_addr(t.b()));
}
