//! Minimal synchronous rtnetlink client: link facts, addresses, route lookups and
//! neighbour (ARP / NDP) resolution for the AF_XDP backend.
//!
//! Everything is obtained over a `NETLINK_ROUTE` socket (plus, as a last resort for
//! neighbour probing, one UDP datagram). Nothing is read from `/sys` or `/proc/net`:
//! those show the view of the *mount* namespace, while a netlink socket talks to the
//! network namespace of the thread that created it. A thread that entered another
//! network namespace with `setns(CLONE_NEWNET)` and then calls [`Netlink::open`]
//! therefore gets answers about that namespace, whichever thread later uses the
//! handle.
//!
//! Messages are encoded and decoded with `netlink-packet-route`; the socket is the
//! blocking `netlink_sys::Socket` (no async runtime).

#![deny(unsafe_op_in_unsafe_fn)]

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLA_TYPE_MASK, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlasIterator,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, LinkXdp,
    XdpAttached,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr as NlSocketAddr, protocols::NETLINK_ROUTE};

/// Upper bound on how long one request waits for the kernel's answer (`SO_RCVTIMEO`).
/// The kernel answers rtnetlink requests synchronously, so this only guards
/// against a lost reply hanging the caller forever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Initial size of the reusable receive buffer; grown on demand (never truncates).
const RX_BUF_INITIAL: usize = 32 * 1024;
/// How often a dump that the kernel flagged `NLM_F_DUMP_INTR` is restarted.
const MAX_DUMP_ATTEMPTS: usize = 5;
/// Poll interval of [`Netlink::resolve_next_hop`].
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// Minimum spacing of repeated probes while no neighbour entry is being resolved.
const REPROBE_INTERVAL: Duration = Duration::from_millis(100);
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: extended-ack attribute carrying a human readable message.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `IFNAMSIZ` (including the terminating NUL).
const IFNAMSIZ: usize = 16;

/// Handle to a `NETLINK_ROUTE` socket in the network namespace of the thread that
/// opened it.
///
/// Requests are strictly sequential (`&mut self`); every request carries a fresh
/// sequence number and stale replies (e.g. the rest of a dump abandoned after an
/// error) are skipped. The send and receive buffers are reused across calls.
pub struct Netlink {
    sock: Socket,
    /// Our netlink port id (assigned by the kernel at bind time).
    port: u32,
    /// Sequence number of the request in flight (or of the last one).
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .field("port", &self.port)
            .field("seq", &self.seq)
            .finish()
    }
}

/// Facts about one network interface (from `RTM_GETLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index (`ifindex`).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address; all zero when the link has none (loopback, tun, wireguard)
    /// or its address is not 6 bytes long (e.g. InfiniBand).
    pub mac: [u8; 6],
    /// MTU in bytes.
    pub mtu: u32,
    /// Number of RX queues the device was allocated (`IFLA_NUM_RX_QUEUES`, i.e.
    /// `dev->num_rx_queues`). Note: this is the allocated maximum, not the number
    /// currently active (`ethtool -l`); 0 if the kernel did not report it.
    pub num_rx_queues: u32,
    /// Number of TX queues the device was allocated (`IFLA_NUM_TX_QUEUES`); 0 if
    /// not reported.
    pub num_tx_queues: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`, which the kernel sets when the device is up
    /// and its RFC 2863 operstate is UP or UNKNOWN, e.g. loopback).
    pub running: bool,
    /// Link kind from `IFLA_INFO_KIND` (`"veth"`, `"bridge"`, ...); `None` for
    /// devices without rtnl link ops (physical NICs, loopback).
    pub kind: Option<String>,
    /// An XDP program is attached in some mode (`IFLA_XDP_ATTACHED` != none).
    pub xdp_attached: bool,
}

/// Result of a route lookup (`RTM_GETROUTE`, like `ip route get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Output interface index.
    pub oif: u32,
    /// Gateway (`RTA_GATEWAY`, or `RTA_VIA` for IPv4-over-IPv6-nexthop routes);
    /// `None` when the destination is directly connected.
    pub gateway: Option<IpAddr>,
    /// Preferred source address (`RTA_PREFSRC`), if the kernel chose one.
    pub prefsrc: Option<IpAddr>,
}

/// State of a neighbour cache entry (`NUD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighState {
    /// `NUD_INCOMPLETE`: resolution in progress, no address yet.
    Incomplete,
    /// `NUD_REACHABLE`: recently confirmed.
    Reachable,
    /// `NUD_STALE`: address known but unconfirmed for a while.
    Stale,
    /// `NUD_DELAY`: stale, waiting before probing.
    Delay,
    /// `NUD_PROBE`: stale, being re-probed.
    Probe,
    /// `NUD_FAILED`: resolution failed.
    Failed,
    /// `NUD_NOARP`: no resolution needed (e.g. loopback, multicast).
    Noarp,
    /// `NUD_PERMANENT`: static entry.
    Permanent,
    /// `NUD_NONE` (or a state value this module does not know).
    None,
}

impl NeighState {
    /// True for the states in which the entry's link-layer address may be used
    /// (the kernel's `NUD_VALID`: reachable, stale, delay, probe, permanent, noarp).
    pub fn is_valid(self) -> bool {
        matches!(
            self,
            NeighState::Reachable
                | NeighState::Stale
                | NeighState::Delay
                | NeighState::Probe
                | NeighState::Permanent
                | NeighState::Noarp
        )
    }
}

impl From<NeighbourState> for NeighState {
    fn from(s: NeighbourState) -> Self {
        match s {
            NeighbourState::Incomplete => NeighState::Incomplete,
            NeighbourState::Reachable => NeighState::Reachable,
            NeighbourState::Stale => NeighState::Stale,
            NeighbourState::Delay => NeighState::Delay,
            NeighbourState::Probe => NeighState::Probe,
            NeighbourState::Failed => NeighState::Failed,
            NeighbourState::Noarp => NeighState::Noarp,
            NeighbourState::Permanent => NeighState::Permanent,
            _ => NeighState::None,
        }
    }
}

/// A neighbour cache entry (`RTM_NEWNEIGH` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Link-layer address (`NDA_LLADDR`) if present and 6 bytes long.
    pub mac: Option<[u8; 6]>,
    /// Entry state.
    pub state: NeighState,
}

/// How a request is terminated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// A single (non-multipart) answer or an error.
    One,
    /// A multipart dump ending in `NLMSG_DONE`.
    Dump,
    /// An `NLMSG_ERROR` with code 0 (request sent with `NLM_F_ACK`).
    Ack,
}

/// Internal error: keeps the kernel's errno so callers can map specific values.
#[derive(Debug)]
enum NlError {
    /// `NLMSG_ERROR` (or an errored `NLMSG_DONE`) with this positive errno and the
    /// kernel's extended-ack message, if it gave one.
    Kernel { errno: i32, extack: Option<String> },
    /// Socket or decoding failure.
    Io(io::Error),
}

impl From<io::Error> for NlError {
    fn from(e: io::Error) -> Self {
        NlError::Io(e)
    }
}

impl NlError {
    fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            NlError::Io(e) => e.raw_os_error(),
        }
    }

    /// Converts into an `io::Error` whose kind is derived from the errno and whose
    /// message is `"{what}: {os error text}[ ({extack})]"`.
    fn context(self, what: impl fmt::Display) -> io::Error {
        match self {
            NlError::Kernel { errno, extack } => {
                let os = io::Error::from_raw_os_error(errno);
                let msg = match extack {
                    Some(m) => format!("{what}: {os} (kernel: {m})"),
                    None => format!("{what}: {os}"),
                };
                io::Error::new(os.kind(), msg)
            }
            NlError::Io(e) => io::Error::new(e.kind(), format!("{what}: {e}")),
        }
    }

    /// Like [`NlError::context`] but with an explicit kind and message (the
    /// kernel's text is appended).
    fn with(self, kind: io::ErrorKind, what: impl fmt::Display) -> io::Error {
        let e = self.context(what);
        io::Error::new(kind, e.to_string())
    }
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Extracts `NLMSGERR_ATTR_MSG` from extended-ack TLVs.
fn extack_message(tlvs: &[u8]) -> Option<String> {
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() & NLA_TYPE_MASK == NLMSGERR_ATTR_MSG {
            let v = nla.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            let s = String::from_utf8_lossy(&v[..end]).trim().to_owned();
            return (!s.is_empty()).then_some(s);
        }
    }
    None
}

/// Extended ack of an `NLMSG_ERROR`: `after_code` is the payload following the
/// errno (the echoed request, only its header when `NLM_F_CAPPED`, then TLVs).
fn error_extack(flags: u16, after_code: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len: [u8; 4] = after_code.get(..4)?.try_into().ok()?;
        u32::from_ne_bytes(len) as usize
    };
    extack_message(after_code.get(align4(echoed)..)?)
}

/// Sets `SO_RCVTIMEO` on `fd`.
fn set_recv_timeout(fd: RawFd, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `fd` is an open socket owned by the caller for the duration of this
    // call; the option value points to an initialised `timeval` that outlives the
    // call, and `optlen` is exactly its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast::<libc::c_void>(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Converts a decoded link message to [`LinkInfo`], also returning the raw
/// `ifi_flags` (needed for `IFF_LOOPBACK` / `IFF_NOARP`).
fn link_from_message(msg: LinkMessage) -> (LinkInfo, LinkFlags) {
    let flags = msg.header.flags;
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: [0; 6],
        mtu: 0,
        num_rx_queues: 0,
        num_tx_queues: 0,
        up: flags.contains(LinkFlags::Up),
        running: flags.contains(LinkFlags::Running),
        kind: None,
        xdp_attached: false,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name,
            LinkAttribute::Address(addr) => {
                if let Ok(mac) = <[u8; 6]>::try_from(addr.as_slice()) {
                    info.mac = mac;
                }
            }
            LinkAttribute::Mtu(mtu) => info.mtu = mtu,
            LinkAttribute::NumRxQueues(n) => info.num_rx_queues = n,
            LinkAttribute::NumTxQueues(n) => info.num_tx_queues = n,
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    NlLinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            LinkAttribute::Xdp(xdp) => {
                info.xdp_attached = xdp
                    .iter()
                    .any(|x| matches!(x, LinkXdp::Attached(mode) if *mode != XdpAttached::None));
            }
            _ => {}
        }
    }
    (info, flags)
}

fn neighbour_from_message(msg: &NeighbourMessage) -> Neighbour {
    let mac = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(ll) => <[u8; 6]>::try_from(ll.as_slice()).ok(),
        _ => None,
    });
    Neighbour {
        mac,
        state: msg.header.state.into(),
    }
}

fn neighbour_dst(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Makes the kernel resolve `ip` by sending one empty UDP datagram to `(ip, 9)`
/// (discard) from a socket created by the calling thread (so in its namespace).
fn probe_with_udp(ifindex: u32, ip: IpAddr) -> io::Result<()> {
    let res = match ip {
        IpAddr::V4(v4) => UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.send_to(&[], SocketAddrV4::new(v4, 9))),
        // The scope id only matters (and is only honoured) for link-local targets.
        IpAddr::V6(v6) => UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0))
            .and_then(|s| s.send_to(&[], SocketAddrV6::new(v6, 9, 0, ifindex))),
    };
    res.map(|_| ()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("probing neighbour {ip} with a UDP datagram to port 9 failed: {e}"),
        )
    })
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    ///
    /// The socket stays bound to that namespace for its whole life, whichever
    /// thread uses it later. (The UDP fallback of [`Netlink::probe_neighbour`]
    /// however uses the namespace of the thread calling *it*.)
    pub fn open() -> io::Result<Self> {
        let ctx =
            |what: &str, e: io::Error| io::Error::new(e.kind(), format!("netlink: {what}: {e}"));
        let mut sock =
            Socket::new(NETLINK_ROUTE).map_err(|e| ctx("cannot open a NETLINK_ROUTE socket", e))?;
        let addr = sock.bind_auto().map_err(|e| ctx("bind failed", e))?;
        sock.connect(&NlSocketAddr::new(0, 0))
            .map_err(|e| ctx("connect to the kernel failed", e))?;
        // Best effort: human readable error messages and short error echoes. Both
        // exist since Linux 4.12; older kernels just reject the option.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        set_recv_timeout(sock.as_raw_fd(), REPLY_TIMEOUT)
            .map_err(|e| ctx("setting SO_RCVTIMEO failed", e))?;
        Ok(Netlink {
            sock,
            port: addr.port_number(),
            seq: 0,
            tx: Vec::with_capacity(256),
            rx: vec![0; RX_BUF_INITIAL],
        })
    }

    /// Looks an interface up by name. `NotFound` ("no such interface: NAME") if it
    /// does not exist, `InvalidInput` if the name cannot be an interface name.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<LinkInfo> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "invalid interface name {name:?} (must be 1..={} bytes, no NUL)",
                    IFNAMSIZ - 1
                ),
            ));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(msg, format_args!("{name}"))
            .map(|(info, _)| info)
    }

    /// Looks an interface up by index. `NotFound` ("no such interface: index N")
    /// if it does not exist.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<LinkInfo> {
        self.link_by_index_raw(index).map(|(info, _)| info)
    }

    fn link_by_index_raw(&mut self, index: u32) -> io::Result<(LinkInfo, LinkFlags)> {
        if index == 0 || index > i32::MAX as u32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid interface index {index}"),
            ));
        }
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, format_args!("index {index}"))
    }

    fn get_link(
        &mut self,
        mut msg: LinkMessage,
        what: fmt::Arguments<'_>,
    ) -> io::Result<(LinkInfo, LinkFlags)> {
        // Statistics are large and unused here (ignored by kernels before 4.19).
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let replies = self
            .request(RouteNetlinkMessage::GetLink(msg), 0, Expect::One)
            .map_err(|e| match e.errno() {
                Some(libc::ENODEV) => io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no such interface: {what}"),
                ),
                _ => e.context(format_args!("netlink: RTM_GETLINK for interface {what}")),
            })?;
        replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_from_message(link)),
                _ => None,
            })
            .ok_or_else(|| {
                invalid_data(format!(
                    "netlink: RTM_GETLINK for {what}: no RTM_NEWLINK in the answer"
                ))
            })
    }

    /// Every interface of this network namespace, in index order.
    pub fn links(&mut self) -> io::Result<Vec<LinkInfo>> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let replies = self
            .request(RouteNetlinkMessage::GetLink(msg), NLM_F_DUMP, Expect::Dump)
            .map_err(|e| e.context("netlink: RTM_GETLINK dump"))?;
        let mut links: Vec<LinkInfo> = replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_from_message(link).0),
                _ => None,
            })
            .collect();
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    /// All IPv4 and IPv6 addresses of interface `ifindex` with their prefix
    /// lengths (`IFA_LOCAL`, or `IFA_ADDRESS` when there is no local/peer split).
    /// Empty if the interface has none or does not exist.
    pub fn addresses(&mut self, ifindex: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_DUMP,
                Expect::Dump,
            )
            .map_err(|e| e.context("netlink: RTM_GETADDR dump"))?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != ifindex {
                continue;
            }
            let mut local = None;
            let mut address = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                out.push((ip, a.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Asks the kernel which route it would use for `dst` (`RTM_GETROUTE` with
    /// `RTA_DST`, like `ip route get DST`).
    ///
    /// No route gives `NetworkUnreachable`, an `unreachable` route
    /// `HostUnreachable`, a `prohibit` route `PermissionDenied`; the message names
    /// the destination.
    pub fn route_get(&mut self, dst: IpAddr) -> io::Result<Route> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(dst.into()));
        let replies = self
            .request(RouteNetlinkMessage::GetRoute(msg), 0, Expect::One)
            .map_err(|e| match e.errno() {
                Some(libc::ENETUNREACH) => e.with(
                    io::ErrorKind::NetworkUnreachable,
                    format_args!("no route to {dst}: network unreachable"),
                ),
                Some(libc::EHOSTUNREACH) => e.with(
                    io::ErrorKind::HostUnreachable,
                    format_args!("{dst} is unreachable (unreachable route)"),
                ),
                Some(libc::EACCES) => e.with(
                    io::ErrorKind::PermissionDenied,
                    format_args!("route to {dst} is prohibited"),
                ),
                _ => e.context(format_args!("netlink: route lookup for {dst}")),
            })?;
        let route = replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| {
                invalid_data(format!(
                    "netlink: route lookup for {dst}: no RTM_NEWROUTE in the answer"
                ))
            })?;
        let mut oif = None;
        let mut gateway = None;
        let mut prefsrc = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(a) => gateway = route_addr(a),
                RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
                RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
                RouteAttribute::PrefSource(a) => prefsrc = route_addr(a),
                _ => {}
            }
        }
        let oif = oif.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::HostUnreachable,
                format!(
                    "route to {dst} has no output interface (route type {:?})",
                    route.header.kind
                ),
            )
        })?;
        Ok(Route {
            oif,
            gateway,
            prefsrc,
        })
    }

    /// The neighbour cache entry for `ip` on interface `ifindex`, or `None` if the
    /// kernel has none (`RTM_GETNEIGH` with `NDA_DST`; on kernels before 5.0,
    /// which lack that, a filtered dump).
    pub fn neighbour(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<Neighbour>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(ip);
        msg.header.ifindex = ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(ip.into()));
        match self.request(RouteNetlinkMessage::GetNeighbour(msg), 0, Expect::One) {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Some(neighbour_from_message(n)),
                _ => None,
            })),
            Err(e) => match e.errno() {
                Some(libc::ENOENT) => Ok(None),
                Some(libc::EOPNOTSUPP) => self.neighbour_dump(ifindex, ip),
                Some(libc::ENODEV) => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no such interface: index {ifindex}"),
                )),
                _ => Err(e.context(format_args!(
                    "netlink: neighbour lookup for {ip} on ifindex {ifindex}"
                ))),
            },
        }
    }

    /// Dump-based neighbour lookup (fallback for kernels without `RTM_GETNEIGH`
    /// doit support).
    fn neighbour_dump(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<Neighbour>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(ip);
        msg.header.ifindex = ifindex;
        let replies = self
            .request(
                RouteNetlinkMessage::GetNeighbour(msg),
                NLM_F_DUMP,
                Expect::Dump,
            )
            .map_err(|e| e.context("netlink: RTM_GETNEIGH dump"))?;
        Ok(replies.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n)
                if n.header.ifindex == ifindex
                    && !n.header.flags.contains(NeighbourFlags::Proxy)
                    && neighbour_dst(n) == Some(ip) =>
            {
                Some(neighbour_from_message(n))
            }
            _ => None,
        }))
    }

    /// Makes the kernel start resolving `ip` on `ifindex` (send an ARP request /
    /// neighbour solicitation) without sending any data.
    ///
    /// Uses `RTM_NEWNEIGH` with `NLM_F_CREATE` and `ndm_flags = NTF_USE`, for which
    /// the kernel only triggers resolution (`neigh_event_send`) and leaves an
    /// existing entry alone. That needs `CAP_NET_ADMIN`; on `EPERM` it falls back to
    /// sending one empty UDP datagram to `(ip, 9)` from the calling thread's
    /// namespace, which resolves the neighbour as a side effect (the route the
    /// kernel picks for it should be via `ifindex`).
    pub fn probe_neighbour(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<()> {
        match self.probe_netlink(ifindex, ip) {
            Ok(()) => Ok(()),
            Err(e) => match e.errno() {
                Some(libc::EPERM) => probe_with_udp(ifindex, ip),
                Some(libc::ENODEV) => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no such interface: index {ifindex}"),
                )),
                _ => Err(e.context(format_args!(
                    "netlink: RTM_NEWNEIGH (NTF_USE) for {ip} on ifindex {ifindex}"
                ))),
            },
        }
    }

    fn probe_netlink(&mut self, ifindex: u32, ip: IpAddr) -> Result<(), NlError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(ip);
        msg.header.ifindex = ifindex;
        msg.header.flags = NeighbourFlags::Use;
        msg.header.state = NeighbourState::None;
        msg.attributes
            .push(NeighbourAttribute::Destination(ip.into()));
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_ACK | NLM_F_CREATE,
            Expect::Ack,
        )
        .map(|_| ())
    }

    /// Finds the interface and destination MAC for sending to `dst`: route lookup,
    /// next hop = gateway or `dst`, then the neighbour entry. If there is no
    /// usable entry the kernel is asked to resolve it ([`Netlink::probe_neighbour`])
    /// and the entry is polled every millisecond until it holds an address in a
    /// valid state (reachable, stale, delay, probe, permanent, noarp).
    ///
    /// Links that do no address resolution (`IFF_LOOPBACK`, `IFF_NOARP`, or no
    /// 6-byte hardware address) return the link's own address, as the kernel does
    /// (all zero for loopback / tun).
    ///
    /// Errors: those of [`Netlink::route_get`]; `HostUnreachable` if resolution
    /// fails (entry goes `FAILED` after our probe); `TimedOut` naming the address
    /// if nothing usable appears within `timeout`.
    pub fn resolve_next_hop(
        &mut self,
        dst: IpAddr,
        timeout: Duration,
    ) -> io::Result<(u32, [u8; 6])> {
        let start = Instant::now();
        let route = self.route_get(dst)?;
        let oif = route.oif;
        let next_hop = route.gateway.unwrap_or(dst);
        let (link, flags) = self.link_by_index_raw(oif)?;
        if flags.intersects(LinkFlags::Loopback | LinkFlags::Noarp) || link.mac == [0; 6] {
            return Ok((oif, link.mac));
        }
        let via = if next_hop == dst {
            String::new()
        } else {
            format!(" (gateway for {dst})")
        };
        let mut last_probe: Option<Instant> = None;
        loop {
            let entry = self.neighbour(oif, next_hop)?;
            match entry {
                Some(Neighbour {
                    mac: Some(mac),
                    state,
                }) if state.is_valid() => return Ok((oif, mac)),
                Some(Neighbour {
                    state: NeighState::Failed,
                    ..
                }) if last_probe.is_some() => {
                    return Err(io::Error::new(
                        io::ErrorKind::HostUnreachable,
                        format!(
                            "address resolution failed for {next_hop}{via} on {} (ifindex {oif}): neighbour entry FAILED",
                            link.name
                        ),
                    ));
                }
                // The kernel is resolving (and retransmitting) on its own.
                Some(Neighbour {
                    state: NeighState::Incomplete | NeighState::Delay | NeighState::Probe,
                    ..
                }) => {}
                // Absent, NONE, FAILED from before, or valid without an address.
                _ => {
                    if last_probe.is_none_or(|t| t.elapsed() >= REPROBE_INTERVAL) {
                        self.probe_neighbour(oif, next_hop)?;
                        last_probe = Some(Instant::now());
                        continue;
                    }
                }
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "timed out after {timeout:?} resolving the MAC address of {next_hop}{via} on {} (ifindex {oif}); last state: {}",
                        link.name,
                        match entry {
                            Some(n) => format!("{:?}", n.state),
                            None => "no entry".to_owned(),
                        }
                    ),
                ));
            }
            std::thread::sleep(POLL_INTERVAL.min(timeout - elapsed));
        }
    }

    // ---------------------------------------------------------------- transport

    /// Sends `msg` (with `NLM_F_REQUEST | flags`) and collects the inner messages
    /// of the answer. Dumps flagged `NLM_F_DUMP_INTR` are restarted.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        expect: Expect,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        self.tx.clear();
        self.tx.resize(packet.buffer_len(), 0);
        packet.serialize(&mut self.tx);
        for _ in 0..MAX_DUMP_ATTEMPTS {
            self.seq = self.seq.wrapping_add(1).max(1);
            NetlinkBuffer::new(&mut self.tx[..]).set_sequence_number(self.seq);
            self.send()?;
            let mut out = Vec::new();
            if self.collect(expect, &mut out)? {
                return Ok(out);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("netlink dump interrupted by concurrent changes {MAX_DUMP_ATTEMPTS} times in a row (NLM_F_DUMP_INTR)"),
        )
        .into())
    }

    fn send(&self) -> io::Result<()> {
        loop {
            match self.sock.send(&self.tx, 0) {
                Ok(n) if n == self.tx.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("netlink: short send ({n} of {} bytes)", self.tx.len()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("netlink: send failed: {e}"),
                    ));
                }
            }
        }
    }

    /// Receives one datagram into `self.rx` (grown to fit; never truncated) and
    /// returns its length.
    fn recv_datagram(&mut self) -> io::Result<usize> {
        let map = |e: io::Error| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("netlink: no answer from the kernel within {REPLY_TIMEOUT:?}"),
                )
            } else {
                io::Error::new(e.kind(), format!("netlink: recv failed: {e}"))
            }
        };
        loop {
            // Peek at the datagram's full size (MSG_TRUNC makes netlink report it).
            let mut empty: &mut [u8] = &mut [];
            let size = match self.sock.recv(&mut empty, libc::MSG_PEEK | libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(map(e)),
            };
            if size > self.rx.len() {
                self.rx.resize(size, 0);
            }
            let mut slice: &mut [u8] = &mut self.rx[..];
            match self.sock.recv(&mut slice, 0) {
                Ok(n) => return Ok(n.min(self.rx.len())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(map(e)),
            }
        }
    }

    /// Reads the answer to the request with sequence number `self.seq`.
    /// `Ok(true)`: complete; `Ok(false)`: a dump was interrupted (restart it).
    fn collect(
        &mut self,
        expect: Expect,
        out: &mut Vec<RouteNetlinkMessage>,
    ) -> Result<bool, NlError> {
        let mut interrupted = false;
        loop {
            let n = self.recv_datagram()?;
            let mut off = 0;
            while n - off >= NLMSG_HDRLEN {
                let buf = NetlinkBuffer::new_checked(&self.rx[off..n])
                    .map_err(|e| invalid_data(format!("netlink: malformed answer: {e}")))?;
                let len = buf.length() as usize;
                let (seq, port, mflags, mtype) = (
                    buf.sequence_number(),
                    buf.port_number(),
                    buf.flags(),
                    buf.message_type(),
                );
                let frame = off..off + len;
                off = (off + align4(len)).min(n);
                if seq != self.seq || port != self.port {
                    continue; // stale answer to an earlier, abandoned request
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.rx[frame])
                    .map_err(|e| {
                        invalid_data(format!(
                            "netlink: cannot decode message of type {mtype}: {e}"
                        ))
                    })?;
                if mflags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match msg.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(!interrupted), // ACK
                            Some(code) => Err(NlError::Kernel {
                                errno: code.get().saturating_abs(),
                                extack: error_extack(mflags, &err.header),
                            }),
                        };
                    }
                    NetlinkPayload::Done(done) => {
                        if done.code < 0 {
                            return Err(NlError::Kernel {
                                errno: done.code.saturating_abs(),
                                extack: extack_message(&done.extended_ack),
                            });
                        }
                        return Ok(!interrupted);
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if expect == Expect::One && mflags & NLM_F_MULTIPART == 0 {
                            return Ok(true);
                        }
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(io::Error::other(
                            "netlink: NLMSG_OVERRUN (kernel dropped data)",
                        )
                        .into());
                    }
                    _ => {} // NLMSG_NOOP
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! These tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns) and the `ip`
    //! tool. They only touch loopback and namespaces they create themselves, and
    //! only use addresses in 198.18.0.0/15.

    use super::*;
    use std::process::Command;

    fn ip_cmd(args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
        assert!(
            out.status.success(),
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn parse_mac(s: &str) -> [u8; 6] {
        let mut mac = [0u8; 6];
        let parts: Vec<_> = s.split(':').collect();
        assert_eq!(parts.len(), 6, "bad MAC {s:?}");
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("bad MAC {s:?}"));
        }
        mac
    }

    /// MAC of `dev` in namespace `ns` as printed by `ip -n NS link show DEV`.
    fn ip_link_mac(ns: &str, dev: &str) -> [u8; 6] {
        let out = ip_cmd(&["-n", ns, "link", "show", "dev", dev]);
        let tail = out
            .split("link/ether ")
            .nth(1)
            .unwrap_or_else(|| panic!("no link/ether in {out:?}"));
        parse_mac(tail.split_whitespace().next().unwrap())
    }

    /// `numrxqueues` / `numtxqueues` of `dev` in `ns` as printed by `ip -d link show`.
    fn ip_link_queues(ns: &str, dev: &str) -> (u32, u32) {
        let out = ip_cmd(&["-n", ns, "-d", "link", "show", "dev", dev]);
        let field = |name: &str| -> u32 {
            let mut words = out.split_whitespace();
            words
                .find(|w| *w == name)
                .and_then(|_| words.next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {out:?}"))
        };
        (field("numrxqueues"), field("numtxqueues"))
    }

    /// Two namespaces joined by a veth pair, 198.18.200.1/24 (a) and .2/24 (b).
    /// Dropping it deletes both namespaces (and with them the veth pair).
    struct NetnsPair {
        ns_a: String,
        ns_b: String,
        veth_a: String,
        veth_b: String,
    }

    impl NetnsPair {
        fn create() -> NetnsPair {
            let pid = std::process::id();
            // Constructed first so that a failure half-way is cleaned up too.
            let pair = NetnsPair {
                ns_a: format!("xrnl-{pid}-a"),
                ns_b: format!("xrnl-{pid}-b"),
                veth_a: format!("xnl{}a", pid % 10000),
                veth_b: format!("xnl{}b", pid % 10000),
            };
            let (a, b, va, vb) = (&pair.ns_a, &pair.ns_b, &pair.veth_a, &pair.veth_b);
            ip_cmd(&["netns", "add", a]);
            ip_cmd(&["netns", "add", b]);
            // Recent kernels give a veth num_possible_cpus() queues by default; pin
            // side a to one RX/TX queue so the queue counts are known.
            ip_cmd(&[
                "link",
                "add",
                va,
                "numrxqueues",
                "1",
                "numtxqueues",
                "1",
                "type",
                "veth",
                "peer",
                "name",
                vb,
            ]);
            ip_cmd(&["link", "set", va, "netns", a]);
            ip_cmd(&["link", "set", vb, "netns", b]);
            ip_cmd(&["-n", a, "addr", "add", "198.18.200.1/24", "dev", va]);
            ip_cmd(&["-n", b, "addr", "add", "198.18.200.2/24", "dev", vb]);
            for (ns, dev) in [(a, va), (b, vb)] {
                ip_cmd(&["-n", ns, "link", "set", "lo", "up"]);
                ip_cmd(&["-n", ns, "link", "set", dev, "up"]);
            }
            pair
        }
    }

    impl Drop for NetnsPair {
        fn drop(&mut self) {
            let quiet = |args: &[&str]| {
                let _ = Command::new("ip")
                    .args(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            // In case the veth was never moved out of our namespace.
            quiet(&["link", "del", &self.veth_a]);
            quiet(&["netns", "del", &self.ns_a]);
            quiet(&["netns", "del", &self.ns_b]);
        }
    }

    /// Runs `f` on a fresh thread that has entered network namespace `ns`;
    /// propagates its panic.
    fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: `file` is an open nsfs descriptor for the whole call; setns only
            // changes the network namespace of this thread, which the test owns.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Drops CAP_NET_ADMIN from the calling thread only (capabilities are
    /// per-thread in Linux).
    fn drop_cap_net_admin_for_this_thread() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        const CAP_NET_ADMIN: u32 = 12;
        let mut hdr = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget reads a v3 header and writes two `Data` elements, which is
        // exactly what both pointers refer to; both live across the call.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut hdr, data.as_mut_ptr()) };
        assert_eq!(rc, 0, "capget: {}", io::Error::last_os_error());
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        data[0].permitted &= !(1 << CAP_NET_ADMIN);
        // SAFETY: as above; capset only reads both structures. pid 0 = this thread.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut hdr, data.as_ptr()) };
        assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
    }

    const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 200, 1));
    const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 200, 2));

    #[test]
    fn handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Netlink>();
    }

    #[test]
    fn loopback() {
        let mut nl = Netlink::open().unwrap();
        let lo = nl.link_by_name("lo").unwrap();
        assert_eq!(lo.index, 1);
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.mtu, 65536);
        assert!(lo.up && lo.running, "{lo:?}");
        assert_eq!(lo.mac, [0; 6]);
        assert_eq!(lo.kind, None);
        assert!(!lo.xdp_attached);
        assert!(lo.num_rx_queues >= 1 && lo.num_tx_queues >= 1, "{lo:?}");
        assert_eq!(nl.link_by_index(1).unwrap(), lo);

        let err = nl.link_by_name("nope0").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(err.to_string(), "no such interface: nope0");
        let err = nl.link_by_index(0x7fff_fff0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        let err = nl.link_by_name("a-name-that-is-too-long").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");

        let addrs = nl.addresses(1).unwrap();
        assert!(
            addrs.contains(&(IpAddr::V4(Ipv4Addr::LOCALHOST), 8)),
            "{addrs:?}"
        );

        let r = nl.route_get(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        assert_eq!(r.oif, 1);
        assert_eq!(r.gateway, None);
        assert_eq!(r.prefsrc, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let (ifindex, mac) = nl
            .resolve_next_hop(IpAddr::V4(Ipv4Addr::LOCALHOST), Duration::from_millis(100))
            .unwrap();
        assert_eq!((ifindex, mac), (1, [0; 6]));

        if addrs.contains(&(IpAddr::V6(Ipv6Addr::LOCALHOST), 128)) {
            let r = nl.route_get(IpAddr::V6(Ipv6Addr::LOCALHOST)).unwrap();
            assert_eq!(r.oif, 1);
            assert_eq!(r.gateway, None);
        }

        // Kernel errors keep their errno's kind and carry the extended-ack text.
        let err = nl
            .neighbour(0, IpAddr::V4(Ipv4Addr::LOCALHOST))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("ifindex 0"), "{err}");
        assert!(
            err.to_string().contains("(kernel: "),
            "no extack text: {err}"
        );
        let err = nl
            .neighbour(0x7fff_fff0, IpAddr::V4(Ipv4Addr::LOCALHOST))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");

        // Many requests on one handle: sequence numbers and buffer reuse.
        for _ in 0..200 {
            assert_eq!(nl.link_by_index(1).unwrap().name, "lo");
            assert!(!nl.addresses(1).unwrap().is_empty());
        }
    }

    #[test]
    fn veth_pair_in_namespaces() {
        let pair = NetnsPair::create();
        let mac_a = ip_link_mac(&pair.ns_a, &pair.veth_a);
        let mac_b = ip_link_mac(&pair.ns_b, &pair.veth_b);
        let queues_a = ip_link_queues(&pair.ns_a, &pair.veth_a);
        assert_eq!(queues_a, (1, 1));
        let veth_a = pair.veth_a.clone();
        let ns_a = pair.ns_a.clone();

        let ifindex = in_netns(&pair.ns_a, move || {
            let mut nl = Netlink::open().unwrap();

            // Each namespace has its own loopback with index 1.
            assert_eq!(nl.link_by_name("lo").unwrap().index, 1);

            let link = nl.link_by_name(&veth_a).unwrap();
            assert_eq!(link.name, veth_a);
            assert_eq!(link.mac, mac_a);
            assert_eq!(link.kind.as_deref(), Some("veth"));
            assert_eq!((link.num_rx_queues, link.num_tx_queues), queues_a);
            assert_eq!(link.mtu, 1500);
            assert!(link.up);
            assert!(!link.xdp_attached);
            assert_eq!(nl.link_by_index(link.index).unwrap(), link);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !nl.link_by_index(link.index).unwrap().running {
                assert!(Instant::now() < deadline, "veth never became RUNNING");
                std::thread::sleep(Duration::from_millis(10));
            }

            let addrs = nl.addresses(link.index).unwrap();
            assert!(addrs.contains(&(A_IP, 24)), "{addrs:?}");
            assert!(addrs.iter().all(|(ip, _)| *ip != B_IP), "{addrs:?}");

            let r = nl.route_get(B_IP).unwrap();
            assert_eq!(
                r,
                Route {
                    oif: link.index,
                    gateway: None,
                    prefsrc: Some(A_IP)
                }
            );

            let before = nl.neighbour(link.index, B_IP).unwrap();
            assert!(
                before.is_none_or(|n| n.state != NeighState::Reachable),
                "{before:?}"
            );

            let (oif, mac) = nl.resolve_next_hop(B_IP, Duration::from_secs(3)).unwrap();
            assert_eq!(oif, link.index);
            assert_eq!(mac, mac_b);
            let after = nl.neighbour(link.index, B_IP).unwrap().unwrap();
            assert_eq!(after.mac, Some(mac_b));
            assert!(after.state.is_valid(), "{after:?}");
            // The dump-based fallback agrees with the direct lookup.
            assert_eq!(nl.neighbour_dump(link.index, B_IP).unwrap(), Some(after));
            assert_eq!(
                nl.neighbour_dump(link.index, IpAddr::V4(Ipv4Addr::new(198, 18, 200, 77)))
                    .unwrap(),
                None
            );
            // Already resolved: answered from the cache (a zero timeout would
            // otherwise fail with TimedOut).
            assert_eq!(
                nl.resolve_next_hop(B_IP, Duration::ZERO).unwrap(),
                (link.index, mac_b)
            );

            // Nobody at .99: default ARP gives up after 3 x 1 s, so a 1 s timeout hits first.
            let nobody = IpAddr::V4(Ipv4Addr::new(198, 18, 200, 99));
            let timeout = Duration::from_millis(1000);
            let t = Instant::now();
            let err = nl.resolve_next_hop(nobody, timeout).unwrap_err();
            let took = t.elapsed();
            assert_eq!(
                err.kind(),
                io::ErrorKind::TimedOut,
                "{err} (after {took:?})"
            );
            assert!(err.to_string().contains("198.18.200.99"), "{err}");
            // Must give up at the deadline, well before the kernel's own ~3 s.
            assert!(
                took >= timeout && took < timeout + Duration::from_millis(1000),
                "{took:?}"
            );

            // No route at all.
            let err = nl
                .route_get(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)))
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NetworkUnreachable, "{err}");
            assert!(err.to_string().contains("unreachable"), "{err}");
            assert!(err.to_string().contains("198.19.0.1"), "{err}");
            let err = nl
                .resolve_next_hop(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)), timeout)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NetworkUnreachable, "{err}");

            link.index
        });

        // Make ARP give up quickly (3 probes, 50 ms apart) and check the FAILED path.
        ip_cmd(&[
            "-n",
            &pair.ns_a,
            "ntable",
            "change",
            "name",
            "arp_cache",
            "dev",
            &pair.veth_a,
            "retrans",
            "50",
        ]);
        in_netns(&pair.ns_a, move || {
            let mut nl = Netlink::open().unwrap();
            let nobody = IpAddr::V4(Ipv4Addr::new(198, 18, 200, 98));
            let t = Instant::now();
            let err = nl
                .resolve_next_hop(nobody, Duration::from_secs(5))
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::HostUnreachable, "{err}");
            assert!(err.to_string().contains("198.18.200.98"), "{err}");
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            assert_eq!(
                nl.neighbour(ifindex, nobody).unwrap().map(|n| n.state),
                Some(NeighState::Failed)
            );
        });

        // Without CAP_NET_ADMIN the netlink probe is refused and the UDP fallback
        // must do the job.
        ip_cmd(&["-n", &ns_a, "neigh", "flush", "dev", &pair.veth_a]);
        in_netns(&pair.ns_a, move || {
            drop_cap_net_admin_for_this_thread();
            let mut nl = Netlink::open().unwrap();
            let flushed = nl.neighbour(ifindex, B_IP).unwrap();
            assert!(flushed.is_none_or(|n| !n.state.is_valid()), "{flushed:?}");
            let err = nl.probe_netlink(ifindex, B_IP).unwrap_err();
            assert_eq!(err.errno(), Some(libc::EPERM), "{err:?}");
            let (oif, mac) = nl.resolve_next_hop(B_IP, Duration::from_secs(3)).unwrap();
            assert_eq!((oif, mac), (ifindex, mac_b));
        });

        drop(pair);
        let left = ip_cmd(&["netns", "list"]);
        assert!(!left.contains(&ns_a), "namespace not removed: {left}");
    }
}
