//! The calls `<infiniband/verbs.h>` makes inline through `ibv_context.ops`: posting work
//! requests, polling and arming CQs. No allocation: SGEs are copied to a stack array.

use std::ffi::c_int;
use std::mem::{align_of, offset_of, size_of};

use xrdma_verbs::verbs::completion::IbvWc;
use xrdma_verbs::verbs::{
    AtomicWr, Lkey, QpType, RecvWr, Rkey, SendFlags, SendOpcode, SendWr, Sge, UdDest,
    WorkCompletion,
};
use xrdma_verbs::wire::{Qkey, Qpn};

use super::objects::{XAh, XCq, XQp, XSrq};
use crate::sys;
use crate::{guard, guard_errno, wrapper};

/// Most SGEs one work request may carry (the device's `max_sge`).
const MAX_SGE: usize = 32;

// xrdma's IbvWc is libibverbs' struct ibv_wc, field for field.
const _: () = {
    assert!(size_of::<IbvWc>() == size_of::<sys::ibv_wc>());
    assert!(align_of::<IbvWc>() == align_of::<sys::ibv_wc>());
    assert!(offset_of!(IbvWc, status) == offset_of!(sys::ibv_wc, status));
    assert!(offset_of!(IbvWc, byte_len) == offset_of!(sys::ibv_wc, byte_len));
    assert!(offset_of!(IbvWc, imm_data) == offset_of!(sys::ibv_wc, __bindgen_anon_1));
    assert!(offset_of!(IbvWc, src_qp) == offset_of!(sys::ibv_wc, src_qp));
    assert!(offset_of!(IbvWc, wc_flags) == offset_of!(sys::ibv_wc, wc_flags));
    assert!(offset_of!(IbvWc, dlid_path_bits) == offset_of!(sys::ibv_wc, dlid_path_bits));
};

/// Copies a C SGE array into `out`; EINVAL if it is too long or NULL with entries.
///
/// # Safety
///
/// `list` must point at `n` readable `ibv_sge` when `n > 0`.
unsafe fn sges(
    list: *const sys::ibv_sge,
    n: c_int,
    out: &mut [Sge; MAX_SGE],
) -> Result<&[Sge], c_int> {
    let n = usize::try_from(n).map_err(|_| libc::EINVAL)?;
    if n > MAX_SGE || (n > 0 && list.is_null()) {
        return Err(libc::EINVAL);
    }
    for (i, slot) in out.iter_mut().take(n).enumerate() {
        // SAFETY: per this function's contract, `list[i]` is readable for i < n.
        let s = unsafe { &*list.add(i) };
        *slot = Sge {
            addr: s.addr,
            length: s.length,
            lkey: Lkey(s.lkey),
        };
    }
    Ok(&out[..n])
}

const NO_SGE: Sge = Sge {
    addr: 0,
    length: 0,
    lkey: Lkey(0),
};

/// One send work request, translated and posted.
///
/// # Safety
///
/// `wr` must be a readable `ibv_send_wr` whose SGE list and AH are valid, as
/// `ibv_post_send` requires.
unsafe fn post_one_send(q: &XQp, wr: &sys::ibv_send_wr) -> Result<(), c_int> {
    let mut buf = [NO_SGE; MAX_SGE];
    // SAFETY: the application's SGE list has `num_sge` entries.
    let sg_list = unsafe { sges(wr.sg_list, wr.num_sge, &mut buf) }?;
    let opcode = SendOpcode::from_raw(wr.opcode).ok_or(libc::EINVAL)?;
    let ud = if q.inner.qp_type() == QpType::Ud {
        // SAFETY: a UD QP's work requests use the `ud` member of the union.
        let u = unsafe { wr.wr.ud };
        // SAFETY: the AH comes from ibv_create_ah (NULL is EINVAL).
        let ah = unsafe { wrapper::<XAh, _>(u.ah) }?;
        Some(UdDest {
            ah: &ah.inner,
            remote_qpn: Qpn::new_masked(u.remote_qpn),
            remote_qkey: Qkey::new(u.remote_qkey),
        })
    } else {
        None
    };
    let send = SendWr {
        wr_id: wr.wr_id,
        opcode,
        send_flags: SendFlags(wr.send_flags),
        sg_list,
        // `imm_data` is __be32: its bytes are the wire bytes.
        imm_data: u32::from_be(wr.__bindgen_anon_1.bindgen_union_field),
        rdma: match opcode {
            SendOpcode::RdmaWrite | SendOpcode::RdmaWriteWithImm | SendOpcode::RdmaRead => {
                // SAFETY: RDMA work requests use the `rdma` member of the union.
                let r = unsafe { wr.wr.rdma };
                Some((r.remote_addr, Rkey(r.rkey)))
            }
            _ => None,
        },
        atomic: match opcode {
            SendOpcode::AtomicCmpAndSwp | SendOpcode::AtomicFetchAndAdd => {
                // SAFETY: atomic work requests use the `atomic` member of the union.
                let a = unsafe { wr.wr.atomic };
                Some(AtomicWr {
                    remote_addr: a.remote_addr,
                    rkey: Rkey(a.rkey),
                    compare_add: a.compare_add,
                    swap: a.swap,
                })
            }
            _ => None,
        },
        ud,
    };
    // SAFETY: the application keeps the buffers valid until the completion, as
    // ibv_post_send requires.
    unsafe { q.inner.post_send(&send) }.map_err(|e| e.errno())
}

/// `ops.post_send`: posts the chain; on failure `*bad_wr` is the request that failed.
pub(crate) unsafe extern "C" fn post_send(
    qp: *mut sys::ibv_qp,
    wr: *mut sys::ibv_send_wr,
    bad_wr: *mut *mut sys::ibv_send_wr,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the QP comes from ibv_create_qp.
        let q = unsafe { wrapper::<XQp, _>(qp) }?;
        let mut cur = wr;
        while !cur.is_null() {
            // SAFETY: each request of the chain is a readable ibv_send_wr.
            let w = unsafe { &*cur };
            // SAFETY: as ibv_post_send requires of its caller.
            if let Err(e) = unsafe { post_one_send(q, w) } {
                if !bad_wr.is_null() {
                    // SAFETY: the caller passes a writable pointer.
                    unsafe { bad_wr.write(cur) };
                }
                return Err(e);
            }
            cur = w.next;
        }
        Ok(0)
    })
}

/// Posts a chain of receive requests through `post`; on failure `*bad_wr` is the request
/// that failed.
///
/// # Safety
///
/// `wr` must be NULL or a chain of readable `ibv_recv_wr` whose SGE lists are valid, and
/// `bad_wr` NULL or writable, as `ibv_post_recv` requires.
unsafe fn post_recv_chain(
    wr: *mut sys::ibv_recv_wr,
    bad_wr: *mut *mut sys::ibv_recv_wr,
    mut post: impl FnMut(&RecvWr<'_>) -> Result<(), c_int>,
) -> c_int {
    let mut cur = wr;
    let mut buf = [NO_SGE; MAX_SGE];
    while !cur.is_null() {
        // SAFETY: each request of the chain is a readable ibv_recv_wr.
        let w = unsafe { &*cur };
        // SAFETY: the application's SGE list has `num_sge` entries.
        let r = unsafe { sges(w.sg_list, w.num_sge, &mut buf) }.and_then(|sg_list| {
            post(&RecvWr {
                wr_id: w.wr_id,
                sg_list,
            })
        });
        if let Err(e) = r {
            if !bad_wr.is_null() {
                // SAFETY: the caller passes a writable pointer.
                unsafe { bad_wr.write(cur) };
            }
            return e;
        }
        cur = w.next;
    }
    0
}

/// `ops.post_recv`: posts the chain; on failure `*bad_wr` is the request that failed.
pub(crate) unsafe extern "C" fn post_recv(
    qp: *mut sys::ibv_qp,
    wr: *mut sys::ibv_recv_wr,
    bad_wr: *mut *mut sys::ibv_recv_wr,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the QP comes from ibv_create_qp.
        let q = unsafe { wrapper::<XQp, _>(qp) }?;
        // SAFETY: as ibv_post_recv requires of its caller: the application keeps the
        // buffers valid until the completion.
        Ok(unsafe {
            post_recv_chain(wr, bad_wr, |recv| {
                q.inner.post_recv(recv).map_err(|e| e.errno())
            })
        })
    })
}

/// `ops.post_srq_recv`: posts the chain to the SRQ; on failure `*bad_wr` is the request
/// that failed.
pub(crate) unsafe extern "C" fn post_srq_recv(
    srq: *mut sys::ibv_srq,
    wr: *mut sys::ibv_recv_wr,
    bad_wr: *mut *mut sys::ibv_recv_wr,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the SRQ comes from ibv_create_srq.
        let s = unsafe { wrapper::<XSrq, _>(srq) }?;
        // SAFETY: as ibv_post_srq_recv requires of its caller: the application keeps the
        // buffers valid until the completion.
        Ok(unsafe {
            post_recv_chain(wr, bad_wr, |recv| {
                s.inner.post_recv(recv).map_err(|e| e.errno())
            })
        })
    })
}

/// `ops.poll_cq`: up to `num_entries` completions into `wc`; the count, or a negative
/// errno.
pub(crate) unsafe extern "C" fn poll_cq(
    cq: *mut sys::ibv_cq,
    num_entries: c_int,
    wc: *mut sys::ibv_wc,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: the CQ comes from ibv_create_cq.
        let c = match unsafe { wrapper::<XCq, _>(cq) } {
            Ok(c) => c,
            Err(e) => return -e,
        };
        let Ok(want) = usize::try_from(num_entries) else {
            return -libc::EINVAL;
        };
        if want > 0 && wc.is_null() {
            return -libc::EINVAL;
        }
        let mut buf = [WorkCompletion::default(); 16];
        let mut done = 0;
        while done < want {
            let chunk = (want - done).min(buf.len());
            let n = c.inner.poll(&mut buf[..chunk]);
            for (i, w) in buf[..n].iter().enumerate() {
                // SAFETY: `wc` has room for `num_entries` entries; IbvWc has ibv_wc's
                // layout (checked at compile time above).
                unsafe { wc.add(done + i).cast::<IbvWc>().write(IbvWc::from(*w)) };
            }
            done += n;
            if n < chunk {
                break;
            }
        }
        done as c_int
    })
}

/// `ops.req_notify_cq`.
pub(crate) unsafe extern "C" fn req_notify_cq(
    cq: *mut sys::ibv_cq,
    solicited_only: c_int,
) -> c_int {
    guard(libc::EIO, || {
        // SAFETY: the CQ comes from ibv_create_cq.
        match unsafe { wrapper::<XCq, _>(cq) } {
            Ok(c) => match c.inner.req_notify(solicited_only != 0) {
                Ok(()) => 0,
                Err(e) => e.errno(),
            },
            Err(e) => e,
        }
    })
}
