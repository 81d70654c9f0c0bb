//! Frame I/O: one trait for moving RoCEv2 datagrams, three backends behind it.
//!
//! Everything above this layer deals in *transport packets*: the bytes that follow the UDP
//! header (BTH, extension headers, payload, pad), without the trailing ICRC. A backend adds
//! whatever framing its medium needs on transmit (Ethernet, IP, UDP, ICRC) and removes and
//! checks it on receive, so the layers above never see a frame that failed its ICRC.
//!
//! | backend | medium | privilege |
//! |---|---|---|
//! | [`xdp`] | AF_XDP socket per (interface, queue) with our own XDP program | root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW) |
//! | [`udp`] | a kernel UDP socket carrying the same bytes after the UDP header | none |
//! | [`sim`] | an in-memory, seeded network with loss, duplication, reordering, delay | none |
//!
//! An `xdp` endpoint and a `udp` endpoint interoperate: both put the same bytes on the wire.
//!
//! # Call order
//!
//! A backend is driven from one thread at a time (`&mut self`):
//! 1. [`FrameIo::send`] queues datagrams; [`FrameIo::flush`] hands them to the medium and
//!    reclaims transmit buffers the medium has finished with.
//! 2. [`FrameIo::recv`] delivers received, checked datagrams to a callback, in batches.
//! 3. When there is nothing to do, block on [`FrameIo::as_raw_fd`] becoming readable.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Instant;

use crate::wire;

mod datagram;
pub mod netlink;
pub mod sim;
pub mod sockaddr;
pub mod udp;
pub mod xdp;

/// Addressing of one outgoing datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxMeta {
    /// Destination address and UDP port (the peer's RoCEv2 port, normally 4791).
    pub dst: SocketAddr,
    /// UDP source port: RoCEv2 uses it for flow entropy. Backends that cannot choose it per
    /// datagram (the kernel UDP socket) send from their bound port instead.
    pub src_port: u16,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
}

impl TxMeta {
    /// A datagram to `dst` with default TOS 0 and TTL 64, from source port `src_port`.
    pub fn to(dst: SocketAddr, src_port: u16) -> Self {
        TxMeta {
            dst,
            src_port,
            tos: 0,
            ttl: 64,
        }
    }
}

/// Addressing of one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// Sender's address and UDP source port.
    pub src: SocketAddr,
    /// The address the datagram was sent to (one of ours).
    pub dst: IpAddr,
}

/// Which backend a [`FrameIo`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// AF_XDP.
    Xdp,
    /// Kernel UDP socket.
    Udp,
    /// In-memory simulated network.
    Sim,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Xdp => "xdp",
            BackendKind::Udp => "udp",
            BackendKind::Sim => "sim",
        })
    }
}

/// How frames reach the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// AF_XDP zero-copy: the NIC DMAs straight into and out of the UMEM.
    ZeroCopy,
    /// AF_XDP copy mode with the XDP program in the driver.
    DriverCopy,
    /// AF_XDP copy mode with the XDP program in the generic (skb) hook.
    SkbCopy,
    /// Through the kernel's UDP stack, a datagram per message.
    Kernel,
    /// Through the kernel's UDP stack, many datagrams per message (UDP GSO and GRO).
    KernelOffload,
    /// In memory.
    Simulated,
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoMode::ZeroCopy => "zero-copy",
            IoMode::DriverCopy => "copy (driver XDP)",
            IoMode::SkbCopy => "copy (skb XDP)",
            IoMode::Kernel => "kernel UDP",
            IoMode::KernelOffload => "kernel UDP, GSO/GRO",
            IoMode::Simulated => "simulated",
        })
    }
}

/// What a backend knows about the link it is on.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    /// Backend kind.
    pub backend: BackendKind,
    /// How frames move.
    pub mode: IoMode,
    /// Interface name (`sim` for the simulator).
    pub iface: String,
    /// Interface index (0 where there is none).
    pub ifindex: u32,
    /// Hardware address, where the medium has one.
    pub mac: Option<wire::ethernet::MacAddr>,
    /// IP MTU of the link: the largest IP packet it carries.
    pub mtu: u32,
    /// Addresses of this endpoint (GIDs are derived from these).
    pub addrs: Vec<IpAddr>,
    /// UDP port this endpoint receives RoCEv2 on.
    pub port: u16,
    /// Receive queues served (AF_XDP: one socket each).
    pub queues: u32,
}

impl LinkInfo {
    /// The largest transport packet (BTH up to pad, without ICRC) that fits one datagram to a
    /// peer of the given IP version.
    pub fn max_transport_len(&self, ipv6: bool) -> usize {
        let ip = if ipv6 { 40 } else { 20 };
        (self.mtu as usize).saturating_sub(ip + 8 + wire::icrc::ICRC_LEN)
    }
}

/// Counters of a backend. Drops are counted by reason; nothing is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams delivered to the layer above.
    pub rx_packets: u64,
    /// Transport bytes delivered to the layer above.
    pub rx_bytes: u64,
    /// Datagrams handed to the medium.
    pub tx_packets: u64,
    /// Transport bytes handed to the medium.
    pub tx_bytes: u64,
    /// Dropped: shorter than its headers say, or than a BTH and ICRC.
    pub rx_truncated: u64,
    /// Dropped: inconsistent lengths or fields.
    pub rx_malformed: u64,
    /// Dropped: a version or feature we do not speak (IP options, fragments, BTH TVer != 0).
    pub rx_unsupported: u64,
    /// Dropped: ICRC mismatch.
    pub rx_bad_icrc: u64,
    /// Dropped: not addressed to our RoCEv2 port, or not UDP.
    pub rx_not_roce: u64,
    /// Dropped: longer than a receive buffer holds (a jumbo frame beyond the link MTU we use).
    pub rx_oversize: u64,
    /// Times a send found no free transmit buffer.
    pub tx_full: u64,
    /// Datagrams the medium refused (no route, too big); dropped as a NIC would.
    pub tx_dropped: u64,
    /// Datagrams sent from a reserved buffer in place, their payload not copied.
    pub tx_in_place: u64,
    /// Messages that carried several datagrams (`udp` backend, UDP GSO).
    pub tx_gso_sends: u64,
    /// Received buffers that held several datagrams (`udp` backend, UDP GRO).
    pub rx_gro_batches: u64,
    /// Delivered datagrams (`udp` backend, IPv4) whose ICRC matched only with a non-zero
    /// IPv4 identification, which the socket hides: solved for, as
    /// [`check_v4_any_ident`](crate::wire::icrc::check_v4_any_ident) does. Linux rxe's are.
    pub rx_ipv4_ident_solved: u64,
}

impl NetStats {
    /// Total datagrams dropped on receive.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_truncated
            + self.rx_malformed
            + self.rx_unsupported
            + self.rx_bad_icrc
            + self.rx_not_roce
            + self.rx_oversize
    }

    /// Count one receive drop for `err`.
    pub(crate) fn count_drop(&mut self, err: wire::Error) {
        match err {
            wire::Error::Truncated => self.rx_truncated += 1,
            wire::Error::Malformed => self.rx_malformed += 1,
            wire::Error::Unsupported => self.rx_unsupported += 1,
            wire::Error::BadChecksum => self.rx_bad_icrc += 1,
        }
    }
}

/// Errors of the frame I/O layer.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// No interface of that name in this network namespace.
    NoSuchInterface(String),
    /// The operation needs privileges the process lacks; the text says which.
    NotPermitted(String),
    /// The kernel or driver lacks a feature; the text says which.
    Unsupported(String),
    /// No route or no neighbour for the address.
    Unreachable(IpAddr, String),
    /// A datagram longer than the link carries.
    TooLong {
        /// Bytes asked for.
        len: usize,
        /// Largest that fits.
        max: usize,
    },
    /// The address family of a peer is not one this endpoint has an address of.
    AddressFamily(IpAddr),
    /// Invalid configuration; the text says what.
    InvalidConfig(String),
    /// Any other system error, with what was being done.
    Io(&'static str, io::Error),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::NoSuchInterface(name) => write!(f, "no such interface: {name}"),
            NetError::NotPermitted(what) => write!(f, "not permitted: {what}"),
            NetError::Unsupported(what) => write!(f, "not supported: {what}"),
            NetError::Unreachable(ip, why) => write!(f, "{ip} is unreachable: {why}"),
            NetError::TooLong { len, max } => {
                write!(f, "datagram of {len} bytes exceeds the link's {max}")
            }
            NetError::AddressFamily(ip) => {
                write!(f, "no local address of the same family as {ip}")
            }
            NetError::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            NetError::Io(what, err) => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::Io(_, err) => Some(err),
            _ => None,
        }
    }
}

impl NetError {
    /// The errno a C caller would see for this error.
    pub fn errno(&self) -> i32 {
        match self {
            NetError::NoSuchInterface(_) => libc::ENODEV,
            NetError::NotPermitted(_) => libc::EPERM,
            NetError::Unsupported(_) => libc::EOPNOTSUPP,
            NetError::Unreachable(..) => libc::EHOSTUNREACH,
            NetError::TooLong { .. } => libc::EMSGSIZE,
            NetError::AddressFamily(_) => libc::EAFNOSUPPORT,
            NetError::InvalidConfig(_) => libc::EINVAL,
            NetError::Io(_, err) => err.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> NetError {
        move |err| NetError::Io(what, err)
    }
}

/// Batched transmit and receive of RoCEv2 transport packets, plus a descriptor to block on.
///
/// See the [module documentation](self) for the call order.
pub trait FrameIo: Send {
    /// What the backend knows of its link.
    fn link(&self) -> &LinkInfo;

    /// Queues one datagram. `write` is handed a buffer of
    /// [`LinkInfo::max_transport_len`] bytes to fill with the transport packet (BTH up to
    /// pad) and returns how many bytes it wrote. The backend adds the framing and the ICRC.
    ///
    /// Returns `Ok(false)`, without calling `write`, when no transmit buffer is free: flush,
    /// and try again later.
    fn send(
        &mut self,
        meta: &TxMeta,
        write: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<bool, NetError>;

    /// Hands queued datagrams to the medium and reclaims finished transmit buffers.
    fn flush(&mut self) -> Result<(), NetError>;

    /// Delivers up to `max` received datagrams to `deliver`, each with its checked transport
    /// packet (ICRC removed). Returns how many were delivered; malformed frames are dropped,
    /// counted in [`NetStats`], and not delivered.
    fn recv(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&RxMeta, &[u8]),
    ) -> Result<usize, NetError>;

    /// A descriptor that polls readable when [`FrameIo::recv`] may have something to deliver.
    fn as_raw_fd(&self) -> RawFd;

    /// Sets aside `count` transmit buffers inside the medium's own memory (the AF_XDP UMEM)
    /// that callers fill in place and send with [`FrameIo::send_reserved`], so that the
    /// payload is never copied. `Ok(None)` when the backend has no such memory.
    fn reserve_tx(&mut self, count: usize) -> Result<Option<TxReservation>, NetError> {
        let _ = count;
        Ok(None)
    }

    /// Sends reserved buffer `index`, whose transport packet (`transport_len` bytes) the
    /// caller wrote at [`TxReservation::transport_offset`]; the backend writes the frame
    /// headers before it and the ICRC after it. The buffer is the medium's until
    /// [`FrameIo::reserved_done`] reports it. `Ok(false)`: no room now, try again.
    fn send_reserved(
        &mut self,
        meta: &TxMeta,
        index: usize,
        transport_len: usize,
    ) -> Result<bool, NetError> {
        let _ = (meta, index, transport_len);
        Err(NetError::Unsupported(
            "in-place transmit buffers on this backend".into(),
        ))
    }

    /// Calls `done` with every reserved buffer the medium has finished sending since the
    /// last call.
    fn reserved_done(&mut self, done: &mut dyn FnMut(usize)) {
        let _ = done;
    }

    /// Counters.
    fn stats(&self) -> NetStats;

    /// The time this medium runs on, which RC timers use: real time, except on the
    /// simulator, whose time moves only when its owner advances it.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Transmit buffers set aside inside a backend's memory by [`FrameIo::reserve_tx`]: `count`
/// buffers of `capacity` bytes, `stride` bytes apart from `base`, numbered from `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxReservation {
    /// Index of the first buffer, for [`FrameIo::send_reserved`].
    pub first: usize,
    /// Buffers.
    pub count: usize,
    /// Address of the first buffer's frame.
    pub base: usize,
    /// Bytes from one buffer to the next.
    pub stride: usize,
    /// Usable bytes per buffer, frame headers and ICRC included.
    pub capacity: usize,
}

impl TxReservation {
    /// Offset in each buffer where the transport packet (BTH...) starts, after the frame
    /// headers the backend writes.
    pub fn transport_offset(&self, ipv6: bool) -> usize {
        wire::frame::frame_header_len(if ipv6 {
            wire::IpVersion::V6
        } else {
            wire::IpVersion::V4
        })
    }
}

/// Sends one transport packet copied from `packet`: a convenience over [`FrameIo::send`].
pub fn send_copy(io: &mut dyn FrameIo, meta: &TxMeta, packet: &[u8]) -> Result<bool, NetError> {
    let ipv6 = meta.dst.is_ipv6();
    let max = io.link().max_transport_len(ipv6);
    if packet.len() > max {
        return Err(NetError::TooLong {
            len: packet.len(),
            max,
        });
    }
    io.send(meta, &mut |buf| {
        buf[..packet.len()].copy_from_slice(packet);
        packet.len()
    })
}

/// Which backend to open, and how.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// AF_XDP on an interface.
    Xdp(xdp::XdpConfig),
    /// Kernel UDP socket.
    Udp(udp::UdpConfig),
}

/// Opens a real-network backend (the simulator is opened through [`sim::SimNetwork`]).
pub fn open(config: &BackendConfig) -> Result<Box<dyn FrameIo>, NetError> {
    Ok(match config {
        BackendConfig::Xdp(c) => Box::new(xdp::XdpIo::open(c)?),
        BackendConfig::Udp(c) => Box::new(udp::UdpIo::open(c)?),
    })
}
