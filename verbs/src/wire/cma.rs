//! The rdma_cm header (`struct cma_hdr` in the kernel's `cma.c`): 36 bytes
//! that lead the private data of a REQ or SIDR_REQ sent for an IP address
//! (AF_INET or AF_INET6). The user's private data follows it.
//!
//! ```text
//! byte 0      cma_version (0)
//! byte 1      [7:4] IP version (4 or 6), [3:0] reserved
//! bytes 2..4  source port of the active side (the destination port
//!             travels in the service ID)
//! bytes 4..20  source address
//! bytes 20..36 destination address
//! ```
//!
//! An IPv4 address sits in the last 4 bytes of its 16-byte field after 12
//! zero bytes (`union cma_ip_addr`): it is **not** IPv4-mapped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Error, Result, read_u16};

/// Byte offsets of the rdma_cm header fields.
mod field {
    use crate::wire::field::{Field, Rest};
    pub(super) const CMA_VERSION: usize = 0;
    pub(super) const IP_VERSION: usize = 1;
    pub(super) const PORT: Field = 2..4;
    pub(super) const SRC_ADDR: Field = 4..20;
    pub(super) const DST_ADDR: Field = 20..36;
    pub(super) const USER_DATA: Rest = 36..;
}

/// Length of the rdma_cm header.
pub const CMA_HEADER_LEN: usize = field::USER_DATA.start;

/// The only rdma_cm header version (`CMA_VERSION`).
pub const CMA_VERSION: u8 = 0;

/// Where an IPv4 address starts inside a 16-byte address field.
const IPV4_AT: usize = 12;

/// A read/write view of an rdma_cm header and the user data after it.
#[derive(Debug, Clone)]
pub struct CmaHeaderPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CmaHeaderPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> CmaHeaderPacket<T> {
        CmaHeaderPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<CmaHeaderPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it is shorter than [`CMA_HEADER_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < CMA_HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The header version (0).
    pub fn cma_version(&self) -> u8 {
        self.buffer.as_ref()[field::CMA_VERSION]
    }

    /// The IP version, bits 7:4 of byte 1.
    pub fn ip_version(&self) -> u8 {
        self.buffer.as_ref()[field::IP_VERSION] >> 4
    }

    /// The active side's source port.
    pub fn port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PORT.start)
    }

    /// The raw 16-byte source address field.
    pub fn src_field(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        out
    }

    /// The raw 16-byte destination address field.
    pub fn dst_field(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        out
    }

    /// The user's private data after the header.
    pub fn user_data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::USER_DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CmaHeaderPacket<T> {
    /// Sets the header version.
    pub fn set_cma_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::CMA_VERSION] = value;
    }

    /// Sets the IP version (bits 7:4, low 4 bits of `value`) and zeroes the
    /// reserved bits 3:0.
    pub fn set_ip_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::IP_VERSION] = value << 4;
    }

    /// Sets the source port.
    pub fn set_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the raw 16-byte source address field.
    pub fn set_src_field(&mut self, value: [u8; 16]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value);
    }

    /// Sets the raw 16-byte destination address field.
    pub fn set_dst_field(&mut self, value: [u8; 16]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value);
    }

    /// The user's private data after the header, writable.
    pub fn user_data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::USER_DATA]
    }
}

/// The fields of an rdma_cm header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CmaHeaderRepr {
    /// The active side's source port.
    pub src_port: u16,
    /// The active side's address.
    pub src: IpAddr,
    /// The passive side's address. Same family as `src`.
    pub dst: IpAddr,
}

/// An address field as `cma_hdr` holds it.
fn address_field(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut out = [0; 16];
            out[IPV4_AT..].copy_from_slice(&v4.octets());
            out
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address in a field, read as IP version `version` (4 or 6).
fn address(field: [u8; 16], version: u8) -> IpAddr {
    if version == 4 {
        let [a, b, c, d] = [field[12], field[13], field[14], field[15]];
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    } else {
        IpAddr::V6(Ipv6Addr::from(field))
    }
}

impl CmaHeaderRepr {
    /// Parses the header at the start of a REQ's or SIDR_REQ's private
    /// data. For IPv4 the 12 bytes before each address and the reserved
    /// low bits of byte 1 are ignored, as the kernel does.
    ///
    /// # Errors
    /// [`Error::Truncated`] if `private` is shorter than
    /// [`CMA_HEADER_LEN`]; [`Error::Unsupported`] if the header version is
    /// not 0 or the IP version is neither 4 nor 6.
    pub fn parse(private: &[u8]) -> Result<CmaHeaderRepr> {
        let packet = CmaHeaderPacket::new_checked(private)?;
        if packet.cma_version() != CMA_VERSION {
            return Err(Error::Unsupported);
        }
        let version = packet.ip_version();
        if version != 4 && version != 6 {
            return Err(Error::Unsupported);
        }
        Ok(CmaHeaderRepr {
            src_port: packet.port(),
            src: address(packet.src_field(), version),
            dst: address(packet.dst_field(), version),
        })
    }

    /// Length of the header (36).
    pub const fn header_len(&self) -> usize {
        CMA_HEADER_LEN
    }

    /// Writes the header into the first [`CMA_HEADER_LEN`] bytes of
    /// `private`, leaving the user data after it alone.
    ///
    /// # Errors
    /// [`Error::Truncated`] if `private` is shorter than
    /// [`CMA_HEADER_LEN`]; [`Error::Malformed`] if `src` and `dst` are of
    /// different families. Nothing is written then.
    pub fn emit(&self, private: &mut [u8]) -> Result<()> {
        let mut packet = CmaHeaderPacket::new_checked(private)?;
        let version = match (self.src, self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => 4,
            (IpAddr::V6(_), IpAddr::V6(_)) => 6,
            _ => return Err(Error::Malformed),
        };
        packet.set_cma_version(CMA_VERSION);
        packet.set_ip_version(version);
        packet.set_port(self.src_port);
        packet.set_src_field(address_field(self.src));
        packet.set_dst_field(address_field(self.dst));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 198.18.0.1:49152 → 198.18.0.2, as `cma_format_hdr` writes it.
    const KNOWN_V4: [u8; CMA_HEADER_LEN] = [
        0x00, 0x40, 0xc0, 0x00, // version 0, IPv4, port 49152
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1, // src
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 198, 18, 0, 2, // dst
    ];

    fn v4() -> CmaHeaderRepr {
        CmaHeaderRepr {
            src_port: 49152,
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        }
    }

    #[test]
    fn ipv4_known_bytes() {
        assert_eq!(CmaHeaderRepr::parse(&KNOWN_V4), Ok(v4()));
        let mut out = [0xa5u8; CMA_HEADER_LEN + 4];
        v4().emit(&mut out).unwrap();
        assert_eq!(out[..CMA_HEADER_LEN], KNOWN_V4);
        assert_eq!(out[CMA_HEADER_LEN..], [0xa5; 4], "user data untouched");
        let packet = CmaHeaderPacket::new_checked(&out[..]).unwrap();
        assert_eq!(packet.user_data(), &[0xa5; 4]);
    }

    #[test]
    fn ipv6_known_bytes() {
        let repr = CmaHeaderRepr {
            src_port: 0x1234,
            src: "2001:2::1".parse().unwrap(),
            dst: "2001:2::ff02".parse().unwrap(),
        };
        let mut bytes = [0u8; CMA_HEADER_LEN];
        bytes[1] = 0x60;
        bytes[2..4].copy_from_slice(&[0x12, 0x34]);
        bytes[4..8].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
        bytes[19] = 0x01;
        bytes[20..24].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
        bytes[34..36].copy_from_slice(&[0xff, 0x02]);
        assert_eq!(CmaHeaderRepr::parse(&bytes), Ok(repr));
        let mut out = [0xffu8; CMA_HEADER_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn ipv4_padding_and_reserved_bits_are_ignored() {
        let mut bytes = KNOWN_V4;
        bytes[1] |= 0x0f;
        bytes[4..16].fill(0xee);
        bytes[20..32].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(CmaHeaderRepr::parse(&bytes), Ok(v4()));
    }

    #[test]
    fn version_checks() {
        let mut bytes = KNOWN_V4;
        bytes[0] = 1;
        assert_eq!(CmaHeaderRepr::parse(&bytes), Err(Error::Unsupported));
        for ip_version in [0u8, 5, 7, 15] {
            let mut bytes = KNOWN_V4;
            bytes[1] = ip_version << 4;
            assert_eq!(
                CmaHeaderRepr::parse(&bytes),
                Err(Error::Unsupported),
                "{ip_version}"
            );
        }
    }

    #[test]
    fn mixed_families_are_malformed() {
        let repr = CmaHeaderRepr {
            dst: "::ffff:198.18.0.2".parse().unwrap(),
            ..v4()
        };
        let mut out = [0xa5u8; CMA_HEADER_LEN];
        assert_eq!(repr.emit(&mut out), Err(Error::Malformed));
        assert_eq!(out, [0xa5; CMA_HEADER_LEN], "nothing written");
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(
            CmaHeaderRepr::parse(&KNOWN_V4[..CMA_HEADER_LEN - 1]),
            Err(Error::Truncated)
        );
        assert_eq!(CmaHeaderRepr::parse(&[]), Err(Error::Truncated));
        let mut short = [0u8; CMA_HEADER_LEN - 1];
        assert_eq!(v4().emit(&mut short), Err(Error::Truncated));
    }
}
