//! UDP header. RoCEv2 allows a zero checksum, so xrdma emits zero and
//! ignores the field on receive (the ICRC protects the payload).

use super::{Error, Result, read_u16};

/// Byte offsets of the UDP header fields.
mod field {
    use crate::wire::field::Field;
    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// The IANA-assigned RoCEv2 destination port.
pub const ROCEV2_PORT: u16 = 4791;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and the length field is at
    /// least 8 and no more than the buffer.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer, [`Error::Malformed`] for a
    /// length field below 8.
    pub fn check_len(&self) -> Result<()> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            Err(Error::Malformed)
        } else if len > buffer_len {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// The length field: header plus payload.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Whether the length field announces no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field (not verified by xrdma).
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The payload, as long as the length field says.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }
}

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port ([`ROCEV2_PORT`] for RoCEv2).
    pub dst_port: u16,
    /// Payload length: the length field minus 8.
    pub payload_len: usize,
}

impl UdpRepr {
    /// Largest payload the 16-bit length field can announce.
    pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - HEADER_LEN;

    /// Parses the header of `packet`; the checksum is ignored.
    ///
    /// # Errors
    /// Those of [`UdpPacket::check_len`].
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Result<UdpRepr> {
        packet.check_len()?;
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Length of the header (8).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the header plus the payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header with a zero checksum into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than 8 bytes,
    /// [`Error::Malformed`] if the payload exceeds
    /// [`MAX_PAYLOAD_LEN`](Self::MAX_PAYLOAD_LEN).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut UdpPacket<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = u16::try_from(self.buffer_len()).map_err(|_| Error::Malformed)?;
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source port 0xc001, port 4791, length 40, checksum 0x1234, payload.
    fn known_packet() -> Vec<u8> {
        let mut bytes = vec![0xc0, 0x01, 0x12, 0xb7, 0x00, 0x28, 0x12, 0x34];
        bytes.extend_from_slice(&[0x33; 32]);
        bytes
    }

    #[test]
    fn parses_known_bytes_ignoring_checksum() {
        let bytes = known_packet();
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        let repr = UdpRepr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 0xc001,
                dst_port: ROCEV2_PORT,
                payload_len: 32
            }
        );
        assert_eq!(packet.payload(), &[0x33; 32][..]);
        assert_eq!(packet.checksum(), 0x1234);
    }

    #[test]
    fn emit_writes_zero_checksum() {
        let repr = UdpRepr {
            src_port: 0xc001,
            dst_port: ROCEV2_PORT,
            payload_len: 32,
        };
        let mut buf = [0xffu8; 8];
        repr.emit(&mut UdpPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, [0xc0, 0x01, 0x12, 0xb7, 0x00, 0x28, 0x00, 0x00]);
    }

    #[test]
    fn payload_stops_at_length_field() {
        let mut bytes = known_packet();
        bytes.extend_from_slice(&[0; 5]);
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 32);
    }

    #[test]
    fn bad_lengths_are_rejected() {
        let bytes = known_packet();
        assert_eq!(
            UdpPacket::new_checked(&bytes[..7]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            UdpPacket::new_checked(&bytes[..39]).err(),
            Some(Error::Truncated)
        );
        let mut short_len = known_packet();
        short_len[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpRepr::parse(&UdpPacket::new_unchecked(&short_len[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn emit_rejects_bad_values() {
        let mut buf = [0u8; 8];
        let huge = UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload_len: UdpRepr::MAX_PAYLOAD_LEN + 1,
        };
        assert_eq!(
            huge.emit(&mut UdpPacket::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
        let mut short = [0u8; 7];
        let repr = UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload_len: 0,
        };
        assert_eq!(
            repr.emit(&mut UdpPacket::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }
}
