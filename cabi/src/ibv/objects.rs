//! Protection domains, memory regions, completion channels and queues, queue pairs and
//! address handles: each C struct wrapped with the xrdma object it stands for.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use xrdma_verbs::verbs::{
    AccessFlags, AddressHandle, AhAttr, AttrMask, CompletionChannel, Cq, Gid, Mr, Mtu, Pd, QpAttr,
    QpCap, QpInitAttr, QpState, QpType, QueuePair, Srq, SrqAttr, SrqAttrMask,
};

use super::device::{Registry, XContext, context};
use crate::sys;
use crate::{boxed, c_ptr, free, guard, guard_errno, set_errno, status, wrapper};

/// A protection domain.
#[repr(C)]
pub(crate) struct XPd {
    pd: sys::ibv_pd,
    inner: Pd,
}

/// A memory region.
#[repr(C)]
pub(crate) struct XMr {
    mr: sys::ibv_mr,
    inner: Mr,
}

/// A completion channel, with the CQs that report to it (to name the CQ of an event).
#[repr(C)]
pub(crate) struct XChannel {
    ch: sys::ibv_comp_channel,
    inner: Arc<CompletionChannel>,
    cqs: Mutex<Vec<usize>>,
}

/// A completion queue.
#[repr(C)]
pub(crate) struct XCq {
    pub(crate) cq: sys::ibv_cq,
    pub(crate) inner: Cq,
    /// Asynchronous events about this CQ not yet acknowledged (changed under the
    /// context's registry lock).
    pub(crate) async_unacked: AtomicU32,
}

/// A shared receive queue.
#[repr(C)]
pub(crate) struct XSrq {
    pub(crate) srq: sys::ibv_srq,
    pub(crate) inner: Srq,
    /// Asynchronous events about this SRQ not yet acknowledged (changed under the
    /// context's registry lock).
    pub(crate) async_unacked: AtomicU32,
}

/// A queue pair.
#[repr(C)]
pub(crate) struct XQp {
    qp: sys::ibv_qp,
    pub(crate) inner: QueuePair,
    sq_sig_all: bool,
}

/// An address handle.
#[repr(C)]
pub(crate) struct XAh {
    ah: sys::ibv_ah,
    pub(crate) inner: AddressHandle,
}

impl XPd {
    /// The `ibv_pd *` the application holds for this PD.
    pub(crate) fn as_c(&self) -> *mut sys::ibv_pd {
        (&self.pd as *const sys::ibv_pd).cast_mut()
    }

    /// The `ibv_context *` of the PD's context.
    pub(crate) fn context_c(&self) -> *mut sys::ibv_context {
        self.pd.context
    }
}

impl XChannel {
    /// The `ibv_comp_channel *` the application holds for this channel.
    pub(crate) fn as_c(&self) -> *mut sys::ibv_comp_channel {
        (&self.ch as *const sys::ibv_comp_channel).cast_mut()
    }
}

/// A new PD of context `c` (what `ibv_alloc_pd` makes), freed by `ibv_dealloc_pd`.
pub(crate) fn alloc_pd(c: &XContext) -> Result<*mut XPd, i32> {
    let inner = c.inner.alloc_pd().map_err(|e| e.errno())?;
    let pd = sys::ibv_pd {
        context: c.as_c(),
        handle: 0,
    };
    Ok(boxed(XPd { pd, inner }))
}

/// `ibv_alloc_pd`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_alloc_pd(ctx: *mut sys::ibv_context) -> *mut sys::ibv_pd {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the context comes from ibv_open_device.
        c_ptr(unsafe { context(ctx) }.and_then(alloc_pd))
    })
}

/// `ibv_dealloc_pd`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_dealloc_pd(pd: *mut sys::ibv_pd) -> c_int {
    guard_errno(|| {
        // SAFETY: the PD comes from ibv_alloc_pd.
        // Its MRs, QPs and AHs point at it: it stays until they are gone.
        if unsafe { wrapper::<XPd, _>(pd) }?.inner.in_use() {
            return Err(libc::EBUSY);
        }
        // SAFETY: the application does not use the PD after this call.
        Ok(status(unsafe { free::<XPd, _>(pd) }))
    })
}

/// A new MR of `pd` over `addr..addr + length`, named by addresses from `iova` (what
/// `ibv_reg_mr_iova2` makes), freed by `ibv_dereg_mr`.
///
/// # Safety
///
/// The caller owns `addr..addr + length` and keeps it valid until `ibv_dereg_mr`, as
/// `ibv_reg_mr` requires.
pub(crate) unsafe fn reg_mr(
    pd: &XPd,
    addr: *mut c_void,
    length: usize,
    iova: u64,
    access: u32,
) -> Result<*mut XMr, i32> {
    // SAFETY: per this function's contract.
    let inner = unsafe {
        pd.inner.reg_mr_iova(
            addr.cast(),
            length,
            iova,
            AccessFlags::from_bits_retain(access),
        )
    }
    .map_err(|e| e.errno())?;
    let mr = sys::ibv_mr {
        context: pd.pd.context,
        pd: pd.as_c(),
        addr,
        length,
        handle: 0,
        lkey: inner.lkey().0,
        rkey: inner.rkey().0,
    };
    Ok(boxed(XMr { mr, inner }))
}

/// `reg_mr` for the exports: the PD as C passes it, the result as C takes it.
///
/// # Safety
///
/// As [`reg_mr`]'s; `pd` must be NULL or come from `ibv_alloc_pd`.
unsafe fn reg_mr_c(
    pd: *mut sys::ibv_pd,
    addr: *mut c_void,
    length: usize,
    iova: u64,
    access: u32,
) -> *mut sys::ibv_mr {
    // SAFETY: the PD comes from ibv_alloc_pd; the memory contract is the caller's.
    c_ptr(
        unsafe { wrapper::<XPd, _>(pd) }
            .and_then(|p| unsafe { reg_mr(p, addr, length, iova, access) }),
    )
}

/// `ibv_reg_mr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_reg_mr(
    pd: *mut sys::ibv_pd,
    addr: *mut c_void,
    length: usize,
    access: c_int,
) -> *mut sys::ibv_mr {
    guard(std::ptr::null_mut(), || {
        // SAFETY: ibv_reg_mr's contract is the caller's.
        unsafe { reg_mr_c(pd, addr, length, addr as u64, access as u32) }
    })
}

/// `ibv_reg_mr_iova`: work requests and peers name the region by addresses from `iova`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_reg_mr_iova(
    pd: *mut sys::ibv_pd,
    addr: *mut c_void,
    length: usize,
    iova: u64,
    access: c_int,
) -> *mut sys::ibv_mr {
    guard(std::ptr::null_mut(), || {
        // SAFETY: ibv_reg_mr's contract is the caller's.
        unsafe { reg_mr_c(pd, addr, length, iova, access as u32) }
    })
}

/// `ibv_reg_mr_iova2` (the path `ibv_reg_mr` takes when optional access bits are set).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_reg_mr_iova2(
    pd: *mut sys::ibv_pd,
    addr: *mut c_void,
    length: usize,
    iova: u64,
    access: c_uint,
) -> *mut sys::ibv_mr {
    guard(std::ptr::null_mut(), || {
        // SAFETY: ibv_reg_mr's contract is the caller's.
        unsafe { reg_mr_c(pd, addr, length, iova, access) }
    })
}

/// `ibv_rereg_mr`: changes an MR's range (`IBV_REREG_MR_CHANGE_TRANSLATION`, named by
/// addresses from `addr` then), PD or access flags by registering anew and swapping the
/// registration in place: the `ibv_mr *` stays, its keys change (read them again, as
/// libibverbs says). 0, or libibverbs' codes with errno: `IBV_REREG_MR_ERR_INPUT` (EINVAL)
/// for bad arguments, `IBV_REREG_MR_ERR_CMD` if the new registration fails, which leaves
/// the MR as it was.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_rereg_mr(
    mr: *mut sys::ibv_mr,
    flags: c_int,
    pd: *mut sys::ibv_pd,
    addr: *mut c_void,
    length: usize,
    access: c_int,
) -> c_int {
    guard(sys::IBV_REREG_MR_ERR_CMD, || {
        let input = |errno| {
            set_errno(errno);
            sys::IBV_REREG_MR_ERR_INPUT
        };
        let flags = flags as u32;
        // SAFETY: the MR comes from ibv_reg_mr.
        let Ok(m) = (unsafe { wrapper::<XMr, _>(mr) }) else {
            return input(libc::EINVAL);
        };
        let translation = flags & sys::IBV_REREG_MR_CHANGE_TRANSLATION != 0;
        if flags & !sys::IBV_REREG_MR_FLAGS_SUPPORTED != 0
            || (translation && (length == 0 || addr.is_null()))
            || (access != 0 && flags & sys::IBV_REREG_MR_CHANGE_ACCESS == 0)
        {
            return input(libc::EINVAL);
        }
        let new_pd = if flags & sys::IBV_REREG_MR_CHANGE_PD != 0 {
            pd
        } else {
            m.mr.pd
        };
        // SAFETY: the PD comes from ibv_alloc_pd (the MR's own, or the caller's new one).
        let Ok(p) = (unsafe { wrapper::<XPd, _>(new_pd) }) else {
            return input(libc::EINVAL);
        };
        let region = m.inner.region();
        let (addr, length, iova) = if translation {
            (addr, length, addr as u64)
        } else {
            (region.addr() as *mut c_void, region.len(), region.iova())
        };
        let access = if flags & sys::IBV_REREG_MR_CHANGE_ACCESS != 0 {
            access as u32
        } else {
            region.access().bits()
        };
        // SAFETY: the new range is the caller's (rereg's contract as reg_mr's), or the
        // MR's own, which the caller keeps valid while registered.
        match unsafe { reg_mr(p, addr, length, iova, access) } {
            Ok(new) => {
                // SAFETY: `new` is the box reg_mr made; `mr` is the application's live MR,
                // which it does not use during this call. The old registration drops here.
                unsafe {
                    let new = Box::from_raw(new);
                    let old = &mut *mr.cast::<XMr>();
                    old.mr = sys::ibv_mr {
                        context: old.mr.context,
                        ..new.mr
                    };
                    old.inner = new.inner;
                }
                0
            }
            Err(e) => {
                set_errno(e);
                sys::IBV_REREG_MR_ERR_CMD
            }
        }
    })
}

/// `ibv_dereg_mr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_dereg_mr(mr: *mut sys::ibv_mr) -> c_int {
    // SAFETY: the MR comes from ibv_reg_mr and is not used after this call.
    guard(libc::EIO, || status(unsafe { free::<XMr, _>(mr) }))
}

/// A new completion channel of context `c` (what `ibv_create_comp_channel` makes), freed
/// by `ibv_destroy_comp_channel`.
pub(crate) fn create_comp_channel(c: &XContext) -> Result<*mut XChannel, i32> {
    let inner = c.inner.create_comp_channel().map_err(|e| e.errno())?;
    let ch = sys::ibv_comp_channel {
        context: c.as_c(),
        fd: std::os::fd::AsRawFd::as_raw_fd(&*inner),
        refcnt: 0,
    };
    Ok(boxed(XChannel {
        ch,
        inner,
        cqs: Mutex::new(Vec::new()),
    }))
}

/// `ibv_create_comp_channel`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_create_comp_channel(
    ctx: *mut sys::ibv_context,
) -> *mut sys::ibv_comp_channel {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the context comes from ibv_open_device.
        c_ptr(unsafe { context(ctx) }.and_then(create_comp_channel))
    })
}

/// `ibv_destroy_comp_channel`: EBUSY while CQs still report to it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_destroy_comp_channel(channel: *mut sys::ibv_comp_channel) -> c_int {
    guard(libc::EIO, || {
        // SAFETY: the channel comes from ibv_create_comp_channel.
        let busy = unsafe { wrapper::<XChannel, _>(channel) }
            .map(|c| !c.cqs.lock().map(|l| l.is_empty()).unwrap_or(false));
        match busy {
            Err(e) => e,
            Ok(true) => libc::EBUSY,
            // SAFETY: no CQ uses the channel; the application does not use it after this.
            Ok(false) => status(unsafe { free::<XChannel, _>(channel) }),
        }
    })
}

/// A new CQ of context `c` with room for `cqe` completions, reporting to `channel` (what
/// `ibv_create_cq` makes), freed by `ibv_destroy_cq`.
pub(crate) fn create_cq(
    c: &XContext,
    cqe: c_int,
    cq_context: *mut c_void,
    channel: Option<&XChannel>,
) -> Result<*mut XCq, i32> {
    if cqe < 1 {
        return Err(libc::EINVAL);
    }
    let inner = c
        .inner
        .create_cq(cqe as u32, channel.map(|ch| &ch.inner))
        .map_err(|e| e.errno())?;
    // SAFETY: ibv_cq is plain C data; all-zero is valid (a zeroed mutex and condition
    // variable are their static initialisers on glibc).
    let mut cq: sys::ibv_cq = unsafe { std::mem::zeroed() };
    cq.context = c.as_c();
    cq.channel = channel.map_or(std::ptr::null_mut(), XChannel::as_c);
    cq.cq_context = cq_context;
    cq.cqe = inner.capacity() as c_int;
    let p = boxed(XCq {
        cq,
        inner,
        async_unacked: AtomicU32::new(0),
    });
    lock(c).cqs.push(p as usize);
    if let Some(ch) = channel {
        if let Ok(mut cqs) = ch.cqs.lock() {
            cqs.push(p as usize);
        }
    }
    Ok(p)
}

/// `ibv_create_cq`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_create_cq(
    ctx: *mut sys::ibv_context,
    cqe: c_int,
    cq_context: *mut c_void,
    channel: *mut sys::ibv_comp_channel,
    _comp_vector: c_int,
) -> *mut sys::ibv_cq {
    guard(std::ptr::null_mut(), || {
        let r = (|| {
            // SAFETY: the context comes from ibv_open_device.
            let c = unsafe { context(ctx) }?;
            let ch = if channel.is_null() {
                None
            } else {
                // SAFETY: a non-NULL channel comes from ibv_create_comp_channel.
                Some(unsafe { wrapper::<XChannel, _>(channel) }?)
            };
            create_cq(c, cqe, cq_context, ch)
        })();
        c_ptr(r)
    })
}

/// `ibv_destroy_cq`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_destroy_cq(cq: *mut sys::ibv_cq) -> c_int {
    guard_errno(|| {
        // SAFETY: the CQ comes from ibv_create_cq.
        let c = unsafe { wrapper::<XCq, _>(cq) }?;
        // SAFETY: the CQ's context outlives it.
        let x = unsafe { context(c.cq.context) }?;
        // Its asynchronous events must be acknowledged first: wait, as libibverbs does.
        let mut reg = wait_acked(x, &c.async_unacked);
        // QPs point at it: it stays until they are gone.
        if c.inner.in_use() {
            return Err(libc::EBUSY);
        }
        reg.cqs.retain(|p| *p != cq as usize);
        drop(reg);
        if !c.cq.channel.is_null() {
            // SAFETY: the CQ's channel outlives it (destroying it is EBUSY until then).
            if let Ok(ch) = unsafe { wrapper::<XChannel, _>(c.cq.channel) } {
                if let Ok(mut cqs) = ch.cqs.lock() {
                    cqs.retain(|p| *p != cq as usize);
                }
            }
        }
        // SAFETY: the application does not use the CQ after this call.
        Ok(status(unsafe { free::<XCq, _>(cq) }))
    })
}

/// `ibv_get_cq_event`: waits for the channel's next event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_get_cq_event(
    channel: *mut sys::ibv_comp_channel,
    cq: *mut *mut sys::ibv_cq,
    cq_context: *mut *mut c_void,
) -> c_int {
    guard(-1, || {
        let r = (|| {
            // SAFETY: the channel comes from ibv_create_comp_channel.
            let ch = unsafe { wrapper::<XChannel, _>(channel) }?;
            if cq.is_null() || cq_context.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: the channel's context outlives it.
            let c = unsafe { context(ch.ch.context) }?;
            let fired = c.inner.get_cq_event(&ch.inner).map_err(|e| e.errno())?;
            let cqs = ch.cqs.lock().map_err(|_| libc::EIO)?;
            let found = cqs
                .iter()
                .map(|&p| p as *mut XCq)
                // SAFETY: the list holds live CQs attached to this channel; a CQ leaves it
                // before it is destroyed.
                .find(|&p| unsafe { (*p).inner.ptr_eq(&fired) })
                .ok_or(libc::EINVAL)? as *mut sys::ibv_cq;
            // SAFETY: `found` is a live CQ attached to this channel; the out-pointers are
            // writable, as checked above.
            unsafe {
                cq.write(found);
                cq_context.write((*found).cq_context);
            }
            Ok(())
        })();
        match r {
            Ok(()) => 0,
            Err(e) => {
                set_errno(e);
                -1
            }
        }
    })
}

/// `ibv_ack_cq_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_ack_cq_events(cq: *mut sys::ibv_cq, nevents: c_uint) {
    guard((), || {
        // SAFETY: the CQ comes from ibv_create_cq.
        if let Ok(c) = unsafe { wrapper::<XCq, _>(cq) } {
            // Over-acknowledging is the application's bug; libibverbs ignores it too.
            let _ = c.inner.ack_events(nevents);
        }
    })
}

/// A new QP of `pd` (what `ibv_create_qp` makes), freed by `ibv_destroy_qp`; the QP's
/// capabilities are written back to `a.cap`. UD and RC (EOPNOTSUPP for other types), with
/// or without an SRQ.
///
/// # Safety
///
/// `a.send_cq` and `a.recv_cq` must be NULL or come from `ibv_create_cq`, and `a.srq` NULL
/// or come from `ibv_create_srq`, all live.
pub(crate) unsafe fn create_qp(pd: &XPd, a: &mut sys::ibv_qp_init_attr) -> Result<*mut XQp, i32> {
    // SAFETY: per this function's contract (NULL is EINVAL).
    let (send_cq, recv_cq) =
        unsafe { (wrapper::<XCq, _>(a.send_cq)?, wrapper::<XCq, _>(a.recv_cq)?) };
    let srq = if a.srq.is_null() {
        None
    } else {
        // SAFETY: per this function's contract.
        Some(unsafe { wrapper::<XSrq, _>(a.srq) }?)
    };
    let qp_type = QpType::from_raw(a.qp_type).ok_or(libc::EOPNOTSUPP)?;
    let attr = QpInitAttr {
        send_cq: &send_cq.inner,
        recv_cq: &recv_cq.inner,
        qp_type,
        cap: QpCap {
            max_send_wr: a.cap.max_send_wr,
            max_recv_wr: a.cap.max_recv_wr,
            max_send_sge: a.cap.max_send_sge,
            max_recv_sge: a.cap.max_recv_sge,
            max_inline_data: a.cap.max_inline_data,
        },
        sq_sig_all: a.sq_sig_all != 0,
        srq: srq.map(|s| &s.inner),
    };
    let inner = pd.inner.create_qp(&attr).map_err(|e| e.errno())?;
    a.cap = cap(inner.cap());
    // SAFETY: ibv_qp is plain C data; all-zero is valid (as for ibv_cq).
    let mut qp: sys::ibv_qp = unsafe { std::mem::zeroed() };
    qp.context = pd.pd.context;
    qp.qp_context = a.qp_context;
    qp.pd = pd.as_c();
    qp.send_cq = a.send_cq;
    qp.recv_cq = a.recv_cq;
    qp.srq = a.srq;
    qp.qp_num = inner.qpn().value();
    qp.state = inner.state().as_raw();
    qp.qp_type = a.qp_type;
    Ok(boxed(XQp {
        qp,
        inner,
        sq_sig_all: a.sq_sig_all != 0,
    }))
}

/// `ibv_create_qp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_create_qp(
    pd: *mut sys::ibv_pd,
    init_attr: *mut sys::ibv_qp_init_attr,
) -> *mut sys::ibv_qp {
    guard(std::ptr::null_mut(), || {
        let r = (|| {
            // SAFETY: the PD comes from ibv_alloc_pd.
            let p = unsafe { wrapper::<XPd, _>(pd) }?;
            if init_attr.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: checked non-NULL; the caller passes a readable, writable
            // ibv_qp_init_attr whose CQs and SRQ come from this library.
            unsafe { create_qp(p, &mut *init_attr) }
        })();
        c_ptr(r)
    })
}

fn cap(c: QpCap) -> sys::ibv_qp_cap {
    sys::ibv_qp_cap {
        max_send_wr: c.max_send_wr,
        max_recv_wr: c.max_recv_wr,
        max_send_sge: c.max_send_sge,
        max_recv_sge: c.max_recv_sge,
        max_inline_data: c.max_inline_data,
    }
}

/// `ibv_destroy_qp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_destroy_qp(qp: *mut sys::ibv_qp) -> c_int {
    guard(libc::EIO, || {
        // SAFETY: the QP comes from ibv_create_qp and is not used after this call; freeing
        // it drops its hold on its PD, CQs and SRQ.
        status(unsafe { free::<XQp, _>(qp) })
    })
}

/// Modifies QP `qp` as `ibv_modify_qp` does: the attributes xrdma's QPs have (state,
/// current state, Q_Key, PSNs, P_Key index, port, address vector, path MTU, destination
/// QP, RDMA/atomic limits, timers); the IBTA transition table decides which masks are
/// valid. `qp->state` follows.
///
/// # Safety
///
/// `qp` must be NULL or come from `ibv_create_qp` and be live.
pub(crate) unsafe fn modify_qp(
    qp: *mut sys::ibv_qp,
    a: &sys::ibv_qp_attr,
    attr_mask: c_int,
) -> Result<(), i32> {
    // SAFETY: per this function's contract.
    let q = unsafe { wrapper::<XQp, _>(qp) }?;
    let mask = AttrMask::from_bits_retain(attr_mask as u32);
    let state = |raw, bit| {
        if mask.contains(bit) {
            QpState::from_raw(raw).ok_or(libc::EINVAL)
        } else {
            Ok(q.inner.state())
        }
    };
    let ah_attr = if mask.contains(AttrMask::AV) {
        let av = &a.ah_attr;
        if av.is_global == 0 {
            eprintln!(
                "xrdma: an RC address vector without a GRH: RoCE addresses peers by GID; \
                 give the program a GID index (ibv_rc_pingpong: -g 0)"
            );
            return Err(libc::EINVAL);
        }
        // SAFETY: ibv_gid is a 16-byte union; its `raw` view is always valid.
        let dgid = unsafe { *(&av.grh.dgid as *const sys::ibv_gid).cast::<[u8; 16]>() };
        Some(AhAttr {
            dgid: Gid(dgid),
            sgid_index: av.grh.sgid_index,
            hop_limit: av.grh.hop_limit,
            traffic_class: av.grh.traffic_class,
            port_num: av.port_num,
        })
    } else {
        None
    };
    let path_mtu = if mask.contains(AttrMask::PATH_MTU) {
        Mtu::from_raw(a.path_mtu).ok_or(libc::EINVAL)?
    } else {
        Mtu::Mtu1024
    };
    let attr = QpAttr {
        qp_state: state(a.qp_state, AttrMask::STATE)?,
        cur_qp_state: state(a.cur_qp_state, AttrMask::CUR_STATE)?,
        qkey: a.qkey,
        sq_psn: a.sq_psn,
        pkey_index: a.pkey_index,
        port_num: a.port_num,
        qp_access_flags: AccessFlags::from_bits_retain(a.qp_access_flags),
        ah_attr,
        path_mtu,
        dest_qp_num: a.dest_qp_num,
        rq_psn: a.rq_psn,
        max_dest_rd_atomic: a.max_dest_rd_atomic,
        min_rnr_timer: a.min_rnr_timer,
        timeout: a.timeout,
        retry_cnt: a.retry_cnt,
        rnr_retry: a.rnr_retry,
        max_rd_atomic: a.max_rd_atomic,
    };
    q.inner.modify(&attr, mask).map_err(|e| e.errno())?;
    let state = q.inner.state().as_raw();
    // SAFETY: the QP is live; `state` is written through the raw pointer, no reference to
    // the wrapper being alive any more.
    unsafe { std::ptr::addr_of_mut!((*qp).state).write(state) };
    Ok(())
}

/// `ibv_modify_qp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_modify_qp(
    qp: *mut sys::ibv_qp,
    attr: *mut sys::ibv_qp_attr,
    attr_mask: c_int,
) -> c_int {
    guard_errno(|| {
        if attr.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: the QP comes from ibv_create_qp; `attr` is checked non-NULL and the
        // caller passes a readable ibv_qp_attr.
        unsafe { modify_qp(qp, &*attr, attr_mask) }?;
        Ok(0)
    })
}

/// `attr` as `struct ibv_qp_attr` (capabilities left zero).
pub(crate) fn qp_attr_to_c(now: &QpAttr) -> sys::ibv_qp_attr {
    let mut out = sys::ibv_qp_attr {
        qp_state: now.qp_state.as_raw(),
        cur_qp_state: now.cur_qp_state.as_raw(),
        qkey: now.qkey,
        sq_psn: now.sq_psn,
        pkey_index: now.pkey_index,
        port_num: now.port_num,
        qp_access_flags: now.qp_access_flags.bits(),
        path_mtu: now.path_mtu as u32,
        dest_qp_num: now.dest_qp_num,
        rq_psn: now.rq_psn,
        max_rd_atomic: now.max_rd_atomic,
        max_dest_rd_atomic: now.max_dest_rd_atomic,
        min_rnr_timer: now.min_rnr_timer,
        timeout: now.timeout,
        retry_cnt: now.retry_cnt,
        rnr_retry: now.rnr_retry,
        ..Default::default()
    };
    if let Some(ah) = now.ah_attr {
        let av = &mut out.ah_attr;
        av.is_global = 1;
        av.port_num = ah.port_num.max(1);
        av.grh.sgid_index = ah.sgid_index;
        av.grh.hop_limit = ah.hop_limit;
        av.grh.traffic_class = ah.traffic_class;
        // SAFETY: ibv_gid is a 16-byte union; writing its `raw` view is always valid.
        unsafe { *(&mut av.grh.dgid as *mut sys::ibv_gid).cast::<[u8; 16]>() = ah.dgid.0 };
    }
    out
}

/// `ibv_query_qp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_qp(
    qp: *mut sys::ibv_qp,
    attr: *mut sys::ibv_qp_attr,
    _attr_mask: c_int,
    init_attr: *mut sys::ibv_qp_init_attr,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the QP comes from ibv_create_qp.
        let q = unsafe { wrapper::<XQp, _>(qp) }?;
        if attr.is_null() || init_attr.is_null() {
            return Err(libc::EINVAL);
        }
        let now = q.inner.query();
        let caps = cap(q.inner.cap());
        let out = sys::ibv_qp_attr {
            cap: caps,
            ..qp_attr_to_c(&now)
        };
        let init = sys::ibv_qp_init_attr {
            qp_context: q.qp.qp_context,
            send_cq: q.qp.send_cq,
            recv_cq: q.qp.recv_cq,
            srq: q.qp.srq,
            cap: caps,
            qp_type: q.qp.qp_type,
            sq_sig_all: c_int::from(q.sq_sig_all),
        };
        // SAFETY: the caller passes writable structs (checked non-NULL).
        unsafe {
            attr.write(out);
            init_attr.write(init);
        }
        Ok(0)
    })
}

/// A new AH of `pd` (what `ibv_create_ah` makes), freed by `ibv_destroy_ah`. RoCE needs
/// the GRH (`is_global` and `grh.dgid`).
pub(crate) fn create_ah(pd: &XPd, a: &sys::ibv_ah_attr) -> Result<*mut XAh, i32> {
    if a.is_global == 0 {
        eprintln!(
            "xrdma: ibv_create_ah without a GRH: RoCE addresses peers by GID; \
             give the program a GID index (ibv_*_pingpong: -g 0)"
        );
        return Err(libc::EINVAL);
    }
    // SAFETY: ibv_gid is a 16-byte union; its `raw` view is always valid.
    let dgid = unsafe { *(&a.grh.dgid as *const sys::ibv_gid).cast::<[u8; 16]>() };
    let inner = pd
        .inner
        .create_ah(&AhAttr {
            dgid: Gid(dgid),
            sgid_index: a.grh.sgid_index,
            hop_limit: a.grh.hop_limit,
            traffic_class: a.grh.traffic_class,
            port_num: a.port_num,
        })
        .map_err(|e| e.errno())?;
    let ah = sys::ibv_ah {
        context: pd.pd.context,
        pd: pd.as_c(),
        handle: 0,
    };
    Ok(boxed(XAh { ah, inner }))
}

/// `ibv_create_ah`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_create_ah(
    pd: *mut sys::ibv_pd,
    attr: *mut sys::ibv_ah_attr,
) -> *mut sys::ibv_ah {
    guard(std::ptr::null_mut(), || {
        let r = (|| {
            // SAFETY: the PD comes from ibv_alloc_pd.
            let p = unsafe { wrapper::<XPd, _>(pd) }?;
            if attr.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: checked non-NULL; the caller passes a readable ibv_ah_attr.
            create_ah(p, unsafe { &*attr })
        })();
        c_ptr(r)
    })
}

/// `ibv_destroy_ah`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_destroy_ah(ah: *mut sys::ibv_ah) -> c_int {
    // SAFETY: the AH comes from ibv_create_ah and is not used after this call.
    guard(libc::EIO, || status(unsafe { free::<XAh, _>(ah) }))
}

/// `ibv_wc_status_str`: libibverbs' descriptions of `enum ibv_wc_status`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_wc_status_str(status: c_uint) -> *const c_char {
    const NAMES: [&CStr; 24] = [
        c"success",
        c"local length error",
        c"local QP operation error",
        c"local EE context operation error",
        c"local protection error",
        c"Work Request Flushed Error",
        c"memory management operation error",
        c"bad response error",
        c"local access error",
        c"remote invalid request error",
        c"remote access error",
        c"remote operation error",
        c"transport retry counter exceeded",
        c"RNR retry counter exceeded",
        c"local RDD violation error",
        c"remote invalid RD request",
        c"aborted error",
        c"invalid EE context number",
        c"invalid EE context state",
        c"fatal error",
        c"response timeout error",
        c"general error",
        c"TM error",
        c"TM software rendezvous",
    ];
    guard(c"unknown".as_ptr(), || {
        NAMES.get(status as usize).unwrap_or(&c"unknown").as_ptr()
    })
}

/// The context's registry, locked (a poisoned lock is still usable: its data are plain
/// lists and counters).
pub(crate) fn lock(c: &XContext) -> MutexGuard<'_, Registry> {
    c.registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Locks the registry once `unacked` (a CQ's or SRQ's count of unacknowledged asynchronous
/// events) is zero: destroying an object waits for its events' acknowledgements, as
/// libibverbs' destroy calls do.
fn wait_acked<'a>(c: &'a XContext, unacked: &AtomicU32) -> MutexGuard<'a, Registry> {
    let mut reg = lock(c);
    while unacked.load(Ordering::Acquire) > 0 {
        reg = c.acked.wait(reg).unwrap_or_else(|p| p.into_inner());
    }
    reg
}

/// A new SRQ of `pd` (what `ibv_create_srq` makes), freed by `ibv_destroy_srq`. `max_wr`
/// and `max_sge` are written back; `srq_limit` is ignored (arm it with `ibv_modify_srq`),
/// as libibverbs documents.
pub(crate) fn create_srq(pd: &XPd, a: &mut sys::ibv_srq_init_attr) -> Result<*mut XSrq, i32> {
    // SAFETY: the PD's context comes from ibv_open_device and outlives it.
    let c = unsafe { context(pd.pd.context) }?;
    let inner = pd
        .inner
        .create_srq(&SrqAttr {
            max_wr: a.attr.max_wr,
            max_sge: a.attr.max_sge,
            srq_limit: a.attr.srq_limit,
        })
        .map_err(|e| e.errno())?;
    let now = inner.query();
    a.attr.max_wr = now.max_wr;
    a.attr.max_sge = now.max_sge;
    // SAFETY: ibv_srq is plain C data; all-zero is valid (as for ibv_cq).
    let mut srq: sys::ibv_srq = unsafe { std::mem::zeroed() };
    srq.context = pd.pd.context;
    srq.srq_context = a.srq_context;
    srq.pd = pd.as_c();
    let p = boxed(XSrq {
        srq,
        inner,
        async_unacked: AtomicU32::new(0),
    });
    lock(c).srqs.push(p as usize);
    Ok(p)
}

/// `ibv_create_srq`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_create_srq(
    pd: *mut sys::ibv_pd,
    init_attr: *mut sys::ibv_srq_init_attr,
) -> *mut sys::ibv_srq {
    guard(std::ptr::null_mut(), || {
        let r = (|| {
            // SAFETY: the PD comes from ibv_alloc_pd.
            let p = unsafe { wrapper::<XPd, _>(pd) }?;
            if init_attr.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: checked non-NULL; the caller passes a readable, writable struct.
            create_srq(p, unsafe { &mut *init_attr })
        })();
        c_ptr(r)
    })
}

/// `ibv_modify_srq`: `IBV_SRQ_LIMIT` arms the limit; `IBV_SRQ_MAX_WR` (resizing) is
/// EOPNOTSUPP, as xrdma's SRQs have a fixed size.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_modify_srq(
    srq: *mut sys::ibv_srq,
    attr: *mut sys::ibv_srq_attr,
    attr_mask: c_int,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the SRQ comes from ibv_create_srq.
        let s = unsafe { wrapper::<XSrq, _>(srq) }?;
        if attr.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: checked non-NULL; the caller passes a readable ibv_srq_attr.
        let a = unsafe { &*attr };
        let attr = SrqAttr {
            max_wr: a.max_wr,
            max_sge: a.max_sge,
            srq_limit: a.srq_limit,
        };
        Ok(status(
            s.inner
                .modify(&attr, SrqAttrMask(attr_mask as u32))
                .map_err(|e| e.errno()),
        ))
    })
}

/// `ibv_query_srq`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_srq(
    srq: *mut sys::ibv_srq,
    attr: *mut sys::ibv_srq_attr,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the SRQ comes from ibv_create_srq.
        let s = unsafe { wrapper::<XSrq, _>(srq) }?;
        if attr.is_null() {
            return Err(libc::EINVAL);
        }
        let now = s.inner.query();
        let out = sys::ibv_srq_attr {
            max_wr: now.max_wr,
            max_sge: now.max_sge,
            srq_limit: now.srq_limit,
        };
        // SAFETY: checked non-NULL; the caller passes a writable ibv_srq_attr.
        unsafe { attr.write(out) };
        Ok(0)
    })
}

/// `ibv_destroy_srq`: EBUSY while QPs draw from it; waits for its asynchronous events to
/// be acknowledged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_destroy_srq(srq: *mut sys::ibv_srq) -> c_int {
    guard_errno(|| {
        // SAFETY: the SRQ comes from ibv_create_srq.
        let s = unsafe { wrapper::<XSrq, _>(srq) }?;
        // SAFETY: the SRQ's context outlives it.
        let c = unsafe { context(s.srq.context) }?;
        let mut reg = wait_acked(c, &s.async_unacked);
        // QPs draw from it: it stays until they are gone.
        if s.inner.in_use() {
            return Err(libc::EBUSY);
        }
        reg.srqs.retain(|p| *p != srq as usize);
        drop(reg);
        // SAFETY: the application does not use the SRQ after this call.
        Ok(status(unsafe { free::<XSrq, _>(srq) }))
    })
}
