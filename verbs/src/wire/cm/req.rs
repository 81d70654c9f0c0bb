//! REQ, the connection request, and the path record it carries twice.
//!
//! ```text
//! body 0..4     Local Comm ID            body 4..8    reserved, vendor ID
//! body 8..16    Service ID               body 16..24  Local CA GUID
//! body 24..28   reserved                 body 28..32  Local Q_Key
//! body 32..35   Local QPN                body 35      Responder Resources
//! body 36..39   Local EECN               body 39      Initiator Depth
//! body 40..43   Remote EECN
//! body 43       [7:3] Remote CM Response Timeout, [2:1] Transport, [0] E2E FC
//! body 44..47   Starting PSN
//! body 47       [7:3] Local CM Response Timeout, [2:0] Retry Count
//! body 48..50   P_Key
//! body 50       [7:4] Path MTU, [3] RDC Exists, [2:0] RNR Retry Count
//! body 51       [7:4] Max CM Retries, [3] SRQ, [2:0] Extended Transport
//! body 52..96   primary path             body 96..140 alternate path
//! body 140..232 private data
//! ```

use std::net::Ipv6Addr;

use super::{
    Bits, CmTransport, CommId, REQ_PRIVATE_LEN, ServiceId, array, body, emit_body, put, put_u24,
};
use crate::wire::{Error, Psn, Qkey, Qpn, Result, read_u16, read_u24, read_u32, read_u64};

/// Byte offsets of the REQ fields, relative to the MAD body.
mod field {
    use super::Bits;
    use crate::wire::field::Field;
    pub(super) const LOCAL_COMM_ID: usize = 0;
    pub(super) const SERVICE_ID: usize = 8;
    pub(super) const LOCAL_CA_GUID: usize = 16;
    pub(super) const LOCAL_QKEY: usize = 28;
    pub(super) const LOCAL_QPN: usize = 32;
    pub(super) const RESPONDER_RESOURCES: usize = 35;
    pub(super) const LOCAL_EECN: usize = 36;
    pub(super) const INITIATOR_DEPTH: usize = 39;
    pub(super) const REMOTE_EECN: usize = 40;
    pub(super) const REMOTE_CM_RESPONSE_TIMEOUT: Bits = Bits::new(43, 7, 3);
    pub(super) const TRANSPORT: Bits = Bits::new(43, 2, 1);
    pub(super) const E2E_FLOW_CONTROL: Bits = Bits::new(43, 0, 0);
    pub(super) const STARTING_PSN: usize = 44;
    pub(super) const LOCAL_CM_RESPONSE_TIMEOUT: Bits = Bits::new(47, 7, 3);
    pub(super) const RETRY_COUNT: Bits = Bits::new(47, 2, 0);
    pub(super) const PKEY: usize = 48;
    pub(super) const PATH_MTU: Bits = Bits::new(50, 7, 4);
    pub(super) const RDC_EXISTS: Bits = Bits::new(50, 3, 3);
    pub(super) const RNR_RETRY_COUNT: Bits = Bits::new(50, 2, 0);
    pub(super) const MAX_CM_RETRIES: Bits = Bits::new(51, 7, 4);
    pub(super) const SRQ: Bits = Bits::new(51, 3, 3);
    pub(super) const EXTENDED_TRANSPORT: Bits = Bits::new(51, 2, 0);
    pub(super) const PRIMARY_PATH: Field = 52..96;
    pub(super) const ALTERNATE_PATH: Field = 96..140;
    pub(super) const PRIVATE_DATA: Field = 140..232;

    /// Offsets inside a path record, relative to its start.
    pub(super) mod path {
        use super::Bits;
        use crate::wire::field::Field;
        pub(in super::super) const LOCAL_LID: usize = 0;
        pub(in super::super) const REMOTE_LID: usize = 2;
        pub(in super::super) const LOCAL_GID: Field = 4..20;
        pub(in super::super) const REMOTE_GID: Field = 20..36;
        /// A 32-bit word whose bits 31..12 are the flow label.
        pub(in super::super) const FLOW_LABEL_WORD: usize = 36;
        pub(in super::super) const FLOW_LABEL_SHIFT: u32 = 12;
        pub(in super::super) const PACKET_RATE: Bits = Bits::new(39, 5, 0);
        pub(in super::super) const TRAFFIC_CLASS: usize = 40;
        pub(in super::super) const HOP_LIMIT: usize = 41;
        pub(in super::super) const SL: Bits = Bits::new(42, 7, 4);
        pub(in super::super) const SUBNET_LOCAL: Bits = Bits::new(42, 3, 3);
        pub(in super::super) const LOCAL_ACK_TIMEOUT: Bits = Bits::new(43, 7, 3);
    }
}

/// Largest 20-bit flow label.
const FLOW_LABEL_MAX: u32 = 0x000f_ffff;

/// A path record of a REQ (primary or alternate).
///
/// On RoCE the LIDs are 0xFFFF (permissive) once the hop limit exceeds 1,
/// and the GIDs are IPv4-mapped addresses (`::ffff:a.b.c.d`) for IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmPath {
    /// The sender's port LID.
    pub local_lid: u16,
    /// The receiver's port LID.
    pub remote_lid: u16,
    /// The sender's port GID.
    pub local_gid: Ipv6Addr,
    /// The receiver's port GID.
    pub remote_gid: Ipv6Addr,
    /// Flow label, 20 bits.
    pub flow_label: u32,
    /// Packet rate (IB static rate code), 6 bits.
    pub packet_rate: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Service level, 4 bits.
    pub sl: u8,
    /// Whether both ends sit on one subnet.
    pub subnet_local: bool,
    /// Local ACK timeout exponent, 5 bits (4.096 µs · 2^t).
    pub local_ack_timeout: u8,
}

impl Default for CmPath {
    /// All zeros, GIDs unspecified (`::`): an absent alternate path.
    fn default() -> CmPath {
        CmPath {
            local_lid: 0,
            remote_lid: 0,
            local_gid: Ipv6Addr::UNSPECIFIED,
            remote_gid: Ipv6Addr::UNSPECIFIED,
            flow_label: 0,
            packet_rate: 0,
            traffic_class: 0,
            hop_limit: 0,
            sl: 0,
            subnet_local: false,
            local_ack_timeout: 0,
        }
    }
}

impl CmPath {
    /// Length of a path record in a REQ.
    pub const LEN: usize = 44;

    /// Parses the path record at the start of `path` (at least
    /// [`LEN`](Self::LEN) bytes, checked by the caller).
    fn parse(path: &[u8]) -> CmPath {
        use field::path::*;
        CmPath {
            local_lid: read_u16(path, LOCAL_LID),
            remote_lid: read_u16(path, REMOTE_LID),
            local_gid: Ipv6Addr::from(array::<16>(path, LOCAL_GID)),
            remote_gid: Ipv6Addr::from(array::<16>(path, REMOTE_GID)),
            flow_label: read_u32(path, FLOW_LABEL_WORD) >> FLOW_LABEL_SHIFT,
            packet_rate: PACKET_RATE.get(path),
            traffic_class: path[TRAFFIC_CLASS],
            hop_limit: path[HOP_LIMIT],
            sl: SL.get(path),
            subnet_local: SUBNET_LOCAL.flag(path),
            local_ack_timeout: LOCAL_ACK_TIMEOUT.get(path),
        }
    }

    /// Writes the path record into `path` (zeroed, at least
    /// [`LEN`](Self::LEN) bytes).
    ///
    /// # Errors
    /// [`Error::Malformed`] if a field is wider than its bits.
    fn emit(&self, path: &mut [u8]) -> Result<()> {
        use field::path::*;
        if self.flow_label > FLOW_LABEL_MAX {
            return Err(Error::Malformed);
        }
        put(path, LOCAL_LID, &self.local_lid.to_be_bytes());
        put(path, REMOTE_LID, &self.remote_lid.to_be_bytes());
        path[LOCAL_GID].copy_from_slice(&self.local_gid.octets());
        path[REMOTE_GID].copy_from_slice(&self.remote_gid.octets());
        let word = self.flow_label << FLOW_LABEL_SHIFT;
        put(path, FLOW_LABEL_WORD, &word.to_be_bytes());
        PACKET_RATE.put(path, self.packet_rate)?;
        path[TRAFFIC_CLASS] = self.traffic_class;
        path[HOP_LIMIT] = self.hop_limit;
        SL.put(path, self.sl)?;
        SUBNET_LOCAL.put_flag(path, self.subnet_local);
        LOCAL_ACK_TIMEOUT.put(path, self.local_ack_timeout)
    }
}

/// A connection request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReqRepr {
    /// The requester's communication ID.
    pub local_comm_id: CommId,
    /// The service to connect to.
    pub service_id: ServiceId,
    /// The requester's CA (node) GUID.
    pub local_ca_guid: u64,
    /// The requester's Q_Key (0 for RC).
    pub local_qkey: Qkey,
    /// The requester's QP.
    pub local_qpn: Qpn,
    /// RDMA READ/atomic requests the requester accepts at once.
    pub responder_resources: u8,
    /// RDMA READ/atomic requests the requester issues at once.
    pub initiator_depth: u8,
    /// Local EE context number, 24 bits (RD only; 0).
    pub local_eecn: u32,
    /// Remote EE context number, 24 bits (RD only; 0).
    pub remote_eecn: u32,
    /// How long the responder may take to answer, 5-bit exponent.
    pub remote_cm_response_timeout: u8,
    /// Transport service type.
    pub transport: CmTransport,
    /// End-to-end flow control.
    pub e2e_flow_control: bool,
    /// The PSN the requester expects first (its receive PSN).
    pub starting_psn: Psn,
    /// How long the requester may take to answer, 5-bit exponent.
    pub local_cm_response_timeout: u8,
    /// Transport retry count, 3 bits.
    pub retry_count: u8,
    /// Partition key.
    pub pkey: u16,
    /// Path MTU, 4 bits (IB code: 1 = 256 … 5 = 4096).
    pub path_mtu: u8,
    /// RDC exists.
    pub rdc_exists: bool,
    /// RNR retry count, 3 bits (7 = infinite).
    pub rnr_retry_count: u8,
    /// How often the requester resends the REQ, 4 bits.
    pub max_cm_retries: u8,
    /// The requester uses an SRQ.
    pub srq: bool,
    /// Extended transport type, 3 bits (XRC).
    pub extended_transport: u8,
    /// The primary path.
    pub primary_path: CmPath,
    /// The alternate path (all zeros when there is none, as on RoCE).
    pub alternate_path: CmPath,
    /// Private data; rdma_cm puts its header ([`cma`](crate::wire::cma))
    /// in front.
    pub private_data: [u8; REQ_PRIVATE_LEN],
}

impl Default for ReqRepr {
    fn default() -> ReqRepr {
        ReqRepr {
            local_comm_id: CommId(0),
            service_id: ServiceId(0),
            local_ca_guid: 0,
            local_qkey: Qkey::new(0),
            local_qpn: Qpn::default(),
            responder_resources: 0,
            initiator_depth: 0,
            local_eecn: 0,
            remote_eecn: 0,
            remote_cm_response_timeout: 0,
            transport: CmTransport::Rc,
            e2e_flow_control: false,
            starting_psn: Psn::ZERO,
            local_cm_response_timeout: 0,
            retry_count: 0,
            pkey: 0,
            path_mtu: 0,
            rdc_exists: false,
            rnr_retry_count: 0,
            max_cm_retries: 0,
            srq: false,
            extended_transport: 0,
            primary_path: CmPath::default(),
            alternate_path: CmPath::default(),
            private_data: [0; REQ_PRIVATE_LEN],
        }
    }
}

impl ReqRepr {
    /// Parses a REQ body (the MAD after its header; extra bytes ignored).
    ///
    /// # Errors
    /// [`Error::Truncated`] if `body` is shorter than 232 bytes;
    /// [`Error::Malformed`] for transport type 2 (RD).
    pub fn parse(body: &[u8]) -> Result<ReqRepr> {
        use field::*;
        let body = self::body(body)?;
        Ok(ReqRepr {
            local_comm_id: CommId(read_u32(body, LOCAL_COMM_ID)),
            service_id: ServiceId(read_u64(body, SERVICE_ID)),
            local_ca_guid: read_u64(body, LOCAL_CA_GUID),
            local_qkey: Qkey::new(read_u32(body, LOCAL_QKEY)),
            local_qpn: Qpn::new_masked(read_u24(body, LOCAL_QPN)),
            responder_resources: body[RESPONDER_RESOURCES],
            initiator_depth: body[INITIATOR_DEPTH],
            local_eecn: read_u24(body, LOCAL_EECN),
            remote_eecn: read_u24(body, REMOTE_EECN),
            remote_cm_response_timeout: REMOTE_CM_RESPONSE_TIMEOUT.get(body),
            transport: CmTransport::from_value(TRANSPORT.get(body))?,
            e2e_flow_control: E2E_FLOW_CONTROL.flag(body),
            starting_psn: Psn::new_masked(read_u24(body, STARTING_PSN)),
            local_cm_response_timeout: LOCAL_CM_RESPONSE_TIMEOUT.get(body),
            retry_count: RETRY_COUNT.get(body),
            pkey: read_u16(body, PKEY),
            path_mtu: PATH_MTU.get(body),
            rdc_exists: RDC_EXISTS.flag(body),
            rnr_retry_count: RNR_RETRY_COUNT.get(body),
            max_cm_retries: MAX_CM_RETRIES.get(body),
            srq: SRQ.flag(body),
            extended_transport: EXTENDED_TRANSPORT.get(body),
            primary_path: CmPath::parse(&body[PRIMARY_PATH]),
            alternate_path: CmPath::parse(&body[ALTERNATE_PATH]),
            private_data: array(body, PRIVATE_DATA),
        })
    }

    /// Writes the REQ into the first 232 bytes of `body`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if `body` is shorter than 232 bytes;
    /// [`Error::Malformed`] if a field is wider than its bits.
    pub fn emit(&self, body: &mut [u8]) -> Result<()> {
        use field::*;
        emit_body(body, |body| {
            put(body, LOCAL_COMM_ID, &self.local_comm_id.0.to_be_bytes());
            put(body, SERVICE_ID, &self.service_id.0.to_be_bytes());
            put(body, LOCAL_CA_GUID, &self.local_ca_guid.to_be_bytes());
            put(body, LOCAL_QKEY, &self.local_qkey.value().to_be_bytes());
            put_u24(body, LOCAL_QPN, self.local_qpn.value())?;
            body[RESPONDER_RESOURCES] = self.responder_resources;
            put_u24(body, LOCAL_EECN, self.local_eecn)?;
            body[INITIATOR_DEPTH] = self.initiator_depth;
            put_u24(body, REMOTE_EECN, self.remote_eecn)?;
            REMOTE_CM_RESPONSE_TIMEOUT.put(body, self.remote_cm_response_timeout)?;
            TRANSPORT.put(body, self.transport.value())?;
            E2E_FLOW_CONTROL.put_flag(body, self.e2e_flow_control);
            put_u24(body, STARTING_PSN, self.starting_psn.value())?;
            LOCAL_CM_RESPONSE_TIMEOUT.put(body, self.local_cm_response_timeout)?;
            RETRY_COUNT.put(body, self.retry_count)?;
            put(body, PKEY, &self.pkey.to_be_bytes());
            PATH_MTU.put(body, self.path_mtu)?;
            RDC_EXISTS.put_flag(body, self.rdc_exists);
            RNR_RETRY_COUNT.put(body, self.rnr_retry_count)?;
            MAX_CM_RETRIES.put(body, self.max_cm_retries)?;
            SRQ.put_flag(body, self.srq);
            EXTENDED_TRANSPORT.put(body, self.extended_transport)?;
            self.primary_path.emit(&mut body[PRIMARY_PATH])?;
            self.alternate_path.emit(&mut body[ALTERNATE_PATH])?;
            body[PRIVATE_DATA].copy_from_slice(&self.private_data);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mad::MAD_BODY_LEN;

    /// A REQ as Linux's rdma_cm sends it for 198.18.0.1 → 198.18.0.2,
    /// port 7174, written field by field at the offsets of IBTA table 106.
    fn known() -> ([u8; MAD_BODY_LEN], ReqRepr) {
        let mut b = [0u8; MAD_BODY_LEN];
        b[0..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // local comm ID
        b[8..16].copy_from_slice(&[0, 0, 0, 0, 0x01, 0x06, 0x1c, 0x06]); // service ID
        b[16..24].copy_from_slice(&[0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55]); // CA GUID
        b[28..32].copy_from_slice(&[0, 0, 0, 0]); // Q_Key
        b[32..35].copy_from_slice(&[0x00, 0x00, 0x11]); // local QPN
        b[35] = 1; // responder resources
        b[39] = 1; // initiator depth
        b[43] = 20 << 3; // remote CM timeout 20, transport 0 (RC), no E2E FC
        b[44..47].copy_from_slice(&[0xab, 0xcd, 0xef]); // starting PSN
        b[47] = (20 << 3) | 7; // local CM timeout 20, retry 7
        b[48..50].copy_from_slice(&[0xff, 0xff]); // P_Key
        b[50] = (3 << 4) | 7; // MTU 1024, no RDC, RNR retry 7
        b[51] = 15 << 4; // max CM retries 15, no SRQ, ext 0
        b[52..54].copy_from_slice(&[0xff, 0xff]); // primary local LID
        b[54..56].copy_from_slice(&[0xff, 0xff]); // primary remote LID
        b[66..72].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 1]); // local GID
        b[82..88].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 2]); // remote GID
        b[88..92].copy_from_slice(&[0x12, 0x34, 0x50, 0x02]); // FL 0x12345, rate 2
        b[92] = 0x60; // traffic class
        b[93] = 64; // hop limit
        b[94] = 3 << 4; // SL 3, not subnet local
        b[95] = 18 << 3; // local ACK timeout 18
        b[140] = 0x00; // private data: the CMA header starts here
        b[141] = 0x40;
        b[231] = 0x99;

        let mut private_data = [0; REQ_PRIVATE_LEN];
        private_data[1] = 0x40;
        private_data[REQ_PRIVATE_LEN - 1] = 0x99;
        let repr = ReqRepr {
            local_comm_id: CommId(0xdead_beef),
            service_id: ServiceId::from_port(0x0106, 7174),
            local_ca_guid: 0x0211_22ff_fe33_4455,
            local_qkey: Qkey::new(0),
            local_qpn: Qpn::new(0x11).unwrap(),
            responder_resources: 1,
            initiator_depth: 1,
            remote_cm_response_timeout: 20,
            transport: CmTransport::Rc,
            starting_psn: Psn::new(0xab_cdef).unwrap(),
            local_cm_response_timeout: 20,
            retry_count: 7,
            pkey: 0xffff,
            path_mtu: 3,
            rnr_retry_count: 7,
            max_cm_retries: 15,
            primary_path: CmPath {
                local_lid: 0xffff,
                remote_lid: 0xffff,
                local_gid: "::ffff:198.18.0.1".parse().unwrap(),
                remote_gid: "::ffff:198.18.0.2".parse().unwrap(),
                flow_label: 0x12345,
                packet_rate: 2,
                traffic_class: 0x60,
                hop_limit: 64,
                sl: 3,
                subnet_local: false,
                local_ack_timeout: 18,
            },
            private_data,
            ..ReqRepr::default()
        };
        (b, repr)
    }

    #[test]
    fn parses_and_emits_known_bytes() {
        let (bytes, repr) = known();
        assert_eq!(ReqRepr::parse(&bytes), Ok(repr));
        let mut out = [0xa5u8; MAD_BODY_LEN + 3];
        repr.emit(&mut out).unwrap();
        assert_eq!(out[..MAD_BODY_LEN], bytes);
        assert_eq!(out[MAD_BODY_LEN..], [0xa5; 3], "nothing past the body");
    }

    /// Every bit field at its largest value, each flag set: the bytes they
    /// share are all ones except the reserved bits.
    fn max_repr() -> ReqRepr {
        let path = CmPath {
            local_lid: 0xffff,
            remote_lid: 0xfffe,
            local_gid: Ipv6Addr::from([0xff; 16]),
            remote_gid: Ipv6Addr::from([0xee; 16]),
            flow_label: 0xf_ffff,
            packet_rate: 63,
            traffic_class: 0xff,
            hop_limit: 0xff,
            sl: 15,
            subnet_local: true,
            local_ack_timeout: 31,
        };
        ReqRepr {
            local_comm_id: CommId(u32::MAX),
            service_id: ServiceId(u64::MAX),
            local_ca_guid: u64::MAX,
            local_qkey: Qkey::new(u32::MAX),
            local_qpn: Qpn::MAX,
            responder_resources: 0xff,
            initiator_depth: 0xff,
            local_eecn: 0xff_ffff,
            remote_eecn: 0xff_ffff,
            remote_cm_response_timeout: 31,
            transport: CmTransport::Xrc,
            e2e_flow_control: true,
            starting_psn: Psn::MAX,
            local_cm_response_timeout: 31,
            retry_count: 7,
            pkey: 0xffff,
            path_mtu: 15,
            rdc_exists: true,
            rnr_retry_count: 7,
            max_cm_retries: 15,
            srq: true,
            extended_transport: 7,
            primary_path: path,
            alternate_path: path,
            private_data: [0xff; REQ_PRIVATE_LEN],
        }
    }

    #[test]
    fn every_bit_field_at_its_max() {
        let repr = max_repr();
        let mut out = [0u8; MAD_BODY_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out[4..8], [0; 4], "reserved and vendor ID");
        assert_eq!(out[24..28], [0; 4], "reserved");
        assert_eq!(out[32..52], [0xff; 20]);
        for path in [52, 96] {
            assert_eq!(
                out[path + 36..path + 44],
                [0xff, 0xff, 0xf0, 0x3f, 0xff, 0xff, 0xf8, 0xf8]
            );
        }
        assert_eq!(ReqRepr::parse(&out), Ok(repr));
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let mut bytes = [0xffu8; MAD_BODY_LEN];
        max_repr().emit(&mut bytes).unwrap();
        bytes[4..8].fill(0x5a);
        bytes[24..28].fill(0x5a);
        for path in [52, 96] {
            bytes[path + 38] |= 0x0f;
            bytes[path + 39] |= 0xc0;
            bytes[path + 42] |= 0x07;
            bytes[path + 43] |= 0x07;
        }
        assert_eq!(ReqRepr::parse(&bytes), Ok(max_repr()));
    }

    #[test]
    fn emit_rejects_wide_fields_and_writes_nothing() {
        let wide: [fn(&mut ReqRepr); 14] = [
            |r| r.local_eecn = 1 << 24,
            |r| r.remote_eecn = 1 << 24,
            |r| r.remote_cm_response_timeout = 32,
            |r| r.local_cm_response_timeout = 32,
            |r| r.retry_count = 8,
            |r| r.path_mtu = 16,
            |r| r.rnr_retry_count = 8,
            |r| r.max_cm_retries = 16,
            |r| r.extended_transport = 8,
            |r| r.primary_path.flow_label = 1 << 20,
            |r| r.primary_path.packet_rate = 64,
            |r| r.primary_path.sl = 16,
            |r| r.alternate_path.local_ack_timeout = 32,
            |r| r.alternate_path.sl = 16,
        ];
        for (index, widen) in wide.iter().enumerate() {
            let mut repr = known().1;
            widen(&mut repr);
            let mut out = [0xa5u8; MAD_BODY_LEN];
            assert_eq!(repr.emit(&mut out), Err(Error::Malformed), "case {index}");
            assert_eq!(out, [0xa5; MAD_BODY_LEN], "case {index} wrote");
        }
    }

    #[test]
    fn transport_codes() {
        let (mut bytes, repr) = known();
        for (code, transport) in [(1, CmTransport::Uc), (3, CmTransport::Xrc)] {
            bytes[43] = (bytes[43] & !0x06) | (code << 1);
            assert_eq!(ReqRepr::parse(&bytes), Ok(ReqRepr { transport, ..repr }));
        }
        bytes[43] = (bytes[43] & !0x06) | (2 << 1);
        assert_eq!(ReqRepr::parse(&bytes), Err(Error::Malformed));
    }

    #[test]
    fn short_bodies_are_truncated() {
        let (bytes, repr) = known();
        assert_eq!(
            ReqRepr::parse(&bytes[..MAD_BODY_LEN - 1]),
            Err(Error::Truncated)
        );
        let mut short = [0u8; MAD_BODY_LEN - 1];
        assert_eq!(repr.emit(&mut short), Err(Error::Truncated));
    }
}
