//! REJ, a reject, and MRA, "message received, answer delayed": the two
//! messages that name the message they answer.
//!
//! ```text
//! REJ body 0..4   Local Comm ID (0 when rejecting a REQ before any REP)
//!     body 4..8   Remote Comm ID
//!     body 8      [7:6] Message REJected
//!     body 9      [7:1] Reject Info Length
//!     body 10..12 Reason                 body 12..84  ARI
//!     body 84..232 private data
//! MRA body 0..4   Local Comm ID          body 4..8    Remote Comm ID
//!     body 8      [7:6] Message MRAed    body 9       [7:3] Service Timeout
//!     body 10..232 private data
//! ```

use super::{
    Bits, CommId, MRA_PRIVATE_LEN, MsgKind, REJ_ARI_LEN, REJ_PRIVATE_LEN, array, body, emit_body,
    put,
};
use crate::wire::{Result, read_u16, read_u32};

/// Byte offsets of the REJ and MRA fields, relative to the MAD body.
mod field {
    use super::Bits;
    use crate::wire::field::Field;
    pub(super) const LOCAL_COMM_ID: usize = 0;
    pub(super) const REMOTE_COMM_ID: usize = 4;
    /// Message REJected (REJ) or Message MRAed (MRA).
    pub(super) const MSG: Bits = Bits::new(8, 7, 6);
    pub(super) const REJ_ARI_LEN: Bits = Bits::new(9, 7, 1);
    pub(super) const REJ_REASON: usize = 10;
    pub(super) const REJ_ARI: Field = 12..84;
    pub(super) const REJ_PRIVATE_DATA: Field = 84..232;
    pub(super) const MRA_SERVICE_TIMEOUT: Bits = Bits::new(9, 7, 3);
    pub(super) const MRA_PRIVATE_DATA: Field = 10..232;
}

/// A reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejRepr {
    /// The rejecter's communication ID (0 when it rejects a REQ it never
    /// replied to).
    pub local_comm_id: CommId,
    /// The other side's communication ID.
    pub remote_comm_id: CommId,
    /// Which message is rejected.
    pub msg_rejected: MsgKind,
    /// How many bytes of [`ari`](Self::ari) are meaningful, 7 bits.
    pub ari_len: u8,
    /// Reason (see [`rej_reason`](super::rej_reason)).
    pub reason: u16,
    /// Additional reject information.
    pub ari: [u8; REJ_ARI_LEN],
    /// Private data.
    pub private_data: [u8; REJ_PRIVATE_LEN],
}

impl Default for RejRepr {
    fn default() -> RejRepr {
        RejRepr {
            local_comm_id: CommId(0),
            remote_comm_id: CommId(0),
            msg_rejected: MsgKind::Req,
            ari_len: 0,
            reason: 0,
            ari: [0; REJ_ARI_LEN],
            private_data: [0; REJ_PRIVATE_LEN],
        }
    }
}

impl RejRepr {
    /// Parses a REJ body (the MAD after its header; extra bytes ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes;
    /// [`Error::Malformed`](crate::wire::Error::Malformed) for the reserved
    /// message code 3.
    pub fn parse(body: &[u8]) -> Result<RejRepr> {
        use field::*;
        let body = self::body(body)?;
        Ok(RejRepr {
            local_comm_id: CommId(read_u32(body, LOCAL_COMM_ID)),
            remote_comm_id: CommId(read_u32(body, REMOTE_COMM_ID)),
            msg_rejected: MsgKind::from_value(MSG.get(body))?,
            ari_len: REJ_ARI_LEN.get(body),
            reason: read_u16(body, REJ_REASON),
            ari: array(body, REJ_ARI),
            private_data: array(body, REJ_PRIVATE_DATA),
        })
    }

    /// Writes the REJ into the first 232 bytes of `body`.
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes;
    /// [`Error::Malformed`](crate::wire::Error::Malformed) if `ari_len`
    /// is wider than 7 bits.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        use field::*;
        emit_body(body, |body| {
            put(body, LOCAL_COMM_ID, &self.local_comm_id.0.to_be_bytes());
            put(body, REMOTE_COMM_ID, &self.remote_comm_id.0.to_be_bytes());
            MSG.put(body, self.msg_rejected.value())?;
            REJ_ARI_LEN.put(body, self.ari_len)?;
            put(body, REJ_REASON, &self.reason.to_be_bytes());
            body[REJ_ARI].copy_from_slice(&self.ari);
            body[REJ_PRIVATE_DATA].copy_from_slice(&self.private_data);
            Ok(())
        })
    }
}

/// Message receipt acknowledgement: the sender got a message and needs
/// `service_timeout` longer to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MraRepr {
    /// The sender's communication ID.
    pub local_comm_id: CommId,
    /// The other side's communication ID.
    pub remote_comm_id: CommId,
    /// Which message is acknowledged ([`MsgKind::Other`]: a LAP).
    pub msg_mraed: MsgKind,
    /// How long the answer may take, 5-bit exponent (4.096 µs · 2^t).
    pub service_timeout: u8,
    /// Private data.
    pub private_data: [u8; MRA_PRIVATE_LEN],
}

impl Default for MraRepr {
    fn default() -> MraRepr {
        MraRepr {
            local_comm_id: CommId(0),
            remote_comm_id: CommId(0),
            msg_mraed: MsgKind::Req,
            service_timeout: 0,
            private_data: [0; MRA_PRIVATE_LEN],
        }
    }
}

impl MraRepr {
    /// Parses an MRA body (the MAD after its header; extra bytes ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes;
    /// [`Error::Malformed`](crate::wire::Error::Malformed) for the reserved
    /// message code 3.
    pub fn parse(body: &[u8]) -> Result<MraRepr> {
        use field::*;
        let body = self::body(body)?;
        Ok(MraRepr {
            local_comm_id: CommId(read_u32(body, LOCAL_COMM_ID)),
            remote_comm_id: CommId(read_u32(body, REMOTE_COMM_ID)),
            msg_mraed: MsgKind::from_value(MSG.get(body))?,
            service_timeout: MRA_SERVICE_TIMEOUT.get(body),
            private_data: array(body, MRA_PRIVATE_DATA),
        })
    }

    /// Writes the MRA into the first 232 bytes of `body`.
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes;
    /// [`Error::Malformed`](crate::wire::Error::Malformed) if
    /// `service_timeout` is wider than 5 bits.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        use field::*;
        emit_body(body, |body| {
            put(body, LOCAL_COMM_ID, &self.local_comm_id.0.to_be_bytes());
            put(body, REMOTE_COMM_ID, &self.remote_comm_id.0.to_be_bytes());
            MSG.put(body, self.msg_mraed.value())?;
            MRA_SERVICE_TIMEOUT.put(body, self.service_timeout)?;
            body[MRA_PRIVATE_DATA].copy_from_slice(&self.private_data);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;
    use crate::wire::mad::MAD_BODY_LEN;

    /// REJ 4 (timeout) for a REQ, whose ARI is the rejecter's 8-byte GUID,
    /// written at the offsets of IBTA table 108.
    fn known_rej() -> ([u8; MAD_BODY_LEN], RejRepr) {
        let mut b = [0u8; MAD_BODY_LEN];
        b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // remote comm ID
        // b[8] stays 0: a REQ is rejected.
        b[9] = 8 << 1; // ARI length 8
        b[10..12].copy_from_slice(&[0x00, 0x04]); // reason: timeout
        b[12..20].copy_from_slice(&[0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55]);
        b[84] = 0x61; // private data
        b[231] = 0x62;

        let mut ari = [0; REJ_ARI_LEN];
        ari[..8].copy_from_slice(&[0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55]);
        let mut private_data = [0; REJ_PRIVATE_LEN];
        private_data[0] = 0x61;
        private_data[REJ_PRIVATE_LEN - 1] = 0x62;
        let repr = RejRepr {
            local_comm_id: CommId(0),
            remote_comm_id: CommId(0xdead_beef),
            msg_rejected: MsgKind::Req,
            ari_len: 8,
            reason: super::super::rej_reason::TIMEOUT,
            ari,
            private_data,
        };
        (b, repr)
    }

    #[test]
    fn rej_parses_and_emits_known_bytes() {
        let (bytes, repr) = known_rej();
        assert_eq!(RejRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn rej_bit_fields_at_their_max_and_reserved_bits() {
        let repr = RejRepr {
            local_comm_id: CommId(1),
            remote_comm_id: CommId(2),
            msg_rejected: MsgKind::Other,
            ari_len: 127,
            reason: 0xffff,
            ari: [0xff; REJ_ARI_LEN],
            private_data: [0xff; REJ_PRIVATE_LEN],
        };
        let mut out = [0u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out[8..12], [0x80, 0xfe, 0xff, 0xff]);
        assert_eq!(RejRepr::parse(&out), Ok(repr));
        out[8] |= 0x3f;
        out[9] |= 0x01;
        assert_eq!(RejRepr::parse(&out), Ok(repr), "reserved bits ignored");
        out[8] |= 0xc0;
        assert_eq!(RejRepr::parse(&out), Err(Error::Malformed), "message 3");
        let mut wide = repr;
        wide.ari_len = 128;
        assert_eq!(wide.emit(&mut out), Err(Error::Malformed));
    }

    #[test]
    fn rej_message_kinds() {
        let (mut bytes, repr) = known_rej();
        for (code, kind) in [(1, MsgKind::Rep), (2, MsgKind::Other)] {
            bytes[8] = code << 6;
            let parsed = RejRepr::parse(&bytes).unwrap();
            assert_eq!(
                parsed,
                RejRepr {
                    msg_rejected: kind,
                    ..repr
                }
            );
        }
    }

    #[test]
    fn mra_parses_and_emits_known_bytes() {
        let mut bytes = [0u8; MAD_BODY_LEN];
        bytes[0..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        bytes[8] = 1 << 6; // REP MRAed
        bytes[9] = 24 << 3; // service timeout 24
        bytes[10] = 0x71;
        bytes[231] = 0x72;
        let mut private_data = [0; MRA_PRIVATE_LEN];
        private_data[0] = 0x71;
        private_data[MRA_PRIVATE_LEN - 1] = 0x72;
        let repr = MraRepr {
            local_comm_id: CommId(0x0102_0304),
            remote_comm_id: CommId(0x0506_0708),
            msg_mraed: MsgKind::Rep,
            service_timeout: 24,
            private_data,
        };
        assert_eq!(MraRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn mra_bit_fields_at_their_max_and_reserved_bits() {
        let repr = MraRepr {
            msg_mraed: MsgKind::Other,
            service_timeout: 31,
            ..MraRepr::default()
        };
        let mut out = [0u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out[8..10], [0x80, 0xf8]);
        out[8] |= 0x3f;
        out[9] |= 0x07;
        assert_eq!(MraRepr::parse(&out), Ok(repr));
        out[8] |= 0xc0;
        assert_eq!(MraRepr::parse(&out), Err(Error::Malformed));
        let wide = MraRepr {
            service_timeout: 32,
            ..repr
        };
        let mut out = [0xa5u8; MAD_BODY_LEN];
        assert_eq!(wide.emit(&mut out), Err(Error::Malformed));
        assert_eq!(out, [0xa5; MAD_BODY_LEN]);
    }

    #[test]
    fn short_bodies_are_truncated() {
        let short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(RejRepr::parse(&short), Err(Error::Truncated));
        assert_eq!(MraRepr::parse(&short), Err(Error::Truncated));
        let mut short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(RejRepr::default().emit(&mut short), Err(Error::Truncated));
        assert_eq!(MraRepr::default().emit(&mut short), Err(Error::Truncated));
    }
}
