//! Ethernet II frame header (no VLAN tags, no FCS).

use core::fmt;

use super::{Error, Result, read_u16};

/// Byte offsets of the Ethernet header fields.
mod field {
    use crate::wire::field::{Field, Rest};
    pub(super) const DESTINATION: Field = 0..6;
    pub(super) const SOURCE: Field = 6..12;
    pub(super) const ETHERTYPE: Field = 12..14;
    pub(super) const PAYLOAD: Rest = 14..;
}

/// Length of the Ethernet header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A 48-bit Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Copies an address out of a 6-byte slice; `None` if the length differs.
    pub fn from_bytes(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// The address as bytes, in wire order.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The EtherType field: which protocol the frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// IPv4, 0x0800.
    Ipv4,
    /// IPv6, 0x86DD.
    Ipv6,
    /// ARP, 0x0806.
    Arp,
    /// Any other value (including VLAN tags, which xrdma does not parse).
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        match value {
            0x0800 => EtherType::Ipv4,
            0x86DD => EtherType::Ipv6,
            0x0806 => EtherType::Arp,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => 0x0800,
            EtherType::Ipv6 => 0x86DD,
            EtherType::Arp => 0x0806,
            EtherType::Unknown(other) => other,
        }
    }
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds a whole header.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it is shorter than [`HEADER_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The destination address.
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION]).unwrap_or_default()
    }

    /// The source address.
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE]).unwrap_or_default()
    }

    /// The EtherType.
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    /// Everything after the header, including any trailing padding.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(ethertype).to_be_bytes());
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The fields of an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Source address.
    pub src: MacAddr,
    /// Destination address.
    pub dst: MacAddr,
    /// Protocol of the payload.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Reads the header of `frame`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the frame is shorter than the header.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src: frame.src_addr(),
            dst: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Length of the header this emits.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of a frame carrying `payload_len` bytes (no FCS, no padding).
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    /// Writes the header into `frame`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) -> Result<()> {
        frame.check_len()?;
        frame.set_src_addr(self.src);
        frame.set_dst_addr(self.dst);
        frame.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x86, 0xdd, // IPv6
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn parses_known_bytes() {
        let frame = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        let repr = EthernetRepr::parse(&frame).unwrap();
        assert_eq!(repr.dst, MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(repr.src, MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(repr.ethertype, EtherType::Ipv6);
        assert_eq!(frame.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn emit_then_parse_round_trips() {
        let repr = EthernetRepr {
            src: MacAddr([1, 2, 3, 4, 5, 6]),
            dst: MacAddr::BROADCAST,
            ethertype: EtherType::Unknown(0x8100),
        };
        let mut buf = [0u8; HEADER_LEN];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(&buf[12..14], &[0x81, 0x00]);
        assert_eq!(
            EthernetRepr::parse(&EthernetFrame::new_unchecked(&buf[..])),
            Ok(repr)
        );
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&FRAME[..13]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            EthernetRepr::parse(&EthernetFrame::new_unchecked(&FRAME[..5])),
            Err(Error::Truncated)
        );
        let repr = EthernetRepr::parse(&EthernetFrame::new_unchecked(&FRAME[..])).unwrap();
        let mut short = [0u8; 13];
        assert_eq!(
            repr.emit(&mut EthernetFrame::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn ethertype_round_trips_through_u16() {
        for value in [0x0800u16, 0x86dd, 0x0806, 0x8915, 0] {
            assert_eq!(u16::from(EtherType::from(value)), value);
        }
        assert_eq!(EtherType::from(0x0800), EtherType::Ipv4);
    }

    #[test]
    fn mac_displays_as_colon_hex() {
        assert_eq!(
            MacAddr([0xaa, 0xbb, 0x0c, 0, 1, 0xff]).to_string(),
            "aa:bb:0c:00:01:ff"
        );
    }
}
