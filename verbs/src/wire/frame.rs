//! A whole Ethernet RoCEv2 frame: Ethernet, IPv4 or IPv6, UDP, the
//! transport packet and the ICRC.
//!
//! Receive: [`parse_frame`] validates the outer headers and the ICRC and
//! hands back the transport bytes for
//! [`TransportRepr::parse`](super::TransportRepr::parse).
//!
//! Send: [`emit_frame_headers`] writes Ethernet/IP/UDP, the caller writes
//! the transport packet after them (e.g. with
//! [`TransportRepr::emit`](super::TransportRepr::emit)), and
//! [`seal_frame`] appends the ICRC.

use super::ethernet::{self, EtherType, EthernetFrame, EthernetRepr};
use super::icrc::{self, ICRC_LEN};
use super::ipv4::{self, Ipv4Packet, Ipv4Repr, PROTOCOL_UDP};
use super::ipv6::{self, Ipv6Packet, Ipv6Repr};
use super::udp::{self, UdpPacket, UdpRepr};
use super::{Error, Result, bth};

/// Smallest UDP payload of a RoCEv2 datagram: a BTH and the ICRC.
const MIN_UDP_PAYLOAD: usize = bth::HEADER_LEN + ICRC_LEN;

/// The IP version of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4, option-free header.
    V4,
    /// IPv6, no extension headers.
    V6,
}

impl IpVersion {
    /// Length of the IP header xrdma emits and accepts.
    pub const fn header_len(self) -> usize {
        match self {
            IpVersion::V4 => ipv4::HEADER_LEN,
            IpVersion::V6 => ipv6::HEADER_LEN,
        }
    }

    /// The EtherType that announces this version.
    pub const fn ethertype(self) -> EtherType {
        match self {
            IpVersion::V4 => EtherType::Ipv4,
            IpVersion::V6 => EtherType::Ipv6,
        }
    }
}

/// The IP header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpRepr {
    /// An IPv4 header.
    V4(Ipv4Repr),
    /// An IPv6 header.
    V6(Ipv6Repr),
}

impl IpRepr {
    /// The IP version.
    pub const fn version(&self) -> IpVersion {
        match self {
            IpRepr::V4(_) => IpVersion::V4,
            IpRepr::V6(_) => IpVersion::V6,
        }
    }

    /// The payload length the header announces.
    pub const fn payload_len(&self) -> usize {
        match self {
            IpRepr::V4(repr) => repr.payload_len,
            IpRepr::V6(repr) => repr.payload_len,
        }
    }

    /// The protocol of the payload (IPv4 protocol or IPv6 next header).
    pub const fn protocol(&self) -> u8 {
        match self {
            IpRepr::V4(repr) => repr.protocol,
            IpRepr::V6(repr) => repr.next_header,
        }
    }
}

/// The outer headers of a RoCEv2 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRepr {
    /// Ethernet header; its EtherType must match the IP version.
    pub eth: EthernetRepr,
    /// IP header; its payload length must be the UDP length and its
    /// protocol UDP.
    pub ip: IpRepr,
    /// UDP header; `payload_len` counts the transport packet and the ICRC.
    pub udp: UdpRepr,
}

impl FrameRepr {
    /// Length of the Ethernet, IP and UDP headers.
    pub const fn header_len(&self) -> usize {
        frame_header_len(self.ip.version())
    }

    /// Length of the whole frame: headers, transport and ICRC (no Ethernet
    /// padding, no FCS).
    pub const fn frame_len(&self) -> usize {
        self.header_len() + self.udp.payload_len
    }

    /// Length of the transport packet (BTH through pad), if the UDP payload
    /// can hold a BTH and the ICRC.
    pub const fn transport_len(&self) -> Option<usize> {
        if self.udp.payload_len < MIN_UDP_PAYLOAD {
            None
        } else {
            Some(self.udp.payload_len - ICRC_LEN)
        }
    }
}

/// A received frame whose outer headers and ICRC are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedFrame<'a> {
    /// Ethernet header.
    pub eth: EthernetRepr,
    /// IP header.
    pub ip: IpRepr,
    /// UDP header (the port is not checked).
    pub udp: UdpRepr,
    /// BTH through pad; ICRC verified and stripped.
    pub transport: &'a [u8],
}

/// Length of the Ethernet, IP and UDP headers of a frame:
/// 42 for IPv4, 62 for IPv6.
pub const fn frame_header_len(ip_version: IpVersion) -> usize {
    ethernet::HEADER_LEN + ip_version.header_len() + udp::HEADER_LEN
}

/// Parses a received frame (without FCS; trailing Ethernet padding beyond
/// the IP length is ignored) and verifies its ICRC. The UDP port is not
/// checked.
///
/// # Errors
/// * [`Error::Truncated`] if a header, a length field or a minimal transport
///   (BTH and ICRC) does not fit;
/// * [`Error::Unsupported`] for an EtherType other than IPv4/IPv6, IPv4 with
///   options, a fragment, or a payload that is not UDP;
/// * [`Error::Malformed`] for inconsistent lengths or bad versions;
/// * [`Error::BadChecksum`] for a bad IPv4 header checksum or ICRC.
pub fn parse_frame(frame: &[u8]) -> Result<ParsedFrame<'_>> {
    let eth = EthernetRepr::parse(&EthernetFrame::new_checked(frame)?)?;
    let ip_bytes = &frame[ethernet::HEADER_LEN..];
    // The views borrow `ip_bytes` only for parsing; the slices returned are
    // cut from `ip_bytes` itself so they live as long as `frame`.
    let (ip, ip_header_len) = match eth.ethertype {
        EtherType::Ipv4 => {
            let packet = Ipv4Packet::new_checked(ip_bytes)?;
            let repr = Ipv4Repr::parse(&packet)?;
            // The ICRC covers exactly the 20-byte header; rxe does not send
            // options either.
            if packet.header_len() != ipv4::HEADER_LEN {
                return Err(Error::Unsupported);
            }
            (IpRepr::V4(repr), ipv4::HEADER_LEN)
        }
        EtherType::Ipv6 => {
            let repr = Ipv6Repr::parse(&Ipv6Packet::new_checked(ip_bytes)?)?;
            (IpRepr::V6(repr), ipv6::HEADER_LEN)
        }
        _ => return Err(Error::Unsupported),
    };
    if ip.protocol() != PROTOCOL_UDP {
        return Err(Error::Unsupported);
    }
    // Checked above: the IP payload fits in `ip_bytes`.
    let ip_payload = &ip_bytes[ip_header_len..ip_header_len + ip.payload_len()];
    let udp = UdpRepr::parse(&UdpPacket::new_checked(ip_payload)?)?;
    if udp.buffer_len() != ip_payload.len() {
        return Err(Error::Malformed);
    }
    if udp.payload_len < MIN_UDP_PAYLOAD {
        return Err(Error::Truncated);
    }
    let (headers, transport_with_icrc) =
        ip_bytes[..ip_header_len + udp.buffer_len()].split_at(ip_header_len + udp::HEADER_LEN);
    let transport = icrc::check(headers, transport_with_icrc)?;
    Ok(ParsedFrame {
        eth,
        ip,
        udp,
        transport,
    })
}

/// Checks that the outer headers of `repr` describe a RoCEv2 datagram.
fn validate(repr: &FrameRepr) -> Result<()> {
    let consistent = repr.eth.ethertype == repr.ip.version().ethertype()
        && repr.ip.protocol() == PROTOCOL_UDP
        && repr.ip.payload_len() == repr.udp.buffer_len()
        && repr.transport_len().is_some();
    if consistent {
        Ok(())
    } else {
        Err(Error::Malformed)
    }
}

/// Writes the Ethernet, IP and UDP headers of `repr` at the start of
/// `frame` and returns their length, where the transport packet starts.
///
/// IPv4 is emitted with the TTL and TOS of the repr, identification 0 and
/// DF set (whatever the repr says), and a valid header checksum, so that a
/// kernel-UDP peer rebuilding the header with
/// [`icrc::pseudo_headers_v4`] gets the same ICRC. UDP gets checksum 0.
///
/// # Errors
/// * [`Error::Malformed`] if the EtherType does not match the IP version,
///   the IP protocol is not UDP, the IP payload length differs from the UDP
///   length, the UDP payload cannot hold a BTH and the ICRC, or a length
///   overflows its field;
/// * [`Error::Truncated`] if `frame` is shorter than
///   [`FrameRepr::frame_len`].
pub fn emit_frame_headers(repr: &FrameRepr, frame: &mut [u8]) -> Result<usize> {
    validate(repr)?;
    if frame.len() < repr.frame_len() {
        return Err(Error::Truncated);
    }
    let mut eth_frame = EthernetFrame::new_unchecked(&mut *frame);
    repr.eth.emit(&mut eth_frame)?;
    let ip_bytes = eth_frame.payload_mut();
    let header_len = repr.ip.version().header_len();
    match repr.ip {
        IpRepr::V4(ip) => {
            let ip = Ipv4Repr {
                ident: 0,
                dont_frag: true,
                ..ip
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut *ip_bytes))?;
        }
        IpRepr::V6(ip) => ip.emit(&mut Ipv6Packet::new_unchecked(&mut *ip_bytes))?,
    }
    repr.udp
        .emit(&mut UdpPacket::new_unchecked(&mut ip_bytes[header_len..]))?;
    Ok(repr.header_len())
}

/// Computes the ICRC of a frame whose headers and transport packet are
/// written and stores it in the 4 bytes that end the UDP payload (the last
/// 4 bytes of the frame unless it has trailing padding).
///
/// # Errors
/// [`Error::Malformed`] if the EtherType does not match `ip_version` or the
/// UDP length cannot hold a BTH and the ICRC; [`Error::Truncated`] if
/// `frame` is shorter than the headers or the UDP length.
pub fn seal_frame(frame: &mut [u8], ip_version: IpVersion) -> Result<()> {
    let eth_frame = EthernetFrame::new_checked(&*frame)?;
    if eth_frame.ethertype() != ip_version.ethertype() {
        return Err(Error::Malformed);
    }
    let udp_start = ethernet::HEADER_LEN + ip_version.header_len();
    let udp_bytes = frame.get(udp_start..).ok_or(Error::Truncated)?;
    let udp_len = usize::from(UdpPacket::new_checked(udp_bytes)?.len());
    if udp_len < udp::HEADER_LEN + MIN_UDP_PAYLOAD {
        return Err(Error::Malformed);
    }
    let transport_start = udp_start + udp::HEADER_LEN;
    let icrc_start = udp_start + udp_len - ICRC_LEN;
    let headers = &frame[ethernet::HEADER_LEN..transport_start];
    let value = icrc::compute(headers, &frame[transport_start..icrc_start])?;
    frame[icrc_start..icrc_start + ICRC_LEN].copy_from_slice(&value.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{MacAddr, Opcode, Psn, Qpn, TransportRepr, bth::BthRepr};
    use super::*;

    fn transport() -> TransportRepr {
        TransportRepr::new(BthRepr {
            ack_req: true,
            ..BthRepr::new(
                Opcode::RC_SEND_ONLY,
                Qpn::new(0x11).unwrap(),
                Psn::new(1).unwrap(),
            )
        })
    }

    fn frame_repr(version: IpVersion, transport_len: usize) -> FrameRepr {
        let udp = UdpRepr {
            src_port: 0xc001,
            dst_port: 4791,
            payload_len: transport_len + 4,
        };
        let ip = match version {
            IpVersion::V4 => IpRepr::V4(Ipv4Repr {
                src: [192, 0, 2, 1].into(),
                dst: [192, 0, 2, 2].into(),
                protocol: PROTOCOL_UDP,
                payload_len: udp.buffer_len(),
                ttl: 64,
                tos: 0x02,
                ident: 0,
                dont_frag: true,
            }),
            IpVersion::V6 => IpRepr::V6(Ipv6Repr {
                src: "2001:db8::1".parse().unwrap(),
                dst: "2001:db8::2".parse().unwrap(),
                next_header: PROTOCOL_UDP,
                payload_len: udp.buffer_len(),
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0x12345,
            }),
        };
        let eth = EthernetRepr {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            ethertype: version.ethertype(),
        };
        FrameRepr { eth, ip, udp }
    }

    /// Builds a sealed frame carrying `payload` in an RC SEND_ONLY.
    fn build(version: IpVersion, payload: &[u8]) -> (FrameRepr, Vec<u8>) {
        let transport = transport();
        let repr = frame_repr(version, transport.buffer_len(payload.len()));
        let mut frame = vec![0; repr.frame_len()];
        let offset = emit_frame_headers(&repr, &mut frame).unwrap();
        transport.emit(payload, &mut frame[offset..]).unwrap();
        seal_frame(&mut frame, version).unwrap();
        (repr, frame)
    }

    #[test]
    fn header_lengths() {
        assert_eq!(frame_header_len(IpVersion::V4), 42);
        assert_eq!(frame_header_len(IpVersion::V6), 62);
    }

    #[test]
    fn built_frames_parse_back() {
        for version in [IpVersion::V4, IpVersion::V6] {
            let (repr, frame) = build(version, b"payload!!");
            let parsed = parse_frame(&frame).unwrap();
            assert_eq!(
                (parsed.eth, parsed.ip, parsed.udp),
                (repr.eth, repr.ip, repr.udp)
            );
            let (transport_repr, payload) = TransportRepr::parse(parsed.transport).unwrap();
            assert_eq!(transport_repr.bth.opcode, Opcode::RC_SEND_ONLY);
            assert_eq!(payload, b"payload!!");
        }
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let (_, mut frame) = build(IpVersion::V4, b"");
        assert_eq!(frame.len(), 58);
        frame.resize(60, 0);
        let parsed = parse_frame(&frame).unwrap();
        assert_eq!(parsed.transport.len(), 12);
        // Sealing a padded frame writes the ICRC before the padding.
        frame[54..58].fill(0);
        seal_frame(&mut frame, IpVersion::V4).unwrap();
        assert!(parse_frame(&frame).is_ok());
    }

    #[test]
    fn emit_forces_ident_zero_and_df() {
        let mut repr = frame_repr(IpVersion::V4, 12);
        if let IpRepr::V4(ip) = &mut repr.ip {
            ip.ident = 0x1234;
            ip.dont_frag = false;
        }
        let mut frame = vec![0; repr.frame_len()];
        emit_frame_headers(&repr, &mut frame).unwrap();
        assert_eq!(&frame[18..22], &[0x00, 0x00, 0x40, 0x00]);
    }

    #[test]
    fn flipped_bits_fail_the_icrc() {
        let (_, frame) = build(IpVersion::V6, b"abc");
        for at in [14 + 8, 62 + 5, 62 + 12, frame.len() - 1] {
            let mut bad = frame.clone();
            bad[at] ^= 0x10;
            assert_eq!(
                parse_frame(&bad).err(),
                Some(Error::BadChecksum),
                "byte {at}"
            );
        }
        // A masked field (hop limit) may change in flight.
        let mut hop = frame.clone();
        hop[14 + 7] = 1;
        assert!(parse_frame(&hop).is_ok());
    }

    #[test]
    fn outer_header_errors() {
        let (_, frame) = build(IpVersion::V4, b"abcd");
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_frame(&arp).err(), Some(Error::Unsupported));

        let mut tcp = frame.clone();
        tcp[14 + 9] = 6;
        Ipv4Packet::new_unchecked(&mut tcp[14..]).fill_checksum();
        assert_eq!(parse_frame(&tcp).err(), Some(Error::Unsupported));

        let mut options = frame.clone();
        options[14] = 0x46;
        Ipv4Packet::new_unchecked(&mut options[14..]).fill_checksum();
        assert_eq!(parse_frame(&options).err(), Some(Error::Unsupported));

        let mut udp_len = frame.clone();
        udp_len[38..40].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(parse_frame(&udp_len).err(), Some(Error::Malformed));

        assert_eq!(
            parse_frame(&frame[..frame.len() - 1]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(parse_frame(&frame[..13]).err(), Some(Error::Truncated));
    }

    #[test]
    fn tiny_udp_payload_is_truncated() {
        let (_, frame) = build(IpVersion::V4, b"");
        // Shrink IP and UDP lengths by 4: 12 bytes of UDP payload < BTH+ICRC.
        let mut short = frame[..frame.len() - 4].to_vec();
        short[16..18].copy_from_slice(&(20u16 + 8 + 12).to_be_bytes());
        Ipv4Packet::new_unchecked(&mut short[14..]).fill_checksum();
        short[38..40].copy_from_slice(&(8u16 + 12).to_be_bytes());
        assert_eq!(parse_frame(&short).err(), Some(Error::Truncated));
    }

    #[test]
    fn emit_rejects_inconsistent_reprs() {
        let good = frame_repr(IpVersion::V4, 16);
        let mut frame = vec![0; good.frame_len()];
        assert_eq!(emit_frame_headers(&good, &mut frame), Ok(42));
        assert_eq!(
            emit_frame_headers(&good, &mut frame[..good.frame_len() - 1]),
            Err(Error::Truncated)
        );

        let mut wrong_type = good;
        wrong_type.eth.ethertype = EtherType::Ipv6;
        assert_eq!(
            emit_frame_headers(&wrong_type, &mut frame),
            Err(Error::Malformed)
        );

        let mut wrong_len = good;
        wrong_len.udp.payload_len += 4;
        assert_eq!(
            emit_frame_headers(&wrong_len, &mut frame),
            Err(Error::Malformed)
        );

        let tiny = frame_repr(IpVersion::V6, 8);
        assert_eq!(emit_frame_headers(&tiny, &mut frame), Err(Error::Malformed));
    }

    #[test]
    fn seal_rejects_wrong_version_and_short_frames() {
        let (_, mut frame) = build(IpVersion::V4, b"abcd");
        assert_eq!(seal_frame(&mut frame, IpVersion::V6), Err(Error::Malformed));
        let len = frame.len();
        assert_eq!(
            seal_frame(&mut frame[..len - 1], IpVersion::V4),
            Err(Error::Truncated)
        );
        assert_eq!(
            seal_frame(&mut frame[..20], IpVersion::V4),
            Err(Error::Truncated)
        );
    }
}
