//! Datagram Extended Transport Header: the Q_Key and source QP of a UD send.

use super::{Error, Qkey, Qpn, Result, read_u24, read_u32, write_u24};

/// Byte offsets of the DETH fields.
mod field {
    use crate::wire::field::Field;
    pub(super) const QKEY: Field = 0..4;
    pub(super) const RESERVED: usize = 4;
    pub(super) const SRC_QP: Field = 5..8;
}

/// Length of the DETH.
pub const HEADER_LEN: usize = field::SRC_QP.end;

/// A read/write view of a DETH.
#[derive(Debug, Clone)]
pub struct DethPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DethPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> DethPacket<T> {
        DethPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<DethPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole DETH.
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

    /// The queue key.
    pub fn qkey(&self) -> Qkey {
        Qkey::new(read_u32(self.buffer.as_ref(), field::QKEY.start))
    }

    /// The source queue pair.
    pub fn src_qp(&self) -> Qpn {
        Qpn::new_masked(read_u24(self.buffer.as_ref(), field::SRC_QP.start))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DethPacket<T> {
    /// Sets the queue key.
    pub fn set_qkey(&mut self, qkey: Qkey) {
        self.buffer.as_mut()[field::QKEY].copy_from_slice(&qkey.value().to_be_bytes());
    }

    /// Sets the source queue pair and zeroes the reserved byte before it.
    pub fn set_src_qp(&mut self, qpn: Qpn) {
        self.buffer.as_mut()[field::RESERVED] = 0;
        write_u24(self.buffer.as_mut(), field::SRC_QP.start, qpn.value());
    }
}

/// The fields of a DETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DethRepr {
    /// Queue key the receiver checks.
    pub qkey: Qkey,
    /// The sender's queue pair.
    pub src_qp: Qpn,
}

impl DethRepr {
    /// Parses the DETH at the start of `packet` (the reserved byte is
    /// ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn parse<T: AsRef<[u8]>>(packet: &DethPacket<T>) -> Result<DethRepr> {
        packet.check_len()?;
        Ok(DethRepr {
            qkey: packet.qkey(),
            src_qp: packet.src_qp(),
        })
    }

    /// Length of the DETH (8).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the DETH into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut DethPacket<T>) -> Result<()> {
        packet.check_len()?;
        packet.set_qkey(self.qkey);
        packet.set_src_qp(self.src_qp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [u8; 8] = [0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x23];

    fn repr() -> DethRepr {
        DethRepr {
            qkey: Qkey::new(0x8001_0000),
            src_qp: Qpn::new(0x123).unwrap(),
        }
    }

    #[test]
    fn parses_and_emits_known_bytes() {
        assert_eq!(
            DethRepr::parse(&DethPacket::new_checked(&KNOWN[..]).unwrap()),
            Ok(repr())
        );
        let mut buf = [0xffu8; 8];
        repr()
            .emit(&mut DethPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, KNOWN);
    }

    #[test]
    fn reserved_byte_is_ignored() {
        let mut bytes = KNOWN;
        bytes[4] = 0xee;
        assert_eq!(
            DethRepr::parse(&DethPacket::new_unchecked(&bytes[..])),
            Ok(repr())
        );
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(
            DethPacket::new_checked(&KNOWN[..7]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            DethRepr::parse(&DethPacket::new_unchecked(&KNOWN[..2])),
            Err(Error::Truncated)
        );
        let mut short = [0u8; 7];
        assert_eq!(
            repr().emit(&mut DethPacket::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }
}
