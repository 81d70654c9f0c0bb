//! The `udp` backend: RoCEv2 transport packets over a kernel UDP socket.
//!
//! It needs no privilege. The bytes after the UDP header are exactly those an `xdp` endpoint
//! puts on the wire, ICRC included, so the two interoperate. Receive and transmit are batched
//! with `recvmmsg`/`sendmmsg` through buffers allocated once, at open.
//!
//! Limits: the UDP source port is the bound port for every datagram (no per-QP entropy), and
//! since the IP header is not visible, the ICRC of a received datagram is checked against the
//! header xrdma itself would have sent (see `datagram`), except for the IPv4 identification:
//! xrdma sends 0, but Linux rxe and some RoCE NICs number their datagrams, so when 0 does not
//! match, the one identification that makes the ICRC match is solved for
//! ([`icrc::check_v4_any_ident`]) and the datagram accepted if there is one
//! ([`NetStats::rx_ipv4_ident_solved`] counts them).

use std::mem;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::netlink::Netlink;
use super::{
    BackendKind, FrameIo, IoMode, LinkInfo, NetError, NetStats, RxMeta, TxMeta, datagram, sockaddr,
};
use crate::wire::{self, bth, icrc, udp::ROCEV2_PORT};

/// Datagrams moved per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 32;

/// Largest UDP payload a datagram can have.
const MAX_UDP_PAYLOAD: usize = 65507;

/// Configuration of the `udp` backend.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Interface whose address to bind (its MTU bounds datagram size).
    pub iface: String,
    /// Address to bind; by default the interface's first IPv4 address, else its first IPv6
    /// address. On a loopback interface any loopback address may be given (127.0.0.2, ...),
    /// which lets several endpoints share one port on one machine.
    pub addr: Option<IpAddr>,
    /// UDP port to receive on (RoCEv2: 4791).
    pub port: u16,
}

impl UdpConfig {
    /// Port 4791 on the first address of `iface`.
    pub fn new(iface: impl Into<String>) -> Self {
        UdpConfig {
            iface: iface.into(),
            addr: None,
            port: ROCEV2_PORT,
        }
    }
}

/// Buffers for one batch of datagrams, allocated once.
struct Slots {
    buf: Vec<u8>,
    slot_len: usize,
    lens: [usize; BATCH],
    peers: [Option<SocketAddr>; BATCH],
}

impl Slots {
    fn new(slot_len: usize) -> Self {
        Slots {
            buf: vec![0; slot_len * BATCH],
            slot_len,
            lens: [0; BATCH],
            peers: [None; BATCH],
        }
    }

    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.slot_len..(i + 1) * self.slot_len]
    }

    fn slot(&self, i: usize) -> &[u8] {
        &self.buf[i * self.slot_len..(i + 1) * self.slot_len]
    }
}

/// A kernel-UDP endpoint.
pub struct UdpIo {
    sock: UdpSocket,
    local: SocketAddr,
    link: LinkInfo,
    rx: Slots,
    tx: Slots,
    /// Queued transmit slots are `tx_head..tx_tail`.
    tx_head: usize,
    tx_tail: usize,
    stats: NetStats,
}

impl UdpIo {
    /// Binds a UDP socket as `config` says.
    pub fn open(config: &UdpConfig) -> Result<Self, NetError> {
        let mut nl = Netlink::open().map_err(NetError::io("opening rtnetlink"))?;
        let link = nl.link_by_name(&config.iface).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NetError::NoSuchInterface(config.iface.clone()),
            _ => NetError::Io("querying the interface", e),
        })?;
        let addrs: Vec<IpAddr> = nl
            .addresses(link.index)
            .map_err(NetError::io("listing addresses"))?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        let addr = match config.addr {
            Some(ip) if addrs.contains(&ip) || (ip.is_loopback() && link.index == 1) => ip,
            Some(ip) => {
                return Err(NetError::InvalidConfig(format!(
                    "{ip} is not an address of {}",
                    config.iface
                )));
            }
            None => addrs
                .iter()
                .find(|ip| ip.is_ipv4())
                .or_else(|| {
                    addrs
                        .iter()
                        .find(|ip| matches!(ip, IpAddr::V6(v6) if !v6.is_unicast_link_local()))
                })
                .copied()
                .ok_or_else(|| {
                    NetError::InvalidConfig(format!("{} has no IP address", config.iface))
                })?,
        };
        let sock = UdpSocket::bind(SocketAddr::new(addr, config.port))
            .map_err(NetError::io("binding the RoCEv2 UDP socket"))?;
        sock.set_nonblocking(true)
            .map_err(NetError::io("making the socket non-blocking"))?;
        configure(&sock, addr.is_ipv6())?;
        let local = sock
            .local_addr()
            .map_err(NetError::io("reading the bound address"))?;
        let mtu = link.mtu.min(MAX_UDP_PAYLOAD as u32 + 28);
        let link = LinkInfo {
            backend: BackendKind::Udp,
            mode: IoMode::Kernel,
            iface: link.name,
            ifindex: link.index,
            mac: (link.mac != [0; 6]).then_some(crate::wire::ethernet::MacAddr(link.mac)),
            mtu,
            addrs: vec![addr],
            port: local.port(),
            queues: 1,
        };
        let slot_len = link.max_transport_len(false) + icrc::ICRC_LEN;
        Ok(UdpIo {
            sock,
            local,
            link,
            rx: Slots::new(slot_len),
            tx: Slots::new(slot_len),
            tx_head: 0,
            tx_tail: 0,
            stats: NetStats::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends the queued slots, oldest first, until the kernel pushes back.
    fn send_queued(&mut self) -> Result<(), NetError> {
        while self.tx_head < self.tx_tail {
            let count = self.tx_tail - self.tx_head;
            // SAFETY: all-zero is a valid value for these plain C structs.
            let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { mem::zeroed() };
            let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: as above.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
            for k in 0..count {
                let i = self.tx_head + k;
                let peer = self.tx.peers[i].expect("queued slot has a peer");
                let addr_len = sockaddr::to_storage(&peer, &mut addrs[k]);
                iovs[k] = libc::iovec {
                    iov_base: self.tx.slot_mut(i).as_mut_ptr().cast(),
                    iov_len: self.tx.lens[i],
                };
                hdrs[k].msg_hdr.msg_name = (&mut addrs[k] as *mut libc::sockaddr_storage).cast();
                hdrs[k].msg_hdr.msg_namelen = addr_len;
                hdrs[k].msg_hdr.msg_iov = &mut iovs[k];
                hdrs[k].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `hdrs[..count]` point at live iovecs, addresses and slot buffers that
            // outlive the call; the kernel only reads them.
            let sent = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => return Ok(()),
                    Some(libc::EINTR) => continue,
                    // The first datagram cannot be sent (no route, too big, ...): drop it, as
                    // a NIC drops a frame it cannot deliver, and go on with the rest.
                    Some(
                        libc::ENETUNREACH
                        | libc::EHOSTUNREACH
                        | libc::EMSGSIZE
                        | libc::EINVAL
                        | libc::EPERM,
                    ) => {
                        self.stats.tx_dropped += 1;
                        self.tx_head += 1;
                        continue;
                    }
                    _ => return Err(NetError::Io("sending UDP datagrams", err)),
                }
            }
            for k in 0..sent as usize {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += (self.tx.lens[self.tx_head + k] - icrc::ICRC_LEN) as u64;
            }
            self.tx_head += sent as usize;
        }
        self.tx_head = 0;
        self.tx_tail = 0;
        Ok(())
    }
}

/// Socket options every xrdma UDP socket needs.
fn configure(sock: &UdpSocket, ipv6: bool) -> Result<(), NetError> {
    let fd = sock.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int, what: &'static str| {
        // SAFETY: `value` is a live c_int and its size is passed; `fd` is an open socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(NetError::Io(what, std::io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    if ipv6 {
        set(
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            1,
            "enabling IPV6_RECVPKTINFO",
        )?;
        set(
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
            "setting IPV6_MTU_DISCOVER",
        )?;
        // RoCEv2 sends UDP checksum 0, which IPv6 sockets otherwise drop.
        set(
            libc::IPPROTO_UDP,
            UDP_NO_CHECK6_RX,
            1,
            "enabling UDP_NO_CHECK6_RX",
        )?;
    } else {
        set(libc::IPPROTO_IP, libc::IP_PKTINFO, 1, "enabling IP_PKTINFO")?;
        // DF set: the IPv4 identification of what we send is then 0, which the ICRC covers
        // (see `datagram`).
        set(
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
            "setting IP_MTU_DISCOVER",
        )?;
    }
    // Bigger buffers absorb bursts. With CAP_NET_ADMIN the *FORCE options pass the kernel's
    // rmem_max/wmem_max; without it the plain options are capped there, which is fine.
    set(
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        4 << 20,
        "setting SO_RCVBUFFORCE",
    )
    .or_else(|_| {
        set(
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            4 << 20,
            "setting SO_RCVBUF",
        )
    })?;
    set(
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        4 << 20,
        "setting SO_SNDBUFFORCE",
    )
    .or_else(|_| {
        set(
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            4 << 20,
            "setting SO_SNDBUF",
        )
    })?;
    Ok(())
}

/// `UDP_NO_CHECK6_RX` from `<linux/udp.h>`.
const UDP_NO_CHECK6_RX: libc::c_int = 102;

/// The destination address carried in an `IP_PKTINFO`/`IPV6_PKTINFO` control message.
fn pktinfo_dst(hdr: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: `hdr` was filled by recvmmsg, so its control buffer holds well-formed cmsgs
    // that the CMSG_* macros walk within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info = libc::CMSG_DATA(cmsg)
                    .cast::<libc::in_pktinfo>()
                    .read_unaligned();
                return Some(IpAddr::from(info.ipi_addr.s_addr.to_ne_bytes()));
            }
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info = libc::CMSG_DATA(cmsg)
                    .cast::<libc::in6_pktinfo>()
                    .read_unaligned();
                return Some(IpAddr::from(info.ipi6_addr.s6_addr));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// Checks a received UDP payload from `src` to `dst` as [`datagram::open`] does, except that
/// an IPv4 datagram may carry any identification (see [`icrc::check_v4_any_ident`]); returns
/// the transport packet and whether the identification was not 0.
fn open_any_ident(
    src: SocketAddr,
    dst: SocketAddr,
    udp_payload: &[u8],
) -> Result<(&[u8], bool), wire::Error> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        return datagram::open(src, dst, udp_payload).map(|transport| (transport, false));
    };
    if udp_payload.len() < bth::HEADER_LEN + icrc::ICRC_LEN {
        return Err(wire::Error::Truncated);
    }
    let headers = icrc::pseudo_headers_v4(*s.ip(), *d.ip(), s.port(), d.port(), udp_payload.len())?;
    let (transport, ident) = icrc::check_v4_any_ident(&headers, udp_payload)?;
    datagram::check_transport(transport)?;
    Ok((transport, ident != 0))
}

impl FrameIo for UdpIo {
    fn link(&self) -> &LinkInfo {
        &self.link
    }

    fn send(
        &mut self,
        meta: &TxMeta,
        write: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<bool, NetError> {
        if meta.dst.is_ipv6() != self.local.is_ipv6() {
            return Err(NetError::AddressFamily(meta.dst.ip()));
        }
        if self.tx_tail == BATCH {
            self.send_queued()?;
            if self.tx_tail == BATCH {
                self.stats.tx_full += 1;
                return Ok(false);
            }
        }
        let i = self.tx_tail;
        let max = self.link.max_transport_len(meta.dst.is_ipv6());
        let slot = self.tx.slot_mut(i);
        let len = write(&mut slot[..max]);
        if len > max {
            return Err(NetError::TooLong { len, max });
        }
        let total = datagram::seal(self.local, meta.dst, slot, len)
            .map_err(|_| NetError::AddressFamily(meta.dst.ip()))?;
        self.tx.lens[i] = total;
        self.tx.peers[i] = Some(meta.dst);
        self.tx_tail += 1;
        Ok(true)
    }

    fn flush(&mut self) -> Result<(), NetError> {
        self.send_queued()
    }

    fn recv(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&RxMeta, &[u8]),
    ) -> Result<usize, NetError> {
        let mut delivered = 0;
        while delivered < max {
            let want = (max - delivered).min(BATCH);
            // SAFETY: all-zero is a valid value for these plain C structs.
            let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { mem::zeroed() };
            let mut cmsgs = [[0u64; 8]; BATCH];
            let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: as above.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
            for k in 0..want {
                let slot = self.rx.slot_mut(k);
                iovs[k] = libc::iovec {
                    iov_base: slot.as_mut_ptr().cast(),
                    iov_len: slot.len(),
                };
                hdrs[k].msg_hdr.msg_name = (&mut addrs[k] as *mut libc::sockaddr_storage).cast();
                hdrs[k].msg_hdr.msg_namelen =
                    mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdrs[k].msg_hdr.msg_iov = &mut iovs[k];
                hdrs[k].msg_hdr.msg_iovlen = 1;
                hdrs[k].msg_hdr.msg_control = cmsgs[k].as_mut_ptr().cast();
                hdrs[k].msg_hdr.msg_controllen = mem::size_of_val(&cmsgs[k]);
            }
            // SAFETY: every header points at live, writable buffers of the stated sizes that
            // outlive the call.
            let got = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    want as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got < 0 {
                let err = std::io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(delivered),
                    Some(libc::EINTR) => continue,
                    _ => Err(NetError::Io("receiving UDP datagrams", err)),
                };
            }
            for k in 0..got as usize {
                let h = &hdrs[k];
                let len = h.msg_len as usize;
                let (Some(src), Some(dst)) =
                    (sockaddr::from_storage(&addrs[k]), pktinfo_dst(&h.msg_hdr))
                else {
                    self.stats.rx_malformed += 1;
                    continue;
                };
                if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    self.stats.rx_truncated += 1;
                    continue;
                }
                match open_any_ident(
                    src,
                    SocketAddr::new(dst, self.local.port()),
                    &self.rx.slot(k)[..len],
                ) {
                    Ok((transport, ident_solved)) => {
                        self.stats.rx_ipv4_ident_solved += u64::from(ident_solved);
                        self.stats.rx_packets += 1;
                        self.stats.rx_bytes += transport.len() as u64;
                        deliver(&RxMeta { src, dst }, transport);
                        delivered += 1;
                    }
                    Err(err) => self.stats.count_drop(err),
                }
            }
            if (got as usize) < want {
                break;
            }
        }
        Ok(delivered)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn stats(&self) -> NetStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::send_copy;
    use std::time::{Duration, Instant};

    fn endpoint(addr: &str) -> UdpIo {
        UdpIo::open(&UdpConfig {
            iface: "lo".into(),
            addr: Some(addr.parse().unwrap()),
            port: 0,
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
            icrc::pseudo_headers_v4(*s.ip(), *d.ip(), s.port(), d.port(), 12 + icrc::ICRC_LEN)
                .unwrap();
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
                open_any_ident(from, to, &payload),
                Ok((&bth(psn)[..], ident != 0))
            );
            // Any single-bit error in the BTH but its masked FECN/BECN byte is caught.
            let mut bad = payload.clone();
            let bit = if corrupt_bit / 8 == 4 { corrupt_bit + 8 } else { corrupt_bit };
            bad[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert_eq!(
                open_any_ident(from, to, &bad),
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
            iface: "lo".into(),
            addr: Some("198.18.9.9".parse().unwrap()),
            port: 0,
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
}
