//! The two 4-byte extension headers: Immediate Data (ImmDt) and the
//! Invalidate ETH (IETH), which carries the rkey to invalidate.

use super::{Error, Result, Rkey, read_u32};

/// Byte offsets of the 4-byte header.
mod field {
    use crate::wire::field::Field;
    pub(super) const VALUE: Field = 0..4;
}

/// Length of an ImmDt or IETH.
pub const HEADER_LEN: usize = field::VALUE.end;

/// A read/write view of a 4-byte ImmDt or IETH.
#[derive(Debug, Clone)]
pub struct ImmDtPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// The IETH has the same shape as the ImmDt.
pub type IethPacket<T> = ImmDtPacket<T>;

impl<T: AsRef<[u8]>> ImmDtPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> ImmDtPacket<T> {
        ImmDtPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<ImmDtPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds 4 bytes.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it is shorter.
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

    /// The four bytes read as a big-endian integer.
    pub fn value(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VALUE.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ImmDtPacket<T> {
    /// Writes `value` big-endian.
    pub fn set_value(&mut self, value: u32) {
        self.buffer.as_mut()[field::VALUE].copy_from_slice(&value.to_be_bytes());
    }
}

/// Immediate data. `data` is the four wire bytes read big-endian, so
/// `data.to_be_bytes()` gives them back in wire order (verbs' `imm_data`
/// is these bytes as a `__be32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImmDtRepr {
    /// The immediate value.
    pub data: u32,
}

impl ImmDtRepr {
    /// Parses the ImmDt at the start of `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn parse<T: AsRef<[u8]>>(packet: &ImmDtPacket<T>) -> Result<ImmDtRepr> {
        packet.check_len()?;
        Ok(ImmDtRepr {
            data: packet.value(),
        })
    }

    /// Length of the ImmDt (4).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the ImmDt into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ImmDtPacket<T>) -> Result<()> {
        packet.check_len()?;
        packet.set_value(self.data);
        Ok(())
    }
}

/// Invalidate ETH: the rkey the responder invalidates on SEND with
/// Invalidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IethRepr {
    /// The rkey to invalidate.
    pub rkey: Rkey,
}

impl IethRepr {
    /// Parses the IETH at the start of `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn parse<T: AsRef<[u8]>>(packet: &IethPacket<T>) -> Result<IethRepr> {
        packet.check_len()?;
        Ok(IethRepr {
            rkey: Rkey::new(packet.value()),
        })
    }

    /// Length of the IETH (4).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the IETH into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut IethPacket<T>) -> Result<()> {
        packet.check_len()?;
        packet.set_value(self.rkey.value());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

    #[test]
    fn imm_is_big_endian() {
        let repr = ImmDtRepr::parse(&ImmDtPacket::new_checked(&KNOWN[..]).unwrap()).unwrap();
        assert_eq!(repr.data, 0xdead_beef);
        let mut buf = [0u8; 4];
        repr.emit(&mut ImmDtPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, KNOWN);
    }

    #[test]
    fn ieth_carries_an_rkey() {
        let repr = IethRepr::parse(&IethPacket::new_checked(&KNOWN[..]).unwrap()).unwrap();
        assert_eq!(repr.rkey, Rkey::new(0xdead_beef));
        let mut buf = [0u8; 4];
        repr.emit(&mut IethPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, KNOWN);
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(
            ImmDtPacket::new_checked(&KNOWN[..3]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            ImmDtRepr::parse(&ImmDtPacket::new_unchecked(&KNOWN[..1])),
            Err(Error::Truncated)
        );
        assert_eq!(
            IethRepr::parse(&IethPacket::new_unchecked(&KNOWN[..0])),
            Err(Error::Truncated)
        );
        let mut short = [0u8; 3];
        let imm = ImmDtRepr { data: 1 };
        assert_eq!(
            imm.emit(&mut ImmDtPacket::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
        let ieth = IethRepr { rkey: Rkey::new(1) };
        assert_eq!(
            ieth.emit(&mut IethPacket::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }
}
