//! Completion queue core: work completions, the bounded completion ring and
//! completion-notification arming, with no I/O and no locking.
//!
//! This is the logic behind `ibv_create_cq`, `ibv_poll_cq` and
//! `ibv_req_notify_cq`. The owner (the verbs CQ object) drives it in this
//! order:
//!
//! 1. [`CompletionQueue::new`] once, with the `cqe` the application asked
//!    for. All memory is allocated here; [`push`](CompletionQueue::push) and
//!    [`poll`](CompletionQueue::poll) never allocate.
//! 2. [`push`](CompletionQueue::push) for every completion the engine
//!    produces. The result tells the owner what to do next:
//!    - `Ok(Notify::Fire)`: signal the completion channel (the CQ was armed
//!      and this completion matched the arming);
//!    - `Ok(Notify::None)`: nothing more to do;
//!    - `Err(Overrun { raise_async_event: true })`: the CQ was full, the
//!      completion was dropped and the CQ is now in the overrun state; raise
//!      the asynchronous event `IBV_EVENT_CQ_ERR` (once; later pushes get
//!      `raise_async_event: false`).
//! 3. [`poll`](CompletionQueue::poll) (or [`poll_ibv`](CompletionQueue::poll_ibv))
//!    from `ibv_poll_cq`, and [`req_notify`](CompletionQueue::req_notify)
//!    from `ibv_req_notify_cq`, in any order.
//!
//! # Thread safety
//!
//! [`CompletionQueue`] is plain data: it is `Send` and `Sync`, and every
//! mutating method takes `&mut self`. Sharing one CQ between the engine
//! thread and application threads is the owner's job (one `Mutex` around the
//! whole core, so that `push` and its notification decision are atomic with
//! respect to `req_notify`).
//!
//! # Example
//!
//! ```
//! use xrdma_verbs::verbs::completion::{CompletionQueue, Notify, WcOpcode, WcStatus, WorkCompletion};
//!
//! let mut cq = CompletionQueue::new(4).unwrap();
//! cq.req_notify(false);
//! let wc = WorkCompletion { wr_id: 7, opcode: WcOpcode::Send, ..Default::default() };
//! assert_eq!(cq.push(wc, false), Ok(Notify::Fire)); // armed: fire once
//! assert_eq!(cq.push(wc, false), Ok(Notify::None)); // disarmed again
//!
//! let mut out = [WorkCompletion::default(); 8];
//! assert_eq!(cq.poll(&mut out), 2);
//! assert_eq!(out[0].wr_id, 7);
//! assert_eq!(out[0].status, WcStatus::Success);
//! ```

#![forbid(unsafe_code)]

use core::fmt;
use core::ops::{BitOr, BitOrAssign};

/// Status of a work completion (`enum ibv_wc_status`).
///
/// The discriminants are libibverbs' values; [`as_str`](Self::as_str) gives
/// the text of `ibv_wc_status_str`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WcStatus {
    /// `IBV_WC_SUCCESS`: the operation completed successfully.
    #[default]
    Success = 0,
    /// `IBV_WC_LOC_LEN_ERR`: local length error.
    LocLenErr = 1,
    /// `IBV_WC_LOC_QP_OP_ERR`: local QP operation error.
    LocQpOpErr = 2,
    /// `IBV_WC_LOC_EEC_OP_ERR`: local EE context operation error.
    LocEecOpErr = 3,
    /// `IBV_WC_LOC_PROT_ERR`: local protection error.
    LocProtErr = 4,
    /// `IBV_WC_WR_FLUSH_ERR`: the work request was flushed (QP in error).
    WrFlushErr = 5,
    /// `IBV_WC_MW_BIND_ERR`: memory window bind error.
    MwBindErr = 6,
    /// `IBV_WC_BAD_RESP_ERR`: bad response error.
    BadRespErr = 7,
    /// `IBV_WC_LOC_ACCESS_ERR`: local access error.
    LocAccessErr = 8,
    /// `IBV_WC_REM_INV_REQ_ERR`: remote invalid request error.
    RemInvReqErr = 9,
    /// `IBV_WC_REM_ACCESS_ERR`: remote access error.
    RemAccessErr = 10,
    /// `IBV_WC_REM_OP_ERR`: remote operation error.
    RemOpErr = 11,
    /// `IBV_WC_RETRY_EXC_ERR`: transport retry counter exceeded.
    RetryExcErr = 12,
    /// `IBV_WC_RNR_RETRY_EXC_ERR`: RNR retry counter exceeded.
    RnrRetryExcErr = 13,
    /// `IBV_WC_LOC_RDD_VIOL_ERR`: local RDD violation error.
    LocRddViolErr = 14,
    /// `IBV_WC_REM_INV_RD_REQ_ERR`: remote invalid RD request.
    RemInvRdReqErr = 15,
    /// `IBV_WC_REM_ABORT_ERR`: remote aborted error.
    RemAbortErr = 16,
    /// `IBV_WC_INV_EECN_ERR`: invalid EE context number.
    InvEecnErr = 17,
    /// `IBV_WC_INV_EEC_STATE_ERR`: invalid EE context state.
    InvEecStateErr = 18,
    /// `IBV_WC_FATAL_ERR`: fatal error.
    FatalErr = 19,
    /// `IBV_WC_RESP_TIMEOUT_ERR`: response timeout error.
    RespTimeoutErr = 20,
    /// `IBV_WC_GENERAL_ERR`: general error.
    GeneralErr = 21,
    /// `IBV_WC_TM_ERR`: tag matching error.
    TmErr = 22,
    /// `IBV_WC_TM_RNDV_INCOMPLETE`: tag matching rendezvous left to software.
    TmRndvIncomplete = 23,
}

impl WcStatus {
    /// Every status, in discriminant order.
    pub const ALL: [WcStatus; 24] = [
        WcStatus::Success,
        WcStatus::LocLenErr,
        WcStatus::LocQpOpErr,
        WcStatus::LocEecOpErr,
        WcStatus::LocProtErr,
        WcStatus::WrFlushErr,
        WcStatus::MwBindErr,
        WcStatus::BadRespErr,
        WcStatus::LocAccessErr,
        WcStatus::RemInvReqErr,
        WcStatus::RemAccessErr,
        WcStatus::RemOpErr,
        WcStatus::RetryExcErr,
        WcStatus::RnrRetryExcErr,
        WcStatus::LocRddViolErr,
        WcStatus::RemInvRdReqErr,
        WcStatus::RemAbortErr,
        WcStatus::InvEecnErr,
        WcStatus::InvEecStateErr,
        WcStatus::FatalErr,
        WcStatus::RespTimeoutErr,
        WcStatus::GeneralErr,
        WcStatus::TmErr,
        WcStatus::TmRndvIncomplete,
    ];

    /// The status with libibverbs value `value`, or `None` if there is none.
    pub const fn from_u32(value: u32) -> Option<WcStatus> {
        if (value as usize) < Self::ALL.len() {
            Some(Self::ALL[value as usize])
        } else {
            None
        }
    }

    /// The libibverbs value (`enum ibv_wc_status`).
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// `true` for [`WcStatus::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, WcStatus::Success)
    }

    /// The text `ibv_wc_status_str()` returns for this status, byte for byte
    /// (rdma-core `libibverbs/enum_strs.c`).
    pub const fn as_str(self) -> &'static str {
        match self {
            WcStatus::Success => "success",
            WcStatus::LocLenErr => "local length error",
            WcStatus::LocQpOpErr => "local QP operation error",
            WcStatus::LocEecOpErr => "local EE context operation error",
            WcStatus::LocProtErr => "local protection error",
            WcStatus::WrFlushErr => "Work Request Flushed Error",
            WcStatus::MwBindErr => "memory management operation error",
            WcStatus::BadRespErr => "bad response error",
            WcStatus::LocAccessErr => "local access error",
            WcStatus::RemInvReqErr => "remote invalid request error",
            WcStatus::RemAccessErr => "remote access error",
            WcStatus::RemOpErr => "remote operation error",
            WcStatus::RetryExcErr => "transport retry counter exceeded",
            WcStatus::RnrRetryExcErr => "RNR retry counter exceeded",
            WcStatus::LocRddViolErr => "local RDD violation error",
            WcStatus::RemInvRdReqErr => "remote invalid RD request",
            WcStatus::RemAbortErr => "aborted error",
            WcStatus::InvEecnErr => "invalid EE context number",
            WcStatus::InvEecStateErr => "invalid EE context state",
            WcStatus::FatalErr => "fatal error",
            WcStatus::RespTimeoutErr => "response timeout error",
            WcStatus::GeneralErr => "general error",
            WcStatus::TmErr => "TM error",
            WcStatus::TmRndvIncomplete => "TM software rendezvous",
        }
    }
}

impl fmt::Display for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Operation a work completion reports (`enum ibv_wc_opcode`).
///
/// Receive-side opcodes have bit 7 set (`IBV_WC_RECV = 1 << 7`), so
/// [`is_recv`](Self::is_recv) is libibverbs' `opcode & IBV_WC_RECV`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WcOpcode {
    /// `IBV_WC_SEND`.
    #[default]
    Send = 0,
    /// `IBV_WC_RDMA_WRITE`.
    RdmaWrite = 1,
    /// `IBV_WC_RDMA_READ`.
    RdmaRead = 2,
    /// `IBV_WC_COMP_SWAP`.
    CompSwap = 3,
    /// `IBV_WC_FETCH_ADD`.
    FetchAdd = 4,
    /// `IBV_WC_BIND_MW`.
    BindMw = 5,
    /// `IBV_WC_LOCAL_INV`.
    LocalInv = 6,
    /// `IBV_WC_TSO`.
    Tso = 7,
    /// `IBV_WC_FLUSH`.
    Flush = 8,
    /// `IBV_WC_ATOMIC_WRITE`.
    AtomicWrite = 9,
    /// `IBV_WC_RECV`: a receive consumed by a SEND.
    Recv = 128,
    /// `IBV_WC_RECV_RDMA_WITH_IMM`: a receive consumed by an RDMA WRITE with
    /// immediate.
    RecvRdmaWithImm = 129,
    /// `IBV_WC_TM_ADD`.
    TmAdd = 130,
    /// `IBV_WC_TM_DEL`.
    TmDel = 131,
    /// `IBV_WC_TM_SYNC`.
    TmSync = 132,
    /// `IBV_WC_TM_RECV`.
    TmRecv = 133,
    /// `IBV_WC_TM_NO_TAG`.
    TmNoTag = 134,
    /// `IBV_WC_DRIVER1`.
    Driver1 = 135,
    /// `IBV_WC_DRIVER2`.
    Driver2 = 136,
    /// `IBV_WC_DRIVER3`.
    Driver3 = 137,
}

impl WcOpcode {
    /// The opcode with libibverbs value `value`, or `None` if there is none.
    pub const fn from_u32(value: u32) -> Option<WcOpcode> {
        Some(match value {
            0 => WcOpcode::Send,
            1 => WcOpcode::RdmaWrite,
            2 => WcOpcode::RdmaRead,
            3 => WcOpcode::CompSwap,
            4 => WcOpcode::FetchAdd,
            5 => WcOpcode::BindMw,
            6 => WcOpcode::LocalInv,
            7 => WcOpcode::Tso,
            8 => WcOpcode::Flush,
            9 => WcOpcode::AtomicWrite,
            128 => WcOpcode::Recv,
            129 => WcOpcode::RecvRdmaWithImm,
            130 => WcOpcode::TmAdd,
            131 => WcOpcode::TmDel,
            132 => WcOpcode::TmSync,
            133 => WcOpcode::TmRecv,
            134 => WcOpcode::TmNoTag,
            135 => WcOpcode::Driver1,
            136 => WcOpcode::Driver2,
            137 => WcOpcode::Driver3,
            _ => return None,
        })
    }

    /// The libibverbs value (`enum ibv_wc_opcode`).
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// `true` for receive completions (`opcode & IBV_WC_RECV`).
    pub const fn is_recv(self) -> bool {
        (self as u32) & (WcOpcode::Recv as u32) != 0
    }
}

/// Flags of a work completion (`enum ibv_wc_flags`, the `wc_flags` field).
///
/// Unknown bits are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WcFlags(u32);

impl WcFlags {
    /// `IBV_WC_GRH`: a GRH is present (UD only).
    pub const GRH: WcFlags = WcFlags(1 << 0);
    /// `IBV_WC_WITH_IMM`: `imm_data` is valid.
    pub const WITH_IMM: WcFlags = WcFlags(1 << 1);
    /// `IBV_WC_IP_CSUM_OK`: the IP/TCP/UDP checksums were verified.
    pub const IP_CSUM_OK: WcFlags = WcFlags(1 << 2);
    /// `IBV_WC_WITH_INV`: the union holds the invalidated rkey.
    pub const WITH_INV: WcFlags = WcFlags(1 << 3);
    /// `IBV_WC_TM_SYNC_REQ`.
    pub const TM_SYNC_REQ: WcFlags = WcFlags(1 << 4);
    /// `IBV_WC_TM_MATCH`.
    pub const TM_MATCH: WcFlags = WcFlags(1 << 5);
    /// `IBV_WC_TM_DATA_VALID`.
    pub const TM_DATA_VALID: WcFlags = WcFlags(1 << 6);

    /// No flags.
    pub const fn empty() -> WcFlags {
        WcFlags(0)
    }

    /// The flags with exactly these bits, known or not.
    pub const fn from_bits_retain(bits: u32) -> WcFlags {
        WcFlags(bits)
    }

    /// The raw bits, as stored in `ibv_wc.wc_flags`.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// `true` if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `true` if every bit of `other` is set in `self`.
    pub const fn contains(self, other: WcFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: WcFlags) {
        self.0 |= other.0;
    }

    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: WcFlags) {
        self.0 &= !other.0;
    }
}

impl BitOr for WcFlags {
    type Output = WcFlags;
    fn bitor(self, rhs: WcFlags) -> WcFlags {
        WcFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for WcFlags {
    fn bitor_assign(&mut self, rhs: WcFlags) {
        self.0 |= rhs.0;
    }
}

/// Immediate data as carried on the wire (ImmDt, big-endian).
///
/// libibverbs stores it as `__be32`: the four wire bytes in memory order.
/// [`from_host`](Self::from_host)/[`host_value`](Self::host_value) convert
/// to and from the host-order number an application means (`htonl`/`ntohl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ImmData([u8; 4]);

impl ImmData {
    /// The immediate data whose wire bytes are `bytes`.
    pub const fn from_wire(bytes: [u8; 4]) -> ImmData {
        ImmData(bytes)
    }

    /// The wire bytes.
    pub const fn wire_bytes(self) -> [u8; 4] {
        self.0
    }

    /// The immediate data an application wrote as `htonl(value)`.
    pub const fn from_host(value: u32) -> ImmData {
        ImmData(value.to_be_bytes())
    }

    /// `ntohl` of the `__be32`: the number the sender meant.
    pub const fn host_value(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    /// The `__be32` value libibverbs stores: a `u32` whose bytes in memory
    /// are the wire bytes.
    pub const fn as_be32_raw(self) -> u32 {
        u32::from_ne_bytes(self.0)
    }
}

/// One work completion: the fields of `struct ibv_wc`, typed.
///
/// As `ibv_poll_cq(3)` says, when `status` is not [`WcStatus::Success`] only
/// `wr_id`, `status`, `qp_num` and `vendor_err` are meaningful. The C union
/// `imm_data`/`invalidated_rkey` is split in two fields here; [`IbvWc::from`]
/// picks `invalidated_rkey` when `wc_flags` has [`WcFlags::WITH_INV`] and
/// `imm_data` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkCompletion {
    /// `wr_id` of the completed work request.
    pub wr_id: u64,
    /// Outcome of the operation.
    pub status: WcStatus,
    /// Operation that completed.
    pub opcode: WcOpcode,
    /// Vendor error syndrome.
    pub vendor_err: u32,
    /// Number of bytes transferred (receives, RDMA READ, atomics).
    pub byte_len: u32,
    /// Immediate data, valid with [`WcFlags::WITH_IMM`].
    pub imm_data: ImmData,
    /// Local rkey that was invalidated, valid with [`WcFlags::WITH_INV`].
    pub invalidated_rkey: u32,
    /// Local QP number of the completed work request.
    pub qp_num: u32,
    /// Remote QP number (UD only).
    pub src_qp: u32,
    /// Completion flags.
    pub wc_flags: WcFlags,
    /// P_Key index (GSI QPs only).
    pub pkey_index: u16,
    /// Source LID (0 on RoCE).
    pub slid: u16,
    /// Service level.
    pub sl: u8,
    /// DLID path bits (0 on RoCE).
    pub dlid_path_bits: u8,
}

/// `struct ibv_wc` with libibverbs' exact ABI layout (x86_64: 48 bytes,
/// 8-byte aligned), for writing completions into an application's
/// `ibv_poll_cq` array.
///
/// `status` and `opcode` are plain `u32` (C enums are `int`-sized) so that
/// any bit pattern in C memory is a valid value of this type.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IbvWc {
    /// `wr_id`.
    pub wr_id: u64,
    /// `status`, an `enum ibv_wc_status` value.
    pub status: u32,
    /// `opcode`, an `enum ibv_wc_opcode` value.
    pub opcode: u32,
    /// `vendor_err`.
    pub vendor_err: u32,
    /// `byte_len`.
    pub byte_len: u32,
    /// The anonymous union: `imm_data` (`__be32`, wire bytes in memory
    /// order) or `invalidated_rkey` (host order) when `wc_flags` has
    /// `IBV_WC_WITH_INV`.
    pub imm_data: u32,
    /// `qp_num`.
    pub qp_num: u32,
    /// `src_qp`.
    pub src_qp: u32,
    /// `wc_flags` (`unsigned int`).
    pub wc_flags: u32,
    /// `pkey_index`.
    pub pkey_index: u16,
    /// `slid`.
    pub slid: u16,
    /// `sl`.
    pub sl: u8,
    /// `dlid_path_bits`.
    pub dlid_path_bits: u8,
}

impl From<WorkCompletion> for IbvWc {
    fn from(wc: WorkCompletion) -> IbvWc {
        let imm_data = if wc.wc_flags.contains(WcFlags::WITH_INV) {
            wc.invalidated_rkey
        } else {
            wc.imm_data.as_be32_raw()
        };
        IbvWc {
            wr_id: wc.wr_id,
            status: wc.status.as_u32(),
            opcode: wc.opcode.as_u32(),
            vendor_err: wc.vendor_err,
            byte_len: wc.byte_len,
            imm_data,
            qp_num: wc.qp_num,
            src_qp: wc.src_qp,
            wc_flags: wc.wc_flags.bits(),
            pkey_index: wc.pkey_index,
            slid: wc.slid,
            sl: wc.sl,
            dlid_path_bits: wc.dlid_path_bits,
        }
    }
}

/// Largest `cqe` this core accepts. The device attribute `max_cqe` the owner
/// reports may be smaller; the owner enforces that one.
pub const MAX_CQE: u32 = 1 << 20;

/// Why a completion queue could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateCqError {
    /// `cqe` was 0 or above [`MAX_CQE`].
    InvalidCqe,
    /// The ring could not be allocated.
    NoMemory,
}

impl CreateCqError {
    /// The errno `ibv_create_cq` sets for this error.
    pub const fn errno(self) -> i32 {
        match self {
            CreateCqError::InvalidCqe => libc::EINVAL,
            CreateCqError::NoMemory => libc::ENOMEM,
        }
    }
}

impl fmt::Display for CreateCqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateCqError::InvalidCqe => write!(f, "cqe must be in 1..={MAX_CQE}"),
            CreateCqError::NoMemory => f.write_str("cannot allocate the completion ring"),
        }
    }
}

impl std::error::Error for CreateCqError {}

/// What the owner must do after a successful [`CompletionQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "on Notify::Fire the owner must signal the CQ's completion channel"]
pub enum Notify {
    /// Nothing: the CQ was not armed, or the completion did not match the
    /// arming.
    None,
    /// Signal the completion channel once: the CQ was armed and is now
    /// disarmed.
    Fire,
}

/// [`CompletionQueue::push`] found no room: the completion was dropped and
/// the CQ is in the overrun state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    /// `true` for the push that overran the CQ: the owner raises the
    /// asynchronous event `IBV_EVENT_CQ_ERR` now. `false` for pushes onto a
    /// CQ already overrun (the event was raised before).
    pub raise_async_event: bool,
}

impl fmt::Display for Overrun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("completion queue overrun")
    }
}

impl std::error::Error for Overrun {}

/// Notification arming of a CQ, as set by `ibv_req_notify_cq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arming {
    /// No event will be generated.
    #[default]
    Disarmed,
    /// The next solicited completion generates one event
    /// (`solicited_only != 0`).
    Solicited,
    /// The next completion of any kind generates one event
    /// (`solicited_only == 0`).
    NextCompletion,
}

/// Whether a completion counts as "solicited" for [`Arming::Solicited`].
///
/// `ibv_req_notify_cq(3)`: a CQE is solicited if it is a receive completion
/// for a message with the Solicited Event header bit set (`se_bit`), or if
/// its status is not successful. Successful send-side completions are never
/// solicited, whatever `se_bit` says.
pub const fn is_solicited(wc: &WorkCompletion, se_bit: bool) -> bool {
    !wc.status.is_success() || (se_bit && wc.opcode.is_recv())
}

/// A completion queue: a bounded FIFO of work completions plus its
/// notification arming.
///
/// See the [module documentation](self) for the call order and thread
/// safety.
#[derive(Debug)]
pub struct CompletionQueue {
    /// Storage, `cqe` entries, allocated once.
    ring: Box<[WorkCompletion]>,
    /// Index of the oldest completion.
    head: usize,
    /// Number of completions stored.
    len: usize,
    arming: Arming,
    overrun: bool,
}

impl CompletionQueue {
    /// Creates a CQ holding at most `cqe` completions.
    ///
    /// libibverbs providers may round `cqe` up; this core does not: `cqe` is
    /// the real bound and what [`capacity`](Self::capacity) reports (the
    /// owner puts it in `ibv_cq.cqe`).
    pub fn new(cqe: u32) -> Result<CompletionQueue, CreateCqError> {
        if cqe == 0 || cqe > MAX_CQE {
            return Err(CreateCqError::InvalidCqe);
        }
        let cqe = cqe as usize;
        let mut ring = Vec::new();
        ring.try_reserve_exact(cqe)
            .map_err(|_| CreateCqError::NoMemory)?;
        ring.resize(cqe, WorkCompletion::default());
        Ok(CompletionQueue {
            ring: ring.into_boxed_slice(),
            head: 0,
            len: 0,
            arming: Arming::Disarmed,
            overrun: false,
        })
    }

    /// Maximum number of completions the CQ holds (the requested `cqe`).
    pub fn capacity(&self) -> usize {
        self.ring.len()
    }

    /// Number of completions waiting to be polled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if no completion is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `true` once a push found the CQ full.
    ///
    /// The state is permanent ("the CQ cannot be used", `ibv_poll_cq(3)`):
    /// completions stored before the overrun can still be polled, but every
    /// later push is refused, even after polling made room. There is no
    /// resize; the application destroys the CQ.
    pub fn is_overrun(&self) -> bool {
        self.overrun
    }

    /// Current notification arming.
    pub fn arming(&self) -> Arming {
        self.arming
    }

    /// Arms the CQ for one completion event (`ibv_req_notify_cq`).
    ///
    /// With `solicited_only == false` the next completion of any kind fires;
    /// with `true` only the next solicited one does (see [`is_solicited`]).
    /// Completions already in the CQ do not fire: only ones pushed after
    /// arming. A CQ armed for the next completion stays so when re-armed
    /// solicited-only (IBTA C11-31/C11-32, as rxe and rdmavt do).
    pub fn req_notify(&mut self, solicited_only: bool) {
        self.arming = match (self.arming, solicited_only) {
            (Arming::NextCompletion, _) | (_, false) => Arming::NextCompletion,
            (_, true) => Arming::Solicited,
        };
    }

    /// Adds a completion at the tail.
    ///
    /// `se_bit` is the Solicited Event bit of the message a receive
    /// completion consumed; it is ignored for send-side completions.
    ///
    /// On success the result says whether to signal the completion channel;
    /// an event fires at most once per [`req_notify`](Self::req_notify). If
    /// the CQ is full (or already overrun) the completion is not stored,
    /// nothing stored is overwritten, no event fires and [`Overrun`] is
    /// returned. Never allocates.
    pub fn push(&mut self, wc: WorkCompletion, se_bit: bool) -> Result<Notify, Overrun> {
        if self.overrun {
            return Err(Overrun {
                raise_async_event: false,
            });
        }
        let cap = self.ring.len();
        if self.len == cap {
            self.overrun = true;
            return Err(Overrun {
                raise_async_event: true,
            });
        }
        let tail = (self.head + self.len) % cap;
        self.ring[tail] = wc;
        self.len += 1;

        let fire = match self.arming {
            Arming::Disarmed => false,
            Arming::NextCompletion => true,
            Arming::Solicited => is_solicited(&wc, se_bit),
        };
        if fire {
            self.arming = Arming::Disarmed;
            Ok(Notify::Fire)
        } else {
            Ok(Notify::None)
        }
    }

    /// Removes up to `out.len()` completions, oldest first, into `out`, and
    /// returns how many (`ibv_poll_cq`). Never allocates.
    pub fn poll(&mut self, out: &mut [WorkCompletion]) -> usize {
        self.drain_with(out.len(), |i, wc| out[i] = *wc)
    }

    /// [`poll`](Self::poll) straight into an `ibv_wc` array.
    pub fn poll_ibv(&mut self, out: &mut [IbvWc]) -> usize {
        self.drain_with(out.len(), |i, wc| out[i] = IbvWc::from(*wc))
    }

    /// Hands the oldest `min(max, len)` completions to `put` with their
    /// output index, then removes them.
    fn drain_with(&mut self, max: usize, mut put: impl FnMut(usize, &WorkCompletion)) -> usize {
        let n = max.min(self.len);
        let cap = self.ring.len();
        let first = n.min(cap - self.head);
        let (wrapped, from_head) = self.ring.split_at(self.head);
        for (i, wc) in from_head[..first]
            .iter()
            .chain(&wrapped[..n - first])
            .enumerate()
        {
            put(i, wc);
        }
        self.head = (self.head + n) % cap;
        self.len -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    fn wc(wr_id: u64) -> WorkCompletion {
        WorkCompletion {
            wr_id,
            opcode: WcOpcode::Send,
            ..Default::default()
        }
    }

    fn recv(wr_id: u64, status: WcStatus) -> WorkCompletion {
        WorkCompletion {
            wr_id,
            status,
            opcode: WcOpcode::Recv,
            ..Default::default()
        }
    }

    fn poll_ids(cq: &mut CompletionQueue, max: usize) -> Vec<u64> {
        let mut out = vec![WorkCompletion::default(); max];
        let n = cq.poll(&mut out);
        out[..n].iter().map(|w| w.wr_id).collect()
    }

    #[test]
    fn status_strings_match_libibverbs() {
        // rdma-core libibverbs/enum_strs.c, ibv_wc_status_str().
        let expected = [
            "success",
            "local length error",
            "local QP operation error",
            "local EE context operation error",
            "local protection error",
            "Work Request Flushed Error",
            "memory management operation error",
            "bad response error",
            "local access error",
            "remote invalid request error",
            "remote access error",
            "remote operation error",
            "transport retry counter exceeded",
            "RNR retry counter exceeded",
            "local RDD violation error",
            "remote invalid RD request",
            "aborted error",
            "invalid EE context number",
            "invalid EE context state",
            "fatal error",
            "response timeout error",
            "general error",
            "TM error",
            "TM software rendezvous",
        ];
        assert_eq!(WcStatus::ALL.len(), expected.len());
        for (i, (status, text)) in WcStatus::ALL.iter().zip(expected).enumerate() {
            assert_eq!(status.as_u32(), i as u32);
            assert_eq!(WcStatus::from_u32(i as u32), Some(*status));
            assert_eq!(status.as_str(), text);
        }
        assert_eq!(WcStatus::from_u32(24), None);
    }

    #[test]
    fn opcode_values() {
        assert_eq!(WcOpcode::Send.as_u32(), 0);
        assert_eq!(WcOpcode::Tso.as_u32(), 7);
        assert_eq!(WcOpcode::AtomicWrite.as_u32(), 9);
        assert_eq!(WcOpcode::Recv.as_u32(), 128);
        assert_eq!(WcOpcode::RecvRdmaWithImm.as_u32(), 129);
        assert_eq!(WcOpcode::Driver3.as_u32(), 137);
        for v in 0..=255 {
            if let Some(op) = WcOpcode::from_u32(v) {
                assert_eq!(op.as_u32(), v);
            }
        }
        assert_eq!(WcOpcode::from_u32(10), None);
        assert!(WcOpcode::RecvRdmaWithImm.is_recv());
        assert!(!WcOpcode::RdmaWrite.is_recv());
        assert_eq!(WcFlags::GRH.bits(), 1);
        assert_eq!(WcFlags::WITH_IMM.bits(), 2);
        assert_eq!(WcFlags::IP_CSUM_OK.bits(), 4);
        assert_eq!(WcFlags::WITH_INV.bits(), 8);
        assert_eq!(WcFlags::TM_DATA_VALID.bits(), 64);
    }

    #[test]
    fn ibv_wc_layout_matches_libibverbs_x86_64() {
        // struct ibv_wc, rdma-core libibverbs/verbs.h; offsets checked with
        // gcc offsetof() on x86_64.
        assert_eq!(size_of::<IbvWc>(), 48);
        assert_eq!(align_of::<IbvWc>(), 8);
        assert_eq!(offset_of!(IbvWc, wr_id), 0);
        assert_eq!(offset_of!(IbvWc, status), 8);
        assert_eq!(offset_of!(IbvWc, opcode), 12);
        assert_eq!(offset_of!(IbvWc, vendor_err), 16);
        assert_eq!(offset_of!(IbvWc, byte_len), 20);
        assert_eq!(offset_of!(IbvWc, imm_data), 24);
        assert_eq!(offset_of!(IbvWc, qp_num), 28);
        assert_eq!(offset_of!(IbvWc, src_qp), 32);
        assert_eq!(offset_of!(IbvWc, wc_flags), 36);
        assert_eq!(offset_of!(IbvWc, pkey_index), 40);
        assert_eq!(offset_of!(IbvWc, slid), 42);
        assert_eq!(offset_of!(IbvWc, sl), 44);
        assert_eq!(offset_of!(IbvWc, dlid_path_bits), 45);
    }

    #[test]
    fn ibv_wc_conversion() {
        let w = WorkCompletion {
            wr_id: 0x1122_3344_5566_7788,
            status: WcStatus::RnrRetryExcErr,
            opcode: WcOpcode::RecvRdmaWithImm,
            vendor_err: 9,
            byte_len: 4096,
            imm_data: ImmData::from_wire([0xde, 0xad, 0xbe, 0xef]),
            invalidated_rkey: 0x55,
            qp_num: 0x12,
            src_qp: 0x34,
            wc_flags: WcFlags::WITH_IMM | WcFlags::GRH,
            pkey_index: 3,
            slid: 4,
            sl: 5,
            dlid_path_bits: 6,
        };
        let c = IbvWc::from(w);
        assert_eq!(c.wr_id, 0x1122_3344_5566_7788);
        assert_eq!(c.status, 13);
        assert_eq!(c.opcode, 129);
        assert_eq!(c.vendor_err, 9);
        assert_eq!(c.byte_len, 4096);
        // __be32: the wire bytes in memory order.
        assert_eq!(c.imm_data.to_ne_bytes(), [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(w.imm_data.host_value(), 0xdead_beef);
        assert_eq!(ImmData::from_host(0xdead_beef), w.imm_data);
        assert_eq!((c.qp_num, c.src_qp, c.wc_flags), (0x12, 0x34, 3));
        assert_eq!((c.pkey_index, c.slid, c.sl, c.dlid_path_bits), (3, 4, 5, 6));

        let inv = WorkCompletion {
            wc_flags: WcFlags::WITH_INV,
            ..w
        };
        assert_eq!(IbvWc::from(inv).imm_data, 0x55);
    }

    #[test]
    fn create_rejects_bad_cqe() {
        assert_eq!(
            CompletionQueue::new(0).unwrap_err(),
            CreateCqError::InvalidCqe
        );
        assert_eq!(
            CompletionQueue::new(MAX_CQE + 1).unwrap_err(),
            CreateCqError::InvalidCqe
        );
        assert_eq!(CreateCqError::InvalidCqe.errno(), libc::EINVAL);
        let cq = CompletionQueue::new(5).unwrap();
        assert_eq!(cq.capacity(), 5);
        assert!(cq.is_empty());
    }

    #[test]
    fn fifo_order_across_wraparound() {
        let mut cq = CompletionQueue::new(3).unwrap();
        let mut next_push = 0u64;
        let mut next_poll = 0u64;
        // Varying batch sizes move head around the ring many times.
        for round in 0..50 {
            let pushes = 1 + round % 3;
            for _ in 0..pushes {
                if cq.len() < cq.capacity() {
                    assert_eq!(cq.push(wc(next_push), false), Ok(Notify::None));
                    next_push += 1;
                }
            }
            // Poll sizes out of step with push counts, so head visits
            // every slot and batches cross the end of the ring.
            let ids = poll_ids(&mut cq, 1 + (round * 5 + round / 3) % 2);
            for id in ids {
                assert_eq!(id, next_poll);
                next_poll += 1;
            }
        }
        for id in poll_ids(&mut cq, 8) {
            assert_eq!(id, next_poll);
            next_poll += 1;
        }
        assert_eq!(next_poll, next_push);
        assert!(next_push > 50);
        assert!(!cq.is_overrun());
    }

    #[test]
    fn one_poll_across_the_end_of_the_ring() {
        let mut cq = CompletionQueue::new(4).unwrap();
        for i in 0..3 {
            assert_eq!(cq.push(wc(i), false), Ok(Notify::None));
        }
        assert_eq!(poll_ids(&mut cq, 2), vec![0, 1]);
        // Slots 3, 0, 1 now: the queue wraps.
        for i in 3..6 {
            assert_eq!(cq.push(wc(i), false), Ok(Notify::None));
        }
        assert_eq!(cq.len(), 4);
        assert_eq!(poll_ids(&mut cq, 8), vec![2, 3, 4, 5]);
        assert!(cq.is_empty());
    }

    #[test]
    fn poll_respects_output_length() {
        let mut cq = CompletionQueue::new(8).unwrap();
        for i in 0..5 {
            assert_eq!(cq.push(wc(i), false), Ok(Notify::None));
        }
        assert_eq!(cq.poll(&mut []), 0);
        assert_eq!(poll_ids(&mut cq, 2), vec![0, 1]);
        assert_eq!(cq.len(), 3);
        let mut out = [IbvWc::default(); 8];
        assert_eq!(cq.poll_ibv(&mut out), 3);
        assert_eq!(
            out[..3].iter().map(|w| w.wr_id).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(cq.poll_ibv(&mut out), 0);
    }

    #[test]
    fn capacity_bound_and_overrun() {
        let mut cq = CompletionQueue::new(4).unwrap();
        for i in 0..4 {
            assert_eq!(cq.push(wc(i), false), Ok(Notify::None));
        }
        assert_eq!(cq.len(), 4);
        assert!(!cq.is_overrun());

        // Full: the fifth is refused, the owner is told to raise CQ_ERR.
        assert_eq!(
            cq.push(wc(99), false),
            Err(Overrun {
                raise_async_event: true
            })
        );
        assert!(cq.is_overrun());
        assert_eq!(cq.len(), 4);
        // Later pushes are refused without a second async event.
        assert_eq!(
            cq.push(wc(100), false),
            Err(Overrun {
                raise_async_event: false
            })
        );

        // Nothing was overwritten; the stored ones come out in order.
        assert_eq!(poll_ids(&mut cq, 8), vec![0, 1, 2, 3]);
        assert!(cq.is_empty());

        // Still unusable after polling made room.
        assert_eq!(
            cq.push(wc(101), false),
            Err(Overrun {
                raise_async_event: false
            })
        );
        assert!(cq.is_empty());
    }

    #[test]
    fn overrun_does_not_fire_notification() {
        let mut cq = CompletionQueue::new(1).unwrap();
        assert_eq!(cq.push(wc(0), false), Ok(Notify::None));
        cq.req_notify(false);
        assert!(cq.push(wc(1), false).is_err());
        // The dropped completion did not consume the arming either.
        assert_eq!(cq.arming(), Arming::NextCompletion);
    }

    #[test]
    fn unarmed_push_fires_nothing() {
        let mut cq = CompletionQueue::new(8).unwrap();
        assert_eq!(cq.push(wc(0), false), Ok(Notify::None));
        assert_eq!(cq.push(recv(1, WcStatus::Success), true), Ok(Notify::None));
        assert_eq!(
            cq.push(recv(2, WcStatus::WrFlushErr), true),
            Ok(Notify::None)
        );
    }

    #[test]
    fn armed_fires_once_then_disarms() {
        let mut cq = CompletionQueue::new(8).unwrap();
        cq.req_notify(false);
        assert_eq!(cq.arming(), Arming::NextCompletion);
        assert_eq!(cq.push(wc(0), false), Ok(Notify::Fire));
        assert_eq!(cq.arming(), Arming::Disarmed);
        assert_eq!(cq.push(wc(1), false), Ok(Notify::None));
        assert_eq!(
            cq.push(recv(2, WcStatus::GeneralErr), true),
            Ok(Notify::None)
        );

        // Re-arming with completions already queued does not fire by itself.
        cq.req_notify(false);
        assert_eq!(cq.arming(), Arming::NextCompletion);
        assert_eq!(cq.push(wc(3), false), Ok(Notify::Fire));
        // Arming twice still gives one event.
        cq.req_notify(false);
        cq.req_notify(false);
        assert_eq!(cq.push(wc(4), false), Ok(Notify::Fire));
        assert_eq!(cq.push(wc(5), false), Ok(Notify::None));
    }

    #[test]
    fn solicited_only_filters() {
        let mut cq = CompletionQueue::new(16).unwrap();
        cq.req_notify(true);
        assert_eq!(cq.arming(), Arming::Solicited);
        // Successful unsolicited receive and any successful send: nothing.
        assert_eq!(cq.push(recv(0, WcStatus::Success), false), Ok(Notify::None));
        assert_eq!(cq.push(wc(1), false), Ok(Notify::None));
        // A send-side completion is never solicited, even with se_bit.
        assert_eq!(cq.push(wc(2), true), Ok(Notify::None));
        let write = WorkCompletion {
            opcode: WcOpcode::RdmaWrite,
            ..wc(3)
        };
        assert_eq!(cq.push(write, true), Ok(Notify::None));
        assert_eq!(cq.arming(), Arming::Solicited);
        // A solicited receive fires once.
        assert_eq!(cq.push(recv(4, WcStatus::Success), true), Ok(Notify::Fire));
        assert_eq!(cq.push(recv(5, WcStatus::Success), true), Ok(Notify::None));

        // An error completion fires, send side or receive side.
        cq.req_notify(true);
        let failed_send = WorkCompletion {
            status: WcStatus::RetryExcErr,
            ..wc(6)
        };
        assert_eq!(cq.push(failed_send, false), Ok(Notify::Fire));
        cq.req_notify(true);
        assert_eq!(
            cq.push(recv(7, WcStatus::WrFlushErr), false),
            Ok(Notify::Fire)
        );

        // RDMA WRITE with immediate consumes a receive: SE counts.
        cq.req_notify(true);
        let imm = WorkCompletion {
            opcode: WcOpcode::RecvRdmaWithImm,
            ..recv(8, WcStatus::Success)
        };
        assert_eq!(cq.push(imm, true), Ok(Notify::Fire));
    }

    #[test]
    fn next_completion_arming_is_not_downgraded() {
        let mut cq = CompletionQueue::new(4).unwrap();
        cq.req_notify(false);
        cq.req_notify(true);
        assert_eq!(cq.arming(), Arming::NextCompletion);
        assert_eq!(cq.push(wc(0), false), Ok(Notify::Fire));
        // Solicited can be upgraded to next-completion.
        cq.req_notify(true);
        cq.req_notify(false);
        assert_eq!(cq.push(wc(1), false), Ok(Notify::Fire));
    }

    #[test]
    fn core_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CompletionQueue>();
        assert_send_sync::<WorkCompletion>();
    }
}
