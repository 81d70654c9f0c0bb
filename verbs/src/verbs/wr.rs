//! Work requests as applications post them (`struct ibv_send_wr`, `struct ibv_recv_wr`).

use super::ah::AddressHandle;
use super::mr::Lkey;
use super::mr::Rkey;
use crate::wire::{Qkey, Qpn};

/// One scatter/gather element (`struct ibv_sge`): `length` bytes at `addr` in the memory
/// region whose local key is `lkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sge {
    /// Start address.
    pub addr: u64,
    /// Bytes.
    pub length: u32,
    /// Local key of the region the bytes lie in.
    pub lkey: Lkey,
}

/// Send operations (`enum ibv_wr_opcode`, with its values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SendOpcode {
    /// RDMA WRITE.
    RdmaWrite = 0,
    /// RDMA WRITE with immediate data.
    RdmaWriteWithImm = 1,
    /// SEND.
    Send = 2,
    /// SEND with immediate data.
    SendWithImm = 3,
    /// RDMA READ.
    RdmaRead = 4,
    /// Atomic compare and swap.
    AtomicCmpAndSwp = 5,
    /// Atomic fetch and add.
    AtomicFetchAndAdd = 6,
}

impl SendOpcode {
    /// The opcode of an `enum ibv_wr_opcode` value xrdma supports.
    pub fn from_raw(v: u32) -> Option<SendOpcode> {
        use SendOpcode::*;
        [
            RdmaWrite,
            RdmaWriteWithImm,
            Send,
            SendWithImm,
            RdmaRead,
            AtomicCmpAndSwp,
            AtomicFetchAndAdd,
        ]
        .into_iter()
        .find(|o| *o as u32 == v)
    }
}

/// Send flags (`enum ibv_send_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendFlags(pub u32);

impl SendFlags {
    /// Wait for earlier RDMA READs and atomics before starting.
    pub const FENCE: SendFlags = SendFlags(1);
    /// Generate a completion (when the QP does not signal every request).
    pub const SIGNALED: SendFlags = SendFlags(2);
    /// Ask for a solicited event at the receiver.
    pub const SOLICITED: SendFlags = SendFlags(4);
    /// Copy the data at post time; the lkeys are not used.
    pub const INLINE: SendFlags = SendFlags(8);

    /// True if every flag of `other` is set.
    pub fn contains(self, other: SendFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SendFlags {
    type Output = SendFlags;
    fn bitor(self, rhs: SendFlags) -> SendFlags {
        SendFlags(self.0 | rhs.0)
    }
}

/// Where a UD send goes.
#[derive(Debug, Clone, Copy)]
pub struct UdDest<'a> {
    /// Address handle of the destination port.
    pub ah: &'a AddressHandle,
    /// Destination QP.
    pub remote_qpn: Qpn,
    /// Q_Key; if its high bit is set, the QP's own Q_Key is used instead (IBTA 10.2.5).
    pub remote_qkey: Qkey,
}

/// A send work request.
#[derive(Debug, Clone, Copy)]
pub struct SendWr<'a> {
    /// Returned in the completion.
    pub wr_id: u64,
    /// Operation.
    pub opcode: SendOpcode,
    /// Flags.
    pub send_flags: SendFlags,
    /// Data to send, gathered in order.
    pub sg_list: &'a [Sge],
    /// Immediate data (for the `*WithImm` opcodes), as its four wire bytes read big-endian.
    pub imm_data: u32,
    /// Destination, for UD QPs.
    pub ud: Option<UdDest<'a>>,
    /// Target of an RDMA WRITE or READ (RC QPs): the peer's address and the region's
    /// remote key.
    pub rdma: Option<(u64, Rkey)>,
    /// Target and operands of an atomic (RC QPs).
    pub atomic: Option<AtomicWr>,
}

/// An atomic's target and operands (the `atomic` member of `ibv_send_wr`'s union). The
/// value the target held goes to the request's single 8-byte scatter/gather element, in
/// host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicWr {
    /// The peer's address: 8-byte aligned.
    pub remote_addr: u64,
    /// The region's remote key.
    pub rkey: Rkey,
    /// The value compared (compare and swap) or added (fetch and add).
    pub compare_add: u64,
    /// The value stored if the comparison matched (compare and swap only).
    pub swap: u64,
}

/// A receive work request.
#[derive(Debug, Clone, Copy)]
pub struct RecvWr<'a> {
    /// Returned in the completion.
    pub wr_id: u64,
    /// Where received data goes, scattered in order.
    pub sg_list: &'a [Sge],
}
