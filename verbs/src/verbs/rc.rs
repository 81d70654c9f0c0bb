//! RC queue pairs: the [`RcEngine`](crate::engine::rc::RcEngine) of each QP, fed by
//! `post_send`, by received packets and by its timers, with application memory reached
//! through the QP's PD (every access checked against the registered regions).
//!
//! SEND, SEND with immediate, RDMA WRITE and RDMA WRITE with immediate, RDMA READ, and the
//! atomics (compare and swap, fetch and add), which are atomic against each other and
//! against the CPU's atomics on the same 8 bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::completion::{ImmData, WcFlags, WcOpcode, WcStatus, WorkCompletion};
use super::device::Mtu;
use super::mr::{AccessFlags, MrTable, PdHandle, RemoteAccessError};
use super::recv_queue::{RecvQueue, RecvSlot};
use super::srq::SrqShared;
use super::wr::{SendFlags, SendOpcode, SendWr, Sge};
use crate::engine::rc::segment::MessageKind;
use crate::engine::rc::{
    AtomicOp, Memory, RcCompletion, RcConfig, RcEngine, RcStatus, SendRequest,
};
use crate::net::{FrameIo, TxMeta, send_copy};
use crate::wire::{NakCode, Psn, Qpn, Rkey};

/// The most scatter/gather entries a work request may have.
pub(crate) const MAX_SGE: usize = 32;

/// A send posted and not yet completed.
#[derive(Clone, Copy)]
struct PostedSend {
    wr_id: u64,
    opcode: SendOpcode,
    signaled: bool,
    len: usize,
    /// Its bytes were copied at post time into its slot of `RcState::inline`.
    inline: bool,
    sges: [Sge; MAX_SGE],
    n: usize,
}

/// The receive a multi-packet message is landing in.
#[derive(Clone, Copy)]
struct ActiveRecv {
    /// The engine's handle for it: unique, unlike the application's `wr_id` (perftest
    /// posts every receive with the same one).
    handle: u64,
    sges: [Sge; MAX_SGE],
    n: usize,
}

/// The receives the engine took and has not completed yet, oldest first: the `wr_id` of
/// each engine handle. An RC QP completes its receives in the order it takes them.
struct TakenRecvs {
    next_handle: u64,
    fifo: VecDeque<(u64, u64)>,
}

impl TakenRecvs {
    fn new() -> TakenRecvs {
        TakenRecvs {
            next_handle: 0,
            // One progress pass completes at most a batch of messages; more grows the queue.
            fifo: VecDeque::with_capacity(128),
        }
    }

    /// A new handle for receive `wr_id`.
    fn take(&mut self, wr_id: u64) -> u64 {
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        self.fifo.push_back((handle, wr_id));
        handle
    }

    /// The `wr_id` of completed receive `handle` (and forgets any taken before it that
    /// never completed).
    fn complete(&mut self, handle: u64) -> Option<u64> {
        while let Some((h, wr_id)) = self.fifo.pop_front() {
            if h == handle {
                return Some(wr_id);
            }
        }
        None
    }
}

const NO_SGE: Sge = Sge {
    addr: 0,
    length: 0,
    lkey: super::Lkey(0),
};

/// What an RC QP learns on its way to RTS, and its engine from RTR on (the responder at
/// RTR, the requester too at RTS).
pub(crate) struct RcState {
    /// Where the peer is: RTR's address vector.
    pub(crate) ah: Option<super::ah::AhAttr>,
    pub(crate) dest_qpn: Qpn,
    pub(crate) rq_psn: Psn,
    pub(crate) path_mtu: Mtu,
    pub(crate) timeout: u8,
    pub(crate) retry_cnt: u8,
    pub(crate) rnr_retry: u8,
    pub(crate) min_rnr_timer: u8,
    pub(crate) max_rd_atomic: u8,
    pub(crate) max_dest_rd_atomic: u8,
    pub(crate) access: AccessFlags,
    pub(crate) engine: Option<RcEngine>,
    /// Posted sends by engine handle (the slot index); `free` lists the empty slots.
    sends: Vec<Option<PostedSend>>,
    free: Vec<usize>,
    /// Inline data of the posted sends: `max_inline` bytes per send slot.
    inline: Box<[u8]>,
    max_inline: usize,
    active_recv: Option<ActiveRecv>,
    taken: TakenRecvs,
    scratch: Vec<u8>,
}

impl RcState {
    pub(crate) fn new(max_send_wr: usize, max_inline: usize, mtu_bytes: usize) -> RcState {
        RcState {
            ah: None,
            dest_qpn: Qpn::new_masked(0),
            rq_psn: Psn::ZERO,
            path_mtu: Mtu::Mtu1024,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 12,
            max_rd_atomic: 0,
            max_dest_rd_atomic: 0,
            access: AccessFlags::empty(),
            engine: None,
            sends: vec![None; max_send_wr.max(1)],
            free: (0..max_send_wr.max(1)).rev().collect(),
            inline: vec![0; max_send_wr.max(1) * max_inline].into_boxed_slice(),
            max_inline,
            active_recv: None,
            taken: TakenRecvs::new(),
            scratch: vec![0; mtu_bytes + 128],
        }
    }

    /// The engine's configuration from the attributes given so far, first send PSN
    /// `sq_psn`.
    fn config(&self, sq_psn: Psn) -> RcConfig {
        // IBTA: the local ACK timeout is 4.096 us * 2^timeout; 0 means wait forever.
        let timeout =
            (self.timeout != 0).then(|| Duration::from_nanos(4096u64 << self.timeout.min(31)));
        RcConfig {
            dest_qpn: self.dest_qpn,
            mtu: self.path_mtu.bytes(),
            sq_psn,
            rq_psn: self.rq_psn,
            timeout,
            retry_cnt: self.retry_cnt,
            rnr_retry: self.rnr_retry,
            min_rnr_timer: self.min_rnr_timer,
            max_rd_atomic: self.max_rd_atomic,
            max_dest_rd_atomic: self.max_dest_rd_atomic,
        }
    }

    /// Starts the engine's responder (the move to RTR): from now on the QP answers the
    /// peer's requests (SENDs, WRITEs, READs, atomics) and acknowledges them, as an RC QP
    /// in RTR must; it sends no requests of its own until [`RcState::start_requester`].
    pub(crate) fn start_responder(&mut self) {
        self.engine = Some(RcEngine::new(self.config(Psn::ZERO)));
    }

    /// Starts the engine's requester (the move to RTS) with first send PSN `sq_psn`; the
    /// responder keeps its state.
    pub(crate) fn start_requester(&mut self, sq_psn: Psn) {
        let config = self.config(sq_psn);
        match self.engine.as_mut() {
            Some(engine) => engine.start_requester(config),
            None => self.engine = Some(RcEngine::new(config)),
        }
    }

    /// Queues a send request (checked by the caller: an INLINE one carries at most
    /// `max_inline` bytes); `Err` when the send queue is full.
    ///
    /// # Safety
    ///
    /// For an INLINE request, the SGEs' bytes must be readable now (`post_send`'s contract);
    /// they are copied here and not touched again.
    pub(crate) unsafe fn post(&mut self, wr: &SendWr<'_>, signaled: bool) -> Result<(), ()> {
        let slot = self.free.pop().ok_or(())?;
        let mut sges = [NO_SGE; MAX_SGE];
        sges[..wr.sg_list.len()].copy_from_slice(wr.sg_list);
        let len = wr.sg_list.iter().map(|s| s.length as usize).sum();
        let inline = wr.send_flags.contains(SendFlags::INLINE);
        if inline {
            let mut at = slot * self.max_inline;
            for s in wr.sg_list {
                let n = s.length as usize;
                // SAFETY: the caller's bytes, readable now (this function's contract); the
                // caller checked that they fit the slot.
                let src = unsafe { std::slice::from_raw_parts(s.addr as *const u8, n) };
                self.inline[at..at + n].copy_from_slice(src);
                at += n;
            }
        }
        self.sends[slot] = Some(PostedSend {
            wr_id: wr.wr_id,
            opcode: wr.opcode,
            signaled,
            len,
            inline,
            sges,
            n: wr.sg_list.len(),
        });
        let kind = match wr.opcode {
            SendOpcode::Send => MessageKind::Send,
            SendOpcode::SendWithImm => MessageKind::SendWithImm,
            SendOpcode::RdmaWrite => MessageKind::Write,
            SendOpcode::RdmaWriteWithImm => MessageKind::WriteWithImm,
            SendOpcode::RdmaRead => MessageKind::Read,
            SendOpcode::AtomicCmpAndSwp => MessageKind::CompareSwap,
            SendOpcode::AtomicFetchAndAdd => MessageKind::FetchAdd,
        };
        let (remote, atomic) = match (kind, wr.atomic) {
            (MessageKind::CompareSwap | MessageKind::FetchAdd, Some(a)) => {
                (Some((a.remote_addr, a.rkey)), (a.compare_add, a.swap))
            }
            (MessageKind::Send | MessageKind::SendWithImm, _) => (None, (0, 0)),
            _ => (wr.rdma, (0, 0)),
        };
        if let Some(engine) = self.engine.as_mut() {
            engine.post_send(SendRequest {
                handle: slot as u64,
                kind,
                len,
                imm: wr.imm_data,
                remote: remote.map(|(va, key)| (va, Rkey::new(key.0))),
                atomic,
                fence: wr.send_flags.contains(SendFlags::FENCE),
            });
        }
        Ok(())
    }

    /// Sends what the engine has to send.
    pub(crate) fn transmit(
        &mut self,
        now: Instant,
        io: &mut dyn FrameIo,
        mrs: &MrTable,
        pd: PdHandle,
        meta: &TxMeta,
        rx: Receives<'_>,
    ) {
        let Some((engine, mut mem, scratch)) = self.parts(mrs, pd, rx) else {
            return;
        };
        while let Some(len) = engine.poll_transmit(now, scratch, &mut mem) {
            // A full ring after flushing drops the packet: the engine resends what is not
            // acknowledged.
            if !matches!(send_copy(io, meta, &scratch[..len]), Ok(true)) {
                let _ = io.flush();
                let _ = send_copy(io, meta, &scratch[..len]);
            }
        }
    }

    /// Hands a received packet to the engine; false if there is none (before RTR).
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        packet: &[u8],
        mrs: &MrTable,
        pd: PdHandle,
        rx: Receives<'_>,
    ) -> bool {
        let Some((engine, mut mem, _)) = self.parts(mrs, pd, rx) else {
            return false;
        };
        engine.handle_packet(now, packet, &mut mem);
        true
    }

    /// The engine, the memory it reaches through `mrs` and `rx`, and the transmit scratch
    /// buffer, borrowed apart; `None` before RTR.
    fn parts<'a>(
        &'a mut self,
        mrs: &'a MrTable,
        pd: PdHandle,
        rx: Receives<'a>,
    ) -> Option<(&'a mut RcEngine, RcMemory<'a>, &'a mut [u8])> {
        let engine = self.engine.as_mut()?;
        let mem = RcMemory {
            mrs,
            pd,
            access: self.access,
            sends: &self.sends,
            inline: &self.inline,
            max_inline: self.max_inline,
            rx,
            active: &mut self.active_recv,
            taken: &mut self.taken,
        };
        Some((engine, mem, &mut self.scratch))
    }

    /// Turns the engine's completions into work completions for the send and receive CQs.
    pub(crate) fn completions(&mut self, qp_num: u32, mut push: impl FnMut(WorkCompletion, bool)) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        while let Some(c) = engine.poll_completion() {
            match c {
                RcCompletion::Send { handle, status } => {
                    let Some(s) = self.sends.get_mut(handle as usize).and_then(Option::take) else {
                        continue;
                    };
                    self.free.push(handle as usize);
                    let status = wc_status(status);
                    if s.signaled || status != WcStatus::Success {
                        let opcode = match s.opcode {
                            SendOpcode::Send | SendOpcode::SendWithImm => WcOpcode::Send,
                            SendOpcode::RdmaWrite | SendOpcode::RdmaWriteWithImm => {
                                WcOpcode::RdmaWrite
                            }
                            SendOpcode::RdmaRead => WcOpcode::RdmaRead,
                            SendOpcode::AtomicCmpAndSwp => WcOpcode::CompSwap,
                            SendOpcode::AtomicFetchAndAdd => WcOpcode::FetchAdd,
                        };
                        let wc = WorkCompletion {
                            wr_id: s.wr_id,
                            status,
                            opcode,
                            qp_num,
                            byte_len: s.len as u32,
                            ..WorkCompletion::default()
                        };
                        push(wc, true);
                    }
                }
                RcCompletion::Recv {
                    handle,
                    status,
                    len,
                    imm,
                    write,
                } => {
                    if self.active_recv.is_some_and(|a| a.handle == handle) {
                        self.active_recv = None;
                    }
                    let Some(wr_id) = self.taken.complete(handle) else {
                        continue;
                    };
                    let mut wc = WorkCompletion {
                        wr_id,
                        status: wc_status(status),
                        opcode: if write {
                            WcOpcode::RecvRdmaWithImm
                        } else {
                            WcOpcode::Recv
                        },
                        qp_num,
                        src_qp: self.dest_qpn.value(),
                        byte_len: len as u32,
                        ..WorkCompletion::default()
                    };
                    if let Some(imm) = imm {
                        wc.imm_data = ImmData::from_wire(imm.to_be_bytes());
                        wc.wc_flags = WcFlags::WITH_IMM;
                    }
                    push(wc, false);
                }
            }
        }
    }

    /// When the engine next needs `handle_timeout`.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.engine.as_ref().and_then(RcEngine::poll_timeout)
    }

    /// Runs the engine's due timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(e) = self.engine.as_mut() {
            e.handle_timeout(now);
        }
    }

    /// True once the engine gave up (the QP must go to ERR).
    pub(crate) fn failed(&self) -> bool {
        self.engine.as_ref().is_some_and(RcEngine::is_failed)
    }

    /// Completes every posted send, and every receive the engine took and did not
    /// complete, with `WR_FLUSH_ERR` (the QP went to ERR): `push(wc, is_send)`. The engine
    /// stops but keeps an acknowledgement it owes, for the next `transmit`.
    pub(crate) fn flush(&mut self, qp_num: u32, mut push: impl FnMut(WorkCompletion, bool)) {
        for slot in 0..self.sends.len() {
            if let Some(s) = self.sends[slot].take() {
                self.free.push(slot);
                let wc = WorkCompletion {
                    wr_id: s.wr_id,
                    status: WcStatus::WrFlushErr,
                    opcode: WcOpcode::Send,
                    qp_num,
                    ..WorkCompletion::default()
                };
                push(wc, true);
            }
        }
        while let Some((_, wr_id)) = self.taken.fifo.pop_front() {
            let wc = WorkCompletion {
                wr_id,
                status: WcStatus::WrFlushErr,
                opcode: WcOpcode::Recv,
                qp_num,
                ..WorkCompletion::default()
            };
            push(wc, false);
        }
        if let Some(engine) = self.engine.as_mut() {
            engine.halt();
        }
        self.active_recv = None;
    }
}

fn wc_status(s: RcStatus) -> WcStatus {
    match s {
        RcStatus::Success => WcStatus::Success,
        RcStatus::RetryExceeded => WcStatus::RetryExcErr,
        RcStatus::RnrRetryExceeded => WcStatus::RnrRetryExcErr,
        RcStatus::RemoteAccess => WcStatus::RemAccessErr,
        RcStatus::RemoteInvalidRequest => WcStatus::RemInvReqErr,
        RcStatus::RemoteOperation => WcStatus::RemOpErr,
        RcStatus::LocalProtection => WcStatus::LocProtErr,
        RcStatus::LocalLength => WcStatus::LocLenErr,
        RcStatus::Flushed => WcStatus::WrFlushErr,
    }
}

/// Where an RC QP's receives come from.
pub(crate) enum Receives<'a> {
    /// Its own receive queue (under the QP's lock).
    Own(&'a mut RecvQueue),
    /// A shared receive queue (under its own lock, taken after the QP's).
    Shared(&'a SrqShared),
}

/// The engine's view of application memory: the posted sends, the receives, and the PD's
/// registered regions.
struct RcMemory<'a> {
    mrs: &'a MrTable,
    pd: PdHandle,
    access: AccessFlags,
    sends: &'a [Option<PostedSend>],
    inline: &'a [u8],
    max_inline: usize,
    rx: Receives<'a>,
    active: &'a mut Option<ActiveRecv>,
    taken: &'a mut TakenRecvs,
}

/// Walks `sges` from byte `offset` for `len` bytes, calling `f(pointer, run length)` for
/// each contiguous run after checking it against the PD's regions for `need`.
fn walk(
    mrs: &MrTable,
    pd: PdHandle,
    sges: &[Sge],
    mut offset: usize,
    mut len: usize,
    need: AccessFlags,
    mut f: impl FnMut(usize, usize),
) -> bool {
    for s in sges {
        let slen = s.length as usize;
        if offset >= slen {
            offset -= slen;
            continue;
        }
        let run = (slen - offset).min(len);
        let va = s.addr + offset as u64;
        match mrs.check_local(pd, s.lkey, va, run as u64, need) {
            Ok(Some(mr)) => match mr.range_offset(va, run as u64) {
                Some(off) => f(mr.addr() + off, run),
                None => return false,
            },
            Ok(None) => {}
            Err(_) => return false,
        }
        len -= run;
        offset = 0;
        if len == 0 {
            return true;
        }
    }
    len == 0
}

/// Copies `data` into the bytes of `sges` from `offset`, each checked for local write
/// against the PD's regions; false if a check fails.
fn store(mrs: &MrTable, pd: PdHandle, sges: &[Sge], offset: usize, data: &[u8]) -> bool {
    let mut at = 0;
    walk(
        mrs,
        pd,
        sges,
        offset,
        data.len(),
        AccessFlags::LOCAL_WRITE,
        |ptr, n| {
            // SAFETY: the range lies in a region registered for local write in this PD
            // (checked by walk), which the poster keeps valid until the request completes
            // (post_recv's and post_send's contract).
            unsafe { std::ptr::copy_nonoverlapping(data[at..].as_ptr(), ptr as *mut u8, n) };
            at += n;
        },
    )
}

impl Memory for RcMemory<'_> {
    fn gather(&mut self, handle: u64, offset: usize, buf: &mut [u8]) -> bool {
        let Some(Some(s)) = self.sends.get(handle as usize) else {
            return false;
        };
        if s.inline {
            let start = handle as usize * self.max_inline + offset;
            return match self.inline.get(start..start + buf.len()) {
                Some(bytes) if offset + buf.len() <= s.len => {
                    buf.copy_from_slice(bytes);
                    true
                }
                _ => false,
            };
        }
        let mut at = 0;
        walk(
            self.mrs,
            self.pd,
            &s.sges[..s.n],
            offset,
            buf.len(),
            AccessFlags::empty(),
            |ptr, n| {
                // SAFETY: the range lies in a region registered in this PD (checked by walk),
                // which the poster keeps valid until the send completes (post_send's contract).
                let src = unsafe { std::slice::from_raw_parts(ptr as *const u8, n) };
                buf[at..at + n].copy_from_slice(src);
                at += n;
            },
        )
    }

    fn take_recv(&mut self) -> Option<u64> {
        let taken = &mut *self.taken;
        let mut active = |slot: &RecvSlot| {
            let mut sges = [NO_SGE; MAX_SGE];
            sges[..slot.len].copy_from_slice(&slot.sges[..slot.len]);
            ActiveRecv {
                handle: taken.take(slot.wr_id),
                sges,
                n: slot.len,
            }
        };
        let taken = match &mut self.rx {
            Receives::Own(rq) => {
                let taken = active(rq.front()?);
                rq.pop();
                taken
            }
            // The SRQ raises its limit event if this take crosses the armed limit.
            Receives::Shared(srq) => srq.take(|_, slot| active(slot))?.1,
        };
        *self.active = Some(taken);
        Some(taken.handle)
    }

    fn scatter(&mut self, handle: u64, offset: usize, data: &[u8]) -> bool {
        let Some(a) = self.active.as_ref().filter(|a| a.handle == handle) else {
            return false;
        };
        let room: usize = a.sges[..a.n].iter().map(|s| s.length as usize).sum();
        if offset + data.len() > room {
            return false;
        }
        store(self.mrs, self.pd, &a.sges[..a.n], offset, data)
    }

    fn remote_write(&mut self, rkey: Rkey, va: u64, data: &[u8]) -> Result<(), NakCode> {
        let Some(ptr) = self.remote(rkey, va, data.len(), AccessFlags::REMOTE_WRITE)? else {
            return Ok(());
        };
        // SAFETY: the range lies in a region registered in this PD with remote write access
        // (checked by `remote`); the region's owner keeps it valid while registered.
        unsafe { place(data, ptr) };
        Ok(())
    }

    fn check_remote_read(&mut self, rkey: Rkey, va: u64, len: usize) -> Result<(), NakCode> {
        self.remote(rkey, va, len, AccessFlags::REMOTE_READ)
            .map(|_| ())
    }

    fn remote_read(&mut self, rkey: Rkey, va: u64, buf: &mut [u8]) -> Result<(), NakCode> {
        let Some(ptr) = self.remote(rkey, va, buf.len(), AccessFlags::REMOTE_READ)? else {
            return Ok(());
        };
        // SAFETY: the range lies in a region registered in this PD with remote read access
        // (checked by `remote`); the region's owner keeps it valid while registered.
        unsafe { std::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn remote_atomic(&mut self, rkey: Rkey, va: u64, op: AtomicOp) -> Result<u64, NakCode> {
        let ptr = self
            .remote(rkey, va, 8, AccessFlags::REMOTE_ATOMIC)?
            .ok_or(NakCode::InvalidRequest)?;
        // SAFETY: 8 bytes at an 8-aligned address (both checked by `remote` for atomics) in a
        // region registered in this PD with remote atomic access, valid while registered.
        // The application may touch them concurrently only with atomics, as on a real HCA.
        let target = unsafe { AtomicU64::from_ptr(ptr.cast::<u64>()) };
        Ok(match op {
            AtomicOp::CompareSwap { compare, swap } => {
                match target.compare_exchange(compare, swap, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(v) | Err(v) => v,
                }
            }
            AtomicOp::FetchAdd { add } => target.fetch_add(add, Ordering::SeqCst),
        })
    }

    fn read_response(&mut self, handle: u64, offset: usize, data: &[u8]) -> bool {
        let Some(Some(s)) = self.sends.get(handle as usize) else {
            return false;
        };
        store(self.mrs, self.pd, &s.sges[..s.n], offset, data)
    }
}

impl RcMemory<'_> {
    /// Where `len` bytes at `va` of the region with key `rkey` are, if this QP and that
    /// region allow a peer `need`; `None` for an empty range.
    fn remote(
        &self,
        rkey: Rkey,
        va: u64,
        len: usize,
        need: AccessFlags,
    ) -> Result<Option<*mut u8>, NakCode> {
        if !self.access.contains(need) {
            return Err(NakCode::RemoteAccessError);
        }
        let rkey = super::mr::Rkey(rkey.value());
        match self.mrs.check_remote(self.pd, rkey, va, len as u64, need) {
            Ok(Some(mr)) => {
                let off = mr
                    .range_offset(va, len as u64)
                    .ok_or(NakCode::RemoteAccessError)?;
                Ok(Some((mr.addr() + off) as *mut u8))
            }
            Ok(None) => Ok(None),
            Err(RemoteAccessError::InvalidRequest | RemoteAccessError::MisalignedAtomic) => {
                Err(NakCode::InvalidRequest)
            }
            Err(_) => Err(NakCode::RemoteAccessError),
        }
    }
}

/// The bytes of the write's end that [`place`] stores one by one, last.
const TAIL: usize = 64;

/// Writes `data` at `dst` as a NIC's DMA does: every byte once, the last [`TAIL`] bytes
/// in address order after the rest. Applications wait for a peer's RDMA WRITE by
/// polling its last byte (riostream, perftest's ib_write_lat), then overwrite that byte
/// with their next message; `memcpy` may store bytes twice (glibc's stores a 64-byte
/// copy as two overlapping 64-byte halves on AVX-512 machines), and its second store
/// would undo the application's.
///
/// # Safety
///
/// `dst..dst + data.len()` must be valid for writes and not overlap `data`.
unsafe fn place(data: &[u8], dst: *mut u8) {
    let body = data.len().saturating_sub(TAIL);
    // SAFETY: within the destination, per the contract.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, body) };
    let mut at = body;
    while at + 8 <= data.len() {
        let word = u64::from_ne_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        // SAFETY: 8 bytes within the destination; volatile, so not merged into a wider
        // copy that could store them twice.
        unsafe { std::ptr::write_volatile(dst.add(at).cast::<[u8; 8]>(), word.to_ne_bytes()) };
        at += 8;
    }
    while at < data.len() {
        // SAFETY: within the destination.
        unsafe { std::ptr::write_volatile(dst.add(at), data[at]) };
        at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn place_writes_every_length_exactly_and_nothing_around_it() {
        for len in 0..200 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut dst = vec![0xeeu8; len + 16];
            // SAFETY: `len` bytes from offset 8 lie inside `dst`, apart from `data`.
            unsafe { place(&data, dst.as_mut_ptr().add(8)) };
            assert_eq!(&dst[8..8 + len], &data[..], "length {len}");
            assert!(dst[..8].iter().chain(&dst[8 + len..]).all(|&b| b == 0xee));
        }
    }
}
