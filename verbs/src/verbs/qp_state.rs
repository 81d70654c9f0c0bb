//! Which `ibv_modify_qp` calls are legal: the QP state transition table.
//!
//! This module is the single authority that decides whether a modify-QP
//! request (QP type, current state, next state, attribute mask) is accepted.
//! It mirrors, for the RC, UC and UD QP types, the table the Linux kernel
//! consults in `ib_modify_qp_is_ok()` (`qp_state_table` in
//! `drivers/infiniband/core/verbs.c`), which is itself a transcription of the
//! IBTA "QP/EE state transition" tables. Soft RoCE (`rdma_rxe`) and hardware
//! drivers call that function before touching a QP, and `ibv_modify_qp` fails
//! with `EINVAL` whenever it says no; [`TransitionError::errno`] does the same.
//!
//! The numeric values of [`QpState`], [`QpType`] and [`AttrMask`] are those
//! of libibverbs (`enum ibv_qp_state`, `enum ibv_qp_type`,
//! `enum ibv_qp_attr_mask` in rdma-core's `libibverbs/verbs.h`), so they can
//! be converted to and from the C ABI without a lookup table.
//!
//! # Reading the table
//!
//! The table lives in one private function, `row`, as a `match` on
//! `(from, to)`. An arm that is absent (the final `_ => None`) is a
//! transition the kernel does not allow for any QP type. A present arm gives,
//! for each QP type, two masks:
//!
//! * `required`: every one of these attributes must be in the mask;
//! * `optional`: these attributes may be in the mask.
//!
//! On top of the row, as in the kernel:
//!
//! * [`AttrMask::STATE`] is always permitted, and it is required whenever
//!   `from != to` (without it the QP keeps its state, so the request *is*
//!   the `from -> from` row).
//! * Any other attribute, including bits libibverbs does not define, is
//!   rejected.
//! * [`AttrMask::CUR_STATE`] is only ever optional on rows leaving RTR, RTS,
//!   SQD or SQE, which is the kernel's separate guard on that bit.
//!
//! `ib_modify_qp_is_ok()` returns a bare `false`; [`check_transition`] says
//! why, in the order a reader would check: unknown transition, then missing
//! attributes, then unexpected ones. All of them are `EINVAL`.
//!
//! # Choosing `current` and `next`
//!
//! Callers resolve the two states the way kernel drivers do before calling
//! `ib_modify_qp_is_ok()`: `current` is `attr.cur_qp_state` when the mask
//! holds `CUR_STATE`, otherwise the state the QP is in; `next` is
//! `attr.qp_state` when the mask holds `STATE`, otherwise `current`. A raw
//! state above `IBV_QPS_ERR` (such as `IBV_QPS_UNKNOWN`) has no [`QpState`]
//! and is `EINVAL` before this module is consulted, as in the kernel's
//! uverbs layer.
//!
//! # Places where the kernel table is stricter than one might guess
//!
//! * RESET -> ERR is not a row: a QP must reach INIT before it can be moved
//!   to ERR. Every state, RESET included, may go to RESET.
//! * RTR -> RTR and SQE -> SQE are not rows, so a modify without `STATE` in
//!   those states is rejected whatever the mask.
//! * SQE -> RTS is a row for every type; for RC it has no required and no
//!   optional attributes (an RC QP never enters SQE in practice).
//!
//! # Example
//!
//! ```
//! use xrdma_verbs::verbs::qp_state::{check_transition, AttrMask, QpState, QpType, TransitionError};
//!
//! let init = AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::ACCESS_FLAGS;
//! assert_eq!(check_transition(QpType::Rc, QpState::Reset, QpState::Init, init), Ok(()));
//!
//! // A UD QP has no access flags; it needs a Q_Key instead.
//! let err = check_transition(QpType::Ud, QpState::Reset, QpState::Init, init).unwrap_err();
//! assert_eq!(err, TransitionError::MissingAttributes(AttrMask::QKEY));
//! assert_eq!(err.errno(), libc::EINVAL);
//! ```

use core::fmt;
use core::ops::{BitOr, BitOrAssign};

/// State of a queue pair, numbered as libibverbs' `enum ibv_qp_state`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpState {
    /// `IBV_QPS_RESET`: freshly created or reset; no traffic.
    Reset = 0,
    /// `IBV_QPS_INIT`: port, P_Key and access bound; receives may be posted.
    Init = 1,
    /// `IBV_QPS_RTR`: ready to receive.
    Rtr = 2,
    /// `IBV_QPS_RTS`: ready to send.
    Rts = 3,
    /// `IBV_QPS_SQD`: send queue drain.
    Sqd = 4,
    /// `IBV_QPS_SQE`: send queue error (UC and UD).
    Sqe = 5,
    /// `IBV_QPS_ERR`: error; outstanding work requests are flushed.
    Err = 6,
}

impl QpState {
    /// Every state, in numeric order.
    pub const ALL: [QpState; 7] = [
        QpState::Reset,
        QpState::Init,
        QpState::Rtr,
        QpState::Rts,
        QpState::Sqd,
        QpState::Sqe,
        QpState::Err,
    ];

    /// Converts a libibverbs `enum ibv_qp_state` value. Returns `None` for
    /// `IBV_QPS_UNKNOWN` (7) and anything larger.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => QpState::Reset,
            1 => QpState::Init,
            2 => QpState::Rtr,
            3 => QpState::Rts,
            4 => QpState::Sqd,
            5 => QpState::Sqe,
            6 => QpState::Err,
            _ => return None,
        })
    }

    /// The libibverbs `enum ibv_qp_state` value.
    pub const fn as_raw(self) -> u32 {
        self as u32
    }

    /// The name used in messages: `"RESET"`, `"INIT"`, `"RTR"`, ...
    pub const fn name(self) -> &'static str {
        match self {
            QpState::Reset => "RESET",
            QpState::Init => "INIT",
            QpState::Rtr => "RTR",
            QpState::Rts => "RTS",
            QpState::Sqd => "SQD",
            QpState::Sqe => "SQE",
            QpState::Err => "ERR",
        }
    }
}

impl fmt::Display for QpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Transport service of a queue pair, numbered as libibverbs'
/// `enum ibv_qp_type`. Only the types xrdma implements are listed.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpType {
    /// `IBV_QPT_RC`: reliable connected.
    Rc = 2,
    /// `IBV_QPT_UC`: unreliable connected.
    Uc = 3,
    /// `IBV_QPT_UD`: unreliable datagram.
    Ud = 4,
}

impl QpType {
    /// Every supported type, in numeric order.
    pub const ALL: [QpType; 3] = [QpType::Rc, QpType::Uc, QpType::Ud];

    /// Converts a libibverbs `enum ibv_qp_type` value. Returns `None` for
    /// types xrdma does not implement (raw packet, XRC, driver-specific).
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            2 => QpType::Rc,
            3 => QpType::Uc,
            4 => QpType::Ud,
            _ => return None,
        })
    }

    /// The libibverbs `enum ibv_qp_type` value.
    pub const fn as_raw(self) -> u32 {
        self as u32
    }
}

/// The `attr_mask` argument of `ibv_modify_qp`: which fields of
/// `struct ibv_qp_attr` the call sets. Bit values are libibverbs'
/// `enum ibv_qp_attr_mask`.
///
/// Any `u32` can be held, including bits libibverbs does not define, so
/// that [`check_transition`] can report them rather than lose them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttrMask(u32);

impl AttrMask {
    /// No attributes.
    pub const EMPTY: AttrMask = AttrMask(0);
    /// `IBV_QP_STATE`: `qp_state`, the state to move to.
    pub const STATE: AttrMask = AttrMask(1 << 0);
    /// `IBV_QP_CUR_STATE`: `cur_qp_state`, the state the caller assumes.
    pub const CUR_STATE: AttrMask = AttrMask(1 << 1);
    /// `IBV_QP_EN_SQD_ASYNC_NOTIFY`: `en_sqd_async_notify`.
    pub const EN_SQD_ASYNC_NOTIFY: AttrMask = AttrMask(1 << 2);
    /// `IBV_QP_ACCESS_FLAGS`: `qp_access_flags`.
    pub const ACCESS_FLAGS: AttrMask = AttrMask(1 << 3);
    /// `IBV_QP_PKEY_INDEX`: `pkey_index`.
    pub const PKEY_INDEX: AttrMask = AttrMask(1 << 4);
    /// `IBV_QP_PORT`: `port_num`.
    pub const PORT: AttrMask = AttrMask(1 << 5);
    /// `IBV_QP_QKEY`: `qkey`.
    pub const QKEY: AttrMask = AttrMask(1 << 6);
    /// `IBV_QP_AV`: `ah_attr`, the primary path.
    pub const AV: AttrMask = AttrMask(1 << 7);
    /// `IBV_QP_PATH_MTU`: `path_mtu`.
    pub const PATH_MTU: AttrMask = AttrMask(1 << 8);
    /// `IBV_QP_TIMEOUT`: `timeout`, the local ACK timeout.
    pub const TIMEOUT: AttrMask = AttrMask(1 << 9);
    /// `IBV_QP_RETRY_CNT`: `retry_cnt`.
    pub const RETRY_CNT: AttrMask = AttrMask(1 << 10);
    /// `IBV_QP_RNR_RETRY`: `rnr_retry`.
    pub const RNR_RETRY: AttrMask = AttrMask(1 << 11);
    /// `IBV_QP_RQ_PSN`: `rq_psn`.
    pub const RQ_PSN: AttrMask = AttrMask(1 << 12);
    /// `IBV_QP_MAX_QP_RD_ATOMIC`: `max_rd_atomic`, reads/atomics this QP
    /// may have outstanding as requester.
    pub const MAX_QP_RD_ATOMIC: AttrMask = AttrMask(1 << 13);
    /// `IBV_QP_ALT_PATH`: `alt_ah_attr` and friends.
    pub const ALT_PATH: AttrMask = AttrMask(1 << 14);
    /// `IBV_QP_MIN_RNR_TIMER`: `min_rnr_timer`.
    pub const MIN_RNR_TIMER: AttrMask = AttrMask(1 << 15);
    /// `IBV_QP_SQ_PSN`: `sq_psn`.
    pub const SQ_PSN: AttrMask = AttrMask(1 << 16);
    /// `IBV_QP_MAX_DEST_RD_ATOMIC`: `max_dest_rd_atomic`, reads/atomics
    /// this QP accepts as responder.
    pub const MAX_DEST_RD_ATOMIC: AttrMask = AttrMask(1 << 17);
    /// `IBV_QP_PATH_MIG_STATE`: `path_mig_state`.
    pub const PATH_MIG_STATE: AttrMask = AttrMask(1 << 18);
    /// `IBV_QP_CAP`: `cap`, queue sizes.
    pub const CAP: AttrMask = AttrMask(1 << 19);
    /// `IBV_QP_DEST_QPN`: `dest_qp_num`.
    pub const DEST_QPN: AttrMask = AttrMask(1 << 20);
    // Bits 21..=24 were SMAC/ALT_SMAC/VID/ALT_VID on old kernels and were
    // never exposed by libibverbs; they are left unnamed.
    /// `IBV_QP_RATE_LIMIT`: `rate_limit` (raw packet QPs only).
    pub const RATE_LIMIT: AttrMask = AttrMask(1 << 25);

    /// Every named attribute with its libibverbs name minus `IBV_QP_`.
    const NAMED: [(AttrMask, &'static str); 22] = [
        (Self::STATE, "STATE"),
        (Self::CUR_STATE, "CUR_STATE"),
        (Self::EN_SQD_ASYNC_NOTIFY, "EN_SQD_ASYNC_NOTIFY"),
        (Self::ACCESS_FLAGS, "ACCESS_FLAGS"),
        (Self::PKEY_INDEX, "PKEY_INDEX"),
        (Self::PORT, "PORT"),
        (Self::QKEY, "QKEY"),
        (Self::AV, "AV"),
        (Self::PATH_MTU, "PATH_MTU"),
        (Self::TIMEOUT, "TIMEOUT"),
        (Self::RETRY_CNT, "RETRY_CNT"),
        (Self::RNR_RETRY, "RNR_RETRY"),
        (Self::RQ_PSN, "RQ_PSN"),
        (Self::MAX_QP_RD_ATOMIC, "MAX_QP_RD_ATOMIC"),
        (Self::ALT_PATH, "ALT_PATH"),
        (Self::MIN_RNR_TIMER, "MIN_RNR_TIMER"),
        (Self::SQ_PSN, "SQ_PSN"),
        (Self::MAX_DEST_RD_ATOMIC, "MAX_DEST_RD_ATOMIC"),
        (Self::PATH_MIG_STATE, "PATH_MIG_STATE"),
        (Self::CAP, "CAP"),
        (Self::DEST_QPN, "DEST_QPN"),
        (Self::RATE_LIMIT, "RATE_LIMIT"),
    ];

    /// The raw `attr_mask` value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Wraps a raw `attr_mask`, keeping undefined bits.
    pub const fn from_bits_retain(bits: u32) -> Self {
        AttrMask(bits)
    }

    /// True when no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every bit of `other` is set in `self`.
    pub const fn contains(self, other: AttrMask) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when `self` and `other` share at least one bit.
    pub const fn intersects(self, other: AttrMask) -> bool {
        self.0 & other.0 != 0
    }

    /// Bits set in either.
    pub const fn union(self, other: AttrMask) -> Self {
        AttrMask(self.0 | other.0)
    }

    /// Bits set in both.
    pub const fn intersection(self, other: AttrMask) -> Self {
        AttrMask(self.0 & other.0)
    }

    /// Bits set in `self` but not in `other`.
    pub const fn difference(self, other: AttrMask) -> Self {
        AttrMask(self.0 & !other.0)
    }
}

impl BitOr for AttrMask {
    type Output = AttrMask;

    fn bitor(self, rhs: AttrMask) -> AttrMask {
        self.union(rhs)
    }
}

impl BitOrAssign for AttrMask {
    fn bitor_assign(&mut self, rhs: AttrMask) {
        *self = self.union(rhs);
    }
}

/// Lists the set attributes as `PKEY_INDEX|PORT`, undefined bits as one
/// trailing hex number, and an empty mask as `none`.
impl fmt::Display for AttrMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut rest = *self;
        let mut first = true;
        for (flag, name) in Self::NAMED {
            if rest.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest = rest.difference(flag);
            }
        }
        if !rest.is_empty() {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{:#x}", rest.0)?;
        }
        Ok(())
    }
}

impl fmt::Debug for AttrMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttrMask({self})")
    }
}

/// Why a modify-QP request was refused. Every variant is `EINVAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionError {
    /// The table has no `from -> to` row. When the mask lacks `STATE`,
    /// `to == from`, and this means the QP cannot be modified in place in
    /// that state.
    InvalidTransition {
        /// State the QP is (or is asserted to be) in.
        from: QpState,
        /// State the request would move it to.
        to: QpState,
    },
    /// These attributes are required by the row but absent from the mask.
    MissingAttributes(AttrMask),
    /// These attributes are in the mask but the row neither requires nor
    /// allows them.
    UnexpectedAttributes(AttrMask),
}

impl TransitionError {
    /// The errno that `ibv_modify_qp` returns for this error. libibverbs
    /// and the kernel answer `EINVAL` for every refusal of the table.
    pub const fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionError::InvalidTransition { from, to } => {
                write!(f, "QP state transition {from} -> {to} is not allowed")
            }
            TransitionError::MissingAttributes(mask) => {
                write!(
                    f,
                    "QP state transition is missing required attributes {mask}"
                )
            }
            TransitionError::UnexpectedAttributes(mask) => {
                write!(f, "QP state transition does not accept attributes {mask}")
            }
        }
    }
}

impl std::error::Error for TransitionError {}

/// Checks a modify-QP request against the kernel's transition table.
///
/// `current` and `next` are resolved by the caller as described in the
/// module documentation; `mask` is the request's full `attr_mask`. Returns
/// `Ok(())` exactly when `ib_modify_qp_is_ok()` would return true for these
/// arguments and the request is consistent (`next != current` only with
/// `STATE`).
pub fn check_transition(
    qp_type: QpType,
    current: QpState,
    next: QpState,
    mask: AttrMask,
) -> Result<(), TransitionError> {
    let Some(row) = Row::effective(qp_type, current, next) else {
        return Err(TransitionError::InvalidTransition {
            from: current,
            to: next,
        });
    };
    let missing = row.required.difference(mask);
    if !missing.is_empty() {
        return Err(TransitionError::MissingAttributes(missing));
    }
    let unexpected = mask.difference(row.required.union(row.optional));
    if !unexpected.is_empty() {
        return Err(TransitionError::UnexpectedAttributes(unexpected));
    }
    Ok(())
}

/// Attributes [`check_transition`] demands for `from -> to` on `qp_type`,
/// `STATE` included when `from != to`; `None` when the transition is not in
/// the table.
pub fn required(qp_type: QpType, from: QpState, to: QpState) -> Option<AttrMask> {
    Row::effective(qp_type, from, to).map(|row| row.required)
}

/// Attributes [`check_transition`] accepts but does not demand for
/// `from -> to` on `qp_type`, `STATE` included when `from == to`; `None` when
/// the transition is not in the table.
pub fn optional(qp_type: QpType, from: QpState, to: QpState) -> Option<AttrMask> {
    Row::effective(qp_type, from, to).map(|row| row.optional)
}

/// One cell of the table: the attribute masks of one transition for one QP
/// type.
#[derive(Clone, Copy)]
struct Row {
    required: AttrMask,
    optional: AttrMask,
}

/// The cells of one transition for each QP type, named like the kernel's
/// `[IB_QPT_UD]`, `[IB_QPT_UC]`, `[IB_QPT_RC]` initialisers.
struct PerType {
    ud: Row,
    uc: Row,
    rc: Row,
}

impl PerType {
    /// The same cell for every QP type.
    const fn all(row: Row) -> Self {
        PerType {
            ud: row,
            uc: row,
            rc: row,
        }
    }

    const fn get(self, qp_type: QpType) -> Row {
        match qp_type {
            QpType::Ud => self.ud,
            QpType::Uc => self.uc,
            QpType::Rc => self.rc,
        }
    }
}

impl Row {
    /// A valid transition that takes nothing but `STATE`.
    const BARE: Row = Row::optional(AttrMask::EMPTY);

    const fn required(required: AttrMask) -> Row {
        Row {
            required,
            optional: AttrMask::EMPTY,
        }
    }

    const fn optional(optional: AttrMask) -> Row {
        Row {
            required: AttrMask::EMPTY,
            optional,
        }
    }

    /// The kernel's row plus the `STATE` rule: required when the state
    /// changes, optional otherwise.
    fn effective(qp_type: QpType, from: QpState, to: QpState) -> Option<Row> {
        let row = Row::table(qp_type, from, to)?;
        Some(if from == to {
            Row {
                required: row.required,
                optional: row.optional | AttrMask::STATE,
            }
        } else {
            Row {
                required: row.required | AttrMask::STATE,
                optional: row.optional,
            }
        })
    }

    /// `qp_state_table[from][to]` of the kernel, restricted to UD, UC and RC,
    /// without `STATE`. Arms are in the kernel's order.
    fn table(qp_type: QpType, from: QpState, to: QpState) -> Option<Row> {
        use QpState::{Err, Init, Reset, Rtr, Rts, Sqd, Sqe};
        type A = AttrMask;

        let cells = match (from, to) {
            // Every state may be reset, with STATE alone.
            (_, Reset) => PerType::all(Row::BARE),
            // Every state but RESET may be moved to ERR, with STATE alone.
            (Reset, Err) => return None,
            (_, Err) => PerType::all(Row::BARE),

            (Reset, Init) => PerType {
                ud: Row::required(A::PKEY_INDEX | A::PORT | A::QKEY),
                uc: Row::required(A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS),
                rc: Row::required(A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS),
            },

            (Init, Init) => PerType {
                ud: Row::optional(A::PKEY_INDEX | A::PORT | A::QKEY),
                uc: Row::optional(A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS),
                rc: Row::optional(A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS),
            },
            (Init, Rtr) => PerType {
                ud: Row {
                    required: A::EMPTY,
                    optional: A::PKEY_INDEX | A::QKEY,
                },
                uc: Row {
                    required: A::AV | A::PATH_MTU | A::DEST_QPN | A::RQ_PSN,
                    optional: A::ALT_PATH | A::ACCESS_FLAGS | A::PKEY_INDEX,
                },
                rc: Row {
                    required: A::AV
                        | A::PATH_MTU
                        | A::DEST_QPN
                        | A::RQ_PSN
                        | A::MAX_DEST_RD_ATOMIC
                        | A::MIN_RNR_TIMER,
                    optional: A::ALT_PATH | A::ACCESS_FLAGS | A::PKEY_INDEX,
                },
            },

            (Rtr, Rts) => PerType {
                ud: Row {
                    required: A::SQ_PSN,
                    optional: A::CUR_STATE | A::QKEY,
                },
                uc: Row {
                    required: A::SQ_PSN,
                    optional: A::CUR_STATE | A::ALT_PATH | A::ACCESS_FLAGS | A::PATH_MIG_STATE,
                },
                rc: Row {
                    required: A::TIMEOUT
                        | A::RETRY_CNT
                        | A::RNR_RETRY
                        | A::SQ_PSN
                        | A::MAX_QP_RD_ATOMIC,
                    optional: A::CUR_STATE
                        | A::ALT_PATH
                        | A::ACCESS_FLAGS
                        | A::MIN_RNR_TIMER
                        | A::PATH_MIG_STATE,
                },
            },

            (Rts, Rts) => PerType {
                ud: Row::optional(A::CUR_STATE | A::QKEY),
                uc: Row::optional(A::CUR_STATE | A::ACCESS_FLAGS | A::ALT_PATH | A::PATH_MIG_STATE),
                rc: Row::optional(
                    A::CUR_STATE
                        | A::ACCESS_FLAGS
                        | A::ALT_PATH
                        | A::PATH_MIG_STATE
                        | A::MIN_RNR_TIMER,
                ),
            },
            (Rts, Sqd) => PerType::all(Row::optional(A::EN_SQD_ASYNC_NOTIFY)),

            (Sqd, Rts) => PerType {
                ud: Row::optional(A::CUR_STATE | A::QKEY),
                uc: Row::optional(A::CUR_STATE | A::ALT_PATH | A::ACCESS_FLAGS | A::PATH_MIG_STATE),
                rc: Row::optional(
                    A::CUR_STATE
                        | A::ALT_PATH
                        | A::ACCESS_FLAGS
                        | A::MIN_RNR_TIMER
                        | A::PATH_MIG_STATE,
                ),
            },
            (Sqd, Sqd) => PerType {
                ud: Row::optional(A::PKEY_INDEX | A::QKEY),
                uc: Row::optional(
                    A::AV | A::ALT_PATH | A::ACCESS_FLAGS | A::PKEY_INDEX | A::PATH_MIG_STATE,
                ),
                rc: Row::optional(
                    A::PORT
                        | A::AV
                        | A::TIMEOUT
                        | A::RETRY_CNT
                        | A::RNR_RETRY
                        | A::MAX_QP_RD_ATOMIC
                        | A::MAX_DEST_RD_ATOMIC
                        | A::ALT_PATH
                        | A::ACCESS_FLAGS
                        | A::PKEY_INDEX
                        | A::MIN_RNR_TIMER
                        | A::PATH_MIG_STATE,
                ),
            },

            (Sqe, Rts) => PerType {
                ud: Row::optional(A::CUR_STATE | A::QKEY),
                uc: Row::optional(A::CUR_STATE | A::ACCESS_FLAGS),
                // The kernel marks the row valid for every type but lists
                // nothing for RC.
                rc: Row::BARE,
            },

            _ => return None,
        };
        Some(cells.get(qp_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use QpState::{Err, Init, Reset, Rtr, Rts, Sqd, Sqe};
    use QpType::{Rc, Uc, Ud};

    type A = AttrMask;

    /// The `.valid = 1` cells of the kernel's `qp_state_table`, copied
    /// separately from the table above so that a change to either shows.
    /// Validity does not depend on the QP type.
    const KERNEL_VALID: [(QpState, QpState); 22] = [
        (Reset, Reset),
        (Reset, Init),
        (Init, Reset),
        (Init, Err),
        (Init, Init),
        (Init, Rtr),
        (Rtr, Reset),
        (Rtr, Err),
        (Rtr, Rts),
        (Rts, Reset),
        (Rts, Err),
        (Rts, Rts),
        (Rts, Sqd),
        (Sqd, Reset),
        (Sqd, Err),
        (Sqd, Rts),
        (Sqd, Sqd),
        (Sqe, Reset),
        (Sqe, Err),
        (Sqe, Rts),
        (Err, Reset),
        (Err, Err),
    ];

    fn single_bits(mask: AttrMask) -> impl Iterator<Item = AttrMask> {
        (0..32)
            .map(|i| AttrMask::from_bits_retain(1 << i))
            .filter(move |bit| mask.contains(*bit))
    }

    fn missing(mask: AttrMask) -> Result<(), TransitionError> {
        Result::Err(TransitionError::MissingAttributes(mask))
    }

    fn unexpected(mask: AttrMask) -> Result<(), TransitionError> {
        Result::Err(TransitionError::UnexpectedAttributes(mask))
    }

    fn invalid(from: QpState, to: QpState) -> Result<(), TransitionError> {
        Result::Err(TransitionError::InvalidTransition { from, to })
    }

    #[test]
    fn attr_mask_values_match_libibverbs() {
        let expected: [(AttrMask, u32); 22] = [
            (A::STATE, 1),
            (A::CUR_STATE, 2),
            (A::EN_SQD_ASYNC_NOTIFY, 4),
            (A::ACCESS_FLAGS, 8),
            (A::PKEY_INDEX, 16),
            (A::PORT, 32),
            (A::QKEY, 64),
            (A::AV, 128),
            (A::PATH_MTU, 256),
            (A::TIMEOUT, 512),
            (A::RETRY_CNT, 1024),
            (A::RNR_RETRY, 2048),
            (A::RQ_PSN, 4096),
            (A::MAX_QP_RD_ATOMIC, 8192),
            (A::ALT_PATH, 16384),
            (A::MIN_RNR_TIMER, 32768),
            (A::SQ_PSN, 65536),
            (A::MAX_DEST_RD_ATOMIC, 131072),
            (A::PATH_MIG_STATE, 262144),
            (A::CAP, 524288),
            (A::DEST_QPN, 1048576),
            (A::RATE_LIMIT, 33554432),
        ];
        for (mask, bits) in expected {
            assert_eq!(mask.bits(), bits, "{mask}");
        }
        assert_eq!(AttrMask::NAMED.map(|(m, _)| m), expected.map(|(m, _)| m));
    }

    #[test]
    fn enum_values_match_libibverbs() {
        for (i, state) in QpState::ALL.into_iter().enumerate() {
            assert_eq!(state.as_raw(), i as u32);
            assert_eq!(QpState::from_raw(i as u32), Some(state));
        }
        assert_eq!(QpState::from_raw(7), None, "IBV_QPS_UNKNOWN");
        assert_eq!(QpState::from_raw(u32::MAX), None);

        assert_eq!((Rc.as_raw(), Uc.as_raw(), Ud.as_raw()), (2, 3, 4));
        for t in QpType::ALL {
            assert_eq!(QpType::from_raw(t.as_raw()), Some(t));
        }
        for raw in [0, 1, 5, 8, 9, 10, 0xff] {
            assert_eq!(QpType::from_raw(raw), None, "{raw}");
        }
    }

    #[test]
    fn attr_mask_operations() {
        let a = A::STATE | A::PORT;
        assert!(a.contains(A::PORT));
        assert!(!a.contains(A::PORT | A::QKEY));
        assert!(a.contains(A::EMPTY));
        assert!(a.intersects(A::PORT | A::QKEY));
        assert_eq!(a.difference(A::STATE), A::PORT);
        assert_eq!(a.intersection(A::PORT | A::QKEY), A::PORT);
        assert_eq!(a.union(A::QKEY).bits(), 1 | 32 | 64);
        let mut b = A::EMPTY;
        b |= A::QKEY;
        assert_eq!(b, A::QKEY);
        assert_eq!(A::from_bits_retain(1 << 30).bits(), 1 << 30);
    }

    #[test]
    fn attr_mask_formatting() {
        assert_eq!(A::EMPTY.to_string(), "none");
        assert_eq!((A::PORT | A::STATE).to_string(), "STATE|PORT");
        assert_eq!(
            (A::QKEY | A::from_bits_retain(1 << 21 | 1 << 30)).to_string(),
            "QKEY|0x40200000"
        );
        assert_eq!(A::from_bits_retain(1 << 22).to_string(), "0x400000");
        assert_eq!(format!("{:?}", A::AV), "AttrMask(AV)");
    }

    #[test]
    fn validity_matches_kernel_for_every_pair() {
        for t in QpType::ALL {
            for from in QpState::ALL {
                for to in QpState::ALL {
                    let expected = KERNEL_VALID.contains(&(from, to));
                    assert_eq!(
                        required(t, from, to).is_some(),
                        expected,
                        "{t:?} {from}->{to}"
                    );
                    assert_eq!(
                        optional(t, from, to).is_some(),
                        expected,
                        "{t:?} {from}->{to}"
                    );
                    if expected {
                        let minimal = required(t, from, to).unwrap();
                        assert_eq!(
                            check_transition(t, from, to, minimal),
                            Ok(()),
                            "{t:?} {from}->{to}"
                        );
                    } else {
                        // However complete the mask, the transition stays invalid.
                        for mask in [A::STATE, A::from_bits_retain(u32::MAX)] {
                            assert_eq!(check_transition(t, from, to, mask), invalid(from, to));
                        }
                    }
                }
            }
        }
    }

    /// Every non-bare cell of the kernel table, transcribed a second time
    /// column by column (one QP type at a time) rather than row by row, as
    /// `(from, to, required, optional)` without STATE.
    fn kernel_cells(t: QpType) -> Vec<(QpState, QpState, AttrMask, AttrMask)> {
        let e = A::EMPTY;
        match t {
            Ud => vec![
                (Reset, Init, A::PKEY_INDEX | A::PORT | A::QKEY, e),
                (Init, Init, e, A::PKEY_INDEX | A::PORT | A::QKEY),
                (Init, Rtr, e, A::PKEY_INDEX | A::QKEY),
                (Rtr, Rts, A::SQ_PSN, A::CUR_STATE | A::QKEY),
                (Rts, Rts, e, A::CUR_STATE | A::QKEY),
                (Rts, Sqd, e, A::EN_SQD_ASYNC_NOTIFY),
                (Sqd, Rts, e, A::CUR_STATE | A::QKEY),
                (Sqd, Sqd, e, A::PKEY_INDEX | A::QKEY),
                (Sqe, Rts, e, A::CUR_STATE | A::QKEY),
            ],
            Uc => {
                let path = A::ALT_PATH | A::ACCESS_FLAGS | A::PATH_MIG_STATE;
                vec![
                    (Reset, Init, A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS, e),
                    (Init, Init, e, A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS),
                    (
                        Init,
                        Rtr,
                        A::AV | A::PATH_MTU | A::DEST_QPN | A::RQ_PSN,
                        A::ALT_PATH | A::ACCESS_FLAGS | A::PKEY_INDEX,
                    ),
                    (Rtr, Rts, A::SQ_PSN, A::CUR_STATE | path),
                    (Rts, Rts, e, A::CUR_STATE | path),
                    (Rts, Sqd, e, A::EN_SQD_ASYNC_NOTIFY),
                    (Sqd, Rts, e, A::CUR_STATE | path),
                    (Sqd, Sqd, e, A::AV | A::PKEY_INDEX | path),
                    (Sqe, Rts, e, A::CUR_STATE | A::ACCESS_FLAGS),
                ]
            }
            Rc => {
                let path = A::ALT_PATH | A::ACCESS_FLAGS | A::PATH_MIG_STATE | A::MIN_RNR_TIMER;
                let send = A::TIMEOUT | A::RETRY_CNT | A::RNR_RETRY | A::MAX_QP_RD_ATOMIC;
                vec![
                    (Reset, Init, A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS, e),
                    (Init, Init, e, A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS),
                    (
                        Init,
                        Rtr,
                        A::AV
                            | A::PATH_MTU
                            | A::DEST_QPN
                            | A::RQ_PSN
                            | A::MAX_DEST_RD_ATOMIC
                            | A::MIN_RNR_TIMER,
                        A::ALT_PATH | A::ACCESS_FLAGS | A::PKEY_INDEX,
                    ),
                    (Rtr, Rts, send | A::SQ_PSN, A::CUR_STATE | path),
                    (Rts, Rts, e, A::CUR_STATE | path),
                    (Rts, Sqd, e, A::EN_SQD_ASYNC_NOTIFY),
                    (Sqd, Rts, e, A::CUR_STATE | path),
                    (
                        Sqd,
                        Sqd,
                        e,
                        A::PORT | A::AV | A::PKEY_INDEX | A::MAX_DEST_RD_ATOMIC | send | path,
                    ),
                    (Sqe, Rts, e, e),
                ]
            }
        }
    }

    #[test]
    fn every_cell_matches_second_transcription() {
        for t in QpType::ALL {
            let cells = kernel_cells(t);
            for (from, to) in KERNEL_VALID {
                let (req, opt) = cells
                    .iter()
                    .find(|c| (c.0, c.1) == (from, to))
                    .map_or((A::EMPTY, A::EMPTY), |c| (c.2, c.3));
                let (req_state, opt_state) = if from == to {
                    (A::EMPTY, A::STATE)
                } else {
                    (A::STATE, A::EMPTY)
                };
                assert_eq!(
                    required(t, from, to),
                    Some(req | req_state),
                    "{t:?} {from}->{to}"
                );
                assert_eq!(
                    optional(t, from, to),
                    Some(opt | opt_state),
                    "{t:?} {from}->{to}"
                );
            }
            for (from, to, _, _) in cells {
                assert!(KERNEL_VALID.contains(&(from, to)), "{t:?} {from}->{to}");
            }
        }
    }

    #[test]
    fn state_is_required_exactly_when_the_state_changes() {
        for t in QpType::ALL {
            for (from, to) in KERNEL_VALID {
                let req = required(t, from, to).unwrap();
                let opt = optional(t, from, to).unwrap();
                assert_eq!(req.contains(A::STATE), from != to, "{t:?} {from}->{to}");
                assert_eq!(opt.contains(A::STATE), from == to, "{t:?} {from}->{to}");
                assert!(!req.intersects(opt), "{t:?} {from}->{to}");
            }
        }
    }

    /// Adding any one bit to the minimal mask is accepted exactly when the
    /// row lists it; all 32 bits are tried, undefined ones included.
    #[test]
    fn each_extra_bit_is_accepted_only_if_listed() {
        for t in QpType::ALL {
            for (from, to) in KERNEL_VALID {
                let req = required(t, from, to).unwrap();
                let opt = optional(t, from, to).unwrap();
                for bit in single_bits(A::from_bits_retain(u32::MAX)).filter(|b| !req.contains(*b))
                {
                    let got = check_transition(t, from, to, req | bit);
                    if opt.contains(bit) {
                        assert_eq!(got, Ok(()), "{t:?} {from}->{to} +{bit}");
                    } else {
                        assert_eq!(got, unexpected(bit), "{t:?} {from}->{to} +{bit}");
                    }
                }
                assert_eq!(check_transition(t, from, to, req | opt), Ok(()));
            }
        }
    }

    /// The kernel refuses CUR_STATE unless the current state is RTR, RTS,
    /// SQD or SQE; the table must never contradict that guard.
    #[test]
    fn cur_state_only_allowed_from_rtr_rts_sqd_sqe() {
        for t in QpType::ALL {
            for (from, to) in KERNEL_VALID {
                assert!(!required(t, from, to).unwrap().contains(A::CUR_STATE));
                if optional(t, from, to).unwrap().contains(A::CUR_STATE) {
                    assert!(matches!(from, Rtr | Rts | Sqd | Sqe), "{t:?} {from}->{to}");
                }
            }
        }
    }

    /// Runs each step, then drops each bit of it in turn.
    fn check_sequence(t: QpType, steps: &[(QpState, QpState, AttrMask)]) {
        for &(from, to, mask) in steps {
            assert_eq!(
                check_transition(t, from, to, mask),
                Ok(()),
                "{t:?} {from}->{to}"
            );
            for bit in single_bits(mask) {
                assert_eq!(
                    check_transition(t, from, to, mask.difference(bit)),
                    missing(bit),
                    "{t:?} {from}->{to} -{bit}"
                );
            }
        }
    }

    /// The masks of rdma-core's `libibverbs/examples/rc_pingpong.c`.
    const RC_PINGPONG: [(QpState, QpState, AttrMask); 3] = [
        (
            Reset,
            Init,
            A::STATE
                .union(A::PKEY_INDEX)
                .union(A::PORT)
                .union(A::ACCESS_FLAGS),
        ),
        (
            Init,
            Rtr,
            A::STATE
                .union(A::AV)
                .union(A::PATH_MTU)
                .union(A::DEST_QPN)
                .union(A::RQ_PSN)
                .union(A::MAX_DEST_RD_ATOMIC)
                .union(A::MIN_RNR_TIMER),
        ),
        (
            Rtr,
            Rts,
            A::STATE
                .union(A::TIMEOUT)
                .union(A::RETRY_CNT)
                .union(A::RNR_RETRY)
                .union(A::SQ_PSN)
                .union(A::MAX_QP_RD_ATOMIC),
        ),
    ];

    /// The masks of rdma-core's `libibverbs/examples/ud_pingpong.c`.
    const UD_PINGPONG: [(QpState, QpState, AttrMask); 3] = [
        (
            Reset,
            Init,
            A::STATE.union(A::PKEY_INDEX).union(A::PORT).union(A::QKEY),
        ),
        (Init, Rtr, A::STATE),
        (Rtr, Rts, A::STATE.union(A::SQ_PSN)),
    ];

    #[test]
    fn rc_pingpong_sequence() {
        check_sequence(Rc, &RC_PINGPONG);
    }

    #[test]
    fn ud_pingpong_sequence() {
        check_sequence(Ud, &UD_PINGPONG);
    }

    #[test]
    fn uc_minimal_sequence() {
        check_sequence(
            Uc,
            &[
                (
                    Reset,
                    Init,
                    A::STATE | A::PKEY_INDEX | A::PORT | A::ACCESS_FLAGS,
                ),
                (
                    Init,
                    Rtr,
                    A::STATE | A::AV | A::PATH_MTU | A::DEST_QPN | A::RQ_PSN,
                ),
                (Rtr, Rts, A::STATE | A::SQ_PSN),
            ],
        );
    }

    #[test]
    fn pingpong_masks_are_wrong_for_the_other_type() {
        // The RC RTR mask on UD: everything but STATE is foreign.
        let (from, to, rc_rtr) = RC_PINGPONG[1];
        assert_eq!(
            check_transition(Ud, from, to, rc_rtr),
            unexpected(rc_rtr.difference(A::STATE))
        );
        // The UD INIT mask on RC: ACCESS_FLAGS missing comes first.
        let (from, to, ud_init) = UD_PINGPONG[0];
        assert_eq!(
            check_transition(Rc, from, to, ud_init),
            missing(A::ACCESS_FLAGS)
        );
        // UC needs no responder resources or RNR timer.
        let (from, to, rc_rtr) = RC_PINGPONG[1];
        assert_eq!(
            check_transition(Uc, from, to, rc_rtr),
            unexpected(A::MAX_DEST_RD_ATOMIC | A::MIN_RNR_TIMER)
        );
    }

    #[test]
    fn attributes_not_in_the_row_are_named() {
        let (from, to, rc_rtr) = RC_PINGPONG[1];
        assert_eq!(
            check_transition(Rc, from, to, rc_rtr | A::QKEY),
            unexpected(A::QKEY)
        );
        let (from, to, rc_init) = RC_PINGPONG[0];
        assert_eq!(
            check_transition(Rc, from, to, rc_init | A::QKEY),
            unexpected(A::QKEY)
        );
        let (from, to, rc_rts) = RC_PINGPONG[2];
        assert_eq!(
            check_transition(Rc, from, to, rc_rts | A::CAP | A::DEST_QPN),
            unexpected(A::CAP | A::DEST_QPN)
        );

        for &(from, to, mask) in &UD_PINGPONG {
            assert_eq!(
                check_transition(Ud, from, to, mask | A::DEST_QPN),
                unexpected(A::DEST_QPN)
            );
        }
        let (from, to, ud_init) = UD_PINGPONG[0];
        assert_eq!(
            check_transition(Ud, from, to, ud_init | A::ACCESS_FLAGS),
            unexpected(A::ACCESS_FLAGS)
        );

        // RATE_LIMIT belongs to raw packet QPs only.
        assert_eq!(
            check_transition(Rc, Rts, Rts, A::RATE_LIMIT),
            unexpected(A::RATE_LIMIT)
        );
        // Bits libibverbs never defined.
        let reserved = A::from_bits_retain(1 << 21);
        assert_eq!(
            check_transition(Ud, Rts, Rts, reserved),
            unexpected(reserved)
        );
    }

    #[test]
    fn missing_is_reported_before_unexpected() {
        assert_eq!(
            check_transition(Rc, Init, Rtr, A::STATE | A::QKEY),
            missing(RC_PINGPONG[1].2.difference(A::STATE))
        );
    }

    #[test]
    fn rts_to_rts_with_optional_attributes() {
        for mask in [
            A::MIN_RNR_TIMER,
            A::STATE | A::MIN_RNR_TIMER,
            A::EMPTY,
            A::STATE,
        ] {
            assert_eq!(check_transition(Rc, Rts, Rts, mask), Ok(()), "{mask}");
        }
        assert_eq!(
            check_transition(
                Rc,
                Rts,
                Rts,
                A::CUR_STATE | A::ACCESS_FLAGS | A::ALT_PATH | A::PATH_MIG_STATE
            ),
            Ok(())
        );
        assert_eq!(
            check_transition(Uc, Rts, Rts, A::MIN_RNR_TIMER),
            unexpected(A::MIN_RNR_TIMER)
        );
        assert_eq!(
            check_transition(Ud, Rts, Rts, A::MIN_RNR_TIMER),
            unexpected(A::MIN_RNR_TIMER)
        );
        assert_eq!(check_transition(Ud, Rts, Rts, A::QKEY), Ok(()));
        // Path attributes are fixed once the QP is past RTR, except in SQD.
        assert_eq!(check_transition(Rc, Rts, Rts, A::AV), unexpected(A::AV));
        assert_eq!(
            check_transition(Rc, Sqd, Sqd, A::AV | A::TIMEOUT | A::PORT),
            Ok(())
        );
    }

    #[test]
    fn reset_to_rts_is_invalid() {
        for t in QpType::ALL {
            let everything = A::from_bits_retain(u32::MAX);
            assert_eq!(
                check_transition(t, Reset, Rts, everything),
                invalid(Reset, Rts)
            );
            assert_eq!(
                check_transition(t, Reset, Rtr, A::STATE),
                invalid(Reset, Rtr)
            );
            assert_eq!(check_transition(t, Init, Rts, A::STATE), invalid(Init, Rts));
        }
    }

    #[test]
    fn any_state_to_reset_with_state_only() {
        for t in QpType::ALL {
            for from in QpState::ALL {
                assert_eq!(
                    check_transition(t, from, Reset, A::STATE),
                    Ok(()),
                    "{t:?} {from}"
                );
                assert_eq!(
                    check_transition(t, from, Reset, A::STATE | A::CUR_STATE),
                    unexpected(A::CUR_STATE),
                    "{t:?} {from}"
                );
            }
        }
    }

    #[test]
    fn any_state_but_reset_to_err_with_state_only() {
        for t in QpType::ALL {
            for from in QpState::ALL {
                let got = check_transition(t, from, Err, A::STATE);
                if from == Reset {
                    // Not in the kernel table: RESET must go through INIT.
                    assert_eq!(got, invalid(Reset, Err), "{t:?}");
                } else {
                    assert_eq!(got, Ok(()), "{t:?} {from}");
                    assert_eq!(
                        check_transition(t, from, Err, A::STATE | A::QKEY),
                        unexpected(A::QKEY),
                        "{t:?} {from}"
                    );
                }
            }
        }
    }

    #[test]
    fn modify_without_state_uses_the_current_row() {
        // INIT -> INIT may change the port; RTR and SQE cannot be modified in place.
        assert_eq!(check_transition(Rc, Init, Init, A::PORT), Ok(()));
        assert_eq!(check_transition(Rc, Rtr, Rtr, A::EMPTY), invalid(Rtr, Rtr));
        assert_eq!(check_transition(Ud, Sqe, Sqe, A::QKEY), invalid(Sqe, Sqe));
        // Asking for a new state without STATE is missing STATE.
        let (from, to, rc_rtr) = RC_PINGPONG[1];
        assert_eq!(
            check_transition(Rc, from, to, rc_rtr.difference(A::STATE)),
            missing(A::STATE)
        );
    }

    #[test]
    fn sqe_to_rts_per_type() {
        assert_eq!(
            check_transition(Ud, Sqe, Rts, A::STATE | A::CUR_STATE | A::QKEY),
            Ok(())
        );
        assert_eq!(
            check_transition(Uc, Sqe, Rts, A::STATE | A::ACCESS_FLAGS),
            Ok(())
        );
        assert_eq!(check_transition(Rc, Sqe, Rts, A::STATE), Ok(()));
        assert_eq!(
            check_transition(Rc, Sqe, Rts, A::STATE | A::CUR_STATE),
            unexpected(A::CUR_STATE)
        );
    }

    #[test]
    fn errors_are_einval_and_readable() {
        let errors = [
            TransitionError::InvalidTransition {
                from: Reset,
                to: Rts,
            },
            TransitionError::MissingAttributes(A::AV | A::RQ_PSN),
            TransitionError::UnexpectedAttributes(A::QKEY),
        ];
        for e in errors {
            assert_eq!(e.errno(), libc::EINVAL);
        }
        assert_eq!(
            errors[0].to_string(),
            "QP state transition RESET -> RTS is not allowed"
        );
        assert_eq!(
            errors[1].to_string(),
            "QP state transition is missing required attributes AV|RQ_PSN"
        );
        assert_eq!(
            errors[2].to_string(),
            "QP state transition does not accept attributes QKEY"
        );
    }
}
