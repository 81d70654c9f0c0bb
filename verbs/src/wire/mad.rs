//! Management datagram (MAD): the 256-byte message a GSI (QP1) sends, and
//! its 24-byte common header.
//!
//! ```text
//! byte 0       BaseVersion (1)
//! byte 1       MgmtClass (0x07 for the connection manager)
//! byte 2       ClassVersion (2 for the CM)
//! byte 3       Method (R bit 0x80, method in the low 7 bits; 0x03 SEND)
//! bytes 4..6   Status
//! bytes 6..8   ClassSpecific
//! bytes 8..16  TransactionID
//! bytes 16..18 AttributeID
//! bytes 18..20 reserved
//! bytes 20..24 AttributeModifier
//! bytes 24..256 class data (the CM message body)
//! ```
//!
//! On RoCEv2 a MAD travels as the payload of a UD SEND to QP1 with Q_Key
//! 0x80010000 (`reference/cm-facts.md` 1.1).

use super::{Error, Result, read_u16, read_u32, read_u64};

/// Byte offsets of the MAD header fields.
mod field {
    use crate::wire::field::Field;
    pub(super) const BASE_VERSION: usize = 0;
    pub(super) const MGMT_CLASS: usize = 1;
    pub(super) const CLASS_VERSION: usize = 2;
    pub(super) const METHOD: usize = 3;
    pub(super) const STATUS: Field = 4..6;
    pub(super) const CLASS_SPECIFIC: Field = 6..8;
    pub(super) const TID: Field = 8..16;
    pub(super) const ATTR_ID: Field = 16..18;
    pub(super) const RESERVED: Field = 18..20;
    pub(super) const ATTR_MOD: Field = 20..24;
    pub(super) const DATA: Field = 24..256;
}

/// Length of a whole MAD.
pub const MAD_LEN: usize = field::DATA.end;
/// Length of the common MAD header.
pub const MAD_HEADER_LEN: usize = field::DATA.start;
/// Length of the class data after the header (the CM message body).
pub const MAD_BODY_LEN: usize = MAD_LEN - MAD_HEADER_LEN;

/// The base version of every MAD.
pub const BASE_VERSION: u8 = 1;
/// Management class of the communication manager.
pub const MGMT_CLASS_CM: u8 = 0x07;
/// The CM class version Linux registers and sends.
pub const CM_CLASS_VERSION: u8 = 2;
/// Method SEND, the one method every CM message uses.
pub const METHOD_SEND: u8 = 0x03;

/// A read/write view of a MAD.
#[derive(Debug, Clone)]
pub struct MadPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MadPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> MadPacket<T> {
        MadPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<MadPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole MAD. Bytes past [`MAD_LEN`]
    /// are allowed and ignored.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it is shorter than [`MAD_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < MAD_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref()[at]
    }

    /// The base version (1).
    pub fn base_version(&self) -> u8 {
        self.byte(field::BASE_VERSION)
    }

    /// The management class.
    pub fn mgmt_class(&self) -> u8 {
        self.byte(field::MGMT_CLASS)
    }

    /// The class version.
    pub fn class_version(&self) -> u8 {
        self.byte(field::CLASS_VERSION)
    }

    /// The method byte, response bit included.
    pub fn method(&self) -> u8 {
        self.byte(field::METHOD)
    }

    /// The status.
    pub fn status(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::STATUS.start)
    }

    /// The class-specific word.
    pub fn class_specific(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CLASS_SPECIFIC.start)
    }

    /// The transaction ID.
    pub fn tid(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::TID.start)
    }

    /// The attribute ID (for the CM: which message this is).
    pub fn attr_id(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ATTR_ID.start)
    }

    /// The attribute modifier.
    pub fn attr_mod(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ATTR_MOD.start)
    }

    /// The class data: bytes 24..256.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MadPacket<T> {
    /// Sets the base version.
    pub fn set_base_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::BASE_VERSION] = value;
    }

    /// Sets the management class.
    pub fn set_mgmt_class(&mut self, value: u8) {
        self.buffer.as_mut()[field::MGMT_CLASS] = value;
    }

    /// Sets the class version.
    pub fn set_class_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::CLASS_VERSION] = value;
    }

    /// Sets the method byte.
    pub fn set_method(&mut self, value: u8) {
        self.buffer.as_mut()[field::METHOD] = value;
    }

    /// Sets the status.
    pub fn set_status(&mut self, value: u16) {
        self.buffer.as_mut()[field::STATUS].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the class-specific word.
    pub fn set_class_specific(&mut self, value: u16) {
        self.buffer.as_mut()[field::CLASS_SPECIFIC].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the transaction ID.
    pub fn set_tid(&mut self, value: u64) {
        self.buffer.as_mut()[field::TID].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the attribute ID and zeroes the reserved word after it.
    pub fn set_attr_id(&mut self, value: u16) {
        self.buffer.as_mut()[field::ATTR_ID].copy_from_slice(&value.to_be_bytes());
        self.buffer.as_mut()[field::RESERVED].fill(0);
    }

    /// Sets the attribute modifier.
    pub fn set_attr_mod(&mut self, value: u32) {
        self.buffer.as_mut()[field::ATTR_MOD].copy_from_slice(&value.to_be_bytes());
    }

    /// The class data, writable: bytes 24..256.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }
}

/// The fields of a MAD header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadHeaderRepr {
    /// Base version (1).
    pub base_version: u8,
    /// Management class ([`MGMT_CLASS_CM`] for the CM).
    pub mgmt_class: u8,
    /// Class version ([`CM_CLASS_VERSION`] for the CM).
    pub class_version: u8,
    /// Method byte, response bit included ([`METHOD_SEND`] for the CM).
    pub method: u8,
    /// Status (0 in CM messages).
    pub status: u16,
    /// Class-specific word (0 in CM messages).
    pub class_specific: u16,
    /// Transaction ID.
    pub tid: u64,
    /// Attribute ID: the CM message type (see `cm::attr`).
    pub attr_id: u16,
    /// Attribute modifier (0 in CM messages).
    pub attr_mod: u32,
}

impl MadHeaderRepr {
    /// The header of a CM message: base version 1, class 0x07, class
    /// version 2, method SEND, status, class-specific word and attribute
    /// modifier 0.
    pub const fn cm(attr_id: u16, tid: u64) -> MadHeaderRepr {
        MadHeaderRepr {
            base_version: BASE_VERSION,
            mgmt_class: MGMT_CLASS_CM,
            class_version: CM_CLASS_VERSION,
            method: METHOD_SEND,
            status: 0,
            class_specific: 0,
            tid,
            attr_id,
            attr_mod: 0,
        }
    }

    /// Parses the header of the MAD in `packet`, whatever its class (the
    /// reserved word is ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than a whole MAD.
    pub fn parse<T: AsRef<[u8]>>(packet: &MadPacket<T>) -> Result<MadHeaderRepr> {
        packet.check_len()?;
        Ok(MadHeaderRepr {
            base_version: packet.base_version(),
            mgmt_class: packet.mgmt_class(),
            class_version: packet.class_version(),
            method: packet.method(),
            status: packet.status(),
            class_specific: packet.class_specific(),
            tid: packet.tid(),
            attr_id: packet.attr_id(),
            attr_mod: packet.attr_mod(),
        })
    }

    /// Length of the MAD header (24).
    pub const fn header_len(&self) -> usize {
        MAD_HEADER_LEN
    }

    /// Length of the whole MAD (256).
    pub const fn buffer_len(&self) -> usize {
        MAD_LEN
    }

    /// Writes the header (bytes 0..24, the reserved word as 0) into
    /// `packet`, leaving the class data alone.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than a whole MAD.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut MadPacket<T>) -> Result<()> {
        packet.check_len()?;
        packet.set_base_version(self.base_version);
        packet.set_mgmt_class(self.mgmt_class);
        packet.set_class_version(self.class_version);
        packet.set_method(self.method);
        packet.set_status(self.status);
        packet.set_class_specific(self.class_specific);
        packet.set_tid(self.tid);
        packet.set_attr_id(self.attr_id);
        packet.set_attr_mod(self.attr_mod);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CM RTU header with TID 0x0102030405060708, attribute 0x0014.
    const KNOWN: [u8; MAD_HEADER_LEN] = [
        0x01, 0x07, 0x02, 0x03, // versions, class, method
        0x00, 0x00, 0x00, 0x00, // status, class specific
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // TID
        0x00, 0x14, 0x00, 0x00, // attribute ID, reserved
        0x00, 0x00, 0x00, 0x00, // attribute modifier
    ];

    fn known_mad() -> [u8; MAD_LEN] {
        let mut mad = [0xa5; MAD_LEN];
        mad[..MAD_HEADER_LEN].copy_from_slice(&KNOWN);
        mad
    }

    #[test]
    fn parses_and_emits_known_bytes() {
        let mad = known_mad();
        let packet = MadPacket::new_checked(&mad[..]).unwrap();
        let repr = MadHeaderRepr::cm(0x0014, 0x0102_0304_0506_0708);
        assert_eq!(MadHeaderRepr::parse(&packet), Ok(repr));
        assert_eq!(packet.data(), &[0xa5; MAD_BODY_LEN][..]);

        let mut out = [0xffu8; MAD_LEN];
        repr.emit(&mut MadPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(out[..MAD_HEADER_LEN], KNOWN);
        assert_eq!(
            out[MAD_HEADER_LEN..],
            [0xff; MAD_BODY_LEN],
            "data untouched"
        );
    }

    #[test]
    fn every_field_at_its_place() {
        let repr = MadHeaderRepr {
            base_version: 0x11,
            mgmt_class: 0x22,
            class_version: 0x33,
            method: 0x81,
            status: 0x4455,
            class_specific: 0x6677,
            tid: 0x8899_aabb_ccdd_eeff,
            attr_id: 0x1234,
            attr_mod: 0x5678_9abc,
        };
        let mut out = [0xffu8; MAD_LEN];
        let mut packet = MadPacket::new_checked(&mut out[..]).unwrap();
        repr.emit(&mut packet).unwrap();
        packet.data_mut()[0] = 0x42;
        assert_eq!(
            out[..25],
            [
                0x11, 0x22, 0x33, 0x81, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff, 0x12, 0x34, 0x00, 0x00, 0x56, 0x78, 0x9a, 0xbc, 0x42
            ]
        );
        assert_eq!(
            MadHeaderRepr::parse(&MadPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }

    #[test]
    fn reserved_word_is_ignored_and_extra_bytes_allowed() {
        let mut mad = [0u8; MAD_LEN + 10];
        mad[..MAD_HEADER_LEN].copy_from_slice(&KNOWN);
        mad[18] = 0xde;
        mad[19] = 0xad;
        let packet = MadPacket::new_checked(&mad[..]).unwrap();
        assert_eq!(packet.data().len(), MAD_BODY_LEN);
        assert_eq!(
            MadHeaderRepr::parse(&packet),
            Ok(MadHeaderRepr::cm(0x0014, 0x0102_0304_0506_0708))
        );
    }

    #[test]
    fn short_buffers_are_truncated() {
        let mad = known_mad();
        assert_eq!(
            MadPacket::new_checked(&mad[..MAD_LEN - 1]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            MadHeaderRepr::parse(&MadPacket::new_unchecked(&mad[..MAD_HEADER_LEN])),
            Err(Error::Truncated)
        );
        let mut short = [0u8; MAD_LEN - 1];
        assert_eq!(
            MadHeaderRepr::cm(0x10, 1).emit(&mut MadPacket::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }
}
