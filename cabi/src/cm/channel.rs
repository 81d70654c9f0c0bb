//! Event channels and events: `rdma_create_event_channel`, `rdma_get_cm_event`,
//! `rdma_ack_cm_event`, `rdma_event_str`.

use std::ffi::{c_char, c_int};
use std::os::fd::AsRawFd;

use xrdma_verbs::cm::{Event, EventChannel, EventParam};

use super::device::cm_devices;
use super::guard_ret;
use super::id::XId;
use crate::{boxed, free, guard, guard_or, sys, wrapper};

/// An event channel. `ch` first, so an `rdma_event_channel *` converts back.
#[repr(C)]
pub(crate) struct XEventChannel {
    ch: sys::rdma_event_channel,
    pub(crate) inner: EventChannel,
}

impl XEventChannel {
    /// A new channel on the heap, as C holds it.
    pub(crate) fn new() -> Result<*mut XEventChannel, i32> {
        let inner = EventChannel::new().map_err(|e| crate::io_errno(&e))?;
        Ok(boxed(XEventChannel {
            ch: sys::rdma_event_channel {
                fd: inner.as_raw_fd(),
            },
            inner,
        }))
    }

    /// The `rdma_event_channel *` the application holds.
    pub(crate) fn as_c(&self) -> *mut sys::rdma_event_channel {
        (&self.ch as *const sys::rdma_event_channel).cast_mut()
    }
}

/// An event handed to the application, with the private data its parameters point at.
#[repr(C)]
pub(crate) struct XEvent {
    ev: sys::rdma_cm_event,
    private: Vec<u8>,
}

/// The channel wrapper behind a C pointer.
///
/// # Safety
///
/// `ch` must be NULL or come from `rdma_create_event_channel` (or be a sync id's) and be
/// live for `'a`.
pub(crate) unsafe fn channel<'a>(
    ch: *mut sys::rdma_event_channel,
) -> Result<&'a XEventChannel, i32> {
    // SAFETY: per this function's contract.
    unsafe { wrapper::<XEventChannel, _>(ch) }
}

/// `rdma_create_event_channel`: ENODEV when there is no device, as librdmacm.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_create_event_channel() -> *mut sys::rdma_event_channel {
    guard_or(std::ptr::null_mut(), || {
        cm_devices()
            .and_then(|_| XEventChannel::new())
            .map(|ch| ch.cast())
    })
}

/// `rdma_destroy_event_channel`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_destroy_event_channel(ch: *mut sys::rdma_event_channel) {
    guard((), || {
        // SAFETY: the channel comes from rdma_create_event_channel and is not used after.
        let _ = unsafe { free::<XEventChannel, _>(ch) };
    })
}

/// Takes the next event of `ch` as librdmacm's `struct rdma_cm_event`.
pub(crate) fn next_event(ch: &XEventChannel) -> Result<*mut sys::rdma_cm_event, i32> {
    let event = ch.inner.get_event().map_err(|e| crate::io_errno(&e))?;
    Ok(to_c(event).cast())
}

/// Converts an event, giving a new id (CONNECT_REQUEST) its C wrapper.
fn to_c(event: Event) -> *mut XEvent {
    let listen = event.listen_id.as_ref().map(|l| l.user() as *mut XId);
    let id = match (event.id.user(), listen) {
        (0, Some(listen)) => XId::for_request(event.id.clone(), listen),
        (p, _) => p as *mut XId,
    };
    XId::refresh(id);
    // SAFETY: all-zero is a valid rdma_cm_event (NULL pointers, zero parameters).
    let mut ev: sys::rdma_cm_event = unsafe { std::mem::zeroed() };
    ev.id = id.cast();
    ev.listen_id = listen.map_or(std::ptr::null_mut(), |l| l.cast());
    ev.event = event.kind as u32;
    ev.status = event.status;
    let (private, param) = match event.param {
        EventParam::None => (Vec::new(), None),
        EventParam::Conn(mut p) => (std::mem::take(&mut p.private_data), Some(Ok(p))),
        EventParam::Ud(mut p) => (std::mem::take(&mut p.private_data), Some(Err(p))),
    };
    let x = boxed(XEvent { ev, private });
    // SAFETY: `x` was just made and nothing else holds it; the private data vector is not
    // moved again while the event lives.
    let xe = unsafe { &mut *x };
    let data = if xe.private.is_empty() {
        std::ptr::null()
    } else {
        xe.private.as_ptr().cast()
    };
    let len = xe.private.len().min(255) as u8;
    match param {
        Some(Ok(p)) => {
            let conn = sys::rdma_conn_param {
                private_data: data,
                private_data_len: len,
                responder_resources: p.responder_resources,
                initiator_depth: p.initiator_depth,
                flow_control: p.flow_control,
                retry_count: p.retry_count,
                rnr_retry_count: p.rnr_retry_count,
                srq: p.srq,
                qp_num: p.qp_num,
            };
            // SAFETY: the parameter union is 56 bytes, room for its `conn` member.
            unsafe { *xe.ev.param.conn.as_mut() = conn };
        }
        Some(Err(p)) => {
            // SAFETY: all-zero is a valid ibv_ah_attr.
            let mut ah: sys::ibv_ah_attr = unsafe { std::mem::zeroed() };
            ah.is_global = 1;
            ah.port_num = 1;
            ah.grh.hop_limit = p.ah_attr.hop_limit;
            ah.grh.sgid_index = p.ah_attr.sgid_index;
            let dgid = (&mut ah.grh.dgid as *mut sys::ibv_gid).cast::<[u8; 16]>();
            // SAFETY: ibv_gid is a 16-byte union; its `raw` view is always valid.
            unsafe { *dgid = p.ah_attr.dgid.0 };
            let ud = sys::rdma_ud_param {
                private_data: data,
                private_data_len: len,
                ah_attr: ah,
                qp_num: p.qp_num,
                qkey: p.qkey,
            };
            // SAFETY: the parameter union is 56 bytes, room for its `ud` member.
            unsafe { *xe.ev.param.ud.as_mut() = ud };
        }
        None => {}
    }
    x
}

/// `rdma_get_cm_event`: waits for the next event, unless the channel's descriptor is
/// non-blocking (EAGAIN).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_get_cm_event(
    ch: *mut sys::rdma_event_channel,
    event: *mut *mut sys::rdma_cm_event,
) -> c_int {
    guard_ret(|| {
        // SAFETY: the channel comes from rdma_create_event_channel.
        let ch = unsafe { channel(ch) }?;
        if event.is_null() {
            return Err(libc::EINVAL);
        }
        let ev = next_event(ch)?;
        // SAFETY: `event` is a writable pointer, checked non-NULL.
        unsafe { event.write(ev) };
        Ok(())
    })
}

/// `rdma_ack_cm_event`: frees the event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_ack_cm_event(event: *mut sys::rdma_cm_event) -> c_int {
    guard_ret(|| {
        // SAFETY: the event comes from rdma_get_cm_event and is not used after this.
        unsafe { free::<XEvent, _>(event) }
    })
}

/// `rdma_event_str`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_event_str(event: c_int) -> *const c_char {
    guard(c"UNKNOWN EVENT".as_ptr(), || event_name(event).as_ptr())
}

fn event_name(event: c_int) -> &'static std::ffi::CStr {
    const NAMES: [&std::ffi::CStr; 20] = [
        c"RDMA_CM_EVENT_ADDR_RESOLVED",
        c"RDMA_CM_EVENT_ADDR_ERROR",
        c"RDMA_CM_EVENT_ROUTE_RESOLVED",
        c"RDMA_CM_EVENT_ROUTE_ERROR",
        c"RDMA_CM_EVENT_CONNECT_REQUEST",
        c"RDMA_CM_EVENT_CONNECT_RESPONSE",
        c"RDMA_CM_EVENT_CONNECT_ERROR",
        c"RDMA_CM_EVENT_UNREACHABLE",
        c"RDMA_CM_EVENT_REJECTED",
        c"RDMA_CM_EVENT_ESTABLISHED",
        c"RDMA_CM_EVENT_DISCONNECTED",
        c"RDMA_CM_EVENT_DEVICE_REMOVAL",
        c"RDMA_CM_EVENT_MULTICAST_JOIN",
        c"RDMA_CM_EVENT_MULTICAST_ERROR",
        c"RDMA_CM_EVENT_ADDR_CHANGE",
        c"RDMA_CM_EVENT_TIMEWAIT_EXIT",
        c"RDMA_CM_EVENT_ADDRINFO_RESOLVED",
        c"RDMA_CM_EVENT_ADDRINFO_ERROR",
        c"RDMA_CM_EVENT_USER",
        c"RDMA_CM_EVENT_INTERNAL",
    ];
    usize::try_from(event)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or(c"UNKNOWN EVENT")
}

#[cfg(test)]
mod tests {
    use super::super::guard_ret;
    use super::*;

    #[test]
    fn event_names_are_librdmacms() {
        assert_eq!(event_name(0), c"RDMA_CM_EVENT_ADDR_RESOLVED");
        assert_eq!(event_name(15), c"RDMA_CM_EVENT_TIMEWAIT_EXIT");
        assert_eq!(event_name(-1), c"UNKNOWN EVENT");
        assert_eq!(event_name(99), c"UNKNOWN EVENT");
    }

    #[test]
    fn guard_ret_sets_errno() {
        assert_eq!(guard_ret(|| Ok(())), 0);
        assert_eq!(guard_ret(|| Err(libc::EINVAL)), -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
