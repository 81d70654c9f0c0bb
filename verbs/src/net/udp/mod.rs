//! The `udp` backend: RoCEv2 transport packets over a kernel UDP socket.
//!
//! It needs no privilege. The bytes after the UDP header are exactly those an `xdp` endpoint
//! puts on the wire, ICRC included, so the two interoperate. Receive and transmit are batched
//! with `recvmmsg`/`sendmmsg` through buffers allocated once, at open, and, where the kernel
//! offers them, with UDP GSO and GRO: consecutive equal-size datagrams to one peer leave as
//! one message that the kernel cuts up as late as it can (`tx`), and what it kept together
//! on the way in arrives in one buffer, split here (`rx`). On a veth pair or loopback a
//! GSO message reaches the peer's socket whole, so 64 KiB cross per system call each way.
//!
//! Whole is the catch: across a veth a GSO message reaches the peer as one frame of up to
//! 64 KiB, which only a kernel UDP socket takes, not an AF_XDP endpoint (whose frames hold
//! one datagram) nor Linux rxe. So GSO goes only to peers known to be kernel sockets, as
//! `udp` endpoints are: they send every datagram from the port they receive on, where an
//! `xdp` endpoint, rxe and RoCE NICs send from a port per QP (`Peers`). Over a physical
//! NIC, which cuts GSO messages up before the wire, this forgoes GSO towards such peers.
//!
//! Limits: the UDP source port is the bound port for every datagram (no per-QP entropy), and
//! since the IP header is not visible, the ICRC of a received datagram is checked against the
//! header xrdma itself would have sent (see `datagram`), except for the IPv4 identification:
//! Linux rxe and some RoCE NICs number their datagrams, and the pieces of a GSO send are
//! numbered too, so when 0 does not match, the one identification that makes the ICRC match
//! is solved for ([`icrc::check_v4_any_ident`]) and the datagram accepted if there is one
//! ([`NetStats::rx_ipv4_ident_solved`] counts them).

use std::collections::HashMap;
use std::mem;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::netlink::Netlink;
use super::{BackendKind, FrameIo, IoMode, LinkInfo, NetError, NetStats, RxMeta, TxMeta, datagram};
use crate::wire::{icrc, udp::ROCEV2_PORT};

mod rx;
mod tx;

use rx::RxBatch;
use tx::TxRing;

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
    /// Use UDP GSO and GRO where the kernel has them (the default); off, every datagram is
    /// its own message both ways, as for comparison.
    pub offload: bool,
}

impl UdpConfig {
    /// Port 4791 on the first address of `iface`, with GSO and GRO.
    pub fn new(iface: impl Into<String>) -> Self {
        UdpConfig {
            iface: iface.into(),
            addr: None,
            port: ROCEV2_PORT,
            offload: true,
        }
    }
}

/// What the backend has learnt of its peers from their checked datagrams: whether each
/// sends from one port only, as a kernel UDP socket (another `udp` endpoint) does, and so
/// takes GSO messages to that port whole.
struct Peers {
    /// Peers by address: the one port every datagram from it came from, or `None`.
    ports: HashMap<IpAddr, Option<u16>>,
    /// The last source seen, which taught nothing new since.
    last_src: Option<SocketAddr>,
    /// The last destination asked about, and the answer.
    last_dst: Option<(SocketAddr, bool)>,
}

impl Peers {
    /// Notes a checked datagram from `src`.
    fn heard(&mut self, src: SocketAddr) {
        if self.last_src == Some(src) {
            return;
        }
        self.last_src = Some(src);
        let port = self.ports.entry(src.ip()).or_insert(Some(src.port()));
        if *port != Some(src.port()) {
            *port = None;
        }
        self.last_dst = None;
    }

    /// Whether GSO messages may go to `dst`: it is a socket that sends from there.
    fn takes_gso(&mut self, dst: SocketAddr) -> bool {
        match self.last_dst {
            Some((to, answer)) if to == dst => answer,
            _ => {
                let answer = self.ports.get(&dst.ip()) == Some(&Some(dst.port()));
                self.last_dst = Some((dst, answer));
                answer
            }
        }
    }
}

/// A kernel-UDP endpoint.
pub struct UdpIo {
    sock: UdpSocket,
    local: SocketAddr,
    link: LinkInfo,
    rx: RxBatch,
    tx: TxRing,
    /// Whether the socket coalesces what it receives (`UDP_GRO`).
    gro: bool,
    peers: Peers,
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
        let (gso, gro) = if config.offload {
            offload(&sock)
        } else {
            (false, false)
        };
        let local = sock
            .local_addr()
            .map_err(NetError::io("reading the bound address"))?;
        let mtu = link.mtu.min(MAX_UDP_PAYLOAD as u32 + 28);
        let link = LinkInfo {
            backend: BackendKind::Udp,
            mode: if gso || gro {
                IoMode::KernelOffload
            } else {
                IoMode::Kernel
            },
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
            rx: RxBatch::new(if gro { rx::GRO_BUF_LEN } else { slot_len }),
            tx: TxRing::new(slot_len, gso),
            gro,
            peers: Peers {
                ports: HashMap::new(),
                last_src: None,
                last_dst: None,
            },
            stats: NetStats::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Hands the queued datagrams to the kernel; a refused GSO send turns GSO off for good.
    fn send_queued(&mut self) -> Result<(), NetError> {
        let r = self
            .tx
            .send_queued(self.sock.as_raw_fd(), self.local, &mut self.stats);
        if !self.tx.gso && !self.gro {
            self.link.mode = IoMode::Kernel;
        }
        r
    }
}

/// Sets the integer socket option `level`/`name` of `sock` to `value`.
fn set_int(
    sock: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed; `sock` is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Turns on what the kernel offers of UDP GSO (whether `UDP_SEGMENT` is known; a send that
/// then fails falls back) and GRO; returns which.
fn offload(sock: &UdpSocket) -> (bool, bool) {
    let mut size: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `size` and `len` are live and sized as the option needs.
    let gso = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            tx::UDP_SEGMENT,
            (&mut size as *mut libc::c_int).cast(),
            &mut len,
        )
    } == 0;
    let gro = set_int(sock, libc::SOL_UDP, rx::UDP_GRO, 1).is_ok();
    (gso, gro)
}

/// Socket options every xrdma UDP socket needs.
fn configure(sock: &UdpSocket, ipv6: bool) -> Result<(), NetError> {
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int, what: &'static str| {
        set_int(sock, level, name, value).map_err(NetError::io(what))
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
        if self.tx.is_full() {
            self.send_queued()?;
            if self.tx.is_full() {
                self.stats.tx_full += 1;
                return Ok(false);
            }
        }
        let max = self.link.max_transport_len(meta.dst.is_ipv6());
        let len = write(self.tx.next_slot(max));
        if len > max {
            return Err(NetError::TooLong { len, max });
        }
        let gso_ok = self.tx.gso && self.peers.takes_gso(meta.dst);
        self.tx.push(meta.dst, len, gso_ok);
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
        let port = self.local.port();
        // A short batch emptied the socket: no need to ask again in this call.
        let mut drained = false;
        while delivered < max {
            let Some((meta, payload, nth)) = self.rx.next_datagram() else {
                if drained {
                    break;
                }
                match self.rx.refill(self.sock.as_raw_fd(), &mut self.stats) {
                    Ok(0) => break,
                    Ok(got) => drained = got < rx::RX_MSGS,
                    Err(err) => return Err(NetError::Io("receiving UDP datagrams", err)),
                }
                continue;
            };
            match datagram::open_any_ident(meta.src, SocketAddr::new(meta.dst, port), payload, nth)
            {
                Ok((transport, ident_solved)) => {
                    self.peers.heard(meta.src);
                    self.stats.rx_ipv4_ident_solved += u64::from(ident_solved);
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += transport.len() as u64;
                    deliver(&meta, transport);
                    delivered += 1;
                }
                Err(err) => self.stats.count_drop(err),
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
mod tests;
