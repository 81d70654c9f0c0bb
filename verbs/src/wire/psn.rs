//! The 24-bit packet sequence number and its serial-number arithmetic.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub, SubAssign};

/// A 24-bit packet sequence number.
///
/// Arithmetic wraps modulo 2^24. Ordering follows serial-number rules (like
/// smoltcp's `SeqNumber`, RFC 1982): `a < b` when `b` is less than 2^23 ahead
/// of `a` going forward. Two PSNs exactly 2^23 apart are incomparable, so
/// `partial_cmp` returns `None` for them. As with any serial ordering, `<`
/// is not transitive across more than half the space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Psn(u32);

impl Psn {
    /// The mask of the 24 valid bits.
    pub const MASK: u32 = 0x00ff_ffff;
    /// Half the PSN space: the largest forward distance that still orders.
    pub const HALF: u32 = 0x0080_0000;
    /// PSN 0.
    pub const ZERO: Psn = Psn(0);
    /// PSN 0xffffff, the one just before [`ZERO`](Self::ZERO).
    pub const MAX: Psn = Psn(Self::MASK);

    /// Returns `value` as a PSN, or `None` if it does not fit in 24 bits.
    pub const fn new(value: u32) -> Option<Psn> {
        if value & !Self::MASK == 0 {
            Some(Psn(value))
        } else {
            None
        }
    }

    /// Returns the low 24 bits of `value` as a PSN.
    pub const fn new_masked(value: u32) -> Psn {
        Psn(value & Self::MASK)
    }

    /// The PSN as an integer in `0..2^24`.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// `self + n` modulo 2^24.
    pub const fn wrapping_add(self, n: u32) -> Psn {
        Psn(self.0.wrapping_add(n) & Self::MASK)
    }

    /// `self - n` modulo 2^24.
    pub const fn wrapping_sub(self, n: u32) -> Psn {
        Psn(self.0.wrapping_sub(n) & Self::MASK)
    }

    /// The signed distance from `other` to `self`, in `-2^23..2^23`:
    /// positive when `self` is ahead of `other`.
    pub const fn distance(self, other: Psn) -> i32 {
        // Shift the 24-bit difference into the top of an i32 and back down
        // to sign-extend it.
        ((self.0.wrapping_sub(other.0) << 8) as i32) >> 8
    }
}

impl PartialOrd for Psn {
    fn partial_cmp(&self, other: &Psn) -> Option<Ordering> {
        let distance = self.distance(*other);
        if distance == -(Psn::HALF as i32) {
            None
        } else {
            Some(distance.cmp(&0))
        }
    }
}

impl Add<u32> for Psn {
    type Output = Psn;
    fn add(self, n: u32) -> Psn {
        self.wrapping_add(n)
    }
}

impl AddAssign<u32> for Psn {
    fn add_assign(&mut self, n: u32) {
        *self = self.wrapping_add(n);
    }
}

impl Sub<u32> for Psn {
    type Output = Psn;
    fn sub(self, n: u32) -> Psn {
        self.wrapping_sub(n)
    }
}

impl SubAssign<u32> for Psn {
    fn sub_assign(&mut self, n: u32) {
        *self = self.wrapping_sub(n);
    }
}

/// `a - b` is the signed serial distance, see [`Psn::distance`].
impl Sub<Psn> for Psn {
    type Output = i32;
    fn sub(self, other: Psn) -> i32 {
        self.distance(other)
    }
}

impl From<Psn> for u32 {
    fn from(psn: Psn) -> u32 {
        psn.0
    }
}

impl fmt::Display for Psn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#08x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psn(value: u32) -> Psn {
        Psn::new(value).unwrap()
    }

    #[test]
    fn constructor_rejects_or_masks_wide_values() {
        assert_eq!(Psn::new(0x0100_0000), None);
        assert_eq!(Psn::new(0xffff_ffff), None);
        assert_eq!(Psn::new(0x00ff_ffff).map(Psn::value), Some(0x00ff_ffff));
        assert_eq!(Psn::new_masked(0x1234_5678).value(), 0x0034_5678);
    }

    #[test]
    fn add_and_sub_wrap_at_24_bits() {
        assert_eq!(psn(0xffffff) + 1, psn(0));
        assert_eq!(psn(0xfffffe) + 5, psn(3));
        assert_eq!(psn(0) - 1, psn(0xffffff));
        assert_eq!(psn(2) - 0x0100_0003, psn(0xffffff));
        assert_eq!(psn(10) + 0xffff_ffff, psn(9));
        let mut p = psn(0xffffff);
        p += 2;
        assert_eq!(p, psn(1));
        p -= 3;
        assert_eq!(p, psn(0xfffffe));
    }

    #[test]
    fn ordering_wraps_around() {
        assert!(psn(0xffffff) < psn(0));
        assert!(psn(0xffffff) < psn(0) + 1);
        assert!(psn(0) > psn(0xffffff));
        assert!(psn(5) < psn(6));
        assert!(psn(0x7fffff) > psn(0));
        assert!(psn(0x800001) < psn(0)); // more than half ahead means behind
        assert_eq!(psn(7).partial_cmp(&psn(7)), Some(Ordering::Equal));
    }

    #[test]
    fn half_space_apart_is_incomparable() {
        assert_eq!(psn(0).partial_cmp(&psn(0x800000)), None);
        assert_eq!(psn(0x800000).partial_cmp(&psn(0)), None);
        assert_eq!(psn(0x900000).partial_cmp(&psn(0x100000)), None);
    }

    #[test]
    fn distance_is_signed_and_wraps() {
        assert_eq!(psn(0) - psn(0xffffff), 1);
        assert_eq!(psn(0xffffff) - psn(0), -1);
        assert_eq!(psn(0x7fffff) - psn(0), 0x7fffff);
        assert_eq!(psn(0x800001) - psn(0), -0x7fffff);
        assert_eq!(psn(0x800000) - psn(0), -0x800000);
        assert_eq!(psn(100) - psn(40), 60);
    }
}
