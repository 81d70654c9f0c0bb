//! Newtypes for the protocol numbers carried in transport headers, other
//! than the PSN (see [`Psn`](super::Psn)): queue pair numbers, keys and the
//! message sequence number.

use core::fmt;

const MASK_24: u32 = 0x00ff_ffff;

/// A 24-bit queue pair number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Qpn(u32);

impl Qpn {
    /// Largest QPN (also the multicast QPN).
    pub const MAX: Qpn = Qpn(MASK_24);
    /// QP1, the General Services Interface: where connection manager MADs go.
    pub const GSI: Qpn = Qpn(1);

    /// Returns `value` as a QPN, or `None` if it does not fit in 24 bits.
    pub const fn new(value: u32) -> Option<Qpn> {
        if value & !MASK_24 == 0 {
            Some(Qpn(value))
        } else {
            None
        }
    }

    /// Returns the low 24 bits of `value` as a QPN.
    pub const fn new_masked(value: u32) -> Qpn {
        Qpn(value & MASK_24)
    }

    /// The QPN as an integer in `0..2^24`.
    pub const fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Qpn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#08x}", self.0)
    }
}

/// A 24-bit message sequence number, as carried in the AETH.
///
/// It counts completed messages and wraps modulo 2^24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Msn(u32);

impl Msn {
    /// Returns `value` as an MSN, or `None` if it does not fit in 24 bits.
    pub const fn new(value: u32) -> Option<Msn> {
        if value & !MASK_24 == 0 {
            Some(Msn(value))
        } else {
            None
        }
    }

    /// Returns the low 24 bits of `value` as an MSN.
    pub const fn new_masked(value: u32) -> Msn {
        Msn(value & MASK_24)
    }

    /// The MSN as an integer in `0..2^24`.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// `self + n` modulo 2^24.
    pub const fn wrapping_add(self, n: u32) -> Msn {
        Msn(self.0.wrapping_add(n) & MASK_24)
    }
}

impl fmt::Display for Msn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 32-bit remote memory key (RETH, AtomicETH, IETH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rkey(u32);

impl Rkey {
    /// Wraps a key.
    pub const fn new(value: u32) -> Rkey {
        Rkey(value)
    }

    /// The key as an integer.
    pub const fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Rkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A 32-bit queue key (DETH), checked by UD receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Qkey(u32);

impl Qkey {
    /// Wraps a key.
    pub const fn new(value: u32) -> Qkey {
        Qkey(value)
    }

    /// The key as an integer.
    pub const fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Qkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qpn_is_24_bits() {
        assert_eq!(Qpn::new(0x0100_0000), None);
        assert_eq!(Qpn::new(0x00ff_ffff), Some(Qpn::MAX));
        assert_eq!(Qpn::new_masked(0xab12_3456).value(), 0x0012_3456);
        assert_eq!(Qpn::new_masked(0x11).to_string(), "0x000011");
    }

    #[test]
    fn msn_is_24_bits_and_wraps() {
        assert_eq!(Msn::new(0x0100_0000), None);
        assert_eq!(Msn::new_masked(0xff00_0001).value(), 1);
        assert_eq!(
            Msn::new_masked(0xffffff).wrapping_add(2),
            Msn::new_masked(1)
        );
    }

    #[test]
    fn keys_keep_all_32_bits() {
        assert_eq!(Rkey::new(0xdead_beef).value(), 0xdead_beef);
        assert_eq!(Qkey::new(0x8001_0000).to_string(), "0x80010000");
    }
}
