//! Base Transport Header, the first 12 bytes of every RoCEv2 transport
//! packet.
//!
//! ```text
//! byte 0      opcode
//! byte 1      SE(0x80) MigReq(0x40) PadCount(0x30) TVer(0x0f)
//! bytes 2..4  P_Key
//! byte 4      FECN(0x80) BECN(0x40) resv6a(0x3f)
//! bytes 5..8  destination QP
//! byte 8      AckReq(0x80) resv7(0x7f)
//! bytes 9..12 PSN
//! ```

use super::opcode::Opcode;
use super::{Error, Psn, Qpn, Result, read_u16, read_u24, write_u24};

/// Byte offsets of the BTH fields.
mod field {
    use crate::wire::field::{Field, Rest};
    pub(super) const OPCODE: usize = 0;
    pub(super) const FLAGS: usize = 1;
    pub(super) const PKEY: Field = 2..4;
    pub(super) const FECN_BECN: usize = 4;
    pub(super) const DEST_QP: Field = 5..8;
    pub(super) const ACK_REQ: usize = 8;
    pub(super) const PSN: Field = 9..12;
    pub(super) const PAYLOAD: Rest = 12..;
}

/// Length of the BTH.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// Offset of the byte holding FECN, BECN and resv6a, which the ICRC masks.
pub(crate) const FECN_BECN_OFFSET: usize = field::FECN_BECN;

const SE: u8 = 0x80;
const MIG_REQ: u8 = 0x40;
const PAD_MASK: u8 = 0x30;
const PAD_SHIFT: u32 = 4;
const TVER_MASK: u8 = 0x0f;
const FECN: u8 = 0x80;
const BECN: u8 = 0x40;
const ACK_REQ: u8 = 0x80;

/// A read/write view of a BTH and what follows it.
#[derive(Debug, Clone)]
pub struct BthPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> BthPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> BthPacket<T> {
        BthPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<BthPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole BTH.
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

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref()[at]
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        Opcode::new(self.byte(field::OPCODE))
    }

    /// The solicited-event bit.
    pub fn solicited(&self) -> bool {
        self.byte(field::FLAGS) & SE != 0
    }

    /// The migration-request bit.
    pub fn mig_req(&self) -> bool {
        self.byte(field::FLAGS) & MIG_REQ != 0
    }

    /// The pad count, 0..=3.
    pub fn pad_count(&self) -> u8 {
        (self.byte(field::FLAGS) & PAD_MASK) >> PAD_SHIFT
    }

    /// The transport header version (0 in the current IBTA spec).
    pub fn tver(&self) -> u8 {
        self.byte(field::FLAGS) & TVER_MASK
    }

    /// The partition key.
    pub fn pkey(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PKEY.start)
    }

    /// The forward explicit congestion notification bit.
    pub fn fecn(&self) -> bool {
        self.byte(field::FECN_BECN) & FECN != 0
    }

    /// The backward explicit congestion notification bit.
    pub fn becn(&self) -> bool {
        self.byte(field::FECN_BECN) & BECN != 0
    }

    /// The destination queue pair.
    pub fn dest_qp(&self) -> Qpn {
        Qpn::new_masked(read_u24(self.buffer.as_ref(), field::DEST_QP.start))
    }

    /// The acknowledge-request bit.
    pub fn ack_req(&self) -> bool {
        self.byte(field::ACK_REQ) & ACK_REQ != 0
    }

    /// The packet sequence number.
    pub fn psn(&self) -> Psn {
        Psn::new_masked(read_u24(self.buffer.as_ref(), field::PSN.start))
    }

    /// Everything after the BTH.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> BthPacket<T> {
    fn set_bit(&mut self, at: usize, mask: u8, value: bool) {
        let byte = &mut self.buffer.as_mut()[at];
        *byte = if value { *byte | mask } else { *byte & !mask };
    }

    /// Sets the opcode.
    pub fn set_opcode(&mut self, opcode: Opcode) {
        self.buffer.as_mut()[field::OPCODE] = opcode.value();
    }

    /// Sets the whole flags byte: SE, MigReq, pad count (masked to 2 bits)
    /// and TVer 0.
    pub fn set_flags(&mut self, solicited: bool, mig_req: bool, pad_count: u8) {
        let mut flags = (pad_count << PAD_SHIFT) & PAD_MASK;
        if solicited {
            flags |= SE;
        }
        if mig_req {
            flags |= MIG_REQ;
        }
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the pad count (masked to 2 bits), keeping the other flag bits.
    pub fn set_pad_count(&mut self, pad_count: u8) {
        let flags = &mut self.buffer.as_mut()[field::FLAGS];
        *flags = (*flags & !PAD_MASK) | ((pad_count << PAD_SHIFT) & PAD_MASK);
    }

    /// Sets the partition key.
    pub fn set_pkey(&mut self, pkey: u16) {
        self.buffer.as_mut()[field::PKEY].copy_from_slice(&pkey.to_be_bytes());
    }

    /// Sets the FECN bit.
    pub fn set_fecn(&mut self, value: bool) {
        self.set_bit(field::FECN_BECN, FECN, value);
    }

    /// Sets the BECN bit.
    pub fn set_becn(&mut self, value: bool) {
        self.set_bit(field::FECN_BECN, BECN, value);
    }

    /// Sets the destination QP.
    pub fn set_dest_qp(&mut self, qpn: Qpn) {
        write_u24(self.buffer.as_mut(), field::DEST_QP.start, qpn.value());
    }

    /// Sets the AckReq bit.
    pub fn set_ack_req(&mut self, value: bool) {
        self.set_bit(field::ACK_REQ, ACK_REQ, value);
    }

    /// Sets the PSN.
    pub fn set_psn(&mut self, psn: Psn) {
        write_u24(self.buffer.as_mut(), field::PSN.start, psn.value());
    }

    /// Zeroes the reserved bits (resv6a and resv7), keeping FECN, BECN and
    /// AckReq.
    pub fn clear_reserved(&mut self) {
        let buffer = self.buffer.as_mut();
        buffer[field::FECN_BECN] &= FECN | BECN;
        buffer[field::ACK_REQ] &= ACK_REQ;
    }

    /// Everything after the BTH, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The fields of a BTH. The transport version is always 0 and reserved bits
/// are emitted as zero and ignored on parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BthRepr {
    /// A supported opcode ([`Opcode::is_valid`]).
    pub opcode: Opcode,
    /// Solicited event.
    pub solicited: bool,
    /// Migration request.
    pub mig_req: bool,
    /// Pad bytes at the end of the payload, 0..=3.
    pub pad_count: u8,
    /// Partition key (0xffff is the default partition).
    pub pkey: u16,
    /// Forward explicit congestion notification.
    pub fecn: bool,
    /// Backward explicit congestion notification.
    pub becn: bool,
    /// Destination queue pair.
    pub dest_qp: Qpn,
    /// Acknowledge request.
    pub ack_req: bool,
    /// Packet sequence number.
    pub psn: Psn,
}

impl BthRepr {
    /// A BTH for `opcode` to `dest_qp` at `psn`, in the default partition (0xffff), with
    /// every flag clear and no pad; callers set the fields that differ.
    pub fn new(opcode: Opcode, dest_qp: Qpn, psn: Psn) -> BthRepr {
        BthRepr {
            opcode,
            solicited: false,
            mig_req: false,
            pad_count: 0,
            pkey: 0xffff,
            fecn: false,
            becn: false,
            dest_qp,
            ack_req: false,
            psn,
        }
    }

    /// Parses the BTH of `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer; [`Error::Unsupported`] for an
    /// opcode xrdma does not support or a nonzero transport version.
    pub fn parse<T: AsRef<[u8]>>(packet: &BthPacket<T>) -> Result<BthRepr> {
        packet.check_len()?;
        if !packet.opcode().is_valid() || packet.tver() != 0 {
            return Err(Error::Unsupported);
        }
        Ok(BthRepr {
            opcode: packet.opcode(),
            solicited: packet.solicited(),
            mig_req: packet.mig_req(),
            pad_count: packet.pad_count(),
            pkey: packet.pkey(),
            fecn: packet.fecn(),
            becn: packet.becn(),
            dest_qp: packet.dest_qp(),
            ack_req: packet.ack_req(),
            psn: packet.psn(),
        })
    }

    /// Length of the BTH (12).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the BTH into `packet`, with TVer and reserved bits zero.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer; [`Error::Malformed`] if
    /// `pad_count > 3`; [`Error::Unsupported`] for an unsupported opcode.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut BthPacket<T>) -> Result<()> {
        packet.check_len()?;
        if self.pad_count > 3 {
            return Err(Error::Malformed);
        }
        if !self.opcode.is_valid() {
            return Err(Error::Unsupported);
        }
        packet.set_opcode(self.opcode);
        packet.set_flags(self.solicited, self.mig_req, self.pad_count);
        packet.set_pkey(self.pkey);
        packet.clear_reserved();
        packet.set_fecn(self.fecn);
        packet.set_becn(self.becn);
        packet.set_dest_qp(self.dest_qp);
        packet.set_ack_req(self.ack_req);
        packet.set_psn(self.psn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RC SEND_ONLY, SE, pad 2, P_Key 0xffff, QP 0x000011, AckReq,
    /// PSN 0xabcdef.
    const KNOWN: [u8; 12] = [
        0x04, 0xa0, 0xff, 0xff, 0x00, 0x00, 0x00, 0x11, 0x80, 0xab, 0xcd, 0xef,
    ];

    fn known_repr() -> BthRepr {
        BthRepr {
            opcode: Opcode::RC_SEND_ONLY,
            solicited: true,
            mig_req: false,
            pad_count: 2,
            pkey: 0xffff,
            fecn: false,
            becn: false,
            dest_qp: Qpn::new(0x11).unwrap(),
            ack_req: true,
            psn: Psn::new(0xabcdef).unwrap(),
        }
    }

    #[test]
    fn parses_known_bytes() {
        let packet = BthPacket::new_checked(&KNOWN[..]).unwrap();
        assert_eq!(BthRepr::parse(&packet), Ok(known_repr()));
    }

    #[test]
    fn emits_known_bytes() {
        let mut buf = [0xffu8; 12];
        known_repr()
            .emit(&mut BthPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, KNOWN);
    }

    #[test]
    fn every_field_round_trips() {
        let repr = BthRepr {
            opcode: Opcode::UD_SEND_ONLY_WITH_IMMEDIATE,
            solicited: false,
            mig_req: true,
            pad_count: 3,
            pkey: 0x8001,
            fecn: true,
            becn: true,
            dest_qp: Qpn::MAX,
            ack_req: false,
            psn: Psn::MAX,
        };
        let mut buf = [0u8; 12];
        repr.emit(&mut BthPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf[4], 0xc0);
        assert_eq!(
            BthRepr::parse(&BthPacket::new_unchecked(&buf[..])),
            Ok(repr)
        );
    }

    #[test]
    fn reserved_bits_are_ignored_on_parse_and_zeroed_on_emit() {
        let mut bytes = KNOWN;
        bytes[4] |= 0x3f; // resv6a
        bytes[8] |= 0x7f; // resv7
        let parsed = BthRepr::parse(&BthPacket::new_unchecked(&bytes[..])).unwrap();
        assert_eq!(parsed, known_repr());
        parsed
            .emit(&mut BthPacket::new_unchecked(&mut bytes[..]))
            .unwrap();
        assert_eq!(bytes, KNOWN);
    }

    #[test]
    fn short_buffer_is_truncated() {
        assert_eq!(
            BthPacket::new_checked(&KNOWN[..11]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            BthRepr::parse(&BthPacket::new_unchecked(&KNOWN[..3])),
            Err(Error::Truncated)
        );
        let mut short = [0u8; 11];
        assert_eq!(
            known_repr().emit(&mut BthPacket::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn unknown_opcode_and_nonzero_tver_are_unsupported() {
        for opcode in [0x15u8, 0x24, 0x81, 0xff] {
            let mut bytes = KNOWN;
            bytes[0] = opcode;
            assert_eq!(
                BthRepr::parse(&BthPacket::new_unchecked(&bytes[..])),
                Err(Error::Unsupported)
            );
        }
        let mut bytes = KNOWN;
        bytes[1] |= 0x01;
        assert_eq!(
            BthRepr::parse(&BthPacket::new_unchecked(&bytes[..])),
            Err(Error::Unsupported)
        );
    }

    #[test]
    fn emit_rejects_bad_pad_and_opcode() {
        let mut buf = [0u8; 12];
        let bad_pad = BthRepr {
            pad_count: 4,
            ..known_repr()
        };
        assert_eq!(
            bad_pad.emit(&mut BthPacket::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
        let bad_op = BthRepr {
            opcode: Opcode::new(0x81),
            ..known_repr()
        };
        assert_eq!(
            bad_op.emit(&mut BthPacket::new_unchecked(&mut buf[..])),
            Err(Error::Unsupported)
        );
    }
}
