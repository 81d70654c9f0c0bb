//! InfiniBand Communication Manager messages (IBTA vol. 1 chapter 12) as
//! Linux sends them over RoCEv2: each one a MAD of class 0x07, class
//! version 2, method SEND, whose attribute ID says which message it is.
//!
//! Every message has a `Repr` with `parse(body)` and `emit(&self, body)`
//! over the 232-byte MAD body (the MAD after its 24-byte header), and
//! [`CmMessage`] parses and emits whole MADs. Layouts follow
//! `include/rdma/ibta_vol1_c12.h`: bit fields are numbered MSB-first
//! (`[7:3]` is the top five bits of a byte), multi-byte fields are
//! big-endian, and a 24-bit field at body offset N fills bytes N..N+3.
//!
//! Parsing never panics and accepts any value in a field, reserved bits
//! ignored, except for the two enumerations whose fourth code is reserved
//! ([`CmTransport`], [`MsgKind`]). Emitting writes every byte of the body
//! (reserved bits and vendor IDs as 0) and returns [`Error::Malformed`] for
//! a value wider than its field, so whatever emits parses back to the same
//! repr. On an error nothing is written.
//!
//! ```
//! # use xrdma_verbs::wire::cm::{CmMessage, CommId, RtuRepr};
//! # use xrdma_verbs::wire::mad::MAD_LEN;
//! let rtu = RtuRepr { local_comm_id: CommId(7), remote_comm_id: CommId(9), ..RtuRepr::default() };
//! let mut mad = [0u8; MAD_LEN];
//! CmMessage::Rtu(rtu).emit(0x1234, &mut mad)?;
//! let (header, message) = CmMessage::parse(&mad)?;
//! assert_eq!((header.tid, message), (0x1234, CmMessage::Rtu(rtu)));
//! # Ok::<(), xrdma_verbs::wire::Error>(())
//! ```

use super::field::Field;
use super::mad::{
    BASE_VERSION, CM_CLASS_VERSION, MAD_BODY_LEN, MAD_LEN, METHOD_SEND, MGMT_CLASS_CM,
    MadHeaderRepr, MadPacket,
};
use super::{Error, Result};

mod dreq;
mod rej;
mod rep;
mod req;
mod sidr;

pub use dreq::{DrepRepr, DreqRepr};
pub use rej::{MraRepr, RejRepr};
pub use rep::{RepRepr, RtuRepr};
pub use req::{CmPath, ReqRepr};
pub use sidr::{SidrRepRepr, SidrReqRepr};

/// A communication ID: the 32-bit handle each side picks for a connection
/// (Local Comm ID in its own messages, Remote Comm ID in the peer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CommId(pub u32);

/// A 64-bit service ID. rdma_cm builds it from a port space and a port:
/// `(port_space << 16) | port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceId(pub u64);

impl ServiceId {
    /// The service ID rdma_cm uses for `port` in `port_space` (one of
    /// [`port_space`]'s constants): `(port_space << 16) | port`.
    pub const fn from_port(port_space: u16, port: u16) -> ServiceId {
        ServiceId(((port_space as u64) << 16) | port as u64)
    }

    /// The port space: bits 31..16.
    pub const fn port_space(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The port: bits 15..0.
    pub const fn port(self) -> u16 {
        self.0 as u16
    }
}

/// rdma_cm port spaces (`enum rdma_ucm_port_space`).
pub mod port_space {
    /// `RDMA_PS_IPOIB`.
    pub const IPOIB: u16 = 0x0002;
    /// `RDMA_PS_TCP`: RC connections.
    pub const TCP: u16 = 0x0106;
    /// `RDMA_PS_UDP`: UD, resolved with SIDR.
    pub const UDP: u16 = 0x0111;
    /// `RDMA_PS_IB`.
    pub const IB: u16 = 0x013f;
}

/// CM attribute IDs: the MAD attribute that names each message.
pub mod attr {
    /// Connection request.
    pub const REQ: u16 = 0x0010;
    /// Message receipt acknowledgement.
    pub const MRA: u16 = 0x0011;
    /// Reject.
    pub const REJ: u16 = 0x0012;
    /// Reply to a REQ.
    pub const REP: u16 = 0x0013;
    /// Ready to use.
    pub const RTU: u16 = 0x0014;
    /// Disconnect request.
    pub const DREQ: u16 = 0x0015;
    /// Disconnect reply.
    pub const DREP: u16 = 0x0016;
    /// Service ID resolution request (UD).
    pub const SIDR_REQ: u16 = 0x0017;
    /// Service ID resolution reply.
    pub const SIDR_REP: u16 = 0x0018;
    /// Load alternate path (not handled: no alternate paths on RoCE).
    pub const LAP: u16 = 0x0019;
    /// Alternate path response (not handled).
    pub const APR: u16 = 0x001a;
}

/// REJ reason codes (`enum ib_cm_rej_reason`).
pub mod rej_reason {
    /// No QP available.
    pub const NO_QP: u16 = 1;
    /// No EE context available.
    pub const NO_EEC: u16 = 2;
    /// No resources available.
    pub const NO_RESOURCES: u16 = 3;
    /// Timeout (ARI: the sender's 8-byte CA GUID).
    pub const TIMEOUT: u16 = 4;
    /// Unsupported request.
    pub const UNSUPPORTED: u16 = 5;
    /// Invalid communication ID.
    pub const INVALID_COMM_ID: u16 = 6;
    /// Invalid communication instance.
    pub const INVALID_COMM_INSTANCE: u16 = 7;
    /// Invalid service ID: nobody listens on it.
    pub const INVALID_SERVICE_ID: u16 = 8;
    /// Invalid transport service type.
    pub const INVALID_TRANSPORT_TYPE: u16 = 9;
    /// Stale connection (QP still in timewait, or a stale REP).
    pub const STALE_CONN: u16 = 10;
    /// RDC does not exist.
    pub const RDC_NOT_EXIST: u16 = 11;
    /// Primary remote GID not usable.
    pub const INVALID_GID: u16 = 12;
    /// Primary remote LID not usable.
    pub const INVALID_LID: u16 = 13;
    /// Invalid primary SL.
    pub const INVALID_SL: u16 = 14;
    /// Invalid primary traffic class.
    pub const INVALID_TRAFFIC_CLASS: u16 = 15;
    /// Invalid primary hop limit.
    pub const INVALID_HOP_LIMIT: u16 = 16;
    /// Invalid primary packet rate.
    pub const INVALID_PACKET_RATE: u16 = 17;
    /// Invalid alternate GID.
    pub const INVALID_ALT_GID: u16 = 18;
    /// Invalid alternate LID.
    pub const INVALID_ALT_LID: u16 = 19;
    /// Invalid alternate SL.
    pub const INVALID_ALT_SL: u16 = 20;
    /// Invalid alternate traffic class.
    pub const INVALID_ALT_TRAFFIC_CLASS: u16 = 21;
    /// Invalid alternate hop limit.
    pub const INVALID_ALT_HOP_LIMIT: u16 = 22;
    /// Invalid alternate packet rate.
    pub const INVALID_ALT_PACKET_RATE: u16 = 23;
    /// Port CM redirect.
    pub const PORT_CM_REDIRECT: u16 = 24;
    /// Port redirect.
    pub const PORT_REDIRECT: u16 = 25;
    /// Invalid path MTU.
    pub const INVALID_MTU: u16 = 26;
    /// Insufficient responder resources.
    pub const INSUFFICIENT_RESP_RESOURCES: u16 = 27;
    /// Consumer defined: what `rdma_reject` sends.
    pub const CONSUMER_DEFINED: u16 = 28;
    /// Invalid RNR retry count.
    pub const INVALID_RNR_RETRY: u16 = 29;
    /// Duplicate local communication ID.
    pub const DUPLICATE_LOCAL_COMM_ID: u16 = 30;
    /// Invalid class version.
    pub const INVALID_CLASS_VERSION: u16 = 31;
    /// Invalid primary flow label.
    pub const INVALID_FLOW_LABEL: u16 = 32;
    /// Invalid alternate flow label.
    pub const INVALID_ALT_FLOW_LABEL: u16 = 33;
    /// Vendor option (ECE) not supported.
    pub const VENDOR_OPTION_NOT_SUPPORTED: u16 = 35;
}

/// SIDR_REP status codes (`enum ib_cm_sidr_status`).
pub mod sidr_status {
    /// The service is there: QPN and Q_Key are valid.
    pub const SUCCESS: u8 = 0;
    /// Nobody listens on the service ID.
    pub const UNSUPPORTED: u8 = 1;
    /// The consumer rejected the request.
    pub const REJECT: u8 = 2;
    /// No QP.
    pub const NO_QP: u8 = 3;
    /// Redirect.
    pub const REDIRECT: u8 = 4;
    /// Unsupported class version.
    pub const UNSUPPORTED_VERSION: u8 = 5;
}

/// Private data length of a REQ (the rdma_cm header plus 56 bytes).
pub const REQ_PRIVATE_LEN: usize = 92;
/// Private data length of a REP.
pub const REP_PRIVATE_LEN: usize = 196;
/// Private data length of an RTU.
pub const RTU_PRIVATE_LEN: usize = 224;
/// Private data length of a REJ.
pub const REJ_PRIVATE_LEN: usize = 148;
/// Length of a REJ's additional reject information field.
pub const REJ_ARI_LEN: usize = 72;
/// Private data length of an MRA.
pub const MRA_PRIVATE_LEN: usize = 222;
/// Private data length of a DREQ.
pub const DREQ_PRIVATE_LEN: usize = 220;
/// Private data length of a DREP.
pub const DREP_PRIVATE_LEN: usize = 224;
/// Private data length of a SIDR_REQ (the rdma_cm header plus 180 bytes).
pub const SIDR_REQ_PRIVATE_LEN: usize = 216;
/// Private data length of a SIDR_REP.
pub const SIDR_REP_PRIVATE_LEN: usize = 136;
/// Length of a SIDR_REP's additional information field.
pub const SIDR_REP_INFO_LEN: usize = 72;

/// Transport service type of a REQ: 2 bits, where 2 (RD) is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CmTransport {
    /// Reliable connected (0).
    #[default]
    Rc,
    /// Unreliable connected (1).
    Uc,
    /// Extended reliable connected (3, with the extended transport type).
    Xrc,
}

impl CmTransport {
    /// The wire code.
    pub const fn value(self) -> u8 {
        match self {
            CmTransport::Rc => 0,
            CmTransport::Uc => 1,
            CmTransport::Xrc => 3,
        }
    }

    /// The transport for a wire code.
    ///
    /// # Errors
    /// [`Error::Malformed`] for 2 (RD) and anything wider than 2 bits.
    pub const fn from_value(value: u8) -> Result<CmTransport> {
        match value {
            0 => Ok(CmTransport::Rc),
            1 => Ok(CmTransport::Uc),
            3 => Ok(CmTransport::Xrc),
            _ => Err(Error::Malformed),
        }
    }
}

/// Which message a REJ rejects or an MRA acknowledges: 2 bits, 3 reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MsgKind {
    /// A REQ (0).
    #[default]
    Req,
    /// A REP (1).
    Rep,
    /// Another message (2): "no message" in a REJ, a LAP in an MRA.
    Other,
}

impl MsgKind {
    /// The wire code.
    pub const fn value(self) -> u8 {
        match self {
            MsgKind::Req => 0,
            MsgKind::Rep => 1,
            MsgKind::Other => 2,
        }
    }

    /// The kind for a wire code.
    ///
    /// # Errors
    /// [`Error::Malformed`] for 3 and anything wider than 2 bits.
    pub const fn from_value(value: u8) -> Result<MsgKind> {
        match value {
            0 => Ok(MsgKind::Req),
            1 => Ok(MsgKind::Rep),
            2 => Ok(MsgKind::Other),
            _ => Err(Error::Malformed),
        }
    }
}

/// One CM message of any handled kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmMessage {
    /// Connection request.
    Req(ReqRepr),
    /// Message receipt acknowledgement.
    Mra(MraRepr),
    /// Reject.
    Rej(RejRepr),
    /// Reply.
    Rep(RepRepr),
    /// Ready to use.
    Rtu(RtuRepr),
    /// Disconnect request.
    Dreq(DreqRepr),
    /// Disconnect reply.
    Drep(DrepRepr),
    /// Service ID resolution request.
    SidrReq(SidrReqRepr),
    /// Service ID resolution reply.
    SidrRep(SidrRepRepr),
}

impl CmMessage {
    /// The MAD attribute ID of this message (see [`attr`]).
    pub const fn attr_id(&self) -> u16 {
        match self {
            CmMessage::Req(_) => attr::REQ,
            CmMessage::Mra(_) => attr::MRA,
            CmMessage::Rej(_) => attr::REJ,
            CmMessage::Rep(_) => attr::REP,
            CmMessage::Rtu(_) => attr::RTU,
            CmMessage::Dreq(_) => attr::DREQ,
            CmMessage::Drep(_) => attr::DREP,
            CmMessage::SidrReq(_) => attr::SIDR_REQ,
            CmMessage::SidrRep(_) => attr::SIDR_REP,
        }
    }

    /// Parses a whole MAD. Bytes past [`MAD_LEN`] are ignored, and so are
    /// the header's status, class-specific word and attribute modifier.
    ///
    /// # Errors
    /// * [`Error::Truncated`] if `mad` is shorter than [`MAD_LEN`];
    /// * [`Error::Unsupported`] unless base version 1, class 0x07, class
    ///   version 2, method SEND and an attribute of [`attr`] other than
    ///   LAP and APR;
    /// * [`Error::Malformed`] from the message's `parse`.
    pub fn parse(mad: &[u8]) -> Result<(MadHeaderRepr, CmMessage)> {
        let packet = MadPacket::new_checked(mad)?;
        let header = MadHeaderRepr::parse(&packet)?;
        if header.base_version != BASE_VERSION
            || header.mgmt_class != MGMT_CLASS_CM
            || header.class_version != CM_CLASS_VERSION
            || header.method != METHOD_SEND
        {
            return Err(Error::Unsupported);
        }
        let body = packet.data();
        let message = match header.attr_id {
            attr::REQ => CmMessage::Req(ReqRepr::parse(body)?),
            attr::MRA => CmMessage::Mra(MraRepr::parse(body)?),
            attr::REJ => CmMessage::Rej(RejRepr::parse(body)?),
            attr::REP => CmMessage::Rep(RepRepr::parse(body)?),
            attr::RTU => CmMessage::Rtu(RtuRepr::parse(body)?),
            attr::DREQ => CmMessage::Dreq(DreqRepr::parse(body)?),
            attr::DREP => CmMessage::Drep(DrepRepr::parse(body)?),
            attr::SIDR_REQ => CmMessage::SidrReq(SidrReqRepr::parse(body)?),
            attr::SIDR_REP => CmMessage::SidrRep(SidrRepRepr::parse(body)?),
            _ => return Err(Error::Unsupported),
        };
        Ok((header, message))
    }

    /// Writes the 256-byte MAD, with the header
    /// [`MadHeaderRepr::cm`]`(self.attr_id(), tid)`, into the first
    /// [`MAD_LEN`] bytes of `buf`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if `buf` is shorter than [`MAD_LEN`];
    /// [`Error::Malformed`] from the message's `emit`. Nothing is written
    /// then.
    pub fn emit(&self, tid: u64, buf: &mut [u8]) -> Result<()> {
        let mut packet = MadPacket::new_checked(buf)?;
        let body = packet.data_mut();
        match self {
            CmMessage::Req(repr) => repr.emit(body)?,
            CmMessage::Mra(repr) => repr.emit(body)?,
            CmMessage::Rej(repr) => repr.emit(body)?,
            CmMessage::Rep(repr) => repr.emit(body)?,
            CmMessage::Rtu(repr) => repr.emit(body)?,
            CmMessage::Dreq(repr) => repr.emit(body)?,
            CmMessage::Drep(repr) => repr.emit(body)?,
            CmMessage::SidrReq(repr) => repr.emit(body)?,
            CmMessage::SidrRep(repr) => repr.emit(body)?,
        }
        MadHeaderRepr::cm(self.attr_id(), tid).emit(&mut packet)
    }

    /// Length of the MAD that [`emit`](Self::emit) writes (256).
    pub const fn buffer_len(&self) -> usize {
        MAD_LEN
    }
}

/// A bit field inside one byte of a message body, `[high:low]` in the
/// MSB-first notation of the IBTA tables.
#[derive(Debug, Clone, Copy)]
struct Bits {
    at: usize,
    low: u8,
    width: u8,
}

impl Bits {
    /// Bits `high` down to `low` (7 = MSB) of the byte at `at`.
    const fn new(at: usize, high: u8, low: u8) -> Bits {
        Bits {
            at,
            low,
            width: high - low + 1,
        }
    }

    const fn max(self) -> u8 {
        (((1u16) << self.width) - 1) as u8
    }

    /// The field's value, right-aligned.
    fn get(self, body: &[u8]) -> u8 {
        (body[self.at] >> self.low) & self.max()
    }

    /// The one-bit field as a flag.
    fn flag(self, body: &[u8]) -> bool {
        self.get(body) != 0
    }

    /// Sets the field to `value`, keeping the byte's other bits.
    ///
    /// # Errors
    /// [`Error::Malformed`] if `value` is wider than the field.
    fn put(self, body: &mut [u8], value: u8) -> Result<()> {
        if value > self.max() {
            return Err(Error::Malformed);
        }
        let mask = self.max() << self.low;
        body[self.at] = (body[self.at] & !mask) | (value << self.low);
        Ok(())
    }

    /// Sets the one-bit field from a flag.
    fn put_flag(self, body: &mut [u8], value: bool) {
        // A flag always fits a field of one bit or more.
        let _ = self.put(body, u8::from(value));
    }
}

/// The first [`MAD_BODY_LEN`] bytes of `body`.
///
/// # Errors
/// [`Error::Truncated`] if there are fewer.
fn body(body: &[u8]) -> Result<&[u8]> {
    body.get(..MAD_BODY_LEN).ok_or(Error::Truncated)
}

/// Builds a message body in a zeroed scratch buffer with `fill` and copies
/// it into the first [`MAD_BODY_LEN`] bytes of `out` if `fill` succeeds.
///
/// # Errors
/// [`Error::Truncated`] if `out` is short; whatever `fill` returns.
fn emit_body(out: &mut [u8], fill: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<()> {
    let out = out.get_mut(..MAD_BODY_LEN).ok_or(Error::Truncated)?;
    let mut scratch = [0u8; MAD_BODY_LEN];
    fill(&mut scratch)?;
    out.copy_from_slice(&scratch);
    Ok(())
}

/// Copies the bytes of `range` (whose length is `N`) out of `body`.
fn array<const N: usize>(body: &[u8], range: Field) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&body[range]);
    out
}

/// Writes a 24-bit field at `at`.
///
/// # Errors
/// [`Error::Malformed`] if `value` does not fit in 24 bits.
fn put_u24(body: &mut [u8], at: usize, value: u32) -> Result<()> {
    if value > 0x00ff_ffff {
        return Err(Error::Malformed);
    }
    super::write_u24(body, at, value);
    Ok(())
}

/// Writes the big-endian bytes of a value at `at`.
fn put(body: &mut [u8], at: usize, bytes: &[u8]) {
    body[at..at + bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests;
