//! Queue pairs: creation, the state machine (through [`qp_state`](super::qp_state)), and
//! the UD data path.
//!
//! UD sends are put on the wire during `post_send` and complete at once, as a UD send does
//! on hardware once the NIC has taken it. UD receives are matched to posted receive work
//! requests by the progress engine (`Context::progress`), which scatters the GRH and payload
//! into the posted buffers and completes them on the receive CQ.
//!
//! Locks are taken in one order: the backend (held by progress), the QP, then a CQ. No QP
//! lock is held while the backend's is taken.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::Error;
use super::ah::AhAttr;
use super::completion::{WcFlags, WcOpcode, WcStatus, WorkCompletion};
use super::context::{ContextShared, count};
use super::cq::Cq;
use super::device::Mtu;
use super::mr::{AccessFlags, MrTable, PdHandle};
use super::pd::Pd;
use super::qp_state::{AttrMask, QpState, QpType, check_transition};
use super::rc::{RcState, Receives};
use super::recv_queue::{RecvQueue, RecvSlot};
use super::srq::Srq;
use super::wr::{RecvWr, SendFlags, SendOpcode, SendWr, Sge};
use crate::engine::ud::{self, UdHeader, UdPacket};
use crate::net::FrameIo;
use crate::net::{RxMeta, TxMeta};
use crate::wire::{Psn, Qkey, Qpn};
use std::time::Instant;

/// Queue sizes of a QP (`struct ibv_qp_cap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCap {
    /// Outstanding send work requests.
    pub max_send_wr: u32,
    /// Outstanding receive work requests.
    pub max_recv_wr: u32,
    /// Scatter/gather entries per send.
    pub max_send_sge: u32,
    /// Scatter/gather entries per receive.
    pub max_recv_sge: u32,
    /// Bytes a send may carry inline.
    pub max_inline_data: u32,
}

/// How to create a QP (`struct ibv_qp_init_attr`).
#[derive(Clone, Copy)]
pub struct QpInitAttr<'a> {
    /// CQ of send completions.
    pub send_cq: &'a Cq,
    /// CQ of receive completions.
    pub recv_cq: &'a Cq,
    /// Transport.
    pub qp_type: QpType,
    /// Queue sizes.
    pub cap: QpCap,
    /// Complete every send, not just the signaled ones.
    pub sq_sig_all: bool,
    /// Take receives from this shared receive queue instead of the QP's own.
    pub srq: Option<&'a Srq>,
}

impl<'a> QpInitAttr<'a> {
    /// A UD QP with `depth` work requests per queue, one SGE each, 64 inline bytes, every
    /// send signaled.
    pub fn ud(send_cq: &'a Cq, recv_cq: &'a Cq, depth: u32) -> Self {
        QpInitAttr {
            send_cq,
            recv_cq,
            qp_type: QpType::Ud,
            cap: QpCap {
                max_send_wr: depth,
                max_recv_wr: depth,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 64,
            },
            sq_sig_all: true,
            srq: None,
        }
    }

    /// An RC QP with `depth` work requests per queue, one SGE each, no inline data, every
    /// send signaled.
    pub fn rc(send_cq: &'a Cq, recv_cq: &'a Cq, depth: u32) -> Self {
        let ud = QpInitAttr::ud(send_cq, recv_cq, depth);
        QpInitAttr {
            qp_type: QpType::Rc,
            cap: QpCap {
                max_inline_data: 0,
                ..ud.cap
            },
            ..ud
        }
    }
}

/// What an RC QP needs to know of its peer (exchanged out of band, as ibv_rc_pingpong
/// does) and of itself, for [`QueuePair::bring_up_rc`].
#[derive(Debug, Clone, Copy)]
pub struct RcPeer {
    /// How to reach the peer: its GID, and which of ours to send from.
    pub ah: AhAttr,
    /// The peer's QP number.
    pub qpn: u32,
    /// The peer's first send PSN: the first we expect.
    pub psn: u32,
    /// Our first send PSN.
    pub our_psn: u32,
    /// Payload bytes per packet.
    pub path_mtu: Mtu,
    /// What the peer may do to our memory (REMOTE_WRITE, REMOTE_READ, REMOTE_ATOMIC).
    pub access: AccessFlags,
    /// READs and atomics outstanding at once, each way.
    pub rd_atomic: u8,
}

/// QP attributes for `modify` and `query` (`struct ibv_qp_attr`); which ones a `modify`
/// applies is said by its mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpAttr {
    /// State to move to.
    pub qp_state: QpState,
    /// State the caller believes the QP is in (with `AttrMask::CUR_STATE`).
    pub cur_qp_state: QpState,
    /// Q_Key (UD).
    pub qkey: u32,
    /// First send PSN.
    pub sq_psn: u32,
    /// P_Key index (only 0 exists).
    pub pkey_index: u16,
    /// Port (only 1 exists).
    pub port_num: u8,
    /// Remote access the QP allows (RC): `REMOTE_WRITE` for peers' RDMA WRITEs.
    pub qp_access_flags: AccessFlags,
    /// Where the peer is (RC, at RTR): its GID.
    pub ah_attr: Option<AhAttr>,
    /// Path MTU (RC, at RTR).
    pub path_mtu: Mtu,
    /// The peer's QP number (RC, at RTR).
    pub dest_qp_num: u32,
    /// First PSN expected from the peer (RC, at RTR).
    pub rq_psn: u32,
    /// RDMA READ/atomic depth as target (RC; accepted, unused until READ exists).
    pub max_dest_rd_atomic: u8,
    /// RNR timer code sent in RNR NAKs (RC, at RTR).
    pub min_rnr_timer: u8,
    /// Local ACK timeout, 4.096 us * 2^timeout, 0 for none (RC, at RTS).
    pub timeout: u8,
    /// Retransmissions before RETRY_EXC_ERR, 7 unlimited (RC, at RTS).
    pub retry_cnt: u8,
    /// RNR resends before RNR_RETRY_EXC_ERR, 7 unlimited (RC, at RTS).
    pub rnr_retry: u8,
    /// RDMA READ/atomic depth as initiator (RC; accepted, unused until READ exists).
    pub max_rd_atomic: u8,
}

impl QpAttr {
    /// Attributes for a move to `state`, everything else at its default.
    pub fn new(state: QpState) -> Self {
        QpAttr {
            qp_state: state,
            cur_qp_state: state,
            qkey: 0,
            sq_psn: 0,
            pkey_index: 0,
            port_num: 1,
            qp_access_flags: AccessFlags::empty(),
            ah_attr: None,
            path_mtu: Mtu::Mtu1024,
            dest_qp_num: 0,
            rq_psn: 0,
            max_dest_rd_atomic: 0,
            min_rnr_timer: 0,
            timeout: 0,
            retry_cnt: 0,
            rnr_retry: 0,
            max_rd_atomic: 0,
        }
    }
}

struct QpMut {
    state: QpState,
    qkey: Qkey,
    sq_psn: Psn,
    rq: RecvQueue,
    /// Send completions held back to keep posting order while an in-place send is in
    /// flight (it completes only when the medium is done with its buffer). Empty on the
    /// fast path.
    held: VecDeque<HeldSend>,
    /// Sequence number of the next send posted.
    next_send: u64,
    /// The RC transport, for RC QPs.
    rc: Option<RcState>,
}

/// A send whose completion waits behind an earlier in-place send.
struct HeldSend {
    seq: u64,
    /// The completion to deliver (None for an unsignaled send).
    wc: Option<WorkCompletion>,
    /// True once the send itself is done.
    done: bool,
}

/// An in-place send the medium has not finished yet.
pub(crate) struct InPlaceSend {
    pub(crate) qp: Arc<QpShared>,
    /// The send's sequence number on its QP.
    seq: u64,
}

pub(crate) struct QpShared {
    qpn: Qpn,
    qp_type: QpType,
    pd: Pd,
    send_cq: Cq,
    recv_cq: Cq,
    cap: QpCap,
    sq_sig_all: bool,
    /// UDP source port of our datagrams: flow entropy from the QPN, as rxe does.
    src_port: u16,
    srq: Option<Srq>,
    st: Mutex<QpMut>,
    /// RC: something reached the QP since progress last serviced it (a packet, a post, a
    /// state change), so the next pass must. With `timer_at`, what lets a pass skip an
    /// idle QP without taking its lock: with many connections, most are idle at any time.
    due: AtomicBool,
    /// RC: when the engine's next timer is due, as [`Deadline`] has it.
    timer_at: AtomicU64,
}

/// An engine timer's due time in an atomic: nanoseconds after a base instant of the
/// process's (0 for one at or before it, `u64::MAX` for none).
pub(crate) struct Deadline;

impl Deadline {
    const NONE: u64 = u64::MAX;

    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    pub(crate) fn encode(at: Option<Instant>) -> u64 {
        match at {
            None => Deadline::NONE,
            // Saturating: a time before the base reads as due at once, never as later.
            Some(at) => (at.saturating_duration_since(Deadline::base()).as_nanos())
                .min(u128::from(Deadline::NONE - 1)) as u64,
        }
    }

    /// Whether a deadline `encoded` has come at `now` (encoded too, once per pass). A
    /// `now` before the base reads as the base, so this errs towards servicing.
    fn passed(encoded: u64, now: u64) -> bool {
        encoded != Deadline::NONE && encoded <= now
    }
}

/// A queue pair (`ibv_create_qp`); destroyed when dropped.
pub struct QueuePair {
    shared: Arc<QpShared>,
}

impl QueuePair {
    pub(crate) fn new(pd: &Pd, attr: &QpInitAttr<'_>) -> Result<QueuePair, Error> {
        let ctx = &pd.context().shared;
        if attr.qp_type == QpType::Uc {
            return Err(Error::Unsupported("UC queue pairs"));
        }
        if !same_context(pd, attr.send_cq) || !same_context(pd, attr.recv_cq) {
            return Err(Error::invalid("the CQs belong to another context"));
        }
        let dev = &ctx.device;
        let cap = attr.cap;
        if cap.max_send_wr == 0 && cap.max_recv_wr == 0
            || cap.max_send_wr > dev.max_qp_wr
            || cap.max_recv_wr > dev.max_qp_wr
            || cap.max_send_sge > dev.max_sge
            || cap.max_recv_sge > dev.max_sge
            || cap.max_inline_data > dev.max_inline_data
        {
            return Err(Error::invalid("queue sizes exceed the device's limits"));
        }
        let mut qps = ctx.qps.write();
        if qps.len() >= dev.max_qp as usize {
            return Err(Error::Full("queue pairs"));
        }
        // QPNs 0 and 1 are the management QPs; the rest are random and unique.
        let qpn = loop {
            let n = ctx.next_random() & 0x00ff_ffff;
            if n > 1 && !qps.contains_key(&n) {
                break n;
            }
        };
        let shared = Arc::new(QpShared {
            qpn: Qpn::new_masked(qpn),
            qp_type: attr.qp_type,
            pd: pd.clone(),
            send_cq: attr.send_cq.clone(),
            recv_cq: attr.recv_cq.clone(),
            cap,
            sq_sig_all: attr.sq_sig_all,
            srq: attr.srq.cloned(),
            src_port: 0xc000 | ((qpn.wrapping_mul(0x61c8_8647) >> 18) as u16 & 0x3fff),
            due: AtomicBool::new(true),
            timer_at: AtomicU64::new(Deadline::NONE),
            st: Mutex::new(QpMut {
                state: QpState::Reset,
                qkey: Qkey::new(0),
                sq_psn: Psn::ZERO,
                held: VecDeque::new(),
                next_send: 0,
                rc: (attr.qp_type == QpType::Rc).then(|| {
                    RcState::new(
                        cap.max_send_wr as usize,
                        cap.max_inline_data as usize,
                        ctx.link.max_transport_len(true),
                    )
                }),
                rq: if attr.srq.is_some() {
                    RecvQueue::new(0, 0)
                } else {
                    RecvQueue::new(cap.max_recv_wr as usize, cap.max_recv_sge.max(1) as usize)
                },
            }),
        });
        qps.insert(qpn, shared.clone());
        Ok(QueuePair { shared })
    }

    /// The QP number.
    pub fn qpn(&self) -> Qpn {
        self.shared.qpn
    }

    /// The protection domain.
    pub fn pd(&self) -> &Pd {
        &self.shared.pd
    }

    /// A handle that names this QP without owning it.
    pub fn handle(&self) -> QpHandle {
        QpHandle {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// True if the QP takes its receives from a shared receive queue.
    pub fn has_srq(&self) -> bool {
        self.shared.srq.is_some()
    }

    /// The Q_Key set on the QP (UD).
    pub fn qkey(&self) -> u32 {
        self.shared.st.lock().qkey.value()
    }

    /// The QP's type.
    pub fn qp_type(&self) -> QpType {
        self.shared.qp_type
    }

    /// Queue sizes as created (`ibv_query_qp` with `IBV_QP_CAP`).
    pub fn cap(&self) -> QpCap {
        self.shared.cap
    }

    /// The current state.
    pub fn state(&self) -> QpState {
        self.shared.st.lock().state
    }

    /// The current attributes (`ibv_query_qp`).
    pub fn query(&self) -> QpAttr {
        let st = self.shared.st.lock();
        let mut attr = QpAttr {
            qp_state: st.state,
            cur_qp_state: st.state,
            qkey: st.qkey.value(),
            sq_psn: st.sq_psn.value(),
            ..QpAttr::new(st.state)
        };
        if let Some(rc) = st.rc.as_ref() {
            attr.qp_access_flags = rc.access;
            attr.path_mtu = rc.path_mtu;
            attr.dest_qp_num = rc.dest_qpn.value();
            attr.rq_psn = rc.rq_psn.value();
            attr.min_rnr_timer = rc.min_rnr_timer;
            attr.timeout = rc.timeout;
            attr.retry_cnt = rc.retry_cnt;
            attr.rnr_retry = rc.rnr_retry;
            attr.max_rd_atomic = rc.max_rd_atomic;
            attr.max_dest_rd_atomic = rc.max_dest_rd_atomic;
            attr.ah_attr = rc.ah;
        }
        attr
    }

    /// Changes attributes and state (`ibv_modify_qp`). The mask must name exactly what the
    /// IBTA transition table allows for this QP type and these states (EINVAL otherwise).
    /// Moving to ERR flushes outstanding receives with `WR_FLUSH_ERR` completions.
    pub fn modify(&self, attr: &QpAttr, mask: AttrMask) -> Result<(), Error> {
        let q = &self.shared;
        let mut st = q.st.lock();
        q.due.store(true, Ordering::Release);
        let current = if mask.contains(AttrMask::CUR_STATE) {
            attr.cur_qp_state
        } else {
            st.state
        };
        let next = if mask.contains(AttrMask::STATE) {
            attr.qp_state
        } else {
            current
        };
        check_transition(q.qp_type, current, next, mask)?;
        if mask.contains(AttrMask::PORT) && attr.port_num != 1 {
            return Err(Error::invalid("port_num must be 1"));
        }
        if mask.contains(AttrMask::PKEY_INDEX) && attr.pkey_index != 0 {
            return Err(Error::invalid("pkey_index must be 0"));
        }
        if mask.contains(AttrMask::QKEY) {
            st.qkey = Qkey::new(attr.qkey);
        }
        if mask.contains(AttrMask::SQ_PSN) {
            st.sq_psn = Psn::new_masked(attr.sq_psn);
        }
        if let Some(rc) = st.rc.as_mut() {
            let ctx = &q.pd.context().shared;
            if mask.contains(AttrMask::ACCESS_FLAGS) {
                rc.access = attr.qp_access_flags;
            }
            if mask.contains(AttrMask::AV) {
                let ah = attr
                    .ah_attr
                    .ok_or(Error::invalid("AV given without ah_attr"))?;
                if ah.dgid.is_zero() {
                    return Err(Error::invalid(
                        "RoCE needs the peer's GID in the address vector",
                    ));
                }
                rc.ah = Some(ah);
            }
            if mask.contains(AttrMask::PATH_MTU) {
                if attr.path_mtu > ctx.port.active_mtu {
                    return Err(Error::invalid("path_mtu above the port's active MTU"));
                }
                rc.path_mtu = attr.path_mtu;
            }
            if mask.contains(AttrMask::DEST_QPN) {
                rc.dest_qpn =
                    Qpn::new(attr.dest_qp_num).ok_or(Error::invalid("dest_qp_num over 24 bits"))?;
            }
            if mask.contains(AttrMask::RQ_PSN) {
                rc.rq_psn = Psn::new_masked(attr.rq_psn);
            }
            if mask.contains(AttrMask::MIN_RNR_TIMER) {
                rc.min_rnr_timer = attr.min_rnr_timer & 31;
            }
            if mask.contains(AttrMask::TIMEOUT) {
                rc.timeout = attr.timeout & 31;
            }
            if mask.contains(AttrMask::RETRY_CNT) {
                rc.retry_cnt = attr.retry_cnt.min(7);
            }
            if mask.contains(AttrMask::RNR_RETRY) {
                rc.rnr_retry = attr.rnr_retry.min(7);
            }
            let max_rd = ctx.device.max_qp_rd_atom;
            if mask.contains(AttrMask::MAX_QP_RD_ATOMIC) {
                if u32::from(attr.max_rd_atomic) > ctx.device.max_qp_init_rd_atom {
                    return Err(Error::invalid("max_rd_atomic above max_qp_init_rd_atom"));
                }
                rc.max_rd_atomic = attr.max_rd_atomic;
            }
            if mask.contains(AttrMask::MAX_DEST_RD_ATOMIC) {
                if u32::from(attr.max_dest_rd_atomic) > max_rd {
                    return Err(Error::invalid("max_dest_rd_atomic above max_qp_rd_atom"));
                }
                rc.max_dest_rd_atomic = attr.max_dest_rd_atomic;
            }
            // The responder answers from RTR, the requester sends from RTS.
            if current == QpState::Init && next == QpState::Rtr {
                rc.start_responder();
            }
            if current == QpState::Rtr && next == QpState::Rts {
                let sq_psn = st.sq_psn;
                if let Some(rc) = st.rc.as_mut() {
                    rc.start_requester(sq_psn);
                }
            }
        }
        st.state = next;
        match next {
            QpState::Err => {
                // Outstanding sends flush too; an ACK owed to the peer still leaves with
                // the next pass of progress, or when the QP is destroyed.
                let qp_num = q.qpn.value();
                if let Some(rc) = st.rc.as_mut().filter(|_| current != QpState::Err) {
                    rc.flush(qp_num, |wc, send| {
                        let cq = if send { &q.send_cq } else { &q.recv_cq };
                        cq.shared.push(wc, false)
                    });
                }
                drop(st);
                q.flush();
            }
            QpState::Reset => {
                // A reset QP forgets its receives and RC state without completing them.
                st.rq.drain(|_| {});
                if st.rc.is_some() {
                    let ctx = &q.pd.context().shared;
                    st.rc = Some(RcState::new(
                        q.cap.max_send_wr as usize,
                        q.cap.max_inline_data as usize,
                        ctx.link.max_transport_len(true),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Moves a UD QP from RESET through INIT (port 1, P_Key index 0, `qkey`) and RTR to
    /// RTS with first send PSN `sq_psn`: the three `modify` calls every UD application
    /// makes, in one.
    pub fn bring_up_ud(&self, qkey: u32, sq_psn: u32) -> Result<(), Error> {
        self.modify(
            &QpAttr {
                qkey,
                ..QpAttr::new(QpState::Init)
            },
            AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
        )?;
        self.modify(&QpAttr::new(QpState::Rtr), AttrMask::STATE)?;
        self.modify(
            &QpAttr {
                sq_psn,
                ..QpAttr::new(QpState::Rts)
            },
            AttrMask::STATE | AttrMask::SQ_PSN,
        )
    }

    /// Moves an RC QP from RESET through INIT, RTR and RTS towards the peer `peer`
    /// describes, with the timers ibv_rc_pingpong uses (ACK timeout 14, i.e. 67 ms,
    /// seven retries, RNR retried for ever, RNR timer 12): the three `modify` calls every RC
    /// application makes once it has the peer's GID, QPN and PSN, in one.
    pub fn bring_up_rc(&self, peer: &RcPeer) -> Result<(), Error> {
        self.modify(
            &QpAttr {
                qp_access_flags: peer.access,
                ..QpAttr::new(QpState::Init)
            },
            AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::ACCESS_FLAGS,
        )?;
        self.modify(
            &QpAttr {
                ah_attr: Some(peer.ah),
                path_mtu: peer.path_mtu,
                dest_qp_num: peer.qpn,
                rq_psn: peer.psn,
                max_dest_rd_atomic: peer.rd_atomic,
                min_rnr_timer: 12,
                ..QpAttr::new(QpState::Rtr)
            },
            AttrMask::STATE
                | AttrMask::AV
                | AttrMask::PATH_MTU
                | AttrMask::DEST_QPN
                | AttrMask::RQ_PSN
                | AttrMask::MAX_DEST_RD_ATOMIC
                | AttrMask::MIN_RNR_TIMER,
        )?;
        self.modify(
            &QpAttr {
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                sq_psn: peer.our_psn,
                max_rd_atomic: peer.rd_atomic,
                ..QpAttr::new(QpState::Rts)
            },
            AttrMask::STATE
                | AttrMask::TIMEOUT
                | AttrMask::RETRY_CNT
                | AttrMask::RNR_RETRY
                | AttrMask::SQ_PSN
                | AttrMask::MAX_QP_RD_ATOMIC,
        )
    }

    /// Posts a receive work request (`ibv_post_recv`).
    ///
    /// # Safety
    ///
    /// The memory the scatter/gather list names must stay valid, and not be otherwise
    /// accessed, until the request's completion has been polled.
    pub unsafe fn post_recv(&self, wr: &RecvWr<'_>) -> Result<(), Error> {
        let q = &self.shared;
        if q.srq.is_some() {
            return Err(Error::invalid("the QP takes its receives from an SRQ"));
        }
        if wr.sg_list.len() > q.cap.max_recv_sge as usize {
            return Err(Error::invalid("more SGEs than max_recv_sge"));
        }
        let mut st = q.st.lock();
        let state = st.state;
        match state {
            QpState::Reset => Err(Error::invalid("a QP in RESET takes no receives")),
            QpState::Err => {
                drop(st);
                q.recv_cq.shared.push(
                    q.completion(wr.wr_id, WcStatus::WrFlushErr, WcOpcode::Recv),
                    false,
                );
                Ok(())
            }
            _ if st.rq.push(wr) => {
                q.due.store(true, Ordering::Release);
                Ok(())
            }
            _ => Err(Error::Full("receive queue")),
        }
    }

    /// Posts a send work request (`ibv_post_send`). A UD send goes on the wire before this
    /// returns.
    ///
    /// # Safety
    ///
    /// Unless the request is `INLINE`, the memory its scatter/gather list names must stay
    /// valid until its completion has been polled.
    pub unsafe fn post_send(&self, wr: &SendWr<'_>) -> Result<(), Error> {
        // An application that posts is busy, not gone to wait on memory.
        let _busy = self.shared.pd.context().shared.app_posting();
        // SAFETY: the caller's contract is the one `send_ud` and `send_rc` need.
        unsafe {
            match self.shared.qp_type {
                QpType::Rc => self.shared.send_rc(wr),
                _ => self.shared.send_ud(wr),
            }
        }
    }
}

fn same_context(pd: &Pd, cq: &Cq) -> bool {
    Arc::ptr_eq(&pd.context().shared, &cq.context().shared)
}

/// Names a QP without owning it: `rdma_cm_id.qp`, which the application destroys with
/// `ibv_destroy_qp` or `rdma_destroy_qp` whenever it likes. Calls on a destroyed QP fail
/// with EINVAL.
#[derive(Clone)]
pub struct QpHandle {
    shared: std::sync::Weak<QpShared>,
}

impl std::fmt::Debug for QpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QpHandle")
            .field("qpn", &self.shared.upgrade().map(|s| s.qpn))
            .finish()
    }
}

impl QpHandle {
    /// Runs `f` on the QP while it lives.
    fn with<R>(&self, f: impl FnOnce(&QueuePair) -> R) -> Result<R, Error> {
        let shared = self
            .shared
            .upgrade()
            .ok_or(Error::invalid("the QP was destroyed"))?;
        let qp = std::mem::ManuallyDrop::new(QueuePair { shared });
        let r = f(&qp);
        // SAFETY: `qp` is never used again and its destructor never runs (ManuallyDrop),
        // so moving its one field out drops this borrowed reference exactly once, without
        // destroying the QP as `QueuePair::drop` would.
        drop(unsafe { std::ptr::read(&qp.shared) });
        Ok(r)
    }

    /// [`QueuePair::modify`].
    pub fn modify(&self, attr: &QpAttr, mask: AttrMask) -> Result<(), Error> {
        self.with(|qp| qp.modify(attr, mask))?
    }

    /// [`QueuePair::qpn`].
    pub fn qpn(&self) -> Result<Qpn, Error> {
        self.with(|qp| qp.qpn())
    }

    /// [`QueuePair::qp_type`].
    pub fn qp_type(&self) -> Result<QpType, Error> {
        self.with(|qp| qp.qp_type())
    }

    /// [`QueuePair::has_srq`].
    pub fn has_srq(&self) -> bool {
        self.with(|qp| qp.has_srq()).unwrap_or(false)
    }

    /// [`QueuePair::state`].
    pub fn state(&self) -> Result<QpState, Error> {
        self.with(|qp| qp.state())
    }

    /// [`QueuePair::qkey`].
    pub fn qkey(&self) -> Result<u32, Error> {
        self.with(|qp| qp.qkey())
    }

    /// True if both name one QP.
    pub fn is(&self, qp: &QueuePair) -> bool {
        std::ptr::eq(self.shared.as_ptr(), Arc::as_ptr(&qp.shared))
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        let ctx = &self.shared.pd.context().shared;
        if self.shared.is_rc() {
            // What the QP owes its peer leaves before the QP goes, as a NIC would have sent
            // it already: an ACK that progress left for the application's next poll, say,
            // which never comes when the application destroys the QP instead.
            let mut io = ctx.io.lock();
            let now = io.now();
            let mut st = self.shared.st.lock();
            self.shared.rc_service(ctx, &mut **io, &mut st, now);
            drop(st);
            let _ = io.flush();
        }
        ctx.qps.write().remove(&self.shared.qpn.value());
    }
}

impl QpShared {
    fn completion(&self, wr_id: u64, status: WcStatus, opcode: WcOpcode) -> WorkCompletion {
        WorkCompletion {
            wr_id,
            status,
            opcode,
            qp_num: self.qpn.value(),
            ..WorkCompletion::default()
        }
    }

    /// Moves to ERR after a failed operation and flushes what is outstanding.
    fn fail(&self) {
        self.st.lock().state = QpState::Err;
        self.flush();
    }

    /// Posts an RC send and lets the engine send what it can.
    ///
    /// # Safety
    ///
    /// As [`QueuePair::post_send`].
    unsafe fn send_rc(&self, wr: &SendWr<'_>) -> Result<(), Error> {
        let ctx: &ContextShared = &self.pd.context().shared;
        if wr.sg_list.len() > self.cap.max_send_sge as usize {
            return Err(Error::invalid("more SGEs than max_send_sge"));
        }
        if wr.send_flags.contains(SendFlags::INLINE) {
            let len: u64 = wr.sg_list.iter().map(|s| u64::from(s.length)).sum();
            if len > u64::from(self.cap.max_inline_data) {
                return Err(Error::invalid("inline data longer than max_inline_data"));
            }
            if !matches!(
                wr.opcode,
                SendOpcode::Send
                    | SendOpcode::SendWithImm
                    | SendOpcode::RdmaWrite
                    | SendOpcode::RdmaWriteWithImm
            ) {
                return Err(Error::invalid("only SENDs and WRITEs carry inline data"));
            }
        }
        match wr.opcode {
            SendOpcode::RdmaWrite | SendOpcode::RdmaWriteWithImm | SendOpcode::RdmaRead
                if wr.rdma.is_none() =>
            {
                return Err(Error::invalid(
                    "an RDMA WRITE or READ needs a remote address and key",
                ));
            }
            SendOpcode::AtomicCmpAndSwp | SendOpcode::AtomicFetchAndAdd => {
                let Some(a) = wr.atomic else {
                    return Err(Error::invalid("an atomic needs its target and operands"));
                };
                if !a.remote_addr.is_multiple_of(8) {
                    return Err(Error::invalid(
                        "an atomic's remote address must be 8-aligned",
                    ));
                }
                if wr.sg_list.iter().map(|s| u64::from(s.length)).sum::<u64>() != 8 {
                    return Err(Error::invalid("an atomic's local buffer must be 8 bytes"));
                }
            }
            _ => {}
        }
        let signaled = self.sq_sig_all || wr.send_flags.contains(SendFlags::SIGNALED);
        // Backend first, then the QP: the order progress takes them in.
        let mut io = ctx.io.lock();
        let mut st = self.st.lock();
        match st.state {
            QpState::Rts => {}
            QpState::Err => {
                drop(st);
                let wc = self.completion(wr.wr_id, WcStatus::WrFlushErr, WcOpcode::Send);
                self.send_cq.shared.push(wc, false);
                return Ok(());
            }
            _ => return Err(Error::invalid("sends need the QP in RTS")),
        }
        let rc = st.rc.as_mut().expect("RC QPs have RC state");
        // SAFETY: post_send's contract: an INLINE request's bytes are readable now.
        unsafe { rc.post(wr, signaled) }.map_err(|_| Error::Full("send queue"))?;
        self.due.store(true, Ordering::Release);
        let now = io.now();
        self.rc_service(ctx, &mut **io, &mut st, now);
        ctx.after_post(&mut **io)
    }

    /// Runs an RC QP's timers, sends what its engine has to send, and delivers its
    /// completions; moves the QP to ERR if the engine gave up.
    fn rc_service(&self, ctx: &ContextShared, io: &mut dyn FrameIo, st: &mut QpMut, now: Instant) {
        self.rc_service_inner(ctx, io, st, now);
        let next = st.rc.as_ref().and_then(RcState::next_timeout);
        self.timer_at
            .store(Deadline::encode(next), Ordering::Release);
    }

    fn rc_service_inner(
        &self,
        ctx: &ContextShared,
        io: &mut dyn FrameIo,
        st: &mut QpMut,
        now: Instant,
    ) {
        let QpMut { rc, rq, state, .. } = st;
        let Some(rc) = rc.as_mut() else { return };
        let Some(ah) = rc.ah else { return };
        let dest = std::net::SocketAddr::new(ah.dgid.ip(), ctx.link.port);
        if rc.next_timeout().is_some_and(|t| t <= now) {
            rc.handle_timeout(now);
        }
        let meta = TxMeta::to(dest, self.src_port);
        rc.transmit(
            now,
            io,
            &ctx.mrs.read(),
            self.pd.handle(),
            &meta,
            self.receives(rq),
        );
        self.deliver_rc_completions(rc);
        let qp_num = self.qpn.value();
        if rc.failed() && *state != QpState::Err {
            *state = QpState::Err;
            rc.flush(qp_num, |wc, send| {
                let cq = if send { &self.send_cq } else { &self.recv_cq };
                cq.shared.push(wc, false)
            });
            rq.drain(|wr_id| {
                self.recv_cq.shared.push(
                    self.completion(wr_id, WcStatus::WrFlushErr, WcOpcode::Recv),
                    false,
                )
            });
        }
    }

    /// Where this QP's receives come from: its SRQ, or its own queue `rq`.
    fn receives<'a>(&'a self, rq: &'a mut RecvQueue) -> Receives<'a> {
        match &self.srq {
            Some(srq) => Receives::Shared(&srq.shared),
            None => Receives::Own(rq),
        }
    }

    /// Hands a received RC packet to the QP's engine (progress sends its answers).
    pub(crate) fn receive_rc(&self, ctx: &ContextShared, packet: &[u8], now: Instant) {
        let mut st = self.st.lock();
        if !matches!(st.state, QpState::Rtr | QpState::Rts | QpState::Sqd) {
            return count(&ctx.drops.qp_state);
        }
        let QpMut { rc, rq, .. } = &mut *st;
        let rx = self.receives(rq);
        let taken = rc
            .as_mut()
            .is_some_and(|rc| rc.receive(now, packet, &ctx.mrs.read(), self.pd.handle(), rx));
        if taken {
            self.due.store(true, Ordering::Release);
        } else {
            count(&ctx.drops.qp_state);
        }
    }

    /// When this QP's RC timers are next due.
    pub(crate) fn rc_timeout(&self) -> Option<Instant> {
        self.st.lock().rc.as_ref().and_then(RcState::next_timeout)
    }

    /// True for RC QPs.
    pub(crate) fn is_rc(&self) -> bool {
        self.qp_type == QpType::Rc
    }

    /// Services the QP with the backend already locked (from progress), at `now` (which
    /// `now_at` is, as [`Deadline::encode`] gives it). With `hold`, if there are
    /// completions to hand over, hands over only those and returns true: the rest waits
    /// for the next pass.
    pub(crate) fn rc_progress(
        &self,
        ctx: &ContextShared,
        io: &mut dyn FrameIo,
        (now, now_at): (Instant, u64),
        hold: bool,
    ) -> bool {
        // An idle QP (nothing reached it, no timer due) has nothing to send or complete.
        if !self.due.swap(false, Ordering::AcqRel)
            && !Deadline::passed(self.timer_at.load(Ordering::Acquire), now_at)
        {
            return false;
        }
        let mut st = self.st.lock();
        if hold {
            if let Some(rc) = st.rc.as_mut() {
                if self.deliver_rc_completions(rc) > 0 {
                    // What it has to send waits for the next pass.
                    self.due.store(true, Ordering::Release);
                    return true;
                }
            }
        }
        self.rc_service(ctx, io, &mut st, now);
        false
    }

    /// Moves the RC engine's completions to the CQs; returns how many it moved.
    fn deliver_rc_completions(&self, rc: &mut RcState) -> usize {
        let mut moved = 0;
        rc.completions(self.qpn.value(), |wc, send| {
            moved += 1;
            if send {
                self.send_cq.shared.push(wc, false)
            } else {
                self.recv_cq.shared.push(wc, false)
            }
        });
        moved
    }

    /// Completes every posted receive with `WR_FLUSH_ERR`.
    fn flush(&self) {
        // Receives posted to an SRQ belong to no QP; they stay for the others.
        loop {
            let wr_id = {
                let mut st = self.st.lock();
                let Some(slot) = st.rq.front() else { return };
                let id = slot.wr_id;
                st.rq.pop();
                id
            };
            self.recv_cq.shared.push(
                self.completion(wr_id, WcStatus::WrFlushErr, WcOpcode::Recv),
                false,
            );
        }
    }

    /// # Safety
    ///
    /// As [`QueuePair::post_send`].
    unsafe fn send_ud(&self, wr: &SendWr<'_>) -> Result<(), Error> {
        let ctx: &ContextShared = &self.pd.context().shared;
        if !matches!(wr.opcode, SendOpcode::Send | SendOpcode::SendWithImm) {
            return Err(Error::invalid("UD QPs only SEND"));
        }
        let dest = wr
            .ud
            .ok_or(Error::invalid("a UD send needs a destination"))?;
        if wr.sg_list.len() > self.cap.max_send_sge as usize {
            return Err(Error::invalid("more SGEs than max_send_sge"));
        }
        let len: u64 = wr.sg_list.iter().map(|s| u64::from(s.length)).sum();
        let inline = wr.send_flags.contains(SendFlags::INLINE);
        if inline && len > u64::from(self.cap.max_inline_data) {
            return Err(Error::invalid("inline data longer than max_inline_data"));
        }
        let signaled = self.sq_sig_all || wr.send_flags.contains(SendFlags::SIGNALED);
        let (psn, qkey) = {
            let mut st = self.st.lock();
            match st.state {
                QpState::Rts => {}
                QpState::Err => {
                    let wc = self.completion(wr.wr_id, WcStatus::WrFlushErr, WcOpcode::Send);
                    self.complete_send(&mut st, Some(wc), true);
                    return Ok(());
                }
                _ => return Err(Error::invalid("sends need the QP in RTS")),
            }
            let psn = st.sq_psn;
            st.sq_psn = psn + 1;
            // A Q_Key with the high bit set means "use the QP's own" (IBTA 10.2.5).
            let qkey = if dest.remote_qkey.value() & 0x8000_0000 != 0 {
                st.qkey
            } else {
                dest.remote_qkey
            };
            (psn, qkey)
        };
        let fail = |status| {
            let wc = self.completion(wr.wr_id, status, WcOpcode::Send);
            self.complete_send(&mut self.st.lock(), Some(wc), true);
            self.fail();
            Ok(())
        };
        if len > ctx.port.active_mtu.bytes() as u64 {
            return fail(WcStatus::LocLenErr);
        }
        // Where each SGE's bytes are: checked against the PD's regions (inline data is the
        // caller's own memory and needs no key).
        let mut parts = [(0usize, 0usize); MAX_SGE];
        {
            let mrs = ctx.mrs.read();
            let pd = self.pd.handle();
            for (part, s) in parts.iter_mut().zip(wr.sg_list) {
                *part = if inline {
                    (s.addr as usize, s.length as usize)
                } else {
                    match local_bytes(&mrs, pd, s, AccessFlags::empty()) {
                        Some(p) => p,
                        None => {
                            drop(mrs);
                            return fail(WcStatus::LocProtErr);
                        }
                    }
                };
            }
        }
        let parts = &parts[..wr.sg_list.len()];
        let header = UdHeader {
            dest_qp: dest.remote_qpn,
            qkey,
            src_qp: self.qpn,
            psn,
            imm: (wr.opcode == SendOpcode::SendWithImm).then_some(wr.imm_data),
            solicited: wr.send_flags.contains(SendFlags::SOLICITED),
        };
        let meta = TxMeta {
            dst: dest.ah.dest,
            src_port: self.src_port,
            tos: dest.ah.attr.traffic_class,
            ttl: dest.ah.attr.hop_limit,
        };
        let len = len as usize;
        if let Some(index) = self.in_place_index(ctx, wr, &meta) {
            return self.send_in_place(ctx, wr, &header, &meta, index, len, signaled);
        }
        let mut write = |buf: &mut [u8]| {
            let Ok(at) = header.emit(len, buf) else {
                return 0;
            };
            let mut off = at;
            for &(ptr, n) in parts {
                // SAFETY: the bytes lie in a registered region (or are inline data the caller
                // vouches for), which the caller keeps valid (post_send's contract).
                let src = unsafe { std::slice::from_raw_parts(ptr as *const u8, n) };
                buf[off..off + n].copy_from_slice(src);
                off += n;
            }
            header.packet_len(len)
        };
        let mut io = ctx.io.lock();
        let mut sent = false;
        for _ in 0..1000 {
            if io.send(&meta, &mut write)? {
                sent = true;
                break;
            }
            io.flush()?;
        }
        // Ring the doorbell now, unless the application is polling: then its next poll
        // does (progress flushes), and back-to-back sends share one kick of the backend.
        // A thread about to wait for a CQ event flushes first (Context::get_cq_event).
        ctx.after_post(&mut **io)?;
        drop(io);
        if !sent {
            return Err(Error::Full("the backend's transmit ring stayed full"));
        }
        let mut wc = self.completion(wr.wr_id, WcStatus::Success, WcOpcode::Send);
        wc.byte_len = len as u32;
        self.complete_send(&mut self.st.lock(), signaled.then_some(wc), true);
        Ok(())
    }

    /// Records a send posted: `done` ones complete now unless an earlier in-place send is
    /// still in flight, in which case they wait behind it; returns the send's sequence
    /// number. Completions go out in posting order either way.
    fn complete_send(&self, st: &mut QpMut, wc: Option<WorkCompletion>, done: bool) -> u64 {
        let seq = st.next_send;
        st.next_send += 1;
        if done && st.held.is_empty() {
            if let Some(wc) = wc {
                self.send_cq.shared.push(wc, false);
            }
        } else {
            st.held.push_back(HeldSend { seq, wc, done });
        }
        seq
    }

    /// Marks send `seq` done and delivers every completion no longer held back.
    fn send_done(&self, seq: u64) {
        let mut st = self.st.lock();
        let Some(front) = st.held.front().map(|h| h.seq) else {
            return;
        };
        if let Some(held) = seq
            .checked_sub(front)
            .and_then(|i| st.held.get_mut(i as usize))
        {
            held.done = true;
        }
        while st.held.front().is_some_and(|h| h.done) {
            if let Some(wc) = st.held.pop_front().and_then(|h| h.wc) {
                self.send_cq.shared.push(wc, false);
            }
        }
    }

    /// The backend buffer a send goes out of in place: a single SGE naming exactly the UD
    /// payload slot of an in-place `TxBufs` buffer.
    fn in_place_index(&self, ctx: &ContextShared, wr: &SendWr<'_>, meta: &TxMeta) -> Option<usize> {
        let [sge] = wr.sg_list else { return None };
        if wr.send_flags.contains(SendFlags::INLINE) {
            return None;
        }
        let bufs = ctx.tx_bufs.read().get(&sge.lkey)?.upgrade()?;
        bufs.in_place_index(
            sge.addr,
            sge.length as usize,
            meta.dst.is_ipv6(),
            wr.opcode == SendOpcode::SendWithImm,
        )
    }

    /// Sends from an in-place buffer: the UD headers are written right before the payload,
    /// the backend adds its own, and the completion comes when the medium is done.
    #[allow(clippy::too_many_arguments)]
    fn send_in_place(
        self: &QpShared,
        ctx: &ContextShared,
        wr: &SendWr<'_>,
        header: &UdHeader,
        meta: &TxMeta,
        index: usize,
        len: usize,
        signaled: bool,
    ) -> Result<(), Error> {
        let me = ctx
            .qps
            .read()
            .get(&self.qpn.value())
            .cloned()
            .ok_or(Error::invalid("the QP is being destroyed"))?;
        let mut io = ctx.io.lock();
        let mut in_place = ctx.in_place.lock();
        if in_place.contains_key(&index) {
            return Err(Error::Busy("the send buffer is still in flight"));
        }
        let headers = header.headers_len();
        let packet_len = header.packet_len(len);
        // SAFETY: the SGE was checked against the buffers' registration (in send_ud) and
        // names the payload slot of a buffer that is not in flight; the UD headers go in the
        // bytes just before it and the pad just after, all inside the same buffer, which the
        // poster does not touch until the completion (post_send's contract).
        let packet = unsafe {
            std::slice::from_raw_parts_mut(
                (wr.sg_list[0].addr as usize - headers) as *mut u8,
                packet_len,
            )
        };
        header
            .emit(len, packet)
            .map_err(|_| Error::invalid("UD headers do not fit"))?;
        for _ in 0..1000 {
            if io.send_reserved(meta, index, packet_len)? {
                let mut wc = self.completion(wr.wr_id, WcStatus::Success, WcOpcode::Send);
                wc.byte_len = len as u32;
                let seq = self.complete_send(&mut self.st.lock(), signaled.then_some(wc), false);
                in_place.insert(index, InPlaceSend { qp: me, seq });
                drop(in_place);
                ctx.after_post(&mut **io)?;
                return Ok(());
            }
            io.flush()?;
        }
        Err(Error::Full("the backend's transmit ring stayed full"))
    }

    /// Completes an in-place send the medium has finished with.
    pub(crate) fn in_place_done(&self, send: &InPlaceSend) {
        self.send_done(send.seq);
    }

    /// Delivers a UD SEND to the next posted receive.
    pub(crate) fn receive_ud(
        &self,
        ctx: &ContextShared,
        meta: &RxMeta,
        p: &UdPacket<'_>,
        transport_len: usize,
    ) {
        let grh = ud::grh(meta.src.ip(), meta.dst, transport_len);
        let fill =
            |pd: &Pd, slot: &RecvSlot| scatter(ctx, pd, &slot.sges[..slot.len], &[&grh, p.payload]);
        let taken = {
            let mut st = self.st.lock();
            if !matches!(st.state, QpState::Rtr | QpState::Rts | QpState::Sqd) {
                return count(&ctx.drops.qp_state);
            }
            if p.header.qkey != st.qkey {
                return count(&ctx.drops.bad_qkey);
            }
            match &self.srq {
                // The SRQ has its own lock; the QP's is not held while taking from it.
                Some(_) => None,
                None => {
                    let taken = st.rq.front().map(|slot| (slot.wr_id, fill(&self.pd, slot)));
                    if taken.is_some() {
                        st.rq.pop();
                    }
                    taken
                }
            }
        };
        let taken = match (&self.srq, taken) {
            (Some(srq), _) => srq.shared.take(fill),
            (None, taken) => taken,
        };
        let Some((wr_id, status)) = taken else {
            return count(&ctx.drops.rq_empty);
        };
        let mut wc = self.completion(wr_id, status, WcOpcode::Recv);
        if status == WcStatus::Success {
            wc.byte_len = (ud::GRH_LEN + p.payload.len()) as u32;
            wc.src_qp = p.header.src_qp.value();
            wc.wc_flags = WcFlags::GRH;
            if let Some(imm) = p.header.imm {
                wc.imm_data = super::completion::ImmData::from_wire(imm.to_be_bytes());
                wc.wc_flags.insert(WcFlags::WITH_IMM);
            }
            self.recv_cq.shared.push(wc, p.header.solicited);
        } else {
            self.recv_cq.shared.push(wc, p.header.solicited);
            self.fail();
        }
    }
}

/// The most scatter/gather entries a work request may have (the device's `max_sge`).
const MAX_SGE: usize = 32;

/// Where the bytes an SGE names are in our address space: `(pointer, length)`, after
/// checking the SGE against the PD's regions for `need`. `None` if the check fails.
fn local_bytes(mrs: &MrTable, pd: PdHandle, s: &Sge, need: AccessFlags) -> Option<(usize, usize)> {
    match mrs.check_local(pd, s.lkey, s.addr, u64::from(s.length), need) {
        Ok(Some(mr)) => Some((
            mr.addr() + mr.range_offset(s.addr, u64::from(s.length))?,
            s.length as usize,
        )),
        Ok(None) => Some((0, 0)),
        Err(_) => None,
    }
}

/// Copies `parts` in order into the buffers `sges` name, after checking each against the
/// PD's registered regions for local write access.
fn scatter(ctx: &ContextShared, pd: &Pd, sges: &[Sge], parts: &[&[u8]]) -> WcStatus {
    let room: u64 = sges.iter().map(|s| u64::from(s.length)).sum();
    let need: usize = parts.iter().map(|p| p.len()).sum();
    if (need as u64) > room {
        return WcStatus::LocLenErr;
    }
    let mut dests = [(0usize, 0usize); MAX_SGE];
    {
        let mrs = ctx.mrs.read();
        for (d, s) in dests.iter_mut().zip(sges) {
            match local_bytes(&mrs, pd.handle(), s, AccessFlags::LOCAL_WRITE) {
                Some(p) => *d = p,
                None => return WcStatus::LocProtErr,
            }
        }
    }
    let (mut sge, mut off) = (0usize, 0usize);
    for part in parts {
        let mut part: &[u8] = part;
        while !part.is_empty() {
            let (ptr, len) = dests[sge];
            let n = part.len().min(len - off);
            // SAFETY: the range lies inside a region registered for local write in this PD
            // (checked above), which the poster keeps valid until the completion is polled
            // (post_recv's contract).
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), (ptr + off) as *mut u8, n) };
            part = &part[n..];
            off += n;
            if off == len {
                sge += 1;
                off = 0;
            }
        }
    }
    WcStatus::Success
}
