//! Datagram sockets between two contexts of a simulated network, in one process: UD
//! traffic crosses the simulator, while each socket's kernel UDP socket (which rsocket's
//! protocol resolves peers over) lives on loopback, the hosts being 127.0.0.11 and .12.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Duration;

use xrdma_rsocket::proto::dgram::{UdpHeader, UdpOp};
use xrdma_rsocket::{RsDatagram, stats};
use xrdma_verbs::cm::add_device;
use xrdma_verbs::net::sim::{SimConfig, SimNetwork};
use xrdma_verbs::verbs::{Context, ContextConfig};
use xrdma_verbs::wire::Qpn;

use common::poll;

const A: [u8; 4] = [127, 0, 0, 11];
const B: [u8; 4] = [127, 0, 0, 12];

/// The two hosts' contexts, on one simulated network (MTU 9000, so 4096-byte RoCE
/// messages) shared by the tests.
fn hosts() -> (&'static Context, &'static Context) {
    static NET: OnceLock<(SimNetwork, Context, Context)> = OnceLock::new();
    let (_, a, b) = NET.get_or_init(|| {
        let net = SimNetwork::new(SimConfig {
            delay: Duration::ZERO,
            mtu: 9000,
            ..SimConfig::default()
        });
        let open = |ip: [u8; 4], seed: u64| {
            let io = net.endpoint(SocketAddr::from((ip, 4791))).unwrap();
            let ctx = Context::new(Box::new(io), ContextConfig::seeded(seed)).unwrap();
            add_device(&ctx).unwrap();
            ctx
        };
        let (a, b) = (open(A, 1), open(B, 2));
        let clock = net.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(1));
                clock.advance(Duration::from_millis(1));
            }
        });
        (net, a, b)
    });
    (a, b)
}

fn socket(ip: [u8; 4]) -> RsDatagram {
    hosts();
    RsDatagram::bind(SocketAddr::from((ip, 0))).unwrap()
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 + seed * 13 + i / 251) as u8)
        .collect()
}

#[test]
fn ping_pong_of_every_size_up_to_the_limit() {
    let (a, b) = (socket(A), socket(B));
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let max = a.max_payload_to(b_addr).unwrap();
    assert_eq!(max, 2032, "2048-byte slots behind a 16-byte UDP header");
    let sent_before = (
        hosts().0.net_stats().tx_packets,
        hosts().1.net_stats().tx_packets,
    );
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!(from, a_addr);
            if n == 1 && buf[0] == 0xff {
                return;
            }
            assert_eq!(b.send_to(&buf[..n], from).unwrap(), n);
        }
    });
    let mut sizes: Vec<usize> = (1..=64).collect();
    sizes.extend((65..max).step_by(61));
    sizes.extend([max - 1, max]);
    let mut buf = vec![0u8; 4096];
    for (i, &size) in sizes.iter().enumerate() {
        let data = pattern(size, i);
        assert_eq!(a.send_to(&data, b_addr).unwrap(), size);
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (size, b_addr));
        assert!(buf[..n] == data[..], "echo of {size} bytes differs");
    }
    let e = a.send_to(&vec![0u8; max + 1], b_addr).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
    a.send_to(&[0xff], b_addr).unwrap();
    echo.join().unwrap();
    // The datagrams crossed the simulated network: over UD, once the peers knew each
    // other's QPs.
    let sent_after = (
        hosts().0.net_stats().tx_packets,
        hosts().1.net_stats().tx_packets,
    );
    assert!(sent_after.0 > sent_before.0 && sent_after.1 > sent_before.1);
}

/// Each side sends bursts to the other, which checks every datagram whole.
#[test]
fn many_datagrams_both_ways_keep_their_boundaries() {
    let (a, b) = (socket(A), socket(B));
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    const BURST: usize = 32;
    const ROUNDS: usize = 40;
    let message = |seq: usize| {
        let len = 4 + (seq * 37) % 1500;
        let mut m = pattern(len, seq);
        m[..4].copy_from_slice(&(seq as u32).to_be_bytes());
        m
    };
    let receive_burst = |s: &RsDatagram, from: SocketAddr, first: usize| {
        let mut seen = BTreeSet::new();
        let mut buf = vec![0u8; 4096];
        for _ in 0..BURST {
            let (n, src) = s.recv_from(&mut buf).unwrap();
            assert_eq!(src, from);
            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            assert!(buf[..n] == message(seq)[..], "datagram {seq} differs");
            seen.insert(seq);
        }
        // UDP may reorder the first datagrams (sent before the peer's QP was known)
        // with later ones, but none is lost or merged.
        assert_eq!(seen, (first..first + BURST).collect());
    };
    let mut seq = 0;
    for _ in 0..ROUNDS {
        for i in 0..BURST {
            a.send_to(&message(seq + i), b_addr).unwrap();
        }
        receive_burst(&b, a_addr, seq);
        seq += BURST;
        for i in 0..BURST {
            b.send_to(&message(seq + i), a_addr).unwrap();
        }
        receive_burst(&a, b_addr, seq);
        seq += BURST;
    }
}

#[test]
fn recv_from_names_each_sender() {
    let (a1, a2, b) = (socket(A), socket(A), socket(B));
    let b_addr = b.local_addr().unwrap();
    a1.send_to(b"one", b_addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"one"[..], a1.local_addr().unwrap()));
    a2.send_to(b"two", b_addr).unwrap();
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"two"[..], a2.local_addr().unwrap()));
}

#[test]
fn a_connected_socket_hears_only_its_peer() {
    let (peer, other, b) = (socket(A), socket(A), socket(B));
    let b_addr = b.local_addr().unwrap();
    let mut buf = [0u8; 16];
    // Both senders learn b's QP first, so that what they send later goes over UD, where
    // the kernel's filter of the connected UDP socket cannot drop it for us.
    for s in [&other, &peer] {
        s.send_to(b"hello", b_addr).unwrap();
        let (_, from) = b.recv_from(&mut buf).unwrap();
        b.send_to(b"hi", from).unwrap();
        s.recv_from(&mut buf).unwrap();
    }

    b.connect(peer.local_addr().unwrap()).unwrap();
    assert_eq!(b.peer_addr().unwrap(), peer.local_addr().unwrap());
    // Both senders are on one host, so their datagrams reach b in the order sent: the
    // stray one comes first, and must not be received.
    other.send_to(b"stray", b_addr).unwrap();
    peer.send_to(b"wanted", b_addr).unwrap();
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"wanted");
    b.send(b"back").unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"back"[..], b_addr));
}

#[test]
fn non_blocking_and_the_descriptor_poll_as_the_socket_is() {
    let (a, b) = (socket(A), socket(B));
    let b_addr = b.local_addr().unwrap();
    let fd = b.as_raw_fd();
    b.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        b.recv_from(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert_eq!(poll(fd, libc::POLLIN, 0), 0, "nothing to read yet");
    assert_eq!(poll(fd, libc::POLLOUT, 0), libc::POLLOUT);
    a.send_to(b"first", b_addr).unwrap();
    a.send_to(b"second", b_addr).unwrap();
    assert_eq!(poll(fd, libc::POLLIN, 10_000), libc::POLLIN);
    let mut got = BTreeSet::new();
    while got.len() < 2 {
        assert_eq!(poll(fd, libc::POLLIN, 10_000), libc::POLLIN);
        let (n, _) = b.recv_from(&mut buf).unwrap();
        got.insert(buf[..n].to_vec());
    }
    assert_eq!(got, [b"first".to_vec(), b"second".to_vec()].into());
    assert_eq!(poll(fd, libc::POLLIN, 0), 0, "all read");
    assert_eq!(
        b.recv_from(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    // MSG_DONTWAIT on a blocking socket.
    b.set_nonblocking(false).unwrap();
    let e = b
        .recv_from_with_flags(&mut buf, libc::MSG_DONTWAIT)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
}

#[test]
fn a_program_that_spins_then_sleeps_in_poll_sees_what_comes() {
    // Calls in a loop leave the socket's events unarmed (they take what comes
    // themselves); the descriptor must still show a datagram that comes once they have
    // stopped and the program sleeps in poll(2), without any call of ours between.
    let (a, b) = (socket(A), socket(B));
    let b_addr = b.local_addr().unwrap();
    b.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    // Until `a` learns `b`'s QPN (from `b`'s answer on the UDP socket), its datagrams go
    // over UDP, whose socket the service thread watches: send until one goes over UD
    // (`a`'s context transmits it), each taken by spinning calls, which spend the events
    // armed before.
    loop {
        let before = hosts().0.net_stats().tx_packets;
        a.send_to(b"spun", b_addr).unwrap();
        while b.recv_from(&mut buf).is_err() {}
        if hosts().0.net_stats().tx_packets > before {
            break;
        }
    }
    for _ in 0..1000 {
        let e = b.recv_from(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
    }
    let (go, went) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        went.recv().unwrap();
        a.send_to(b"late", b_addr).unwrap();
        a
    });
    go.send(()).unwrap();
    assert_eq!(poll(b.as_raw_fd(), libc::POLLIN, 10_000), libc::POLLIN);
    assert_eq!(b.recv_from(&mut buf).unwrap().0, 4);
    assert_eq!(&buf[..4], b"late");
    sender.join().unwrap();
}

#[test]
fn a_short_buffer_truncates_and_peek_leaves_the_datagram() {
    let (a, b) = (socket(A), socket(B));
    let b_addr = b.local_addr().unwrap();
    let long = pattern(300, 1);
    a.send_to(&long, b_addr).unwrap();
    a.send_to(b"next", b_addr).unwrap();
    let mut first = [0u8; 300];
    // Whichever came first, peek shows it, and recv takes the same one.
    let (n, _) = b.peek_from(&mut first).unwrap();
    let long_first = n == 300;
    let mut small = [0u8; 10];
    let (n, from) = b.recv_from(&mut small).unwrap();
    assert_eq!(from, a.local_addr().unwrap());
    if long_first {
        assert_eq!((n, &small[..]), (10, &long[..10]));
    } else {
        assert_eq!(&small[..n], b"next");
    }
    let (n, _) = b.recv_from(&mut first).unwrap();
    if long_first {
        assert_eq!(
            &first[..n],
            b"next",
            "the rest of the long datagram is lost"
        );
    } else {
        assert_eq!(&first[..n], &long[..]);
    }
}

#[test]
fn calls_fail_as_a_udp_socket_s_do() {
    let (a, b) = (socket(A), socket(B));
    let b_addr = b.local_addr().unwrap();
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    let e = a.send_to(b"x", v6).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAFNOSUPPORT));
    assert_eq!(
        a.send(b"x").unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    assert_eq!(
        a.peer_addr().unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    let max = a.max_payload_to(b_addr).unwrap();
    let e = a.send_to(&vec![1u8; max + 1], b_addr).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
    a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    assert_eq!(a.read_timeout().unwrap(), Some(Duration::from_millis(20)));
    let e = a.recv_from(&mut [0u8; 4]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert!(a.set_write_timeout(Some(Duration::ZERO)).is_err());
    assert!(a.take_error().unwrap().is_none());
    // A clone is the same socket; the socket lives while a handle does.
    let clone = a.try_clone().unwrap();
    drop(a);
    clone.send_to(b"still here", b_addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still here");
}

/// The test plays an rsocket peer from bytes: the answer to its data over UDP names the
/// socket's QP, and what is not rsocket's header is counted and dropped.
#[test]
fn the_udp_socket_speaks_rsocket_s_resolution_protocol() {
    let b = socket(B);
    let b_addr = b.local_addr().unwrap();
    let raw = UdpSocket::bind(SocketAddr::from((A, 0))).unwrap();
    let before = stats().dgram_dropped;
    let garbage: [&[u8]; 3] = [b"short", &[0u8; 16], &[0x55; 40]];
    for g in garbage {
        raw.send_to(g, b_addr).unwrap();
    }
    let mut msg = [0u8; 64];
    let hdr = UdpHeader {
        op: UdpOp::Data,
        qpn: Qpn::new(0x42).unwrap(),
        addr: A.into(),
    };
    let h = hdr.emit(&mut msg).unwrap();
    msg[h..h + 5].copy_from_slice(b"hello");
    raw.send_to(&msg[..h + 5], b_addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"hello"[..], raw.local_addr().unwrap())
    );
    // The garbage came first on one path, so it has been seen.
    assert!(stats().dgram_dropped >= before + garbage.len() as u64);
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (n, from) = raw.recv_from(&mut msg).unwrap();
    assert_eq!(from, b_addr);
    let (reply, rest) = UdpHeader::parse(&msg[..n], from).unwrap();
    assert_eq!(reply.op, UdpOp::Ctrl);
    assert_eq!(reply.addr, std::net::IpAddr::from(B));
    assert!(rest.is_empty());
}
