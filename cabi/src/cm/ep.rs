//! Endpoints, librdmacm's synchronous shorthand: `rdma_create_ep`, `rdma_destroy_ep`,
//! `rdma_get_request`.

use std::ffi::c_int;

use xrdma_verbs::verbs::QpType;

use super::addrinfo::RAI_PASSIVE;
use super::channel::{channel, next_event};
use super::id::{create_id, destroy_id, resolve_addr, resolve_route, xid};
use super::qp::{create_id_qp, destroy_id_qp};
use super::{errno_of, guard_ret};
use crate::sys;

/// `rdma_create_ep`: a synchronous id for `res`; a passive one is bound (and keeps
/// `qp_init_attr` for the ids `rdma_get_request` returns), an active one has its route
/// resolved and, given `qp_init_attr`, its QP.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_create_ep(
    id: *mut *mut sys::rdma_cm_id,
    res: *mut sys::rdma_addrinfo,
    pd: *mut sys::ibv_pd,
    qp_init_attr: *mut sys::ibv_qp_init_attr,
) -> c_int {
    guard_ret(|| {
        if id.is_null() || res.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: a readable rdma_addrinfo, per the contract.
        let res = unsafe { &*res };
        let qp_type = QpType::from_raw(res.ai_qp_type as u32).ok_or(libc::EINVAL)?;
        let x = create_id(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            res.ai_port_space as u32,
            Some(qp_type),
        )?;
        let c_id: *mut sys::rdma_cm_id = x.cast();
        let setup = || -> Result<(), i32> {
            // SAFETY: just made.
            let x = unsafe { xid(c_id) }?;
            if res.ai_flags & RAI_PASSIVE != 0 {
                // SAFETY: the address rdma_getaddrinfo gave, of its family's size.
                let src = unsafe { super::sockaddr::read(res.ai_src_addr) }?;
                x.inner.bind_addr(src).map_err(errno_of)?;
                super::id::XId::refresh(x);
                if !qp_init_attr.is_null() {
                    // SAFETY: a readable QP attribute, per the contract.
                    let attr = unsafe { *qp_init_attr };
                    *x.ep_qp.lock().unwrap_or_else(|e| e.into_inner()) = Some((pd as usize, attr));
                }
                return Ok(());
            }
            resolve_addr(x, res.ai_src_addr, res.ai_dst_addr)?;
            resolve_route(x)?;
            if !qp_init_attr.is_null() {
                // SAFETY: a readable and writable QP attribute, per the contract.
                let attr = unsafe { &mut *qp_init_attr };
                attr.qp_type = res.ai_qp_type as u32;
                create_id_qp(x, pd, attr)?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = destroy_id(c_id);
            return Err(e);
        }
        // SAFETY: `id` is writable, checked non-NULL.
        unsafe { id.write(c_id) };
        Ok(())
    })
}

/// `rdma_destroy_ep`: the id, its QP and the CQs made for it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_destroy_ep(id: *mut sys::rdma_cm_id) {
    crate::guard((), || {
        // SAFETY: per the export's contract.
        if let Ok(x) = unsafe { xid(id) } {
            destroy_id_qp(x);
            // SAFETY: the same id, not used after this.
            unsafe { super::qp::rdma_destroy_srq(id) };
            let _ = destroy_id(id);
        }
    })
}

/// `rdma_get_request`: waits for a connection request on a synchronous listener and
/// returns its id, with `id->event` the request and the endpoint's QP made.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_get_request(
    listen: *mut sys::rdma_cm_id,
    id: *mut *mut sys::rdma_cm_id,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let l = unsafe { xid(listen) }?;
        if !l.sync || id.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: a sync id's channel is its own, live with it.
        let ch = unsafe { channel(l.id.channel) }?;
        let ev = next_event(ch)?;
        // SAFETY: just made by next_event.
        let e = unsafe { &*ev };
        let fail = |err| {
            // SAFETY: `ev` is ours to free.
            unsafe { super::channel::rdma_ack_cm_event(ev) };
            Err(err)
        };
        if e.status != 0 {
            return fail(if e.status < 0 {
                -e.status
            } else {
                libc::EINVAL
            });
        }
        if e.event != sys::RDMA_CM_EVENT_CONNECT_REQUEST {
            return fail(libc::EINVAL);
        }
        // SAFETY: the request's id wrapper, made by next_event.
        let child = unsafe { xid(e.id) }?;
        child.id.event = ev;
        let ep_qp = *l.ep_qp.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((pd, mut attr)) = ep_qp {
            if let Err(err) = create_id_qp(child, pd as *mut sys::ibv_pd, &mut attr) {
                let _ = destroy_id(e.id);
                return Err(err);
            }
        }
        // SAFETY: `id` is writable, checked non-NULL.
        unsafe { id.write(e.id) };
        Ok(())
    })
}
