//! IPv6 fixed header. Extension headers are not parsed: the caller checks
//! that `next_header` is the protocol it expects (UDP for RoCEv2).

use core::net::Ipv6Addr;

use super::{Error, Result, read_u16, read_u32};

/// Byte offsets of the IPv6 header fields.
mod field {
    use crate::wire::field::Field;
    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: Field = 8..24;
    pub(super) const DST: Field = 24..40;
}

/// Length of the IPv6 fixed header.
pub const HEADER_LEN: usize = field::DST.end;

/// Largest flow label (20 bits).
pub const MAX_FLOW_LABEL: u32 = 0x000f_ffff;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and the payload length it
    /// announces. Bytes after the payload (Ethernet padding) are allowed.
    ///
    /// # Errors
    /// [`Error::Truncated`] otherwise.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW.start)
    }

    /// The version field (6 for IPv6).
    pub fn version(&self) -> u8 {
        (self.first_word() >> 28) as u8
    }

    /// The traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.first_word() & MAX_FLOW_LABEL
    }

    /// The payload length field.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The next-header field.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr_bytes(&self.buffer.as_ref()[field::SRC]))
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr_bytes(&self.buffer.as_ref()[field::DST]))
    }

    /// The payload, excluding any trailing padding.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

fn addr_bytes(slice: &[u8]) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes.copy_from_slice(slice);
    bytes
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version, traffic class and flow label (masked to 20 bits).
    pub fn set_version_class_flow(&mut self, version: u8, traffic_class: u8, flow_label: u32) {
        let word = (u32::from(version) << 28)
            | (u32::from(traffic_class) << 20)
            | (flow_label & MAX_FLOW_LABEL);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next-header field.
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }
}

/// The fields of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Protocol of the payload (17 for UDP); extension headers unsupported.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label, at most [`MAX_FLOW_LABEL`].
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses the fixed header of `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] as in [`Ipv6Packet::check_len`];
    /// [`Error::Malformed`] if the version is not 6.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Ipv6Repr> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Ipv6Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Length of the header this emits (always 40).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the header plus the payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the fixed header into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than 40 bytes;
    /// [`Error::Malformed`] if the payload length exceeds 65535 or the flow
    /// label exceeds 20 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let payload_len = u16::try_from(self.payload_len).map_err(|_| Error::Malformed)?;
        if self.flow_label > MAX_FLOW_LABEL {
            return Err(Error::Malformed);
        }
        packet.set_version_class_flow(6, self.traffic_class, self.flow_label);
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of the scapy IPv6 READ_REQUEST vector: tc 0x68,
    /// flow label 0xabcde, payload 40, UDP, hop limit 3, fe80::1 -> fe80::2.
    const HEADER: [u8; 40] = [
        0x66, 0x8a, 0xbc, 0xde, 0x00, 0x28, 0x11, 0x03, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
    ];

    fn known_packet() -> Vec<u8> {
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&[0x77; 40]);
        bytes
    }

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src: "fe80::1".parse().unwrap(),
            dst: "fe80::2".parse().unwrap(),
            next_header: 17,
            payload_len: 40,
            hop_limit: 3,
            traffic_class: 0x68,
            flow_label: 0xabcde,
        }
    }

    #[test]
    fn parses_known_bytes() {
        let bytes = known_packet();
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&packet), Ok(repr()));
        assert_eq!(packet.payload(), &[0x77; 40][..]);
    }

    #[test]
    fn emit_matches_known_bytes() {
        let mut buf = [0xffu8; 40];
        repr()
            .emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let mut bytes = known_packet();
        bytes.extend_from_slice(&[0; 3]);
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 40);
    }

    #[test]
    fn short_buffers_are_truncated() {
        let bytes = known_packet();
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..39]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..79]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&bytes[..41])),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn wrong_version_is_malformed() {
        let mut bytes = known_packet();
        bytes[0] = 0x46;
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&bytes[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn emit_rejects_bad_values() {
        let mut buf = [0u8; 40];
        let wide_flow = Ipv6Repr {
            flow_label: MAX_FLOW_LABEL + 1,
            ..repr()
        };
        assert_eq!(
            wide_flow.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
        let huge = Ipv6Repr {
            payload_len: 65536,
            ..repr()
        };
        assert_eq!(
            huge.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
        let mut short = [0u8; 39];
        assert_eq!(
            repr().emit(&mut Ipv6Packet::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }
}
