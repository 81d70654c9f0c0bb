//! Asynchronous events (`ibv_get_async_event`, `ibv_ack_async_event`), the enum-to-string
//! helpers, and the small calls that have little to do here (`ibv_query_pkey`,
//! `ibv_fork_init` and its kin, `ibv_resize_cq`).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::Ordering;

use xrdma_verbs::verbs::AsyncEvent;

use super::device::context;
use super::objects::{XCq, XSrq, lock};
use crate::sys;
use crate::{guard, set_errno, wrapper};

/// `ibv_get_async_event`: waits for the context's next event (EAGAIN at once if the
/// application set O_NONBLOCK on `ctx->async_fd` and none waits). 0, or -1 with errno.
/// Each event must be acknowledged with `ibv_ack_async_event`; destroying its CQ or SRQ
/// waits until then.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_get_async_event(
    ctx: *mut sys::ibv_context,
    event: *mut sys::ibv_async_event,
) -> c_int {
    guard(-1, || {
        let r = (|| {
            // SAFETY: the context comes from ibv_open_device.
            let c = unsafe { context(ctx) }?;
            if event.is_null() {
                return Err(libc::EINVAL);
            }
            loop {
                let ev = c.inner.get_async_event().map_err(|e| e.errno())?;
                let reg = lock(c);
                let out = match &ev {
                    AsyncEvent::CqErr(cq) => reg
                        .cqs
                        .iter()
                        .map(|&p| p as *mut XCq)
                        // SAFETY: the registry holds live CQs of this context; a CQ leaves
                        // it, under this lock, before it is freed.
                        .find(|&p| unsafe { (*p).inner.ptr_eq(cq) })
                        .map(|p| {
                            // SAFETY: as above.
                            let x = unsafe { &*p };
                            x.async_unacked.fetch_add(1, Ordering::AcqRel);
                            sys::ibv_async_event {
                                element: sys::ibv_async_event__bindgen_ty_1 { cq: p.cast() },
                                event_type: sys::IBV_EVENT_CQ_ERR,
                            }
                        }),
                    AsyncEvent::SrqLimitReached(srq) => reg
                        .srqs
                        .iter()
                        .map(|&p| p as *mut XSrq)
                        // SAFETY: as for CQs.
                        .find(|&p| unsafe { (*p).inner.ptr_eq(srq) })
                        .map(|p| {
                            // SAFETY: as above.
                            let x = unsafe { &*p };
                            x.async_unacked.fetch_add(1, Ordering::AcqRel);
                            sys::ibv_async_event {
                                element: sys::ibv_async_event__bindgen_ty_1 { srq: p.cast() },
                                event_type: sys::IBV_EVENT_SRQ_LIMIT_REACHED,
                            }
                        }),
                    // Events this library does not know how to report yet.
                    _ => None,
                };
                // The object may have been destroyed since the event was raised: skip it,
                // as the verbs do for objects already gone.
                if let Some(out) = out {
                    // SAFETY: checked non-NULL; the caller passes a writable struct.
                    unsafe { event.write(out) };
                    return Ok(());
                }
            }
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

/// `ibv_ack_async_event`: acknowledges an event from `ibv_get_async_event`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_ack_async_event(event: *mut sys::ibv_async_event) {
    guard((), || {
        if event.is_null() {
            return;
        }
        // SAFETY: the caller passes an event filled by ibv_get_async_event, whose object
        // stays until acknowledged (destroying it waits for this).
        let ev = unsafe { &*event };
        // SAFETY: the union member matches the event type, as ibv_get_async_event wrote it.
        let (ctx, unacked) = unsafe {
            match ev.event_type {
                sys::IBV_EVENT_CQ_ERR => match wrapper::<XCq, _>(ev.element.cq) {
                    Ok(c) => (c.cq.context, &c.async_unacked),
                    Err(_) => return,
                },
                sys::IBV_EVENT_SRQ_LIMIT_REACHED => match wrapper::<XSrq, _>(ev.element.srq) {
                    Ok(s) => (s.srq.context, &s.async_unacked),
                    Err(_) => return,
                },
                _ => return,
            }
        };
        // SAFETY: the object's context outlives it.
        let Ok(c) = (unsafe { context(ctx) }) else {
            return;
        };
        let _reg = lock(c);
        // Over-acknowledging is the application's bug: the count stays at zero.
        let _ = unacked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        c.acked.notify_all();
    })
}

/// `names[i]`, or "unknown" out of range, as libibverbs' `*_str` functions answer.
fn name(names: &'static [&'static CStr], i: i64) -> *const c_char {
    usize::try_from(i)
        .ok()
        .and_then(|i| names.get(i))
        .unwrap_or(&c"unknown")
        .as_ptr()
}

/// `ibv_node_type_str`: libibverbs' descriptions of `enum ibv_node_type`.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_node_type_str(node_type: sys::ibv_node_type) -> *const c_char {
    const NAMES: [&CStr; 8] = [
        c"unknown",
        c"InfiniBand channel adapter",
        c"InfiniBand switch",
        c"InfiniBand router",
        c"iWARP NIC",
        c"usNIC",
        c"usNIC UDP",
        c"unspecified",
    ];
    guard(c"unknown".as_ptr(), || name(&NAMES, node_type.into()))
}

/// `ibv_port_state_str`: libibverbs' descriptions of `enum ibv_port_state`.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_port_state_str(port_state: sys::ibv_port_state) -> *const c_char {
    const NAMES: [&CStr; 6] = [
        c"no state change (NOP)",
        c"down",
        c"init",
        c"armed",
        c"active",
        c"active defer",
    ];
    guard(c"unknown".as_ptr(), || name(&NAMES, port_state.into()))
}

/// `ibv_event_type_str`: libibverbs' descriptions of `enum ibv_event_type`.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_event_type_str(event: sys::ibv_event_type) -> *const c_char {
    const NAMES: [&CStr; 20] = [
        c"CQ error",
        c"local work queue catastrophic error",
        c"invalid request local work queue error",
        c"local access violation work queue error",
        c"communication established",
        c"send queue drained",
        c"path migrated",
        c"path migration request error",
        c"local catastrophic error",
        c"port active",
        c"port error",
        c"LID change",
        c"P_Key change",
        c"SM change",
        c"SRQ catastrophic error",
        c"SRQ limit reached",
        c"last WQE reached",
        c"client reregistration",
        c"GID table change",
        c"WQ fatal",
    ];
    guard(c"unknown".as_ptr(), || name(&NAMES, event.into()))
}

/// `ibv_query_pkey`: RoCE has one P_Key, the default full-membership 0xffff, at index 0 of
/// port 1. As libibverbs' (which reads sysfs), 0 or -1 with errno (EINVAL for any other
/// port or index).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_pkey(
    ctx: *mut sys::ibv_context,
    port_num: u8,
    index: c_int,
    pkey: *mut u16,
) -> c_int {
    guard(-1, || {
        // SAFETY: the context comes from ibv_open_device.
        let r = unsafe { context(ctx) }.and_then(|c| {
            c.inner.query_port(port_num).map_err(|e| e.errno())?;
            if index != 0 || pkey.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: the caller passes a writable __be16.
            unsafe { pkey.write(0xffff_u16.to_be()) };
            Ok(())
        });
        match r {
            Ok(()) => 0,
            Err(e) => {
                set_errno(e);
                -1
            }
        }
    })
}

/// `ibv_fork_init`: 0, with nothing to prepare. What libibverbs' does: mark registered
/// memory MADV_DONTFORK, so that after fork() copy-on-write cannot move the parent's pages
/// away from the physical pages the NIC was told to DMA to. xrdma has no NIC DMA into
/// application memory: its "device" is this process's own code, which reaches MRs by
/// virtual address, so the parent keeps seeing its own pages whatever fork() does. The one
/// kernel-pinned region, the AF_XDP UMEM, is not application memory; Linux 5.9 and later
/// copy pinned anonymous pages for the child at fork instead of sharing them, which is also
/// why rdma-core itself reports fork support as unneeded on recent kernels. Unlike with
/// libibverbs' fork support, the child does get readable copies of MRs; as with
/// libibverbs, it cannot use the parent's verbs objects (the progress thread and sockets
/// stay the parent's).
#[unsafe(no_mangle)]
pub extern "C" fn ibv_fork_init() -> c_int {
    0
}

/// `ibv_is_fork_initialized`: `IBV_FORK_UNNEEDED`, for the reasons `ibv_fork_init` gives.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_is_fork_initialized() -> sys::ibv_fork_status {
    sys::IBV_FORK_UNNEEDED
}

/// `ibv_dontfork_range`: 0, with nothing to mark (see `ibv_fork_init`); providers call it
/// around their own buffers.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_dontfork_range(_base: *mut c_void, _size: usize) -> c_int {
    0
}

/// `ibv_dofork_range`: 0, the undoing of `ibv_dontfork_range`.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_dofork_range(_base: *mut c_void, _size: usize) -> c_int {
    0
}

/// `ibv_resize_cq`: xrdma's CQs have a fixed capacity; EOPNOTSUPP, what libibverbs returns
/// for providers without `resize_cq`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_resize_cq(cq: *mut sys::ibv_cq, _cqe: c_int) -> c_int {
    guard(libc::EIO, || {
        // SAFETY: the CQ comes from ibv_create_cq.
        match unsafe { wrapper::<XCq, _>(cq) } {
            Ok(_) => libc::EOPNOTSUPP,
            Err(e) => e,
        }
    })
}
