//! REP, the reply to a REQ, and RTU, the requester's "ready to use".
//!
//! ```text
//! REP body 0..4   Local Comm ID          body 4..8   Remote Comm ID
//!     body 8..12  Local Q_Key            body 12..15 Local QPN (15: vendor)
//!     body 16..19 Local EECN (19: vendor) body 20..23 Starting PSN (23: vendor)
//!     body 24     Responder Resources    body 25     Initiator Depth
//!     body 26     [7:3] Target ACK Delay, [2:1] Failover Accepted, [0] E2E FC
//!     body 27     [7:5] RNR Retry Count, [4] SRQ
//!     body 28..36 Local CA GUID          body 36..232 private data
//! RTU body 0..4   Local Comm ID          body 4..8   Remote Comm ID
//!     body 8..232 private data
//! ```

use super::{Bits, CommId, REP_PRIVATE_LEN, RTU_PRIVATE_LEN, array, body, emit_body, put, put_u24};
use crate::wire::{Psn, Qkey, Qpn, Result, read_u24, read_u32, read_u64};

/// Byte offsets of the REP and RTU fields, relative to the MAD body.
mod field {
    use super::Bits;
    use crate::wire::field::Field;
    pub(super) const LOCAL_COMM_ID: usize = 0;
    pub(super) const REMOTE_COMM_ID: usize = 4;
    pub(super) const LOCAL_QKEY: usize = 8;
    pub(super) const LOCAL_QPN: usize = 12;
    pub(super) const LOCAL_EECN: usize = 16;
    pub(super) const STARTING_PSN: usize = 20;
    pub(super) const RESPONDER_RESOURCES: usize = 24;
    pub(super) const INITIATOR_DEPTH: usize = 25;
    pub(super) const TARGET_ACK_DELAY: Bits = Bits::new(26, 7, 3);
    pub(super) const FAILOVER_ACCEPTED: Bits = Bits::new(26, 2, 1);
    pub(super) const E2E_FLOW_CONTROL: Bits = Bits::new(26, 0, 0);
    pub(super) const RNR_RETRY_COUNT: Bits = Bits::new(27, 7, 5);
    pub(super) const SRQ: Bits = Bits::new(27, 4, 4);
    pub(super) const LOCAL_CA_GUID: usize = 28;
    pub(super) const PRIVATE_DATA: Field = 36..232;
    pub(super) const RTU_PRIVATE_DATA: Field = 8..232;
}

/// A reply to a REQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepRepr {
    /// The responder's communication ID.
    pub local_comm_id: CommId,
    /// The requester's communication ID, from the REQ.
    pub remote_comm_id: CommId,
    /// The responder's Q_Key.
    pub local_qkey: Qkey,
    /// The responder's QP.
    pub local_qpn: Qpn,
    /// Local EE context number, 24 bits (RD only; 0).
    pub local_eecn: u32,
    /// The PSN the responder expects first (its receive PSN).
    pub starting_psn: Psn,
    /// RDMA READ/atomic requests the responder accepts at once.
    pub responder_resources: u8,
    /// RDMA READ/atomic requests the responder issues at once.
    pub initiator_depth: u8,
    /// The responder's CA ACK delay, 5-bit exponent.
    pub target_ack_delay: u8,
    /// Failover accepted, 2 bits (0 accepted, 1 not supported, 2 rejected).
    pub failover_accepted: u8,
    /// End-to-end flow control.
    pub e2e_flow_control: bool,
    /// RNR retry count, 3 bits.
    pub rnr_retry_count: u8,
    /// The responder uses an SRQ.
    pub srq: bool,
    /// The responder's CA (node) GUID.
    pub local_ca_guid: u64,
    /// Private data.
    pub private_data: [u8; REP_PRIVATE_LEN],
}

impl Default for RepRepr {
    fn default() -> RepRepr {
        RepRepr {
            local_comm_id: CommId(0),
            remote_comm_id: CommId(0),
            local_qkey: Qkey::new(0),
            local_qpn: Qpn::default(),
            local_eecn: 0,
            starting_psn: Psn::ZERO,
            responder_resources: 0,
            initiator_depth: 0,
            target_ack_delay: 0,
            failover_accepted: 0,
            e2e_flow_control: false,
            rnr_retry_count: 0,
            srq: false,
            local_ca_guid: 0,
            private_data: [0; REP_PRIVATE_LEN],
        }
    }
}

impl RepRepr {
    /// Parses a REP body (the MAD after its header; extra bytes ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn parse(body: &[u8]) -> Result<RepRepr> {
        use field::*;
        let body = self::body(body)?;
        Ok(RepRepr {
            local_comm_id: CommId(read_u32(body, LOCAL_COMM_ID)),
            remote_comm_id: CommId(read_u32(body, REMOTE_COMM_ID)),
            local_qkey: Qkey::new(read_u32(body, LOCAL_QKEY)),
            local_qpn: Qpn::new_masked(read_u24(body, LOCAL_QPN)),
            local_eecn: read_u24(body, LOCAL_EECN),
            starting_psn: Psn::new_masked(read_u24(body, STARTING_PSN)),
            responder_resources: body[RESPONDER_RESOURCES],
            initiator_depth: body[INITIATOR_DEPTH],
            target_ack_delay: TARGET_ACK_DELAY.get(body),
            failover_accepted: FAILOVER_ACCEPTED.get(body),
            e2e_flow_control: E2E_FLOW_CONTROL.flag(body),
            rnr_retry_count: RNR_RETRY_COUNT.get(body),
            srq: SRQ.flag(body),
            local_ca_guid: read_u64(body, LOCAL_CA_GUID),
            private_data: array(body, PRIVATE_DATA),
        })
    }

    /// Writes the REP into the first 232 bytes of `body` (vendor IDs 0).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes;
    /// [`Error::Malformed`](crate::wire::Error::Malformed) if a field is
    /// wider than its bits.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        use field::*;
        emit_body(body, |body| {
            put(body, LOCAL_COMM_ID, &self.local_comm_id.0.to_be_bytes());
            put(body, REMOTE_COMM_ID, &self.remote_comm_id.0.to_be_bytes());
            put(body, LOCAL_QKEY, &self.local_qkey.value().to_be_bytes());
            put_u24(body, LOCAL_QPN, self.local_qpn.value())?;
            put_u24(body, LOCAL_EECN, self.local_eecn)?;
            put_u24(body, STARTING_PSN, self.starting_psn.value())?;
            body[RESPONDER_RESOURCES] = self.responder_resources;
            body[INITIATOR_DEPTH] = self.initiator_depth;
            TARGET_ACK_DELAY.put(body, self.target_ack_delay)?;
            FAILOVER_ACCEPTED.put(body, self.failover_accepted)?;
            E2E_FLOW_CONTROL.put_flag(body, self.e2e_flow_control);
            RNR_RETRY_COUNT.put(body, self.rnr_retry_count)?;
            SRQ.put_flag(body, self.srq);
            put(body, LOCAL_CA_GUID, &self.local_ca_guid.to_be_bytes());
            body[PRIVATE_DATA].copy_from_slice(&self.private_data);
            Ok(())
        })
    }
}

/// Ready to use: the requester has its QP ready and accepts traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtuRepr {
    /// The requester's communication ID.
    pub local_comm_id: CommId,
    /// The responder's communication ID, from the REP.
    pub remote_comm_id: CommId,
    /// Private data.
    pub private_data: [u8; RTU_PRIVATE_LEN],
}

impl Default for RtuRepr {
    fn default() -> RtuRepr {
        RtuRepr {
            local_comm_id: CommId(0),
            remote_comm_id: CommId(0),
            private_data: [0; RTU_PRIVATE_LEN],
        }
    }
}

impl RtuRepr {
    /// Parses an RTU body (the MAD after its header; extra bytes ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn parse(body: &[u8]) -> Result<RtuRepr> {
        use field::*;
        let body = self::body(body)?;
        Ok(RtuRepr {
            local_comm_id: CommId(read_u32(body, LOCAL_COMM_ID)),
            remote_comm_id: CommId(read_u32(body, REMOTE_COMM_ID)),
            private_data: array(body, RTU_PRIVATE_DATA),
        })
    }

    /// Writes the RTU into the first 232 bytes of `body`.
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        use field::*;
        emit_body(body, |body| {
            put(body, LOCAL_COMM_ID, &self.local_comm_id.0.to_be_bytes());
            put(body, REMOTE_COMM_ID, &self.remote_comm_id.0.to_be_bytes());
            body[RTU_PRIVATE_DATA].copy_from_slice(&self.private_data);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;
    use crate::wire::mad::MAD_BODY_LEN;

    /// A REP as `cma_accept_ib` sends it, written at the offsets of IBTA
    /// table 110.
    fn known_rep() -> ([u8; MAD_BODY_LEN], RepRepr) {
        let mut b = [0u8; MAD_BODY_LEN];
        b[0..4].copy_from_slice(&[0x01, 0x02, 0x03, 0x04]); // local comm ID
        b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // remote comm ID
        b[8..12].copy_from_slice(&[0, 0, 0, 0]); // Q_Key
        b[12..15].copy_from_slice(&[0x00, 0x01, 0x2c]); // local QPN 300
        b[20..23].copy_from_slice(&[0x12, 0x34, 0x56]); // starting PSN
        b[24] = 4; // responder resources
        b[25] = 2; // initiator depth
        b[26] = (15 << 3) | (1 << 1); // target ACK delay 15, failover 1, no E2E
        b[27] = (7 << 5) | (1 << 4); // RNR retry 7, SRQ
        b[28..36].copy_from_slice(&[0x02, 0xaa, 0xbb, 0xff, 0xfe, 0xcc, 0xdd, 0xee]); // GUID
        b[36] = 0x42; // private data
        b[231] = 0x43;

        let mut private_data = [0; REP_PRIVATE_LEN];
        private_data[0] = 0x42;
        private_data[REP_PRIVATE_LEN - 1] = 0x43;
        let repr = RepRepr {
            local_comm_id: CommId(0x0102_0304),
            remote_comm_id: CommId(0xdead_beef),
            local_qpn: Qpn::new(300).unwrap(),
            starting_psn: Psn::new(0x12_3456).unwrap(),
            responder_resources: 4,
            initiator_depth: 2,
            target_ack_delay: 15,
            failover_accepted: 1,
            rnr_retry_count: 7,
            srq: true,
            local_ca_guid: 0x02aa_bbff_fecc_ddee,
            private_data,
            ..RepRepr::default()
        };
        (b, repr)
    }

    #[test]
    fn rep_parses_and_emits_known_bytes() {
        let (bytes, repr) = known_rep();
        assert_eq!(RepRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    fn max_rep() -> RepRepr {
        RepRepr {
            local_comm_id: CommId(u32::MAX),
            remote_comm_id: CommId(u32::MAX),
            local_qkey: Qkey::new(u32::MAX),
            local_qpn: Qpn::MAX,
            local_eecn: 0xff_ffff,
            starting_psn: Psn::MAX,
            responder_resources: 0xff,
            initiator_depth: 0xff,
            target_ack_delay: 31,
            failover_accepted: 3,
            e2e_flow_control: true,
            rnr_retry_count: 7,
            srq: true,
            local_ca_guid: u64::MAX,
            private_data: [0xff; REP_PRIVATE_LEN],
        }
    }

    #[test]
    fn rep_bit_fields_at_their_max() {
        let mut out = [0u8; MAD_BODY_LEN];
        max_rep().emit(&mut out).unwrap();
        assert_eq!(
            out[12..28],
            [
                0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff,
                0xf0
            ]
        );
        assert_eq!(RepRepr::parse(&out), Ok(max_rep()));
        // Vendor ID bytes and the low nibble of byte 27 are ignored.
        for at in [15, 19, 23] {
            out[at] = 0x77;
        }
        out[27] |= 0x0f;
        assert_eq!(RepRepr::parse(&out), Ok(max_rep()));
    }

    #[test]
    fn rep_rejects_wide_fields() {
        let wide: [fn(&mut RepRepr); 4] = [
            |r| r.local_eecn = 1 << 24,
            |r| r.target_ack_delay = 32,
            |r| r.failover_accepted = 4,
            |r| r.rnr_retry_count = 8,
        ];
        for (index, widen) in wide.iter().enumerate() {
            let mut repr = known_rep().1;
            widen(&mut repr);
            let mut out = [0xa5u8; MAD_BODY_LEN];
            assert_eq!(repr.emit(&mut out), Err(Error::Malformed), "case {index}");
            assert_eq!(out, [0xa5; MAD_BODY_LEN], "case {index} wrote");
        }
    }

    #[test]
    fn rtu_parses_and_emits_known_bytes() {
        let mut bytes = [0u8; MAD_BODY_LEN];
        bytes[0..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
        bytes[8] = 0x11;
        bytes[231] = 0x22;
        let mut private_data = [0; RTU_PRIVATE_LEN];
        private_data[0] = 0x11;
        private_data[RTU_PRIVATE_LEN - 1] = 0x22;
        let repr = RtuRepr {
            local_comm_id: CommId(0xdead_beef),
            remote_comm_id: CommId(0x0102_0304),
            private_data,
        };
        assert_eq!(RtuRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn short_bodies_are_truncated() {
        let short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(RepRepr::parse(&short), Err(Error::Truncated));
        assert_eq!(RtuRepr::parse(&short), Err(Error::Truncated));
        let mut short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(RepRepr::default().emit(&mut short), Err(Error::Truncated));
        assert_eq!(RtuRepr::default().emit(&mut short), Err(Error::Truncated));
    }
}
