//! The unreliable datagram transport: building and checking UD SEND packets, and the GRH a
//! UD receive starts with. Pure functions; the QP object supplies state and buffers.

use std::net::{IpAddr, Ipv4Addr};

use crate::wire::{
    self, BthRepr, DethRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, Opcode, Psn, Qkey, Qpn,
    TransportClass, TransportRepr, icrc,
};

/// Length of the Global Route Header at the start of every UD receive buffer.
pub const GRH_LEN: usize = 40;

/// What a UD SEND carries besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdHeader {
    /// Destination QP.
    pub dest_qp: Qpn,
    /// Q_Key the receiver checks.
    pub qkey: Qkey,
    /// Sending QP.
    pub src_qp: Qpn,
    /// Packet sequence number (UD receivers ignore it; it counts sends).
    pub psn: Psn,
    /// Immediate data, as its four wire bytes read big-endian.
    pub imm: Option<u32>,
    /// Solicited event requested.
    pub solicited: bool,
}

impl UdHeader {
    fn transport(&self) -> TransportRepr {
        let opcode = if self.imm.is_some() {
            Opcode::UD_SEND_ONLY_WITH_IMMEDIATE
        } else {
            Opcode::UD_SEND_ONLY
        };
        TransportRepr {
            deth: Some(DethRepr {
                qkey: self.qkey,
                src_qp: self.src_qp,
            }),
            imm: self.imm,
            ..TransportRepr::new(BthRepr {
                solicited: self.solicited,
                ..BthRepr::new(opcode, self.dest_qp, self.psn)
            })
        }
    }

    /// Bytes of headers (BTH, DETH, ImmDt) before the payload.
    pub fn headers_len(&self) -> usize {
        self.transport().headers_len()
    }

    /// Writes the headers for `payload_len` bytes of payload into `buf`, and the pad after
    /// where the payload goes; returns the payload's offset. The whole packet is
    /// [`UdHeader::packet_len`] bytes.
    pub fn emit(&self, payload_len: usize, buf: &mut [u8]) -> wire::Result<usize> {
        self.transport().emit_headers(payload_len, buf)
    }

    /// Length of the packet (headers, payload, pad) for `payload_len` bytes of payload.
    pub fn packet_len(&self, payload_len: usize) -> usize {
        self.transport().buffer_len(payload_len)
    }
}

/// A received UD SEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdPacket<'a> {
    /// The headers.
    pub header: UdHeader,
    /// The payload, pad removed.
    pub payload: &'a [u8],
}

/// Parses a transport packet that must be a UD SEND.
pub fn parse(packet: &[u8]) -> wire::Result<UdPacket<'_>> {
    let (repr, payload) = TransportRepr::parse(packet)?;
    if repr.bth.opcode.class() != Some(TransportClass::Ud) {
        return Err(wire::Error::Unsupported);
    }
    let deth = repr.deth.ok_or(wire::Error::Malformed)?;
    Ok(UdPacket {
        header: UdHeader {
            dest_qp: repr.bth.dest_qp,
            qkey: deth.qkey,
            src_qp: deth.src_qp,
            psn: repr.bth.psn,
            imm: repr.imm,
            solicited: repr.bth.solicited,
        },
        payload,
    })
}

/// The 40-byte GRH libibverbs puts before a UD receive's payload. For IPv6 it is the IPv6
/// header of the packet; for IPv4, 20 zero bytes then the IPv4 header (as rxe and RoCE NICs
/// do), which is what `ibv_init_ah_from_wc` reads the sender's address from. The backend
/// does not hand us the received IP header, so it is rebuilt as xrdma sends it.
pub fn grh(src: IpAddr, dst: IpAddr, transport_len: usize) -> [u8; GRH_LEN] {
    let udp_len = 8 + transport_len + icrc::ICRC_LEN;
    let mut g = [0u8; GRH_LEN];
    // Emitting into a 20- or 40-byte slice of a fixed buffer with a UDP-sized payload
    // length cannot fail.
    let _ = match (src, dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => Ipv6Repr {
            src,
            dst,
            next_header: 17,
            payload_len: udp_len,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut Ipv6Packet::new_unchecked(&mut g[..])),
        (src, dst) => Ipv4Repr {
            src: v4(src),
            dst: v4(dst),
            protocol: 17,
            payload_len: udp_len,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut g[20..])),
    };
    g
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(imm: Option<u32>) -> UdHeader {
        UdHeader {
            dest_qp: Qpn::new_masked(0x123),
            qkey: Qkey::new(0x1111_1111),
            src_qp: Qpn::new_masked(0x456),
            psn: Psn::new_masked(7),
            imm,
            solicited: true,
        }
    }

    #[test]
    fn sends_round_trip_with_and_without_immediate() {
        for imm in [None, Some(0xdead_beef)] {
            let h = header(imm);
            let payload = b"hello, ud";
            let mut buf = [0u8; 64];
            let at = h.emit(payload.len(), &mut buf).unwrap();
            assert_eq!(at, h.headers_len());
            buf[at..at + payload.len()].copy_from_slice(payload);
            let len = h.packet_len(payload.len());
            assert_eq!(len % 4, 0);
            let p = parse(&buf[..len]).unwrap();
            assert_eq!(p.header, h);
            assert_eq!(p.payload, payload);
        }
        assert_eq!(header(Some(1)).headers_len(), 12 + 8 + 4);
    }

    #[test]
    fn non_ud_packets_are_refused() {
        let rc = TransportRepr::new(BthRepr::new(
            Opcode::RC_SEND_ONLY,
            Qpn::new_masked(1),
            Psn::ZERO,
        ));
        let mut buf = [0u8; 16];
        let len = rc.emit(&[1, 2, 3, 4], &mut buf).unwrap();
        assert_eq!(parse(&buf[..len]), Err(wire::Error::Unsupported));
    }

    #[test]
    fn grh_carries_a_valid_ip_header() {
        let (s, d) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let g = grh(s, d, 100);
        assert_eq!(&g[..20], &[0u8; 20]);
        // The header describes the whole datagram, which the GRH does not hold: read the
        // fields rather than parse a packet.
        let ip = Ipv4Packet::new_unchecked(&g[20..]);
        assert_eq!((ip.version(), ip.header_len(), ip.protocol()), (4, 20, 17));
        assert!(ip.verify_checksum());
        assert_eq!(
            (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr())),
            (s, d)
        );
        assert_eq!(ip.total_len(), 20 + 8 + 100 + 4);

        let (s6, d6) = ("2001:2::1".parse().unwrap(), "2001:2::2".parse().unwrap());
        let g = grh(s6, d6, 100);
        let ip6 = Ipv6Packet::new_unchecked(&g[..]);
        assert_eq!(
            (IpAddr::V6(ip6.src_addr()), IpAddr::V6(ip6.dst_addr())),
            (s6, d6)
        );
        assert_eq!(ip6.payload_len(), 8 + 100 + 4);
    }
}
