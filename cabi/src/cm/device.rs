//! The devices librdmacm opens for itself: one context and one protection domain per
//! device of `XRDMA_IFACE`, for `id->verbs` and `id->pd`, registered with the connection
//! manager. They share each interface's backend with the application's own contexts.

use std::ffi::c_int;
use std::sync::OnceLock;

use crate::ibv::device::{XContext, devices, open};
use crate::ibv::objects::{XPd, alloc_pd};
use crate::{set_errno, sys};

/// One device as librdmacm keeps it.
pub(crate) struct CmDevice {
    pub(crate) ctx: &'static XContext,
    pd: usize,
    pub(crate) iface: String,
}

// SAFETY: `pd` is the address of a PD wrapper that lives as long as the process and is
// only read through; XContext is Sync.
unsafe impl Sync for CmDevice {}
// SAFETY: as above.
unsafe impl Send for CmDevice {}

impl CmDevice {
    /// `id->verbs`.
    pub(crate) fn verbs(&self) -> *mut sys::ibv_context {
        self.ctx.as_c()
    }

    /// `id->pd`: the device's default PD.
    pub(crate) fn pd(&self) -> *mut sys::ibv_pd {
        self.pd as *mut sys::ibv_pd
    }
}

static CM_DEVICES: OnceLock<Result<Vec<CmDevice>, i32>> = OnceLock::new();

fn open_all() -> Result<Vec<CmDevice>, i32> {
    let list = devices().map_err(|(errno, message)| {
        eprintln!("{message}");
        errno
    })?;
    let mut out = Vec::new();
    for d in list {
        let ctx: &'static XContext = Box::leak(Box::new(open(d)?));
        xrdma_verbs::cm::add_device(&ctx.inner).map_err(|e| e.errno())?;
        let pd: *mut XPd = alloc_pd(ctx)?;
        out.push(CmDevice {
            ctx,
            pd: pd as usize,
            iface: d.iface.clone(),
        });
    }
    if out.is_empty() {
        eprintln!("xrdma: no RDMA devices were detected (set XRDMA_IFACE)");
        return Err(libc::ENODEV);
    }
    Ok(out)
}

/// librdmacm's devices, opened on first use (ENODEV, as librdmacm, when there are none).
pub(crate) fn cm_devices() -> Result<&'static [CmDevice], i32> {
    match CM_DEVICES.get_or_init(open_all) {
        Ok(d) => Ok(d),
        Err(e) => Err(*e),
    }
}

/// The device of a connection manager device.
pub(crate) fn of(device: &xrdma_verbs::cm::Device) -> Option<&'static CmDevice> {
    let iface = &device.context().link().iface;
    cm_devices().ok()?.iter().find(|d| &d.iface == iface)
}

/// `rdma_get_devices`: a NULL-terminated array of librdmacm's contexts.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_get_devices(num_devices: *mut c_int) -> *mut *mut sys::ibv_context {
    crate::guard(std::ptr::null_mut(), || {
        let devices = match cm_devices() {
            Ok(d) => d,
            Err(e) => {
                set_errno(e);
                return std::ptr::null_mut();
            }
        };
        // SAFETY: calloc has no preconditions; the result is checked for NULL.
        let list: *mut *mut sys::ibv_context =
            unsafe { libc::calloc(devices.len() + 1, size_of::<*mut sys::ibv_context>()) }.cast();
        if list.is_null() {
            set_errno(libc::ENOMEM);
            return list;
        }
        for (i, d) in devices.iter().enumerate() {
            // SAFETY: room for `devices.len() + 1` pointers; the last stays NULL.
            unsafe { list.add(i).write(d.verbs()) };
        }
        if !num_devices.is_null() {
            // SAFETY: the caller passes NULL or a writable int.
            unsafe { num_devices.write(devices.len() as c_int) };
        }
        list
    })
}

/// `rdma_free_devices`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_free_devices(list: *mut *mut sys::ibv_context) {
    // SAFETY: `list` comes from rdma_get_devices (calloc) or is NULL.
    crate::guard((), || unsafe { libc::free(list.cast()) })
}
