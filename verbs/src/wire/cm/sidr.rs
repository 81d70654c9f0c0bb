//! SIDR_REQ and SIDR_REP: service ID resolution, how rdma_cm finds the QP
//! and Q_Key of a UD service (`RDMA_PS_UDP`).
//!
//! ```text
//! SIDR_REQ body 0..4   Request ID        body 4..6   P_Key
//!          body 6..8   reserved          body 8..16  Service ID
//!          body 16..232 private data
//! SIDR_REP body 0..4   Request ID        body 4      Status
//!          body 5      Info Length       body 6..8   vendor ID
//!          body 8..11  QPN (11: vendor)  body 12..20 Service ID
//!          body 20..24 Q_Key             body 24..96 additional info
//!          body 96..232 private data
//! ```

use super::{
    CommId, SIDR_REP_INFO_LEN, SIDR_REP_PRIVATE_LEN, SIDR_REQ_PRIVATE_LEN, ServiceId, array, body,
    emit_body, put, put_u24,
};
use crate::wire::{Qkey, Qpn, Result, read_u16, read_u24, read_u32, read_u64};

/// Byte offsets of the SIDR_REQ and SIDR_REP fields, relative to the MAD
/// body.
mod field {
    use crate::wire::field::Field;
    pub(super) const REQUEST_ID: usize = 0;
    pub(super) const REQ_PKEY: usize = 4;
    pub(super) const REQ_SERVICE_ID: usize = 8;
    pub(super) const REQ_PRIVATE_DATA: Field = 16..232;
    pub(super) const REP_STATUS: usize = 4;
    pub(super) const REP_INFO_LEN: usize = 5;
    pub(super) const REP_QPN: usize = 8;
    pub(super) const REP_SERVICE_ID: usize = 12;
    pub(super) const REP_QKEY: usize = 20;
    pub(super) const REP_INFO: Field = 24..96;
    pub(super) const REP_PRIVATE_DATA: Field = 96..232;
}

/// A service ID resolution request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidrReqRepr {
    /// The requester's ID for this resolution (rdma_cm: its local comm ID).
    pub request_id: CommId,
    /// Partition key.
    pub pkey: u16,
    /// The service to resolve.
    pub service_id: ServiceId,
    /// Private data; rdma_cm puts its header ([`cma`](crate::wire::cma))
    /// in front.
    pub private_data: [u8; SIDR_REQ_PRIVATE_LEN],
}

impl Default for SidrReqRepr {
    fn default() -> SidrReqRepr {
        SidrReqRepr {
            request_id: CommId(0),
            pkey: 0,
            service_id: ServiceId(0),
            private_data: [0; SIDR_REQ_PRIVATE_LEN],
        }
    }
}

impl SidrReqRepr {
    /// Parses a SIDR_REQ body (the MAD after its header; extra bytes
    /// ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn parse(body: &[u8]) -> Result<SidrReqRepr> {
        use field::*;
        let body = self::body(body)?;
        Ok(SidrReqRepr {
            request_id: CommId(read_u32(body, REQUEST_ID)),
            pkey: read_u16(body, REQ_PKEY),
            service_id: ServiceId(read_u64(body, REQ_SERVICE_ID)),
            private_data: array(body, REQ_PRIVATE_DATA),
        })
    }

    /// Writes the SIDR_REQ into the first 232 bytes of `body`.
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        use field::*;
        emit_body(body, |body| {
            put(body, REQUEST_ID, &self.request_id.0.to_be_bytes());
            put(body, REQ_PKEY, &self.pkey.to_be_bytes());
            put(body, REQ_SERVICE_ID, &self.service_id.0.to_be_bytes());
            body[REQ_PRIVATE_DATA].copy_from_slice(&self.private_data);
            Ok(())
        })
    }
}

/// A service ID resolution reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidrRepRepr {
    /// The request ID from the SIDR_REQ.
    pub request_id: CommId,
    /// Status (see [`sidr_status`](super::sidr_status)).
    pub status: u8,
    /// How many bytes of [`info`](Self::info) are meaningful.
    pub info_len: u8,
    /// The service's UD QP.
    pub qpn: Qpn,
    /// The service ID from the SIDR_REQ.
    pub service_id: ServiceId,
    /// The service QP's Q_Key (rdma_cm: 0x01234567).
    pub qkey: Qkey,
    /// Additional information.
    pub info: [u8; SIDR_REP_INFO_LEN],
    /// Private data.
    pub private_data: [u8; SIDR_REP_PRIVATE_LEN],
}

impl Default for SidrRepRepr {
    fn default() -> SidrRepRepr {
        SidrRepRepr {
            request_id: CommId(0),
            status: 0,
            info_len: 0,
            qpn: Qpn::default(),
            service_id: ServiceId(0),
            qkey: Qkey::new(0),
            info: [0; SIDR_REP_INFO_LEN],
            private_data: [0; SIDR_REP_PRIVATE_LEN],
        }
    }
}

impl SidrRepRepr {
    /// Parses a SIDR_REP body (the MAD after its header; extra bytes
    /// ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn parse(body: &[u8]) -> Result<SidrRepRepr> {
        use field::*;
        let body = self::body(body)?;
        Ok(SidrRepRepr {
            request_id: CommId(read_u32(body, REQUEST_ID)),
            status: body[REP_STATUS],
            info_len: body[REP_INFO_LEN],
            qpn: Qpn::new_masked(read_u24(body, REP_QPN)),
            service_id: ServiceId(read_u64(body, REP_SERVICE_ID)),
            qkey: Qkey::new(read_u32(body, REP_QKEY)),
            info: array(body, REP_INFO),
            private_data: array(body, REP_PRIVATE_DATA),
        })
    }

    /// Writes the SIDR_REP into the first 232 bytes of `body` (vendor IDs
    /// 0).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        use field::*;
        emit_body(body, |body| {
            put(body, REQUEST_ID, &self.request_id.0.to_be_bytes());
            body[REP_STATUS] = self.status;
            body[REP_INFO_LEN] = self.info_len;
            put_u24(body, REP_QPN, self.qpn.value())?;
            put(body, REP_SERVICE_ID, &self.service_id.0.to_be_bytes());
            put(body, REP_QKEY, &self.qkey.value().to_be_bytes());
            body[REP_INFO].copy_from_slice(&self.info);
            body[REP_PRIVATE_DATA].copy_from_slice(&self.private_data);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;
    use crate::wire::mad::MAD_BODY_LEN;

    #[test]
    fn sidr_req_parses_and_emits_known_bytes() {
        let mut bytes = [0u8; MAD_BODY_LEN];
        bytes[0..4].copy_from_slice(&[0x10, 0x20, 0x30, 0x40]); // request ID
        bytes[4..6].copy_from_slice(&[0xff, 0xff]); // P_Key
        bytes[8..16].copy_from_slice(&[0, 0, 0, 0, 0x01, 0x11, 0x4a, 0x38]); // UDP 19000
        bytes[16] = 0x00; // the CMA header starts the private data
        bytes[17] = 0x40;
        bytes[231] = 0x5f;
        let mut private_data = [0; SIDR_REQ_PRIVATE_LEN];
        private_data[1] = 0x40;
        private_data[SIDR_REQ_PRIVATE_LEN - 1] = 0x5f;
        let repr = SidrReqRepr {
            request_id: CommId(0x1020_3040),
            pkey: 0xffff,
            service_id: ServiceId::from_port(super::super::port_space::UDP, 19000),
            private_data,
        };
        assert_eq!(SidrReqRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
        bytes[6] = 0x12;
        bytes[7] = 0x34;
        assert_eq!(SidrReqRepr::parse(&bytes), Ok(repr), "reserved ignored");
    }

    #[test]
    fn sidr_rep_parses_and_emits_known_bytes() {
        let mut bytes = [0u8; MAD_BODY_LEN];
        bytes[0..4].copy_from_slice(&[0x10, 0x20, 0x30, 0x40]); // request ID
        bytes[4] = 0; // status: success
        bytes[5] = 72; // info length
        bytes[8..11].copy_from_slice(&[0x00, 0x12, 0x34]); // QPN
        bytes[12..20].copy_from_slice(&[0, 0, 0, 0, 0x01, 0x11, 0x4a, 0x38]); // service ID
        bytes[20..24].copy_from_slice(&[0x01, 0x23, 0x45, 0x67]); // Q_Key
        bytes[24] = 0xa1; // info
        bytes[95] = 0xa2;
        bytes[96] = 0xb1; // private data
        bytes[231] = 0xb2;
        let mut info = [0; SIDR_REP_INFO_LEN];
        info[0] = 0xa1;
        info[SIDR_REP_INFO_LEN - 1] = 0xa2;
        let mut private_data = [0; SIDR_REP_PRIVATE_LEN];
        private_data[0] = 0xb1;
        private_data[SIDR_REP_PRIVATE_LEN - 1] = 0xb2;
        let repr = SidrRepRepr {
            request_id: CommId(0x1020_3040),
            status: 0,
            info_len: 72,
            qpn: Qpn::new(0x1234).unwrap(),
            service_id: ServiceId(0x0111_4a38),
            qkey: Qkey::new(0x0123_4567),
            info,
            private_data,
        };
        assert_eq!(SidrRepRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
        for at in [6, 7, 11] {
            bytes[at] = 0x99;
        }
        assert_eq!(SidrRepRepr::parse(&bytes), Ok(repr), "vendor IDs ignored");
    }

    #[test]
    fn sidr_rep_fields_at_their_max() {
        let repr = SidrRepRepr {
            request_id: CommId(u32::MAX),
            status: 0xff,
            info_len: 0xff,
            qpn: Qpn::MAX,
            service_id: ServiceId(u64::MAX),
            qkey: Qkey::new(u32::MAX),
            info: [0xff; SIDR_REP_INFO_LEN],
            private_data: [0xff; SIDR_REP_PRIVATE_LEN],
        };
        let mut out = [0u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out[4..12], [0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0]);
        assert_eq!(SidrRepRepr::parse(&out), Ok(repr));
    }

    #[test]
    fn short_bodies_are_truncated() {
        let short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(SidrReqRepr::parse(&short), Err(Error::Truncated));
        assert_eq!(SidrRepRepr::parse(&short), Err(Error::Truncated));
        let mut short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(
            SidrReqRepr::default().emit(&mut short),
            Err(Error::Truncated)
        );
        assert_eq!(
            SidrRepRepr::default().emit(&mut short),
            Err(Error::Truncated)
        );
    }
}
