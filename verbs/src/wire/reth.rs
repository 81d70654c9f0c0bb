//! RDMA Extended Transport Header: where an RDMA WRITE or READ goes.

use super::{Error, Result, Rkey, read_u32, read_u64};

/// Byte offsets of the RETH fields.
mod field {
    use crate::wire::field::Field;
    pub(super) const VA: Field = 0..8;
    pub(super) const RKEY: Field = 8..12;
    pub(super) const DMA_LEN: Field = 12..16;
}

/// Length of the RETH.
pub const HEADER_LEN: usize = field::DMA_LEN.end;

/// A read/write view of a RETH.
#[derive(Debug, Clone)]
pub struct RethPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RethPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> RethPacket<T> {
        RethPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<RethPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole RETH.
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

    /// The remote virtual address.
    pub fn va(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::VA.start)
    }

    /// The remote key.
    pub fn rkey(&self) -> Rkey {
        Rkey::new(read_u32(self.buffer.as_ref(), field::RKEY.start))
    }

    /// The DMA length: bytes of the whole message.
    pub fn dma_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::DMA_LEN.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RethPacket<T> {
    /// Sets the remote virtual address.
    pub fn set_va(&mut self, va: u64) {
        self.buffer.as_mut()[field::VA].copy_from_slice(&va.to_be_bytes());
    }

    /// Sets the remote key.
    pub fn set_rkey(&mut self, rkey: Rkey) {
        self.buffer.as_mut()[field::RKEY].copy_from_slice(&rkey.value().to_be_bytes());
    }

    /// Sets the DMA length.
    pub fn set_dma_len(&mut self, len: u32) {
        self.buffer.as_mut()[field::DMA_LEN].copy_from_slice(&len.to_be_bytes());
    }
}

/// The fields of a RETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RethRepr {
    /// Remote virtual address.
    pub va: u64,
    /// Remote key.
    pub rkey: Rkey,
    /// Length of the whole message in bytes.
    pub dma_len: u32,
}

impl RethRepr {
    /// Parses the RETH at the start of `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn parse<T: AsRef<[u8]>>(packet: &RethPacket<T>) -> Result<RethRepr> {
        packet.check_len()?;
        Ok(RethRepr {
            va: packet.va(),
            rkey: packet.rkey(),
            dma_len: packet.dma_len(),
        })
    }

    /// Length of the RETH (16).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the RETH into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut RethPacket<T>) -> Result<()> {
        packet.check_len()?;
        packet.set_va(self.va);
        packet.set_rkey(self.rkey);
        packet.set_dma_len(self.dma_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [u8; 16] = [
        0x00, 0x00, 0x7f, 0x00, 0x12, 0x34, 0x56, 0x78, // va
        0xca, 0xfe, 0xba, 0xbe, // rkey
        0x00, 0x00, 0x10, 0x00, // 4096 bytes
    ];

    fn repr() -> RethRepr {
        RethRepr {
            va: 0x7f00_1234_5678,
            rkey: Rkey::new(0xcafe_babe),
            dma_len: 4096,
        }
    }

    #[test]
    fn parses_and_emits_known_bytes() {
        assert_eq!(
            RethRepr::parse(&RethPacket::new_checked(&KNOWN[..]).unwrap()),
            Ok(repr())
        );
        let mut buf = [0u8; 16];
        repr()
            .emit(&mut RethPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, KNOWN);
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(
            RethPacket::new_checked(&KNOWN[..15]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            RethRepr::parse(&RethPacket::new_unchecked(&KNOWN[..8])),
            Err(Error::Truncated)
        );
        let mut short = [0u8; 15];
        assert_eq!(
            repr().emit(&mut RethPacket::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }
}
