use super::*;
use crate::net::send_copy;
use crate::wire;
use std::time::{Duration, Instant};

fn endpoint(addr: &str) -> UdpIo {
    endpoint_with(addr, true)
}

/// An endpoint on loopback address `addr`, with or without GSO and GRO.
fn endpoint_with(addr: &str, offload: bool) -> UdpIo {
    UdpIo::open(&UdpConfig {
        addr: Some(addr.parse().unwrap()),
        port: 0,
        offload,
        ..UdpConfig::new("lo")
    })
    .unwrap()
}

fn bth(psn: u32) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0] = 0x64;
    p[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
    p[9..12].copy_from_slice(&psn.to_be_bytes()[1..]);
    p
}

/// Receives until `n` datagrams arrived or a second passed.
fn recv_n(io: &mut UdpIo, n: usize) -> Vec<(RxMeta, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    while got.len() < n && Instant::now() < deadline {
        io.recv(64, &mut |m, p| got.push((*m, p.to_vec()))).unwrap();
    }
    got
}

#[test]
fn two_loopback_endpoints_exchange_datagrams_both_ways() {
    let mut a = endpoint("127.0.0.1");
    let mut b = endpoint("127.0.0.2");
    for psn in 0..100 {
        assert!(send_copy(&mut a, &TxMeta::to(b.local_addr(), 0xc000), &bth(psn)).unwrap());
    }
    a.flush().unwrap();
    let got = recv_n(&mut b, 100);
    assert_eq!(got.len(), 100);
    for (psn, (meta, p)) in got.iter().enumerate() {
        assert_eq!(meta.src, a.local_addr());
        assert_eq!(meta.dst, b.local_addr().ip());
        assert_eq!(p.as_slice(), bth(psn as u32));
    }
    send_copy(&mut b, &TxMeta::to(a.local_addr(), 0xc000), &bth(7)).unwrap();
    b.flush().unwrap();
    assert_eq!(recv_n(&mut a, 1)[0].1, bth(7));
    assert_eq!(a.stats().tx_packets, 100);
    assert_eq!(b.stats().rx_packets, 100);
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let mut b = endpoint("127.0.0.2");
    let raw = UdpSocket::bind("127.0.0.3:0").unwrap();
    let from = raw.local_addr().unwrap();
    let to = b.local_addr();
    // Short: less than a BTH and an ICRC.
    raw.send_to(&[0x64, 0, 0xff], to).unwrap();
    // Right length, wrong ICRC.
    let mut bad = [0u8; 16];
    bad[..12].copy_from_slice(&bth(1));
    raw.send_to(&bad, to).unwrap();
    // Good ICRC, but a BTH transport version we do not speak.
    let mut v1 = [0u8; 16];
    v1[..12].copy_from_slice(&bth(2));
    v1[1] = 0x01;
    datagram::seal(from, to, &mut v1, 12).unwrap();
    raw.send_to(&v1, to).unwrap();
    // And one good datagram, which must still get through.
    let mut good = [0u8; 16];
    good[..12].copy_from_slice(&bth(3));
    datagram::seal(from, to, &mut good, 12).unwrap();
    raw.send_to(&good, to).unwrap();
    let got = recv_n(&mut b, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, bth(3));
    let s = b.stats();
    assert_eq!(
        (
            s.rx_truncated,
            s.rx_bad_icrc,
            s.rx_unsupported,
            s.rx_packets
        ),
        (1, 1, 1, 1),
        "{s:?}"
    );
}

/// The UDP payload (BTH `psn` and ICRC) of a datagram from `from` to `to` whose IPv4
/// header carries identification `ident`, as Linux rxe sends it (DF, ECT(0), TTL 64).
fn payload_with_ident(from: SocketAddr, to: SocketAddr, ident: u16, psn: u32) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (from, to) else {
        panic!("IPv4 only");
    };
    let mut headers =
        icrc::pseudo_headers_v4(*s.ip(), *d.ip(), s.port(), d.port(), 12 + icrc::ICRC_LEN).unwrap();
    headers[4..6].copy_from_slice(&ident.to_be_bytes());
    headers[1] = 0x02;
    headers[8] = 64;
    let mut payload = bth(psn).to_vec();
    payload.extend_from_slice(&icrc::compute_v4(&headers, &bth(psn)).to_le_bytes());
    payload
}

#[test]
fn datagrams_with_any_ipv4_identification_are_accepted_and_counted() {
    let mut b = endpoint("127.0.0.2");
    let raw = UdpSocket::bind("127.0.0.3:0").unwrap();
    let (from, to) = (raw.local_addr().unwrap(), b.local_addr());
    for (psn, ident) in [(1, 0x1234), (2, 0), (3, 1), (4, 0xffff)] {
        raw.send_to(&payload_with_ident(from, to, ident, psn), to)
            .unwrap();
    }
    // A corrupted payload byte fails, whatever identification it was sent with.
    for ident in [0, 0x1234] {
        let mut bad = payload_with_ident(from, to, ident, 5);
        bad[6] ^= 0x20;
        raw.send_to(&bad, to).unwrap();
    }
    let got = recv_n(&mut b, 4);
    let psns: Vec<_> = got.iter().map(|(_, p)| p[11]).collect();
    assert_eq!(psns, [1, 2, 3, 4]);
    let s = b.stats();
    assert_eq!(
        (s.rx_packets, s.rx_ipv4_ident_solved, s.rx_bad_icrc),
        (4, 3, 2),
        "{s:?}"
    );
}

proptest::proptest! {
    #[test]
    fn any_ipv4_identification_passes_the_check_and_corruption_does_not(
        ident: u16,
        psn in 0u32..1 << 24,
        corrupt_bit in 0usize..12 * 8,
    ) {
        let from: SocketAddr = "198.18.0.2:49152".parse().unwrap();
        let to: SocketAddr = "198.18.0.1:4791".parse().unwrap();
        let payload = payload_with_ident(from, to, ident, psn);
        proptest::prop_assert_eq!(
            datagram::open_any_ident(from, to, &payload, 0),
            Ok((&bth(psn)[..], ident != 0))
        );
        // Any single-bit error in the BTH but its masked FECN/BECN byte is caught.
        let mut bad = payload.clone();
        let bit = if corrupt_bit / 8 == 4 { corrupt_bit + 8 } else { corrupt_bit };
        bad[bit / 8] ^= 1 << (bit % 8);
        proptest::prop_assert_eq!(
            datagram::open_any_ident(from, to, &bad, 0),
            Err(wire::Error::BadChecksum)
        );
    }
}

#[test]
fn descriptor_polls_readable_when_a_datagram_waits() {
    let mut a = endpoint("127.0.0.1");
    let b = endpoint("127.0.0.2");
    let mut p = libc::pollfd {
        fd: b.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0);
    send_copy(&mut a, &TxMeta::to(b.local_addr(), 1), &bth(0)).unwrap();
    a.flush().unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::poll(&mut p, 1, 1000) }, 1);
}

#[test]
fn bad_configuration_gives_clear_errors() {
    let e = UdpIo::open(&UdpConfig::new("nosuchif0")).err().unwrap();
    assert!(
        matches!(e, NetError::NoSuchInterface(ref n) if n == "nosuchif0"),
        "{e}"
    );
    let e = UdpIo::open(&UdpConfig {
        addr: Some("198.18.9.9".parse().unwrap()),
        port: 0,
        ..UdpConfig::new("lo")
    })
    .err()
    .unwrap();
    assert!(matches!(e, NetError::InvalidConfig(_)), "{e}");
    let mut a = endpoint("127.0.0.1");
    let v6 = "[::1]:4791".parse().unwrap();
    assert!(matches!(
        send_copy(&mut a, &TxMeta::to(v6, 1), &bth(0)),
        Err(NetError::AddressFamily(_))
    ));
}

/// A transport packet of `len` bytes: BTH `psn`, then bytes that depend on it.
fn packet(psn: u32, len: usize) -> Vec<u8> {
    let mut p = bth(psn).to_vec();
    p.extend((0..len - p.len()).map(|i| (i as u32 * 7 + psn) as u8));
    p
}

/// The lengths of a RoCE message's packets: a longer first (as with a RETH), equal middles,
/// a shorter last.
fn message_lens(middles: usize) -> Vec<usize> {
    let mut lens = vec![1040];
    lens.extend(std::iter::repeat_n(1024, middles));
    lens.push(300);
    lens
}

/// Sends packets of `lens` (PSNs from 0) from `a` to `to`, and flushes.
fn send_message(a: &mut UdpIo, to: SocketAddr, lens: &[usize]) {
    for (psn, len) in lens.iter().enumerate() {
        assert!(send_copy(a, &TxMeta::to(to, 1), &packet(psn as u32, *len)).unwrap());
    }
    a.flush().unwrap();
}

/// Receives what [`send_message`] sent with `lens` and checks it all came, in order.
fn expect_message(b: &mut UdpIo, lens: &[usize]) {
    let got = recv_n(b, lens.len());
    assert_eq!(got.len(), lens.len());
    for (psn, (_, p)) in got.iter().enumerate() {
        assert_eq!(*p, packet(psn as u32, lens[psn]));
    }
}

#[test]
fn gso_sends_reach_receivers_with_and_without_gro_whole_and_in_order() {
    let mut a = endpoint("127.0.0.1");
    let mut gro = endpoint("127.0.0.2");
    let mut plain = endpoint_with("127.0.0.3", false);
    assert_eq!(a.link().mode, IoMode::KernelOffload);
    assert_eq!(plain.link().mode, IoMode::Kernel);
    // Until a peer is heard from, nothing tells it is a socket that takes GSO.
    assert!(!a.peers.takes_gso(gro.local_addr()));
    for rx in [&mut gro, &mut plain] {
        send_copy(rx, &TxMeta::to(a.local_addr(), 1), &bth(0)).unwrap();
        rx.flush().unwrap();
    }
    assert_eq!(recv_n(&mut a, 2).len(), 2);
    // Messages of 80 packets (more than a GSO message or the ring holds), to one receiver
    // then the other, then interleaved packet by packet.
    let mut sent: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut psn = 0;
    for to in [gro.local_addr(), plain.local_addr()] {
        for len in message_lens(78) {
            sent.push((to, packet(psn, len)));
            psn += 1;
        }
    }
    for len in message_lens(20) {
        for to in [gro.local_addr(), plain.local_addr()] {
            sent.push((to, packet(psn, len)));
            psn += 1;
        }
    }
    for (to, p) in &sent {
        assert!(send_copy(&mut a, &TxMeta::to(*to, 1), p).unwrap());
    }
    a.flush().unwrap();
    for rx in [&mut gro, &mut plain] {
        let want: Vec<_> = sent
            .iter()
            .filter(|(to, _)| *to == rx.local_addr())
            .map(|(_, p)| p.clone())
            .collect();
        let got: Vec<_> = recv_n(rx, want.len()).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the datagrams differ or arrived out of order");
        assert_eq!(rx.stats().rx_dropped(), 0, "{:?}", rx.stats());
    }
    let s = a.stats();
    assert_eq!(s.tx_packets, sent.len() as u64);
    assert!(s.tx_gso_sends > 0, "{s:?}");
    assert!(gro.stats().rx_gro_batches > 0, "{:?}", gro.stats());
    assert_eq!(plain.stats().rx_gro_batches, 0);
}

#[test]
fn a_receiver_with_gro_takes_datagrams_sent_one_by_one() {
    let mut a = endpoint_with("127.0.0.1", false);
    let mut b = endpoint("127.0.0.2");
    let lens = message_lens(100);
    send_message(&mut a, b.local_addr(), &lens);
    assert_eq!(a.stats().tx_gso_sends, 0);
    expect_message(&mut b, &lens);
    assert_eq!(b.stats().rx_dropped(), 0);
}

#[test]
fn no_gso_goes_to_a_peer_heard_from_another_port_than_it_is_sent_to() {
    let mut a = endpoint("127.0.0.1");
    let mut b = endpoint("127.0.0.2");
    // B's address, from a socket on another port (as an xdp endpoint's QPs send).
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    let to = a.local_addr();
    let mut hello = [0u8; 16];
    hello[..12].copy_from_slice(&bth(1));
    datagram::seal(other.local_addr().unwrap(), to, &mut hello, 12).unwrap();
    other.send_to(&hello, to).unwrap();
    assert_eq!(recv_n(&mut a, 1).len(), 1);
    assert!(!a.peers.takes_gso(b.local_addr()));
    // Nor after B itself is heard: the address sends from more than one port.
    send_copy(&mut b, &TxMeta::to(to, 1), &bth(2)).unwrap();
    b.flush().unwrap();
    assert_eq!(recv_n(&mut a, 1).len(), 1);
    assert!(!a.peers.takes_gso(b.local_addr()));
    for psn in 0..20 {
        send_copy(&mut a, &TxMeta::to(b.local_addr(), 1), &packet(psn, 500)).unwrap();
    }
    a.flush().unwrap();
    assert_eq!(a.stats().tx_gso_sends, 0);
    assert_eq!(recv_n(&mut b, 20).len(), 20);
}

#[test]
fn a_refused_gso_send_falls_back_to_datagram_by_datagram() {
    let mut a = endpoint("127.0.0.1");
    let mut b = endpoint("127.0.0.2");
    send_copy(&mut b, &TxMeta::to(a.local_addr(), 1), &bth(0)).unwrap();
    b.flush().unwrap();
    assert_eq!(recv_n(&mut a, 1).len(), 1);
    assert!(a.peers.takes_gso(b.local_addr()));
    // The kernel refuses GSO on a socket that sends without UDP checksums (EINVAL).
    set_int(&a.sock, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
    let lens = message_lens(30);
    send_message(&mut a, b.local_addr(), &lens);
    assert!(!a.tx.gso, "GSO still on after the kernel refused it");
    expect_message(&mut b, &lens);
    let s = a.stats();
    assert_eq!((s.tx_gso_sends, s.tx_dropped), (0, 0), "{s:?}");
    assert_eq!(b.stats().rx_dropped(), 0);
}
