//! IPv4 header. xrdma emits only option-free headers (IHL 5) and never
//! fragments; parsing skips options but rejects fragments.

use core::net::Ipv4Addr;

use super::{Error, Result, read_u16};

/// Byte offsets of the IPv4 header fields.
mod field {
    use crate::wire::field::Field;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOS: usize = 1;
    pub(super) const LENGTH: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const FLAGS_FRAG: Field = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Field = 10..12;
    pub(super) const SRC: Field = 12..16;
    pub(super) const DST: Field = 16..20;
}

/// Length of an IPv4 header without options (IHL 5).
pub const HEADER_LEN: usize = field::DST.end;

/// The IP protocol number of UDP.
pub const PROTOCOL_UDP: u8 = 17;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header, that the header length
    /// is at least 20 and fits, and that the total length covers the header
    /// and fits in the buffer. Bytes after the total length (Ethernet
    /// padding) are allowed.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is too short for the header or the
    /// total length, [`Error::Malformed`] if IHL < 5 or the total length is
    /// shorter than the header.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < header_len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if len < total_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for IPv4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// The total length field: header plus payload.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// The more-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// The fragment offset, in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & FRAG_OFFSET_MASK
    }

    fn flags_frag(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG.start)
    }

    /// The time-to-live field.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Whether the header checksum (over IHL × 4 bytes) is correct.
    pub fn verify_checksum(&self) -> bool {
        internet_checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// The payload: from the end of the header (options included) to the
    /// total length, excluding any trailing padding.
    pub fn payload(&self) -> &[u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version and the header length (in bytes, a multiple of 4).
    pub fn set_version_and_header_len(&mut self, version: u8, header_len: usize) {
        let ihl = ((header_len / 4) & 0x0f) as u8;
        self.buffer.as_mut()[field::VER_IHL] = (version << 4) | ihl;
    }

    /// Sets the type-of-service byte.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    /// Sets the flags (DF only; MF is cleared) and a zero fragment offset.
    pub fn set_dont_frag_unfragmented(&mut self, dont_frag: bool) {
        let value = if dont_frag { FLAG_DF } else { 0 };
        self.buffer.as_mut()[field::FLAGS_FRAG].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the time-to-live field.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol field.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the checksum field to `checksum` as is.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum over IHL × 4 bytes and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let checksum = internet_checksum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(checksum);
    }
}

/// The one's-complement Internet checksum of `data` (RFC 1071).
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The fields of an unfragmented IPv4 header. Options are skipped on parse
/// and never emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload (17 for UDP).
    pub protocol: u8,
    /// Payload length: total length minus the header length.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Type of service (DSCP and ECN).
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// The don't-fragment flag.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Largest payload an option-free IPv4 header can announce.
    pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - HEADER_LEN;

    /// Parses and validates the header of `packet`.
    ///
    /// # Errors
    /// Those of [`Ipv4Packet::check_len`]; [`Error::Malformed`] if the
    /// version is not 4; [`Error::BadChecksum`] if the header checksum is
    /// wrong; [`Error::Unsupported`] for a fragment (MF set or a nonzero
    /// offset).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::Malformed);
        }
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        if packet.more_frags() || packet.frag_offset() != 0 {
            return Err(Error::Unsupported);
        }
        Ok(Ipv4Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Length of the header this emits (always 20).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the header plus the payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes an option-free header with a valid checksum into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than 20 bytes,
    /// [`Error::Malformed`] if `payload_len` exceeds
    /// [`MAX_PAYLOAD_LEN`](Self::MAX_PAYLOAD_LEN).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let total_len = u16::try_from(self.buffer_len()).map_err(|_| Error::Malformed)?;
        packet.set_version_and_header_len(4, HEADER_LEN);
        packet.set_tos(self.tos);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_dont_frag_unfragmented(self.dont_frag);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP-carrying header from the RC SEND_ONLY scapy vector
    /// (192.0.2.1 -> 192.0.2.2, DF, TTL 64, total length 60), plus 40 bytes.
    fn known_packet() -> Vec<u8> {
        let mut bytes = vec![
            0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb6, 0xad, 0xc0, 0x00,
            0x02, 0x01, 0xc0, 0x00, 0x02, 0x02,
        ];
        bytes.extend_from_slice(&[0x5a; 40]);
        bytes
    }

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            protocol: PROTOCOL_UDP,
            payload_len: 40,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }
    }

    /// Rewrites the checksum after a test has edited the header.
    fn refill(bytes: &mut [u8]) {
        Ipv4Packet::new_unchecked(bytes).fill_checksum();
    }

    #[test]
    fn parses_known_bytes() {
        let bytes = known_packet();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet), Ok(repr()));
        assert_eq!(packet.payload(), &[0x5a; 40][..]);
    }

    #[test]
    fn emit_matches_known_bytes() {
        let mut buf = [0xeeu8; 60];
        repr()
            .emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(&buf[..20], &known_packet()[..20]);
    }

    #[test]
    fn round_trips_nonzero_fields() {
        let repr = Ipv4Repr {
            tos: 0x8a,
            ttl: 1,
            ident: 0xbeef,
            dont_frag: false,
            payload_len: 3,
            ..repr()
        };
        let mut buf = [0u8; 23];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&buf[..])),
            Ok(repr)
        );
    }

    #[test]
    fn options_are_skipped() {
        let mut bytes = known_packet();
        bytes[0] = 0x46; // IHL 6: the first payload word becomes an option
        refill(&mut bytes);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let parsed = Ipv4Repr::parse(&packet).unwrap();
        assert_eq!(parsed.payload_len, 36);
        assert_eq!(packet.payload().len(), 36);
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let mut bytes = known_packet();
        bytes.extend_from_slice(&[0; 6]);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet).unwrap().payload_len, 40);
        assert_eq!(packet.payload().len(), 40);
    }

    #[test]
    fn short_buffer_is_truncated() {
        let bytes = known_packet();
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..19]).err(),
            Some(Error::Truncated)
        );
        // Total length (60) larger than the buffer.
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..59]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..30])),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn bad_lengths_are_malformed() {
        let mut bytes = known_packet();
        bytes[0] = 0x44; // IHL 4
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).err(),
            Some(Error::Malformed)
        );

        let mut bytes = known_packet();
        bytes[2..4].copy_from_slice(&19u16.to_be_bytes()); // total < header
        refill(&mut bytes);
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).err(),
            Some(Error::Malformed)
        );

        let mut bytes = known_packet();
        bytes[0] = 0x4f; // IHL 15: a 60-byte header
        bytes[2..4].copy_from_slice(&40u16.to_be_bytes()); // total 40 < header 60
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn wrong_version_is_malformed() {
        let mut bytes = known_packet();
        bytes[0] = 0x65;
        refill(&mut bytes);
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn bad_checksum_is_reported() {
        let mut bytes = known_packet();
        bytes[8] = 63; // TTL changed, checksum not refilled
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..])),
            Err(Error::BadChecksum)
        );
    }

    #[test]
    fn fragments_are_unsupported() {
        for flags_frag in [0x2000u16, 0x0001, 0x4000 | 0x0100] {
            let mut bytes = known_packet();
            bytes[6..8].copy_from_slice(&flags_frag.to_be_bytes());
            refill(&mut bytes);
            assert_eq!(
                Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..])),
                Err(Error::Unsupported),
                "flags/offset {flags_frag:#06x}"
            );
        }
    }

    #[test]
    fn emit_rejects_short_buffer_and_huge_payload() {
        let mut short = [0u8; 19];
        assert_eq!(
            repr().emit(&mut Ipv4Packet::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
        let mut buf = [0u8; 20];
        let huge = Ipv4Repr {
            payload_len: Ipv4Repr::MAX_PAYLOAD_LEN + 1,
            ..repr()
        };
        assert_eq!(
            huge.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
        let max = Ipv4Repr {
            payload_len: Ipv4Repr::MAX_PAYLOAD_LEN,
            ..repr()
        };
        assert_eq!(
            max.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..])),
            Ok(())
        );
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3 example: sum 0xddf2, checksum 0x220d.
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }
}
