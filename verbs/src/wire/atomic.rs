//! The atomic extension headers: AtomicETH on CompareSwap/FetchAdd requests
//! and AtomicAckETH on their responses.

use super::{Error, Result, Rkey, read_u32, read_u64};

/// Byte offsets of the AtomicETH fields (packed, 28 bytes).
mod field {
    use crate::wire::field::Field;
    pub(super) const VA: Field = 0..8;
    pub(super) const RKEY: Field = 8..12;
    pub(super) const SWAP_ADD: Field = 12..20;
    pub(super) const COMPARE: Field = 20..28;
    pub(super) const ORIG: Field = 0..8;
}

/// Length of the AtomicETH.
pub const ATOMIC_ETH_LEN: usize = field::COMPARE.end;

/// Length of the AtomicAckETH.
pub const ATOMIC_ACK_ETH_LEN: usize = field::ORIG.end;

/// A read/write view of an AtomicETH.
#[derive(Debug, Clone)]
pub struct AtomicEthPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AtomicEthPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> AtomicEthPacket<T> {
        AtomicEthPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<AtomicEthPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole AtomicETH.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it is shorter than [`ATOMIC_ETH_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < ATOMIC_ETH_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The remote virtual address (8-byte aligned for a valid request).
    pub fn va(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::VA.start)
    }

    /// The remote key.
    pub fn rkey(&self) -> Rkey {
        Rkey::new(read_u32(self.buffer.as_ref(), field::RKEY.start))
    }

    /// The swap value (CompareSwap) or addend (FetchAdd).
    pub fn swap_add(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::SWAP_ADD.start)
    }

    /// The compare value (CompareSwap only).
    pub fn compare(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::COMPARE.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AtomicEthPacket<T> {
    /// Sets the remote virtual address.
    pub fn set_va(&mut self, va: u64) {
        self.buffer.as_mut()[field::VA].copy_from_slice(&va.to_be_bytes());
    }

    /// Sets the remote key.
    pub fn set_rkey(&mut self, rkey: Rkey) {
        self.buffer.as_mut()[field::RKEY].copy_from_slice(&rkey.value().to_be_bytes());
    }

    /// Sets the swap value or addend.
    pub fn set_swap_add(&mut self, value: u64) {
        self.buffer.as_mut()[field::SWAP_ADD].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the compare value.
    pub fn set_compare(&mut self, value: u64) {
        self.buffer.as_mut()[field::COMPARE].copy_from_slice(&value.to_be_bytes());
    }
}

/// The fields of an AtomicETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicEthRepr {
    /// Remote virtual address.
    pub va: u64,
    /// Remote key.
    pub rkey: Rkey,
    /// Swap value (CompareSwap) or addend (FetchAdd).
    pub swap_add: u64,
    /// Compare value (CompareSwap; ignored by FetchAdd).
    pub compare: u64,
}

impl AtomicEthRepr {
    /// Parses the AtomicETH at the start of `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn parse<T: AsRef<[u8]>>(packet: &AtomicEthPacket<T>) -> Result<AtomicEthRepr> {
        packet.check_len()?;
        Ok(AtomicEthRepr {
            va: packet.va(),
            rkey: packet.rkey(),
            swap_add: packet.swap_add(),
            compare: packet.compare(),
        })
    }

    /// Length of the AtomicETH (28).
    pub const fn header_len(&self) -> usize {
        ATOMIC_ETH_LEN
    }

    /// Writes the AtomicETH into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut AtomicEthPacket<T>,
    ) -> Result<()> {
        packet.check_len()?;
        packet.set_va(self.va);
        packet.set_rkey(self.rkey);
        packet.set_swap_add(self.swap_add);
        packet.set_compare(self.compare);
        Ok(())
    }
}

/// A read/write view of an AtomicAckETH.
#[derive(Debug, Clone)]
pub struct AtomicAckEthPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AtomicAckEthPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> AtomicAckEthPacket<T> {
        AtomicAckEthPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<AtomicAckEthPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole AtomicAckETH.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it is shorter than [`ATOMIC_ACK_ETH_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < ATOMIC_ACK_ETH_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The original remote value before the atomic operation.
    pub fn orig(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::ORIG.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AtomicAckEthPacket<T> {
    /// Sets the original remote value.
    pub fn set_orig(&mut self, value: u64) {
        self.buffer.as_mut()[field::ORIG].copy_from_slice(&value.to_be_bytes());
    }
}

/// The fields of an AtomicAckETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicAckEthRepr {
    /// The value at the remote address before the operation.
    pub orig: u64,
}

impl AtomicAckEthRepr {
    /// Parses the AtomicAckETH at the start of `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn parse<T: AsRef<[u8]>>(packet: &AtomicAckEthPacket<T>) -> Result<AtomicAckEthRepr> {
        packet.check_len()?;
        Ok(AtomicAckEthRepr {
            orig: packet.orig(),
        })
    }

    /// Length of the AtomicAckETH (8).
    pub const fn header_len(&self) -> usize {
        ATOMIC_ACK_ETH_LEN
    }

    /// Writes the AtomicAckETH into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut AtomicAckEthPacket<T>,
    ) -> Result<()> {
        packet.check_len()?;
        packet.set_orig(self.orig);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATOMIC: [u8; 28] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x08, // va 0x1008
        0x00, 0x00, 0x01, 0x02, // rkey
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // swap/add
        0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, // compare
    ];

    fn atomic_repr() -> AtomicEthRepr {
        AtomicEthRepr {
            va: 0x1008,
            rkey: Rkey::new(0x102),
            swap_add: 0x1122_3344_5566_7788,
            compare: 0x99aa_bbcc_ddee_ff00,
        }
    }

    #[test]
    fn atomic_eth_parses_and_emits_known_bytes() {
        let packet = AtomicEthPacket::new_checked(&ATOMIC[..]).unwrap();
        assert_eq!(AtomicEthRepr::parse(&packet), Ok(atomic_repr()));
        let mut buf = [0u8; 28];
        atomic_repr()
            .emit(&mut AtomicEthPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, ATOMIC);
    }

    #[test]
    fn atomic_ack_eth_parses_and_emits_known_bytes() {
        let bytes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        let repr = AtomicAckEthRepr::parse(&AtomicAckEthPacket::new_checked(&bytes[..]).unwrap());
        assert_eq!(
            repr,
            Ok(AtomicAckEthRepr {
                orig: 0x0102_0304_0506_0708
            })
        );
        let mut buf = [0u8; 8];
        repr.unwrap()
            .emit(&mut AtomicAckEthPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, bytes);
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(
            AtomicEthPacket::new_checked(&ATOMIC[..27]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            AtomicEthRepr::parse(&AtomicEthPacket::new_unchecked(&ATOMIC[..9])),
            Err(Error::Truncated)
        );
        assert_eq!(
            AtomicAckEthPacket::new_checked(&ATOMIC[..7]).err(),
            Some(Error::Truncated)
        );
        let mut short = [0u8; 27];
        let result = atomic_repr().emit(&mut AtomicEthPacket::new_unchecked(&mut short[..]));
        assert_eq!(result, Err(Error::Truncated));
        let ack = AtomicAckEthRepr { orig: 1 };
        let result = ack.emit(&mut AtomicAckEthPacket::new_unchecked(&mut short[..7]));
        assert_eq!(result, Err(Error::Truncated));
    }
}
