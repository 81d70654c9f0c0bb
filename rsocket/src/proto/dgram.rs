//! The two headers of rsocket's datagram protocol (rdma-core's `ds_*` code), without I/O.
//!
//! A datagram rsocket owns a kernel UDP socket bound to its address and one UD QP per
//! local address it sends from. The first datagram to a peer it has no address handle
//! for goes over the UDP socket behind a [`UdpHeader`] (`struct ds_udp_header`) naming
//! the sender's QPN; the receiver delivers it, answers with a payload-less
//! [`UdpOp::Ctrl`] header naming its own QPN, and makes an address handle back to the
//! sender. Each side that has learnt the other's QPN sends over UD from then on: a
//! [`DsHeader`] (`struct ds_header`) carrying the sender's UDP address, then the payload,
//! into the peer's 2048-byte receive slots (Q_Key `RDMA_UDP_QKEY`).
//!
//! Parsing never panics; every malformed header is an error the socket counts and drops.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use xrdma_verbs::wire::Qpn;

use super::msg::{Msg, Op};

/// The tag that opens every [`UdpHeader`] (`DS_UDP_TAG`).
pub const UDP_TAG: u32 = 0x5555_5555;
/// Bytes of a [`UdpHeader`] of an IPv4 socket (`DS_UDP_IPV4_HDR_LEN`).
pub const UDP_HEADER_V4: usize = 16;
/// Bytes of a [`UdpHeader`] of an IPv6 socket (`DS_UDP_IPV6_HDR_LEN`).
pub const UDP_HEADER_V6: usize = 28;
/// Bytes of a [`DsHeader`] from an IPv4 socket (`DS_IPV4_HDR_LEN`).
pub const DS_HEADER_V4: usize = 8;
/// Bytes of a [`DsHeader`] from an IPv6 socket (`DS_IPV6_HDR_LEN`).
pub const DS_HEADER_V6: usize = 24;
/// Bytes of a receive slot, a send slot, and of the buffer rsocket reads its UDP socket
/// into (`RS_SNDLOWAT`).
pub const SLOT: usize = 2048;
/// Bytes of the GRH in front of every UD receive.
pub const GRH_LEN: usize = 40;

/// The largest payload a datagram socket of the family of `v6` sends to a peer reached
/// over a link of path MTU `path_mtu` bytes: it must fit behind the [`UdpHeader`] in the
/// 2048 bytes rsocket reads its UDP socket into (2032 bytes, IPv6 2020: the first
/// datagram to a peer goes that way), and behind the [`DsHeader`] in one UD message (at
/// most the path MTU) and one receive slot. rsocket itself checks no length: a larger
/// datagram is cut short on the UDP path and lost on the UD path.
pub fn max_payload(v6: bool, path_mtu: usize) -> usize {
    let (udp, ds) = if v6 {
        (UDP_HEADER_V6, DS_HEADER_V6)
    } else {
        (UDP_HEADER_V4, DS_HEADER_V4)
    };
    (SLOT - udp).min(SLOT.min(path_mtu).saturating_sub(ds))
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than the header needs.
    Short,
    /// A [`UdpHeader`] without [`UDP_TAG`].
    Tag,
    /// A version other than 4 or 6, or one that is not the sender's address family.
    Version(u8),
    /// A length that is not its version's.
    Length(u8),
    /// A [`UdpHeader`] operation other than data and control.
    Op(u8),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short => write!(f, "datagram shorter than its header"),
            HeaderError::Tag => write!(f, "UDP header without rsocket's tag"),
            HeaderError::Version(v) => write!(f, "header version {v} does not fit"),
            HeaderError::Length(l) => write!(f, "header length {l} does not fit its version"),
            HeaderError::Op(o) => write!(f, "UDP header operation {o} is not data or control"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// What a [`UdpHeader`] asks of its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpOp {
    /// Deliver the payload that follows, and answer with [`UdpOp::Ctrl`] (`RS_OP_DATA`).
    Data,
    /// No payload: the sender's QPN, in answer to data (`RS_OP_CTRL`).
    Ctrl,
}

impl UdpOp {
    fn op(self) -> Op {
        match self {
            UdpOp::Data => Op::Data,
            UdpOp::Ctrl => Op::Ctrl,
        }
    }

    /// The byte on the wire: the code of rsocket's message operation.
    fn code(self) -> u8 {
        (Msg::new(self.op(), 0).0 >> 29) as u8
    }

    fn from_code(code: u8) -> Result<UdpOp, HeaderError> {
        if code > 7 {
            return Err(HeaderError::Op(code));
        }
        match Msg(u32::from(code) << 29).op() {
            Op::Data => Ok(UdpOp::Data),
            Op::Ctrl => Ok(UdpOp::Ctrl),
            _ => Err(HeaderError::Op(code)),
        }
    }
}

fn version_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 4 } else { 6 }
}

/// `struct ds_udp_header`: what leads a datagram on the UDP socket.
///
/// ```text
/// 0      4        5   6       7        8      12
/// | tag  | version| op| length| rsvd   | qpn  | address (4 or 16 bytes)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader {
    /// What the receiver is to do.
    pub op: UdpOp,
    /// The sender's QP, where UD datagrams to it go.
    pub qpn: Qpn,
    /// The address of the sender's QP. Receivers go by the UDP source address instead,
    /// as rsocket does.
    pub addr: IpAddr,
}

impl UdpHeader {
    /// Its length on the wire.
    pub fn wire_len(&self) -> usize {
        match self.addr {
            IpAddr::V4(_) => UDP_HEADER_V4,
            IpAddr::V6(_) => UDP_HEADER_V6,
        }
    }

    /// Writes the header at the start of `buf`; the bytes written, or `None` if `buf` is
    /// too short.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = self.wire_len();
        let b = buf.get_mut(..len)?;
        b[0..4].copy_from_slice(&UDP_TAG.to_be_bytes());
        b[4] = version_of(&self.addr);
        b[5] = self.op.code();
        b[6] = len as u8;
        b[7] = 0;
        b[8..12].copy_from_slice(&self.qpn.value().to_be_bytes());
        match self.addr {
            IpAddr::V4(a) => b[12..16].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b[12..28].copy_from_slice(&a.octets()),
        }
        Some(len)
    }

    /// Parses the header of `datagram`, received from `from`, checked as rsocket checks
    /// it (`udp_svc_valid_udp_hdr`): the tag, a version of `from`'s family and that
    /// version's length. The QPN's top 8 bits are ignored. Returns the header and the
    /// payload after it.
    pub fn parse(datagram: &[u8], from: SocketAddr) -> Result<(UdpHeader, &[u8]), HeaderError> {
        if datagram.len() < UDP_HEADER_V4 {
            return Err(HeaderError::Short);
        }
        if datagram[0..4] != UDP_TAG.to_be_bytes() {
            return Err(HeaderError::Tag);
        }
        let (version, op, length) = (datagram[4], datagram[5], datagram[6]);
        if version != version_of(&from.ip()) {
            return Err(HeaderError::Version(version));
        }
        let want = if version == 4 {
            UDP_HEADER_V4
        } else {
            UDP_HEADER_V6
        };
        if usize::from(length) != want {
            return Err(HeaderError::Length(length));
        }
        if datagram.len() < want {
            return Err(HeaderError::Short);
        }
        let op = UdpOp::from_code(op)?;
        let qpn = Qpn::new_masked(u32::from_be_bytes([
            datagram[8],
            datagram[9],
            datagram[10],
            datagram[11],
        ]));
        let addr = if version == 4 {
            let mut a = [0u8; 4];
            a.copy_from_slice(&datagram[12..16]);
            IpAddr::V4(Ipv4Addr::from(a))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&datagram[12..28]);
            IpAddr::V6(Ipv6Addr::from(a))
        };
        Ok((UdpHeader { op, qpn, addr }, &datagram[want..]))
    }
}

/// `struct ds_header`: what leads a datagram sent over UD, naming its sender's UDP
/// address (the source a receiver reports).
///
/// ```text
/// 0        1       2     4
/// | version| length| port| IPv4 address            (8 bytes)
/// | version| length| port| flow info | IPv6 address (24 bytes)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsHeader {
    /// The sender's address.
    pub src: SocketAddr,
}

impl DsHeader {
    /// Its length on the wire.
    pub fn wire_len(&self) -> usize {
        match self.src {
            SocketAddr::V4(_) => DS_HEADER_V4,
            SocketAddr::V6(_) => DS_HEADER_V6,
        }
    }

    /// Writes the header at the start of `buf`; the bytes written, or `None` if `buf` is
    /// too short.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = self.wire_len();
        let b = buf.get_mut(..len)?;
        b[0] = version_of(&self.src.ip());
        b[1] = len as u8;
        b[2..4].copy_from_slice(&self.src.port().to_be_bytes());
        match self.src {
            SocketAddr::V4(a) => b[4..8].copy_from_slice(&a.ip().octets()),
            SocketAddr::V6(a) => {
                b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
                b[8..24].copy_from_slice(&a.ip().octets());
            }
        }
        Some(len)
    }

    /// Parses the header of a received UD message (after its GRH). Checked as rsocket
    /// checks it (`ds_valid_recv`): a version of 4 or 6 with its own length; and, which
    /// rsocket omits, that the message holds the whole header. Returns the header and the
    /// payload after it.
    pub fn parse(message: &[u8]) -> Result<(DsHeader, &[u8]), HeaderError> {
        if message.len() < DS_HEADER_V4 {
            return Err(HeaderError::Short);
        }
        let (version, length) = (message[0], message[1]);
        let want = match version {
            4 => DS_HEADER_V4,
            6 => DS_HEADER_V6,
            v => return Err(HeaderError::Version(v)),
        };
        if usize::from(length) != want {
            return Err(HeaderError::Length(length));
        }
        if message.len() < want {
            return Err(HeaderError::Short);
        }
        let port = u16::from_be_bytes([message[2], message[3]]);
        let src = if version == 4 {
            let mut a = [0u8; 4];
            a.copy_from_slice(&message[4..8]);
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
        } else {
            let flow = u32::from_be_bytes([message[4], message[5], message[6], message[7]]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&message[8..24]);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a), port, flow, 0))
        };
        Ok((DsHeader { src }, &message[want..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn udp_header_round_trips_and_matches_rsocket_layout() {
        let h = UdpHeader {
            op: UdpOp::Data,
            qpn: Qpn::new(0x12_3456).unwrap(),
            addr: "198.18.0.1".parse().unwrap(),
        };
        let mut buf = [0u8; 64];
        assert_eq!(h.emit(&mut buf), Some(16));
        assert_eq!(
            &buf[..16],
            &[
                0x55, 0x55, 0x55, 0x55, 4, 0, 16, 0, 0, 0x12, 0x34, 0x56, 198, 18, 0, 1
            ]
        );
        buf[16..19].copy_from_slice(b"abc");
        let (back, payload) = UdpHeader::parse(&buf[..19], v4("198.18.0.1:9")).unwrap();
        assert_eq!(back, h);
        assert_eq!(payload, b"abc");

        let ctrl = UdpHeader {
            op: UdpOp::Ctrl,
            ..h
        };
        ctrl.emit(&mut buf).unwrap();
        assert_eq!(buf[5], 7, "RS_OP_CTRL");
    }

    #[test]
    fn udp_header_of_ipv6() {
        let h = UdpHeader {
            op: UdpOp::Ctrl,
            qpn: Qpn::new(77).unwrap(),
            addr: "2001:db8::5".parse().unwrap(),
        };
        let mut buf = [0u8; 28];
        assert_eq!(h.emit(&mut buf), Some(28));
        assert_eq!((buf[4], buf[6]), (6, 28));
        let from: SocketAddr = "[2001:db8::5]:1".parse().unwrap();
        assert_eq!(UdpHeader::parse(&buf, from).unwrap(), (h, &[][..]));
        // The same bytes from an IPv4 sender are refused, as by rsocket.
        assert_eq!(
            UdpHeader::parse(&buf, v4("1.2.3.4:1")),
            Err(HeaderError::Version(6))
        );
    }

    #[test]
    fn udp_header_ignores_the_top_byte_of_the_qpn() {
        let mut buf = [0u8; 16];
        UdpHeader {
            op: UdpOp::Data,
            qpn: Qpn::new(5).unwrap(),
            addr: "198.18.0.9".parse().unwrap(),
        }
        .emit(&mut buf)
        .unwrap();
        buf[8] = 0xff;
        let (h, _) = UdpHeader::parse(&buf, v4("198.18.0.9:1")).unwrap();
        assert_eq!(h.qpn.value(), 5);
    }

    #[test]
    fn malformed_udp_headers_are_refused() {
        let mut good = [0u8; 16];
        UdpHeader {
            op: UdpOp::Data,
            qpn: Qpn::new(5).unwrap(),
            addr: "198.18.0.9".parse().unwrap(),
        }
        .emit(&mut good)
        .unwrap();
        let from = v4("198.18.0.9:1");
        let bad = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            UdpHeader::parse(&b, from).map(|(h, _)| h)
        };
        assert_eq!(UdpHeader::parse(&good[..15], from), Err(HeaderError::Short));
        assert_eq!(bad(0, 0x54), Err(HeaderError::Tag));
        assert_eq!(bad(4, 5), Err(HeaderError::Version(5)));
        assert_eq!(bad(4, 6), Err(HeaderError::Version(6)));
        assert_eq!(bad(6, 28), Err(HeaderError::Length(28)));
        assert_eq!(bad(5, 4), Err(HeaderError::Op(4)));
        assert_eq!(bad(5, 200), Err(HeaderError::Op(200)));
        // An IPv6 header cut short.
        let mut v6 = [0u8; 28];
        UdpHeader {
            op: UdpOp::Data,
            qpn: Qpn::new(5).unwrap(),
            addr: "::1".parse().unwrap(),
        }
        .emit(&mut v6)
        .unwrap();
        let from6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(UdpHeader::parse(&v6[..20], from6), Err(HeaderError::Short));
    }

    #[test]
    fn ds_header_round_trips_and_matches_rsocket_layout() {
        let h = DsHeader {
            src: v4("198.18.0.2:7000"),
        };
        let mut buf = [0u8; 32];
        assert_eq!(h.emit(&mut buf), Some(8));
        assert_eq!(&buf[..8], &[4, 8, 0x1b, 0x58, 198, 18, 0, 2]);
        buf[8] = b'x';
        assert_eq!(DsHeader::parse(&buf[..9]).unwrap(), (h, &b"x"[..]));

        let h6 = DsHeader {
            src: SocketAddr::V6(SocketAddrV6::new("2001:db8::9".parse().unwrap(), 9, 3, 0)),
        };
        assert_eq!(h6.emit(&mut buf), Some(24));
        assert_eq!(&buf[..8], &[6, 24, 0, 9, 0, 0, 0, 3]);
        assert_eq!(DsHeader::parse(&buf[..24]).unwrap(), (h6, &[][..]));
    }

    #[test]
    fn malformed_ds_headers_are_refused() {
        let mut good = [0u8; 24];
        DsHeader {
            src: "[::1]:5".parse().unwrap(),
        }
        .emit(&mut good)
        .unwrap();
        assert_eq!(DsHeader::parse(&good[..7]), Err(HeaderError::Short));
        assert_eq!(DsHeader::parse(&good[..23]), Err(HeaderError::Short));
        let mut b = good;
        b[0] = 5;
        assert_eq!(DsHeader::parse(&b), Err(HeaderError::Version(5)));
        let mut b = good;
        b[1] = 8;
        assert_eq!(DsHeader::parse(&b), Err(HeaderError::Length(8)));
        let mut b = good;
        b[0] = 4;
        assert_eq!(DsHeader::parse(&b), Err(HeaderError::Length(24)));
    }

    #[test]
    fn emitting_into_a_short_buffer_fails() {
        let h = DsHeader {
            src: v4("1.2.3.4:5"),
        };
        assert_eq!(h.emit(&mut [0u8; 7]), None);
        let u = UdpHeader {
            op: UdpOp::Data,
            qpn: Qpn::new(1).unwrap(),
            addr: "1.2.3.4".parse().unwrap(),
        };
        assert_eq!(u.emit(&mut [0u8; 15]), None);
    }

    #[test]
    fn the_payload_limit_is_the_smallest_hop() {
        // Large path MTU: the UDP path bounds it (2048 - 16).
        assert_eq!(max_payload(false, 4096), 2032);
        assert_eq!(max_payload(true, 4096), 2020);
        // A 1500-byte Ethernet link carries 1024-byte RoCE messages.
        assert_eq!(max_payload(false, 1024), 1016);
        assert_eq!(max_payload(true, 1024), 1000);
        assert_eq!(max_payload(false, 4), 0);
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), v6 in proptest::prelude::any::<bool>()) {
            let from: SocketAddr = if v6 { "[::1]:1".parse().unwrap() } else { v4("1.1.1.1:1") };
            if let Ok((h, rest)) = UdpHeader::parse(&bytes, from) {
                proptest::prop_assert_eq!(h.wire_len() + rest.len(), bytes.len());
            }
            if let Ok((h, rest)) = DsHeader::parse(&bytes) {
                proptest::prop_assert_eq!(h.wire_len() + rest.len(), bytes.len());
            }
        }
    }
}
