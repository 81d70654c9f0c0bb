//! DREQ, a disconnect request, and DREP, its reply.
//!
//! ```text
//! DREQ body 0..4   Local Comm ID         body 4..8   Remote Comm ID
//!      body 8..11  Remote QPN/EECN       body 11     reserved
//!      body 12..232 private data
//! DREP body 0..4   Local Comm ID         body 4..8   Remote Comm ID
//!      body 8..232 private data
//! ```

use super::{
    CommId, DREP_PRIVATE_LEN, DREQ_PRIVATE_LEN, RtuRepr, array, body, emit_body, put, put_u24,
};
use crate::wire::{Qpn, Result, read_u24, read_u32};

/// Byte offsets of the DREQ and DREP fields, relative to the MAD body.
mod field {
    use crate::wire::field::Field;
    pub(super) const LOCAL_COMM_ID: usize = 0;
    pub(super) const REMOTE_COMM_ID: usize = 4;
    pub(super) const DREQ_REMOTE_QPN: usize = 8;
    pub(super) const DREQ_PRIVATE_DATA: Field = 12..232;
}

/// A disconnect request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DreqRepr {
    /// The sender's communication ID.
    pub local_comm_id: CommId,
    /// The receiver's communication ID.
    pub remote_comm_id: CommId,
    /// The receiver's QP; Linux drops a DREQ naming another QP.
    pub remote_qpn: Qpn,
    /// Private data.
    pub private_data: [u8; DREQ_PRIVATE_LEN],
}

impl Default for DreqRepr {
    fn default() -> DreqRepr {
        DreqRepr {
            local_comm_id: CommId(0),
            remote_comm_id: CommId(0),
            remote_qpn: Qpn::default(),
            private_data: [0; DREQ_PRIVATE_LEN],
        }
    }
}

impl DreqRepr {
    /// Parses a DREQ body (the MAD after its header; extra bytes ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn parse(body: &[u8]) -> Result<DreqRepr> {
        use field::*;
        let body = self::body(body)?;
        Ok(DreqRepr {
            local_comm_id: CommId(read_u32(body, LOCAL_COMM_ID)),
            remote_comm_id: CommId(read_u32(body, REMOTE_COMM_ID)),
            remote_qpn: Qpn::new_masked(read_u24(body, DREQ_REMOTE_QPN)),
            private_data: array(body, DREQ_PRIVATE_DATA),
        })
    }

    /// Writes the DREQ into the first 232 bytes of `body`.
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        use field::*;
        emit_body(body, |body| {
            put(body, LOCAL_COMM_ID, &self.local_comm_id.0.to_be_bytes());
            put(body, REMOTE_COMM_ID, &self.remote_comm_id.0.to_be_bytes());
            put_u24(body, DREQ_REMOTE_QPN, self.remote_qpn.value())?;
            body[DREQ_PRIVATE_DATA].copy_from_slice(&self.private_data);
            Ok(())
        })
    }
}

/// A disconnect reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrepRepr {
    /// The sender's communication ID.
    pub local_comm_id: CommId,
    /// The receiver's communication ID.
    pub remote_comm_id: CommId,
    /// Private data.
    pub private_data: [u8; DREP_PRIVATE_LEN],
}

impl Default for DrepRepr {
    fn default() -> DrepRepr {
        DrepRepr {
            local_comm_id: CommId(0),
            remote_comm_id: CommId(0),
            private_data: [0; DREP_PRIVATE_LEN],
        }
    }
}

impl DrepRepr {
    /// Parses a DREP body (the MAD after its header; extra bytes ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn parse(body: &[u8]) -> Result<DrepRepr> {
        // A DREP is laid out as an RTU: the two comm IDs, then 224 bytes of private data.
        let rtu = RtuRepr::parse(body)?;
        Ok(DrepRepr {
            local_comm_id: rtu.local_comm_id,
            remote_comm_id: rtu.remote_comm_id,
            private_data: rtu.private_data,
        })
    }

    /// Writes the DREP into the first 232 bytes of `body`.
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::wire::Error::Truncated) if `body` is
    /// shorter than 232 bytes.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        RtuRepr {
            local_comm_id: self.local_comm_id,
            remote_comm_id: self.remote_comm_id,
            private_data: self.private_data,
        }
        .emit(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;
    use crate::wire::mad::MAD_BODY_LEN;

    #[test]
    fn dreq_parses_and_emits_known_bytes() {
        let mut bytes = [0u8; MAD_BODY_LEN];
        bytes[0..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        bytes[8..11].copy_from_slice(&[0xab, 0xcd, 0xef]); // remote QPN
        bytes[12] = 0x31;
        bytes[231] = 0x32;
        let mut private_data = [0; DREQ_PRIVATE_LEN];
        private_data[0] = 0x31;
        private_data[DREQ_PRIVATE_LEN - 1] = 0x32;
        let repr = DreqRepr {
            local_comm_id: CommId(0x0102_0304),
            remote_comm_id: CommId(0x0506_0708),
            remote_qpn: Qpn::new(0xab_cdef).unwrap(),
            private_data,
        };
        assert_eq!(DreqRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
        bytes[11] = 0xee;
        assert_eq!(DreqRepr::parse(&bytes), Ok(repr), "reserved byte ignored");
    }

    #[test]
    fn drep_parses_and_emits_known_bytes() {
        let mut bytes = [0u8; MAD_BODY_LEN];
        bytes[0..8].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        bytes[8] = 0x41;
        bytes[231] = 0x42;
        let mut private_data = [0; DREP_PRIVATE_LEN];
        private_data[0] = 0x41;
        private_data[DREP_PRIVATE_LEN - 1] = 0x42;
        let repr = DrepRepr {
            local_comm_id: CommId(0x0807_0605),
            remote_comm_id: CommId(0x0403_0201),
            private_data,
        };
        assert_eq!(DrepRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn short_bodies_are_truncated() {
        let short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(DreqRepr::parse(&short), Err(Error::Truncated));
        assert_eq!(DrepRepr::parse(&short), Err(Error::Truncated));
        let mut short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(DreqRepr::default().emit(&mut short), Err(Error::Truncated));
        assert_eq!(DrepRepr::default().emit(&mut short), Err(Error::Truncated));
    }
}
