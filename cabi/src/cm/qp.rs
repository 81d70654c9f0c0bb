//! The id's QP and SRQ: `rdma_create_qp(_ex)`, `rdma_destroy_qp`, `rdma_create_srq(_ex)`,
//! `rdma_destroy_srq`, made through the same constructors as `ibv_create_qp` and friends.

use std::ffi::c_int;

use super::id::{XId, xid};
use super::{errno_of, guard_ret};
use crate::ibv::device::context;
use crate::ibv::objects::{
    XPd, create_comp_channel, create_cq, create_qp, create_srq, ibv_destroy_comp_channel,
    ibv_destroy_cq, ibv_destroy_qp, ibv_destroy_srq,
};
use crate::{sys, wrapper};

/// The PD a QP or SRQ of the id goes on: `pd`, or the id's own; EINVAL if it belongs to
/// another device.
fn pd_for<'a>(x: &XId, pd: *mut sys::ibv_pd) -> Result<&'a XPd, i32> {
    let pd = if pd.is_null() { x.id.pd } else { pd };
    // SAFETY: a PD from ibv_alloc_pd, or the id's default one.
    let p = unsafe { wrapper::<XPd, _>(pd) }?;
    // SAFETY: `pd` is a live PD (just checked).
    if !x.id.verbs.is_null() && unsafe { (*pd).context } != x.id.verbs {
        return Err(libc::EINVAL);
    }
    Ok(p)
}

/// Makes a comp channel and a CQ of `size` entries on the id's device, as librdmacm's
/// `ucma_create_cqs` does for a QP given none.
fn make_cq(
    x: &XId,
) -> impl Fn(c_int) -> Result<(*mut sys::ibv_comp_channel, *mut sys::ibv_cq), i32> + '_ {
    move |size| {
        // SAFETY: the id's context is librdmacm's, live for the process.
        let c = unsafe { context(x.id.verbs) }?;
        let ch = create_comp_channel(c)?;
        // SAFETY: just made.
        let cq = create_cq(
            c,
            size.max(1),
            (x as *const XId).cast_mut().cast(),
            Some(unsafe { &*ch }),
        )?;
        // SAFETY: just made.
        Ok((unsafe { &*ch }.as_c(), cq.cast()))
    }
}

/// Creates the id's QP: librdmacm's `rdma_create_qp`.
pub(crate) fn create_id_qp(
    x: &mut XId,
    pd: *mut sys::ibv_pd,
    attr: &mut sys::ibv_qp_init_attr,
) -> Result<(), i32> {
    if !x.id.qp.is_null() {
        return Err(libc::EINVAL);
    }
    if x.id.verbs.is_null() {
        // Not bound to a device yet.
        return Err(libc::EINVAL);
    }
    let p = pd_for(x, pd)?;
    let mut made = false;
    if attr.recv_cq.is_null() && x.id.recv_cq.is_null() {
        let (ch, cq) = make_cq(x)(attr.cap.max_recv_wr as c_int)?;
        x.id.recv_cq_channel = ch;
        x.id.recv_cq = cq;
        made = true;
    }
    if attr.send_cq.is_null() && x.id.send_cq.is_null() {
        let (ch, cq) = make_cq(x)(attr.cap.max_send_wr as c_int)?;
        x.id.send_cq_channel = ch;
        x.id.send_cq = cq;
        made = true;
    }
    if made {
        *x.made_cqs.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
    if attr.recv_cq.is_null() {
        attr.recv_cq = x.id.recv_cq;
    }
    if attr.send_cq.is_null() {
        attr.send_cq = x.id.send_cq;
    }
    if attr.srq.is_null() {
        attr.srq = x.id.srq;
    }
    attr.qp_type = x.id.qp_type;
    // SAFETY: the CQs and SRQ are this library's (the application's or just made).
    let qp = unsafe { create_qp(p, attr) }?;
    // SAFETY: just made.
    let q = unsafe { &*qp };
    if let Err(e) = x.inner.attach_qp(&q.inner) {
        // SAFETY: just made, not handed out.
        unsafe { ibv_destroy_qp(qp.cast()) };
        return Err(errno_of(e));
    }
    x.id.qp = qp.cast();
    x.id.pd = p.as_c();
    XId::refresh(x);
    Ok(())
}

/// `rdma_create_qp`: a QP on `pd` (NULL: the id's), with CQs made for it if `attr` has
/// none; RC QPs end in INIT, UD QPs in RTS.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_create_qp(
    id: *mut sys::rdma_cm_id,
    pd: *mut sys::ibv_pd,
    attr: *mut sys::ibv_qp_init_attr,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        if attr.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: readable and writable (librdmacm writes the CQs and caps back).
        create_id_qp(x, pd, unsafe { &mut *attr })
    })
}

/// `IBV_QP_INIT_ATTR_PD`.
const IBV_QP_INIT_ATTR_PD: u32 = 1;

/// `rdma_create_qp_ex`: the fields of `struct ibv_qp_init_attr_ex` that `ibv_create_qp`
/// has, with its PD; other extended attributes are EOPNOTSUPP.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_create_qp_ex(
    id: *mut sys::rdma_cm_id,
    attr: *mut sys::ibv_qp_init_attr_ex,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        if attr.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: readable and writable.
        let a = unsafe { &mut *attr };
        if a.comp_mask & !IBV_QP_INIT_ATTR_PD != 0 || a.create_flags != 0 {
            eprintln!(
                "xrdma: rdma_create_qp_ex: only the PD of the extended attributes is supported"
            );
            return Err(libc::EOPNOTSUPP);
        }
        let pd = if a.comp_mask & IBV_QP_INIT_ATTR_PD != 0 {
            a.pd
        } else {
            std::ptr::null_mut()
        };
        let mut basic = sys::ibv_qp_init_attr {
            qp_context: a.qp_context,
            send_cq: a.send_cq,
            recv_cq: a.recv_cq,
            srq: a.srq,
            cap: a.cap,
            qp_type: a.qp_type,
            sq_sig_all: a.sq_sig_all,
        };
        create_id_qp(x, pd, &mut basic)?;
        a.send_cq = basic.send_cq;
        a.recv_cq = basic.recv_cq;
        a.cap = basic.cap;
        Ok(())
    })
}

/// Destroys the id's QP and the CQs made for it.
pub(crate) fn destroy_id_qp(x: &mut XId) {
    if !x.id.qp.is_null() {
        // SAFETY: the id's QP comes from rdma_create_qp and goes now.
        unsafe { ibv_destroy_qp(x.id.qp) };
        x.id.qp = std::ptr::null_mut();
        x.inner.detach_qp();
    }
    let made = std::mem::take(&mut *x.made_cqs.lock().unwrap_or_else(|e| e.into_inner()));
    if made {
        for (cq, ch) in [
            (&mut x.id.recv_cq, &mut x.id.recv_cq_channel),
            (&mut x.id.send_cq, &mut x.id.send_cq_channel),
        ] {
            if !cq.is_null() {
                // SAFETY: made by create_id_qp for this id; nothing else holds it now.
                unsafe { ibv_destroy_cq(*cq) };
                *cq = std::ptr::null_mut();
            }
            if !ch.is_null() {
                // SAFETY: as above.
                unsafe { ibv_destroy_comp_channel(*ch) };
                *ch = std::ptr::null_mut();
            }
        }
    }
}

/// `rdma_destroy_qp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_destroy_qp(id: *mut sys::rdma_cm_id) {
    crate::guard((), || {
        // SAFETY: per the export's contract.
        if let Ok(x) = unsafe { xid(id) } {
            destroy_id_qp(x);
        }
    })
}

/// `rdma_create_srq`: an SRQ on `pd` (NULL: the id's) that the id's QP will use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_create_srq(
    id: *mut sys::rdma_cm_id,
    pd: *mut sys::ibv_pd,
    attr: *mut sys::ibv_srq_init_attr,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        if attr.is_null() || !x.id.srq.is_null() {
            return Err(libc::EINVAL);
        }
        let p = pd_for(x, pd)?;
        // SAFETY: readable and writable.
        let srq = create_srq(p, unsafe { &mut *attr })?;
        x.id.srq = srq.cast();
        Ok(())
    })
}

/// `rdma_create_srq_ex`: extended SRQs (XRC, tag matching) are EOPNOTSUPP.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_create_srq_ex(
    id: *mut sys::rdma_cm_id,
    _attr: *mut std::ffi::c_void,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        unsafe { xid(id) }?;
        eprintln!("xrdma: rdma_create_srq_ex is not supported: use rdma_create_srq");
        Err(libc::EOPNOTSUPP)
    })
}

/// `rdma_destroy_srq`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_destroy_srq(id: *mut sys::rdma_cm_id) {
    crate::guard((), || {
        // SAFETY: per the export's contract.
        if let Ok(x) = unsafe { xid(id) } {
            if !x.id.srq.is_null() {
                // SAFETY: the id's SRQ comes from rdma_create_srq and goes now.
                unsafe { ibv_destroy_srq(x.id.srq) };
                x.id.srq = std::ptr::null_mut();
            }
        }
    })
}
